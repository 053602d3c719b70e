// klcal._klcal._all_reduce: klcal::all_reduce / end_range_pass of Python calibrators, with the
// two collectives supplied as Python callables (klcal.distributed passes torch.distributed).
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "klcal/collective.hpp"

namespace klcal::python {
namespace {

/// Calls `f(words)` with a writable uint64 NumPy view of d[0..n) that `f` reduces in place.
/// The view is only valid during the call.
void call_reduce(const nb::callable& f, std::uint64_t* d, std::size_t n) {
  nb::gil_scoped_acquire gil;
  // An owner that frees nothing: the array then refers to d (without one nanobind would copy).
  nb::capsule owner(d, [](void*) noexcept {});
  nb::ndarray<nb::numpy, std::uint64_t, nb::ndim<1>> view(d, {n}, owner);
  f(view);
}

void reduce(const std::vector<std::pair<std::string, py_calibrator*>>& items,
            const nb::callable& max_u64, const nb::callable& sum_u64, bool end_range) {
  std::vector<named_state> states;
  states.reserve(items.size());
  for (const auto& [name, c] : items) {
    if (c == nullptr) raise(errc::null_pointer, "klcal.distributed: None calibrator");
    states.push_back({name, c->state()});
  }
  collective comm;
  comm.max_u64 = [&](std::uint64_t* d, std::size_t n) { call_reduce(max_u64, d, n); };
  comm.sum_u64 = [&](std::uint64_t* d, std::size_t n) { call_reduce(sum_u64, d, n); };
  {
    nb::gil_scoped_release release;  // reacquired inside the collectives
    if (end_range)
      end_range_pass(states, comm, "klcal.distributed.end_range_pass");
    else
      all_reduce(states, comm, "klcal.distributed.all_reduce");
    // Only after every collective returned: the calibrators take the reduced states.
    for (std::size_t i = 0; i < items.size(); ++i)
      replace_state(*items[i].second, std::move(states[i].state));
  }
}

}  // namespace

void register_distributed(nb::module_& m) {
  m.def("_all_reduce", &reduce, nb::arg("items"), nb::arg("max_u64"), nb::arg("sum_u64"),
        nb::arg("end_range_pass") = false,
        nb::sig("def _all_reduce(items: Sequence[tuple[str, Calibrator]], max_u64: "
                "Callable[[numpy.ndarray], None], sum_u64: Callable[[numpy.ndarray], None], "
                "end_range_pass: bool = False) -> None"),
        "klcal::all_reduce (or end_range_pass) of (name, Calibrator) pairs; max_u64(words) and "
        "sum_u64(words) all-reduce a uint64 array in place across the ranks. Use "
        "klcal.distributed.");
}

}  // namespace klcal::python
