// CPU mse search (numerics.md 4): fake-quantization error per candidate, O(levels) each.
//
// Exact level form (why it is exact, and the tolerance, in numerics.md 4.1). With v = 2i + 1,
// u_k = 2k + 1 and N = qmax, bin k's centre scaled to the grid is x_k = N u_k / v (the fp64
// w cancels), its level is n_k = min(rint(x_k), N), and
// fq(m_k) - m_k = (w / 2N) D_k with the integer D_k = n_k v - N u_k. So
// score = (w / 2N)^2 / B * sum_k c_k D_k^2, and the sum is a polynomial in the prefix moments
// P0, P1, P2 of c, c u, c u^2 at the level boundaries, evaluated in unsigned 128-bit integers.
// Intermediate products wrap modulo 2^128, but the two sums that are converted to fp64 are below
// 2^114, so the wrap-around cancels and both are exact.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_search_math.hpp"
#include "cpu_search_methods.hpp"
#include "klcal/cpu.hpp"

namespace klcal::cpu::detail {
namespace {

#if defined(__SIZEOF_INT128__)
#define KLCAL_MSE_LEVELS 1
__extension__ typedef unsigned __int128 u128;  // GCC/Clang; __extension__ silences -Wpedantic
#else
#define KLCAL_MSE_LEVELS 0
#endif

struct mse_state {
  double w = 0.0, qmax = 0.0;
  std::int32_t B = 0;
  bool levels = false;  ///< score with score_levels (else score_bins)
  // Bin form: centres and counts of the non-empty bins.
  std::vector<double> mid, cnt;
#if KLCAL_MSE_LEVELS
  // Level form: P0[k] = sum_{j<k} c_j (< 2^64), P1[k] = sum c_j u_j (< 2^89),
  // P2[k] = sum c_j u_j^2 (< 2^114), u_j = 2j + 1.
  std::vector<std::uint64_t> p0;
  std::vector<u128> p1, p2;
#endif

  void prepare(const std::uint64_t* counts, const histogram_spec& spec, const search_options& o) {
    B = spec.bins;
    w = double(spec.hi) / double(B);
    qmax = double(klcal::qmax(o));
    std::int64_t nonzero = 0;
    for (std::int32_t k = 0; k < B; ++k) nonzero += counts[k] > 0 ? 1 : 0;
    // A level step costs about policy::mse_level_cost bin steps (scalar 128-bit arithmetic vs
    // four bins per vector step), and a candidate has qmax level steps or `nonzero` bin steps.
    levels = KLCAL_MSE_LEVELS && double(klcal::qmax(o)) * policy::mse_level_cost < double(nonzero);
#if KLCAL_MSE_LEVELS
    if (levels) {
      p0.assign(std::size_t(B) + 1, 0);
      p1.assign(std::size_t(B) + 1, 0);
      p2.assign(std::size_t(B) + 1, 0);
      for (std::int32_t k = 0; k < B; ++k) {
        const u128 c = counts[k], u = 2 * std::uint64_t(k) + 1;
        p0[std::size_t(k) + 1] = p0[std::size_t(k)] + counts[k];
        p1[std::size_t(k) + 1] = p1[std::size_t(k)] + c * u;
        p2[std::size_t(k) + 1] = p2[std::size_t(k)] + c * (u * u);
      }
      return;
    }
#endif
    for (std::int32_t k = 0; k < B; ++k)
      if (counts[k] > 0) {
        mid.push_back((double(k) + 0.5) * w);
        cnt.push_back(double(counts[k]));
      }
  }

  double score(std::int32_t i) const noexcept {
#if KLCAL_MSE_LEVELS
    if (levels) return score_levels(i);
#endif
    return score_bins(i);
  }

#if KLCAL_MSE_LEVELS
  /// Exact integer sum over levels (file comment), rounded to fp64 once per part.
  double score_levels(std::int32_t i) const noexcept {
    const std::uint64_t N = static_cast<std::uint64_t>(qmax);
    const std::uint64_t v = 2 * std::uint64_t(i) + 1;
    // a_m, the first bin of level >= m (1 <= m <= N): the smallest k with x_k > m - 1/2, i.e.
    // 4 N k > R_m = (2m - 1) v - 2N. x_k is never within 1 / (2v) of a half-integer (the
    // numerator 2 N u_k - (2n + 1) v is odd), while fp64 x_k is within 1e-10 of it, so these
    // are exactly the levels rint gives the reference.
    const std::uint64_t den = 4 * N;
    // m0: the first m with R_m >= 0 (levels below start at bin 0, where P0 = P1 = 0).
    const std::uint64_t t = (2 * N + v - 1) / v;  // ceil(2N / v)
    const std::uint64_t m0 = (t + 2) / 2;         // the least m with 2m - 1 >= t
    const std::uint64_t step = 2 * v;             // R_{m+1} - R_m
    const std::uint64_t dq = step / den, dr = step % den;
    std::uint64_t q = 0, r = 0;
    if (m0 < N) {
      const std::uint64_t R0 = (2 * m0 - 1) * v - 2 * N;
      q = R0 / den;
      r = R0 % den;
    }
    // G0 = sum_{m=1}^{N-1} (2m - 1) P0[a_m], G1 = sum_{m=1}^{N-1} P1[a_m].
    u128 g0 = 0, g1 = 0;
    for (std::uint64_t m = m0; m < N; ++m) {
      const std::size_t a = std::size_t(q) + 1;
      g0 += u128(2 * m - 1) * p0[a];
      g1 += p1[a];
      q += dq;
      r += dr;
      const std::uint64_t carry = r >= den ? 1 : 0;
      q += carry;
      r -= carry * den;
    }
    const std::size_t aN = std::size_t(((2 * N - 1) * v - 2 * N) / den) + 1;  // R_N > 0 (v >= 3)
    // Levels n < N, bins [a_n, a_{n+1}): sum c (n v - N u)^2 = v^2 sum n^2 dP0 - 2 N v sum n dP1
    // + N^2 P2[a_N], the first two sums rearranged (Abel summation) into G0 and G1.
    const u128 vv = u128(v) * v;
    const u128 e_low = vv * (u128((N - 1) * (N - 1)) * p0[aN] - g0) -
                       u128(2 * N * v) * (u128(N - 1) * p1[aN] - g1) + u128(N * N) * p2[aN];
    // Level N, bins [a_N, B): D = N (v - u), so sum c D^2 = N^2 sum c (v - u)^2.
    const u128 e_top = vv * (p0[std::size_t(B)] - p0[aN]) -
                       u128(2 * v) * (p1[std::size_t(B)] - p1[aN]) + (p2[std::size_t(B)] - p2[aN]);
    const double f = w / (2.0 * qmax);
    const double h = w / 2.0;
    return (double(e_low) * (f * f) + double(e_top) * (h * h)) / double(B);
  }
#endif

  /// Direct sum over the non-empty bins (used when qmax is large against the bin count).
  double score_bins(std::int32_t i) const noexcept {
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

}  // namespace

choice search_mse(const search_task& task, std::uint64_t T, double* curve, std::int64_t ncand,
                  int threads) {
  const search_options& o = task.opts;
  const std::uint64_t* counts = task.h_counts;
  const std::int32_t B = task.spec.bins;
  const double w = double(task.spec.hi) / double(B);
  mse_state st;
  st.prepare(counts, task.spec, o);
  parallel_blocks(ncand, threads, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t k = b; k < e; ++k)
      curve[k] = st.score(static_cast<std::int32_t>(o.start_bin + k * o.stride));
  });
  std::int64_t best = 0;
  for (std::int64_t k = 1; k < ncand; ++k)
    if (curve[k] < curve[best]) best = k;  // the first minimum wins
  choice ch;
  ch.index = static_cast<std::int32_t>(o.start_bin + best * o.stride);
  ch.score = curve[best];
  ch.amax = (double(ch.index) + 0.5) * w;
  ch.clipped = T > 0 ? mass(counts, ch.index + 1, B) / double(T) : 0.0;
  return ch;
}

}  // namespace klcal::cpu::detail
