// GPU calibrator: the shared range policy (range_policy.cpp) applied to device counts.
#include <cuda_runtime_api.h>

#include <string>
#include <utility>

#include "klcal/calibrator.hpp"
#include "klcal/histogram.hpp"
#include "klcal/internal/cuda_status.hpp"
#include "klcal/internal/histogram_detail.hpp"
#include "klcal/internal/range_policy.hpp"
#include "klcal/threshold.hpp"

namespace klcal {
namespace {

const std::string who = "klcal::calibrator";

using detail::device_guard;

using detail::check;
using detail::fail;

void check_cuda(cudaError_t e, const char* what) {
  detail::throw_on_cuda_error(e, who + ": " + what);
}

calibrator_state empty_state(const detail::range_state& r) {
  calibrator_state s;
  r.store(s);
  return s;
}

constexpr std::size_t stats_block_bytes = 2 * sizeof(tensor_stats) + sizeof(search_result);

}  // namespace

calibrator calibrator::fixed(const histogram_spec& spec, cudaStream_t stream,
                             const device_allocator& alloc) {
  return calibrator(empty_state(detail::range_state::fixed(spec, who)), stream, alloc);
}

calibrator calibrator::two_pass(std::int32_t bins, cudaStream_t stream, layout kind,
                                const device_allocator& alloc) {
  return calibrator(empty_state(detail::range_state::two_pass(bins, kind, who)), stream, alloc);
}

calibrator calibrator::streaming(std::int32_t bins, cudaStream_t stream,
                                 const device_allocator& alloc) {
  return calibrator(empty_state(detail::range_state::streaming(bins, who)), stream, alloc);
}

calibrator calibrator::from_state(const calibrator_state& s, cudaStream_t stream,
                                  const device_allocator& alloc) {
  if (status st = validate(s); !st.ok()) fail(st, who, "from_state: " + describe_invalid(s));
  calibrator c(empty_state(detail::range_state::of(s)), stream, alloc);
  const std::size_t bytes = s.counts.size() * sizeof(std::uint64_t);
  check_cuda(cudaMemcpyAsync(c.d_counts_, s.counts.data(), bytes, cudaMemcpyHostToDevice, stream),
             "cudaMemcpyAsync(counts)");
  check_cuda(cudaMemcpyAsync(c.d_stats_, &s.stats, sizeof s.stats, cudaMemcpyHostToDevice, stream),
             "cudaMemcpyAsync(stats)");
  // Pageable sources: the copies have read `s` when they return, but make that explicit for
  // any allocator-provided memory kind.
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return c;
}

calibrator::calibrator(const calibrator_state& s, cudaStream_t stream,
                       const device_allocator& alloc)
    : range_(s), stream_(stream), alloc_(alloc) {
  range_.counts.clear();
  check_cuda(cudaGetDevice(&device_), "cudaGetDevice");
  try {
    d_counts_ = static_cast<std::uint64_t*>(
        allocate(static_cast<std::size_t>(range_.spec.bins) * sizeof(std::uint64_t), stream));
    d_stats_ = static_cast<tensor_stats*>(allocate(stats_block_bytes, stream));
    d_batch_stats_ = d_stats_ + 1;
    d_result_ = reinterpret_cast<search_result*>(d_stats_ + 2);
    check_cuda(cudaMemsetAsync(d_counts_, 0, range_.spec.bins * sizeof(std::uint64_t), stream),
               "cudaMemsetAsync(counts)");
    check(detail::init_stats(d_stats_, stream), who, "init");
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
    range_ = std::move(o.range_);
    device_ = o.device_;
    stream_ = o.stream_;
    alloc_ = o.alloc_;
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

void* calibrator::allocate(std::size_t bytes, cudaStream_t stream) {
  void* p = nullptr;
  if (alloc_.allocate != nullptr) {
    p = alloc_.allocate(bytes, stream, alloc_.context);
    if (p == nullptr) fail(errc::out_of_memory, who, "device_allocator::allocate");
    return p;
  }
  check_cuda(cudaMallocAsync(&p, bytes, stream), "cudaMallocAsync");
  return p;
}

/// Frees through the allocator (or cudaFreeAsync) on `stream`; returns the cudaError_t as int.
int calibrator::deallocate(void* p, std::size_t bytes, cudaStream_t stream) noexcept {
  if (p == nullptr) return cudaSuccess;
  if (alloc_.deallocate != nullptr) {
    alloc_.deallocate(p, bytes, stream, alloc_.context);
    return cudaSuccess;
  }
  return cudaFreeAsync(p, stream);
}

void calibrator::release() noexcept {
  if (d_counts_ == nullptr && d_stats_ == nullptr && d_scratch_ == nullptr) return;
  // Stream-ordered frees on the owning stream, on the calibrator's device; no synchronization.
  const device_guard g(device_, std::nothrow);
  (void)deallocate(d_counts_, static_cast<std::size_t>(range_.spec.bins) * sizeof(std::uint64_t),
                   stream_);
  (void)deallocate(d_stats_, stats_block_bytes, stream_);
  (void)deallocate(d_scratch_, scratch_bytes_, stream_);
  d_counts_ = nullptr;
  d_stats_ = d_batch_stats_ = nullptr;
  d_result_ = nullptr;
  d_scratch_ = nullptr;
  scratch_bytes_ = 0;
}

void* calibrator::scratch(std::size_t bytes, cudaStream_t stream) {
  if (bytes <= scratch_bytes_) return d_scratch_;
  check_cuda(static_cast<cudaError_t>(deallocate(d_scratch_, scratch_bytes_, stream)),
             "cudaFreeAsync(scratch)");
  d_scratch_ = nullptr;
  scratch_bytes_ = 0;
  d_scratch_ = allocate(bytes, stream);
  scratch_bytes_ = bytes;
  return d_scratch_;
}

void calibrator::bin(const void* d_in, std::int64_t n, dtype t, cudaStream_t stream) {
  std::size_t tb = 0;
  check(histogram_accumulate(nullptr, tb, d_in, t, n, range_.spec, d_counts_, stream), who, "add");
  void* temp = scratch(tb, stream);
  check(histogram_accumulate(temp, tb, d_in, t, n, range_.spec, d_counts_, stream), who, "add");
}

void calibrator::stats_into(tensor_stats* d_stats, const void* d_in, std::int64_t n, dtype t,
                            cudaStream_t stream) {
  std::size_t tb = 0;
  check(tensor_stats_accumulate(nullptr, tb, d_in, t, n, d_stats, stream), who, "statistics");
  void* temp = scratch(tb, stream);
  check(tensor_stats_accumulate(temp, tb, d_in, t, n, d_stats, stream), who, "statistics");
}

void calibrator::fold(std::int32_t doublings, cudaStream_t stream) {
  if (doublings > 0)
    check(histogram_fold_pow2(d_counts_, range_.spec.bins, doublings, stream), who, "fold");
}

void calibrator::add(const void* d_in, std::int64_t n, dtype t, cudaStream_t stream) {
  if (d_counts_ == nullptr) fail(errc::null_pointer, who, "add() of a moved-from calibrator");
  const device_guard g(device_);
  detail::range_state r = detail::range_state::of(range_);
  r.require_binning(who);
  switch (r.policy) {
    case range_policy::fixed:
      // One pass over the data for both the counts and the statistics.
      check(detail::histogram_stats_accumulate(d_in, t, n, r.spec, d_counts_, d_stats_, stream),
            who, "add");
      return;
    case range_policy::two_pass: bin(d_in, n, t, stream); return;
    case range_policy::streaming: {
      // Argument errors first, before anything is enqueued.
      std::size_t tb = 0;
      check(histogram_accumulate(nullptr, tb, d_in, t, n, r.spec, d_counts_, stream), who, "add");
      if (n == 0) return;
      check(detail::init_stats(d_batch_stats_, stream), who, "add");
      stats_into(d_batch_stats_, d_in, n, t, stream);
      tensor_stats batch;
      check_cuda(
          cudaMemcpyAsync(&batch, d_batch_stats_, sizeof batch, cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync(batch stats)");
      check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
      fold(r.grow_for(batch.max_abs), stream);
      r.store(range_);
      check(detail::merge_stats(d_stats_, d_batch_stats_, stream), who, "add");
      bin(d_in, n, t, stream);
      return;
    }
  }
}

void calibrator::add_range(const void* d_in, std::int64_t n, dtype t, cudaStream_t stream) {
  if (d_counts_ == nullptr) fail(errc::null_pointer, who, "add_range() of a moved-from calibrator");
  const device_guard g(device_);
  detail::range_state::of(range_).require_range_pass(who);
  stats_into(d_stats_, d_in, n, t, stream);
}

void calibrator::end_range_pass(cudaStream_t stream) {
  detail::range_state r = detail::range_state::of(range_);
  r.require_open_range_pass(who);  // before the synchronizing read of the statistics
  r.end_range_pass(stats(stream).max_abs, who);
  r.store(range_);
}

void calibrator::merge(const calibrator& other, cudaStream_t stream) {
  if (this == &other) fail(errc::invalid_option, who, "merge() with itself");
  if (other.d_counts_ == nullptr || d_counts_ == nullptr)
    fail(errc::null_pointer, who, "merge() with a moved-from calibrator");
  if (other.device_ != device_)
    fail(errc::invalid_option, who, "merge() of calibrators on different devices (use state())");
  const device_guard g(device_);
  detail::range_state r = detail::range_state::of(range_);
  detail::range_state::merge_plan plan;
  std::string why;
  check(r.plan_merge(detail::range_state::of(other.range_), &plan, &why), who, why);
  const std::int64_t bins = r.spec.bins;
  if (plan.add_counts) {
    fold(plan.fold_into, stream);
    if (plan.fold_from > 0) {
      // Fold a copy of the other's counts up to the merged range, then add it.
      auto* tmp = static_cast<std::uint64_t*>(scratch(bins * sizeof(std::uint64_t), stream));
      check_cuda(cudaMemcpyAsync(tmp, other.d_counts_, bins * sizeof(std::uint64_t),
                                 cudaMemcpyDeviceToDevice, stream),
                 "cudaMemcpyAsync(merge)");
      check(histogram_fold_pow2(tmp, r.spec.bins, plan.fold_from, stream), who, "merge");
      check(detail::add_counts(d_counts_, tmp, bins, stream), who, "merge");
    } else {
      check(detail::add_counts(d_counts_, other.d_counts_, bins, stream), who, "merge");
    }
  }
  check(detail::merge_stats(d_stats_, other.d_stats_, stream), who, "merge");
  r.apply_merge(plan);
  r.store(range_);
}

void calibrator::reset(cudaStream_t stream) {
  if (d_counts_ == nullptr) fail(errc::null_pointer, who, "reset() of a moved-from calibrator");
  const device_guard g(device_);
  detail::range_state r = detail::range_state::of(range_);
  r.reset();
  check_cuda(cudaMemsetAsync(d_counts_, 0, r.spec.bins * sizeof(std::uint64_t), stream),
             "cudaMemsetAsync(counts)");
  check(detail::init_stats(d_stats_, stream), who, "reset");
  r.store(range_);
}

search_result calibrator::compute(const search_options& opts, cudaStream_t stream) {
  compute_async(opts, d_result_, stream);
  const device_guard g(device_);
  search_result r;
  check_cuda(cudaMemcpyAsync(&r, d_result_, sizeof r, cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync(result)");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return r;
}

void calibrator::compute_async(const search_options& opts, search_result* d_result,
                               cudaStream_t stream) {
  if (d_counts_ == nullptr) fail(errc::null_pointer, who, "compute() of a moved-from calibrator");
  if (d_result == nullptr) fail(errc::null_pointer, who, "compute_async(d_result)");
  const device_guard g(device_);
  detail::range_state::of(range_).require_search(opts, who);
  search_task task;
  task.d_counts = d_counts_;
  task.spec = range_.spec;
  task.max_abs = 0.0f;  // method::max: patched from the device statistics below
  task.opts = opts;
  std::size_t tb = 0;
  check(search(nullptr, tb, &task, 1, d_result, stream), who, "compute");
  void* temp = scratch(tb, stream);
  check(search(temp, tb, &task, 1, d_result, stream), who, "compute");
  if (opts.meth == method::max)
    check(detail::apply_max_method(d_result, d_stats_, qmax(opts), stream), who, "compute");
}

std::vector<std::uint64_t> calibrator::counts(cudaStream_t stream) const {
  if (d_counts_ == nullptr) fail(errc::null_pointer, who, "counts() of a moved-from calibrator");
  const device_guard g(device_);
  std::vector<std::uint64_t> h(static_cast<std::size_t>(range_.spec.bins));
  check_cuda(cudaMemcpyAsync(h.data(), d_counts_, h.size() * sizeof(std::uint64_t),
                             cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync(counts)");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return h;
}

tensor_stats calibrator::stats(cudaStream_t stream) const {
  if (d_stats_ == nullptr) fail(errc::null_pointer, who, "stats() of a moved-from calibrator");
  const device_guard g(device_);
  tensor_stats s;
  check_cuda(cudaMemcpyAsync(&s, d_stats_, sizeof s, cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync(stats)");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return s;
}

calibrator_state calibrator::state(cudaStream_t stream) const {
  calibrator_state s = range_;
  s.counts = counts(stream);
  s.stats = stats(stream);
  return s;
}

}  // namespace klcal
