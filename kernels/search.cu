// GPU threshold search (klcal::search): fused single-launch kernel for small histograms, prefix,
// candidate and finalize kernels for the rest, plus dispatch.
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cub/block/block_scan.cuh>

#include "func_attributes.cuh"
#include "klcal/internal/cuda_status.hpp"
#include "klcal/internal/gpu_policy.hpp"
#include "klcal/internal/numerics.hpp"
#include "klcal/internal/search_detail.hpp"
#include "klcal/threshold.hpp"
#include "klcal/types.hpp"
#include "search.cuh"

namespace klcal::detail::search {
namespace {

constexpr int threads = search_block_threads;
constexpr int warps_per_block = threads / 32;
constexpr double mxnet_eps = 1e-4;  // numerics.md 3

__device__ inline double pos_inf() {
  return __longlong_as_double(0x7ff0000000000000LL);
}

/// Elements of the prefix scans of numerics.md 2.1: S and N (integers, exact in any order) in
/// one block scan, H (fp64) in a second one. Two scans instead of one over (S, H, N) keep a
/// thread's items in fewer registers; the H scan is the same fixed tree either way (the same
/// BlockScan, items per thread and block size, its operator applied to the fp64 part alone),
/// so its sums keep their bits.
struct count_item {
  std::uint64_t s;
  std::uint32_t n;
};

struct count_add {
  __device__ count_item operator()(const count_item& a, const count_item& b) const {
    return count_item{a.s + b.s, a.n + b.n};
  }
};

struct fp64_add {
  __device__ double operator()(double a, double b) const { return a + b; }
};

/// The bin that holds the value 0 (numerics.md 5.3), by the binning rules of numerics.md 1.2.
__device__ inline std::int64_t zero_bin_index(const task_desc& t) {
  return klcal::detail::zero_bin_index(static_cast<layout>(t.kind), t.bins, t.lo, t.hi);
}

/// S(k), N(k) (and H(k) for tensorrt entropy) for k = 0 .. bins into `a`, tile by tile with one
/// block scan, plus the totals of task_meta (written by thread 0 after the last tile; callers
/// that read them in the same block must __syncthreads() first). Shared by the prefix kernel
/// (arrays in global memory) and the fused kernel (arrays in shared memory): the same code and
/// block size give the same summation tree, so both paths produce the same bits.
__device__ void build_prefix(const task_desc& t, const area& a) {
  const std::int64_t bins = t.bins;
  const std::uint64_t c0 = t.counts[0];
  const std::uint64_t c1 = t.counts[1];
  const bool with_h = t.tensorrt_entropy != 0;
  using count_scan_t = cub::BlockScan<count_item, threads>;
  using h_scan_t = cub::BlockScan<double, threads>;
  __shared__ union {
    typename count_scan_t::TempStorage count;
    typename h_scan_t::TempStorage h;
  } temp;
  constexpr int items = search_prefix_items;
  constexpr std::int64_t tile = std::int64_t{threads} * items;
  count_item running{0, 0};
  double running_h = 0.0;
  for (std::int64_t base = 0; base < bins; base += tile) {
    const std::int64_t first = base + std::int64_t{threadIdx.x} * items;
    {
      count_item v[items];
#pragma unroll
      for (int k = 0; k < items; ++k) {
        const std::int64_t j = first + k;
        std::uint64_t c = 0;
        if (j < bins) c = (j == 0 && t.copy_next) ? c1 : t.counts[j];
        v[k].s = c;
        v[k].n = c != 0 ? 1u : 0u;
      }
      count_item aggregate;
      count_scan_t(temp.count).ExclusiveScan(v, v, count_item{0, 0}, count_add{}, aggregate);
#pragma unroll
      for (int k = 0; k < items; ++k) {
        const std::int64_t j = first + k;
        if (j < bins) {
          a.s[j] = running.s + v[k].s;
          a.n[j] = running.n + v[k].n;
        }
      }
      running = count_add{}(running, aggregate);
      __syncthreads();  // temp is reused by the next scan
    }
    if (with_h) {  // uniform per block
      double v[items];
#pragma unroll
      for (int k = 0; k < items; ++k) {
        const std::int64_t j = first + k;
        std::uint64_t c = 0;
        if (j < bins) c = (j == 0 && t.copy_next) ? c1 : t.counts[j];
        const double cd = static_cast<double>(c);
        v[k] = c > 1 ? cd * log(cd) : 0.0;  // 0 ln 0 = 1 ln 1 = 0
      }
      double aggregate;
      h_scan_t(temp.h).ExclusiveScan(v, v, 0.0, fp64_add{}, aggregate);
#pragma unroll
      for (int k = 0; k < items; ++k) {
        const std::int64_t j = first + k;
        if (j < bins) a.h[j] = running_h + v[k];
      }
      running_h = fp64_add{}(running_h, aggregate);
      __syncthreads();  // temp is reused by the next tile
    }
  }
  if (threadIdx.x == 0) {
    a.s[bins] = running.s;
    a.n[bins] = running.n;
    if (with_h) a.h[bins] = running_h;
    task_meta m;
    m.total = t.copy_next ? running.s - c1 + c0 : running.s;
    m.zero_bin = t.counts[zero_bin_index(t)];
    m.c0 = c0;
    m.c1 = c1;
    *a.meta = m;
  }
}

/// One block per task: the prefix arrays of build_prefix() in the task's workspace area.
/// The arrays live in global memory (L2-resident for the usual sizes) so that all candidate
/// blocks of a histogram share one copy; any bin count up to 2^24 works the same way.
template <int Capacity>
__global__ void __launch_bounds__(threads)
    search_prefix_kernel(const chunk<Capacity> ch, unsigned char* ws) {
  const task_desc t = ch.tasks[blockIdx.x];
  build_prefix(t, area_of(t, ws));
}

/// Block-wide sum of up to three values (a double and two counters) in a fixed order: a
/// shfl_down tree per warp, then every thread adds the warp totals in warp order, so all
/// threads get the same bits. `shared` holds one entry per warp and is free again on return.
struct block_sums {
  double x;
  std::int32_t a;
  std::int32_t b;
};

__device__ inline block_sums block_sum(block_sums v, block_sums* shared) {
  for (int offset = 16; offset > 0; offset /= 2) {
    v.x += __shfl_down_sync(0xffffffffu, v.x, offset);
    v.a += __shfl_down_sync(0xffffffffu, v.a, offset);
    v.b += __shfl_down_sync(0xffffffffu, v.b, offset);
  }
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  block_sums total = shared[0];
  for (int w = 1; w < warps_per_block; ++w) {
    total.x += shared[w].x;
    total.a += shared[w].a;
    total.b += shared[w].b;
  }
  __syncthreads();  // shared may be reused by the caller
  return total;
}

/// Most mxnet levels whose Q values fit the candidate block's shared-memory table (32 KiB of
/// fp64): 255 for int8, up to 12 bits; more levels (13..16 bits) take the per-element path.
constexpr std::int64_t mxnet_table_levels = 4096;

/// One mxnet candidate per block (numerics.md 3): pass 1 counts zeros and sums Q, pass 2 sums
/// the smoothed KL terms; both are block reductions in a fixed order. Up to mxnet_table_levels
/// levels, pass 1 is O(L) from the prefix sums (per level: its Q value M_g / n_g, into a shared
/// table, and how many of its P entries are non-zero) and pass 2 reads the table, rewritten as
/// one factor per level (sum_q / (sum_p q_k)), so an element costs a load, a multiply and a log,
/// with no division. More levels: every P[k], Q[k] from the prefix sums, element by element.
__device__ void mxnet_block(const task_desc& t, const area& a, std::int32_t candidate) {
  __shared__ block_sums scratch[warps_per_block];
  __shared__ double table[mxnet_table_levels];
  const std::int64_t levels = t.levels;
  const std::int64_t z = t.bins / 2;
  const std::int64_t i = levels / 2 + candidate;
  mxnet_window w;
  w.c = t.counts;
  w.s = a.s;
  w.n = a.n;
  w.first = z - i;
  w.size = 2 * i + 1;
  w.per_level = w.size / levels;
  w.levels = levels;
  w.total = a.s[t.bins];
  const bool tabled = levels <= mxnet_table_levels;  // uniform per block

  block_sums acc{0.0, 0, 0};  // sum Q, zeros of P, zeros of Q
  if (tabled) {
    // Level g covers window entries [g m, end); M_g and n_g skip W[0] (numerics.md 3).
    const std::uint64_t* s = w.s + w.first;
    const std::uint32_t* n = w.n + w.first;
    const std::uint64_t* c = w.c + w.first;
    const std::int64_t last = w.size - 1;
    for (std::int64_t g = threadIdx.x; g < levels; g += threads) {
      const std::int64_t begin = g * w.per_level;
      const std::int64_t end = g == levels - 1 ? w.size : begin + w.per_level;
      const std::int64_t lo = begin > 1 ? begin : 1;
      const std::uint32_t nonzero = end > lo ? n[end] - n[lo] : 0u;
      const double q =
          nonzero == 0 ? 0.0 : static_cast<double>(s[end] - s[lo]) / static_cast<double>(nonzero);
      // Non-zero P entries of the level: N over [begin, end), with P[0] and P[s-1] (which
      // carry the outliers) in place of their bins.
      std::int64_t p_nonzero = n[end] - n[begin];
      if (begin == 0) p_nonzero += (w.p(0) != 0 ? 1 : 0) - (c[0] != 0 ? 1 : 0);
      if (end == w.size) p_nonzero += (w.p(last) != 0 ? 1 : 0) - (c[last] != 0 ? 1 : 0);
      const std::int64_t width = end - begin;
      table[g] = q;
      acc.x += static_cast<double>(p_nonzero) * q;
      acc.a += static_cast<std::int32_t>(width - p_nonzero);
      acc.b += static_cast<std::int32_t>(q == 0.0 ? width : width - p_nonzero);
    }
  } else {
    for (std::int64_t k = threadIdx.x; k < w.size; k += threads) {
      const std::uint64_t p = w.p(k);
      const double q = w.q(k, p);
      acc.x += q;
      acc.a += p == 0 ? 1 : 0;
      acc.b += q == 0.0 ? 1 : 0;
    }
  }
  acc = block_sum(acc, scratch);  // its barriers also publish the table
  // Every thread derives the same smoothing constants from the same totals.
  const double size = static_cast<double>(w.size);
  const double nonzero_p = size - acc.a;
  const double nonzero_q = size - acc.b;
  const double dp = nonzero_p > 0 ? mxnet_eps * acc.a / nonzero_p : 0.0;
  const double dq = nonzero_q > 0 ? mxnet_eps * acc.b / nonzero_q : 0.0;
  const bool finite = nonzero_p > 0 && nonzero_q > 0 && dp < 1.0 && dq < 1.0;
  const double sum_q = acc.x;
  const double sum_p = static_cast<double>(w.total);
  block_sums kl{0.0, 0, 0};
  if (finite && tabled) {  // uniform per block
    // p_k / q_k = (P[k] - dp) * f_g with f_g = sum_q / (sum_p (Q_g - dq)), or
    // sum_q / (sum_p eps) where Q_g = 0; P[k] = 0 (then Q[k] = 0 too) gives the constant ratio
    // sum_q / sum_p, added once for all zeros below. 1 / sum_p is factored out of the sum.
    const double ratio = sum_q / sum_p;
    for (std::int64_t g = threadIdx.x; g < levels; g += threads) {
      const double q = table[g];
      table[g] = ratio / (q == 0.0 ? mxnet_eps : q - dq);
    }
    __syncthreads();
    // Level of k = threadIdx.x + j * threads, stepped without a division per element.
    const std::int32_t m = static_cast<std::int32_t>(w.per_level);
    const std::int32_t top = static_cast<std::int32_t>(levels - 1);
    const std::int32_t step_g = threads / m;
    const std::int32_t step_r = threads % m;
    std::int32_t g = static_cast<std::int32_t>(threadIdx.x) / m;
    std::int32_t r = static_cast<std::int32_t>(threadIdx.x) % m;
    for (std::int64_t k = threadIdx.x; k < w.size; k += threads) {
      const std::uint64_t p = w.p(k);
      if (p != 0) {
        const double x = static_cast<double>(p) - dp;
        kl.x += x * log(x * table[g < top ? g : top]);
      }
      g += step_g;
      r += step_r;
      if (r >= m) {
        r -= m;
        ++g;
      }
    }
    kl = block_sum(kl, scratch);
    kl.x = (kl.x + static_cast<double>(acc.a) * mxnet_eps * log(ratio)) / sum_p;
  } else if (finite) {  // uniform per block
    for (std::int64_t k = threadIdx.x; k < w.size; k += threads) {
      const std::uint64_t p = w.p(k);
      const double q = w.q(k, p);
      const double pk = (p == 0 ? mxnet_eps : static_cast<double>(p) - dp) / sum_p;
      const double qk = (q == 0.0 ? mxnet_eps : q - dq) / sum_q;
      kl.x += pk * log(pk / qk);
    }
    kl = block_sum(kl, scratch);
  }
  if (threadIdx.x == 0) {
    const double v = finite ? snap_kl(kl.x) : pos_inf();
    if (t.curve != nullptr) t.curve[candidate] = v;
    a.partials[candidate] = partial{isnan(v) ? pos_inf() : v, candidate, 0};
  }
}

/// Candidate k (0-based) of a tensorrt entropy or mse task, evaluated by one warp (`sums` =
/// warp_sums, every lane gets the same result) or by the calling thread alone (tree_sums): its
/// score, written to the curve when asked for, as a partial argmin (NaN would count as +inf).
/// Both forms give the same bits; the candidates kernel uses the warp form, the fused kernel the
/// per-thread one.
template <class Sums>
__device__ inline partial candidate(const task_desc& t, const area& a, std::int64_t k,
                                    const Sums& sums) {
  const std::int64_t i = t.start_bin + k * t.stride;
  const double v =
      t.tensorrt_entropy ? snap_kl(tensorrt_candidate(t, a, i, sums)) : mse_candidate(t, i, sums);
  if (t.curve != nullptr && sums.writes_curve()) t.curve[k] = v;
  return partial{isnan(v) ? pos_inf() : v, static_cast<std::int32_t>(k), 0};
}

/// Candidate blocks of every task of the chunk: tensorrt entropy and mse give each warp one
/// candidate (O(levels) resp. O(bins) work) and reduce the block's warps to one partial argmin;
/// mxnet gives each block one candidate. Writes the curve when asked for.
template <int Capacity>
__global__ void __launch_bounds__(threads)
    search_candidates_kernel(const chunk<Capacity> ch, unsigned char* ws) {
  // The task of this block: the last one whose first block is <= blockIdx.x (tasks without
  // candidate blocks share their begin with the next task and are never selected).
  const std::int32_t b = static_cast<std::int32_t>(blockIdx.x);
  int lo = 0, hi = ch.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (ch.block_begin[mid] <= b) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const task_desc t = ch.tasks[lo];
  const area a = area_of(t, ws);
  const std::int32_t local = b - ch.block_begin[lo];
  if (t.mxnet_entropy) {  // uniform per block
    mxnet_block(t, a, local);
    return;
  }
  __shared__ partial best[warps_per_block];
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const std::int64_t k = std::int64_t{local} * warps_per_block + warp;
  partial mine{0.0, -1, 0};
  if (k < t.num_candidates) mine = candidate(t, a, k, warp_sums{lane});  // uniform per warp
  if (lane == 0) best[warp] = mine;
  __syncthreads();
  if (threadIdx.x == 0) {
    partial r = best[0];
    for (int w = 1; w < warps_per_block; ++w) r = prefer(r, best[w], t.tensorrt_entropy != 0);
    a.partials[local] = r;
  }
}

/// a * b >= c * d for unsigned 64-bit operands, exactly: the 128-bit products compared as
/// (high, low) word pairs.
__device__ inline bool product_at_least(std::uint64_t a, std::uint64_t b, std::uint64_t c,
                                        std::uint64_t d) {
  const std::uint64_t ab_hi = __umul64hi(a, b), cd_hi = __umul64hi(c, d);
  return ab_hi != cd_hi ? ab_hi > cd_hi : a * b >= c * d;
}

/// The search_result of numerics.md 5 for a task, given its prefix sums S, its totals and the
/// winning candidate (ignored by percentile and max). One thread; shared by the finalize kernel
/// and the fused kernel.
__device__ search_result finalize(const task_desc& t, const task_meta& m, const std::uint64_t* s,
                                  const partial& best) {
  search_result r{};
  if (m.total == m.zero_bin) {  // empty or all-zero: numerics.md 5.3
    r.degenerate = true;
    return r;
  }
  const std::int64_t bins = t.bins;
  const double w = static_cast<double>(t.hi) / static_cast<double>(bins);
  const double total = static_cast<double>(m.total);
  switch (static_cast<method>(t.meth)) {
    case method::max:
      r.amax = static_cast<double>(t.max_abs);
      r.index = static_cast<std::int32_t>(bins);
      break;
    case method::percentile: {
      // First k with 100e9 S(k+1) >= P T, exactly (monotone in k, so a binary search finds it).
      std::int64_t lo = 0, hi = bins - 1;
      while (lo < hi) {
        const std::int64_t mid = (lo + hi) / 2;
        if (product_at_least(100'000'000'000ULL, s[mid + 1], t.pct_units, m.total)) {
          hi = mid;
        } else {
          lo = mid + 1;
        }
      }
      r.index = static_cast<std::int32_t>(lo);
      r.amax = static_cast<double>(lo) * w;
      r.clipped_fraction = static_cast<double>(m.total - s[lo]) / total;
      break;
    }
    case method::mse: {
      const std::int64_t i = t.start_bin + std::int64_t{best.candidate} * t.stride;
      r.index = static_cast<std::int32_t>(i);
      r.amax = (static_cast<double>(i) + 0.5) * w;
      r.score = best.value;
      r.clipped_fraction = static_cast<double>(m.total - s[i + 1]) / total;
      break;
    }
    case method::entropy: {
      std::int64_t i = 0;
      if (t.mxnet_entropy) {
        const std::int64_t z = bins / 2;
        i = t.levels / 2 + best.candidate;
        r.amax = (static_cast<double>(i) + 0.5) *
                 (2.0 * static_cast<double>(t.hi) / static_cast<double>(bins));
        r.clipped_fraction = static_cast<double>(m.total - (s[z + i + 1] - s[z - i])) / total;
      } else {
        i = t.start_bin + std::int64_t{best.candidate} * t.stride;
        r.amax = static_cast<double>(i) * w;
        // S was taken over the copy_next-modified counts; bins >= 1 differ by c1 - c0.
        std::uint64_t kept = s[i];
        if (t.copy_next) kept = kept - m.c1 + m.c0;
        r.clipped_fraction = static_cast<double>(m.total - kept) / total;
      }
      r.index = static_cast<std::int32_t>(i);
      r.score = best.value;
      r.degenerate = isinf(best.value);
      break;
    }
  }
  r.scale = quant_scale(r.amax, t.qmax);
  return r;
}

/// One block per task: the argmin over the task's partials (fixed tree; the order does not
/// matter anyway, see prefer()), then finalize().
template <int Capacity>
__global__ void __launch_bounds__(threads)
    search_finalize_kernel(const chunk<Capacity> ch, unsigned char* ws, search_result* results) {
  const task_desc t = ch.tasks[blockIdx.x];
  const area a = area_of(t, ws);
  const bool largest_wins = t.tensorrt_entropy != 0;
  __shared__ partial red[threads];
  partial mine{0.0, -1, 0};
  for (std::int32_t b = threadIdx.x; b < t.num_blocks; b += threads)
    mine = prefer(mine, a.partials[b], largest_wins);
  red[threadIdx.x] = mine;
  __syncthreads();
  for (int step = threads / 2; step > 0; step /= 2) {
    if (static_cast<int>(threadIdx.x) < step)
      red[threadIdx.x] = prefer(red[threadIdx.x], red[threadIdx.x + step], largest_wins);
    __syncthreads();
  }
  if (threadIdx.x == 0) results[ch.first_task + blockIdx.x] = finalize(t, *a.meta, a.s, red[0]);
}

/// Bytes of dynamic shared memory the fused kernel needs for a task of `bins` bins: S (uint64),
/// H (fp64) and N (uint32), bins + 1 entries each.
__host__ __device__ constexpr std::uint64_t fused_smem_bytes(std::int64_t bins) {
  const auto entries = static_cast<std::uint64_t>(bins) + 1;
  return 2 * align_up(entries * sizeof(std::uint64_t), 16) +
         align_up(entries * sizeof(std::uint32_t), 16);
}

/// Whether a task may run in the fused kernel: its prefix arrays fit in shared memory, and the
/// method evaluates candidates per warp (mxnet's one-block-per-candidate stays multi-kernel).
constexpr bool fused_eligible(const task_desc& d) {
  return d.mxnet_entropy == 0 && d.bins <= search_fused_max_bins;
}

/// The whole search of small tasks in one launch, one block per task: build_prefix() into
/// shared memory, then every thread evaluates candidates threadIdx.x, threadIdx.x + threads, ...
/// on its own (candidate() with tree_sums: the candidates kernel's warp arithmetic, replayed by one
/// thread, so the same scores and curve bits) and keeps its best by prefer(); the bests are
/// reduced per warp (shuffles) and the warps' in warp order, and thread 0 runs finalize().
/// prefer() is a total order, so the winner equals the multi-kernel path's. One thread per
/// candidate instead of one warp per candidate: a candidate's scalar part (the tail terms: three
/// logs, three divisions) runs once instead of on all 32 lanes, and no shuffles per candidate.
/// 4 blocks per SM caps it at 64 registers (without spills: scripts/sass-report.sh checks); the
/// cap changes register allocation only, never the arithmetic, so the bits stay those of the
/// multi-kernel path.
template <int Capacity>
__global__ void __launch_bounds__(threads, 4)
    search_fused_kernel(const chunk<Capacity> ch, search_result* results) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ task_meta meta;
  __shared__ partial best[warps_per_block];
  __shared__ double tree_left[5][threads];  // tree_sum()'s partial sums, per thread
  const task_desc t = ch.tasks[blockIdx.x];
  const auto entries = static_cast<std::uint64_t>(t.bins) + 1;
  const std::uint64_t s_bytes = align_up(entries * sizeof(std::uint64_t), 16);
  area a;
  a.meta = &meta;
  a.s = reinterpret_cast<std::uint64_t*>(smem);
  a.h = reinterpret_cast<double*>(smem + s_bytes);
  a.n = reinterpret_cast<std::uint32_t*>(smem + 2 * s_bytes);
  a.partials = nullptr;
  build_prefix(t, a);
  __syncthreads();  // the arrays and meta are complete
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const bool largest_wins = t.tensorrt_entropy != 0;
  partial mine{0.0, -1, 0};
  if (t.tensorrt_entropy || t.meth == static_cast<std::uint8_t>(method::mse)) {  // uniform
    const tree_sums sums{&tree_left[0][threadIdx.x], threads};
    for (std::int32_t k = threadIdx.x; k < t.num_candidates; k += threads)
      mine = prefer(mine, candidate(t, a, k, sums), largest_wins);
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    partial other;
    other.value = __shfl_down_sync(0xffffffffu, mine.value, offset);
    other.candidate = __shfl_down_sync(0xffffffffu, mine.candidate, offset);
    other.pad = 0;
    mine = prefer(mine, other, largest_wins);
  }
  if (lane == 0) best[warp] = mine;
  __syncthreads();
  if (threadIdx.x == 0) {
    partial r = best[0];
    for (int w = 1; w < warps_per_block; ++w) r = prefer(r, best[w], largest_wins);
    results[ch.first_task + blockIdx.x] = finalize(t, meta, a.s, r);
  }
}

/// The kernel-side descriptor of one host task (without its workspace offset) and the size of
/// its workspace area. Precondition: validate(task.spec, task.opts).ok().
task_desc describe(const search_task& task, std::uint64_t* area_bytes) noexcept {
  const search_options& o = task.opts;
  task_desc d{};
  d.counts = task.d_counts;
  d.curve = task.d_curve;
  // numerics.md 4: p read as a decimal with at most 9 fractional digits (validated to [0, 100]
  // for the percentile method only, so other methods do not read it).
  if (o.meth == method::percentile)
    d.pct_units = static_cast<std::uint64_t>(std::llround(o.percentile * 1e9));
  d.bins = task.spec.bins;
  d.lo = task.spec.lo;
  d.hi = task.spec.hi;
  d.max_abs = task.max_abs;
  d.start_bin = o.start_bin;
  d.stride = o.stride;
  d.meth = static_cast<std::uint8_t>(o.meth);
  d.kind = static_cast<std::uint8_t>(task.spec.kind);
  const bool entropy = o.meth == method::entropy;
  d.mxnet_entropy = entropy && o.rules == rule_set::mxnet;
  d.tensorrt_entropy = entropy && !d.mxnet_entropy;
  d.copy_next = d.tensorrt_entropy && o.zero_bin == zero_bin_policy::copy_next;
  d.levels = d.mxnet_entropy ? (1 << o.bits) - 1 : 1 << (o.is_unsigned ? o.bits : o.bits - 1);
  d.qmax = d.mxnet_entropy ? (1 << (o.bits - 1)) - 1 : klcal::qmax(o);
  const std::int64_t candidates = candidate_count(task.spec, o);
  d.num_candidates = static_cast<std::int32_t>(candidates);
  std::int64_t blocks = 0;
  if (d.mxnet_entropy) {
    blocks = candidates;
  } else if (d.tensorrt_entropy || o.meth == method::mse) {
    blocks = (candidates + warps_per_block - 1) / warps_per_block;
  }
  d.num_blocks = static_cast<std::int32_t>(blocks);
  *area_bytes = layout_of(d.bins, d.tensorrt_entropy != 0, blocks).bytes;
  return d;
}

template <int Capacity>
status launch(const chunk<Capacity>& ch, std::int32_t candidate_blocks, unsigned char* ws,
              search_result* d_results, cudaStream_t stream) noexcept {
  search_prefix_kernel<Capacity><<<ch.count, threads, 0, stream>>>(ch, ws);
  KLCAL_TRY(cudaGetLastError());
  if (candidate_blocks > 0) {
    search_candidates_kernel<Capacity><<<candidate_blocks, threads, 0, stream>>>(ch, ws);
    KLCAL_TRY(cudaGetLastError());
  }
  search_finalize_kernel<Capacity><<<ch.count, threads, 0, stream>>>(ch, ws, d_results);
  KLCAL_TRY(cudaGetLastError());
  return errc::ok;
}

/// What the automatic path needs to know about the current device, looked up once per device
/// and process (cudaFuncSetAttribute included), not per call.
struct fused_device_info {
  bool available = false;  ///< the fused kernel fits at its largest size (opted in)
  int sms = 1;             ///< multiprocessors: a fused group needs this many tasks to fill them
};

/// Whether the current device can run the fused kernel at the largest size it is used for (if
/// so the kernel is opted in to that much dynamic shared memory, always the same value, so
/// concurrent calls never lower it under each other's launches), and its SM count. Cached per
/// device; two threads racing on the first call compute and store the same value.
template <int Capacity>
status fused_device(fused_device_info* info) noexcept {
  static std::atomic<int> cache[max_tracked_devices] = {};  // 0: unknown, else sms * 2 + avail
  int device = 0;
  KLCAL_TRY(cudaGetDevice(&device));
  const bool tracked = device >= 0 && device < max_tracked_devices;
  if (tracked) {
    const int c = cache[device].load(std::memory_order_acquire);
    if (c != 0) {
      info->available = (c & 1) != 0;
      info->sms = c >> 1;
      return errc::ok;
    }
  }
  int optin = 0;
  int sms = 1;
  KLCAL_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  KLCAL_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  constexpr auto bytes = fused_smem_bytes(search_fused_max_bins);
  // Dynamic plus the kernel's static shared memory (scan storage, totals, warp bests and the
  // 10 KiB of tree_sum slots) must fit in the opt-in limit.
  cudaFuncAttributes attr{};
  KLCAL_TRY(cudaFuncGetAttributes(&attr, search_fused_kernel<Capacity>));
  bool available = bytes + attr.sharedSizeBytes <= static_cast<std::uint64_t>(optin);
  if (available)
    KLCAL_CHECK(
        raise_dynamic_smem_once<search_fused_kernel<Capacity>>(device, static_cast<int>(bytes)));
  info->available = available;
  info->sms = sms > 0 ? sms : 1;
  if (tracked) cache[device].store(info->sms * 2 + (available ? 1 : 0), std::memory_order_release);
  return errc::ok;
}

/// Launches one chunk: the fused kernel when `fused`, else the three kernels.
/// `max_bins` is the largest bin count of the chunk (sizes the fused kernel's shared memory).
template <int Capacity>
status launch_chunk(const chunk<Capacity>& ch, std::int64_t candidate_blocks, bool fused,
                    std::int64_t max_bins, unsigned char* ws, search_result* d_results,
                    cudaStream_t stream) noexcept {
  if (!fused) return launch(ch, static_cast<std::int32_t>(candidate_blocks), ws, d_results, stream);
  search_fused_kernel<Capacity>
      <<<ch.count, threads, static_cast<std::size_t>(fused_smem_bytes(max_bins)), stream>>>(
          ch, d_results);
  KLCAL_TRY(cudaGetLastError());
  return errc::ok;
}

/// Packs the (validated) tasks into chunks of up to Capacity tasks and launches each chunk,
/// fused when `path` allows it and every task of the chunk is fused_eligible().
/// Every task's workspace area follows the previous one's, across chunks (the fused kernel does
/// not use its areas: the workspace size does not depend on the path).
template <int Capacity>
status run_chunks(search_path path, const search_task* h_tasks, std::int32_t num_tasks,
                  unsigned char* ws, search_result* d_results, cudaStream_t stream) noexcept {
  fused_device_info dev;
  if (path != search_path::multi_kernel) KLCAL_CHECK(fused_device<Capacity>(&dev));
  chunk<Capacity> ch{};  // up to ~30 KB, host stack
  ch.count = 0;
  std::int64_t blocks = 0;
  std::int64_t max_bins = 0;
  bool all_eligible = true;
  std::uint64_t offset = 0;
  auto flush = [&]() noexcept -> status {
    ch.block_begin[ch.count] = static_cast<std::int32_t>(blocks);
    const bool fused = dev.available && all_eligible;
    if (path == search_path::fused && !fused) return errc::invalid_option;
    // Automatic: the fused kernel gives each histogram one block, so a group with fewer
    // histograms than SMs would leave SMs idle and run every candidate of a histogram on one SM;
    // the multi-kernel path spreads the candidates over the whole device instead. Both paths
    // give the same bits, so the choice only affects speed.
    if (path == search_path::automatic && fused && ch.count < dev.sms)
      return launch_chunk(ch, blocks, false, max_bins, ws, d_results, stream);
    return launch_chunk(ch, blocks, fused, max_bins, ws, d_results, stream);
  };
  for (std::int32_t k = 0; k < num_tasks; ++k) {
    std::uint64_t bytes = 0;
    task_desc d = describe(h_tasks[k], &bytes);
    if (ch.count == Capacity ||
        (ch.count > 0 && blocks + d.num_blocks > search_max_blocks_per_launch)) {
      KLCAL_CHECK(flush());
      ch.count = 0;
      blocks = 0;
      max_bins = 0;
      all_eligible = true;
    }
    if (ch.count == 0) ch.first_task = k;
    d.ws_offset = offset;
    offset += bytes;
    ch.block_begin[ch.count] = static_cast<std::int32_t>(blocks);
    ch.tasks[ch.count] = d;
    ++ch.count;
    blocks += d.num_blocks;
    max_bins = d.bins > max_bins ? d.bins : max_bins;
    all_eligible = all_eligible && fused_eligible(d);
  }
  return flush();
}

}  // namespace
}  // namespace klcal::detail::search

namespace klcal::detail {

status search_with_path(search_path path, void* d_temp, std::size_t& temp_bytes,
                        const search_task* h_tasks, std::int32_t num_tasks,
                        search_result* d_results, cudaStream_t stream) noexcept {
  using namespace search;
  if (path != search_path::automatic && path != search_path::multi_kernel &&
      path != search_path::fused)
    return errc::invalid_option;
  if (num_tasks < 0) return errc::invalid_count;
  if (num_tasks > 0 && (h_tasks == nullptr || d_results == nullptr)) return errc::null_pointer;
  // Checked in both phases, so a size query already reports bad arguments.
  std::uint64_t areas = 0;
  for (std::int32_t k = 0; k < num_tasks; ++k) {
    KLCAL_CHECK(validate(h_tasks[k].spec, h_tasks[k].opts));
    if (h_tasks[k].d_counts == nullptr) return errc::null_pointer;
    std::uint64_t bytes = 0;
    (void)describe(h_tasks[k], &bytes);
    areas += bytes;
  }
  // ws_align of slack lets any d_temp alignment work.
  const std::uint64_t required = num_tasks == 0 ? 0 : areas + ws_align;
  if (d_temp == nullptr) {
    temp_bytes = static_cast<std::size_t>(required);
    return errc::ok;
  }
  if (temp_bytes < required) return errc::workspace_too_small;
  if (num_tasks == 0) return errc::ok;

  const auto base = reinterpret_cast<std::uintptr_t>(d_temp);
  auto* ws = reinterpret_cast<unsigned char*>(align_up(base, ws_align));
  if (num_tasks <= search_small_tasks_per_launch)
    return run_chunks<search_small_tasks_per_launch>(path, h_tasks, num_tasks, ws, d_results,
                                                     stream);
  return run_chunks<search_tasks_per_launch>(path, h_tasks, num_tasks, ws, d_results, stream);
}

}  // namespace klcal::detail

namespace klcal {

status search(void* d_temp, std::size_t& temp_bytes, const search_task* h_tasks,
              std::int32_t num_tasks, search_result* d_results, cudaStream_t stream) noexcept {
  return detail::search_with_path(detail::search_path::automatic, d_temp, temp_bytes, h_tasks,
                                  num_tasks, d_results, stream);
}

}  // namespace klcal
