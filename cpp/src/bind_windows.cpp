// Bindings of the window ops (windows.hpp: Conv1D and 1-D pooling at inference): checks,
// buffer maps, outputs, GIL release.
#include "bindings.hpp"
#include "checks.hpp"
#include "rnncore/windows.hpp"

namespace rnncore::bind {
namespace {

struct Sequence {
  Index B, T, C;
};

Sequence sequence_of(const py::array& x) {
  check_ndim(x, "x", 3, "(batch, steps, channels)");
  return {x.shape(0), x.shape(1), x.shape(2)};
}

Window window_of(Index size, Index stride, Index dilation, Index left, Index right, Index Tn) {
  if (size < 1 || stride < 1 || dilation < 1)
    throw py::value_error("window: expected size, strides and dilation >= 1, got " +
                          std::to_string(size) + ", " + std::to_string(stride) + ", " +
                          std::to_string(dilation));
  if (left < 0 || right < 0)
    throw py::value_error("padding: expected steps >= 0 before and after, got " +
                          std::to_string(left) + " and " + std::to_string(right));
  Window w{size, stride, dilation, left, right};
  if (w.steps(Tn) <= 0)
    throw py::value_error("x: " + std::to_string(Tn) + " steps (padded to " +
                          std::to_string(w.padded(Tn)) + ") are fewer than the window's span " +
                          std::to_string(dilation * (size - 1) + 1));
  return w;
}

template <class T>
py::array conv1d_t(const py::array& x, const py::array& kernel,
                   const std::optional<py::array>& bias, Index groups, Index stride, Index dilation,
                   Index left, Index right, Activation act) {
  const auto [B, Tn, C] = sequence_of(x);
  check_ndim(kernel, "kernel", 3, "(kernel_size, channels / groups, filters)");
  const Index k = kernel.shape(0), Cg = kernel.shape(1), F = kernel.shape(2);
  if (groups < 1 || Cg * groups != C || F % groups != 0)
    throw py::value_error("kernel: expected (kernel_size, " + std::to_string(C) + " / groups, " +
                          "filters) with filters divisible by groups = " + std::to_string(groups) +
                          ", got " + shape_str(shape_of(kernel)));
  const T* xp = float_input<T>(x, "x", {B, Tn, C});
  const T* K = float_input<T>(kernel, "kernel", {k, Cg, F});
  const T* b = bias ? float_input<T>(*bias, "bias", {F}) : nullptr;
  const Window w = window_of(k, stride, dilation, left, right, Tn);
  const Index To = w.steps(Tn);
  checked_elements({B, To, F}, "output");
  checked_elements({B, w.padded(Tn), C}, "padded input");
  auto y = new_array<T>({B, To, F});
  T* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    conv1d_forward(xp, B, Tn, C, K, F, groups, b, w, act, yp, get_num_threads());
  }
  return y;
}

template <class T>
py::array pool1d_t(const py::array& x, Index size, Index stride, Index left, Index right,
                   bool average) {
  const auto [B, Tn, C] = sequence_of(x);
  const T* xp = float_input<T>(x, "x", {B, Tn, C});
  const Window w = window_of(size, stride, 1, left, right, Tn);
  // A window of padding alone has nothing to reduce (Keras's 'same' never makes one): fewer
  // padded steps than pool_size on each side keeps a real step in every window.
  if (left >= size || right >= size)
    throw py::value_error("padding: expected fewer steps than pool_size = " + std::to_string(size) +
                          " before and after, got " + std::to_string(left) + " and " +
                          std::to_string(right));
  const Index To = w.steps(Tn);
  checked_elements({B, To, C}, "output");
  auto y = new_array<T>({B, To, C});
  T* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    pool1d_forward(xp, B, Tn, C, w, average, yp, get_num_threads());
  }
  return y;
}

}  // namespace

void register_windows(py::module_& m) {
  m.def(
      "conv1d_forward",
      [](const py::array& x, const py::array& kernel, std::optional<py::array> bias, Index groups,
         Index strides, Index dilation, Index pad_before, Index pad_after,
         const std::string& activation) -> py::array {
        const Activation act = activation_from_name(activation);
        return is_float64(x, "x") ? conv1d_t<double>(x, kernel, bias, groups, strides, dilation,
                                                     pad_before, pad_after, act)
                                  : conv1d_t<float>(x, kernel, bias, groups, strides, dilation,
                                                    pad_before, pad_after, act);
      },
      py::arg("x"), py::arg("kernel"), py::arg("bias"), py::arg("groups"), py::arg("strides"),
      py::arg("dilation"), py::arg("pad_before"), py::arg("pad_after"), py::arg("activation"),
      "Conv1D at inference: x (batch, steps, channels) channels_last, kernel (kernel_size, "
      "channels / groups, filters) (Keras's layout), padded with zeros (pad_before, pad_after "
      "steps) -> act(conv + bias) (batch, out_steps, filters), one product per tap (no "
      "unfolded copy), bit for bit the product of the unfolded windows.");
  m.def(
      "pool1d_forward",
      [](const py::array& x, Index pool_size, Index strides, Index pad_before, Index pad_after,
         bool average) -> py::array {
        return is_float64(x, "x")
                   ? pool1d_t<double>(x, pool_size, strides, pad_before, pad_after, average)
                   : pool1d_t<float>(x, pool_size, strides, pad_before, pad_after, average);
      },
      py::arg("x"), py::arg("pool_size"), py::arg("strides"), py::arg("pad_before"),
      py::arg("pad_after"), py::arg("average"),
      "Max or average pooling over the steps of x (batch, steps, channels), channels_last, "
      "each window over its real steps only (the padding takes no part).");
}

}  // namespace rnncore::bind
