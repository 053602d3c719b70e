// Internal host entry points of the histogram kernels (plain C++): naive baseline and calibrator
// helpers.
#pragma once

#include <cstdint>

#include "klcal/cuda_stream.hpp"
#include "klcal/types.hpp"

// These are not public API: the calibrator (src/calibrator.cpp) and the GPU tests use them.
// Like the public core API they never allocate, synchronize or print.
namespace klcal::detail {

/// Baseline: one global 64-bit atomic per element, no privatization, no vector loads. Same
/// binning and argument checks as histogram_accumulate (no workspace). Kept as a tested
/// reference point for the tuned kernels and the benchmarks.
status histogram_naive_accumulate(const void* d_in, dtype t, std::int64_t n,
                                  const histogram_spec& spec, std::uint64_t* d_counts,
                                  cudaStream_t stream) noexcept;

/// histogram_accumulate and tensor_stats_accumulate of the same data in one pass (one read of
/// d_in instead of two; used by the calibrator). Same checks, no workspace.
status histogram_stats_accumulate(const void* d_in, dtype t, std::int64_t n,
                                  const histogram_spec& spec, std::uint64_t* d_counts,
                                  tensor_stats* d_stats, cudaStream_t stream) noexcept;

/// d_dst[i] += d_src[i] for i < n (merging two histograms of identical specs).
status add_counts(std::uint64_t* d_dst, const std::uint64_t* d_src, std::int64_t n,
                  cudaStream_t stream) noexcept;

/// *d_dst = merge(*d_dst, *d_src): counters added, max/min of the statistics (numerics.md 1.4).
status merge_stats(tensor_stats* d_dst, const tensor_stats* d_src, cudaStream_t stream) noexcept;

/// *d_stats = tensor_stats{} (the empty statistics), written by a kernel so that no pageable
/// host buffer has to outlive the call (graph capture safe).
status init_stats(tensor_stats* d_stats, cudaStream_t stream) noexcept;

/// For method::max computed without a host round trip: unless the result is degenerate, sets
/// amax = stats.max_abs and scale = fp32(float(amax) / qmax) (numerics.md 4 and 5.1).
status apply_max_method(search_result* d_result, const tensor_stats* d_stats, std::int32_t qmax,
                        cudaStream_t stream) noexcept;

}  // namespace klcal::detail
