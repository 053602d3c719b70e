// The klcal._klcal extension module: calibrators, errors and build information for Python.
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "klcal/formats.hpp"

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
  // The library's text writers, so that klcal.torch / klcal.onnx write the same bytes as the
  // klcal tool from one implementation (src/formats_cache.cpp, src/formats_json.cpp).
  m.def(
      "format_cache",
      [](const std::vector<std::pair<std::string, float>>& entries, const std::string& version,
         const std::string& algorithm) {
        klcal::formats::calibration_cache c;
        c.version = version;
        c.algorithm = algorithm;
        c.entries.reserve(entries.size());
        for (const auto& [name, scale] : entries) c.entries.push_back({name, scale});
        return klcal::formats::format_cache(c);
      },
      nb::arg("entries"), nb::arg("version"), nb::arg("algorithm"),
      "The TensorRT calibration cache text: header TRT-<version>-<algorithm>, then one "
      "'<name>: <hex of the fp32 scale>' line per entry, in order (docs/numerics.md 7).");
  m.def("scale_hex", &klcal::formats::scale_hex, nb::arg("scale"),
        "Lowercase hex of the fp32 bit pattern of scale, no padding (1/127 -> '3c010204').");
  m.def("json_number", &klcal::formats::json_number, nb::arg("value"),
        "A number as the klcal tool writes it in JSON: %.17g, null for NaN and +-Inf.");
  m.def("json_string", &klcal::formats::json_string, nb::arg("text"),
        "A JSON string as the klcal tool writes it (quotes included; \", \\ and control "
        "characters escaped).");
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
