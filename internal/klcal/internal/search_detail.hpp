// Internal host entry point of the threshold search (plain C++): the search with a path choice.
#pragma once

#include <cstddef>
#include <cstdint>

#include "klcal/cuda_stream.hpp"
#include "klcal/threshold.hpp"
#include "klcal/types.hpp"

// Not public API: klcal::search and the GPU tests use it.
namespace klcal::detail {

/// Which kernels klcal::search runs for a launch group (docs/design.md, GPU threshold search).
enum class search_path : int {
  automatic,     ///< fused for groups of at least one histogram per SM whose tasks all allow it,
                 ///< else multi-kernel (a single search always takes the multi-kernel path)
  multi_kernel,  ///< always prefix + candidates + finalize kernels
  fused,         ///< the fused kernel for every group; errc::invalid_option if a group does not
                 ///< allow it (an mxnet task, bins > search_fused_max_bins, or a device whose
                 ///< shared memory is too small)
};

/// klcal::search with the kernel path chosen by `path`; klcal::search is
/// search_with_path(search_path::automatic, ...). Same contract, same workspace size for every
/// path, and the same results bit for bit (tested in tests/gpu_search_test.cpp).
status search_with_path(search_path path, void* d_temp, std::size_t& temp_bytes,
                        const search_task* h_tasks, std::int32_t num_tasks,
                        search_result* d_results, cudaStream_t stream) noexcept;

}  // namespace klcal::detail
