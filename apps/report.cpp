// Outputs of `klcal calibrate` and `klcal search`: the result table, cache, CSV and curve files.
#include "report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

namespace klcal::cli {
namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
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

}  // namespace

void write_outputs(const calibrate_settings& s, const std::string& device,
                   const std::vector<tensor_result>& out) {
  if (!s.quiet) print_results(s, out);
  if (!s.cache_path.empty()) {
    formats::calibration_cache cache;
    cache.version = s.trt_version;
    cache.algorithm = s.methods[0] == method::entropy ? "EntropyCalibration2" : "MinMaxCalibration";
    for (const auto& t : out) cache.entries.push_back({t.name, t.results[0].scale});
    formats::write_file(s.cache_path, formats::format_cache(cache));
  }
  if (!s.json_path.empty()) formats::write_file(s.json_path, write_json(s, device, out));
  if (!s.csv_path.empty()) formats::write_file(s.csv_path, write_csv(out));
  if (s.curves_dir.empty()) return;
  for (const auto& t : out) {
    std::ostringstream h;
    h << "bin,lo_edge,count\n";
    double w = double(t.spec.hi - t.spec.lo) / t.spec.bins;
    for (std::size_t j = 0; j < t.counts.size(); ++j) {
      h << j << "," << g17(double(t.spec.lo) + double(j) * w) << "," << t.counts[j] << "\n";
    }
    formats::write_file(s.curves_dir + "/" + t.hist_file, h.str());
    for (std::size_t k = 0; k < t.opts.size(); ++k) {
      if (t.curve_files[k].empty()) continue;
      std::ostringstream cv;
      cv << "candidate,threshold,score\n";
      for (std::size_t i = 0; i < t.curves[k].size(); ++i) {
        cv << i << "," << g17(candidate_threshold(t.spec, t.opts[k], std::int64_t(i))) << ","
           << g17(t.curves[k][i]) << "\n";
      }
      formats::write_file(s.curves_dir + "/" + t.curve_files[k], cv.str());
    }
  }
}

std::string g17(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

std::string write_csv(const std::vector<tensor_result>& out) {
  std::ostringstream c;
  c << "tensor,method,elements,finite,nan,inf,min,max,max_abs,amax,scale,scale_hex,index,score,"
       "clipped_fraction,degenerate\n";
  for (const auto& t : out) {
    for (std::size_t k = 0; k < t.opts.size(); ++k) {
      const auto& r = t.results[k];
      c << csv_field(t.name) << "," << method_name(t.opts[k].meth) << "," << t.elements << ","
        << t.stats.finite_count << "," << t.stats.nan_count << "," << t.stats.inf_count << ","
        << g17(t.stats.min) << "," << g17(t.stats.max) << "," << g17(t.stats.max_abs) << ","
        << g17(r.amax) << "," << g17(r.scale) << "," << formats::scale_hex(r.scale) << ","
        << r.index << "," << g17(r.score) << "," << g17(r.clipped_fraction) << ","
        << (r.degenerate ? 1 : 0) << "\n";
    }
  }
  return c.str();
}

void print_results(const calibrate_settings& s, const std::vector<tensor_result>& out) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head = {"tensor", "elements", "min", "max"};
  bool multi = s.methods.size() > 1;
  // max and percentile have no score; in a comparison their score column is left out.
  auto has_score = [&](method m) { return !multi || m == method::entropy || m == method::mse; };
  for (auto m : s.methods) {
    std::string p = multi ? std::string(method_name(m)) + " " : "";
    for (const char* c : {"amax", "scale", "clip%"}) head.push_back(p + c);
    if (has_score(m)) head.push_back(p + "score");
  }
  head.push_back("nan");
  head.push_back("inf");
  rows.push_back(head);
  for (const auto& t : out) {
    std::vector<std::string> r = {t.name, std::to_string(t.elements),
                                  t.stats.finite_count ? fmt_g(t.stats.min) : "-",
                                  t.stats.finite_count ? fmt_g(t.stats.max) : "-"};
    for (std::size_t k = 0; k < t.opts.size(); ++k) {
      const auto& res = t.results[k];
      r.push_back(fmt_g(res.amax));
      r.push_back(formats::scale_hex(res.scale));
      char clip[32];
      std::snprintf(clip, sizeof clip, "%.4f", 100.0 * res.clipped_fraction);
      r.push_back(clip);
      bool scored = t.opts[k].meth == method::entropy || t.opts[k].meth == method::mse;
      if (has_score(t.opts[k].meth)) {
        r.push_back(scored ? fmt_g(res.score, 4) + (res.degenerate ? "*" : "")
                           : (res.degenerate ? "*" : "-"));
      } else if (res.degenerate) {
        r.back() += "*";
      }
    }
    r.push_back(std::to_string(t.stats.nan_count));
    r.push_back(std::to_string(t.stats.inf_count));
    rows.push_back(r);
  }
  print_table(rows, std::cout);
  bool any_deg = false;
  for (const auto& t : out) {
    for (const auto& r : t.results) any_deg = any_deg || r.degenerate;
  }
  if (any_deg) std::cout << "* degenerate result (empty, all-zero, or every candidate infinite)\n";
}

void print_table(const std::vector<std::vector<std::string>>& rows, std::ostream& os) {
  std::vector<std::size_t> w;
  for (const auto& r : rows) {
    if (w.size() < r.size()) w.resize(r.size(), 0);
    for (std::size_t i = 0; i < r.size(); ++i) w[i] = std::max(w[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      std::string pad(w[i] - r[i].size(), ' ');
      line += i == 0 ? r[i] + pad : "  " + pad + r[i];
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    os << line << "\n";
  }
}

}  // namespace klcal::cli
