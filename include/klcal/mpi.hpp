// klcal::mpi (optional component klcal::mpi): exact all-reduce of CPU calibrators over MPI.
#pragma once

#include <mpi.h>

#include <map>
#include <string>
#include <vector>

#include "klcal/collective.hpp"
#include "klcal/cpu_calibrator.hpp"
#include "klcal/state.hpp"

namespace klcal::mpi {

/// The collective of klcal/collective.hpp over `comm`: MPI_Allreduce of MPI_UINT64_T with
/// MPI_MAX and MPI_SUM, in place. An MPI error code (with an error handler that returns) throws
/// klcal::error(errc::comm_error) with MPI's message. `comm` must outlive the returned value.
collective over(MPI_Comm comm);

/// klcal::all_reduce over `comm`: afterwards every rank holds the calibrators of one process
/// over the data of all ranks, bit for bit (docs/distributed.md). Collective: every rank of
/// `comm` calls it with the same tensor names, policies, bins, layouts and fixed ranges; a
/// mismatch throws errc::invalid_option on every rank before anything is reduced. Three
/// MPI_Allreduce calls in all, whatever the number of tensors.
void all_reduce(std::map<std::string, cpu::calibrator>& calibrators, MPI_Comm comm);
/// The same for states (e.g. read from state files), in the given order.
void all_reduce(std::vector<named_state>& states, MPI_Comm comm);

/// klcal::end_range_pass over `comm`: every two-pass calibrator ends its first pass with the
/// range of all ranks' data (MAX of max |x|), so all ranks bin into the same range. Two
/// MPI_Allreduce calls.
void end_range_pass(std::map<std::string, cpu::calibrator>& calibrators, MPI_Comm comm);
/// The same for states.
void end_range_pass(std::vector<named_state>& states, MPI_Comm comm);

}  // namespace klcal::mpi
