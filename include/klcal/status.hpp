// Status codes of every noexcept klcal function, and the exception the owning layers throw.
#pragma once

#include <stdexcept>
#include <string>

namespace klcal {

/// Why a klcal call failed. Every invalid argument of docs/numerics.md section 6 has its own code.
enum class errc : int {
  ok = 0,
  too_few_bins,            ///< bins < 2
  too_many_bins,           ///< bins > klcal::max_bins (2^24)
  start_bin_out_of_range,  ///< start_bin < 1 or bins < start_bin
  invalid_stride,          ///< stride < 1
  invalid_bits,            ///< bits outside 2..16
  invalid_range,           ///< hi <= lo, a non-finite bound or width, or lo != 0 for the abs layout
  bins_not_odd,           ///< mxnet rule set with an even bin count or a range other than [-hi, hi]
  bins_not_power_of_two,  ///< streaming range policy with a bin count that is not a power of two
  null_pointer,           ///< a null pointer where data is required (n > 0)
  workspace_too_small,    ///< temp_bytes smaller than the size query returned
  invalid_percentile,     ///< percentile outside [0, 100] or NaN
  layout_mismatch,        ///< a method used on a layout it is not defined for
  invalid_dtype,          ///< a dtype value outside klcal::dtype
  invalid_count,          ///< a negative element count or tensor count
  invalid_option,         ///< any other option value outside its documented domain
  cuda_error,             ///< the CUDA runtime failed; status::cuda holds its cudaError_t
  out_of_memory,          ///< a host or device allocation failed (owning layers only)
  io_error,               ///< a file could not be opened, read or written
  format_error,           ///< a file's contents do not follow its format
  comm_error,             ///< a collective engine (MPI, NCCL, torch.distributed) failed
};

/// Result of a klcal call: a klcal::errc plus, for errc::cuda_error, the cudaError_t value
/// (stored as int so that this header compiles without the CUDA toolkit).
struct [[nodiscard]] status {
  errc code = errc::ok;
  int cuda = 0;  ///< cudaError_t of the failing CUDA call, 0 (cudaSuccess) otherwise

  constexpr status() noexcept = default;
  constexpr status(errc c, int cuda_err = 0) noexcept : code(c), cuda(cuda_err) {}  // NOLINT
  constexpr bool ok() const noexcept { return code == errc::ok; }
  constexpr explicit operator bool() const noexcept { return ok(); }
  friend constexpr bool operator==(status a, status b) noexcept {
    return a.code == b.code && a.cuda == b.cuda;
  }
  friend constexpr bool operator!=(status a, status b) noexcept { return !(a == b); }
};

/// A short English name of the error code ("invalid_range", ...). Never null.
const char* to_string(errc code) noexcept;

/// A one-line description of a status, including the CUDA error name when there is one.
std::string to_string(status s);

/// Exception thrown by the owning layers (calibrator, formats, CLI); carries the status.
class error : public std::runtime_error {
 public:
  error(status s, const std::string& what) : std::runtime_error(what), status_(s) {}
  status code() const noexcept { return status_; }

 private:
  status status_;
};

}  // namespace klcal
