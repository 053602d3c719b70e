// `klcal inspect`: ASCII histogram of one tensor or saved histogram (log counts) with every
// method's threshold marked.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <random>

#include "args.hpp"
#include "cli.hpp"
#include "klcal/cpu_calibrator.hpp"
#include "klcal/state_file.hpp"

namespace klcal::cli {
namespace {

const char* k_inspect_help =
    R"(usage: klcal inspect FILE[.npy] | FILE.npz:MEMBER | STATE[:TENSOR] [options]

Prints the histogram of one tensor (log-scaled counts) and marks the threshold of every method:
E entropy, M max, P percentile (99.99), S mse. A .npy or .npz member is binned into a two-pass
abs histogram of --bins bins (tensorrt entropy). A state file (klcal calibrate
--save-histograms) is shown as saved, with its own bins and range; one with several tensors
lists them unless one is named as STATE:TENSOR.

  --bins N      histogram bins of a .npy/.npz tensor (default 2048)
  --width W     columns of the plot (default 100)
  --height H    rows of the plot (default 16)
  --threads N   CPU threads (default all)
)";

tensor_source resolve(const std::string& arg) {
  if (path_exists(arg)) {
    if (arg.size() >= 4 && arg.compare(arg.size() - 4, 4, ".npz") == 0) {
      formats::npz_archive a(formats::open_file(arg));
      if (a.members().size() != 1) {
        throw usage_error(arg + ": archive has " + std::to_string(a.members().size()) +
                          " members; name one as " + arg + ":MEMBER");
      }
      return tensor_source{arg, a.members()[0].file_name, a.members()[0]};
    }
    return tensor_source{arg, ""};
  }
  auto colon = arg.rfind(':');
  if (colon == std::string::npos) throw error(errc::io_error, arg + ": no such file");
  std::string file = arg.substr(0, colon), member = arg.substr(colon + 1);
  formats::npz_archive a(formats::open_file(file));
  for (const auto& m : a.members()) {
    if (m.file_name == member || formats::npz_archive::tensor_name(m) == member) {
      return tensor_source{file, m.file_name, m};
    }
  }
  throw error(errc::format_error, file + ": no member '" + member + "'");
}

// True when `path` is a regular file that starts with the state file magic.
bool is_state_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  char magic[sizeof formats::state_file_magic] = {};
  auto src = formats::open_file(path);
  return src->read_at(0, magic, sizeof magic) == sizeof magic &&
         std::memcmp(magic, formats::state_file_magic, sizeof magic) == 0;
}

// Splits "STATE:TENSOR" at the first ':' whose prefix is a state file (names may hold ':').
bool split_state_arg(const std::string& arg, std::string* file, std::string* tensor) {
  if (is_state_file(arg)) {
    *file = arg;
    tensor->clear();
    return true;
  }
  for (auto c = arg.find(':'); c != std::string::npos; c = arg.find(':', c + 1)) {
    if (is_state_file(arg.substr(0, c))) {
      *file = arg.substr(0, c);
      *tensor = arg.substr(c + 1);
      return true;
    }
  }
  return false;
}

struct marker {
  char mark;
  std::string label;
  search_result r;
};

// The plot: header, log-scaled columns, markers at each amax, and one line per method.
void plot(const std::string& title, const calibrator_state& st, const std::vector<marker>& ms,
          int width, int height) {
  const histogram_spec& spec = st.spec;
  const tensor_stats& s = st.stats;
  const std::int32_t bins = spec.bins;
  width = std::min<int>(width, bins);
  std::vector<std::uint64_t> col(static_cast<std::size_t>(width), 0);
  for (std::int32_t j = 0; j < bins; ++j)
    col[std::size_t(std::int64_t(j) * width / bins)] += st.counts[std::size_t(j)];
  std::uint64_t peak = 0;
  for (auto v : col) peak = std::max(peak, v);
  std::vector<int> level(col.size(), 0);
  for (std::size_t x = 0; x < col.size(); ++x) {
    if (col[x] == 0) continue;
    double f = std::log10(1.0 + double(col[x])) / std::log10(1.0 + double(peak));
    level[x] = std::max(1, static_cast<int>(std::ceil(f * height)));
  }
  std::string markers(col.size(), ' ');
  const double lo = spec.lo, hi = spec.hi;
  for (const auto& m : ms) {
    if (m.r.degenerate && m.r.amax == 0) continue;
    int x = static_cast<int>(std::floor((m.r.amax - lo) / (hi - lo) * width));
    x = std::clamp(x, 0, width - 1);
    markers[std::size_t(x)] = markers[std::size_t(x)] == ' ' ? m.mark : '*';
  }
  const std::uint64_t count = s.finite_count + s.nan_count + s.inf_count;
  std::cout << title << ": " << count << " elements, min " << fmt_g(s.min) << ", max "
            << fmt_g(s.max) << ", max|x| " << fmt_g(s.max_abs) << ", NaN " << s.nan_count
            << ", Inf " << s.inf_count << "\n";
  std::cout << (spec.kind == layout::abs ? "abs" : "signed") << " histogram ("
            << range_name(st.policy) << "): " << bins << " bins over [" << fmt_g(lo) << ", "
            << fmt_g(hi) << "), " << (bins / width) << "+ bins per column, log10 counts (peak "
            << peak << ")\n\n";
  for (int row = height; row >= 1; --row) {
    std::string line;
    for (std::size_t x = 0; x < col.size(); ++x) {
      line += level[x] >= row ? '#' : (markers[x] != ' ' ? '|' : ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::cout << "  |" << line << "\n";
  }
  std::cout << "  +" << std::string(col.size(), '-') << "\n";
  std::string mk = markers;
  while (!mk.empty() && mk.back() == ' ') mk.pop_back();
  std::cout << "   " << mk << "\n";
  std::string axis = fmt_g(lo);
  std::string right = fmt_g(hi);
  axis += std::string(std::max<std::size_t>(
                          1, col.size() - axis.size() - std::min(col.size() - 2, right.size())),
                      ' ') +
          right;
  std::cout << "   " << axis << "\n\n";
  for (const auto& m : ms) {
    std::cout << "  " << m.mark << " " << m.label
              << std::string(m.label.size() < 11 ? 11 - m.label.size() : 1, ' ') << "amax "
              << fmt_g(m.r.amax) << "  scale " << formats::scale_hex(m.r.scale) << "  bin "
              << m.r.index << "  clipped " << fmt_g(100.0 * m.r.clipped_fraction, 4) << "%"
              << (m.r.degenerate ? "  (degenerate)" : "") << "\n";
  }
}

// Every method the histogram's layout allows, at its defaults.
std::vector<marker> default_markers(const calibrator_state& st, int threads) {
  const cpu::calibrator cal = cpu::calibrator::from_state(st, threads);
  std::vector<marker> ms;
  auto add = [&](char mark, method m, rule_set rules) {
    search_options o;
    o.meth = m;
    o.rules = rules;
    if (!validate(st.spec, o).ok()) return;
    ms.push_back({mark, method_name(m), cal.compute(o)});
  };
  const bool abs = st.spec.kind == layout::abs;
  add('E', method::entropy, abs ? rule_set::tensorrt : rule_set::mxnet);
  add('M', method::max, rule_set::tensorrt);
  add('P', method::percentile, rule_set::tensorrt);
  add('S', method::mse, rule_set::tensorrt);
  return ms;
}

int inspect_state(const std::string& file, const std::string& tensor, int width, int height,
                  int threads) {
  const std::vector<named_state> all = formats::read_state_file(file);
  if (all.empty()) {
    std::cout << file << ": state file with no tensors\n";
    return exit_ok;
  }
  if (tensor.empty() && all.size() > 1) {
    std::cout << file << ": state file with " << all.size() << " tensors (name one as " << file
              << ":TENSOR for its plot)\n";
    std::vector<std::vector<std::string>> rows = {
        {"tensor", "range", "layout", "bins", "lo", "hi", "elements", "max|x|", "nan", "inf"}};
    for (const auto& t : all) {
      const auto& st = t.state;
      rows.push_back(
          {t.name, range_name(st.policy), st.spec.kind == layout::abs ? "abs" : "signed",
           std::to_string(st.spec.bins), fmt_g(st.spec.lo), fmt_g(st.spec.hi),
           std::to_string(st.stats.finite_count + st.stats.nan_count + st.stats.inf_count),
           fmt_g(st.stats.max_abs), std::to_string(st.stats.nan_count),
           std::to_string(st.stats.inf_count)});
    }
    print_table(rows, std::cout);
    return exit_ok;
  }
  const named_state* pick = all.size() == 1 && tensor.empty() ? &all[0] : nullptr;
  for (const auto& t : all) {
    if (!tensor.empty() && t.name == tensor) pick = &t;
  }
  if (pick == nullptr) throw error(errc::format_error, file + ": no tensor '" + tensor + "'");
  if (!pick->state.range_done) {
    throw error(errc::format_error, file + ": tensor '" + pick->name +
                                        "' holds only the first pass of a two-pass range (no "
                                        "counts yet)");
  }
  plot(file + ":" + pick->name, pick->state, default_markers(pick->state, threads), width, height);
  return exit_ok;
}

}  // namespace

int run_inspect(const std::vector<std::string>& args) {
  std::string file;
  std::int32_t bins = 2048;
  int width = 100, height = 16, threads = 0;
  arg_walker w(args);
  while (!w.done()) {
    std::string a = w.next();
    if (a == "--help" || a == "-h") {
      std::cout << k_inspect_help;
      return exit_ok;
    } else if (a == "--bins") {
      bins = static_cast<std::int32_t>(
          parse_int(a, w.value(a), 129, max_bins, "the default start bin is 128"));
    } else if (a == "--width") {
      width = static_cast<int>(parse_int(a, w.value(a), 10, 1000));
    } else if (a == "--height") {
      height = static_cast<int>(parse_int(a, w.value(a), 2, 200));
    } else if (a == "--threads") {
      threads = static_cast<int>(parse_int(a, w.value(a), 0, 4096));
    } else if (a.size() > 1 && a[0] == '-') {
      throw usage_error("unknown option '" + a + "' (see klcal inspect --help)");
    } else if (file.empty()) {
      file = a;
    } else {
      throw usage_error("inspect takes one FILE (got '" + file + "' and '" + a + "')");
    }
  }
  if (file.empty()) throw usage_error("no FILE given (see klcal inspect --help)");
  std::string state_path, tensor;
  if (split_state_arg(file, &state_path, &tensor)) {
    return inspect_state(state_path, tensor, width, height, threads);
  }
  tensor_source src = resolve(file);
  cpu::calibrator cal = cpu::calibrator::two_pass(bins, layout::abs, threads);
  formats::chunk c;
  std::int64_t count = 0;
  {
    auto r = src.open();
    count = r.header().count;
    while (r.next(c)) cal.add_range(c.data, c.n, c.type);
  }
  if (count == 0) throw error(errc::format_error, src.display() + ": tensor is empty");
  cal.end_range_pass();
  {
    auto r = src.open();
    while (r.next(c)) cal.add(c.data, c.n, c.type);
  }
  plot(src.display(), cal.state(), default_markers(cal.state(), threads), width, height);
  return exit_ok;
}

int run_bench_histogram(const std::vector<std::string>& args) {
  std::int64_t mib = 1024;
  int threads = 0;
  arg_walker w(args);
  while (!w.done()) {
    std::string a = w.next();
    if (a == "--mib")
      mib = parse_int(a, w.value(a), 1, 1 << 20);
    else if (a == "--threads")
      threads = static_cast<int>(parse_int(a, w.value(a), 0, 4096));
    else
      throw usage_error("unknown option '" + a + "' (bench-histogram --mib N --threads N)");
  }
  // Same data shape as scripts/bench-cli.sh: Gaussian-ish fp32 values, two passes of 2048 bins.
  std::size_t n = static_cast<std::size_t>(mib) << 18;
  std::vector<float> v(n);
  std::mt19937 g(1);
  for (auto& x : v) x = static_cast<float>(static_cast<std::int32_t>(g())) * 0x1p-31f;
  auto run = [&](std::size_t chunk) {
    auto t0 = std::chrono::steady_clock::now();
    cpu::calibrator cal = cpu::calibrator::two_pass(2048, layout::abs, threads);
    for (std::size_t i = 0; i < n; i += chunk) {
      cal.add_range(v.data() + i, std::int64_t(std::min(chunk, n - i)), dtype::f32);
    }
    cal.end_range_pass();
    for (std::size_t i = 0; i < n; i += chunk) {
      cal.add(v.data() + i, std::int64_t(std::min(chunk, n - i)), dtype::f32);
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return double(n) * 4 / s / 1048576.0;  // MiB of input per second, both passes included
  };
  run(n);  // warm-up (page faults)
  double whole = run(n), chunked = run(std::size_t{4} << 20);
  std::cout << "in-memory two-pass (stats + 2048-bin histogram) over " << mib
            << " MiB fp32: whole buffer " << fmt_g(whole, 4) << " MiB/s, 16 MiB chunks "
            << fmt_g(chunked, 4) << " MiB/s\n";
  return exit_ok;
}

}  // namespace klcal::cli
