// klcal.Error and its subclasses: the library's status and a message in Python terms.
#include <nanobind/stl/string.h>

#include <exception>
#include <new>
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

PyObject* load_class(const nb::module_& errors, const char* name) {
  nb::object cls = errors.attr(name);
  return cls.release().ptr();  // kept for the life of the interpreter
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
  try {
    nb::object instance =
        nb::handle(cls)(python_terms(e.what()), nb::cast(e.code().code), e.code().cuda);
    PyErr_SetObject(cls, instance.ptr());
  } catch (nb::python_error& pe) {
    pe.restore();  // the constructor's own exception
  }
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

  // The classes are plain Python (klcal/_errors.py), so type checkers and docs see them.
  const nb::module_ errors = nb::module_::import_("klcal._errors");
  classes.base = load_class(errors, "Error");
  classes.invalid_argument = load_class(errors, "InvalidArgumentError");
  classes.device = load_class(errors, "DeviceError");
  classes.dtype = load_class(errors, "DtypeError");
  classes.cuda = load_class(errors, "CudaError");
  classes.out_of_memory = load_class(errors, "OutOfMemoryError");
  classes.file = load_class(errors, "FileError");
  classes.format = load_class(errors, "FormatError");

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
