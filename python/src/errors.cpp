// klcal.Error and its subclasses: the library's status and a message in Python terms.
#include <string>

#include "bindings.hpp"

namespace klcal::python {
namespace {

struct error_classes {
  PyObject* base = nullptr;
  PyObject* invalid_argument = nullptr;
  PyObject* device = nullptr;
  PyObject* dtype = nullptr;
  PyObject* cuda = nullptr;
  PyObject* out_of_memory = nullptr;
  PyObject* file = nullptr;
  PyObject* format = nullptr;
};

// Created once at import; the module holds the references for the life of the interpreter.
error_classes classes;

PyObject* make_class(nb::module_& m, const char* name, const char* doc, PyObject* bases) {
  const std::string qualified = std::string("klcal.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases, nullptr);
  if (cls == nullptr) throw nb::python_error();
  m.attr(name) = nb::handle(cls);
  return cls;
}

PyObject* class_for(const error& e) {
  if (const auto* pe = dynamic_cast<const python_error*>(&e);
      pe != nullptr && pe->kind() == error_kind::device)
    return classes.device;
  switch (e.code().code) {
    case errc::invalid_dtype: return classes.dtype;
    case errc::cuda_error: return classes.cuda;
    case errc::out_of_memory: return classes.out_of_memory;
    case errc::io_error: return classes.file;
    case errc::format_error: return classes.format;
    case errc::comm_error:  // a collective engine failed: not the caller's argument
    case errc::ok: return classes.base;
    default: return classes.invalid_argument;
  }
}

// The C++ layers prefix messages with the class that threw; Python users know klcal.Calibrator.
std::string python_terms(std::string what) {
  for (const char* who : {"klcal::cpu::calibrator", "klcal::calibrator"}) {
    const std::string prefix = std::string(who) + ": ";
    if (what.compare(0, prefix.size(), prefix) == 0) {
      what = "klcal.Calibrator: " + what.substr(prefix.size());
      break;
    }
  }
  if (what.find("before end_range_pass()") != std::string::npos)
    what +=
        " (range='two-pass' reads the data twice: add_range(x) for every batch, then "
        "end_range_pass(), then add(x) for every batch; range='streaming' reads it once)";
  return what;
}

void set_python_error(const error& e) {
  PyObject* cls = class_for(e);
  nb::object instance = nb::steal(PyObject_CallFunction(cls, "s", python_terms(e.what()).c_str()));
  if (!instance.is_valid()) return;  // the constructor's own exception stays set
  instance.attr("status") = nb::cast(e.code().code);
  instance.attr("cuda_error") = e.code().cuda;
  PyErr_SetObject(cls, instance.ptr());
}

}  // namespace

void raise(status s, const std::string& what, error_kind kind) {
  throw python_error(s, what, kind);
}

void register_errors(nb::module_& m) {
  nb::enum_<errc>(m, "Errc", "Status codes of the library (include/klcal/status.hpp).")
      .value("ok", errc::ok)
      .value("too_few_bins", errc::too_few_bins)
      .value("too_many_bins", errc::too_many_bins)
      .value("start_bin_out_of_range", errc::start_bin_out_of_range)
      .value("invalid_stride", errc::invalid_stride)
      .value("invalid_bits", errc::invalid_bits)
      .value("invalid_range", errc::invalid_range)
      .value("bins_not_odd", errc::bins_not_odd)
      .value("bins_not_power_of_two", errc::bins_not_power_of_two)
      .value("null_pointer", errc::null_pointer)
      .value("workspace_too_small", errc::workspace_too_small)
      .value("invalid_percentile", errc::invalid_percentile)
      .value("layout_mismatch", errc::layout_mismatch)
      .value("invalid_dtype", errc::invalid_dtype)
      .value("invalid_count", errc::invalid_count)
      .value("invalid_option", errc::invalid_option)
      .value("cuda_error", errc::cuda_error)
      .value("out_of_memory", errc::out_of_memory)
      .value("io_error", errc::io_error)
      .value("format_error", errc::format_error)
      .value("comm_error", errc::comm_error);

  classes.base = make_class(
      m, "Error",
      "Base of every klcal error. `status` is the library's klcal.Errc, `cuda_error` the "
      "cudaError_t number of a failed CUDA call (0 otherwise).",
      PyExc_Exception);
  auto pair = [](PyObject* a, PyObject* b) {
    nb::tuple t = nb::make_tuple(nb::handle(a), nb::handle(b));
    return t;
  };
  classes.invalid_argument =
      make_class(m, "InvalidArgumentError",
                 "An argument or option outside its documented domain (also a ValueError).",
                 pair(classes.base, PyExc_ValueError).ptr());
  classes.device = make_class(
      m, "DeviceError",
      "A device that does not exist or was not built, or a tensor on another device than the "
      "calibrator.",
      classes.invalid_argument);
  classes.dtype = make_class(m, "DtypeError",
                             "An element type klcal does not bin (also a TypeError); klcal "
                             "takes float32, float16 and bfloat16.",
                             pair(classes.base, PyExc_TypeError).ptr());
  classes.cuda = make_class(m, "CudaError", "The CUDA runtime failed.", classes.base);
  classes.out_of_memory =
      make_class(m, "OutOfMemoryError", "A host or device allocation failed (also a MemoryError).",
                 pair(classes.base, PyExc_MemoryError).ptr());
  classes.file =
      make_class(m, "FileError", "A file could not be opened, read or written (also an OSError).",
                 pair(classes.base, PyExc_OSError).ptr());
  classes.format =
      make_class(m, "FormatError", "Bytes that do not follow their format (also a ValueError).",
                 pair(classes.base, PyExc_ValueError).ptr());

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const error& e) {
      set_python_error(e);
    } catch (const std::bad_alloc&) {
      set_python_error(error(errc::out_of_memory, "klcal: out of host memory"));
    }
  });
}

}  // namespace klcal::python
