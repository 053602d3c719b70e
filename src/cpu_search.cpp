// CPU backend threshold search: the public entry point, task and candidate scheduling over
// threads, and the result of numerics.md 5 from each method's choice (cpu_search_<method>.cpp).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <new>
#include <thread>
#include <vector>

#include "cpu_policy.hpp"
#include "cpu_search_math.hpp"
#include "cpu_search_methods.hpp"
#include "klcal/cpu.hpp"
#include "klcal/internal/numerics.hpp"

namespace klcal::cpu {
namespace detail {

void parallel_blocks(std::int64_t count, int threads,
                     const std::function<void(std::int64_t, std::int64_t)>& f) {
  const std::int64_t nt = std::max<std::int64_t>(1, std::min<std::int64_t>(threads, count));
  if (nt == 1) {
    f(0, count);
    return;
  }
  std::atomic<bool> failed{false};
  auto guarded = [&f, &failed](std::int64_t b, std::int64_t e) noexcept {
    try {
      f(b, e);
    } catch (...) {
      failed = true;
    }
  };
  std::vector<std::thread> pool;
  std::vector<std::int64_t> orphaned;
  for (std::int64_t t = 1; t < nt; ++t) {
    const std::int64_t b = count * t / nt, e = count * (t + 1) / nt;
    try {
      pool.emplace_back(guarded, b, e);
    } catch (...) {
      orphaned.push_back(t);  // could not start a thread: run that block here
    }
  }
  guarded(0, count / nt);
  for (const std::int64_t t : orphaned) guarded(count * t / nt, count * (t + 1) / nt);
  for (auto& th : pool) th.join();
  if (failed) throw std::bad_alloc();
}

}  // namespace detail

namespace {

using detail::choice;

/// Empty or all-zero histogram (numerics.md 5.3).
bool is_trivial(const std::uint64_t* c, const histogram_spec& spec) noexcept {
  const std::int32_t zb = klcal::detail::zero_bin_index(spec.kind, spec.bins, spec.lo, spec.hi);
  for (std::int32_t j = 0; j < spec.bins; ++j)
    if (j != zb && c[j] != 0) return false;
  return true;  // also when everything, bin zb included, is empty
}

/// Searches one task with `threads` threads over its candidates. Throws std::bad_alloc only.
void search_one(const search_task& task, search_result& res, int threads) {
  const histogram_spec& spec = task.spec;
  const search_options& o = task.opts;
  const std::uint64_t* counts = task.h_counts;
  const std::int32_t B = spec.bins;
  const std::int64_t ncand = candidate_count(spec, o);
  std::vector<double> own_curve;
  double* curve = task.h_curve;
  if (curve == nullptr && ncand > 0) {
    own_curve.resize(std::size_t(ncand));
    curve = own_curve.data();
  }
  const std::uint64_t T = [&] {
    std::uint64_t s = 0;
    for (std::int32_t j = 0; j < B; ++j) s += counts[j];
    return s;
  }();
  const bool mxnet = o.meth == method::entropy && o.rules == rule_set::mxnet;
  // The mxnet rule set is symmetric int8 whatever the options say (numerics.md 5.1).
  const std::int32_t qm = mxnet ? (1 << (o.bits - 1)) - 1 : qmax(o);
  res = search_result{};

  const int cand_threads =
      ncand >= policy::min_candidates_per_thread * 2 ? threads : 1;  // tiny curves: one thread
  choice ch;
  if (o.meth == method::entropy && o.rules == rule_set::tensorrt) {
    ch = detail::search_tensorrt(task, T, curve, ncand, cand_threads);
  } else if (o.meth == method::entropy) {
    ch = detail::search_mxnet(task, T, curve, ncand, cand_threads);
  } else if (o.meth == method::mse) {
    ch = detail::search_mse(task, T, curve, ncand, cand_threads);
  } else if (o.meth == method::percentile) {
    ch = detail::search_percentile(task, T);
  } else {
    ch = detail::search_max(task);
  }

  if (T == 0 || is_trivial(counts, spec)) {
    res = search_result{};
    res.degenerate = true;
    return;
  }
  res.index = ch.index;
  res.amax = ch.amax;
  res.score = ch.score;
  res.clipped_fraction = ch.clipped;
  res.degenerate = ch.all_inf;
  res.scale = klcal::detail::quant_scale(ch.amax, qm);
}

int resolve_threads(int threads) noexcept {
  if (threads > 0) return threads;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(std::min(hc, 1024u));
}

}  // namespace

status search(const search_task* tasks, std::int32_t num_tasks, search_result* results,
              int threads) noexcept {
  if (num_tasks < 0) return errc::invalid_count;
  if (num_tasks == 0) return errc::ok;
  if (tasks == nullptr || results == nullptr) return errc::null_pointer;
  for (std::int32_t k = 0; k < num_tasks; ++k) {
    if (status s = validate(tasks[k].spec, tasks[k].opts); !s.ok()) return s;
    if (tasks[k].h_counts == nullptr) return errc::null_pointer;
  }
  const int nt = resolve_threads(threads);
  try {
    if (num_tasks >= nt || nt == 1) {
      // Whole tasks per thread, handed out dynamically; each result depends on its task only.
      std::atomic<std::int32_t> next{0};
      auto body = [&](std::int64_t, std::int64_t) {
        for (std::int32_t k; (k = next.fetch_add(1)) < num_tasks;)
          search_one(tasks[k], results[k], 1);
      };
      detail::parallel_blocks(std::min<std::int64_t>(nt, num_tasks), nt, body);
    } else {
      for (std::int32_t k = 0; k < num_tasks; ++k) search_one(tasks[k], results[k], nt);
    }
  } catch (...) {
    return errc::out_of_memory;
  }
  return errc::ok;
}

}  // namespace klcal::cpu
