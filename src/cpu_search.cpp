// CPU backend threshold search: prefix-sum entropy forms (tensorrt, mxnet), mse, percentile, max.
//
// tensorrt uses the O(levels)-per-candidate form of docs/numerics.md 2.1. mxnet uses the same
// idea: per-level sums come from prefix sums, and the smoothed sum of P' ln P' over the window
// interior comes from prefix sums of c ln c, ln c and c^-n through the series
//   (P - e) ln(P - e) = P ln P - e ln P - e + sum_{n>=1} e^(n+1) / (n (n+1) P^n)
// (all terms of the tail are positive; with P >= 1 and e <= policy::mxnet_series_max_shift four
// of them leave a relative error below 4e-14), falling back to bin-by-bin sums over the
// non-empty bins for windows so sparse that e is larger. With AVX2 (and a total of at most 2^53)
// the levels between the first and the last are evaluated in one fused pass of 16 levels per
// step, their logs interleaved (log4n) so that the division and polynomial latencies overlap.
// All arithmetic is fp64: the prefix sums of c ln c (up to 2^24 terms) are compensated
// (double-double); the per-candidate level sums (at most L terms) are plain, with their error
// bound noted where they are formed. KL values within rounding noise of 0 are reported as 0
// (policy::kl_zero_snap).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <new>
#include <thread>
#include <vector>

#include "cpu_isa.hpp"
#include "cpu_policy.hpp"
#include "klcal/cpu.hpp"

namespace klcal::cpu {
namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

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

/// KL rounding noise around an exact 0 becomes 0 (see policy::kl_zero_snap).
double snap_zero(double kl) noexcept {
  return std::fabs(kl) < policy::kl_zero_snap ? 0.0 : kl;
}

/// x ln x for a count (0 ln 0 = 0).
double xlnx(double x) noexcept {
  return x > 0.0 ? x * std::log(x) : 0.0;
}

/// sum_k a[k] b[k] in four interleaved partial sums (vectorisable; a fixed order, so the result
/// is deterministic).
double dot4(const double* a, const double* b, std::int64_t n) noexcept {
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

KLCAL_AVX2 void log_inplace_avx2(double* x, std::int64_t n) noexcept {
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
void log_inplace(double* x, std::int64_t n) noexcept {
#if KLCAL_CPU_X86
  if (detail::cpu_use_avx2()) {
    log_inplace_avx2(x, n);
    return;
  }
#endif
  for (std::int64_t k = 0; k < n; ++k) x[k] = std::log(x[k]);
}

// ---- tensorrt entropy (numerics.md 2, 2.1) -------------------------------------------------

struct trt_state {
  std::vector<std::uint64_t> c;  ///< counts after the zero-bin rule
  prefix pf;
  std::int32_t B = 0, start = 0, stride = 1;
  std::int64_t L = 0;
  int log2L = 0;  ///< L is a power of two: level boundaries are shifts

  void prepare(const std::uint64_t* counts, std::int32_t bins, const search_options& o) {
    B = bins;
    c.assign(counts, counts + bins);
    if (o.zero_bin == zero_bin_policy::copy_next) c[0] = c[1];
    pf.build(c.data(), B);
    start = o.start_bin;
    stride = o.stride;
    log2L = o.is_unsigned ? o.bits : o.bits - 1;
    L = std::int64_t{1} << log2L;
  }

  /// KL of candidate i; `scratch` holds 2 * L doubles.
  double kl(std::int32_t i, double* scratch) const noexcept {
    const std::uint64_t T = pf.S[std::size_t(B)];
    const std::uint64_t Si = pf.S[std::size_t(i)];
    if (T == 0 || Si == 0) return inf;
    const std::uint64_t t = T - Si;
    const std::uint64_t last = c[std::size_t(i) - 1];
    if (last == 0 && t > 0) return inf;
    const double P = double(last + t);
    double bracket;
    if (i <= L) {
      // Every kept bin is a level of its own, Q = c, and the bracket reduces to P ln(P / c).
      bracket = last > 0 ? P * std::log(P / double(last)) : 0.0;
    } else {
      // Gather each non-empty level's mass M and mean M / n, take all logs at once, then sum.
      double* mass = scratch;
      double* lq = scratch + L;
      std::int64_t cnt = 0, last_pos = -1;
      const std::int64_t ii = i;
      std::int32_t lo = 0;
      for (std::int64_t g = 0; g < L; ++g) {
        // Level g covers [ceil(g i / L), ceil((g + 1) i / L)).
        const auto hi = static_cast<std::int32_t>(((g + 1) * ii + L - 1) >> log2L);
        const std::int32_t n = pf.N[std::size_t(hi)] - pf.N[std::size_t(lo)];
        if (n > 0) {
          const double M = double(pf.S[std::size_t(hi)] - pf.S[std::size_t(lo)]);
          mass[cnt] = M;
          lq[cnt] = M / double(n);
          if (hi == i) last_pos = cnt;
          ++cnt;
        }
        lo = hi;
      }
      log_inplace(lq, cnt);
      // Four partial sums: the level sum has at most L terms, so plain fp64 keeps its error
      // below L eps ln(max c) relative to T' (4e-13 for 128 levels), well inside tolerance.
      const double sum_mlq = dot4(mass, lq, cnt);
      // t > 0 implies c[i-1] > 0, so its level (the last) is non-empty.
      const double lnq_last = last_pos >= 0 ? lq[last_pos] : 0.0;
      comp_sum b;
      b.add(pf.H(0, i - 1));
      b.add(xlnx(P));
      b.add(-sum_mlq);
      b.add(-double(t) * lnq_last);
      bracket = b.value();
    }
    return snap_zero(bracket / double(T) + std::log(double(Si) / double(T)));
  }

  std::int32_t candidate(std::int64_t k) const noexcept {
    return static_cast<std::int32_t>(start + k * stride);
  }
};

// ---- mxnet entropy (numerics.md 3) ---------------------------------------------------------

struct mxnet_state {
  const std::uint64_t* c = nullptr;
  std::int32_t B = 0, z = 0;
  std::int64_t L = 0;
  prefix pf;
  std::vector<double> lnc_hi, lnc_lo;  ///< prefix of ln c over non-empty bins (compensated)
  std::vector<double> r[4];            ///< prefix of c^-(n+1) over non-empty bins
  std::vector<std::int32_t> nonzero;   ///< indices of non-empty bins, ascending
  /// (pf.S[j], pf.N[j]) as doubles (exact), interleaved so that a level boundary is one 16-byte
  /// load; AVX2 path only.
  std::vector<double> SN;
  bool fast = false;  ///< kl() takes kl_avx2()

  /// Scratch doubles kl() needs per thread.
  std::size_t scratch_size() const noexcept { return std::size_t(2 * L); }

  void prepare(const std::uint64_t* counts, std::int32_t bins, const search_options& o) {
    c = counts;
    B = bins;
    z = bins / 2;
    L = (std::int64_t{1} << o.bits) - 1;
    pf.build(counts, bins);
    lnc_hi.assign(std::size_t(B) + 1, 0.0);
    lnc_lo.assign(std::size_t(B) + 1, 0.0);
    for (auto& v : r) v.assign(std::size_t(B) + 1, 0.0);
    nonzero.clear();
    // The AVX2 level loop reads the prefix sums as doubles, which is exact while the total is
    // at most 2^53; larger totals take the uint64 path.
    fast = false;
#if KLCAL_CPU_X86
    fast = detail::cpu_use_avx2() && pf.S[std::size_t(B)] <= (std::uint64_t{1} << 53);
#endif
    if (fast) {
      SN.resize(2 * (std::size_t(B) + 1));
      for (std::size_t j = 0; j <= std::size_t(B); ++j) {
        SN[2 * j] = double(pf.S[j]);
        SN[2 * j + 1] = double(pf.N[j]);
      }
    }
    comp_sum ls;
    double acc[4] = {0, 0, 0, 0};
    for (std::int32_t j = 0; j < B; ++j) {
      if (c[j] > 0) {
        nonzero.push_back(j);
        const double x = double(c[j]);
        ls.add(std::log(x));
        const double inv = 1.0 / x;
        double pw = inv;
        for (int n = 0; n < 4; ++n, pw *= inv) acc[n] += pw;
      }
      lnc_hi[std::size_t(j) + 1] = ls.s;
      lnc_lo[std::size_t(j) + 1] = ls.c;
      for (int n = 0; n < 4; ++n) r[n][std::size_t(j) + 1] = acc[n];
    }
  }

  /// sum over non-empty bins j in [a, b) of (c - e) ln(c - e).
  double shifted_xlnx(std::int32_t a, std::int32_t b, double e) const noexcept {
    if (b <= a) return 0.0;
    const double h = pf.H(a, b);
    if (e == 0.0) return h;
    if (e <= policy::mxnet_series_max_shift) {
      const double lnsum = (lnc_hi[std::size_t(b)] - lnc_hi[std::size_t(a)]) +
                           (lnc_lo[std::size_t(b)] - lnc_lo[std::size_t(a)]);
      const double cnt = double(pf.N[std::size_t(b)] - pf.N[std::size_t(a)]);
      double tail = 0.0, epow = e * e;
      for (int n = 1; n <= 4; ++n, epow *= e)
        tail += epow / double(n * (n + 1)) * (r[n - 1][std::size_t(b)] - r[n - 1][std::size_t(a)]);
      comp_sum s;
      s.add(h);
      s.add(-e * lnsum);
      s.add(-e * cnt);
      s.add(tail);
      return s.value();
    }
    // Sparse window: bin by bin over its non-empty bins only.
    const auto first = std::lower_bound(nonzero.begin(), nonzero.end(), a);
    const auto stop = std::lower_bound(first, nonzero.end(), b);
    comp_sum s;
    for (auto it = first; it != stop; ++it) s.add(xlnx(double(c[*it]) - e));
    return s.value();
  }

  /// KL of half-width i; `scratch` holds scratch_size() doubles.
  /// Window of half-width i and the smoothing of P (numerics.md 3), shared by both kl paths.
  struct window {
    std::int32_t j0, j1;                ///< the window is bins [j0, j1]
    std::int64_t s;                     ///< its size 2i + 1
    std::uint64_t T, P0, right, Plast;  ///< total, P[0], right outliers, P[s-1]
    std::int64_t interior_nz, nzp, zp;  ///< non-zero interior bins, non-zero / zero P entries
    double ep;                          ///< the smoothing shift of non-zero P entries
    bool finite;                        ///< false: KL = +inf (empty, all-zero or unsmoothable P)
  };
  window window_of(std::int32_t i) const noexcept {
    constexpr double eps = 1e-4;
    window w{};
    w.j0 = z - i;
    w.j1 = z + i;
    w.s = 2 * std::int64_t{i} + 1;
    w.T = pf.S[std::size_t(B)];
    w.P0 = pf.S[std::size_t(w.j0) + 1];  // left outliers + c[j0]
    w.right = w.T - pf.S[std::size_t(w.j1) + 1];
    w.Plast = c[w.j1] + w.right;
    w.interior_nz = pf.N[std::size_t(w.j1)] - pf.N[std::size_t(w.j0) + 1];
    w.nzp = w.interior_nz + (w.P0 > 0) + (w.Plast > 0);
    w.zp = w.s - w.nzp;
    w.ep = w.nzp > 0 ? eps * double(w.zp) / double(w.nzp) : 0.0;
    w.finite = w.T != 0 && w.nzp != 0 && w.ep < 1.0;
    return w;
  }

  double kl(std::int32_t i, double* scratch) const noexcept {
#if KLCAL_CPU_X86
    if (fast) return kl_avx2(i);
#endif
    return kl_generic(i, scratch);
  }

#if KLCAL_CPU_X86
  /// kl() with the middle levels (1 .. L-2) four at a time in one fused pass. Levels 0 and L-1
  /// carry the outliers and the W[0] quirk and stay scalar. A middle level's P and W agree, so
  /// its n_g counts its non-zero P entries too, and its contributions to nzq and sum(Q) are the
  /// exact integers n_g and M_g: both totals over the middle levels are single prefix-sum
  /// differences, so eq is known before any level's log is taken.
  KLCAL_AVX2 double kl_avx2(std::int32_t i) const noexcept {
    constexpr double eps = 1e-4;
    const window w = window_of(i);
    if (!w.finite) return inf;
    // Plain locals, not a structured binding: C++17 lambdas cannot capture bindings.
    const std::int32_t j0 = w.j0, j1 = w.j1;
    const std::int64_t s = w.s;
    const std::uint64_t T = w.T, P0 = w.P0, right = w.right, Plast = w.Plast;
    const double ep = w.ep;

    const std::int64_t m = s / L;  // >= 1: s >= L for every candidate
    const std::size_t a1 = std::size_t(j0 + m), aL = std::size_t(j0 + (L - 1) * m);
    // Level 0 without W[0] = c[j0]: [j0 + 1, j0 + m).
    const std::uint64_t M0 = pf.S[a1] - pf.S[std::size_t(j0) + 1];
    const std::int64_t n0 = pf.N[a1] - pf.N[std::size_t(j0) + 1];
    const std::int64_t cnt0 = n0 + (P0 > 0);
    // Level L-1: [j0 + (L-1) m, j1 + 1).
    const std::uint64_t ML = pf.S[std::size_t(j1) + 1] - pf.S[aL];
    const std::int64_t nL = pf.N[std::size_t(j1) + 1] - pf.N[aL];
    const std::int64_t cntL = nL + (c[j1] == 0 && right > 0);
    const double q0 = n0 > 0 ? double(M0) / double(n0) : 0.0;
    const double qL = nL > 0 ? double(ML) / double(nL) : 0.0;
    const std::int64_t nzq = (n0 > 0 ? cnt0 : 0) + (pf.N[aL] - pf.N[a1]) + (nL > 0 ? cntL : 0);
    if (nzq == 0) return inf;
    const double sq = (n0 > 0 ? double(cnt0) * q0 : 0.0) + double(pf.S[aL] - pf.S[a1]) +
                      (nL > 0 ? double(cntL) * qL : 0.0);
    const double eq = eps * double(s - nzq) / double(nzq);
    if (eq >= 1.0) return inf;

    // Middle level g spans boundaries g and g + 1 (boundary k at j0 + k m). Four levels take
    // boundaries g + 1 .. g + 4 as (S, N) pairs, transposed into S and N vectors; boundary g is
    // the previous step's last. Lanes past level L-2 repeat boundary L-1: an empty level.
    const double* sn = SN.data();
    const auto pair_at = [&](std::int64_t k) noexcept {
      return _mm_loadu_pd(sn + 2 * (j0 + std::min(k, L - 1) * m));
    };
    const __m256d vep = splat(ep), veq = splat(eq), one = splat(1.0), zero = _mm256_setzero_pd();
    constexpr int G = 4;  // groups of four levels per step, so that their logs overlap
    __m256d acc[G] = {};
    // prev holds boundary g in lane 3.
    __m256d prevS = _mm256_set1_pd(double(pf.S[a1])), prevN = _mm256_set1_pd(double(pf.N[a1]));
    for (std::int64_t g = 1; g <= L - 2; g += 4 * G) {
      __m256d coef[G], arg[G];
      for (int u = 0; u < G; ++u) {
        const std::int64_t h = g + 4 * u;
        const __m256d x = _mm256_insertf128_pd(_mm256_castpd128_pd256(pair_at(h + 1)),
                                               pair_at(h + 3), 1);  // S1 N1 S3 N3
        const __m256d y = _mm256_insertf128_pd(_mm256_castpd128_pd256(pair_at(h + 2)),
                                               pair_at(h + 4), 1);  // S2 N2 S4 N4
        const __m256d hiS = _mm256_unpacklo_pd(x, y), hiN = _mm256_unpackhi_pd(x, y);
        // (prev lane 3, hi lanes 0 .. 2)
        const __m256d loS = _mm256_blend_pd(_mm256_permute4x64_pd(hiS, _MM_SHUFFLE(2, 1, 0, 3)),
                                            _mm256_permute4x64_pd(prevS, 0xff), 1);
        const __m256d loN = _mm256_blend_pd(_mm256_permute4x64_pd(hiN, _MM_SHUFFLE(2, 1, 0, 3)),
                                            _mm256_permute4x64_pd(prevN, 0xff), 1);
        prevS = hiS;
        prevN = hiN;
        const __m256d M = _mm256_sub_pd(hiS, loS);
        const __m256d n = _mm256_sub_pd(hiN, loN);
        // sum of P' over the level's non-zero P entries; 0 for an empty level.
        coef[u] = _mm256_sub_pd(M, _mm256_mul_pd(n, vep));
        const __m256d nonempty = _mm256_cmp_pd(n, zero, _CMP_GT_OQ);
        // Empty levels (also the padding) divide by 1 and take ln 1: their coef is 0 anyway.
        const __m256d q = _mm256_div_pd(M, _mm256_blendv_pd(one, n, nonempty));
        arg[u] = _mm256_blendv_pd(one, _mm256_sub_pd(q, veq), nonempty);
      }
      log4n(arg);
      for (int u = 0; u < G; ++u) acc[u] = _mm256_add_pd(acc[u], _mm256_mul_pd(coef[u], arg[u]));
    }
    for (int u = 1; u < G; ++u) acc[0] = _mm256_add_pd(acc[0], acc[u]);
    alignas(32) double part[4];
    _mm256_store_pd(part, acc[0]);
    const double lneps = std::log(eps);
    const double coef0 = double(M0 + P0) - double(cnt0) * ep;
    const double coefL = double(ML + right) - double(cntL) * ep;
    const double first = coef0 * (n0 > 0 ? std::log(q0 - eq) : lneps);
    const double last = coefL * (nL > 0 ? std::log(qL - eq) : lneps);

    comp_sum b;
    b.add(shifted_xlnx(j0 + 1, j1, ep));
    if (P0 > 0) b.add(xlnx(double(P0) - ep));
    if (Plast > 0) b.add(xlnx(double(Plast) - ep));
    // At most L plain terms: error below L eps ln(max c) relative to T (8e-13 for 255 levels).
    b.add(-(((part[0] + part[1]) + (part[2] + part[3])) + (first + last)));
    const double sp = double(T);
    return snap_zero(b.value() / sp - std::log(sp) + std::log(sq));
  }
#endif

  /// kl() on the uint64 prefix sums: the portable path, and totals above 2^53.
  double kl_generic(std::int32_t i, double* scratch) const noexcept {
    constexpr double eps = 1e-4;
    const window w = window_of(i);
    if (!w.finite) return inf;
    // Plain locals, not a structured binding: C++17 lambdas cannot capture bindings.
    const std::int32_t j0 = w.j0, j1 = w.j1;
    const std::int64_t s = w.s;
    const std::uint64_t T = w.T, P0 = w.P0, right = w.right, Plast = w.Plast;
    const double ep = w.ep;

    // Levels of the window copy W (W[0] = 0, W[k] = c[j0 + k]).
    const std::int64_t m = s / L;
    double* coef = scratch;      // sum of P' over the level's non-zero P entries
    double* qval = scratch + L;  // M_g / n_g, or 0 when n_g = 0
    std::int64_t nzq = 0;
    double sq = 0.0;
    for (std::int64_t g = 0; g < L; ++g) {
      const auto a = static_cast<std::int32_t>(j0 + g * m);
      const auto b = static_cast<std::int32_t>(g == L - 1 ? j1 + 1 : j0 + (g + 1) * m);
      std::uint64_t M = pf.S[std::size_t(b)] - pf.S[std::size_t(a)];
      std::int64_t n = pf.N[std::size_t(b)] - pf.N[std::size_t(a)];
      std::uint64_t A = M;   // sum of P over the level
      std::int64_t cnt = n;  // non-zero P entries in the level
      if (g == 0) {
        M -= c[j0];
        n -= (c[j0] > 0);
        A = M + P0;
        cnt = n + (P0 > 0);
      }
      if (g == L - 1) {
        A += right;
        cnt += (c[j1] == 0 && right > 0);
      }
      coef[g] = double(A) - double(cnt) * ep;
      if (n > 0) {
        const double q = double(M) / double(n);
        qval[g] = q;
        nzq += cnt;
        sq += double(cnt) * q;
      } else {
        qval[g] = 0.0;
      }
    }
    if (nzq == 0) return inf;
    const double eq = eps * double(s - nzq) / double(nzq);
    if (eq >= 1.0) return inf;

    // sum P' ln P' - sum P' ln Q' without the eps ln eps terms of the zero entries of P (there
    // Q is zero too, so they cancel).
    // ln(Q_g - eq) of every level at once (levels with Q = 0 take ln eps); all arguments are
    // positive normal numbers, since a mean of non-zero counts is >= 1 and eq < 1.
    for (std::int64_t g = 0; g < L; ++g) qval[g] = qval[g] > 0.0 ? qval[g] - eq : eps;
    log_inplace(qval, L);
    comp_sum b;
    b.add(shifted_xlnx(j0 + 1, j1, ep));
    if (P0 > 0) b.add(xlnx(double(P0) - ep));
    if (Plast > 0) b.add(xlnx(double(Plast) - ep));
    // At most L plain terms: error below L eps ln(max c) relative to T (8e-13 for 255 levels).
    b.add(-dot4(coef, qval, L));
    const double sp = double(T);
    return snap_zero(b.value() / sp - std::log(sp) + std::log(sq));
  }
};

// ---- mse (numerics.md 4) ---------------------------------------------------------------------

struct mse_state {
  std::vector<double> mid, cnt;  ///< centres and counts of the non-empty bins
  double w = 0.0, qmax = 0.0;
  std::int32_t B = 0, start = 0, stride = 1;

  void prepare(const std::uint64_t* counts, const histogram_spec& spec, const search_options& o) {
    B = spec.bins;
    w = double(spec.hi) / double(B);
    qmax = double(klcal::qmax(o));
    start = o.start_bin;
    stride = o.stride;
    mid.clear();
    cnt.clear();
    for (std::int32_t k = 0; k < B; ++k)
      if (counts[k] > 0) {
        mid.push_back((double(k) + 0.5) * w);
        cnt.push_back(double(counts[k]));
      }
  }

  double score(std::int32_t i) const noexcept {
    const double a = (double(i) + 0.5) * w;
    const double s = qmax / a;
    constexpr double magic = 6755399441055744.0;  // 1.5 * 2^52: (x + magic) - magic = rint(x)
    // fq(m) - m = (r - x) / s with x = m s (the same fp64 product the rule rounds, so r is the
    // rule's r exactly): one division per candidate instead of one per bin. Its rounding differs
    // from r / s - m by a few ulps of m per term, far inside docs/testing.md.
    // Four partial sums keep the loop vectorisable.
    double part[4] = {0.0, 0.0, 0.0, 0.0};
    const std::size_t n = mid.size();
    std::size_t k = 0;
    for (; k + 4 <= n; k += 4)
      for (std::size_t u = 0; u < 4; ++u) {
        // Centres are positive and x < 2^40 (bins <= 2^24, qmax < 2^16), so only the upper
        // clamp applies and the magic-number rounding (half to even) is exact.
        const double x = mid[k + u] * s;
        const double d = std::min((x + magic) - magic, qmax) - x;
        part[u] += cnt[k + u] * (d * d);
      }
    for (; k < n; ++k) {
      const double x = mid[k] * s;
      const double d = std::min((x + magic) - magic, qmax) - x;
      part[0] += cnt[k] * (d * d);
    }
    const double sum = (part[0] + part[1]) + (part[2] + part[3]);
    return sum / (s * s) / double(B);
  }
};

// ---- shared result assembly ------------------------------------------------------------------

float scale_of(double amax, double qmax) noexcept {
  return static_cast<float>(amax) / static_cast<float>(qmax);
}

/// Sum of original counts over [a, b) as fp64 of the exact integer sum.
double mass(const std::uint64_t* c, std::int32_t a, std::int32_t b) noexcept {
  std::uint64_t s = 0;
  for (std::int32_t j = a; j < b; ++j) s += c[j];
  return double(s);
}

/// Empty or all-zero histogram (numerics.md 5.3).
bool is_trivial(const std::uint64_t* c, const histogram_spec& spec) noexcept {
  std::int32_t zb = 0;
  if (spec.kind == layout::signed_) {
    const float width = spec.hi - spec.lo;
    const float scale = static_cast<float>(spec.bins) / width;
    float p = (0.0f - spec.lo) * scale;
    p = p > 0.0f ? p : 0.0f;
    p = std::min(p, static_cast<float>(spec.bins - 1));
    zb = static_cast<std::int32_t>(p);
  }
  for (std::int32_t j = 0; j < spec.bins; ++j)
    if (j != zb && c[j] != 0) return false;
  return true;  // also when everything, bin zb included, is empty
}

/// Runs f(b, e) on contiguous blocks of [0, count) over up to `threads` threads. An exception
/// (std::bad_alloc) thrown by f on any thread is rethrown here after every thread has joined.
template <class F>
void parallel_blocks(std::int64_t count, int threads, const F& f) {
  const std::int64_t nt = std::max<std::int64_t>(1, std::min<std::int64_t>(threads, count));
  if (nt == 1) {
    f(0, count);
    return;
  }
  std::atomic<bool> failed{false};
  auto guarded = [&f, &failed](std::int64_t b, std::int64_t e) noexcept {
    try {
      f(b, e);
    } catch (...) {
      failed = true;
    }
  };
  std::vector<std::thread> pool;
  std::vector<std::int64_t> orphaned;
  for (std::int64_t t = 1; t < nt; ++t) {
    const std::int64_t b = count * t / nt, e = count * (t + 1) / nt;
    try {
      pool.emplace_back(guarded, b, e);
    } catch (...) {
      orphaned.push_back(t);  // could not start a thread: run that block here
    }
  }
  guarded(0, count / nt);
  for (const std::int64_t t : orphaned) guarded(count * t / nt, count * (t + 1) / nt);
  for (auto& th : pool) th.join();
  if (failed) throw std::bad_alloc();
}

/// Searches one task with `threads` threads over its candidates. Throws std::bad_alloc only.
void search_one(const search_task& task, search_result& res, int threads) {
  const histogram_spec& spec = task.spec;
  const search_options& o = task.opts;
  const std::uint64_t* counts = task.h_counts;
  const std::int32_t B = spec.bins;
  const std::int64_t ncand = candidate_count(spec, o);
  std::vector<double> own_curve;
  double* curve = task.h_curve;
  if (curve == nullptr && ncand > 0) {
    own_curve.resize(std::size_t(ncand));
    curve = own_curve.data();
  }
  const std::uint64_t T = [&] {
    std::uint64_t s = 0;
    for (std::int32_t j = 0; j < B; ++j) s += counts[j];
    return s;
  }();
  const double w = double(spec.hi) / double(B);
  const double qm = double(qmax(o));
  res = search_result{};

  std::int32_t index = 0;
  double score = 0.0, amax = 0.0, clipped = 0.0;
  bool all_inf = false;
  const int cand_threads =
      ncand >= policy::min_candidates_per_thread * 2 ? threads : 1;  // tiny curves: one thread

  if (o.meth == method::entropy && o.rules == rule_set::tensorrt) {
    trt_state st;
    st.prepare(counts, B, o);
    parallel_blocks(ncand, cand_threads, [&](std::int64_t b, std::int64_t e) {
      std::vector<double> scratch(std::size_t(2 * st.L));
      for (std::int64_t k = b; k < e; ++k) curve[k] = st.kl(st.candidate(k), scratch.data());
    });
    std::int64_t best = 0;
    double bv = inf;
    for (std::int64_t k = 0; k < ncand; ++k)
      if (curve[k] <= bv) {  // ties (and all-inf) go to the largest i
        bv = curve[k];
        best = k;
      }
    index = st.candidate(best);
    score = curve[best];
    all_inf = std::isinf(bv);
    amax = double(index) * w;
    clipped = T > 0 ? mass(counts, index, B) / double(T) : 0.0;
  } else if (o.meth == method::entropy) {
    mxnet_state st;
    st.prepare(counts, B, o);
    const std::int32_t first_i = static_cast<std::int32_t>(st.L / 2);
    parallel_blocks(ncand, cand_threads, [&](std::int64_t b, std::int64_t e) {
      std::vector<double> scratch(st.scratch_size());
      for (std::int64_t k = b; k < e; ++k)
        curve[k] = st.kl(static_cast<std::int32_t>(first_i + k), scratch.data());
    });
    std::int64_t best = 0;
    for (std::int64_t k = 1; k < ncand; ++k)
      if (curve[k] < curve[best]) best = k;  // ties go to the smallest i
    index = static_cast<std::int32_t>(first_i + best);
    score = curve[best];
    all_inf = std::isinf(score);
    const double qm_sym = double((1 << (o.bits - 1)) - 1);
    amax = (double(index) + 0.5) * (2.0 * double(spec.hi) / double(B));
    const std::int32_t z = B / 2;
    clipped =
        T > 0 ? (mass(counts, 0, z - index) + mass(counts, z + index + 1, B)) / double(T) : 0.0;
    res.scale = scale_of(amax, qm_sym);
  } else if (o.meth == method::mse) {
    mse_state st;
    st.prepare(counts, spec, o);
    parallel_blocks(ncand, cand_threads, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t k = b; k < e; ++k)
        curve[k] = st.score(static_cast<std::int32_t>(o.start_bin + k * o.stride));
    });
    std::int64_t best = 0;
    for (std::int64_t k = 1; k < ncand; ++k)
      if (curve[k] < curve[best]) best = k;  // the first minimum wins
    index = static_cast<std::int32_t>(o.start_bin + best * o.stride);
    score = curve[best];
    amax = (double(index) + 0.5) * w;
    clipped = T > 0 ? mass(counts, index + 1, B) / double(T) : 0.0;
  } else if (o.meth == method::percentile) {
    const double target = o.percentile / 100.0;
    std::uint64_t s = 0;
    index = B - 1;
    for (std::int32_t k = 0; k < B; ++k) {
      s += counts[k];
      if (T > 0 && double(s) / double(T) >= target) {
        index = k;
        break;
      }
    }
    amax = double(index) * w;
    clipped = T > 0 ? mass(counts, index, B) / double(T) : 0.0;
  } else {  // max
    index = B;
    amax = double(task.max_abs);
  }

  if (T == 0 || is_trivial(counts, spec)) {
    res = search_result{};
    res.degenerate = true;
    return;
  }
  res.index = index;
  res.amax = amax;
  res.score = score;
  res.clipped_fraction = clipped;
  res.degenerate = all_inf;
  if (!(o.meth == method::entropy && o.rules == rule_set::mxnet)) res.scale = scale_of(amax, qm);
}

int resolve_threads(int threads) noexcept {
  if (threads > 0) return threads;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(std::min(hc, 1024u));
}

}  // namespace

status search(const search_task* tasks, std::int32_t num_tasks, search_result* results,
              int threads) noexcept {
  if (num_tasks < 0) return errc::invalid_count;
  if (num_tasks == 0) return errc::ok;
  if (tasks == nullptr || results == nullptr) return errc::null_pointer;
  for (std::int32_t k = 0; k < num_tasks; ++k) {
    if (status s = validate(tasks[k].spec, tasks[k].opts); !s.ok()) return s;
    if (tasks[k].h_counts == nullptr) return errc::null_pointer;
  }
  const int nt = resolve_threads(threads);
  try {
    if (num_tasks >= nt || nt == 1) {
      // Whole tasks per thread, handed out dynamically; each result depends on its task only.
      std::atomic<std::int32_t> next{0};
      auto body = [&](std::int64_t, std::int64_t) {
        for (std::int32_t k; (k = next.fetch_add(1)) < num_tasks;)
          search_one(tasks[k], results[k], 1);
      };
      parallel_blocks(std::min<std::int64_t>(nt, num_tasks), nt, body);
    } else {
      for (std::int32_t k = 0; k < num_tasks; ++k) search_one(tasks[k], results[k], nt);
    }
  } catch (...) {
    return errc::out_of_memory;
  }
  return errc::ok;
}

}  // namespace klcal::cpu
