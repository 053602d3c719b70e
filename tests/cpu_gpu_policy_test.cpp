// The histogram wave rule of internal/klcal/internal/gpu_policy.hpp (plain C++, no device): the
// resident blocks per SM and the flush-atomic bounds that docs/design.md quotes.
#include <gtest/gtest.h>

#include <cstdint>

#include "klcal/internal/gpu_policy.hpp"

namespace {

using klcal::detail::hist_wave_blocks_per_sm;

// Upper bound of a wave's end-of-block flush atomics on a device with `sms` SMs: every block
// flushes at most one atomic per bin.
double flush_bound(int sms, int per_sm, double bins) {
  return sms * hist_wave_blocks_per_sm(per_sm, bins) * bins;
}

TEST(gpu_policy, wave_keeps_the_occupancy_up_to_2048_bins) {
  EXPECT_EQ(hist_wave_blocks_per_sm(6, 2048), 6.0);
  EXPECT_EQ(hist_wave_blocks_per_sm(6, 256), 6.0);
  EXPECT_EQ(hist_wave_blocks_per_sm(4, 2048), 4.0);  // occupancy below the budget: unchanged
  EXPECT_EQ(hist_wave_blocks_per_sm(6, 0), 6.0);     // global atomics: no flush, no cut
}

TEST(gpu_policy, wave_is_cut_for_large_histograms) {
  // 12288 counters per SM: 4096 bins -> 3 blocks per SM, 3000 bins -> 4.096.
  EXPECT_EQ(hist_wave_blocks_per_sm(6, 4096), 3.0);
  EXPECT_DOUBLE_EQ(hist_wave_blocks_per_sm(6, 3000), 4.096);
  // 8001 bins: 12288 / 8001 = 1.54 -> the floor of 2 blocks per SM.
  EXPECT_EQ(hist_wave_blocks_per_sm(6, 8001), 2.0);
  EXPECT_EQ(hist_wave_blocks_per_sm(3, 16384), 2.0);
  // Never above the occupancy, even when the floor is.
  EXPECT_EQ(hist_wave_blocks_per_sm(1, 50000), 1.0);
}

TEST(gpu_policy, flush_bounds_of_the_design_notes) {
  // 132 SMs (H100 SXM / H200); before the cut every wave was 132 x occupancy blocks.
  EXPECT_EQ(flush_bound(132, 6, 2048), 1622016.0);   // unchanged (792 blocks)
  EXPECT_EQ(flush_bound(132, 6, 4096), 1622016.0);   // was 3244032 (792 blocks)
  EXPECT_EQ(flush_bound(132, 6, 8001), 2112264.0);   // was 6336792 (792 blocks)
  EXPECT_EQ(flush_bound(132, 3, 16384), 4325376.0);  // was 6488064 (396 blocks)
}

}  // namespace
