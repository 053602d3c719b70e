// CPU calibrator: the shared range policy (range_policy.cpp) applied to host counts.
#include "klcal/cpu_calibrator.hpp"

#include <string>
#include <utility>

#include "klcal/cpu.hpp"
#include "klcal/internal/range_policy.hpp"

namespace klcal::cpu {
namespace {

const std::string who = "klcal::cpu::calibrator";

calibrator_state empty_state(const detail::range_state& r) {
  calibrator_state s;
  r.store(s);
  s.counts.assign(static_cast<std::size_t>(r.spec.bins), 0);
  return s;
}

}  // namespace

calibrator calibrator::fixed(const histogram_spec& spec, int threads) {
  return calibrator(empty_state(detail::range_state::fixed(spec, who)), threads);
}

calibrator calibrator::two_pass(std::int32_t bins, layout kind, int threads) {
  return calibrator(empty_state(detail::range_state::two_pass(bins, kind, who)), threads);
}

calibrator calibrator::streaming(std::int32_t bins, int threads) {
  return calibrator(empty_state(detail::range_state::streaming(bins, who)), threads);
}

calibrator calibrator::from_state(calibrator_state s, int threads) {
  if (status st = validate(s); !st.ok())
    detail::fail(st, who, "from_state: " + describe_invalid(s));
  return calibrator(std::move(s), threads);
}

void calibrator::add(const void* h_in, std::int64_t n, dtype t) {
  detail::range_state r = detail::range_state::of(state_);
  r.require_binning(who);
  if (r.policy != range_policy::streaming) {
    // fixed: counts and statistics in one pass; two-pass: the statistics came from add_range().
    tensor_stats* st = r.policy == range_policy::fixed ? &state_.stats : nullptr;
    detail::check(histogram_accumulate(h_in, t, n, state_.spec, state_.counts.data(), st, threads_),
                  who, "add");
    return;
  }
  // Streaming: the batch's max |x| decides the range before any value is binned.
  tensor_stats batch;
  detail::check(tensor_stats_accumulate(h_in, t, n, &batch, threads_), who, "add");
  if (n == 0) return;
  if (const std::int32_t doublings = r.grow_for(batch.max_abs); doublings > 0)
    detail::check(histogram_fold_pow2(state_.counts.data(), r.spec.bins, doublings), who, "add");
  r.store(state_);
  klcal::merge(state_.stats, batch);
  detail::check(
      histogram_accumulate(h_in, t, n, state_.spec, state_.counts.data(), nullptr, threads_), who,
      "add");
}

void calibrator::add_range(const void* h_in, std::int64_t n, dtype t) {
  detail::range_state::of(state_).require_range_pass(who);
  detail::check(tensor_stats_accumulate(h_in, t, n, &state_.stats, threads_), who, "add_range");
}

void calibrator::end_range_pass() {
  detail::range_state r = detail::range_state::of(state_);
  r.end_range_pass(state_.stats.max_abs, who);
  r.store(state_);
}

void calibrator::merge(const calibrator& other) {
  if (this == &other) detail::fail(errc::invalid_option, who, "merge() with itself");
  std::string why;
  detail::range_state::merge_plan plan;
  // The same checks klcal::merge makes, here with the reason for the message.
  detail::check(detail::range_state::of(state_).plan_merge(detail::range_state::of(other.state_),
                                                           &plan, &why),
                who, why);
  detail::check(klcal::merge(state_, other.state_), who, "merge()");
}

void calibrator::reset() {
  detail::range_state r = detail::range_state::of(state_);
  r.reset();
  state_ = empty_state(r);
}

search_result calibrator::compute(const search_options& opts, std::vector<double>* curve) const {
  detail::range_state::of(state_).require_search(opts, who);
  search_task task;
  task.h_counts = state_.counts.data();
  task.spec = state_.spec;
  task.max_abs = state_.stats.max_abs;
  task.opts = opts;
  if (curve != nullptr) {
    curve->assign(static_cast<std::size_t>(candidate_count(state_.spec, opts)), 0.0);
    task.h_curve = curve->data();
  }
  search_result r;
  detail::check(search(&task, 1, &r, threads_), who, "compute");
  return r;
}

}  // namespace klcal::cpu
