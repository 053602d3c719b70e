// Example: the owning CPU calibrator, two workers' halves merged exactly through their states.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <klcal/cpu_calibrator.hpp>
#include <vector>

int main() {
  std::vector<float> x(1 << 20);
  for (std::size_t k = 0; k < x.size(); ++k) {
    const double u = static_cast<double>((k * 2654435761u) % 1000003) / 1000003.0;
    x[k] = u < 0.5 ? 0.0f : static_cast<float>(-std::log(2.0 * (1.0 - u)));  // Exp(1) tail
  }
  const auto half = static_cast<std::int64_t>(x.size() / 2);
  try {
    // Each worker streams its own batches; power-of-two ranges grow by exact folds.
    auto a = klcal::cpu::calibrator::streaming(2048);
    auto b = klcal::cpu::calibrator::streaming(2048);
    a.add(x.data(), half, klcal::dtype::f32);
    b.add(x.data() + half, half, klcal::dtype::f32);

    // States are plain values: save them, send them, merge them in any order.
    klcal::calibrator_state merged = a.state();
    if (auto s = klcal::merge(merged, b.state()); !s) {
      std::fprintf(stderr, "merge failed: %s\n", klcal::to_string(s).c_str());
      return 1;
    }
    auto all = klcal::cpu::calibrator::streaming(2048);
    all.add(x.data(), static_cast<std::int64_t>(x.size()), klcal::dtype::f32);
    const bool exact = merged == all.state();  // bit for bit, numerics.md 1.4

    const auto c = klcal::cpu::calibrator::from_state(merged);
    const klcal::search_result r = c.compute(klcal::search_options::tensorrt());
    std::printf("merged == one pass: %s; amax=%g scale=%g bin=%d KL=%g\n", exact ? "yes" : "NO",
                r.amax, r.scale, r.index, r.score);
    return exact ? 0 : 1;
  } catch (const klcal::error& e) {
    std::fprintf(stderr, "klcal: %s\n", e.what());
    return 1;
  }
}
