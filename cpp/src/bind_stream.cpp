// A recurrent layer's carried state for streaming (Keras's stateful=True): the weights are
// checked once, the states live here, and each call only checks x. This keeps the per-call
// cost of feeding one timestep at a time close to the cost of the step itself.
#include <pybind11/stl.h>

#include <mutex>

#include "bindings.hpp"
#include "checks.hpp"
#include "rnncore/api.hpp"

namespace rnncore::bind {
namespace {

template <class T>
class Stream {
 public:
  Stream(const CellSpec& spec, py::array kernel, py::array recurrent_kernel,
         std::optional<py::array> bias, Index batch)
      : spec_(spec),
        kernel_(std::move(kernel)),
        recurrent_(std::move(recurrent_kernel)),
        bias_(std::move(bias)) {
    const char* ref = "recurrent_kernel";
    check_ndim(recurrent_, "recurrent_kernel", 2, "(units, gates*units)");
    H_ = recurrent_.shape(0);
    const Index GH = spec.gates() * H_;
    rec_.H = H_;
    rec_.U = float_input<T>(recurrent_, "recurrent_kernel", {H_, GH}, ref);
    check_ndim(kernel_, "kernel", 2, "(input_dim, gates*units)");
    D_ = kernel_.shape(0);
    W_ = float_input<T>(kernel_, "kernel", {D_, GH}, ref);
    if (bias_)
      rec_.bias = spec.bias_two_rows() ? float_input<T>(*bias_, "bias", {2, GH}, ref)
                                       : float_input<T>(*bias_, "bias", {GH}, ref);
    if (batch < 0) throw py::value_error("batch_size: expected >= 0, got " + std::to_string(batch));
    B_ = batch;
    states_.resize(static_cast<size_t>(spec.n_states() * checked_elements({B_, H_}, "states")));
    std::fill_n(states_.data(), states_.size(), T(0));
    pack_recurrent(spec_, rec_, packed_);  // once: every call reuses them
    pack_kernel(spec_, rec_, W_, D_, packed_);
  }

  // Runs x (B, T, D) from the carried states and carries the final states on.
  py::array run(const py::array& x, std::optional<py::array> mask, bool return_sequences) {
    check_ndim(x, "x", 3, "(batch, timesteps, input_dim)");
    const Index Tn = x.shape(1);
    ScanIO<T> io;
    io.x = float_input<T>(x, "x", {B_, Tn, D_}, "the layer's weights");
    io.B = B_, io.T_ = Tn, io.D = D_;
    io.W = W_;
    if (mask) {
      if (!has_dtype<bool>(*mask))
        throw py::type_error("mask: expected dtype bool, got " + dtype_str(*mask));
      check_shape(*mask, "mask", {B_, Tn});
      check_contiguous(*mask, "mask");
      io.mask = static_cast<const std::uint8_t*>(mask->data());
    }
    io.return_sequences = return_sequences;
    checked_elements({B_, Tn, spec_.gates() * H_}, "input projection");
    auto y = return_sequences ? new_array<T>({B_, Tn, H_}) : new_array<T>({B_, H_});
    io.y = y.mutable_data();
    {
      py::gil_scoped_release release;
      // One stream is one sequence of states: calls from several threads are serialised
      // rather than interleaving their steps.
      std::lock_guard<std::mutex> lock(mutex_);
      for (int k = 0; k < spec_.n_states(); ++k) {
        io.initial[k] = states_.data() + k * B_ * H_;  // read once, before the loop
        io.final_state[k] = states_.data() + k * B_ * H_;
      }
      forward(spec_, rec_, io, get_num_threads(), &packed_);
    }
    return y;
  }

  py::list get_states() {
    std::lock_guard<std::mutex> lock(mutex_);
    py::list out;
    for (int k = 0; k < spec_.n_states(); ++k) {
      auto s = new_array<T>({B_, H_});
      std::copy_n(states_.data() + k * B_ * H_, B_ * H_, s.mutable_data());
      out.append(s);
    }
    return out;
  }

  void set_states(const std::vector<py::array>& states) {
    const Index N = spec_.n_states();
    if (!states.empty() && static_cast<Index>(states.size()) != N)
      throw py::value_error("states: expected " + std::to_string(N) + " array(s), got " +
                            std::to_string(states.size()));
    std::vector<const T*> src;
    for (size_t k = 0; k < states.size(); ++k) {
      const std::string name = "states[" + std::to_string(k) + "]";
      src.push_back(float_input<T>(states[k], name.c_str(), {B_, H_}, "the layer's weights"));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (src.empty()) {
      std::fill_n(states_.data(), states_.size(), T(0));
      return;
    }
    for (Index k = 0; k < N; ++k) std::copy_n(src[k], B_ * H_, states_.data() + k * B_ * H_);
  }

  Index batch_size() const { return B_; }

 private:
  CellSpec spec_;
  py::array kernel_, recurrent_;  // kept alive: the core reads them in place
  std::optional<py::array> bias_;
  Recurrent<T> rec_;
  const T* W_ = nullptr;
  Index B_ = 0, D_ = 0, H_ = 0;
  Buffer<T> states_;
  PackedU<T> packed_;
  std::mutex mutex_;
};

template <class T>
void bind_stream(py::module_& m, const char* name) {
  py::class_<Stream<T>>(m, name)
      .def("run", &Stream<T>::run, py::arg("x"), py::arg("mask") = py::none(),
           py::arg("return_sequences") = false,
           "Run x (batch, timesteps, input_dim) from the carried states; carry the final "
           "states on. Returns the output sequence or the last output.")
      .def("get_states", &Stream<T>::get_states, "Copies of the carried states.")
      .def("set_states", &Stream<T>::set_states, py::arg("states"),
           "Set the carried states ([] resets them to zeros).")
      .def_property_readonly("batch_size", &Stream<T>::batch_size);
}

}  // namespace

void register_stream(py::module_& m) {
  bind_stream<float>(m, "Stream32");
  bind_stream<double>(m, "Stream64");
  m.def(
      "make_stream",
      [](const std::string& cell, const py::array& kernel, const py::array& recurrent_kernel,
         std::optional<py::array> bias, py::ssize_t batch_size, const std::string& activation,
         const std::string& recurrent_activation, bool reset_after) -> py::object {
        CellSpec spec;
        spec.kind = cell_from_name(cell);
        spec.act = activation_from_name(activation);
        spec.rec_act = activation_from_name(recurrent_activation, "recurrent_activation");
        spec.reset_after = reset_after;
        if (is_float64(recurrent_kernel, "recurrent_kernel"))
          return py::cast(new Stream<double>(spec, kernel, recurrent_kernel, bias, batch_size),
                          py::return_value_policy::take_ownership);
        return py::cast(new Stream<float>(spec, kernel, recurrent_kernel, bias, batch_size),
                        py::return_value_policy::take_ownership);
      },
      py::arg("cell"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("batch_size"), py::arg("activation"), py::arg("recurrent_activation"),
      py::arg("reset_after"),
      "A stream over one layer's weights (kept by reference: do not modify them while the "
      "stream is used) carrying states of batch_size rows between calls.");
}

}  // namespace rnncore::bind
