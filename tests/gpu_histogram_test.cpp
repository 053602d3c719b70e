// GPU histogram core API vs klcal::reference: exact counts, statistics, batching, invariants,
// contract.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gpu_fixture.hpp"
#include "klcal/histogram.hpp"
#include "klcal/internal/histogram_detail.hpp"
#include "klcal/reference.hpp"
#include "test_data.hpp"

namespace klcal::test {
namespace {

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr
#define KL_OK(expr)                                           \
  do {                                                        \
    const ::klcal::status st_ = (expr);                       \
    ASSERT_TRUE(st_.ok()) << #expr << ": " << to_string(st_); \
  } while (0)

/// Owning device buffer (test helper).
struct dbuf {
  void* p = nullptr;
  std::size_t bytes = 0;
  explicit dbuf(std::size_t b) : bytes(b) {
    if (cudaMalloc(&p, b == 0 ? 1 : b) != cudaSuccess) p = nullptr;
  }
  ~dbuf() { cudaFree(p); }
  dbuf(const dbuf&) = delete;
  dbuf& operator=(const dbuf&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

/// n floats of distribution d (seeded, so every run sees the same data).
std::vector<float> make_values(dist d, std::int64_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::exponential_distribution<float> expo(1.5f);
  std::vector<float> v(static_cast<std::size_t>(n));
  const float inf = std::numeric_limits<float>::infinity();
  for (std::int64_t i = 0; i < n; ++i) {
    float x = 0.0f;
    switch (d) {
      case dist::uniform: x = 4.0f * uni(rng); break;  // also past the range edge
      case dist::gaussian: x = gauss(rng); break;
      case dist::laplace: x = (uni(rng) < 0 ? -1.0f : 1.0f) * expo(rng); break;
      case dist::relu: x = std::max(0.0f, gauss(rng)); break;
      case dist::zeros: x = (i % 3 == 0) ? -0.0f : 0.0f; break;
      case dist::one_value: x = 0.7317f; break;
      case dist::nan_inf:
        x = gauss(rng);
        if (i % 7 == 3) x = std::numeric_limits<float>::quiet_NaN();
        if (i % 11 == 5) x = (i % 2) ? inf : -inf;
        if (i % 13 == 1) x = 3.0e38f;  // finite, far past hi: last bin
        if (i % 17 == 2) x = -0.0f;
        break;
    }
    v[static_cast<std::size_t>(i)] = x;
  }
  return v;
}

histogram_spec make_spec(layout k, std::int32_t bins) {
  histogram_spec s;
  s.kind = k;
  s.bins = bins;
  s.lo = k == layout::abs ? 0.0f : -2.5f;
  s.hi = 2.5f;
  return s;
}

std::vector<std::uint64_t> reference_counts(const std::vector<unsigned char>& bytes, dtype t,
                                            std::int64_t n, const histogram_spec& spec) {
  reference::histogram h;
  EXPECT_TRUE(reference::make_histogram(spec, &h).ok());
  EXPECT_TRUE(reference::add(h, bytes.data(), t, n).ok());
  return h.counts;
}

enum class kernel_kind { core, naive };

/// Copies bytes to the device at element offset `offset` and histograms them there.
std::vector<std::uint64_t> gpu_counts(const std::vector<unsigned char>& bytes, dtype t,
                                      std::int64_t n, const histogram_spec& spec, int offset,
                                      kernel_kind kind = kernel_kind::core,
                                      std::size_t byte_offset = 0) {
  const std::size_t es = dtype_size(t);
  const std::size_t off = offset * es + byte_offset;
  dbuf in(bytes.size() + off + 16);
  dbuf counts(spec.bins * sizeof(std::uint64_t));
  std::vector<std::uint64_t> h(spec.bins, 0);
  if (in.p == nullptr || counts.p == nullptr) {
    ADD_FAILURE() << "cudaMalloc failed";
    return h;
  }
  auto* d_in = static_cast<unsigned char*>(in.p) + off;
  EXPECT_EQ(cudaMemcpy(d_in, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemset(counts.p, 0, spec.bins * sizeof(std::uint64_t)), cudaSuccess);
  if (kind == kernel_kind::naive) {
    const status s =
        detail::histogram_naive_accumulate(d_in, t, n, spec, counts.as<std::uint64_t>(), nullptr);
    EXPECT_TRUE(s.ok()) << to_string(s);
  } else {
    std::size_t tb = 0;
    EXPECT_TRUE(
        histogram_accumulate(nullptr, tb, d_in, t, n, spec, counts.as<std::uint64_t>(), nullptr)
            .ok());
    dbuf temp(tb);
    const status s =
        histogram_accumulate(temp.p, tb, d_in, t, n, spec, counts.as<std::uint64_t>(), nullptr);
    EXPECT_TRUE(s.ok()) << to_string(s);
  }
  EXPECT_EQ(cudaMemcpy(h.data(), counts.p, h.size() * 8, cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

const dtype all_dtypes[] = {dtype::f32, dtype::f16, dtype::bf16};
const layout all_layouts[] = {layout::abs, layout::signed_};

class gpu_histogram : public gpu_test {};

// The main equality sweep for small and medium sizes: every dtype x layout x distribution x
// alignment x main bin count.
TEST_F(gpu_histogram, equals_reference_small_sizes) {
  const std::int64_t sizes[] = {1, 31, 4097};
  const std::int32_t bins_list[] = {2, 2048, 8001};
  unsigned seed = 1;
  for (dtype t : all_dtypes)
    for (layout k : all_layouts)
      for (dist d : all_dists)
        for (std::int64_t n : sizes) {
          const auto bytes = encode(make_values(d, n, seed++), t);
          for (std::int32_t bins : bins_list) {
            const histogram_spec spec = make_spec(k, bins);
            const auto ref = reference_counts(bytes, t, n, spec);
            for (int offset = 0; offset <= 3; ++offset) {
              SCOPED_TRACE(std::string(dtype_name(t)) + " " +
                           (k == layout::abs ? "abs" : "signed") + " " + dist_name(d) +
                           " n=" + std::to_string(n) + " bins=" + std::to_string(bins) +
                           " offset=" + std::to_string(offset));
              ASSERT_EQ(gpu_counts(bytes, t, n, spec, offset), ref);
            }
          }
        }
}

TEST_F(gpu_histogram, equals_reference_large_size) {
  const std::int64_t n = (1 << 20) + 7;
  unsigned seed = 100;
  for (dtype t : all_dtypes)
    for (layout k : all_layouts)
      for (dist d : all_dists) {
        const auto bytes = encode(make_values(d, n, seed++), t);
        const histogram_spec spec = make_spec(k, k == layout::abs ? 2048 : 8001);
        const auto ref = reference_counts(bytes, t, n, spec);
        SCOPED_TRACE(std::string(dtype_name(t)) + " " + dist_name(d));
        const int offset = static_cast<int>(seed % 4);
        ASSERT_EQ(gpu_counts(bytes, t, n, spec, offset), ref);
        std::uint64_t total = 0;
        for (std::uint64_t c : ref) total += c;
        if (d != dist::nan_inf) {
          EXPECT_EQ(total, static_cast<std::uint64_t>(n));
        }
      }
}

// 16384 bins must use (opt-in) shared memory; 65536 take the global-atomic fallback.
TEST_F(gpu_histogram, equals_reference_large_bin_counts) {
  const std::int64_t sizes[] = {31, 4097, 100003};
  unsigned seed = 200;
  for (std::int32_t bins : {16384, 65536, 1 << 20})
    for (dtype t : all_dtypes)
      for (layout k : all_layouts)
        for (dist d : {dist::uniform, dist::relu, dist::nan_inf})
          for (std::int64_t n : sizes) {
            const auto bytes = encode(make_values(d, n, seed++), t);
            const histogram_spec spec = make_spec(k, bins);
            SCOPED_TRACE(std::string(dtype_name(t)) + " " + dist_name(d) +
                         " bins=" + std::to_string(bins) + " n=" + std::to_string(n));
            ASSERT_EQ(gpu_counts(bytes, t, n, spec, static_cast<int>(n % 3)),
                      reference_counts(bytes, t, n, spec));
          }
}

// The largest legal bin count (2^24): global-atomic path, every bin index representable.
TEST_F(gpu_histogram, max_bins_equals_reference) {
  const std::int64_t n = 20000;
  for (layout k : all_layouts) {
    const auto bytes = encode(make_values(dist::laplace, n, 500), dtype::f32);
    const histogram_spec spec = make_spec(k, max_bins);
    SCOPED_TRACE(k == layout::abs ? "abs" : "signed");
    ASSERT_EQ(gpu_counts(bytes, dtype::f32, n, spec, 3),
              reference_counts(bytes, dtype::f32, n, spec));
  }
}

TEST_F(gpu_histogram, naive_kernel_equals_reference) {
  unsigned seed = 300;
  for (dtype t : all_dtypes)
    for (layout k : all_layouts)
      for (dist d : all_dists)
        for (std::int32_t bins : {2, 2048, 8001, 65536}) {
          const std::int64_t n = 4097;
          const auto bytes = encode(make_values(d, n, seed++), t);
          const histogram_spec spec = make_spec(k, bins);
          SCOPED_TRACE(std::string(dtype_name(t)) + " " + dist_name(d) +
                       " bins=" + std::to_string(bins));
          ASSERT_EQ(gpu_counts(bytes, t, n, spec, 1, kernel_kind::naive),
                    reference_counts(bytes, t, n, spec));
        }
}

// Pointers that are not even element-aligned (fp32 at +1..3 bytes, fp16 at +1 byte).
TEST_F(gpu_histogram, byte_misaligned_pointers) {
  const std::int64_t n = 5000;
  for (dtype t : all_dtypes)
    for (std::size_t b = 1; b < dtype_size(t); ++b) {
      const auto bytes = encode(make_values(dist::laplace, n, 7), t);
      const histogram_spec spec = make_spec(layout::signed_, 8001);
      SCOPED_TRACE(std::string(dtype_name(t)) + " +" + std::to_string(b) + " bytes");
      ASSERT_EQ(gpu_counts(bytes, t, n, spec, 0, kernel_kind::core, b),
                reference_counts(bytes, t, n, spec));
    }
}

// Bin edges: values exactly on edges, just below them, the upper edge, subnormals, -0.0.
TEST_F(gpu_histogram, edge_values_match_reference) {
  std::vector<float> v;
  const histogram_spec spec = make_spec(layout::abs, 2048);
  const float w = spec.hi / spec.bins;
  for (int j = 0; j <= spec.bins; ++j) {
    const float e = j * w;
    v.push_back(e);
    v.push_back(std::nextafter(e, 0.0f));
    v.push_back(std::nextafter(e, 10.0f));
    v.push_back(-e);
  }
  v.push_back(std::numeric_limits<float>::denorm_min());
  v.push_back(std::numeric_limits<float>::max());
  v.push_back(-std::numeric_limits<float>::max());
  for (dtype t : all_dtypes)
    for (layout k : all_layouts) {
      histogram_spec s = spec;
      if (k == layout::signed_) s = make_spec(k, 8001);
      const auto bytes = encode(v, t);
      const auto n = static_cast<std::int64_t>(v.size());
      SCOPED_TRACE(std::string(dtype_name(t)) + (k == layout::abs ? " abs" : " signed"));
      ASSERT_EQ(gpu_counts(bytes, t, n, s, 0), reference_counts(bytes, t, n, s));
    }
}

// ---- statistics -------------------------------------------------------------------------------

struct host_stats {
  std::uint64_t finite = 0, nan = 0, inf = 0;
  float max_abs = 0.0f, mn = std::numeric_limits<float>::infinity(),
        mx = -std::numeric_limits<float>::infinity();
};

/// Expected statistics, straight from the definition in numerics.md 1.3 (comparisons only).
host_stats expected_stats(const std::vector<unsigned char>& bytes, dtype t, std::int64_t n) {
  host_stats s;
  for (std::int64_t i = 0; i < n; ++i) {
    float x;
    if (t == dtype::f32) {
      std::memcpy(&x, &bytes[i * 4], 4);
    } else {
      std::uint16_t h;
      std::memcpy(&h, &bytes[i * 2], 2);
      x = t == dtype::f16 ? reference::half_to_float(h) : reference::bfloat16_to_float(h);
    }
    if (std::isnan(x)) {
      ++s.nan;
    } else if (std::isinf(x)) {
      ++s.inf;
    } else {
      ++s.finite;
      s.max_abs = std::max(s.max_abs, std::fabs(x));
      s.mn = std::min(s.mn, x);
      s.mx = std::max(s.mx, x);
    }
  }
  return s;
}

/// The device statistics g equal the expected ones: counts and max_abs bit for bit; min and max
/// by value, since -0.0 is 0 (numerics.md 1.2).
void expect_stats_equal(const tensor_stats& g, const host_stats& e) {
  EXPECT_EQ(g.finite_count, e.finite);
  EXPECT_EQ(g.nan_count, e.nan);
  EXPECT_EQ(g.inf_count, e.inf);
  EXPECT_EQ(bits_of(g.max_abs), bits_of(e.max_abs));
  EXPECT_EQ(g.min, e.mn);
  EXPECT_EQ(g.max, e.mx);
}

TEST_F(gpu_histogram, stats_exact) {
  unsigned seed = 400;
  for (dtype t : all_dtypes)
    for (dist d : all_dists)
      for (std::int64_t n : {std::int64_t{1}, std::int64_t{31}, std::int64_t{(1 << 20) + 7}}) {
        const auto bytes = encode(make_values(d, n, seed++), t);
        const host_stats e = expected_stats(bytes, t, n);
        const int offset = static_cast<int>(seed % 4);
        dbuf in(bytes.size() + 16), st(sizeof(tensor_stats));
        auto* d_in = static_cast<unsigned char*>(in.p) + offset * dtype_size(t);
        CUDA_OK(cudaMemcpy(d_in, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
        const tensor_stats init{};
        CUDA_OK(cudaMemcpy(st.p, &init, sizeof init, cudaMemcpyHostToDevice));
        std::size_t tb = 0;
        KL_OK(tensor_stats_accumulate(nullptr, tb, d_in, t, n, st.as<tensor_stats>(), nullptr));
        dbuf temp(tb);
        KL_OK(tensor_stats_accumulate(temp.p, tb, d_in, t, n, st.as<tensor_stats>(), nullptr));
        tensor_stats g;
        CUDA_OK(cudaMemcpy(&g, st.p, sizeof g, cudaMemcpyDeviceToHost));
        SCOPED_TRACE(std::string(dtype_name(t)) + " " + dist_name(d) + " n=" + std::to_string(n));
        expect_stats_equal(g, e);
        if (e.finite != 0) {
          EXPECT_EQ(bits_of(g.min) == 0x80000000u, false) << "min is -0.0, not canonical";
        }
      }
}

std::vector<std::uint64_t> download(const std::uint64_t* d, std::int32_t bins);

// The one-pass histogram + statistics path (used by the calibrator) equals the two separate calls.
TEST_F(gpu_histogram, fused_stats_equal_separate_calls) {
  unsigned seed = 450;
  for (dtype t : all_dtypes)
    for (std::int32_t bins : {2048, 8001, 65536})
      for (dist d : {dist::nan_inf, dist::relu, dist::zeros}) {
        const std::int64_t n = 70001;
        const auto bytes = encode(make_values(d, n, seed++), t);
        const histogram_spec spec = make_spec(bins % 2 ? layout::signed_ : layout::abs, bins);
        dbuf in(bytes.size() + 8), counts(bins * 8), st(sizeof(tensor_stats));
        auto* d_in = static_cast<unsigned char*>(in.p) + dtype_size(t);
        CUDA_OK(cudaMemcpy(d_in, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemset(counts.p, 0, bins * 8));
        const tensor_stats init{};
        CUDA_OK(cudaMemcpy(st.p, &init, sizeof init, cudaMemcpyHostToDevice));
        KL_OK(detail::histogram_stats_accumulate(d_in, t, n, spec, counts.as<std::uint64_t>(),
                                                 st.as<tensor_stats>(), nullptr));
        tensor_stats g;
        CUDA_OK(cudaMemcpy(&g, st.p, sizeof g, cudaMemcpyDeviceToHost));
        const host_stats e = expected_stats(bytes, t, n);
        SCOPED_TRACE(std::string(dtype_name(t)) + " " + dist_name(d) +
                     " bins=" + std::to_string(bins));
        EXPECT_EQ(download(counts.as<std::uint64_t>(), bins), reference_counts(bytes, t, n, spec));
        expect_stats_equal(g, e);
      }
  dbuf counts(2048 * 8);
  EXPECT_EQ(
      detail::histogram_stats_accumulate(counts.p, dtype::f32, 4, make_spec(layout::abs, 2048),
                                         counts.as<std::uint64_t>(), nullptr, nullptr)
          .code,
      errc::null_pointer);
}

TEST_F(gpu_histogram, stats_accumulate_across_calls_and_signs) {
  // Negative-only then positive-only batches exercise both branches of the ordered atomics.
  const std::vector<float> a = {-5.0f, -0.25f, -3.0f};
  const std::vector<float> b = {0.5f, 7.0f, -0.0f};
  dbuf in(64), st(sizeof(tensor_stats)), temp(64);
  const tensor_stats init{};
  CUDA_OK(cudaMemcpy(st.p, &init, sizeof init, cudaMemcpyHostToDevice));
  std::size_t tb = 64;
  for (const auto* v : {&a, &b}) {
    CUDA_OK(cudaMemcpy(in.p, v->data(), v->size() * 4, cudaMemcpyHostToDevice));
    KL_OK(tensor_stats_accumulate(temp.p, tb, in.p, dtype::f32, 3, st.as<tensor_stats>(), nullptr));
  }
  tensor_stats g;
  CUDA_OK(cudaMemcpy(&g, st.p, sizeof g, cudaMemcpyDeviceToHost));
  EXPECT_EQ(g.finite_count, 6u);
  EXPECT_EQ(g.max_abs, 7.0f);
  EXPECT_EQ(g.min, -5.0f);
  EXPECT_EQ(g.max, 7.0f);
}

// NaN and Inf (several bit patterns) at each position of a 16-byte vector, in sparse vectors
// among finite data: the kernels test a group of vectors for NaN/Inf at once and bin clean
// groups without per-element tests, so every position, the switch between clean and unclean
// groups and the finite extremes next to them must bin like the reference. Single calls (the
// one-task kernel), one batched call (the multi-task kernel) and the one-pass statistics path.
TEST_F(gpu_histogram, nan_inf_at_every_vector_position) {
  const std::int64_t n = 40003;  // several vector groups per thread, a remainder and a tail
  struct special_set {
    dtype t;
    std::vector<std::uint32_t> nonfinite;  // NaNs (quiet, negative, signalling, max payload), Infs
    std::vector<std::uint32_t> extremes;   // finite: +-max, +-smallest subnormal
  };
  const special_set sets[] = {
      {dtype::f32,
       {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fffffffu, 0x7f800000u, 0xff800000u},
       {0x7f7fffffu, 0xff7fffffu, 0x00000001u, 0x80000001u}},
      {dtype::f16,
       {0x7e00u, 0xfe00u, 0x7c01u, 0x7fffu, 0x7c00u, 0xfc00u},
       {0x7bffu, 0xfbffu, 0x0001u, 0x8001u}},
      {dtype::bf16,
       {0x7fc0u, 0xffc0u, 0x7f81u, 0x7fffu, 0x7f80u, 0xff80u},
       {0x7f7fu, 0xff7fu, 0x0001u, 0x8001u}},
  };
  struct item {
    dtype t;
    layout k;
    int pos;
    std::vector<unsigned char> bytes;
  };
  std::vector<item> items;
  unsigned seed = 470;
  for (const special_set& set : sets) {
    const int es = static_cast<int>(dtype_size(set.t));
    const int per = 16 / es;
    for (int pos = 0; pos < per; ++pos)
      for (layout k : all_layouts) {
        auto bytes = encode(make_values(dist::gaussian, n, seed++), set.t);
        const auto put = [&](std::int64_t i, std::uint32_t bits) {
          std::memcpy(&bytes[static_cast<std::size_t>(i * es)], &bits, es);  // little endian
        };
        for (std::int64_t v = 0; v * per < n; ++v) {
          const std::int64_t base = v * per;
          if (v % 23 == 0 && base + pos < n)
            put(base + pos, set.nonfinite[(v / 23) % set.nonfinite.size()]);
          if (v % 92 == 46 && base + (pos + 1) % per < n)  // a second one in the vector
            put(base + (pos + 1) % per, set.nonfinite[(v / 92) % set.nonfinite.size()]);
          if (v % 7 == 3 && base + pos < n)  // finite extremes in clean vectors
            put(base + pos, set.extremes[(v / 7) % set.extremes.size()]);
        }
        items.push_back(item{set.t, k, pos, std::move(bytes)});
      }
  }
  const auto name = [](const item& it) {
    return std::string(dtype_name(it.t)) + (it.k == layout::abs ? " abs" : " signed") +
           " position " + std::to_string(it.pos);
  };
  const auto spec_of = [](const item& it) {
    return make_spec(it.k, it.k == layout::abs ? 2048 : 8001);
  };

  // Single calls; the statistics path.
  for (const item& it : items) {
    SCOPED_TRACE(name(it));
    const histogram_spec spec = spec_of(it);
    const auto ref = reference_counts(it.bytes, it.t, n, spec);
    ASSERT_EQ(gpu_counts(it.bytes, it.t, n, spec, 0), ref);

    dbuf in(it.bytes.size()), counts(spec.bins * 8), st(sizeof(tensor_stats));
    CUDA_OK(cudaMemcpy(in.p, it.bytes.data(), it.bytes.size(), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(counts.p, 0, spec.bins * 8));
    const tensor_stats init{};
    CUDA_OK(cudaMemcpy(st.p, &init, sizeof init, cudaMemcpyHostToDevice));
    KL_OK(detail::histogram_stats_accumulate(in.p, it.t, n, spec, counts.as<std::uint64_t>(),
                                             st.as<tensor_stats>(), nullptr));
    tensor_stats g;
    CUDA_OK(cudaMemcpy(&g, st.p, sizeof g, cudaMemcpyDeviceToHost));
    ASSERT_EQ(download(counts.as<std::uint64_t>(), spec.bins), ref);
    expect_stats_equal(g, expected_stats(it.bytes, it.t, n));
  }

  // All of them in one batched call.
  std::vector<std::unique_ptr<dbuf>> bufs;
  std::vector<histogram_task> tasks;
  for (const item& it : items) {
    const histogram_spec spec = spec_of(it);
    bufs.push_back(std::make_unique<dbuf>(it.bytes.size()));
    const dbuf& in = *bufs.back();
    bufs.push_back(std::make_unique<dbuf>(spec.bins * 8));
    const dbuf& counts = *bufs.back();
    CUDA_OK(cudaMemcpy(in.p, it.bytes.data(), it.bytes.size(), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(counts.p, 0, spec.bins * 8));
    tasks.push_back(histogram_task{in.p, n, it.t, spec, counts.as<std::uint64_t>()});
  }
  const auto num = static_cast<std::int32_t>(tasks.size());
  std::size_t tb = 0;
  KL_OK(histogram_accumulate_batched(nullptr, tb, tasks.data(), num, nullptr));
  dbuf temp(tb);
  KL_OK(histogram_accumulate_batched(temp.p, tb, tasks.data(), num, nullptr));
  for (std::size_t i = 0; i < items.size(); ++i) {
    SCOPED_TRACE("batched " + name(items[i]));
    ASSERT_EQ(download(tasks[i].d_counts, tasks[i].spec.bins),
              reference_counts(items[i].bytes, items[i].t, n, tasks[i].spec));
  }
}

// ---- batched ---------------------------------------------------------------------------------

TEST_F(gpu_histogram, batched_equals_one_by_one_and_reference) {
  const int num = 300;  // > one launch's worth of tasks (policy: 256 per launch)
  std::mt19937 rng(5);
  std::vector<std::vector<unsigned char>> data(num);
  std::vector<histogram_task> tasks(num);
  std::vector<dbuf*> bufs;
  const std::int32_t bins_choice[] = {2, 2048, 8001, 16384, 65536};
  for (int i = 0; i < num; ++i) {
    const dtype t = all_dtypes[i % 3];
    const layout k = all_layouts[(i / 3) % 2];
    const std::int64_t n = i % 10 == 0 ? 0 : static_cast<std::int64_t>(rng() % 20000);
    const std::int32_t bins = bins_choice[i % 5];
    data[i] = encode(make_values(all_dists[i % 7], n, 1000 + i), t);
    auto* in = new dbuf(data[i].size() + 16);
    auto* counts = new dbuf(bins * 8);
    bufs.push_back(in);
    bufs.push_back(counts);
    const int offset = i % 4;
    auto* d_in = static_cast<unsigned char*>(in->p) + offset * dtype_size(t);
    CUDA_OK(cudaMemcpy(d_in, data[i].data(), data[i].size(), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(counts->p, 0, bins * 8));
    tasks[i] = histogram_task{d_in, n, t, make_spec(k, bins), counts->as<std::uint64_t>()};
  }
  std::size_t tb = 0;
  KL_OK(histogram_accumulate_batched(nullptr, tb, tasks.data(), num, nullptr));
  dbuf temp(tb);
  KL_OK(histogram_accumulate_batched(temp.p, tb, tasks.data(), num, nullptr));
  for (int i = 0; i < num; ++i) {
    const auto& t = tasks[i];
    std::vector<std::uint64_t> batched(t.spec.bins);
    CUDA_OK(cudaMemcpy(batched.data(), t.d_counts, t.spec.bins * 8, cudaMemcpyDeviceToHost));
    SCOPED_TRACE("task " + std::to_string(i));
    ASSERT_EQ(batched, reference_counts(data[i], t.type, t.n, t.spec));
    ASSERT_EQ(batched, gpu_counts(data[i], t.type, t.n, t.spec, i % 4));
  }
  for (dbuf* b : bufs) delete b;
}

TEST_F(gpu_histogram, batched_order_does_not_matter) {
  // Several tasks accumulating into the SAME counts, in two different orders.
  const int num = 40;
  std::vector<std::vector<unsigned char>> data(num);
  std::vector<dbuf*> bufs;
  std::vector<histogram_task> tasks(num);
  const histogram_spec spec = make_spec(layout::abs, 2048);
  dbuf c1(2048 * 8), c2(2048 * 8);
  CUDA_OK(cudaMemset(c1.p, 0, 2048 * 8));
  CUDA_OK(cudaMemset(c2.p, 0, 2048 * 8));
  reference::histogram ref;
  KL_OK(reference::make_histogram(spec, &ref));
  for (int i = 0; i < num; ++i) {
    const std::int64_t n = 1000 + 37 * i;
    data[i] = encode(make_values(all_dists[i % 7], n, 77 + i), dtype::f16);
    KL_OK(reference::add(ref, data[i].data(), dtype::f16, n));
    auto* in = new dbuf(data[i].size());
    bufs.push_back(in);
    CUDA_OK(cudaMemcpy(in->p, data[i].data(), data[i].size(), cudaMemcpyHostToDevice));
    tasks[i] = histogram_task{in->p, n, dtype::f16, spec, c1.as<std::uint64_t>()};
  }
  std::size_t tb = 16;
  dbuf temp(64);
  tb = 64;
  KL_OK(histogram_accumulate_batched(temp.p, tb, tasks.data(), num, nullptr));
  std::reverse(tasks.begin(), tasks.end());
  for (auto& t : tasks) t.d_counts = c2.as<std::uint64_t>();
  KL_OK(histogram_accumulate_batched(temp.p, tb, tasks.data(), num, nullptr));
  std::vector<std::uint64_t> h1(2048), h2(2048);
  CUDA_OK(cudaMemcpy(h1.data(), c1.p, 2048 * 8, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(h2.data(), c2.p, 2048 * 8, cudaMemcpyDeviceToHost));
  EXPECT_EQ(h1, ref.counts);
  EXPECT_EQ(h2, ref.counts);
  for (dbuf* b : bufs) delete b;
}

// ---- invariants ------------------------------------------------------------------------------

/// Accumulates [first, first + n) of a device tensor into d_counts.
void accumulate(const void* d_base, dtype t, std::int64_t first, std::int64_t n,
                const histogram_spec& spec, std::uint64_t* d_counts, cudaStream_t s = nullptr) {
  std::size_t tb = 0;
  const auto* p = static_cast<const unsigned char*>(d_base) + first * dtype_size(t);
  ASSERT_TRUE(histogram_accumulate(nullptr, tb, p, t, n, spec, d_counts, s).ok());
  dbuf temp(tb);
  const status st = histogram_accumulate(temp.p, tb, p, t, n, spec, d_counts, s);
  ASSERT_TRUE(st.ok()) << to_string(st);
}

std::vector<std::uint64_t> download(const std::uint64_t* d, std::int32_t bins) {
  std::vector<std::uint64_t> h(bins);
  EXPECT_EQ(cudaMemcpy(h.data(), d, bins * 8, cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

TEST_F(gpu_histogram, split_and_merge_equal_one_shot) {
  const std::int64_t n = 200001;
  const auto bytes = encode(make_values(dist::laplace, n, 9), dtype::bf16);
  const histogram_spec spec = make_spec(layout::signed_, 8001);
  dbuf in(bytes.size()), whole(8001 * 8), parts(8001 * 8), other(8001 * 8);
  CUDA_OK(cudaMemcpy(in.p, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  for (dbuf* b : {&whole, &parts, &other}) CUDA_OK(cudaMemset(b->p, 0, 8001 * 8));
  accumulate(in.p, dtype::bf16, 0, n, spec, whole.as<std::uint64_t>());
  // Split into uneven pieces, odd offsets included.
  const std::int64_t cuts[] = {0, 1, 4098, 77777, 150000, n};
  for (int i = 0; i + 1 < 6; ++i)
    accumulate(in.p, dtype::bf16, cuts[i], cuts[i + 1] - cuts[i], spec,
               (i % 2 ? parts : other).as<std::uint64_t>());
  KL_OK(detail::add_counts(parts.as<std::uint64_t>(), other.as<std::uint64_t>(), 8001, nullptr));
  const auto w = download(whole.as<std::uint64_t>(), 8001);
  EXPECT_EQ(download(parts.as<std::uint64_t>(), 8001), w);
  EXPECT_EQ(w, reference_counts(bytes, dtype::bf16, n, spec));
}

TEST_F(gpu_histogram, streaming_fold_equals_one_shot) {
  // Bin a first batch at hi = 2^0, fold twice, bin a second batch at 2^2: equals binning both
  // at 2^2 (numerics.md 1.5).
  const std::int32_t bins = 1024;
  const std::int64_t n = 50000;
  auto v1 = make_values(dist::gaussian, n, 11);
  for (float& x : v1) x = std::fmod(x, 0.999f);
  const auto v2 = make_values(dist::uniform, n, 12);  // |x| < 4
  const auto b1 = encode(v1, dtype::f32), b2 = encode(v2, dtype::f32);
  histogram_spec s0 = make_spec(layout::abs, bins);
  s0.hi = 1.0f;
  histogram_spec s2 = s0;
  s2.hi = 4.0f;
  dbuf i1(b1.size()), i2(b2.size()), streamed(bins * 8), oneshot(bins * 8);
  CUDA_OK(cudaMemcpy(i1.p, b1.data(), b1.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(i2.p, b2.data(), b2.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(streamed.p, 0, bins * 8));
  CUDA_OK(cudaMemset(oneshot.p, 0, bins * 8));
  accumulate(i1.p, dtype::f32, 0, n, s0, streamed.as<std::uint64_t>());
  KL_OK(histogram_fold_pow2(streamed.as<std::uint64_t>(), bins, 2, nullptr));
  accumulate(i2.p, dtype::f32, 0, n, s2, streamed.as<std::uint64_t>());
  accumulate(i1.p, dtype::f32, 0, n, s2, oneshot.as<std::uint64_t>());
  accumulate(i2.p, dtype::f32, 0, n, s2, oneshot.as<std::uint64_t>());
  const auto o = download(oneshot.as<std::uint64_t>(), bins);
  EXPECT_EQ(download(streamed.as<std::uint64_t>(), bins), o);
  reference::histogram r;
  KL_OK(reference::make_histogram(s2, &r));
  KL_OK(reference::add(r, b1.data(), dtype::f32, n));
  KL_OK(reference::add(r, b2.data(), dtype::f32, n));
  EXPECT_EQ(o, r.counts);
}

TEST_F(gpu_histogram, fold_pow2_matches_pairwise_definition) {
  for (std::int32_t bins : {2, 8, 2048, 1 << 16})
    for (int d : {1, 2, 5, 11, 30}) {
      std::vector<std::uint64_t> h(bins);
      for (std::int32_t j = 0; j < bins; ++j) h[j] = (j * 2654435761u) % 1000 + (j == 0 ? 5 : 0);
      std::vector<std::uint64_t> want = h;
      for (int r = 0; r < d; ++r) {  // the definition: one pairwise merge per doubling
        std::vector<std::uint64_t> next(bins, 0);
        for (std::int32_t j = 0; j < bins / 2; ++j) next[j] = want[2 * j] + want[2 * j + 1];
        want = next;
      }
      dbuf c(bins * 8);
      CUDA_OK(cudaMemcpy(c.p, h.data(), bins * 8, cudaMemcpyHostToDevice));
      KL_OK(histogram_fold_pow2(c.as<std::uint64_t>(), bins, d, nullptr));
      SCOPED_TRACE("bins=" + std::to_string(bins) + " d=" + std::to_string(d));
      EXPECT_EQ(download(c.as<std::uint64_t>(), bins), want);
    }
}

// ---- contract --------------------------------------------------------------------------------

TEST_F(gpu_histogram, size_query_and_workspace_checks) {
  dbuf in(1024), counts(2048 * 8);
  CUDA_OK(cudaMemset(counts.p, 0, 2048 * 8));
  const histogram_spec spec = make_spec(layout::abs, 2048);
  std::size_t tb = 0;
  KL_OK(histogram_accumulate(nullptr, tb, in.p, dtype::f32, 256, spec, counts.as<std::uint64_t>(),
                             nullptr));
  EXPECT_GT(tb, 0u);
  dbuf temp(tb);
  std::size_t small = tb - 1;
  EXPECT_EQ(histogram_accumulate(temp.p, small, in.p, dtype::f32, 256, spec,
                                 counts.as<std::uint64_t>(), nullptr)
                .code,
            errc::workspace_too_small);
  EXPECT_EQ(tensor_stats_accumulate(temp.p, small, in.p, dtype::f32, 256, nullptr, nullptr).code,
            errc::null_pointer);
  dbuf st(sizeof(tensor_stats));
  EXPECT_EQ(
      tensor_stats_accumulate(temp.p, small, in.p, dtype::f32, 256, st.as<tensor_stats>(), nullptr)
          .code,
      errc::workspace_too_small);
  histogram_task task{in.p, 256, dtype::f32, spec, counts.as<std::uint64_t>()};
  std::size_t btb = 0;
  KL_OK(histogram_accumulate_batched(nullptr, btb, &task, 1, nullptr));
  std::size_t bsmall = btb - 1;
  EXPECT_EQ(histogram_accumulate_batched(temp.p, bsmall, &task, 1, nullptr).code,
            errc::workspace_too_small);
  // Nothing ran: counts are still zero.
  const auto h = download(counts.as<std::uint64_t>(), 2048);
  EXPECT_TRUE(std::all_of(h.begin(), h.end(), [](std::uint64_t c) { return c == 0; }));
}

TEST_F(gpu_histogram, invalid_arguments_in_both_phases) {
  dbuf in(1024), counts(2048 * 8), temp(64);
  CUDA_OK(cudaMemset(counts.p, 0, 2048 * 8));
  CUDA_OK(cudaMemset(in.p, 0, 1024));
  auto* c = counts.as<std::uint64_t>();
  const histogram_spec good = make_spec(layout::abs, 2048);
  histogram_spec bad_range = good;
  bad_range.lo = 0.5f;
  histogram_spec few = good;
  few.bins = 1;
  histogram_spec many = good;
  many.bins = max_bins + 1;
  histogram_spec inf_hi = good;
  inf_hi.hi = std::numeric_limits<float>::infinity();
  struct bad_case {
    const void* d_in;
    dtype t;
    std::int64_t n;
    histogram_spec spec;
    std::uint64_t* d_counts;
    errc want;
  };
  const bad_case cases[] = {
      {in.p, static_cast<dtype>(7), 10, good, c, errc::invalid_dtype},
      {in.p, dtype::f32, -1, good, c, errc::invalid_count},
      {nullptr, dtype::f32, 10, good, c, errc::null_pointer},
      {in.p, dtype::f32, 10, good, nullptr, errc::null_pointer},
      {in.p, dtype::f32, 10, bad_range, c, errc::invalid_range},
      {in.p, dtype::f32, 10, inf_hi, c, errc::invalid_range},
      {in.p, dtype::f32, 10, few, c, errc::too_few_bins},
      {in.p, dtype::f32, 10, many, c, errc::too_many_bins},
  };
  for (const bad_case& b : cases) {
    SCOPED_TRACE(to_string(b.want));
    std::size_t tb = 0;
    EXPECT_EQ(histogram_accumulate(nullptr, tb, b.d_in, b.t, b.n, b.spec, b.d_counts, nullptr).code,
              b.want);
    tb = 64;
    EXPECT_EQ(histogram_accumulate(temp.p, tb, b.d_in, b.t, b.n, b.spec, b.d_counts, nullptr).code,
              b.want);
    EXPECT_EQ(
        detail::histogram_naive_accumulate(b.d_in, b.t, b.n, b.spec, b.d_counts, nullptr).code,
        b.want);
    histogram_task task{b.d_in, b.n, b.t, b.spec, b.d_counts};
    histogram_task tasks[2] = {histogram_task{in.p, 10, dtype::f32, good, c}, task};
    tb = 0;
    EXPECT_EQ(histogram_accumulate_batched(nullptr, tb, tasks, 2, nullptr).code, b.want);
    tb = 64;
    EXPECT_EQ(histogram_accumulate_batched(temp.p, tb, tasks, 2, nullptr).code, b.want);
  }
  std::size_t tb = 64;
  EXPECT_EQ(histogram_accumulate_batched(temp.p, tb, nullptr, 3, nullptr).code, errc::null_pointer);
  EXPECT_EQ(histogram_accumulate_batched(temp.p, tb, nullptr, -1, nullptr).code,
            errc::invalid_count);
  EXPECT_EQ(
      tensor_stats_accumulate(temp.p, tb, in.p, static_cast<dtype>(9), 4, nullptr, nullptr).code,
      errc::invalid_dtype);
  EXPECT_EQ(tensor_stats_accumulate(temp.p, tb, in.p, dtype::f16, -4, nullptr, nullptr).code,
            errc::invalid_count);
  EXPECT_EQ(histogram_fold_pow2(c, 2047, 1, nullptr).code, errc::bins_not_power_of_two);
  EXPECT_EQ(histogram_fold_pow2(c, 1, 1, nullptr).code, errc::too_few_bins);
  EXPECT_EQ(histogram_fold_pow2(c, 2048, -1, nullptr).code, errc::invalid_count);
  EXPECT_EQ(histogram_fold_pow2(nullptr, 2048, 1, nullptr).code, errc::null_pointer);
  const auto h = download(c, 2048);
  EXPECT_TRUE(std::all_of(h.begin(), h.end(), [](std::uint64_t x) { return x == 0; }));
}

TEST_F(gpu_histogram, zero_elements_leave_outputs_unchanged) {
  const histogram_spec spec = make_spec(layout::signed_, 8001);
  std::vector<std::uint64_t> h(8001);
  for (std::size_t j = 0; j < h.size(); ++j) h[j] = j * 3 + 1;
  dbuf counts(8001 * 8), temp(64), st(sizeof(tensor_stats));
  CUDA_OK(cudaMemcpy(counts.p, h.data(), 8001 * 8, cudaMemcpyHostToDevice));
  tensor_stats init{};
  init.finite_count = 42;
  CUDA_OK(cudaMemcpy(st.p, &init, sizeof init, cudaMemcpyHostToDevice));
  std::size_t tb = 64;
  // Null data is fine with n == 0.
  KL_OK(histogram_accumulate(temp.p, tb, nullptr, dtype::f32, 0, spec, counts.as<std::uint64_t>(),
                             nullptr));
  KL_OK(detail::histogram_naive_accumulate(nullptr, dtype::f16, 0, spec, counts.as<std::uint64_t>(),
                                           nullptr));
  histogram_task task{nullptr, 0, dtype::bf16, spec, counts.as<std::uint64_t>()};
  KL_OK(histogram_accumulate_batched(temp.p, tb, &task, 1, nullptr));
  KL_OK(
      tensor_stats_accumulate(temp.p, tb, nullptr, dtype::f32, 0, st.as<tensor_stats>(), nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(download(counts.as<std::uint64_t>(), 8001), h);
  tensor_stats g;
  CUDA_OK(cudaMemcpy(&g, st.p, sizeof g, cudaMemcpyDeviceToHost));
  EXPECT_EQ(g.finite_count, 42u);
}

TEST_F(gpu_histogram, side_stream) {
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreate(&s));
  const std::int64_t n = 100000;
  const auto bytes = encode(make_values(dist::relu, n, 21), dtype::f16);
  const histogram_spec spec = make_spec(layout::abs, 2048);
  dbuf in(bytes.size()), counts(2048 * 8);
  CUDA_OK(cudaMemcpyAsync(in.p, bytes.data(), bytes.size(), cudaMemcpyHostToDevice, s));
  CUDA_OK(cudaMemsetAsync(counts.p, 0, 2048 * 8, s));
  accumulate(in.p, dtype::f16, 0, n, spec, counts.as<std::uint64_t>(), s);
  std::vector<std::uint64_t> h(2048);
  CUDA_OK(cudaMemcpyAsync(h.data(), counts.p, 2048 * 8, cudaMemcpyDeviceToHost, s));
  CUDA_OK(cudaStreamSynchronize(s));
  CUDA_OK(cudaStreamDestroy(s));
  EXPECT_EQ(h, reference_counts(bytes, dtype::f16, n, spec));
}

TEST_F(gpu_histogram, graph_capture_and_replay) {
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreate(&s));
  const std::int64_t n = 70000;
  const auto bytes = encode(make_values(dist::gaussian, n, 31), dtype::f32);
  const histogram_spec spec = make_spec(layout::abs, 2048);
  dbuf in(bytes.size()), counts(2048 * 8), counts2(2048 * 8), st(sizeof(tensor_stats)), temp(64);
  CUDA_OK(cudaMemcpy(in.p, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(counts.p, 0, 2048 * 8));
  CUDA_OK(cudaMemset(counts2.p, 0, 2048 * 8));
  const tensor_stats init{};
  CUDA_OK(cudaMemcpy(st.p, &init, sizeof init, cudaMemcpyHostToDevice));
  const cudaError_t begin = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  if (begin != cudaSuccess) {
    (void)cudaGetLastError();
    cudaStreamDestroy(s);
    GTEST_SKIP() << "stream capture not supported here (" << cudaGetErrorString(begin) << ")";
  }
  std::size_t tb = 64;
  const status a =
      tensor_stats_accumulate(temp.p, tb, in.p, dtype::f32, n, st.as<tensor_stats>(), s);
  const status b =
      histogram_accumulate(temp.p, tb, in.p, dtype::f32, n, spec, counts.as<std::uint64_t>(), s);
  histogram_task task{in.p, n, dtype::f32, spec, counts2.as<std::uint64_t>()};
  const status c = histogram_accumulate_batched(temp.p, tb, &task, 1, s);
  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamEndCapture(s, &graph));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int r = 0; r < 3; ++r) CUDA_OK(cudaGraphLaunch(exec, s));
  CUDA_OK(cudaStreamSynchronize(s));
  auto want = reference_counts(bytes, dtype::f32, n, spec);
  for (auto& x : want) x *= 3;
  EXPECT_EQ(download(counts.as<std::uint64_t>(), 2048), want);
  EXPECT_EQ(download(counts2.as<std::uint64_t>(), 2048), want);
  tensor_stats g;
  CUDA_OK(cudaMemcpy(&g, st.p, sizeof g, cudaMemcpyDeviceToHost));
  EXPECT_EQ(g.finite_count, 3u * static_cast<std::uint64_t>(n));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

TEST_F(gpu_histogram, deterministic_across_runs) {
  const std::int64_t n = 300007;
  const auto bytes = encode(make_values(dist::relu, n, 41), dtype::f32);
  const histogram_spec spec = make_spec(layout::abs, 2048);
  const auto first = gpu_counts(bytes, dtype::f32, n, spec, 0);
  for (int r = 0; r < 3; ++r) ASSERT_EQ(gpu_counts(bytes, dtype::f32, n, spec, r % 4), first);
  EXPECT_EQ(first, reference_counts(bytes, dtype::f32, n, spec));
}

}  // namespace
}  // namespace klcal::test
