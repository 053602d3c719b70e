// Exact all-reduce of calibrator states over any engine: agreement digest, MAX phase, SUM phase.
#include "klcal/collective.hpp"

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "klcal/cpu.hpp"
#include "klcal/internal/calibrator_access.hpp"
#include "klcal/internal/collective.hpp"
#include "klcal/internal/range_policy.hpp"

namespace klcal {
namespace detail {
namespace {

class fnv1a {
 public:
  void bytes(const void* p, std::size_t n) noexcept {
    const auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) {
      h_ ^= b[i];
      h_ *= 0x100000001b3ull;
    }
  }
  template <class T>
  void value(const T& v) noexcept {
    bytes(&v, sizeof v);
  }
  std::uint64_t get() const noexcept { return h_; }

 private:
  std::uint64_t h_ = 0xcbf29ce484222325ull;
};

std::uint32_t bits_of(float f) noexcept {
  std::uint32_t u = 0;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

}  // namespace

std::uint64_t reduction_digest(collective_op op,
                               const std::vector<reduce_entry>& entries) noexcept {
  fnv1a h;
  h.value(static_cast<std::uint8_t>(op));
  h.value(static_cast<std::uint64_t>(entries.size()));
  for (const reduce_entry& e : entries) {
    h.value(static_cast<std::uint64_t>(e.name->size()));
    h.bytes(e.name->data(), e.name->size());
    const calibrator_state& s = *e.range;
    h.value(static_cast<std::uint8_t>(s.policy));
    h.value(static_cast<std::uint8_t>(s.spec.kind));
    h.value(s.spec.bins);
    h.value(static_cast<std::uint8_t>(s.range_done));
    // Fixed and finished two-pass states merge only with identical ranges (numerics.md 1.4).
    if (s.policy == range_policy::fixed || (s.policy == range_policy::two_pass && s.range_done)) {
      h.value(bits_of(s.spec.lo));
      h.value(bits_of(s.spec.hi));
    }
  }
  return h.get() & digest_mask;
}

void agree(const collective& comm, std::uint64_t digest, const std::string& local_error,
           const std::string& who) {
  if (!comm.max_u64 || !comm.sum_u64) fail(errc::null_pointer, who, "collective without functions");
  // MAX of d and of (mask - d): equal digests on every rank iff max(d) == min(d).
  std::uint64_t w[3] = {digest, digest_mask - digest, local_error.empty() ? 0u : 1u};
  comm.max_u64(w, 3);
  if (w[2] != 0) {
    fail(errc::invalid_option, who,
         local_error.empty() ? "another rank holds an invalid calibrator (its error names it); "
                               "nothing was reduced"
                             : local_error + "; nothing was reduced");
  }
  if (w[0] != digest_mask - w[1]) {
    fail(errc::invalid_option, who,
         "the ranks hold different calibrator sets (tensor names or order, number of tensors, "
         "range policy, bins, layout, two-pass phase or fixed range differ, or the ranks are in "
         "different operations); nothing was reduced");
  }
}

std::uint64_t order_key(float f) noexcept {
  const std::uint32_t u = bits_of(f);
  return (u & 0x80000000u) != 0 ? std::uint64_t{~u} : std::uint64_t{u | 0x80000000u};
}

float from_order_key(std::uint64_t key) noexcept {
  const auto k = static_cast<std::uint32_t>(key);
  const std::uint32_t u = (k & 0x80000000u) != 0 ? (k & 0x7fffffffu) : ~k;
  float f = 0.0f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace detail

namespace {

struct item {
  const std::string* name;
  calibrator_state* state;
};

std::vector<detail::reduce_entry> entries_of(const std::vector<item>& items) {
  std::vector<detail::reduce_entry> e;
  e.reserve(items.size());
  for (const item& i : items) e.push_back({i.name, i.state});
  return e;
}

/// The first invalid local state, as "tensor 'NAME': reason" ("" when all are valid).
std::string local_problem(const std::vector<item>& items) {
  for (const item& i : items) {
    if (!validate(*i.state).ok())
      return "tensor '" + *i.name + "': invalid state: " + describe_invalid(*i.state);
  }
  return {};
}

void reduce_items(const std::vector<item>& items, const collective& comm, const std::string& who) {
  detail::agree(comm,
                detail::reduction_digest(detail::collective_op::all_reduce, entries_of(items)),
                local_problem(items), who);
  const std::size_t n = items.size();

  // MAX phase: per tensor the streaming exponent (offset to be >= 0), max_abs, max, and min as
  // a reversed key.
  std::vector<std::uint64_t> mx(4 * n);
  for (std::size_t i = 0; i < n; ++i) {
    const calibrator_state& s = *items[i].state;
    mx[4 * i] = s.policy == range_policy::streaming
                    ? static_cast<std::uint64_t>(s.exponent - streaming_min_exponent)
                    : 0;
    mx[4 * i + 1] = detail::order_key(s.stats.max_abs);
    mx[4 * i + 2] = detail::order_key(s.stats.max);
    mx[4 * i + 3] = detail::order_key_max - detail::order_key(s.stats.min);
  }
  if (n > 0) comm.max_u64(mx.data(), mx.size());

  // SUM phase: the counts of every state that has any (two-pass states in their first pass have
  // none), each folded locally to the agreed streaming exponent, then 3 counters per tensor.
  std::vector<detail::range_state> ranges(n);
  std::vector<std::size_t> offset(n, 0);
  std::size_t words = 0;
  for (std::size_t i = 0; i < n; ++i) {
    ranges[i] = detail::range_state::of(*items[i].state);
    offset[i] = words;
    if (ranges[i].range_done) words += static_cast<std::size_t>(ranges[i].spec.bins);
  }
  const std::size_t counters = words;
  words += 3 * n;
  std::vector<std::uint64_t> sum(words);
  for (std::size_t i = 0; i < n; ++i) {
    const calibrator_state& s = *items[i].state;
    if (ranges[i].range_done) {
      std::uint64_t* c = sum.data() + offset[i];
      std::memcpy(c, s.counts.data(), s.counts.size() * sizeof(std::uint64_t));
      if (s.policy == range_policy::streaming) {
        // The same fold plan a pairwise merge with the largest state would make.
        detail::range_state::merge_plan plan;
        plan.fold_into = static_cast<std::int32_t>(mx[4 * i]) + streaming_min_exponent - s.exponent;
        detail::check(cpu::histogram_fold_pow2(c, s.spec.bins, plan.fold_into), who, "fold");
        ranges[i].apply_merge(plan);
      }
    }
    sum[counters + 3 * i] = s.stats.finite_count;
    sum[counters + 3 * i + 1] = s.stats.nan_count;
    sum[counters + 3 * i + 2] = s.stats.inf_count;
  }
  if (n > 0) comm.sum_u64(sum.data(), sum.size());

  // Nothing was changed before both collectives returned.
  for (std::size_t i = 0; i < n; ++i) {
    calibrator_state& s = *items[i].state;
    ranges[i].store(s);
    if (ranges[i].range_done) {
      std::memcpy(s.counts.data(), sum.data() + offset[i], s.counts.size() * sizeof(std::uint64_t));
    }
    s.stats.finite_count = sum[counters + 3 * i];
    s.stats.nan_count = sum[counters + 3 * i + 1];
    s.stats.inf_count = sum[counters + 3 * i + 2];
    s.stats.max_abs = detail::from_order_key(mx[4 * i + 1]);
    s.stats.max = detail::from_order_key(mx[4 * i + 2]);
    s.stats.min = detail::from_order_key(detail::order_key_max - mx[4 * i + 3]);
  }
}

void end_range_items(const std::vector<item>& items, const collective& comm,
                     const std::string& who) {
  std::string problem = local_problem(items);
  for (std::size_t i = 0; i < items.size() && problem.empty(); ++i) {
    const calibrator_state& s = *items[i].state;
    if (s.policy != range_policy::two_pass)
      problem = "tensor '" + *items[i].name + "': end_range_pass() needs a two_pass calibrator";
    else if (s.range_done)
      problem = "tensor '" + *items[i].name + "': end_range_pass() after the first pass ended";
  }
  detail::agree(comm,
                detail::reduction_digest(detail::collective_op::end_range_pass, entries_of(items)),
                problem, who);
  const std::size_t n = items.size();
  std::vector<std::uint64_t> mx(n);
  for (std::size_t i = 0; i < n; ++i) mx[i] = detail::order_key(items[i].state->stats.max_abs);
  if (n > 0) comm.max_u64(mx.data(), n);
  // Every new range first (the same on every rank, so a range error is thrown everywhere), then
  // all are stored.
  std::vector<detail::range_state> ranges(n);
  for (std::size_t i = 0; i < n; ++i) {
    ranges[i] = detail::range_state::of(*items[i].state);
    ranges[i].end_range_pass(detail::from_order_key(mx[i]),
                             who + ": tensor '" + *items[i].name + "'");
  }
  for (std::size_t i = 0; i < n; ++i) ranges[i].store(*items[i].state);
}

std::vector<item> items_of(std::vector<named_state>& states) {
  std::vector<item> items;
  items.reserve(states.size());
  for (named_state& s : states) items.push_back({&s.name, &s.state});
  return items;
}

std::vector<item> items_of(std::map<std::string, cpu::calibrator>& calibrators) {
  std::vector<item> items;
  items.reserve(calibrators.size());
  for (auto& [name, c] : calibrators)
    items.push_back({&name, &detail::cpu_calibrator_access::state(c)});
  return items;
}

}  // namespace

void all_reduce(std::vector<named_state>& states, const collective& comm, const std::string& who) {
  reduce_items(items_of(states), comm, who);
}

void all_reduce(std::map<std::string, cpu::calibrator>& calibrators, const collective& comm,
                const std::string& who) {
  reduce_items(items_of(calibrators), comm, who);
}

void end_range_pass(std::vector<named_state>& states, const collective& comm,
                    const std::string& who) {
  end_range_items(items_of(states), comm, who);
}

void end_range_pass(std::map<std::string, cpu::calibrator>& calibrators, const collective& comm,
                    const std::string& who) {
  end_range_items(items_of(calibrators), comm, who);
}

}  // namespace klcal
