// Owning GPU calibrator: range policies, statistics, merge and search on top of the core GPU API.
#ifdef KLCAL_WITH_CUDA

#include "klcal/calibrator.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "histogram_detail.cuh"
#include "klcal/histogram.hpp"
#include "klcal/threshold.hpp"

namespace klcal {
namespace {

[[noreturn]] void fail(status s, const std::string& what) {
  throw error(s, "klcal::calibrator: " + what + ": " + to_string(s));
}

void check(status s, const char* what) {
  if (!s.ok()) fail(s, what);
}

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    fail(status{e == cudaErrorMemoryAllocation ? errc::out_of_memory : errc::cuda_error,
                static_cast<int>(e)},
         what);
  }
}

constexpr int min_exp = -64;
constexpr int max_exp = 127;

histogram_spec streaming_spec(std::int32_t bins, int e) {
  histogram_spec s;
  s.kind = layout::abs;
  s.bins = bins;
  s.lo = 0.0f;
  s.hi = std::ldexp(1.0f, e);
  return s;
}

bool same_spec(const histogram_spec& a, const histogram_spec& b) {
  return a.kind == b.kind && a.bins == b.bins && std::memcmp(&a.lo, &b.lo, sizeof a.lo) == 0 &&
         std::memcmp(&a.hi, &b.hi, sizeof a.hi) == 0;
}

}  // namespace

calibrator calibrator::fixed(const histogram_spec& spec, cudaStream_t stream) {
  check(validate(spec), "fixed(spec)");
  return calibrator(range_policy::fixed, spec, stream);
}

namespace {

/// Two-pass spec for a given hi: [0, hi) for abs, [-hi, hi) for signed (numerics.md 1.5).
histogram_spec two_pass_spec(layout kind, std::int32_t bins, float hi) {
  histogram_spec s;
  s.kind = kind;
  s.bins = bins;
  s.hi = hi;
  s.lo = kind == layout::signed_ ? -hi : 0.0f;
  return s;
}

}  // namespace

calibrator calibrator::two_pass(std::int32_t bins, cudaStream_t stream, layout kind) {
  if (kind != layout::abs && kind != layout::signed_) fail(errc::invalid_option, "two_pass(kind)");
  // hi = 2^-64 is a placeholder until end_range_pass().
  const histogram_spec s = two_pass_spec(kind, bins, std::ldexp(1.0f, min_exp));
  check(validate(s), "two_pass(bins)");
  return calibrator(range_policy::two_pass, s, stream);
}

calibrator calibrator::streaming(std::int32_t bins, cudaStream_t stream) {
  const histogram_spec s = streaming_spec(bins, min_exp);
  check(validate(s), "streaming(bins)");
  if ((bins & (bins - 1)) != 0) fail(errc::bins_not_power_of_two, "streaming(bins)");
  return calibrator(range_policy::streaming, s, stream);
}

calibrator::calibrator(range_policy p, const histogram_spec& spec, cudaStream_t stream)
    : policy_(p), spec_(spec) {
  const std::size_t counts_bytes = static_cast<std::size_t>(spec.bins) * sizeof(std::uint64_t);
  try {
    check_cuda(cudaMallocAsync(reinterpret_cast<void**>(&d_counts_), counts_bytes, stream),
               "cudaMallocAsync(counts)");
    check_cuda(cudaMallocAsync(reinterpret_cast<void**>(&d_stats_),
                               2 * sizeof(tensor_stats) + sizeof(search_result), stream),
               "cudaMallocAsync(stats)");
    d_batch_stats_ = d_stats_ + 1;
    d_result_ = reinterpret_cast<search_result*>(d_stats_ + 2);
    reset(stream);
  } catch (...) {
    release();
    throw;
  }
}

calibrator::calibrator(calibrator&& o) noexcept {
  *this = std::move(o);
}

calibrator& calibrator::operator=(calibrator&& o) noexcept {
  if (this != &o) {
    release();
    policy_ = o.policy_;
    spec_ = o.spec_;
    exp_ = o.exp_;
    range_done_ = o.range_done_;
    d_counts_ = std::exchange(o.d_counts_, nullptr);
    d_stats_ = std::exchange(o.d_stats_, nullptr);
    d_batch_stats_ = std::exchange(o.d_batch_stats_, nullptr);
    d_result_ = std::exchange(o.d_result_, nullptr);
    d_scratch_ = std::exchange(o.d_scratch_, nullptr);
    scratch_bytes_ = std::exchange(o.scratch_bytes_, 0);
  }
  return *this;
}

calibrator::~calibrator() {
  release();
}

void calibrator::release() noexcept {
  // Wait for all outstanding work on the memory, whatever stream it was used on, then free:
  // the stream-ordered cudaFreeAsync would need a stream that may no longer exist.
  if (d_counts_ != nullptr || d_stats_ != nullptr || d_scratch_ != nullptr)
    (void)cudaDeviceSynchronize();
  if (d_counts_ != nullptr) (void)cudaFree(d_counts_);
  if (d_stats_ != nullptr) (void)cudaFree(d_stats_);
  if (d_scratch_ != nullptr) (void)cudaFree(d_scratch_);
  d_counts_ = nullptr;
  d_stats_ = d_batch_stats_ = nullptr;
  d_result_ = nullptr;
  d_scratch_ = nullptr;
  scratch_bytes_ = 0;
}

void* calibrator::scratch(std::size_t bytes, cudaStream_t stream) {
  if (bytes <= scratch_bytes_) return d_scratch_;
  if (d_scratch_ != nullptr)
    check_cuda(cudaFreeAsync(d_scratch_, stream), "cudaFreeAsync(scratch)");
  d_scratch_ = nullptr;
  scratch_bytes_ = 0;
  check_cuda(cudaMallocAsync(&d_scratch_, bytes, stream), "cudaMallocAsync(scratch)");
  scratch_bytes_ = bytes;
  return d_scratch_;
}

void calibrator::bin(const void* d_in, std::int64_t n, dtype t, cudaStream_t stream) {
  std::size_t tb = 0;
  check(histogram_accumulate(nullptr, tb, d_in, t, n, spec_, d_counts_, stream), "add");
  void* temp = scratch(tb, stream);
  check(histogram_accumulate(temp, tb, d_in, t, n, spec_, d_counts_, stream), "add");
}

void calibrator::stats_into(tensor_stats* d_stats, const void* d_in, std::int64_t n, dtype t,
                            cudaStream_t stream) {
  std::size_t tb = 0;
  check(tensor_stats_accumulate(nullptr, tb, d_in, t, n, d_stats, stream), "statistics");
  void* temp = scratch(tb, stream);
  check(tensor_stats_accumulate(temp, tb, d_in, t, n, d_stats, stream), "statistics");
}

void calibrator::grow_to(int e, cudaStream_t stream) {
  if (e <= exp_) return;
  check(histogram_fold_pow2(d_counts_, spec_.bins, e - exp_, stream), "fold");
  exp_ = e;
  spec_ = streaming_spec(spec_.bins, e);
}

void calibrator::add(const void* d_in, std::int64_t n, dtype t, cudaStream_t stream) {
  switch (policy_) {
    case range_policy::fixed:
      // One pass over the data for both the counts and the statistics.
      check(detail::histogram_stats_accumulate(d_in, t, n, spec_, d_counts_, d_stats_, stream),
            "add");
      return;
    case range_policy::two_pass:
      if (!range_done_) fail(errc::invalid_option, "add() before end_range_pass()");
      bin(d_in, n, t, stream);
      return;
    case range_policy::streaming: {
      // Argument errors first, before anything is enqueued.
      std::size_t tb = 0;
      check(histogram_accumulate(nullptr, tb, d_in, t, n, spec_, d_counts_, stream), "add");
      if (n == 0) return;
      check(detail::init_stats(d_batch_stats_, stream), "add");
      stats_into(d_batch_stats_, d_in, n, t, stream);
      tensor_stats batch;
      check_cuda(
          cudaMemcpyAsync(&batch, d_batch_stats_, sizeof batch, cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync(batch stats)");
      check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
      // numerics.md 1.5: while max_abs >= hi and e < 127, e += 1.
      int e = exp_;
      while (e < max_exp && static_cast<double>(batch.max_abs) >= std::ldexp(1.0, e)) ++e;
      grow_to(e, stream);
      check(detail::merge_stats(d_stats_, d_batch_stats_, stream), "add");
      bin(d_in, n, t, stream);
      return;
    }
  }
}

void calibrator::add_range(const void* d_in, std::int64_t n, dtype t, cudaStream_t stream) {
  if (policy_ != range_policy::two_pass) fail(errc::invalid_option, "add_range() needs two_pass");
  if (range_done_) fail(errc::invalid_option, "add_range() after end_range_pass()");
  stats_into(d_stats_, d_in, n, t, stream);
}

void calibrator::end_range_pass(cudaStream_t stream) {
  if (policy_ != range_policy::two_pass)
    fail(errc::invalid_option, "end_range_pass() needs two_pass");
  if (range_done_) fail(errc::invalid_option, "end_range_pass() called twice");
  const tensor_stats s = stats(stream);
  // numerics.md 1.5: hi = max(max_abs, 2^-64); the floor also covers subnormal maxima.
  spec_ = two_pass_spec(spec_.kind, spec_.bins, std::max(s.max_abs, std::ldexp(1.0f, min_exp)));
  check(validate(spec_), "end_range_pass");
  range_done_ = true;
}

void calibrator::merge(const calibrator& other, cudaStream_t stream) {
  if (this == &other) fail(errc::invalid_option, "merge() with itself");
  if (other.d_counts_ == nullptr || d_counts_ == nullptr)
    fail(errc::null_pointer, "merge() with a moved-from calibrator");
  if (policy_ != other.policy_ || spec_.bins != other.spec_.bins)
    fail(errc::invalid_option, "merge() of different policies or bin counts");
  const std::int64_t bins = spec_.bins;
  if (policy_ == range_policy::streaming) {
    grow_to(other.exp_, stream);
    if (other.exp_ < exp_) {
      // Fold a copy of the other's counts up to our range, then add it.
      auto* tmp = static_cast<std::uint64_t*>(scratch(bins * sizeof(std::uint64_t), stream));
      check_cuda(cudaMemcpyAsync(tmp, other.d_counts_, bins * sizeof(std::uint64_t),
                                 cudaMemcpyDeviceToDevice, stream),
                 "cudaMemcpyAsync(merge)");
      check(histogram_fold_pow2(tmp, spec_.bins, exp_ - other.exp_, stream), "merge");
      check(detail::add_counts(d_counts_, tmp, bins, stream), "merge");
    } else {
      check(detail::add_counts(d_counts_, other.d_counts_, bins, stream), "merge");
    }
  } else {
    if (policy_ == range_policy::two_pass && (!range_done_ || !other.range_done_))
      fail(errc::invalid_option, "merge() of two-pass calibrators before end_range_pass()");
    if (!same_spec(spec_, other.spec_)) fail(errc::invalid_option, "merge() of different specs");
    check(detail::add_counts(d_counts_, other.d_counts_, bins, stream), "merge");
  }
  check(detail::merge_stats(d_stats_, other.d_stats_, stream), "merge");
}

void calibrator::reset(cudaStream_t stream) {
  if (d_counts_ == nullptr) fail(errc::null_pointer, "reset() of a moved-from calibrator");
  check_cuda(cudaMemsetAsync(d_counts_, 0, spec_.bins * sizeof(std::uint64_t), stream),
             "cudaMemsetAsync(counts)");
  check(detail::init_stats(d_stats_, stream), "reset");
  if (policy_ == range_policy::streaming) {
    exp_ = min_exp;
    spec_ = streaming_spec(spec_.bins, exp_);
  } else if (policy_ == range_policy::two_pass) {
    range_done_ = false;
    spec_ = two_pass_spec(spec_.kind, spec_.bins, std::ldexp(1.0f, min_exp));
  }
}

search_result calibrator::compute(const search_options& opts, cudaStream_t stream) {
  compute_async(opts, d_result_, stream);
  search_result r;
  check_cuda(cudaMemcpyAsync(&r, d_result_, sizeof r, cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync(result)");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return r;
}

void calibrator::compute_async(const search_options& opts, search_result* d_result,
                               cudaStream_t stream) {
  if (d_counts_ == nullptr) fail(errc::null_pointer, "compute() of a moved-from calibrator");
  if (d_result == nullptr) fail(errc::null_pointer, "compute_async(d_result)");
  if (policy_ == range_policy::two_pass && !range_done_)
    fail(errc::invalid_option, "compute() before end_range_pass()");
  check(validate(spec_, opts), "compute");
  search_task task;
  task.d_counts = d_counts_;
  task.spec = spec_;
  task.max_abs = 0.0f;  // method::max: patched from the device statistics below
  task.opts = opts;
  std::size_t tb = 0;
  check(search(nullptr, tb, &task, 1, d_result, stream), "compute");
  void* temp = scratch(tb, stream);
  check(search(temp, tb, &task, 1, d_result, stream), "compute");
  if (opts.meth == method::max)
    check(detail::apply_max_method(d_result, d_stats_, qmax(opts), stream), "compute");
}

std::vector<std::uint64_t> calibrator::counts(cudaStream_t stream) const {
  if (d_counts_ == nullptr) fail(errc::null_pointer, "counts() of a moved-from calibrator");
  std::vector<std::uint64_t> h(static_cast<std::size_t>(spec_.bins));
  check_cuda(cudaMemcpyAsync(h.data(), d_counts_, h.size() * sizeof(std::uint64_t),
                             cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync(counts)");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return h;
}

tensor_stats calibrator::stats(cudaStream_t stream) const {
  if (d_stats_ == nullptr) fail(errc::null_pointer, "stats() of a moved-from calibrator");
  tensor_stats s;
  check_cuda(cudaMemcpyAsync(&s, d_stats_, sizeof s, cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync(stats)");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return s;
}

}  // namespace klcal

#endif  // KLCAL_WITH_CUDA
