// The recurrent cells. A cell holds only its step math; the time loop, masks, direction,
// initial/final states and workspaces belong to the scan (scan.hpp), shared by all cells.
//
// Conventions (Keras layouts verbatim, G = number of gates, H = units):
//   kernel W (D, G*H), recurrent_kernel U (H, G*H), gate columns in Keras order
//   SimpleRNN: [h]          LSTM: [i | f | c | o]          GRU: [z | r | h]
//
// Before the loop the scan computes, for all batch*time rows at once,
//   gates = x W + b_in                                            (one GEMM)
// and each step receives that step's rows of `gates` and turns them, in place, into the
// post-activation gate values; that buffer is what the backward pass reads.
//
// A cell provides:
//   G, n_states            gate count, number of carried states (h; or h, c)
//   aux_cols()             extra per-step values the backward pass needs (0 if none)
//   step(...)              one time step for n rows
//   step_backward(...)     its derivative (in backward.hpp's terms, see there)
#pragma once

#include <array>

#include "rnncore/activations.hpp"
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

// ---------------------------------------------------------------------------------------
// SimpleRNN:  h_t = act(x_t W + b + h_{t-1} U)
template <class T>
struct SimpleRNNCell {
  static constexpr int G = 1;
  static constexpr int n_states = 1;
  Index H;
  ConstView<T> U;
  Activation act;

  Index aux_cols() const { return 0; }

  void step(Index n, View<T> gates, const States<const T, 1>& prev, const States<T, 1>& next,
            View<T> /*aux*/) const {
    auto h_prev = cview(prev[0].data, n, H, prev[0].stride);
    auto h = view(next[0].data, n, H, next[0].stride);
    gates.noalias() += h_prev * U;
    activate(act, gates);
    h = gates;
  }
};

// ---------------------------------------------------------------------------------------
// LSTM (Keras gate order i, f, c, o):
//   [i f g o] = x_t W + b + h_{t-1} U
//   i, f, o <- rec_act(.)      g <- act(.)
//   c_t = f * c_{t-1} + i * g
//   h_t = o * act(c_t)
template <class T>
struct LSTMCell {
  static constexpr int G = 4;
  static constexpr int n_states = 2;  // h, c
  Index H;
  ConstView<T> U;
  Activation act, rec_act;

  Index aux_cols() const { return 0; }

  void step(Index n, View<T> gates, const States<const T, 2>& prev, const States<T, 2>& next,
            View<T> /*aux*/) const {
    auto h_prev = cview(prev[0].data, n, H, prev[0].stride);
    auto c_prev = cview(prev[1].data, n, H, prev[1].stride);
    auto h = view(next[0].data, n, H, next[0].stride);
    auto c = view(next[1].data, n, H, next[1].stride);

    gates.noalias() += h_prev * U;
    auto i = gates.leftCols(H);
    auto f = gates.middleCols(H, H);
    auto g = gates.middleCols(2 * H, H);
    auto o = gates.rightCols(H);
    activate(rec_act, gates.leftCols(2 * H));
    activate(act, g);
    activate(rec_act, o);

    c.array() = f.array() * c_prev.array() + i.array() * g.array();
    h = c;
    activate(act, h);
    h.array() *= o.array();
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
// Both:  h_t = z * h_{t-1} + (1 - z) * hh  =  hh + z * (h_{t-1} - hh)
template <class T>
struct GRUCell {
  static constexpr int G = 3;
  static constexpr int n_states = 1;
  Index H;
  ConstView<T> U;
  Activation act, rec_act;
  bool reset_after;
  const T* b_hh_h;  // reset_after only: recurrent bias of the candidate (H,), or nullptr

  Index aux_cols() const { return H; }

  void step(Index n, View<T> gates, const States<const T, 1>& prev, const States<T, 1>& next,
            View<T> a) const {
    auto h_prev = cview(prev[0].data, n, H, prev[0].stride);
    auto h = view(next[0].data, n, H, next[0].stride);
    auto zr = gates.leftCols(2 * H);
    auto z = gates.leftCols(H);
    auto r = gates.middleCols(H, H);
    auto hh = gates.rightCols(H);

    zr.noalias() += h_prev * U.leftCols(2 * H);
    activate(rec_act, zr);
    if (reset_after) {
      a.noalias() = h_prev * U.rightCols(H);
      if (b_hh_h) a.rowwise() += ConstRowVecView<T>(b_hh_h, H);
      hh.array() += r.array() * a.array();
    } else {
      a.array() = r.array() * h_prev.array();
      hh.noalias() += a * U.rightCols(H);
    }
    activate(act, hh);
    h.array() = hh.array() + z.array() * (h_prev.array() - hh.array());
  }
};

}  // namespace rnncore
