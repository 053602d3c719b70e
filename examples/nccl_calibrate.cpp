// Example: GPU calibrators all-reduced over NCCL (here one rank per visible GPU, one thread each).
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <klcal/nccl.hpp>
#include <map>
#include <string>
#include <thread>
#include <vector>

/// Rank `rank` of `ranks`: calibrates its share of one tensor on GPU `device`, then all-reduces.
int run(int device, int rank, int ranks, ncclComm_t comm) {
  if (cudaSetDevice(device) != cudaSuccess) return 1;
  std::vector<float> h_x(1 << 20);
  for (std::size_t k = 0; k < h_x.size(); ++k) {
    const double u = static_cast<double>((k * 2654435761u) % 1000003) / 1000003.0;
    h_x[k] = u < 0.5 ? 0.0f : static_cast<float>(-std::log(2.0 * (1.0 - u)));
  }
  const std::size_t begin = h_x.size() * static_cast<std::size_t>(rank) / ranks;
  const std::size_t end = h_x.size() * static_cast<std::size_t>(rank + 1) / ranks;
  float* d_x = nullptr;
  cudaStream_t stream = nullptr;
  if (cudaStreamCreate(&stream) != cudaSuccess ||
      cudaMalloc(reinterpret_cast<void**>(&d_x), h_x.size() * sizeof(float)) != cudaSuccess ||
      cudaMemcpy(d_x, h_x.data() + begin, (end - begin) * sizeof(float), cudaMemcpyHostToDevice) !=
          cudaSuccess) {
    std::fprintf(stderr, "CUDA setup failed\n");
    return 1;
  }
  int rc = 0;
  try {
    std::map<std::string, klcal::calibrator> cals;
    cals.emplace("relu_out", klcal::calibrator::streaming(2048, stream));
    cals.at("relu_out").add(d_x, static_cast<std::int64_t>(end - begin), klcal::dtype::f32, stream);
    klcal::nccl::all_reduce(cals, comm, stream);  // counts stay on the device
    const klcal::search_result r =
        cals.at("relu_out").compute(klcal::search_options::tensorrt(), stream);
    if (rank == 0) std::printf("amax=%g scale=%g (%d ranks)\n", r.amax, r.scale, ranks);
  } catch (const klcal::error& e) {
    std::fprintf(stderr, "rank %d: klcal: %s\n", rank, e.what());
    rc = 1;
  }
  cudaStreamSynchronize(stream);
  cudaFree(d_x);
  cudaStreamDestroy(stream);
  return rc;
}

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;  // ctest SKIP_RETURN_CODE
  }
  std::vector<int> ids(static_cast<std::size_t>(devices));
  for (int d = 0; d < devices; ++d) ids[static_cast<std::size_t>(d)] = d;
  std::vector<ncclComm_t> comms(ids.size());
  if (ncclCommInitAll(comms.data(), devices, ids.data()) != ncclSuccess) {
    std::fprintf(stderr, "ncclCommInitAll failed\n");
    return 1;
  }
  std::vector<int> rcs(ids.size(), 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < devices; ++r) {
    threads.emplace_back([&, r] {
      rcs[static_cast<std::size_t>(r)] = run(r, r, devices, comms[static_cast<std::size_t>(r)]);
    });
  }
  for (std::thread& t : threads) t.join();
  for (ncclComm_t c : comms) ncclCommDestroy(c);
  for (int rc : rcs)
    if (rc != 0) return 1;
  return 0;
}
