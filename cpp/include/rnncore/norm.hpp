// LayerNormalization at inference over the last axis: x (N, D) as N rows of D features, each
// row normalised by its own statistics (Keras's LayerNormalization(axis=-1)):
//
//   mean_r = sum_k x[r, k] / D
//   var_r  = sum_k (x[r, k] - mean_r)^2 / D          (biased; a second pass over the row)
//   s_r    = 1 / sqrt(var_r + epsilon)
//   y[r, k] = (x[r, k] - mean_r) * s_r * gamma[k] + beta[k]
//
// and with Keras's deprecated rms_scaling=True, y[r, k] = x[r, k] * s_r * gamma[k]: the row is
// not centred but s_r is still the variance's, as Keras computes it (no beta). gamma and beta
// may be null (scale=False / center=False: 1 and 0).
//
// The statistics and the affine map are computed in double for float32 too, and y is rounded
// to T once: the float32 result is the exact one correctly rounded up to the few roundings of
// double, within a few float32 ulp of NumPy's float32 path (which rounds every step), and the
// float64 result is within a few ulp of NumPy's. The two passes (not sum of squares minus the
// squared mean) keep the variance accurate when the mean is large. Each row is computed by one
// thread from its own values, so the result does not depend on the thread count or on how the
// rows are batched (a stream's step gives the bits of the whole sequence's call).
#pragma once

#include <algorithm>
#include <cmath>

#include "rnncore/threads.hpp"
#include "rnncore/types.hpp"

namespace rnncore {

namespace detail {

// sum_k f(p[k]) in double over k < n, in 8 partial sums (independent chains the compiler can
// keep in vector lanes) added pairwise at the end.
template <class T, class F>
double row_sum(const T* p, Index n, F f) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  Index k = 0;
  for (; k + 8 <= n; k += 8)
    for (int j = 0; j < 8; ++j) acc[j] += f(static_cast<double>(p[k + j]));
  for (int j = 0; k < n; ++k, ++j) acc[j] += f(static_cast<double>(p[k]));
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <class T>
void layer_norm_row(const T* x, Index D, const T* gamma, const T* beta, double epsilon,
                    bool rms_scaling, T* y) {
  const double mean = row_sum(x, D, [](double v) { return v; }) / static_cast<double>(D);
  const double var =
      row_sum(x, D, [mean](double v) { return (v - mean) * (v - mean); }) / static_cast<double>(D);
  const double s = 1.0 / std::sqrt(var + epsilon);
  const double shift = rms_scaling ? 0.0 : mean;  // rms_scaling: x itself, not x - mean
  for (Index k = 0; k < D; ++k) {
    double v = (static_cast<double>(x[k]) - shift) * s;
    if (gamma) v *= static_cast<double>(gamma[k]);
    if (beta) v += static_cast<double>(beta[k]);
    y[k] = static_cast<T>(v);
  }
}

}  // namespace detail

// y (N, D) from x (N, D); gamma, beta (D) or null. y must not overlap x.
template <class T>
void layer_norm_forward(const T* x, Index N, Index D, const T* gamma, const T* beta, double epsilon,
                        bool rms_scaling, T* y, int threads) {
  if (D <= 0) return;  // no features: no outputs
  const auto shards = split_rows(N, threads, 8 * D);
  parallel_for(static_cast<Index>(shards.size()) - 1, threads, [&](Index s) {
    for (Index r = shards[s]; r < shards[s + 1]; ++r)
      detail::layer_norm_row(x + r * D, D, gamma, beta, epsilon, rms_scaling, y + r * D);
  });
}

}  // namespace rnncore
