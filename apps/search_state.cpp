// The one threshold search of `klcal calibrate` and `klcal search`: a tensor's calibrator state
// searched with every method on the CPU backend, and option errors in the words of the options.
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "cli.hpp"
#include "klcal/cpu_calibrator.hpp"
#include "report.hpp"

namespace klcal::cli {
namespace {

std::string sanitize(const std::string& n) {
  std::string s;
  for (char c : n) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_';
    s += ok ? c : '_';
  }
  return s.empty() || s[0] == '.' ? "_" + s : s;
}

}  // namespace

search_options options_for(const calibrate_settings& s, method m, rule_set rules) {
  search_options o;
  o.meth = m;
  o.rules = m == method::entropy ? rules : rule_set::tensorrt;
  o.start_bin = s.start_bin;
  o.stride = s.stride;
  o.bits = s.bits;
  o.is_unsigned = s.is_unsigned;
  o.percentile = s.percentile;
  return o;
}

std::string explain_options(status st, const histogram_spec& spec, const search_options& o) {
  const bool mx = o.meth == method::entropy && o.rules == rule_set::mxnet;
  const std::string meth = std::string("--method ") + method_name(o.meth);
  const std::string bins = std::to_string(spec.bins);
  switch (st.code) {
    case errc::layout_mismatch:
      if (mx) {
        return "--rules mxnet needs a signed histogram (collected with --rules mxnet); this one "
               "is an abs histogram";
      }
      return meth + (o.meth == method::entropy ? " with --rules tensorrt" : "") +
             " needs an abs histogram (collected with --rules tensorrt); this one is signed "
             "(collected with --rules mxnet)";
    case errc::bins_not_odd:
      return "--rules mxnet needs an odd number of bins over a range symmetric around 0 (got " +
             bins + " bins)";
    case errc::start_bin_out_of_range:
      if (mx) {
        const std::int64_t levels = (std::int64_t{1} << o.bits) - 1;
        return "--rules mxnet with --bits " + std::to_string(o.bits) + " needs at least " +
               std::to_string(levels) + " bins (2^bits - 1 quantization levels); got --bins " +
               bins;
      }
      return "--start-bin " + std::to_string(o.start_bin) + " must be " +
             (o.meth == method::mse ? "smaller than" : "at most") + " the number of bins (" + bins +
             ") for " + meth;
    case errc::invalid_bits:
      return "--bits " + std::to_string(o.bits) + ": must be between 2 and 16";
    case errc::invalid_stride: return "--stride " + std::to_string(o.stride) + ": must be >= 1";
    case errc::invalid_percentile:
      return "--percentile " + fmt_g(o.percentile) + ": must be between 0 and 100";
    case errc::invalid_option:
      if (mx && o.is_unsigned) return "--unsigned is not available with --rules mxnet";
      break;
    case errc::too_few_bins:
    case errc::too_many_bins:
    case errc::invalid_range:
      return "the histogram [" + fmt_g(spec.lo, 9) + ", " + fmt_g(spec.hi, 9) + ") with " + bins +
             " bins is not a valid range";
    default: break;
  }
  return meth + ": these options do not fit a histogram of " + bins + " bins";
}

tensor_result search_state(const std::string& name, const calibrator_state& st,
                           const std::vector<search_options>& opts, bool want_curves, int threads) {
  for (const auto& o : opts) {
    if (status v = validate(st.spec, o); !v.ok()) {
      throw error(errc::invalid_option, explain_options(v, st.spec, o));
    }
  }
  tensor_result t;
  t.name = name;
  t.stats = st.stats;
  t.elements =
      static_cast<std::int64_t>(st.stats.finite_count + st.stats.nan_count + st.stats.inf_count);
  t.spec = st.spec;
  t.policy = st.policy;
  t.opts = opts;
  const cpu::calibrator cal = cpu::calibrator::from_state(st, threads);
  t.curves.assign(opts.size(), {});
  for (std::size_t k = 0; k < opts.size(); ++k) {
    const bool curve = want_curves && candidate_count(st.spec, opts[k]) > 0;
    t.results.push_back(cal.compute(opts[k], curve ? &t.curves[k] : nullptr));
  }
  if (want_curves) t.counts = st.counts;
  return t;
}

void plan_curve_files(const calibrate_settings& s, std::vector<tensor_result>& out) {
  if (s.curves_dir.empty()) return;
  struct stat st {};
  if (::stat(s.curves_dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      throw error(errc::io_error, "--curves " + s.curves_dir + ": not a directory");
    }
  } else if (::mkdir(s.curves_dir.c_str(), 0777) != 0) {
    throw error(errc::io_error,
                "--curves " + s.curves_dir + ": cannot create directory: " + std::strerror(errno));
  }
  std::set<std::string> used;
  for (auto& t : out) {
    std::string base = sanitize(t.name);
    std::string stem = base;
    for (int k = 2; used.count(stem); ++k) stem = base + "~" + std::to_string(k);
    used.insert(stem);
    t.hist_file = stem + ".histogram.csv";
    check_output(s.curves_dir + "/" + t.hist_file, s.force, "--curves");
    t.curve_files.clear();
    for (auto m : s.methods) {
      std::string f;
      if (m == method::entropy || m == method::mse) {
        f = stem + "." + method_name(m) + ".csv";
        check_output(s.curves_dir + "/" + f, s.force, "--curves");
      }
      t.curve_files.push_back(f);
    }
  }
}

}  // namespace klcal::cli
