// The CPU state collector of the klcal tool (a klcal::cpu::calibrator per tensor) and the choice
// between CPU and GPU.
#include <optional>

#include "cli.hpp"
#include "klcal/cpu_calibrator.hpp"

namespace klcal::cli {
namespace {

class cpu_collector final : public state_collector {
 public:
  explicit cpu_collector(int threads) : threads_(threads) {}
  std::string name() const override { return "cpu"; }
  void begin(range_policy policy, std::int32_t bins, layout kind) override {
    cal_.reset();
    cal_.emplace(policy == range_policy::streaming
                     ? cpu::calibrator::streaming(bins, threads_)
                     : cpu::calibrator::two_pass(bins, kind, threads_));
  }
  void add_range(const formats::chunk& c) override { cal_->add_range(c.data, c.n, c.type); }
  void end_range_pass() override { cal_->end_range_pass(); }
  void add(const formats::chunk& c) override { cal_->add(c.data, c.n, c.type); }
  calibrator_state finish() override { return cal_->state(); }

 private:
  int threads_;
  std::optional<cpu::calibrator> cal_;
};

}  // namespace

std::unique_ptr<state_collector> make_cpu_collector(int threads) {
  return std::make_unique<cpu_collector>(threads);
}

std::unique_ptr<state_collector> make_collector(const std::string& device, int threads) {
  if (device == "cpu") return make_cpu_collector(threads);
#if KLCAL_WITH_CUDA
  std::string why;
  if (device == "gpu" || device == "auto") {
    auto g = make_gpu_collector(&why);
    if (g) return g;
    if (device == "gpu") throw error(errc::cuda_error, "--device gpu: " + why);
    return make_cpu_collector(threads);
  }
#else
  if (device == "gpu") {
    throw error(errc::invalid_option,
                "--device gpu: this klcal was built without CUDA (KLCAL_ENABLE_CUDA=OFF)");
  }
  if (device == "auto") return make_cpu_collector(threads);
#endif
  throw usage_error("--device '" + device + "': expected auto, gpu or cpu");
}

}  // namespace klcal::cli
