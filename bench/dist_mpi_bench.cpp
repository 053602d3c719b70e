// klcal::mpi::all_reduce cost: N tensors x B bins over the ranks of MPI_COMM_WORLD, against a bare
// MPI_Allreduce of the same number of words (docs/distributed.md has the command and numbers).
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "klcal/cpu_calibrator.hpp"
#include "klcal/mpi.hpp"

namespace {

struct timing {
  double median_ms, min_ms;
};

/// Times f() `reps` times (after one warm-up): each sample is the slowest rank's time between two
/// barriers. `prepare` runs untimed before each sample.
timing measure(int reps, const std::function<void()>& prepare, const std::function<void()>& f) {
  std::vector<double> t;
  for (int i = 0; i <= reps; ++i) {
    prepare();
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    f();
    double dt = MPI_Wtime() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (i > 0) t.push_back(dt * 1e3);
  }
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], t.front()};
}

int arg(int argc, char** argv, const char* name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atoi(argv[i + 1]);
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const int tensors = arg(argc, argv, "--tensors", 300);
  const int bins = arg(argc, argv, "--bins", 2048);
  const int reps = arg(argc, argv, "--reps", 30);

  // Streaming calibrators with data whose range differs by rank, so the reduction folds.
  std::map<std::string, klcal::cpu::calibrator> base, fixed_base;
  std::mt19937 g(static_cast<std::uint32_t>(rank + 1));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(4096);
  const klcal::histogram_spec spec{klcal::layout::abs, bins, 0.0f, 8.0f};
  for (int t = 0; t < tensors; ++t) {
    for (float& v : x) v = std::ldexp(normal(g), rank + t % 7);
    char name[64];
    std::snprintf(name, sizeof name, "model.layers.%03d.out", t);
    auto s = base.emplace(name, klcal::cpu::calibrator::streaming(bins, 1)).first;
    s->second.add(x.data(), static_cast<std::int64_t>(x.size()), klcal::dtype::f32);
    auto f = fixed_base.emplace(name, klcal::cpu::calibrator::fixed(spec, 1)).first;
    f->second.add(x.data(), static_cast<std::int64_t>(x.size()), klcal::dtype::f32);
  }

  std::map<std::string, klcal::cpu::calibrator> work;
  const timing streaming = measure(
      reps, [&] { work = base; }, [&] { klcal::mpi::all_reduce(work, MPI_COMM_WORLD); });
  const timing fixed = measure(
      reps, [&] { work = fixed_base; }, [&] { klcal::mpi::all_reduce(work, MPI_COMM_WORLD); });
  const std::size_t words =
      static_cast<std::size_t>(tensors) * (static_cast<std::size_t>(bins) + 3);
  std::vector<std::uint64_t> buf(words, 1);
  const timing bare = measure(
      reps, [] {},
      [&] {
        MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(words), MPI_UINT64_T, MPI_SUM,
                      MPI_COMM_WORLD);
      });
  if (rank == 0) {
    std::printf("ranks %d, %d tensors x %d bins (%.2f MB of counts per rank), %d reps\n", ranks,
                tensors, bins, static_cast<double>(words) * 8 / 1e6, reps);
    std::printf("%-44s %10s %10s\n", "", "median ms", "min ms");
    std::printf("%-44s %10.2f %10.2f\n", "klcal::mpi::all_reduce, streaming (folds)",
                streaming.median_ms, streaming.min_ms);
    std::printf("%-44s %10.2f %10.2f\n", "klcal::mpi::all_reduce, fixed", fixed.median_ms,
                fixed.min_ms);
    std::printf("%-44s %10.2f %10.2f\n", "bare MPI_Allreduce SUM of the same words", bare.median_ms,
                bare.min_ms);
  }
  MPI_Finalize();
  return 0;
}
