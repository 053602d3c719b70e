// Numeric helpers shared by the CPU search methods: compensated and prefix sums, logs, dot4.
//
// All arithmetic is fp64: the prefix sums of c ln c (up to 2^24 terms) are compensated
// (double-double); the per-candidate level sums (at most L terms) are plain, with their error
// bound noted where they are formed. KL values within rounding noise of 0 are reported as 0
// (klcal::detail::snap_kl). Every file that includes this one is compiled without FP contraction.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu_isa.hpp"
#include "cpu_policy.hpp"
#include "klcal/internal/numerics.hpp"

namespace klcal::cpu::detail {

inline constexpr double inf = std::numeric_limits<double>::infinity();

/// Neumaier-compensated sum: keeps the cancelling c ln c sums accurate to a few ulps of the
/// largest partial sum, whatever the bin count.
struct comp_sum {
  double s = 0.0, c = 0.0;
  void add(double x) noexcept {
    const double t = s + x;
    c += std::fabs(s) >= std::fabs(x) ? (s - t) + x : (x - t) + s;
    s = t;
  }
  double value() const noexcept { return s + c; }
};

/// Prefix sums over counts: S exact in uint64, N integer, H = sum c ln c as (hi, lo) pairs.
struct prefix {
  std::vector<std::uint64_t> S;
  std::vector<std::int32_t> N;
  std::vector<double> Hhi, Hlo;

  void build(const std::uint64_t* c, std::int32_t B) {
    S.assign(std::size_t(B) + 1, 0);
    N.assign(std::size_t(B) + 1, 0);
    Hhi.assign(std::size_t(B) + 1, 0.0);
    Hlo.assign(std::size_t(B) + 1, 0.0);
    comp_sum h;
    for (std::int32_t j = 0; j < B; ++j) {
      const std::uint64_t v = c[j];
      S[std::size_t(j) + 1] = S[std::size_t(j)] + v;
      N[std::size_t(j) + 1] = N[std::size_t(j)] + (v > 0 ? 1 : 0);
      if (v > 1) h.add(double(v) * std::log(double(v)));
      Hhi[std::size_t(j) + 1] = h.s;
      Hlo[std::size_t(j) + 1] = h.c;
    }
  }
  /// sum_{a <= j < b} c ln c.
  double H(std::int32_t a, std::int32_t b) const noexcept {
    return (Hhi[std::size_t(b)] - Hhi[std::size_t(a)]) +
           (Hlo[std::size_t(b)] - Hlo[std::size_t(a)]);
  }
};

/// KL rounding noise around an exact 0 becomes 0: the one snap of klcal/internal/numerics.hpp.
using klcal::detail::snap_kl;

/// x ln x for a count (0 ln 0 = 0).
inline double xlnx(double x) noexcept {
  return x > 0.0 ? x * std::log(x) : 0.0;
}

/// sum_k a[k] b[k] in four interleaved partial sums (vectorisable; a fixed order, so the result
/// is deterministic).
inline double dot4(const double* a, const double* b, std::int64_t n) noexcept {
  double part[4] = {0.0, 0.0, 0.0, 0.0};
  std::int64_t k = 0;
  for (; k + 4 <= n; k += 4)
    for (int u = 0; u < 4; ++u) part[u] += a[k + u] * b[k + u];
  for (; k < n; ++k) part[0] += a[k] * b[k];
  return (part[0] + part[1]) + (part[2] + part[3]);
}

// ---- natural log of many values ------------------------------------------------------------

#if KLCAL_CPU_X86
KLCAL_AVX2 inline __m256d splat(double v) noexcept {
  return _mm256_set1_pd(v);
}

/// ln(x) of 4 N positive, finite, normal doubles: fdlibm's e_log.c algorithm (x = 2^k m with
/// m in [sqrt(2)/2, sqrt(2)), f = m - 1, s = f / (2 + f),
/// ln x = k ln2 + f - f^2/2 + s (f^2/2 + R(s^2))), accurate to about one ulp. The search needs
/// ~1e-12 relative (docs/testing.md), so this is far inside the tolerance, four logs at a time.
/// Each step is applied to all N vectors before the next, so the N dependency chains (two
/// divisions and a polynomial each) overlap; a loop of single log4 calls leaves the out-of-order
/// window full of one chain. Every lane gets exactly log4's operations.
template <int N>
KLCAL_AVX2 inline void log4n(__m256d (&x)[N]) noexcept {
  __m256d m[N], big[N], k[N], f[N], s[N], z[N], w[N], t1[N], t2[N], hfsq[N];
  for (int u = 0; u < N; ++u) {
    const __m256i bits = _mm256_castpd_si256(x[u]);
    const __m256i mant =
        _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000fffffffffffffLL)),
                        _mm256_set1_epi64x(0x3ff0000000000000LL));
    m[u] = _mm256_castsi256_pd(mant);  // [1, 2)
    big[u] = _mm256_cmp_pd(m[u], splat(1.4142135623730951), _CMP_GT_OQ);
    m[u] = _mm256_blendv_pd(m[u], _mm256_mul_pd(m[u], splat(0.5)), big[u]);
    // Biased exponent to double exactly: put it in the mantissa of 2^52 and subtract 2^52.
    const __m256i ebits =
        _mm256_or_si256(_mm256_srli_epi64(bits, 52), _mm256_set1_epi64x(0x4330000000000000LL));
    k[u] = _mm256_sub_pd(_mm256_castsi256_pd(ebits), splat(4503599627370496.0 + 1023.0));
    k[u] = _mm256_add_pd(k[u], _mm256_and_pd(big[u], splat(1.0)));
    f[u] = _mm256_sub_pd(m[u], splat(1.0));
  }
  for (int u = 0; u < N; ++u) s[u] = _mm256_div_pd(f[u], _mm256_add_pd(splat(2.0), f[u]));
  for (int u = 0; u < N; ++u) {
    z[u] = _mm256_mul_pd(s[u], s[u]);
    w[u] = _mm256_mul_pd(z[u], z[u]);
    t1[u] = _mm256_mul_pd(w[u], splat(1.531383769920937332e-01));
    t2[u] = _mm256_mul_pd(w[u], splat(1.479819860511658591e-01));
  }
  for (int u = 0; u < N; ++u) {
    t1[u] = _mm256_mul_pd(w[u], _mm256_add_pd(splat(2.222219843214978396e-01), t1[u]));
    t2[u] = _mm256_mul_pd(w[u], _mm256_add_pd(splat(1.818357216161805012e-01), t2[u]));
  }
  for (int u = 0; u < N; ++u) {
    t1[u] = _mm256_mul_pd(w[u], _mm256_add_pd(splat(3.999999999940941908e-01), t1[u]));
    t2[u] = _mm256_mul_pd(w[u], _mm256_add_pd(splat(2.857142874366239149e-01), t2[u]));
  }
  for (int u = 0; u < N; ++u) {
    t2[u] = _mm256_mul_pd(z[u], _mm256_add_pd(splat(6.666666666666735130e-01), t2[u]));
    hfsq[u] = _mm256_mul_pd(_mm256_mul_pd(splat(0.5), f[u]), f[u]);
  }
  for (int u = 0; u < N; ++u) {
    const __m256d r = _mm256_add_pd(t2[u], t1[u]);
    // k ln2_hi - ((hfsq - (s (hfsq + R) + k ln2_lo)) - f)
    const __m256d inner = _mm256_add_pd(_mm256_mul_pd(s[u], _mm256_add_pd(hfsq[u], r)),
                                        _mm256_mul_pd(k[u], splat(1.90821492927058770002e-10)));
    x[u] = _mm256_sub_pd(_mm256_mul_pd(k[u], splat(6.93147180369123816490e-01)),
                         _mm256_sub_pd(_mm256_sub_pd(hfsq[u], inner), f[u]));
  }
}

/// ln(x) of 4 positive, finite, normal doubles (log4n of one vector).
KLCAL_AVX2 inline __m256d log4(__m256d x) noexcept {
  __m256d v[1] = {x};
  log4n(v);
  return v[0];
}

KLCAL_AVX2 inline void log_inplace_avx2(double* x, std::int64_t n) noexcept {
  std::int64_t i = 0;
  for (; i + 4 <= n; i += 4) _mm256_storeu_pd(x + i, log4(_mm256_loadu_pd(x + i)));
  if (i < n) {  // the tail through the same code, so every value gets the same log
    alignas(32) double tmp[4] = {1.0, 1.0, 1.0, 1.0};
    for (std::int64_t k = i; k < n; ++k) tmp[k - i] = x[k];
    _mm256_store_pd(tmp, log4(_mm256_load_pd(tmp)));
    for (std::int64_t k = i; k < n; ++k) x[k] = tmp[k - i];
  }
}
#endif

/// x[k] := ln x[k] for positive, finite, normal values.
inline void log_inplace(double* x, std::int64_t n) noexcept {
#if KLCAL_CPU_X86
  if (detail::cpu_use_avx2()) {
    log_inplace_avx2(x, n);
    return;
  }
#endif
  for (std::int64_t k = 0; k < n; ++k) x[k] = std::log(x[k]);
}

// ---- result assembly ---------------------------------------------------------------------------

/// Sum of original counts over [a, b) as fp64 of the exact integer sum.
inline double mass(const std::uint64_t* c, std::int32_t a, std::int32_t b) noexcept {
  std::uint64_t s = 0;
  for (std::int32_t j = a; j < b; ++j) s += c[j];
  return double(s);
}

}  // namespace klcal::cpu::detail
