// GPU threshold search (klcal::search) against klcal::reference::search and the NumPy goldens.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "golden.hpp"
#include "gpu_fixture.hpp"
#include "klcal/internal/gpu_policy.hpp"
#include "klcal/internal/search_detail.hpp"
#include "klcal/reference.hpp"
#include "klcal/threshold.hpp"

namespace {

using klcal::errc;
using klcal::histogram_spec;
using klcal::layout;
using klcal::method;
using klcal::rule_set;
using klcal::search_options;
using klcal::search_result;
using klcal::test::fast_abs_tol;
using klcal::test::fast_rel_tol;

constexpr double inf = std::numeric_limits<double>::infinity();

/// A device allocation freed on scope exit.
template <class T>
struct device_buffer {
  T* ptr = nullptr;
  std::size_t size = 0;
  explicit device_buffer(std::size_t n) : size(n) {
    if (n > 0 && cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(T)) != cudaSuccess)
      ptr = nullptr;
  }
  ~device_buffer() {
    if (ptr != nullptr) (void)cudaFree(ptr);
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
};

/// One histogram to search, on the host.
struct host_case {
  std::vector<std::uint64_t> counts;
  histogram_spec spec{};
  float max_abs = 0.0f;
  search_options opts{};
  bool want_curve = true;
};

struct gpu_output {
  search_result result{};
  std::vector<double> curve;
};

histogram_spec abs_spec(std::int32_t bins, float hi = 4.0f) {
  histogram_spec s;
  s.kind = layout::abs;
  s.bins = bins;
  s.lo = 0.0f;
  s.hi = hi;
  return s;
}

histogram_spec signed_spec(std::int32_t bins, float hi = 3.0f) {
  histogram_spec s;
  s.kind = layout::signed_;
  s.bins = bins;
  s.lo = -hi;
  s.hi = hi;
  return s;
}

/// Runs all cases in one klcal::search call on `stream` (through `path`, see
/// klcal/internal/search_detail.hpp) and copies the results back. Fails the test (ASSERT) on any
/// error.
void run_gpu(const std::vector<host_case>& cases, std::vector<gpu_output>* out,
             cudaStream_t stream = nullptr,
             klcal::detail::search_path path = klcal::detail::search_path::automatic) {
  const std::size_t n = cases.size();
  std::vector<std::unique_ptr<device_buffer<std::uint64_t>>> counts;
  std::vector<std::unique_ptr<device_buffer<double>>> curves;
  std::vector<klcal::search_task> tasks(n);
  std::vector<std::int64_t> curve_len(n, 0);
  for (std::size_t k = 0; k < n; ++k) {
    const host_case& c = cases[k];
    counts.push_back(std::make_unique<device_buffer<std::uint64_t>>(c.counts.size()));
    ASSERT_NE(counts.back()->ptr, nullptr);
    ASSERT_EQ(cudaMemcpy(counts.back()->ptr, c.counts.data(), c.counts.size() * 8,
                         cudaMemcpyHostToDevice),
              cudaSuccess);
    curve_len[k] = c.want_curve ? klcal::candidate_count(c.spec, c.opts) : 0;
    curves.push_back(
        std::make_unique<device_buffer<double>>(static_cast<std::size_t>(curve_len[k])));
    tasks[k].d_counts = counts.back()->ptr;
    tasks[k].spec = c.spec;
    tasks[k].max_abs = c.max_abs;
    tasks[k].opts = c.opts;
    tasks[k].d_curve = curves.back()->ptr;
  }
  device_buffer<search_result> results(n);
  std::size_t temp_bytes = 0;
  ASSERT_EQ(klcal::detail::search_with_path(path, nullptr, temp_bytes, tasks.data(),
                                            static_cast<std::int32_t>(n), results.ptr, stream),
            klcal::status{});
  device_buffer<unsigned char> temp(temp_bytes);
  const klcal::status st = klcal::detail::search_with_path(
      path, temp.ptr, temp_bytes, tasks.data(), static_cast<std::int32_t>(n), results.ptr, stream);
  ASSERT_EQ(st, klcal::status{}) << klcal::to_string(st);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  out->assign(n, gpu_output{});
  for (std::size_t k = 0; k < n; ++k) {
    ASSERT_EQ(cudaMemcpy(&(*out)[k].result, results.ptr + k, sizeof(search_result),
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
    (*out)[k].curve.resize(static_cast<std::size_t>(curve_len[k]));
    if (curve_len[k] > 0) {
      ASSERT_EQ(cudaMemcpy((*out)[k].curve.data(), curves[k]->ptr,
                           static_cast<std::size_t>(curve_len[k]) * 8, cudaMemcpyDeviceToHost),
                cudaSuccess);
    }
  }
}

/// Field by field, floating-point fields by bit pattern (memcmp would also compare padding).
bool bit_identical(const search_result& a, const search_result& b) {
  using klcal::test::bits_of;
  return bits_of(a.amax) == bits_of(b.amax) && bits_of(a.scale) == bits_of(b.scale) &&
         a.index == b.index && bits_of(a.score) == bits_of(b.score) &&
         bits_of(a.clipped_fraction) == bits_of(b.clipped_fraction) && a.degenerate == b.degenerate;
}

bool has_curve(const search_options& o) {
  return o.meth == method::entropy || o.meth == method::mse;
}

/// The expected values of one search: the reference's result and curve (or a golden's).
struct expectation {
  search_result result{};
  std::vector<double> curve;
};

/// docs/testing.md, fast paths vs reference: the chosen index is optimal under the reference
/// curve within tolerance, the score matches, the curve matches (+inf exactly where expected),
/// exact fields are bit-equal when the index is the same. Returns true for a near-tie (the GPU
/// chose a different but equally good index).
bool expect_matches(const host_case& c, const gpu_output& g, const expectation& e,
                    const std::string& what) {
  SCOPED_TRACE(what);
  const search_result& r = g.result;
  const search_result& x = e.result;
  EXPECT_EQ(r.degenerate, x.degenerate);
  bool near_tie = false;
  if (c.want_curve && has_curve(c.opts)) {
    EXPECT_EQ(klcal::test::curve_mismatch(e.curve, g.curve, fast_abs_tol, fast_rel_tol), "");
  }
  if (r.index != x.index && has_curve(c.opts) && !x.degenerate) {
    // Allowed only as a near-tie under the reference curve.
    const std::int64_t pos = klcal::test::candidate_position(c.opts, r.index);
    EXPECT_TRUE(klcal::test::index_optimal(e.curve, pos, fast_abs_tol, fast_rel_tol))
        << "index " << r.index << " vs reference " << x.index;
    if (pos >= 0 && pos < static_cast<std::int64_t>(e.curve.size())) {
      EXPECT_TRUE(klcal::test::value_close(e.curve[static_cast<std::size_t>(pos)], r.score,
                                           fast_abs_tol, fast_rel_tol));
    }
    near_tie = true;
    std::cout << "[ near-tie ] " << what << ": method " << static_cast<int>(c.opts.meth)
              << " rules " << static_cast<int>(c.opts.rules) << " bins " << c.spec.bins
              << ", GPU index " << r.index << " score " << r.score << ", reference index "
              << x.index << " score " << x.score << "\n";
  } else {
    EXPECT_EQ(r.index, x.index);
    EXPECT_EQ(klcal::test::bits_of(r.amax), klcal::test::bits_of(x.amax))
        << r.amax << " vs " << x.amax;
    EXPECT_EQ(klcal::test::bits_of(r.scale), klcal::test::bits_of(x.scale));
    EXPECT_TRUE(klcal::test::value_close(x.score, r.score, fast_abs_tol, fast_rel_tol))
        << r.score << " vs " << x.score;
    // Exact ratios of integers in both implementations.
    EXPECT_TRUE(klcal::test::value_close(x.clipped_fraction, r.clipped_fraction, 1e-15, 1e-14))
        << r.clipped_fraction << " vs " << x.clipped_fraction;
  }
  return near_tie;
}

expectation reference_of(const host_case& c) {
  klcal::reference::search_output o;
  const klcal::status st = klcal::reference::search(c.counts, c.spec, c.max_abs, c.opts, &o);
  EXPECT_EQ(st, klcal::status{}) << klcal::to_string(st);
  return expectation{o.result, o.curve};
}

/// Runs cases in one batched call and checks each against the reference; returns near-ties.
int check_against_reference(const std::vector<host_case>& cases, const std::string& what) {
  std::vector<gpu_output> out;
  run_gpu(cases, &out);
  if (out.size() != cases.size()) return 0;
  int near_ties = 0;
  for (std::size_t k = 0; k < cases.size(); ++k)
    near_ties += expect_matches(cases[k], out[k], reference_of(cases[k]),
                                what + " case " + std::to_string(k));
  return near_ties;
}

class gpu_search : public klcal::test::gpu_test {};

// ---- goldens (NumPy) --------------------------------------------------------------------------

TEST_F(gpu_search, goldens) {
  const auto cases = klcal::test::load_goldens(klcal::test::data_dir());
  ASSERT_FALSE(cases.empty()) << "no goldens in " << klcal::test::data_dir();
  std::vector<host_case> runs;
  std::vector<expectation> expected;
  std::vector<std::string> names;
  int searched = 0, rejected = 0;
  for (const auto& gc : cases) {
    if (gc.error) continue;  // the histogram itself cannot be built
    for (const auto& gs : gc.searches) {
      host_case hc;
      hc.counts = gc.counts;
      hc.spec = gc.spec;
      hc.max_abs = gc.max_abs;
      hc.opts = gs.opts;
      if (gs.error) {
        // Rejected in the size query already, with the golden's code.
        klcal::search_task task;
        task.d_counts = reinterpret_cast<const std::uint64_t*>(std::uintptr_t{256});  // unused
        task.spec = hc.spec;
        task.opts = hc.opts;
        std::size_t bytes = 0;
        EXPECT_EQ(
            klcal::search(nullptr, bytes, &task, 1, reinterpret_cast<search_result*>(256), nullptr)
                .code,
            *gs.error)
            << gc.name << " line " << gs.line;
        ++rejected;
        continue;
      }
      runs.push_back(hc);
      expectation e;
      e.result.index = gs.index;
      e.result.amax = gs.amax;
      e.result.scale = gs.scale;
      e.result.score = gs.score;
      e.result.clipped_fraction = gs.clipped;
      e.result.degenerate = gs.degenerate;
      e.curve = gs.curve;
      expected.push_back(e);
      names.push_back(gc.name + " line " + std::to_string(gs.line));
      ++searched;
    }
  }
  ASSERT_GT(searched, 0);
  std::vector<gpu_output> out;
  run_gpu(runs, &out);
  ASSERT_EQ(out.size(), runs.size());
  int near_ties = 0;
  for (std::size_t k = 0; k < runs.size(); ++k)
    near_ties += expect_matches(runs[k], out[k], expected[k], names[k]);
  std::cout << "[ goldens ] " << searched << " searches, " << rejected << " rejected as expected, "
            << near_ties << " near-ties\n";
}

// ---- tie rules, infinite candidates, degenerate histograms -----------------------------------

TEST_F(gpu_search, tensorrt_exact_ties_pick_largest_index) {
  // Unit counts in bins 0..999: every candidate i >= 1000 has no tail, every log is ln 1 = 0,
  // so KL(i) is exactly 0 for i = 1000 .. 2048 and NVIDIA's last argmin picks 2048.
  host_case c;
  c.spec = abs_spec(2048);
  c.counts.assign(2048, 0);
  for (int j = 0; j < 1000; ++j) c.counts[j] = 1;
  std::vector<gpu_output> out;
  run_gpu({c}, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].result.index, 2048);
  EXPECT_EQ(out[0].result.score, 0.0);
  EXPECT_FALSE(out[0].result.degenerate);
  for (std::size_t k = 1000 - 128; k < out[0].curve.size(); ++k)
    ASSERT_EQ(out[0].curve[k], 0.0) << "candidate " << k;
  EXPECT_EQ(check_against_reference({c}, "tie"), 0);
}

TEST_F(gpu_search, tensorrt_one_bin_per_level_ties_pick_largest_index) {
  // 12 bits: L = 2048 >= i for every candidate, so each level is one bin and every candidate
  // without a tail (i >= 500 here) has Q = P, KL exactly 0; the largest index must win even
  // though the counts are arbitrary (no exact logarithms).
  std::mt19937_64 rng(3);
  host_case c;
  c.spec = abs_spec(1024);
  c.opts.bits = 12;
  c.counts.assign(1024, 0);
  for (int j = 0; j < 500; ++j) c.counts[j] = 1 + rng() % 100000;
  std::vector<gpu_output> out;
  run_gpu({c}, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].result.index, 1024);
  EXPECT_EQ(out[0].result.score, 0.0);
  EXPECT_EQ(check_against_reference({c}, "one bin per level"), 0);
}

TEST_F(gpu_search, mxnet_exact_ties_pick_first_index) {
  // Equal counts in the 11 bins around the centre, W[0] and the outliers empty: every level's
  // mean equals its counts, Q = P, sum Q = T, so every candidate's KL is exactly 0 -> first.
  host_case c;
  c.spec = signed_spec(1001);
  c.opts = search_options::mxnet();
  c.counts.assign(1001, 0);
  for (int j = 500 - 5; j <= 500 + 5; ++j) c.counts[j] = 3;
  std::vector<gpu_output> out;
  run_gpu({c}, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].result.index, 127);
  EXPECT_EQ(out[0].result.score, 0.0);
  for (double v : out[0].curve) ASSERT_EQ(v, 0.0);
  EXPECT_EQ(check_against_reference({c}, "mxnet tie"), 0);
}

TEST_F(gpu_search, mse_ties_pick_first_index) {
  // All mass in bin 1 (centre 1.5 w) and candidates i >= 400: 1.5 * 127 / (i + 0.5) < 0.5, so
  // every candidate rounds the mass to 0 and scores exactly 7 * (1.5 w)^2 / 512; the first wins.
  host_case c;
  c.spec = abs_spec(512);
  c.opts.meth = method::mse;
  c.opts.start_bin = 400;
  c.counts.assign(512, 0);
  c.counts[1] = 7;
  std::vector<gpu_output> out;
  run_gpu({c}, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].result.index, 400);
  for (double v : out[0].curve) ASSERT_EQ(v, out[0].curve[0]);
  EXPECT_EQ(check_against_reference({c}, "mse tie"), 0);
}

TEST_F(gpu_search, all_candidates_infinite) {
  // tensorrt: mass only in bin 255, candidates 128, 131, ..., 254: S(i) = 0 for every one.
  host_case t;
  t.spec = abs_spec(256);
  t.opts.stride = 3;
  t.counts.assign(256, 0);
  t.counts[255] = 5;
  // mxnet, 16 bits: 65535 levels, windows of >= 65535 entries with 2 non-zero ones, so
  // eps * zeros / nonzeros >= 1 for P: every candidate is +inf and the first is chosen.
  host_case m;
  m.spec = signed_spec(65537);
  m.opts = search_options::mxnet();
  m.opts.bits = 16;
  m.counts.assign(65537, 0);
  m.counts[100] = 2;
  m.counts[65000] = 9;
  std::vector<gpu_output> out;
  run_gpu({t, m}, &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].result.index, 254);
  EXPECT_EQ(out[0].result.score, inf);
  EXPECT_TRUE(out[0].result.degenerate);
  for (double v : out[0].curve) EXPECT_EQ(v, inf);
  EXPECT_EQ(out[1].result.index, 32767);
  EXPECT_EQ(out[1].result.score, inf);
  EXPECT_TRUE(out[1].result.degenerate);
  EXPECT_EQ(check_against_reference({t, m}, "all inf"), 0);
}

TEST_F(gpu_search, some_candidates_infinite) {
  // Empty last kept bins with a tail give +inf at exactly those candidates.
  host_case c;
  c.spec = abs_spec(1024);
  c.counts.assign(1024, 0);
  for (int j = 0; j < 1024; j += 5) c.counts[j] = 1 + static_cast<std::uint64_t>(j % 7);
  std::vector<gpu_output> out;
  run_gpu({c}, &out);
  ASSERT_EQ(out.size(), 1u);
  int infinite = 0;
  for (double v : out[0].curve) infinite += std::isinf(v) ? 1 : 0;
  EXPECT_GT(infinite, 0);
  EXPECT_EQ(check_against_reference({c}, "some inf"), 0);
}

TEST_F(gpu_search, degenerate_histograms) {
  std::vector<host_case> cases;
  const method methods[] = {method::entropy, method::max, method::percentile, method::mse};
  for (method m : methods) {
    host_case empty;
    empty.spec = abs_spec(300);
    empty.max_abs = 2.5f;
    empty.opts.meth = m;
    empty.counts.assign(300, 0);
    cases.push_back(empty);
    host_case zero = empty;  // all mass in bin 0 of an abs histogram: "all zero"
    zero.counts[0] = 1234;
    cases.push_back(zero);
    host_case single = empty;  // one non-empty bin that is not bin 0: not degenerate
    single.counts[200] = 1u << 20;
    cases.push_back(single);
    host_case last = empty;  // only the last bin
    last.counts[299] = 3;
    cases.push_back(last);
  }
  host_case signed_zero;  // signed: everything in the bin holding 0
  signed_zero.spec = signed_spec(255);
  signed_zero.opts = search_options::mxnet();
  signed_zero.counts.assign(255, 0);
  signed_zero.counts[127] = 99;
  cases.push_back(signed_zero);
  host_case signed_empty = signed_zero;
  signed_empty.counts[127] = 0;
  cases.push_back(signed_empty);
  host_case start_is_b;  // B == start_bin: one candidate, i = B
  start_is_b.spec = abs_spec(128);
  start_is_b.counts.assign(128, 0);
  for (int j = 0; j < 128; ++j) start_is_b.counts[j] = static_cast<std::uint64_t>(j * j % 11);
  cases.push_back(start_is_b);

  std::vector<gpu_output> out;
  run_gpu(cases, &out);
  ASSERT_EQ(out.size(), cases.size());
  for (std::size_t k = 0; k < cases.size(); ++k) {
    const bool empty_or_zero = (k % 4 < 2 && k < 16) || k == 16 || k == 17;
    if (empty_or_zero) {
      const search_result& r = out[k].result;
      EXPECT_TRUE(r.degenerate) << k;
      EXPECT_EQ(r.amax, 0.0) << k;
      EXPECT_EQ(r.scale, 0.0f) << k;
      EXPECT_EQ(r.index, 0) << k;
      EXPECT_EQ(r.score, 0.0) << k;
      EXPECT_EQ(r.clipped_fraction, 0.0) << k;
    }
    expect_matches(cases[k], out[k], reference_of(cases[k]), "degenerate " + std::to_string(k));
  }
  EXPECT_EQ(out[18].result.index, 128);
}

// ---- randomized property test -----------------------------------------------------------------

/// Counts of one random histogram; `kind` picks the shape.
std::vector<std::uint64_t> random_counts(std::mt19937_64& rng, std::int32_t bins, int kind) {
  std::vector<std::uint64_t> c(static_cast<std::size_t>(bins), 0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  switch (kind) {
    case 0:  // sparse
      for (auto& x : c)
        if (u(rng) < 0.05) x = 1 + rng() % 1000;
      break;
    case 1:  // spiky: a smooth body plus a few huge bins
      for (std::size_t j = 0; j < c.size(); ++j)
        c[j] = static_cast<std::uint64_t>(50.0 * std::exp(-double(j) / 100.0));
      for (int s = 0; s < 4; ++s) c[rng() % c.size()] += std::uint64_t{1} << (20 + rng() % 15);
      break;
    case 2: {  // heavy-tailed: power-law decay from a random scale
      const double scale = std::ldexp(1.0, static_cast<int>(rng() % 30));
      for (std::size_t j = 0; j < c.size(); ++j)
        c[j] = static_cast<std::uint64_t>(scale / std::pow(1.0 + double(j), 1.0 + u(rng)));
      break;
    }
    case 3:  // tiny counts 0..3
      for (auto& x : c) x = rng() % 4;
      break;
    case 4:  // huge counts up to 2^40 per bin
      for (auto& x : c) x = rng() & ((std::uint64_t{1} << 40) - 1);
      break;
    default: {  // half-normal-ish with a zero spike (post-ReLU)
      for (std::size_t j = 0; j < c.size(); ++j) {
        const double x = double(j) / double(c.size()) * 4.0;
        c[j] = static_cast<std::uint64_t>(1e6 * std::exp(-x * x / 2.0) * (0.5 + u(rng)));
      }
      c[0] += std::uint64_t{1} << 30;
      break;
    }
  }
  return c;
}

TEST_F(gpu_search, large_bin_counts_and_many_levels) {
  // Bin counts far beyond one scan tile, and 16-bit levels (L = 32768) on both sides of
  // L >= i (where every level holds one bin and the level sum is H(i)).
  std::mt19937_64 rng(5);
  std::vector<host_case> cases;
  host_case t;
  t.spec = abs_spec(70001, 9.0f);
  t.opts.stride = 1111;
  t.counts = random_counts(rng, t.spec.bins, 5);
  cases.push_back(t);
  t.opts.bits = 16;
  cases.push_back(t);
  t.opts.is_unsigned = true;
  t.opts.zero_bin = klcal::zero_bin_policy::keep;
  t.counts = random_counts(rng, t.spec.bins, 2);
  cases.push_back(t);
  host_case p = t;
  p.opts = search_options{};
  p.opts.meth = method::percentile;
  p.opts.percentile = 99.9;
  cases.push_back(p);
  EXPECT_EQ(check_against_reference(cases, "large"), 0);
}

TEST_F(gpu_search, percentile_exact_both_paths) {
  // numerics.md 4: k = first bin with 100e9 S(k+1) >= P T, P = llround(p * 1e9), in exact
  // integers; expected indices by hand ("fp64:" where S / T >= p / 100 in fp64 differs).
  using klcal::detail::search_path;
  const std::vector<std::uint64_t> c999 = {9, 91, 800, 99, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
  const std::vector<std::uint64_t> big = {(std::uint64_t{1} << 60) - 1, 0, 1, 0};
  const std::vector<std::uint64_t> e11 = {2, 1, 99'999'999'995, 2};  // T = 1e11
  const struct {
    const std::vector<std::uint64_t>* counts;
    double p;
    std::int32_t k;
  } expected[] = {
      {&c999, 99.9, 3},          // S = 999 of 1000 is exactly 99.9 % (fp64: 12)
      {&c999, 0.9, 0},           // S = 9 of 1000 is exactly 0.9 % (fp64: 1)
      {&c999, 99.90000001, 12},  // needs more than 999
      {&big, 100.0, 2},          // 2^60 - 1 of 2^60 is not 100 % (fp64: 0); needs the high words
      {&big, 99.999999999, 0},   // 100e9 (2^60 - 1) >= (100e9 - 1) 2^60
      {&e11, 2.5e-9, 1},         // p * 1e9 = 2.5 exactly: P = 3 (half away from zero)
      {&e11, 99.999999998, 2},   // S(3) = 1e11 - 2 = P
      {&e11, 99.999999999, 3},   // P = 1e11 - 1 > S(3)
  };
  std::vector<host_case> cases;
  for (const auto& e : expected) {
    host_case c;
    c.counts = *e.counts;
    c.spec = abs_spec(static_cast<std::int32_t>(e.counts->size()), 16.0f);
    c.opts.meth = method::percentile;
    c.opts.percentile = e.p;
    cases.push_back(c);
  }
  for (const search_path path : {search_path::multi_kernel, search_path::fused}) {
    std::vector<gpu_output> out;
    run_gpu(cases, &out, nullptr, path);
    ASSERT_EQ(out.size(), cases.size());
    for (std::size_t k = 0; k < cases.size(); ++k) {
      SCOPED_TRACE("path " + std::to_string(static_cast<int>(path)) +
                   ", p = " + std::to_string(expected[k].p));
      const double w = 16.0 / static_cast<double>(cases[k].spec.bins);
      EXPECT_EQ(out[k].result.index, expected[k].k);
      EXPECT_EQ(out[k].result.amax, expected[k].k * w);
      EXPECT_FALSE(out[k].result.degenerate);
    }
  }
}

TEST_F(gpu_search, randomized_against_reference) {
  constexpr int num_cases = 1008;
  constexpr int per_call = 112;  // also exercises batching: mixed methods and sizes per call
  std::mt19937_64 rng(20261129);
  std::vector<host_case> cases;
  int near_ties = 0, checked = 0;
  for (int n = 0; n < num_cases; ++n) {
    host_case c;
    const int kind = static_cast<int>(rng() % 6);
    const int pick = static_cast<int>(rng() % 20);
    if (n < 3) {  // a few full-size mxnet histograms
      c.spec = signed_spec(8001);
      c.opts = search_options::mxnet();
    } else if (pick < 2) {  // smaller mxnet, some with 7 or 6 bits
      c.spec = signed_spec(2 * static_cast<std::int32_t>(130 + rng() % 400) + 1);
      c.opts = search_options::mxnet();
      if (pick == 1) c.opts.bits = 6 + static_cast<int>(rng() % 2);
    } else {
      c.spec = abs_spec(256 + static_cast<std::int32_t>(rng() % 1793), 0.5f + float(rng() % 100));
      c.opts.meth = pick < 14   ? method::entropy
                    : pick < 17 ? method::mse
                    : pick < 19 ? method::percentile
                                : method::max;
      const std::int32_t strides[] = {1, 2, 3, 4, 8, 16};
      c.opts.stride = strides[rng() % 6];
      c.opts.start_bin = 1 + static_cast<std::int32_t>(rng() % 200);
      if (c.opts.meth == method::mse && c.opts.stride < 4) c.opts.stride *= 4;  // O(B) each
      if (rng() % 4 == 0) c.opts.zero_bin = klcal::zero_bin_policy::keep;
      if (rng() % 5 == 0) c.opts.is_unsigned = true;
      if (rng() % 6 == 0) c.opts.bits = 4 + static_cast<int>(rng() % 9);
      c.opts.percentile = 90.0 + 10.0 * std::ldexp(double(rng() % 1024), -10);
      c.max_abs = c.spec.hi * 0.99f;
    }
    c.counts = random_counts(rng, c.spec.bins, kind);
    c.want_curve = rng() % 8 != 0;
    cases.push_back(std::move(c));
    if (cases.size() == per_call || n + 1 == num_cases) {
      near_ties += check_against_reference(cases, "random batch ending at " + std::to_string(n));
      checked += static_cast<int>(cases.size());
      cases.clear();
      if (HasFailure()) break;
    }
  }
  EXPECT_EQ(checked, num_cases);
  std::cout << "[ property ] " << checked << " histograms, " << near_ties
            << " near-ties (chosen index differs from the reference's but is optimal within "
               "tolerance)\n";
  RecordProperty("near_ties", near_ties);
}

// ---- batching ----------------------------------------------------------------------------------

TEST_F(gpu_search, batched_equals_one_by_one) {
  std::mt19937_64 rng(7);
  std::vector<host_case> cases;
  for (int n = 0; n < 24; ++n) {
    host_case c;
    switch (n % 5) {
      case 0: c.spec = abs_spec(2048); break;
      case 1:
        c.spec = abs_spec(700);
        c.opts.meth = method::mse;
        c.opts.stride = 7;
        break;
      case 2:
        c.spec = abs_spec(333);
        c.opts.meth = method::percentile;
        break;
      case 3:
        c.spec = abs_spec(129);
        c.opts.meth = method::max;
        c.max_abs = 1.5f;
        break;
      default:
        c.spec = signed_spec(601);
        c.opts = search_options::mxnet();
        break;
    }
    c.counts = random_counts(rng, c.spec.bins, n % 6);
    cases.push_back(c);
  }
  std::vector<gpu_output> batched;
  run_gpu(cases, &batched);
  ASSERT_EQ(batched.size(), cases.size());
  for (std::size_t k = 0; k < cases.size(); ++k) {
    std::vector<gpu_output> single;
    run_gpu({cases[k]}, &single);
    ASSERT_EQ(single.size(), 1u);
    EXPECT_TRUE(bit_identical(single[0].result, batched[k].result)) << "task " << k;
    EXPECT_EQ(single[0].curve.size(), batched[k].curve.size());
    EXPECT_EQ(
        std::memcmp(single[0].curve.data(), batched[k].curve.data(), 8 * single[0].curve.size()), 0)
        << "task " << k;
  }
}

// ---- fused single-launch path ------------------------------------------------------------------

TEST_F(gpu_search, fused_path_equals_multi_kernel_path) {
  // The same tasks through the fused kernel and through prefix + candidates + finalize must give
  // the same results and curves bit for bit: exact ties, infinite candidates, both zero-bin
  // policies, unsigned and few-bit options, mse, percentile, max, degenerate and limit-sized
  // histograms.
  using klcal::detail::search_path;
  std::mt19937_64 rng(11);
  std::vector<host_case> cases;
  host_case tie;  // KL exactly 0 for i >= 1000: the largest index (2048) must win
  tie.spec = abs_spec(2048);
  tie.counts.assign(2048, 0);
  for (int j = 0; j < 1000; ++j) tie.counts[j] = 1;
  cases.push_back(tie);
  host_case level_tie;  // 12 bits, one bin per level, KL 0 for every candidate without a tail
  level_tie.spec = abs_spec(1024);
  level_tie.opts.bits = 12;
  level_tie.counts.assign(1024, 0);
  for (int j = 0; j < 500; ++j) level_tie.counts[j] = 1 + rng() % 100000;
  cases.push_back(level_tie);
  host_case all_inf;  // every candidate +inf: degenerate, last index
  all_inf.spec = abs_spec(256);
  all_inf.opts.stride = 3;
  all_inf.counts.assign(256, 0);
  all_inf.counts[255] = 5;
  cases.push_back(all_inf);
  host_case some_inf;  // +inf exactly at the empty last kept bins
  some_inf.spec = abs_spec(1024);
  some_inf.counts.assign(1024, 0);
  for (int j = 0; j < 1024; j += 5) some_inf.counts[j] = 1 + static_cast<std::uint64_t>(j % 7);
  cases.push_back(some_inf);
  host_case mse_tie;  // every candidate scores the same: the first wins
  mse_tie.spec = abs_spec(512);
  mse_tie.opts.meth = method::mse;
  mse_tie.opts.start_bin = 400;
  mse_tie.counts.assign(512, 0);
  mse_tie.counts[1] = 7;
  cases.push_back(mse_tie);
  host_case empty;  // degenerate: no mass
  empty.spec = abs_spec(2048);
  empty.counts.assign(2048, 0);
  cases.push_back(empty);
  for (int n = 0; n < 18; ++n) {
    host_case c;
    switch (n % 6) {
      case 0: c.spec = abs_spec(2048); break;
      case 1:
        c.spec = abs_spec(klcal::detail::search_fused_max_bins);  // the largest fused size
        c.opts.zero_bin = klcal::zero_bin_policy::keep;
        break;
      case 2:
        c.spec = abs_spec(1001, 7.0f);
        c.opts.start_bin = 2;
        c.opts.stride = 5;
        c.opts.bits = 4;
        c.opts.is_unsigned = true;
        break;
      case 3:
        c.spec = abs_spec(700);
        c.opts.meth = method::mse;
        c.opts.stride = 7;
        break;
      case 4:
        c.spec = abs_spec(333);
        c.opts.meth = method::percentile;
        c.opts.percentile = 99.0 + 0.05 * n;
        break;
      default:
        c.spec = abs_spec(129);
        c.opts.meth = method::max;
        c.max_abs = 1.5f;
        break;
    }
    c.counts = random_counts(rng, c.spec.bins, n % 6);
    cases.push_back(c);
  }
  std::vector<gpu_output> fused, multi, automatic;
  run_gpu(cases, &fused, nullptr, search_path::fused);
  run_gpu(cases, &multi, nullptr, search_path::multi_kernel);
  run_gpu(cases, &automatic, nullptr, search_path::automatic);
  ASSERT_EQ(fused.size(), cases.size());
  ASSERT_EQ(multi.size(), cases.size());
  ASSERT_EQ(automatic.size(), cases.size());
  EXPECT_EQ(fused[0].result.index, 2048);
  EXPECT_EQ(fused[0].result.score, 0.0);
  EXPECT_EQ(fused[1].result.index, 1024);
  EXPECT_EQ(fused[2].result.index, 254);
  EXPECT_EQ(fused[2].result.score, inf);
  EXPECT_TRUE(fused[2].result.degenerate);
  EXPECT_EQ(fused[4].result.index, 400);
  EXPECT_TRUE(fused[5].result.degenerate);
  for (std::size_t k = 0; k < cases.size(); ++k) {
    EXPECT_TRUE(bit_identical(fused[k].result, multi[k].result)) << "task " << k;
    EXPECT_TRUE(bit_identical(fused[k].result, automatic[k].result)) << "task " << k;
    ASSERT_EQ(fused[k].curve.size(), multi[k].curve.size()) << "task " << k;
    EXPECT_EQ(std::memcmp(fused[k].curve.data(), multi[k].curve.data(), 8 * fused[k].curve.size()),
              0)
        << "task " << k;
  }
  EXPECT_EQ(check_against_reference(cases, "fused"), 0);
}

TEST_F(gpu_search, fused_path_refuses_tasks_it_cannot_run) {
  // Forcing the fused kernel on a group with an mxnet task or more than search_fused_max_bins
  // bins is refused (those always run through the multi-kernel path).
  using klcal::detail::search_path;
  std::vector<std::uint64_t> h(klcal::detail::search_fused_max_bins + 1, 3);
  device_buffer<std::uint64_t> counts(h.size());
  ASSERT_NE(counts.ptr, nullptr);
  ASSERT_EQ(cudaMemcpy(counts.ptr, h.data(), h.size() * 8, cudaMemcpyHostToDevice), cudaSuccess);
  klcal::search_task big;
  big.d_counts = counts.ptr;
  big.spec = abs_spec(klcal::detail::search_fused_max_bins + 1);
  klcal::search_task mx;
  mx.d_counts = counts.ptr;
  mx.spec = signed_spec(1001);
  mx.opts = search_options::mxnet();
  klcal::search_task small;
  small.d_counts = counts.ptr;
  small.spec = abs_spec(2048);
  device_buffer<search_result> res(2);
  for (const klcal::search_task& other : {big, mx}) {
    const klcal::search_task two[2] = {small, other};
    std::size_t bytes = 0;
    ASSERT_EQ(klcal::detail::search_with_path(search_path::fused, nullptr, bytes, two, 2, res.ptr,
                                              nullptr),
              klcal::status{});
    device_buffer<unsigned char> temp(bytes);
    EXPECT_EQ(klcal::detail::search_with_path(search_path::fused, temp.ptr, bytes, two, 2, res.ptr,
                                              nullptr)
                  .code,
              errc::invalid_option);
    EXPECT_EQ(klcal::detail::search_with_path(search_path::automatic, temp.ptr, bytes, two, 2,
                                              res.ptr, nullptr),
              klcal::status{});
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// ---- contract ----------------------------------------------------------------------------------

/// A single valid task over device counts, for the contract tests.
struct one_task {
  device_buffer<std::uint64_t> counts{2048};
  device_buffer<search_result> result{1};
  klcal::search_task task;
  one_task() {
    std::vector<std::uint64_t> h(2048);
    for (std::size_t j = 0; j < h.size(); ++j) h[j] = 1000 + (j * 7919) % 5000;
    (void)cudaMemcpy(counts.ptr, h.data(), h.size() * 8, cudaMemcpyHostToDevice);
    task.d_counts = counts.ptr;
    task.spec = abs_spec(2048);
  }
};

TEST_F(gpu_search, size_query_and_too_small_workspace) {
  one_task t;
  std::size_t bytes = 0;
  ASSERT_EQ(klcal::search(nullptr, bytes, &t.task, 1, t.result.ptr, nullptr), klcal::status{});
  EXPECT_GT(bytes, 0u);
  device_buffer<unsigned char> temp(bytes);
  std::size_t small = bytes - 1;
  EXPECT_EQ(klcal::search(temp.ptr, small, &t.task, 1, t.result.ptr, nullptr).code,
            errc::workspace_too_small);
  // A misaligned workspace of the queried size works too.
  device_buffer<unsigned char> temp2(bytes + 8);
  std::size_t exact = bytes;
  EXPECT_EQ(klcal::search(temp2.ptr + 8, exact, &t.task, 1, t.result.ptr, nullptr),
            klcal::status{});
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  search_result r;
  ASSERT_EQ(cudaMemcpy(&r, t.result.ptr, sizeof r, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_GE(r.index, 128);
  EXPECT_LE(r.index, 2048);
}

TEST_F(gpu_search, invalid_arguments_have_specific_codes) {
  one_task t;
  device_buffer<unsigned char> temp(1 << 20);
  auto code = [&](const klcal::search_task& task, std::int32_t n, search_result* res, bool query) {
    std::size_t bytes = query ? 0 : temp.size;
    return klcal::search(query ? nullptr : temp.ptr, bytes, &task, n, res, nullptr).code;
  };
  for (bool query : {true, false}) {
    SCOPED_TRACE(query ? "size query" : "run");
    EXPECT_EQ(code(t.task, -1, t.result.ptr, query), errc::invalid_count);
    klcal::search_task bad = t.task;
    bad.d_counts = nullptr;
    EXPECT_EQ(code(bad, 1, t.result.ptr, query), errc::null_pointer);
    EXPECT_EQ(code(t.task, 1, nullptr, query), errc::null_pointer);
    bad = t.task;
    bad.spec.bins = 1;
    EXPECT_EQ(code(bad, 1, t.result.ptr, query), errc::too_few_bins);
    bad = t.task;
    bad.opts.bits = 1;
    EXPECT_EQ(code(bad, 1, t.result.ptr, query), errc::invalid_bits);
    bad = t.task;
    bad.opts.stride = 0;
    EXPECT_EQ(code(bad, 1, t.result.ptr, query), errc::invalid_stride);
    bad = t.task;
    bad.opts.start_bin = 4096;
    EXPECT_EQ(code(bad, 1, t.result.ptr, query), errc::start_bin_out_of_range);
    bad = t.task;
    bad.opts.meth = method::percentile;
    bad.opts.percentile = 100.5;
    EXPECT_EQ(code(bad, 1, t.result.ptr, query), errc::invalid_percentile);
    bad = t.task;
    bad.opts.rules = rule_set::mxnet;
    EXPECT_EQ(code(bad, 1, t.result.ptr, query), errc::layout_mismatch);
    bad = t.task;
    bad.spec.hi = std::numeric_limits<float>::quiet_NaN();
    EXPECT_EQ(code(bad, 1, t.result.ptr, query), errc::invalid_range);
    // A bad task after a good one is still found.
    klcal::search_task two[2] = {t.task, t.task};
    two[1].d_counts = nullptr;
    std::size_t bytes = query ? 0 : temp.size;
    EXPECT_EQ(klcal::search(query ? nullptr : temp.ptr, bytes, two, 2, t.result.ptr, nullptr).code,
              errc::null_pointer);
  }
}

TEST_F(gpu_search, zero_tasks_is_a_no_op) {
  device_buffer<search_result> res(1);
  search_result sentinel;
  sentinel.index = 4242;
  ASSERT_EQ(cudaMemcpy(res.ptr, &sentinel, sizeof sentinel, cudaMemcpyHostToDevice), cudaSuccess);
  std::size_t bytes = 77;
  EXPECT_EQ(klcal::search(nullptr, bytes, nullptr, 0, res.ptr, nullptr), klcal::status{});
  device_buffer<unsigned char> temp(16);
  std::size_t have = 16;
  EXPECT_EQ(klcal::search(temp.ptr, have, nullptr, 0, res.ptr, nullptr), klcal::status{});
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  search_result r;
  ASSERT_EQ(cudaMemcpy(&r, res.ptr, sizeof r, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(r.index, 4242);
}

TEST_F(gpu_search, deterministic_across_runs_and_streams) {
  std::mt19937_64 rng(99);
  std::vector<host_case> cases;
  for (int n = 0; n < 6; ++n) {
    host_case c;
    c.spec = n % 3 == 2 ? signed_spec(401) : abs_spec(1500 + n);
    if (n % 3 == 2) c.opts = search_options::mxnet();
    if (n % 3 == 1) c.opts.meth = method::mse, c.opts.stride = 5;
    c.counts = random_counts(rng, c.spec.bins, n);
    cases.push_back(c);
  }
  std::vector<gpu_output> first, second, side;
  run_gpu(cases, &first);
  run_gpu(cases, &second);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  run_gpu(cases, &side, stream);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  ASSERT_EQ(first.size(), cases.size());
  ASSERT_EQ(second.size(), cases.size());
  ASSERT_EQ(side.size(), cases.size());
  for (std::size_t k = 0; k < cases.size(); ++k) {
    for (const auto* other : {&second[k], &side[k]}) {
      EXPECT_TRUE(bit_identical(first[k].result, other->result)) << k;
      ASSERT_EQ(first[k].curve.size(), other->curve.size());
      EXPECT_EQ(std::memcmp(first[k].curve.data(), other->curve.data(), 8 * first[k].curve.size()),
                0)
          << k;
    }
  }
}

TEST_F(gpu_search, host_task_array_may_be_freed_after_the_call) {
  one_task t;
  std::size_t bytes = 0;
  ASSERT_EQ(klcal::search(nullptr, bytes, &t.task, 1, t.result.ptr, nullptr), klcal::status{});
  device_buffer<unsigned char> temp(bytes);
  {
    auto heap = std::make_unique<klcal::search_task>(t.task);
    ASSERT_EQ(klcal::search(temp.ptr, bytes, heap.get(), 1, t.result.ptr, nullptr),
              klcal::status{});
    // Clobber the array before the GPU has (necessarily) run.
    heap->d_counts = nullptr;
    heap->spec.bins = 3;
    heap->opts.meth = method::max;
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  search_result r;
  ASSERT_EQ(cudaMemcpy(&r, t.result.ptr, sizeof r, cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<std::uint64_t> h(2048);
  ASSERT_EQ(cudaMemcpy(h.data(), t.counts.ptr, h.size() * 8, cudaMemcpyDeviceToHost), cudaSuccess);
  host_case c;
  c.counts = h;
  c.spec = t.task.spec;
  const expectation e = reference_of(c);
  EXPECT_EQ(r.index, e.result.index);
  EXPECT_TRUE(klcal::test::value_close(e.result.score, r.score, fast_abs_tol, fast_rel_tol));
}

TEST_F(gpu_search, many_tasks_span_several_launches) {
  // More tasks than one launch's parameter block holds: results land in the right slots.
  std::vector<host_case> cases;
  for (int n = 0; n < 400; ++n) {
    host_case c;
    c.spec = abs_spec(200 + (n % 7));
    c.opts.meth = n % 2 ? method::percentile : method::max;
    c.opts.percentile = 50.0 + n % 50;
    c.max_abs = 0.25f * static_cast<float>(n + 1);
    c.counts.assign(static_cast<std::size_t>(c.spec.bins), 0);
    for (int j = 1; j < c.spec.bins; j += 1 + n % 5) c.counts[j] = 1 + (j * n) % 13;
    cases.push_back(c);
  }
  EXPECT_EQ(check_against_reference(cases, "many"), 0);
}

}  // namespace

TEST_F(gpu_search, graph_capture_and_replay_both_paths) {
  // A captured search replays with the values of capture time (the tasks travel in kernel
  // parameters), on the fused and on the multi-kernel path.
  one_task t;
  device_buffer<search_result> second(1);
  std::size_t bytes = 0;
  ASSERT_EQ(klcal::search(nullptr, bytes, &t.task, 1, t.result.ptr, nullptr), klcal::status{});
  device_buffer<unsigned char> temp(bytes), temp2(bytes);
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  const cudaError_t begin = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  if (begin != cudaSuccess) {
    (void)cudaGetLastError();
    cudaStreamDestroy(s);
    GTEST_SKIP() << "stream capture not supported here (" << cudaGetErrorString(begin) << ")";
  }
  std::size_t b1 = bytes, b2 = bytes;
  const klcal::status a = klcal::detail::search_with_path(
      klcal::detail::search_path::automatic, temp.ptr, b1, &t.task, 1, t.result.ptr, s);
  const klcal::status m = klcal::detail::search_with_path(klcal::detail::search_path::multi_kernel,
                                                          temp2.ptr, b2, &t.task, 1, second.ptr, s);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  ASSERT_EQ(a, klcal::status{});
  ASSERT_EQ(m, klcal::status{});
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaMemset(t.result.ptr, 0xff, sizeof(search_result)), cudaSuccess);
  for (int r = 0; r < 2; ++r) ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  search_result r1, r2;
  ASSERT_EQ(cudaMemcpy(&r1, t.result.ptr, sizeof r1, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(&r2, second.ptr, sizeof r2, cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<std::uint64_t> h(2048);
  ASSERT_EQ(cudaMemcpy(h.data(), t.counts.ptr, h.size() * 8, cudaMemcpyDeviceToHost), cudaSuccess);
  host_case c;
  c.counts = h;
  c.spec = t.task.spec;
  const expectation e = reference_of(c);
  EXPECT_EQ(r1.index, e.result.index);
  EXPECT_TRUE(klcal::test::value_close(e.result.score, r1.score, fast_abs_tol, fast_rel_tol));
  EXPECT_TRUE(bit_identical(r1, r2));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}
