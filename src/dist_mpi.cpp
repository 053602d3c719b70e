// klcal::mpi: the engine-neutral reduction (collective.cpp) over MPI_Allreduce.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "klcal/mpi.hpp"

namespace klcal::mpi {
namespace {

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  throw error(errc::comm_error, std::string("klcal::mpi: ") + what + ": " + std::string(text, len));
}

void all_reduce_u64(std::uint64_t* data, std::size_t n, MPI_Op op, MPI_Comm comm) {
  // MPI counts are int: reduce in chunks (one call for any realistic model).
  constexpr std::size_t chunk = std::numeric_limits<int>::max();
  for (std::size_t done = 0; done < n; done += chunk) {
    const std::size_t k = n - done < chunk ? n - done : chunk;
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + done, static_cast<int>(k), MPI_UINT64_T, op, comm),
              "MPI_Allreduce");
  }
}

}  // namespace

collective over(MPI_Comm comm) {
  collective c;
  c.max_u64 = [comm](std::uint64_t* d, std::size_t n) { all_reduce_u64(d, n, MPI_MAX, comm); };
  c.sum_u64 = [comm](std::uint64_t* d, std::size_t n) { all_reduce_u64(d, n, MPI_SUM, comm); };
  return c;
}

void all_reduce(std::map<std::string, cpu::calibrator>& calibrators, MPI_Comm comm) {
  klcal::all_reduce(calibrators, over(comm), "klcal::mpi::all_reduce");
}

void all_reduce(std::vector<named_state>& states, MPI_Comm comm) {
  klcal::all_reduce(states, over(comm), "klcal::mpi::all_reduce");
}

void end_range_pass(std::map<std::string, cpu::calibrator>& calibrators, MPI_Comm comm) {
  klcal::end_range_pass(calibrators, over(comm), "klcal::mpi::end_range_pass");
}

void end_range_pass(std::vector<named_state>& states, MPI_Comm comm) {
  klcal::end_range_pass(states, over(comm), "klcal::mpi::end_range_pass");
}

}  // namespace klcal::mpi
