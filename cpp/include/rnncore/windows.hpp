// Window ops over the time axis of channels_last sequences x (B, T, C): Conv1D and 1-D
// pooling, at inference. Each sample is padded once into a per-thread buffer xp (B, Tp, C)
// (`left` steps before, `right` after: causal, same or valid, as Keras pads), and output step
// t reads input steps t*stride + j*dilation of xp for the taps j < k.
//
// Conv1D, without unfolding the windows (no (B*To, k*C) copy):
//   y[b, t, f] = act(bias[f] + sum_j sum_c xp[b, t*stride + j*dilation, c] K[j, c, f])
// as one product per tap and group (packed_gemm.hpp) on rows stride*C apart, each tap's
// partial sums continuing the previous tap's in y (Start::C). A row's output is therefore the
// one FMA chain over (j, c) in order that the product of the unfolded windows with the
// (k*C, F) kernel computes, bit for bit. Groups: channels [i*Cg, (i+1)*Cg) go to filters
// [i*Fg, (i+1)*Fg) through kernel[:, :, i*Fg:(i+1)*Fg] (Keras's layout (k, Cg, F)).
//
// Pooling, over the real steps of each window only (TensorFlow's and JAX's rule for
// padding='same'): max — the first largest value, NaN if any value is NaN; average — the sum
// in step order divided by the count of real steps.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "rnncore/activations.hpp"
#include "rnncore/lowp.hpp"
#include "rnncore/packed_gemm.hpp"
#include "rnncore/scan.hpp"
#include "rnncore/threads.hpp"
#include "rnncore/types.hpp"

namespace rnncore {

struct Window {
  Index size = 1, stride = 1, dilation = 1, left = 0, right = 0;

  Index padded(Index Tn) const { return left + Tn + right; }
  // Output steps: the windows that fit in the padded sequence, stride apart.
  Index steps(Index Tn) const {
    const Index span = dilation * (size - 1) + 1, Tp = padded(Tn);
    return Tp < span ? 0 : (Tp - span) / stride + 1;
  }
};

namespace detail {

// Sample b of x (T, C), padded with zeros into xp (Tp, C).
template <class T>
void pad_sample(const T* x, Index Tn, Index C, const Window& w, T* xp) {
  std::fill_n(xp, w.left * C, T(0));
  std::copy_n(x, Tn * C, xp + w.left * C);
  std::fill_n(xp + (w.left + Tn) * C, w.right * C, T(0));
}

}  // namespace detail

// y (B, To, F) from x (B, T, C) and kernel (k, C / groups, F).
template <class T>
void conv1d_forward(const T* x, Index B, Index Tn, Index C, const T* kernel, Index F, Index groups,
                    const T* bias, const Window& w, Activation act, T* y, int threads) {
  const Index k = w.size, Cg = C / groups, Fg = F / groups, To = w.steps(Tn), Tp = w.padded(Tn);
  const bool pad = w.left || w.right;
  // Each (tap, group) kernel block packed once per call, in buffers the calling thread
  // keeps. The workers reach them through `taps`, a plain reference: a thread_local named
  // inside the lambda would be each worker's own (empty) copy.
  thread_local std::vector<PackedWeights<T>> taps_kept;
  std::vector<PackedWeights<T>>& taps = taps_kept;
  if (taps.size() < static_cast<size_t>(k * groups)) taps.resize(static_cast<size_t>(k * groups));
  for (Index j = 0; j < k; ++j)
    for (Index i = 0; i < groups; ++i)
      taps[static_cast<size_t>(j * groups + i)].pack(kernel + j * Cg * F + i * Fg, Cg, Fg, F);
  const auto shards = split_rows(B, threads, To * k * C * Fg);
  // Kept for the thread's next call when small (scan.hpp: reuse_bytes), else per call.
  const size_t padded_size = pad ? static_cast<size_t>(B * Tp * C) : 0;
  thread_local Buffer<T> padded_kept;
  Buffer<T> padded_local;
  Buffer<T>& padded = padded_size * sizeof(T) <= reuse_bytes ? padded_kept : padded_local;
  padded.reserve_resize(padded_size);
  T* const xp_all = padded.data();
  parallel_for(static_cast<Index>(shards.size()) - 1, threads, [&](Index s) {
    for (Index b = shards[s]; b < shards[s + 1]; ++b) {
      const T* xb = x + b * Tn * C;
      if (pad) {
        detail::pad_sample(xb, Tn, C, w, xp_all + b * Tp * C);
        xb = xp_all + b * Tp * C;
      }
      T* yb = y + b * To * F;
      for (Index j = 0; j < k; ++j)
        for (Index i = 0; i < groups; ++i) {
          const auto start = j > 0  ? detail::Start::C
                             : bias ? detail::Start::Bias
                                    : detail::Start::Zero;
          packed_gemm(xb + j * w.dilation * C + i * Cg, w.stride * C, To,
                      taps[static_cast<size_t>(j * groups + i)], yb + i * Fg, F, start,
                      bias ? bias + i * Fg : nullptr);
        }
      activate(act, view(yb, To, F, F));
    }
  });
}

// y (B, To, C): the max (average = false) or the average of each window's real steps.
template <class T>
void pool1d_forward(const T* x, Index B, Index Tn, Index C, const Window& w, bool average, T* y,
                    int threads) {
  const Index To = w.steps(Tn);
  const auto shards = split_rows(B, threads, To * w.size * C);
  parallel_for(static_cast<Index>(shards.size()) - 1, threads, [&](Index s) {
    for (Index b = shards[s]; b < shards[s + 1]; ++b) {
      const T* xb = x + b * Tn * C;
      for (Index t = 0; t < To; ++t) {
        T* out = y + (b * To + t) * C;
        // The window's taps j whose step t*stride + j*dilation - left is a real step.
        Index first = -1, count = 0;
        for (Index j = 0; j < w.size; ++j) {
          const Index step = t * w.stride + j * w.dilation - w.left;
          if (step < 0 || step >= Tn) continue;
          const T* in = xb + step * C;
          if (first < 0) {
            std::copy_n(in, C, out);
            first = j;
          } else if (average) {
            for (Index c = 0; c < C; ++c) out[c] += in[c];
          } else {
            // the first largest value; a NaN, once met, stays (NumPy's argmax takes it)
            for (Index c = 0; c < C; ++c)
              out[c] = (in[c] > out[c] || in[c] != in[c]) ? in[c] : out[c];
          }
          ++count;
        }
        if (average) {
          const T n = static_cast<T>(count);
          for (Index c = 0; c < C; ++c) out[c] /= n;
        }
      }
    }
  });
}

}  // namespace rnncore
