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
//                          the gradient of the recurrent-side value a (GRU reset_after);
//                          also the element-wise part of dL/d(states before the step), in
//                          the same pass (dc_{t-1}; the GRU's dh * z)
//   prev_grads(...)        the products that complete dL/d(states before the step)
//   own_recurrent_grads    whether it provides recurrent_grads(...): after the loop, dU and
//                          the recurrent bias gradient, as products over all batch*time rows
//                          at once; a cell whose recurrent side is h_{t-1} U alone (SimpleRNN,
//                          LSTM) says false, and the backward scan takes dU = H_prev^T dG
#pragma once

#include <array>
#include <type_traits>

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

// Fused element-wise passes (float; activations.hpp, namespace fused): calls
// fn(Fa{}, Fb{}) with the functors of two element-wise activations and returns true, or
// returns false (and calls nothing) when either is softmax or T is not float; the cell then
// takes its block path, one Eigen pass per gate and operation. double keeps the block path:
// it is the precision of the checks, not of speed.
template <class T, class Fn>
bool fused_pair(Activation a, Activation b, Fn&& fn) {
  bool done = false;
  if constexpr (std::is_same_v<T, float>)
    fused::with_activation(
        a, [&](auto A) { done = fused::with_activation(b, [&](auto B) { fn(A, B); }); });
  return done;
}

// Row r of a strided block.
template <class T>
T* row_of(const Rows<T>& s, Index r) {
  return s.data + r * s.stride;
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
    if (fused_pair<T>(act, act, [&](auto A, auto) {
          using namespace fused;
          for (Index r = 0; r < n; ++r) {
            T* g = gates.data() + r * gates.outerStride();
            T* hr = row_of(next[0], r);
            over_units(H, [&](const auto& u) {
              const Packet y = decltype(A)::f(u.load(g));
              u.store(g, y);
              u.store(hr, y);
            });
          }
        }))
      return;
    activate(act, gates);
    h = gates;
  }

  // Backward. With y = h = act(z):  dz = dh * act'(y);  dh_prev = dz U^T;  dU = H_prev^T dZ.
  Index scratch_cols() const { return 0; }
  Index grad_aux_cols() const { return 0; }

  void gate_grads(Index n, ConstView<T> gates, const States<const T, 1>&, const States<const T, 1>&,
                  ConstView<T>, const States<const T, 1>& dS, View<T> dG, View<T>,
                  const States<T, 1>&, View<T>) const {
    if (fused_pair<T>(act, act, [&](auto A, auto) {
          using namespace fused;
          for (Index r = 0; r < n; ++r) {
            const T* y = gates.data() + r * gates.outerStride();
            const T* dh = row_of(dS[0], r);
            T* dz = dG.data() + r * dG.outerStride();
            over_units(H,
                       [&](const auto& u) { u.store(dz, decltype(A)::df(u.load(dh), u.load(y))); });
          }
        }))
      return;
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

  // Peephole row k (p_i, p_f, p_o), or nullptr without peepholes.
  const T* p(int k) const { return peephole ? peephole + k * H : nullptr; }
  auto p_row(int k) const { return ConstRowVecView<T>(p(k), H).array(); }
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
    times_packed(n, prev[0].data, prev[0].stride, P->all, gates, true);  // += h_{t-1} U
    if (out_act != act || !fused_pair<T>(rec_act, act, [&](auto R, auto A) {
          step_fused(R, A, n, gates, prev, next, aux);
        })) {
      step_blocks(n, gates, prev, next, aux);
    }
    if (projection)
      packed_gemm(aux.data(), aux.outerStride(), n, P->proj, next[0].data, next[0].stride,
                  detail::Start::Zero);  // h = m W_hr
  }

  // The step's element-wise work in one pass per row, a vector of units at a time, in the
  // order of the equations above. m goes to h, or to aux (projection).
  template <class R, class A>
  void step_fused(R, A, Index n, View<T> gates, const States<const T, 2>& prev,
                  const States<T, 2>& next, View<T> aux) const {
    using namespace fused;
    using Eigen::internal::padd;
    using Eigen::internal::pmax;
    using Eigen::internal::pmin;
    const T *p_i = p(0), *p_f = p(1), *p_o = p(2);
    const Packet lo = pset1<Packet>(-clip), hi = pset1<Packet>(clip), one = pset1<Packet>(1.f);
    for (Index r = 0; r < n; ++r) {
      T* gi = gates.data() + r * gates.outerStride();
      T *gf = gi + H, *gg = gi + 2 * H, *go = gi + 3 * H;
      const T* c_prev = row_of(prev[1], r);
      T* c = row_of(next[1], r);
      T* ar = aux.data() + r * aux.outerStride();
      T* m = projection ? ar : row_of(next[0], r);
      T* z = ar + z_col();  // the pre-clip z_i z_f z_g z_o (clip only)
      over_units(H, [&](const auto& u) {
        const Packet cp = u.load(c_prev);
        Packet zi = u.load(gi), zf = u.load(gf), zg = u.load(gg);
        if (peephole) {
          zi = padd(zi, pmul(cp, u.load(p_i)));
          zf = padd(zf, pmul(cp, u.load(p_f)));
        }
        if (clip > 0) {
          u.store(z, zi);
          u.store(z + H, zf);
          u.store(z + 2 * H, zg);
          zi = pmin(pmax(zi, lo), hi);
          zf = pmin(pmax(zf, lo), hi);
          zg = pmin(pmax(zg, lo), hi);
        }
        const Packet i = R::f(zi);
        const Packet f = input_forget ? psub(one, i) : R::f(zf);
        const Packet g = A::f(zg);
        const Packet cn = padd(pmul(f, cp), pmul(i, g));  // c_t = f c_{t-1} + i g
        Packet zo = u.load(go);
        if (peephole) zo = padd(zo, pmul(cn, u.load(p_o)));
        if (clip > 0) {
          u.store(z + 3 * H, zo);
          zo = pmin(pmax(zo, lo), hi);
        }
        const Packet o = R::f(zo);
        u.store(gi, i);
        u.store(gf, f);
        u.store(gg, g);
        u.store(go, o);
        u.store(c, cn);
        u.store(m, pmul(A::f(cn), o));  // m = o * act(c_t)
      });
    }
  }

  // The same step, one Eigen pass per gate and operation: double, softmax, or out_act != act.
  void step_blocks(Index n, View<T> gates, const States<const T, 2>& prev, const States<T, 2>& next,
                   View<T> aux) const {
    auto c_prev = cview(prev[1].data, n, H, prev[1].stride);
    auto c = view(next[1].data, n, H, next[1].stride);
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
  // scratch: [a_c | dC | dm (projection)], each n x H (the fused pass uses dm only). dA (the grad
  // aux, summed after the loop): [dz_i c_{t-1} | dz_f c_{t-1} | dz_o c_t (peepholes) | dh
  // (projection)].
  Index scratch_cols() const { return (projection ? 3 : 2) * H; }
  Index dh_col() const { return peephole ? 3 * H : 0; }
  Index grad_aux_cols() const { return dh_col() + (projection ? Hp : 0); }

  // Also dc_{t-1} into dprev[1]; prev_grads adds dh_{t-1}.
  void gate_grads(Index n, ConstView<T> gates, const States<const T, 2>& prev,
                  const States<const T, 2>& next, ConstView<T> aux, const States<const T, 2>& dS,
                  View<T> dG, View<T> dA, const States<T, 2>& dprev, View<T> scratch) const {
    auto dm = scratch.middleCols(2 * H, projection ? H : 0);
    if (projection) {
      times_packed(n, dS[0].data, dS[0].stride, P->projT, dm, false);  // dh W_hr^T
      dA.middleCols(dh_col(), Hp) = cview(dS[0].data, n, Hp, dS[0].stride);
    }
    const Rows<const T> dmr = projection ? Rows<const T>{dm.data(), dm.outerStride()} : dS[0];
    if (out_act == act && fused_pair<T>(rec_act, act, [&](auto R, auto A) {
          grads_fused(R, A, n, gates, prev, next, aux, dmr, dS[1], dG, dA, dprev[1]);
        }))
      return;
    grads_blocks(n, gates, prev, next, aux, dmr, dS[1], dG, dA, dprev[1], scratch);
  }

  // gate_grads in one pass per row, a vector of units at a time.
  template <class R, class A>
  void grads_fused(R, A, Index n, ConstView<T> gates, const States<const T, 2>& prev,
                   const States<const T, 2>& next, ConstView<T> aux, Rows<const T> dmr,
                   Rows<const T> dcr, View<T> dG, View<T> dA, Rows<T> dc_prev) const {
    using namespace fused;
    using Eigen::internal::pabs;
    using Eigen::internal::padd;
    using Eigen::internal::pcmp_le;
    const T *p_i = p(0), *p_f = p(1), *p_o = p(2);
    const Packet zero = pset1<Packet>(0.f), limit = pset1<Packet>(clip);
    auto clipped = [&](const Packet& d, const Packet& zv) {  // d * [|z| <= clip]
      return pselect(pcmp_le(pabs(zv), limit), d, zero);
    };
    for (Index r = 0; r < n; ++r) {
      const T* gi = gates.data() + r * gates.outerStride();
      const T *gf = gi + H, *gg = gi + 2 * H, *go = gi + 3 * H;
      const T* z = aux.data() + r * aux.outerStride() + z_col();
      const T *cpr = row_of(prev[1], r), *cr = row_of(next[1], r);
      const T *dmv = row_of(dmr, r), *dcv = row_of(dcr, r);
      T* di = dG.data() + r * dG.outerStride();
      T *df = di + H, *dg = di + 2 * H, *dO = di + 3 * H;
      T* da = dA.data() + r * dA.outerStride();
      T* dcp = row_of(dc_prev, r);
      over_units(H, [&](const auto& u) {
        const Packet cp = u.load(cpr), cn = u.load(cr), dmp = u.load(dmv);
        const Packet i = u.load(gi), f = u.load(gf), g = u.load(gg), o = u.load(go);
        const Packet a_c = A::f(cn);
        Packet dz_o = R::df(pmul(dmp, a_c), o);
        Packet dC = A::df(pmul(dmp, o), a_c);
        if (clip > 0) dz_o = clipped(dz_o, u.load(z + 3 * H));
        if (peephole) dC = padd(dC, pmul(dz_o, u.load(p_o)));
        dC = padd(dC, u.load(dcv));
        Packet dz_i = pmul(dC, g), dz_f = zero;
        if (input_forget)
          dz_i = psub(dz_i, pmul(dC, cp));
        else
          dz_f = R::df(pmul(dC, cp), f);
        dz_i = R::df(dz_i, i);
        Packet dz_g = A::df(pmul(dC, i), g);
        if (clip > 0) {
          dz_i = clipped(dz_i, u.load(z));
          if (!input_forget) dz_f = clipped(dz_f, u.load(z + H));
          dz_g = clipped(dz_g, u.load(z + 2 * H));
        }
        Packet dcn = pmul(dC, f);  // dc_{t-1}
        if (peephole) {
          u.store(da, pmul(dz_i, cp));
          u.store(da + H, pmul(dz_f, cp));
          u.store(da + 2 * H, pmul(dz_o, cn));
          dcn = padd(padd(dcn, pmul(dz_i, u.load(p_i))), pmul(dz_f, u.load(p_f)));
        }
        u.store(di, dz_i);
        u.store(df, dz_f);
        u.store(dg, dz_g);
        u.store(dO, dz_o);
        u.store(dcp, dcn);
      });
    }
  }

  // The same, one Eigen pass per gate and operation: double, softmax, or out_act != act.
  void grads_blocks(Index n, ConstView<T> gates, const States<const T, 2>& prev,
                    const States<const T, 2>& next, ConstView<T> aux, Rows<const T> dmr,
                    Rows<const T> dcr, View<T> dG, View<T> dA, Rows<T> dc_prev_r,
                    View<T> scratch) const {
    const auto c_prev = cview(prev[1].data, n, H, prev[1].stride);
    const auto c = cview(next[1].data, n, H, next[1].stride);
    const auto dc = cview(dcr.data, n, H, dcr.stride);
    const auto i = gates.leftCols(H), f = gates.middleCols(H, H), g = gates.middleCols(2 * H, H),
               o = gates.rightCols(H);
    const auto z = aux.middleCols(z_col(), clip > 0 ? 4 * H : 0);
    auto a_c = scratch.leftCols(H);
    auto dC = scratch.middleCols(H, H);
    const auto dmv = cview(dmr.data, n, H, dmr.stride);
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
    auto dc_prev = view(dc_prev_r.data, n, H, dc_prev_r.stride);
    dc_prev.array() = dC.array() * f.array();
    if (peephole) {
      dc_prev.array() += dz_i.array().rowwise() * p_row(0);
      dc_prev.array() += dz_f.array().rowwise() * p_row(1);
    }
  }

  void prev_grads(Index n, ConstView<T>, const States<const T, 2>&, ConstView<T>,
                  const States<const T, 2>&, ConstView<T> dG, ConstView<T>,
                  const States<T, 2>& dprev, View<T>) const {
    auto dh_prev = view(dprev[0].data, n, Hp, dprev[0].stride);
    times_packed(n, dG.data(), dG.outerStride(), P->allT, dh_prev, false);  // dG U^T
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
    if (fused_pair<T>(rec_act, act,
                      [&](auto R, auto A) { step_fused(R, A, n, gates, prev, next, a); }))
      return;
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

  // The step's element-wise work in one pass per row (reset_after), or one pass before the
  // candidate's product (r, a = r h_{t-1}) and one after it (z, hh, h).
  template <class R, class A>
  void step_fused(R, A, Index n, View<T> gates, const States<const T, 1>& prev,
                  const States<T, 1>& next, View<T> a) const {
    using namespace fused;
    using Eigen::internal::padd;
    const Packet one = pset1<Packet>(1.f);
    auto row = [&](Index r) { return gates.data() + r * gates.outerStride(); };
    auto a_row = [&](Index r) { return a.data() + r * a.outerStride(); };
    if (reset_after) {
      packed_gemm(prev[0].data, prev[0].stride, n, P->h, a.data(), a.outerStride(),
                  b_hh_h ? detail::Start::Bias : detail::Start::Zero, b_hh_h);  // h U_h + b_hh_h
    } else {
      for (Index r = 0; r < n; ++r) {
        T* gr = row(r) + H;
        const T* hp = row_of(prev[0], r);
        T* ar = a_row(r);
        over_units(H, [&](const auto& u) {
          const Packet rv = R::f(u.load(gr));
          u.store(gr, rv);
          u.store(ar, pmul(rv, u.load(hp)));  // a = r h_{t-1}
        });
      }
      times_packed(n, a.data(), a.outerStride(), P->h, gates.rightCols(H), true);  // += a U_h
    }
    for (Index r = 0; r < n; ++r) {
      T *gz = row(r), *gr = gz + H, *gh = gz + 2 * H;
      const T* hp = row_of(prev[0], r);
      const T* ar = a_row(r);
      T* h = row_of(next[0], r);
      over_units(H, [&](const auto& u) {
        const Packet z = R::f(u.load(gz));
        Packet zh = u.load(gh);
        if (reset_after) {
          const Packet rv = R::f(u.load(gr));
          u.store(gr, rv);
          zh = padd(zh, pmul(rv, u.load(ar)));
        }
        const Packet hh = A::f(zh);
        u.store(gz, z);
        u.store(gh, hh);
        u.store(h, padd(pmul(z, u.load(hp)), pmul(psub(one, z), hh)));
      });
    }
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

  // Also dh * z (+ da * r) into dprev; prev_grads adds the products.
  void gate_grads(Index n, ConstView<T> gates, const States<const T, 1>& prev,
                  const States<const T, 1>&, ConstView<T> a, const States<const T, 1>& dS,
                  View<T> dG, View<T> dA, const States<T, 1>& dprev, View<T> scratch) const {
    if (fused_pair<T>(rec_act, act, [&](auto R, auto A) {
          grads_fused(R, A, n, gates, prev, a, dS, dG, dA, dprev, scratch);
        }))
      return;
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
    auto dh_prev = view(dprev[0].data, n, H, dprev[0].stride);
    dh_prev.array() = dh.array() * z.array();
    if (!reset_after) dh_prev.array() += scratch.array() * r.array();
  }

  // gate_grads in one pass per row (reset_after), or one pass before da = dz_h U_h^T and
  // one after it.
  template <class R, class A>
  void grads_fused(R, A, Index n, ConstView<T> gates, const States<const T, 1>& prev,
                   ConstView<T> a, const States<const T, 1>& dS, View<T> dG, View<T> dA,
                   const States<T, 1>& dprev, View<T> scratch) const {
    using namespace fused;
    using Eigen::internal::padd;
    const Packet one = pset1<Packet>(1.f);
    for (Index r = 0; r < n; ++r) {
      const T *gz = gates.data() + r * gates.outerStride(), *gr = gz + H, *gh = gz + 2 * H;
      const T *hp = row_of(prev[0], r), *dh = row_of(dS[0], r);
      T *dz = dG.data() + r * dG.outerStride(), *dr = dz + H, *dhh = dz + 2 * H;
      const T* ar = a.data() + r * a.outerStride();
      T* da = dA.data() + r * dA.outerStride();
      T* dhp = row_of(dprev[0], r);
      over_units(H, [&](const auto& u) {
        const Packet z = u.load(gz), hh = u.load(gh), d = u.load(dh);
        u.store(dz, R::df(pmul(d, psub(u.load(hp), hh)), z));
        const Packet dz_h = A::df(pmul(d, psub(one, z)), hh);
        u.store(dhh, dz_h);
        if (reset_after) {
          const Packet rv = u.load(gr);
          u.store(dr, R::df(pmul(dz_h, u.load(ar)), rv));
          u.store(da, pmul(dz_h, rv));
        }
        u.store(dhp, pmul(d, z));  // dh z: the direct part of dh_{t-1}
      });
    }
    if (reset_after) return;
    times_packed(n, dG.data() + 2 * H, dG.outerStride(), P->hT, scratch, false);  // dz_h U_h^T
    for (Index r = 0; r < n; ++r) {
      const T* gr = gates.data() + r * gates.outerStride() + H;
      const T* hp = row_of(prev[0], r);
      const T* dap = scratch.data() + r * scratch.outerStride();
      T* dr = dG.data() + r * dG.outerStride() + H;
      T* dhp = row_of(dprev[0], r);
      over_units(H, [&](const auto& u) {
        const Packet rv = u.load(gr), dav = u.load(dap);
        u.store(dr, R::df(pmul(dav, u.load(hp)), rv));
        u.store(dhp, padd(u.load(dhp), pmul(dav, rv)));  // + da r
      });
    }
  }

  void prev_grads(Index n, ConstView<T>, const States<const T, 1>&, ConstView<T>,
                  const States<const T, 1>&, ConstView<T> dG, ConstView<T> dA,
                  const States<T, 1>& dprev, View<T>) const {
    auto dh_prev = view(dprev[0].data, n, H, dprev[0].stride);
    if (reset_after)
      times_packed(n, dA.data(), dA.outerStride(), P->hT, dh_prev, true);  // += dA U_h^T
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
