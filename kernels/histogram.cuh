// Device code of histogram collection: exact fp32 binning, vectorized loads, privatized and naive
// kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "klcal/internal/gpu_policy.hpp"
#include "klcal/internal/numerics.hpp"
#include "klcal/types.hpp"

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

/// The elements of one 16-byte vector, widened exactly, in memory order (little endian: the
/// low half of a word first).
template <dtype T>
inline constexpr int elems_per_vector = 16 / elem<T>::size;

template <dtype T, class F>
__device__ __forceinline__ void for_each_in_vector(const uint4& w, F& f) {
  const unsigned int words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if constexpr (T == dtype::f32) {
      f(__uint_as_float(words[k]));
    } else if constexpr (T == dtype::f16) {
      f(elem<T>::widen(static_cast<unsigned short>(words[k] & 0xffffu)));
      f(elem<T>::widen(static_cast<unsigned short>(words[k] >> 16)));
    } else {
      // bf16 is the upper half of an fp32: shifting the low half up and masking the high half
      // in place are the exact widenings (one instruction each).
      f(__uint_as_float(words[k] << 16));
      f(__uint_as_float(words[k] & 0xffff0000u));
    }
  }
}

/// True when no element of the N 16-byte vectors w[0..N) is NaN or Inf, tested on the packed
/// words: multiply-adds by 0 (for 16-bit elements a packed half2 / bfloat162 multiply and add
/// per word, which ptxas fuses into one HFMA2; one FFMA per fp32 element) keep a (signed) zero
/// while the elements are finite and turn NaN, for good, at a NaN or an Inf (Inf * 0 = NaN,
/// NaN + y = NaN); one self-comparison then tests the sum. Exact, fused or not: no rounding
/// makes a finite product non-zero or a NaN finite. Two chains, joined at the end, halve the
/// dependent latency.
template <dtype T, int N>
__device__ __forceinline__ bool vectors_are_finite(const uint4 (&w)[N]) {
  static_assert(N % 2 == 0);
  if constexpr (T == dtype::f32) {
    float t[2];
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      t[c] = __fmul_rn(__uint_as_float(w[c].x), 0.0f);
      t[c] = __fmaf_rn(__uint_as_float(w[c].y), 0.0f, t[c]);
      t[c] = __fmaf_rn(__uint_as_float(w[c].z), 0.0f, t[c]);
      t[c] = __fmaf_rn(__uint_as_float(w[c].w), 0.0f, t[c]);
#pragma unroll
      for (int u = c + 2; u < N; u += 2) {
        t[c] = __fmaf_rn(__uint_as_float(w[u].x), 0.0f, t[c]);
        t[c] = __fmaf_rn(__uint_as_float(w[u].y), 0.0f, t[c]);
        t[c] = __fmaf_rn(__uint_as_float(w[u].z), 0.0f, t[c]);
        t[c] = __fmaf_rn(__uint_as_float(w[u].w), 0.0f, t[c]);
      }
    }
    const float s = __fadd_rn(t[0], t[1]);
    return s == s;
  } else {
    using pair_t = std::conditional_t<T == dtype::f16, __half2, __nv_bfloat162>;
    const auto as_pair = [](unsigned int u) {
      pair_t h;
      static_assert(sizeof(h) == sizeof(u));
      memcpy(&h, &u, sizeof(u));
      return h;
    };
    const pair_t zero = as_pair(0u);
    pair_t t[2];
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      t[c] = __hmul2(as_pair(w[c].x), zero);
      t[c] = __hadd2(__hmul2(as_pair(w[c].y), zero), t[c]);
      t[c] = __hadd2(__hmul2(as_pair(w[c].z), zero), t[c]);
      t[c] = __hadd2(__hmul2(as_pair(w[c].w), zero), t[c]);
#pragma unroll
      for (int u = c + 2; u < N; u += 2) {
        t[c] = __hadd2(__hmul2(as_pair(w[u].x), zero), t[c]);
        t[c] = __hadd2(__hmul2(as_pair(w[u].y), zero), t[c]);
        t[c] = __hadd2(__hmul2(as_pair(w[u].z), zero), t[c]);
        t[c] = __hadd2(__hmul2(as_pair(w[u].w), zero), t[c]);
      }
    }
    const pair_t s = __hadd2(t[0], t[1]);
    return __hbeq2(s, s);  // both halves equal themselves: neither is NaN
  }
}

/// Calls f(x) for every element of [p, p + count) of type T, with the block's
/// hist_block_threads threads sharing the work: a scalar head up to the first 16-byte boundary,
/// 16-byte vector loads, a scalar tail. Pointers that are not even element-aligned are read
/// byte by byte (correct, slow). In the steady state every thread issues
/// hist_vectors_in_flight independent 16-byte loads before it uses the first one, so several
/// loads per thread are in flight while it bins (one at a time would leave the memory system
/// idle during the binning of each vector). When the hist_vectors_in_flight vectors of a group
/// hold no NaN or Inf (one test per group, vectors_are_finite), their elements go to
/// f_finite(x), which may assume a finite x; otherwise, and outside the steady state, every
/// element goes to f(x). The clean case is the inner loop; a group with a NaN or Inf leaves it,
/// is binned by f, and the loop resumes. With f_finite of f's type (the two-argument form) every
/// element goes to f and there is no test. Precondition: count < 2^31 (the policy's
/// hist_max_elems_per_block), so vector indices fit in an int.
template <dtype T, class F, class FFinite>
__device__ __forceinline__ void for_each_in_block(const unsigned char* p, std::int64_t count, F&& f,
                                                  FFinite&& f_finite) {
  using E = elem<T>;
  using bits_t = typename E::bits_t;
  constexpr int threads = hist_block_threads;
  const std::uintptr_t addr = reinterpret_cast<std::uintptr_t>(p);
  const int tid = threadIdx.x;
  if (addr % E::size != 0) {
    for (std::int64_t i = tid; i < count; i += threads) {
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
  constexpr int per_vec = elems_per_vector<T>;
  const int nvec = static_cast<int>((count - head) / per_vec);
  const uint4* v = reinterpret_cast<const uint4*>(e + head);
  constexpr int in_flight = hist_vectors_in_flight;
  int i = tid;
  if constexpr (std::is_same_v<std::decay_t<F>, std::decay_t<FFinite>>) {
    // One function for all elements: no finite test.
    for (; i + (in_flight - 1) * threads < nvec; i += in_flight * threads) {
      uint4 w[in_flight];
#pragma unroll
      for (int u = 0; u < in_flight; ++u) w[u] = __ldg(v + i + u * threads);
#pragma unroll
      for (int u = 0; u < in_flight; ++u) for_each_in_vector<T>(w[u], f);
    }
  } else {
    while (i + (in_flight - 1) * threads < nvec) {
      uint4 w[in_flight];
      bool finite;
      // Steady state: groups of in_flight vectors without NaN or Inf.
      do {
#pragma unroll
        for (int u = 0; u < in_flight; ++u) w[u] = __ldg(v + i + u * threads);
        finite = vectors_are_finite<T>(w);
        if (!finite) break;
#pragma unroll
        for (int u = 0; u < in_flight; ++u) for_each_in_vector<T>(w[u], f_finite);
        i += in_flight * threads;
      } while (i + (in_flight - 1) * threads < nvec);
      if (finite) break;  // else w is a group with a NaN or Inf: every element through f
#pragma unroll
      for (int u = 0; u < in_flight; ++u) for_each_in_vector<T>(w[u], f);
      i += in_flight * threads;
    }
  }
  for (; i < nvec; i += threads) for_each_in_vector<T>(__ldg(v + i), f);
  const std::int64_t done = head + std::int64_t{nvec} * per_vec;
  const std::int64_t tail = count - done;
  if (tid < tail) f(E::widen(e[done + tid]));
}

/// for_each_in_block with one function for all elements (no per-vector finite test).
template <dtype T, class F>
__device__ __forceinline__ void for_each_in_block(const unsigned char* p, std::int64_t count,
                                                  F&& f) {
  for_each_in_block<T>(p, count, f, f);
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

/// Bin of a value of layout L by the one bin formula of numerics.hpp; x may be NaN or Inf (the
/// caller discards those bins), so no test sits in front of the formula.
template <layout L>
__device__ __forceinline__ int bin_of_layout(float x, const bin_params& b) {
  if constexpr (L == layout::abs) {
    // |x| first: the formula's own sign test then folds away and the |.| becomes an operand
    // modifier of the multiply. Same bin: the two differ only in the sign of a zero or a NaN.
    return bin_of_abs(fabsf(x), b);
  } else {
    return bin_of_signed(x, b);
  }
}

/// True for finite x: |x| < Inf is false for NaN and +-Inf, one float compare with the |.|
/// operand modifier instead of a mask and an integer compare.
__device__ __forceinline__ bool is_finite(float x) {
  return fabsf(x) < __int_as_float(0x7f800000);
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
      add_finite(x);
    }
  }
  /// add(x) for an x known to be finite.
  __device__ __forceinline__ void add_finite(float x) {
    ++finite;
    // -0.0 counts as 0 (numerics.md 1.2): canonicalising it keeps min/max independent of the
    // order in which -0.0 and +0.0 arrive.
    const float v = x == 0.0f ? 0.0f : x;
    max_abs = fmaxf(max_abs, fabsf(v));
    mn = fminf(mn, v);
    mx = fmaxf(mx, v);
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

/// One tensor of a launch. 64 bytes; packed into kernel parameters (graph-capture friendly).
/// Element type and layout are template parameters of the kernel, chosen on the host.
struct hist_task_desc {
  const void* d_in;
  unsigned long long* d_counts;
  tensor_stats* d_stats;  ///< accumulated in the same pass when the kernel has WithStats
  std::int64_t n;
  std::int64_t elems_per_block;  ///< contiguous elements per block (< 2^31, see policy)
  float lo;
  float scale;
  std::int32_t bins;
  std::int32_t hot;     ///< the bin each thread counts in a register (the bin of 0)
  std::int32_t copies;  ///< shared sub-histograms per block; 0 = global atomics (too many bins)
  std::int32_t pad;
};

/// Kernel parameters: the tasks and an exclusive prefix of their block counts.
template <int MaxTasks>
struct hist_launch_params {
  hist_task_desc tasks[MaxTasks];
  std::int32_t block_begin[MaxTasks + 1];
  std::int32_t num_tasks;
};

/// Shared-memory counter addresses. On the device a 32-bit shared-window address, computed once
/// per thread: through a generic pointer the compiler re-derives the window base (cluster CTA
/// id, shift, add) in front of every atomic on sm_90. Elsewhere a plain pointer.
#if defined(__CUDA_ARCH__)
using shared_addr = unsigned int;
__device__ __forceinline__ shared_addr shared_addr_of(unsigned int* p) {
  return static_cast<unsigned int>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ shared_addr shared_offset(shared_addr a, int k) {
  return a + 4u * static_cast<unsigned int>(k);
}
/// Counter at a += 1, no return value (RED, which cannot stall the thread on its result).
__device__ __forceinline__ void shared_increment(shared_addr a) {
  asm volatile("red.shared.add.u32 [%0], 1;" : : "r"(a) : "memory");
}
#else
using shared_addr = unsigned int*;
__device__ __forceinline__ shared_addr shared_addr_of(unsigned int* p) {
  return p;
}
__device__ __forceinline__ shared_addr shared_offset(shared_addr a, int k) {
  return a + k;
}
__device__ __forceinline__ void shared_increment(shared_addr a) {
  atomicAdd(a, 1u);
}
#endif

/// Per-thread counter slots after the sub-histograms in shared memory: each thread's hot-bin
/// slot, then each thread's slot for NaN/Inf (never read).
inline constexpr int hist_slot_words = 2 * hist_block_threads;

/// Binning into a block's shared 32-bit sub-histogram with one unconditional shared atomic per
/// element and no branch: the address selects the target. A finite element of any bin but the
/// hot one increments its bin; one of the hot bin (the bin of 0, gpu_policy.hpp contention part
/// 2) increments the thread's own hot slot, so a zero spike never has 32 lanes on one address;
/// NaN and Inf increment the thread's discard slot. ptxas turns a predicated shared atomic into
/// a branch around it (BSSY / BRA / BSYNC), so selecting a harmless address is the branch-free
/// form of "predicated".
template <layout L>
struct shared_binner {
  static constexpr bool has_bin_finite = true;
  shared_addr hist;      ///< counter 0 of this warp's sub-histogram
  shared_addr hot_slot;  ///< this thread's hot-bin slot
  shared_addr discard;   ///< this thread's NaN/Inf slot
  bin_params b;
  int hot;

  __device__ __forceinline__ void operator()(float x) const {
    const int k = bin_of_layout<L>(x, b);
    const shared_addr counted = k != hot ? shared_offset(hist, k) : hot_slot;
    shared_increment(is_finite(x) ? counted : discard);
  }
  /// The same for an x known to be finite: no finite test, no discard select.
  __device__ __forceinline__ void bin_finite(float x) const {
    const int k = bin_of_layout<L>(x, b);
    shared_increment(k != hot ? shared_offset(hist, k) : hot_slot);
  }
  __device__ __forceinline__ void finish() const {}
};

/// Binning into the task's 64-bit global counts (histograms too large for shared memory): the
/// hot bin is counted in a register and added with one atomic per thread at the end.
template <layout L>
struct global_binner {
  // Global atomics dominate this path: one loop for all elements, no finite-only copy (which
  // would cost code and registers in every kernel for a rare case).
  static constexpr bool has_bin_finite = false;
  unsigned long long* hist;
  bin_params b;
  int hot;
  unsigned int hot_count;

  __device__ __forceinline__ void operator()(float x) {
    const bool finite = is_finite(x);
    const int k = bin_of_layout<L>(x, b);
    hot_count += (finite && k == hot) ? 1u : 0u;
    if (finite && k != hot) atomicAdd(hist + k, 1ull);
  }
  __device__ __forceinline__ void finish() const {
    if (hot_count != 0) atomicAdd(hist + hot, static_cast<unsigned long long>(hot_count));
  }
};

/// Bins [p, p + count) of type T with `binner`; WithStats: also into *acc. A binner with
/// has_bin_finite takes the elements of NaN/Inf-free vector groups through bin_finite.
template <dtype T, bool WithStats, class Binner>
__device__ __forceinline__ void bin_chunk(const unsigned char* p, std::int64_t count, Binner binner,
                                          stats_acc* acc) {
  const auto any = [&](float x) {
    if constexpr (WithStats) acc->add(x);
    binner(x);
  };
  if constexpr (Binner::has_bin_finite) {
    for_each_in_block<T>(p, count, any, [&](float x) {
      if constexpr (WithStats) acc->add_finite(x);
      binner.bin_finite(x);
    });
  } else {
    for_each_in_block<T>(p, count, any);
  }
  binner.finish();
}

/// Block -> (task, chunk): each block bins one contiguous chunk of one task into `copies`
/// shared 32-bit sub-histograms (warp w uses copy w % copies), then flushes the non-zero bins
/// into the task's uint64 counts with one 64-bit atomic each. Tasks whose histogram does not
/// fit in shared memory (copies == 0) use 64-bit global atomics directly. One instantiation per
/// element type and layout, so the loop holds only that type's widening and that layout's
/// formula. WithStats: the same pass also accumulates the task's tensor_stats (one read of the
/// data instead of two). Launched with hist_block_threads threads per block.
template <dtype T, layout L, int MaxTasks, bool WithStats>
__global__ void __launch_bounds__(hist_block_threads)
    histogram_block_private_kernel(const KLCAL_GRID_CONSTANT hist_launch_params<MaxTasks> p) {
  extern __shared__ unsigned int smem_hist[];
  const int bid = static_cast<int>(blockIdx.x);
  int lo = 0;
  if constexpr (MaxTasks > 1) {
    // Find the task of this block: the last t with block_begin[t] <= blockIdx.x.
    int hi = p.num_tasks - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (p.block_begin[mid] <= bid)
        lo = mid;
      else
        hi = mid - 1;
    }
  }
  const hist_task_desc& t = p.tasks[lo];
  const std::int64_t begin = static_cast<std::int64_t>(bid - p.block_begin[lo]) * t.elems_per_block;
  if (begin >= t.n) return;  // block-uniform
  const std::int64_t count = t.n - begin < t.elems_per_block ? t.n - begin : t.elems_per_block;
  const bin_params b{t.lo, t.scale, static_cast<float>(t.bins - 1)};
  const auto* in = static_cast<const unsigned char*>(t.d_in) + begin * elem<T>::size;

  stats_acc acc = stats_acc::empty();
  if (t.copies == 0) {
    bin_chunk<T, WithStats>(in, count, global_binner<L>{t.d_counts, b, t.hot, 0u}, &acc);
  } else {
    // Layout: copies x bins counters, then the per-thread hot and discard slots.
    const int total = t.bins * t.copies;
    unsigned int* slots = smem_hist + total;
    for (int j = threadIdx.x; j < total + hist_slot_words; j += hist_block_threads)
      smem_hist[j] = 0;
    __syncthreads();
    unsigned int* mine = smem_hist + (threadIdx.x / 32 % t.copies) * t.bins;
    const shared_binner<L> binner{shared_addr_of(mine), shared_addr_of(slots + threadIdx.x),
                                  shared_addr_of(slots + hist_block_threads + threadIdx.x), b,
                                  t.hot};
    bin_chunk<T, WithStats>(in, count, binner, &acc);
    // Each thread's hot slot (< 2^31: one block's elements) joins copy 0's hot bin.
    if (const unsigned int h = slots[threadIdx.x]; h != 0) atomicAdd(smem_hist + t.hot, h);
    __syncthreads();
    for (int j = threadIdx.x; j < t.bins; j += hist_block_threads) {
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
