// `klcal inspect`: ASCII histogram of one tensor (log counts) with every method's threshold marked.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <random>

#include "args.hpp"
#include "cli.hpp"
#include "klcal/cpu.hpp"

namespace klcal::cli {
namespace {

const char* k_inspect_help = R"(usage: klcal inspect FILE[.npy] | FILE.npz:MEMBER [options]

Prints the two-pass abs histogram of one tensor (log-scaled counts) and marks the threshold of
every method: E entropy (tensorrt), M max, P percentile (99.99), S mse.

  --bins N      histogram bins (default 2048)
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
  tensor_source src = resolve(file);
  auto be = make_cpu_backend(threads);
  tensor_stats st;
  formats::chunk c;
  std::int64_t count = 0;
  {
    auto r = src.open();
    count = r.header().count;
    while (r.next(c)) be->stats(c, &st);
  }
  if (count == 0) throw error(errc::format_error, src.display() + ": tensor is empty");
  const histogram_spec spec = two_pass_spec(st.max_abs, bins, false);
  const float hi = spec.hi;
  be->begin(spec);
  {
    auto r = src.open();
    while (r.next(c)) be->histogram(c, false);
  }
  std::vector<search_options> opts(4);
  const method ms[4] = {method::entropy, method::max, method::percentile, method::mse};
  const char marks[4] = {'E', 'M', 'P', 'S'};
  for (int k = 0; k < 4; ++k) opts[k].meth = ms[k];
  std::vector<search_result> res;
  std::vector<std::vector<double>> curves;
  be->search(spec, st.max_abs, opts, false, res, curves);
  auto counts = be->counts();

  width = std::min<int>(width, bins);
  std::vector<std::uint64_t> col(static_cast<std::size_t>(width), 0);
  for (std::int32_t j = 0; j < bins; ++j)
    col[std::size_t(std::int64_t(j) * width / bins)] += counts[j];
  std::uint64_t peak = 0;
  for (auto v : col) peak = std::max(peak, v);
  std::vector<int> level(col.size(), 0);
  for (std::size_t x = 0; x < col.size(); ++x) {
    if (col[x] == 0) continue;
    double f = std::log10(1.0 + double(col[x])) / std::log10(1.0 + double(peak));
    level[x] = std::max(1, static_cast<int>(std::ceil(f * height)));
  }
  std::string markers(col.size(), ' ');
  for (int k = 0; k < 4; ++k) {
    if (res[k].degenerate && res[k].amax == 0) continue;
    int x = static_cast<int>(std::floor(res[k].amax / double(hi) * width));
    x = std::clamp(x, 0, width - 1);
    markers[std::size_t(x)] = markers[std::size_t(x)] == ' ' ? marks[k] : '*';
  }

  std::cout << src.display() << ": " << count << " elements, min " << fmt_g(st.min) << ", max "
            << fmt_g(st.max) << ", max|x| " << fmt_g(st.max_abs) << ", NaN " << st.nan_count
            << ", Inf " << st.inf_count << "\n";
  std::cout << "abs histogram: " << bins << " bins over [0, " << fmt_g(hi) << "), "
            << (bins / width) << "+ bins per column, log10 counts (peak " << peak << ")\n\n";
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
  std::string axis = "0";
  std::string right = fmt_g(hi);
  axis +=
      std::string(std::max<std::size_t>(1, col.size() - 1 - std::min(col.size() - 2, right.size())),
                  ' ') +
      right;
  std::cout << "   " << axis << "\n\n";
  for (int k = 0; k < 4; ++k) {
    std::cout << "  " << marks[k] << " " << method_name(ms[k])
              << std::string(11 - std::string(method_name(ms[k])).size(), ' ') << "amax "
              << fmt_g(res[k].amax) << "  scale " << formats::scale_hex(res[k].scale) << "  bin "
              << res[k].index << "  clipped " << fmt_g(100.0 * res[k].clipped_fraction, 4) << "%"
              << (res[k].degenerate ? "  (degenerate)" : "") << "\n";
  }
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
  auto be = make_cpu_backend(threads);
  auto run = [&](std::size_t chunk) {
    auto t0 = std::chrono::steady_clock::now();
    tensor_stats st;
    for (std::size_t i = 0; i < n; i += chunk) {
      formats::chunk c{v.data() + i, dtype::f32, std::int64_t(std::min(chunk, n - i))};
      be->stats(c, &st);
    }
    be->begin(histogram_spec{layout::abs, 2048, 0.0f, st.max_abs});
    for (std::size_t i = 0; i < n; i += chunk) {
      formats::chunk c{v.data() + i, dtype::f32, std::int64_t(std::min(chunk, n - i))};
      be->histogram(c, false);
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
