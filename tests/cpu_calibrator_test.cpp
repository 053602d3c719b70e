// CPU calibrator and calibrator states vs klcal::reference: policies, exact order-free merges,
// errors.
#include "klcal/cpu_calibrator.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "klcal/reference.hpp"
#include "klcal/state.hpp"
#include "test_data.hpp"

namespace klcal::test {
namespace {

using cal = klcal::cpu::calibrator;

/// n values: gaussian times `scale`, every 5th zero, every 9th NaN, every 13th +-Inf.
std::vector<float> values(std::int64_t n, float scale, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    float x = g(rng) * scale;
    if (i % 5 == 0) x = 0.0f;
    if (i % 9 == 4) x = std::numeric_limits<float>::quiet_NaN();
    if (i % 13 == 6) x = (i % 2 ? 1.0f : -1.0f) * std::numeric_limits<float>::infinity();
    v[static_cast<std::size_t>(i)] = x;
  }
  return v;
}

void expect_matches(const cal& c, const reference::histogram& ref) {
  EXPECT_EQ(bits_of(c.spec().hi), bits_of(ref.spec.hi));
  EXPECT_EQ(bits_of(c.spec().lo), bits_of(ref.spec.lo));
  EXPECT_EQ(c.spec().bins, ref.spec.bins);
  EXPECT_EQ(c.counts(), ref.counts);
  EXPECT_EQ(c.stats().nan_count, ref.nan_count);
  EXPECT_EQ(c.stats().inf_count, ref.inf_count);
  EXPECT_EQ(c.stats().finite_count, ref.finite_count);
  EXPECT_EQ(bits_of(c.stats().max_abs), bits_of(ref.max_abs));
  EXPECT_EQ(bits_of(c.stats().min), bits_of(ref.min));
  EXPECT_EQ(bits_of(c.stats().max), bits_of(ref.max));
}

errc code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const error& e) {
    return e.code().code;
  }
  return errc::ok;
}

TEST(cpu_calibrator, fixed_equals_reference_for_every_dtype_and_layout) {
  const std::vector<float> v = values(20011, 1.5f, 1);
  for (dtype t : {dtype::f32, dtype::f16, dtype::bf16}) {
    for (layout k : {layout::abs, layout::signed_}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + (k == layout::abs ? " abs" : " signed"));
      histogram_spec spec;
      spec.kind = k;
      spec.bins = 1001;
      spec.lo = k == layout::abs ? 0.0f : -3.0f;
      spec.hi = 3.5f;
      const auto bytes = encode(v, t);
      const auto n = static_cast<std::int64_t>(v.size());
      cal c = cal::fixed(spec, 2);
      c.add(bytes.data(), n / 3, t);
      c.add(bytes.data() + (n / 3) * dtype_size(t), n - n / 3, t);
      reference::histogram ref;
      ASSERT_TRUE(reference::make_histogram(spec, &ref).ok());
      ASSERT_TRUE(reference::add(ref, bytes.data(), t, n).ok());
      expect_matches(c, ref);
    }
  }
}

TEST(cpu_calibrator, two_pass_equals_reference) {
  const std::vector<float> v = values(30000, 2.0f, 2);
  const auto n = static_cast<std::int64_t>(v.size());
  cal c = cal::two_pass(2048);
  c.add_range(v.data(), n / 2, dtype::f32);
  c.add_range(v.data() + n / 2, n - n / 2, dtype::f32);
  c.end_range_pass();
  c.add(v.data(), n, dtype::f32);
  reference::histogram ref;
  ASSERT_TRUE(reference::two_pass_histogram(v.data(), dtype::f32, n, 2048, &ref).ok());
  expect_matches(c, ref);

  // Signed two-pass over [-hi, hi): the reference bins into the same spec.
  cal s = cal::two_pass(8001, layout::signed_);
  s.add_range(v.data(), n, dtype::f32);
  s.end_range_pass();
  s.add(v.data(), n, dtype::f32);
  EXPECT_EQ(bits_of(s.spec().lo), bits_of(-s.spec().hi));
  EXPECT_EQ(bits_of(s.spec().hi), bits_of(ref.max_abs));
  reference::histogram sref;
  ASSERT_TRUE(reference::make_histogram(s.spec(), &sref).ok());
  ASSERT_TRUE(reference::add(sref, v.data(), dtype::f32, n).ok());
  EXPECT_EQ(s.counts(), sref.counts);
}

TEST(cpu_calibrator, two_pass_all_zero_and_subnormal_use_the_floor) {
  const std::vector<float> zeros(100, 0.0f);
  cal c = cal::two_pass(2048);
  c.add_range(zeros.data(), 100, dtype::f32);
  c.end_range_pass();
  EXPECT_EQ(c.spec().hi, std::ldexp(1.0f, -64));
  const std::vector<float> tiny(10, std::numeric_limits<float>::denorm_min());
  cal d = cal::two_pass(2048);
  d.add_range(tiny.data(), 10, dtype::f32);
  d.end_range_pass();
  EXPECT_EQ(d.spec().hi, std::ldexp(1.0f, -64));
}

TEST(cpu_calibrator, streaming_equals_reference_in_any_order) {
  const float scales[] = {1e-3f, 0.5f, 40.0f, 3.0f, 1e5f};
  std::vector<std::vector<unsigned char>> bs;
  bs.reserve(5);
  for (int i = 0; i < 5; ++i)
    bs.push_back(encode(values(2000 + 333 * i, scales[i], 30 + i), dtype::bf16));
  reference::streaming_histogram ref;
  ASSERT_TRUE(ref.init(1024).ok());
  cal fwd = cal::streaming(1024), rev = cal::streaming(1024);
  for (int i = 0; i < 5; ++i) {
    fwd.add(bs[i].data(), std::int64_t(bs[i].size() / 2), dtype::bf16);
    rev.add(bs[4 - i].data(), std::int64_t(bs[4 - i].size() / 2), dtype::bf16);
    ASSERT_TRUE(ref.add(bs[i].data(), dtype::bf16, std::int64_t(bs[i].size() / 2)).ok());
  }
  expect_matches(fwd, ref.get());
  EXPECT_EQ(fwd.state().exponent, ref.hi_exp());
  EXPECT_EQ(fwd.state(), rev.state());
}

/// Property (numerics.md 1.4): any split of the data, each part in its own calibrator, merged in
/// any order and either direction, equals one calibrator over all the data, bit for bit.
TEST(calibrator_state, any_split_merged_in_any_order_equals_one_pass) {
  std::mt19937 rng(7);
  const std::vector<float> v = [&] {
    // Magnitudes over many octaves so that streaming parts end at different exponents.
    std::vector<float> out = values(40000, 1.0f, 3);
    std::uniform_int_distribution<int> e(-30, 20);
    for (float& x : out) x = std::ldexp(x, e(rng));
    return out;
  }();
  const auto n = static_cast<std::int64_t>(v.size());
  for (range_policy p : {range_policy::fixed, range_policy::two_pass, range_policy::streaming}) {
    SCOPED_TRACE(static_cast<int>(p));
    auto make = [&]() {
      if (p == range_policy::fixed) {
        histogram_spec s;
        s.bins = 4096;
        s.hi = 1e3f;
        return cal::fixed(s, 1);
      }
      return p == range_policy::two_pass ? cal::two_pass(4096, layout::abs, 1)
                                         : cal::streaming(4096, 1);
    };
    // Two-pass: every part's first pass must see the global maximum (as an all-reduce does),
    // so every part first merges the range statistics of all the data.
    cal whole = make();
    if (p == range_policy::two_pass) {
      whole.add_range(v.data(), n, dtype::f32);
      whole.end_range_pass();
    }
    whole.add(v.data(), n, dtype::f32);
    for (int trial = 0; trial < 12; ++trial) {
      const int parts = 1 + static_cast<int>(rng() % 7);
      std::vector<std::int64_t> cuts = {0, n};
      for (int k = 1; k < parts; ++k) cuts.push_back(static_cast<std::int64_t>(rng() % n));
      std::sort(cuts.begin(), cuts.end());
      std::vector<calibrator_state> states;
      for (std::size_t k = 0; k + 1 < cuts.size(); ++k) {
        cal c = make();
        if (p == range_policy::two_pass) {
          c.add_range(v.data(), n, dtype::f32);  // range pass over everything, see above
          c.end_range_pass();
        }
        c.add(v.data() + cuts[k], cuts[k + 1] - cuts[k], dtype::f32);
        states.push_back(c.state());
      }
      std::shuffle(states.begin(), states.end(), rng);
      calibrator_state acc = states[0];
      for (std::size_t k = 1; k < states.size(); ++k) {
        // Alternate the direction: merge(acc, s) and merge(s, acc) must agree.
        calibrator_state flipped = states[k];
        ASSERT_TRUE(merge(flipped, acc).ok());
        ASSERT_TRUE(merge(acc, states[k]).ok());
        ASSERT_EQ(acc, flipped);
      }
      if (p == range_policy::two_pass) {
        // The statistics were merged once per part; counts are what must match exactly.
        EXPECT_EQ(acc.counts, whole.counts());
        EXPECT_EQ(bits_of(acc.spec.hi), bits_of(whole.spec().hi));
      } else {
        ASSERT_EQ(acc, whole.state()) << "trial " << trial << ", " << parts << " parts";
      }
    }
  }
}

TEST(calibrator_state, two_pass_first_pass_states_merge_statistics_only) {
  const std::vector<float> a = values(5000, 1.0f, 11), b = values(7000, 9.0f, 12);
  cal x = cal::two_pass(2048), y = cal::two_pass(2048), both = cal::two_pass(2048);
  x.add_range(a.data(), 5000, dtype::f32);
  y.add_range(b.data(), 7000, dtype::f32);
  both.add_range(a.data(), 5000, dtype::f32);
  both.add_range(b.data(), 7000, dtype::f32);
  calibrator_state s = x.state();
  ASSERT_TRUE(merge(s, y.state()).ok());
  EXPECT_EQ(s, both.state());
  // Ranks close their first pass on the merged statistics and bin into the same range.
  cal closed = cal::from_state(s);
  closed.end_range_pass();
  both.end_range_pass();
  EXPECT_EQ(closed.state(), both.state());
  // A state after end_range_pass() does not merge with one before it.
  calibrator_state open = y.state();
  EXPECT_EQ(merge(open, closed.state()).code, errc::invalid_option);
  EXPECT_EQ(open, y.state());
}

/// Merging needs no power-of-two bin count outside streaming: a signed two-pass state with
/// mxnet's odd bins, and a fixed state of 1000 bins, merge exactly (only streaming folds).
TEST(calibrator_state, two_pass_and_fixed_merge_with_any_bin_count) {
  const std::vector<float> a = values(6000, 1.0f, 31), b = values(5000, 1.0f, 32);
  std::vector<float> all = a;
  all.insert(all.end(), b.begin(), b.end());
  const auto na = static_cast<std::int64_t>(a.size()), nb = static_cast<std::int64_t>(b.size());
  const auto n = static_cast<std::int64_t>(all.size());
  histogram_spec fixed_spec;
  fixed_spec.bins = 1000;
  fixed_spec.hi = 2.0f;
  for (int k = 0; k < 2; ++k) {
    SCOPED_TRACE(k);
    auto make = [&]() {
      return k == 0 ? cal::two_pass(2001, layout::signed_, 1) : cal::fixed(fixed_spec, 1);
    };
    cal x = make(), y = make(), whole = make();
    if (k == 0) {
      // Each part's first pass sees all the data (as after an all-reduce of the statistics).
      for (cal* c : {&x, &y, &whole}) {
        c->add_range(all.data(), n, dtype::f32);
        c->end_range_pass();
      }
    }
    x.add(a.data(), na, dtype::f32);
    y.add(b.data(), nb, dtype::f32);
    whole.add(all.data(), n, dtype::f32);
    calibrator_state s = x.state();
    ASSERT_TRUE(merge(s, y.state()).ok());
    EXPECT_EQ(s.counts, whole.counts());
    if (k == 1) {
      EXPECT_EQ(s, whole.state());
    }
  }
}

TEST(calibrator_state, from_state_continues_where_state_left_off) {
  const std::vector<float> a = values(9000, 0.1f, 21), b = values(9000, 50.0f, 22);
  cal one = cal::streaming(2048);
  one.add(a.data(), 9000, dtype::f32);
  one.add(b.data(), 9000, dtype::f32);
  cal first = cal::streaming(2048);
  first.add(a.data(), 9000, dtype::f32);
  cal resumed = cal::from_state(first.state());
  resumed.add(b.data(), 9000, dtype::f32);
  EXPECT_EQ(resumed.state(), one.state());
  const search_result r1 = one.compute(search_options::tensorrt());
  const search_result r2 = resumed.compute(search_options::tensorrt());
  EXPECT_EQ(r1.index, r2.index);
  EXPECT_EQ(r1.amax, r2.amax);
  EXPECT_EQ(bits_of(r1.scale), bits_of(r2.scale));
}

TEST(calibrator_state, validate_names_each_broken_invariant) {
  cal good = cal::streaming(256);
  const std::vector<float> v = values(1000, 3.0f, 5);
  good.add(v.data(), 1000, dtype::f32);
  const calibrator_state ok = good.state();
  ASSERT_TRUE(validate(ok).ok());
  EXPECT_EQ(describe_invalid(ok), "");

  auto broken = [&](auto mutate, errc want) {
    calibrator_state s = ok;
    mutate(s);
    EXPECT_EQ(validate(s).code, want) << describe_invalid(s);
    EXPECT_NE(describe_invalid(s), "");
    EXPECT_EQ(code_of([&] { (void)cal::from_state(s); }), want);
  };
  broken([](calibrator_state& s) { s.counts.pop_back(); }, errc::invalid_option);
  broken([](calibrator_state& s) { s.policy = static_cast<range_policy>(7); },
         errc::invalid_option);
  broken([](calibrator_state& s) { s.exponent = 128; }, errc::invalid_option);
  broken([](calibrator_state& s) { s.exponent += 1; }, errc::invalid_option);  // hi != 2^e
  broken([](calibrator_state& s) { s.spec.hi = 3.0f; }, errc::invalid_option);
  broken([](calibrator_state& s) { s.spec.kind = layout::signed_; }, errc::invalid_option);
  broken([](calibrator_state& s) { s.range_done = false; }, errc::invalid_option);
  broken([](calibrator_state& s) { s.stats.max_abs = std::nanf(""); }, errc::invalid_option);
  broken(
      [](calibrator_state& s) {
        s.spec.bins = 1;
        s.counts.resize(1);
      },
      errc::too_few_bins);
  broken(
      [](calibrator_state& s) {
        s.spec.bins = 384;
        s.counts.resize(384);
      },
      errc::bins_not_power_of_two);
  broken(
      [](calibrator_state& s) {
        s.stats = tensor_stats{};
        s.stats.max_abs = 1.0f;
      },
      errc::invalid_option);

  calibrator_state tp = cal::two_pass(100).state();
  ASSERT_TRUE(validate(tp).ok());
  tp.counts[3] = 1;  // counts before end_range_pass()
  EXPECT_EQ(validate(tp).code, errc::invalid_option);
}

TEST(cpu_calibrator, misuse_throws_its_code) {
  histogram_spec bad;
  bad.hi = -1.0f;
  EXPECT_EQ(code_of([&] { cal::fixed(bad); }), errc::invalid_range);
  EXPECT_EQ(code_of([] { cal::streaming(1000); }), errc::bins_not_power_of_two);
  EXPECT_EQ(code_of([] { cal::two_pass(1); }), errc::too_few_bins);
  const float x = 1.0f;
  cal tp = cal::two_pass(64);
  EXPECT_EQ(code_of([&] { tp.add(&x, 1, dtype::f32); }), errc::invalid_option);
  EXPECT_EQ(code_of([&] { tp.compute(search_options::tensorrt()); }), errc::invalid_option);
  tp.end_range_pass();
  EXPECT_EQ(code_of([&] { tp.end_range_pass(); }), errc::invalid_option);
  EXPECT_EQ(code_of([&] { tp.add_range(&x, 1, dtype::f32); }), errc::invalid_option);
  cal f = cal::fixed(histogram_spec{});
  EXPECT_EQ(code_of([&] { f.add_range(&x, 1, dtype::f32); }), errc::invalid_option);
  EXPECT_EQ(code_of([&] { f.add(nullptr, 1, dtype::f32); }), errc::null_pointer);
  EXPECT_EQ(code_of([&] { f.add(&x, -1, dtype::f32); }), errc::invalid_count);
  EXPECT_EQ(code_of([&] { f.add(&x, 1, static_cast<dtype>(9)); }), errc::invalid_dtype);
  EXPECT_EQ(code_of([&] { f.merge(f); }), errc::invalid_option);
  cal s = cal::streaming(64);
  EXPECT_EQ(code_of([&] { s.add(nullptr, 1, dtype::f32); }), errc::null_pointer);
  EXPECT_EQ(s.state(), cal::streaming(64).state());  // nothing changed by the failed add
  EXPECT_EQ(code_of([&] { f.merge(s); }), errc::invalid_option);
  histogram_spec wider;
  wider.hi = 2.0f;
  EXPECT_EQ(code_of([&] { f.merge(cal::fixed(wider)); }), errc::invalid_option);
  EXPECT_EQ(code_of([&] { s.merge(cal::streaming(128)); }), errc::invalid_option);
  search_options mx = search_options::mxnet();
  EXPECT_EQ(code_of([&] { f.compute(mx); }), errc::layout_mismatch);
  // The message names the calibrator and the operation.
  try {
    f.merge(s);
    ADD_FAILURE();
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("different range policies"), std::string::npos)
        << e.what();
  }
}

TEST(cpu_calibrator, reset_returns_to_the_empty_state) {
  const std::vector<float> v = values(5000, 1e3f, 9);
  for (cal c : {cal::streaming(512), cal::two_pass(512), cal::fixed(histogram_spec{})}) {
    const calibrator_state empty = c.state();
    if (c.policy() == range_policy::two_pass) {
      c.add_range(v.data(), 5000, dtype::f32);
      c.end_range_pass();
    }
    c.add(v.data(), 5000, dtype::f32);
    EXPECT_NE(c.state(), empty);
    c.reset();
    EXPECT_EQ(c.state(), empty);
  }
}

TEST(cpu_calibrator, compute_equals_reference_search) {
  const std::vector<float> v = values(200000, 1.0f, 80);
  cal c = cal::two_pass(2048);
  c.add_range(v.data(), 200000, dtype::f32);
  c.end_range_pass();
  c.add(v.data(), 200000, dtype::f32);
  search_options pct;
  pct.meth = method::percentile;
  search_options mx;
  mx.meth = method::max;
  for (const search_options& o : {search_options::tensorrt(), pct, mx}) {
    SCOPED_TRACE(static_cast<int>(o.meth));
    reference::search_output ref;
    ASSERT_TRUE(reference::search(c.counts(), c.spec(), c.stats().max_abs, o, &ref).ok());
    std::vector<double> curve;
    const search_result r = c.compute(o, &curve);
    EXPECT_EQ(curve.size(), ref.curve.size());
    if (o.meth == method::entropy) {  // index optimal under the reference curve (testing.md)
      EXPECT_TRUE(
          index_optimal(ref.curve, candidate_position(o, r.index), fast_abs_tol, fast_rel_tol))
          << r.index;
    } else {
      EXPECT_EQ(r.index, ref.result.index);
      EXPECT_EQ(r.amax, ref.result.amax);
      EXPECT_EQ(bits_of(r.scale), bits_of(ref.result.scale));
    }
    EXPECT_EQ(r.degenerate, ref.result.degenerate);
  }
}

TEST(tensor_stats, merge_is_exact_and_commutative) {
  tensor_stats a, b;
  a.finite_count = 3;
  a.nan_count = 1;
  a.max_abs = 5.0f;
  a.min = -5.0f;
  a.max = 2.0f;
  b.finite_count = 2;
  b.inf_count = 4;
  b.max_abs = 7.0f;
  b.min = 0.0f;
  b.max = 7.0f;
  tensor_stats ab = a, ba = b;
  merge(ab, b);
  merge(ba, a);
  for (const tensor_stats& s : {ab, ba}) {
    EXPECT_EQ(s.finite_count, 5u);
    EXPECT_EQ(s.nan_count, 1u);
    EXPECT_EQ(s.inf_count, 4u);
    EXPECT_EQ(s.max_abs, 7.0f);
    EXPECT_EQ(s.min, -5.0f);
    EXPECT_EQ(s.max, 7.0f);
  }
  tensor_stats e;  // the empty statistics are the identity
  merge(e, a);
  EXPECT_EQ(bits_of(e.min), bits_of(a.min));
  EXPECT_EQ(bits_of(e.max), bits_of(a.max));
  EXPECT_EQ(bits_of(e.max_abs), bits_of(a.max_abs));
}

}  // namespace
}  // namespace klcal::test
