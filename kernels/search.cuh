// Device code of the GPU threshold search: task descriptors, workspace layout, candidate scores.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "klcal/internal/gpu_policy.hpp"
#include "klcal/types.hpp"

namespace klcal::detail::search {

/// One task as the kernels see it: the host search_task plus what the dispatcher derived from it
/// (levels, qmax, candidate count, where its workspace area starts). Lives in kernel parameters.
struct task_desc {
  const std::uint64_t* counts;
  double* curve;            ///< optional, num_candidates entries
  std::uint64_t pct_units;  ///< percentile only: P of numerics.md 4, llround(p * 1e9)
  std::uint64_t ws_offset;  ///< byte offset of this task's area in the (aligned) workspace
  std::int32_t bins;
  float lo;
  float hi;
  float max_abs;
  std::int32_t start_bin;
  std::int32_t stride;
  std::int32_t num_candidates;
  std::int32_t num_blocks;        ///< candidate blocks of the candidates kernel (= partial results)
  std::int32_t levels;            ///< L of numerics.md 2 (2^(bits-1) or 2^bits) or 3 (2^bits - 1)
  std::int32_t qmax;              ///< numerics.md 5.1
  std::uint8_t meth;              ///< klcal::method
  std::uint8_t kind;              ///< klcal::layout
  std::uint8_t tensorrt_entropy;  ///< entropy with the tensorrt rule set (prefix sums of c ln c)
  std::uint8_t mxnet_entropy;     ///< entropy with the mxnet rule set
  std::uint8_t copy_next;         ///< tensorrt entropy with zero_bin_policy::copy_next
};

/// The tasks of one launch. Kernel parameters (CUDA 12.1+ on sm_70+ accepts up to 32764 bytes)
/// carry them, so the caller's host array may be freed as soon as search() returns and the
/// launches can be captured into a CUDA graph (a pageable host-to-device copy could not be).
/// Two capacities are instantiated so that a call with a few tasks does not push ~30 KB of
/// parameters through every one of its launches.
template <int Capacity>
struct chunk {
  std::int32_t count;       ///< tasks in this chunk
  std::int32_t first_task;  ///< index of tasks[0] in the caller's array (= its result slot)
  /// block_begin[t] = first candidate block of task t; block_begin[count] = the grid size.
  std::int32_t block_begin[Capacity + 1];
  task_desc tasks[Capacity];
};
static_assert(sizeof(chunk<search_tasks_per_launch>) <= 32000,
              "kernel parameters are limited to 32764 bytes");

/// Per-task totals written by the prefix kernel and read by the finalize kernel.
struct task_meta {
  std::uint64_t total;     ///< T over the original counts
  std::uint64_t zero_bin;  ///< count of the bin holding 0 (numerics.md 5.3)
  std::uint64_t c0;        ///< original c[0]
  std::uint64_t c1;        ///< original c[1]
};

/// One partial argmin: the best (value, candidate) of a block; candidate -1 means "none".
struct partial {
  double value;
  std::int32_t candidate;
  std::int32_t pad;
};

constexpr std::uint64_t ws_align = 256;

__host__ __device__ constexpr std::uint64_t align_up(std::uint64_t x, std::uint64_t a) {
  return (x + a - 1) / a * a;
}

/// Byte offsets inside one task's workspace area. The prefix arrays have bins + 1 entries:
/// S(k) (uint64), N(k) (uint32) and, for tensorrt entropy only, H(k) (fp64) of numerics.md 2.1.
struct area_layout {
  std::uint64_t meta, s, n, h, partials, bytes;
};

__host__ __device__ constexpr area_layout layout_of(std::int64_t bins, bool has_h,
                                                    std::int64_t num_blocks) {
  area_layout a{};
  const auto entries = static_cast<std::uint64_t>(bins) + 1;
  a.meta = 0;
  a.s = align_up(sizeof(task_meta), ws_align);
  a.n = a.s + align_up(entries * sizeof(std::uint64_t), ws_align);
  a.h = a.n + align_up(entries * sizeof(std::uint32_t), ws_align);
  a.partials = a.h + (has_h ? align_up(entries * sizeof(double), ws_align) : 0);
  a.bytes =
      a.partials + align_up(static_cast<std::uint64_t>(num_blocks) * sizeof(partial), ws_align);
  return a;
}

/// Typed pointers into one task's area.
struct area {
  task_meta* meta;
  std::uint64_t* s;
  std::uint32_t* n;
  double* h;
  partial* partials;
};

__device__ inline area area_of(const task_desc& t, unsigned char* ws) {
  const area_layout l = layout_of(t.bins, t.tensorrt_entropy != 0, t.num_blocks);
  unsigned char* base = ws + t.ws_offset;
  return area{reinterpret_cast<task_meta*>(base + l.meta),
              reinterpret_cast<std::uint64_t*>(base + l.s),
              reinterpret_cast<std::uint32_t*>(base + l.n), reinterpret_cast<double*>(base + l.h),
              reinterpret_cast<partial*>(base + l.partials)};
}

/// The preferred of two partials: the smaller value; on equal values the larger candidate when
/// `largest_wins` (tensorrt), else the smaller. This is a total order on (value, candidate), so
/// any reduction tree gives the same winner: the argmin is deterministic by construction.
__host__ __device__ inline partial prefer(const partial& a, const partial& b, bool largest_wins) {
  if (a.candidate < 0) return b;
  if (b.candidate < 0) return a;
  if (a.value < b.value) return a;
  if (b.value < a.value) return b;
  if (largest_wins) return a.candidate > b.candidate ? a : b;
  return a.candidate < b.candidate ? a : b;
}

/// Sum over a warp in a fixed tree (shfl_down), broadcast from lane 0 so that every lane holds
/// the same bits.
__device__ inline double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return __shfl_sync(0xffffffffu, v, 0);
}

/// ceil(a / 2^shift) for non-negative a: the integer-exact shift form of ceil(a / L) for the
/// power-of-two level counts of the tensorrt rule set (no 64-bit division routine).
__device__ inline std::int64_t ceil_shift(std::int64_t a, int shift) {
  return (a + (std::int64_t{1} << shift) - 1) >> shift;
}

/// The value warp_sum() returns when lane l holds leaf(l), computed by one thread: the same
/// shfl_down tree (at offset o, lane l adds lane l + o), walked depth first. The leaves come in
/// the order lane = bitrev5(j), j = 0 .. 31 (the root adds the even lanes' subtree and the odd
/// lanes' one, each of those splits by the next bit, ...); `left[d * stride]` holds the finished
/// left sibling at depth d (five slots of the caller's, in shared memory: five fp64 partials
/// kept in registers would not fit the fused kernel's 64). Every addition has the operands
/// warp_sum() gives it, hence the same bits.
template <class Leaf>
__device__ inline double tree_sum(const Leaf& leaf, double* left, int stride) {
  double x = 0.0;
  for (unsigned j = 0; j < 32; ++j) {
    x = leaf(static_cast<int>(__brev(j) >> 27));
    int depth = 0;  // j completes one subtree per trailing one bit, innermost first
    for (; depth < 5 && ((j >> depth) & 1u) != 0; ++depth) x = left[depth * stride] + x;
    if (depth < 5) left[depth * stride] = x;  // else j = 31 completed the root
  }
  return x;
}

/// How a candidate's 32 lane addends are summed: `warp_sums` by the warp (each lane evaluates its
/// own addend, warp_sum() reduces them, every lane gets the value), `tree_sums` by one thread
/// (it evaluates all 32 in turn, tree_sum() reduces them the same way). Same bits either way.
struct warp_sums {
  int lane;
  template <class Leaf>
  __device__ double operator()(const Leaf& leaf) const {
    return warp_sum(leaf(lane));
  }
  __device__ bool writes_curve() const { return lane == 0; }
};

struct tree_sums {
  double* left;  ///< five slots, `stride` apart (tree_sum)
  int stride;
  template <class Leaf>
  __device__ double operator()(const Leaf& leaf) const {
    return tree_sum(leaf, left, stride);
  }
  __device__ bool writes_curve() const { return true; }
};

/// Lane `lane`'s addend of the tensorrt level sum sum_g M_g ln(M_g / n_g) of candidate i
/// (numerics.md 2.1): levels lane, lane + 32, ... in increasing order. Shared by the warp and
/// the per-thread evaluation, so both round every term and partial sum alike.
__device__ inline double tensorrt_lane_levels(const area& a, std::int32_t levels, int shift,
                                              std::int64_t i, int lane) {
  const std::uint64_t* s = a.s;
  const std::uint32_t* n = a.n;
  double sum = 0.0;
  for (std::int64_t g = lane; g < levels; g += 32) {
    const std::int64_t lo = ceil_shift(g * i, shift);
    const std::int64_t hi = ceil_shift((g + 1) * i, shift);
    const std::uint32_t nonempty = n[hi] - n[lo];
    if (nonempty > 0) {
      const double mass = static_cast<double>(s[hi] - s[lo]);
      sum += mass * log(mass / static_cast<double>(nonempty));
    }
  }
  return sum;
}

/// KL of tensorrt candidate i by the prefix-sum form of numerics.md 2.1, evaluated by a warp
/// or by one thread (`sums`: warp_sums or tree_sums, same bits).
template <class Sums>
__device__ inline double tensorrt_candidate(const task_desc& t, const area& a, std::int64_t i,
                                            const Sums& sums) {
  const std::uint64_t* s = a.s;
  const std::uint32_t* n = a.n;
  const std::int64_t levels = t.levels;
  const int shift = __ffs(t.levels) - 1;  // levels = 2^shift (numerics.md 2: 2^(bits-1) or 2^bits)
  const std::uint64_t total = s[t.bins];
  const std::uint64_t kept = s[i];
  // One bin per level and no tail: Q = P bin for bin, KL is exactly 0 (the direct formula
  // gets exactly 0 too, p_j / q_j = 1). The prefix form would leave rounding noise of either
  // sign there and break the "largest index wins exact ties" rule among these candidates.
  if (levels >= i && kept == total && kept > 0) return 0.0;
  double level_sum = 0.0;  // sum_g M_g ln(M_g / n_g)
  if (levels >= i) {
    // Every level holds at most one bin (j L / i steps by >= 1), so the sum is H(i).
    level_sum = a.h[i];
  } else {
    level_sum = sums([&](int l) { return tensorrt_lane_levels(a, t.levels, shift, i, l); });
  }
  const std::uint64_t tail = total - kept;
  const std::uint64_t last = kept - s[i - 1];
  if (total == 0 || kept == 0 || (last == 0 && tail > 0))
    return __longlong_as_double(0x7ff0000000000000LL);
  const double p_last = static_cast<double>(last + tail);
  double bracket = a.h[i - 1] + (p_last > 0.0 ? p_last * log(p_last) : 0.0) - level_sum;
  if (tail > 0) {
    // Q of the last kept bin: its level's mean (the bin is non-empty here).
    const std::int64_t g = ((i - 1) << shift) / i;
    const std::int64_t lo = ceil_shift(g * i, shift);
    const double q_last = static_cast<double>(kept - s[lo]) / static_cast<double>(n[i] - n[lo]);
    bracket -= static_cast<double>(tail) * log(q_last);
  }
  const double t_prime = static_cast<double>(total);
  return bracket / t_prime + log(static_cast<double>(kept) / t_prime);
}

/// Lane `lane`'s addend of the mse score of a candidate with quantization scale `scale`
/// (numerics.md 4): bins lane, lane + 32, ... Shared by the warp and the per-thread evaluation.
__device__ inline double mse_lane_bins(const task_desc& t, double w, double qmax_value,
                                       double scale, int lane) {
  double sum = 0.0;
  for (std::int64_t k = lane; k < t.bins; k += 32) {
    const std::uint64_t c = t.counts[k];
    if (c == 0) continue;  // contributes exactly 0
    const double m = (static_cast<double>(k) + 0.5) * w;
    double r = rint(__dmul_rn(m, scale));
    r = fmin(fmax(r, -qmax_value), qmax_value);
    const double d = __dsub_rn(__ddiv_rn(r, scale), m);
    sum += static_cast<double>(c) * (d * d);
  }
  return sum;
}

/// Score of mse candidate i (numerics.md 4), evaluated by a warp or by one thread (`sums`:
/// warp_sums or tree_sums, same bits).
template <class Sums>
__device__ inline double mse_candidate(const task_desc& t, std::int64_t i, const Sums& sums) {
  const double w = static_cast<double>(t.hi) / static_cast<double>(t.bins);
  const double qmax_value = static_cast<double>(t.qmax);
  const double a = (static_cast<double>(i) + 0.5) * w;
  const double scale = qmax_value / a;
  const double sum = sums([&](int l) { return mse_lane_bins(t, w, qmax_value, scale, l); });
  return sum / static_cast<double>(t.bins);
}

/// P[k] and Q[k] of mxnet half-width i (numerics.md 3), O(1) from the prefix sums.
struct mxnet_window {
  const std::uint64_t* c;  ///< original counts
  const std::uint64_t* s;  ///< S(k)
  const std::uint32_t* n;  ///< N(k)
  std::int64_t first;      ///< z - i, the first window bin
  std::int64_t size;       ///< s = 2i + 1
  std::int64_t per_level;  ///< m = s / L
  std::int64_t levels;     ///< L
  std::uint64_t total;     ///< T

  __device__ std::uint64_t p(std::int64_t k) const {
    if (k == 0) return s[first + 1];  // left outliers and the first window bin
    std::uint64_t v = c[first + k];
    if (k == size - 1) v += total - s[first + size];  // right outliers
    return v;
  }
  /// Q[k] given P[k] (W[0] = 0: the first window bin never reaches Q).
  __device__ double q(std::int64_t k, std::uint64_t pk) const {
    if (pk == 0) return 0.0;
    const std::int64_t g = k / per_level < levels - 1 ? k / per_level : levels - 1;
    const std::int64_t lo = g * per_level > 1 ? g * per_level : 1;  // skip W[0]
    const std::int64_t hi = g == levels - 1 ? size : (g + 1) * per_level;
    if (hi <= lo) return 0.0;
    const std::uint32_t nonzero = n[first + hi] - n[first + lo];
    if (nonzero == 0) return 0.0;
    return static_cast<double>(s[first + hi] - s[first + lo]) / static_cast<double>(nonzero);
  }
};

}  // namespace klcal::detail::search
