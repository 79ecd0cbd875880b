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
// Threads: the reverse loop runs per batch shard with no synchronisation, like the forward.
// The products after the loop run on packed_gemm with the threads splitting their outputs
// (rows of dW, dU and dX), never the sum over k, so every gradient is the same FMA chain
// in the same order whatever the thread count: bit-identical results for 1 or N threads.
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

// Output rows [0, rows) split between threads at multiples of MR (full register blocks).
template <class T>
std::vector<Index> split_output_rows(Index rows, int threads, Index work_per_row) {
  auto bounds = split_rows(rows, threads, work_per_row);
  constexpr Index MR = Kernel<T>::MR;
  for (size_t s = 1; s + 1 < bounds.size(); ++s) bounds[s] = std::min(rows, bounds[s] / MR * MR);
  return bounds;
}

// Packs B (K x N, rows ld apart) into P, the threads taking whole panels.
template <class T>
void pack_parallel(PackedMatrix<T>& P, const T* B, Index K, Index N, Index rs, Index cs,
                   int threads) {
  P.resize(K, N);
  const auto parts = split_rows(P.panels, threads, K * Kernel<T>::NR);
  parallel_for(static_cast<Index>(parts.size()) - 1, threads,
               [&](Index s) { P.pack_panels(B, rs, cs, parts[s], parts[s + 1]); });
}

// One product C = A^T B of at_b_packed: A (K x R, rows lda apart), C (R x N, rows ldc apart).
template <class T>
struct AtB {
  const T* A;
  Index lda, R;
  T* C;
  Index ldc;
};

// C = A^T B for each term, all with the same B (K x N, rows ldb apart). B is packed KC rows
// at a time into a buffer the thread keeps for its next call (up to reuse_bytes: packing all
// of a tall B into fresh memory cost 6 ms of page faults in a 42 ms S3 LSTM backward), and
// every term's product runs over that chunk before the next: its partial sums stay in C
// exactly (packed_gemm's Start::C), so each output is one FMA chain over k in order. A is
// read transposed by packed_gemm; the threads split each C's rows.
template <class T, size_t n_terms>
void at_b_packed(const std::array<AtB<T>, n_terms>& terms, const T* B, Index ldb, Index K, Index N,
                 int threads) {
  constexpr Index NR = Kernel<T>::NR;
  const Index KC = blocking<T>().KC;
  thread_local PackedMatrix<T> reused;
  PackedMatrix<T> local;
  const size_t bytes = static_cast<size_t>(std::min(KC, K) * ((N + NR - 1) / NR * NR)) * sizeof(T);
  PackedMatrix<T>& chunk = bytes <= reuse_bytes ? reused : local;
  for (Index k0 = 0; k0 < K || k0 == 0; k0 += KC) {
    const Index kc = std::min(KC, K - k0);
    pack_parallel(chunk, B + k0 * ldb, kc, N, ldb, 1, threads);
    const auto start = k0 == 0 ? detail::Start::Zero : detail::Start::C;
    for (const AtB<T>& t : terms) {
      const auto rows = split_output_rows<T>(t.R, threads, kc * N);
      parallel_for(static_cast<Index>(rows.size()) - 1, threads, [&](Index s) {
        packed_gemm(t.A + k0 * t.lda + rows[s], t.lda, rows[s + 1] - rows[s], chunk.all(),
                    t.C + rows[s] * t.ldc, t.ldc, start, static_cast<const T*>(nullptr),
                    /*a_transposed=*/true);
      });
    }
  }
}

// sum over the rows of G (M x N, rows ld apart), in row order.
template <class T>
void column_sums(const T* G, Index M, Index N, Index ld, T* out) {
  std::fill_n(out, N, T(0));
  for (Index m = 0; m < M; ++m)
    for (Index j = 0; j < N; ++j) out[j] += G[m * ld + j];
}

// The backward's whole-sequence buffers (gate gradients, dA, H_prev) up to this size are kept
// for the calling thread's next call: fresh memory costs a page fault per 4 KiB on first
// touch (S3 LSTM forward+backward, 16 MiB of buffers: 5300 faults and about 9 ms of system
// time per call, measured on a busy 2-core Zen 5). Bigger ones (S4 LSTM: 250 MiB) are
// allocated per call, so that no thread keeps them alive.
inline constexpr size_t backward_reuse_bytes = size_t(64) << 20;

// n elements rounded up to whole 64-byte lines, so that every buffer carved from one block
// starts aligned, as a Buffer of its own would.
template <class T>
size_t whole_lines(Index n) {
  constexpr size_t per_line = 64 / sizeof(T);
  return (static_cast<size_t>(n) + per_line - 1) / per_line * per_line;
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
  // each step started from, at the step's input time t); then the shards' step buffers.
  const auto shards = split_rows(B, num_threads, Tn * GH * (D + Ho));
  const Index per_row = 3 * S + Ho + SC;  // init, dS, dprev (each state), dy_last, scratch
  const size_t n_dG = whole_lines<T>(M * GH), n_dA = whole_lines<T>(M * DA),
               n_H = whole_lines<T>(M * Ho),
               total = n_dG + n_dA + n_H + whole_lines<T>(B * per_row);
  thread_local Buffer<T> kept;
  Buffer<T> local;
  Buffer<T>& block = total * sizeof(T) <= backward_reuse_bytes ? kept : local;
  block.reserve_resize(total);
  T* const dG_all = block.data();
  T* const dA_all = dG_all + n_dG;
  T* const H_prev_all = dA_all + n_dA;
  T* const shard_mem = H_prev_all + n_H;

  parallel_for(static_cast<Index>(shards.size()) - 1, num_threads, [&](Index s_idx) {
    const Index r0 = shards[s_idx], n = shards[s_idx + 1] - r0;
    if (n == 0) return;
    T* mem = shard_mem + r0 * per_row;
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
      view(H_prev_all + off * Ho, n, Ho, Tn * Ho) = cview(prev[0].data, n, Ho, prev[0].stride);

      if (f.return_sequences) dyl += cview(io.dy + (r0 * Tn + s) * Ho, n, Ho, Tn * Ho);
      auto used = [&](Index i) { return !f.mask || f.mask[(r0 + i) * Tn + t]; };
      for (Index i = 0; i < n; ++i) {
        if (!used(i)) continue;
        view(dS[0] + i * Ho, 1, Ho, Ho) += dyl.row(i);
        dyl.row(i).setZero();
      }

      const auto gates = cview(f.ws_gates + off * GH, n, GH, Tn * GH);
      const auto aux = cview(f.ws_aux + off * A, n, A, Tn * A);
      auto dG = view(dG_all + off * GH, n, GH, Tn * GH);
      auto dA = view(dA_all + off * DA, n, DA, Tn * DA);
      cell.gate_grads(n, gates, prev, next, aux, dS_c, dG, dA, dprev, scratch);
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
  auto at_b = [&](const auto& Am, const auto& Bm, auto&& C) {
    at_b_packed<T, 1>({{{Am.data(), Am.outerStride(), Am.cols(), C.data(), C.outerStride()}}},
                      Bm.data(), Bm.outerStride(), Bm.rows(), Bm.cols(), num_threads);
  };
  const auto X = cview(f.x, M, D, D);
  const auto dG = cview(dG_all, M, GH, GH);
  const auto H_prev = cview(H_prev_all, M, Ho, Ho);
  bool own = false;  // the cell computes dU itself (cells.hpp: GRU, the LSTM variants)
  if constexpr (Cell::own_recurrent_grads) own = !cell.plain_recurrent_grads();
  if (own) {
    at_b(X, dG, view(io.dW, D, GH, GH));  // dW = X^T dG
    if constexpr (Cell::own_recurrent_grads)
      cell.recurrent_grads(H_prev, cview(f.ws_aux, M, A, A), dG, cview(dA_all, M, DA, DA),
                           view(io.dU, Ho, GH, GH), io, at_b);
  } else {  // dW = X^T dG and dU = H_prev^T dG over one packing of dG
    at_b_packed<T, 2>({{{f.x, D, D, io.dW, GH}, {H_prev_all, Ho, Ho, io.dU, GH}}}, dG_all, GH, M,
                      GH, num_threads);
  }
  if (io.db) column_sums(dG_all, M, GH, GH, io.db);

  // dX = dG W^T, W^T packed once per call (into the thread's kept buffer when small), the
  // threads splitting dX's rows.
  thread_local PackedMatrix<T> Wt_kept;
  PackedMatrix<T> Wt_local;
  PackedMatrix<T>& Wt = static_cast<size_t>(D * GH) * sizeof(T) <= reuse_bytes ? Wt_kept : Wt_local;
  pack_parallel(Wt, f.W, GH, D, 1, GH, num_threads);
  const auto rows = split_output_rows<T>(M, num_threads, GH * D);
  parallel_for(static_cast<Index>(rows.size()) - 1, num_threads, [&](Index s) {
    packed_gemm(dG_all + rows[s] * GH, GH, rows[s + 1] - rows[s], Wt.all(), io.dx + rows[s] * D, D,
                detail::Start::Zero);
  });
}

}  // namespace rnncore
