// The one host-side owner of the range policies (fixed, two-pass, streaming) of both calibrators.
#pragma once

#include <cstdint>
#include <string>

#include "klcal/state.hpp"
#include "klcal/types.hpp"

namespace klcal::detail {

/// Throws klcal::error(s) with the message "WHO: WHAT: <errc name>".
[[noreturn]] void fail(status s, const std::string& who, const std::string& what);

/// Throws when !s.ok() (see fail()).
inline void check(status s, const std::string& who, const std::string& what) {
  if (!s.ok()) fail(s, who, what);
}

/// The range part of a calibrator (everything of calibrator_state but the counts and the
/// statistics) and the rules of numerics.md 1.5 that change it. klcal::calibrator (device
/// counts) and klcal::cpu::calibrator (host counts) both keep one and apply its decisions
/// (folds, merges) to their own counts, so the policies exist once.
struct range_state {
  range_policy policy = range_policy::fixed;
  histogram_spec spec{};
  std::int32_t exponent = streaming_min_exponent;
  bool range_done = true;

  /// Factories; throw klcal::error (prefixed with `who`) on an invalid spec or bin count.
  static range_state fixed(const histogram_spec& spec, const std::string& who);
  static range_state two_pass(std::int32_t bins, layout kind, const std::string& who);
  static range_state streaming(std::int32_t bins, const std::string& who);
  /// The range part of a state (which the caller has validated).
  static range_state of(const calibrator_state& s) noexcept;
  /// Copies the range part into a state.
  void store(calibrator_state& s) const noexcept;

  /// add(): throws errc::invalid_option for a two-pass calibrator before end_range_pass().
  void require_binning(const std::string& who) const;
  /// add_range(): throws unless two-pass and before end_range_pass().
  void require_range_pass(const std::string& who) const;
  /// compute(): throws before end_range_pass(), and the errc of validate(spec, opts).
  void require_search(const search_options& opts, const std::string& who) const;

  /// Streaming: the new exponent for a batch whose max |x| is `batch_max_abs`
  /// (while max_abs >= 2^e and e < 127: e += 1); updates spec and exponent and returns the
  /// number of pairwise folds the existing counts need (0 when the range does not grow).
  std::int32_t grow_for(float batch_max_abs) noexcept;

  /// end_range_pass(): throws unless two-pass and still in the first pass.
  void require_open_range_pass(const std::string& who) const;

  /// Two-pass: closes the first pass with hi = max(max_abs, 2^-64); throws when that range is
  /// invalid (e.g. [-hi, hi) wider than FLT_MAX) or when the first pass was already closed.
  void end_range_pass(float max_abs, const std::string& who);

  /// Back to the empty range: streaming at 2^-64, two-pass in its first pass.
  void reset() noexcept;

  /// How to merge `from` into this one: fold this one's counts `fold_into` times and a copy of
  /// from's counts `fold_from` times, then add counts when `add_counts` (not for two-pass
  /// states before end_range_pass(), whose counts are all 0) and merge the statistics.
  struct merge_plan {
    std::int32_t fold_into = 0;
    std::int32_t fold_from = 0;
    bool add_counts = true;
  };
  /// Checks that `from` can be merged into this one (same policy and bins; identical specs for
  /// fixed and finished two-pass states; both two-pass states in the same pass) and fills *plan.
  /// errc::invalid_option with a reason in *why otherwise. Changes nothing.
  status plan_merge(const range_state& from, merge_plan* plan, std::string* why) const;
  /// After the counts were merged by `plan`: this range becomes the merged one.
  void apply_merge(const merge_plan& plan) noexcept;
};

/// The streaming spec for 2^exponent: [0, 2^exponent), abs layout.
histogram_spec streaming_spec(std::int32_t bins, std::int32_t exponent) noexcept;
/// The two-pass spec for hi: [0, hi) (abs) or [-hi, hi) (signed).
histogram_spec two_pass_spec(layout kind, std::int32_t bins, float hi) noexcept;
/// Specs equal field by field, floats bit for bit.
bool same_spec(const histogram_spec& a, const histogram_spec& b) noexcept;

}  // namespace klcal::detail
