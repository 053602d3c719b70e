// Test data helpers shared by the histogram tests: distribution names, fp16/bf16 bit patterns.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "golden.hpp"
#include "klcal/types.hpp"

namespace klcal::test {

/// IEEE half bit pattern of f by truncation (rounding toward zero). Any pattern is valid test
/// input and the reference widens the same bits; this one keeps the value's magnitude and sign,
/// produces subnormals for tiny values and Inf/NaN for Inf/NaN.
inline std::uint16_t half_bits_trunc(float f) {
  const std::uint32_t u = bits_of(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const int e = static_cast<int>((u >> 23) & 0xffu);
  const std::uint32_t m = u & 0x7fffffu;
  if (e == 255) return sign | 0x7c00u | (m ? 0x200u : 0u);
  const int he = e - 127 + 15;
  if (he >= 31) return sign | 0x7c00u;  // overflow to Inf
  if (he <= 0) {
    if (he < -10) return sign;
    const std::uint32_t full = m | 0x800000u;
    return sign | static_cast<std::uint16_t>(full >> (14 - he));
  }
  return sign | static_cast<std::uint16_t>((he << 10) | (m >> 13));
}

/// Raw little-endian element bytes of the values in dtype t (f16 by truncation, bf16 by taking
/// the upper half of the fp32 pattern).
inline std::vector<unsigned char> encode(const std::vector<float>& v, dtype t) {
  const std::size_t w = dtype_size(t);
  std::vector<unsigned char> out(v.size() * w);
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (t == dtype::f32) {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    } else {
      const std::uint16_t h =
          t == dtype::f16 ? half_bits_trunc(v[i]) : static_cast<std::uint16_t>(bits_of(v[i]) >> 16);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

/// The value distributions of the histogram tests. Each test file generates its own values for
/// them (make_values), so that the CPU and GPU tests do not share one data set.
enum class dist { uniform, gaussian, laplace, relu, zeros, one_value, nan_inf };
inline constexpr dist all_dists[] = {dist::uniform, dist::gaussian,  dist::laplace, dist::relu,
                                     dist::zeros,   dist::one_value, dist::nan_inf};

inline const char* dist_name(dist d) {
  switch (d) {
    case dist::uniform: return "uniform";
    case dist::gaussian: return "gaussian";
    case dist::laplace: return "laplace";
    case dist::relu: return "relu";
    case dist::zeros: return "zeros";
    case dist::one_value: return "one_value";
    case dist::nan_inf: return "nan_inf";
  }
  return "?";
}

inline const char* dtype_name(dtype t) {
  return t == dtype::f32 ? "f32" : t == dtype::f16 ? "f16" : "bf16";
}

}  // namespace klcal::test
