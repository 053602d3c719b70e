// Owning per-tensor CPU calibrator: host counts, range policy, statistics, add/merge/reset/compute.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "klcal/state.hpp"
#include "klcal/types.hpp"

namespace klcal::detail {
struct cpu_calibrator_access;
}  // namespace klcal::detail

namespace klcal::cpu {

/// Collects the histogram and exact statistics of one tensor in host memory and searches its
/// threshold: the same methods as klcal::calibrator (the GPU one) without streams, built on the
/// CPU backend (klcal/cpu.hpp). On the same data, in any order and split, both give identical
/// counts, statistics and search results. Every call blocks until done; errors throw
/// klcal::error with the status of numerics.md section 6. A value type: copyable and movable.
class calibrator {
 public:
  /// Fixed range: bins every value into `spec` (abs or signed). Throws on an invalid spec.
  /// `threads` <= 0: std::thread::hardware_concurrency() for histograms and searches.
  static calibrator fixed(const histogram_spec& spec, int threads = 0);
  /// Two-pass range: `bins` bins over [0, hi) (abs) or [-hi, hi) (signed, e.g. for mxnet with an
  /// odd `bins`) with hi = max(max_abs of all data, 2^-64); see add_range() and end_range_pass().
  static calibrator two_pass(std::int32_t bins, layout kind = layout::abs, int threads = 0);
  /// Streaming power-of-two range; `bins` must be a power of two (errc::bins_not_power_of_two).
  static calibrator streaming(std::int32_t bins, int threads = 0);
  /// A calibrator that continues from a saved state. Throws the errc of validate(s).
  static calibrator from_state(calibrator_state s, int threads = 0);

  /// Bins n host elements of type t (NaN/Inf counted, not binned) and updates the statistics.
  /// fixed: one pass. two_pass: only after end_range_pass(); bins only (the statistics came
  /// from the first pass). streaming: reads the batch's max |x| first, folds the counts if the
  /// range has to grow, then bins.
  void add(const void* h_in, std::int64_t n, dtype t);

  /// First pass of the two-pass policy: statistics only. Throws errc::invalid_option for other
  /// policies or after end_range_pass().
  void add_range(const void* h_in, std::int64_t n, dtype t);

  /// Ends the first pass: hi = max(max_abs, 2^-64) (numerics.md 1.5).
  void end_range_pass();

  /// Adds another calibrator's counts and statistics exactly (klcal::merge of the states):
  /// same policy and bins; identical specs for fixed and finished two-pass; streaming ranges
  /// meet at the larger one by pairwise folds. errc::invalid_option otherwise.
  void merge(const calibrator& other);

  /// Back to empty: zero counts and empty statistics; streaming restarts at hi = 2^-64,
  /// two-pass at its first pass.
  void reset();

  /// Searches the threshold with klcal::cpu::search. Throws the errc of validate(spec(), opts).
  /// `curve`, when not null, receives the candidate_count(spec(), opts) scores.
  search_result compute(const search_options& opts, std::vector<double>* curve = nullptr) const;

  /// The counts (spec().bins entries).
  const std::vector<std::uint64_t>& counts() const noexcept { return state_.counts; }
  /// The statistics of everything added.
  const tensor_stats& stats() const noexcept { return state_.stats; }
  /// The current spec: for streaming the current hi = 2^e; for two-pass hi is meaningful only
  /// after end_range_pass().
  const histogram_spec& spec() const noexcept { return state_.spec; }
  range_policy policy() const noexcept { return state_.policy; }
  /// Everything the calibrator knows, as a plain value (saved, merged, all-reduced).
  const calibrator_state& state() const noexcept { return state_; }

 private:
  friend struct detail::cpu_calibrator_access;  // in-tree distributed reductions
  calibrator(calibrator_state s, int threads) : state_(std::move(s)), threads_(threads) {}

  calibrator_state state_;
  int threads_ = 0;
};

}  // namespace klcal::cpu
