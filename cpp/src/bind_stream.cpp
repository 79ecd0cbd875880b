// A recurrent layer bound to its weights and options: the one object the layers call.
//
// With a batch size it carries the states between calls (Keras's stateful=True): the
// weights are checked and packed once, the states live here, and each call only checks x.
// This keeps the per-call cost of feeding one timestep at a time close to the cost of the
// step itself. Without one (batch_size=None) it carries nothing: every call starts from
// its initial_state (or zeros), takes any batch size and reads the weights afresh, like
// rnn_forward.
#include <pybind11/stl.h>

#include <atomic>
#include <mutex>

#include "bindings.hpp"
#include "checks.hpp"
#include "rnn_args.hpp"
#include "rnncore/api.hpp"

namespace rnncore::bind {
namespace {

constexpr const char* kWeights = "the layer's weights";

template <class T>
class Stream {
 public:
  // With quantize (float32 only) kernel and recurrent_kernel hold low-precision weights
  // (rnn_args.hpp: lowp_input), packed here once for all calls.
  Stream(const CellSpec& spec, py::array kernel, py::array recurrent_kernel,
         std::optional<py::array> bias, std::optional<Index> batch, bool go_backwards,
         Variants variants, Precision precision = Precision::F32,
         std::optional<py::array> kernel_scale = std::nullopt,
         std::optional<py::array> recurrent_scale = std::nullopt)
      : spec_(spec),
        kernel_(std::move(kernel)),
        recurrent_(std::move(recurrent_kernel)),
        bias_(std::move(bias)),
        variants_(std::move(variants)),
        kernel_scale_(std::move(kernel_scale)),
        recurrent_scale_(std::move(recurrent_scale)),
        go_backwards_(go_backwards) {
    H_ = units_of(spec, recurrent_, variants_.projection);
    Ho_ = spec.out_cols(H_);
    check_ndim(kernel_, "kernel", 2, "(input_dim, gates*units)");
    D_ = kernel_.shape(0);
    const Index GH = spec.gates() * H_;
    if (precision == Precision::F32) {
      W_ = float_input<T>(kernel_, "kernel", {D_, GH}, "recurrent_kernel");
    } else {
      W_low_ = lowp_input(precision, kernel_, kernel_scale_, "kernel", {D_, GH});
    }
    rec_ = recurrent_weights<T>(spec, recurrent_, bias_, H_, "recurrent_kernel", variants_,
                                precision, recurrent_scale_);
    if (lowp()) {
      pack();
      stale_ = false;
    }
    if (batch) {
      if (*batch < 0)
        throw py::value_error("batch_size: expected >= 0 or None, got " + std::to_string(*batch));
      B_ = *batch;
      Index rows = 0;  // the states one after the other, each (B, its width)
      for (int k = 0; k < spec.n_states(); ++k) {
        offset_[k] = rows;
        rows += checked_elements({B_, width(k)}, "states");
      }
      states_.resize(static_cast<size_t>(rows));
      std::fill_n(states_.data(), states_.size(), T(0));
    }
  }

  Index width(int k) const { return spec_.state_cols(k, H_); }
  T* state(int k) { return states_.data() + offset_[k]; }

  bool carries() const { return B_ >= 0; }

  // Runs x (B, T, D) from initial_state if given, else from the carried states (zeros
  // without a batch size); a carrying stream keeps the final states. Returns the output, or
  // with return_state the tuple (output, *final states).
  py::object run(const py::array& x, const std::optional<py::array>& mask, bool return_sequences,
                 const std::optional<std::vector<py::array>>& initial_state, bool return_state) {
    check_ndim(x, "x", 3, "(batch, timesteps, input_dim)");
    const Index B = carries() ? B_ : x.shape(0), Tn = x.shape(1), N = spec_.n_states();
    ScanIO<T> io;
    io.x = float_input<T>(x, "x", {B, Tn, D_}, kWeights);
    io.B = B, io.T_ = Tn, io.D = D_;
    io.W = W_;
    io.mask = mask_input(mask, B, Tn);
    if (initial_state)
      io.initial = state_inputs<T>(spec_, *initial_state, "initial_state", B, H_, kWeights);
    io.go_backwards = go_backwards_;
    io.return_sequences = return_sequences;
    checked_elements({B, Tn, spec_.gates() * H_}, "input projection (batch*timesteps*gates*units)");
    checked_elements({B, Tn, Ho_}, "output (batch*timesteps*units)");
    auto y = return_sequences ? new_array<T>({B, Tn, Ho_}) : new_array<T>({B, Ho_});
    io.y = y.mutable_data();
    // The final states as arrays: returned with return_state, and the scan's output when
    // the stream carries none.
    std::array<py::object, max_states> final_arrays;
    std::array<T*, max_states> finals{};
    if (return_state || !carries()) {
      for (int k = 0; k < N; ++k) {
        auto s = new_array<T>({B, width(k)});
        finals[k] = s.mutable_data();
        final_arrays[k] = std::move(s);
      }
    }
    {
      py::gil_scoped_release release;
      if (carries()) {
        // One stream is one sequence of states: calls from several threads are serialised
        // rather than interleaving their steps.
        std::lock_guard<std::mutex> lock(mutex_);
        for (int k = 0; k < N; ++k) {
          if (!io.initial[k]) io.initial[k] = state(k);  // read before the loop
          io.final_state[k] = state(k);
        }
        if (stale_.exchange(false)) pack();
        forward(spec_, rec_, io, get_num_threads(), &packed_);
        if (return_state)
          for (int k = 0; k < N; ++k) std::copy_n(state(k), B * width(k), finals[k]);
      } else {
        io.final_state = finals;
        if (lowp() && stale_) {
          std::lock_guard<std::mutex> lock(mutex_);
          if (stale_.exchange(false)) pack();
        }
        forward(spec_, rec_, io, get_num_threads(), lowp() ? &packed_ : nullptr);
      }
    }
    if (!return_state) return std::move(y);
    py::tuple out(1 + N);
    out[0] = std::move(y);
    for (Index k = 0; k < N; ++k) out[1 + k] = std::move(final_arrays[k]);
    return std::move(out);
  }

  py::list get_states() {
    std::lock_guard<std::mutex> lock(mutex_);
    py::list out;
    for (int k = 0; carries() && k < spec_.n_states(); ++k) {
      auto s = new_array<T>({B_, width(k)});
      std::copy_n(state(k), B_ * width(k), s.mutable_data());
      out.append(s);
    }
    return out;
  }

  void set_states(const std::vector<py::array>& states) {
    if (!carries())
      throw py::value_error("set_states: this stream carries no states (batch_size=None)");
    const auto src = state_inputs<T>(spec_, states, "states", B_, H_, kWeights);
    std::lock_guard<std::mutex> lock(mutex_);
    for (int k = 0; k < spec_.n_states(); ++k) {
      T* dst = state(k);
      if (src[k])
        std::copy_n(src[k], B_ * width(k), dst);
      else
        std::fill_n(dst, B_ * width(k), T(0));
    }
  }

  // The weights were modified in place: pack them again before the next call.
  void repack() { stale_ = true; }

  py::object batch_size() const { return carries() ? py::object(py::int_(B_)) : py::none(); }
  bool go_backwards() const { return go_backwards_; }
  bool lowp() const { return W_low_.precision != Precision::F32; }
  std::string quantize() const {
    return W_low_.precision == Precision::BF16 ? "bf16" : lowp() ? "int8" : "";
  }

 private:
  void pack() {
    pack_recurrent(spec_, rec_, packed_);
    pack_kernel(spec_, rec_, W_, D_, packed_, W_low_);
  }

  CellSpec spec_;
  py::array kernel_, recurrent_;  // kept alive: the core reads them in place
  std::optional<py::array> bias_;
  Variants variants_;  // an LSTM's peepholes and projection, kept alive like the weights
  std::optional<py::array> kernel_scale_, recurrent_scale_;  // int8's scales, kept alive
  bool go_backwards_;
  Recurrent<T> rec_;
  const T* W_ = nullptr;
  LowpSource W_low_;                        // the kernel in low precision (then W_ is nullptr)
  Index B_ = -1, D_ = 0, H_ = 0, Ho_ = 0;   // B_ < 0: no carried states; Ho_: width of h
  std::array<Index, max_states> offset_{};  // where state k starts in states_
  Buffer<T> states_;
  PackedU<T> packed_;              // a carrying stream's weights, packed once for all its calls
  std::atomic<bool> stale_{true};  // packed_ is out of date: packed under the lock, in run
  std::mutex mutex_;
};

template <class T>
void bind_stream(py::module_& m, const char* name) {
  py::class_<Stream<T>>(m, name)
      .def("run", &Stream<T>::run, py::arg("x"), py::arg("mask") = py::none(),
           py::arg("return_sequences") = false, py::arg("initial_state") = std::vector<py::array>{},
           py::arg("return_state") = false,
           "Run x (batch, timesteps, input_dim) from initial_state if given (a list; [] for "
           "none), else from the carried states; carry the final states on. Returns the "
           "output sequence or the last output, or with return_state the tuple (output, "
           "*final states).")
      .def("get_states", &Stream<T>::get_states,
           "Copies of the carried states ([] without a batch size).")
      .def("set_states", &Stream<T>::set_states, py::arg("states"),
           "Set the carried states ([] resets them to zeros).")
      .def("repack", &Stream<T>::repack,
           "Read the weights again before the next call (after modifying them in place).")
      .def_property_readonly("batch_size", &Stream<T>::batch_size,
                             "Rows of the carried states, or None when nothing is carried.")
      .def_property_readonly("go_backwards", &Stream<T>::go_backwards)
      .def_property_readonly("quantize", &Stream<T>::quantize,
                             "The weights' low precision: 'bf16', 'int8', or '' (none).");
}

}  // namespace

void register_stream(py::module_& m) {
  bind_stream<float>(m, "Stream32");
  bind_stream<double>(m, "Stream64");
  m.def(
      "make_stream",
      [](const std::string& cell, const py::array& kernel, const py::array& recurrent_kernel,
         std::optional<py::array> bias, std::optional<py::ssize_t> batch_size,
         const std::string& activation, const std::string& recurrent_activation, bool reset_after,
         bool go_backwards, std::optional<py::array> peephole, std::optional<py::array> projection,
         double cell_clip, bool input_forget, const std::string& output_activation,
         const std::string& quantize, std::optional<py::array> kernel_scale,
         std::optional<py::array> recurrent_scale) -> py::object {
        Variants v{std::move(peephole), std::move(projection), cell_clip, input_forget,
                   output_activation};
        const CellSpec spec = make_spec(cell, activation, recurrent_activation, reset_after, v);
        const Precision precision = precision_from_name(quantize);
        if (precision != Precision::F32)  // float32 models only
          return py::cast(new Stream<float>(spec, kernel, recurrent_kernel, std::move(bias),
                                            batch_size, go_backwards, std::move(v), precision,
                                            std::move(kernel_scale), std::move(recurrent_scale)),
                          py::return_value_policy::take_ownership);
        if (is_float64(recurrent_kernel, "recurrent_kernel"))
          return py::cast(new Stream<double>(spec, kernel, recurrent_kernel, std::move(bias),
                                             batch_size, go_backwards, std::move(v)),
                          py::return_value_policy::take_ownership);
        return py::cast(new Stream<float>(spec, kernel, recurrent_kernel, std::move(bias),
                                          batch_size, go_backwards, std::move(v)),
                        py::return_value_policy::take_ownership);
      },
      py::arg("cell"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("batch_size"), py::arg("activation"), py::arg("recurrent_activation"),
      py::arg("reset_after"), py::arg("go_backwards"), py::arg("peephole") = py::none(),
      py::arg("projection") = py::none(), py::arg("cell_clip") = 0.0,
      py::arg("input_forget") = false, py::arg("output_activation") = "", py::arg("quantize") = "",
      py::arg("kernel_scale") = py::none(), py::arg("recurrent_scale") = py::none(),
      "A stream over one layer's weights (kept by reference; after modifying them in place "
      "call repack()) carrying states of batch_size rows between calls, or nothing when "
      "batch_size is None. With quantize='bf16' kernel and recurrent_kernel are uint16 "
      "(bfloat16 bits), with 'int8' int8 with float32 kernel_scale and recurrent_scale "
      "(one per column); float32 inference only.");
}

}  // namespace rnncore::bind
