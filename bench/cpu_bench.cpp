// CPU backend vs the brute-force reference: histogram elements/s and threshold-search times.
//
// Every CPU benchmark carries a `x_vs_ref` counter: the reference's time on the same input
// divided by the CPU backend's (measured once per configuration, in thread CPU time for one
// thread and wall-clock time for several; for the 500-histogram batch the reference time is
// extrapolated from its first 20 histograms, since all 500 take minutes).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "klcal/cpu.hpp"
#include "klcal/reference.hpp"

namespace {

using klcal::dtype;
using klcal::histogram_spec;
using klcal::layout;
namespace ref = klcal::reference;
namespace cpu = klcal::cpu;

constexpr std::int64_t n_elements = std::int64_t{1} << 24;

enum dist_kind { uniform = 0, abs_normal = 1, half_zeros = 2, all_zeros = 3 };
const char* dist_names[] = {"uniform", "abs_normal", "50pct_zeros", "all_zeros"};
const char* dtype_names[] = {"f32", "f16", "bf16"};

std::uint16_t to_half(float f) {  // truncating float -> half, enough for benchmark data
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const int e = static_cast<int>((u >> 23) & 0xffu) - 127 + 15;
  if (e <= 0) return sign;
  if (e >= 31) return sign | 0x7c00u;
  return sign | static_cast<std::uint16_t>((e << 10) | ((u & 0x7fffffu) >> 13));
}

/// Input bytes per (dtype, distribution), generated once.
const std::vector<unsigned char>& data(dtype t, int d) {
  static std::map<std::pair<int, int>, std::vector<unsigned char>> cache;
  auto& out = cache[{static_cast<int>(t), d}];
  if (!out.empty()) return out;
  std::mt19937_64 rng(1234 + d);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  const std::size_t w = klcal::dtype_size(t);
  out.resize(std::size_t(n_elements) * w);
  for (std::int64_t i = 0; i < n_elements; ++i) {
    float x = 0.0f;
    switch (d) {
      case uniform: x = uni(rng); break;
      case abs_normal: x = std::fabs(gauss(rng)); break;
      case half_zeros: x = (rng() & 1) ? std::fabs(gauss(rng)) : 0.0f; break;
      default: x = 0.0f;
    }
    if (t == dtype::f32) {
      std::memcpy(out.data() + 4 * i, &x, 4);
    } else {
      std::uint32_t u;
      std::memcpy(&u, &x, 4);
      const std::uint16_t h = t == dtype::f16 ? to_half(x) : static_cast<std::uint16_t>(u >> 16);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

histogram_spec spec_of(bool signed_8001) {
  return signed_8001 ? histogram_spec{layout::signed_, 8001, -5.0f, 5.0f}
                     : histogram_spec{layout::abs, 2048, 0.0f, 5.0f};
}

/// Seconds of this thread's CPU time (single-threaded runs: immune to other load on a shared
/// machine) or of wall-clock time (multi-threaded runs), for the x_vs_ref ratios.
double now_s(bool wall) {
  if (wall)
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

/// Reference time for one histogram of the configuration, measured once.
double reference_hist_seconds(dtype t, int d, bool sgn) {
  static std::map<std::tuple<int, int, bool>, double> cache;
  const auto key = std::make_tuple(static_cast<int>(t), d, sgn);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const auto& in = data(t, d);
  ref::histogram h;
  if (!ref::make_histogram(spec_of(sgn), &h).ok()) return 0.0;
  const double t0 = now_s(false);
  if (!ref::add(h, in.data(), t, n_elements).ok()) return 0.0;
  return cache[key] = now_s(false) - t0;
}

// args: impl (0 cpu, 1 reference), dtype, signed_8001, distribution, threads
void bm_histogram(benchmark::State& state) {
  const bool is_ref = state.range(0) == 1;
  const auto t = static_cast<dtype>(state.range(1));
  const bool sgn = state.range(2) != 0;
  const int d = static_cast<int>(state.range(3));
  const int threads = static_cast<int>(state.range(4));
  const auto& in = data(t, d);
  const histogram_spec spec = spec_of(sgn);
  state.SetLabel(std::string(is_ref ? "reference " : "cpu ") + dtype_names[state.range(1)] +
                 (sgn ? " signed8001 " : " abs2048 ") + dist_names[d] + " threads " +
                 std::to_string(threads));
  std::vector<std::uint64_t> counts(std::size_t(spec.bins), 0);
  ref::histogram h;
  if (is_ref && !ref::make_histogram(spec, &h).ok()) state.SkipWithError("make_histogram");
  klcal::tensor_stats st;
  for (auto _ : state) {
    if (is_ref) {
      if (!ref::add(h, in.data(), t, n_elements).ok()) state.SkipWithError("add");
    } else if (!cpu::histogram_accumulate(in.data(), t, n_elements, spec, counts.data(), nullptr,
                                          threads)
                    .ok()) {
      state.SkipWithError("histogram_accumulate");
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n_elements);
  state.SetBytesProcessed(state.iterations() * n_elements *
                          static_cast<std::int64_t>(klcal::dtype_size(t)));
  if (!is_ref) {
    const double per_iter = [&] {
      const double t0 = now_s(threads > 1);
      (void)cpu::histogram_accumulate(in.data(), t, n_elements, spec, counts.data(), nullptr,
                                      threads);
      return now_s(threads > 1) - t0;
    }();
    state.counters["x_vs_ref"] = reference_hist_seconds(t, d, sgn) / per_iter;
  }
}

// One-thread runs report rates per CPU second of the benchmark thread (immune to other load on
// a shared machine); two-thread runs must use wall-clock time, which includes any such load.
void histogram_args_1(benchmark::internal::Benchmark* b) {
  for (int sgn = 0; sgn <= 1; ++sgn)
    for (int t = 0; t < 3; ++t)
      for (int d = 0; d < 4; ++d) {
        b->Args({0, t, sgn, d, 1});
        b->Args({1, t, sgn, d, 1});
      }
}
void histogram_args_2(benchmark::internal::Benchmark* b) {
  for (int sgn = 0; sgn <= 1; ++sgn)
    for (int t = 0; t < 3; ++t)
      for (int d = 0; d < 4; ++d) b->Args({0, t, sgn, d, 2});
}
BENCHMARK(bm_histogram)->Apply(histogram_args_1)->Unit(benchmark::kMillisecond)->MinTime(0.2);
BENCHMARK(bm_histogram)
    ->Apply(histogram_args_2)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.2)
    ->UseRealTime();

// ---- search ------------------------------------------------------------------------------------

/// A realistic histogram: |N(0, 1)| (abs) or N(0, 1) (signed) of 2^20 samples, plus some noise.
std::vector<std::uint64_t> search_counts(const histogram_spec& spec, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> v(1 << 20);
  for (float& x : v) x = gauss(rng) * (1.0f + float(seed % 7) * 0.1f);
  ref::histogram h;
  (void)ref::make_histogram(spec, &h);
  (void)ref::add(h, v.data(), dtype::f32, std::int64_t(v.size()));
  return h.counts;
}

double reference_search_seconds(const std::vector<std::vector<std::uint64_t>>& hs,
                                const histogram_spec& spec, const klcal::search_options& o,
                                std::size_t limit) {
  const double t0 = now_s(false);
  const std::size_t m = std::min(limit, hs.size());
  for (std::size_t k = 0; k < m; ++k) {
    ref::search_output out;
    (void)ref::search(hs[k], spec, 5.0f, o, &out);
    benchmark::DoNotOptimize(out.result.index);
  }
  return (now_s(false) - t0) * double(hs.size()) / double(m);
}

// args: impl (0 cpu, 1 reference), rules (0 tensorrt 2048 abs, 1 mxnet 8001 signed, 2 mse
// on the tensorrt histogram, 3 mse on 16384 abs bins), histograms, threads
void bm_search(benchmark::State& state) {
  const bool is_ref = state.range(0) == 1;
  const bool mx = state.range(1) == 1;
  const bool mse = state.range(1) >= 2;
  const bool wide = state.range(1) == 3;
  const auto count = static_cast<std::size_t>(state.range(2));
  const int threads = static_cast<int>(state.range(3));
  const histogram_spec spec = wide ? histogram_spec{layout::abs, 16384, 0.0f, 5.0f} : spec_of(mx);
  klcal::search_options o = mx ? klcal::search_options::mxnet() : klcal::search_options::tensorrt();
  if (mse) o.meth = klcal::method::mse;
  state.SetLabel(std::string(is_ref ? "reference " : "cpu ") +
                 (mx     ? "mxnet 8001"
                  : wide ? "mse 16384"
                  : mse  ? "mse 2048"
                         : "tensorrt 2048") +
                 " histograms " + std::to_string(count) + " threads " + std::to_string(threads));
  std::vector<std::vector<std::uint64_t>> hs;
  for (std::size_t k = 0; k < count; ++k) hs.push_back(search_counts(spec, k + 1));
  std::vector<cpu::search_task> tasks(count);
  for (std::size_t k = 0; k < count; ++k) {
    tasks[k].h_counts = hs[k].data();
    tasks[k].spec = spec;
    tasks[k].max_abs = 5.0f;
    tasks[k].opts = o;
  }
  std::vector<klcal::search_result> res(count);
  for (auto _ : state) {
    if (is_ref) {
      for (std::size_t k = 0; k < count; ++k) {
        ref::search_output out;
        if (!ref::search(hs[k], spec, 5.0f, o, &out).ok()) state.SkipWithError("search");
        benchmark::DoNotOptimize(out.result.index);
      }
    } else if (!cpu::search(tasks.data(), std::int32_t(count), res.data(), threads).ok()) {
      state.SkipWithError("cpu::search");
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * std::int64_t(count));
  if (!is_ref) {
    const double t0 = now_s(threads > 1);
    (void)cpu::search(tasks.data(), std::int32_t(count), res.data(), threads);
    const double cpu_s = now_s(threads > 1) - t0;
    state.counters["x_vs_ref"] = reference_search_seconds(hs, spec, o, 20) / cpu_s;
  }
}

BENCHMARK(bm_search)
    ->Args({0, 0, 1, 1})
    ->Args({1, 0, 1, 1})
    ->Args({0, 0, 500, 1})
    ->Args({0, 1, 1, 1})
    ->Args({0, 2, 1, 1})
    ->Args({1, 2, 1, 1})
    ->Args({0, 3, 1, 1})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(bm_search)->Args({1, 1, 1, 1})->Iterations(1)->Unit(benchmark::kMillisecond);
// Several threads: wall-clock time.
BENCHMARK(bm_search)
    ->Args({0, 0, 500, 2})
    ->Args({0, 1, 1, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
