// CPU mse search (numerics.md 4): fake-quantization error of the bin centres per candidate.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_search_math.hpp"
#include "cpu_search_methods.hpp"
#include "klcal/cpu.hpp"

namespace klcal::cpu::detail {
namespace {

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
