// Bindings of Dense (last axis): checks, buffer maps, outputs, GIL release.
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "checks.hpp"
#include "rnn_args.hpp"
#include "rnncore/dense.hpp"

namespace rnncore::bind {
namespace {

// x (..., D) seen as N x D rows.
struct Rows2D {
  Index N, D;
};

Rows2D rows_of(const py::array& x) {
  if (x.ndim() < 1)
    throw py::value_error("x: expected an array of rank >= 1 (..., input_dim), got a scalar");
  const Index D = x.shape(x.ndim() - 1);
  Index N = 1;
  for (py::ssize_t k = 0; k + 1 < x.ndim(); ++k) N = checked_elements({N, x.shape(k)}, "x");
  return {N, D};
}

// With a precision other than F32 (T = float only) the kernel is low precision (rnn_args.hpp:
// lowp_input), packed for this call.
template <class T>
py::array dense_forward_t(const py::array& x, const py::array& kernel,
                          const std::optional<py::array>& bias, Activation act,
                          Precision precision = Precision::F32,
                          const std::optional<py::array>& kernel_scale = std::nullopt) {
  const auto [N, D] = rows_of(x);
  check_ndim(kernel, "kernel", 2, "(input_dim, units)");
  const Index U = kernel.shape(1);
  check_contiguous(x, "x");
  const bool lowp = precision != Precision::F32;
  if (lowp) check_dtype<T>(x, "x", "the quantized layer (float32)");
  const T* W = lowp ? nullptr : float_input<T>(kernel, "kernel", {D, U});
  const LowpSource W_low =
      lowp ? lowp_input(precision, kernel, kernel_scale, "kernel", {D, U}) : LowpSource{};
  const T* b = bias ? float_input<T>(*bias, "bias", {U}) : nullptr;
  checked_elements({N, U}, "output");
  std::vector<Index> shape = shape_of(x);
  shape.back() = U;
  auto y = new_array<T>(shape);
  T* yp = y.mutable_data();
  const T* xp = static_cast<const T*>(x.data());
  {
    py::gil_scoped_release release;
    if (lowp) {
      PackedWeights<T> packed;
      packed.pack(nullptr, W_low, D, U, U);
      dense_forward(xp, N, packed, b, act, yp, get_num_threads());
    } else {
      dense_forward(xp, N, D, W, U, b, act, yp, get_num_threads());
    }
  }
  return y;
}

template <class T>
py::tuple dense_backward_t(const py::array& x, const py::array& kernel, bool use_bias,
                           Activation act, const py::array& y, const py::array& dy) {
  const auto [N, D] = rows_of(x);
  check_ndim(kernel, "kernel", 2, "(input_dim, units)");
  const Index U = kernel.shape(1);
  check_contiguous(x, "x");
  const T* W = float_input<T>(kernel, "kernel", {D, U});
  std::vector<Index> yshape = shape_of(x);
  yshape.back() = U;
  const T* yp = float_input<T>(y, "y", yshape);
  const T* dyp = float_input<T>(dy, "dy", yshape);
  auto dz = new_array<T>(yshape);
  auto dx = new_array<T>(shape_of(x));
  auto dW = new_array<T>({D, U});
  py::object db = py::none();
  T* dbp = nullptr;
  if (use_bias) {
    auto b = new_array<T>({U});
    dbp = b.mutable_data();
    db = b;
  }
  T* dzp = dz.mutable_data();
  T* dxp = dx.mutable_data();
  T* dWp = dW.mutable_data();
  const T* xp = static_cast<const T*>(x.data());
  {
    py::gil_scoped_release release;
    std::copy_n(dyp, N * U, dzp);
    dense_backward(xp, N, D, W, U, act, yp, dzp, dxp, dWp, dbp, get_num_threads());
  }
  return py::make_tuple(dx, dW, db);
}

}  // namespace

void register_dense(py::module_& m) {
  m.def(
      "dense_forward",
      [](const py::array& x, const py::array& kernel, std::optional<py::array> bias,
         const std::string& activation, const std::string& quantize,
         std::optional<py::array> kernel_scale) -> py::array {
        const Activation act = activation_from_name(activation);
        const Precision precision = precision_from_name(quantize);
        if (precision != Precision::F32)  // float32 only
          return dense_forward_t<float>(x, kernel, bias, act, precision, kernel_scale);
        return is_float64(x, "x") ? dense_forward_t<double>(x, kernel, bias, act)
                                  : dense_forward_t<float>(x, kernel, bias, act);
      },
      py::arg("x"), py::arg("kernel"), py::arg("bias"), py::arg("activation"),
      py::arg("quantize") = "", py::arg("kernel_scale") = py::none(),
      "y = act(x kernel + bias) on the last axis of x (..., input_dim) -> (..., units). With "
      "quantize='bf16' the kernel is uint16 (bfloat16 bits), with 'int8' int8 with float32 "
      "kernel_scale (units,); x and bias float32.");
  m.def(
      "dense_backward",
      [](const py::array& x, const py::array& kernel, bool use_bias, const std::string& activation,
         const py::array& y, const py::array& dy) -> py::tuple {
        const Activation act = activation_from_name(activation);
        return is_float64(x, "x") ? dense_backward_t<double>(x, kernel, use_bias, act, y, dy)
                                  : dense_backward_t<float>(x, kernel, use_bias, act, y, dy);
      },
      py::arg("x"), py::arg("kernel"), py::arg("use_bias"), py::arg("activation"), py::arg("y"),
      py::arg("dy"),
      "Gradients (dx, dkernel, dbias or None) of Dense given its output y and dL/dy.");
}

}  // namespace rnncore::bind
