// klcal.Calibrator: one CPU or GPU calibrator behind a Python object; add_many; state files.
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "klcal/state_file.hpp"

#if KLCAL_WITH_CUDA
#include "klcal/internal/cuda_status.hpp"
#endif

namespace klcal::python {
namespace {

/// A NumPy array that owns `v` (no copy of the elements).
template <typename T>
nb::object to_numpy(std::vector<T>&& v) {
  auto* owned = new std::vector<T>(std::move(v));
  nb::capsule deleter(owned, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T, nb::ndim<1>>(owned->data(), {owned->size()}, deleter).cast();
}

const char* layout_name(layout k) {
  return k == layout::abs ? "abs" : "signed";
}

const char* policy_name(range_policy p) {
  switch (p) {
    case range_policy::fixed: return "fixed";
    case range_policy::two_pass: return "two-pass";
    case range_policy::streaming: return "streaming";
  }
  return "?";
}

layout parse_layout(const std::string& s) {
  if (s == "abs") return layout::abs;
  if (s == "signed") return layout::signed_;
  raise(errc::invalid_option,
        "klcal.Calibrator: layout must be 'abs' or 'signed', got '" + s + "'");
}

/// Result of compute(): the library's search_result plus the optional KL/MSE curve.
struct py_result {
  search_result r;
  nb::object curve = nb::none();
};

#if KLCAL_WITH_CUDA
void check_cuda(cudaError_t e, const char* what) {
  detail::throw_on_cuda_error(e, std::string("klcal.Calibrator: ") + what);
}

using detail::device_guard;
#endif

// ---- construction ----------------------------------------------------------------------------

struct range_arg {
  range_policy policy = range_policy::two_pass;
  float lo = 0.0f, hi = 0.0f;
};

range_arg parse_range(nb::handle r, layout kind) {
  range_arg out;
  if (nb::isinstance<nb::str>(r)) {
    const std::string s = nb::cast<std::string>(r);
    if (s == "two-pass" || s == "two_pass") {
      out.policy = range_policy::two_pass;
    } else if (s == "streaming") {
      out.policy = range_policy::streaming;
    } else {
      raise(errc::invalid_option,
            "klcal.Calibrator: range must be 'two-pass', 'streaming' or a (lo, hi) pair, got '" +
                s + "'");
    }
    return out;
  }
  if (nb::isinstance<nb::tuple>(r) || nb::isinstance<nb::list>(r)) {
    nb::sequence seq = nb::borrow<nb::sequence>(r);
    if (nb::len(seq) == 2) {
      out.policy = range_policy::fixed;
      const double lo = nb::cast<double>(seq[0]);
      const double hi = nb::cast<double>(seq[1]);
      out.lo = static_cast<float>(lo);
      out.hi = static_cast<float>(hi);
      if (static_cast<double>(out.lo) != lo || static_cast<double>(out.hi) != hi)
        raise(errc::invalid_range,
              "klcal.Calibrator: range (" + std::to_string(lo) + ", " + std::to_string(hi) +
                  ") is not exactly representable in float32 (the histogram edges are fp32)");
      (void)kind;
      return out;
    }
  }
  raise(errc::invalid_option,
        "klcal.Calibrator: range must be 'two-pass', 'streaming' or a (lo, hi) pair of floats");
}

void make_backend(py_calibrator& c, std::optional<calibrator_state> from, const range_arg& r,
                  std::int32_t bins, layout kind) {
  if (!c.device.cuda) {
    if (from) {
      c.cpu.emplace(cpu::calibrator::from_state(std::move(*from), c.threads));
    } else if (r.policy == range_policy::fixed) {
      c.cpu.emplace(cpu::calibrator::fixed(histogram_spec{kind, bins, r.lo, r.hi}, c.threads));
    } else if (r.policy == range_policy::two_pass) {
      c.cpu.emplace(cpu::calibrator::two_pass(bins, kind, c.threads));
    } else {
      c.cpu.emplace(cpu::calibrator::streaming(bins, c.threads));
    }
    return;
  }
#if KLCAL_WITH_CUDA
  device_guard guard(c.device.ordinal);
  // The owning stream is the legacy default stream: it outlives every calibrator.
  cudaStream_t s = nullptr;
  auto make = [&]() {
    if (from) return calibrator::from_state(*from, s);
    if (r.policy == range_policy::fixed)
      return calibrator::fixed(histogram_spec{kind, bins, r.lo, r.hi}, s);
    if (r.policy == range_policy::two_pass) return calibrator::two_pass(bins, s, kind);
    return calibrator::streaming(bins, s);
  };
  c.gpu = std::make_unique<gpu_calibrator>(make(), c.device.ordinal);
#else
  (void)from;
  (void)r;
  (void)bins;
  (void)kind;
#endif
}

void init_calibrator(py_calibrator* self, std::int32_t bins, nb::handle range,
                     const std::string& layout_str, const std::string& device, int threads) {
  const layout kind = parse_layout(layout_str);
  const range_arg r = parse_range(range, kind);
  if (r.policy == range_policy::streaming && kind != layout::abs)
    raise(errc::layout_mismatch,
          "klcal.Calibrator: range='streaming' bins |x| (layout='abs'); use range='two-pass' or "
          "a fixed (lo, hi) for layout='signed'");
  const device_spec dev = parse_device(device);
  auto* c = new (self) py_calibrator();
  c->device = dev;
  c->threads = threads;
  try {
    make_backend(*c, std::nullopt, r, bins, kind);
  } catch (...) {
    c->~py_calibrator();
    throw;
  }
}

void init_from_state(py_calibrator* self, calibrator_state s, const device_spec& dev, int threads) {
  auto* c = new (self) py_calibrator();
  c->device = dev;
  c->threads = threads;
  try {
    make_backend(*c, std::move(s), range_arg{}, 0, layout::abs);
  } catch (...) {
    c->~py_calibrator();
    throw;
  }
}

// ---- operations -----------------------------------------------------------------------------

enum class add_kind { bins, range_pass };

void add_input(py_calibrator& c, const input& in, add_kind kind) {
  std::lock_guard<std::mutex> lock(c.mutex);
  c.last_pointer = reinterpret_cast<std::uintptr_t>(in.data);
  c.last_copied = in.copied;
  if (c.cpu) {
    if (kind == add_kind::bins)
      c.cpu->add(in.data, in.n, in.type);
    else
      c.cpu->add_range(in.data, in.n, in.type);
    return;
  }
#if KLCAL_WITH_CUDA
  c.gpu->use(in.stream);
  if (kind == add_kind::bins)
    c.gpu->cal.add(in.data, in.n, in.type, in.stream);
  else
    c.gpu->cal.add_range(in.data, in.n, in.type, in.stream);
#endif
}

void add(py_calibrator& c, nb::handle x, nb::handle stream, add_kind kind) {
  const char* who = kind == add_kind::bins ? "klcal.Calibrator.add" : "klcal.Calibrator.add_range";
  input in = import_input(x, c.device, stream, who);
  nb::gil_scoped_release release;
  add_input(c, in, kind);
}

#if KLCAL_WITH_CUDA
// The stream of a calibrator-only operation: the given one, or the calibrator's latest one.
cudaStream_t op_stream(const py_calibrator& c, nb::handle stream) {
  if (stream.is_none()) return c.gpu->last;
  if (nb::isinstance<nb::int_>(stream))
    return reinterpret_cast<cudaStream_t>(nb::cast<std::intptr_t>(stream));
  if (nb::hasattr(stream, "cuda_stream"))
    return reinterpret_cast<cudaStream_t>(nb::cast<std::intptr_t>(stream.attr("cuda_stream")));
  if (nb::hasattr(stream, "ptr"))
    return reinterpret_cast<cudaStream_t>(nb::cast<std::intptr_t>(stream.attr("ptr")));
  raise(errc::invalid_option, "stream must be None, an int handle, or a torch/CuPy stream");
}
#endif

void end_range_pass(py_calibrator& c, nb::handle stream) {
  std::lock_guard<std::mutex> lock(c.mutex);
  if (c.cpu) return c.cpu->end_range_pass();
#if KLCAL_WITH_CUDA
  cudaStream_t s = op_stream(c, stream);
  c.gpu->use(s);
  nb::gil_scoped_release release;
  c.gpu->cal.end_range_pass(s);
#else
  (void)stream;
#endif
}

void reset(py_calibrator& c, nb::handle stream) {
  std::lock_guard<std::mutex> lock(c.mutex);
  if (c.cpu) return c.cpu->reset();
#if KLCAL_WITH_CUDA
  cudaStream_t s = op_stream(c, stream);
  c.gpu->use(s);
  c.gpu->cal.reset(s);
#else
  (void)stream;
#endif
}

py_result compute(const py_calibrator& c, const search_options& opts, bool with_curve) {
  py_result out;
  std::vector<double> curve;
  {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.cpu) {
      out.r = c.cpu->compute(opts, with_curve ? &curve : nullptr);
    }
#if KLCAL_WITH_CUDA
    else if (!with_curve) {
      out.r = c.gpu->cal.compute(opts, c.gpu->last);
    } else {
      // The GPU calibrator returns no curve: search a host copy of the state (same result).
      out.r = cpu::calibrator::from_state(c.gpu->cal.state(c.gpu->last)).compute(opts, &curve);
    }
#endif
  }
  if (with_curve) out.curve = to_numpy(std::move(curve));
  return out;
}

void merge(py_calibrator& c, const py_calibrator& other) {
  if (&c == &other)
    raise(errc::invalid_option, "klcal.Calibrator.merge: a calibrator cannot merge itself");
  nb::gil_scoped_release release;
  const bool same_device =
      c.device.cuda == other.device.cuda && c.device.ordinal == other.device.ordinal;
  if (!same_device) {
    // Across devices through the plain state (a host copy): exact all the same.
    calibrator_state s = other.state();
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.cpu) return c.cpu->merge(cpu::calibrator::from_state(std::move(s)));
#if KLCAL_WITH_CUDA
    device_guard guard(c.device.ordinal);
    calibrator tmp = calibrator::from_state(s, c.gpu->last);
    c.gpu->cal.merge(tmp, c.gpu->last);
    check_cuda(cudaStreamSynchronize(c.gpu->last), "cudaStreamSynchronize");
#endif
    return;
  }
  std::scoped_lock lock(c.mutex, other.mutex);
  if (c.cpu) return c.cpu->merge(*other.cpu);
#if KLCAL_WITH_CUDA
  device_guard guard(c.device.ordinal);
  // Order this calibrator's stream after the other's latest work.
  check_cuda(cudaEventRecord(other.gpu->event, other.gpu->last), "cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(c.gpu->last, other.gpu->event, 0), "cudaStreamWaitEvent");
  c.gpu->cal.merge(other.gpu->cal, c.gpu->last);
  // ... and the other's later work (which may change what the merge reads) after the merge.
  check_cuda(cudaEventRecord(c.gpu->event, c.gpu->last), "cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(other.gpu->last, c.gpu->event, 0), "cudaStreamWaitEvent");
#endif
}

// state() with the GIL released (a GPU calibrator synchronizes its stream for the copy).
calibrator_state state_without_gil(const py_calibrator& c) {
  nb::gil_scoped_release release;
  return c.state();
}

nb::bytes state_bytes(const py_calibrator& c, const std::string& name) {
  std::string bytes;
  {
    nb::gil_scoped_release release;
    bytes = formats::encode_states({named_state{name, c.state()}});
  }
  return nb::bytes(bytes.data(), bytes.size());
}

std::vector<named_state> decode(const nb::bytes& data, const char* who) {
  std::string_view v(data.c_str(), data.size());
  nb::gil_scoped_release release;
  return formats::decode_states(v.data(), v.size(), who);
}

}  // namespace

void replace_state(py_calibrator& c, calibrator_state s) {
  std::lock_guard<std::mutex> lock(c.mutex);
  make_backend(c, std::move(s), range_arg{}, 0, layout::abs);
}

// ---- py_calibrator ----------------------------------------------------------------------------

calibrator_state py_calibrator::state() const {
  std::lock_guard<std::mutex> lock(mutex);
  if (cpu) return cpu->state();
#if KLCAL_WITH_CUDA
  return gpu->cal.state(gpu->last);
#else
  return {};
#endif
}

histogram_spec py_calibrator::spec() const {
  std::lock_guard<std::mutex> lock(mutex);  // a streaming add() on another thread may grow it
  if (cpu) return cpu->spec();
#if KLCAL_WITH_CUDA
  return gpu->cal.spec();
#else
  return {};
#endif
}

range_policy py_calibrator::policy() const {
  std::lock_guard<std::mutex> lock(mutex);
  if (cpu) return cpu->policy();
#if KLCAL_WITH_CUDA
  return gpu->cal.policy();
#else
  return range_policy::fixed;
#endif
}

#if KLCAL_WITH_CUDA
gpu_calibrator::gpu_calibrator(calibrator c, int dev) : cal(std::move(c)), device(dev) {
  last = cal.stream();
  device_guard guard(device);
  check_cuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
}

gpu_calibrator::~gpu_calibrator() {
  // Frees are stream-ordered on the owning stream: order it after the latest work first.
  const device_guard guard(device, std::nothrow);
  if (last != cal.stream() && cudaEventRecord(event, last) == cudaSuccess)
    (void)cudaStreamWaitEvent(cal.stream(), event, 0);
  (void)cudaEventDestroy(event);
}

void gpu_calibrator::use(cudaStream_t s) {
  if (s == last) return;
  device_guard guard(device);
  check_cuda(cudaEventRecord(event, last), "cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(s, event, 0), "cudaStreamWaitEvent");
  last = s;
}
#endif

device_spec parse_device(const std::string& text) {
  device_spec d;
  if (text == "cpu") return d;
  int ordinal = -1;
  if (text == "cuda") {
    ordinal = -2;  // the current device
  } else if (text.rfind("cuda:", 0) == 0 && text.size() > 5 &&
             text.find_first_not_of("0123456789", 5) == std::string::npos && text.size() < 12) {
    ordinal = std::stoi(text.substr(5));
  } else {
    raise(errc::invalid_option,
          "klcal.Calibrator: device must be 'cpu', 'cuda' or 'cuda:N', got '" + text + "'",
          error_kind::device);
  }
#if KLCAL_WITH_CUDA
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0)
    raise(errc::invalid_option,
          "klcal.Calibrator: device '" + text + "' but no CUDA device is visible" +
              (e != cudaSuccess ? " (" + detail::cuda_error_text(e) + ")" : std::string()),
          error_kind::device);
  if (ordinal == -2) check_cuda(cudaGetDevice(&ordinal), "cudaGetDevice");
  if (ordinal >= count)
    raise(errc::invalid_option,
          "klcal.Calibrator: device '" + text + "' but only " + std::to_string(count) +
              " CUDA device(s) are visible",
          error_kind::device);
  d.cuda = true;
  d.ordinal = ordinal;
  return d;
#else
  (void)ordinal;
  raise(errc::invalid_option,
        "klcal.Calibrator: device '" + text +
            "' but this klcal was built without CUDA (klcal.cuda_available() is False; "
            "reinstall with nvcc on PATH)",
        error_kind::device);
#endif
}

search_options make_search_options(const std::string& method, const std::string& rules,
                                   double percentile, int bits, bool is_unsigned, int start_bin,
                                   int stride, const std::string& zero_bin) {
  search_options o;
  if (method == "entropy") {
    o.meth = method::entropy;
  } else if (method == "percentile") {
    o.meth = method::percentile;
  } else if (method == "mse") {
    o.meth = method::mse;
  } else if (method == "max") {
    o.meth = method::max;
  } else {
    raise(
        errc::invalid_option,
        "klcal.Calibrator.compute: method must be 'entropy', 'percentile', 'mse' or 'max', got '" +
            method + "'");
  }
  if (rules == "tensorrt") {
    o.rules = rule_set::tensorrt;
  } else if (rules == "mxnet") {
    o.rules = rule_set::mxnet;
  } else {
    raise(errc::invalid_option,
          "klcal.Calibrator.compute: rules must be 'tensorrt' or 'mxnet', got '" + rules + "'");
  }
  if (zero_bin == "copy_next") {
    o.zero_bin = zero_bin_policy::copy_next;
  } else if (zero_bin == "keep") {
    o.zero_bin = zero_bin_policy::keep;
  } else {
    raise(
        errc::invalid_option,
        "klcal.Calibrator.compute: zero_bin must be 'copy_next' or 'keep', got '" + zero_bin + "'");
  }
  o.percentile = percentile;
  o.bits = bits;
  o.is_unsigned = is_unsigned;
  o.start_bin = start_bin;
  o.stride = stride;
  return o;
}

void register_calibrator(nb::module_& m) {
  nb::class_<tensor_stats>(m, "Stats", "Exact statistics of every value added (numerics.md 1.4).")
      .def_ro("finite_count", &tensor_stats::finite_count, "Values that are neither NaN nor +-Inf.")
      .def_ro("nan_count", &tensor_stats::nan_count)
      .def_ro("inf_count", &tensor_stats::inf_count)
      .def_ro("max_abs", &tensor_stats::max_abs, "Largest finite |x| (0 when none).")
      .def_ro("min", &tensor_stats::min, "Smallest finite x (+inf when none).")
      .def_ro("max", &tensor_stats::max, "Largest finite x (-inf when none).")
      .def("__repr__", [](const tensor_stats& s) {
        return "klcal.Stats(finite_count=" + std::to_string(s.finite_count) +
               ", nan_count=" + std::to_string(s.nan_count) +
               ", inf_count=" + std::to_string(s.inf_count) +
               ", max_abs=" + nb::cast<std::string>(nb::repr(nb::float_(s.max_abs))) +
               ", min=" + nb::cast<std::string>(nb::repr(nb::float_(s.min))) +
               ", max=" + nb::cast<std::string>(nb::repr(nb::float_(s.max))) + ")";
      });

  nb::class_<py_result>(m, "Result", "The threshold one compute() chose (numerics.md 5).")
      .def_prop_ro(
          "amax", [](const py_result& r) { return r.r.amax; },
          "Clipping threshold, computed in fp64.")
      .def_prop_ro(
          "scale", [](const py_result& r) { return r.r.scale; },
          "float32(amax) / qmax, correctly rounded to fp32 (returned as a Python float).")
      .def_prop_ro(
          "index", [](const py_result& r) { return r.r.index; },
          "The method's choice: bin count, bin or half-width (numerics.md 5).")
      .def_prop_ro(
          "score", [](const py_result& r) { return r.r.score; },
          "KL or MSE at the optimum (0 for max and percentile).")
      .def_prop_ro(
          "clipped_fraction", [](const py_result& r) { return r.r.clipped_fraction; },
          "Mass of the bins entirely beyond amax, over the total.")
      .def_prop_ro(
          "degenerate", [](const py_result& r) { return r.r.degenerate; },
          "Empty, all-zero, or every candidate infinite.")
      .def_prop_ro(
          "curve", [](const py_result& r) { return r.curve; },
          nb::for_getter(
              nb::sig("def curve(self, /) -> numpy.typing.NDArray[numpy.float64] | None")),
          "The KL or MSE of every candidate (float64 array) when compute(curve=True), "
          "else None.")
      .def("__repr__", [](const py_result& r) {
        auto f = [](double v) { return nb::cast<std::string>(nb::repr(nb::float_(v))); };
        return "klcal.Result(amax=" + f(r.r.amax) + ", scale=" + f(r.r.scale) +
               ", index=" + std::to_string(r.r.index) + ", score=" + f(r.r.score) +
               ", clipped_fraction=" + f(r.r.clipped_fraction) +
               ", degenerate=" + (r.r.degenerate ? "True" : "False") + ")";
      });

  nb::class_<py_calibrator>(m, "Calibrator", R"doc(
Histogram and exact statistics of one tensor, and its threshold search.

Mirrors klcal::cpu::calibrator (device="cpu") and klcal::calibrator (device="cuda[:N]"): the
same data in any order and split gives identical counts, statistics and results on both.

Args:
    bins: histogram bins, 2 .. 2**24 (a power of two for range="streaming"; odd for the mxnet
        rule set).
    range: "two-pass" (add_range() over all data, end_range_pass(), then add() over all data;
        hi = max |x|), "streaming" (one pass, hi a growing power of two, abs layout), or a fixed
        (lo, hi) pair of float32 values.
    layout: "abs" (bins |x| over [0, hi)) or "signed" (bins x over [lo, hi) / [-hi, hi)).
    device: "cpu", "cuda" (the current CUDA device) or "cuda:N".
    threads: CPU threads for histograms and searches; 0 = all hardware threads.
)doc")
      .def(
          "__init__",
          [](py_calibrator* self, std::int32_t bins, nb::handle range, const std::string& layout,
             const std::string& device,
             int threads) { init_calibrator(self, bins, range, layout, device, threads); },
          nb::arg("bins") = 2048, nb::arg("range") = "two-pass", nb::arg("layout") = "abs",
          nb::arg("device") = "cpu", nb::arg("threads") = 0,
          nb::sig(
              "def __init__(self, bins: int = 2048, range: str | tuple[float, float] = "
              "'two-pass', layout: str = 'abs', device: str = 'cpu', threads: int = 0) -> None"))
      .def(
          "add",
          [](py_calibrator& c, nb::handle x, nb::handle stream) {
            add(c, x, stream, add_kind::bins);
          },
          nb::arg("x").none(), nb::kw_only(), nb::arg("stream") = nb::none(),
          nb::sig("def add(self, x: object, *, stream: object | None = None) -> None"),
          R"doc(Bins every element of x (NaN and +-Inf are counted, not binned).

x: a NumPy array or any DLPack producer (torch.Tensor, CuPy, JAX) of float32, float16 or
bfloat16 (ml_dtypes.bfloat16 for NumPy), any shape (0-d is one value, empty adds nothing), on
the calibrator's device. Elements that fill one dense block (C or F order, permuted axes) are
read in place, without a copy; other host arrays are gathered into a temporary copy first; other
CUDA tensors raise klcal.InvalidArgumentError. The GIL is released while binning.

stream (CUDA only): None = the producer's current stream (torch, CuPy; the legacy default stream
for others), or an int cudaStream_t / torch.cuda.Stream / cupy.cuda.Stream. The producer orders
its pending work before it (DLPack stream protocol); the calibrator orders it after its own
previous operation. Keep x alive (or on the same stream) until that work has run, as with any
CUDA kernel.)doc")
      .def(
          "add_range",
          [](py_calibrator& c, nb::handle x, nb::handle stream) {
            add(c, x, stream, add_kind::range_pass);
          },
          nb::arg("x").none(), nb::kw_only(), nb::arg("stream") = nb::none(),
          nb::sig("def add_range(self, x: object, *, stream: object | None = None) -> None"),
          "First pass of range='two-pass': statistics only. Same inputs as add().")
      .def(
          "end_range_pass", [](py_calibrator& c, nb::handle stream) { end_range_pass(c, stream); },
          nb::kw_only(), nb::arg("stream") = nb::none(),
          nb::sig("def end_range_pass(self, *, stream: object | None = None) -> None"),
          "Ends the first pass of range='two-pass': hi = max(max |x|, 2**-64).")
      .def(
          "compute",
          [](const py_calibrator& c, const std::string& method, const std::string& rules,
             double percentile, int bits, bool is_unsigned, int start_bin, int stride,
             const std::string& zero_bin, bool curve) {
            return compute(c,
                           make_search_options(method, rules, percentile, bits, is_unsigned,
                                               start_bin, stride, zero_bin),
                           curve);
          },
          nb::arg("method") = "entropy", nb::arg("rules") = "tensorrt",
          nb::arg("percentile") = 99.99, nb::arg("bits") = 8, nb::arg("unsigned") = false,
          nb::arg("start_bin") = 128, nb::arg("stride") = 1, nb::arg("zero_bin") = "copy_next",
          nb::arg("curve") = false,
          R"doc(Searches the threshold (docs/numerics.md 2 to 5) and returns a klcal.Result.

method: "entropy" (KL divergence), "percentile", "mse" or "max". rules: "tensorrt" (abs layout)
or "mxnet" (signed layout, odd bins). bits 2..16; unsigned: levels 2**bits; start_bin, stride:
tensorrt entropy and mse candidates; zero_bin: "copy_next" (tensorrt: c[0] := c[1]) or "keep";
percentile in [0, 100]; curve=True also returns every candidate's score.)doc")
      .def_prop_ro(
          "counts",
          [](const py_calibrator& c) { return to_numpy(std::move(state_without_gil(c).counts)); },
          nb::for_getter(nb::sig("def counts(self, /) -> numpy.typing.NDArray[numpy.uint64]")),
          "A copy of the counts (numpy.uint64 array of `bins` entries).")
      .def_prop_ro(
          "stats", [](const py_calibrator& c) { return state_without_gil(c).stats; },
          "A copy of the statistics (klcal.Stats).")
      .def(
          "merge", [](py_calibrator& c, const py_calibrator& other) { merge(c, other); },
          nb::arg("other"),
          "Adds another calibrator's counts and statistics exactly: same range policy and bins; "
          "identical ranges for fixed and two-pass; streaming ranges meet at the larger one. "
          "Calibrators on different devices merge through their state.")
      .def(
          "reset", [](py_calibrator& c, nb::handle stream) { reset(c, stream); }, nb::kw_only(),
          nb::arg("stream") = nb::none(),
          nb::sig("def reset(self, *, stream: object | None = None) -> None"),
          "Back to empty (streaming restarts at hi = 2**-64, two-pass at its first pass).")
      .def("state", &state_bytes, nb::arg("name") = "tensor",
           "Everything the calibrator knows as the bytes of a klcal state file with one tensor "
           "(docs/formats.md).")
      .def_static(
          "from_state",
          [](const nb::bytes& data, const std::string& device, int threads, nb::handle name) {
            std::vector<named_state> states = decode(data, "klcal.Calibrator.from_state");
            std::size_t pick = 0;
            if (!name.is_none()) {
              const std::string wanted = nb::cast<std::string>(name);
              pick = states.size();
              for (std::size_t i = 0; i < states.size(); ++i)
                if (states[i].name == wanted) pick = i;
              if (pick == states.size())
                raise(errc::invalid_option,
                      "klcal.Calibrator.from_state: no tensor named '" + wanted + "'");
            } else if (states.size() != 1) {
              raise(errc::invalid_option, "klcal.Calibrator.from_state: the state holds " +
                                              std::to_string(states.size()) +
                                              " tensors; pass name=... (or use load_states)");
            }
            nb::object obj = nb::inst_alloc(nb::type<py_calibrator>());
            init_from_state(nb::inst_ptr<py_calibrator>(obj), std::move(states[pick].state),
                            parse_device(device), threads);
            nb::inst_mark_ready(obj);
            return obj;
          },
          nb::arg("data"), nb::kw_only(), nb::arg("device") = "cpu", nb::arg("threads") = 0,
          nb::arg("name") = nb::none(),
          nb::sig("def from_state(data: bytes, *, device: str = 'cpu', threads: int = 0, "
                  "name: str | None = None) -> Calibrator"),
          "A calibrator that continues from state() bytes (or one named tensor of a state file).")
      .def("__getstate__",
           [](const py_calibrator& c) {
             return nb::make_tuple(state_bytes(c, "tensor"), c.device.str(), c.threads);
           })
      .def("__setstate__",
           [](py_calibrator* self, const nb::tuple& t) {
             std::vector<named_state> states =
                 decode(nb::cast<nb::bytes>(t[0]), "klcal.Calibrator pickle");
             if (states.size() != 1)
               raise(errc::format_error, "klcal.Calibrator pickle: expected one tensor");
             init_from_state(self, std::move(states[0].state),
                             parse_device(nb::cast<std::string>(t[1])), nb::cast<int>(t[2]));
           })
      .def_prop_ro("bins", [](const py_calibrator& c) { return c.spec().bins; })
      .def_prop_ro(
          "layout", [](const py_calibrator& c) { return layout_name(c.spec().kind); },
          "'abs' or 'signed'.")
      .def_prop_ro(
          "policy", [](const py_calibrator& c) { return policy_name(c.policy()); },
          "'fixed', 'two-pass' or 'streaming'.")
      .def_prop_ro(
          "range",
          [](const py_calibrator& c) {
            const histogram_spec s = c.spec();
            return std::make_pair(static_cast<double>(s.lo), static_cast<double>(s.hi));
          },
          "The current (lo, hi): for streaming hi = 2**e; for two-pass meaningful only once "
          "range_done.")
      .def_prop_ro(
          "range_done", [](const py_calibrator& c) { return state_without_gil(c).range_done; },
          "False only for a two-pass calibrator before end_range_pass().")
      .def_prop_ro(
          "device", [](const py_calibrator& c) { return c.device.str(); }, "'cpu' or 'cuda:N'.")
      .def_prop_ro("threads", [](const py_calibrator& c) { return c.threads; })
      .def(
          "_last_input",
          [](const py_calibrator& c) { return std::make_pair(c.last_pointer, c.last_copied); },
          "Test hook: (address of the first element the library read, whether it was a copy) "
          "for the latest add() or add_range().")
      .def("__repr__", [](const py_calibrator& c) {
        const histogram_spec s = c.spec();
        return "klcal.Calibrator(bins=" + std::to_string(s.bins) + ", policy='" +
               policy_name(c.policy()) + "', layout='" + layout_name(s.kind) + "', device='" +
               c.device.str() + "')";
      });

  m.def(
      "add_many",
      [](const std::vector<py_calibrator*>& cals, const nb::sequence& tensors, bool range_pass,
         nb::handle stream) {
        if (nb::len(tensors) != cals.size())
          raise(errc::invalid_count, "klcal.add_many: " + std::to_string(cals.size()) +
                                         " calibrators but " + std::to_string(nb::len(tensors)) +
                                         " tensors");
        const add_kind kind = range_pass ? add_kind::range_pass : add_kind::bins;
        std::vector<input> inputs;
        inputs.reserve(cals.size());
        for (std::size_t i = 0; i < cals.size(); ++i) {
          if (cals[i] == nullptr) raise(errc::null_pointer, "klcal.add_many: None calibrator");
          inputs.push_back(import_input(tensors[i], cals[i]->device, stream, "klcal.add_many"));
        }
        nb::gil_scoped_release release;
        for (std::size_t i = 0; i < cals.size(); ++i) add_input(*cals[i], inputs[i], kind);
      },
      nb::arg("calibrators"), nb::arg("tensors"), nb::kw_only(), nb::arg("range_pass") = false,
      nb::arg("stream") = nb::none(),
      nb::sig("def add_many(calibrators: collections.abc.Sequence[Calibrator], tensors: "
              "collections.abc.Sequence[object], *, "
              "range_pass: bool = False, stream: object | None = None) -> None"),
      R"doc(Adds tensors[i] to calibrators[i] for every i in one call: every input is checked
before any is binned, and the GIL is released once for the whole batch. range_pass=True calls
add_range() instead of add(). A calibrator may appear more than once.)doc");

  m.def(
      "save_states",
      [](const std::vector<std::pair<std::string, const py_calibrator*>>& items) {
        std::vector<named_state> states;
        states.reserve(items.size());
        for (const auto& [name, c] : items) states.push_back({name, c->state()});
        std::string bytes;
        {
          nb::gil_scoped_release release;
          bytes = formats::encode_states(states, "klcal.save_states");
        }
        return nb::bytes(bytes.data(), bytes.size());
      },
      nb::arg("items"),
      nb::sig("def save_states(items: collections.abc.Sequence[tuple[str, Calibrator]]) -> bytes"),
      "Encodes (name, calibrator) pairs, e.g. list(d.items()) of a dict, as one klcal state file "
      "(docs/formats.md); names must be distinct and non-empty.");

  m.def(
      "load_states",
      [](const nb::bytes& data, const std::string& device, int threads) {
        std::vector<named_state> states = decode(data, "klcal.load_states");
        const device_spec dev = parse_device(device);
        nb::list out;
        for (named_state& s : states) {
          nb::object obj = nb::inst_alloc(nb::type<py_calibrator>());
          init_from_state(nb::inst_ptr<py_calibrator>(obj), std::move(s.state), dev, threads);
          nb::inst_mark_ready(obj);
          out.append(nb::make_tuple(s.name, obj));
        }
        return out;
      },
      nb::arg("data"), nb::kw_only(), nb::arg("device") = "cpu", nb::arg("threads") = 0,
      nb::sig("def load_states(data: bytes, *, device: str = 'cpu', threads: int = 0) -> "
              "list[tuple[str, Calibrator]]"),
      "Decodes a klcal state file into (name, Calibrator) pairs in file order.");
}

}  // namespace klcal::python
