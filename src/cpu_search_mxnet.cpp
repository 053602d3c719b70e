// CPU mxnet entropy search (numerics.md 3): level sums and the smoothed P ln P from prefix sums.
//
// Per-level sums come from prefix sums, and the smoothed sum of P' ln P' over the window
// interior comes from prefix sums of c ln c, ln c and c^-n through the series
//   (P - e) ln(P - e) = P ln P - e ln P - e + sum_{n>=1} e^(n+1) / (n (n+1) P^n)
// (all terms of the tail are positive; with P >= 1 and e <= policy::mxnet_series_max_shift four
// of them leave a relative error below 4e-14), falling back to bin-by-bin sums over the
// non-empty bins for windows so sparse that e is larger. With AVX2 (and a total of at most 2^53)
// the levels between the first and the last are evaluated in one fused pass of 16 levels per
// step, their logs interleaved (log4n) so that the division and polynomial latencies overlap.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu_isa.hpp"
#include "cpu_policy.hpp"
#include "cpu_search_math.hpp"
#include "cpu_search_methods.hpp"
#include "klcal/cpu.hpp"

namespace klcal::cpu::detail {
namespace {

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
    for (std::int64_t g = 1; g <= L - 2; g += std::int64_t{4} * G) {
      __m256d coef[G], arg[G];
      for (int u = 0; u < G; ++u) {
        const std::int64_t h = g + std::int64_t{4} * u;
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
    return snap_kl(b.value() / sp - std::log(sp) + std::log(sq));
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
    return snap_kl(b.value() / sp - std::log(sp) + std::log(sq));
  }
};

}  // namespace

choice search_mxnet(const search_task& task, std::uint64_t T, double* curve, std::int64_t ncand,
                    int threads) {
  const std::uint64_t* counts = task.h_counts;
  const std::int32_t B = task.spec.bins;
  mxnet_state st;
  st.prepare(counts, B, task.opts);
  const std::int32_t first_i = static_cast<std::int32_t>(st.L / 2);
  parallel_blocks(ncand, threads, [&](std::int64_t b, std::int64_t e) {
    std::vector<double> scratch(st.scratch_size());
    for (std::int64_t k = b; k < e; ++k)
      curve[k] = st.kl(static_cast<std::int32_t>(first_i + k), scratch.data());
  });
  std::int64_t best = 0;
  for (std::int64_t k = 1; k < ncand; ++k)
    if (curve[k] < curve[best]) best = k;  // ties go to the smallest i
  choice ch;
  ch.index = static_cast<std::int32_t>(first_i + best);
  ch.score = curve[best];
  ch.all_inf = std::isinf(ch.score);
  ch.amax = (double(ch.index) + 0.5) * (2.0 * double(task.spec.hi) / double(B));
  const std::int32_t z = B / 2;
  ch.clipped =
      T > 0 ? (mass(counts, 0, z - ch.index) + mass(counts, z + ch.index + 1, B)) / double(T) : 0.0;
  return ch;
}

}  // namespace klcal::cpu::detail
