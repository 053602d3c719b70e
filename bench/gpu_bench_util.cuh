// Shared plumbing of the GPU benchmark programs: CUDA error check, device context, event timing.
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>

// Benchmarks have no error path worth keeping: a failed CUDA call ends the program with the call.
#define BENCH_CUDA(expr)                                                                         \
  do {                                                                                           \
    const cudaError_t e_ = (expr);                                                               \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

namespace klcal::bench {

/// The stream a benchmark works on and the two events that time it (as rmm's benchmark helper
/// does: CUDA events around the work, reported as manual time).
struct gpu_context {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;

  /// Seconds between events recorded before and after what op() enqueues on `stream`; waits for
  /// the stop event, so op's work has finished on return.
  template <class Op>
  double elapsed_s(Op&& op) {
    BENCH_CUDA(cudaEventRecord(start, stream));
    op();
    BENCH_CUDA(cudaEventRecord(stop, stream));
    BENCH_CUDA(cudaEventSynchronize(stop));
    float ms = 0.0f;
    BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
    return static_cast<double>(ms) / 1e3;
  }
};

/// Opens the current device: false when there is none (the program then skips its benchmarks).
/// Otherwise sets *dev, records the "device" and "compute_capability" benchmark context and
/// creates ctx's non-blocking stream and events.
inline bool open_device(gpu_context* ctx, int* dev) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return false;
  }
  BENCH_CUDA(cudaGetDevice(dev));
  cudaDeviceProp p{};
  BENCH_CUDA(cudaGetDeviceProperties(&p, *dev));
  benchmark::AddCustomContext("device", p.name);
  benchmark::AddCustomContext("compute_capability",
                              std::to_string(p.major) + "." + std::to_string(p.minor));
  BENCH_CUDA(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
  BENCH_CUDA(cudaEventCreate(&ctx->start));
  BENCH_CUDA(cudaEventCreate(&ctx->stop));
  return true;
}

}  // namespace klcal::bench
