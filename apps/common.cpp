// The CPU backend adapter, backend selection and small helpers of the klcal tool.
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "cli.hpp"
#include "klcal/cpu.hpp"

namespace klcal::cli {

void warn(const std::string& msg) {
  std::cerr << "klcal: warning: " << escaped(msg) << "\n";
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
