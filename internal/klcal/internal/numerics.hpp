// The one copy of the numerics helpers that the CPU backend (src/) and the kernels (kernels/)
// share.
#pragma once

#include <cstdint>
#include <cstring>

#include "klcal/types.hpp"

// Functions both sides call: __host__ __device__ under nvcc, plain inline functions elsewhere.
#if defined(__CUDACC__)
#define KLCAL_HOST_DEVICE __host__ __device__
#else
#define KLCAL_HOST_DEVICE
#endif

namespace klcal::detail {

/// Entropy values with |KL| below this are reported as exactly 0 by every fast search path.
/// KL is never negative, and a lossless candidate (every level's non-empty bins equal) has KL
/// exactly 0, which the direct formula reproduces term by term (ln 1 = 0) while the prefix-sum
/// forms leave rounding noise of about eps ln(T) ~ 1e-14 of either sign. Snapping makes such
/// exact ties follow the rule set's tie rule; the change is far inside the 1e-9 tolerance of
/// docs/testing.md (docs/numerics.md 2.1).
inline constexpr double kl_zero_snap = 1e-12;

/// KL rounding noise around an exact 0 becomes 0 (see kl_zero_snap).
KLCAL_HOST_DEVICE inline double snap_kl(double kl) {
  return (kl < kl_zero_snap && kl > -kl_zero_snap) ? 0.0 : kl;
}

/// fp32 product and difference, each rounded separately (numerics.md 1.2 rule 4): the device
/// intrinsics forbid FMA contraction; host code is compiled with -ffp-contract=off.
KLCAL_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
KLCAL_HOST_DEVICE inline float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
KLCAL_HOST_DEVICE inline float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

/// The fp32 bin scale of numerics.md 1.2 rule 3: float(bins) / float(hi - lo), the width
/// rounded to fp32 first.
KLCAL_HOST_DEVICE inline float bin_scale(std::int32_t bins, float lo, float hi) {
  return div_rn(static_cast<float>(bins), sub_rn(hi, lo));
}

/// Per-histogram binning constants, computed once.
struct bin_params {
  float lo;     ///< lower edge (0 for abs)
  float scale;  ///< bin_scale(bins, lo, hi)
  float last;   ///< float(bins - 1), exact since bins <= 2^24
};

/// bin_params of a histogram spec.
KLCAL_HOST_DEVICE inline bin_params make_bin_params(std::int32_t bins, float lo, float hi) {
  return bin_params{lo, bin_scale(bins, lo, hi), static_cast<float>(bins - 1)};
}

/// The bin of a finite value v, where v = |x| (abs layout) or x - lo (signed layout) has
/// already been formed (numerics.md 1.2 rules 4-5): q = fp32(v * scale), clamped to [0, last] on
/// the float (huge quotients never overflow an int), then truncated; for q >= 0 truncation is
/// floor. `q > 0 ? q : 0` also sends a NaN quotient (0 * an infinite scale, which validate()
/// rules out) to bin 0, where 0 belongs. One float-to-int conversion, no rounding instruction.
KLCAL_HOST_DEVICE inline std::int32_t bin_of_offset(float v, const bin_params& b) {
  float q = mul_rn(v, b.scale);
  q = q > 0.0f ? q : 0.0f;
#if defined(__CUDA_ARCH__)
  // The same value: q is not NaN here and last >= 1, but the compiler cannot know that the
  // compare-and-select equals a minimum (it differs for NaN and signed zeros), so it would
  // emit FSETP + FSEL instead of one FMNMX.
  q = fminf(q, b.last);
#else
  q = q < b.last ? q : b.last;
#endif
  return static_cast<std::int32_t>(q);
}

/// The bin of a finite value x of the abs layout.
KLCAL_HOST_DEVICE inline std::int32_t bin_of_abs(float x, const bin_params& b) {
  return bin_of_offset(x < 0.0f ? -x : x, b);
}

/// The bin of a finite value x of the signed layout.
KLCAL_HOST_DEVICE inline std::int32_t bin_of_signed(float x, const bin_params& b) {
  return bin_of_offset(sub_rn(x, b.lo), b);
}

/// The bin that holds the value 0 (numerics.md 5.3): 0 for the abs layout, bin_of(0) for the
/// signed one.
KLCAL_HOST_DEVICE inline std::int32_t zero_bin_index(layout kind, std::int32_t bins, float lo,
                                                     float hi) {
  if (kind == layout::abs) return 0;
  return bin_of_signed(0.0f, make_bin_params(bins, lo, hi));
}

/// The quantization scale of a threshold: fp32(float(amax) / qmax), correctly rounded
/// (numerics.md 5.1).
KLCAL_HOST_DEVICE inline float quant_scale(double amax, std::int32_t qmax) {
  return div_rn(static_cast<float>(amax), static_cast<float>(qmax));
}

/// Two floats with the same bit pattern (distinguishes -0 from +0 and NaN payloads; host only).
inline bool same_bits(float a, float b) noexcept {
  std::uint32_t x = 0, y = 0;
  std::memcpy(&x, &a, sizeof x);
  std::memcpy(&y, &b, sizeof y);
  return x == y;
}

/// Statistics merge of numerics.md 1.4: counters added, max_abs and max by maximum, min by
/// minimum. The stored values are never NaN, so plain comparisons are exact and commutative.
KLCAL_HOST_DEVICE inline void merge_stats(tensor_stats& into, const tensor_stats& from) {
  into.finite_count += from.finite_count;
  into.nan_count += from.nan_count;
  into.inf_count += from.inf_count;
  into.max_abs = from.max_abs > into.max_abs ? from.max_abs : into.max_abs;
  into.min = from.min < into.min ? from.min : into.min;
  into.max = from.max > into.max ? from.max : into.max;
}

}  // namespace klcal::detail
