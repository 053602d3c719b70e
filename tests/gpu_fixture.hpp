// GoogleTest fixture for GPU tests: skips with "no CUDA device" when none is usable.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

namespace klcal::test {

/// Base fixture of every gpu-labelled test. No CUDA call happens before SetUp (never in static
/// initialisers), so a machine without a driver or device reports the tests as skipped.
class gpu_test : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      (void)cudaGetLastError();  // clear the sticky "no device" error
      GTEST_SKIP() << "no CUDA device (" << cudaGetErrorString(e) << ")";
    }
  }
};

}  // namespace klcal::test
