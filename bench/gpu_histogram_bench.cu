// GPU histogram benchmarks: klcal vs cub::DeviceHistogram::HistogramEven vs a streaming-read
// ceiling.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <thrust/iterator/transform_iterator.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cub/device/device_histogram.cuh>
#include <string>
#include <vector>

#include "gpu_bench_util.cuh"
#include "klcal/histogram.hpp"

// Timing follows rmm's benchmark helper: CUDA events around the work, manual time, and an L2
// flush (a memset of twice the L2 size) before every iteration, outside the timed region.
// Sizes are capped by KLCAL_BENCH_MAX_LOG2N (default 30) so scripts/gpu-check.sh fits its budget.

namespace {

enum class dist : int { uniform = 0, half_normal = 1, half_zeros = 2, one_bin = 3 };
const char* const dist_names[] = {"uniform", "abs_normal", "zeros50", "one_bin"};
const char* const dtype_names[] = {"f32", "f16", "bf16"};

// ---- data generation on the device (counter-based RNG: every run sees the same data) -------

__device__ inline float uniform01(std::uint64_t i, std::uint64_t salt) {
  std::uint64_t z = i * 0x9e3779b97f4a7c15ull + salt;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (static_cast<float>(z >> 40) + 0.5f) * (1.0f / 16777216.0f);  // (0, 1)
}

__global__ void generate_kernel(void* out, klcal::dtype t, std::int64_t n, dist d) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += stride) {
    float x = 0.0f;
    const float u1 = uniform01(i, 1), u2 = uniform01(i, 2);
    const float g = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);  // Box-Muller
    switch (d) {
      case dist::uniform: x = 8.0f * u2 - 4.0f; break;
      case dist::half_normal: x = fabsf(g); break;
      case dist::half_zeros: x = uniform01(i, 3) < 0.5f ? 0.0f : fabsf(g); break;
      case dist::one_bin: x = 0.5f; break;
    }
    switch (t) {
      case klcal::dtype::f32: static_cast<float*>(out)[i] = x; break;
      case klcal::dtype::f16: static_cast<__half*>(out)[i] = __float2half_rn(x); break;
      case klcal::dtype::bf16: static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(x); break;
    }
  }
}

// ---- the ceiling: read every byte once with 16-byte loads -----------------------------------

__global__ void streaming_read_kernel(const uint4* in, std::int64_t nvec, unsigned* sink) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  unsigned acc = 0;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < nvec;
       i += stride) {
    const uint4 v = in[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;  // keeps the loads alive, practically never written
}

// ---- CUB baseline: abs via a transform iterator ---------------------------------------------

template <class T>
struct abs_to_float {
  __host__ __device__ float operator()(T x) const { return fabsf(static_cast<float>(x)); }
};
template <class T>
struct to_float {
  __host__ __device__ float operator()(T x) const { return static_cast<float>(x); }
};

// ---- shared device state -------------------------------------------------------------------

struct device_state : klcal::bench::gpu_context {
  void* data = nullptr;
  std::size_t data_bytes = 0;
  void* flush = nullptr;
  std::size_t flush_bytes = 0;
  void* counts = nullptr;  // room for the largest histogram (uint64)
  void* temp = nullptr;
  std::size_t temp_bytes = 0;
  unsigned* sink = nullptr;
  int sms = 0;
  // What `data` holds now, so that the same data is not regenerated per benchmark.
  int have_t = -1, have_d = -1;
  std::int64_t have_n = -1;
};
device_state g;

void* temp_of(std::size_t bytes) {
  if (bytes > g.temp_bytes) {
    if (g.temp) BENCH_CUDA(cudaFree(g.temp));
    BENCH_CUDA(cudaMalloc(&g.temp, bytes));
    g.temp_bytes = bytes;
  }
  return g.temp;
}

void prepare(klcal::dtype t, dist d, std::int64_t n) {
  if (g.have_t == static_cast<int>(t) && g.have_d == static_cast<int>(d) && g.have_n == n) return;
  generate_kernel<<<g.sms * 8, 256, 0, g.stream>>>(g.data, t, n, d);
  BENCH_CUDA(cudaGetLastError());
  BENCH_CUDA(cudaStreamSynchronize(g.stream));
  g.have_t = static_cast<int>(t);
  g.have_d = static_cast<int>(d);
  g.have_n = n;
}

/// Runs `op` once per iteration between CUDA events, after an L2 flush.
template <class Op>
void time_loop(benchmark::State& state, std::int64_t n, std::size_t bytes, Op&& op) {
  op();  // warm-up (also first-touch of any lazily created resources)
  BENCH_CUDA(cudaStreamSynchronize(g.stream));
  for (auto _ : state) {
    BENCH_CUDA(cudaMemsetAsync(g.flush, static_cast<int>(state.iterations() & 0xff), g.flush_bytes,
                               g.stream));
    state.SetIterationTime(g.elapsed_s(op));
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
}

klcal::histogram_spec spec_for(int bins) {
  klcal::histogram_spec s;
  s.bins = bins;
  s.hi = 4.0f;
  if (bins % 2 == 1) {  // 8001: the signed (mxnet) layout
    s.kind = klcal::layout::signed_;
    s.lo = -4.0f;
  }
  return s;
}

void bm_klcal(benchmark::State& state, klcal::dtype t, dist d, int bins, std::int64_t n) {
  prepare(t, d, n);
  const klcal::histogram_spec spec = spec_for(bins);
  auto* counts = static_cast<std::uint64_t*>(g.counts);
  BENCH_CUDA(cudaMemsetAsync(counts, 0, bins * 8, g.stream));
  std::size_t tb = 0;
  if (!klcal::histogram_accumulate(nullptr, tb, g.data, t, n, spec, counts, g.stream).ok()) {
    state.SkipWithError("size query failed");
    return;
  }
  void* temp = temp_of(tb);
  time_loop(state, n, n * klcal::dtype_size(t), [&] {
    const klcal::status s =
        klcal::histogram_accumulate(temp, tb, g.data, t, n, spec, counts, g.stream);
    if (!s.ok()) state.SkipWithError(klcal::to_string(s).c_str());
  });
}

template <class T>
void cub_histogram(const T* in, int bins, bool abs_layout, std::int64_t n) {
  const float lo = abs_layout ? 0.0f : -4.0f, hi = 4.0f;
  auto* counts = static_cast<int*>(g.counts);
  std::size_t tb = 0;
  // CUB's 32-bit num_samples in older CCCL: n stays below 2^31 here (n <= 2^30).
  if (abs_layout) {
    auto it = thrust::make_transform_iterator(in, abs_to_float<T>{});
    cub::DeviceHistogram::HistogramEven(nullptr, tb, it, counts, bins + 1, lo, hi, n, g.stream);
    void* temp = temp_of(tb);
    cub::DeviceHistogram::HistogramEven(temp, tb, it, counts, bins + 1, lo, hi, n, g.stream);
  } else {
    auto it = thrust::make_transform_iterator(in, to_float<T>{});
    cub::DeviceHistogram::HistogramEven(nullptr, tb, it, counts, bins + 1, lo, hi, n, g.stream);
    void* temp = temp_of(tb);
    cub::DeviceHistogram::HistogramEven(temp, tb, it, counts, bins + 1, lo, hi, n, g.stream);
  }
}

void bm_cub(benchmark::State& state, klcal::dtype t, dist d, int bins, std::int64_t n) {
  prepare(t, d, n);
  const bool abs_layout = bins % 2 == 0;
  auto run = [&] {
    switch (t) {
      case klcal::dtype::f32:
        cub_histogram(static_cast<const float*>(g.data), bins, abs_layout, n);
        break;
      case klcal::dtype::f16:
        cub_histogram(static_cast<const __half*>(g.data), bins, abs_layout, n);
        break;
      case klcal::dtype::bf16:
        cub_histogram(static_cast<const __nv_bfloat16*>(g.data), bins, abs_layout, n);
        break;
    }
  };
  run();  // sizes the temp storage before timing
  time_loop(state, n, n * klcal::dtype_size(t), run);
}

void bm_ceiling(benchmark::State& state, klcal::dtype t, std::int64_t n) {
  prepare(t, dist::uniform, n);
  const std::size_t bytes = n * klcal::dtype_size(t);
  time_loop(state, n, bytes, [&] {
    streaming_read_kernel<<<g.sms * 8, 256, 0, g.stream>>>(
        static_cast<const uint4*>(g.data), static_cast<std::int64_t>(bytes / 16), g.sink);
  });
}

/// 100 tensors of 1M fp32 each: one batched call vs 100 single calls (same data).
void bm_batched(benchmark::State& state, bool batched) {
  const int tasks = 100;
  const std::int64_t each = 1 << 20;
  prepare(klcal::dtype::f32, dist::half_normal, tasks * each);
  const klcal::histogram_spec spec = spec_for(2048);
  std::vector<klcal::histogram_task> h(tasks);
  auto* counts = static_cast<std::uint64_t*>(g.counts);
  for (int i = 0; i < tasks; ++i)
    h[i] = klcal::histogram_task{static_cast<const float*>(g.data) + i * each, each,
                                 klcal::dtype::f32, spec, counts + i * 2048};
  std::size_t tb = 0;
  if (!klcal::histogram_accumulate_batched(nullptr, tb, h.data(), tasks, g.stream).ok()) {
    state.SkipWithError("size query failed");
    return;
  }
  void* temp = temp_of(tb);
  time_loop(state, tasks * each, tasks * each * 4, [&] {
    if (batched) {
      (void)klcal::histogram_accumulate_batched(temp, tb, h.data(), tasks, g.stream);
    } else {
      for (const auto& x : h)
        (void)klcal::histogram_accumulate(temp, tb, x.d_in, x.type, x.n, x.spec, x.d_counts,
                                          g.stream);
    }
  });
}

bool init_device() {
  int dev = 0;
  if (!klcal::bench::open_device(&g, &dev)) return false;
  int mem_khz = 0, bus_bits = 0, l2 = 0;
  (void)cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev);
  (void)cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
  (void)cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev);
  (void)cudaGetLastError();
  // Double data rate: 2 transfers per clock, bus width in bits.
  const double gbps = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) / 1e9;
  benchmark::AddCustomContext("theoretical_bandwidth_GBps", std::to_string(gbps));
  benchmark::AddCustomContext("l2_bytes", std::to_string(l2));
  BENCH_CUDA(cudaDeviceGetAttribute(&g.sms, cudaDevAttrMultiProcessorCount, dev));
  g.flush_bytes = static_cast<std::size_t>(l2 > 0 ? l2 : 64 << 20) * 2;
  BENCH_CUDA(cudaMalloc(&g.flush, g.flush_bytes));
  BENCH_CUDA(cudaMalloc(&g.counts, std::size_t{100} * 2048 * 8 + 16384 * 8));
  BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(&g.sink), sizeof(unsigned)));
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (!init_device()) {
    std::printf("gpu_histogram_bench: no CUDA device, GPU benchmarks skipped\n");
    return 0;
  }
  int max_log2 = 30;
  if (const char* e = std::getenv("KLCAL_BENCH_MAX_LOG2N")) max_log2 = std::atoi(e);
  const std::int64_t max_n = std::int64_t{1} << max_log2;
  const std::int64_t max_elems = std::max<std::int64_t>(max_n, 100 << 20);
  g.data_bytes = static_cast<std::size_t>(max_elems) * 4;
  BENCH_CUDA(cudaMalloc(&g.data, g.data_bytes));

  const klcal::dtype dtypes[] = {klcal::dtype::f32, klcal::dtype::f16, klcal::dtype::bf16};
  for (int log2 = 16; log2 <= max_log2; log2 += 2) {
    const std::int64_t n = std::int64_t{1} << log2;
    for (klcal::dtype t : dtypes) {
      const std::string tn = dtype_names[static_cast<int>(t)];
      benchmark::RegisterBenchmark(("ceiling/" + tn + "/n:" + std::to_string(n)).c_str(),
                                   [=](benchmark::State& s) { bm_ceiling(s, t, n); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      for (int bins : {2048, 8001})
        for (int d = 0; d < 4; ++d) {
          const std::string suffix = "/" + tn + "/bins:" + std::to_string(bins) + "/" +
                                     dist_names[d] + "/n:" + std::to_string(n);
          benchmark::RegisterBenchmark(
              ("klcal" + suffix).c_str(),
              [=](benchmark::State& s) { bm_klcal(s, t, static_cast<dist>(d), bins, n); })
              ->UseManualTime()
              ->Unit(benchmark::kMicrosecond);
          benchmark::RegisterBenchmark(
              ("cub" + suffix).c_str(),
              [=](benchmark::State& s) { bm_cub(s, t, static_cast<dist>(d), bins, n); })
              ->UseManualTime()
              ->Unit(benchmark::kMicrosecond);
        }
    }
  }
  benchmark::RegisterBenchmark("batched_100x1M/f32/one_call",
                               [](benchmark::State& s) { bm_batched(s, true); })
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("batched_100x1M/f32/100_calls",
                               [](benchmark::State& s) { bm_batched(s, false); })
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
