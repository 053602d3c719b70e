// klcal::nccl: one rank (and every GPU of the machine as ranks) equals one CPU process, bit for
// bit.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <nccl.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gpu_fixture.hpp"
#include "klcal/calibrator.hpp"
#include "klcal/cpu_calibrator.hpp"
#include "klcal/nccl.hpp"

namespace {

using nccl_test = klcal::test::gpu_test;

#define CUDA_OK(x) ASSERT_EQ((x), cudaSuccess)

std::vector<float> make_data(std::uint32_t seed, float scale) {
  std::mt19937 g(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(5000);
  for (float& x : v) x = normal(g) * scale;
  v[7] = std::nanf("");
  return v;
}

struct tensor {
  std::string name;
  std::function<klcal::cpu::calibrator()> cpu;
  std::function<klcal::calibrator(cudaStream_t)> gpu;
  std::vector<float> data;
};

std::vector<tensor> tensors() {
  const klcal::histogram_spec fixed{klcal::layout::abs, 2048, 0.0f, 4.0f};
  return {
      {"fixed", [=] { return klcal::cpu::calibrator::fixed(fixed, 1); },
       [=](cudaStream_t s) { return klcal::calibrator::fixed(fixed, s); }, make_data(1, 1.0f)},
      {"two_pass", [] { return klcal::cpu::calibrator::two_pass(8001, klcal::layout::signed_, 1); },
       [](cudaStream_t s) { return klcal::calibrator::two_pass(8001, s, klcal::layout::signed_); },
       make_data(2, 30.0f)},
      {"streaming", [] { return klcal::cpu::calibrator::streaming(2048, 1); },
       [](cudaStream_t s) { return klcal::calibrator::streaming(2048, s); }, make_data(3, 1e4f)},
  };
}

/// Rank `rank` of `ranks` calibrates its interleaved share of every tensor on `device` over
/// `comm` and checks the reduced states against one CPU process over all the data.
void run_rank(int device, int rank, int ranks, ncclComm_t comm) {
  CUDA_OK(cudaSetDevice(device));
  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreate(&stream));
  std::map<std::string, klcal::calibrator> gpu;
  std::map<std::string, std::vector<float>> mine;
  float* d = nullptr;
  CUDA_OK(cudaMalloc(&d, 5000 * sizeof(float)));
  const std::vector<tensor> ts = tensors();
  for (const tensor& t : ts) {
    gpu.emplace(t.name, t.gpu(stream));
    for (std::size_t i = static_cast<std::size_t>(rank); i < t.data.size();
         i += static_cast<std::size_t>(ranks))
      mine[t.name].push_back(t.data[i]);
  }
  auto feed = [&](bool range_pass, bool two_pass_only) {
    for (auto& [name, c] : gpu) {
      if ((c.policy() == klcal::range_policy::two_pass) != two_pass_only) continue;
      const std::vector<float>& x = mine[name];
      ASSERT_EQ(
          cudaMemcpyAsync(d, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice, stream),
          cudaSuccess);
      const auto n = static_cast<std::int64_t>(x.size());
      if (range_pass)
        c.add_range(d, n, klcal::dtype::f32, stream);
      else
        c.add(d, n, klcal::dtype::f32, stream);
      CUDA_OK(cudaStreamSynchronize(stream));
    }
  };
  std::map<std::string, klcal::calibrator> two_pass;
  feed(true, true);
  for (auto it = gpu.begin(); it != gpu.end();) {  // end_range_pass over the two-pass ones
    if (it->second.policy() == klcal::range_policy::two_pass) {
      two_pass.emplace(it->first, std::move(it->second));
      it = gpu.erase(it);
    } else {
      ++it;
    }
  }
  klcal::nccl::end_range_pass(two_pass, comm, stream);
  for (auto& [name, c] : two_pass) gpu.emplace(name, std::move(c));
  feed(false, true);
  feed(false, false);
  klcal::nccl::all_reduce(gpu, comm, stream);

  for (const tensor& t : ts) {
    klcal::cpu::calibrator c = t.cpu();
    const auto n = static_cast<std::int64_t>(t.data.size());
    if (c.policy() == klcal::range_policy::two_pass) {
      c.add_range(t.data.data(), n, klcal::dtype::f32);
      c.end_range_pass();
    }
    c.add(t.data.data(), n, klcal::dtype::f32);
    EXPECT_TRUE(gpu.at(t.name).state(stream) == c.state()) << t.name << " rank " << rank;
  }
  CUDA_OK(cudaFree(d));
  gpu.clear();
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaStreamDestroy(stream));
}

TEST_F(nccl_test, one_rank_equals_one_cpu_process) {
  int device = 0;
  CUDA_OK(cudaGetDevice(&device));
  ncclComm_t comm = nullptr;
  ASSERT_EQ(ncclCommInitAll(&comm, 1, &device), ncclSuccess);
  run_rank(device, 0, 1, comm);
  ASSERT_EQ(ncclCommDestroy(comm), ncclSuccess);
}

TEST_F(nccl_test, every_gpu_a_rank_equals_one_cpu_process) {
  int count = 0;
  CUDA_OK(cudaGetDeviceCount(&count));
  if (count < 2) GTEST_SKIP() << "needs 2 GPUs, found " << count;
  std::vector<int> devices(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) devices[static_cast<std::size_t>(i)] = i;
  std::vector<ncclComm_t> comms(devices.size());
  ASSERT_EQ(ncclCommInitAll(comms.data(), count, devices.data()), ncclSuccess);
  std::vector<std::thread> threads;
  for (int r = 0; r < count; ++r)
    threads.emplace_back(run_rank, r, r, count, comms[static_cast<std::size_t>(r)]);
  for (std::thread& t : threads) t.join();
  for (ncclComm_t c : comms) ASSERT_EQ(ncclCommDestroy(c), ncclSuccess);
}

TEST_F(nccl_test, end_range_pass_of_a_streaming_calibrator_throws) {
  int device = 0;
  CUDA_OK(cudaGetDevice(&device));
  ncclComm_t comm = nullptr;
  ASSERT_EQ(ncclCommInitAll(&comm, 1, &device), ncclSuccess);
  {
    std::map<std::string, klcal::calibrator> m;
    m.emplace("s", klcal::calibrator::streaming(256, nullptr));
    try {
      klcal::nccl::end_range_pass(m, comm, nullptr);
      ADD_FAILURE() << "no error";
    } catch (const klcal::error& e) {
      EXPECT_NE(std::string(e.what()).find("end_range_pass() needs a two_pass calibrator"),
                std::string::npos)
          << e.what();
    }
    CUDA_OK(cudaDeviceSynchronize());
  }
  ASSERT_EQ(ncclCommDestroy(comm), ncclSuccess);
}

}  // namespace
