// The klcal._klcal extension module: calibrators, errors and build information for Python.
#include <nanobind/stl/string.h>

#include <string>

#include "bindings.hpp"

NB_MODULE(_klcal, m) {
  namespace nb = nanobind;
  using namespace klcal::python;
  m.doc() = "klcal: exact, deterministic INT8 calibration (the compiled part; see klcal).";
  register_errors(m);
  register_calibrator(m);
  register_distributed(m);
  m.attr("built_with_cuda") = static_cast<bool>(KLCAL_WITH_CUDA);
  m.attr("__version__") = std::to_string(KLCAL_VERSION / 10000) + "." +
                          std::to_string(KLCAL_VERSION / 100 % 100) + "." +
                          std::to_string(KLCAL_VERSION % 100);
  m.def(
      "cuda_available",
      []() {
#if KLCAL_WITH_CUDA
        int count = 0;
        return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
#else
        return false;
#endif
      },
      "True when this klcal was built with its CUDA kernels and a CUDA device is visible "
      "(klcal.built_with_cuda says whether the kernels were built).");
}
