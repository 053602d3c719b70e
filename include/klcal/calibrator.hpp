// Owning per-tensor GPU calibrator: device counts, range policy, statistics,
// add/merge/reset/compute.
#pragma once

#include "klcal/config.hpp"
#if !KLCAL_WITH_CUDA
#error "klcal was built without CUDA: no GPU API; use klcal/cpu.hpp, klcal/cpu_calibrator.hpp"
#endif

#include <cstddef>
#include <cstdint>
#include <vector>

#include "klcal/cuda_stream.hpp"
#include "klcal/state.hpp"
#include "klcal/types.hpp"

namespace klcal {

namespace detail {
struct gpu_calibrator_access;
}  // namespace detail

/// Where a GPU calibrator gets its device memory (counts, statistics, scratch). Plain function
/// pointers, so this header needs no CUDA type beyond cudaStream_t. Both hooks are
/// stream-ordered like cudaMallocAsync / cudaFreeAsync: memory from allocate(bytes, stream) may
/// be used by work on `stream`, and deallocate(p, bytes, stream) may reuse it once the work
/// enqueued on `stream` before it has run. allocate returns nullptr when it cannot allocate
/// (the calibrator then throws errc::out_of_memory); neither hook may throw. A
/// default-constructed allocator (both null) means cudaMallocAsync / cudaFreeAsync.
struct device_allocator {
  void* (*allocate)(std::size_t bytes, cudaStream_t stream, void* context) = nullptr;
  void (*deallocate)(void* p, std::size_t bytes, cudaStream_t stream, void* context) = nullptr;
  void* context = nullptr;  ///< passed to both hooks
};

/// Collects the histogram and exact statistics of one tensor on the GPU and searches its
/// threshold. Built only on the core GPU API (histogram.hpp, threshold.hpp); the range policy
/// is the one klcal::cpu::calibrator uses, so both give identical results on the same data.
///
/// - Owning and move-only, like rmm's device_buffer: it records the current device and the
///   stream given at construction (its "owning stream"), allocates on it through the
///   device_allocator, and frees stream-ordered on the owning stream in the destructor, with
///   its device made current for the call; the destructor never synchronizes and never throws.
///   The owning stream must therefore outlive the calibrator, or be replaced with set_stream().
/// - Every operation takes the stream it enqueues on and runs with the calibrator's device made
///   current. Work on different streams is not ordered by the calibrator: order them yourself
///   (events) when you switch streams, also before the destructor if you used other streams.
/// - Errors throw klcal::error with the status of numerics.md section 6.
/// - Only the functions marked "synchronizes" wait for the device.
class calibrator {
 public:
  /// Fixed range: bins every value into `spec` (abs or signed). Throws on an invalid spec.
  static calibrator fixed(const histogram_spec& spec, cudaStream_t stream,
                          const device_allocator& alloc = {});
  /// Two-pass range: `bins` bins over [0, hi) (abs) or [-hi, hi) (signed, e.g. for mxnet with an
  /// odd `bins`) with hi = max(max_abs of all data, 2^-64); see add_range() and end_range_pass().
  static calibrator two_pass(std::int32_t bins, cudaStream_t stream, layout kind = layout::abs,
                             const device_allocator& alloc = {});
  /// Streaming power-of-two range; `bins` must be a power of two (errc::bins_not_power_of_two).
  static calibrator streaming(std::int32_t bins, cudaStream_t stream,
                              const device_allocator& alloc = {});
  /// A calibrator that continues from a saved state, uploaded on `stream` (the host data is
  /// copied before the call returns; `s` may be destroyed then). Throws the errc of validate(s).
  static calibrator from_state(const calibrator_state& s, cudaStream_t stream,
                               const device_allocator& alloc = {});

  calibrator(calibrator&& other) noexcept;
  calibrator& operator=(calibrator&& other) noexcept;
  calibrator(const calibrator&) = delete;
  calibrator& operator=(const calibrator&) = delete;
  ~calibrator();

  /// Bins n device elements of type t (NaN/Inf counted, not binned) and updates the statistics.
  /// fixed: asynchronous. two_pass: only after end_range_pass(); bins only (the statistics
  /// already came from the first pass over the same data). streaming: synchronizes once per
  /// call to read the batch's max |x|, then folds the counts if the range has to grow.
  void add(const void* d_in, std::int64_t n, dtype t, cudaStream_t stream);

  /// First pass of the two-pass policy: statistics only (max |x|, counts of finite/NaN/Inf).
  /// Asynchronous. Throws errc::invalid_option for other policies or after end_range_pass().
  void add_range(const void* d_in, std::int64_t n, dtype t, cudaStream_t stream);

  /// Ends the first pass: hi = max(max_abs, 2^-64) (numerics.md 1.5). Synchronizes `stream`.
  void end_range_pass(cudaStream_t stream);

  /// Adds another calibrator's counts and statistics (numerics.md 1.4). Both must have the same
  /// policy and bin count; fixed and two-pass need identical specs (errc::invalid_option
  /// otherwise). Streaming calibrators are first brought to the larger range by pairwise folds.
  /// Asynchronous on `stream`; `other` must not be modified until the work has run.
  void merge(const calibrator& other, cudaStream_t stream);

  /// Back to empty: zero counts and empty statistics; streaming restarts at hi = 2^-64,
  /// two-pass at its first pass. Asynchronous.
  void reset(cudaStream_t stream);

  /// Searches the threshold with klcal::search. Synchronizes `stream` (it returns a host value).
  /// Throws the errc of validate(spec(), opts).
  search_result compute(const search_options& opts, cudaStream_t stream);

  /// Same search with the result left in device memory (*d_result); asynchronous and free of
  /// host round trips (method::max reads max |x| on the device).
  void compute_async(const search_options& opts, search_result* d_result, cudaStream_t stream);

  /// Copy of the counts (spec().bins entries). Synchronizes `stream`.
  std::vector<std::uint64_t> counts(cudaStream_t stream) const;
  /// Copy of the statistics. Synchronizes `stream`.
  tensor_stats stats(cudaStream_t stream) const;
  /// Copy of everything the calibrator knows (counts, statistics, range). Synchronizes `stream`.
  calibrator_state state(cudaStream_t stream) const;

  /// The owning stream (construction, frees), and the device the memory lives on.
  cudaStream_t stream() const noexcept { return stream_; }
  int device() const noexcept { return device_; }
  /// Makes `stream` the owning stream: later scratch frees and the destructor use it. Order it
  /// after the work on the old one yourself.
  void set_stream(cudaStream_t stream) noexcept { stream_ = stream; }

  /// The current spec: for streaming the current hi = 2^e; for two-pass hi is meaningful only
  /// after end_range_pass().
  const histogram_spec& spec() const noexcept { return range_.spec; }
  range_policy policy() const noexcept { return range_.policy; }
  /// Device counts and statistics, for use with the core API on the same stream.
  const std::uint64_t* device_counts() const noexcept { return d_counts_; }
  const tensor_stats* device_stats() const noexcept { return d_stats_; }

 private:
  friend struct detail::gpu_calibrator_access;  // in-tree distributed reductions (klcal::nccl)
  calibrator(const calibrator_state& s, cudaStream_t stream, const device_allocator& alloc);
  void release() noexcept;
  void* allocate(std::size_t bytes, cudaStream_t stream);
  int deallocate(void* p, std::size_t bytes, cudaStream_t stream) noexcept;
  void* scratch(std::size_t bytes, cudaStream_t stream);
  void bin(const void* d_in, std::int64_t n, dtype t, cudaStream_t stream);
  void stats_into(tensor_stats* d_stats, const void* d_in, std::int64_t n, dtype t,
                  cudaStream_t stream);
  void fold(std::int32_t doublings, cudaStream_t stream);

  // The range part of the state (policy, spec, exponent, range_done), as calibrator_state
  // fields with empty counts: the shared range policy reads and updates it.
  calibrator_state range_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  device_allocator alloc_{};
  std::uint64_t* d_counts_ = nullptr;
  tensor_stats* d_stats_ = nullptr;        ///< one block: stats, batch stats, result
  tensor_stats* d_batch_stats_ = nullptr;  ///< streaming: statistics of the current batch
  search_result* d_result_ = nullptr;      ///< compute(): the device copy of the result
  void* d_scratch_ = nullptr;
  std::size_t scratch_bytes_ = 0;
};

}  // namespace klcal
