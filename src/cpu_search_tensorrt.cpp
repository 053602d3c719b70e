// CPU tensorrt entropy search: the O(levels)-per-candidate prefix-sum form of numerics.md 2.1.
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu_search_math.hpp"
#include "cpu_search_methods.hpp"
#include "klcal/cpu.hpp"

namespace klcal::cpu::detail {
namespace {

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
    return snap_kl(bracket / double(T) + std::log(double(Si) / double(T)));
  }

  std::int32_t candidate(std::int64_t k) const noexcept {
    return static_cast<std::int32_t>(start + k * stride);
  }
};

}  // namespace

choice search_tensorrt(const search_task& task, std::uint64_t T, double* curve, std::int64_t ncand,
                       int threads) {
  const std::uint64_t* counts = task.h_counts;
  const std::int32_t B = task.spec.bins;
  const double w = double(task.spec.hi) / double(B);
  trt_state st;
  st.prepare(counts, B, task.opts);
  parallel_blocks(ncand, threads, [&](std::int64_t b, std::int64_t e) {
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
  choice ch;
  ch.index = st.candidate(best);
  ch.score = curve[best];
  ch.all_inf = std::isinf(bv);
  ch.amax = double(ch.index) * w;
  ch.clipped = T > 0 ? mass(counts, ch.index, B) / double(T) : 0.0;
  return ch;
}

}  // namespace klcal::cpu::detail
