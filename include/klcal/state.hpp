// The state of a calibrator as a plain value: range policy, spec, counts and statistics.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "klcal/types.hpp"

namespace klcal {

/// How a calibrator chooses its histogram range (docs/numerics.md 1.5).
enum class range_policy : std::uint8_t {
  fixed = 0,      ///< the caller's [lo, hi), any layout
  two_pass = 1,   ///< add_range() over all data, end_range_pass(), then add(): [0, hi) or [-hi, hi)
  streaming = 2,  ///< one pass, abs, power-of-two bins, hi = 2^e grows by pairwise folds
};

/// Smallest and largest streaming exponent: hi = 2^e with e in [-64, 127] (numerics.md 1.5).
inline constexpr std::int32_t streaming_min_exponent = -64;
inline constexpr std::int32_t streaming_max_exponent = 127;

/// Everything a calibrator knows, as a plain value: what klcal::calibrator::state() and
/// klcal::cpu::calibrator::state() return and from_state() accepts, what the state file
/// (docs/formats.md) stores per tensor, and what a distributed all-reduce combines.
///
/// Invariants (checked by validate(const calibrator_state&)):
/// - counts.size() == spec.bins, and validate(spec) holds;
/// - fixed: any valid spec; exponent is ignored and stored as streaming_min_exponent;
/// - two_pass: spec.lo == 0 (abs) or -spec.hi (signed); before end_range_pass()
///   (range_done == false) hi is the placeholder 2^-64 and every count is 0;
/// - streaming: abs layout, power-of-two bins, exponent in [-64, 127] and spec.hi == 2^exponent;
/// - range_done is true for fixed and streaming states;
/// - stats: no NaN; max_abs >= 0; with finite_count == 0, max_abs == 0, min == +inf, max == -inf.
struct calibrator_state {
  range_policy policy = range_policy::fixed;
  histogram_spec spec{};
  std::int32_t exponent = streaming_min_exponent;  ///< streaming: spec.hi == 2^exponent
  bool range_done = true;                          ///< two_pass: end_range_pass() was called
  std::vector<std::uint64_t> counts;
  tensor_stats stats{};
};

/// Checks the invariants listed at calibrator_state: errc::invalid_option for a policy value
/// outside the enum or an inconsistent field, the errc of validate(spec) for a bad spec,
/// errc::bins_not_power_of_two for a streaming bin count. Never throws.
status validate(const calibrator_state& s) noexcept;

/// A one-line reason why validate(s) fails, naming the field and value ("" when it holds).
std::string describe_invalid(const calibrator_state& s);

/// Adds `from` into `into` exactly (numerics.md 1.4): counts summed in uint64, statistics merged
/// with merge(tensor_stats&, const tensor_stats&). Both must have the same policy and bin count;
/// fixed and finished two-pass states need identical specs (bit for bit); two-pass states must
/// both be before or both be after end_range_pass() (before it, only the statistics merge);
/// streaming states are first folded pairwise to the larger exponent. The result does not
/// depend on the order: merge(a, b) and merge(b, a) give identical states. Both states must be
/// valid. On error (errc::invalid_option, or the errc of validate) `into` is unchanged.
status merge(calibrator_state& into, const calibrator_state& from) noexcept;

/// Equality of two states field by field (floats compared bit for bit).
bool operator==(const calibrator_state& a, const calibrator_state& b) noexcept;
inline bool operator!=(const calibrator_state& a, const calibrator_state& b) noexcept {
  return !(a == b);
}

/// One tensor's state with its name: the unit of the state file and of distributed merges.
struct named_state {
  std::string name;
  calibrator_state state;
};

}  // namespace klcal
