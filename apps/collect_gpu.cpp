// The GPU state collector of the klcal tool: a klcal::calibrator per tensor, fed through two
// pinned host buffers so that reading chunk k+1 overlaps the upload and binning of chunk k.
#include "klcal/config.hpp"
#if KLCAL_WITH_CUDA

#include <cuda_runtime.h>

#include <cstring>
#include <optional>

#include "cli.hpp"
#include "klcal/calibrator.hpp"
#include "klcal/internal/cuda_status.hpp"

namespace klcal::cli {
namespace {

// Double buffering: slot k has a pinned host buffer, a device buffer and an event recorded
// after the work that reads them (upload and binning). A chunk is copied from the reader (often
// a memory-mapped file, so this copy is where the disk is read) into the pinned buffer of the
// slot whose previous work has finished, uploaded asynchronously and binned asynchronously;
// the host then goes on to read the next chunk into the other slot while the device works.
class gpu_collector final : public state_collector {
 public:
  explicit gpu_collector(int device) {
    detail::throw_on_cuda_error(cudaSetDevice(device), "cudaSetDevice");
    detail::throw_on_cuda_error(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                                "cudaStreamCreate");
    for (auto& ev : done_) {
      detail::throw_on_cuda_error(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming),
                                  "cudaEventCreate");
    }
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) name_ = prop.name;
  }
  ~gpu_collector() override {
    if (stream_) (void)cudaStreamSynchronize(stream_);
    cal_.reset();  // frees stream-ordered on stream_, before the stream goes
    release_buffers();
    for (auto& ev : done_) {
      if (ev) (void)cudaEventDestroy(ev);
    }
    if (stream_) (void)cudaStreamDestroy(stream_);
  }
  gpu_collector(const gpu_collector&) = delete;
  gpu_collector& operator=(const gpu_collector&) = delete;

  std::string name() const override { return "gpu (" + name_ + ")"; }

  void begin(range_policy policy, std::int32_t bins, layout kind) override {
    cal_.reset();
    cal_.emplace(policy == range_policy::streaming ? calibrator::streaming(bins, stream_)
                                                   : calibrator::two_pass(bins, stream_, kind));
  }
  void add_range(const formats::chunk& c) override {
    const void* d = stage(c);
    cal_->add_range(d, c.n, c.type, stream_);
    detail::throw_on_cuda_error(cudaEventRecord(done_[slot_], stream_), "cudaEventRecord");
  }
  void end_range_pass() override { cal_->end_range_pass(stream_); }
  void add(const formats::chunk& c) override {
    const void* d = stage(c);
    cal_->add(d, c.n, c.type, stream_);
    detail::throw_on_cuda_error(cudaEventRecord(done_[slot_], stream_), "cudaEventRecord");
  }
  calibrator_state finish() override { return cal_->state(stream_); }

 private:
  // Puts chunk c into the next slot and enqueues its upload; returns the device copy.
  const void* stage(const formats::chunk& c) {
    const std::size_t bytes = std::size_t(c.n) * dtype_size(c.type);
    slot_ ^= 1;
    if (bytes > capacity_) {
      detail::throw_on_cuda_error(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
      release_buffers();
      for (int k = 0; k < 2; ++k) {
        detail::throw_on_cuda_error(cudaMallocHost(&pinned_[k], bytes), "cudaMallocHost");
        detail::throw_on_cuda_error(cudaMalloc(&device_[k], bytes), "cudaMalloc");
      }
      capacity_ = bytes;
    } else {
      // The slot's previous upload and binning must be done before its buffers are reused.
      detail::throw_on_cuda_error(cudaEventSynchronize(done_[slot_]), "cudaEventSynchronize");
    }
    if (bytes == 0) return device_[slot_];
    std::memcpy(pinned_[slot_], c.data, bytes);
    detail::throw_on_cuda_error(
        cudaMemcpyAsync(device_[slot_], pinned_[slot_], bytes, cudaMemcpyHostToDevice, stream_),
        "cudaMemcpyAsync(chunk)");
    return device_[slot_];
  }
  void release_buffers() noexcept {
    for (int k = 0; k < 2; ++k) {
      if (pinned_[k]) (void)cudaFreeHost(pinned_[k]);
      if (device_[k]) (void)cudaFree(device_[k]);
      pinned_[k] = nullptr;
      device_[k] = nullptr;
    }
    capacity_ = 0;
  }

  std::string name_ = "CUDA device";
  cudaStream_t stream_ = nullptr;
  cudaEvent_t done_[2] = {nullptr, nullptr};
  void* pinned_[2] = {nullptr, nullptr};
  void* device_[2] = {nullptr, nullptr};
  std::size_t capacity_ = 0;
  int slot_ = 0;
  std::optional<calibrator> cal_;
};

}  // namespace

std::unique_ptr<state_collector> make_gpu_collector(std::string* why) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    if (why) {
      *why = e != cudaSuccess ? std::string("no usable CUDA device (") + cudaGetErrorName(e) + ")"
                              : std::string("no CUDA device found");
    }
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return nullptr;
  }
  return std::make_unique<gpu_collector>(0);
}

}  // namespace klcal::cli

#endif  // KLCAL_WITH_CUDA
