// GPU calibrator vs klcal::reference: range policies, statistics, merge, reset, errors, compute.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "golden.hpp"
#include "gpu_fixture.hpp"
#include "klcal/calibrator.hpp"
#include "klcal/cpu_calibrator.hpp"
#include "klcal/reference.hpp"

namespace klcal::test {
namespace {

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

/// Host data plus its device copy (test helper).
struct batch {
  std::vector<unsigned char> bytes;
  dtype type = dtype::f32;
  std::int64_t n = 0;
  void* d = nullptr;
  batch(std::vector<unsigned char> b, dtype t) : bytes(std::move(b)), type(t) {
    n = static_cast<std::int64_t>(bytes.size() / dtype_size(t));
    if (cudaMalloc(&d, bytes.size() + 1) == cudaSuccess)
      (void)cudaMemcpy(d, bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
  }
  ~batch() { cudaFree(d); }
  batch(const batch&) = delete;
  batch& operator=(const batch&) = delete;
};

/// n fp32 values: gaussian times `scale`, every 9th NaN, every 13th +-Inf, every 5th zero.
std::vector<unsigned char> values(std::int64_t n, float scale, unsigned seed, dtype t) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<unsigned char> out(static_cast<std::size_t>(n) * dtype_size(t));
  for (std::int64_t i = 0; i < n; ++i) {
    float x = g(rng) * scale;
    if (i % 5 == 0) x = 0.0f;
    if (i % 9 == 4) x = std::numeric_limits<float>::quiet_NaN();
    if (i % 13 == 6) x = (i % 2 ? 1.0f : -1.0f) * std::numeric_limits<float>::infinity();
    std::uint32_t b;
    std::memcpy(&b, &x, 4);
    if (t == dtype::f32) {
      std::memcpy(&out[i * 4], &b, 4);
    } else {  // bf16 by truncation; f16 is not used here (the histogram test covers it)
      const auto h = static_cast<std::uint16_t>(b >> 16);
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

std::uint32_t bits(float x) {
  std::uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

void expect_matches(const calibrator& c, const reference::histogram& ref) {
  EXPECT_EQ(bits(c.spec().hi), bits(ref.spec.hi));
  EXPECT_EQ(bits(c.spec().lo), bits(ref.spec.lo));
  EXPECT_EQ(c.spec().bins, ref.spec.bins);
  EXPECT_EQ(c.counts(nullptr), ref.counts);
  const tensor_stats s = c.stats(nullptr);
  EXPECT_EQ(s.nan_count, ref.nan_count);
  EXPECT_EQ(s.inf_count, ref.inf_count);
  EXPECT_EQ(bits(s.max_abs), bits(ref.max_abs));
}

class gpu_calibrator : public gpu_test {};

TEST_F(gpu_calibrator, fixed_range_equals_reference) {
  for (layout k : {layout::abs, layout::signed_}) {
    histogram_spec spec;
    spec.kind = k;
    spec.bins = k == layout::abs ? 2048 : 8001;
    spec.lo = k == layout::abs ? 0.0f : -3.0f;
    spec.hi = 3.0f;
    calibrator c = calibrator::fixed(spec, nullptr);
    reference::histogram ref;
    ASSERT_TRUE(reference::make_histogram(spec, &ref).ok());
    for (int i = 0; i < 4; ++i) {
      const dtype t = i % 2 ? dtype::bf16 : dtype::f32;
      batch b(values(3000 + 1000 * i, 1.0f, 10 + i, t), t);
      c.add(b.d, b.n, b.type, nullptr);
      ASSERT_TRUE(reference::add(ref, b.bytes.data(), b.type, b.n).ok());
    }
    expect_matches(c, ref);
    EXPECT_EQ(c.stats(nullptr).finite_count,
              std::accumulate(ref.counts.begin(), ref.counts.end(), std::uint64_t{0}));
  }
}

TEST_F(gpu_calibrator, two_pass_equals_reference) {
  std::vector<unsigned char> all;
  calibrator c = calibrator::two_pass(2048, nullptr);
  std::vector<std::unique_ptr<batch>> batches;
  for (int i = 0; i < 3; ++i) {
    batches.push_back(
        std::make_unique<batch>(values(5000, 0.5f + i, 20 + i, dtype::f32), dtype::f32));
    all.insert(all.end(), batches.back()->bytes.begin(), batches.back()->bytes.end());
  }
  for (auto& b : batches) c.add_range(b->d, b->n, b->type, nullptr);
  EXPECT_THROW(c.add(batches[0]->d, 1, dtype::f32, nullptr), error);
  c.end_range_pass(nullptr);
  for (auto& b : batches) c.add(b->d, b->n, b->type, nullptr);
  reference::histogram ref;
  ASSERT_TRUE(reference::two_pass_histogram(all.data(), dtype::f32,
                                            static_cast<std::int64_t>(all.size() / 4), 2048, &ref)
                  .ok());
  expect_matches(c, ref);
}

TEST_F(gpu_calibrator, two_pass_all_zero_uses_tiny_range) {
  std::vector<unsigned char> zeros(400, 0);
  batch b(zeros, dtype::f32);
  calibrator c = calibrator::two_pass(2048, nullptr);
  c.add_range(b.d, b.n, b.type, nullptr);
  c.end_range_pass(nullptr);
  c.add(b.d, b.n, b.type, nullptr);
  EXPECT_EQ(c.spec().hi, std::ldexp(1.0f, -64));
  const auto h = c.counts(nullptr);
  EXPECT_EQ(h[0], 100u);
}

// hi = max(max_abs, 2^-64): maxima below 2^-64 (subnormal ones included) use the floor.
TEST_F(gpu_calibrator, two_pass_tiny_maximum_uses_floor) {
  std::vector<unsigned char> bytes(4 * 300);
  for (int i = 0; i < 300; ++i) {
    const float x = (i % 3 == 0) ? 1e-25f * static_cast<float>(i) : 1e-40f * (i % 7);
    std::memcpy(&bytes[i * 4], &x, 4);
  }
  batch b(bytes, dtype::f32);
  calibrator c = calibrator::two_pass(2048, nullptr);
  c.add_range(b.d, b.n, b.type, nullptr);
  c.end_range_pass(nullptr);
  c.add(b.d, b.n, b.type, nullptr);
  reference::histogram ref;
  ASSERT_TRUE(reference::two_pass_histogram(bytes.data(), dtype::f32, b.n, 2048, &ref).ok());
  EXPECT_EQ(c.spec().hi, std::ldexp(1.0f, -64));
  expect_matches(c, ref);
}

// The signed two-pass variant: [-hi, hi) with the same hi (numerics.md 1.5), odd bins.
TEST_F(gpu_calibrator, two_pass_signed_equals_reference) {
  batch b(values(20000, 2.0f, 25, dtype::bf16), dtype::bf16);
  calibrator c = calibrator::two_pass(8001, nullptr, layout::signed_);
  c.add_range(b.d, b.n, b.type, nullptr);
  c.end_range_pass(nullptr);
  c.add(b.d, b.n, b.type, nullptr);
  reference::histogram abs_ref;
  ASSERT_TRUE(reference::two_pass_histogram(b.bytes.data(), b.type, b.n, 8001, &abs_ref).ok());
  histogram_spec spec;
  spec.kind = layout::signed_;
  spec.bins = 8001;
  spec.hi = abs_ref.spec.hi;
  spec.lo = -spec.hi;
  reference::histogram ref;
  ASSERT_TRUE(reference::make_histogram(spec, &ref).ok());
  ASSERT_TRUE(reference::add(ref, b.bytes.data(), b.type, b.n).ok());
  expect_matches(c, ref);
  EXPECT_EQ(c.compute(search_options::mxnet(), nullptr).degenerate, false);
}

TEST_F(gpu_calibrator, streaming_equals_reference_in_any_order) {
  // Scales that force several folds; two orders must give identical counts and range.
  const float scales[] = {1e-3f, 0.5f, 40.0f, 3.0f, 1e5f};
  std::vector<std::unique_ptr<batch>> bs;
  for (int i = 0; i < 5; ++i)
    bs.push_back(std::make_unique<batch>(values(2000 + 333 * i, scales[i], 30 + i, dtype::bf16),
                                         dtype::bf16));
  reference::streaming_histogram ref;
  ASSERT_TRUE(ref.init(1024).ok());
  calibrator fwd = calibrator::streaming(1024, nullptr);
  calibrator rev = calibrator::streaming(1024, nullptr);
  for (int i = 0; i < 5; ++i) {
    fwd.add(bs[i]->d, bs[i]->n, bs[i]->type, nullptr);
    rev.add(bs[4 - i]->d, bs[4 - i]->n, bs[4 - i]->type, nullptr);
    ASSERT_TRUE(ref.add(bs[i]->bytes.data(), bs[i]->type, bs[i]->n).ok());
  }
  expect_matches(fwd, ref.get());
  expect_matches(rev, ref.get());
}

TEST_F(gpu_calibrator, merge_equals_concatenation) {
  // Fixed: two halves merged == everything in one.
  histogram_spec spec;
  spec.bins = 2048;
  spec.hi = 2.0f;
  batch a(values(7000, 1.0f, 40, dtype::f32), dtype::f32);
  batch b(values(9000, 1.5f, 41, dtype::f32), dtype::f32);
  calibrator one = calibrator::fixed(spec, nullptr), x = calibrator::fixed(spec, nullptr),
             y = calibrator::fixed(spec, nullptr);
  one.add(a.d, a.n, a.type, nullptr);
  one.add(b.d, b.n, b.type, nullptr);
  x.add(a.d, a.n, a.type, nullptr);
  y.add(b.d, b.n, b.type, nullptr);
  x.merge(y, nullptr);
  EXPECT_EQ(x.counts(nullptr), one.counts(nullptr));
  const tensor_stats s1 = x.stats(nullptr), s2 = one.stats(nullptr);
  EXPECT_EQ(s1.finite_count, s2.finite_count);
  EXPECT_EQ(s1.nan_count, s2.nan_count);
  EXPECT_EQ(s1.inf_count, s2.inf_count);
  EXPECT_EQ(s1.max_abs, s2.max_abs);
  EXPECT_EQ(s1.min, s2.min);
  EXPECT_EQ(s1.max, s2.max);

  // Streaming with different ranges, merged both ways.
  calibrator sa = calibrator::streaming(512, nullptr), sb = calibrator::streaming(512, nullptr);
  calibrator sb2 = calibrator::streaming(512, nullptr), sa2 = calibrator::streaming(512, nullptr);
  batch small(values(3000, 0.01f, 42, dtype::f32), dtype::f32);
  batch big(values(3000, 300.0f, 43, dtype::f32), dtype::f32);
  sa.add(small.d, small.n, small.type, nullptr);
  sb.add(big.d, big.n, big.type, nullptr);
  sa2.add(small.d, small.n, small.type, nullptr);
  sb2.add(big.d, big.n, big.type, nullptr);
  sa.merge(sb, nullptr);    // smaller range brought up
  sb2.merge(sa2, nullptr);  // other's copy folded up
  reference::streaming_histogram ref;
  ASSERT_TRUE(ref.init(512).ok());
  ASSERT_TRUE(ref.add(small.bytes.data(), dtype::f32, small.n).ok());
  ASSERT_TRUE(ref.add(big.bytes.data(), dtype::f32, big.n).ok());
  expect_matches(sa, ref.get());
  expect_matches(sb2, ref.get());

  // Mismatched specs or policies are rejected.
  histogram_spec other = spec;
  other.hi = 3.0f;
  calibrator z = calibrator::fixed(other, nullptr);
  try {
    x.merge(z, nullptr);
    ADD_FAILURE() << "merge of different specs did not throw";
  } catch (const error& e) {
    EXPECT_EQ(e.code().code, errc::invalid_option);
  }
  EXPECT_THROW(x.merge(sa, nullptr), error);
}

TEST_F(gpu_calibrator, reset_returns_to_empty) {
  batch a(values(5000, 50.0f, 50, dtype::f32), dtype::f32);
  calibrator s = calibrator::streaming(256, nullptr);
  s.add(a.d, a.n, a.type, nullptr);
  EXPECT_GT(s.spec().hi, 1.0f);
  s.reset(nullptr);
  EXPECT_EQ(s.spec().hi, std::ldexp(1.0f, -64));
  const auto h = s.counts(nullptr);
  EXPECT_TRUE(std::all_of(h.begin(), h.end(), [](std::uint64_t c) { return c == 0; }));
  const tensor_stats st = s.stats(nullptr);
  EXPECT_EQ(st.finite_count + st.nan_count + st.inf_count, 0u);
  EXPECT_EQ(st.max_abs, 0.0f);
  EXPECT_EQ(st.min, std::numeric_limits<float>::infinity());
  // After a reset it collects exactly like a fresh one.
  s.add(a.d, a.n, a.type, nullptr);
  reference::streaming_histogram ref;
  ASSERT_TRUE(ref.init(256).ok());
  ASSERT_TRUE(ref.add(a.bytes.data(), dtype::f32, a.n).ok());
  expect_matches(s, ref.get());
}

TEST_F(gpu_calibrator, move_only_ownership) {
  histogram_spec spec;
  spec.bins = 64;
  calibrator a = calibrator::fixed(spec, nullptr);
  batch b(values(100, 0.3f, 60, dtype::f32), dtype::f32);
  a.add(b.d, b.n, b.type, nullptr);
  const auto before = a.counts(nullptr);
  calibrator c = std::move(a);
  EXPECT_EQ(c.counts(nullptr), before);
  EXPECT_EQ(a.device_counts(), nullptr);  // NOLINT(bugprone-use-after-move): documented state
  EXPECT_THROW((void)a.counts(nullptr), error);
  calibrator d = calibrator::fixed(spec, nullptr);
  d = std::move(c);
  EXPECT_EQ(d.counts(nullptr), before);
}

TEST_F(gpu_calibrator, errors_throw_their_codes) {
  auto code_of = [](auto&& f) {
    try {
      f();
    } catch (const error& e) {
      return e.code().code;
    }
    return errc::ok;
  };
  histogram_spec bad;
  bad.lo = 1.0f;
  EXPECT_EQ(code_of([&] { calibrator::fixed(bad, nullptr); }), errc::invalid_range);
  EXPECT_EQ(code_of([] { calibrator::streaming(1000, nullptr); }), errc::bins_not_power_of_two);
  EXPECT_EQ(code_of([] { calibrator::two_pass(1, nullptr); }), errc::too_few_bins);
  histogram_spec good;
  calibrator c = calibrator::fixed(good, nullptr);
  EXPECT_EQ(code_of([&] { c.add(nullptr, 10, dtype::f32, nullptr); }), errc::null_pointer);
  EXPECT_EQ(code_of([&] { c.add(nullptr, -1, dtype::f32, nullptr); }), errc::invalid_count);
  EXPECT_EQ(code_of([&] { c.add_range(nullptr, 0, dtype::f32, nullptr); }), errc::invalid_option);
  EXPECT_EQ(code_of([&] { c.end_range_pass(nullptr); }), errc::invalid_option);
  calibrator s = calibrator::streaming(64, nullptr);
  EXPECT_EQ(code_of([&] { s.add(nullptr, 5, static_cast<dtype>(4), nullptr); }),
            errc::invalid_dtype);
  // Nothing was counted by the failed calls; n == 0 is fine and changes nothing.
  c.add(nullptr, 0, dtype::f32, nullptr);
  const auto h = c.counts(nullptr);
  EXPECT_TRUE(std::all_of(h.begin(), h.end(), [](std::uint64_t x) { return x == 0; }));
  search_options mx = search_options::mxnet();
  EXPECT_EQ(code_of([&] { (void)c.compute(mx, nullptr); }), errc::layout_mismatch);
}

TEST_F(gpu_calibrator, side_stream) {
  cudaStream_t st = nullptr;
  CUDA_OK(cudaStreamCreate(&st));
  {
    batch a(values(20000, 2.0f, 70, dtype::bf16), dtype::bf16);
    calibrator c = calibrator::streaming(2048, st);
    c.add(a.d, a.n, a.type, st);
    reference::streaming_histogram ref;
    ASSERT_TRUE(ref.init(2048).ok());
    ASSERT_TRUE(ref.add(a.bytes.data(), a.type, a.n).ok());
    EXPECT_EQ(c.counts(st), ref.get().counts);
  }
  CUDA_OK(cudaStreamDestroy(st));
}

// ---- one calibrator on both sides: the GPU calibrator equals klcal::cpu::calibrator ---------

/// Feeds the same batches to a GPU and a CPU calibrator of the same policy and checks their
/// states (counts, statistics, range) bit for bit and their search results.
void expect_same_as_cpu(calibrator& g, cpu::calibrator& c, const std::vector<batch*>& bs) {
  if (g.policy() == range_policy::two_pass) {
    for (batch* b : bs) {
      g.add_range(b->d, b->n, b->type, nullptr);
      c.add_range(b->bytes.data(), b->n, b->type);
    }
    g.end_range_pass(nullptr);
    c.end_range_pass();
  }
  for (batch* b : bs) {
    g.add(b->d, b->n, b->type, nullptr);
    c.add(b->bytes.data(), b->n, b->type);
  }
  ASSERT_TRUE(g.state(nullptr) == c.state());
  std::vector<search_options> opts;
  search_options o;
  if (g.spec().kind == layout::abs) {
    opts.push_back(search_options::tensorrt());
    o.meth = method::mse;
    opts.push_back(o);
  } else if (g.spec().bins % 2 == 1 && g.spec().lo == -g.spec().hi) {
    opts.push_back(search_options::mxnet());
  }
  if (g.spec().kind == layout::abs) {  // percentile is defined on the abs layout only
    o.meth = method::percentile;
    o.percentile = 99.9;
    opts.push_back(o);
  }
  o.meth = method::max;
  opts.push_back(o);
  for (const search_options& q : opts) {
    SCOPED_TRACE(static_cast<int>(q.meth));
    const search_result rg = g.compute(q, nullptr);
    const search_result rc = c.compute(q);
    EXPECT_EQ(rg.index, rc.index);
    EXPECT_EQ(rg.amax, rc.amax);
    EXPECT_EQ(bits(rg.scale), bits(rc.scale));
    EXPECT_EQ(rg.degenerate, rc.degenerate);
    EXPECT_NEAR(rg.score, rc.score, 1e-9 + 1e-9 * std::fabs(rc.score));
  }
}

TEST_F(gpu_calibrator, equals_cpu_calibrator_for_every_policy) {
  batch a(values(30000, 2.0f, 101, dtype::f32), dtype::f32);
  batch b(values(20000, 300.0f, 102, dtype::bf16), dtype::bf16);
  batch c(values(10000, 0.01f, 103, dtype::f32), dtype::f32);
  const std::vector<batch*> all = {&a, &b, &c};
  {
    SCOPED_TRACE("fixed abs");
    histogram_spec spec;
    spec.bins = 2048;
    spec.hi = 50.0f;
    calibrator g = calibrator::fixed(spec, nullptr);
    cpu::calibrator h = cpu::calibrator::fixed(spec);
    expect_same_as_cpu(g, h, all);
  }
  {
    SCOPED_TRACE("fixed signed");
    histogram_spec spec;
    spec.kind = layout::signed_;
    spec.bins = 1001;
    spec.lo = -7.0f;
    spec.hi = 9.0f;
    calibrator g = calibrator::fixed(spec, nullptr);
    cpu::calibrator h = cpu::calibrator::fixed(spec);
    expect_same_as_cpu(g, h, all);
  }
  {
    SCOPED_TRACE("two-pass abs");
    calibrator g = calibrator::two_pass(2048, nullptr);
    cpu::calibrator h = cpu::calibrator::two_pass(2048);
    expect_same_as_cpu(g, h, all);
  }
  {
    SCOPED_TRACE("two-pass signed (mxnet)");
    calibrator g = calibrator::two_pass(8001, nullptr, layout::signed_);
    cpu::calibrator h = cpu::calibrator::two_pass(8001, layout::signed_);
    expect_same_as_cpu(g, h, all);
  }
  {
    SCOPED_TRACE("streaming");
    calibrator g = calibrator::streaming(1024, nullptr);
    cpu::calibrator h = cpu::calibrator::streaming(1024);
    expect_same_as_cpu(g, h, {&c, &a, &b});
  }
}

TEST_F(gpu_calibrator, state_round_trip_and_merge_match_cpu) {
  batch a(values(8000, 0.5f, 111, dtype::f32), dtype::f32);
  batch b(values(8000, 4000.0f, 112, dtype::f32), dtype::f32);
  calibrator ga = calibrator::streaming(512, nullptr);
  ga.add(a.d, a.n, a.type, nullptr);
  // A state made on the host continues on the device, and the other way round.
  cpu::calibrator hb = cpu::calibrator::streaming(512);
  hb.add(b.bytes.data(), b.n, b.type);
  calibrator gb = calibrator::from_state(hb.state(), nullptr);
  ASSERT_TRUE(gb.state(nullptr) == hb.state());
  ga.merge(gb, nullptr);
  cpu::calibrator ha = cpu::calibrator::from_state(ga.state(nullptr));
  cpu::calibrator one = cpu::calibrator::streaming(512);
  one.add(a.bytes.data(), a.n, a.type);
  one.add(b.bytes.data(), b.n, b.type);
  EXPECT_TRUE(ha.state() == one.state());
  // from_state refuses an invalid state with its code.
  calibrator_state bad = one.state();
  bad.counts.pop_back();
  try {
    (void)calibrator::from_state(bad, nullptr);
    ADD_FAILURE() << "from_state accepted a state with too few counts";
  } catch (const error& e) {
    EXPECT_EQ(e.code().code, errc::invalid_option);
  }
}

/// A device_allocator that records every allocation and frees with cudaFree after a sync.
struct recording_allocator {
  std::vector<std::pair<void*, std::size_t>> live;
  int allocations = 0;
  int frees = 0;
  static void* allocate(std::size_t bytes, cudaStream_t, void* ctx) {
    auto* self = static_cast<recording_allocator*>(ctx);
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) return nullptr;
    self->live.emplace_back(p, bytes);
    ++self->allocations;
    return p;
  }
  static void deallocate(void* p, std::size_t bytes, cudaStream_t stream, void* ctx) {
    auto* self = static_cast<recording_allocator*>(ctx);
    (void)cudaStreamSynchronize(stream);
    auto it = std::find(self->live.begin(), self->live.end(), std::make_pair(p, bytes));
    if (it != self->live.end()) self->live.erase(it);
    (void)cudaFree(p);
    ++self->frees;
  }
};

TEST_F(gpu_calibrator, uses_the_given_allocator_and_records_device_and_stream) {
  recording_allocator rec;
  device_allocator alloc;
  alloc.allocate = &recording_allocator::allocate;
  alloc.deallocate = &recording_allocator::deallocate;
  alloc.context = &rec;
  cudaStream_t st = nullptr;
  CUDA_OK(cudaStreamCreate(&st));
  batch a(values(50000, 3.0f, 121, dtype::f32), dtype::f32);
  {
    calibrator c = calibrator::streaming(2048, st, alloc);
    int dev = -1;
    CUDA_OK(cudaGetDevice(&dev));
    EXPECT_EQ(c.device(), dev);
    EXPECT_EQ(c.stream(), st);
    c.add(a.d, a.n, a.type, st);
    (void)c.compute(search_options::tensorrt(), st);
    EXPECT_GE(rec.allocations, 3);  // counts, statistics, scratch
    EXPECT_EQ(rec.frees, rec.allocations - static_cast<int>(rec.live.size()));
    calibrator moved = std::move(c);  // ownership moves, nothing freed twice
    (void)moved.counts(st);
  }
  // Every allocation was returned, each exactly once, with its size.
  EXPECT_TRUE(rec.live.empty());
  EXPECT_EQ(rec.frees, rec.allocations);
  CUDA_OK(cudaStreamDestroy(st));
}

// compute() depends on klcal::search (kernels/search*.cu); these come last.
TEST_F(gpu_calibrator, compute_matches_reference_search) {
  batch a(values(200000, 1.0f, 80, dtype::f32), dtype::f32);
  calibrator c = calibrator::two_pass(2048, nullptr);
  c.add_range(a.d, a.n, a.type, nullptr);
  c.end_range_pass(nullptr);
  c.add(a.d, a.n, a.type, nullptr);
  const auto counts = c.counts(nullptr);
  const float max_abs = c.stats(nullptr).max_abs;
  search_options pct;
  pct.meth = method::percentile;
  search_options mx;
  mx.meth = method::max;
  for (const search_options& o : {search_options::tensorrt(), pct, mx}) {
    reference::search_output ref;
    ASSERT_TRUE(reference::search(counts, c.spec(), max_abs, o, &ref).ok());
    const search_result r = c.compute(o, nullptr);
    SCOPED_TRACE(static_cast<int>(o.meth));
    if (o.meth == method::entropy) {  // index optimal under the reference curve (testing.md)
      EXPECT_TRUE(
          index_optimal(ref.curve, candidate_position(o, r.index), fast_abs_tol, fast_rel_tol))
          << r.index;
    } else {
      EXPECT_EQ(r.index, ref.result.index);
      EXPECT_EQ(r.amax, ref.result.amax);
      EXPECT_EQ(bits(r.scale), bits(ref.result.scale));
    }
    EXPECT_EQ(r.degenerate, ref.result.degenerate);
  }
}

TEST_F(gpu_calibrator, compute_async_equals_compute) {
  batch a(values(50000, 3.0f, 90, dtype::f32), dtype::f32);
  calibrator c = calibrator::streaming(2048, nullptr);
  c.add(a.d, a.n, a.type, nullptr);
  search_result* d_r = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&d_r), sizeof(search_result)));
  search_options mx;
  mx.meth = method::max;
  for (const search_options& o : {search_options::tensorrt(), mx}) {
    const search_result want = c.compute(o, nullptr);
    c.compute_async(o, d_r, nullptr);
    search_result got;
    CUDA_OK(cudaMemcpy(&got, d_r, sizeof got, cudaMemcpyDeviceToHost));
    EXPECT_EQ(got.index, want.index);
    EXPECT_EQ(got.amax, want.amax);
    EXPECT_EQ(bits(got.scale), bits(want.scale));
    EXPECT_EQ(got.degenerate, want.degenerate);
  }
  // method::max is the exact max |x|, not read off the bins.
  const search_result m = c.compute(mx, nullptr);
  EXPECT_EQ(m.amax, static_cast<double>(c.stats(nullptr).max_abs));
  cudaFree(d_r);
}

}  // namespace
}  // namespace klcal::test
