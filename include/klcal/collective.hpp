// Exact all-reduce of many calibrators across processes over any collective engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "klcal/cpu_calibrator.hpp"
#include "klcal/state.hpp"

namespace klcal {

/// The two in-place all-reduces a distributed reduction needs from an engine (MPI, gloo,
/// torch.distributed, ...); klcal/mpi.hpp provides one over an MPI_Comm. Every rank calls them
/// in the same order with buffers of the same length (the reduction makes sure of that before
/// it sends anything rank-dependent). Values given to max_u64 are always below 2^63, so an
/// engine with only signed 64-bit integers may reduce them as int64; sum_u64 is a sum modulo
/// 2^64, which two's-complement int64 addition gives bit for bit. Either may throw; the error
/// then propagates (the reduction leaves the calibrators in an unspecified but valid state).
struct collective {
  /// data[i] = max over all ranks of data[i], for i < n, on every rank.
  std::function<void(std::uint64_t* data, std::size_t n)> max_u64;
  /// data[i] = sum over all ranks of data[i] (mod 2^64), for i < n, on every rank.
  std::function<void(std::uint64_t* data, std::size_t n)> sum_u64;
};

/// All-reduces a set of calibrator states across the ranks of `comm` so that every rank ends
/// with the states of one process over all the data, bit for bit (docs/numerics.md 1.4,
/// docs/distributed.md). A collective call: every rank calls it with the same tensors (names,
/// in the same order), range policies, bins, layouts, two-pass phase and, for fixed and
/// finished two-pass states, the same range; a rank with no data passes empty states.
///
/// Cost: three all-reduces for ALL the tensors together, whatever their number: an agreement
/// on a 64-bit digest of the tensor list (2 words), a MAX of the streaming exponents and the
/// statistics' extrema (4 words per tensor), and a SUM of the counts and counters (bins + 3
/// words per tensor). Streaming counts are folded locally to the largest exponent first.
///
/// Errors throw klcal::error on EVERY rank, and before anything is changed: different tensor
/// lists, policies, bins, layouts or ranges across the ranks (errc::invalid_option, the same
/// message on every rank, never a hang or a sum of mismatched buffers); a rank whose own
/// states are invalid (validate()) names them there and the other ranks report it.
/// `who` prefixes the messages.
void all_reduce(std::vector<named_state>& states, const collective& comm,
                const std::string& who = "klcal::all_reduce");

/// The same for CPU calibrators, keyed (and ordered) by tensor name.
void all_reduce(std::map<std::string, cpu::calibrator>& calibrators, const collective& comm,
                const std::string& who = "klcal::all_reduce");

/// Ends the first pass of two-pass states on every rank with the same range: one agreement
/// all-reduce and one MAX of max |x| of every tensor, then each state closes its range at
/// hi = max(global max |x|, 2^-64) (numerics.md 1.5). The statistics stay local (all_reduce()
/// after the second pass merges them with the counts). Every state must be two-pass and in its
/// first pass, on every rank (errc::invalid_option on every rank otherwise).
void end_range_pass(std::vector<named_state>& states, const collective& comm,
                    const std::string& who = "klcal::end_range_pass");

/// The same for CPU calibrators, keyed by tensor name.
void end_range_pass(std::map<std::string, cpu::calibrator>& calibrators, const collective& comm,
                    const std::string& who = "klcal::end_range_pass");

}  // namespace klcal
