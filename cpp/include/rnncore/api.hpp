// The core's entry points: from a cell description and raw Keras-layout buffers to a scan.
// Bindings fill these structs and call these functions; they do no math themselves.
#pragma once

#include <string>
#include <vector>

#include "rnncore/activations.hpp"
#include "rnncore/backward.hpp"
#include "rnncore/cells.hpp"
#include "rnncore/scan.hpp"

namespace rnncore {

enum class CellKind { SimpleRNN, LSTM, GRU };

struct CellSpec {
  CellKind kind = CellKind::LSTM;
  Activation act = Activation::Tanh;
  Activation rec_act = Activation::Sigmoid;  // unused by SimpleRNN
  bool reset_after = true;                   // GRU only
  // LSTM variants (cells.hpp): out_act applied to c_t (ONNX's h; Keras: act), peepholes,
  // clip (0: none), coupled input/forget gates, projection units (0: none).
  Activation out_act = Activation::Tanh;
  bool peephole = false;
  double clip = 0;
  bool input_forget = false;
  Index proj = 0;

  int gates() const { return kind == CellKind::SimpleRNN ? 1 : kind == CellKind::LSTM ? 4 : 3; }
  int n_states() const { return kind == CellKind::LSTM ? 2 : 1; }
  // Keras's bias layout: (2, 3H) for GRU reset_after, else (G*H,).
  bool bias_two_rows() const { return kind == CellKind::GRU && reset_after; }
  // The width of h (and of the output): the projection's units, or H.
  Index out_cols(Index H) const { return proj > 0 ? proj : H; }
  Index state_cols(int k, Index H) const { return k == 0 ? out_cols(H) : H; }
  Index aux_cols(Index H) const {
    if (kind == CellKind::GRU) return H;
    if (kind == CellKind::LSTM) return (proj > 0 ? H : 0) + (clip > 0 ? 4 * H : 0);
    return 0;
  }
  bool has_variants() const {
    return peephole || clip > 0 || input_forget || proj > 0 || out_act != act;
  }
};

inline CellKind cell_from_name(const std::string& name) {
  if (name == "simple_rnn") return CellKind::SimpleRNN;
  if (name == "lstm") return CellKind::LSTM;
  if (name == "gru") return CellKind::GRU;
  throw InvalidArgument("unknown cell '" + name + "': expected simple_rnn, lstm or gru");
}

// The recurrent weights of one layer, Keras layout: U (Hp, G*H), Hp the width of h (H, or
// an LSTM's projection units); bias (G*H) or (2, G*H) or nullptr; an LSTM's peepholes
// (3, H) and projection W_hr (H, Hp), or nullptr. The input kernel W travels in ScanIO.
// U_low: U in low precision instead (lowp.hpp; float32 inference only, U is then nullptr).
template <class T>
struct Recurrent {
  Index H = 0, Hp = 0;
  const T* U = nullptr;
  LowpSource U_low;
  const T* bias = nullptr;
  const T* peephole = nullptr;
  const T* projection = nullptr;
};

// Packs U for the forward step, or U^T for the backward step (see PackedU).
template <class T>
void pack_recurrent(const CellSpec& spec, const Recurrent<T>& rec, PackedU<T>& P,
                    bool transposed = false) {
  const Index H = rec.H, Hp = rec.Hp, GH = spec.gates() * H;
  const Index split = spec.kind == CellKind::GRU ? 2 * H : GH;  // columns in `all`
  if (!transposed) {
    P.all.pack(rec.U, rec.U_low, Hp, split, GH);
    if (split < GH)
      P.h.pack(rec.U ? rec.U + split : nullptr, rec.U_low.from_col(split), Hp, GH - split, GH);
    if (rec.projection) P.proj.pack(rec.projection, H, Hp, Hp);
    return;
  }
  const RowMat<T> Ut = cview(rec.U, Hp, GH, GH).transpose();  // (G*H, Hp)
  P.allT.pack(Ut.data(), split, Hp, Hp);
  if (split < GH) P.hT.pack(Ut.data() + split * Hp, GH - split, Hp, Hp);
  if (rec.projection) {
    const RowMat<T> Wt = cview(rec.projection, H, Hp, Hp).transpose();  // (Hp, H)
    P.projT.pack(Wt.data(), Hp, H, H);
  }
}

// Calls fn(cell, b_in) with the concrete cell for `spec` and the bias the scan adds to the
// input projection. For GRU reset_after that is b_x + [b_hh_z, b_hh_r, 0]: the recurrent
// biases of z and r just add, only the candidate's stays inside r * (.) (cells.hpp).
template <class T, class Fn>
void with_cell(const CellSpec& spec, const Recurrent<T>& rec, const PackedU<T>* packed, Fn&& fn) {
  const Index H = rec.H, GH = spec.gates() * H;
  switch (spec.kind) {
    case CellKind::SimpleRNN:
      fn(SimpleRNNCell<T>{H, packed, spec.act}, rec.bias);
      return;
    case CellKind::LSTM:
      fn(LSTMCell<T>{H, rec.Hp, packed, spec.act, spec.rec_act, spec.out_act, rec.peephole,
                     static_cast<T>(spec.clip), spec.input_forget, rec.projection != nullptr},
         rec.bias);
      return;
    case CellKind::GRU: {
      if (!spec.reset_after || !rec.bias) {
        fn(GRUCell<T>{H, packed, spec.act, spec.rec_act, spec.reset_after, nullptr}, rec.bias);
        return;
      }
      Buffer<T> b_in(rec.bias, rec.bias + GH);
      for (Index j = 0; j < 2 * H; ++j) b_in[j] += rec.bias[GH + j];
      fn(GRUCell<T>{H, packed, spec.act, spec.rec_act, true, rec.bias + GH + 2 * H}, b_in.data());
      return;
    }
  }
}

// Packs the input kernel W (D, G*H) for the forward projection, or W_low (lowp.hpp) when
// it holds low-precision weights.
template <class T>
void pack_kernel(const CellSpec& spec, const Recurrent<T>& rec, const T* W, Index D, PackedU<T>& P,
                 const LowpSource& W_low = {}) {
  const Index GH = spec.gates() * rec.H;
  P.W.pack(W, W_low, D, GH, GH);
}

// The forward pass. `packed` holds U and io.W already packed by pack_recurrent and
// pack_kernel (a stream keeps them across calls), or is nullptr to pack them here, once for
// the call.
template <class T>
void forward(const CellSpec& spec, const Recurrent<T>& rec, ScanIO<T> io, int threads,
             const PackedU<T>* packed = nullptr) {
  // Packed weights of one call: reused by the thread's next call up to reuse_bytes
  // (scan.hpp), so small calls do not pay page faults for fresh memory every time.
  thread_local PackedU<T> reused;
  PackedU<T> local;
  if (!packed) {
    const size_t bytes =
        static_cast<size_t>((rec.Hp + io.D) * spec.gates() * rec.H + rec.H * rec.Hp) * sizeof(T);
    PackedU<T>& P = bytes <= reuse_bytes ? reused : local;
    pack_recurrent(spec, rec, P);
    pack_kernel(spec, rec, io.W, io.D, P);
    packed = &P;
  }
  with_cell(spec, rec, packed, [&](const auto& cell, const T* b_in) {
    io.b_in = b_in;
    forward_scan(cell, io, threads);
  });
}

// Gradients of forward() given dL/d(output) and dL/d(final states). io.fwd must hold the
// same inputs as the training forward call and its workspace. io.db receives the bias
// gradient in the bias's own layout ((2, 3H) for GRU reset_after).
template <class T>
void backward(const CellSpec& spec, const Recurrent<T>& rec, BackwardIO<T> io, int threads) {
  // U^T packed, reused by the thread's next call up to reuse_bytes (as in forward()).
  thread_local PackedU<T> reused;
  PackedU<T> local;
  const size_t bytes =
      static_cast<size_t>(rec.Hp * spec.gates() * rec.H + rec.H * rec.Hp) * sizeof(T);
  PackedU<T>& packed = bytes <= reuse_bytes ? reused : local;
  pack_recurrent(spec, rec, packed, /*transposed=*/true);
  with_cell(spec, rec, &packed, [&](const auto& cell, const T*) {
    io.db_rec = (io.db && spec.bias_two_rows()) ? io.db + spec.gates() * rec.H : nullptr;
    backward_scan(cell, io, threads);
  });
}

}  // namespace rnncore
