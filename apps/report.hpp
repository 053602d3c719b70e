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
  range_policy policy = range_policy::two_pass;
  std::vector<std::uint64_t> counts;  // kept only for --curves
  std::vector<search_options> opts;
  std::vector<search_result> results;
  std::vector<std::vector<double>> curves;
  std::string hist_file;
  std::vector<std::string> curve_files;
};

/// Progress on stderr, only for a terminal: position in the data, pass number, rate, ETA; at
/// most 10 updates a second. The data size is shown once; with two passes each tensor is read
/// twice, so the percentage and ETA count both passes. Disabled (prints nothing) when `enabled`
/// is false or `total` is 0.
class progress_bar {
 public:
  progress_bar(bool enabled, std::uint64_t total, int passes);
  ~progress_bar();
  /// The current tensor starts pass `pass` (1-based) over its data.
  void start_pass(int pass);
  /// Counts `bytes` more of the current pass and redraws the line, labelled with `label`.
  void add(std::uint64_t bytes, const std::string& label);
  /// The current tensor is done; the next one starts at pass 1.
  void next_tensor();
  /// Clears the line (before warnings, tables and at the end). add() may draw it again.
  void finish();

 private:
  using clock = std::chrono::steady_clock;
  bool on_;
  bool shown_ = false;
  int passes_;
  int pass_ = 1;
  std::uint64_t total_;
  std::uint64_t data_done_ = 0;     // bytes of finished tensors
  std::uint64_t first_passes_ = 0;  // bytes of the current tensor in earlier passes (each)
  std::uint64_t in_pass_ = 0;       // bytes of the current pass
  clock::time_point t0_, last_;
};

/// The search options of method m under the run's settings (rules apply to entropy only).
search_options options_for(const calibrate_settings& s, method m, rule_set rules);

/// What is wrong with `opts` for a histogram `spec` (validate(spec, opts) returned `st`), in
/// the words of the command-line options ("--rules mxnet with --bits 8 needs ...").
std::string explain_options(status st, const histogram_spec& spec, const search_options& opts);

/// Searches a tensor's state with every method of `opts` on the CPU backend: the one search of
/// `calibrate` and `search`, so that both give the same bytes. Throws klcal::error
/// (errc::invalid_option) with an explain_options() message when an options set does not fit
/// the state's histogram.
tensor_result search_state(const std::string& name, const calibrator_state& st,
                           const std::vector<search_options>& opts, bool want_curves, int threads);

/// Chooses the --curves file names of `names` (sanitized, unique) into every result's
/// hist_file / curve_files, and checks that none exists unless --force (klcal::error).
void plan_curve_files(const calibrate_settings& s, std::vector<tensor_result>& out);

/// Prints the table (unless --quiet) and writes every output of `s`: --cache, --json, --csv,
/// --curves. `device` goes into the JSON settings.
void write_outputs(const calibrate_settings& s, const std::string& device,
                   const std::vector<tensor_result>& out);

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
