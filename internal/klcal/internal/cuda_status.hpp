// The one mapping from cudaError_t to klcal::status, the launch-check macros and the device guard
// (CUDA side only).
#pragma once

#include <cuda_runtime_api.h>

#include <new>
#include <string>

#include "klcal/status.hpp"

namespace klcal::detail {

/// cudaSuccess -> ok; cudaErrorMemoryAllocation -> errc::out_of_memory; anything else ->
/// errc::cuda_error. The cudaError_t value is kept in status::cuda in both failure cases.
inline status from_cuda(cudaError_t e) noexcept {
  if (e == cudaSuccess) return status{};
  return status{e == cudaErrorMemoryAllocation ? errc::out_of_memory : errc::cuda_error,
                static_cast<int>(e)};
}

/// "cudaErrorInvalidValue: invalid argument" for messages of the owning layers.
inline std::string cuda_error_text(int e) {
  const auto c = static_cast<cudaError_t>(e);
  return std::string(cudaGetErrorName(c)) + ": " + cudaGetErrorString(c);
}

/// Throws klcal::error(from_cuda(e)) with "<what>: <cuda_error_text>" when `e` failed: the one
/// cudaError_t-to-exception step of the owning layers (calibrator, NCCL, tool, Python binding).
inline void throw_on_cuda_error(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw error(from_cuda(e), what + ": " + cuda_error_text(e));
}

/// A status as text, with the CUDA error's name and description when it carries one.
inline std::string describe(status s) {
  std::string out = to_string(s.code);
  if (s.cuda != 0) out += " (" + cuda_error_text(s.cuda) + ")";
  return out;
}

/// Makes `device` current for its lifetime and restores the previous one (no-op when equal).
/// A failing cudaGetDevice/cudaSetDevice throws klcal::error (errc::cuda_error, the CUDA error
/// kept), so no operation ever runs on the wrong device; the std::nothrow form is for
/// destructors and release paths, where it does its best and never throws.
class device_guard {
 public:
  explicit device_guard(int device) {
    throw_on_cuda_error(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) {
      throw_on_cuda_error(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")");
      restore_ = true;
    }
  }
  device_guard(int device, const std::nothrow_t& /*unused*/) noexcept {
    if (cudaGetDevice(&previous_) == cudaSuccess && previous_ != device &&
        cudaSetDevice(device) == cudaSuccess) {
      restore_ = true;
    }
  }
  ~device_guard() {
    if (restore_) (void)cudaSetDevice(previous_);
  }
  device_guard(const device_guard&) = delete;
  device_guard& operator=(const device_guard&) = delete;

 private:
  int previous_ = 0;
  bool restore_ = false;
};

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
