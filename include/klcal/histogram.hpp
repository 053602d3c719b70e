// Core GPU API for histograms: device-wide, two-phase scratch protocol, accumulating, stream last.
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

// Conventions of every function in this header (docs/design.md, "Core GPU API"):
// - Called with d_temp == nullptr it only writes the required size to temp_bytes and returns.
//   Arguments are validated in both phases.
// - It never allocates, never synchronizes and never prints; all work is enqueued on `stream`,
//   so the calls can be captured into a CUDA graph.
// - Counts and statistics ACCUMULATE into the caller's buffers (zero them once yourself).
// - n == 0 is valid and leaves every output unchanged.
// - Pointers d_* are device pointers; any alignment of d_in is accepted.

/// Accumulates exact statistics (finite count, NaN and Inf counts, max |x|, min, max) of
/// `n` elements of type `t` into *d_stats. NaN and Inf never change max_abs/min/max.
/// Precondition: *d_stats was initialised (a default-constructed tensor_stats copied over).
status tensor_stats_accumulate(void* d_temp, std::size_t& temp_bytes, const void* d_in, dtype t,
                               std::int64_t n, tensor_stats* d_stats, cudaStream_t stream) noexcept;

/// Adds the histogram of `n` elements of type `t` to d_counts[0 .. spec.bins), binned exactly as
/// docs/numerics.md section 1 says (NaN and Inf are skipped; count them with
/// tensor_stats_accumulate). Any bin count 2..max_bins.
status histogram_accumulate(void* d_temp, std::size_t& temp_bytes, const void* d_in, dtype t,
                            std::int64_t n, const histogram_spec& spec, std::uint64_t* d_counts,
                            cudaStream_t stream) noexcept;

/// One tensor of a batched histogram: its data, element type, histogram spec and counts.
struct histogram_task {
  const void* d_in = nullptr;
  std::int64_t n = 0;
  dtype type = dtype::f32;
  histogram_spec spec{};
  std::uint64_t* d_counts = nullptr;  ///< spec.bins counts, accumulated
};

/// Histograms of many tensors in as few launches as possible (one for up to a few thousand
/// tensors). The task array is read on the host during the call and may be freed afterwards:
/// its contents are packed into kernel parameters or the workspace with no host
/// synchronization. Results equal calling histogram_accumulate once per task, bit for bit.
status histogram_accumulate_batched(void* d_temp, std::size_t& temp_bytes,
                                    const histogram_task* h_tasks, std::int32_t num_tasks,
                                    cudaStream_t stream) noexcept;

/// Streaming range policy: merges adjacent bin pairs `doublings` times in place
/// (new[j] = old[2j] + old[2j+1], upper half zeroed), which is what doubling `hi` means for a
/// histogram whose bin count is a power of two. doublings >= bins' log2 zeroes all but bin 0.
status histogram_fold_pow2(std::uint64_t* d_counts, std::int32_t bins, std::int32_t doublings,
                           cudaStream_t stream) noexcept;

}  // namespace klcal
