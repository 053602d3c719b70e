// Core GPU API for threshold search: many histograms, all candidates in parallel, one launch.
#pragma once

#include "klcal/config.hpp"
#if !KLCAL_WITH_CUDA
#error "klcal was built without CUDA: no GPU API; use klcal/cpu.hpp, klcal/cpu_calibrator.hpp"
#endif

#include <cstddef>
#include <cstdint>

#include "klcal/cuda_stream.hpp"
#include "klcal/types.hpp"

namespace klcal {

/// One histogram to search on the device.
struct search_task {
  const std::uint64_t* d_counts = nullptr;  ///< spec.bins counts in device memory
  histogram_spec spec{};                    ///< layout and range the counts were collected with
  float max_abs = 0.0f;                     ///< exact largest finite |x| (used by method::max only)
  search_options opts{};
  double* d_curve = nullptr;  ///< optional: candidate_count(spec, opts) scores, or nullptr
};

/// Searches every task's threshold (docs/numerics.md 2 to 5) and writes d_results[k] for task k.
/// Two-phase scratch protocol as in histogram.hpp: d_temp == nullptr only sets temp_bytes; no
/// allocation, no synchronization; the host task array may be freed when the call returns.
status search(void* d_temp, std::size_t& temp_bytes, const search_task* h_tasks,
              std::int32_t num_tasks, search_result* d_results, cudaStream_t stream) noexcept;

}  // namespace klcal
