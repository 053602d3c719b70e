// Declarations shared by the files of the klcal._klcal extension module (nanobind).
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "klcal/config.hpp"
#include "klcal/cpu_calibrator.hpp"
#include "klcal/status.hpp"
#include "klcal/types.hpp"

#if KLCAL_WITH_CUDA
#include <cuda_runtime_api.h>

#include "klcal/calibrator.hpp"
#endif

namespace klcal::python {

namespace nb = nanobind;

// ---- errors (errors.cpp) --------------------------------------------------------------------

/// Which klcal.Error subclass a Python-side check raises when the errc alone does not say it.
enum class error_kind { by_status, device };

/// An error found by the bindings themselves (wrong device, unsupported dtype, ...): carries the
/// library status like klcal::error, and the Python class to raise.
class python_error : public error {
 public:
  python_error(status s, const std::string& what, error_kind kind = error_kind::by_status)
      : error(s, what), kind_(kind) {}
  error_kind kind() const noexcept { return kind_; }

 private:
  error_kind kind_;
};

/// Binds klcal.Errc, loads klcal.Error and its subclasses (klcal/_errors.py) and registers the
/// translator of klcal::error (and python_error) into them.
void register_errors(nb::module_& m);

/// Throws python_error(s, what, kind).
[[noreturn]] void raise(status s, const std::string& what, error_kind kind = error_kind::by_status);

// ---- devices ------------------------------------------------------------------------------------

/// Where a calibrator keeps its counts: the host (ordinal -1) or one CUDA device.
struct device_spec {
  bool cuda = false;
  int ordinal = -1;
  std::string str() const { return cuda ? "cuda:" + std::to_string(ordinal) : "cpu"; }
};

/// Parses "cpu", "cuda" (the current CUDA device) or "cuda:N"; raises klcal.DeviceError for
/// anything else, for CUDA in a build without it, and for a device that does not exist.
device_spec parse_device(const std::string& text);

// ---- inputs (input.cpp) -------------------------------------------------------------------------

/// One tensor as the library sees it: a dense block of n elements of type t. `owner` keeps the
/// producer's memory alive (and its DLPack deleter pending) until the input is dropped; `copy`
/// holds the gathered elements of a strided host array (the one documented copy).
struct input {
  nb::ndarray<nb::ro> owner;
  const void* data = nullptr;
  std::int64_t n = 0;
  dtype type = dtype::f32;
  bool copied = false;
  std::vector<unsigned char> copy;
#if KLCAL_WITH_CUDA
  cudaStream_t stream = nullptr;  ///< CUDA inputs: the stream the work is ordered on
#endif
};

/// Imports `x` (a NumPy array, any DLPack producer, a DLPack capsule) for a calibrator on
/// `target`. For a CUDA target `stream` is None (the producer's current stream: torch, CuPy;
/// the legacy default stream otherwise), an int handle, or an object with `cuda_stream` or
/// `ptr`. `who` names the Python call in messages. Needs the GIL.
input import_input(nb::handle x, const device_spec& target, nb::handle stream, const char* who);

/// Dense-block view of a (shape, strides) tensor: when its elements exactly fill one block of
/// memory in some order (C or F order, any permutation of axes, negative strides), returns the
/// offset in elements from the DLPack data pointer to the block's first element. nullopt when
/// the elements leave gaps or overlap.
std::optional<std::int64_t> dense_block_offset(std::int32_t ndim, const std::int64_t* shape,
                                               const std::int64_t* strides);

// ---- calibrator (calibrator.cpp) ----------------------------------------------------------------

#if KLCAL_WITH_CUDA
/// A GPU calibrator with the stream of its latest operation: an operation on another stream is
/// first ordered after the previous one by an event, and the destructor orders the owning stream
/// (frees) after the latest work, so Python users may switch streams freely.
struct gpu_calibrator {
  explicit gpu_calibrator(calibrator c, int device);
  gpu_calibrator(const gpu_calibrator&) = delete;
  gpu_calibrator& operator=(const gpu_calibrator&) = delete;
  ~gpu_calibrator();
  /// Makes `s` wait for the latest operation's stream (when they differ) and records it.
  void use(cudaStream_t s);

  calibrator cal;
  int device = 0;
  cudaStream_t last = nullptr;
  cudaEvent_t event = nullptr;
};
#endif

/// The object behind klcal.Calibrator: one CPU or GPU calibrator plus a lock (the GIL is released
/// while it works, so two Python threads may call it at once).
struct py_calibrator {
  device_spec device;
  int threads = 0;
  std::optional<cpu::calibrator> cpu;
#if KLCAL_WITH_CUDA
  std::unique_ptr<gpu_calibrator> gpu;
#endif
  mutable std::mutex mutex;
  // Test-only: the element pointer and copy flag of the latest add()/add_range() input.
  std::uintptr_t last_pointer = 0;
  bool last_copied = false;

  /// The state as a plain value (a device copy synchronizes the calibrator's latest stream).
  calibrator_state state() const;
  histogram_spec spec() const;
  range_policy policy() const;
};

/// Binds klcal.Calibrator, klcal.Result, klcal.Stats, add_many and the state-file functions.
void register_calibrator(nb::module_& m);

/// Replaces everything `c` knows by `s` (a valid state), on c's device, keeping its threads.
void replace_state(py_calibrator& c, calibrator_state s);

/// Binds the engine-neutral all-reduce that klcal.distributed drives (distributed.cpp).
void register_distributed(nb::module_& m);

/// Parses method/rules/zero_bin names into search options, raising klcal.InvalidArgumentError.
search_options make_search_options(const std::string& method, const std::string& rules,
                                   double percentile, int bits, bool is_unsigned, int start_bin,
                                   int stride, const std::string& zero_bin);

}  // namespace klcal::python
