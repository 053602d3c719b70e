// Brute-force CPU reference: slow, obvious loops that follow docs/numerics.md line by line.
#pragma once

#include <cstdint>
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
};

/// An empty histogram for `spec`; errc from validate-equivalent checks of numerics.md 6.
status make_histogram(const histogram_spec& spec, histogram* out) noexcept;

/// Bins n host elements of type t into h (exact fp32 binning, NaN/Inf counted, not binned).
status add(histogram& h, const void* data, dtype t, std::int64_t n) noexcept;

/// Element-wise addition of b into a; both must have identical specs.
status merge(histogram& a, const histogram& b) noexcept;

/// Exact widening of IEEE half / bfloat16 bit patterns to fp32.
float half_to_float(std::uint16_t bits) noexcept;
float bfloat16_to_float(std::uint16_t bits) noexcept;

/// Streaming range policy (numerics.md 1): abs layout, power-of-two bins, hi the smallest power
/// of two strictly greater than every finite |x| seen (at least 2^-64, at most 2^127).
class streaming_histogram {
 public:
  /// errc::bins_not_power_of_two etc. are reported through init().
  status init(std::int32_t bins) noexcept;
  status add(const void* data, dtype t, std::int64_t n) noexcept;
  status merge(const streaming_histogram& other) noexcept;
  const histogram& get() const noexcept { return h_; }

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
/// `max_abs` is used by method::max only.
status search(const std::vector<std::uint64_t>& counts, const histogram_spec& spec,
              float max_abs, const search_options& opts, search_output* out) noexcept;

}  // namespace klcal::reference
