// `klcal calibrate`: streams tensors through a backend, searches thresholds, writes the outputs.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <set>
#include <sstream>

#include "args.hpp"
#include "cli.hpp"
#include "klcal/state_file.hpp"
#include "report.hpp"

namespace klcal::cli {
namespace {

const char* k_calibrate_help = R"(usage: klcal calibrate [options] INPUT...

INPUT: .npy files (tensor name = file stem), .npz archives (tensor name = member name
without .npy) or directories of them (not recursive, sorted by name). The same tensor name
in several inputs = several calibration batches of one tensor.

  --method M         entropy|max|percentile|mse; comma-separated or repeated (default entropy)
  --rules R          tensorrt|mxnet entropy rule set (default tensorrt)
  --bins N           histogram bins (default 2048; 8001 for --rules mxnet)
  --range R          two-pass (default) or streaming (one pass; power-of-two --bins)
  --start-bin N      first candidate of tensorrt entropy and mse (default 128)
  --stride N         candidate step (default 1)
  --bits N           quantized bits, 2..16 (default 8)
  --unsigned         unsigned quantization (tensorrt rules only)
  --percentile P     percentile method, 0..100 (default 99.99)
  --threads N        CPU threads, 0 = all (default 0)
  --device D         auto|gpu|cpu (default auto: GPU when one is present)
  --cache FILE       TensorRT calibration cache (first method)
  --trt-version V    cache header version, 4 or 6 digits (default 8601)
  --json FILE        Q/DQ parameters, statistics and quality figures
  --csv FILE         one row per tensor and method
  --curves DIR       per-tensor histogram and score curves as CSV (for python_ref/plot.py)
  --save-histograms F  also save every tensor's histogram, range and statistics in a state
                     file (for klcal search, merge, inspect)
  --force            overwrite existing output files
  --quiet, -q        no progress bar, no table

Exit status 0, or 3 when some tensor failed (the others are still in the outputs).
)";

bool is_pow2(std::int64_t v) {
  return v > 0 && (v & (v - 1)) == 0;
}

}  // namespace

void validate_search_settings(calibrate_settings& s) {
  if (s.methods.empty()) s.methods.push_back(method::entropy);
  {
    std::vector<method> uniq;
    for (auto m : s.methods) {
      if (std::find(uniq.begin(), uniq.end(), m) == uniq.end()) uniq.push_back(m);
    }
    s.methods = uniq;
  }
  if (s.bits < 2 || s.bits > 16) {
    throw usage_error("--bits " + std::to_string(s.bits) + ": must be between 2 and 16");
  }
  if (!(s.percentile >= 0 && s.percentile <= 100)) {
    throw usage_error("--percentile " + fmt_g(s.percentile) + ": must be between 0 and 100");
  }
  if (s.stride < 1) throw usage_error("--stride " + std::to_string(s.stride) + ": must be >= 1");
  if (s.start_bin < 1) {
    throw usage_error("--start-bin " + std::to_string(s.start_bin) + ": must be >= 1");
  }
  if (s.trt_version.size() < 4 || s.trt_version.size() > 6 ||
      s.trt_version.find_first_not_of("0123456789") != std::string::npos) {
    throw usage_error("--trt-version '" + s.trt_version +
                      "': expected 4 digits (TensorRT <= 8, e.g. 8601) or 6 (e.g. 100900)");
  }
  if (s.rules_given && s.rules == rule_set::mxnet && s.is_unsigned) {
    throw usage_error("--unsigned is not available with --rules mxnet");
  }
}

namespace {

void validate_settings(calibrate_settings& s) {
  validate_search_settings(s);
  const bool mx = s.rules == rule_set::mxnet;
  if (s.bins < 0) s.bins = mx ? 8001 : 2048;
  if (s.bins < 2 || s.bins > max_bins) {
    throw usage_error("--bins " + std::to_string(s.bins) + ": must be between 2 and " +
                      std::to_string(max_bins));
  }
  if (mx) {
    if (s.bins % 2 == 0) {
      throw usage_error("--rules mxnet needs an odd --bins (got " + std::to_string(s.bins) + ")");
    }
    if (s.is_unsigned) throw usage_error("--unsigned is not available with --rules mxnet");
    if (s.streaming) {
      throw usage_error("--range streaming needs the abs layout; --rules mxnet uses a signed one");
    }
    for (auto m : s.methods) {
      if (m == method::percentile || m == method::mse) {
        throw usage_error(std::string("--method ") + method_name(m) +
                          " needs the abs histogram of --rules tensorrt, not --rules mxnet");
      }
    }
  }
  for (auto m : s.methods) {
    bool uses_start = (m == method::entropy && !mx) || m == method::mse;
    if (uses_start && (m == method::mse ? s.start_bin >= s.bins : s.start_bin > s.bins)) {
      throw usage_error("--start-bin " + std::to_string(s.start_bin) + " must be " +
                        (m == method::mse ? "smaller than" : "at most") + " --bins " +
                        std::to_string(s.bins) + " (method " + method_name(m) + ")");
    }
  }
  if (s.streaming && !is_pow2(s.bins)) {
    throw usage_error("--range streaming needs a power-of-two --bins (got " +
                      std::to_string(s.bins) + "; try 2048)");
  }
  // Backstop: the library's own validation of every (spec, options) pair.
  histogram_spec probe{mx ? layout::signed_ : layout::abs, s.bins, mx ? -1.0f : 0.0f, 1.0f};
  for (auto m : s.methods) {
    const search_options o = options_for(s, m, s.rules);
    if (status st = validate(probe, o); !st.ok()) {
      throw usage_error(explain_options(st, probe, o));
    }
  }
}

/// Streams every batch of one tensor through the collector: two passes (statistics, then
/// bins) or one (streaming). Returns the tensor's state.
calibrator_state collect(state_collector& coll, const calibrate_settings& s,
                         const tensor_group& grp, progress_bar& bar) {
  const bool mx = s.rules == rule_set::mxnet;
  coll.begin(s.streaming ? range_policy::streaming : range_policy::two_pass, s.bins,
             mx ? layout::signed_ : layout::abs);
  formats::chunk c;
  auto pass = [&](bool first) {
    for (const auto& src : grp.sources) {
      auto r = src.open();
      while (r.next(c)) {
        if (first)
          coll.add_range(c);
        else
          coll.add(c);
        bar.add(std::uint64_t(c.n) * r.header().itemsize(), grp.name);
      }
    }
  };
  if (s.streaming) {
    pass(false);
    return coll.finish();
  }
  pass(true);
  try {
    coll.end_range_pass();
  } catch (const error& e) {
    if (e.code().code != errc::invalid_range) throw;
    const float m = coll.finish().stats.max_abs;
    throw error(e.code(), "max |x| = " + fmt_g(m, 9) + ": " +
                              (mx ? "the signed histogram of --rules mxnet spans [-max|x|, "
                                    "max|x|), whose width overflows fp32; --rules tensorrt "
                                    "(abs histogram over [0, max|x|)) can calibrate it"
                                  : "no valid histogram range"));
  }
  bar.start_pass(2);
  pass(false);
  return coll.finish();
}

}  // namespace

int report_failures(const std::string& cmd, std::size_t failed, std::size_t total) {
  if (failed == 0) return exit_ok;
  std::cerr << "klcal " << cmd << ": error: " << failed << " of " << total
            << " tensors failed (messages above); the outputs hold the other " << total - failed
            << "\n";
  return exit_input;
}

int calibrate(calibrate_settings s) {
  validate_settings(s);
  check_output(s.cache_path, s.force, "--cache");
  check_output(s.json_path, s.force, "--json");
  check_output(s.csv_path, s.force, "--csv");
  check_output(s.save_path, s.force, "--save-histograms");
  if (s.inputs.empty()) throw usage_error("calibrate: no INPUT given (see klcal calibrate --help)");
  std::vector<tensor_group> groups = collect_inputs(s.inputs);
  if (groups.empty()) throw error(errc::io_error, "no tensors found in the inputs");

  // Curve files are named after tensors, so they can be checked only once the names are known.
  std::vector<tensor_result> planned(groups.size());
  for (std::size_t g = 0; g < groups.size(); ++g) planned[g].name = groups[g].name;
  plan_curve_files(s, planned);

  // Open every source once before any work: headers are checked and sizes known up front.
  std::uint64_t total_bytes = 0;
  std::vector<std::int64_t> elements(groups.size(), 0);
  for (std::size_t g = 0; g < groups.size(); ++g) {
    for (const auto& src : groups[g].sources) {
      auto r = src.open(1);
      elements[g] += r.header().count;
      total_bytes += std::uint64_t(r.header().count) * r.header().itemsize();
    }
  }
  std::unique_ptr<state_collector> coll = make_collector(s.device, s.threads);
  progress_bar bar(!s.quiet && ::isatty(2), total_bytes, s.streaming ? 1 : 2);

  std::vector<search_options> opts;
  for (auto m : s.methods) opts.push_back(options_for(s, m, s.rules));

  std::vector<tensor_result> out;
  std::vector<named_state> saved;
  std::size_t failed = 0, tried = 0;
  const bool want_curves = !s.curves_dir.empty();
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const auto& grp = groups[g];
    if (elements[g] == 0) {
      bar.finish();
      warn("tensor '" + grp.name + "' is empty (0 elements), skipped");
      continue;
    }
    ++tried;
    tensor_result t;
    try {
      calibrator_state st = collect(*coll, s, grp, bar);
      bar.next_tensor();
      t = search_state(grp.name, st, opts, want_curves, s.threads);
      if (!s.save_path.empty()) saved.push_back({grp.name, std::move(st)});
    } catch (const error& e) {
      // Data-dependent failures (a range no histogram can hold) fail this tensor only; reading
      // and device errors end the run.
      const errc c = e.code().code;
      if (c == errc::io_error || c == errc::format_error || c == errc::cuda_error ||
          c == errc::out_of_memory) {
        throw;
      }
      bar.next_tensor();
      bar.finish();
      std::cerr << "klcal calibrate: error: tensor '" << grp.name << "': " << e.what() << "\n";
      ++failed;
      continue;
    }
    if (t.stats.finite_count == 0) {
      bar.finish();
      warn("tensor '" + grp.name + "' has no finite values (" + std::to_string(t.stats.nan_count) +
           " NaN, " + std::to_string(t.stats.inf_count) + " Inf): degenerate result, scale 0");
    }
    t.elements = elements[g];
    for (const auto& src : grp.sources) t.sources.push_back(src.display());
    t.hist_file = planned[g].hist_file;
    t.curve_files = planned[g].curve_files;
    out.push_back(std::move(t));
  }
  bar.finish();
  if (tried == 0) throw error(errc::io_error, "every tensor in the inputs is empty");
  if (out.empty()) {
    std::cerr << "klcal calibrate: error: every tensor failed; no output written\n";
    return exit_input;
  }
  write_outputs(s, coll->name(), out);
  if (!s.save_path.empty()) formats::write_state_file(s.save_path, saved);
  return report_failures("calibrate", failed, tried);
}

bool parse_search_option(arg_walker& w, const std::string& a, calibrate_settings& s) {
  if (a == "--method") {
    std::string v = w.value(a);
    std::stringstream ss(v);
    std::string item;
    bool any = false;
    while (std::getline(ss, item, ',')) {
      any = true;
      s.methods.push_back(parse_method_option(a, item));
    }
    if (!any) throw usage_error("--method '': expected entropy, max, percentile or mse");
  } else if (a == "--rules") {
    s.rules = parse_rules_option(a, w.value(a));
    s.rules_given = true;
  } else if (a == "--start-bin") {
    s.start_bin = static_cast<std::int32_t>(parse_int(a, w.value(a), 1, max_bins));
  } else if (a == "--stride") {
    s.stride = static_cast<std::int32_t>(parse_int(a, w.value(a), 1, max_bins));
  } else if (a == "--bits") {
    s.bits = static_cast<std::int32_t>(parse_int(a, w.value(a), 2, 16));
  } else if (a == "--unsigned") {
    w.no_value(a);
    s.is_unsigned = true;
  } else if (a == "--percentile") {
    s.percentile = parse_double(a, w.value(a), 0.0, 100.0);
  } else if (a == "--threads") {
    s.threads = static_cast<int>(parse_int(a, w.value(a), 0, 4096));
  } else if (a == "--cache") {
    s.cache_path = w.value(a);
  } else if (a == "--json") {
    s.json_path = w.value(a);
  } else if (a == "--csv") {
    s.csv_path = w.value(a);
  } else if (a == "--curves") {
    s.curves_dir = w.value(a);
  } else if (a == "--trt-version") {
    s.trt_version = w.value(a);
  } else if (a == "--force") {
    w.no_value(a);
    s.force = true;
  } else if (a == "--quiet" || a == "-q") {
    w.no_value(a);
    s.quiet = true;
  } else {
    return false;
  }
  return true;
}

int run_calibrate(const std::vector<std::string>& args) {
  calibrate_settings s;
  arg_walker w(args);
  while (!w.done()) {
    std::string a = w.next();
    if (a == "--help" || a == "-h") {
      std::cout << k_calibrate_help;
      return exit_ok;
    } else if (parse_search_option(w, a, s)) {
      continue;
    } else if (a == "--range") {
      std::string v = w.value(a);
      if (v == "two-pass" || v == "two_pass")
        s.streaming = false;
      else if (v == "streaming")
        s.streaming = true;
      else
        throw usage_error("--range '" + v + "': expected two-pass or streaming");
    } else if (a == "--bins") {
      s.bins = static_cast<std::int32_t>(parse_int(a, w.value(a), 2, max_bins));
    } else if (a == "--device") {
      s.device = w.value(a);
      if (s.device != "auto" && s.device != "gpu" && s.device != "cpu") {
        throw usage_error("--device '" + s.device + "': expected auto, gpu or cpu");
      }
    } else if (a == "--save-histograms") {
      s.save_path = w.value(a);
    } else if (a.size() > 1 && a[0] == '-') {
      throw usage_error("unknown option '" + a + "' (see klcal calibrate --help)");
    } else {
      s.inputs.push_back(a);
    }
  }
  return calibrate(std::move(s));
}

}  // namespace klcal::cli
