// The klcal state file: many named calibrator states in one versioned, checksummed binary file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "klcal/state.hpp"

// Layout, limits and versioning: docs/formats.md, section "klcal state file". Like the rest of
// klcal::formats, these functions throw klcal::error: errc::io_error when a file cannot be
// opened, read or written, errc::format_error when bytes do not follow the format, and
// errc::invalid_option when the states given to the writer break the limits or the invariants
// of calibrator_state. Messages name the file and, where it applies, the tensor (index in
// file order from 0, and name) and the field.
namespace klcal::formats {

/// The 8 bytes every state file starts with: "KLCALST" and a NUL.
inline constexpr char state_file_magic[8] = {'K', 'L', 'C', 'A', 'L', 'S', 'T', '\0'};
/// The format version this library writes; the only one it reads.
inline constexpr std::uint32_t state_file_version = 1;
/// Most tensors one file may hold.
inline constexpr std::uint32_t state_file_max_tensors = 1000000;
/// Longest tensor name in bytes (names are 1 to this many bytes, without NUL).
inline constexpr std::uint32_t state_file_max_name_bytes = 4096;

/// Serializes `tensors` in the state file format, in the given order.
/// Preconditions (checked, errc::invalid_option naming `name` and the tensor otherwise): at most
/// state_file_max_tensors tensors; names non-empty, at most state_file_max_name_bytes bytes,
/// without NUL, pairwise distinct; every state satisfies the invariants documented at
/// calibrator_state. `name` is used in error messages only (the file being written).
std::string encode_states(const std::vector<named_state>& tensors,
                          const std::string& name = "state file");

/// Parses and validates `n` bytes of a state file: magic, version, every length against the
/// bytes left (nothing is allocated from an unchecked length), enum values, the invariants of
/// calibrator_state, distinct names, the exact size and the CRC-32. errc::format_error naming
/// `name` (used in messages only) for anything else. Precondition: `data` points to `n`
/// readable bytes (it may be null when n == 0). The states are returned in file order.
std::vector<named_state> decode_states(const void* data, std::size_t n, const std::string& name);

/// Writes `tensors` to `path` atomically with write_file_atomic (formats.hpp): the target is
/// either left as it was or replaced by the complete new file. Errors as encode_states (then
/// nothing is written) and write_file_atomic (errc::io_error, no temporary left behind).
void write_state_file(const std::string& path, const std::vector<named_state>& tensors);

/// Reads a whole state file and decodes it with decode_states. errc::io_error when `path`
/// cannot be opened or read (or is a directory), errc::format_error naming `path` otherwise.
std::vector<named_state> read_state_file(const std::string& path);

}  // namespace klcal::formats
