// CPU percentile and max searches (numerics.md 4): the methods that have no candidates.
#include <cstdint>

#include "cpu_search_math.hpp"
#include "cpu_search_methods.hpp"
#include "klcal/cpu.hpp"

namespace klcal::cpu::detail {

choice search_percentile(const search_task& task, std::uint64_t T) noexcept {
  const std::uint64_t* counts = task.h_counts;
  const std::int32_t B = task.spec.bins;
  const double w = double(task.spec.hi) / double(B);
  const double target = task.opts.percentile / 100.0;
  choice ch;
  std::uint64_t s = 0;
  ch.index = B - 1;
  for (std::int32_t k = 0; k < B; ++k) {
    s += counts[k];
    if (T > 0 && double(s) / double(T) >= target) {
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
