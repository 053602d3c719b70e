// Calibrator states: validation, exact order-free merge, equality; the statistics merge.
#include "klcal/state.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "klcal/cpu.hpp"
#include "klcal/internal/numerics.hpp"
#include "klcal/internal/range_policy.hpp"

namespace klcal {

void merge(tensor_stats& into, const tensor_stats& from) noexcept {
  detail::merge_stats(into, from);
}

namespace {

/// A float with its bit pattern for messages: "0.5 (0x3f000000)".
std::string show(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  char b[64];
  std::snprintf(b, sizeof b, "%.9g (0x%08x)", static_cast<double>(f), static_cast<unsigned>(u));
  return b;
}

/// The first broken invariant of `s` (calibrator_state's comment) with its code, or ok; the
/// reason, naming the field and its value, goes to *why.
status check_state(const calibrator_state& s, std::string* why) {
  auto bad = [&](status st, const std::string& reason) {
    if (why != nullptr) *why = reason;
    return st;
  };
  const auto policy = static_cast<unsigned>(s.policy);
  const auto kind = static_cast<unsigned>(s.spec.kind);
  if (policy > 2) {
    return bad(errc::invalid_option, "policy " + std::to_string(policy) +
                                         " is not 0 (fixed), 1 (two_pass) or 2 (streaming)");
  }
  if (kind > 1) {
    return bad(errc::invalid_option,
               "layout " + std::to_string(kind) + " is not 0 (abs) or 1 (signed)");
  }
  const histogram_spec& sp = s.spec;
  if (status st = validate(sp); !st.ok()) {
    std::string r;
    if (sp.bins < 2 || sp.bins > max_bins)
      r = "bins " + std::to_string(sp.bins) + " outside 2.." + std::to_string(max_bins);
    else if (!std::isfinite(sp.lo))
      r = "lo " + show(sp.lo) + " is not finite";
    else if (!std::isfinite(sp.hi))
      r = "hi " + show(sp.hi) + " is not finite";
    else if (!(sp.hi > sp.lo))
      r = "hi " + show(sp.hi) + " is not greater than lo " + show(sp.lo);
    else if (sp.kind == layout::abs && sp.lo != 0.0f)
      r = "lo " + show(sp.lo) + " is not 0 (abs layout)";
    else
      r = "range [" + show(sp.lo) + ", " + show(sp.hi) + ") with " + std::to_string(sp.bins) +
          " bins: " + to_string(st);
    return bad(st, r);
  }
  if (s.counts.size() != static_cast<std::size_t>(sp.bins)) {
    return bad(errc::invalid_option, "counts has " + std::to_string(s.counts.size()) +
                                         " entries, bins is " + std::to_string(sp.bins));
  }
  const std::string not_done = "range_done is 0 (only a two_pass state can be before its range)";
  switch (s.policy) {
    case range_policy::fixed:
    case range_policy::two_pass:
      if (s.exponent != streaming_min_exponent) {
        return bad(errc::invalid_option, "exponent " + std::to_string(s.exponent) + " is not " +
                                             std::to_string(streaming_min_exponent) +
                                             " (only a streaming state has an exponent)");
      }
      if (s.policy == range_policy::fixed) {
        if (!s.range_done) return bad(errc::invalid_option, not_done);
        break;
      }
      if (sp.kind == layout::signed_ && !detail::same_bits(sp.lo, -sp.hi))
        return bad(errc::invalid_option,
                   "lo " + show(sp.lo) + " is not -hi (two_pass signed range is [-hi, hi))");
      if (!s.range_done) {
        if (!detail::same_bits(sp.hi, std::ldexp(1.0f, streaming_min_exponent))) {
          return bad(errc::invalid_option, "hi " + show(sp.hi) +
                                               " before the range pass is not the placeholder 2^" +
                                               std::to_string(streaming_min_exponent));
        }
        for (std::size_t j = 0; j < s.counts.size(); ++j) {
          if (s.counts[j] != 0) {
            return bad(errc::invalid_option, "counts[" + std::to_string(j) +
                                                 "] = " + std::to_string(s.counts[j]) +
                                                 " before the range pass (must be 0)");
          }
        }
      }
      break;
    case range_policy::streaming:
      if (sp.kind != layout::abs)
        return bad(errc::invalid_option, "layout signed: a streaming state uses the abs layout");
      if ((sp.bins & (sp.bins - 1)) != 0) {
        return bad(errc::bins_not_power_of_two,
                   "bins " + std::to_string(sp.bins) + " is not a power of two (streaming)");
      }
      if (s.exponent < streaming_min_exponent || s.exponent > streaming_max_exponent) {
        return bad(errc::invalid_option, "exponent " + std::to_string(s.exponent) + " outside " +
                                             std::to_string(streaming_min_exponent) + ".." +
                                             std::to_string(streaming_max_exponent));
      }
      if (!detail::same_bits(sp.hi, std::ldexp(1.0f, s.exponent))) {
        return bad(errc::invalid_option,
                   "hi " + show(sp.hi) + " is not 2^exponent = 2^" + std::to_string(s.exponent));
      }
      if (!s.range_done) return bad(errc::invalid_option, not_done);
      break;
  }
  const tensor_stats& t = s.stats;
  if (std::isnan(t.max_abs)) return bad(errc::invalid_option, "stats.max_abs is NaN");
  if (std::isnan(t.min)) return bad(errc::invalid_option, "stats.min is NaN");
  if (std::isnan(t.max)) return bad(errc::invalid_option, "stats.max is NaN");
  if (t.max_abs < 0.0f)
    return bad(errc::invalid_option, "stats.max_abs " + show(t.max_abs) + " is negative");
  if (t.finite_count == 0) {
    if (t.max_abs != 0.0f)
      return bad(errc::invalid_option, "stats.max_abs " + show(t.max_abs) + " with finite_count 0");
    if (t.min != std::numeric_limits<float>::infinity())
      return bad(errc::invalid_option,
                 "stats.min " + show(t.min) + " with finite_count 0 (must be +inf)");
    if (t.max != -std::numeric_limits<float>::infinity())
      return bad(errc::invalid_option,
                 "stats.max " + show(t.max) + " with finite_count 0 (must be -inf)");
  }
  return {};
}

}  // namespace

status validate(const calibrator_state& s) noexcept {
  try {
    return check_state(s, nullptr);
  } catch (...) {  // std::to_string cannot throw here without a reason string; be safe anyway
    return errc::out_of_memory;
  }
}

std::string describe_invalid(const calibrator_state& s) {
  std::string why;
  return check_state(s, &why).ok() ? std::string() : why;
}

status merge(calibrator_state& into, const calibrator_state& from) noexcept {
  if (status st = validate(into); !st.ok()) return st;
  if (status st = validate(from); !st.ok()) return st;
  const detail::range_state a = detail::range_state::of(into);
  detail::range_state::merge_plan plan;
  if (status st = a.plan_merge(detail::range_state::of(from), &plan, nullptr); !st.ok()) return st;
  const std::int32_t bins = into.spec.bins;
  if (plan.add_counts) {
    // Folds are pairwise sums, so folding then adding is exact in uint64 and gives the same
    // counts whichever state is `into`.
    // Only streaming plans fold; other bin counts need not be powers of two (e.g. mxnet's odd
    // ones), so histogram_fold_pow2 is called only when there is something to fold.
    if (plan.fold_from == 0) {
      if (plan.fold_into > 0) {
        if (status st = cpu::histogram_fold_pow2(into.counts.data(), bins, plan.fold_into);
            !st.ok())
          return st;
      }
      for (std::int32_t j = 0; j < bins; ++j)
        into.counts[std::size_t(j)] += from.counts[std::size_t(j)];
    } else {
      std::vector<std::uint64_t> other;
      try {
        other = from.counts;
      } catch (...) {
        return errc::out_of_memory;
      }
      if (status st = cpu::histogram_fold_pow2(other.data(), bins, plan.fold_from); !st.ok())
        return st;
      if (status st = cpu::histogram_fold_pow2(into.counts.data(), bins, plan.fold_into); !st.ok())
        return st;
      for (std::int32_t j = 0; j < bins; ++j) into.counts[std::size_t(j)] += other[std::size_t(j)];
    }
  }
  detail::merge_stats(into.stats, from.stats);
  detail::range_state merged = a;
  merged.apply_merge(plan);
  merged.store(into);
  return {};
}

bool operator==(const calibrator_state& a, const calibrator_state& b) noexcept {
  const tensor_stats& x = a.stats;
  const tensor_stats& y = b.stats;
  return a.policy == b.policy && detail::same_spec(a.spec, b.spec) && a.exponent == b.exponent &&
         a.range_done == b.range_done && a.counts == b.counts && x.finite_count == y.finite_count &&
         x.nan_count == y.nan_count && x.inf_count == y.inf_count &&
         detail::same_bits(x.max_abs, y.max_abs) && detail::same_bits(x.min, y.min) &&
         detail::same_bits(x.max, y.max);
}

}  // namespace klcal
