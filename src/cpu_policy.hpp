// Tuning constants of the CPU backend (histogram and threshold search), kept in one place.
#pragma once

#include <cstdint>

namespace klcal::cpu::policy {

/// A thread is only worth starting for at least this many elements; below it, thread start-up
/// and the merge of a private sub-histogram cost more than the binning they save.
inline constexpr std::int64_t min_elements_per_thread = std::int64_t{1} << 16;

/// Interleaved private sub-histograms per thread. Consecutive elements go to different copies so
/// that a run of equal values (all-zero tensors, the post-ReLU zero spike) does not serialise on
/// one counter's store-to-load forwarding latency.
inline constexpr int sub_histograms = 4;

/// Above this many bins one sub-histogram is used: four copies would no longer fit in L1/L2 and
/// the cache misses cost more than the dependency chains they break.
inline constexpr std::int32_t max_bins_for_sub_histograms = 16384;

/// Fewer elements than this many times the bin count use one sub-histogram whatever the bin
/// count: zeroing and merging four copies of every bin would cost more than binning so few
/// values (a small tensor per call, e.g. one add() of 64 values into 2048 bins from Python).
inline constexpr std::int64_t min_elements_per_bin_for_sub_histograms = 4;

/// 32-bit private counters are flushed into 64-bit totals after at most this many elements, so a
/// counter (which grows by at most one per element) can never overflow.
inline constexpr std::int64_t flush_elements = std::int64_t{1} << 30;

/// The series form of the mxnet smoothed P ln P sum is used while the smoothing shift
/// eps * zeros / nonzeros is at most this; above it the candidate is summed bin by bin (this only
/// happens for windows that are more than 99% empty, so the direct sum over the non-empty bins
/// is cheap). Truncation error of the 4-term series relative to sum(P): e^6 / 30 < 4e-14.
inline constexpr double mxnet_series_max_shift = 1e-2;

/// The mse search sums over quantization levels (O(qmax) per candidate, exact 128-bit integer
/// steps) when qmax * this < the number of non-empty bins, else over the non-empty bins (fp64,
/// four per vector step). It is the cost of one level step in bin steps: 2.5 ns against 1.66 ns
/// on the development VM (2048 bins, bits 10 and 11, thread CPU time).
inline constexpr double mse_level_cost = 1.5;

/// A task's candidates are split over threads only when there are fewer tasks than threads and
/// the task has at least this many candidates.
inline constexpr std::int64_t min_candidates_per_thread = 64;

}  // namespace klcal::cpu::policy
