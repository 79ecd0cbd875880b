// Dense on the last axis:  y = act(x W + b),  x (N, D), W (D, U) (Keras layout), b (U).
// Used per timestep on sequences: a C-order (B, T, D) array is N = B*T rows.
#pragma once

#include "rnncore/activations.hpp"
#include "rnncore/lowp.hpp"
#include "rnncore/packed_gemm.hpp"
#include "rnncore/scan.hpp"
#include "rnncore/threads.hpp"
#include "rnncore/types.hpp"

namespace rnncore {

// With W packed (PackedWeights: float, or bf16/int8 for float32 inference). The product
// runs on the packed kernel (packed_gemm.hpp), whose result for a row is the same FMA chain
// whatever the other rows of the call: a sample's output does not depend on the batch it is
// in (a pool of streams batches them; a model stepped one timestep at a time gives its
// whole-sequence numbers), nor on the thread count.
template <class T>
void dense_forward(const T* x, Index N, const PackedWeights<T>& W, const T* b, Activation act, T* y,
                   int threads) {
  const Index D = W.lowp() ? W.q.K : W.f.K, U = W.lowp() ? W.q.N : W.f.N;
  const auto shards = split_rows(N, threads, D * U);
  parallel_for(static_cast<Index>(shards.size()) - 1, threads, [&](Index s) {
    const Index r0 = shards[s], n = shards[s + 1] - r0;
    packed_gemm(x + r0 * D, D, n, W, y + r0 * U, U, b ? detail::Start::Bias : detail::Start::Zero,
                b);  // x W + b
    activate(act, view(y + r0 * U, n, U, U));
  });
}

// The same from the float kernel W (D, U): packed once per call, in a buffer the thread
// keeps for its next call when small (reuse_bytes, scan.hpp).
template <class T>
void dense_forward(const T* x, Index N, Index D, const T* W, Index U, const T* b, Activation act,
                   T* y, int threads) {
  thread_local PackedWeights<T> reused;
  PackedWeights<T> local;
  PackedWeights<T>& P = static_cast<size_t>(D * U) * sizeof(T) <= reuse_bytes ? reused : local;
  P.pack(W, D, U, U);
  dense_forward(x, N, P, b, act, y, threads);
}

// Given dL/dy, with y the forward output:
//   dz = dy * act'(y)        dx = dz W^T        dW = x^T dz        db = sum_rows dz
// dz is written over dy's copy `dz_buf` (N, U). Row shards for dz and dx, column shards for
// dW and db, so no two threads write the same memory.
template <class T>
void dense_backward(const T* x, Index N, Index D, const T* W, Index U, Activation act, const T* y,
                    T* dz_buf, T* dx, T* dW, T* db, int threads) {
  auto rows = split_rows(N, threads, D * U);
  parallel_for(static_cast<Index>(rows.size()) - 1, threads, [&](Index s) {
    const Index r0 = rows[s], n = rows[s + 1] - r0;
    auto dz = view(dz_buf + r0 * U, n, U, U);
    activate_backward(act, dz, cview(y + r0 * U, n, U, U));
    view(dx + r0 * D, n, D, D).noalias() = dz * cview(W, D, U, U).transpose();
  });
  auto cols = split_rows(U, threads, N * D);
  parallel_for(static_cast<Index>(cols.size()) - 1, threads, [&](Index s) {
    const Index c0 = cols[s], m = cols[s + 1] - c0;
    const auto dz = cview(dz_buf + c0, N, m, U);
    view(dW + c0, D, m, U).noalias() = cview(x, N, D, D).transpose() * dz;
    if (db) view(db + c0, 1, m, m) = dz.colwise().sum();
  });
}

}  // namespace rnncore
