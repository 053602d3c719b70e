// CPU backend: the same operations as the GPU API on host memory, multi-threaded and exact.
#pragma once

#include <cstdint>

#include "klcal/types.hpp"

namespace klcal::cpu {

/// Adds the histogram of n host elements to h_counts[0 .. spec.bins) and, when h_stats is not
/// null, accumulates their statistics. Counts equal klcal::reference bit for bit.
/// threads <= 0 means std::thread::hardware_concurrency(). Blocks until done.
status histogram_accumulate(const void* h_in, dtype t, std::int64_t n, const histogram_spec& spec,
                            std::uint64_t* h_counts, tensor_stats* h_stats,
                            int threads = 0) noexcept;

/// Accumulates statistics only (finite/NaN/Inf counts, max |x|, min, max).
status tensor_stats_accumulate(const void* h_in, dtype t, std::int64_t n, tensor_stats* h_stats,
                               int threads = 0) noexcept;

/// Streaming range policy on host counts: see klcal::histogram_fold_pow2.
status histogram_fold_pow2(std::uint64_t* h_counts, std::int32_t bins,
                           std::int32_t doublings) noexcept;

/// One histogram to search on the host.
struct search_task {
  const std::uint64_t* h_counts = nullptr;
  histogram_spec spec{};
  float max_abs = 0.0f;  ///< method::max only
  search_options opts{};
  double* h_curve = nullptr;  ///< optional, candidate_count(spec, opts) doubles
};

/// Searches every task (prefix-sum O(levels) per candidate for tensorrt, direct for mxnet),
/// spreading tasks and candidates over `threads` threads. Blocks until done.
status search(const search_task* tasks, std::int32_t num_tasks, search_result* results,
              int threads = 0) noexcept;

}  // namespace klcal::cpu
