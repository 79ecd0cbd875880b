// A recurrent layer bound to its weights and options: the one object the layers call.
//
// With a batch size it carries the states between calls (Keras's stateful=True): the
// weights are checked and packed once, the states live here, and each call only checks x.
// This keeps the per-call cost of feeding one timestep at a time close to the cost of the
// step itself. Without one (batch_size=None) it carries nothing: every call starts from
// its initial_state (or zeros) and takes any batch size.
//
// Either way the weights are packed once, on the first call, and kept (a layer's stream
// lives as long as its weights): after modifying them in place, repack(). Calls on a
// carrying stream are serialised (one sequence of states); calls on a stream that carries
// nothing run in parallel, reading the packed weights under a shared lock.
//
// compute() is the run without Python objects, for callers that hold no GIL (the model
// chain, bind_chain.cpp).
#pragma once

#include <pybind11/stl.h>

#include <atomic>
#include <mutex>
#include <shared_mutex>

#include "checks.hpp"
#include "rnn_args.hpp"
#include "rnncore/api.hpp"

namespace rnncore::bind {

constexpr const char* kWeights = "the layer's weights";

template <class T>
class Stream {
 public:
  // With a precision other than F32 (float32 only) kernel and recurrent_kernel hold
  // low-precision weights (rnn_args.hpp: lowp_input), packed like the float ones.
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
    if (precision == Precision::F32)
      W_ = float_input<T>(kernel_, "kernel", {D_, GH}, "recurrent_kernel");
    else
      W_low_ = lowp_input(precision, kernel_, kernel_scale_, "kernel", {D_, GH});
    rec_ = recurrent_weights<T>(spec, recurrent_, bias_, H_, "recurrent_kernel", variants_,
                                precision, recurrent_scale_);
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
  int n_states() const { return spec_.n_states(); }
  T* state(int k) { return states_.data() + offset_[k]; }

  bool carries() const { return B_ >= 0; }

  Index input_dim() const { return D_; }
  Index out_width() const { return Ho_; }
  // The batch size a call must have: the carried states' rows, or any (-1).
  Index fixed_batch() const { return B_; }

  // Runs x (B, T, D) from `initial` where given (each state's rows, or nullptr), else from
  // the carried states (zeros without a batch size); a carrying stream keeps the final
  // states. y: (B, T, Ho) with return_sequences, else (B, Ho); finals[k], where not
  // nullptr, receives state k. Arguments already checked; called without the GIL.
  void compute(const T* x, Index B, Index Tn, const std::uint8_t* mask, bool return_sequences,
               std::array<const T*, max_states> initial, T* y, std::array<T*, max_states> finals) {
    const int N = spec_.n_states();
    ScanIO<T> io;
    io.x = x;
    io.B = B, io.T_ = Tn, io.D = D_;
    io.W = W_;
    io.mask = mask;
    io.initial = initial;
    io.go_backwards = go_backwards_;
    io.return_sequences = return_sequences;
    io.y = y;
    if (carries()) {
      // One stream is one sequence of states: calls from several threads are serialised
      // rather than interleaving their steps.
      std::lock_guard<std::mutex> lock(mutex_);
      for (int k = 0; k < N; ++k) {
        if (!io.initial[k]) io.initial[k] = state(k);  // read before the loop
        io.final_state[k] = state(k);
      }
      const auto packed = packed_weights();
      forward(spec_, rec_, io, get_num_threads(), &packed_);
      for (int k = 0; k < N; ++k)
        if (finals[k]) std::copy_n(state(k), B * width(k), finals[k]);
      return;
    }
    // The scan writes the final states: where the caller wants none, to scratch the thread
    // keeps for its next call (a chain or a pool calls this every step).
    thread_local Buffer<T> scratch;
    Index need = 0;
    for (int k = 0; k < N; ++k) need += finals[k] ? 0 : B * width(k);
    scratch.reserve_resize(static_cast<size_t>(need));
    T* free = scratch.data();
    for (int k = 0; k < N; ++k) {
      io.final_state[k] = finals[k] ? finals[k] : free;
      if (!finals[k]) free += B * width(k);
    }
    const auto packed = packed_weights();
    forward(spec_, rec_, io, get_num_threads(), &packed_);
  }

  // Checks a call's x (and mask) against the stream: its rows, timesteps and input pointer.
  std::pair<Index, Index> check_input(const py::array& x) const {
    check_ndim(x, "x", 3, "(batch, timesteps, input_dim)");
    const Index B = carries() ? B_ : x.shape(0);
    float_input<T>(x, "x", {B, x.shape(1), D_}, kWeights);
    checked_elements({B, x.shape(1), spec_.gates() * H_},
                     "input projection (batch*timesteps*gates*units)");
    checked_elements({B, x.shape(1), Ho_}, "output (batch*timesteps*units)");
    return {B, x.shape(1)};
  }

  // Runs x (B, T, D) from initial_state if given, else from the carried states (zeros
  // without a batch size); a carrying stream keeps the final states. Returns the output, or
  // with return_state the tuple (output, *final states).
  py::object run(const py::array& x, const std::optional<py::array>& mask, bool return_sequences,
                 const std::optional<std::vector<py::array>>& initial_state, bool return_state) {
    const auto [B, Tn] = check_input(x);
    const int N = spec_.n_states();
    const std::uint8_t* m = mask_input(mask, B, Tn);
    std::array<const T*, max_states> initial{};
    if (initial_state)
      initial = state_inputs<T>(spec_, *initial_state, "initial_state", B, H_, kWeights);
    auto y = return_sequences ? new_array<T>({B, Tn, Ho_}) : new_array<T>({B, Ho_});
    std::array<py::object, max_states> final_arrays;
    std::array<T*, max_states> finals{};
    if (return_state) {
      for (int k = 0; k < N; ++k) {
        auto s = new_array<T>({B, width(k)});
        finals[k] = s.mutable_data();
        final_arrays[k] = std::move(s);
      }
    }
    {
      py::gil_scoped_release release;
      compute(static_cast<const T*>(x.data()), B, Tn, m, return_sequences, initial,
              y.mutable_data(), finals);
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

  // A shared hold on the packed weights, packing them first when stale: runs of a stream
  // that carries nothing proceed in parallel; a repack waits for them to finish.
  std::shared_lock<std::shared_mutex> packed_weights() {
    if (stale_.load()) {
      std::unique_lock<std::shared_mutex> write(pack_mutex_);
      if (stale_.exchange(false)) pack();
    }
    return std::shared_lock<std::shared_mutex>(pack_mutex_);
  }

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
  PackedU<T> packed_;              // the weights, packed once for all calls
  std::atomic<bool> stale_{true};  // packed_ is out of date: packed before the next call
  std::shared_mutex pack_mutex_;   // packing (unique) against runs reading packed_ (shared)
  std::mutex mutex_;               // a carrying stream's calls, one at a time
};

}  // namespace rnncore::bind
