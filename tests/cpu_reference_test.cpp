// The brute-force reference on hand-computed cases, invariants and every invalid argument.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "klcal/reference.hpp"

namespace {

namespace ref = klcal::reference;
using klcal::dtype;
using klcal::errc;
using klcal::histogram_spec;
using klcal::layout;
using klcal::method;
using klcal::rule_set;
using klcal::search_options;
using klcal::zero_bin_policy;

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr float finf = std::numeric_limits<float>::infinity();

float from_bits(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
std::uint32_t bits(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

histogram_spec abs_spec(std::int32_t bins, float hi) {
  histogram_spec s;
  s.kind = layout::abs;
  s.bins = bins;
  s.lo = 0.0f;
  s.hi = hi;
  return s;
}
histogram_spec signed_spec(std::int32_t bins, float lo, float hi) {
  histogram_spec s;
  s.kind = layout::signed_;
  s.bins = bins;
  s.lo = lo;
  s.hi = hi;
  return s;
}

ref::histogram histogram_of(const histogram_spec& spec, const std::vector<float>& xs) {
  ref::histogram h;
  EXPECT_TRUE(ref::make_histogram(spec, &h).ok());
  EXPECT_TRUE(ref::add(h, xs.data(), dtype::f32, static_cast<std::int64_t>(xs.size())).ok());
  return h;
}

ref::search_output run(const std::vector<std::uint64_t>& counts, const histogram_spec& spec,
                       const search_options& o, float max_abs = 0.0f) {
  ref::search_output out;
  const klcal::status s = ref::search(counts, spec, max_abs, o, &out);
  EXPECT_TRUE(s.ok()) << "errc " << static_cast<int>(s.code);
  return out;
}

search_options small_tensorrt(std::int32_t start_bin, std::int32_t bits_, zero_bin_policy z) {
  search_options o;
  o.start_bin = start_bin;
  o.bits = bits_;
  o.zero_bin = z;
  return o;
}

void expect_near_rel(double expected, double actual, double rel = 1e-14) {
  if (std::isinf(expected)) {
    EXPECT_EQ(actual, expected);
  } else {
    EXPECT_NEAR(actual, expected, rel * std::fabs(expected) + 1e-300) << "expected " << expected;
  }
}

// ---- widening -------------------------------------------------------------------------------

// IEEE binary16 from its definition: (-1)^s * 2^(e-15) * (1 + m/1024), subnormals m * 2^-24.
double half_by_formula(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double sign = s ? -1.0 : 1.0;
  if (e == 31) return m == 0 ? sign * inf : std::numeric_limits<double>::quiet_NaN();
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -24);
  return sign * std::ldexp(static_cast<double>(1024 + m), e - 25);
}

// bfloat16: 8 exponent bits (bias 127), 7 mantissa bits.
double bf16_by_formula(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
  const double sign = s ? -1.0 : 1.0;
  if (e == 255) return m == 0 ? sign * inf : std::numeric_limits<double>::quiet_NaN();
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -133);
  return sign * std::ldexp(static_cast<double>(128 + m), e - 134);
}

TEST(widening, every_half_pattern_is_exact) {
  for (std::uint32_t p = 0; p < 65536; ++p) {
    const auto h = static_cast<std::uint16_t>(p);
    const float got = ref::half_to_float(h);
    const double want = half_by_formula(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << p;
    } else {
      // The double value is an fp32 value (fp16 is a subset), so compare bit patterns, which
      // also tells +0 from -0.
      ASSERT_EQ(bits(got), bits(static_cast<float>(want))) << std::hex << p;
      ASSERT_EQ(static_cast<double>(got), want) << std::hex << p;
    }
    ASSERT_EQ(std::signbit(got), (p >> 15) != 0) << std::hex << p;
  }
}

TEST(widening, every_bfloat16_pattern_is_exact) {
  for (std::uint32_t p = 0; p < 65536; ++p) {
    const auto h = static_cast<std::uint16_t>(p);
    const float got = ref::bfloat16_to_float(h);
    const double want = bf16_by_formula(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << p;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << std::hex << p;
    }
    ASSERT_EQ(std::signbit(got), (p >> 15) != 0) << std::hex << p;
  }
}

TEST(widening, half_landmarks) {
  EXPECT_EQ(ref::half_to_float(0x3c00), 1.0f);
  EXPECT_EQ(ref::half_to_float(0x7bff), 65504.0f);               // largest half
  EXPECT_EQ(ref::half_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(ref::half_to_float(0x03ff), 1023 * std::ldexp(1.0f, -24));
  EXPECT_EQ(ref::half_to_float(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(ref::half_to_float(0xfc00), -finf);
  EXPECT_EQ(ref::bfloat16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(ref::bfloat16_to_float(0x0001), std::ldexp(1.0f, -133));
}

TEST(widening, every_half_pattern_through_add) {
  // 2 infinities (0x7c00, 0xfc00) and 2 * 1023 NaNs among the 65536 patterns.
  std::vector<std::uint16_t> all(65536);
  for (std::uint32_t p = 0; p < 65536; ++p) all[p] = static_cast<std::uint16_t>(p);
  ref::histogram h;
  ASSERT_TRUE(ref::make_histogram(abs_spec(16, 65536.0f), &h).ok());
  ASSERT_TRUE(ref::add(h, all.data(), dtype::f16, 65536).ok());
  EXPECT_EQ(h.nan_count, 2046u);
  EXPECT_EQ(h.inf_count, 2u);
  EXPECT_EQ(h.finite_count, 65536u - 2048u);
  EXPECT_EQ(h.max_abs, 65504.0f);
  EXPECT_EQ(h.min, -65504.0f);
  EXPECT_EQ(h.max, 65504.0f);
  std::uint64_t sum = 0;
  for (auto c : h.counts) sum += c;
  EXPECT_EQ(sum, h.finite_count);
  // Bin width 4096: the last bin holds |x| in [61440, 65504], i.e. exponent 15 with mantissa
  // >= 0x380 (61440 = 2^15 * 1.875): 0x7b80..0x7bff, 128 patterns per sign.
  EXPECT_EQ(h.counts[15], 256u);
}

// ---- binning --------------------------------------------------------------------------------

TEST(binning, abs_hand_computed) {
  // B = 4, hi = 1: scale = 4. |x| * 4, floored, clamped to [0, 3].
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> xs = {0.0f,   // 0    -> 0
                                 -0.0f,  // |-0| = 0 -> 0
                                 0.25f,  // 1.0  -> 1 (a left edge belongs to its bin)
                                 from_bits(0x3e7fffff),  // 0.24999999 * 4 = 0.99999994 -> 0
                                 -0.3f,                  // 1.2  -> 1
                                 0.99999994f,            // 3.9999998 -> 3
                                 1.0f,                   // 4 = B: on the upper edge -> 3
                                 5.0f,                   // 20 -> 3
                                 nan,
                                 finf,
                                 -finf};
  const ref::histogram h = histogram_of(abs_spec(4, 1.0f), xs);
  EXPECT_EQ(h.counts, (std::vector<std::uint64_t>{3, 2, 0, 3}));
  EXPECT_EQ(h.nan_count, 1u);
  EXPECT_EQ(h.inf_count, 2u);
  EXPECT_EQ(h.finite_count, 8u);
  EXPECT_EQ(h.max_abs, 5.0f);
  EXPECT_EQ(h.min, -0.3f);
  EXPECT_EQ(h.max, 5.0f);
}

TEST(binning, product_rounding_decides_the_bin) {
  // B = 10, hi = 1, scale = 10. x = 0x3f333333 = 11744051 * 2^-24 = 0.699999988079071.
  // Exactly, x * 10 = 6.99999988079071 (bin 6), but fp32 spacing in [4, 8) is 2^-21 and
  // 7 - 6.99999988 = 1.2e-7 < 2^-22, so fp32(x * 10) = 7.0: numerics.md says bin 7.
  EXPECT_EQ(ref::bin_of(abs_spec(10, 1.0f), from_bits(0x3f333333)), 7);
  // B = 2048, hi = 3: scale = fp32(682.666...) = 682.66669; x = 0x3befffff = 0.0073242183:
  // exactly 4.99999995 below 5, but the fp32 product is 5.0 -> bin 5.
  EXPECT_EQ(ref::bin_of(abs_spec(2048, 3.0f), from_bits(0x3befffff)), 5);
}

TEST(binning, signed_hand_computed) {
  // B = 5 over [-1, 1): scale = 5 / 2 = 2.5; k = floor((x + 1) * 2.5).
  const std::vector<float> xs = {-1.0f,   // 0     -> 0
                                 -2.0f,   // -2.5  -> clamped to 0
                                 -0.5f,   // 1.25  -> 1
                                 -0.25f,  // 1.875 -> 1
                                 0.0f,    // 2.5   -> 2
                                 -0.0f,   // 2.5   -> 2
                                 0.5f,    // 3.75  -> 3
                                 0.75f,   // 4.375 -> 4
                                 1.0f,    // 5     -> 4 (upper edge)
                                 3e38f};  // huge  -> 4
  const ref::histogram h = histogram_of(signed_spec(5, -1.0f, 1.0f), xs);
  EXPECT_EQ(h.counts, (std::vector<std::uint64_t>{2, 2, 2, 1, 3}));
  EXPECT_EQ(h.max_abs, 3e38f);
  EXPECT_EQ(h.min, -2.0f);
  EXPECT_EQ(h.max, 3e38f);
}

TEST(binning, difference_overflow_clamps) {
  // [lo, hi) = [-1e38, 1e38): x - lo overflows to +inf for x = 3e38 (-> last bin) and
  // x = -3e38 gives -2e38, far below 0 (-> bin 0). Nothing is converted out of range.
  const histogram_spec s = signed_spec(8, -1e38f, 1e38f);
  EXPECT_EQ(ref::bin_of(s, 3e38f), 7);
  EXPECT_EQ(ref::bin_of(s, -3e38f), 0);
  EXPECT_EQ(ref::bin_of(s, std::numeric_limits<float>::max()), 7);
}

TEST(binning, tiny_range_with_infinite_scale) {
  // hi = 2^-149 (smallest subnormal): scale = 2048 / 2^-149 overflows fp32 to +inf. 0 * inf is
  // NaN: the reference puts it in bin 0 (0 is the lower edge); any positive |x| gives +inf,
  // which rule 5 puts in the last bin.
  const histogram_spec s = abs_spec(2048, from_bits(1));
  EXPECT_EQ(ref::bin_of(s, 0.0f), 0);
  EXPECT_EQ(ref::bin_of(s, -0.0f), 0);
  EXPECT_EQ(ref::bin_of(s, from_bits(1)), 2047);
}

// fp32 rounding emulated through fp64, an independent route to numerics.md 1.2: rounding an
// fp64 sum, difference, product or quotient of two floats to fp32 equals rounding the exact
// result to fp32 once, because 53 >= 2 * 24 + 2 (double rounding is innocuous, Figueroa 1995).
std::int64_t bin_by_emulation(const histogram_spec& s, float x) {
  const float scale = static_cast<float>(static_cast<double>(s.bins) /
                                         static_cast<double>(static_cast<float>(s.hi - s.lo)));
  double q;
  if (s.kind == layout::abs) {
    q = static_cast<float>(std::fabs(static_cast<double>(x)) * static_cast<double>(scale));
  } else {
    const float d = static_cast<float>(static_cast<double>(x) - static_cast<double>(s.lo));
    q = static_cast<float>(static_cast<double>(d) * static_cast<double>(scale));
  }
  q = std::floor(q);
  if (!(q >= 0)) return 0;
  if (q >= s.bins) return s.bins - 1;
  return static_cast<std::int64_t>(q);
}

TEST(binning, matches_fp64_emulation_of_fp32_rounding) {
  std::mt19937_64 rng(12345);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_int_distribution<int> e(-20, 20);
  std::uniform_int_distribution<std::int32_t> nb(2, 10000);
  for (int trial = 0; trial < 200; ++trial) {
    const float hi = std::ldexp(std::fabs(u(rng)) + 0.01f, e(rng));
    const std::int32_t b = nb(rng);
    const histogram_spec sa = abs_spec(b, hi);
    const histogram_spec ss = signed_spec(b | 1, -hi * 0.75f, hi);
    for (int i = 0; i < 500; ++i) {
      const float x = u(rng) * hi * 1.25f;
      ASSERT_EQ(ref::bin_of(sa, x), bin_by_emulation(sa, x)) << x << " " << hi << " " << b;
      ASSERT_EQ(ref::bin_of(ss, x), bin_by_emulation(ss, x)) << x << " " << hi << " " << b;
      // The left edge of a random bin, and its fp32 neighbours, where rounding decides.
      const std::int32_t k = static_cast<std::int32_t>(std::fabs(u(rng)) * static_cast<float>(b));
      const float edge = static_cast<float>(static_cast<double>(k) * hi / b);
      for (float y : {std::nextafter(edge, 0.0f), edge, std::nextafter(edge, finf)})
        ASSERT_EQ(ref::bin_of(sa, y), bin_by_emulation(sa, y)) << y << " " << hi << " " << b;
    }
  }
}

// ---- invariants -----------------------------------------------------------------------------

std::vector<float> mixed_data(std::size_t n, std::uint64_t seed, float spread) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::uniform_int_distribution<int> kind(0, 99);
  std::uniform_int_distribution<int> ex(-30, 30);
  std::vector<float> xs(n);
  for (auto& x : xs) {
    const int k = kind(rng);
    if (k == 0)
      x = std::numeric_limits<float>::quiet_NaN();
    else if (k == 1)
      x = finf;
    else if (k == 2)
      x = -finf;
    else if (k < 6)
      x = 0.0f;
    else if (k < 8)
      x = -0.0f;
    else if (k < 20)
      x = std::ldexp(g(rng), ex(rng)) * spread;
    else
      x = g(rng) * spread;
  }
  return xs;
}

// Random cut points: batch boundaries 0 = c0 < c1 < ... < n.
std::vector<std::size_t> random_cuts(std::size_t n, int pieces, std::mt19937_64& rng) {
  std::uniform_int_distribution<std::size_t> at(0, n);
  std::vector<std::size_t> cuts = {0, n};
  for (int i = 1; i < pieces; ++i) cuts.push_back(at(rng));
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

void expect_same(const ref::histogram& a, const ref::histogram& b) {
  EXPECT_EQ(a.counts, b.counts);
  EXPECT_EQ(a.nan_count, b.nan_count);
  EXPECT_EQ(a.inf_count, b.inf_count);
  EXPECT_EQ(a.finite_count, b.finite_count);
  EXPECT_EQ(bits(a.max_abs), bits(b.max_abs));
  EXPECT_EQ(bits(a.min), bits(b.min));
  EXPECT_EQ(bits(a.max), bits(b.max));
}

TEST(invariants, batch_order_and_split_do_not_matter) {
  const std::vector<float> xs = mixed_data(60000, 7, 3.0f);
  for (const histogram_spec& spec : {abs_spec(2048, 4.0f), signed_spec(8001, -4.0f, 4.0f)}) {
    const ref::histogram whole = histogram_of(spec, xs);
    std::mt19937_64 rng(99);
    for (int trial = 0; trial < 20; ++trial) {
      auto cuts = random_cuts(xs.size(), 1 + trial, rng);
      std::vector<std::size_t> order(cuts.size() - 1);
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::shuffle(order.begin(), order.end(), rng);
      ref::histogram h;
      ASSERT_TRUE(ref::make_histogram(spec, &h).ok());
      for (std::size_t i : order)
        ASSERT_TRUE(ref::add(h, xs.data() + cuts[i], dtype::f32,
                             static_cast<std::int64_t>(cuts[i + 1] - cuts[i]))
                        .ok());
      expect_same(h, whole);
    }
  }
}

TEST(invariants, signed_zeros_in_any_order_give_the_same_min_and_max) {
  const ref::histogram a = histogram_of(signed_spec(5, -1, 1), {-0.0f, 0.0f});
  const ref::histogram b = histogram_of(signed_spec(5, -1, 1), {0.0f, -0.0f});
  expect_same(a, b);
  EXPECT_EQ(a.min, 0.0f);
  EXPECT_EQ(a.max, 0.0f);
}

TEST(invariants, merge_equals_concatenation) {
  const std::vector<float> xs = mixed_data(30000, 11, 2.0f);
  const histogram_spec spec = abs_spec(1000, 3.0f);
  const ref::histogram whole = histogram_of(spec, xs);
  ref::histogram a = histogram_of(spec, std::vector<float>(xs.begin(), xs.begin() + 12345));
  const ref::histogram b = histogram_of(spec, std::vector<float>(xs.begin() + 12345, xs.end()));
  ASSERT_TRUE(ref::merge(a, b).ok());
  expect_same(a, whole);
  // Merging an empty histogram changes nothing (statistics included).
  ref::histogram empty;
  ASSERT_TRUE(ref::make_histogram(spec, &empty).ok());
  ASSERT_TRUE(ref::merge(a, empty).ok());
  expect_same(a, whole);
}

TEST(invariants, merge_rejects_different_specs_and_leaves_target_unchanged) {
  ref::histogram a = histogram_of(abs_spec(8, 1.0f), {0.5f});
  const ref::histogram before = a;
  for (const histogram_spec& other :
       {abs_spec(16, 1.0f), abs_spec(8, 2.0f), signed_spec(8, -1.0f, 1.0f)}) {
    ref::histogram b;
    ASSERT_TRUE(ref::make_histogram(other, &b).ok());
    EXPECT_EQ(ref::merge(a, b).code, errc::invalid_option);
    expect_same(a, before);
  }
}

// The streaming exponent expected for data with largest finite |x| = m: the smallest e with
// 2^e > m, clamped to [-64, 127].
int expected_exp(float m) {
  int e = -64;
  while (e < 127 && !(static_cast<double>(m) < std::ldexp(1.0, e))) ++e;
  return e;
}

void check_streaming(const std::vector<float>& xs, std::int32_t bins, std::mt19937_64& rng,
                     int pieces) {
  auto cuts = random_cuts(xs.size(), pieces, rng);
  ref::streaming_histogram sh;
  ASSERT_TRUE(sh.init(bins).ok());
  for (std::size_t i = 0; i + 1 < cuts.size(); ++i)
    ASSERT_TRUE(
        sh.add(xs.data() + cuts[i], dtype::f32, static_cast<std::int64_t>(cuts[i + 1] - cuts[i]))
            .ok());
  float m = 0.0f;
  for (float x : xs)
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  const int e = expected_exp(m);
  ASSERT_EQ(sh.hi_exp(), e);
  ASSERT_EQ(sh.get().spec.hi, std::ldexp(1.0f, e));
  // One-shot binning with the final range, bit for bit.
  const ref::histogram once = histogram_of(abs_spec(bins, std::ldexp(1.0f, e)), xs);
  expect_same(sh.get(), once);
}

TEST(invariants, streaming_equals_one_shot_binning_at_the_final_range) {
  std::mt19937_64 rng(2024);
  for (int trial = 0; trial < 30; ++trial) {
    // Batches of growing magnitude force doublings between batches; the random spread makes
    // the first batch start anywhere from tiny to large.
    std::vector<float> xs;
    for (int part = 0; part < 6; ++part) {
      auto chunk = mixed_data(2000, rng(), std::ldexp(1.0f, -40 + 12 * part + trial % 7));
      xs.insert(xs.end(), chunk.begin(), chunk.end());
    }
    check_streaming(xs, 2048, rng, 1 + trial % 9);
    std::shuffle(xs.begin(), xs.end(), rng);  // any order
    check_streaming(xs, 256, rng, 1 + trial % 5);
  }
}

TEST(invariants, streaming_extremes) {
  std::mt19937_64 rng(5);
  // Only zeros / tiny values: hi stays 2^-64; 2^-70 and a subnormal sit in bin 0 or above.
  check_streaming({0.0f, -0.0f, std::ldexp(1.0f, -70), from_bits(1)}, 64, rng, 2);
  // Exactly 2^-64 needs one doubling (2^e must be strictly greater).
  check_streaming({std::ldexp(1.0f, -64)}, 64, rng, 1);
  // Values at and above 2^127: e stops at 127 and FLT_MAX lands in the last bin.
  const float big = std::numeric_limits<float>::max();
  check_streaming({1.0f, std::ldexp(1.0f, 127), -big, 3.0f, finf}, 64, rng, 3);
  ref::streaming_histogram sh;
  ASSERT_TRUE(sh.init(4).ok());
  const std::vector<float> xs = {big, 0.5f};
  ASSERT_TRUE(sh.add(xs.data(), dtype::f32, 2).ok());
  EXPECT_EQ(sh.hi_exp(), 127);
  // scale = 4 / 2^127 = 2^-125; big * 2^-125 = 7.99... -> floor 7 -> clamped to 3; 0.5 -> 0.
  EXPECT_EQ(sh.get().counts, (std::vector<std::uint64_t>{1, 0, 0, 1}));
}

TEST(invariants, streaming_fold_hand_computed) {
  // B = 4. First batch {0.5, 0.75}: max 0.75 -> e = 0 (hi 1), scale 4: bins 2 and 3.
  // Second batch {1.5}: hi must exceed 1.5 -> e = 1, fold [0,0,1,1] -> [0+0, 1+1, 0, 0]
  // = [0,2,0,0]; then 1.5 * 2 = 3 -> bin 3.
  ref::streaming_histogram sh;
  ASSERT_TRUE(sh.init(4).ok());
  const float a[] = {0.5f, 0.75f};
  const float b[] = {1.5f};
  ASSERT_TRUE(sh.add(a, dtype::f32, 2).ok());
  EXPECT_EQ(sh.hi_exp(), 0);
  EXPECT_EQ(sh.get().counts, (std::vector<std::uint64_t>{0, 0, 1, 1}));
  ASSERT_TRUE(sh.add(b, dtype::f32, 1).ok());
  EXPECT_EQ(sh.hi_exp(), 1);
  EXPECT_EQ(sh.get().counts, (std::vector<std::uint64_t>{0, 2, 0, 1}));
}

TEST(invariants, streaming_init_resets) {
  ref::streaming_histogram sh;
  ASSERT_TRUE(sh.init(8).ok());
  const float xs[] = {100.0f, std::numeric_limits<float>::quiet_NaN()};
  ASSERT_TRUE(sh.add(xs, dtype::f32, 2).ok());
  EXPECT_EQ(sh.hi_exp(), 7);  // 2^7 = 128 > 100 >= 64
  ASSERT_TRUE(sh.init(8).ok());
  EXPECT_EQ(sh.hi_exp(), -64);
  EXPECT_EQ(sh.get().counts, std::vector<std::uint64_t>(8, 0));
  EXPECT_EQ(sh.get().nan_count, 0u);
  EXPECT_EQ(sh.get().max_abs, 0.0f);
  EXPECT_EQ(sh.get().spec.hi, std::ldexp(1.0f, -64));
  EXPECT_EQ(sh.init(6).code, errc::bins_not_power_of_two);  // a failed init keeps the state
  EXPECT_EQ(sh.get().counts.size(), 8u);
}

TEST(invariants, streaming_half_and_bfloat16) {
  std::mt19937_64 rng(77);
  std::vector<std::uint16_t> hs(5000);
  for (auto& h : hs) h = static_cast<std::uint16_t>(rng());
  for (dtype t : {dtype::f16, dtype::bf16}) {
    std::vector<float> wide(hs.size());
    for (std::size_t i = 0; i < hs.size(); ++i)
      wide[i] = t == dtype::f16 ? ref::half_to_float(hs[i]) : ref::bfloat16_to_float(hs[i]);
    ref::streaming_histogram sh;
    ASSERT_TRUE(sh.init(512).ok());
    ASSERT_TRUE(sh.add(hs.data(), t, 2500).ok());
    ASSERT_TRUE(sh.add(hs.data() + 2500, t, 2500).ok());
    ref::streaming_histogram sf;
    ASSERT_TRUE(sf.init(512).ok());
    ASSERT_TRUE(sf.add(wide.data(), dtype::f32, 5000).ok());
    expect_same(sh.get(), sf.get());
    EXPECT_EQ(sh.hi_exp(), sf.hi_exp());
  }
}

TEST(invariants, streaming_merge_equals_one_stream) {
  std::mt19937_64 rng(31);
  std::vector<float> small = mixed_data(3000, 1, 1e-6f);
  std::vector<float> large = mixed_data(3000, 2, 1e6f);
  std::vector<float> all = small;
  all.insert(all.end(), large.begin(), large.end());
  ref::streaming_histogram whole;
  ASSERT_TRUE(whole.init(1024).ok());
  ASSERT_TRUE(whole.add(all.data(), dtype::f32, static_cast<std::int64_t>(all.size())).ok());
  for (int direction = 0; direction < 2; ++direction) {
    ref::streaming_histogram a, b;
    ASSERT_TRUE(a.init(1024).ok());
    ASSERT_TRUE(b.init(1024).ok());
    ASSERT_TRUE(a.add(small.data(), dtype::f32, 3000).ok());
    ASSERT_TRUE(b.add(large.data(), dtype::f32, 3000).ok());
    if (direction == 0) {
      ASSERT_TRUE(a.merge(b).ok());  // smaller e raised to the larger
      expect_same(a.get(), whole.get());
      EXPECT_EQ(a.hi_exp(), whole.hi_exp());
    } else {
      ASSERT_TRUE(b.merge(a).ok());
      expect_same(b.get(), whole.get());
      EXPECT_EQ(b.hi_exp(), whole.hi_exp());
    }
  }
  ref::streaming_histogram empty, other;
  ASSERT_TRUE(empty.init(1024).ok());
  ASSERT_TRUE(other.init(512).ok());
  ASSERT_TRUE(empty.merge(whole).ok());
  expect_same(empty.get(), whole.get());
  EXPECT_EQ(other.merge(whole).code, errc::invalid_option);  // different bin counts
  ref::streaming_histogram uninit;
  EXPECT_EQ(uninit.merge(whole).code, errc::invalid_option);
  EXPECT_EQ(uninit.add(all.data(), dtype::f32, 1).code, errc::invalid_option);
  (void)rng;
}

TEST(invariants, two_pass_protocol) {
  ref::histogram h;
  // max |x| = 2: range [0, 2), B = 4, scale 2: 0.5 -> 1, 2 -> 4 -> last bin, -1.9 -> 3.8 -> 3.
  const float xs[] = {0.5f, 2.0f, -1.9f, std::numeric_limits<float>::quiet_NaN()};
  ASSERT_TRUE(ref::two_pass_histogram(xs, dtype::f32, 4, 4, &h).ok());
  EXPECT_EQ(h.spec.hi, 2.0f);
  EXPECT_EQ(h.counts, (std::vector<std::uint64_t>{0, 1, 0, 2}));
  EXPECT_EQ(h.nan_count, 1u);
  // All zero (or nothing finite): [0, 2^-64), every zero in bin 0.
  const float zs[] = {0.0f, -0.0f, finf};
  ASSERT_TRUE(ref::two_pass_histogram(zs, dtype::f32, 3, 4, &h).ok());
  EXPECT_EQ(h.spec.hi, std::ldexp(1.0f, -64));
  EXPECT_EQ(h.counts, (std::vector<std::uint64_t>{2, 0, 0, 0}));
  EXPECT_EQ(h.inf_count, 1u);
  ASSERT_TRUE(ref::two_pass_histogram(nullptr, dtype::f32, 0, 4, &h).ok());
  EXPECT_EQ(h.finite_count, 0u);
}

TEST(invariants, zero_elements_change_nothing) {
  ref::histogram h = histogram_of(abs_spec(4, 1.0f), {0.5f});
  const ref::histogram before = h;
  EXPECT_TRUE(ref::add(h, nullptr, dtype::f32, 0).ok());
  const float x = 0.25f;
  EXPECT_TRUE(ref::add(h, &x, dtype::f16, 0).ok());
  expect_same(h, before);
}

// ---- tensorrt entropy -----------------------------------------------------------------------

TEST(tensorrt, hand_computed_keep) {
  // c = [4, 2, 1, 1], B = 4, hi = 1, bits 2 -> L = 2 levels, start 2, zero bin kept. T' = 8.
  // i = 2: P = [4, 2 + tail 2] = [4, 4]; g(j) = j: Q = [4, 2]. p = [1/2, 1/2], q = [2/3, 1/3].
  //        KL = 1/2 ln(3/4) + 1/2 ln(3/2) = 1/2 ln(9/8).
  // i = 3: P = [4, 2, 1 + 1]; g = floor(2j/3) = 0,0,1: Q = [3, 3, 1] (M0 = 6 over 2 bins).
  //        p = [1/2, 1/4, 1/4], q = [3/7, 3/7, 1/7].
  //        KL = 1/2 ln(7/6) + 1/4 ln(7/12) + 1/4 ln(7/4).
  // i = 4: P = [4, 2, 1, 1]; g = 0,0,1,1: Q = [3, 3, 1, 1]. p = [1/2,1/4,1/8,1/8],
  //        q = [3/8, 3/8, 1/8, 1/8]. KL = 1/2 ln(4/3) + 1/4 ln(2/3) = 0.0424748 (the minimum).
  const std::vector<std::uint64_t> c = {4, 2, 1, 1};
  const auto out = run(c, abs_spec(4, 1.0f), small_tensorrt(2, 2, zero_bin_policy::keep));
  const std::vector<double> want = {
      0.5 * std::log(9.0 / 8.0),
      0.5 * std::log(7.0 / 6.0) + 0.25 * std::log(7.0 / 12.0) + 0.25 * std::log(7.0 / 4.0),
      0.5 * std::log(4.0 / 3.0) + 0.25 * std::log(2.0 / 3.0)};
  ASSERT_EQ(out.curve.size(), 3u);
  for (std::size_t k = 0; k < 3; ++k) expect_near_rel(want[k], out.curve[k]);
  EXPECT_EQ(out.result.index, 4);
  EXPECT_EQ(out.result.amax, 1.0);    // 4 * (1 / 4)
  EXPECT_EQ(out.result.scale, 1.0f);  // qmax = 2^(2-1) - 1 = 1
  expect_near_rel(want[2], out.result.score);
  EXPECT_EQ(out.result.clipped_fraction, 0.0);
  EXPECT_FALSE(out.result.degenerate);
}

TEST(tensorrt, hand_computed_copy_next) {
  // Same counts, c[0] := c[1]: c = [2, 2, 1, 1], T' = 6.
  // i = 2: P = [2, 4], Q = [2, 2]: KL = 1/3 ln(2/3) + 2/3 ln(4/3).
  // i = 3: P = [2, 2, 2], Q = [2, 2, 1] (sum 5): KL = 1/3 (2 ln(5/6) + ln(5/3)).
  // i = 4: P = Q = [2, 2, 1, 1]: KL = 0 -> chosen. Bin 1 of the original counts is cut by
  // nothing: clipped = 0. amax = 4 * 2.5 / 4 = 2.5, scale = 2.5f / 127 (bits 8 qmax).
  const std::vector<std::uint64_t> c = {4, 2, 1, 1};
  search_options o = small_tensorrt(2, 2, zero_bin_policy::copy_next);
  const auto out = run(c, abs_spec(4, 2.5f), o);
  ASSERT_EQ(out.curve.size(), 3u);
  expect_near_rel(std::log(2.0 / 3.0) / 3 + 2 * std::log(4.0 / 3.0) / 3, out.curve[0]);
  expect_near_rel((2 * std::log(5.0 / 6.0) + std::log(5.0 / 3.0)) / 3, out.curve[1]);
  EXPECT_EQ(out.curve[2], 0.0);
  EXPECT_EQ(out.result.index, 4);
  EXPECT_EQ(out.result.amax, 2.5);
  EXPECT_EQ(out.result.scale, 2.5f);  // bits 2: qmax 1
}

TEST(tensorrt, empty_last_bin_with_tail_is_infinite) {
  // c = [4, 2, 0, 1], i = 3: c[2] = 0 but P[2] = 0 + tail 1 > 0 while Q[2] = 0 -> +inf.
  const auto out =
      run({4, 2, 0, 1}, abs_spec(4, 1.0f), small_tensorrt(2, 2, zero_bin_policy::keep));
  ASSERT_EQ(out.curve.size(), 3u);
  EXPECT_EQ(out.curve[1], inf);
  EXPECT_TRUE(std::isfinite(out.curve[0]));
  EXPECT_TRUE(std::isfinite(out.curve[2]));
}

TEST(tensorrt, exact_ties_go_to_the_largest_candidate) {
  // Unit counts in bins 0..3 of 8, bits 2 (L = 2), start 2, keep. For every i >= 4 there is no
  // tail and each non-empty level holds only count-1 bins, so Q = P and KL = 0 exactly:
  // candidates 4..8 tie at 0 and the largest, 8, wins.
  const auto out =
      run({1, 1, 1, 1, 0, 0, 0, 0}, abs_spec(8, 8.0f), small_tensorrt(2, 2, zero_bin_policy::keep));
  ASSERT_EQ(out.curve.size(), 7u);
  for (std::size_t k = 2; k < 7; ++k) EXPECT_EQ(out.curve[k], 0.0) << k;
  EXPECT_GT(out.curve[0], 0.0);
  EXPECT_EQ(out.result.index, 8);
  EXPECT_EQ(out.result.amax, 8.0);
  EXPECT_EQ(out.result.score, 0.0);
}

TEST(tensorrt, stride_and_candidate_count) {
  // B = 10, start 3, stride 3: candidates 3, 6, 9 (10 is not reached). 10 - 3 = 7, 7/3 + 1 = 3.
  std::vector<std::uint64_t> c = {5, 4, 3, 2, 1, 1, 2, 3, 4, 5};
  search_options o = small_tensorrt(3, 3, zero_bin_policy::keep);
  o.stride = 3;
  const auto out = run(c, abs_spec(10, 1.0f), o);
  EXPECT_EQ(out.curve.size(), 3u);
  EXPECT_TRUE(out.result.index == 3 || out.result.index == 6 || out.result.index == 9);
  // start 1, stride 3 on B = 10: 1, 4, 7, 10 -> i = B is a candidate.
  o.start_bin = 1;
  EXPECT_EQ(run(c, abs_spec(10, 1.0f), o).curve.size(), 4u);
}

TEST(tensorrt, clipped_fraction_uses_original_counts) {
  // copy_next changes c[0] for the search, but clipped is computed on the original counts.
  // c = [100, 1, 1, 1, 1, 1] (T = 105) -> searched as [1, 1, 1, 1, 1, 1]. bits 16 (L = 32768
  // levels > i): every bin is its own level, so at i = 6 (no tail) Q = P and KL = 0, while
  // smaller i put the tail on one bin, P != Q, KL > 0. Chosen 6, nothing clipped.
  const std::vector<std::uint64_t> c = {100, 1, 1, 1, 1, 1};
  search_options o = small_tensorrt(2, 16, zero_bin_policy::copy_next);
  const auto out = run(c, abs_spec(6, 6.0f), o);
  EXPECT_EQ(out.result.index, 6);
  EXPECT_EQ(out.result.clipped_fraction, 0.0);
  // Force the choice of candidate 4 with start 4, stride 10: only i = 4 (4 + 10 > 6).
  o.start_bin = 4;
  o.stride = 10;
  const auto out4 = run(c, abs_spec(6, 6.0f), o);
  EXPECT_EQ(out4.result.index, 4);
  EXPECT_EQ(out4.result.clipped_fraction, 2.0 / 105.0);  // bins 4, 5 of T = 105 (not 2/6)
}

// ---- mxnet entropy --------------------------------------------------------------------------

TEST(mxnet, hand_computed) {
  // B = 5 over [-2.5, 2.5): z = 2, bits 2 -> L = 3, candidates i = 1, 2; bin width 1.
  // c = [1, 2, 4, 2, 1], T = 10.
  // i = 1: window bins 1..3, s = 3. P = [1 + 2, 4, 2 + 1] = [3, 4, 3], W = [0, 4, 2], m = 1:
  //   levels are single entries: Q = [0 (n = 0), 4, 2]. P has no zeros. Q: 1 zero, 2 non-zero:
  //   eps1 = 1e-4 / 2 -> Q = [1e-4, 4 - 5e-5, 2 - 5e-5], sum(Q) = 6.
  //   KL = .3 ln(.3 / (1e-4/6)) + .4 ln(.4 / ((4 - 5e-5)/6)) + .3 ln(.3 / ((2 - 5e-5)/6)).
  // i = 2: window = all bins, s = 5, P = [1, 2, 4, 2, 1], W = [0, 2, 4, 2, 1], m = 5/3 = 1:
  //   levels [0,1), [1,2), [2,5): Q = [0, 2, 7/3, 7/3, 7/3], sum 9; eps1 = 1e-4 / 4.
  const double e1 = 5e-5, e2 = 2.5e-5, t = 7.0 / 3.0 - e2;
  const double kl1 = .3 * std::log(.3 / (1e-4 / 6)) + .4 * std::log(.4 / ((4 - e1) / 6)) +
                     .3 * std::log(.3 / ((2 - e1) / 6));
  const double kl2 = .1 * std::log(.1 / (1e-4 / 9)) + .2 * std::log(.2 / ((2 - e2) / 9)) +
                     .4 * std::log(.4 / (t / 9)) + .2 * std::log(.2 / (t / 9)) +
                     .1 * std::log(.1 / (t / 9));
  search_options o = search_options::mxnet();
  o.bits = 2;
  const auto out = run({1, 2, 4, 2, 1}, signed_spec(5, -2.5f, 2.5f), o);
  ASSERT_EQ(out.curve.size(), 2u);
  expect_near_rel(kl1, out.curve[0], 1e-13);
  expect_near_rel(kl2, out.curve[1], 1e-13);
  ASSERT_LT(kl2, kl1);
  EXPECT_EQ(out.result.index, 2);
  EXPECT_EQ(out.result.amax, 2.5);    // (2 + 0.5) * (2 * 2.5 / 5)
  EXPECT_EQ(out.result.scale, 2.5f);  // qmax 1
  EXPECT_EQ(out.result.clipped_fraction, 0.0);
}

TEST(mxnet, clipped_counts_bins_outside_the_window) {
  // B = 7 (z = 3, candidates 1..3), bin width 1: clipped is the mass outside the chosen
  // window [z - i, z + i] over T = 21, whichever i wins.
  search_options o = search_options::mxnet();
  o.bits = 2;
  const std::vector<std::uint64_t> c = {1, 0, 5, 9, 5, 0, 1};
  const auto out = run(c, signed_spec(7, -3.5f, 3.5f), o);
  const std::int32_t i = out.result.index;
  std::uint64_t outside = 0;
  for (std::int32_t j = 0; j < 7; ++j)
    if (j < 3 - i || j > 3 + i) outside += c[j];
  EXPECT_EQ(out.result.clipped_fraction, static_cast<double>(outside) / 21.0);
  EXPECT_EQ(out.result.amax, (i + 0.5) * 1.0);
}

TEST(mxnet, all_infinite_picks_the_first_and_is_degenerate) {
  // B = 5, [-2.5, 2.5), c = [3, 0, 0, 0, 0]: every window copy W is zero (bin 0 reaches only
  // P[0]), so Q is all zero and every KL is +inf. Not all-zero: the zero bin is 2.
  search_options o = search_options::mxnet();
  o.bits = 2;
  const auto out = run({3, 0, 0, 0, 0}, signed_spec(5, -2.5f, 2.5f), o);
  EXPECT_EQ(out.curve, (std::vector<double>{inf, inf}));
  EXPECT_EQ(out.result.index, 1);
  EXPECT_EQ(out.result.amax, 1.5);
  EXPECT_EQ(out.result.score, inf);
  EXPECT_TRUE(out.result.degenerate);
  EXPECT_EQ(out.result.clipped_fraction, 1.0);  // bin 0 < z - 1
}

TEST(mxnet, default_preset_runs_on_8001_bins) {
  std::vector<std::uint64_t> c(8001, 0);
  std::mt19937_64 rng(3);
  std::normal_distribution<double> g(4000.0, 300.0);
  for (int k = 0; k < 200000; ++k) {
    const double x = std::round(g(rng));
    if (x >= 0 && x < 8001) ++c[static_cast<std::size_t>(x)];
  }
  const auto out = run(c, signed_spec(8001, -1.0f, 1.0f), search_options::mxnet());
  EXPECT_EQ(out.curve.size(), 3874u);  // 127 .. 4000
  EXPECT_GE(out.result.index, 127);
  EXPECT_LE(out.result.index, 4000);
  EXPECT_TRUE(std::isfinite(out.result.score));
  double best = inf;
  for (double v : out.curve) best = std::min(best, v);
  EXPECT_EQ(out.result.score, best);
  // First minimum: no earlier candidate has the same value.
  for (std::int32_t k = 0; k < out.result.index - 127; ++k) EXPECT_GT(out.curve[k], best);
}

TEST(mxnet, smoothing_too_strong_is_infinite) {
  // Smoothing gives +inf when eps * zeros / nonzeros >= 1. With mass in 2 bins (z, z + 1) both
  // P and Q have 2 non-zero entries, so a window of s entries is +inf iff (s - 2) / 2 >= 1e4,
  // i.e. s >= 20002. B = 20003 (z = 10001), bits 14 (L = 16383): half-widths 8191 .. 10001,
  // s = 16383 .. 20003. Only the last (s = 20003, eps1 = 1.00005) is +inf; s = 20001 gives
  // eps1 = 0.99995 and a finite KL.
  std::vector<std::uint64_t> c(20003, 0);
  c[10001] = 10;
  c[10002] = 10;
  search_options o = search_options::mxnet();
  o.bits = 14;
  const auto out = run(c, signed_spec(20003, -1.0f, 1.0f), o);
  ASSERT_EQ(out.curve.size(), 1811u);
  EXPECT_EQ(out.curve.back(), inf);
  EXPECT_TRUE(std::isfinite(out.curve[1809]));
  EXPECT_FALSE(out.result.degenerate);
}

// ---- percentile, mse, max -------------------------------------------------------------------

TEST(percentile, hand_computed) {
  // c = [1, 1, 1, 1], T = 4, w = 0.25. S(k+1)/T = .25, .5, .75, 1.
  const std::vector<std::uint64_t> c = {1, 1, 1, 1};
  search_options o;
  o.meth = method::percentile;
  o.percentile = 50.0;  // first k with S(k+1)/T >= .5: k = 1
  auto out = run(c, abs_spec(4, 1.0f), o);
  EXPECT_EQ(out.result.index, 1);
  EXPECT_EQ(out.result.amax, 0.25);  // left edge of bin 1
  EXPECT_EQ(out.result.clipped_fraction, 0.75);
  EXPECT_EQ(out.result.score, 0.0);
  EXPECT_TRUE(out.curve.empty());
  EXPECT_EQ(bits(out.result.scale), bits(0.25f / 127.0f));
  o.percentile = 100.0;  // k = 3
  out = run(c, abs_spec(4, 1.0f), o);
  EXPECT_EQ(out.result.index, 3);
  EXPECT_EQ(out.result.amax, 0.75);
  o.percentile = 0.0;  // k = 0: amax 0, everything clipped
  out = run(c, abs_spec(4, 1.0f), o);
  EXPECT_EQ(out.result.index, 0);
  EXPECT_EQ(out.result.amax, 0.0);
  EXPECT_EQ(out.result.clipped_fraction, 1.0);
  o.percentile = 62.5;  // .625: k = 2 (S(2)/T = .5 < .625)
  EXPECT_EQ(run(c, abs_spec(4, 1.0f), o).result.index, 2);
}

TEST(mse, hand_computed) {
  // B = 4, hi = 4 -> w = 1, centres .5, 1.5, 2.5, 3.5; bits 2 -> qmax 1; start 1: i = 1, 2, 3.
  // c = [1, 0, 0, 1]. fq(m) = clamp(rint(m s), -1, 1) / s with s = 1 / a.
  // i = 1: a = 1.5. fq(.5) = rint(.33) = 0 -> err .25; fq(3.5) = clamp(rint(2.33)) = 1 -> 1.5,
  //        err 4. Score (.25 + 4) / 4 = 1.0625.
  // i = 2: a = 2.5. fq(.5) = 0 -> .25; fq(3.5) = rint(1.4) = 1 -> 2.5, err 1. Score .3125.
  // i = 3: a = 3.5. fq(.5) = 0 -> .25; fq(3.5) = 3.5, err 0. Score .0625 -> chosen.
  search_options o;
  o.meth = method::mse;
  o.start_bin = 1;
  o.bits = 2;
  const auto out = run({1, 0, 0, 1}, abs_spec(4, 4.0f), o);
  ASSERT_EQ(out.curve.size(), 3u);
  expect_near_rel(1.0625, out.curve[0]);
  expect_near_rel(0.3125, out.curve[1]);
  expect_near_rel(0.0625, out.curve[2]);
  EXPECT_EQ(out.result.index, 3);
  EXPECT_EQ(out.result.amax, 3.5);
  EXPECT_EQ(out.result.scale, 3.5f);
  EXPECT_EQ(out.result.clipped_fraction, 0.0);
}

TEST(mse, first_minimum_wins) {
  // Exact half-way products cannot occur: m * s = qmax (2k + 1) / (2i + 1) = (2n + 1) / 2 would
  // need 2 qmax (2k + 1) (even) = (2n + 1)(2i + 1) (odd); rint's tie rule never decides.
  // B = 8, hi = 8 (w = 1), bits 8 (qmax 127), start 1, mass only in bin 1 (centre 1.5; mass in
  // bin 0 alone would be all-zero). For a = i + .5, s = 127 / a and 1.5 s = 190.5 / a;
  // fq(1.5) = rint(190.5 / a) * a / 127 equals 1.5 only where 190.5 / a is an integer n:
  // a = 190.5 / n -> i + .5 = 190.5 / n: n = 1 (i = 190, out of range), n = 127 (a = 1.5,
  // i = 1), n = 381 / (2i + 1) integer -> 2i + 1 divides 381 = 3 * 127: i = 1 only (i < 8).
  // So candidate 1 has score 0 (up to fp64 rounding of s) and the others a visible error.
  search_options o;
  o.meth = method::mse;
  o.start_bin = 1;
  const auto out = run({0, 4, 0, 0, 0, 0, 0, 0}, abs_spec(8, 8.0f), o);
  ASSERT_EQ(out.curve.size(), 7u);  // i = 1 .. 7
  EXPECT_LT(out.curve[0], 1e-25);
  for (std::size_t k = 1; k < 7; ++k) EXPECT_GT(out.curve[k], 1e-6) << k;
  EXPECT_EQ(out.result.index, 1);
  EXPECT_EQ(out.result.amax, 1.5);
  // qmax 1 (bits 2), start 2, unit mass in bin 1: a = 2.5 .. 7.5, s = 1 / a.
  // i = 2: 1.5 / 2.5 = .6 -> 1 -> fq = 2.5, err 1, score 1/8 (the minimum).
  // i >= 3: 1.5 / a <= .43 -> 0, err 2.25, score 2.25 / 8: a plateau of equal values.
  o.bits = 2;
  o.start_bin = 2;
  const auto t = run({0, 1, 0, 0, 0, 0, 0, 0}, abs_spec(8, 8.0f), o);
  ASSERT_EQ(t.curve.size(), 6u);
  expect_near_rel(1.0 / 8, t.curve[0]);
  for (std::size_t k = 1; k < 6; ++k) expect_near_rel(2.25 / 8, t.curve[k]);
  EXPECT_EQ(t.result.index, 2);
  // Start at 3: every candidate quantizes 1.5 to 0 and scores exactly 2.25 / 8 (m^2 is exact):
  // an exact tie, which the first candidate wins.
  o.start_bin = 3;
  const auto tie = run({0, 1, 0, 0, 0, 0, 0, 0}, abs_spec(8, 8.0f), o);
  ASSERT_EQ(tie.curve.size(), 5u);
  for (double v : tie.curve) EXPECT_EQ(v, 2.25 / 8);
  EXPECT_EQ(tie.result.index, 3);
  EXPECT_EQ(tie.result.amax, 3.5);
}

TEST(max_method, uses_max_abs_not_the_bins) {
  search_options o;
  o.meth = method::max;
  const auto out = run({0, 3, 0, 1}, abs_spec(4, 1.0f), o, 0.8125f);
  EXPECT_EQ(out.result.amax, 0.8125);
  EXPECT_EQ(out.result.index, 4);
  EXPECT_EQ(out.result.score, 0.0);
  EXPECT_EQ(out.result.clipped_fraction, 0.0);
  EXPECT_FALSE(out.result.degenerate);
  EXPECT_TRUE(out.curve.empty());
  EXPECT_EQ(bits(out.result.scale), bits(0.8125f / 127.0f));
  // numerics.md 5.1 example: amax 1 -> scale bits 3c010204.
  const auto one = run({0, 3, 0, 1}, abs_spec(4, 1.0f), o, 1.0f);
  EXPECT_EQ(bits(one.result.scale), 0x3c010204u);
  // Works on a signed histogram too.
  const auto s = run({0, 1, 0, 1, 0}, signed_spec(5, -1.0f, 1.0f), o, 0.5f);
  EXPECT_EQ(s.result.amax, 0.5);
  EXPECT_EQ(s.result.index, 5);
  // Unsigned 8 bits: qmax 255.
  o.is_unsigned = true;
  EXPECT_EQ(bits(run({0, 3, 0, 1}, abs_spec(4, 1.0f), o, 1.0f).result.scale), bits(1.0f / 255.0f));
}

// ---- degenerate histograms ------------------------------------------------------------------

void expect_degenerate_zero(const klcal::search_result& r) {
  EXPECT_EQ(r.amax, 0.0);
  EXPECT_EQ(r.scale, 0.0f);
  EXPECT_EQ(r.index, 0);
  EXPECT_EQ(r.score, 0.0);
  EXPECT_EQ(r.clipped_fraction, 0.0);
  EXPECT_TRUE(r.degenerate);
}

TEST(degenerate, empty_and_all_zero_abs) {
  search_options methods[4];
  methods[0] = small_tensorrt(2, 8, zero_bin_policy::copy_next);
  methods[1].meth = method::max;
  methods[2].meth = method::percentile;
  methods[3].meth = method::mse;
  methods[3].start_bin = 2;
  for (const auto& counts :
       {std::vector<std::uint64_t>(8, 0), std::vector<std::uint64_t>{5, 0, 0, 0, 0, 0, 0, 0}}) {
    for (const search_options& o : methods) {
      const auto out = run(counts, abs_spec(8, 1.0f), o, 0.01f);
      expect_degenerate_zero(out.result);
    }
  }
  // The curve is still that of the formulas: copy_next makes c all zero -> every KL +inf;
  // with keep, c = [5, 0, ...] gives P = Q at i = 2 -> KL 0, yet the result stays degenerate.
  const std::vector<std::uint64_t> zeros = {5, 0, 0, 0, 0, 0, 0, 0};
  auto out = run(zeros, abs_spec(8, 1.0f), small_tensorrt(2, 8, zero_bin_policy::copy_next));
  EXPECT_EQ(out.curve, std::vector<double>(7, inf));
  out = run(zeros, abs_spec(8, 1.0f), small_tensorrt(2, 8, zero_bin_policy::keep));
  ASSERT_EQ(out.curve.size(), 7u);
  EXPECT_EQ(out.curve[0], 0.0);
  expect_degenerate_zero(out.result);
}

TEST(degenerate, all_zero_signed) {
  // [-1, 1), B = 5: 0 lands in bin floor(1 * 2.5) = 2; mass only there is all-zero.
  search_options o = search_options::mxnet();
  o.bits = 2;
  expect_degenerate_zero(run({0, 0, 7, 0, 0}, signed_spec(5, -1.0f, 1.0f), o).result);
  expect_degenerate_zero(run({0, 0, 0, 0, 0}, signed_spec(5, -1.0f, 1.0f), o).result);
  search_options m;
  m.meth = method::max;
  expect_degenerate_zero(run({0, 0, 7, 0, 0}, signed_spec(5, -1.0f, 1.0f), m, 0.1f).result);
  // Mass in bin 1 is not all-zero.
  EXPECT_FALSE(run({0, 1, 7, 0, 0}, signed_spec(5, -1.0f, 1.0f), o).result.degenerate);
}

TEST(degenerate, every_tensorrt_candidate_infinite) {
  // B = 5, hi = 5 (w = 1), start 2, stride 2 -> candidates 2, 4 (not 5); keep; bits 2.
  // c = [0, 0, 0, 0, 5]: the kept bins hold no mass for both -> sum(Q) = 0 -> +inf.
  // The tie rule picks the last (4): amax 4, scale 4 (qmax 1), clipped 5/5.
  search_options o = small_tensorrt(2, 2, zero_bin_policy::keep);
  o.stride = 2;
  const auto out = run({0, 0, 0, 0, 5}, abs_spec(5, 5.0f), o);
  EXPECT_EQ(out.curve, (std::vector<double>{inf, inf}));
  EXPECT_EQ(out.result.index, 4);
  EXPECT_EQ(out.result.amax, 4.0);
  EXPECT_EQ(out.result.scale, 4.0f);
  EXPECT_EQ(out.result.score, inf);
  EXPECT_EQ(out.result.clipped_fraction, 1.0);
  EXPECT_TRUE(out.result.degenerate);
}

// ---- invalid input (numerics.md 6) ----------------------------------------------------------

errc make_code(const histogram_spec& s) {
  ref::histogram h;
  return ref::make_histogram(s, &h).code;
}

TEST(invalid, histogram_specs) {
  EXPECT_EQ(make_code(abs_spec(1, 1.0f)), errc::too_few_bins);
  EXPECT_EQ(make_code(abs_spec(0, 1.0f)), errc::too_few_bins);
  EXPECT_EQ(make_code(abs_spec(-3, 1.0f)), errc::too_few_bins);
  EXPECT_EQ(make_code(abs_spec(klcal::max_bins + 1, 1.0f)), errc::too_many_bins);
  EXPECT_EQ(make_code(abs_spec(klcal::max_bins, 1.0f)), errc::ok);
  EXPECT_EQ(make_code(abs_spec(2, 1.0f)), errc::ok);
  EXPECT_EQ(make_code(abs_spec(8, 0.0f)), errc::invalid_range);  // hi <= lo
  EXPECT_EQ(make_code(abs_spec(8, -1.0f)), errc::invalid_range);
  EXPECT_EQ(make_code(abs_spec(8, finf)), errc::invalid_range);
  EXPECT_EQ(make_code(abs_spec(8, std::nanf(""))), errc::invalid_range);
  EXPECT_EQ(make_code(signed_spec(8, 1.0f, 1.0f)), errc::invalid_range);
  EXPECT_EQ(make_code(signed_spec(8, 2.0f, 1.0f)), errc::invalid_range);
  EXPECT_EQ(make_code(signed_spec(8, -finf, 1.0f)), errc::invalid_range);
  EXPECT_EQ(make_code(signed_spec(8, -3e38f, 3e38f)), errc::invalid_range);  // width overflows
  EXPECT_EQ(make_code(signed_spec(8, -1e38f, 1e38f)), errc::ok);
  histogram_spec bad_lo = abs_spec(8, 1.0f);
  bad_lo.lo = -1.0f;
  EXPECT_EQ(make_code(bad_lo), errc::invalid_range);  // abs needs lo = 0
  histogram_spec bad_kind = abs_spec(8, 1.0f);
  bad_kind.kind = static_cast<layout>(7);
  EXPECT_EQ(make_code(bad_kind), errc::invalid_option);
  EXPECT_EQ(ref::make_histogram(abs_spec(8, 1.0f), nullptr).code, errc::null_pointer);
}

TEST(invalid, add_arguments_leave_the_histogram_unchanged) {
  ref::histogram h = histogram_of(abs_spec(4, 1.0f), {0.5f});
  const ref::histogram before = h;
  const float x = 0.25f;
  EXPECT_EQ(ref::add(h, nullptr, dtype::f32, 3).code, errc::null_pointer);
  EXPECT_EQ(ref::add(h, &x, dtype::f32, -1).code, errc::invalid_count);
  EXPECT_EQ(ref::add(h, &x, static_cast<dtype>(9), 1).code, errc::invalid_dtype);
  expect_same(h, before);
  ref::histogram broken = h;
  broken.counts.pop_back();  // counts that do not match the spec
  EXPECT_EQ(ref::add(broken, &x, dtype::f32, 1).code, errc::invalid_option);
  ref::streaming_histogram sh;
  ASSERT_TRUE(sh.init(4).ok());
  EXPECT_EQ(sh.add(nullptr, dtype::f16, 1).code, errc::null_pointer);
  EXPECT_EQ(sh.add(&x, dtype::f32, -2).code, errc::invalid_count);
  EXPECT_EQ(sh.add(&x, static_cast<dtype>(3), 1).code, errc::invalid_dtype);
  EXPECT_EQ(ref::two_pass_histogram(nullptr, dtype::f32, 1, 4, &h).code, errc::null_pointer);
  EXPECT_EQ(ref::two_pass_histogram(&x, dtype::f32, 1, 1, &h).code, errc::too_few_bins);
  EXPECT_EQ(ref::two_pass_histogram(&x, dtype::f32, 1, 4, nullptr).code, errc::null_pointer);
}

TEST(invalid, streaming_bins) {
  ref::streaming_histogram sh;
  EXPECT_EQ(sh.init(1).code, errc::too_few_bins);
  EXPECT_EQ(sh.init(0).code, errc::too_few_bins);
  EXPECT_EQ(sh.init(1 << 25).code, errc::too_many_bins);
  EXPECT_EQ(sh.init(2047).code, errc::bins_not_power_of_two);
  EXPECT_EQ(sh.init(3).code, errc::bins_not_power_of_two);
  EXPECT_EQ(sh.init(8001).code, errc::bins_not_power_of_two);
  EXPECT_EQ(sh.init(2).code, errc::ok);
  EXPECT_EQ(sh.init(klcal::max_bins).code, errc::ok);
}

errc search_code(const histogram_spec& s, const search_options& o) {
  const std::vector<std::uint64_t> c(s.bins > 0 && s.bins <= 1 << 20 ? s.bins : 0, 1);
  ref::search_output out;
  out.result.index = -77;  // must stay untouched on error
  const errc e = ref::search(c, s, 1.0f, o, &out).code;
  if (e != errc::ok) {
    EXPECT_EQ(out.result.index, -77);
  }
  return e;
}

TEST(invalid, search_options) {
  const histogram_spec a = abs_spec(2048, 1.0f);
  const histogram_spec sg = signed_spec(8001, -1.0f, 1.0f);
  search_options o;
  EXPECT_EQ(search_code(a, o), errc::ok);
  o.start_bin = 0;
  EXPECT_EQ(search_code(a, o), errc::start_bin_out_of_range);
  o.start_bin = -5;
  EXPECT_EQ(search_code(a, o), errc::start_bin_out_of_range);
  o.start_bin = 2049;  // B < start_bin
  EXPECT_EQ(search_code(a, o), errc::start_bin_out_of_range);
  o.start_bin = 2048;  // B = start_bin is fine for tensorrt (one candidate, i = B) ...
  EXPECT_EQ(search_code(a, o), errc::ok);
  o.meth = method::mse;  // ... but not for mse (B <= start_bin)
  EXPECT_EQ(search_code(a, o), errc::start_bin_out_of_range);
  o.start_bin = 2047;
  EXPECT_EQ(search_code(a, o), errc::ok);
  o = search_options{};
  o.stride = 0;
  EXPECT_EQ(search_code(a, o), errc::invalid_stride);
  o.stride = -1;
  o.meth = method::mse;
  EXPECT_EQ(search_code(a, o), errc::invalid_stride);
  for (int b : {1, 17, 0, -8, 32}) {
    for (method m : {method::entropy, method::max, method::percentile, method::mse}) {
      o = search_options{};
      o.meth = m;
      o.bits = b;
      EXPECT_EQ(search_code(a, o), errc::invalid_bits) << b;
    }
  }
  o = search_options{};
  o.bits = 16;
  o.is_unsigned = true;  // L = 65536 levels: legal
  o.start_bin = 2000;
  EXPECT_EQ(search_code(a, o), errc::ok);
  o = search_options{};
  o.meth = method::percentile;
  for (double p : {-0.001, 100.001, std::nan(""), inf, -inf}) {
    o.percentile = p;
    EXPECT_EQ(search_code(a, o), errc::invalid_percentile) << p;
  }
  o.percentile = 100.0;
  EXPECT_EQ(search_code(a, o), errc::ok);
  o.percentile = 0.0;
  EXPECT_EQ(search_code(a, o), errc::ok);
  // Layouts.
  for (method m : {method::entropy, method::percentile, method::mse}) {
    o = search_options{};
    o.meth = m;
    EXPECT_EQ(search_code(sg, o), errc::layout_mismatch);
  }
  EXPECT_EQ(search_code(a, search_options::mxnet()), errc::layout_mismatch);
  o = search_options{};
  o.meth = method::max;
  EXPECT_EQ(search_code(sg, o), errc::ok);
  // mxnet.
  EXPECT_EQ(search_code(sg, search_options::mxnet()), errc::ok);
  EXPECT_EQ(search_code(signed_spec(8000, -1.0f, 1.0f), search_options::mxnet()),
            errc::bins_not_odd);
  EXPECT_EQ(search_code(signed_spec(8001, -1.0f, 2.0f), search_options::mxnet()),
            errc::bins_not_odd);
  // B / 2 < L / 2: 253 bins -> 126 < 127; 255 bins -> 127, the smallest legal.
  EXPECT_EQ(search_code(signed_spec(253, -1.0f, 1.0f), search_options::mxnet()),
            errc::start_bin_out_of_range);
  EXPECT_EQ(search_code(signed_spec(255, -1.0f, 1.0f), search_options::mxnet()), errc::ok);
  o = search_options::mxnet();
  o.is_unsigned = true;
  EXPECT_EQ(search_code(sg, o), errc::invalid_option);
  o = search_options::mxnet();
  o.start_bin = 0;  // start_bin and stride do not apply to mxnet
  o.stride = 0;
  EXPECT_EQ(search_code(sg, o), errc::ok);
  // Unknown enums.
  o = search_options{};
  o.meth = static_cast<method>(9);
  EXPECT_EQ(search_code(a, o), errc::invalid_option);
  o = search_options{};
  o.rules = static_cast<rule_set>(9);
  EXPECT_EQ(search_code(a, o), errc::invalid_option);
  o = search_options{};
  o.zero_bin = static_cast<zero_bin_policy>(9);
  EXPECT_EQ(search_code(a, o), errc::invalid_option);
  // Spec errors come through search too.
  EXPECT_EQ(search_code(abs_spec(1, 1.0f), search_options{}), errc::too_few_bins);
  EXPECT_EQ(search_code(abs_spec(klcal::max_bins + 1, 1.0f), search_options{}),
            errc::too_many_bins);
  EXPECT_EQ(search_code(abs_spec(2048, -1.0f), search_options{}), errc::invalid_range);
  // Counts of the wrong length, null output.
  ref::search_output out;
  EXPECT_EQ(ref::search(std::vector<std::uint64_t>(100, 1), a, 0.0f, search_options{}, &out).code,
            errc::invalid_count);
  EXPECT_EQ(
      ref::search(std::vector<std::uint64_t>(2048, 1), a, 0.0f, search_options{}, nullptr).code,
      errc::null_pointer);
}

}  // namespace
