// More than 2^31 elements in one call (64-bit sizes): GPU histogram and statistics vs a chunked CPU
// count.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gpu_fixture.hpp"
#include "klcal/histogram.hpp"
#include "klcal/internal/histogram_detail.hpp"
#include "klcal/reference.hpp"

namespace klcal::test {
namespace {

/// 2^31 + 1000 fp16 elements (4 GiB). KLCAL_SLOW_TEST_ELEMENTS overrides it for a quick local run
/// of the same code path on a smaller device.
std::int64_t slow_elements() {
  if (const char* e = std::getenv("KLCAL_SLOW_TEST_ELEMENTS")) return std::atoll(e);
  return (std::int64_t{1} << 31) + 1000;
}

/// fp16 bit patterns of period `period`: gaussian magnitudes, a zero spike, NaN and Inf.
std::vector<std::uint16_t> pattern(std::int64_t period) {
  std::mt19937 rng(123);
  std::uniform_int_distribution<int> mant(0, 1023);
  std::uniform_int_distribution<int> expo(5, 17);  // |x| from ~2^-10 to ~2^2
  std::vector<std::uint16_t> p(static_cast<std::size_t>(period));
  for (std::int64_t i = 0; i < period; ++i) {
    std::uint16_t h = static_cast<std::uint16_t>((expo(rng) << 10) | mant(rng));
    if (i % 2 == 1) h |= 0x8000u;   // negative
    if (i % 3 == 0) h = 0;          // ReLU-like zero spike
    if (i % 101 == 7) h = 0x7e00u;  // NaN
    if (i % 211 == 9) h = 0xfc00u;  // -Inf
    p[static_cast<std::size_t>(i)] = h;
  }
  return p;
}

class slow_histogram : public gpu_test {};

TEST_F(slow_histogram, more_than_2_pow_31_elements) {
  const std::int64_t n = slow_elements();
  const std::int64_t period = 1 << 20;
  const std::int64_t offset = 1;  // misaligned start: exercises the scalar head too
  const std::vector<std::uint16_t> pat = pattern(period);

  std::uint16_t* d_buf = nullptr;
  const std::size_t bytes = static_cast<std::size_t>(n + offset) * 2;
  if (cudaMalloc(reinterpret_cast<void**>(&d_buf), bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    GTEST_SKIP() << "cannot allocate " << bytes << " bytes of device memory";
  }
  // Fill with the periodic pattern, one period at a time.
  for (std::int64_t i = 0; i < n; i += period) {
    const std::int64_t len = std::min(period, n - i);
    ASSERT_EQ(cudaMemcpy(d_buf + offset + i, pat.data(), len * 2, cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  const std::uint16_t* d_in = d_buf + offset;

  // Expected: full periods times the pattern's histogram plus the remainder's, on the CPU.
  const std::int64_t full = n / period, rest = n % period;
  for (layout k : {layout::abs, layout::signed_}) {
    histogram_spec spec;
    spec.kind = k;
    spec.bins = k == layout::abs ? 2048 : 8001;
    spec.lo = k == layout::abs ? 0.0f : -4.0f;
    spec.hi = 4.0f;
    reference::histogram whole, part;
    ASSERT_TRUE(reference::make_histogram(spec, &whole).ok());
    ASSERT_TRUE(reference::make_histogram(spec, &part).ok());
    ASSERT_TRUE(reference::add(whole, pat.data(), dtype::f16, period).ok());
    ASSERT_TRUE(reference::add(part, pat.data(), dtype::f16, rest).ok());
    std::vector<std::uint64_t> want(spec.bins);
    for (int j = 0; j < spec.bins; ++j)
      want[j] = whole.counts[j] * static_cast<std::uint64_t>(full) + part.counts[j];

    std::uint64_t* d_counts = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_counts), spec.bins * 8), cudaSuccess);
    ASSERT_EQ(cudaMemset(d_counts, 0, spec.bins * 8), cudaSuccess);
    std::size_t tb = 0;
    ASSERT_TRUE(
        histogram_accumulate(nullptr, tb, d_in, dtype::f16, n, spec, d_counts, nullptr).ok());
    void* d_temp = nullptr;
    ASSERT_EQ(cudaMalloc(&d_temp, tb), cudaSuccess);
    ASSERT_TRUE(
        histogram_accumulate(d_temp, tb, d_in, dtype::f16, n, spec, d_counts, nullptr).ok());
    std::vector<std::uint64_t> got(spec.bins);
    ASSERT_EQ(cudaMemcpy(got.data(), d_counts, spec.bins * 8, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(got, want) << (k == layout::abs ? "abs" : "signed");

    if (k == layout::abs) {
      // The naive baseline and the batched entry point index with 64 bits too.
      ASSERT_EQ(cudaMemset(d_counts, 0, spec.bins * 8), cudaSuccess);
      ASSERT_TRUE(
          detail::histogram_naive_accumulate(d_in, dtype::f16, n, spec, d_counts, nullptr).ok());
      ASSERT_EQ(cudaMemcpy(got.data(), d_counts, spec.bins * 8, cudaMemcpyDeviceToHost),
                cudaSuccess);
      EXPECT_EQ(got, want) << "naive";
      ASSERT_EQ(cudaMemset(d_counts, 0, spec.bins * 8), cudaSuccess);
      histogram_task task{d_in, n, dtype::f16, spec, d_counts};
      ASSERT_TRUE(histogram_accumulate_batched(d_temp, tb, &task, 1, nullptr).ok());
      ASSERT_EQ(cudaMemcpy(got.data(), d_counts, spec.bins * 8, cudaMemcpyDeviceToHost),
                cudaSuccess);
      EXPECT_EQ(got, want) << "batched";

      // Statistics over the same > 2^31 elements.
      tensor_stats* d_stats = nullptr;
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_stats), sizeof(tensor_stats)), cudaSuccess);
      const tensor_stats init{};
      ASSERT_EQ(cudaMemcpy(d_stats, &init, sizeof init, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_TRUE(tensor_stats_accumulate(d_temp, tb, d_in, dtype::f16, n, d_stats, nullptr).ok());
      tensor_stats s;
      ASSERT_EQ(cudaMemcpy(&s, d_stats, sizeof s, cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_EQ(s.nan_count, whole.nan_count * full + part.nan_count);
      EXPECT_EQ(s.inf_count, whole.inf_count * full + part.inf_count);
      EXPECT_EQ(s.finite_count + s.nan_count + s.inf_count, static_cast<std::uint64_t>(n));
      EXPECT_EQ(s.max_abs, full > 0 ? whole.max_abs : part.max_abs);
      cudaFree(d_stats);
    }
    cudaFree(d_temp);
    cudaFree(d_counts);
  }
  cudaFree(d_buf);
}

}  // namespace
}  // namespace klcal::test
