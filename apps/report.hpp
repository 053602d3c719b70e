// Outputs of `klcal calibrate`: per-tensor results, progress bar, JSON document, CSV and table.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "cli.hpp"

namespace klcal::cli {

/// What `calibrate` found for one tensor: sources, statistics, histogram and one search result
/// per method (opts[k] -> results[k] -> curves[k], curve_files[k]).
struct tensor_result {
  std::string name;
  std::vector<std::string> sources;
  tensor_stats stats{};
  std::int64_t elements = 0;
  histogram_spec spec{};
  std::vector<std::uint64_t> counts;  // kept only for --curves
  std::vector<search_options> opts;
  std::vector<search_result> results;
  std::vector<std::vector<double>> curves;
  std::string hist_file;
  std::vector<std::string> curve_files;
};

/// Progress on stderr, only for a terminal: bytes done, rate, ETA; at most 10 updates a second.
/// Disabled (prints nothing) when `enabled` is false or `total` is 0.
class progress_bar {
 public:
  progress_bar(bool enabled, std::uint64_t total);
  ~progress_bar();
  /// Counts `bytes` more as done and redraws the line, labelled with `label` (a tensor name).
  void add(std::uint64_t bytes, const std::string& label);
  /// Clears the line (before warnings, tables and at the end). add() may draw it again.
  void finish();

 private:
  using clock = std::chrono::steady_clock;
  bool on_;
  bool shown_ = false;
  std::uint64_t total_, done_ = 0;
  clock::time_point t0_, last_;
};

/// A number for CSV files: %.17g (round-trips fp64), "nan", "inf", "-inf".
std::string g17(double v);

/// The --json document ("klcal-calibration 1", docs/cli.md) of a run on backend `device`.
/// Precondition: every result has at least one method (results[0] is the headline).
std::string write_json(const calibrate_settings& s, const std::string& device,
                       const std::vector<tensor_result>& out);

/// The --csv text: a header line, then one row per tensor and method.
std::string write_csv(const std::vector<tensor_result>& out);

/// The result table on stdout (one row per tensor, column groups per method), with a footnote
/// when some result is degenerate.
void print_results(const calibrate_settings& s, const std::vector<tensor_result>& out);

}  // namespace klcal::cli
