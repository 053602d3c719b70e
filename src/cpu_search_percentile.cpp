// CPU percentile and max searches (numerics.md 4): the methods that have no candidates.
#include <cmath>
#include <cstdint>

#include "cpu_search_math.hpp"
#include "cpu_search_methods.hpp"
#include "klcal/cpu.hpp"

namespace klcal::cpu::detail {

choice search_percentile(const search_task& task, std::uint64_t T) noexcept {
  const std::uint64_t* counts = task.h_counts;
  const std::int32_t B = task.spec.bins;
  const double w = double(task.spec.hi) / double(B);
  // P of numerics.md 4 (1e-9 percent units): bin k qualifies when 100e9 S(k+1) >= P T, exactly
  // in 128 bits (both products are below 2^101).
  __extension__ typedef unsigned __int128 u128;
  const auto P = static_cast<u128>(std::llround(task.opts.percentile * 1e9));
  const auto hundred = static_cast<u128>(100'000'000'000ULL);
  choice ch;
  std::uint64_t s = 0;
  ch.index = B - 1;
  for (std::int32_t k = 0; k < B; ++k) {
    s += counts[k];
    if (T > 0 && hundred * s >= P * T) {
      ch.index = k;
      break;
    }
  }
  ch.amax = double(ch.index) * w;
  ch.clipped = T > 0 ? mass(counts, ch.index, B) / double(T) : 0.0;
  return ch;
}

choice search_max(const search_task& task) noexcept {
  choice ch;
  ch.index = task.spec.bins;
  ch.amax = double(task.max_abs);
  return ch;
}

}  // namespace klcal::cpu::detail
