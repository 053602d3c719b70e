// Randomised property test: CPU backend search (prefix-sum forms) vs the direct reference formulas.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "golden.hpp"
#include "klcal/cpu.hpp"
#include "klcal/reference.hpp"

namespace {

using klcal::histogram_spec;
using klcal::layout;
using klcal::search_options;
using klcal::test::bits_of;
namespace ref = klcal::reference;
namespace cpu = klcal::cpu;

enum class shape {
  sparse,
  spiky,
  heavy_tail,
  tiny,
  huge,
  gaussian,
  very_sparse,
  tails_only,
  count
};

const char* shape_name(shape s) {
  switch (s) {
    case shape::sparse: return "sparse";
    case shape::spiky: return "spiky";
    case shape::heavy_tail: return "heavy_tail";
    case shape::tiny: return "tiny";
    case shape::huge: return "huge";
    case shape::gaussian: return "gaussian";
    case shape::very_sparse: return "very_sparse";
    case shape::tails_only: return "tails_only";
    default: return "?";
  }
}

// Counts of `bins` bins with the given shape. `centre` is where the mass peaks (bin 0 for abs
// histograms, the middle for signed ones).
std::vector<std::uint64_t> make_counts(shape s, std::int32_t bins, std::int32_t centre,
                                       std::mt19937_64& rng) {
  std::vector<std::uint64_t> c(std::size_t(bins), 0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double width = std::max(2.0, bins * (0.02 + 0.3 * u(rng)));
  for (std::int32_t j = 0; j < bins; ++j) {
    const double d = std::fabs(double(j - centre)) / width;
    switch (s) {
      case shape::sparse:
        if (u(rng) < 0.03) c[std::size_t(j)] = 1 + static_cast<std::uint64_t>(u(rng) * 1000);
        break;
      case shape::spiky:
        c[std::size_t(j)] = static_cast<std::uint64_t>(20.0 * std::exp(-d) * u(rng));
        if (u(rng) < 0.01) c[std::size_t(j)] += static_cast<std::uint64_t>(u(rng) * 1e9);
        break;
      case shape::heavy_tail:
        c[std::size_t(j)] = static_cast<std::uint64_t>(1e6 / std::pow(1.0 + d, 2.5) * u(rng));
        break;
      case shape::tiny:
        c[std::size_t(j)] = static_cast<std::uint64_t>(u(rng) * 4.0 * (d < 3));
        break;
      case shape::huge:
        c[std::size_t(j)] =
            static_cast<std::uint64_t>(std::ldexp(std::exp(-d * d) * (0.5 + 0.5 * u(rng)), 40));
        break;
      case shape::very_sparse:  // < 1% non-empty: the mxnet bin-by-bin branch
        if (u(rng) < 0.004) c[std::size_t(j)] = 1 + static_cast<std::uint64_t>(u(rng) * 50);
        break;
      case shape::tails_only:  // mass only far from the centre: +inf candidates
        if (std::abs(j - centre) > bins / 2 - bins / 16 && u(rng) < 0.5)
          c[std::size_t(j)] = 1 + static_cast<std::uint64_t>(u(rng) * 9);
        break;
      default:
        c[std::size_t(j)] = static_cast<std::uint64_t>(1e5 * std::exp(-0.5 * d * d) + 3 * u(rng));
        break;
    }
  }
  if (u(rng) < 0.2) c[std::size_t(centre)] *= 50;  // a zero spike, as after ReLU
  return c;
}

struct tally {
  int cases = 0, near_ties = 0, infinite_curves = 0;
};

// Runs one case through both implementations and checks every property; `threads` for the CPU.
void check_case(const std::vector<std::uint64_t>& counts, const histogram_spec& spec,
                const search_options& o, int threads, tally& t, const std::string& what) {
  SCOPED_TRACE(what);
  ref::search_output ro;
  ASSERT_TRUE(ref::search(counts, spec, 1.0f, o, &ro).ok());
  const std::int64_t n = klcal::candidate_count(spec, o);
  ASSERT_EQ(std::size_t(n), ro.curve.size());
  std::vector<double> curve(std::size_t(n), -7.0);
  cpu::search_task task;
  task.h_counts = counts.data();
  task.spec = spec;
  task.max_abs = 1.0f;
  task.opts = o;
  task.h_curve = n > 0 ? curve.data() : nullptr;
  klcal::search_result r;
  ASSERT_TRUE(cpu::search(&task, 1, &r, threads).ok());
  constexpr double a = klcal::test::fast_abs_tol, rel = klcal::test::fast_rel_tol;
  const auto& rr = ro.result;
  ++t.cases;
  EXPECT_EQ(klcal::test::curve_mismatch(ro.curve, curve, a, rel), "");
  for (std::size_t k = 0; k < curve.size(); ++k)
    if (std::isinf(curve[k]) != std::isinf(ro.curve[k])) {
      ADD_FAILURE() << "+inf mismatch at candidate " << k;
      break;
    }
  t.infinite_curves +=
      std::any_of(curve.begin(), curve.end(), [](double x) { return std::isinf(x); });
  EXPECT_EQ(r.degenerate, rr.degenerate);
  EXPECT_TRUE(klcal::test::value_close(rr.score, r.score, a, rel))
      << "score " << r.score << " vs " << rr.score;
  if (n > 0 && !rr.degenerate) {
    const std::int64_t pos = klcal::test::candidate_position(o, r.index);
    ASSERT_GE(pos, 0) << "index " << r.index << " is not a candidate";
    EXPECT_TRUE(klcal::test::index_optimal(ro.curve, pos, a, rel))
        << "index " << r.index << " KL_ref " << ro.curve[std::size_t(pos)] << ", reference index "
        << rr.index << " score " << rr.score;
    // The score reported is the curve's value at the chosen index.
    EXPECT_EQ(bits_of(r.score), bits_of(curve[std::size_t(pos)]));
  }
  if (r.index != rr.index) {
    ++t.near_ties;
  } else {
    EXPECT_EQ(bits_of(r.amax), bits_of(rr.amax));
    EXPECT_EQ(bits_of(r.scale), bits_of(rr.scale));
    EXPECT_EQ(bits_of(r.clipped_fraction), bits_of(rr.clipped_fraction));
  }
}

TEST(cpu_search_property, fast_paths_match_reference_on_random_histograms) {
  std::mt19937_64 rng(20261129);
  std::uniform_int_distribution<int> coin(0, 1 << 20);
  tally trt, mx, other;
  const int shapes = static_cast<int>(shape::count);
  // tensorrt: 700 cases over bins, bits, start_bin, stride, zero_bin, is_unsigned.
  for (int k = 0; k < 700; ++k) {
    const shape s = static_cast<shape>(k % shapes);
    const std::int32_t bins = k % 50 == 0 ? 4096 : 8 + coin(rng) % 2041;
    search_options o;
    o.bits = 2 + coin(rng) % (k % 3 == 0 ? 14 : 8);
    o.is_unsigned = coin(rng) % 4 == 0;
    o.start_bin = 1 + coin(rng) % bins;
    if (coin(rng) % 2) o.start_bin = std::min(bins, 128);
    o.stride = coin(rng) % 3 == 0 ? 1 + coin(rng) % 9 : 1;
    o.zero_bin =
        coin(rng) % 3 == 0 ? klcal::zero_bin_policy::keep : klcal::zero_bin_policy::copy_next;
    const histogram_spec spec{layout::abs, bins, 0.0f, 1.0f + float(coin(rng) % 100)};
    const auto counts = make_counts(s, bins, 0, rng);
    check_case(counts, spec, o, 1 + k % 3, trt,
               std::string("tensorrt ") + shape_name(s) + " bins " + std::to_string(bins) +
                   " bits " + std::to_string(o.bits) + " start " + std::to_string(o.start_bin) +
                   " stride " + std::to_string(o.stride) + " case " + std::to_string(k));
  }
  // mxnet: 330 cases; the direct reference is O(bins^2), so most are small, a few 8001.
  for (int k = 0; k < 330; ++k) {
    const shape s = static_cast<shape>(k % shapes);
    search_options o = search_options::mxnet();
    o.bits = k % 3 == 0 ? 8 : 3 + coin(rng) % 5;
    const std::int32_t levels = (1 << o.bits) - 1;
    std::int32_t bins;
    if (k % 110 == 5)
      bins = 8001;
    else
      bins = 2 * (levels / 2 + coin(rng) % (o.bits == 8 ? 400 : 300)) + 1;
    const float hi = 0.5f + float(coin(rng) % 50);
    const histogram_spec spec{layout::signed_, bins, -hi, hi};
    const auto counts = make_counts(s, bins, bins / 2, rng);
    check_case(counts, spec, o, 1 + k % 2, mx,
               std::string("mxnet ") + shape_name(s) + " bins " + std::to_string(bins) + " bits " +
                   std::to_string(o.bits) + " case " + std::to_string(k));
  }
  // mse, percentile and max: 240 cases.
  for (int k = 0; k < 240; ++k) {
    const shape s = static_cast<shape>(k % shapes);
    const std::int32_t bins = 16 + coin(rng) % 1500;
    search_options o;
    o.meth = k % 3 == 0   ? klcal::method::mse
             : k % 3 == 1 ? klcal::method::percentile
                          : klcal::method::max;
    o.bits = 2 + coin(rng) % 10;
    o.is_unsigned = coin(rng) % 3 == 0;
    o.start_bin = 1 + coin(rng) % (bins - 1);
    o.stride = 1 + coin(rng) % 4;
    o.percentile = (coin(rng) % 10001) / 100.0;
    const histogram_spec spec{layout::abs, bins, 0.0f, 0.25f + float(coin(rng) % 10)};
    const auto counts = make_counts(s, bins, 0, rng);
    check_case(counts, spec, o, 2, other,
               std::string("other ") + shape_name(s) + " bins " + std::to_string(bins) + " case " +
                   std::to_string(k));
  }
  std::printf("tensorrt: %d cases, %d near-ties, %d with +inf candidates\n", trt.cases,
              trt.near_ties, trt.infinite_curves);
  std::printf("mxnet:    %d cases, %d near-ties, %d with +inf candidates\n", mx.cases, mx.near_ties,
              mx.infinite_curves);
  std::printf("other:    %d cases, %d near-ties\n", other.cases, other.near_ties);
  EXPECT_GE(trt.cases + mx.cases + other.cases, 1000);
}

TEST(cpu_search_property, batched_and_threaded_equal_one_by_one) {
  std::mt19937_64 rng(77);
  std::uniform_int_distribution<int> coin(0, 1 << 20);
  std::vector<std::vector<std::uint64_t>> counts;
  std::vector<cpu::search_task> tasks;
  for (int k = 0; k < 300; ++k) {
    cpu::search_task t;
    const int kind = k % 5;
    if (kind == 4) {
      t.opts = search_options::mxnet();
      t.spec = {layout::signed_, 2 * (127 + coin(rng) % 300) + 1, -2.0f, 2.0f};
    } else {
      t.spec = {layout::abs, 256 + coin(rng) % 2000, 0.0f, 3.0f};
      t.opts.meth = kind == 0   ? klcal::method::mse
                    : kind == 1 ? klcal::method::percentile
                                : klcal::method::entropy;
      t.opts.stride = 1 + k % 3;
    }
    t.max_abs = 3.0f;
    counts.push_back(make_counts(static_cast<shape>(k % static_cast<int>(shape::count)),
                                 t.spec.bins, kind == 4 ? t.spec.bins / 2 : 0, rng));
    tasks.push_back(t);
  }
  std::vector<std::vector<double>> batched_curves(tasks.size()), single_curves(tasks.size());
  for (std::size_t k = 0; k < tasks.size(); ++k) {
    tasks[k].h_counts = counts[k].data();
    const std::int64_t n = klcal::candidate_count(tasks[k].spec, tasks[k].opts);
    batched_curves[k].assign(std::size_t(n), 0.0);
    single_curves[k].assign(std::size_t(n), 1.0);
    tasks[k].h_curve = n > 0 ? batched_curves[k].data() : nullptr;
  }
  std::vector<klcal::search_result> batched(tasks.size());
  ASSERT_TRUE(cpu::search(tasks.data(), std::int32_t(tasks.size()), batched.data(), 3).ok());
  for (std::size_t k = 0; k < tasks.size(); ++k) {
    cpu::search_task t = tasks[k];
    t.h_curve = single_curves[k].empty() ? nullptr : single_curves[k].data();
    for (const int threads : {1, 4}) {  // one task: candidates spread over `threads`
      klcal::search_result one;
      ASSERT_TRUE(cpu::search(&t, 1, &one, threads).ok());
      EXPECT_EQ(one.index, batched[k].index) << "task " << k;
      EXPECT_EQ(bits_of(one.amax), bits_of(batched[k].amax)) << "task " << k;
      EXPECT_EQ(bits_of(one.scale), bits_of(batched[k].scale)) << "task " << k;
      EXPECT_EQ(bits_of(one.score), bits_of(batched[k].score)) << "task " << k;
      EXPECT_EQ(bits_of(one.clipped_fraction), bits_of(batched[k].clipped_fraction));
      EXPECT_EQ(one.degenerate, batched[k].degenerate);
      ASSERT_EQ(single_curves[k].size(), batched_curves[k].size());
      for (std::size_t i = 0; i < single_curves[k].size(); ++i)
        ASSERT_EQ(bits_of(single_curves[k][i]), bits_of(batched_curves[k][i]))
            << "task " << k << " candidate " << i;
    }
  }
}

// The exact integer level form of mse (numerics.md 4.1) at its limits: a total near 2^63,
// 8192 bins, the largest fp32 range, and qmax from 127 to 2047 (both CPU paths). Besides the
// usual tolerance, every curve entry must be within 1e-11 relative: the reference's own
// summation error is below B eps = 9e-13 there, and the level form is exact up to a few ulps.
TEST(cpu_search_property, mse_extreme_counts) {
  tally t;
  const std::int32_t bins = 8192;
  std::vector<std::uint64_t> c(static_cast<std::size_t>(bins));
  for (std::int32_t j = 0; j < bins; ++j)
    c[std::size_t(j)] = (std::uint64_t{1} << 50) + (std::uint64_t(j) * 2654435761u) % (1u << 31);
  for (const int bits : {8, 11})
    for (const bool uns : {false, true}) {
      search_options o;
      o.meth = klcal::method::mse;
      o.bits = bits;
      o.is_unsigned = uns;
      o.start_bin = 1;
      o.stride = 7;
      const histogram_spec spec{layout::abs, bins, 0.0f, 3.0e38f};
      const std::string what = "bits " + std::to_string(bits) + (uns ? " unsigned" : " signed");
      check_case(c, spec, o, 2, t, what);
      ref::search_output ro;
      ASSERT_TRUE(ref::search(c, spec, 1.0f, o, &ro).ok());
      std::vector<double> curve(ro.curve.size());
      cpu::search_task task;
      task.h_counts = c.data();
      task.spec = spec;
      task.opts = o;
      task.h_curve = curve.data();
      klcal::search_result r;
      ASSERT_TRUE(cpu::search(&task, 1, &r, 1).ok());
      for (std::size_t k = 0; k < curve.size(); ++k)
        ASSERT_LE(std::fabs(curve[k] - ro.curve[k]), 1e-11 * ro.curve[k]) << what << " " << k;
    }
}

}  // namespace
