// Tensor import: NumPy arrays and DLPack producers, zero-copy for dense blocks, on their device.
#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "bindings.hpp"

namespace klcal::python {
namespace {

std::string dtype_name(const nb::dlpack::dtype& d) {
  const char* code = "?";
  switch (static_cast<nb::dlpack::dtype_code>(d.code)) {
    case nb::dlpack::dtype_code::Int: code = "int"; break;
    case nb::dlpack::dtype_code::UInt: code = "uint"; break;
    case nb::dlpack::dtype_code::Float: code = "float"; break;
    case nb::dlpack::dtype_code::Bfloat: code = "bfloat"; break;
    case nb::dlpack::dtype_code::Complex: code = "complex"; break;
    case nb::dlpack::dtype_code::Bool: code = "bool"; break;
    default: break;
  }
  std::string s = code + std::to_string(d.bits);
  if (d.lanes != 1) s += "x" + std::to_string(d.lanes);
  return s;
}

dtype element_type(const nb::dlpack::dtype& d, const char* who) {
  if (d.lanes == 1 && d.bits == 32 &&
      d.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float))
    return dtype::f32;
  if (d.lanes == 1 && d.bits == 16 &&
      d.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float))
    return dtype::f16;
  if (d.lanes == 1 && d.bits == 16 &&
      d.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Bfloat))
    return dtype::bf16;
  raise(errc::invalid_dtype, std::string(who) + ": " + dtype_name(d) +
                                 " tensor: klcal bins float32, float16 and bfloat16 values "
                                 "(convert first, e.g. x.astype(numpy.float32) or x.float())");
}

std::string device_name(int type, int id) {
  switch (type) {
    case nb::device::cpu::value: return "cpu";
    case nb::device::cuda::value: return "cuda:" + std::to_string(id);
    case nb::device::cuda_host::value: return "cuda_host";
    case nb::device::cuda_managed::value: return "cuda_managed:" + std::to_string(id);
    default: return "DLPack device type " + std::to_string(type) + ":" + std::to_string(id);
  }
}

// ml_dtypes.bfloat16 NumPy arrays export neither DLPack nor a standard buffer format: they are
// viewed as uint16 (no copy) and tagged bf16. Returns the view, or an invalid object.
nb::object numpy_bfloat16_view(nb::handle x) {
  if (!nb::hasattr(x, "dtype") || !nb::hasattr(x, "view")) return {};
  nb::object dt = x.attr("dtype");
  if (!nb::hasattr(dt, "name") || nb::str(dt.attr("name")).c_str() != std::string("bfloat16"))
    return {};
  nb::module_ np = nb::module_::import_("numpy");
  if (!nb::isinstance(x, np.attr("ndarray"))) return {};
  return x.attr("view")(np.attr("uint16"));
}

// Gathers the elements of a strided host array into `out` (any order: the histogram does not
// depend on it).
void gather(const unsigned char* base, std::size_t elem, std::int32_t ndim,
            const std::int64_t* shape, const std::int64_t* strides,
            std::vector<unsigned char>& out) {
  std::vector<std::int64_t> idx(static_cast<std::size_t>(ndim), 0);
  std::size_t pos = 0;
  const std::size_t total = out.size() / elem;
  for (std::size_t k = 0; k < total; ++k) {
    std::int64_t off = 0;
    for (std::int32_t d = 0; d < ndim; ++d) off += idx[d] * strides[d];
    std::memcpy(out.data() + pos, base + off * static_cast<std::int64_t>(elem), elem);
    pos += elem;
    for (std::int32_t d = ndim - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

// nanobind's import, without conversions. Some exporters make it throw rather than fail (NumPy
// arrays of ml_dtypes float8 export a buffer without a usable format): both mean "not a tensor".
bool try_import(nb::handle h, nb::ndarray<nb::ro>& out) {
  bool ok = false;
  try {
    ok = nb::try_cast(h, out, false);
  } catch (const std::exception&) {
    ok = false;
  }
  if (!ok) PyErr_Clear();  // a failed buffer-protocol probe may leave an exception set
  return ok;
}

// A torch.Tensor's own __dlpack__() is Python code that costs about 5 us per call (docs/python.md,
// Speed); torch.utils.dlpack.to_dlpack() makes the same capsule in under 1 us. Used for host
// targets (no stream to pass). Returns an invalid object when x is no torch.Tensor (torch is
// never imported here: a tensor exists only once its user has imported torch) or when
// to_dlpack refuses, and the generic path then decides.
nb::object torch_capsule(nb::handle x) {
  static PyObject* tensor_type = nullptr;  // torch.Tensor, kept for the interpreter's life
  static PyObject* to_dlpack = nullptr;
  if (tensor_type == nullptr) {
    PyObject* modules = PyImport_GetModuleDict();
    PyObject* torch = PyDict_GetItemString(modules, "torch");
    if (torch == nullptr) return {};
    try {
      nb::object t = nb::borrow(torch).attr("Tensor");
      nb::object f = nb::module_::import_("torch.utils.dlpack").attr("to_dlpack");
      tensor_type = t.release().ptr();
      to_dlpack = f.release().ptr();
    } catch (const nb::python_error&) {
      return {};
    }
  }
  const int is_tensor = PyObject_IsInstance(x.ptr(), tensor_type);
  if (is_tensor != 1) {
    if (is_tensor < 0) PyErr_Clear();
    return {};
  }
  PyObject* capsule = PyObject_CallOneArg(to_dlpack, x.ptr());
  if (capsule == nullptr) PyErr_Clear();
  return nb::steal(capsule);
}

#if KLCAL_WITH_CUDA
std::intptr_t stream_handle(nb::handle s) {
  if (nb::isinstance<nb::int_>(s)) return nb::cast<std::intptr_t>(s);
  if (nb::hasattr(s, "cuda_stream")) return nb::cast<std::intptr_t>(s.attr("cuda_stream"));
  if (nb::hasattr(s, "ptr")) return nb::cast<std::intptr_t>(s.attr("ptr"));
  raise(errc::invalid_option,
        "stream must be None, an int cudaStream_t handle, or an object with .cuda_stream "
        "(torch.cuda.Stream) or .ptr (cupy.cuda.Stream)");
}

// The producer's current stream on `device`: torch and CuPy have one; others use the legacy
// default stream (0).
std::intptr_t current_stream_of(nb::handle x, int device) {
  const std::string mod =
      nb::str(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(x.ptr()))).attr("__module__")).c_str();
  if (mod.rfind("torch", 0) == 0) {
    nb::module_ torch = nb::module_::import_("torch");
    return nb::cast<std::intptr_t>(
        torch.attr("cuda").attr("current_stream")(device).attr("cuda_stream"));
  }
  if (mod.rfind("cupy", 0) == 0) {
    nb::module_ cupy = nb::module_::import_("cupy");
    return nb::cast<std::intptr_t>(cupy.attr("cuda").attr("get_current_stream")().attr("ptr"));
  }
  return 0;
}
#endif

}  // namespace

std::optional<std::int64_t> dense_block_offset(std::int32_t ndim, const std::int64_t* shape,
                                               const std::int64_t* strides) {
  std::int64_t offset = 0;
  std::vector<std::pair<std::int64_t, std::int64_t>> dims;  // (|stride|, extent), extent > 1
  for (std::int32_t d = 0; d < ndim; ++d) {
    if (shape[d] == 0) return 0;  // empty: nothing is read
    if (shape[d] == 1) continue;
    std::int64_t s = strides == nullptr ? 0 : strides[d];
    if (strides == nullptr) {  // DLPack without strides: C order
      s = 1;
      for (std::int32_t e = d + 1; e < ndim; ++e) s *= shape[e];
    }
    if (s < 0) {
      offset += s * (shape[d] - 1);
      s = -s;
    }
    dims.emplace_back(s, shape[d]);
  }
  std::sort(dims.begin(), dims.end());
  std::int64_t expect = 1;
  for (const auto& [stride, extent] : dims) {
    if (stride != expect) return std::nullopt;
    expect *= extent;
  }
  return offset;
}

input import_input(nb::handle x, const device_spec& target, nb::handle stream, const char* who) {
  input in;
  nb::object source = nb::borrow(x);
  bool bf16_view = false;
#if KLCAL_WITH_CUDA
  if (target.cuda && nb::hasattr(x, "__dlpack__") && nb::hasattr(x, "__dlpack_device__")) {
    // Ask the producer for a capsule ordered on our stream (the DLPack stream protocol).
    nb::tuple dev = nb::cast<nb::tuple>(x.attr("__dlpack_device__")());
    const int type = nb::cast<int>(dev[0]);
    const int id = nb::cast<int>(dev[1]);
    if (type != nb::device::cuda::value || id != target.ordinal)
      raise(errc::invalid_option,
            std::string(who) + ": tensor on " + device_name(type, id) + ", calibrator on " +
                target.str() + " (move it there first, e.g. x.to('" + target.str() + "'))",
            error_kind::device);
    std::intptr_t h = stream.is_none() ? current_stream_of(x, id) : stream_handle(stream);
    in.stream = reinterpret_cast<cudaStream_t>(h);
    // DLPack: 1 names the legacy default stream (0 is not allowed for CUDA).
    source = x.attr("__dlpack__")(nb::arg("stream") = h == 0 ? 1 : h);
  }
#else
  (void)stream;
#endif
  if (!target.cuda) {
    if (nb::object capsule = torch_capsule(x); capsule.is_valid()) source = std::move(capsule);
  }
  if (!try_import(source, in.owner)) {
    nb::object view = numpy_bfloat16_view(source);
    if (view.is_valid() && try_import(view, in.owner)) {
      bf16_view = true;
    } else {
      // Name what was passed: the dtype of an array-like (e.g. float8_e4m3fn), else its type.
      std::string what =
          nb::str(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(x.ptr()))).attr("__name__"))
              .c_str();
      if (!x.is_none() && nb::hasattr(x, "dtype"))
        what = std::string(nb::steal<nb::str>(PyObject_Str(x.attr("dtype").ptr())).c_str()) + " " +
               what;
      raise(errc::invalid_dtype,
            std::string(who) + ": cannot read a " + what +
                " as a tensor: klcal bins float32, float16 and bfloat16 values from NumPy arrays "
                "or DLPack producers (torch.Tensor, CuPy, JAX arrays)");
    }
  }
  const nb::ndarray<nb::ro>& a = in.owner;
  const int dev_type = a.device_type();
  const int dev_id = a.device_id();
  const bool on_cuda = dev_type == nb::device::cuda::value;
  // Pinned host memory (cuda_host) is host memory: a CPU calibrator reads it in place.
  const bool on_host =
      dev_type == nb::device::cpu::value || dev_type == nb::device::cuda_host::value;
  if (target.cuda ? !(on_cuda && dev_id == target.ordinal) : !on_host)
    raise(errc::invalid_option,
          std::string(who) + ": tensor on " + device_name(dev_type, dev_id) + ", calibrator on " +
              target.str() +
              (target.cuda ? " (move it there first, e.g. x.to('" + target.str() + "'))"
                           : " (use klcal.Calibrator(device='" + device_name(dev_type, dev_id) +
                                 "') or copy it with x.cpu())"),
          error_kind::device);
  in.type = bf16_view ? dtype::bf16 : element_type(a.dtype(), who);
  const std::int32_t ndim = static_cast<std::int32_t>(a.ndim());
  std::int64_t n = 1;
  for (std::int32_t d = 0; d < ndim; ++d) n *= a.shape_ptr()[d];
  in.n = n;
  const std::size_t elem = dtype_size(in.type);
  const auto* base = static_cast<const unsigned char*>(a.data());
  if (n == 0) {
    in.data = base;
    return in;
  }
  if (const auto off = dense_block_offset(ndim, a.shape_ptr(), a.stride_ptr())) {
    in.data = base + *off * static_cast<std::int64_t>(elem);
    return in;
  }
  if (on_cuda)
    raise(errc::invalid_option,
          std::string(who) +
              ": a CUDA tensor whose elements do not fill one dense block (a "
              "slice with steps?) is not copied implicitly; pass x.contiguous()");
  in.copy.resize(static_cast<std::size_t>(n) * elem);
  {
    nb::gil_scoped_release release;
    gather(base, elem, ndim, a.shape_ptr(), a.stride_ptr(), in.copy);
  }
  in.data = in.copy.data();
  in.copied = true;
  return in;
}

}  // namespace klcal::python
