// Example: data-parallel calibration on MPI ranks; the all-reduced result equals one process.
// Run: mpirun -np 4 ./mpi_calibrate
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <klcal/mpi.hpp>
#include <map>
#include <string>
#include <vector>

/// Batch b of tensor t: the same values whichever rank reads it.
std::vector<float> batch(int t, int b) {
  std::vector<float> x(4096);
  for (std::size_t k = 0; k < x.size(); ++k) {
    const auto i = static_cast<std::uint64_t>(b) * x.size() + k;
    const double u = static_cast<double>((i * 2654435761u + t * 97u) % 1000003) / 1000003.0;
    x[k] = static_cast<float>((t + 1) * (u < 0.5 ? -1.0 : 1.0) * -std::log(1.0 - u));
  }
  return x;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const int tensors = 3, batches = 10;
  int rc = 0;
  try {
    // Every rank creates the same named calibrators; std::map orders them the same everywhere.
    std::map<std::string, klcal::cpu::calibrator> streaming, two_pass;
    for (int t = 0; t < tensors; ++t) {
      streaming.emplace("layer" + std::to_string(t), klcal::cpu::calibrator::streaming(2048));
      two_pass.emplace("layer" + std::to_string(t), klcal::cpu::calibrator::two_pass(2048));
    }
    // Rank r calibrates batches r, r + ranks, ... (a rank may have none).
    for (int b = rank; b < batches; b += ranks) {
      for (int t = 0; t < tensors; ++t) {
        const std::vector<float> x = batch(t, b);
        const auto n = static_cast<std::int64_t>(x.size());
        streaming.at("layer" + std::to_string(t)).add(x.data(), n, klcal::dtype::f32);
        two_pass.at("layer" + std::to_string(t)).add_range(x.data(), n, klcal::dtype::f32);
      }
    }
    klcal::mpi::all_reduce(streaming, MPI_COMM_WORLD);     // one SUM for all tensors
    klcal::mpi::end_range_pass(two_pass, MPI_COMM_WORLD);  // every rank: the same range
    for (int b = rank; b < batches; b += ranks) {
      for (int t = 0; t < tensors; ++t) {
        const std::vector<float> x = batch(t, b);
        two_pass.at("layer" + std::to_string(t))
            .add(x.data(), static_cast<std::int64_t>(x.size()), klcal::dtype::f32);
      }
    }
    klcal::mpi::all_reduce(two_pass, MPI_COMM_WORLD);

    // Check: one process over all the batches gives the same state, bit for bit.
    bool exact = true;
    for (int t = 0; t < tensors; ++t) {
      auto one = klcal::cpu::calibrator::streaming(2048);
      for (int b = 0; b < batches; ++b) {
        const std::vector<float> x = batch(t, b);
        one.add(x.data(), static_cast<std::int64_t>(x.size()), klcal::dtype::f32);
      }
      exact = exact && one.state() == streaming.at("layer" + std::to_string(t)).state();
    }
    if (rank == 0) {
      for (const auto& [name, c] : two_pass) {
        const klcal::search_result r = c.compute(klcal::search_options::tensorrt());
        std::printf("%s: amax=%g scale=%g (%d ranks)\n", name.c_str(), r.amax, r.scale, ranks);
      }
      std::printf("streaming all-reduce equals one process: %s\n", exact ? "yes" : "NO");
    }
    rc = exact ? 0 : 1;
  } catch (const klcal::error& e) {
    std::fprintf(stderr, "rank %d: klcal: %s\n", rank, e.what());
    rc = 1;
  }
  MPI_Finalize();
  return rc;
}
