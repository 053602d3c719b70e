// Interface between the CPU search scheduler (cpu_search.cpp) and its per-method files.
#pragma once

#include <cstdint>
#include <functional>

#include "klcal/cpu.hpp"

namespace klcal::cpu::detail {

/// Runs f(b, e) on contiguous blocks of [0, count) over up to `threads` threads. An exception
/// (std::bad_alloc) thrown by f on any thread is rethrown here after every thread has joined.
/// Defined in cpu_search.cpp.
void parallel_blocks(std::int64_t count, int threads,
                     const std::function<void(std::int64_t, std::int64_t)>& f);

/// What a method chose for one task (docs/numerics.md 2 to 4). search_one turns it into the
/// search_result, or into the degenerate result of numerics.md 5.3 for an empty or all-zero
/// histogram (the choice is then ignored, but the curve is still written).
struct choice {
  std::int32_t index = 0;
  double score = 0.0;
  double amax = 0.0;
  double clipped = 0.0;  ///< clipped_fraction
  bool all_inf = false;  ///< every entropy candidate is +inf
};

// Each method scores its `ncand` candidates into `curve` over up to `threads` threads and picks
// one. `T` is the total of task.h_counts; the task has passed validate(). Throw std::bad_alloc
// only.
choice search_tensorrt(const search_task& task, std::uint64_t T, double* curve, std::int64_t ncand,
                       int threads);
choice search_mxnet(const search_task& task, std::uint64_t T, double* curve, std::int64_t ncand,
                    int threads);
choice search_mse(const search_task& task, std::uint64_t T, double* curve, std::int64_t ncand,
                  int threads);
/// The methods without candidates (no curve, no threads).
choice search_percentile(const search_task& task, std::uint64_t T) noexcept;
choice search_max(const search_task& task) noexcept;

}  // namespace klcal::cpu::detail
