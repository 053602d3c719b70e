// Example: calibrate one device tensor with the owning GPU calibrator (two-pass range, entropy).
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <klcal/calibrator.hpp>
#include <vector>

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;  // ctest SKIP_RETURN_CODE
  }
  std::vector<float> h_x(1 << 22);
  for (std::size_t k = 0; k < h_x.size(); ++k) {
    const double u = static_cast<double>((k * 2654435761u) % 1000003) / 1000003.0;
    h_x[k] = u < 0.5 ? 0.0f : static_cast<float>(-std::log(2.0 * (1.0 - u)));
  }
  float* d_x = nullptr;
  cudaStream_t stream = nullptr;
  if (cudaStreamCreate(&stream) != cudaSuccess ||
      cudaMalloc(reinterpret_cast<void**>(&d_x), h_x.size() * sizeof(float)) != cudaSuccess ||
      cudaMemcpy(d_x, h_x.data(), h_x.size() * sizeof(float), cudaMemcpyHostToDevice) !=
          cudaSuccess) {
    std::fprintf(stderr, "CUDA setup failed\n");
    return 1;
  }
  const auto n = static_cast<std::int64_t>(h_x.size());
  try {
    auto cal = klcal::calibrator::two_pass(2048, stream);
    cal.add_range(d_x, n, klcal::dtype::f32, stream);  // pass 1: exact max |x| (per batch)
    cal.end_range_pass(stream);                        // range [0, max|x|)
    cal.add(d_x, n, klcal::dtype::f32, stream);        // pass 2: uint64 counts (per batch)
    const klcal::search_result r = cal.compute(klcal::search_options::tensorrt(), stream);
    std::printf("amax=%g scale=%g bin=%d KL=%g\n", r.amax, r.scale, r.index, r.score);
  } catch (const klcal::error& e) {
    std::fprintf(stderr, "klcal: %s\n", e.what());
    return 1;
  }
  cudaFree(d_x);
  cudaStreamDestroy(stream);
  return 0;
}
