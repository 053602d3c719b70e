// CPU backend vs the brute-force reference and the goldens: histograms bit for bit, searches in
// tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "golden.hpp"
#include "klcal/cpu.hpp"
#include "klcal/reference.hpp"
#include "test_data.hpp"

namespace {

using klcal::dtype;
using klcal::errc;
using klcal::histogram_spec;
using klcal::layout;
using klcal::test::all_dists;
using klcal::test::bits_of;
using klcal::test::dist;
using klcal::test::dist_name;
using klcal::test::dtype_name;
using klcal::test::encode;
using klcal::test::errc_name;
namespace ref = klcal::reference;
namespace cpu = klcal::cpu;

std::vector<float> make_values(dist d, std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(-3.0f, 3.0f);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::exponential_distribution<float> expo(1.5f);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    switch (d) {
      case dist::uniform: v[i] = uni(rng); break;
      case dist::gaussian: v[i] = gauss(rng); break;
      case dist::laplace: v[i] = (pick(rng) < 50 ? -1.0f : 1.0f) * expo(rng); break;
      case dist::relu: v[i] = std::max(0.0f, gauss(rng)); break;  // half exact zeros
      case dist::zeros: v[i] = (i % 3 == 1) ? -0.0f : 0.0f; break;
      case dist::one_value: v[i] = -1.25f; break;
      case dist::nan_inf: {
        const int p = pick(rng);
        if (p < 5)
          v[i] = std::numeric_limits<float>::quiet_NaN();
        else if (p < 8)
          v[i] = (p & 1 ? -1.0f : 1.0f) * std::numeric_limits<float>::infinity();
        else
          v[i] = gauss(rng) * 4.0f;
        break;
      }
    }
  }
  return v;
}

// Widened value of element i, through the reference's own widening (exact, independent of src/).
float widened(const unsigned char* p, dtype t, std::size_t i) {
  if (t == dtype::f32) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  std::uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return t == dtype::f16 ? ref::half_to_float(h) : ref::bfloat16_to_float(h);
}

// ---- histograms -------------------------------------------------------------------------------

struct expected_stats {
  std::uint64_t finite = 0, nan = 0, inf = 0;
  float max_abs = 0.0f, min = std::numeric_limits<float>::infinity(),
        max = -std::numeric_limits<float>::infinity();
};

expected_stats plain_stats(const unsigned char* p, dtype t, std::size_t n) {
  expected_stats e;
  for (std::size_t i = 0; i < n; ++i) {
    const float x = widened(p, t, i);
    if (std::isnan(x)) {
      ++e.nan;
    } else if (std::isinf(x)) {
      ++e.inf;
    } else {
      ++e.finite;
      e.max_abs = std::max(e.max_abs, std::fabs(x));
      // numerics.md 1.3: -0 is recorded as +0 in min and max.
      const float xz = x == 0.0f ? 0.0f : x;
      e.min = std::min(e.min, xz);
      e.max = std::max(e.max, xz);
    }
  }
  return e;
}

// The specs a data set is binned with: a two-pass-like abs range, an abs range that clamps,
// the mxnet signed layout and an asymmetric signed range.
std::vector<histogram_spec> specs_for(float max_abs) {
  const float hi = std::max(max_abs, 0x1p-64f);  // the two-pass floor of numerics.md 1.5
  return {
      {layout::abs, 2048, 0.0f, hi},
      {layout::abs, 1000, 0.0f, 1.5f},
      {layout::signed_, 8001, -hi, hi},
      {layout::signed_, 77, -1.0f, 2.5f},
  };
}

TEST(cpu_histogram, equals_reference_over_dtypes_layouts_sizes_distributions) {
  const std::int64_t sizes[] = {0, 1, 31, 4097, (1 << 20) + 7};
  const dtype types[] = {dtype::f32, dtype::f16, dtype::bf16};
  std::uint64_t seed = 1;
  std::size_t checked = 0;
  for (const dtype t : types) {
    const std::size_t w = klcal::dtype_size(t);
    for (const std::int64_t n : sizes) {
      for (const dist d : all_dists) {
        const auto vals = make_values(d, static_cast<std::size_t>(n), ++seed);
        const auto bytes = encode(vals, t);
        const expected_stats es = plain_stats(bytes.data(), t, vals.size());
        for (const histogram_spec& spec : specs_for(es.max_abs)) {
          // The big size only for the two layouts that matter most, to bound the run time.
          if (n > 100000 && spec.bins != 2048 && spec.bins != 8001) continue;
          SCOPED_TRACE(std::string(dtype_name(t)) + " " + dist_name(d) + " n=" + std::to_string(n) +
                       " bins=" + std::to_string(spec.bins) +
                       (spec.kind == layout::abs ? " abs" : " signed"));
          ref::histogram rh;
          ASSERT_TRUE(ref::make_histogram(spec, &rh).ok());
          ASSERT_TRUE(ref::add(rh, bytes.data(), t, n).ok());
          EXPECT_EQ(rh.nan_count, es.nan);
          EXPECT_EQ(rh.inf_count, es.inf);
          for (int offset = 0; offset <= 3; ++offset) {
            // Copy to a buffer shifted by `offset` elements, so the data is misaligned.
            std::vector<unsigned char> buf(bytes.size() + 4 * w + 32);
            unsigned char* base =
                buf.data() + (32 - reinterpret_cast<std::uintptr_t>(buf.data()) % 32) % 32;
            unsigned char* p = base + offset * w;
            if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
            for (const int threads : {1, 2, 3}) {
              if (offset != 0 && threads != 1 + offset % 3 && n > 100000) continue;
              // Start from non-zero counts: the backend accumulates.
              std::vector<std::uint64_t> counts(std::size_t(spec.bins));
              for (std::size_t j = 0; j < counts.size(); ++j) counts[j] = j % 5;
              klcal::tensor_stats st;
              st.finite_count = 7;
              ASSERT_TRUE(
                  cpu::histogram_accumulate(p, t, n, spec, counts.data(), &st, threads).ok());
              std::size_t bad = 0;
              for (std::size_t j = 0; j < counts.size() && bad < 5; ++j)
                if (counts[j] != rh.counts[j] + j % 5) {
                  ++bad;
                  ADD_FAILURE() << "offset " << offset << " threads " << threads << " bin " << j
                                << ": cpu " << counts[j] - j % 5 << ", reference " << rh.counts[j];
                }
              EXPECT_EQ(st.finite_count, es.finite + 7);
              EXPECT_EQ(st.nan_count, es.nan);
              EXPECT_EQ(st.inf_count, es.inf);
              EXPECT_EQ(bits_of(st.max_abs), bits_of(rh.max_abs));
              EXPECT_EQ(bits_of(st.min), bits_of(es.min));
              EXPECT_EQ(bits_of(st.max), bits_of(es.max));
              // Without stats the counts are the same.
              std::vector<std::uint64_t> c2(std::size_t(spec.bins), 0);
              ASSERT_TRUE(
                  cpu::histogram_accumulate(p, t, n, spec, c2.data(), nullptr, threads).ok());
              EXPECT_EQ(c2, rh.counts);
              // Stats alone equal the fused stats.
              klcal::tensor_stats st2;
              ASSERT_TRUE(cpu::tensor_stats_accumulate(p, t, n, &st2, threads).ok());
              EXPECT_EQ(st2.finite_count, es.finite);
              EXPECT_EQ(st2.nan_count, es.nan);
              EXPECT_EQ(st2.inf_count, es.inf);
              EXPECT_EQ(bits_of(st2.max_abs), bits_of(st.max_abs));
              EXPECT_EQ(bits_of(st2.min), bits_of(es.min));
              EXPECT_EQ(bits_of(st2.max), bits_of(es.max));
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 1000u);
}

TEST(cpu_histogram, every_f16_and_bf16_pattern) {
  // All 65536 patterns once each: covers subnormals, +-0, Inf, every NaN payload.
  std::vector<std::uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
  for (const dtype t : {dtype::f16, dtype::bf16}) {
    for (const histogram_spec spec :
         {histogram_spec{layout::abs, 4096, 0.0f, t == dtype::f16 ? 65504.0f : 1e30f},
          histogram_spec{layout::abs, 2048, 0.0f, 1.0f},
          histogram_spec{layout::signed_, 8001, -2.0f, 2.0f}}) {
      ref::histogram rh;
      ASSERT_TRUE(ref::make_histogram(spec, &rh).ok());
      ASSERT_TRUE(ref::add(rh, all.data(), t, 65536).ok());
      for (const int threads : {1, 2}) {
        std::vector<std::uint64_t> counts(std::size_t(spec.bins), 0);
        klcal::tensor_stats st;
        ASSERT_TRUE(
            cpu::histogram_accumulate(all.data(), t, 65536, spec, counts.data(), &st, threads)
                .ok());
        EXPECT_EQ(counts, rh.counts) << dtype_name(t) << " bins " << spec.bins;
        EXPECT_EQ(st.nan_count, rh.nan_count);
        EXPECT_EQ(st.inf_count, rh.inf_count);
        EXPECT_EQ(bits_of(st.max_abs), bits_of(rh.max_abs));
      }
    }
  }
}

TEST(cpu_histogram, edges_huge_values_and_tiny_ranges) {
  // Values exactly on bin edges, the upper edge, just below it, huge finite values (product
  // overflows to +inf), -0, and a range so narrow that the fp32 scale overflows (0 * inf).
  std::vector<float> v = {0.0f,   -0.0f,  1.0f,    -1.0f, 0.5f,  0.99999994f, 1.0000001f, 3e38f,
                          -3e38f, 1e-45f, -1e-45f, 0.25f, 0.75f, 2.0f,        1e-40f};
  for (int k = 0; k <= 64; ++k) v.push_back(static_cast<float>(k) / 64.0f);
  for (const histogram_spec spec :
       {histogram_spec{layout::abs, 64, 0.0f, 1.0f}, histogram_spec{layout::abs, 3, 0.0f, 1.0f},
        histogram_spec{layout::abs, 2048, 0.0f, 0x1p-64f},
        histogram_spec{layout::signed_, 65, -1.0f, 1.0f},
        histogram_spec{layout::signed_, 7, -1.5e38f, 1.5e38f},
        histogram_spec{layout::abs, klcal::max_bins, 0.0f, 1.0f}}) {
    ref::histogram rh;
    const auto made = ref::make_histogram(spec, &rh).code;
    ASSERT_EQ(errc_name(made), "ok") << "bins " << spec.bins << " hi " << spec.hi;
    ASSERT_TRUE(ref::add(rh, v.data(), dtype::f32, std::int64_t(v.size())).ok());
    std::vector<std::uint64_t> counts(std::size_t(spec.bins), 0);
    ASSERT_TRUE(cpu::histogram_accumulate(v.data(), dtype::f32, std::int64_t(v.size()), spec,
                                          counts.data(), nullptr, 1)
                    .ok());
    EXPECT_EQ(counts, rh.counts) << "bins " << spec.bins << " hi " << spec.hi;
  }
}

TEST(cpu_histogram, long_single_thread_range_flushes_32bit_counters) {
  // One worker over more than 2^30 elements (policy::flush_elements) must flush its 32-bit
  // counters into 64-bit totals mid-range and still count exactly. 2^30 + 4099 bf16 values
  // (2 GiB) cycling through 0, 0.5, 1.5 and NaN; expected counts follow from the cycle.
  const std::int64_t n = (std::int64_t{1} << 30) + 4099;
  std::vector<std::uint16_t> v;
  try {
    v.resize(static_cast<std::size_t>(n));
  } catch (const std::bad_alloc&) {
    GTEST_SKIP() << "2 GiB not available";
  }
  const std::uint16_t cycle[4] = {0x0000, 0x3f00, 0x3fc0, 0x7fc0};  // 0, 0.5, 1.5, NaN
  for (std::int64_t i = 0; i < n; ++i) v[std::size_t(i)] = cycle[i & 3];
  const histogram_spec spec{layout::abs, 4, 0.0f, 2.0f};
  std::vector<std::uint64_t> counts(4, 0);
  klcal::tensor_stats st;
  ASSERT_TRUE(
      cpu::histogram_accumulate(v.data(), dtype::bf16, n, spec, counts.data(), &st, 1).ok());
  const auto per = [&](int r) { return std::uint64_t((n - r + 3) / 4); };  // i % 4 == r
  EXPECT_EQ(counts, (std::vector<std::uint64_t>{per(0), per(1), 0, per(2)}));
  EXPECT_EQ(st.nan_count, per(3));
  EXPECT_EQ(st.finite_count, per(0) + per(1) + per(2));
  EXPECT_EQ(st.max_abs, 1.5f);
}

TEST(cpu_histogram, n_zero_leaves_everything_unchanged) {
  std::vector<std::uint64_t> counts(2048, 3);
  klcal::tensor_stats st;
  st.nan_count = 9;
  const float x = 1.0f;
  ASSERT_TRUE(cpu::histogram_accumulate(&x, dtype::f32, 0, {}, counts.data(), &st).ok());
  EXPECT_EQ(counts, std::vector<std::uint64_t>(2048, 3));
  EXPECT_EQ(st.nan_count, 9u);
  EXPECT_EQ(st.finite_count, 0u);
  // Null pointers are fine when there is nothing to read or write.
  EXPECT_TRUE(cpu::histogram_accumulate(nullptr, dtype::f32, 0, {}, nullptr, nullptr).ok());
  EXPECT_TRUE(cpu::tensor_stats_accumulate(nullptr, dtype::f16, 0, nullptr).ok());
}

TEST(cpu_histogram, invalid_arguments) {
  std::vector<std::uint64_t> counts(2048, 0);
  const float x[4] = {1, 2, 3, 4};
  klcal::tensor_stats st;
  const histogram_spec ok_spec{};
  auto code = [](klcal::status s) { return errc_name(s.code); };
  EXPECT_EQ(
      code(cpu::histogram_accumulate(x, static_cast<dtype>(7), 4, ok_spec, counts.data(), nullptr)),
      "invalid_dtype");
  EXPECT_EQ(code(cpu::histogram_accumulate(x, dtype::f32, -1, ok_spec, counts.data(), nullptr)),
            "invalid_count");
  EXPECT_EQ(code(cpu::histogram_accumulate(nullptr, dtype::f32, 4, ok_spec, counts.data(), &st)),
            "null_pointer");
  EXPECT_EQ(code(cpu::histogram_accumulate(x, dtype::f32, 4, ok_spec, nullptr, &st)),
            "null_pointer");
  EXPECT_EQ(code(cpu::histogram_accumulate(x, dtype::f32, 4, {layout::abs, 1, 0.0f, 1.0f},
                                           counts.data(), nullptr)),
            "too_few_bins");
  EXPECT_EQ(code(cpu::histogram_accumulate(x, dtype::f32, 4,
                                           {layout::abs, klcal::max_bins + 1, 0.0f, 1.0f},
                                           counts.data(), nullptr)),
            "too_many_bins");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float finf = std::numeric_limits<float>::infinity();
  for (const histogram_spec bad :
       {histogram_spec{layout::abs, 16, 0.0f, 0.0f}, histogram_spec{layout::abs, 16, 0.0f, -1.0f},
        histogram_spec{layout::abs, 16, 0.0f, nan}, histogram_spec{layout::abs, 16, 0.0f, finf},
        histogram_spec{layout::abs, 16, -1.0f, 1.0f},
        histogram_spec{layout::signed_, 16, -3e38f, 3e38f + 2e38f},
        histogram_spec{layout::signed_, 16, -2e38f, 3e38f},
        histogram_spec{layout::abs, 2048, 0.0f, 1e-42f}})  // the fp32 scale overflows
    EXPECT_EQ(code(cpu::histogram_accumulate(x, dtype::f32, 4, bad, counts.data(), nullptr)),
              "invalid_range")
        << bad.lo << " " << bad.hi;
  EXPECT_EQ(
      code(cpu::histogram_accumulate(x, dtype::f32, 4, {static_cast<layout>(5), 16, 0.0f, 1.0f},
                                     counts.data(), nullptr)),
      "invalid_option");
  EXPECT_EQ(code(cpu::tensor_stats_accumulate(x, static_cast<dtype>(3), 4, &st)), "invalid_dtype");
  EXPECT_EQ(code(cpu::tensor_stats_accumulate(x, dtype::f32, -5, &st)), "invalid_count");
  EXPECT_EQ(code(cpu::tensor_stats_accumulate(x, dtype::f32, 4, nullptr)), "null_pointer");
  EXPECT_EQ(code(cpu::tensor_stats_accumulate(nullptr, dtype::f32, 4, &st)), "null_pointer");
  // Nothing was touched by the failing calls.
  EXPECT_EQ(counts, std::vector<std::uint64_t>(2048, 0));
  EXPECT_EQ(st.finite_count, 0u);

  EXPECT_EQ(code(cpu::histogram_fold_pow2(counts.data(), 1, 1)), "too_few_bins");
  EXPECT_EQ(code(cpu::histogram_fold_pow2(counts.data(), 1000, 1)), "bins_not_power_of_two");
  EXPECT_EQ(code(cpu::histogram_fold_pow2(counts.data(), 1 << 25, 1)), "too_many_bins");
  EXPECT_EQ(code(cpu::histogram_fold_pow2(nullptr, 2048, 1)), "null_pointer");
  EXPECT_EQ(code(cpu::histogram_fold_pow2(counts.data(), 2048, -1)), "invalid_count");
}

// ---- streaming (fold_pow2) ---------------------------------------------------------------------

// The streaming protocol of numerics.md 1.5 on the CPU backend.
struct cpu_streaming {
  std::int32_t bins;
  int e = -64;
  std::vector<std::uint64_t> counts;
  klcal::tensor_stats st;
  explicit cpu_streaming(std::int32_t b) : bins(b), counts(std::size_t(b), 0) {}
  void add(const void* p, dtype t, std::int64_t n, int threads) {
    klcal::tensor_stats batch;
    ASSERT_TRUE(cpu::tensor_stats_accumulate(p, t, n, &batch, threads).ok());
    int d = 0;
    while (e < 127 && batch.max_abs >= std::ldexp(1.0f, e)) {
      ++e;
      ++d;
    }
    ASSERT_TRUE(cpu::histogram_fold_pow2(counts.data(), bins, d).ok());
    const histogram_spec spec{layout::abs, bins, 0.0f, std::ldexp(1.0f, e)};
    ASSERT_TRUE(cpu::histogram_accumulate(p, t, n, spec, counts.data(), &st, threads).ok());
  }
};

TEST(cpu_histogram, fold_pow2_streaming_equals_reference) {
  std::uint64_t seed = 100;
  for (const dtype t : {dtype::f32, dtype::f16, dtype::bf16}) {
    for (const std::int32_t bins : {2, 64, 2048}) {
      ref::streaming_histogram rs;
      ASSERT_TRUE(rs.init(bins).ok());
      cpu_streaming cs(bins);
      // Batches of growing magnitude force doublings, including several at once.
      for (const float mag : {1e-3f, 0.0f, 0.4f, 3.0f, 2.9f, 5000.0f, 1e-6f, 60000.0f}) {
        auto vals = make_values(dist::gaussian, 3001, ++seed);
        for (float& x : vals) x *= mag;
        const auto bytes = encode(vals, t);
        ASSERT_TRUE(rs.add(bytes.data(), t, 3001).ok());
        cs.add(bytes.data(), t, 3001, 2);
        EXPECT_EQ(cs.counts, rs.get().counts) << dtype_name(t) << " bins " << bins;
        EXPECT_EQ(bits_of(std::ldexp(1.0f, cs.e)), bits_of(rs.get().spec.hi));
        EXPECT_EQ(bits_of(cs.st.max_abs), bits_of(rs.get().max_abs));
      }
    }
  }
}

TEST(cpu_histogram, fold_pow2_by_hand) {
  std::vector<std::uint64_t> c = {1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_TRUE(cpu::histogram_fold_pow2(c.data(), 8, 0).ok());
  EXPECT_EQ(c, (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  ASSERT_TRUE(cpu::histogram_fold_pow2(c.data(), 8, 1).ok());
  EXPECT_EQ(c, (std::vector<std::uint64_t>{3, 7, 11, 15, 0, 0, 0, 0}));
  ASSERT_TRUE(cpu::histogram_fold_pow2(c.data(), 8, 2).ok());
  EXPECT_EQ(c, (std::vector<std::uint64_t>{36, 0, 0, 0, 0, 0, 0, 0}));
  std::vector<std::uint64_t> d = {1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_TRUE(cpu::histogram_fold_pow2(d.data(), 8, 40).ok());  // more than log2(8)
  EXPECT_EQ(d, (std::vector<std::uint64_t>{36, 0, 0, 0, 0, 0, 0, 0}));
}

// ---- searches ----------------------------------------------------------------------------------

// Compares a CPU search result and curve with a reference curve/result under the fast-path
// tolerance of docs/testing.md.
void expect_search_close(const klcal::search_options& o, const std::vector<double>& ref_curve,
                         const klcal::search_result& rr, const klcal::search_result& cr,
                         const std::vector<double>& cpu_curve) {
  constexpr double a = klcal::test::fast_abs_tol, rel = klcal::test::fast_rel_tol;
  EXPECT_EQ(klcal::test::curve_mismatch(ref_curve, cpu_curve, a, rel), "");
  EXPECT_EQ(cr.degenerate, rr.degenerate);
  EXPECT_TRUE(klcal::test::value_close(rr.score, cr.score, a, rel))
      << "score " << cr.score << " vs " << rr.score;
  if (!ref_curve.empty() && !rr.degenerate) {
    EXPECT_TRUE(
        klcal::test::index_optimal(ref_curve, klcal::test::candidate_position(o, cr.index), a, rel))
        << "index " << cr.index << " (reference " << rr.index << ")";
  }
  if (cr.index == rr.index) {
    EXPECT_EQ(bits_of(cr.amax), bits_of(rr.amax)) << cr.amax << " vs " << rr.amax;
    EXPECT_EQ(bits_of(cr.scale), bits_of(rr.scale));
    EXPECT_TRUE(klcal::test::value_close(rr.clipped_fraction, cr.clipped_fraction, a, rel))
        << cr.clipped_fraction << " vs " << rr.clipped_fraction;
  } else {
    EXPECT_FALSE(ref_curve.empty())
        << "index differs without a curve: " << cr.index << " vs " << rr.index;
  }
}

void compare_with_reference(const std::vector<std::uint64_t>& counts, const histogram_spec& spec,
                            float max_abs, const klcal::search_options& o, int threads) {
  ref::search_output ro;
  ASSERT_TRUE(ref::search(counts, spec, max_abs, o, &ro).ok());
  const std::int64_t n = klcal::candidate_count(spec, o);
  std::vector<double> curve(std::size_t(n), -1.0);
  cpu::search_task task;
  task.h_counts = counts.data();
  task.spec = spec;
  task.max_abs = max_abs;
  task.opts = o;
  task.h_curve = n > 0 ? curve.data() : nullptr;
  klcal::search_result res;
  ASSERT_TRUE(cpu::search(&task, 1, &res, threads).ok());
  expect_search_close(o, ro.curve, ro.result, res, curve);
}

std::vector<std::uint64_t> counts_of(const std::vector<float>& v, const histogram_spec& spec) {
  ref::histogram h;
  EXPECT_TRUE(ref::make_histogram(spec, &h).ok());
  EXPECT_TRUE(ref::add(h, v.data(), dtype::f32, std::int64_t(v.size())).ok());
  return h.counts;
}

TEST(cpu_search, all_methods_match_reference) {
  std::uint64_t seed = 7;
  for (const dist d : {dist::gaussian, dist::laplace, dist::relu, dist::uniform}) {
    auto vals = make_values(d, 200000, ++seed);
    float mx = 0.0f;
    for (float x : vals) mx = std::max(mx, std::fabs(x));
    const histogram_spec abs_spec{layout::abs, 2048, 0.0f, mx};
    const histogram_spec sgn_spec{layout::signed_, 1001, -mx, mx};
    const auto ac = counts_of(vals, abs_spec);
    const auto sc = counts_of(vals, sgn_spec);
    SCOPED_TRACE(dist_name(d));
    for (const int threads : {1, 3}) {
      klcal::search_options o;
      compare_with_reference(ac, abs_spec, mx, o, threads);
      o.zero_bin = klcal::zero_bin_policy::keep;
      o.stride = 3;
      o.start_bin = 100;
      compare_with_reference(ac, abs_spec, mx, o, threads);
      klcal::search_options u;
      u.is_unsigned = true;
      u.bits = 7;
      compare_with_reference(ac, abs_spec, mx, u, threads);
      klcal::search_options m = klcal::search_options::mxnet();
      compare_with_reference(sc, sgn_spec, mx, m, threads);
      m.bits = 6;
      compare_with_reference(sc, sgn_spec, mx, m, threads);
      for (const klcal::method meth :
           {klcal::method::mse, klcal::method::percentile, klcal::method::max}) {
        klcal::search_options p;
        p.meth = meth;
        compare_with_reference(ac, abs_spec, mx, p, threads);
        p.percentile = 50.0;
        p.stride = 7;
        p.bits = 4;
        compare_with_reference(ac, abs_spec, mx, p, threads);
      }
      klcal::search_options mx_sgn;
      mx_sgn.meth = klcal::method::max;
      compare_with_reference(sc, sgn_spec, mx, mx_sgn, threads);
    }
  }
}

TEST(cpu_search, degenerate_histograms) {
  const histogram_spec abs_spec{layout::abs, 256, 0.0f, 1.0f};
  const histogram_spec sgn_spec{layout::signed_, 301, -1.0f, 1.0f};
  std::vector<std::uint64_t> empty_abs(256, 0), zero_abs(256, 0), empty_sgn(301, 0),
      zero_sgn(301, 0), one_bin(256, 0);
  zero_abs[0] = 1000;
  zero_sgn[150] = 1000;
  one_bin[200] = 5;  // every tensorrt candidate with i <= 200 is +inf
  for (const auto* c : {&empty_abs, &zero_abs, &one_bin}) {
    for (const klcal::method meth : {klcal::method::entropy, klcal::method::mse,
                                     klcal::method::percentile, klcal::method::max}) {
      klcal::search_options o;
      o.meth = meth;
      compare_with_reference(*c, abs_spec, 0.0f, o, 2);
    }
  }
  for (const auto* c : {&empty_sgn, &zero_sgn})
    compare_with_reference(*c, sgn_spec, 0.0f, klcal::search_options::mxnet(), 2);
  // Explicit expectations from numerics.md 5.3 (not from the reference).
  cpu::search_task t;
  t.h_counts = zero_abs.data();
  t.spec = abs_spec;
  t.max_abs = 0.0f;
  klcal::search_result r;
  r.amax = 5;
  ASSERT_TRUE(cpu::search(&t, 1, &r, 1).ok());
  EXPECT_TRUE(r.degenerate);
  EXPECT_EQ(r.amax, 0.0);
  EXPECT_EQ(r.index, 0);
  EXPECT_EQ(r.scale, 0.0f);
  EXPECT_EQ(r.score, 0.0);
  // All-inf tensorrt: the last candidate, score +inf, degenerate; all-inf mxnet: the first.
  std::vector<std::uint64_t> tail_only(256, 0);
  tail_only[255] = 3;
  tail_only[10] = 1;
  t.h_counts = tail_only.data();
  t.opts.start_bin = 20;
  t.opts.stride = 5;  // candidates 20, 25, ..., 255 (256 is not one): c[i-1] = 0 < tail
  ASSERT_TRUE(cpu::search(&t, 1, &r, 1).ok());
  EXPECT_TRUE(r.degenerate);
  EXPECT_EQ(r.index, 255);
  EXPECT_TRUE(std::isinf(r.score));
}

TEST(cpu_search, percentile_exact_on_both_implementations) {
  // numerics.md 4: k = first bin with 100e9 S(k+1) >= P T, P = llround(p * 1e9). Expected
  // indices by hand; "fp64:" gives the index of S / T >= p / 100 in fp64 where it differs.
  struct pct_case {
    std::vector<std::uint64_t> counts;
    double p;
    std::int32_t k;
  };
  const std::vector<std::uint64_t> c999 = {9, 91, 800, 99, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
  const std::vector<std::uint64_t> big = {(std::uint64_t{1} << 60) - 1, 0, 1, 0};
  const std::vector<std::uint64_t> e11 = {2, 1, 99'999'999'995, 2};  // T = 1e11
  const pct_case cases[] = {
      {c999, 99.9, 3},          // S = 999 of 1000 is exactly 99.9 % (fp64: 12)
      {c999, 0.9, 0},           // S = 9 of 1000 is exactly 0.9 % (fp64: 1)
      {c999, 99.90000001, 12},  // needs more than 999
      {c999, 100.0, 12},        // the last value
      {big, 100.0, 2},          // 2^60 - 1 of 2^60 is not 100 % (fp64: 0)
      {big, 99.999999999, 0},   // 100e9 (2^60 - 1) >= (100e9 - 1) 2^60
      {e11, 2.5e-9, 1},         // p * 1e9 = 2.5 exactly: P = 3 (half away from zero)
      {e11, 99.999999998, 2},   // S(3) = 1e11 - 2 = P
      {e11, 99.999999999, 3},   // P = 1e11 - 1 > S(3)
  };
  for (const pct_case& c : cases) {
    SCOPED_TRACE("p = " + std::to_string(c.p) + ", bins " + std::to_string(c.counts.size()));
    const histogram_spec spec{layout::abs, std::int32_t(c.counts.size()), 0.0f, 16.0f};
    klcal::search_options o;
    o.meth = klcal::method::percentile;
    o.percentile = c.p;
    const double w = 16.0 / double(c.counts.size());
    ref::search_output ro;
    ASSERT_TRUE(ref::search(c.counts, spec, 0.0f, o, &ro).ok());
    EXPECT_EQ(ro.result.index, c.k) << "reference";
    EXPECT_EQ(ro.result.amax, c.k * w) << "reference";
    cpu::search_task task;
    task.h_counts = c.counts.data();
    task.spec = spec;
    task.opts = o;
    klcal::search_result res;
    ASSERT_TRUE(cpu::search(&task, 1, &res, 1).ok());
    EXPECT_EQ(res.index, c.k) << "CPU backend";
    EXPECT_EQ(res.amax, c.k * w) << "CPU backend";
    EXPECT_FALSE(res.degenerate);
  }
}

TEST(cpu_search, batched_equals_one_by_one) {
  std::uint64_t seed = 55;
  std::vector<std::vector<std::uint64_t>> counts;
  std::vector<cpu::search_task> tasks;
  std::vector<std::vector<double>> curves;
  for (int k = 0; k < 24; ++k) {
    const bool mx = k % 4 == 3;
    auto vals = make_values(k % 3 == 0 ? dist::laplace : dist::gaussian, 20000, ++seed);
    const histogram_spec spec = mx ? histogram_spec{layout::signed_, 801, -4.0f, 4.0f}
                                   : histogram_spec{layout::abs, 512, 0.0f, 4.0f};
    counts.push_back(counts_of(vals, spec));
    cpu::search_task t;
    t.spec = spec;
    t.max_abs = 4.0f;
    if (mx) t.opts = klcal::search_options::mxnet();
    if (k % 4 == 1) t.opts.meth = klcal::method::mse;
    if (k % 4 == 2) t.opts.meth = klcal::method::percentile;
    tasks.push_back(t);
    curves.emplace_back(
        std::size_t(std::max<std::int64_t>(1, klcal::candidate_count(spec, t.opts))));
  }
  for (std::size_t k = 0; k < tasks.size(); ++k) {
    tasks[k].h_counts = counts[k].data();
    tasks[k].h_curve =
        klcal::candidate_count(tasks[k].spec, tasks[k].opts) > 0 ? curves[k].data() : nullptr;
  }
  std::vector<klcal::search_result> batched(tasks.size());
  ASSERT_TRUE(cpu::search(tasks.data(), std::int32_t(tasks.size()), batched.data(), 3).ok());
  const auto batched_curves = curves;
  for (std::size_t k = 0; k < tasks.size(); ++k) {
    klcal::search_result one;
    ASSERT_TRUE(cpu::search(&tasks[k], 1, &one, 1).ok());
    EXPECT_EQ(one.index, batched[k].index) << k;
    EXPECT_EQ(bits_of(one.amax), bits_of(batched[k].amax));
    EXPECT_EQ(bits_of(one.score), bits_of(batched[k].score));
    EXPECT_EQ(bits_of(one.scale), bits_of(batched[k].scale));
    EXPECT_EQ(one.degenerate, batched[k].degenerate);
    EXPECT_EQ(curves[k], batched_curves[k]);
  }
}

TEST(cpu_search, invalid_arguments) {
  std::vector<std::uint64_t> c(2048, 1);
  cpu::search_task t;
  t.h_counts = c.data();
  klcal::search_result r;
  auto code = [](klcal::status s) { return errc_name(s.code); };
  EXPECT_EQ(code(cpu::search(&t, -1, &r)), "invalid_count");
  EXPECT_EQ(code(cpu::search(nullptr, 1, &r)), "null_pointer");
  EXPECT_EQ(code(cpu::search(&t, 1, nullptr)), "null_pointer");
  EXPECT_TRUE(cpu::search(nullptr, 0, nullptr).ok());
  auto with = [&](auto edit) {
    cpu::search_task u = t;
    edit(u);
    return code(cpu::search(&u, 1, &r));
  };
  EXPECT_EQ(with([](cpu::search_task& u) { u.h_counts = nullptr; }), "null_pointer");
  EXPECT_EQ(with([](cpu::search_task& u) { u.spec.bins = 1; }), "too_few_bins");
  EXPECT_EQ(with([](cpu::search_task& u) { u.opts.start_bin = 0; }), "start_bin_out_of_range");
  EXPECT_EQ(with([](cpu::search_task& u) { u.opts.start_bin = 2049; }), "start_bin_out_of_range");
  EXPECT_EQ(with([](cpu::search_task& u) { u.opts.stride = 0; }), "invalid_stride");
  EXPECT_EQ(with([](cpu::search_task& u) { u.opts.bits = 1; }), "invalid_bits");
  EXPECT_EQ(with([](cpu::search_task& u) { u.opts.bits = 17; }), "invalid_bits");
  EXPECT_EQ(with([](cpu::search_task& u) { u.spec.hi = 0.0f; }), "invalid_range");
  EXPECT_EQ(with([](cpu::search_task& u) { u.opts.rules = klcal::rule_set::mxnet; }),
            "layout_mismatch");
  EXPECT_EQ(with([](cpu::search_task& u) {
              u.spec = {layout::signed_, 2048, -1.0f, 1.0f};
              u.opts.rules = klcal::rule_set::mxnet;
            }),
            "bins_not_odd");
  EXPECT_EQ(with([](cpu::search_task& u) {
              u.spec = {layout::signed_, 2047, -1.0f, 1.0f};
              u.opts.rules = klcal::rule_set::mxnet;
              u.opts.is_unsigned = true;
            }),
            "invalid_option");
  EXPECT_EQ(with([](cpu::search_task& u) {
              u.spec = {layout::signed_, 201, -1.0f, 1.0f};
              u.opts.rules = klcal::rule_set::mxnet;
            }),
            "start_bin_out_of_range");
  EXPECT_EQ(with([](cpu::search_task& u) {
              u.opts.meth = klcal::method::percentile;
              u.opts.percentile = 100.5;
            }),
            "invalid_percentile");
  EXPECT_EQ(with([](cpu::search_task& u) {
              u.opts.meth = klcal::method::mse;
              u.opts.start_bin = 2048;
            }),
            "start_bin_out_of_range");
  EXPECT_EQ(with([](cpu::search_task& u) { u.opts.meth = static_cast<klcal::method>(9); }),
            "invalid_option");
  // One bad task among good ones fails the whole call.
  std::vector<cpu::search_task> many(5, t);
  many[3].opts.bits = 0;
  std::vector<klcal::search_result> rs(5);
  EXPECT_EQ(code(cpu::search(many.data(), 5, rs.data())), "invalid_bits");
}

// ---- goldens ------------------------------------------------------------------------------------

TEST(cpu_golden, every_golden_case) {
  const auto files = klcal::test::golden_files(klcal::test::data_dir());
  ASSERT_FALSE(files.empty()) << "no goldens in " << klcal::test::data_dir();
  std::size_t searches = 0;
  for (const auto& path : files) {
    std::vector<klcal::test::golden_case> cases;
    try {
      cases = klcal::test::load_golden_file(path);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
      continue;
    }
    for (const auto& gc : cases) {
      SCOPED_TRACE(gc.file + ": case " + gc.name);
      std::vector<std::uint64_t> counts;
      if (gc.range == klcal::test::golden_range::counts) {
        counts = gc.counts;
      } else if (gc.range == klcal::test::golden_range::fixed) {
        counts.assign(std::size_t(std::max(gc.spec.bins, 0)), 0);
        klcal::tensor_stats st;
        errc e = errc::ok;
        for (std::size_t b = 0; b < gc.batches.size() && e == errc::ok; ++b) {
          const auto bytes = gc.batch_bytes(b);
          e = cpu::histogram_accumulate(bytes.data(), gc.type, gc.batch_size(b), gc.spec,
                                        counts.empty() ? nullptr : counts.data(), &st, 2)
                  .code;
        }
        if (gc.batches.empty()) e = klcal::validate(gc.spec).code;
        if (gc.error) {
          EXPECT_EQ(errc_name(e), errc_name(*gc.error));
          continue;
        }
        ASSERT_EQ(errc_name(e), "ok");
        EXPECT_EQ(counts, gc.counts);
        EXPECT_EQ(st.nan_count, gc.nan_count);
        EXPECT_EQ(st.inf_count, gc.inf_count);
        EXPECT_EQ(bits_of(st.max_abs), bits_of(gc.max_abs));
      } else {
        const std::int32_t b = gc.spec.bins;
        if (b < 2 || (b & (b - 1)) != 0 || b > klcal::max_bins) {
          std::vector<std::uint64_t> dummy(2, 0);
          const errc e = cpu::histogram_fold_pow2(dummy.data(), b, 0).code;
          if (gc.error) {
            EXPECT_EQ(errc_name(e), errc_name(*gc.error));
          }
          continue;
        }
        ASSERT_FALSE(gc.error.has_value()) << "expected error " << errc_name(*gc.error);
        cpu_streaming cs(b);
        for (std::size_t k = 0; k < gc.batches.size(); ++k) {
          const auto bytes = gc.batch_bytes(k);
          cs.add(bytes.data(), gc.type, gc.batch_size(k), 2);
        }
        EXPECT_EQ(cs.counts, gc.counts);
        EXPECT_EQ(bits_of(std::ldexp(1.0f, cs.e)), bits_of(gc.spec.hi));
        EXPECT_EQ(cs.st.nan_count, gc.nan_count);
        EXPECT_EQ(cs.st.inf_count, gc.inf_count);
        EXPECT_EQ(bits_of(cs.st.max_abs), bits_of(gc.max_abs));
        counts = cs.counts;
      }
      for (const auto& gs : gc.searches) {
        SCOPED_TRACE("search at line " + std::to_string(gs.line));
        cpu::search_task t;
        t.h_counts = gc.counts.data();
        t.spec = gc.spec;
        t.max_abs = gc.max_abs;
        t.opts = gs.opts;
        std::vector<double> curve;
        klcal::search_result r;
        if (gs.error) {
          EXPECT_EQ(errc_name(cpu::search(&t, 1, &r, 2).code), errc_name(*gs.error));
          continue;
        }
        const std::int64_t n = klcal::candidate_count(gc.spec, gs.opts);
        curve.assign(std::size_t(n), -1.0);
        t.h_curve = n > 0 ? curve.data() : nullptr;
        ASSERT_EQ(errc_name(cpu::search(&t, 1, &r, 2).code), "ok");
        klcal::search_result g;
        g.index = gs.index;
        g.amax = gs.amax;
        g.scale = gs.scale;
        g.score = gs.score;
        g.clipped_fraction = gs.clipped;
        g.degenerate = gs.degenerate;
        expect_search_close(gs.opts, gs.has_curve ? gs.curve : std::vector<double>{}, g, r,
                            gs.has_curve ? curve : std::vector<double>{});
        ++searches;
      }
    }
  }
  EXPECT_GT(searches, 0u);
}

}  // namespace
