// Argument checks of docs/numerics.md section 6, shared by the GPU API, the CPU backend and the
// calibrator.
#include <cmath>
#include <cstdint>

#include "klcal/types.hpp"

namespace klcal {

status validate(const histogram_spec& spec) noexcept {
  if (spec.kind != layout::abs && spec.kind != layout::signed_) return errc::invalid_option;
  if (spec.bins < 2) return errc::too_few_bins;
  if (spec.bins > max_bins) return errc::too_many_bins;
  if (!std::isfinite(spec.lo) || !std::isfinite(spec.hi) || !(spec.hi > spec.lo))
    return errc::invalid_range;
  if (spec.kind == layout::abs && spec.lo != 0.0f) return errc::invalid_range;
  // The fp32 width must be finite, or the fp32 scale would be 0 and every value land in bin 0.
  if (!std::isfinite(spec.hi - spec.lo)) return errc::invalid_range;
  // A width so small that the fp32 scale overflows would bin 0 * inf = NaN.
  if (!std::isfinite(static_cast<float>(spec.bins) / (spec.hi - spec.lo)))
    return errc::invalid_range;
  return errc::ok;
}

status validate(const histogram_spec& spec, const search_options& o) noexcept {
  if (status s = validate(spec); !s.ok()) return s;
  if (o.bits < 2 || o.bits > 16) return errc::invalid_bits;
  if (o.zero_bin != zero_bin_policy::copy_next && o.zero_bin != zero_bin_policy::keep)
    return errc::invalid_option;
  // An unknown enum is outside its domain even where the option does not apply (numerics.md 6).
  if (o.rules != rule_set::tensorrt && o.rules != rule_set::mxnet) return errc::invalid_option;
  switch (o.meth) {
    case method::max: return errc::ok;
    case method::percentile:
      if (!(o.percentile >= 0.0 && o.percentile <= 100.0)) return errc::invalid_percentile;
      return spec.kind == layout::abs ? status(errc::ok) : status(errc::layout_mismatch);
    case method::mse:
    case method::entropy: break;
    default: return errc::invalid_option;
  }
  if (o.meth == method::entropy && o.rules == rule_set::mxnet) {
    if (spec.kind != layout::signed_) return errc::layout_mismatch;
    if (spec.bins % 2 == 0 || spec.lo != -spec.hi) return errc::bins_not_odd;
    if (o.is_unsigned) return errc::invalid_option;  // mxnet is symmetric int8: 2^bits - 1 levels
    const std::int64_t levels = (std::int64_t{1} << o.bits) - 1;
    // The smallest window (half-width levels / 2) must fit: bins >= 2 * (levels / 2) + 1.
    if (spec.bins / 2 < levels / 2) return errc::start_bin_out_of_range;
    return errc::ok;
  }
  if (o.meth == method::entropy && o.rules != rule_set::tensorrt) return errc::invalid_option;
  if (spec.kind != layout::abs) return errc::layout_mismatch;
  if (o.start_bin < 1) return errc::start_bin_out_of_range;
  if (o.stride < 1) return errc::invalid_stride;
  if (o.meth == method::entropy ? spec.bins < o.start_bin : spec.bins <= o.start_bin)
    return errc::start_bin_out_of_range;
  return errc::ok;
}

std::int64_t candidate_count(const histogram_spec& spec, const search_options& o) noexcept {
  switch (o.meth) {
    case method::entropy:
      if (o.rules == rule_set::mxnet) {
        const std::int64_t levels = (std::int64_t{1} << o.bits) - 1;
        return spec.bins / 2 - levels / 2 + 1;
      }
      return (spec.bins - o.start_bin) / o.stride + 1;  // start_bin .. bins inclusive
    case method::mse: return (spec.bins - 1 - o.start_bin) / o.stride + 1;  // .. bins-1
    default: return 0;
  }
}

}  // namespace klcal
