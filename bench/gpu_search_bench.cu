// GPU threshold search benchmarks: latency of one and of batched klcal::search calls.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gpu_bench_util.cuh"
#include "klcal/internal/search_detail.hpp"
#include "klcal/threshold.hpp"

// Timing follows rmm's benchmark helper: CUDA events around the call on a non-blocking stream,
// manual time. The counts stay in L2 between iterations on purpose: a search runs right after
// the histogram kernels that wrote them, and it is compute-bound (logs in fp64), not
// bandwidth-bound. The timed region includes the host-side argument checks and the packing of
// the task descriptors into kernel parameters, i.e. the latency a caller sees.

namespace {

klcal::bench::gpu_context g;

/// A post-ReLU-like histogram with noise (seeded: every run sees the same counts).
std::vector<std::uint64_t> make_counts(std::int32_t bins, bool centred, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  std::vector<std::uint64_t> c(static_cast<std::size_t>(bins));
  for (std::int32_t j = 0; j < bins; ++j) {
    const double x = centred ? (j - bins / 2) * 8.0 / bins : j * 4.0 / bins;
    c[static_cast<std::size_t>(j)] =
        static_cast<std::uint64_t>(1e6 * std::exp(-x * x / 2) * u(rng));
  }
  if (!centred) c[0] += std::uint64_t{1} << 28;  // the zero spike
  return c;
}

/// Times klcal::search over `num` histograms of `bins` bins with options `o`, one call, through
/// the given path (automatic = what klcal::search does; multi_kernel forces the three-kernel
/// path, to decide on a GPU whether the fused one-block-per-histogram path pays off).
void bm_search(benchmark::State& state, std::int32_t bins, int num, klcal::search_options o,
               bool with_curve, klcal::detail::search_path path) {
  const bool mxnet = o.rules == klcal::rule_set::mxnet;
  klcal::histogram_spec spec;
  spec.kind = mxnet ? klcal::layout::signed_ : klcal::layout::abs;
  spec.bins = bins;
  spec.lo = mxnet ? -3.0f : 0.0f;
  spec.hi = 3.0f;
  const std::int64_t curve_len = klcal::candidate_count(spec, o);
  std::uint64_t* d_counts = nullptr;
  double* d_curves = nullptr;
  klcal::search_result* d_results = nullptr;
  BENCH_CUDA(cudaMalloc(&d_counts, std::size_t(num) * bins * 8));
  BENCH_CUDA(cudaMalloc(&d_curves, std::size_t(num) * curve_len * 8));
  BENCH_CUDA(cudaMalloc(&d_results, std::size_t(num) * sizeof(klcal::search_result)));
  std::vector<klcal::search_task> tasks(static_cast<std::size_t>(num));
  for (int k = 0; k < num; ++k) {
    const auto h = make_counts(bins, mxnet, static_cast<std::uint64_t>(k));
    BENCH_CUDA(cudaMemcpy(d_counts + std::size_t(k) * bins, h.data(), h.size() * 8,
                          cudaMemcpyHostToDevice));
    tasks[k].d_counts = d_counts + std::size_t(k) * bins;
    tasks[k].spec = spec;
    tasks[k].opts = o;
    tasks[k].d_curve = with_curve ? d_curves + std::size_t(k) * curve_len : nullptr;
  }
  std::size_t temp_bytes = 0;
  if (!klcal::detail::search_with_path(path, nullptr, temp_bytes, tasks.data(), num, d_results,
                                       g.stream)
           .ok()) {
    state.SkipWithError("size query failed");
    return;
  }
  void* d_temp = nullptr;
  BENCH_CUDA(cudaMalloc(&d_temp, temp_bytes));
  for (auto _ : state) {
    klcal::status s;
    const double seconds = g.elapsed_s([&] {
      s = klcal::detail::search_with_path(path, d_temp, temp_bytes, tasks.data(), num, d_results,
                                          g.stream);
    });
    if (!s.ok()) {
      state.SkipWithError(klcal::to_string(s).c_str());
      break;
    }
    state.SetIterationTime(seconds);
  }
  state.SetItemsProcessed(state.iterations() * num);  // histograms per second
  state.counters["candidates"] = static_cast<double>(curve_len);
  state.counters["temp_MiB"] = static_cast<double>(temp_bytes) / (1 << 20);
  BENCH_CUDA(cudaFree(d_temp));
  BENCH_CUDA(cudaFree(d_results));
  BENCH_CUDA(cudaFree(d_curves));
  BENCH_CUDA(cudaFree(d_counts));
}

bool init_device() {
  int dev = 0;
  if (!klcal::bench::open_device(&g, &dev)) return false;
  int sms = 0;
  BENCH_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  benchmark::AddCustomContext("sms", std::to_string(sms));
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (!init_device()) {
    std::printf("gpu_search_bench: no CUDA device, GPU benchmarks skipped\n");
    return 0;
  }
  struct config {
    const char* name;
    std::int32_t bins;
    int num;
    bool mxnet;
  };
  // Targets (docs/design.md): tensorrt 2048 bins <= 20 us for one, <= 1 ms for 1000;
  // mxnet 8001 bins <= 100 us for one, <= 2 ms for 100.
  const config configs[] = {{"tensorrt/bins:2048/histograms:1", 2048, 1, false},
                            {"tensorrt/bins:2048/histograms:1000", 2048, 1000, false},
                            {"mxnet/bins:8001/histograms:1", 8001, 1, true},
                            {"mxnet/bins:8001/histograms:100", 8001, 100, true}};
  using klcal::detail::search_path;
  for (const config& c : configs) {
    for (bool curve : {false, true}) {
      for (search_path path : {search_path::automatic, search_path::multi_kernel}) {
        // mxnet always takes the multi-kernel path: no second variant.
        if (c.mxnet && path == search_path::multi_kernel) continue;
        const klcal::search_options o =
            c.mxnet ? klcal::search_options::mxnet() : klcal::search_options::tensorrt();
        benchmark::RegisterBenchmark(
            (std::string("search/") + c.name + (curve ? "/curve" : "") +
             (path == search_path::multi_kernel ? "/multi_kernel" : ""))
                .c_str(),
            [=](benchmark::State& s) { bm_search(s, c.bins, c.num, o, curve, path); })
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
