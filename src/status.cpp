// Names and messages of klcal status codes.
#include "klcal/status.hpp"

#include <string>

namespace klcal {

const char* to_string(errc code) noexcept {
  switch (code) {
    case errc::ok: return "ok";
    case errc::too_few_bins: return "too_few_bins";
    case errc::too_many_bins: return "too_many_bins";
    case errc::start_bin_out_of_range: return "start_bin_out_of_range";
    case errc::invalid_stride: return "invalid_stride";
    case errc::invalid_bits: return "invalid_bits";
    case errc::invalid_range: return "invalid_range";
    case errc::bins_not_odd: return "bins_not_odd";
    case errc::bins_not_power_of_two: return "bins_not_power_of_two";
    case errc::null_pointer: return "null_pointer";
    case errc::workspace_too_small: return "workspace_too_small";
    case errc::invalid_percentile: return "invalid_percentile";
    case errc::layout_mismatch: return "layout_mismatch";
    case errc::invalid_dtype: return "invalid_dtype";
    case errc::invalid_count: return "invalid_count";
    case errc::invalid_option: return "invalid_option";
    case errc::cuda_error: return "cuda_error";
    case errc::out_of_memory: return "out_of_memory";
    case errc::io_error: return "io_error";
    case errc::format_error: return "format_error";
    case errc::comm_error: return "comm_error";
  }
  return "unknown_error";
}

std::string to_string(status s) {
  std::string out = to_string(s.code);
  // The core library does not link the CUDA runtime, so the error is named by its number; the
  // GPU calibrator's messages add cudaGetErrorName (klcal/internal/cuda_status.hpp).
  if (s.cuda != 0) out += " (cudaError " + std::to_string(s.cuda) + ")";
  return out;
}

}  // namespace klcal
