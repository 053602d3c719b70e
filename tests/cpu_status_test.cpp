// klcal::to_string, validate() and candidate_count() (src/) against docs/numerics.md section 6.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "klcal/reference.hpp"
#include "klcal/status.hpp"
#include "klcal/types.hpp"

namespace {

using klcal::errc;
using klcal::histogram_spec;
using klcal::layout;
using klcal::method;
using klcal::rule_set;
using klcal::search_options;
using klcal::zero_bin_policy;

constexpr float finf = std::numeric_limits<float>::infinity();

TEST(status, names_are_the_documented_ones) {
  // The spellings of numerics.md 6 (the CLI prints them, python_ref raises them by name).
  const std::vector<std::pair<errc, std::string>> names = {
      {errc::ok, "ok"},
      {errc::too_few_bins, "too_few_bins"},
      {errc::too_many_bins, "too_many_bins"},
      {errc::start_bin_out_of_range, "start_bin_out_of_range"},
      {errc::invalid_stride, "invalid_stride"},
      {errc::invalid_bits, "invalid_bits"},
      {errc::invalid_range, "invalid_range"},
      {errc::bins_not_odd, "bins_not_odd"},
      {errc::bins_not_power_of_two, "bins_not_power_of_two"},
      {errc::null_pointer, "null_pointer"},
      {errc::workspace_too_small, "workspace_too_small"},
      {errc::invalid_percentile, "invalid_percentile"},
      {errc::layout_mismatch, "layout_mismatch"},
      {errc::invalid_dtype, "invalid_dtype"},
      {errc::invalid_count, "invalid_count"},
      {errc::invalid_option, "invalid_option"},
      {errc::cuda_error, "cuda_error"},
      {errc::out_of_memory, "out_of_memory"},
      {errc::io_error, "io_error"},
      {errc::format_error, "format_error"},
      {errc::comm_error, "comm_error"},
  };
  for (const auto& [code, name] : names) {
    EXPECT_EQ(std::string(klcal::to_string(code)), name);
    EXPECT_EQ(klcal::to_string(klcal::status(code)).rfind(name, 0), 0u) << name;
  }
  // A value outside the enum still gives a non-null string.
  EXPECT_NE(klcal::to_string(static_cast<errc>(999)), nullptr);
}

TEST(status, cuda_error_mentions_the_cuda_code) {
  const std::string s = klcal::to_string(klcal::status(errc::cuda_error, 2));
  EXPECT_EQ(s.rfind("cuda_error", 0), 0u);
  EXPECT_GT(s.size(), std::string("cuda_error").size());
  EXPECT_TRUE(klcal::status().ok());
  EXPECT_FALSE(klcal::status(errc::invalid_bits).ok());
  EXPECT_NE(klcal::status(errc::cuda_error, 2), klcal::status(errc::cuda_error, 3));
}

histogram_spec spec(layout k, std::int32_t bins, float lo, float hi) {
  histogram_spec s;
  s.kind = k;
  s.bins = bins;
  s.lo = lo;
  s.hi = hi;
  return s;
}

TEST(validate, histogram_spec_rows) {
  struct row {
    histogram_spec s;
    errc want;
  };
  const std::vector<row> rows = {
      {spec(layout::abs, 2048, 0, 1), errc::ok},
      {spec(layout::abs, 2, 0, 1), errc::ok},
      {spec(layout::abs, klcal::max_bins, 0, 1), errc::ok},
      {spec(layout::signed_, 8001, -1, 1), errc::ok},
      {spec(layout::signed_, 7, 2, 3), errc::ok},  // signed ranges need not contain 0
      {spec(layout::abs, 1, 0, 1), errc::too_few_bins},
      {spec(layout::abs, 0, 0, 1), errc::too_few_bins},
      {spec(layout::abs, -1, 0, 1), errc::too_few_bins},
      {spec(layout::abs, klcal::max_bins + 1, 0, 1), errc::too_many_bins},
      {spec(layout::abs, 8, 0, 0), errc::invalid_range},
      {spec(layout::abs, 8, 0, -1), errc::invalid_range},
      {spec(layout::abs, 8, 0, finf), errc::invalid_range},
      {spec(layout::abs, 8, 0, std::nanf("")), errc::invalid_range},
      {spec(layout::abs, 8, -1, 1), errc::invalid_range},  // abs: lo must be 0
      {spec(layout::signed_, 8, 1, 1), errc::invalid_range},
      {spec(layout::signed_, 8, 1, -1), errc::invalid_range},
      {spec(layout::signed_, 8, -finf, 1), errc::invalid_range},
      {spec(layout::signed_, 8, std::nanf(""), 1), errc::invalid_range},
      {spec(layout::signed_, 8, -3e38f, 3e38f), errc::invalid_range},  // hi - lo overflows
      {spec(static_cast<layout>(5), 8, 0, 1), errc::invalid_option},
  };
  for (const row& r : rows) {
    EXPECT_EQ(klcal::to_string(klcal::validate(r.s).code), std::string(klcal::to_string(r.want)))
        << "bins " << r.s.bins << " lo " << r.s.lo << " hi " << r.s.hi;
  }
}

search_options opts(method m, rule_set r = rule_set::tensorrt) {
  search_options o;
  o.meth = m;
  o.rules = r;
  return o;
}

TEST(validate, search_option_rows) {
  const histogram_spec a = spec(layout::abs, 2048, 0, 1);
  const histogram_spec sg = spec(layout::signed_, 8001, -1, 1);
  struct row {
    histogram_spec s;
    search_options o;
    errc want;
    const char* what;
  };
  std::vector<row> rows;
  auto add = [&](histogram_spec s, search_options o, errc want, const char* what) {
    rows.push_back({s, o, want, what});
  };
  add(a, search_options::tensorrt(), errc::ok, "tensorrt preset");
  add(sg, search_options::mxnet(), errc::ok, "mxnet preset");
  search_options o = opts(method::entropy);
  o.start_bin = 0;
  add(a, o, errc::start_bin_out_of_range, "start_bin < 1");
  o.start_bin = 2049;
  add(a, o, errc::start_bin_out_of_range, "B < start_bin (tensorrt)");
  o.start_bin = 2048;
  add(a, o, errc::ok, "B = start_bin (tensorrt: one candidate)");
  o = opts(method::mse);
  o.start_bin = 2048;
  add(a, o, errc::start_bin_out_of_range, "B <= start_bin (mse)");
  o.start_bin = 0;
  add(a, o, errc::start_bin_out_of_range, "start_bin < 1 (mse)");
  add(spec(layout::signed_, 253, -1, 1), search_options::mxnet(), errc::start_bin_out_of_range,
      "B/2 < L/2 (mxnet)");
  add(spec(layout::signed_, 255, -1, 1), search_options::mxnet(), errc::ok, "B/2 = L/2 (mxnet)");
  o = opts(method::entropy);
  o.stride = 0;
  add(a, o, errc::invalid_stride, "stride 0");
  o = opts(method::mse);
  o.stride = -2;
  add(a, o, errc::invalid_stride, "stride < 0 (mse)");
  for (method m : {method::entropy, method::max, method::percentile, method::mse}) {
    o = opts(m);
    o.bits = 1;
    add(a, o, errc::invalid_bits, "bits 1");
    o.bits = 17;
    add(a, o, errc::invalid_bits, "bits 17");
    o.bits = 2;
    add(a, o, errc::ok, "bits 2");
    o.bits = 16;
    add(a, o, errc::ok, "bits 16");
  }
  o = search_options::mxnet();
  o.bits = 17;
  add(sg, o, errc::invalid_bits, "bits 17 (mxnet)");
  add(spec(layout::signed_, 8000, -1, 1), search_options::mxnet(), errc::bins_not_odd,
      "mxnet even B");
  add(spec(layout::signed_, 8001, -1, 2), search_options::mxnet(), errc::bins_not_odd,
      "mxnet lo != -hi");
  o = opts(method::percentile);
  for (double p : {-1e-9, 100.0000001, std::nan(""), -std::numeric_limits<double>::infinity()}) {
    o.percentile = p;
    add(a, o, errc::invalid_percentile, "percentile outside [0, 100]");
  }
  o.percentile = 0.0;
  add(a, o, errc::ok, "percentile 0");
  o.percentile = 100.0;
  add(a, o, errc::ok, "percentile 100");
  add(sg, opts(method::entropy), errc::layout_mismatch, "tensorrt on signed");
  add(sg, opts(method::percentile), errc::layout_mismatch, "percentile on signed");
  add(sg, opts(method::mse), errc::layout_mismatch, "mse on signed");
  add(a, search_options::mxnet(), errc::layout_mismatch, "mxnet on abs");
  add(sg, opts(method::max), errc::ok, "max on signed");
  o = search_options::mxnet();
  o.is_unsigned = true;
  add(sg, o, errc::invalid_option, "mxnet unsigned");
  o = search_options::mxnet();
  o.start_bin = 0;
  o.stride = 0;
  add(sg, o, errc::ok, "start_bin and stride do not apply to mxnet");
  o = opts(static_cast<method>(7));
  add(a, o, errc::invalid_option, "unknown method");
  o = opts(method::entropy, static_cast<rule_set>(7));
  add(a, o, errc::invalid_option, "unknown rule set");
  o = opts(method::max, static_cast<rule_set>(7));
  add(a, o, errc::invalid_option, "unknown rule set, even where rules do not apply");
  o = opts(method::entropy);
  o.zero_bin = static_cast<zero_bin_policy>(7);
  add(a, o, errc::invalid_option, "unknown zero_bin");
  add(spec(layout::abs, 1, 0, 1), opts(method::max), errc::too_few_bins, "spec checked first");
  add(spec(layout::abs, 8, 0, 0), opts(method::max), errc::invalid_range, "spec checked first");

  for (const row& r : rows) {
    EXPECT_EQ(std::string(klcal::to_string(klcal::validate(r.s, r.o).code)),
              std::string(klcal::to_string(r.want)))
        << r.what;
    // The independent reference agrees on every row.
    const std::vector<std::uint64_t> c(r.s.bins > 0 && r.s.bins <= 8001 ? r.s.bins : 0, 1);
    klcal::reference::search_output out;
    const errc ref_code = klcal::reference::search(c, r.s, 1.0f, r.o, &out).code;
    if (r.s.bins > 0 && r.s.bins <= 8001) {
      EXPECT_EQ(std::string(klcal::to_string(ref_code)), std::string(klcal::to_string(r.want)))
          << "reference: " << r.what;
    }
  }
}

TEST(validate, accepts_exactly_what_the_reference_accepts) {
  // Over a grid with any number of simultaneous violations, validate() and the independent
  // reference must agree on valid vs invalid. (Which code wins when several rules are broken is
  // not specified by numerics.md, so only single violations are compared code for code, above.)
  // The reference is asked with an empty counts vector: on valid arguments it answers
  // invalid_count (wrong length), on invalid ones the argument's own code.
  const float nan = std::nanf("");
  const std::vector<std::pair<float, float>> ranges = {{0, 1},  {-1, 1},  {1, 1}, {0, finf},
                                                       {-1, 2}, {nan, 1}, {2, 3}};
  long cases = 0, valid = 0;
  for (std::int32_t bins : {-1, 1, 2, 3, 8, 9, 254, 255, 256, klcal::max_bins + 1}) {
    for (int k = 0; k < 3; ++k) {
      for (const auto& [lo, hi] : ranges) {
        const histogram_spec s = spec(static_cast<layout>(k), bins, lo, hi);
        for (int m = 0; m < 5; ++m) {
          for (int r = 0; r < 3; ++r) {
            for (std::int32_t start : {0, 1, 8, 300}) {
              for (std::int32_t stride : {0, 1}) {
                for (std::int32_t bits : {1, 2, 8, 17}) {
                  for (int z = 0; z < 3; ++z) {
                    for (bool uns : {false, true}) {
                      for (double pct : {50.0, 101.0}) {
                        search_options o;
                        o.meth = static_cast<method>(m);
                        o.rules = static_cast<rule_set>(r);
                        o.start_bin = start;
                        o.stride = stride;
                        o.bits = bits;
                        o.zero_bin = static_cast<zero_bin_policy>(z);
                        o.is_unsigned = uns;
                        o.percentile = pct;
                        const bool lib_ok = klcal::validate(s, o).ok();
                        klcal::reference::search_output out;
                        const errc rc = klcal::reference::search({}, s, 0.0f, o, &out).code;
                        const bool ref_ok = rc == errc::invalid_count;
                        ASSERT_EQ(lib_ok, ref_ok)
                            << "bins " << bins << " layout " << k << " lo " << lo << " hi " << hi
                            << " method " << m << " rules " << r << " start " << start << " stride "
                            << stride << " bits " << bits << " zero_bin " << z << " unsigned "
                            << uns << " pct " << pct << ": reference says " << klcal::to_string(rc);
                        ++cases;
                        valid += lib_ok;
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(valid, 1000);
  EXPECT_GT(cases, valid);
}

// Candidate counts from numerics.md 2 step 3, 3 and 4, written out here.
std::int64_t documented_count(const histogram_spec& s, const search_options& o) {
  if (o.meth == method::max || o.meth == method::percentile) return 0;
  if (o.meth == method::entropy && o.rules == rule_set::mxnet) {
    const std::int64_t l = (std::int64_t{1} << o.bits) - 1;
    return s.bins / 2 - l / 2 + 1;  // half-widths L/2 .. B/2
  }
  const std::int64_t last = o.meth == method::entropy ? s.bins : s.bins - 1;
  std::int64_t n = 0;
  for (std::int64_t i = o.start_bin; i <= last; i += o.stride) ++n;
  return n;
}

TEST(candidate_count, matches_the_documented_sequences_and_the_reference_curve) {
  int checked = 0;
  for (std::int32_t bins : {2, 3, 4, 7, 8, 9, 127, 128, 129, 255, 256, 257}) {
    for (method m : {method::entropy, method::mse, method::max, method::percentile}) {
      for (std::int32_t start : {1, 2, 3, 127, 128}) {
        for (std::int32_t stride : {1, 2, 3, 7}) {
          search_options o = opts(m);
          o.start_bin = start;
          o.stride = stride;
          o.bits = 8;
          const histogram_spec s = spec(layout::abs, bins, 0, 1);
          if (!klcal::validate(s, o).ok()) continue;
          ASSERT_EQ(klcal::candidate_count(s, o), documented_count(s, o))
              << "bins " << bins << " start " << start << " stride " << stride;
          klcal::reference::search_output out;
          ASSERT_TRUE(
              klcal::reference::search(std::vector<std::uint64_t>(bins, 1), s, 1.0f, o, &out).ok());
          ASSERT_EQ(static_cast<std::int64_t>(out.curve.size()), documented_count(s, o));
          ++checked;
        }
      }
    }
  }
  for (std::int32_t bins : {7, 9, 255, 257, 8001}) {
    for (std::int32_t bits : {2, 3, 8}) {
      search_options o = search_options::mxnet();
      o.bits = bits;
      const histogram_spec s = spec(layout::signed_, bins, -1, 1);
      if (!klcal::validate(s, o).ok()) continue;
      ASSERT_EQ(klcal::candidate_count(s, o), documented_count(s, o)) << bins << " " << bits;
      ++checked;
    }
  }
  EXPECT_EQ(klcal::candidate_count(spec(layout::signed_, 8001, -1, 1), search_options::mxnet()),
            3874);  // 127 .. 4000
  EXPECT_EQ(klcal::candidate_count(spec(layout::abs, 2048, 0, 1), search_options::tensorrt()),
            1921);  // 128 .. 2048
  EXPECT_GT(checked, 200);
}

}  // namespace
