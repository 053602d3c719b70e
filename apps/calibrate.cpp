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
  --percentile P     percentile method, 0..100 (default 99.99)
  --threads N        CPU threads, 0 = all (default 0)
  --device D         auto|gpu|cpu (default auto: GPU when one is present)
  --cache FILE       TensorRT calibration cache (first method; needs --bits 8, signed)
  --trt-version V    cache header version, 4 or 6 digits (default 8601)
  --json FILE        Q/DQ parameters, statistics and quality figures
  --csv FILE         one row per tensor and method
  --curves DIR       per-tensor histogram and score curves as CSV (for python_ref/plot.py)
  --names FILE       JSON map {"dump name": "name" or ["name", ...]} of output names
  --recursive, -r    descend into subdirectories of directory inputs
  --force            overwrite existing output files ('-' = standard output, character
                     devices and FIFOs are written without it)
  --quiet, -q        no progress bar, no table
)";

bool is_pow2(std::int64_t v) {
  return v > 0 && (v & (v - 1)) == 0;
}

void merge_stats(tensor_stats& a, const tensor_stats& b) {
  a.finite_count += b.finite_count;
  a.nan_count += b.nan_count;
  a.inf_count += b.inf_count;
  a.max_abs = std::max(a.max_abs, b.max_abs);
  a.min = std::min(a.min, b.min);
  a.max = std::max(a.max, b.max);
}

std::string sanitize(const std::string& n) {
  std::string s;
  for (char c : n) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_';
    s += ok ? c : '_';
  }
  return s.empty() || s[0] == '.' ? "_" + s : s;
}

// Threshold of curve candidate k (docs/numerics.md 5.2), fp64.
double candidate_threshold(const histogram_spec& spec, const search_options& o, std::int64_t k) {
  double w = double(spec.hi - spec.lo) / spec.bins;
  if (o.meth == method::entropy && o.rules == rule_set::mxnet) {
    std::int64_t i = ((std::int64_t{1} << o.bits) - 1) / 2 + k;
    return (double(i) + 0.5) * w;
  }
  std::int64_t i = o.start_bin + k * o.stride;
  return o.meth == method::mse ? (double(i) + 0.5) * w : double(i) * w;
}

/// The search options of method m under the run's settings (rules apply to entropy only).
search_options options_for(const calibrate_settings& s, method m) {
  search_options o;
  o.meth = m;
  o.rules = m == method::entropy ? s.rules : rule_set::tensorrt;
  o.start_bin = s.start_bin;
  o.stride = s.stride;
  o.bits = s.bits;
  o.is_unsigned = s.is_unsigned;
  o.percentile = s.percentile;
  return o;
}

/// One line on stderr (also with --quiet) for a tensor with a zero scale: TensorRT would
/// quantize every value of it to 0.
void warn_zero_scale(const tensor_result& t, progress_bar& bar) {
  std::string which;
  for (std::size_t k = 0; k < t.results.size(); ++k) {
    if (t.results[k].scale == 0.0f)
      which += std::string(which.empty() ? "" : ", ") + method_name(t.opts[k].meth);
  }
  if (which.empty()) return;
  std::string why;
  if (t.stats.finite_count == 0) {
    why = "has no finite values (" + std::to_string(t.stats.nan_count) + " NaN, " +
          std::to_string(t.stats.inf_count) + " Inf)";
  } else if (t.stats.max_abs == 0.0f) {
    why = "is all zero";
  } else {
    why = "has max |x| = " + fmt_g(t.stats.max_abs) + " (too small for the histogram range)";
  }
  bar.finish();
  warn("tensor '" + t.name + "' " + why + ": scale 0 (" + which +
       "); a reader of the cache would quantize all of it to 0");
}

/// The results under their --names output names: a tensor mapped to several names appears once
/// per name (the same histogram and thresholds).
std::vector<tensor_result> renamed(const std::vector<tensor_result>& in, const name_map& names) {
  std::vector<tensor_result> out;
  for (const auto& t : in) {
    for (const auto& n : names.targets(t.name)) {
      out.push_back(t);
      out.back().name = n;
    }
  }
  return out;
}

void validate_settings(calibrate_settings& s) {
  if (s.methods.empty()) s.methods.push_back(method::entropy);
  {
    std::vector<method> uniq;
    for (auto m : s.methods) {
      if (std::find(uniq.begin(), uniq.end(), m) == uniq.end()) uniq.push_back(m);
    }
    s.methods = uniq;
  }
  const bool mx = s.rules == rule_set::mxnet;
  if (s.bins < 0) s.bins = mx ? 8001 : 2048;
  if (s.bins < 2 || s.bins > max_bins) {
    throw usage_error("--bins " + std::to_string(s.bins) + ": must be between 2 and " +
                      std::to_string(max_bins));
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
                      "): TensorRT reads a cache value as the scale of signed 8-bit levels (range "
                      "= scale x 127); "
                      "use --json for other "
                      "quantization settings");
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
    const search_options o = options_for(s, m);
    if (status st = validate(probe, o); !st.ok()) {
      throw usage_error(std::string("invalid options for method ") + method_name(m) + ": " +
                        to_string(st));
    }
  }
}

}  // namespace

int calibrate(calibrate_settings s) {
  validate_settings(s);
  if (s.curves_dir == "-") throw usage_error("--curves -: --curves names a directory");
  output_set outputs(s.force);
  outputs.add("--cache", s.cache_path);
  outputs.add("--json", s.json_path);
  outputs.add("--csv", s.csv_path);
  if (s.inputs.empty()) throw usage_error("calibrate: no INPUT given (see klcal calibrate --help)");
  const name_map names = s.names_path.empty() ? name_map() : name_map(s.names_path);
  std::vector<file_id> input_files;
  input_options in_opts;
  in_opts.recursive = s.recursive;
  std::vector<tensor_group> groups = collect_inputs(s.inputs, in_opts, &input_files);
  if (groups.empty()) throw error(errc::io_error, "no tensors found in the inputs");
  names.check(groups);
  if (!s.cache_path.empty()) {
    for (const auto& g : groups) {
      for (const auto& n : names.targets(g.name)) warn_cache_name(n);
    }
  }

  // Curve files are named after tensors, so they can be checked only once the names are known.
  std::vector<std::string> hist_files(groups.size());
  std::vector<std::vector<std::string>> curve_files(groups.size());
  if (!s.curves_dir.empty()) {
    struct stat st {};
    if (::stat(s.curves_dir.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        throw error(errc::io_error, "--curves " + s.curves_dir + ": not a directory");
      }
    } else if (::mkdir(s.curves_dir.c_str(), 0777) != 0) {
      throw error(errc::io_error, "--curves " + s.curves_dir +
                                      ": cannot create directory: " + std::strerror(errno));
    }
    std::set<std::string> used;
    for (std::size_t g = 0; g < groups.size(); ++g) {
      std::string base = sanitize(groups[g].name);
      std::string stem = base;
      for (int k = 2; used.count(stem); ++k) stem = base + "~" + std::to_string(k);
      used.insert(stem);
      hist_files[g] = stem + ".histogram.csv";
      outputs.add("--curves", s.curves_dir + "/" + hist_files[g]);
      for (auto m : s.methods) {
        std::string f;
        if (m == method::entropy || m == method::mse) {
          f = stem + "." + method_name(m) + ".csv";
          outputs.add("--curves", s.curves_dir + "/" + f);
        }
        curve_files[g].push_back(f);
      }
    }
  }

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
  std::unique_ptr<backend> be = make_backend(s.device, s.threads);
  const bool show_progress = !s.quiet && ::isatty(2);
  progress_bar bar(show_progress, total_bytes * (s.streaming ? 1 : 2));

  std::vector<search_options> opts;
  for (auto m : s.methods) opts.push_back(options_for(s, m));

  std::vector<tensor_result> out;
  const bool want_curves = !s.curves_dir.empty();
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const auto& grp = groups[g];
    if (elements[g] == 0) {
      warn("tensor '" + grp.name + "' is empty (0 elements), skipped");
      continue;
    }
    tensor_result t;
    t.name = grp.name;
    t.elements = elements[g];
    for (const auto& src : grp.sources) t.sources.push_back(src.display());
    formats::chunk c;
    if (s.streaming) {
      std::int32_t e = -64;
      histogram_spec spec{layout::abs, s.bins, 0.0f, std::ldexp(1.0f, -64)};
      be->begin(spec);
      for (const auto& src : grp.sources) {
        auto r = src.open();
        while (r.next(c)) {
          tensor_stats cs;
          be->stats(c, &cs);
          merge_stats(t.stats, cs);
          std::int32_t need = e;
          while (need < 127 && cs.max_abs >= std::ldexp(1.0f, need)) ++need;
          if (need > e) {
            be->fold(need - e);
            e = need;
          }
          be->histogram(c, true);
          bar.add(std::uint64_t(c.n) * r.header().itemsize(), grp.name);
        }
      }
      spec.hi = std::ldexp(1.0f, e);
      t.spec = spec;
    } else {
      for (const auto& src : grp.sources) {
        auto r = src.open();
        while (r.next(c)) {
          be->stats(c, &t.stats);
          bar.add(std::uint64_t(c.n) * r.header().itemsize(), grp.name);
        }
      }
      t.spec = two_pass_spec(t.stats.max_abs, s.bins, s.rules == rule_set::mxnet);
      if (status st = validate(t.spec); !st.ok()) {
        throw error(st, "tensor '" + grp.name + "': max |x| = " + fmt_g(t.spec.hi, 9) +
                            " gives an invalid histogram range [" + fmt_g(t.spec.lo, 9) + ", " +
                            fmt_g(t.spec.hi, 9) + "): " + to_string(st));
      }
      be->begin(t.spec);
      for (const auto& src : grp.sources) {
        auto r = src.open();
        while (r.next(c)) {
          be->histogram(c, false);
          bar.add(std::uint64_t(c.n) * r.header().itemsize(), grp.name);
        }
      }
    }
    t.opts = opts;
    be->search(t.spec, t.stats.max_abs, opts, want_curves, t.results, t.curves);
    warn_zero_scale(t, bar);
    if (want_curves) {
      t.counts = be->counts();
      t.hist_file = hist_files[g];
      t.curve_files = curve_files[g];
    }
    out.push_back(std::move(t));
  }
  bar.finish();
  if (out.empty()) throw error(errc::io_error, "every tensor in the inputs is empty");

  if (!names.empty()) out = renamed(out, names);

  if (!s.quiet && !outputs.uses_stdout()) print_results(s, out);
  if (!s.cache_path.empty()) {
    formats::calibration_cache cache;
    cache.version = s.trt_version;
    cache.algorithm = s.methods[0] == method::entropy ? "EntropyCalibration2" : "MinMaxCalibration";
    for (const auto& t : out) cache.entries.push_back({t.name, t.results[0].scale});
    outputs.set(s.cache_path, formats::format_cache(cache));
  }
  if (!s.json_path.empty()) outputs.set(s.json_path, write_json(s, be->name(), out));
  if (!s.csv_path.empty()) outputs.set(s.csv_path, write_csv(out));
  if (want_curves) {
    std::set<std::string> written;  // a tensor mapped to several names has one set of curves
    for (const auto& t : out) {
      if (!written.insert(t.hist_file).second) continue;
      std::ostringstream h;
      h << "bin,lo_edge,count\n";
      double w = double(t.spec.hi - t.spec.lo) / t.spec.bins;
      for (std::size_t j = 0; j < t.counts.size(); ++j) {
        h << j << "," << g17(double(t.spec.lo) + double(j) * w) << "," << t.counts[j] << "\n";
      }
      outputs.set(s.curves_dir + "/" + t.hist_file, h.str());
      for (std::size_t k = 0; k < t.opts.size(); ++k) {
        if (t.curve_files[k].empty()) continue;
        std::ostringstream cv;
        cv << "candidate,threshold,score\n";
        for (std::size_t i = 0; i < t.curves[k].size(); ++i) {
          cv << i << "," << g17(candidate_threshold(t.spec, t.opts[k], std::int64_t(i))) << ","
             << g17(t.curves[k][i]) << "\n";
        }
        outputs.set(s.curves_dir + "/" + t.curve_files[k], cv.str());
      }
    }
  }
  outputs.write_all();
  return exit_ok;
}

int run_calibrate(const std::vector<std::string>& args) {
  calibrate_settings s;
  arg_walker w(args);
  while (!w.done()) {
    std::string a = w.next();
    if (a == "--help" || a == "-h") {
      std::cout << k_calibrate_help;
      return exit_ok;
    } else if (a == "--method") {
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
    } else if (a == "--device") {
      s.device = w.value(a);
      if (s.device != "auto" && s.device != "gpu" && s.device != "cpu") {
        throw usage_error("--device '" + s.device + "': expected auto, gpu or cpu");
      }
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
    } else if (a == "--recursive" || a == "-r") {
      w.no_value(a);
      s.recursive = true;
    } else if (a == "--names") {
      s.names_path = w.value(a);
    } else if (a == "--quiet" || a == "-q") {
      w.no_value(a);
      s.quiet = true;
    } else if (a.size() > 1 && a[0] == '-') {
      throw usage_error("unknown option '" + a + "' (see klcal calibrate --help)");
    } else {
      s.inputs.push_back(a);
    }
  }
  return calibrate(std::move(s));
}

}  // namespace klcal::cli
