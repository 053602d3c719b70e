// libFuzzer target: feeds arbitrary bytes to the .npz (zip) reader and each member's .npy reader.
#include <cstddef>
#include <cstdint>

#include "klcal/formats.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace kf = klcal::formats;
  try {
    kf::npz_archive a(kf::memory_source(data, size, "fuzz.npz"));
    std::size_t members = 0;
    for (const auto& m : a.members()) {
      if (++members > 64) break;  // bound the work per input
      try {
        auto r = a.open_npy(m, 256);
        kf::chunk c;
        std::int64_t total = 0;
        while (r.next(c)) total += c.n;
        if (total != r.header().count) __builtin_trap();
      } catch (const klcal::error&) {
      }
    }
  } catch (const klcal::error&) {
  }
  return 0;
}
