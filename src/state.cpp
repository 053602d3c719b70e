// Calibrator states: validation, exact order-free merge, equality; the statistics merge.
#include "klcal/state.hpp"

#include <cmath>
#include <cstring>
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

bool same_bits(float a, float b) noexcept {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

/// The first broken invariant of `s` (calibrator_state's comment), or ok.
status check_state(const calibrator_state& s, std::string* why) {
  auto bad = [&](status st, std::string reason) {
    if (why != nullptr) *why = std::move(reason);
    return st;
  };
  const histogram_spec& sp = s.spec;
  if (s.policy != range_policy::fixed && s.policy != range_policy::two_pass &&
      s.policy != range_policy::streaming)
    return bad(errc::invalid_option,
               "policy " + std::to_string(static_cast<int>(s.policy)) + " is not a range_policy");
  if (status st = validate(sp); !st.ok()) return bad(st, "invalid spec");
  if (s.counts.size() != static_cast<std::size_t>(sp.bins))
    return bad(errc::invalid_option, "counts has " + std::to_string(s.counts.size()) +
                                         " entries for " + std::to_string(sp.bins) + " bins");
  switch (s.policy) {
    case range_policy::fixed:
      if (!s.range_done) return bad(errc::invalid_option, "a fixed state has range_done false");
      if (s.exponent != streaming_min_exponent)
        return bad(errc::invalid_option, "a fixed state has an exponent");
      break;
    case range_policy::two_pass: {
      if (s.exponent != streaming_min_exponent)
        return bad(errc::invalid_option, "a two-pass state has an exponent");
      const float lo = sp.kind == layout::signed_ ? -sp.hi : 0.0f;
      if (!same_bits(sp.lo, lo))
        return bad(errc::invalid_option, "a two-pass range must be [0, hi) or [-hi, hi)");
      if (!s.range_done) {
        if (!same_bits(sp.hi, std::ldexp(1.0f, streaming_min_exponent)))
          return bad(errc::invalid_option, "a two-pass state before end_range_pass() has hi != 2^-64");
        for (std::uint64_t c : s.counts)
          if (c != 0)
            return bad(errc::invalid_option, "a two-pass state before end_range_pass() has counts");
      }
      break;
    }
    case range_policy::streaming:
      if (!s.range_done) return bad(errc::invalid_option, "a streaming state has range_done false");
      if ((sp.bins & (sp.bins - 1)) != 0)
        return bad(errc::bins_not_power_of_two,
                   "streaming bins " + std::to_string(sp.bins) + " is not a power of two");
      if (s.exponent < streaming_min_exponent || s.exponent > streaming_max_exponent)
        return bad(errc::invalid_option,
                   "streaming exponent " + std::to_string(s.exponent) + " is outside [-64, 127]");
      if (!detail::same_spec(sp, detail::streaming_spec(sp.bins, s.exponent)))
        return bad(errc::invalid_option, "a streaming spec must be abs [0, 2^exponent)");
      break;
  }
  const tensor_stats& t = s.stats;
  if (std::isnan(t.max_abs) || std::isnan(t.min) || std::isnan(t.max))
    return bad(errc::invalid_option, "statistics hold a NaN");
  if (t.max_abs < 0.0f) return bad(errc::invalid_option, "statistics have max_abs < 0");
  if (t.finite_count == 0 && (t.max_abs != 0.0f || t.min != HUGE_VALF || t.max != -HUGE_VALF))
    return bad(errc::invalid_option, "statistics of no finite value have a max_abs, min or max");
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
    if (plan.fold_from == 0) {
      if (status st = cpu::histogram_fold_pow2(into.counts.data(), bins, plan.fold_into); !st.ok())
        return st;
      for (std::int32_t j = 0; j < bins; ++j) into.counts[std::size_t(j)] += from.counts[std::size_t(j)];
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
         a.range_done == b.range_done && a.counts == b.counts &&
         x.finite_count == y.finite_count && x.nan_count == y.nan_count &&
         x.inf_count == y.inf_count && same_bits(x.max_abs, y.max_abs) &&
         same_bits(x.min, y.min) && same_bits(x.max, y.max);
}

}  // namespace klcal
