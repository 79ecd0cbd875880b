// The one backward time loop (backpropagation through time), shared by every cell.
//
// It reads the training workspace of forward_scan (post-activation gates, the states after
// every step, the cell's aux values) and runs the steps in reverse processing order. The
// loop only produces per-step gate gradients dG (and the GRU's dA); everything that can be
// done over all timesteps at once is done after the loop as single matrix products:
//   dW = X^T dG     dU = H_prev^T dG (cell-specific split)     db = sum dG     dX = dG W^T
//
// Masks mirror the forward rule. At a masked step the states passed through unchanged, so
// their gradient passes straight back and the step's gate gradients are zero. The output
// at a masked step repeats the previous output, so the output gradient accumulates in dy_last
// until it reaches the last used step, where it joins dh.
//
// Threads: the reverse loop runs per batch shard with no synchronisation, like the forward;
// the products after the loop split dW, dU over columns and dX over rows.
#pragma once

#include <algorithm>
#include <array>
#include <vector>

#include "rnncore/scan.hpp"

namespace rnncore {

template <class T>
struct BackwardIO {
  ScanIO<T> fwd;  // the forward call's inputs and its training workspace (outputs unused)

  // Incoming gradients.
  const T* dy = nullptr;                       // shaped like the forward output
  std::array<const T*, max_states> d_final{};  // each (B, H), or nullptr for zero

  // Results.
  T* dx = nullptr;                         // (B, T, D)
  T* dW = nullptr;                         // (D, G*H)
  T* dU = nullptr;                         // (H, G*H)
  T* db = nullptr;                         // like the bias, or nullptr
  T* db_rec = nullptr;                     // GRU reset_after: the recurrent bias row
  T* d_peephole = nullptr;                 // LSTM peepholes (3, H), or nullptr
  T* d_projection = nullptr;               // LSTM projection W_hr (H, Hp), or nullptr
  std::array<T*, max_states> d_initial{};  // each (B, width of the state)
};

// C = A^T B, split over the columns of C (each thread writes its own columns).
template <class MA, class MB, class MC>
void at_b_parallel(const MA& A, const MB& Bm, MC&& C, int threads) {
  const auto cols = split_rows(C.cols(), threads, A.rows() * A.cols());
  parallel_for(static_cast<Index>(cols.size()) - 1, threads, [&](Index s) {
    const Index c0 = cols[s], m = cols[s + 1] - c0;
    C.middleCols(c0, m).noalias() = A.transpose() * Bm.middleCols(c0, m);
  });
}

template <class Cell, class T>
void backward_scan(const Cell& cell, const BackwardIO<T>& io, int num_threads) {
  constexpr int N = Cell::n_states;
  const ScanIO<T>& f = io.fwd;
  const Index B = f.B, Tn = f.T_, D = f.D, GH = Cell::G * cell.H;
  const Index A = cell.aux_cols(), DA = cell.grad_aux_cols(), SC = cell.scratch_cols();
  const Index M = B * Tn, Ho = cell.state_cols(0);  // Ho: the width of h
  std::array<Index, N> Hs{};                        // the states' widths
  Index S = 0;
  for (int k = 0; k < N; ++k) S += Hs[k] = cell.state_cols(k);

  // Whole-sequence buffers, sized once per call: gate gradients, dA, and H_prev (the state
  // each step started from, at the step's input time t).
  Buffer<T> dG_all(static_cast<size_t>(M * GH)), dA_all(static_cast<size_t>(M * DA)),
      H_prev_all(static_cast<size_t>(M * Ho));

  const auto shards = split_rows(B, num_threads, Tn * GH * (D + Ho));
  const Index per_row = 3 * S + Ho + SC;  // init, dS, dprev (each state), dy_last, scratch
  Buffer<T> shard_mem(static_cast<size_t>(B * per_row));

  parallel_for(static_cast<Index>(shards.size()) - 1, num_threads, [&](Index s_idx) {
    const Index r0 = shards[s_idx], n = shards[s_idx + 1] - r0;
    if (n == 0) return;
    T* mem = shard_mem.data() + r0 * per_row;
    std::array<T*, N> init{}, dS{}, dP{};
    for (int k = 0; k < N; ++k) {
      init[k] = mem;
      dS[k] = mem + n * Hs[k];
      dP[k] = mem + 2 * n * Hs[k];
      mem += 3 * n * Hs[k];
    }
    T* dy_last = mem;
    auto scratch = view(dy_last + n * Ho, n, SC, SC);

    for (int k = 0; k < N; ++k) {
      initial_rows(init[k], f.initial[k], r0, n, Hs[k]);
      auto d = view(dS[k], n, Hs[k], Hs[k]);
      if (io.d_final[k])
        d = cview(io.d_final[k] + r0 * Hs[k], n, Hs[k], Hs[k]);
      else
        d.setZero();
    }
    auto dyl = view(dy_last, n, Ho, Ho);
    if (f.return_sequences)
      dyl.setZero();
    else
      dyl = cview(io.dy + r0 * Ho, n, Ho, Ho);

    auto time_at = [&](Index s) { return f.go_backwards ? Tn - 1 - s : s; };
    // The states before step s: the initial states, or those stored after step s - 1.
    auto states_before = [&](Index s) {
      States<const T, N> st;
      for (int k = 0; k < N; ++k)
        st[k] =
            s == 0 ? Rows<const T>{init[k], Hs[k]}
                   : Rows<const T>{f.ws_states[k] + (r0 * Tn + time_at(s - 1)) * Hs[k], Tn * Hs[k]};
      return st;
    };

    for (Index s = Tn - 1; s >= 0; --s) {
      const Index t = time_at(s);
      const Index off = r0 * Tn + t;  // first row of this step in the (B*T, .) buffers
      const auto prev = states_before(s);
      States<const T, N> next, dS_c;
      States<T, N> dprev;
      for (int k = 0; k < N; ++k) {
        next[k] = {f.ws_states[k] + off * Hs[k], Tn * Hs[k]};
        dS_c[k] = {dS[k], Hs[k]};
        dprev[k] = {dP[k], Hs[k]};
      }
      // H_prev for the weight gradient after the loop.
      view(H_prev_all.data() + off * Ho, n, Ho, Tn * Ho) =
          cview(prev[0].data, n, Ho, prev[0].stride);

      if (f.return_sequences) dyl += cview(io.dy + (r0 * Tn + s) * Ho, n, Ho, Tn * Ho);
      auto used = [&](Index i) { return !f.mask || f.mask[(r0 + i) * Tn + t]; };
      for (Index i = 0; i < n; ++i) {
        if (!used(i)) continue;
        view(dS[0] + i * Ho, 1, Ho, Ho) += dyl.row(i);
        dyl.row(i).setZero();
      }

      const auto gates = cview(f.ws_gates + off * GH, n, GH, Tn * GH);
      const auto aux = cview(f.ws_aux + off * A, n, A, Tn * A);
      auto dG = view(dG_all.data() + off * GH, n, GH, Tn * GH);
      auto dA = view(dA_all.data() + off * DA, n, DA, Tn * DA);
      cell.gate_grads(n, gates, prev, next, aux, dS_c, dG, dA, scratch);
      for (Index i = 0; i < n; ++i) {
        if (used(i)) continue;
        dG.row(i).setZero();
        dA.row(i).setZero();
      }
      cell.prev_grads(n, gates, prev, aux, dS_c, cview(dG.data(), n, GH, Tn * GH),
                      cview(dA.data(), n, DA, Tn * DA), dprev, scratch);
      for (Index i = 0; i < n; ++i) {
        if (used(i)) continue;
        for (int k = 0; k < N; ++k) std::copy_n(dS[k] + i * Hs[k], Hs[k], dP[k] + i * Hs[k]);
      }
      std::swap(dS, dP);
    }
    for (int k = 0; k < N; ++k)
      view(io.d_initial[k] + r0 * Hs[k], n, Hs[k], Hs[k]) = view(dS[k], n, Hs[k], Hs[k]);
  });

  // Weight gradients: products over all batch*time rows at once.
  const auto X = cview(f.x, M, D, D);
  const auto dG = cview(dG_all.data(), M, GH, GH);
  auto at_b = [&](const auto& Am, const auto& Bm, auto&& C) {
    at_b_parallel(Am, Bm, C, num_threads);
  };
  at_b(X, dG, view(io.dW, D, GH, GH));
  const auto H_prev = cview(H_prev_all.data(), M, Ho, Ho);
  if constexpr (Cell::own_recurrent_grads)  // declared by each cell (cells.hpp)
    cell.recurrent_grads(H_prev, cview(f.ws_aux, M, A, A), dG, cview(dA_all.data(), M, DA, DA),
                         view(io.dU, Ho, GH, GH), io, at_b);
  else
    at_b(H_prev, dG, view(io.dU, Ho, GH, GH));  // dU = H_prev^T dG
  if (io.db) Eigen::Map<RowVec<T>>(io.db, GH) = dG.colwise().sum();

  // dX = dG W^T, split over rows.
  const auto rows = split_rows(M, num_threads, GH * D);
  parallel_for(static_cast<Index>(rows.size()) - 1, num_threads, [&](Index s) {
    const Index r0 = rows[s], m = rows[s + 1] - r0;
    view(io.dx + r0 * D, m, D, D).noalias() =
        cview(dG_all.data() + r0 * GH, m, GH, GH) * cview(f.W, D, GH, GH).transpose();
  });
}

}  // namespace rnncore
