// What bounds the CPU histogram: the AVX2 binning loop cut into stages, one thread, same data.
//
// Bench-only experiment (docs/benchmarking.md, "What bounds the CPU histogram"). Each variant is
// the library's f32 abs AVX2 loop (src/cpu_histogram.cpp, without statistics) with later stages
// removed or changed, on 2^24 |N(0,1)| fp32 values and 2048 bins:
//   0 load      the loads only (folded into a vector xor so they are not removed)
//   1 bin       + |x| * scale, clamp, convert: the bin indices, folded into a vector xor
//   2 extract   + the indices moved to scalar registers (summed, no memory writes)
//   3 inc4      + one counter increment per element into 4 interleaved sub-histograms
//                 (the library's loop minus its all-equal test)
//   4 inc1      as 3 with one sub-histogram
//   5 inc8      as 3 with 8 sub-histograms
//   6 inc_only  increments from a precomputed uint32 index array (no float work at all)
//   7 inc4_via_memory  as 3, the indices stored as a vector and reloaded one by one
// Each runs on all 2^24 values (64 MiB: DRAM) and on the first 2^17 (512 KiB: L2) repeated.
// Rates are per CPU-second of the benchmark thread. The library itself is bm_histogram in
// cpu_bench. Variants 3 to 6 count exactly (checked against the total once).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BOUND_AVX2 __attribute__((target("avx2")))

namespace {

constexpr std::int64_t n = std::int64_t{1} << 24;
constexpr int bins = 2048;
constexpr float hi = 5.0f;

const std::vector<float>& data() {
  static const std::vector<float> v = [] {
    std::vector<float> out(std::size_t{n});
    std::mt19937_64 rng(1235);  // cpu_bench's |N(0,1)| seed
    std::normal_distribution<float> gauss(0.0f, 1.0f);
    for (float& x : out) x = std::fabs(gauss(rng));
    return out;
  }();
  return v;
}

BOUND_AVX2 __m256i bin8(const float* p, __m256 scale, __m256 top) {
  const __m256 x = _mm256_loadu_ps(p);
  const __m256 v =
      _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fffffff)));
  __m256 q = _mm256_mul_ps(v, scale);
  q = _mm256_max_ps(q, _mm256_setzero_ps());
  q = _mm256_min_ps(q, top);
  return _mm256_cvttps_epi32(q);
}

template <int Subs>
BOUND_AVX2 void increments(const float* in, std::int64_t n, std::uint32_t* sub, std::size_t stride,
                           __m256 scale, __m256 top) {
  std::uint32_t* s[4];
  for (int k = 0; k < 4; ++k) s[k] = sub + std::size_t(k % Subs) * stride;
  std::uint32_t* t[4];
  for (int k = 0; k < 4; ++k) t[k] = sub + std::size_t((k + 4) % Subs) * stride;
  for (std::int64_t i = 0; i < n; i += 8) {
    const __m256i k = bin8(in + i, scale, top);
    const __m128i klo = _mm256_castsi256_si128(k);
    const __m128i khi = _mm256_extracti128_si256(k, 1);
    const auto q0 = static_cast<std::uint64_t>(_mm_cvtsi128_si64(klo));
    const auto q1 = static_cast<std::uint64_t>(_mm_extract_epi64(klo, 1));
    const auto q2 = static_cast<std::uint64_t>(_mm_cvtsi128_si64(khi));
    const auto q3 = static_cast<std::uint64_t>(_mm_extract_epi64(khi, 1));
    s[0][std::uint32_t(q0)] += 1;
    s[1][q0 >> 32] += 1;
    s[2][std::uint32_t(q1)] += 1;
    s[3][q1 >> 32] += 1;
    t[0][std::uint32_t(q2)] += 1;
    t[1][q2 >> 32] += 1;
    t[2][std::uint32_t(q3)] += 1;
    t[3][q3 >> 32] += 1;
  }
}

BOUND_AVX2 void run_variant(int variant, const float* in, std::int64_t n, std::uint32_t* sub,
                            std::size_t stride, const std::uint32_t* idx) {
  const __m256 scale = _mm256_set1_ps(float(bins) / hi);
  const __m256 top = _mm256_set1_ps(float(bins - 1));
  switch (variant) {
    case 0: {  // xor of the raw bits: a 1-cycle chain (a max chain would bound it at 4 cycles)
      __m256i acc = _mm256_setzero_si256();
      for (std::int64_t i = 0; i < n; i += 8)
        acc = _mm256_xor_si256(acc, _mm256_castps_si256(_mm256_loadu_ps(in + i)));
      benchmark::DoNotOptimize(acc);
      break;
    }
    case 1: {
      __m256i acc = _mm256_setzero_si256();
      for (std::int64_t i = 0; i < n; i += 8) acc = _mm256_xor_si256(acc, bin8(in + i, scale, top));
      benchmark::DoNotOptimize(acc);
      break;
    }
    case 2: {
      std::uint64_t acc = 0;
      for (std::int64_t i = 0; i < n; i += 8) {
        const __m256i k = bin8(in + i, scale, top);
        const __m128i klo = _mm256_castsi256_si128(k);
        const __m128i khi = _mm256_extracti128_si256(k, 1);
        const auto q0 = static_cast<std::uint64_t>(_mm_cvtsi128_si64(klo));
        const auto q1 = static_cast<std::uint64_t>(_mm_extract_epi64(klo, 1));
        const auto q2 = static_cast<std::uint64_t>(_mm_cvtsi128_si64(khi));
        const auto q3 = static_cast<std::uint64_t>(_mm_extract_epi64(khi, 1));
        acc += std::uint32_t(q0) + (q0 >> 32) + std::uint32_t(q1) + (q1 >> 32) + std::uint32_t(q2) +
               (q2 >> 32) + std::uint32_t(q3) + (q3 >> 32);
      }
      benchmark::DoNotOptimize(acc);
      break;
    }
    case 3: increments<4>(in, n, sub, stride, scale, top); break;
    case 4: increments<1>(in, n, sub, stride, scale, top); break;
    case 5: increments<8>(in, n, sub, stride, scale, top); break;
    case 7: {  // indices through memory: one vector store, eight 32-bit reloads
      for (std::int64_t i = 0; i < n; i += 8) {
        alignas(32) std::uint32_t k[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(k), bin8(in + i, scale, top));
        for (int l = 0; l < 8; ++l) sub[std::size_t(l & 3) * stride + k[l]] += 1;
      }
      break;
    }
    case 6:
      for (std::int64_t i = 0; i < n; i += 4) {
        sub[idx[i]] += 1;
        sub[stride + idx[i + 1]] += 1;
        sub[2 * stride + idx[i + 2]] += 1;
        sub[3 * stride + idx[i + 3]] += 1;
      }
  }
}

const char* names[] = {"load", "bin",  "extract",  "inc4",
                       "inc1", "inc8", "inc_only", "inc4_via_memory"};

void bm_histogram_bound(benchmark::State& state) {
  const int variant = static_cast<int>(state.range(0));
  state.SetLabel(std::string(names[variant]) + (state.range(1) < 24 ? " cached" : " dram"));
  if (!__builtin_cpu_supports("avx2")) {
    state.SkipWithError("no AVX2");
    return;
  }
  const float* in = data().data();
  const std::size_t stride = (static_cast<std::size_t>(bins) + 1 + 15) / 16 * 16;
  std::vector<std::uint32_t> sub(stride * 8, 0);
  std::vector<std::uint32_t> idx;
  if (variant == 6) {  // the index array of the data
    idx.resize(std::size_t{n});
    for (std::int64_t i = 0; i < n; ++i)
      idx[std::size_t(i)] = static_cast<std::uint32_t>(
          std::min(std::floor(in[i] * (float(bins) / hi)), float(bins - 1)));
  }
  // The working set: all 2^24 values (64 MiB, from DRAM) or the first 2^log2_set, read
  // 2^(24 - log2_set) times (cache-resident), the same element count either way.
  const std::int64_t set = std::int64_t{1} << state.range(1);
  std::int64_t runs = 0;
  for (auto _ : state) {
    for (std::int64_t b = 0; b < n; b += set)
      run_variant(variant, in, set, sub.data(), stride, idx.data());
    benchmark::ClobberMemory();
    ++runs;
  }
  if (variant >= 3) {  // every element counted once per run
    std::uint64_t total = 0;
    for (std::uint32_t c : sub) total += c;
    if (total != std::uint64_t(runs) * std::uint64_t(n)) state.SkipWithError("miscounted");
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * n * 4);
}

BENCHMARK(bm_histogram_bound)
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7}, {24, 17}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.3);

}  // namespace
#endif

BENCHMARK_MAIN();
