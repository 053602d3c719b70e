// klcal::all_reduce over an in-process collective of threads (runs under the sanitizers, no MPI).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "klcal/collective.hpp"
#include "klcal/cpu_calibrator.hpp"
#include "klcal/internal/collective.hpp"

namespace {

using klcal::cpu::calibrator;

/// N ranks as threads: every collective call waits for all ranks, checks that they passed the
/// same length (an engine would hang or read garbage otherwise) and reduces.
class thread_world {
 public:
  explicit thread_world(int ranks) : ranks_(ranks), slots_(static_cast<std::size_t>(ranks)) {}

  klcal::collective rank(int r) {
    klcal::collective c;
    c.max_u64 = [this, r](std::uint64_t* d, std::size_t n) { reduce(r, d, n, true); };
    c.sum_u64 = [this, r](std::uint64_t* d, std::size_t n) { reduce(r, d, n, false); };
    return c;
  }
  int calls() const { return calls_; }
  bool lengths_differed() const { return lengths_differed_; }

  /// Runs f(rank) on every rank, each in its own thread.
  void run(const std::function<void(int)>& f) {
    std::vector<std::thread> t;
    t.reserve(static_cast<std::size_t>(ranks_));
    for (int r = 0; r < ranks_; ++r) t.emplace_back(f, r);
    for (std::thread& x : t) x.join();
  }

 private:
  void barrier() {
    std::unique_lock<std::mutex> lock(m_);
    const std::uint64_t gen = generation_;
    if (++waiting_ == ranks_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }

  void reduce(int r, std::uint64_t* d, std::size_t n, bool is_max) {
    slots_[static_cast<std::size_t>(r)] = {d, n};
    barrier();
    std::vector<std::uint64_t> out(n, 0);
    bool differ = false;
    for (const auto& [p, len] : slots_) {
      if (len != n) {
        differ = true;
        continue;
      }
      for (std::size_t i = 0; i < n; ++i) out[i] = is_max ? std::max(out[i], p[i]) : out[i] + p[i];
    }
    barrier();
    std::copy(out.begin(), out.end(), d);
    {
      const std::lock_guard<std::mutex> lock(m_);
      if (differ) lengths_differed_ = true;
      if (r == 0) ++calls_;
    }
    barrier();
  }

  int ranks_;
  std::vector<std::pair<std::uint64_t*, std::size_t>> slots_;
  std::mutex m_;
  std::condition_variable cv_;
  int waiting_ = 0;
  std::uint64_t generation_ = 0;
  int calls_ = 0;
  bool lengths_differed_ = false;
};

std::vector<float> data_of(std::uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(1 + g() % 2000);
  for (float& x : v) x = std::ldexp(normal(g), static_cast<int>(g() % 40) - 20);
  v[0] = std::numeric_limits<float>::infinity();
  return v;
}

TEST(collective, threads_reduce_to_one_process_for_every_policy) {
  const std::vector<std::function<calibrator()>> makers = {
      [] {
        return calibrator::fixed({klcal::layout::abs, 512, 0.0f, 2.0f}, 1);
      },
      [] {
        return calibrator::fixed({klcal::layout::signed_, 801, -1.0f, 1.0f}, 1);
      },
      [] { return calibrator::two_pass(512, klcal::layout::abs, 1); },
      [] { return calibrator::two_pass(801, klcal::layout::signed_, 1); },
      [] { return calibrator::streaming(512, 1); },
  };
  for (int ranks : {1, 3}) {
    for (std::size_t m = 0; m < makers.size(); ++m) {
      thread_world world(ranks);
      std::vector<std::vector<float>> data;
      for (std::uint32_t t = 0; t < 4; ++t) data.push_back(data_of(100 * m + t));
      std::vector<std::map<std::string, calibrator>> per_rank(static_cast<std::size_t>(ranks));
      world.run([&](int r) {
        auto& cals = per_rank[static_cast<std::size_t>(r)];
        for (std::size_t t = 0; t < data.size(); ++t)
          cals.emplace("t" + std::to_string(t), makers[m]());
        const bool two_pass = cals.begin()->second.policy() == klcal::range_policy::two_pass;
        auto feed = [&](bool range_pass) {
          for (std::size_t t = 0; t < data.size(); ++t) {
            // Rank r takes the r-th third (rank 2 of 3 gets nothing from tensor 0).
            const std::size_t n = data[t].size();
            std::size_t b = n * static_cast<std::size_t>(r) / static_cast<std::size_t>(ranks);
            std::size_t e = n * static_cast<std::size_t>(r + 1) / static_cast<std::size_t>(ranks);
            if (t == 0 && ranks == 3) {
              b = r == 2 ? n : n * static_cast<std::size_t>(r) / 2;
              e = r == 2 ? n : n * static_cast<std::size_t>(r + 1) / 2;
            }
            calibrator& c = cals.at("t" + std::to_string(t));
            const auto k = static_cast<std::int64_t>(e - b);
            if (range_pass)
              c.add_range(data[t].data() + b, k, klcal::dtype::f32);
            else
              c.add(data[t].data() + b, k, klcal::dtype::f32);
          }
        };
        if (two_pass) {
          feed(true);
          klcal::end_range_pass(cals, world.rank(r));
        }
        feed(false);
        klcal::all_reduce(cals, world.rank(r));
      });
      EXPECT_FALSE(world.lengths_differed());
      for (std::size_t t = 0; t < data.size(); ++t) {
        calibrator one = makers[m]();
        const auto n = static_cast<std::int64_t>(data[t].size());
        if (one.policy() == klcal::range_policy::two_pass) {
          one.add_range(data[t].data(), n, klcal::dtype::f32);
          one.end_range_pass();
        }
        one.add(data[t].data(), n, klcal::dtype::f32);
        for (int r = 0; r < ranks; ++r) {
          EXPECT_TRUE(per_rank[static_cast<std::size_t>(r)].at("t" + std::to_string(t)).state() ==
                      one.state())
              << "maker " << m << " tensor " << t << " rank " << r << " of " << ranks;
        }
      }
    }
  }
}

TEST(collective, different_tensor_counts_throw_everywhere_without_mismatched_buffers) {
  thread_world world(3);
  std::vector<std::string> errors(3);
  world.run([&](int r) {
    std::map<std::string, calibrator> cals;
    for (int t = 0; t < (r == 1 ? 5 : 4); ++t)
      cals.emplace("t" + std::to_string(t), calibrator::streaming(256, 1));
    try {
      klcal::all_reduce(cals, world.rank(r));
    } catch (const klcal::error& e) {
      errors[static_cast<std::size_t>(r)] = e.what();
    }
  });
  EXPECT_FALSE(world.lengths_differed());
  EXPECT_EQ(world.calls(), 1);  // the agreement only
  for (const std::string& e : errors) {
    EXPECT_EQ(e, errors[0]);
    EXPECT_NE(e.find("different calibrator sets"), std::string::npos) << e;
  }
}

TEST(collective, no_tensors_is_one_agreement) {
  thread_world world(2);
  world.run([&](int r) {
    std::vector<klcal::named_state> none;
    klcal::all_reduce(none, world.rank(r));
  });
  EXPECT_EQ(world.calls(), 1);
}

TEST(collective, a_collective_without_functions_is_an_error) {
  std::vector<klcal::named_state> none;
  EXPECT_THROW(klcal::all_reduce(none, klcal::collective{}), klcal::error);
}

TEST(collective, order_keys_sort_like_floats_and_round_trip) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> v = {-inf,   -3e38f, -1.0f, -1e-45f, -0.0f, 0.0f,
                                1e-45f, 1e-38f, 1.0f,  2.0f,    3e38f, inf};
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::uint64_t k = klcal::detail::order_key(v[i]);
    EXPECT_LE(k, klcal::detail::order_key_max);
    EXPECT_EQ(std::signbit(klcal::detail::from_order_key(k)), std::signbit(v[i]));
    EXPECT_EQ(klcal::detail::from_order_key(k), v[i]);
    if (i > 0) {
      EXPECT_LT(klcal::detail::order_key(v[i - 1]), k) << v[i - 1] << " " << v[i];
    }
  }
}

}  // namespace
