// Tuning constants of the CUDA kernels, in one place (DESIGN.md: "tuning constants live in one
// policy header").
#pragma once

#include <cstdint>

namespace klcal::detail {

// ---- histogram collection (kernels/histogram*.cu) ------------------------------------------

/// Threads per block of the histogram and statistics kernels.
inline constexpr int hist_block_threads = 256;

/// Fewest elements per block (4 Ki: 16 per thread) before a tensor gets fewer blocks than one
/// wave: mid-size tensors (2^20 elements) still spread over ~100+ blocks instead of 32.
inline constexpr std::int64_t hist_min_elems_per_block = 4 * 1024;

/// A block that bins into shared memory handles at least this many elements per bin of its
/// histogram (blocks x bins <= n / 4), so that zeroing and flushing its counters (one operation
/// per bin) stays a small part of its work: 2048 bins -> at least 8 Ki elements per block.
inline constexpr std::int64_t hist_min_elems_per_bin = 4;

/// 16-byte loads each thread issues before it bins the first of them (steady state of the
/// histogram and statistics loops): independent loads in flight hide the memory latency that a
/// single load followed by its binning would expose.
inline constexpr int hist_vectors_in_flight = 4;

/// A block never processes more than this many elements before flushing its 32-bit shared
/// counters (docs/numerics.md 1.2 rule 6 requires < 2^32 per counter; 2^31 keeps a margin).
inline constexpr std::int64_t hist_max_elems_per_block = std::int64_t{1} << 31;

/// Flush budget of one wave: every block of a shared-memory launch ends with one 64-bit global
/// atomic per non-zero bin of its histogram, so a wave of `per_sm` blocks per SM flushes up to
/// per_sm x bins counters per SM, all at its end. The wave is cut to at most this many flushed
/// counters per SM: what a 2048-bin histogram flushes at 6 blocks per SM (its occupancy on sm_90),
/// so larger histograms (8001, 16384 bins) flush about as much as 2048 bins does instead of up to
/// 4-8 times more (docs/design.md, "Flush atomics").
inline constexpr double hist_flush_bins_per_sm = 6 * 2048;

/// ... but never fewer resident blocks per SM than this (when the occupancy allows them): 2 x 256
/// threads x hist_vectors_in_flight 16-byte loads = 32 KiB in flight per SM, the streaming
/// requirement of the throughput model (docs/design.md).
inline constexpr double hist_min_blocks_per_sm = 2;

/// Blocks per SM of one histogram launch's wave: the occupancy `per_sm`, lowered for large
/// histograms to hist_flush_bins_per_sm / flushed_bins but not below hist_min_blocks_per_sm (nor
/// above `per_sm`). `flushed_bins`: bins flushed per block, the tasks' bin counts weighted by
/// their element counts (tasks binned with global atomics count 0: they flush nothing).
constexpr double hist_wave_blocks_per_sm(int per_sm, double flushed_bins) {
  if (!(flushed_bins > 0)) return per_sm;
  const double budget = hist_flush_bins_per_sm / flushed_bins;
  const double lowered = budget > hist_min_blocks_per_sm ? budget : hist_min_blocks_per_sm;
  return lowered < per_sm ? lowered : per_sm;
}

/// Resident blocks per SM assumed when cudaOccupancyMaxActiveBlocksPerMultiprocessor fails;
/// normally a tensor's grid is exactly one wave of resident blocks (occupancy x SM count).
inline constexpr int hist_blocks_per_sm = 4;

/// Contention answer, part 1: each block keeps up to this many copies ("sub-histograms") of its
/// shared histogram; warp w updates copy w % copies, so warps of one block never collide on a
/// hot bin. Fewer copies are used when bins * copies * 4 bytes does not fit in shared memory.
inline constexpr int hist_max_sub_histograms = 4;

/// Contention answer, part 2 (not a switch): every thread counts the elements of one hot bin,
/// the bin that holds 0 (the ReLU / padding zero spike, all-zero tensors), in a register and
/// adds that count with one atomic at the end; every other element costs one predicated shared
/// atomic. Branch-free, unlike a run cache (compare, branch, flush per run).

/// Shared memory of the opt-in limit kept free for the histogram kernel's static shared memory
/// (the statistics reduction); the dynamic limit is raised once to the opt-in limit minus this.
inline constexpr int hist_static_smem_reserve = 1024;

/// Shared memory a block may use when the device does not report its opt-in limit.
inline constexpr int hist_default_smem_bytes = 48 * 1024;

/// Tasks packed into the kernel parameters of one batched launch (each task descriptor is 64
/// bytes; CUDA 12.1+ on sm_70+ accepts up to 32764 bytes of parameters). More tasks of one
/// element type and layout take ceil(tasks / hist_batch_tasks_per_launch) launches.
inline constexpr int hist_batch_tasks_per_launch = 256;

/// Threads of the (single-block, in-place) pairwise fold kernel.
inline constexpr int fold_block_threads = 1024;

// ---- threshold search (kernels/search.cu) ---------------------------------------------------

/// Threads per block of the search kernels; the tensorrt and mse candidates kernel gives each
/// warp one candidate, the mxnet one gives each block one candidate (O(s) work per candidate).
/// The fused kernel uses the same block size: the prefix block scan's summation tree depends on
/// it, and sharing it keeps the fused and multi-kernel paths bit-identical.
inline constexpr int search_block_threads = 256;

/// Largest bin count of the fused single-launch search (kernels/search.cu, docs/design.md): a
/// launch group whose tasks all have at most this many bins and none uses the mxnet rule set
/// runs as one kernel, one block per histogram, with the prefix arrays in shared memory
/// (S uint64 + H fp64 + N uint32 = 20 bytes per bin: 4096 bins -> 80 KiB of dynamic shared
/// memory, plus 16 KiB of static, within the opt-in limit of sm_80 (163 KiB) and sm_90 (227 KiB)).
/// Larger histograms and mxnet keep the prefix + candidates + finalize kernels, whose arrays live
/// in global memory. Devices with less shared memory fall back to those kernels.
inline constexpr std::int32_t search_fused_max_bins = 4096;

/// Items per thread and tile of the prefix-sum block scan (a 2048-bin histogram is one tile).
inline constexpr int search_prefix_items = 8;

/// Tasks packed into the kernel parameters of one launch (80-byte descriptors; the parameter
/// block stays below the 32764-byte limit of CUDA 12.1+ on sm_70+).
inline constexpr int search_tasks_per_launch = 360;

/// Calls with at most this many tasks use a small parameter block (~700 bytes) instead, so a
/// single-histogram search does not copy ~30 KB of parameters into each of its three launches.
inline constexpr int search_small_tasks_per_launch = 8;

/// Upper bound of the candidate grid of one launch (grid.x <= 2^31 - 1, with margin); a chunk
/// of tasks ends early when its candidate blocks would exceed it.
inline constexpr std::int64_t search_max_blocks_per_launch = std::int64_t{1} << 30;

}  // namespace klcal::detail
