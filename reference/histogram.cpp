// Reference histograms: exact fp32 binning, side statistics, merge and the streaming range policy.
//
// Compiled with -ffp-contract=off (CMakeLists.txt): numerics.md 1.2 rule 4 forbids fusing the
// subtraction and multiplication of the bin formula, and this file must be the ground truth.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include "detail.hpp"
#include "klcal/reference.hpp"

namespace klcal::reference {

namespace detail {

status check_spec(const histogram_spec& spec) noexcept {
  if (spec.kind != layout::abs && spec.kind != layout::signed_) return errc::invalid_option;
  if (spec.bins < 2) return errc::too_few_bins;
  if (spec.bins > max_bins) return errc::too_many_bins;
  if (!std::isfinite(spec.lo) || !std::isfinite(spec.hi)) return errc::invalid_range;
  if (spec.hi <= spec.lo) return errc::invalid_range;
  const float width = spec.hi - spec.lo;  // fp32, as the scale uses it
  if (!std::isfinite(width)) return errc::invalid_range;
  if (spec.kind == layout::abs && spec.lo != 0.0f) return errc::invalid_range;
  // A width so small that float(B) / width overflows would bin 0 * inf = NaN.
  if (!std::isfinite(static_cast<float>(spec.bins) / width)) return errc::invalid_range;
  return errc::ok;
}

}  // namespace detail

namespace {

// Bits of an IEEE binary32 value, without any arithmetic.
float float_from_bits(std::uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Element `i` of a host array of type t, widened exactly to fp32.
float element(const void* data, dtype t, std::int64_t i) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  if (t == dtype::f32) {
    float f;
    std::memcpy(&f, bytes + 4 * i, 4);
    return f;
  }
  std::uint16_t h;
  std::memcpy(&h, bytes + 2 * i, 2);
  return t == dtype::f16 ? half_to_float(h) : bfloat16_to_float(h);
}

bool known_dtype(dtype t) {
  return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16;
}

status check_input(const void* data, dtype t, std::int64_t n) {
  if (n < 0) return errc::invalid_count;
  if (!known_dtype(t)) return errc::invalid_dtype;
  if (data == nullptr && n > 0) return errc::null_pointer;
  return errc::ok;
}

bool same_spec(const histogram_spec& a, const histogram_spec& b) {
  return a.kind == b.kind && a.bins == b.bins && a.lo == b.lo && a.hi == b.hi;
}

// Largest finite |x| of n elements (0 when there is none).
float batch_max_abs(const void* data, dtype t, std::int64_t n) {
  float m = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) {
    const float x = element(data, t, i);
    if (std::isfinite(x) && std::fabs(x) > m) m = std::fabs(x);
  }
  return m;
}

// numerics.md 1.5: new[j] = old[2j] + old[2j+1] for j < B/2, 0 above.
void fold_pairwise(std::vector<std::uint64_t>& counts) {
  const std::size_t half = counts.size() / 2;
  for (std::size_t j = 0; j < half; ++j) counts[j] = counts[2 * j] + counts[2 * j + 1];
  for (std::size_t j = half; j < counts.size(); ++j) counts[j] = 0;
}

}  // namespace

float half_to_float(std::uint16_t bits) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits >> 15) << 31;
  const std::uint32_t exp = (bits >> 10) & 0x1fu;
  std::uint32_t mant = bits & 0x3ffu;
  if (exp == 0x1f) return float_from_bits(sign | 0x7f800000u | (mant << 13));  // Inf / NaN
  if (exp == 0) {
    if (mant == 0) return float_from_bits(sign);  // +-0
    // Subnormal mant * 2^-24: shift the leading one up to the implicit-bit position (bit 10);
    // each shift lowers the exponent by one. fp32 exponent of 1.f * 2^(-14) is 127 - 14 = 113.
    std::uint32_t e32 = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e32;
    }
    return float_from_bits(sign | (e32 << 23) | ((mant & 0x3ffu) << 13));
  }
  return float_from_bits(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

float bfloat16_to_float(std::uint16_t bits) noexcept {
  // bfloat16 is the upper half of a binary32.
  return float_from_bits(static_cast<std::uint32_t>(bits) << 16);
}

std::int32_t bin_of(const histogram_spec& spec, float x) noexcept {
  // Rule 3: scale rounded to fp32 once (hi - lo rounded to fp32 first).
  const float width = spec.hi - spec.lo;
  const float scale = static_cast<float>(spec.bins) / width;
  // Rule 4: each operation rounded to fp32 (no contraction; see the file comment).
  float q;
  if (spec.kind == layout::abs) {
    q = std::fabs(x) * scale;
  } else {
    const float d = x - spec.lo;
    q = d * scale;
  }
  q = std::floor(q);
  // Rule 5, clamping on the float before conversion. `!(q >= 0)` also catches NaN, which only
  // arises as 0 * inf when fp32 scale overflows (a range narrower than about B * 2^-128); the
  // value is then exactly at lo, i.e. in bin 0.
  if (!(q >= 0.0f)) return 0;
  if (q >= static_cast<float>(spec.bins)) return spec.bins - 1;
  return static_cast<std::int32_t>(q);
}

status make_histogram(const histogram_spec& spec, histogram* out) noexcept {
  if (out == nullptr) return errc::null_pointer;
  if (status s = detail::check_spec(spec); !s.ok()) return s;
  histogram h;
  h.spec = spec;
  try {
    h.counts.assign(static_cast<std::size_t>(spec.bins), 0);
  } catch (const std::bad_alloc&) {
    return errc::out_of_memory;  // noexcept: report, never terminate
  }
  *out = std::move(h);
  return errc::ok;
}

status add(histogram& h, const void* data, dtype t, std::int64_t n) noexcept {
  if (status s = detail::check_spec(h.spec); !s.ok()) return s;
  if (h.counts.size() != static_cast<std::size_t>(h.spec.bins)) return errc::invalid_option;
  if (status s = check_input(data, t, n); !s.ok()) return s;
  for (std::int64_t i = 0; i < n; ++i) {
    const float x = element(data, t, i);
    if (std::isnan(x)) {
      ++h.nan_count;
      continue;
    }
    if (std::isinf(x)) {
      ++h.inf_count;
      continue;
    }
    ++h.finite_count;
    if (std::fabs(x) > h.max_abs) h.max_abs = std::fabs(x);  // |-0| = 0: never above 0
    // "-0.0 is 0" (numerics.md 1.2): record zeros as +0 so that min/max do not depend on
    // whether a -0 or a +0 came first.
    const float v = x == 0.0f ? 0.0f : x;
    if (v < h.min) h.min = v;
    if (v > h.max) h.max = v;
    ++h.counts[static_cast<std::size_t>(bin_of(h.spec, x))];
  }
  return errc::ok;
}

status merge(histogram& a, const histogram& b) noexcept {
  if (!same_spec(a.spec, b.spec) || a.counts.size() != b.counts.size()) return errc::invalid_option;
  for (std::size_t j = 0; j < a.counts.size(); ++j) a.counts[j] += b.counts[j];
  a.nan_count += b.nan_count;
  a.inf_count += b.inf_count;
  a.finite_count += b.finite_count;
  if (b.max_abs > a.max_abs) a.max_abs = b.max_abs;
  if (b.min < a.min) a.min = b.min;
  if (b.max > a.max) a.max = b.max;
  return errc::ok;
}

status two_pass_histogram(const void* data, dtype t, std::int64_t n, std::int32_t bins,
                          histogram* out) noexcept {
  if (out == nullptr) return errc::null_pointer;
  if (status s = check_input(data, t, n); !s.ok()) return s;
  // Pass 1: the exact max |x|. Pass 2: bin over [0, max_abs) (max_abs itself lands in the
  // last bin by rule 5), never narrower than [0, 2^-64) (numerics.md 1.5).
  const float m = batch_max_abs(data, t, n);
  histogram_spec spec;
  spec.kind = layout::abs;
  spec.bins = bins;
  spec.lo = 0.0f;
  spec.hi = std::max(m, std::ldexp(1.0f, -64));
  histogram h;
  if (status s = make_histogram(spec, &h); !s.ok()) return s;
  if (status s = add(h, data, t, n); !s.ok()) return s;
  *out = std::move(h);
  return errc::ok;
}

status streaming_histogram::init(std::int32_t bins) noexcept {
  if (bins < 2) return errc::too_few_bins;
  if (bins > max_bins) return errc::too_many_bins;
  if ((bins & (bins - 1)) != 0) return errc::bins_not_power_of_two;
  histogram_spec spec;
  spec.kind = layout::abs;
  spec.bins = bins;
  spec.lo = 0.0f;
  spec.hi = std::ldexp(1.0f, -64);
  histogram h;
  if (status s = make_histogram(spec, &h); !s.ok()) return s;
  h_ = std::move(h);
  hi_exp_ = -64;
  return errc::ok;
}

status streaming_histogram::add(const void* data, dtype t, std::int64_t n) noexcept {
  if (h_.counts.empty()) return errc::invalid_option;  // not initialised
  if (status s = check_input(data, t, n); !s.ok()) return s;
  const float m = batch_max_abs(data, t, n);
  // Raise hi until it is strictly above the batch's max |x| (or e = 127, the fp32 limit).
  while (m >= h_.spec.hi && hi_exp_ < 127) {
    ++hi_exp_;
    fold_pairwise(h_.counts);
    h_.spec.hi = std::ldexp(1.0f, hi_exp_);
  }
  return reference::add(h_, data, t, n);
}

status streaming_histogram::merge(const streaming_histogram& other) noexcept {
  if (h_.counts.empty() || other.h_.counts.empty() || h_.spec.bins != other.h_.spec.bins)
    return errc::invalid_option;
  histogram b;
  try {
    b = other.h_;  // a copy, so that `other` may be *this
  } catch (const std::bad_alloc&) {
    return errc::out_of_memory;
  }
  int b_exp = other.hi_exp_;
  while (hi_exp_ < b_exp) {
    ++hi_exp_;
    fold_pairwise(h_.counts);
    h_.spec.hi = std::ldexp(1.0f, hi_exp_);
  }
  while (b_exp < hi_exp_) {
    ++b_exp;
    fold_pairwise(b.counts);
    b.spec.hi = std::ldexp(1.0f, b_exp);
  }
  return reference::merge(h_, b);
}

}  // namespace klcal::reference
