// Input discovery, the CPU backend adapter, backend selection and small helpers of the klcal tool.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>

#include "cli.hpp"
#include "klcal/cpu.hpp"

namespace klcal::cli {

void warn(const std::string& msg) {
  std::cerr << "klcal: warning: " << msg << "\n";
}

const char* method_name(method m) {
  switch (m) {
    case method::entropy: return "entropy";
    case method::max: return "max";
    case method::percentile: return "percentile";
    case method::mse: return "mse";
  }
  return "?";
}

const char* rules_name(rule_set r) {
  return r == rule_set::mxnet ? "mxnet" : "tensorrt";
}

histogram_spec two_pass_spec(float max_abs, std::int32_t bins, bool signed_layout) {
  const float hi = std::max(max_abs, std::ldexp(1.0f, -64));
  return signed_layout ? histogram_spec{layout::signed_, bins, -hi, hi}
                       : histogram_spec{layout::abs, bins, 0.0f, hi};
}

std::string fmt_g(double v, int digits) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

bool path_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

namespace {

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::string base_name(const std::string& p) {
  auto slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

void add_file(const std::string& path, std::vector<tensor_group>& groups,
              std::map<std::string, std::size_t>& index) {
  auto add = [&](const std::string& name, tensor_source src) {
    auto it = index.find(name);
    if (it == index.end()) {
      index.emplace(name, groups.size());
      groups.push_back(tensor_group{name, {std::move(src)}});
    } else {
      groups[it->second].sources.push_back(std::move(src));
    }
  };
  if (ends_with(path, ".npy")) {
    std::string b = base_name(path);
    add(b.substr(0, b.size() - 4), tensor_source{path, ""});
  } else if (ends_with(path, ".npz")) {
    formats::npz_archive a(formats::open_file(path));
    std::size_t used = 0;
    for (const auto& m : a.members()) {
      if (!ends_with(m.file_name, ".npy")) {
        warn(path + ": member '" + m.file_name + "' is not a .npy, skipped");
        continue;
      }
      add(formats::npz_archive::tensor_name(m), tensor_source{path, m.file_name, m});
      ++used;
    }
    if (used == 0) warn(path + ": archive contains no .npy members");
  } else {
    throw error(errc::io_error, path + ": not a .npy or .npz file (unknown extension)");
  }
}

}  // namespace

formats::npy_reader tensor_source::open(std::size_t chunk_bytes) const {
  if (member.empty()) return formats::open_npy(file, chunk_bytes);
  // The directory was read once by collect_inputs; a large archive is not parsed per open.
  formats::npz_archive a(formats::open_file(file), {entry});
  return a.open_npy(entry, chunk_bytes);
}

std::vector<tensor_group> collect_inputs(const std::vector<std::string>& inputs) {
  std::vector<tensor_group> groups;
  std::map<std::string, std::size_t> index;
  for (const auto& in : inputs) {
    struct stat st {};
    if (::stat(in.c_str(), &st) != 0)
      throw error(errc::io_error, in + ": no such file or directory");
    if (S_ISDIR(st.st_mode)) {
      DIR* d = ::opendir(in.c_str());
      if (!d) throw error(errc::io_error, in + ": cannot read directory");
      std::vector<std::string> files;
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (ends_with(n, ".npy") || ends_with(n, ".npz")) {
          std::string p = in + (ends_with(in, "/") ? "" : "/") + n;
          struct stat fs {};
          if (::stat(p.c_str(), &fs) == 0 && S_ISREG(fs.st_mode)) files.push_back(p);
        }
      }
      ::closedir(d);
      if (files.empty())
        throw error(errc::io_error, in + ": directory contains no .npy or .npz files");
      std::sort(files.begin(), files.end());  // byte order: the same on every platform
      for (const auto& f : files) add_file(f, groups, index);
    } else {
      add_file(in, groups, index);
    }
  }
  return groups;
}

// ---- CPU backend ------------------------------------------------------------------------------

namespace {

void check_status(status s, const char* what) {
  if (!s.ok()) throw error(s, std::string(what) + " failed: " + to_string(s));
}

class cpu_backend final : public backend {
 public:
  explicit cpu_backend(int threads) : threads_(threads) {}
  std::string name() const override { return "cpu"; }
  void stats(const formats::chunk& c, tensor_stats* st) override {
    check_status(cpu::tensor_stats_accumulate(c.data, c.type, c.n, st, threads_),
                 "cpu::tensor_stats_accumulate");
  }
  void begin(const histogram_spec& spec) override {
    spec_ = spec;
    counts_.assign(static_cast<std::size_t>(spec.bins), 0);
  }
  void histogram(const formats::chunk& c, bool) override {
    check_status(
        cpu::histogram_accumulate(c.data, c.type, c.n, spec_, counts_.data(), nullptr, threads_),
        "cpu::histogram_accumulate");
  }
  void fold(std::int32_t doublings) override {
    check_status(cpu::histogram_fold_pow2(counts_.data(), spec_.bins, doublings),
                 "cpu::histogram_fold_pow2");
    spec_.hi = std::ldexp(spec_.hi, doublings);
  }
  std::vector<std::uint64_t> counts() override { return counts_; }
  void search(const histogram_spec& spec, float max_abs, const std::vector<search_options>& opts,
              bool want_curves, std::vector<search_result>& results,
              std::vector<std::vector<double>>& curves) override {
    std::vector<cpu::search_task> tasks(opts.size());
    curves.assign(opts.size(), {});
    for (std::size_t k = 0; k < opts.size(); ++k) {
      tasks[k].h_counts = counts_.data();
      tasks[k].spec = spec;
      tasks[k].max_abs = max_abs;
      tasks[k].opts = opts[k];
      if (want_curves) {
        curves[k].resize(static_cast<std::size_t>(candidate_count(spec, opts[k])));
        tasks[k].h_curve = curves[k].empty() ? nullptr : curves[k].data();
      }
    }
    results.assign(opts.size(), search_result{});
    check_status(cpu::search(tasks.data(), static_cast<std::int32_t>(tasks.size()), results.data(),
                             threads_),
                 "cpu::search");
  }

 private:
  int threads_;
  histogram_spec spec_{};
  std::vector<std::uint64_t> counts_;
};

}  // namespace

std::unique_ptr<backend> make_cpu_backend(int threads) {
  return std::make_unique<cpu_backend>(threads);
}

std::unique_ptr<backend> make_backend(const std::string& device, int threads) {
  if (device == "cpu") return make_cpu_backend(threads);
#if KLCAL_WITH_CUDA
  std::string why;
  if (device == "gpu" || device == "auto") {
    auto g = make_gpu_backend(&why);
    if (g) return g;
    if (device == "gpu") throw error(errc::cuda_error, "--device gpu: " + why);
    return make_cpu_backend(threads);
  }
#else
  if (device == "gpu") {
    throw error(errc::invalid_option,
                "--device gpu: this klcal was built without CUDA (KLCAL_ENABLE_CUDA=OFF)");
  }
  if (device == "auto") return make_cpu_backend(threads);
#endif
  throw usage_error("--device '" + device + "': expected auto, gpu or cpu");
}

}  // namespace klcal::cli
