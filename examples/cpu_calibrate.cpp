// Example: calibrate one fp32 tensor on the CPU (two-pass range, TensorRT entropy rule set).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <klcal/cpu.hpp>
#include <vector>

int main() {
  // Some activations: a ReLU output with a zero spike and a long tail.
  std::vector<float> x(1 << 20);
  for (std::size_t k = 0; k < x.size(); ++k) {
    const double u = static_cast<double>((k * 2654435761u) % 1000003) / 1000003.0;
    x[k] = u < 0.5 ? 0.0f : static_cast<float>(-std::log(2.0 * (1.0 - u)));  // Exp(1) tail
  }
  const auto n = static_cast<std::int64_t>(x.size());

  // Pass 1: exact statistics (max |x|, NaN/Inf counts).
  klcal::tensor_stats stats;
  if (auto s = klcal::cpu::tensor_stats_accumulate(x.data(), klcal::dtype::f32, n, &stats); !s) {
    std::fprintf(stderr, "stats failed: %s\n", klcal::to_string(s).c_str());
    return 1;
  }

  // Pass 2: a 2048-bin abs histogram over [0, max|x|).
  klcal::histogram_spec spec;  // abs layout, 2048 bins
  spec.hi = stats.max_abs;
  std::vector<std::uint64_t> counts(spec.bins, 0);
  if (auto s = klcal::cpu::histogram_accumulate(x.data(), klcal::dtype::f32, n, spec, counts.data(),
                                                nullptr);
      !s) {
    std::fprintf(stderr, "histogram failed: %s\n", klcal::to_string(s).c_str());
    return 1;
  }

  // Search: TensorRT entropy calibration (KL divergence over 1921 candidate thresholds).
  klcal::cpu::search_task task;
  task.h_counts = counts.data();
  task.spec = spec;
  task.max_abs = stats.max_abs;
  task.opts = klcal::search_options::tensorrt();
  klcal::search_result r;
  if (auto s = klcal::cpu::search(&task, 1, &r); !s) {
    std::fprintf(stderr, "search failed: %s\n", klcal::to_string(s).c_str());
    return 1;
  }
  std::printf("max=%g amax=%g scale=%g bin=%d KL=%g clipped=%.4f%%\n", stats.max_abs, r.amax,
              r.scale, r.index, r.score, 100.0 * r.clipped_fraction);
  return 0;
}
