// In-tree access to the calibrators' owned data for the distributed reductions (collective.cpp,
// nccl.cpp): the reductions change counts in place instead of copying states around.
#pragma once

#include "klcal/config.hpp"
#include "klcal/cpu_calibrator.hpp"
#include "klcal/state.hpp"
#if KLCAL_WITH_CUDA
#include "klcal/calibrator.hpp"
#endif

namespace klcal::detail {

/// The CPU calibrator's state (counts, statistics and range), to be changed only in ways that
/// keep validate(state) true.
struct cpu_calibrator_access {
  static calibrator_state& state(cpu::calibrator& c) noexcept { return c.state_; }
};

#if KLCAL_WITH_CUDA
/// The GPU calibrator's range part (a calibrator_state with empty counts) and device buffers.
struct gpu_calibrator_access {
  static calibrator_state& range(calibrator& c) noexcept { return c.range_; }
  static std::uint64_t* counts(calibrator& c) noexcept { return c.d_counts_; }
  static tensor_stats* stats(calibrator& c) noexcept { return c.d_stats_; }
  static void fold(calibrator& c, std::int32_t doublings, cudaStream_t stream) {
    c.fold(doublings, stream);
  }
};
#endif

}  // namespace klcal::detail
