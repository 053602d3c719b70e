// Kernel attributes set once per device and process, never lowered (safe under concurrent
// launches).
#pragma once

#include <cuda_runtime.h>

#include <atomic>

#include "klcal/internal/cuda_status.hpp"

namespace klcal::detail {

/// Devices tracked individually; a device index beyond this sets the attribute on every call
/// (always to the same value, so that is still safe, only slower).
inline constexpr int max_tracked_devices = 64;

/// Raises Kernel's dynamic shared memory limit on `device` to `bytes` the first time it is
/// called for that device. Callers always pass the same value for a given Kernel and device
/// (the most that kernel ever launches with there), so the limit is never lowered under another
/// thread's launch or a captured graph, and two threads racing here both set the same value.
template <auto Kernel>
status raise_dynamic_smem_once(int device, int bytes) noexcept {
  static std::atomic<bool> done[max_tracked_devices] = {};
  const bool tracked = device >= 0 && device < max_tracked_devices;
  if (tracked && done[device].load(std::memory_order_acquire)) return {};
  KLCAL_TRY(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  if (tracked) done[device].store(true, std::memory_order_release);
  return {};
}

}  // namespace klcal::detail
