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
#include "outputs.hpp"
#include "report.hpp"

namespace klcal::cli {
namespace {

const char* k_calibrate_help = R"(usage: klcal calibrate [options] INPUT...

INPUT: .npy files (tensor name = file stem), .npz archives (tensor name = member name
without .npy) or directories of them (natural order: layer.2 before layer.10; subdirectories
with --recursive). The same tensor name in several inputs = several calibration batches of one
tensor. Only regular files are read; a file given twice is refused.

  --method M         entropy|max|percentile|mse; comma-separated or repeated (default entropy)
  --rules R          tensorrt|mxnet entropy rule set (default tensorrt)
  --bins N           histogram bins (default 2048; 8001 for --rules mxnet)
  --range R          two-pass (default) or streaming (one pass; power-of-two --bins)
  --start-bin N      first candidate of tensorrt entropy and mse (default 128)
  --stride N         candidate step (default 1)
  --bits N           quantized bits, 2..16 (default 8)
  --unsigned         unsigned quantization (tensorrt rules only)
  --percentile P     percentile method, 0..100 (default 99.99); several comma-separated
                     values (99.9,99.99,99.999) give one result each
  --threads N        CPU threads, 0 = all (default 0)
  --device D         auto|gpu|cpu (default auto: GPU when one is present)
  --cache FILE       TensorRT calibration cache (first method; needs --bits 8, signed)
  --trt-version V    cache header version, 4 or 6 digits (default 8601)
  --json FILE        Q/DQ parameters, statistics and quality figures
  --csv FILE         one row per tensor and method
  --curves DIR       per-tensor histogram and score curves as CSV (for python_ref/plot.py)
  --json-histograms  also write every tensor's histogram counts into the --json file
  --save-histograms F  also save every tensor's histogram, range and statistics in a state
                     file (for klcal search, merge, inspect)
  --names FILE       JSON map {"dump name": "name" or ["name", ...]} of output names
  --recursive, -r    descend into subdirectories of directory inputs
  --void2 bf16       read .npy arrays with the 2-byte void descr '<V2' as bfloat16 (NumPy's
                     way of saving bf16); without it they are refused
  --force            overwrite existing output files ('-' = standard output, character
                     devices and FIFOs are written without it)
  --quiet, -q        no progress bar, no table

Exit status 0, or 3 when some tensor failed (the others are still in the outputs).
)";

bool is_pow2(std::int64_t v) {
  return v > 0 && (v & (v - 1)) == 0;
}

}  // namespace

void validate_search_settings(calibrate_settings& s) {
  if (s.methods.empty()) s.methods.push_back(method::entropy);
  if (s.percentiles.empty()) s.percentiles.push_back(s.percentile);
  {
    // Each method once; percentile once per distinct --percentile value, in the given order.
    std::vector<method> uniq;
    std::vector<double> pct, ps;
    for (double p : s.percentiles) {
      if (std::find(ps.begin(), ps.end(), p) == ps.end()) ps.push_back(p);
    }
    for (auto m : s.methods) {
      if (std::find(uniq.begin(), uniq.end(), m) != uniq.end()) continue;
      for (std::size_t i = 0; i < (m == method::percentile ? ps.size() : 1); ++i) {
        uniq.push_back(m);
        pct.push_back(m == method::percentile ? ps[i] : ps[0]);
      }
    }
    s.methods = uniq;
    s.method_percentile = pct;
    s.percentile = ps[0];
  }
  if (s.bits < 2 || s.bits > 16) {
    throw usage_error("--bits " + std::to_string(s.bits) + ": must be between 2 and 16");
  }
  for (double p : s.percentiles) {
    if (!(p >= 0 && p <= 100)) {
      throw usage_error("--percentile " + fmt_g(p) + ": must be between 0 and 100");
    }
  }
  if (s.stride < 1) throw usage_error("--stride " + std::to_string(s.stride) + ": must be >= 1");
  if (s.start_bin < 1) {
    throw usage_error("--start-bin " + std::to_string(s.start_bin) + ": must be >= 1");
  }
  const std::string& v = s.trt_version;
  if ((v.size() != 4 && v.size() != 6) || v.find_first_not_of("0123456789") != std::string::npos ||
      v[0] == '0') {
    throw usage_error("--trt-version '" + escaped(v) +
                      "': expected a TensorRT version number, 4 digits (TensorRT <= 8, e.g. 8601) "
                      "or 6 (TensorRT >= 10, e.g. 100900), not starting with 0");
  }
  if (!s.cache_path.empty() && (s.bits != 8 || s.is_unsigned)) {
    throw usage_error("--cache needs --bits 8 and signed levels (got --bits " +
                      std::to_string(s.bits) + (s.is_unsigned ? " --unsigned" : "") +
                      "): TensorRT reads a cache value as the scale of signed 8-bit levels "
                      "(range = scale x 127); use --json for other quantization settings");
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
  output_set outputs(s.force);
  outputs.add("--cache", s.cache_path);
  outputs.add("--json", s.json_path);
  outputs.add("--csv", s.csv_path);
  outputs.add("--save-histograms", s.save_path);
  if (s.inputs.empty()) throw usage_error("calibrate: no INPUT given (see klcal calibrate --help)");
  const name_map names = s.names_path.empty() ? name_map() : name_map(s.names_path);
  std::vector<file_id> input_files;
  input_options in_opts;
  in_opts.recursive = s.recursive;
  in_opts.void2 = s.void2;
  std::vector<tensor_group> groups = collect_inputs(s.inputs, in_opts, &input_files);
  if (groups.empty()) throw error(errc::io_error, "no tensors found in the inputs");
  names.check(groups);
  if (!s.cache_path.empty()) {
    for (const auto& g : groups) {
      for (const auto& n : names.targets(g.name)) warn_cache_name(n);
    }
  }

  // Curve files are named after tensors, so they can be checked only once the names are known.
  std::vector<tensor_result> planned(groups.size());
  for (std::size_t g = 0; g < groups.size(); ++g) planned[g].name = groups[g].name;
  plan_curve_files(s, planned, outputs);
  outputs.refuse_inputs(input_files);

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
  for (std::size_t k = 0; k < s.methods.size(); ++k) opts.push_back(options_at(s, k, s.rules));

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
      if (s.json_histograms) t.counts = st.counts;
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
    warn_zero_scale(t, &bar);
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
  if (!names.empty()) out = renamed(out, names);
  if (!s.save_path.empty()) outputs.set(s.save_path, formats::encode_states(saved, s.save_path));
  write_outputs(s, coll->name(), out, outputs);
  outputs.write_all();
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
    // One value or several ("99.9,99.99,99.999"): one percentile result each, in one pass.
    std::stringstream ss(w.value(a));
    std::string item;
    while (std::getline(ss, item, ',')) s.percentiles.push_back(parse_double(a, item, 0.0, 100.0));
    if (s.percentiles.empty()) throw usage_error("--percentile '': expected a number");
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
  } else if (a == "--json-histograms") {
    w.no_value(a);
    s.json_histograms = true;
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
    } else if (a == "--recursive" || a == "-r") {
      w.no_value(a);
      s.recursive = true;
    } else if (a == "--names") {
      s.names_path = w.value(a);
    } else if (a == "--void2") {
      s.void2 = parse_void2_option(a, w.value(a));
    } else if (a.size() > 1 && a[0] == '-') {
      throw usage_error("unknown option '" + a + "' (see klcal calibrate --help)");
    } else {
      s.inputs.push_back(a);
    }
  }
  return calibrate(std::move(s));
}

}  // namespace klcal::cli
