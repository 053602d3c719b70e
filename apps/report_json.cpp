// The --json document of `klcal calibrate`: settings, per-tensor results, parameters, stats.
#include <sstream>

#include "report.hpp"

namespace klcal::cli {
namespace {

std::string params_json(const tensor_result& t, const search_options& o) {
  std::ostringstream j;
  j << "{\"rules\": " << formats::json_string(rules_name(o.rules)) << ", \"bins\": " << t.spec.bins
    << ", \"range\": " << formats::json_string(range_name(t.policy)) << ", \"bits\": " << o.bits
    << ", \"unsigned\": " << (o.is_unsigned ? "true" : "false");
  if (o.meth == method::entropy && o.rules == rule_set::tensorrt) {
    j << ", \"start_bin\": " << o.start_bin << ", \"stride\": " << o.stride
      << ", \"zero_bin\": \"copy_next\"";
  } else if (o.meth == method::mse) {
    j << ", \"start_bin\": " << o.start_bin << ", \"stride\": " << o.stride;
  } else if (o.meth == method::percentile) {
    j << ", \"percentile\": " << formats::json_number(o.percentile);
  }
  j << "}";
  return j.str();
}

std::string result_json(const search_result& r) {
  std::ostringstream j;
  j << "\"amax\": " << formats::json_number(r.amax)
    << ", \"scale\": " << formats::json_number(r.scale)
    << ", \"scale_hex\": " << formats::json_string(formats::scale_hex(r.scale))
    << ", \"zero_point\": 0"
    << ", \"index\": " << r.index << ", \"score\": " << formats::json_number(r.score)
    << ", \"clipped_fraction\": " << formats::json_number(r.clipped_fraction)
    << ", \"degenerate\": " << (r.degenerate ? "true" : "false");
  return j.str();
}

}  // namespace

std::string write_json(const calibrate_settings& s, const std::string& device,
                       const std::vector<tensor_result>& out) {
  std::ostringstream j;
  j << "{\n  \"format\": \"klcal-calibration 1\",\n  \"settings\": {\"methods\": [";
  for (std::size_t k = 0; k < s.methods.size(); ++k) {
    j << (k ? ", " : "") << formats::json_string(method_name(s.methods[k]));
  }
  j << "], \"rules\": " << formats::json_string(rules_name(s.rules)) << ", \"bins\": " << s.bins
    << ", \"range\": " << formats::json_string(s.streaming ? "streaming" : "two-pass")
    << ", \"device\": " << formats::json_string(device) << "},\n  \"tensors\": {";
  bool first = true;
  for (const auto& t : out) {
    j << (first ? "\n" : ",\n") << "    " << formats::json_string(t.name) << ": {\n      ";
    first = false;
    j << result_json(t.results[0])
      << ",\n      \"method\": " << formats::json_string(method_name(t.opts[0].meth))
      << ", \"params\": " << params_json(t, t.opts[0]) << ",\n";
    j << "      \"histogram\": {\"layout\": "
      << formats::json_string(t.spec.kind == layout::abs ? "abs" : "signed")
      << ", \"bins\": " << t.spec.bins << ", \"lo\": " << formats::json_number(t.spec.lo)
      << ", \"hi\": " << formats::json_number(t.spec.hi);
    if (!t.hist_file.empty()) j << ", \"file\": " << formats::json_string(t.hist_file);
    j << "},\n      \"stats\": {\"elements\": " << t.elements
      << ", \"finite\": " << t.stats.finite_count << ", \"nan\": " << t.stats.nan_count
      << ", \"inf\": " << t.stats.inf_count << ", \"min\": " << formats::json_number(t.stats.min)
      << ", \"max\": " << formats::json_number(t.stats.max)
      << ", \"max_abs\": " << formats::json_number(t.stats.max_abs) << "},\n";
    j << "      \"sources\": [";
    for (std::size_t k = 0; k < t.sources.size(); ++k) {
      j << (k ? ", " : "") << formats::json_string(t.sources[k]);
    }
    j << "],\n      \"methods\": {";
    for (std::size_t k = 0; k < t.opts.size(); ++k) {
      j << (k ? ",\n" : "\n") << "        " << formats::json_string(method_name(t.opts[k].meth))
        << ": {" << result_json(t.results[k]) << ", \"params\": " << params_json(t, t.opts[k]);
      if (!t.curve_files.empty() && !t.curve_files[k].empty()) {
        j << ", \"curve_file\": " << formats::json_string(t.curve_files[k]);
      }
      j << "}";
    }
    j << "\n      }\n    }";
  }
  j << "\n  }\n}\n";
  return j.str();
}

}  // namespace klcal::cli
