// klcal::nccl (optional component klcal::nccl): exact all-reduce of GPU calibrators over NCCL.
#pragma once

#include "klcal/config.hpp"
#if !KLCAL_WITH_CUDA
#error "klcal was built without CUDA: no klcal::nccl; use klcal/mpi.hpp for CPU calibrators"
#endif

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <map>
#include <string>

#include "klcal/calibrator.hpp"

namespace klcal::nccl {

/// All-reduces GPU calibrators across the ranks of `comm` so that every rank ends with the
/// calibrators of one process over all ranks' data, bit for bit (docs/distributed.md): the same
/// protocol as klcal::mpi::all_reduce, with counts and statistics staying on the device.
/// Collective: every rank calls it with the same tensor names, policies, bins, layouts and
/// fixed ranges (a mismatch throws errc::invalid_option on every rank before anything is
/// reduced); a rank with no data passes empty calibrators.
///
/// Every calibrator must live on the device of `comm`, and the work enqueued on them must be
/// ordered before `stream` (use the same stream, or events). Synchronizes `stream` for the
/// agreement all-reduce (3 words) and, when any calibrator is streaming, for the MAX of the
/// exponents (the range policy needs them on the host); then folds, packs every count and
/// statistic into one device buffer and reduces it with one grouped NCCL call (SUM of the
/// counts, MAX of max |x| and max, MIN of min), and unpacks, asynchronously on `stream`.
/// NCCL errors throw errc::comm_error, CUDA errors errc::cuda_error.
void all_reduce(std::map<std::string, calibrator>& calibrators, ncclComm_t comm,
                cudaStream_t stream);

/// Ends the first pass of two-pass GPU calibrators on every rank with the range of all ranks'
/// data (MAX of max |x|), like klcal::mpi::end_range_pass. Synchronizes `stream` (the range is
/// a host value). Every calibrator must be two-pass and in its first pass, on every rank.
void end_range_pass(std::map<std::string, calibrator>& calibrators, ncclComm_t comm,
                    cudaStream_t stream);

}  // namespace klcal::nccl
