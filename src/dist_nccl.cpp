// klcal::nccl: the distributed reduction of collective.cpp with device counts and NCCL.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "klcal/histogram.hpp"
#include "klcal/internal/calibrator_access.hpp"
#include "klcal/internal/collective.hpp"
#include "klcal/internal/cuda_status.hpp"
#include "klcal/internal/range_policy.hpp"
#include "klcal/nccl.hpp"

namespace klcal::nccl {
namespace {

using access = detail::gpu_calibrator_access;

// The statistics are unpacked with strided copies at these offsets.
static_assert(sizeof(tensor_stats) == 40, "tensor_stats layout");
static_assert(offsetof(tensor_stats, max_abs) == 24 && offsetof(tensor_stats, min) == 28 &&
                  offsetof(tensor_stats, max) == 32,
              "tensor_stats layout");
constexpr std::size_t counters_bytes = 3 * sizeof(std::uint64_t);

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) {
    throw error(errc::comm_error,
                std::string("klcal::nccl: ") + what + ": " + ncclGetErrorString(r));
  }
}

void check_cuda(cudaError_t e, const char* what) {
  detail::throw_on_cuda_error(e, std::string("klcal::nccl: ") + what);
}

/// Stream-ordered device memory freed on the stream when it goes out of scope.
class device_bytes {
 public:
  device_bytes(std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    check_cuda(cudaMallocAsync(&p_, bytes > 0 ? bytes : 1, stream), "cudaMallocAsync");
  }
  ~device_bytes() { (void)cudaFreeAsync(p_, stream_); }
  device_bytes(const device_bytes&) = delete;
  device_bytes& operator=(const device_bytes&) = delete;
  template <class T>
  T* as(std::size_t byte_offset = 0) const noexcept {
    return reinterpret_cast<T*>(static_cast<char*>(p_) + byte_offset);
  }

 private:
  void* p_ = nullptr;
  cudaStream_t stream_;
};

/// The host-side collectives (agreement, exponents) over NCCL: staged through the device and
/// synchronizing `stream`.
collective host_collective(ncclComm_t comm, cudaStream_t stream) {
  auto reduce = [comm, stream](std::uint64_t* h, std::size_t n, ncclRedOp_t op) {
    const device_bytes d(n * sizeof(std::uint64_t), stream);
    check_cuda(
        cudaMemcpyAsync(d.as<void>(), h, n * sizeof(std::uint64_t), cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync");
    check_nccl(ncclAllReduce(d.as<void>(), d.as<void>(), n, ncclUint64, op, comm, stream),
               "ncclAllReduce");
    check_cuda(
        cudaMemcpyAsync(h, d.as<void>(), n * sizeof(std::uint64_t), cudaMemcpyDeviceToHost, stream),
        "cudaMemcpyAsync");
    check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  };
  collective c;
  c.max_u64 = [reduce](std::uint64_t* h, std::size_t n) { reduce(h, n, ncclMax); };
  c.sum_u64 = [reduce](std::uint64_t* h, std::size_t n) { reduce(h, n, ncclSum); };
  return c;
}

/// The device of `comm` (the staging buffers live there; it is made current for the call).
int comm_device(ncclComm_t comm) {
  int device = 0;
  check_nccl(ncclCommCuDevice(comm, &device), "ncclCommCuDevice");
  return device;
}

struct item {
  const std::string* name;
  calibrator* cal;
};

std::vector<item> items_of(std::map<std::string, calibrator>& calibrators) {
  std::vector<item> items;
  items.reserve(calibrators.size());
  for (auto& [name, c] : calibrators) items.push_back({&name, &c});
  return items;
}

std::vector<detail::reduce_entry> entries_of(const std::vector<item>& items) {
  std::vector<detail::reduce_entry> e;
  e.reserve(items.size());
  for (const item& i : items) e.push_back({i.name, &access::range(*i.cal)});
  return e;
}

/// The first local reason this rank cannot take part ("" when none).
std::string local_problem(const std::vector<item>& items, ncclComm_t comm) {
  int device = -1;
  if (ncclCommCuDevice(comm, &device) != ncclSuccess) return "ncclCommCuDevice failed";
  for (const item& i : items) {
    if (access::counts(*i.cal) == nullptr)
      return "tensor '" + *i.name + "': a moved-from calibrator";
    if (i.cal->device() != device) {
      return "tensor '" + *i.name + "': calibrator on device " + std::to_string(i.cal->device()) +
             ", the communicator on device " + std::to_string(device);
    }
  }
  return {};
}

void copy(void* dst, const void* src, std::size_t bytes, cudaStream_t stream) {
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
}

/// Strided copy of `width` bytes from each of `rows` rows.
void copy_2d(void* dst, std::size_t dpitch, const void* src, std::size_t spitch, std::size_t width,
             std::size_t rows, cudaStream_t stream) {
  if (rows == 0) return;
  check_cuda(
      cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, rows, cudaMemcpyDeviceToDevice, stream),
      "cudaMemcpy2DAsync");
}

}  // namespace

void all_reduce(std::map<std::string, calibrator>& calibrators, ncclComm_t comm,
                cudaStream_t stream) {
  const std::string who = "klcal::nccl::all_reduce";
  const detail::device_guard guard(comm_device(comm));
  const std::vector<item> items = items_of(calibrators);
  const collective host = host_collective(comm, stream);
  detail::agree(host,
                detail::reduction_digest(detail::collective_op::all_reduce, entries_of(items)),
                local_problem(items, comm), who);
  const std::size_t n = items.size();
  if (n == 0) return;

  // Streaming: MAX of the exponents (on the host: the range policy decides the folds there).
  std::vector<std::uint64_t> e(n, 0);
  bool any_streaming = false;
  for (std::size_t i = 0; i < n; ++i) {
    const calibrator_state& r = access::range(*items[i].cal);
    if (r.policy == range_policy::streaming) {
      any_streaming = true;
      e[i] = static_cast<std::uint64_t>(r.exponent - streaming_min_exponent);
    }
  }
  if (any_streaming) host.max_u64(e.data(), n);  // the same decision on every rank (digest)

  // One device buffer: every count, 3 counters per tensor | the statistics rows | max_abs and
  // max | min.
  std::vector<std::size_t> offset(n, 0);
  std::size_t words = 0;
  for (std::size_t i = 0; i < n; ++i) {
    offset[i] = words;
    const calibrator_state& r = access::range(*items[i].cal);
    if (r.range_done) words += static_cast<std::size_t>(r.spec.bins);
  }
  const std::size_t counters = words;
  words += 3 * n;
  const std::size_t rows_at = words * sizeof(std::uint64_t);
  const std::size_t max_at = rows_at + n * sizeof(tensor_stats);
  const std::size_t min_at = max_at + 2 * n * sizeof(float);
  const device_bytes buf(min_at + n * sizeof(float), stream);
  auto* u = buf.as<std::uint64_t>();
  auto* rows = buf.as<tensor_stats>(rows_at);
  auto* fmax = buf.as<float>(max_at);
  auto* fmin = buf.as<float>(min_at);

  std::vector<detail::range_state> ranges(n);
  for (std::size_t i = 0; i < n; ++i) {
    calibrator& c = *items[i].cal;
    ranges[i] = detail::range_state::of(access::range(c));
    if (ranges[i].range_done) {
      if (ranges[i].policy == range_policy::streaming) {
        detail::range_state::merge_plan plan;
        plan.fold_into =
            static_cast<std::int32_t>(e[i]) + streaming_min_exponent - ranges[i].exponent;
        access::fold(c, plan.fold_into, stream);
        ranges[i].apply_merge(plan);
        ranges[i].store(access::range(c));
      }
      copy(u + offset[i], access::counts(c),
           static_cast<std::size_t>(ranges[i].spec.bins) * sizeof(std::uint64_t), stream);
    }
    copy(rows + i, access::stats(c), sizeof(tensor_stats), stream);
  }
  const std::size_t row = sizeof(tensor_stats);
  char* r = buf.as<char>(rows_at);
  copy_2d(u + counters, counters_bytes, r, row, counters_bytes, n, stream);
  copy_2d(fmax, sizeof(float), r + offsetof(tensor_stats, max_abs), row, sizeof(float), n, stream);
  copy_2d(fmax + n, sizeof(float), r + offsetof(tensor_stats, max), row, sizeof(float), n, stream);
  copy_2d(fmin, sizeof(float), r + offsetof(tensor_stats, min), row, sizeof(float), n, stream);

  // Stored statistics are never NaN and never -0 (numerics.md 1.3), so float MAX/MIN is exact.
  check_nccl(ncclGroupStart(), "ncclGroupStart");
  check_nccl(ncclAllReduce(u, u, words, ncclUint64, ncclSum, comm, stream), "ncclAllReduce(sum)");
  check_nccl(ncclAllReduce(fmax, fmax, 2 * n, ncclFloat32, ncclMax, comm, stream),
             "ncclAllReduce(max)");
  check_nccl(ncclAllReduce(fmin, fmin, n, ncclFloat32, ncclMin, comm, stream),
             "ncclAllReduce(min)");
  check_nccl(ncclGroupEnd(), "ncclGroupEnd");

  copy_2d(r, row, u + counters, counters_bytes, counters_bytes, n, stream);
  copy_2d(r + offsetof(tensor_stats, max_abs), row, fmax, sizeof(float), sizeof(float), n, stream);
  copy_2d(r + offsetof(tensor_stats, max), row, fmax + n, sizeof(float), sizeof(float), n, stream);
  copy_2d(r + offsetof(tensor_stats, min), row, fmin, sizeof(float), sizeof(float), n, stream);
  for (std::size_t i = 0; i < n; ++i) {
    calibrator& c = *items[i].cal;
    if (ranges[i].range_done) {
      copy(access::counts(c), u + offset[i],
           static_cast<std::size_t>(ranges[i].spec.bins) * sizeof(std::uint64_t), stream);
    }
    copy(access::stats(c), rows + i, sizeof(tensor_stats), stream);
  }
}

void end_range_pass(std::map<std::string, calibrator>& calibrators, ncclComm_t comm,
                    cudaStream_t stream) {
  const std::string who = "klcal::nccl::end_range_pass";
  const detail::device_guard guard(comm_device(comm));
  const std::vector<item> items = items_of(calibrators);
  std::string problem = local_problem(items, comm);
  for (std::size_t i = 0; i < items.size() && problem.empty(); ++i) {
    const calibrator_state& r = access::range(*items[i].cal);
    if (r.policy != range_policy::two_pass)
      problem = "tensor '" + *items[i].name + "': end_range_pass() needs a two_pass calibrator";
    else if (r.range_done)
      problem = "tensor '" + *items[i].name + "': end_range_pass() after the first pass ended";
  }
  const collective host = host_collective(comm, stream);
  detail::agree(host,
                detail::reduction_digest(detail::collective_op::end_range_pass, entries_of(items)),
                problem, who);
  const std::size_t n = items.size();
  if (n == 0) return;
  const device_bytes d(n * sizeof(float), stream);
  for (std::size_t i = 0; i < n; ++i) {
    copy(d.as<float>() + i,
         reinterpret_cast<const char*>(access::stats(*items[i].cal)) +
             offsetof(tensor_stats, max_abs),
         sizeof(float), stream);
  }
  check_nccl(ncclAllReduce(d.as<void>(), d.as<void>(), n, ncclFloat32, ncclMax, comm, stream),
             "ncclAllReduce(max)");
  std::vector<float> max_abs(n);
  check_cuda(cudaMemcpyAsync(max_abs.data(), d.as<void>(), n * sizeof(float),
                             cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  std::vector<detail::range_state> ranges(n);
  for (std::size_t i = 0; i < n; ++i) {
    ranges[i] = detail::range_state::of(access::range(*items[i].cal));
    ranges[i].end_range_pass(max_abs[i], who + ": tensor '" + *items[i].name + "'");
  }
  for (std::size_t i = 0; i < n; ++i) ranges[i].store(access::range(*items[i].cal));
}

}  // namespace klcal::nccl
