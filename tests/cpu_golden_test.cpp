// The C++ reference against the NumPy goldens of tests/data, plus the golden reader itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "golden.hpp"
#include "klcal/reference.hpp"

namespace {

using klcal::errc;
using klcal::test::bits_of;
using klcal::test::golden_case;
using klcal::test::golden_range;
using klcal::test::golden_search;
namespace ref = klcal::reference;

std::string name_of(errc e) {
  return klcal::test::errc_name(e);
}

// Builds the histogram of a golden case with the reference, batch by batch in file order
// (`reverse`: in reverse order, which must not change anything). Returns the first error.
errc build(const golden_case& gc, bool reverse, ref::histogram* out) {
  std::vector<std::size_t> order(gc.batches.size());
  for (std::size_t b = 0; b < order.size(); ++b) order[b] = b;
  if (reverse) std::reverse(order.begin(), order.end());
  switch (gc.range) {
    case golden_range::counts: {
      ref::histogram h;
      if (auto s = ref::make_histogram(gc.spec, &h); !s.ok()) return s.code;
      h.counts = gc.counts;
      h.nan_count = gc.nan_count;
      h.inf_count = gc.inf_count;
      h.max_abs = gc.max_abs;
      *out = h;
      return errc::ok;
    }
    case golden_range::fixed: {
      ref::histogram h;
      if (auto s = ref::make_histogram(gc.spec, &h); !s.ok()) return s.code;
      for (std::size_t b : order) {
        const auto bytes = gc.batch_bytes(b);
        if (auto s = ref::add(h, bytes.data(), gc.type, gc.batch_size(b)); !s.ok()) return s.code;
      }
      *out = h;
      return errc::ok;
    }
    case golden_range::streaming: {
      ref::streaming_histogram sh;
      if (auto s = sh.init(gc.spec.bins); !s.ok()) return s.code;
      for (std::size_t b : order) {
        const auto bytes = gc.batch_bytes(b);
        if (auto s = sh.add(bytes.data(), gc.type, gc.batch_size(b)); !s.ok()) return s.code;
      }
      *out = sh.get();
      return errc::ok;
    }
  }
  return errc::invalid_option;
}

void check_histogram(const golden_case& gc, const ref::histogram& h) {
  EXPECT_EQ(h.spec.kind, gc.spec.kind);
  EXPECT_EQ(h.spec.bins, gc.spec.bins);
  EXPECT_EQ(bits_of(h.spec.lo), bits_of(gc.spec.lo)) << "lo " << h.spec.lo << " vs " << gc.spec.lo;
  EXPECT_EQ(bits_of(h.spec.hi), bits_of(gc.spec.hi)) << "hi " << h.spec.hi << " vs " << gc.spec.hi;
  ASSERT_EQ(h.counts.size(), gc.counts.size());
  std::size_t mismatches = 0;
  for (std::size_t j = 0; j < h.counts.size() && mismatches < 10; ++j) {
    if (h.counts[j] != gc.counts[j]) {
      ++mismatches;
      ADD_FAILURE() << "bin " << j << ": reference " << h.counts[j] << ", golden " << gc.counts[j];
    }
  }
  EXPECT_EQ(h.nan_count, gc.nan_count);
  EXPECT_EQ(h.inf_count, gc.inf_count);
  EXPECT_EQ(bits_of(h.max_abs), bits_of(gc.max_abs))
      << "max_abs " << h.max_abs << " vs " << gc.max_abs;
}

void check_search(const golden_case& gc, const golden_search& gs) {
  SCOPED_TRACE("search at line " + std::to_string(gs.line));
  ref::search_output out;
  const klcal::status st = ref::search(gc.counts, gc.spec, gc.max_abs, gs.opts, &out);
  if (gs.error) {
    EXPECT_EQ(name_of(st.code), name_of(*gs.error));
    return;
  }
  ASSERT_TRUE(st.ok()) << "search failed: " << name_of(st.code);
  const auto& r = out.result;
  constexpr double a = klcal::test::golden_abs_tol, rel = klcal::test::golden_rel_tol;
  EXPECT_EQ(r.index, gs.index);
  EXPECT_EQ(r.degenerate, gs.degenerate);
  EXPECT_EQ(bits_of(r.amax), bits_of(gs.amax)) << "amax " << r.amax << " vs " << gs.amax;
  EXPECT_EQ(bits_of(r.scale), bits_of(gs.scale)) << "scale " << r.scale << " vs " << gs.scale;
  EXPECT_TRUE(klcal::test::value_close(gs.score, r.score, a, rel))
      << "score " << r.score << " vs " << gs.score;
  EXPECT_TRUE(klcal::test::value_close(gs.clipped, r.clipped_fraction, a, rel))
      << "clipped " << r.clipped_fraction << " vs " << gs.clipped;
  if (gs.has_curve) {
    EXPECT_EQ(klcal::test::curve_mismatch(gs.curve, out.curve, a, rel), "");
  } else if (gs.opts.meth == klcal::method::max || gs.opts.meth == klcal::method::percentile) {
    EXPECT_TRUE(out.curve.empty());
  }
}

class golden_file_test : public ::testing::TestWithParam<std::string> {};

TEST_P(golden_file_test, reference_matches) {
  std::vector<golden_case> cases;
  try {
    cases = klcal::test::load_golden_file(GetParam());
  } catch (const std::exception& e) {
    FAIL() << e.what();
  }
  ASSERT_FALSE(cases.empty()) << GetParam() << " holds no case";
  for (const golden_case& gc : cases) {
    SCOPED_TRACE(gc.file + ": case " + gc.name + " (" + gc.description + ")");
    ref::histogram h;
    const errc e = build(gc, false, &h);
    if (gc.error) {
      EXPECT_EQ(name_of(e), name_of(*gc.error));
      continue;
    }
    ASSERT_EQ(name_of(e), "ok");
    check_histogram(gc, h);
    if (gc.batches.size() > 1) {  // batch order must not matter (numerics.md 1.4, 1.5)
      ref::histogram rev;
      ASSERT_EQ(build(gc, true, &rev), errc::ok);
      EXPECT_EQ(rev.counts, h.counts);
      EXPECT_EQ(bits_of(rev.spec.hi), bits_of(h.spec.hi));
    }
    if (gc.range == golden_range::streaming) {
      // Two streaming histograms over alternate batches, merged, equal the one stream.
      ref::streaming_histogram even, odd;
      ASSERT_TRUE(even.init(gc.spec.bins).ok());
      ASSERT_TRUE(odd.init(gc.spec.bins).ok());
      for (std::size_t b = 0; b < gc.batches.size(); ++b) {
        const auto bytes = gc.batch_bytes(b);
        ASSERT_TRUE((b % 2 ? odd : even).add(bytes.data(), gc.type, gc.batch_size(b)).ok());
      }
      ASSERT_TRUE(odd.merge(even).ok());
      check_histogram(gc, odd.get());
    }
    if (gc.range == golden_range::fixed && gc.spec.kind == klcal::layout::abs &&
        (gc.spec.hi == gc.max_abs || (gc.max_abs == 0.0f && gc.spec.hi == std::ldexp(1.0f, -64)))) {
      // A two-pass range (hi = max |x|, or 2^-64 when that is 0): the helper must reproduce it.
      const auto bytes = gc.all_bytes();
      ref::histogram tp;
      ASSERT_TRUE(
          ref::two_pass_histogram(bytes.data(), gc.type, gc.total_size(), gc.spec.bins, &tp).ok());
      check_histogram(gc, tp);
    }
    for (const golden_search& gs : gc.searches) check_search(gc, gs);
  }
}

std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  return klcal::test::test_name(std::filesystem::path(info.param).stem().string());
}

INSTANTIATE_TEST_SUITE_P(goldens, golden_file_test,
                         ::testing::ValuesIn(klcal::test::golden_files(klcal::test::data_dir())),
                         param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(golden_file_test);  // the count test reports it

TEST(golden_set, has_at_least_30_files) {
  EXPECT_GE(klcal::test::golden_files(klcal::test::data_dir()).size(), 30u)
      << "tests/data must hold the goldens written by python_ref/gen_golden.py";
}

TEST(golden_set, case_names_are_unique) {
  std::vector<std::string> names;
  try {
    for (const auto& gc : klcal::test::load_goldens(klcal::test::data_dir()))
      names.push_back(gc.name);
  } catch (const std::exception& e) {
    FAIL() << e.what();
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end());
}

// ---- the reader itself, on hand-written text (no files) ------------------------------------

const char* const sample = R"(klcal-golden 1
# a comment
case tiny_abs
description two values, one NaN
dtype f16
layout abs
range fixed
bins 4
lo 00000000
hi 3f800000
batch 2 3c00 8000
batch 1 7e00
counts 2 0:1 3:1
nan_count 1
inf_count 0
max_abs 3f800000
search max tensorrt
index 4
amax 3ff0000000000000
scale 3c010204
score 0000000000000000
clipped 0000000000000000
degenerate 0
end
search entropy tensorrt
start_bin 2
stride 1
bits 3
unsigned 1
zero_bin keep
curve 3 0000000000000000 7ff0000000000000 3ff0000000000000
index 4
amax 3ff0000000000000
scale 3e124925
score 0000000000000000
clipped 0000000000000000
degenerate 0
end
search percentile tensorrt
percentile 4058c00000000000
error invalid_percentile
end
)";

TEST(golden_reader, parses_every_record) {
  const auto cases = klcal::test::parse_golden(sample, "sample");
  ASSERT_EQ(cases.size(), 1u);
  const golden_case& c = cases[0];
  EXPECT_EQ(c.name, "tiny_abs");
  EXPECT_EQ(c.description, "two values, one NaN");
  EXPECT_EQ(c.type, klcal::dtype::f16);
  EXPECT_EQ(c.spec.kind, klcal::layout::abs);
  EXPECT_EQ(c.range, golden_range::fixed);
  EXPECT_EQ(c.spec.bins, 4);
  EXPECT_EQ(c.spec.hi, 1.0f);
  ASSERT_EQ(c.batches.size(), 2u);
  EXPECT_EQ(c.batches[0], (std::vector<std::uint32_t>{0x3c00, 0x8000}));
  EXPECT_EQ(c.total_size(), 3);
  const auto bytes = c.batch_bytes(0);
  ASSERT_EQ(bytes.size(), 4u);
  std::uint16_t first;
  std::memcpy(&first, bytes.data(), 2);
  EXPECT_EQ(first, 0x3c00);
  EXPECT_EQ(c.counts, (std::vector<std::uint64_t>{1, 0, 0, 1}));
  EXPECT_EQ(c.nan_count, 1u);
  EXPECT_EQ(c.max_abs, 1.0f);
  EXPECT_FALSE(c.error.has_value());
  ASSERT_EQ(c.searches.size(), 3u);
  const golden_search& m = c.searches[0];
  EXPECT_EQ(m.opts.meth, klcal::method::max);
  EXPECT_EQ(m.index, 4);
  EXPECT_EQ(m.amax, 1.0);
  EXPECT_EQ(bits_of(m.scale), 0x3c010204u);
  EXPECT_FALSE(m.has_curve);
  const golden_search& e = c.searches[1];
  EXPECT_EQ(e.opts.start_bin, 2);
  EXPECT_EQ(e.opts.bits, 3);
  EXPECT_TRUE(e.opts.is_unsigned);
  EXPECT_EQ(e.opts.zero_bin, klcal::zero_bin_policy::keep);
  EXPECT_EQ(e.opts.percentile, 99.99);  // omitted: default
  ASSERT_EQ(e.curve.size(), 3u);
  EXPECT_EQ(e.curve[1], std::numeric_limits<double>::infinity());
  EXPECT_EQ(e.curve[2], 1.0);
  const golden_search& p = c.searches[2];
  EXPECT_EQ(p.opts.meth, klcal::method::percentile);
  EXPECT_EQ(p.opts.percentile, 99.0);
  ASSERT_TRUE(p.error.has_value());
  EXPECT_EQ(*p.error, errc::invalid_percentile);
}

TEST(golden_reader, end_may_close_the_case_instead_of_each_search) {
  const char* text = R"(klcal-golden 1
case a
dtype f32
layout signed
range counts
bins 3
lo bf800000
hi 3f800000
counts 1 1:5
search entropy mxnet
bits 2
index 1
search max tensorrt
index 3
end
case b
dtype bf16
layout abs
range streaming
bins 3
lo 00000000
hi 20000000
batch 1 8000
counts 1 0:1
error bins_not_power_of_two
)";
  const auto cases = klcal::test::parse_golden(text, "text");
  ASSERT_EQ(cases.size(), 2u);
  ASSERT_EQ(cases[0].searches.size(), 2u);
  EXPECT_EQ(cases[0].searches[0].opts.rules, klcal::rule_set::mxnet);
  EXPECT_EQ(cases[0].searches[1].index, 3);
  EXPECT_EQ(cases[0].counts, (std::vector<std::uint64_t>{0, 5, 0}));
  EXPECT_EQ(cases[1].range, golden_range::streaming);
  EXPECT_EQ(cases[1].batches[0], (std::vector<std::uint32_t>{0x8000}));
  ASSERT_TRUE(cases[1].error.has_value());
  EXPECT_EQ(*cases[1].error, errc::bins_not_power_of_two);
}

TEST(golden_reader, rejects_malformed_text) {
  const std::string head = "klcal-golden 1\ncase x\ndtype f32\nlayout abs\nrange fixed\nbins 2\n";
  const std::vector<std::string> bad = {
      "",                                         // no header
      "klcal-golden 2\n",                         // wrong version
      head + "counts 1 0:1\nmax_abs 3f80000\n",   // 7 hex digits
      head + "counts 1 0:1\nmax_abs 3F800000\n",  // uppercase hex
      head + "counts 2 0:1\n",                    // length mismatch
      head + "counts 1 2:1\n",                    // bin out of range
      head + "counts 2 1:1 0:1\n",                // not ascending
      head + "batch 2 3f800000\ncounts 0\n",      // batch length mismatch
      head + "batch 1 3c00\ncounts 0\n",          // f32 needs 8 digits
      head + "counts 0\nsearch entropy caffe\n",  // unknown rule set
      head + "counts 0\nsearch entropy tensorrt\nerror no_such_code\n",
      head + "counts 0\nfrobnicate 1\n",  // unknown record
      head + "counts 0\nsearch max tensorrt\nunsigned 2\n",
      head,                        // no counts
      "klcal-golden 1\nbins 3\n",  // record outside a case
      "klcal-golden 1\ncase Bad-Name\n",
  };
  for (const std::string& t : bad) {
    EXPECT_THROW(klcal::test::parse_golden(t, "bad"), std::runtime_error) << t;
  }
}

TEST(golden_reader, error_names_round_trip) {
  for (int v = 0; v <= static_cast<int>(errc::format_error); ++v) {
    const auto e = static_cast<errc>(v);
    const auto back = klcal::test::errc_from_name(klcal::test::errc_name(e));
    ASSERT_TRUE(back.has_value()) << v;
    EXPECT_EQ(*back, e);
  }
  EXPECT_FALSE(klcal::test::errc_from_name("no_such_code").has_value());
  EXPECT_EQ(klcal::test::errc_name(errc::bins_not_power_of_two), "bins_not_power_of_two");
}

TEST(golden_tolerance, curve_close_and_index_optimal) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  using klcal::test::curve_close;
  const std::vector<double> ref_curve = {0.5, 0.25, inf, 0.25000000001};
  EXPECT_TRUE(curve_close(ref_curve, ref_curve, 1e-12, 1e-10));
  EXPECT_TRUE(curve_close(ref_curve, {0.5 + 4e-11, 0.25, inf, 0.25000000001}, 1e-12, 1e-10));
  EXPECT_FALSE(curve_close(ref_curve, {0.5 + 6e-11, 0.25, inf, 0.25000000001}, 1e-12, 1e-10));
  EXPECT_FALSE(curve_close(ref_curve, {0.5, 0.25, 1e300, 0.25000000001}, 1e-12, 1e-10));
  EXPECT_FALSE(curve_close(ref_curve, {0.5, inf, inf, 0.25000000001}, 1e-12, 1e-10));
  EXPECT_FALSE(curve_close(ref_curve, {0.5, 0.25, inf}, 1e-12, 1e-10));
  // Position 3 is 1e-11 above the minimum at 1: optimal under 1e-9, not under 1e-12.
  EXPECT_TRUE(klcal::test::index_optimal(ref_curve, 1, 0, 0));
  EXPECT_TRUE(klcal::test::index_optimal(ref_curve, 3, 1e-9, 1e-9));
  EXPECT_FALSE(klcal::test::index_optimal(ref_curve, 3, 1e-12, 0));
  EXPECT_FALSE(klcal::test::index_optimal(ref_curve, 2, 1e-9, 1e-9));
  EXPECT_FALSE(klcal::test::index_optimal(ref_curve, 4, 1e-9, 1e-9));
  EXPECT_TRUE(klcal::test::index_optimal({inf, inf}, 0, 0, 0));
  klcal::search_options o;  // tensorrt: start 128, stride 1
  o.stride = 4;
  EXPECT_EQ(klcal::test::candidate_position(o, 136), 2);
  EXPECT_EQ(klcal::test::candidate_position(o, 137), -1);
  EXPECT_EQ(klcal::test::candidate_position(o, 127), -1);
  EXPECT_EQ(klcal::test::candidate_position(klcal::search_options::mxnet(), 127), 0);
  EXPECT_EQ(klcal::test::candidate_position(klcal::search_options::mxnet(), 4000), 3873);
}

}  // namespace
