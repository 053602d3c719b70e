// Brute-force CPU reference: slow, obvious loops that follow docs/numerics.md line by line.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "klcal/types.hpp"

// Nothing here shares code with kernels/ or src/: the reference exists to check them.
namespace klcal::reference {

/// A histogram with its exact side statistics.
struct histogram {
  histogram_spec spec{};
  std::vector<std::uint64_t> counts;  ///< spec.bins entries
  std::uint64_t nan_count = 0;
  std::uint64_t inf_count = 0;
  float max_abs = 0.0f;  ///< largest finite |x| seen (0 when none)
  // Side statistics of numerics.md 1.3 beyond the declared ones (exact, order-independent).
  std::uint64_t finite_count = 0;                       ///< values that are neither NaN nor +-Inf
  float min = std::numeric_limits<float>::infinity();   ///< smallest finite x (+inf when none)
  float max = -std::numeric_limits<float>::infinity();  ///< largest finite x (-inf when none)
};

/// An empty histogram for `spec`; errc from validate-equivalent checks of numerics.md 6.
/// Every function here is noexcept: a failed allocation returns errc::out_of_memory.
status make_histogram(const histogram_spec& spec, histogram* out) noexcept;

/// Bins n host elements of type t into h (exact fp32 binning, NaN/Inf counted, not binned).
/// data may be null when n == 0. Errors (invalid_count, invalid_dtype, null_pointer, a spec
/// error, or invalid_option for counts not matching the spec) leave h unchanged. Host only,
/// single-threaded; nothing here is asynchronous.
status add(histogram& h, const void* data, dtype t, std::int64_t n) noexcept;

/// Element-wise addition of b into a; both must have identical specs (errc::invalid_option
/// otherwise, a unchanged).
status merge(histogram& a, const histogram& b) noexcept;

/// The bin of one finite fp32 value under `spec` (numerics.md 1.2 rules 3 to 5), exposed so
/// that tests can state expectations per value. Precondition: spec is valid.
std::int32_t bin_of(const histogram_spec& spec, float x) noexcept;

/// Two-pass fixed-range protocol (numerics.md 1.5): computes max_abs of all n elements, then
/// bins them into a fresh abs histogram over [0, max_abs), or [0, 2^-64) when max_abs is 0.
status two_pass_histogram(const void* data, dtype t, std::int64_t n, std::int32_t bins,
                          histogram* out) noexcept;

/// Exact widening of IEEE half / bfloat16 bit patterns to fp32.
float half_to_float(std::uint16_t bits) noexcept;
float bfloat16_to_float(std::uint16_t bits) noexcept;

/// Streaming range policy (numerics.md 1): abs layout, power-of-two bins, hi the smallest power
/// of two strictly greater than every finite |x| seen (at least 2^-64, at most 2^127).
class streaming_histogram {
 public:
  /// errc::bins_not_power_of_two etc. are reported through init(). Resets to empty, e = -64.
  status init(std::int32_t bins) noexcept;
  /// Raises e until 2^e > max |x| of the batch (or e = 127), folding counts pairwise, then bins
  /// the batch at hi = 2^e. errc::invalid_option before a successful init().
  status add(const void* data, dtype t, std::int64_t n) noexcept;
  /// Brings the smaller-e histogram up to the larger e, then adds; bin counts must be equal
  /// (errc::invalid_option otherwise, *this unchanged).
  status merge(const streaming_histogram& other) noexcept;
  const histogram& get() const noexcept { return h_; }
  /// Current exponent e of hi = 2^e, in [-64, 127].
  int hi_exp() const noexcept { return hi_exp_; }

 private:
  histogram h_{};
  int hi_exp_ = -64;  ///< hi = 2^hi_exp_
};

/// Result of one search plus its whole curve (score per candidate; empty for max/percentile).
struct search_output {
  search_result result{};
  std::vector<double> curve;
};

/// Searches one histogram by the direct formulas of numerics.md 2 to 5 (O(i) per candidate).
/// `max_abs` is used by method::max only. Checks spec and options itself (numerics.md 6);
/// counts.size() != spec.bins is errc::invalid_count, a null `out` errc::null_pointer.
/// On error *out is left unchanged.
status search(const std::vector<std::uint64_t>& counts, const histogram_spec& spec, float max_abs,
              const search_options& opts, search_output* out) noexcept;

}  // namespace klcal::reference
