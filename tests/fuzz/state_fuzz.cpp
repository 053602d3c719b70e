// libFuzzer target: feeds arbitrary bytes to the klcal state file decoder (decode_states).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "klcal/state_file.hpp"

namespace {

// Bitwise CRC-32/ISO-HDLC, the state file's checksum (docs/formats.md).
std::uint32_t crc32_bitwise(const std::uint8_t* p, std::size_t n) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

// Decodes; when the bytes are accepted, the encoder must accept the states and write the same
// bytes back (the format has one encoding per content: no field is ignored or lost). An
// exception from encode_states is not caught, so libFuzzer reports it.
void check(const std::uint8_t* data, std::size_t size) {
  namespace kf = klcal::formats;
  std::vector<klcal::named_state> states;
  try {
    states = kf::decode_states(data, size, "fuzz.klst");
  } catch (const klcal::error&) {
    return;  // rejected input: the expected outcome for most mutations
  }
  const std::string again = kf::encode_states(states, "fuzz.klst");
  if (again.size() != size ||
      again.compare(0, size, reinterpret_cast<const char*>(data), size) != 0) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  check(data, size);
  // Most mutations break the CRC-32 and stop there; a copy with the trailer recomputed takes
  // the same bytes on to the field and consistency checks behind it.
  if (size >= 4) {
    std::vector<std::uint8_t> fixed(data, data + size);
    const std::uint32_t crc = crc32_bitwise(fixed.data(), size - 4);
    for (int i = 0; i < 4; ++i) fixed[size - 4 + i] = static_cast<std::uint8_t>(crc >> (8 * i));
    check(fixed.data(), size);
  }
  return 0;
}
