// Shared device-side plumbing: status conversion and the KLCAL_TRY launch-check macro.
#pragma once

#include <cuda_runtime.h>

#include "klcal/status.hpp"

namespace klcal::detail {

inline status from_cuda(cudaError_t e) noexcept {
  return e == cudaSuccess ? status{} : status{errc::cuda_error, static_cast<int>(e)};
}

}  // namespace klcal::detail

/// Evaluates a cudaError_t expression (a runtime call, or cudaGetLastError() after a launch)
/// and returns a klcal::status from the enclosing function when it failed.
#define KLCAL_TRY(expr)                                                                   \
  do {                                                                                    \
    const cudaError_t klcal_try_err_ = (expr);                                            \
    if (klcal_try_err_ != cudaSuccess) return ::klcal::detail::from_cuda(klcal_try_err_); \
  } while (0)

/// Propagates a failed klcal::status from the enclosing function.
#define KLCAL_CHECK(expr)                          \
  do {                                             \
    const ::klcal::status klcal_chk_st_ = (expr);  \
    if (!klcal_chk_st_.ok()) return klcal_chk_st_; \
  } while (0)
