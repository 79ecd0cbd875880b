// Bindings of LayerNormalization at inference over the last axis (norm.hpp): checks, buffer
// maps, outputs, GIL release.
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "checks.hpp"
#include "rnncore/norm.hpp"

namespace rnncore::bind {
namespace {

template <class T>
py::array layer_norm_t(const py::array& x, const std::optional<py::array>& gamma,
                       const std::optional<py::array>& beta, double epsilon, bool rms_scaling) {
  if (x.ndim() < 1)
    throw py::value_error("x: expected an array of rank >= 1 (..., features), got a scalar");
  const Index D = x.shape(x.ndim() - 1);
  Index N = 1;
  for (py::ssize_t k = 0; k + 1 < x.ndim(); ++k) N = checked_elements({N, x.shape(k)}, "x");
  const T* xp = float_input<T>(x, "x", shape_of(x));
  const T* g = gamma ? float_input<T>(*gamma, "gamma", {D}) : nullptr;
  const T* b = beta ? float_input<T>(*beta, "beta", {D}) : nullptr;
  if (!(epsilon >= 0))  // NaN too
    throw py::value_error("epsilon: expected a number >= 0, got " + std::to_string(epsilon));
  auto y = new_array<T>(shape_of(x));
  T* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    layer_norm_forward(xp, N, D, g, b, epsilon, rms_scaling, yp, get_num_threads());
  }
  return y;
}

}  // namespace

void register_norm(py::module_& m) {
  m.def(
      "layer_norm_forward",
      [](const py::array& x, std::optional<py::array> gamma, std::optional<py::array> beta,
         double epsilon, bool rms_scaling) -> py::array {
        return is_float64(x, "x") ? layer_norm_t<double>(x, gamma, beta, epsilon, rms_scaling)
                                  : layer_norm_t<float>(x, gamma, beta, epsilon, rms_scaling);
      },
      py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("epsilon"), py::arg("rms_scaling"),
      "LayerNormalization over the last axis of x (..., D), float32 or float64, C-contiguous: "
      "y = (x - mean) / sqrt(var + epsilon) * gamma + beta per row (rms_scaling: x / sqrt(var "
      "+ epsilon) * gamma), gamma and beta (D,) or None. Statistics in double.");
}

}  // namespace rnncore::bind
