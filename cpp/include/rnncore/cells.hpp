// The recurrent cells. A cell holds only its step math; the time loop, masks, direction,
// initial/final states and workspaces belong to the scan (scan.hpp), shared by all cells.
//
// Conventions (Keras layouts verbatim, G = number of gates, H = units):
//   kernel W (D, G*H), recurrent_kernel U (H, G*H), gate columns in Keras order
//   SimpleRNN: [h]          LSTM: [i | f | c | o]          GRU: [z | r | h]
//
// Outside the per-step work the scan computes, with large GEMMs (all batch*time rows in
// training, one chunk of timesteps at a time in inference),
//   gates = x W + b_in
// and each step receives that step's rows of `gates` and turns them, in place, into the
// post-activation gate values; in training that buffer is what the backward pass reads.
//
// A cell provides:
//   G, n_states            gate count, number of carried states (h; or h, c)
//   aux_cols()             extra per-step values the backward pass needs (0 if none)
//   step(...)              one time step for n rows
// and for the backward pass (backward.hpp), given dS = dL/d(states after the step):
//   scratch_cols()         per-row scratch the backward step needs
//   gate_grads(...)        dG = dL/d(gate pre-activations), input side (n, G*H), and dA,
//                          the gradient of the recurrent-side value a (GRU reset_after)
//   prev_grads(...)        dL/d(states before the step) from dS, dG, dA
//   own_recurrent_grads    whether it provides recurrent_grads(...): after the loop, dU and
//                          the recurrent bias gradient, as products over all batch*time rows
//                          at once; a cell whose recurrent side is h_{t-1} U alone (SimpleRNN,
//                          LSTM) says false, and the backward scan takes dU = H_prev^T dG
#pragma once

#include <array>

#include "rnncore/activations.hpp"
#include "rnncore/lowp.hpp"
#include "rnncore/types.hpp"

namespace rnncore {

// n rows of a state, `stride` elements apart.
template <class T>
struct Rows {
  T* data;
  Index stride;
};

template <class T, int N>
using States = std::array<Rows<T>, N>;

// The weights packed for packed_gemm: U for the per-step products, `all` columns for
// SimpleRNN and LSTM; for GRU `all` holds the z, r columns and `h` the candidate's, which are
// multiplied apart. The forward step uses U (all, h), the backward step U^T (allT = all^T,
// hT = h^T). W is the input kernel, for the forward pass's input projection. U and W may be
// low precision (lowp.hpp: bf16 or int8 weights, inference only); the rest is float.
template <class T>
struct PackedU {
  PackedWeights<T> all, h, allT, hT, W, proj, projT;  // proj: an LSTM's W_hr (projection)
};

// X (+)= rows * P, the per-step recurrent product; rows and X are strided row blocks.
template <class T, class Dst>
void times_packed(Index n, const T* rows, Index stride, const PackedWeights<T>& P, Dst&& X,
                  bool accumulate) {
  packed_gemm(rows, stride, n, P, X.data(), X.outerStride(), accumulate);
}

// Each cell declares its own constants and members (G, n_states, own_recurrent_grads, H,
// P, activations): cells are plain aggregates that api.hpp builds with braces, which a shared
// base would take away.

// ---------------------------------------------------------------------------------------
// SimpleRNN:  h_t = act(x_t W + b + h_{t-1} U)
template <class T>
struct SimpleRNNCell {
  static constexpr int G = 1;
  static constexpr int n_states = 1;
  static constexpr bool own_recurrent_grads = false;  // dU = H_prev^T dG (backward.hpp)
  Index H;
  const PackedU<T>* P;  // U (forward) or U^T (backward), packed
  Activation act;

  Index state_cols(int) const { return H; }
  Index aux_cols() const { return 0; }

  void step(Index n, View<T> gates, const States<const T, 1>& prev, const States<T, 1>& next,
            View<T> /*aux*/) const {
    auto h = view(next[0].data, n, H, next[0].stride);
    times_packed(n, prev[0].data, prev[0].stride, P->all, gates, true);  // += h_{t-1} U
    activate(act, gates);
    h = gates;
  }

  // Backward. With y = h = act(z):  dz = dh * act'(y);  dh_prev = dz U^T;  dU = H_prev^T dZ.
  Index scratch_cols() const { return 0; }
  Index grad_aux_cols() const { return 0; }

  void gate_grads(Index n, ConstView<T> gates, const States<const T, 1>&, const States<const T, 1>&,
                  ConstView<T>, const States<const T, 1>& dS, View<T> dG, View<T>, View<T>) const {
    dG = cview(dS[0].data, n, H, dS[0].stride);
    activate_backward(act, dG, gates);
  }

  void prev_grads(Index, ConstView<T>, const States<const T, 1>&, ConstView<T>,
                  const States<const T, 1>&, ConstView<T> dG, ConstView<T>,
                  const States<T, 1>& dprev, View<T>) const {
    auto dh_prev = view(dprev[0].data, dG.rows(), H, dprev[0].stride);
    times_packed(dG.rows(), dG.data(), dG.outerStride(), P->allT, dh_prev, false);  // dG U^T
  }
};

// ---------------------------------------------------------------------------------------
// LSTM (Keras gate order i, f, c, o), with the variants PyTorch and ONNX can express.
//   [a_i a_f a_g a_o] = x_t W + b + h_{t-1} U
//   z_i = a_i + p_i * c_{t-1}      z_f = a_f + p_f * c_{t-1}      z_g = a_g   (peepholes: ONNX P)
//   i = rec_act(clip(z_i))    f = rec_act(clip(z_f)), or 1 - i (ONNX input_forget)
//   g = act(clip(z_g))        c_t = f * c_{t-1} + i * g
//   z_o = a_o + p_o * c_t     o = rec_act(clip(z_o))
//   m_t = o * out_act(c_t)
//   h_t = m_t W_hr (projection, PyTorch proj_size: h is Hp wide, U is (Hp, 4H)), else m_t
// clip(z) = min(max(z, -clip), clip) when clip > 0: ONNX `clip` as onnxruntime applies it,
// to the gates' pre-activations only (measured: clipping c_t too differs from it by 0.03).
// Keras's LSTM is the case without peepholes, clip, input_forget or projection, with
// out_act = act.
template <class T>
struct LSTMCell {
  static constexpr int G = 4;
  static constexpr int n_states = 2;                 // h (Hp wide), c (H wide)
  static constexpr bool own_recurrent_grads = true;  // dU, peephole and projection gradients
  Index H;                                           // cell units
  Index Hp;                                          // width of h: the projection's units, or H
  const PackedU<T>* P;  // U (forward) or U^T (backward), W_hr or W_hr^T, packed
  Activation act, rec_act, out_act;
  const T* peephole;  // (3, H): rows p_i, p_f, p_o; or nullptr
  T clip;             // > 0: clip the activations' inputs to [-clip, clip]
  bool input_forget;
  bool projection;

  Index state_cols(int k) const { return k == 0 ? Hp : H; }
  // aux: [m (H) with a projection | the pre-clip z_i z_f z_g z_o (4H) with clip]
  Index z_col() const { return projection ? H : 0; }
  Index aux_cols() const { return z_col() + (clip > 0 ? 4 * H : 0); }

  auto p_row(int k) const { return ConstRowVecView<T>(peephole + k * H, H).array(); }
  template <class Block>
  void clamp(Block&& z) const {
    z.array() = z.array().max(-clip).min(clip);
  }
  // The clip's derivative: dz <- dz where |z| <= clip, else 0.
  template <class DBlock, class ZBlock>
  void clamp_backward(DBlock&& dz, const ZBlock& z) const {
    dz.array() = (z.array().abs() <= clip).select(dz.array(), T(0));
  }

  void step(Index n, View<T> gates, const States<const T, 2>& prev, const States<T, 2>& next,
            View<T> aux) const {
    auto c_prev = cview(prev[1].data, n, H, prev[1].stride);
    auto c = view(next[1].data, n, H, next[1].stride);

    times_packed(n, prev[0].data, prev[0].stride, P->all, gates, true);  // += h_{t-1} U
    auto i = gates.leftCols(H);
    auto f = gates.middleCols(H, H);
    auto g = gates.middleCols(2 * H, H);
    auto o = gates.rightCols(H);
    auto z = aux.middleCols(z_col(), clip > 0 ? 4 * H : 0);
    if (peephole) {
      i.array() += c_prev.array().rowwise() * p_row(0);
      f.array() += c_prev.array().rowwise() * p_row(1);
    }
    if (clip > 0) {
      z.leftCols(3 * H) = gates.leftCols(3 * H);  // the backward pass needs the clip's mask
      clamp(gates.leftCols(3 * H));
    }
    activate(rec_act, i);
    if (input_forget)
      f.array() = T(1) - i.array();
    else
      activate(rec_act, f);
    activate(act, g);

    c.array() = f.array() * c_prev.array() + i.array() * g.array();
    if (peephole) o.array() += c.array().rowwise() * p_row(2);
    if (clip > 0) {
      z.rightCols(H) = o;
      clamp(o);
    }
    activate(rec_act, o);

    // m = o * out_act(c): h itself, or kept in aux and projected.
    auto m = projection ? view(aux.data(), n, H, aux.outerStride())
                        : view(next[0].data, n, H, next[0].stride);
    m = c;
    activate(out_act, m);
    m.array() *= o.array();
    if (projection)
      packed_gemm(m.data(), m.outerStride(), n, P->proj, next[0].data, next[0].stride,
                  detail::Start::Zero);  // h = m W_hr
  }

  // Backward. dh (Hp wide) and dc reach h_t and c_t from later steps. With a_c = out_act(c_t)
  // and [.] the clip's mask (1 where the gate's input was within [-clip, clip]):
  //   dm = dh W_hr^T (projection) or dh                  (dW_hr = sum m^T dh, after the loop)
  //   dz_o = dm * a_c * rec_act'(o) * [z_o]
  //   dC = dc + dm * o * out_act'(a_c) + dz_o * p_o                  (total gradient of c_t)
  //   dz_i = (dC * g - [input_forget] dC * c_{t-1}) * rec_act'(i) * [z_i]
  //   dz_f = dC * c_{t-1} * rec_act'(f) * [z_f]       (0 with input_forget: f = 1 - i)
  //   dz_g = dC * i * act'(g) * [z_g]
  //   dh_{t-1} = dZ U^T          dc_{t-1} = dC * f + dz_i * p_i + dz_f * p_f
  //   dp_i = sum dz_i * c_{t-1}   dp_f = sum dz_f * c_{t-1}   dp_o = sum dz_o * c_t
  // scratch: [a_c | dC | dm (projection)], each n x H. dA (the grad aux, summed after the
  // loop): [dz_i c_{t-1} | dz_f c_{t-1} | dz_o c_t (peepholes) | dh (projection)].
  Index scratch_cols() const { return (projection ? 3 : 2) * H; }
  Index dh_col() const { return peephole ? 3 * H : 0; }
  Index grad_aux_cols() const { return dh_col() + (projection ? Hp : 0); }

  void gate_grads(Index n, ConstView<T> gates, const States<const T, 2>& prev,
                  const States<const T, 2>& next, ConstView<T> aux, const States<const T, 2>& dS,
                  View<T> dG, View<T> dA, View<T> scratch) const {
    const auto c_prev = cview(prev[1].data, n, H, prev[1].stride);
    const auto c = cview(next[1].data, n, H, next[1].stride);
    const auto dc = cview(dS[1].data, n, H, dS[1].stride);
    const auto i = gates.leftCols(H), f = gates.middleCols(H, H), g = gates.middleCols(2 * H, H),
               o = gates.rightCols(H);
    const auto z = aux.middleCols(z_col(), clip > 0 ? 4 * H : 0);
    auto a_c = scratch.leftCols(H);
    auto dC = scratch.middleCols(H, H);
    auto dm = scratch.middleCols(2 * H, projection ? H : 0);
    if (projection) {
      times_packed(n, dS[0].data, dS[0].stride, P->projT, dm, false);  // dh W_hr^T
      dA.middleCols(dh_col(), Hp) = cview(dS[0].data, n, Hp, dS[0].stride);
    }
    const auto dmv = projection ? cview(dm.data(), n, H, dm.outerStride())
                                : cview(dS[0].data, n, H, dS[0].stride);
    a_c = c;
    activate(out_act, a_c);

    auto dz_i = dG.leftCols(H), dz_f = dG.middleCols(H, H), dz_g = dG.middleCols(2 * H, H),
         dz_o = dG.rightCols(H);
    dz_o.array() = dmv.array() * a_c.array();
    activate_backward(rec_act, dz_o, o);
    dC.array() = dmv.array() * o.array();
    activate_backward(out_act, dC, a_c);
    if (clip > 0) clamp_backward(dz_o, z.rightCols(H));
    if (peephole) dC.array() += dz_o.array().rowwise() * p_row(2);
    dC += dc;
    dz_i.array() = dC.array() * g.array();
    if (input_forget) {
      dz_i.array() -= dC.array() * c_prev.array();
      dz_f.setZero();
    } else {
      dz_f.array() = dC.array() * c_prev.array();
      activate_backward(rec_act, dz_f, f);
    }
    activate_backward(rec_act, dz_i, i);
    dz_g.array() = dC.array() * i.array();
    activate_backward(act, dz_g, g);
    if (clip > 0) {
      clamp_backward(dz_i, z.leftCols(H));
      if (!input_forget) clamp_backward(dz_f, z.middleCols(H, H));
      clamp_backward(dz_g, z.middleCols(2 * H, H));
    }
    if (peephole) {
      dA.leftCols(H).array() = dz_i.array() * c_prev.array();
      dA.middleCols(H, H).array() = dz_f.array() * c_prev.array();
      dA.middleCols(2 * H, H).array() = dz_o.array() * c.array();
    }
  }

  void prev_grads(Index n, ConstView<T> gates, const States<const T, 2>&, ConstView<T>,
                  const States<const T, 2>&, ConstView<T> dG, ConstView<T>,
                  const States<T, 2>& dprev, View<T> scratch) const {
    auto dh_prev = view(dprev[0].data, n, Hp, dprev[0].stride);
    auto dc_prev = view(dprev[1].data, n, H, dprev[1].stride);
    times_packed(n, dG.data(), dG.outerStride(), P->allT, dh_prev, false);  // dG U^T
    dc_prev.array() = scratch.middleCols(H, H).array() * gates.middleCols(H, H).array();
    if (peephole) {
      dc_prev.array() += dG.leftCols(H).array().rowwise() * p_row(0);
      dc_prev.array() += dG.middleCols(H, H).array().rowwise() * p_row(1);
    }
  }

  // Without peepholes or projection dU = H_prev^T dG is all (backward.hpp then computes it
  // with dW over one packing of dG).
  bool plain_recurrent_grads() const { return !peephole && !projection; }

  // After the loop, over all batch*time rows: dU = H_prev^T dG; the peepholes' gradient
  // (3, H) = column sums of dA's peephole part; dW_hr = M^T dh (M: the m kept in aux).
  template <class IO, class Gemm>
  void recurrent_grads(ConstView<T> H_prev, ConstView<T> A, ConstView<T> dG, ConstView<T> dA,
                       View<T> dU, const IO& io, Gemm&& at_b) const {
    at_b(H_prev, dG, dU);
    if (peephole && io.d_peephole)
      Eigen::Map<RowVec<T>>(io.d_peephole, 3 * H) = dA.leftCols(3 * H).colwise().sum();
    if (projection && io.d_projection)
      at_b(A.leftCols(H), dA.middleCols(dh_col(), Hp), view(io.d_projection, H, Hp, Hp));
  }
};

// ---------------------------------------------------------------------------------------
// GRU (Keras gate order z, r, h), both forms.
//
// reset_after = true (Keras 3 default, cuDNN / PyTorch form). The bias is (2, 3H): an input
// row b_x and a recurrent row b_hh. Only the candidate's recurrent bias must stay inside
// r * (.); the z, r parts of b_hh simply add, so the scan folds them into b_in.
//   z = rec_act(x W_z + b_z + h_{t-1} U_z)         r = rec_act(x W_r + b_r + h_{t-1} U_r)
//   a = h_{t-1} U_h + b_hh_h                        (kept as aux: the backward pass needs it)
//   hh = act(x W_h + b_xh + r * a)
//
// reset_after = false (the 2014 form, bias (3H,)):
//   z, r as above
//   a = r * h_{t-1}                                  (kept as aux)
//   hh = act(x W_h + b_h + a U_h)
//
// Both:  h_t = z * h_{t-1} + (1 - z) * hh
template <class T>
struct GRUCell {
  static constexpr int G = 3;
  static constexpr int n_states = 1;
  static constexpr bool own_recurrent_grads = true;  // dU and db_rec: recurrent_grads below
  Index H;
  const PackedU<T>* P;  // U (forward) or U^T (backward), packed
  Activation act, rec_act;
  bool reset_after;
  const T* b_hh_h;  // reset_after only: recurrent bias of the candidate (H,), or nullptr

  Index state_cols(int) const { return H; }
  Index aux_cols() const { return H; }

  void step(Index n, View<T> gates, const States<const T, 1>& prev, const States<T, 1>& next,
            View<T> a) const {
    auto h_prev = cview(prev[0].data, n, H, prev[0].stride);
    auto h = view(next[0].data, n, H, next[0].stride);
    auto zr = gates.leftCols(2 * H);
    auto z = gates.leftCols(H);
    auto r = gates.middleCols(H, H);
    auto hh = gates.rightCols(H);

    times_packed(n, prev[0].data, prev[0].stride, P->all, zr, true);  // += h_{t-1} U_zr
    activate(rec_act, z);
    activate(rec_act, r);
    if (reset_after) {
      packed_gemm(prev[0].data, prev[0].stride, n, P->h, a.data(), a.outerStride(),
                  b_hh_h ? detail::Start::Bias : detail::Start::Zero, b_hh_h);  // h U_h + b_hh_h
      hh.array() += r.array() * a.array();
    } else {
      a.array() = r.array() * h_prev.array();
      times_packed(n, a.data(), a.outerStride(), P->h, hh, true);  // += (r h_{t-1}) U_h
    }
    activate(act, hh);
    // Written as the convex combination (not hh + z (h_prev - hh)) so that an infinite
    // candidate with z = 0 gives inf, not 0 * inf = NaN.
    h.array() = z.array() * h_prev.array() + (T(1) - z.array()) * hh.array();
  }

  // Backward, both forms:
  //   dz_z = dh * (h_{t-1} - hh) * rec_act'(z)        dz_h = dh * (1 - z) * act'(hh)
  // reset_after:   dz_r = dz_h * a * rec_act'(r)        dA = dz_h * r   (gradient of a)
  //                dh_{t-1} = dh * z + [dz_z dz_r] U_zr^T + dA U_h^T
  //                dU_zr = H_prev^T [dz_z dz_r]   dU_h = H_prev^T dA   db_hh = sum [dz_z dz_r dA]
  // reset_after=false:  da = dz_h U_h^T (in scratch)     dz_r = da * h_{t-1} * rec_act'(r)
  //                dh_{t-1} = dh * z + da * r + [dz_z dz_r] U_zr^T
  //                dU_zr = H_prev^T [dz_z dz_r]   dU_h = A^T dz_h  (A = r * h_{t-1}, kept as aux)
  Index scratch_cols() const { return reset_after ? 0 : H; }
  Index grad_aux_cols() const { return reset_after ? H : 0; }

  void gate_grads(Index n, ConstView<T> gates, const States<const T, 1>& prev,
                  const States<const T, 1>&, ConstView<T> a, const States<const T, 1>& dS,
                  View<T> dG, View<T> dA, View<T> scratch) const {
    const auto h_prev = cview(prev[0].data, n, H, prev[0].stride);
    const auto dh = cview(dS[0].data, n, H, dS[0].stride);
    const auto z = gates.leftCols(H), r = gates.middleCols(H, H), hh = gates.rightCols(H);
    auto dz_z = dG.leftCols(H), dz_r = dG.middleCols(H, H), dz_h = dG.rightCols(H);
    dz_z.array() = dh.array() * (h_prev.array() - hh.array());
    activate_backward(rec_act, dz_z, z);
    dz_h.array() = dh.array() * (T(1) - z.array());
    activate_backward(act, dz_h, hh);
    if (reset_after) {
      dz_r.array() = dz_h.array() * a.array();
      dA.array() = dz_h.array() * r.array();
    } else {
      times_packed(n, dz_h.data(), dz_h.outerStride(), P->hT, scratch, false);  // dz_h U_h^T
      dz_r.array() = scratch.array() * h_prev.array();
    }
    activate_backward(rec_act, dz_r, r);
  }

  void prev_grads(Index n, ConstView<T> gates, const States<const T, 1>&, ConstView<T>,
                  const States<const T, 1>& dS, ConstView<T> dG, ConstView<T> dA,
                  const States<T, 1>& dprev, View<T> scratch) const {
    const auto dh = cview(dS[0].data, n, H, dS[0].stride);
    const auto z = gates.leftCols(H), r = gates.middleCols(H, H);
    auto dh_prev = view(dprev[0].data, n, H, dprev[0].stride);
    dh_prev.array() = dh.array() * z.array();
    if (reset_after) {
      times_packed(n, dA.data(), dA.outerStride(), P->hT, dh_prev, true);  // += dA U_h^T
    } else {
      dh_prev.array() += scratch.array() * r.array();
    }
    times_packed(n, dG.data(), dG.outerStride(), P->allT, dh_prev, true);  // += dG_zr U_zr^T
  }

  bool plain_recurrent_grads() const { return false; }  // dU_h is not H_prev^T dG_h

  // io.db_rec: the recurrent bias row (reset_after with a bias), else nullptr.
  template <class IO, class Gemm>
  void recurrent_grads(ConstView<T> H_prev, ConstView<T> A, ConstView<T> dG, ConstView<T> dA,
                       View<T> dU, const IO& io, Gemm&& at_b) const {
    T* db_rec = io.db_rec;
    at_b(H_prev, dG.leftCols(2 * H), dU.leftCols(2 * H));
    if (reset_after) {
      at_b(H_prev, dA, dU.rightCols(H));
      if (db_rec) {
        Eigen::Map<RowVec<T>>(db_rec, 2 * H) = dG.leftCols(2 * H).colwise().sum();
        Eigen::Map<RowVec<T>>(db_rec + 2 * H, H) = dA.colwise().sum();
      }
    } else {
      at_b(A, dG.rightCols(H), dU.rightCols(H));
    }
  }
};

}  // namespace rnncore
