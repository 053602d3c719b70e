// klcal::mpi under mpirun -np 4: random shardings reduce to one process over all data, bit for bit.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "klcal/collective.hpp"
#include "klcal/cpu_calibrator.hpp"
#include "klcal/mpi.hpp"
#include "klcal/reference.hpp"

namespace {

using klcal::cpu::calibrator;

int rank_of(MPI_Comm c) {
  int r = 0;
  MPI_Comm_rank(c, &r);
  return r;
}
int size_of(MPI_Comm c) {
  int s = 0;
  MPI_Comm_size(c, &s);
  return s;
}

/// One tensor's data, the same on every rank (same seed).
std::vector<float> make_data(std::uint32_t seed, int kind) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> len(0, 3000);
  std::vector<float> v(static_cast<std::size_t>(len(g)) + 1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::exponential_distribution<float> expo(3.0f);
  for (float& x : v) {
    switch (kind) {
      case 0: x = normal(g) * 4.0f; break;                           // gaussian
      case 1: x = std::max(0.0f, normal(g)) * 1e-3f; break;          // ReLU with a zero spike
      case 2: x = (g() % 2 ? 1.0f : -1.0f) * expo(g) * 1e5f; break;  // laplace, large
      case 3: x = 0.0f; break;                                       // all zeros
      default: x = std::ldexp(normal(g), static_cast<int>(g() % 200) - 100); break;  // wide
    }
  }
  if (kind == 2 && v.size() > 3) {  // NaN and Inf are counted, never binned
    v[1] = std::numeric_limits<float>::quiet_NaN();
    v[2] = -std::numeric_limits<float>::infinity();
  }
  return v;
}

/// A random split of [0, n) into batches, each given to a random rank (some get none).
struct batch {
  std::size_t begin, end;
  int rank;
};
std::vector<batch> shard(std::size_t n, int ranks, std::mt19937& g) {
  std::vector<batch> b;
  std::size_t at = 0;
  while (at < n) {
    const std::size_t len = std::min<std::size_t>(n - at, 1 + g() % 700);
    b.push_back({at, at + len, static_cast<int>(g() % static_cast<unsigned>(ranks))});
    at += len;
  }
  return b;
}

struct config {
  const char* name;
  std::function<calibrator()> make;
  bool signed_layout;
};

std::vector<config> configs() {
  klcal::histogram_spec fixed_abs{klcal::layout::abs, 2048, 0.0f, 3.0f};
  klcal::histogram_spec fixed_signed{klcal::layout::signed_, 8001, -2.5f, 2.5f};
  return {
      {"fixed_abs", [=] { return calibrator::fixed(fixed_abs, 1); }, false},
      {"fixed_signed", [=] { return calibrator::fixed(fixed_signed, 1); }, true},
      {"two_pass_abs", [] { return calibrator::two_pass(2048, klcal::layout::abs, 1); }, false},
      {"two_pass_signed", [] { return calibrator::two_pass(8001, klcal::layout::signed_, 1); },
       true},
      {"streaming", [] { return calibrator::streaming(2048, 1); }, false},
  };
}

std::vector<klcal::search_options> methods(bool signed_layout) {
  if (signed_layout) return {klcal::search_options::mxnet()};
  std::vector<klcal::search_options> m(4, klcal::search_options::tensorrt());
  m[1].meth = klcal::method::percentile;
  m[2].meth = klcal::method::mse;
  m[3].meth = klcal::method::max;
  return m;
}

template <class U, class F>
U bits_of(F f) {
  static_assert(sizeof(U) == sizeof(F), "same size");
  U u = 0;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
bool same_bits(double a, double b) {
  return bits_of<std::uint64_t>(a) == bits_of<std::uint64_t>(b);
}
bool same_bits(float a, float b) {
  return bits_of<std::uint32_t>(a) == bits_of<std::uint32_t>(b);
}

/// Every field of the two calibrators and every search result, bit for bit.
void expect_identical(const calibrator& a, const calibrator& b, const std::string& what) {
  EXPECT_TRUE(a.state() == b.state()) << what;
  EXPECT_EQ(a.counts(), b.counts()) << what;
  for (const klcal::search_options& o : methods(a.spec().kind == klcal::layout::signed_)) {
    const klcal::search_result x = a.compute(o);
    const klcal::search_result y = b.compute(o);
    EXPECT_TRUE(same_bits(x.amax, y.amax)) << what << " method " << int(o.meth);
    EXPECT_TRUE(same_bits(x.scale, y.scale)) << what << " method " << int(o.meth);
    EXPECT_EQ(x.index, y.index) << what;
    EXPECT_TRUE(same_bits(x.score, y.score)) << what;
    EXPECT_EQ(x.degenerate, y.degenerate) << what;
  }
}

/// Runs one sharded calibration of `tensors` tensors of configuration `cfg` on `comm` and checks
/// it against one process over all the data. `empty_rank`: that rank gets no data at all.
void check_sharding(MPI_Comm comm, const config& cfg, std::uint32_t seed, int empty_rank) {
  const int me = rank_of(comm);
  const int ranks = size_of(comm);
  std::mt19937 g(seed);
  std::map<std::string, calibrator> dist, single;
  std::map<std::string, std::vector<float>> data;
  std::map<std::string, std::vector<batch>> parts;
  for (int t = 0; t < 5; ++t) {
    const std::string name = "layer" + std::to_string(t) + ".out";
    data[name] = make_data(seed * 31u + static_cast<std::uint32_t>(t), t);
    parts[name] = shard(data[name].size(), ranks, g);
    if (empty_rank >= 0) {
      for (batch& b : parts[name])
        if (b.rank == empty_rank) b.rank = (empty_rank + 1) % ranks;
    }
    dist.emplace(name, cfg.make());
    single.emplace(name, cfg.make());
  }
  const bool two_pass = dist.begin()->second.policy() == klcal::range_policy::two_pass;
  auto feed = [&](bool range_pass) {
    for (auto& [name, c] : dist) {
      for (const batch& b : parts[name]) {
        if (b.rank != me) continue;
        const float* p = data[name].data() + b.begin;
        const auto n = static_cast<std::int64_t>(b.end - b.begin);
        if (range_pass)
          c.add_range(p, n, klcal::dtype::f32);
        else
          c.add(p, n, klcal::dtype::f32);
      }
    }
  };
  if (two_pass) {
    feed(true);
    klcal::mpi::end_range_pass(dist, comm);
  }
  feed(false);
  klcal::mpi::all_reduce(dist, comm);

  // One process over all the data, in one batch per tensor.
  for (auto& [name, c] : single) {
    const auto n = static_cast<std::int64_t>(data[name].size());
    if (two_pass) {
      c.add_range(data[name].data(), n, klcal::dtype::f32);
      c.end_range_pass();
    }
    c.add(data[name].data(), n, klcal::dtype::f32);
  }
  for (auto& [name, c] : single) {
    const std::string what = std::string(cfg.name) + " " + name + " seed " + std::to_string(seed) +
                             " ranks " + std::to_string(ranks);
    expect_identical(dist.at(name), c, what);
    // Independent tie to the brute-force reference: the counts of all the data binned once.
    klcal::reference::histogram h;
    ASSERT_TRUE(klcal::reference::make_histogram(c.spec(), &h).ok());
    ASSERT_TRUE(klcal::reference::add(h, data[name].data(), klcal::dtype::f32,
                                      static_cast<std::int64_t>(data[name].size()))
                    .ok());
    EXPECT_EQ(dist.at(name).counts(), h.counts) << what;
    EXPECT_EQ(dist.at(name).stats().finite_count, h.finite_count) << what;
    EXPECT_TRUE(same_bits(dist.at(name).stats().max_abs, h.max_abs)) << what;
  }
}

/// Communicators of every size 1..N (ranks >= k sit out with MPI_COMM_NULL).
template <class F>
void for_each_size(F f) {
  const int world = size_of(MPI_COMM_WORLD);
  const int me = rank_of(MPI_COMM_WORLD);
  for (int k = 1; k <= world; ++k) {
    MPI_Comm sub = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, me < k ? 0 : MPI_UNDEFINED, me, &sub);
    if (sub != MPI_COMM_NULL) {
      f(sub);
      MPI_Comm_free(&sub);
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

TEST(mpi_all_reduce, random_shardings_equal_one_process_bit_for_bit) {
  for (const config& cfg : configs()) {
    for_each_size([&](MPI_Comm comm) {
      for (std::uint32_t seed = 1; seed <= 3; ++seed) check_sharding(comm, cfg, seed, -1);
    });
  }
}

TEST(mpi_all_reduce, a_rank_without_data) {
  for (const config& cfg : configs()) {
    check_sharding(MPI_COMM_WORLD, cfg, 7, 0);
    check_sharding(MPI_COMM_WORLD, cfg, 8, size_of(MPI_COMM_WORLD) - 1);
  }
}

TEST(mpi_all_reduce, states_reduce_like_calibrators) {
  const int me = rank_of(MPI_COMM_WORLD);
  const std::vector<float> x = make_data(99, 0);
  std::vector<klcal::named_state> states;
  calibrator all = calibrator::streaming(1024, 1);
  for (int r = 0; r < size_of(MPI_COMM_WORLD); ++r) {
    // Rank r holds every size-th value from r, scaled by 4^r: ranges differ across ranks.
    std::vector<float> mine;
    for (std::size_t i = static_cast<std::size_t>(r); i < x.size();
         i += static_cast<std::size_t>(size_of(MPI_COMM_WORLD)))
      mine.push_back(std::ldexp(x[i], 2 * r));
    all.add(mine.data(), static_cast<std::int64_t>(mine.size()), klcal::dtype::f32);
    if (r == me) {
      calibrator c = calibrator::streaming(1024, 1);
      c.add(mine.data(), static_cast<std::int64_t>(mine.size()), klcal::dtype::f32);
      states.push_back({"t", c.state()});
    }
  }
  klcal::mpi::all_reduce(states, MPI_COMM_WORLD);
  EXPECT_TRUE(states[0].state == all.state());
}

/// Runs `f` on every rank; expects it to throw klcal::error on EVERY rank (checked with an
/// all-reduce) and returns this rank's message.
template <class F>
std::string expect_throw_everywhere(F f) {
  std::string message;
  int threw = 0;
  try {
    f();
  } catch (const klcal::error& e) {
    threw = 1;
    message = e.what();
  }
  int all = 0;
  MPI_Allreduce(&threw, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  EXPECT_EQ(all, 1) << "some rank did not throw (this rank: " << threw << ")";
  return message;
}

/// The same message on every rank (compared through its length and a checksum).
void expect_same_everywhere(const std::string& m) {
  long long v[2] = {static_cast<long long>(m.size()),
                    static_cast<long long>(std::hash<std::string>{}(m)&0xffffffff)};
  long long lo[2], hi[2];
  MPI_Allreduce(v, lo, 2, MPI_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(v, hi, 2, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
  EXPECT_EQ(lo[0], hi[0]) << m;
  EXPECT_EQ(lo[1], hi[1]) << m;
}

TEST(mpi_all_reduce, mismatches_throw_the_same_error_on_every_rank) {
  const int me = rank_of(MPI_COMM_WORLD);
  const klcal::histogram_spec spec{klcal::layout::abs, 256, 0.0f, 1.0f};
  std::vector<std::function<std::map<std::string, calibrator>()>> cases = {
      // a different name on rank 1
      [&] {
        std::map<std::string, calibrator> m;
        m.emplace(me == 1 ? "b" : "a", calibrator::fixed(spec, 1));
        return m;
      },
      // a different bin count on the last rank
      [&] {
        std::map<std::string, calibrator> m;
        m.emplace("a", calibrator::streaming(me == size_of(MPI_COMM_WORLD) - 1 ? 512 : 256, 1));
        return m;
      },
      // a different number of tensors on rank 0 (buffers of different lengths: must not hang)
      [&] {
        std::map<std::string, calibrator> m;
        for (int t = 0; t < (me == 0 ? 2 : 300); ++t)
          m.emplace("t" + std::to_string(t), calibrator::fixed(spec, 1));
        return m;
      },
      // a different fixed range
      [&] {
        klcal::histogram_spec s = spec;
        if (me == 2 % size_of(MPI_COMM_WORLD)) s.hi = 2.0f;
        std::map<std::string, calibrator> m;
        m.emplace("a", calibrator::fixed(s, 1));
        return m;
      },
      // a different policy
      [&] {
        std::map<std::string, calibrator> m;
        m.emplace("a", me == 0 ? calibrator::streaming(256, 1) : calibrator::fixed(spec, 1));
        return m;
      },
  };
  std::string first;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    std::map<std::string, calibrator> m = cases[i]();
    const std::map<std::string, calibrator> before = m;
    const std::string msg =
        expect_throw_everywhere([&] { klcal::mpi::all_reduce(m, MPI_COMM_WORLD); });
    EXPECT_NE(msg.find("klcal::mpi::all_reduce: the ranks hold different calibrator sets"),
              std::string::npos)
        << msg;
    expect_same_everywhere(msg);
    for (const auto& [name, c] : m) EXPECT_TRUE(c.state() == before.at(name).state()) << i;
  }
}

TEST(mpi_all_reduce, different_operations_on_the_ranks_do_not_hang) {
  const int me = rank_of(MPI_COMM_WORLD);
  std::map<std::string, calibrator> m;
  m.emplace("a", calibrator::two_pass(256, klcal::layout::abs, 1));
  const std::string msg = expect_throw_everywhere([&] {
    if (me == 0)
      klcal::mpi::all_reduce(m, MPI_COMM_WORLD);
    else
      klcal::mpi::end_range_pass(m, MPI_COMM_WORLD);
  });
  EXPECT_NE(msg.find("different calibrator sets"), std::string::npos) << msg;
}

TEST(mpi_all_reduce, an_invalid_state_on_one_rank_fails_on_every_rank) {
  const int me = rank_of(MPI_COMM_WORLD);
  calibrator c = calibrator::fixed({klcal::layout::abs, 256, 0.0f, 1.0f}, 1);
  std::vector<klcal::named_state> states{{"w", c.state()}};
  if (me == 1) states[0].state.counts.resize(3);  // broken on rank 1 only
  const std::string msg =
      expect_throw_everywhere([&] { klcal::mpi::all_reduce(states, MPI_COMM_WORLD); });
  if (me == 1)
    EXPECT_NE(msg.find("tensor 'w': invalid state: counts has 3 entries"), std::string::npos)
        << msg;
  else
    EXPECT_NE(msg.find("another rank holds an invalid calibrator"), std::string::npos) << msg;
}

TEST(mpi_all_reduce, end_range_pass_needs_two_pass_calibrators_on_every_rank) {
  std::map<std::string, calibrator> m;
  m.emplace("s", calibrator::streaming(256, 1));
  const std::string msg =
      expect_throw_everywhere([&] { klcal::mpi::end_range_pass(m, MPI_COMM_WORLD); });
  EXPECT_NE(msg.find("end_range_pass() needs a two_pass calibrator"), std::string::npos) << msg;
}

TEST(mpi_all_reduce, an_mpi_error_is_a_comm_error) {
  // With an error handler that returns, MPI's error code becomes klcal::error(errc::comm_error).
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  std::map<std::string, calibrator> m;
  m.emplace("a", calibrator::streaming(256, 1));
  try {
    klcal::mpi::all_reduce(m, MPI_COMM_NULL);
    ADD_FAILURE() << "no error";
  } catch (const klcal::error& e) {
    EXPECT_EQ(e.code().code, klcal::errc::comm_error) << e.what();
    EXPECT_NE(std::string(e.what()).find("klcal::mpi: MPI_Allreduce: "), std::string::npos)
        << e.what();
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
}

TEST(mpi_all_reduce, three_all_reduces_for_three_hundred_tensors) {
  std::map<std::string, calibrator> m;
  std::vector<float> x(64, 0.25f * static_cast<float>(rank_of(MPI_COMM_WORLD) + 1));
  for (int t = 0; t < 300; ++t) {
    auto it = m.emplace("t" + std::to_string(1000 + t), calibrator::streaming(2048, 1)).first;
    it->second.add(x.data(), static_cast<std::int64_t>(x.size()), klcal::dtype::f32);
  }
  const klcal::collective mpi = klcal::mpi::over(MPI_COMM_WORLD);
  int max_calls = 0, sum_calls = 0;
  std::size_t sum_words = 0;
  klcal::collective counted;
  counted.max_u64 = [&](std::uint64_t* d, std::size_t n) {
    ++max_calls;
    mpi.max_u64(d, n);
  };
  counted.sum_u64 = [&](std::uint64_t* d, std::size_t n) {
    ++sum_calls;
    sum_words = n;
    mpi.sum_u64(d, n);
  };
  klcal::all_reduce(m, counted);
  EXPECT_EQ(max_calls, 2);  // agreement + exponents/extrema
  EXPECT_EQ(sum_calls, 1);  // every count of every tensor in one buffer
  EXPECT_EQ(sum_words, 300u * (2048u + 3u));
  const auto ranks = static_cast<std::uint64_t>(size_of(MPI_COMM_WORLD));
  for (const auto& [name, c] : m) EXPECT_EQ(c.stats().finite_count, 64u * ranks) << name;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
