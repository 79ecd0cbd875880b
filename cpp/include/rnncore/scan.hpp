// The one forward time loop, shared by every cell.
//
// It owns: the input projection (big GEMMs, never per step), the direction (go_backwards),
// masks, initial and final states, the returned sequence or last output, the training
// workspace, and the threads.
//
// Projection: training computes x W + b for all batch*time rows in one GEMM, straight into
// the workspace the backward pass reads. Inference projects one chunk of timesteps at a time
// into a small time-major buffer (see chunk_rows), so memory does not grow with T.
//
// Threads: batch rows are independent, so each thread takes a contiguous shard of the batch
// and runs the whole sequence for it (projection included) with no synchronisation at all.
// Eigen's own threading is off (EIGEN_DONT_PARALLELIZE): rnncore's thread team (threads.hpp) is
// the one owner.
//
// Masks (Keras's rule): at a masked step the carried states are left unchanged and the
// output repeats the previous output; before the first unmasked step that output is zero.
// The last output (return_sequences = false) is the output of the last processed step,
// which is therefore zero for a fully masked row, and for zero timesteps.
//
// go_backwards: steps run over t = T-1 .. 0 and the output sequence is written in
// processing order, as Keras does (output[:, s] belongs to input step T-1-s).
#pragma once

#include <algorithm>
#include <array>
#include <vector>

#include "rnncore/cells.hpp"
#include "rnncore/threads.hpp"
#include "rnncore/types.hpp"

namespace rnncore {

// Up to two carried states (h; or h, c): cells use the first Cell::n_states.
inline constexpr int max_states = 2;

template <class T>
struct ScanIO {
  // Inputs.
  const T* x = nullptr;  // (B, T, D)
  Index B = 0, T_ = 0, D = 0;
  const T* W = nullptr;                // (D, G*H)
  const T* b_in = nullptr;             // (G*H) or nullptr: the bias added to the input projection
  const std::uint8_t* mask = nullptr;  // (B, T), nonzero = step is used; or nullptr
  std::array<const T*, max_states> initial{};  // each (B, width of the state), or nullptr
  bool go_backwards = false;
  bool return_sequences = false;

  // Outputs.
  // H below is the width of h: the cell's units, or an LSTM's projection units.
  T* y = nullptr;                            // (B, T, H) if return_sequences else (B, H)
  std::array<T*, max_states> final_state{};  // each (B, width of the state)

  // Training workspace, all nullptr for inference (then the scan keeps nothing extra).
  // gates: (B, T, G*H) post-activation gates; states[k]: (B, T, width) state k after the step
  // at input time t; aux: (B, T, aux_cols) the cell's extra values.
  T* ws_gates = nullptr;
  std::array<T*, max_states> ws_states{};
  T* ws_aux = nullptr;
};

// Per-shard step buffers, per row: ping-pong states (2 * the states' widths), the last
// outputs (Ho), aux and, in inference, one time chunk of gates and of gathered inputs
// (chunk_cols). Linear in the rows, so shard s starts at r0 * this.
template <class Cell>
Index shard_row_size(const Cell& cell, Index chunk_cols) {
  Index size = cell.state_cols(0) + cell.aux_cols() + chunk_cols;
  for (int k = 0; k < Cell::n_states; ++k) size += 2 * cell.state_cols(k);
  return size;
}

// Inference projects the input one time chunk at a time, about this many rows per GEMM:
// big enough for an efficient product, small enough that the gates of a chunk stay in
// cache-sized buffers instead of a (B, T, G*H) array (210 MB at B=128, T=200, H=512).
inline constexpr Index chunk_rows = 1024;

// Per-thread buffers up to this size are kept for the thread's next call: a fresh
// allocation of a few hundred KiB per call costs page faults (measured at about a third of
// a B=1, T=100, H=128 LSTM forward). Bigger ones are allocated per call, so that no thread
// keeps a large model's buffers alive.
inline constexpr size_t reuse_bytes = size_t(8) << 20;

// A step's rows go to the cell in blocks of this many (see the step loop).
inline constexpr Index step_rows = 24;

// A shard's initial state (n rows from row r0, H wide): the caller's rows of `initial`, or
// zeros where none was given. The forward and the backward scans both start from it.
template <class T>
void initial_rows(T* dst, const T* initial, Index r0, Index n, Index H) {
  auto s0 = view(dst, n, H, H);
  if (initial)
    s0 = cview(initial + r0 * H, n, H, H);
  else
    s0.setZero();
}

template <class Cell, class T>
void forward_scan(const Cell& cell, const ScanIO<T>& io, int num_threads) {
  constexpr int N = Cell::n_states;
  const Index B = io.B, Tn = io.T_, D = io.D, GH = Cell::G * cell.H;
  const Index A = cell.aux_cols(), Ho = cell.state_cols(0);  // Ho: the output's width
  std::array<Index, N> Hs{};                                 // the states' widths
  for (int k = 0; k < N; ++k) Hs[k] = cell.state_cols(k);
  const bool training = io.ws_gates != nullptr;

  const auto shards = split_rows(B, num_threads, /*work_per_row=*/Tn * GH * (D + Ho));
  const Index ns = static_cast<Index>(shards.size()) - 1;
  Index widest = 1;
  for (Index s = 0; s < ns; ++s) widest = std::max(widest, shards[s + 1] - shards[s]);
  // Training keeps all gates (the workspace is the projection); inference a chunk of them.
  const Index Tc =
      training ? Tn : std::clamp<Index>(chunk_rows / widest, 1, std::max<Index>(Tn, 1));
  const Index chunk_cols = training ? 0 : Tc * (GH + D);
  // Reused by the thread's next call when small (see forward() in api.hpp: page faults).
  const Index row_size = shard_row_size(cell, chunk_cols);
  const size_t shard_size = static_cast<size_t>(B * row_size);
  thread_local Buffer<T> reused;
  Buffer<T> local;
  Buffer<T>& shard_mem = shard_size * sizeof(T) <= reuse_bytes ? reused : local;
  shard_mem.reserve_resize(shard_size);

  // Padding (inference). When every row's mask, in processing order, is one run of used
  // steps that either starts every row (trailing padding: a right-padded batch, or a
  // left-padded one going backwards) or ends every row (leading padding: a right-padded
  // batch going backwards, as a Bidirectional's backward layer runs it), a row does no work
  // outside its run: before it the states stay the initial ones and the output is zero,
  // after it the states stay final and the output repeats (Keras's rule for masked steps).
  // Each shard then keeps its rows ordered so that the rows in their run at step s are the
  // first active(s) of its buffers (by decreasing length, or increasing start), and the
  // projection and the step run on those alone. Other masks (holes, padding on both sides)
  // compute every row and keep the states of the masked ones, as does training, whose
  // workspace is in batch order.
  auto time_at = [&](Index s) { return io.go_backwards ? Tn - 1 - s : s; };
  std::vector<Index> first, end;  // per row, its run [first, end) in processing order
  bool trailing = false, leading = false;
  if (io.mask && !training) {
    first.resize(static_cast<size_t>(B)), end.resize(static_cast<size_t>(B));
    trailing = leading = true;
    for (Index b = 0; b < B && (trailing || leading); ++b) {
      const std::uint8_t* m = io.mask + b * Tn;
      Index f = 0;
      while (f < Tn && !m[time_at(f)]) ++f;
      Index e = f;
      while (e < Tn && m[time_at(e)]) ++e;
      for (Index s = e; s < Tn && (trailing || leading); ++s)
        if (m[time_at(s)]) trailing = leading = false;  // a second run: holes
      if (e == f) f = e = 0;                            // no used step: an empty run, at the start
      trailing = trailing && f == 0;
      leading = leading && (e == Tn || e == f);
      first[b] = f, end[b] = e;
    }
    if (leading && !trailing)  // empty runs at the end, where leading rows never start
      for (Index b = 0; b < B; ++b)
        if (first[b] == end[b]) first[b] = end[b] = Tn;
  }
  const bool ragged = trailing || leading;

  parallel_for(ns, num_threads, [&](Index s_idx) {
    const Index r0 = shards[s_idx], n = shards[s_idx + 1] - r0;
    if (n == 0) return;
    // This shard's slice of the per-thread buffers.
    T* mem = shard_mem.data() + r0 * row_size;
    std::array<T*, N> ping{}, pong{};
    for (int k = 0; k < N; ++k) {
      ping[k] = mem;
      pong[k] = mem + n * Hs[k];
      mem += 2 * n * Hs[k];
    }
    T* y_last = mem;  // Keras's "previous output", zero until a step is used
    T* aux_buf = y_last + n * Ho;
    T* chunk_gates = aux_buf + n * A;        // (Tc, rows, G*H), time-major
    T* chunk_x = chunk_gates + Tc * n * GH;  // (Tc, rows, D), time-major
    const auto& W = cell.P->W;               // io.W, packed (float, or bf16/int8 weights)
    const auto start = io.b_in ? detail::Start::Bias : detail::Start::Zero;

    // Buffer row i holds batch row r0 + rows[i]: the batch order, or by decreasing length.
    std::vector<Index> rows(static_cast<size_t>(n));
    for (Index i = 0; i < n; ++i) rows[i] = i;
    // The rows in their run at step s are the first active_at(s): trailing padding orders
    // them by decreasing end (they leave), leading padding by increasing first (they join).
    auto key = [&](Index i) { return trailing ? -end[r0 + rows[i]] : first[r0 + rows[i]]; };
    if (ragged)
      std::stable_sort(rows.begin(), rows.end(), [&](Index a, Index b) {
        return trailing ? end[r0 + a] > end[r0 + b] : first[r0 + a] < first[r0 + b];
      });
    auto active_at = [&](Index s) {
      if (!ragged) return n;
      Index lo = 0, hi = n;  // the first row not in its run at step s (binary search)
      while (lo < hi) {
        const Index mid = (lo + hi) / 2;
        if (trailing ? -key(mid) > s : key(mid) <= s)
          lo = mid + 1;
        else
          hi = mid;
      }
      return lo;
    };
    Index active = leading && !trailing ? 0 : n;

    if (training) {
      // Input projection for all of this shard's n*T rows at once: gates = x W + b_in.
      packed_gemm(io.x + r0 * Tn * D, D, n * Tn, W, io.ws_gates + r0 * Tn * GH, GH, start, io.b_in);
    }

    // Initial states into ping.
    for (int k = 0; k < N; ++k)
      for (Index i = 0; i < n; ++i) {
        T* dst = ping[k] + i * Hs[k];
        if (io.initial[k])
          std::copy_n(io.initial[k] + (r0 + rows[i]) * Hs[k], Hs[k], dst);
        else
          std::fill_n(dst, Hs[k], T(0));
      }
    view(y_last, n, Ho, Ho).setZero();

    States<const T, N> prev;
    for (int k = 0; k < N; ++k) prev[k] = {ping[k], Hs[k]};
    // A row whose run has ended: its states are final (Keras: masked steps keep them).
    auto finish = [&](Index i) {
      for (int k = 0; k < N; ++k)
        std::copy_n(prev[k].data + i * prev[k].stride, Hs[k],
                    io.final_state[k] + (r0 + rows[i]) * Hs[k]);
    };
    // A row joining at step s (leading padding) starts from its initial states, which ping
    // holds; prev is pong every other step.
    auto join = [&](Index i) {
      for (int k = 0; k < N; ++k)
        if (prev[k].data != ping[k])
          std::copy_n(ping[k] + i * Hs[k], Hs[k], const_cast<T*>(prev[k].data) + i * Hs[k]);
    };

    Index nc = n;  // rows of the current chunk's projection (those in their run in it)
    for (Index s = 0; s < Tn; ++s) {
      const Index t = time_at(s);
      const Index was = active;
      active = active_at(s);
      for (Index i = active; i < was; ++i) finish(i);
      for (Index i = was; i < active; ++i) join(i);
      if (!training && s % Tc == 0) {
        // Project the next chunk of steps: gather the rows' inputs time-major, one GEMM.
        const Index len = std::min(Tc, Tn - s);
        nc = trailing ? active : active_at(s + len - 1);
        for (Index j = 0; j < len; ++j)
          for (Index i = 0; i < nc; ++i)
            std::copy_n(io.x + ((r0 + rows[i]) * Tn + time_at(s + j)) * D, D,
                        chunk_x + (j * nc + i) * D);
        packed_gemm(chunk_x, D, len * nc, W, chunk_gates, GH, start, io.b_in);
      }
      States<T, N> next;
      for (int k = 0; k < N; ++k) {
        if (training)
          next[k] = {io.ws_states[k] + (r0 * Tn + t) * Hs[k], Tn * Hs[k]};
        else
          next[k] = {(s % 2 == 0) ? pong[k] : ping[k], Hs[k]};
      }
      auto gates_t = training ? view(io.ws_gates + (r0 * Tn + t) * GH, n, GH, Tn * GH)
                              : view(chunk_gates + (s % Tc) * nc * GH, nc, GH, GH);
      auto aux_t =
          training ? view(io.ws_aux + (r0 * Tn + t) * A, n, A, Tn * A) : view(aux_buf, n, A, A);
      // Rows are independent within a step: take them a block at a time, so that a block's
      // gates (rows x G*H, 1 MiB per step at B=128, H=512 LSTM) are still in L2 when the
      // cell's element-wise passes read them after the product.
      for (Index i0 = 0; i0 < active; i0 += step_rows) {
        const Index m = std::min(step_rows, active - i0);
        States<const T, N> prev_b;
        States<T, N> next_b;
        for (int k = 0; k < N; ++k) {
          prev_b[k] = {prev[k].data + i0 * prev[k].stride, prev[k].stride};
          next_b[k] = {next[k].data + i0 * next[k].stride, next[k].stride};
        }
        cell.step(m,
                  view(gates_t.data() + i0 * gates_t.outerStride(), m, GH, gates_t.outerStride()),
                  prev_b, next_b,
                  view(aux_t.data() + i0 * aux_t.outerStride(), m, A, aux_t.outerStride()));
      }

      // Masked rows: keep the previous states; used rows: the output is the new h.
      for (Index i = 0; i < active; ++i) {
        const bool used = !io.mask || io.mask[(r0 + rows[i]) * Tn + t];
        if (used) {
          std::copy_n(next[0].data + i * next[0].stride, Ho, y_last + i * Ho);
        } else {
          for (int k = 0; k < N; ++k)
            std::copy_n(prev[k].data + i * prev[k].stride, Hs[k],
                        next[k].data + i * next[k].stride);
        }
      }
      if (io.return_sequences)  // ended rows repeat their last output
        for (Index i = 0; i < n; ++i)
          std::copy_n(y_last + i * Ho, Ho, io.y + ((r0 + rows[i]) * Tn + s) * Ho);

      for (int k = 0; k < N; ++k) prev[k] = {next[k].data, next[k].stride};
    }

    for (Index i = active; i < n; ++i) join(i);  // rows that never joined: initial states
    for (Index i = 0; i < (leading && !trailing ? n : active); ++i) finish(i);
    if (!io.return_sequences)
      for (Index i = 0; i < n; ++i) std::copy_n(y_last + i * Ho, Ho, io.y + (r0 + rows[i]) * Ho);
  });
}

}  // namespace rnncore
