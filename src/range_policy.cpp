// Range policies of numerics.md 1.5 (fixed, two-pass, streaming), shared by both calibrators.
#include "klcal/internal/range_policy.hpp"

#include <cmath>
#include <string>

#include "klcal/internal/numerics.hpp"

namespace klcal::detail {

void fail(status s, const std::string& who, const std::string& what) {
  throw error(s, who + ": " + what + ": " + to_string(s));
}

histogram_spec streaming_spec(std::int32_t bins, std::int32_t exponent) noexcept {
  histogram_spec s;
  s.kind = layout::abs;
  s.bins = bins;
  s.lo = 0.0f;
  s.hi = std::ldexp(1.0f, exponent);
  return s;
}

histogram_spec two_pass_spec(layout kind, std::int32_t bins, float hi) noexcept {
  histogram_spec s;
  s.kind = kind;
  s.bins = bins;
  s.hi = hi;
  s.lo = kind == layout::signed_ ? -hi : 0.0f;
  return s;
}

bool same_spec(const histogram_spec& a, const histogram_spec& b) noexcept {
  return a.kind == b.kind && a.bins == b.bins && same_bits(a.lo, b.lo) && same_bits(a.hi, b.hi);
}

range_state range_state::fixed(const histogram_spec& spec, const std::string& who) {
  check(validate(spec), who, "fixed(spec)");
  range_state r;
  r.policy = range_policy::fixed;
  r.spec = spec;
  return r;
}

range_state range_state::two_pass(std::int32_t bins, layout kind, const std::string& who) {
  if (kind != layout::abs && kind != layout::signed_)
    fail(errc::invalid_option, who, "two_pass(kind)");
  range_state r;
  r.policy = range_policy::two_pass;
  // hi = 2^-64 is a placeholder until end_range_pass().
  r.spec = two_pass_spec(kind, bins, std::ldexp(1.0f, streaming_min_exponent));
  r.range_done = false;
  check(validate(r.spec), who, "two_pass(bins)");
  return r;
}

range_state range_state::streaming(std::int32_t bins, const std::string& who) {
  range_state r;
  r.policy = range_policy::streaming;
  r.spec = streaming_spec(bins, streaming_min_exponent);
  check(validate(r.spec), who, "streaming(bins)");
  if ((bins & (bins - 1)) != 0) fail(errc::bins_not_power_of_two, who, "streaming(bins)");
  return r;
}

range_state range_state::of(const calibrator_state& s) noexcept {
  range_state r;
  r.policy = s.policy;
  r.spec = s.spec;
  r.exponent = s.exponent;
  r.range_done = s.range_done;
  return r;
}

void range_state::store(calibrator_state& s) const noexcept {
  s.policy = policy;
  s.spec = spec;
  s.exponent = exponent;
  s.range_done = range_done;
}

void range_state::require_binning(const std::string& who) const {
  if (!range_done) fail(errc::invalid_option, who, "add() before end_range_pass()");
}

void range_state::require_range_pass(const std::string& who) const {
  if (policy != range_policy::two_pass)
    fail(errc::invalid_option, who, "add_range() needs two_pass");
  if (range_done) fail(errc::invalid_option, who, "add_range() after end_range_pass()");
}

void range_state::require_search(const search_options& opts, const std::string& who) const {
  if (!range_done) fail(errc::invalid_option, who, "compute() before end_range_pass()");
  check(validate(spec, opts), who, "compute");
}

std::int32_t range_state::grow_for(float batch_max_abs) noexcept {
  if (policy != range_policy::streaming) return 0;
  std::int32_t e = exponent;
  while (e < streaming_max_exponent && static_cast<double>(batch_max_abs) >= std::ldexp(1.0, e))
    ++e;
  const std::int32_t doublings = e - exponent;
  if (doublings > 0) {
    exponent = e;
    spec = streaming_spec(spec.bins, e);
  }
  return doublings;
}

void range_state::require_open_range_pass(const std::string& who) const {
  if (policy != range_policy::two_pass)
    fail(errc::invalid_option, who, "end_range_pass() needs two_pass");
  if (range_done) fail(errc::invalid_option, who, "end_range_pass() called twice");
}

void range_state::end_range_pass(float max_abs, const std::string& who) {
  require_open_range_pass(who);
  // numerics.md 1.5: hi = max(max_abs, 2^-64); the floor also covers subnormal maxima.
  const float floor = std::ldexp(1.0f, streaming_min_exponent);
  const histogram_spec s = two_pass_spec(spec.kind, spec.bins, max_abs > floor ? max_abs : floor);
  check(validate(s), who, "end_range_pass");
  spec = s;
  range_done = true;
}

void range_state::reset() noexcept {
  if (policy == range_policy::streaming) {
    exponent = streaming_min_exponent;
    spec = streaming_spec(spec.bins, exponent);
  } else if (policy == range_policy::two_pass) {
    range_done = false;
    spec = two_pass_spec(spec.kind, spec.bins, std::ldexp(1.0f, streaming_min_exponent));
  }
}

status range_state::plan_merge(const range_state& from, merge_plan* plan, std::string* why) const {
  auto refuse = [&](const char* reason) {
    if (why != nullptr) *why = reason;
    return status{errc::invalid_option};
  };
  if (policy != from.policy) return refuse("merge() of different range policies");
  if (spec.bins != from.spec.bins) return refuse("merge() of different bin counts");
  merge_plan p;
  switch (policy) {
    case range_policy::streaming: {
      const std::int32_t e = exponent > from.exponent ? exponent : from.exponent;
      p.fold_into = e - exponent;
      p.fold_from = e - from.exponent;
      break;
    }
    case range_policy::two_pass:
      if (range_done != from.range_done)
        return refuse("merge() of a two-pass calibrator before end_range_pass() with one after it");
      if (spec.kind != from.spec.kind) return refuse("merge() of different layouts");
      // Before end_range_pass() both hold only statistics (every count is 0).
      if (!range_done) {
        p.add_counts = false;
        break;
      }
      if (!same_spec(spec, from.spec)) return refuse("merge() of different ranges");
      break;
    case range_policy::fixed:
      if (!same_spec(spec, from.spec)) return refuse("merge() of different specs");
      break;
  }
  *plan = p;
  return {};
}

void range_state::apply_merge(const merge_plan& plan) noexcept {
  if (policy == range_policy::streaming && plan.fold_into > 0) {
    exponent += plan.fold_into;
    spec = streaming_spec(spec.bins, exponent);
  }
}

}  // namespace klcal::detail
