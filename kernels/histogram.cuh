// Device code of histogram collection: exact fp32 binning, vectorized loads, privatized and naive
// kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "klcal/types.hpp"
#include "klcal/internal/gpu_policy.hpp"
#include "klcal/internal/numerics.hpp"

// Large task tables are read with dynamic indices; __grid_constant__ lets the kernel read them
// straight from parameter memory instead of copying the whole struct to local memory.
#if defined(__CUDACC__)
#define KLCAL_GRID_CONSTANT __grid_constant__
#else
#define KLCAL_GRID_CONSTANT
#endif

namespace klcal::detail {

// ---- element access ------------------------------------------------------------------------

/// Raw storage and exact widening of one element type.
template <dtype T>
struct elem;
template <>
struct elem<dtype::f32> {
  using bits_t = unsigned int;
  static constexpr int size = 4;
  __device__ __forceinline__ static float widen(unsigned int b) { return __uint_as_float(b); }
};
template <>
struct elem<dtype::f16> {
  using bits_t = unsigned short;
  static constexpr int size = 2;
  __device__ __forceinline__ static float widen(unsigned short b) {
    return __half2float(__ushort_as_half(b));
  }
};
template <>
struct elem<dtype::bf16> {
  using bits_t = unsigned short;
  static constexpr int size = 2;
  // bf16 is the upper half of an fp32: the shift is the exact widening.
  __device__ __forceinline__ static float widen(unsigned short b) {
    return __uint_as_float(static_cast<unsigned int>(b) << 16);
  }
};

/// Calls f(x) for every element of [p, p + count) of type T, with the block's threads sharing
/// the work: a scalar head up to the first 16-byte boundary, 16-byte vector loads, a scalar
/// tail. Pointers that are not even element-aligned are read byte by byte (correct, slow).
template <dtype T, class F>
__device__ __forceinline__ void for_each_in_block(const unsigned char* p, std::int64_t count,
                                                  F&& f) {
  using E = elem<T>;
  using bits_t = typename E::bits_t;
  const std::uintptr_t addr = reinterpret_cast<std::uintptr_t>(p);
  const int tid = threadIdx.x;
  const int nthreads = blockDim.x;
  if (addr % E::size != 0) {
    for (std::int64_t i = tid; i < count; i += nthreads) {
      const unsigned char* q = p + i * E::size;
      unsigned int b = 0;
      for (int k = 0; k < E::size; ++k) b |= static_cast<unsigned int>(q[k]) << (8 * k);
      f(E::widen(static_cast<bits_t>(b)));
    }
    return;
  }
  const bits_t* e = reinterpret_cast<const bits_t*>(p);
  std::int64_t head = static_cast<std::int64_t>((16 - addr % 16) % 16) / E::size;
  if (head > count) head = count;
  if (tid < head) f(E::widen(e[tid]));
  constexpr int per_vec = 16 / E::size;
  const std::int64_t nvec = (count - head) / per_vec;
  const uint4* v = reinterpret_cast<const uint4*>(e + head);
#pragma unroll 2
  for (std::int64_t i = tid; i < nvec; i += nthreads) {
    const uint4 w = v[i];
    const unsigned int words[4] = {w.x, w.y, w.z, w.w};
    if constexpr (E::size == 4) {
#pragma unroll
      for (int k = 0; k < 4; ++k) f(E::widen(words[k]));
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        f(E::widen(static_cast<bits_t>(words[k] & 0xffffu)));  // little endian: low half first
        f(E::widen(static_cast<bits_t>(words[k] >> 16)));
      }
    }
  }
  const std::int64_t done = head + nvec * per_vec;
  const std::int64_t tail = count - done;
  if (tid < tail) f(E::widen(e[done + tid]));
}

// ---- binning (docs/numerics.md 1.2; the one place of the GPU bin formula) -------------------

/// NaN and Inf tests on the bit pattern: an all-ones exponent (one integer compare each).
__device__ __forceinline__ bool is_finite_bits(float x) {
  return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}
__device__ __forceinline__ bool is_nan_bits(float x) {
  return (__float_as_uint(x) & 0x7fffffffu) > 0x7f800000u;
}

/// Per-histogram binning constants of a kernel: the shared ones (klcal/internal/numerics.hpp)
/// plus the layout.
struct kernel_bin_params {
  bin_params p;
  bool is_abs;
};

/// Bin of x, or -1 for NaN/Inf (never binned), by the one bin formula of numerics.hpp.
__device__ __forceinline__ int bin_of(float x, const kernel_bin_params& b) {
  if (!is_finite_bits(x)) return -1;
  return b.is_abs ? bin_of_abs(x, b.p) : bin_of_signed(x, b.p);
}

// ---- statistics -------------------------------------------------------------------------------

// Ordered-integer atomics on fp32 storage. For non-negative floats the bit pattern orders like a
// signed int; for negative floats the bit pattern orders in reverse as an unsigned int. So
// max(x) is atomicMax(int) when x's sign bit is clear and atomicMin(unsigned) when it is set,
// whatever the stored value's sign (and symmetrically for min). NaN never reaches these.
__device__ __forceinline__ void atomic_max_float(float* addr, float x) {
  if (__float_as_int(x) >= 0) {
    atomicMax(reinterpret_cast<int*>(addr), __float_as_int(x));
  } else {
    atomicMin(reinterpret_cast<unsigned int*>(addr), __float_as_uint(x));
  }
}
__device__ __forceinline__ void atomic_min_float(float* addr, float x) {
  if (__float_as_int(x) >= 0) {
    atomicMin(reinterpret_cast<int*>(addr), __float_as_int(x));
  } else {
    atomicMax(reinterpret_cast<unsigned int*>(addr), __float_as_uint(x));
  }
}

/// Per-thread partial statistics.
/// Trivially constructible so that it can live in __shared__ memory; start from empty().
struct stats_acc {
  unsigned long long finite, nan, inf;
  float max_abs, mn, mx;

  __device__ __forceinline__ static stats_acc empty() {
    stats_acc a;
    a.finite = a.nan = a.inf = 0;
    a.max_abs = 0.0f;
    a.mn = __int_as_float(0x7f800000);  // +inf
    a.mx = __int_as_float(0xff800000);  // -inf
    return a;
  }

  __device__ __forceinline__ void add(float x) {
    if (is_nan_bits(x)) {
      ++nan;
    } else if (!is_finite_bits(x)) {
      ++inf;
    } else {
      ++finite;
      // -0.0 counts as 0 (numerics.md 1.2): canonicalising it keeps min/max independent of the
      // order in which -0.0 and +0.0 arrive.
      const float v = x == 0.0f ? 0.0f : x;
      max_abs = fmaxf(max_abs, fabsf(v));
      mn = fminf(mn, v);
      mx = fmaxf(mx, v);
    }
  }
  __device__ __forceinline__ void combine(const stats_acc& o) {
    finite += o.finite;
    nan += o.nan;
    inf += o.inf;
    max_abs = fmaxf(max_abs, o.max_abs);
    mn = fminf(mn, o.mn);
    mx = fmaxf(mx, o.mx);
  }
};

__device__ __forceinline__ stats_acc shfl_down(const stats_acc& a, int off) {
  stats_acc r;
  r.finite = __shfl_down_sync(0xffffffffu, a.finite, off);
  r.nan = __shfl_down_sync(0xffffffffu, a.nan, off);
  r.inf = __shfl_down_sync(0xffffffffu, a.inf, off);
  r.max_abs = __shfl_down_sync(0xffffffffu, a.max_abs, off);
  r.mn = __shfl_down_sync(0xffffffffu, a.mn, off);
  r.mx = __shfl_down_sync(0xffffffffu, a.mx, off);
  return r;
}

/// Folds a block's partial statistics into *d_stats with integer atomics (one set per block).
__device__ __forceinline__ void flush_stats(stats_acc acc, tensor_stats* d_stats) {
  __shared__ stats_acc warp_acc[hist_block_threads / 32];
  for (int off = 16; off > 0; off /= 2) acc.combine(shfl_down(acc, off));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_acc[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) acc.combine(warp_acc[w]);
    auto* finite = reinterpret_cast<unsigned long long*>(&d_stats->finite_count);
    auto* nan = reinterpret_cast<unsigned long long*>(&d_stats->nan_count);
    auto* inf = reinterpret_cast<unsigned long long*>(&d_stats->inf_count);
    if (acc.finite != 0) {
      atomicAdd(finite, acc.finite);
      // max_abs >= 0: its bit pattern orders like an unsigned int.
      atomicMax(reinterpret_cast<unsigned int*>(&d_stats->max_abs), __float_as_uint(acc.max_abs));
      atomic_min_float(&d_stats->min, acc.mn);
      atomic_max_float(&d_stats->max, acc.mx);
    }
    if (acc.nan != 0) atomicAdd(nan, acc.nan);
    if (acc.inf != 0) atomicAdd(inf, acc.inf);
  }
}

// ---- privatized histogram kernel -------------------------------------------------------------

/// One tensor of a launch. 56 bytes; packed into kernel parameters (graph-capture friendly).
struct hist_task_desc {
  const void* d_in;
  unsigned long long* d_counts;
  tensor_stats* d_stats;  ///< accumulated in the same pass when the kernel has WithStats
  std::int64_t n;
  std::int64_t elems_per_block;  ///< contiguous elements per block (< 2^31, see policy)
  float lo;
  float scale;
  std::int32_t bins;
  std::uint8_t type;    ///< klcal::dtype
  std::uint8_t is_abs;  ///< layout::abs
  std::uint8_t copies;  ///< shared sub-histograms per block; 0 = global atomics (too many bins)
  std::uint8_t pad;
};

/// Kernel parameters: the tasks and an exclusive prefix of their block counts.
template <int MaxTasks>
struct hist_launch_params {
  hist_task_desc tasks[MaxTasks];
  std::int32_t block_begin[MaxTasks + 1];
  std::int32_t num_tasks;
};

/// Adds `run` to counter `k` of a 32-bit shared or 64-bit global histogram.
__device__ __forceinline__ void add_run(unsigned int* h, int k, unsigned int run) {
  atomicAdd(h + k, run);
}
__device__ __forceinline__ void add_run(unsigned long long* h, int k, unsigned int run) {
  atomicAdd(h + k, static_cast<unsigned long long>(run));
}

/// Bins [p, p + count) into `hist` with a per-thread register run cache: consecutive elements
/// of a thread that fall into the same bin cost one atomic per run (gpu_policy.hpp, part 2).
template <dtype T, class H, class OnValue>
__device__ __forceinline__ void bin_range(const unsigned char* p, std::int64_t count,
                                          const kernel_bin_params& b, H* hist, OnValue& on_value) {
  int cur = -1;
  unsigned int run = 0;
  for_each_in_block<T>(p, count, [&](float x) {
    on_value(x);
    const int k = bin_of(x, b);
    if (k < 0) return;
    if constexpr (hist_register_run_cache) {
      if (k == cur) {
        ++run;
        return;
      }
      if (run != 0) add_run(hist, cur, run);
      cur = k;
      run = 1;
    } else {
      add_run(hist, k, 1u);
    }
  });
  if (run != 0) add_run(hist, cur, run);
}

template <class H, class OnValue>
__device__ __forceinline__ void bin_range_typed(const hist_task_desc& t, std::int64_t begin,
                                                std::int64_t count, const kernel_bin_params& b, H* hist,
                                                OnValue& on_value) {
  const auto* base = static_cast<const unsigned char*>(t.d_in);
  switch (static_cast<dtype>(t.type)) {
    case dtype::f32: bin_range<dtype::f32>(base + begin * 4, count, b, hist, on_value); break;
    case dtype::f16: bin_range<dtype::f16>(base + begin * 2, count, b, hist, on_value); break;
    case dtype::bf16: bin_range<dtype::bf16>(base + begin * 2, count, b, hist, on_value); break;
  }
}

/// Block -> (task, chunk): each block bins one contiguous chunk of one task into `copies`
/// shared 32-bit sub-histograms (warp w uses copy w % copies), then flushes the non-zero bins
/// into the task's uint64 counts with one 64-bit atomic each. Tasks whose histogram does not
/// fit in shared memory (copies == 0) use 64-bit global atomics directly. WithStats: the same
/// pass also accumulates the task's tensor_stats (one read of the data instead of two).
template <int MaxTasks, bool WithStats>
__global__ void __launch_bounds__(hist_block_threads)
    histogram_block_private_kernel(const KLCAL_GRID_CONSTANT hist_launch_params<MaxTasks> p) {
  extern __shared__ unsigned int smem_hist[];
  // Find the task of this block: the last t with block_begin[t] <= blockIdx.x.
  int lo = 0, hi = p.num_tasks - 1;
  const int bid = static_cast<int>(blockIdx.x);
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.block_begin[mid] <= bid)
      lo = mid;
    else
      hi = mid - 1;
  }
  const hist_task_desc t = p.tasks[lo];
  const std::int64_t begin = static_cast<std::int64_t>(bid - p.block_begin[lo]) * t.elems_per_block;
  if (begin >= t.n) return;  // block-uniform
  const std::int64_t count = t.n - begin < t.elems_per_block ? t.n - begin : t.elems_per_block;
  const kernel_bin_params b{{t.lo, t.scale, static_cast<float>(t.bins - 1)}, t.is_abs != 0};

  stats_acc acc = stats_acc::empty();
  auto on_value = [&acc](float x) {
    if constexpr (WithStats) acc.add(x);
  };
  if (t.copies == 0) {
    bin_range_typed(t, begin, count, b, t.d_counts, on_value);
  } else {
    const int total = t.bins * t.copies;
    for (int j = threadIdx.x; j < total; j += blockDim.x) smem_hist[j] = 0;
    __syncthreads();
    unsigned int* mine = smem_hist + (threadIdx.x / 32 % t.copies) * t.bins;
    bin_range_typed(t, begin, count, b, mine, on_value);
    __syncthreads();
    for (int j = threadIdx.x; j < t.bins; j += blockDim.x) {
      unsigned long long s = 0;
      for (int c = 0; c < t.copies; ++c) s += smem_hist[c * t.bins + j];
      if (s != 0) atomicAdd(t.d_counts + j, s);
    }
  }
  if constexpr (WithStats) flush_stats(acc, t.d_stats);
}

/// Baseline: grid-stride over elements, one global 64-bit atomic per binned element.
template <dtype T>
__global__ void histogram_naive_kernel(const void* d_in, std::int64_t n, kernel_bin_params b,
                                       unsigned long long* d_counts) {
  using E = elem<T>;
  const auto* e = static_cast<const typename E::bits_t*>(d_in);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int k = bin_of(E::widen(e[i]), b);
    if (k >= 0) atomicAdd(d_counts + k, 1ull);
  }
}

/// Statistics of contiguous chunks of `elems_per_block` elements, one chunk per block.
template <dtype T>
__global__ void __launch_bounds__(hist_block_threads)
    tensor_stats_kernel(const void* d_in, std::int64_t n, std::int64_t elems_per_block,
                        tensor_stats* d_stats) {
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * elems_per_block;
  if (begin >= n) return;  // block-uniform
  const std::int64_t count = n - begin < elems_per_block ? n - begin : elems_per_block;
  stats_acc acc = stats_acc::empty();
  for_each_in_block<T>(static_cast<const unsigned char*>(d_in) + begin * elem<T>::size, count,
                       [&](float x) { acc.add(x); });
  flush_stats(acc, d_stats);
}

// ---- streaming fold -------------------------------------------------------------------------

/// In place: c[j] = sum(c[j << d .. (j + 1) << d)) for j < bins >> d, zero above. One block
/// walks the outputs in increasing chunks; chunk [s, s + blockDim) only reads indices >= s,
/// which no earlier chunk has overwritten, and reads before it writes (barrier in between).
__global__ void __launch_bounds__(fold_block_threads)
    histogram_fold_pow2_kernel(unsigned long long* d_counts, std::int32_t bins, int d) {
  const std::int64_t out_bins = static_cast<std::int64_t>(bins) >> d;
  const std::int64_t group = std::int64_t{1} << d;
  for (std::int64_t s = 0; s < out_bins; s += blockDim.x) {
    const std::int64_t j = s + threadIdx.x;
    unsigned long long sum = 0;
    if (j < out_bins)
      for (std::int64_t k = 0; k < group; ++k) sum += d_counts[j * group + k];
    __syncthreads();
    if (j < out_bins) d_counts[j] = sum;
    __syncthreads();
  }
  for (std::int64_t j = out_bins + threadIdx.x; j < bins; j += blockDim.x) d_counts[j] = 0;
}

// ---- calibrator helpers -----------------------------------------------------------------------

__global__ void add_counts_kernel(unsigned long long* d_dst, const unsigned long long* d_src,
                                  std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride)
    d_dst[i] += d_src[i];
}

__global__ void merge_stats_kernel(tensor_stats* d_dst, const tensor_stats* d_src) {
  const tensor_stats src = *d_src;
  tensor_stats dst = *d_dst;
  merge_stats(dst, src);
  *d_dst = dst;
}

__global__ void init_stats_kernel(tensor_stats* d_stats) {
  *d_stats = tensor_stats{};
}

__global__ void apply_max_method_kernel(search_result* d_result, const tensor_stats* d_stats,
                                        std::int32_t qmax) {
  search_result r = *d_result;
  if (!r.degenerate) {
    r.amax = static_cast<double>(d_stats->max_abs);
    r.scale = quant_scale(r.amax, qmax);
  }
  *d_result = r;
}

}  // namespace klcal::detail
