// libFuzzer target: feeds arbitrary bytes to the .npy header parser and streaming reader.
#include <cstddef>
#include <cstdint>

#include "klcal/formats.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace kf = klcal::formats;
  // With the payload size known (file/zip member) and unknown (pure stream), '<V2' refused
  // and read as bf16; small chunks so that chunk boundaries are exercised too.
  for (int pass = 0; pass < 4; ++pass) {
    const bool known = pass & 1;
    const auto void2 = pass & 2 ? kf::npy_void2::bf16 : kf::npy_void2::refuse;
    try {
      auto src = kf::memory_source(data, size, "fuzz.npy");
      kf::npy_reader r(kf::range_stream(src, 0, size), "fuzz.npy",
                       known ? static_cast<std::int64_t>(size) : -1, 64, void2);
      kf::chunk c;
      std::uint64_t total = 0;
      while (r.next(c)) {
        if (c.n <= 0 || c.data == nullptr) __builtin_trap();  // a chunk is never empty
        total += static_cast<std::uint64_t>(c.n);
      }
      if (total != static_cast<std::uint64_t>(r.header().count)) __builtin_trap();
    } catch (const klcal::error&) {
      // Rejected input: the expected outcome for most mutations.
    }
  }
  return 0;
}
