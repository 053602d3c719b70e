// Owning per-tensor GPU calibrator: device counts, range policy, statistics,
// add/merge/reset/compute.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "klcal/cuda_stream.hpp"
#include "klcal/state.hpp"
#include "klcal/types.hpp"

namespace klcal {

/// Collects the histogram and exact statistics of one tensor on the GPU and searches its
/// threshold. Built only on the core GPU API (histogram.hpp, threshold.hpp).
///
/// - Owning and move-only; device memory comes from cudaMallocAsync on the stream given at
///   construction, scratch grows with cudaMallocAsync/cudaFreeAsync on the stream of the call
///   that needs more. The destructor synchronizes the device (cudaDeviceSynchronize) and frees
///   with cudaFree; it never throws.
/// - Every operation takes the stream it enqueues on. Work on different streams is not ordered
///   by the calibrator: order them yourself (events) when you switch streams.
/// - Errors throw klcal::error with the status of numerics.md section 6.
/// - Only the functions marked "synchronizes" wait for the device.
class calibrator {
 public:
  /// Fixed range: bins every value into `spec` (abs or signed). Throws on an invalid spec.
  static calibrator fixed(const histogram_spec& spec, cudaStream_t stream);
  /// Two-pass range: `bins` bins over [0, hi) (abs) or [-hi, hi) (signed, e.g. for mxnet with an
  /// odd `bins`) with hi = max(max_abs of all data, 2^-64); see add_range() and end_range_pass().
  static calibrator two_pass(std::int32_t bins, cudaStream_t stream, layout kind = layout::abs);
  /// Streaming power-of-two range; `bins` must be a power of two (errc::bins_not_power_of_two).
  static calibrator streaming(std::int32_t bins, cudaStream_t stream);

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

  /// The current spec: for streaming the current hi = 2^e; for two-pass hi is meaningful only
  /// after end_range_pass().
  const histogram_spec& spec() const noexcept { return spec_; }
  range_policy policy() const noexcept { return policy_; }
  /// Device counts and statistics, for use with the core API on the same stream.
  const std::uint64_t* device_counts() const noexcept { return d_counts_; }
  const tensor_stats* device_stats() const noexcept { return d_stats_; }

 private:
  calibrator(range_policy p, const histogram_spec& spec, cudaStream_t stream);
  void release() noexcept;
  void* scratch(std::size_t bytes, cudaStream_t stream);
  void bin(const void* d_in, std::int64_t n, dtype t, cudaStream_t stream);
  void stats_into(tensor_stats* d_stats, const void* d_in, std::int64_t n, dtype t,
                  cudaStream_t stream);
  void grow_to(int exp, cudaStream_t stream);

  range_policy policy_ = range_policy::fixed;
  histogram_spec spec_{};
  int exp_ = -64;            ///< streaming: hi = 2^exp_
  bool range_done_ = false;  ///< two-pass: end_range_pass() was called
  std::uint64_t* d_counts_ = nullptr;
  tensor_stats* d_stats_ = nullptr;
  tensor_stats* d_batch_stats_ = nullptr;  ///< streaming: statistics of the current batch
  search_result* d_result_ = nullptr;      ///< compute(): the device copy of the result
  void* d_scratch_ = nullptr;
  std::size_t scratch_bytes_ = 0;
};

}  // namespace klcal
