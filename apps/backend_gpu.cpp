// GPU backend of the klcal tool: uploads each chunk and runs the core GPU API (layer 1) on it.
#include "klcal/config.hpp"
#if KLCAL_WITH_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cli.hpp"
#include "klcal/histogram.hpp"
#include "klcal/internal/cuda_status.hpp"
#include "klcal/threshold.hpp"

namespace klcal::cli {
namespace {

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw error(detail::from_cuda(e), std::string(what) + ": " + detail::cuda_error_text(e));
  }
}

void klcal_check(status s, const char* what) {
  if (!s.ok()) throw error(s, std::string(what) + " failed: " + detail::describe(s));
}

// Device buffer that grows and never shrinks.
struct device_buffer {
  void* p = nullptr;
  std::size_t bytes = 0;
  void reserve(std::size_t n) {
    if (n <= bytes) return;
    if (p) cudaFree(p);
    p = nullptr;
    bytes = 0;
    cuda_check(cudaMalloc(&p, n), "cudaMalloc");
    bytes = n;
  }
  ~device_buffer() {
    if (p) cudaFree(p);
  }
};

// One stream; every call synchronizes before it returns, so the host chunk buffer can be reused
// by the reader right away (the chunk is copied from pageable memory).
class gpu_backend final : public backend {
 public:
  explicit gpu_backend(int device) : device_(device) {
    cuda_check(cudaSetDevice(device), "cudaSetDevice");
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) name_ = prop.name;
    stats_.reserve(sizeof(tensor_stats));
  }
  ~gpu_backend() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  gpu_backend(const gpu_backend&) = delete;
  gpu_backend& operator=(const gpu_backend&) = delete;

  std::string name() const override { return "gpu (" + name_ + ")"; }

  void stats(const formats::chunk& c, tensor_stats* st) override {
    upload(c);
    cuda_check(cudaMemcpyAsync(stats_.p, st, sizeof *st, cudaMemcpyHostToDevice, stream_),
               "cudaMemcpyAsync(stats)");
    std::size_t temp = 0;
    auto* d_st = static_cast<tensor_stats*>(stats_.p);
    klcal_check(tensor_stats_accumulate(nullptr, temp, in_.p, c.type, c.n, d_st, stream_),
                "klcal::tensor_stats_accumulate");
    temp_.reserve(temp ? temp : 1);
    klcal_check(tensor_stats_accumulate(temp_.p, temp, in_.p, c.type, c.n, d_st, stream_),
                "klcal::tensor_stats_accumulate");
    cuda_check(cudaMemcpyAsync(st, stats_.p, sizeof *st, cudaMemcpyDeviceToHost, stream_),
               "cudaMemcpyAsync(stats)");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  void begin(const histogram_spec& spec) override {
    spec_ = spec;
    counts_.reserve(sizeof(std::uint64_t) * std::size_t(spec.bins));
    cuda_check(
        cudaMemsetAsync(counts_.p, 0, sizeof(std::uint64_t) * std::size_t(spec.bins), stream_),
        "cudaMemsetAsync");
  }

  void histogram(const formats::chunk& c, bool same_as_last_stats) override {
    if (!same_as_last_stats) upload(c);
    std::size_t temp = 0;
    auto* d_counts = static_cast<std::uint64_t*>(counts_.p);
    klcal_check(histogram_accumulate(nullptr, temp, in_.p, c.type, c.n, spec_, d_counts, stream_),
                "klcal::histogram_accumulate");
    temp_.reserve(temp ? temp : 1);
    klcal_check(histogram_accumulate(temp_.p, temp, in_.p, c.type, c.n, spec_, d_counts, stream_),
                "klcal::histogram_accumulate");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  void fold(std::int32_t doublings) override {
    klcal_check(
        histogram_fold_pow2(static_cast<std::uint64_t*>(counts_.p), spec_.bins, doublings, stream_),
        "klcal::histogram_fold_pow2");
    spec_.hi = std::ldexp(spec_.hi, doublings);
  }

  std::vector<std::uint64_t> counts() override {
    std::vector<std::uint64_t> h(static_cast<std::size_t>(spec_.bins));
    cuda_check(cudaMemcpyAsync(h.data(), counts_.p, h.size() * 8, cudaMemcpyDeviceToHost, stream_),
               "cudaMemcpyAsync(counts)");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    return h;
  }

  void search(const histogram_spec& spec, float max_abs, const std::vector<search_options>& opts,
              bool want_curves, std::vector<search_result>& results,
              std::vector<std::vector<double>>& curves) override {
    const std::size_t n = opts.size();
    curves.assign(n, {});
    std::vector<std::size_t> offset(n + 1, 0);
    for (std::size_t k = 0; k < n; ++k) {
      std::size_t len = want_curves ? std::size_t(candidate_count(spec, opts[k])) : 0;
      curves[k].resize(len);
      offset[k + 1] = offset[k] + len;
    }
    curve_.reserve(std::max<std::size_t>(8, offset[n] * sizeof(double)));
    results_.reserve(n * sizeof(search_result));
    std::vector<search_task> tasks(n);
    for (std::size_t k = 0; k < n; ++k) {
      tasks[k].d_counts = static_cast<const std::uint64_t*>(counts_.p);
      tasks[k].spec = spec;
      tasks[k].max_abs = max_abs;
      tasks[k].opts = opts[k];
      tasks[k].d_curve = curves[k].empty() ? nullptr : static_cast<double*>(curve_.p) + offset[k];
    }
    auto* d_res = static_cast<search_result*>(results_.p);
    std::size_t temp = 0;
    const auto nt = static_cast<std::int32_t>(n);
    klcal_check(klcal::search(nullptr, temp, tasks.data(), nt, d_res, stream_), "klcal::search");
    temp_.reserve(temp ? temp : 1);
    klcal_check(klcal::search(temp_.p, temp, tasks.data(), nt, d_res, stream_), "klcal::search");
    results.assign(n, search_result{});
    cuda_check(cudaMemcpyAsync(results.data(), d_res, n * sizeof(search_result),
                               cudaMemcpyDeviceToHost, stream_),
               "cudaMemcpyAsync(results)");
    for (std::size_t k = 0; k < n; ++k) {
      if (curves[k].empty()) continue;
      cuda_check(
          cudaMemcpyAsync(curves[k].data(), static_cast<double*>(curve_.p) + offset[k],
                          curves[k].size() * sizeof(double), cudaMemcpyDeviceToHost, stream_),
          "cudaMemcpyAsync(curve)");
    }
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

 private:
  void upload(const formats::chunk& c) {
    std::size_t bytes = std::size_t(c.n) * dtype_size(c.type);
    in_.reserve(bytes ? bytes : 1);
    if (bytes) {
      cuda_check(cudaMemcpyAsync(in_.p, c.data, bytes, cudaMemcpyHostToDevice, stream_),
                 "cudaMemcpyAsync(chunk)");
    }
  }

  int device_;
  std::string name_ = "CUDA device";
  cudaStream_t stream_ = nullptr;
  histogram_spec spec_{};
  device_buffer in_, temp_, counts_, stats_, curve_, results_;
};

}  // namespace

std::unique_ptr<backend> make_gpu_backend(std::string* why) {
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
  return std::make_unique<gpu_backend>(0);
}

}  // namespace klcal::cli

#endif  // KLCAL_WITH_CUDA
