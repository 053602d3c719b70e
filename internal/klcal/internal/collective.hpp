// The one copy of the distributed-reduction protocol pieces shared by klcal::all_reduce (host
// states, any engine) and klcal::nccl (device counts): the agreement digest and float order keys.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "klcal/collective.hpp"
#include "klcal/state.hpp"

namespace klcal::detail {

/// Which collective operation the ranks are in; part of the digest, so a rank calling
/// end_range_pass() while another calls all_reduce() is a mismatch, not a hang.
enum class collective_op : std::uint8_t { all_reduce = 1, end_range_pass = 2 };

/// One tensor of a reduction: its name and the range part of its state (policy, spec,
/// range_done; counts and statistics are not read).
struct reduce_entry {
  const std::string* name = nullptr;
  const calibrator_state* range = nullptr;
};

/// Largest value of a digest (63 bits, so that engines with only int64 reduce it correctly).
inline constexpr std::uint64_t digest_mask = (std::uint64_t{1} << 63) - 1;

/// 63-bit FNV-1a digest of (op, number of tensors, and per tensor: name, policy, layout, bins,
/// two-pass phase, and the range bits of fixed and finished two-pass states): everything the
/// ranks must share for the reduction buffers to line up and the merge to be defined
/// (numerics.md 1.4). Streaming exponents are not part of it: they are reduced.
std::uint64_t reduction_digest(collective_op op, const std::vector<reduce_entry>& entries) noexcept;

/// The agreement phase, one max_u64 of 3 words: throws klcal::error (errc::invalid_option) on
/// every rank when the digests differ or when any rank reports a `local_error` (non-empty: that
/// rank's reason; the others say that another rank failed). Returns normally on every rank
/// otherwise. Afterwards every rank may size its buffers from its own entries.
void agree(const collective& comm, std::uint64_t digest, const std::string& local_error,
           const std::string& who);

/// A key of a non-NaN float below 2^32 whose unsigned order is the float order (-0 < +0).
std::uint64_t order_key(float f) noexcept;
/// The float of an order_key().
float from_order_key(std::uint64_t key) noexcept;
/// The largest order key; `order_key_max - order_key(x)` turns a MAX into a MIN.
inline constexpr std::uint64_t order_key_max = 0xffffffffu;

}  // namespace klcal::detail
