// Fused optimizer steps: one call updates every variable of a step, in place.
//
// The rules are Keras 3's, in the operation order of rnncore's NumPy formulas
// (rnncore.reference.apply_gradients), rounding where NumPy rounds: every operation on a
// variable's elements is in its dtype T, except Adam's last line, which NumPy computes in
// float64 (its alpha is a float64 scalar), and the scalars, which the caller computes in
// float64 as NumPy does and which are rounded to T here as NumPy rounds a Python float
// meeting a T array. It is included only by cpp/src/bind_train.cpp, which is compiled with
// -ffp-contract=off (CMakeLists.txt): a * b + c must round twice, as NumPy's separate
// multiply and add do; tests/test_optimizers_fused.py compares the bits. (GCC never turns a
// division or a square root into an approximation without -ffast-math.) Each element's
// update reads only that element, so the result does not depend on how threads split them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "rnncore/threads.hpp"
#include "rnncore/types.hpp"

namespace rnncore {

enum class OptimizerKind { SGD, Adam, RMSprop };

// The scalars of one step, in float64 as the caller computed them. A variable's slots come
// in the optimizer's order: SGD (m if momentum), Adam (m, v, v_hat if amsgrad), RMSprop
// (v, m if momentum, a if centered).
struct OptimizerStep {
  OptimizerKind kind = OptimizerKind::SGD;
  double learning_rate = 0;
  double momentum = 0;  // SGD, RMSprop
  bool nesterov = false;
  double one_minus_beta_1 = 0, one_minus_beta_2 = 0;  // Adam
  double alpha = 0;  // Adam: lr sqrt(1 - beta_2^t) / (1 - beta_1^t)
  bool amsgrad = false;
  double epsilon = 0;                 // Adam, RMSprop
  double rho = 0, one_minus_rho = 0;  // RMSprop
  bool centered = false;
  double clipvalue = 0;  // > 0: g clipped to [-clipvalue, clipvalue]
};

// One variable: its value w, gradient g and slots (n elements each); with has_decay, `decay`
// multiplies w first (decoupled weight decay: 1 - weight_decay lr); with has_clip_scale,
// `clip_scale` multiplies g first (clipping by norm).
template <class T>
struct VariableUpdate {
  T* w = nullptr;
  const T* g = nullptr;
  T* slot[3] = {nullptr, nullptr, nullptr};
  Index n = 0;
  bool has_decay = false, has_clip_scale = false;
  double decay = 1, clip_scale = 1;
};

namespace detail {

// The step's scalars rounded to T once, as NumPy rounds a Python float against a T array.
template <class T>
struct StepScalars {
  T lr, momentum, c1, c2, eps, rho, c_rho, clip_lo, clip_hi;
  double alpha;
  explicit StepScalars(const OptimizerStep& s)
      : lr(static_cast<T>(s.learning_rate)),
        momentum(static_cast<T>(s.momentum)),
        c1(static_cast<T>(s.one_minus_beta_1)),
        c2(static_cast<T>(s.one_minus_beta_2)),
        eps(static_cast<T>(s.epsilon)),
        rho(static_cast<T>(s.rho)),
        c_rho(static_cast<T>(s.one_minus_rho)),
        clip_lo(static_cast<T>(-s.clipvalue)),
        clip_hi(static_cast<T>(s.clipvalue)),
        alpha(s.alpha) {}
};

// The rules over n elements. g and w0 are the clipped gradient and the decayed weight
// (block buffers), w and the slots the variable's own arrays, written in place; no two of
// these overlap (__restrict), so that each loop vectorises without run-time alias checks.

//   w <- w - lr g
template <class T>
void sgd(Index n, const StepScalars<T>& c, const T* __restrict g, const T* __restrict w0,
         T* __restrict w) {
  for (Index i = 0; i < n; ++i) w[i] = w0[i] - c.lr * g[i];
}

//   m <- momentum m - lr g;   w <- w + m    (Nesterov: w <- w + (momentum m - lr g))
template <bool Nesterov, class T>
void sgd_momentum(Index n, const StepScalars<T>& c, const T* __restrict g, const T* __restrict w0,
                  T* __restrict w, T* __restrict m) {
  for (Index i = 0; i < n; ++i) {
    const T m1 = c.momentum * m[i] - c.lr * g[i];
    m[i] = m1;
    w[i] = Nesterov ? w0[i] + (c.momentum * m1 - c.lr * g[i]) : w0[i] + m1;
  }
}

//   m <- m + (g - m)(1 - beta_1);   v <- v + (g^2 - v)(1 - beta_2)
//   (AMSGrad: v_hat <- max(v_hat, v), used as v)
//   w <- w - (m alpha) / (sqrt(v) + epsilon)         (in float64, then rounded to T)
template <bool AMSGrad, class T>
void adam(Index n, const StepScalars<T>& c, const T* __restrict g, const T* __restrict w0,
          T* __restrict w, T* __restrict m, T* __restrict v, T* __restrict v_hat) {
  for (Index i = 0; i < n; ++i) {
    const T m1 = m[i] + (g[i] - m[i]) * c.c1;
    T v1 = v[i] + (g[i] * g[i] - v[i]) * c.c2;
    m[i] = m1;
    v[i] = v1;
    if (AMSGrad) {
      v1 = v_hat[i] < v1 ? v1 : v_hat[i];  // np.maximum of finite values
      v_hat[i] = v1;
    }
    const T denominator = std::sqrt(v1) + c.eps;
    w[i] = static_cast<T>(static_cast<double>(w0[i]) -
                          (static_cast<double>(m1) * c.alpha) / static_cast<double>(denominator));
  }
}

//   v <- rho v + ((1 - rho) g) g
//   (centered: a <- rho a + (1 - rho) g;  denominator = (v - a a) + epsilon)
//   denominator = v + epsilon;   increment = (lr g) / sqrt(denominator)
//   w <- w - increment     (momentum: m <- momentum m + increment;  w <- w - m)
template <bool Centered, bool Momentum, class T>
void rmsprop(Index n, const StepScalars<T>& c, const T* __restrict g, const T* __restrict w0,
             T* __restrict w, T* __restrict v, T* __restrict m, T* __restrict a) {
  for (Index i = 0; i < n; ++i) {
    const T v1 = c.rho * v[i] + (c.c_rho * g[i]) * g[i];
    v[i] = v1;
    T denominator = v1 + c.eps;
    if (Centered) {
      const T a1 = c.rho * a[i] + c.c_rho * g[i];
      a[i] = a1;
      denominator = (v1 - a1 * a1) + c.eps;
    }
    const T increment = (c.lr * g[i]) / std::sqrt(denominator);
    if (Momentum) {
      const T m1 = c.momentum * m[i] + increment;
      m[i] = m1;
      w[i] = w0[i] - m1;
    } else {
      w[i] = w0[i] - increment;
    }
  }
}

// Elements [i0, i1) of one variable, a block at a time: the clipped gradient and the decayed
// weight into buffers first (so a gradient that is the weight's own array is read before it
// is written), then the rule.
template <class T>
void update_range(const OptimizerStep& s, const StepScalars<T>& c, const VariableUpdate<T>& u,
                  Index i0, Index i1) {
  constexpr Index block = 256;
  alignas(64) T g[block], w0[block];
  const T decay = static_cast<T>(u.decay), scale = static_cast<T>(u.clip_scale);
  for (Index b = i0; b < i1; b += block) {
    const Index n = std::min(block, i1 - b);
    //   g <- g scale  (clipping by norm);   g <- min(max(g, -clipvalue), clipvalue)
    std::copy_n(u.g + b, n, g);
    if (u.has_clip_scale)
      for (Index i = 0; i < n; ++i) g[i] = g[i] * scale;
    if (s.clipvalue > 0)
      for (Index i = 0; i < n; ++i) {
        const T low = g[i] < c.clip_lo ? c.clip_lo : g[i];  // np.clip of finite values
        g[i] = c.clip_hi < low ? c.clip_hi : low;
      }
    //   w <- w (1 - weight_decay lr)
    T* w = u.w + b;
    if (u.has_decay)
      for (Index i = 0; i < n; ++i) w0[i] = w[i] * decay;
    else
      std::copy_n(w, n, w0);
    T* s0 = u.slot[0] ? u.slot[0] + b : nullptr;
    T* s1 = u.slot[1] ? u.slot[1] + b : nullptr;
    T* s2 = u.slot[2] ? u.slot[2] + b : nullptr;
    switch (s.kind) {
      case OptimizerKind::SGD:
        if (!s0)
          sgd(n, c, g, w0, w);
        else if (s.nesterov)
          sgd_momentum<true>(n, c, g, w0, w, s0);
        else
          sgd_momentum<false>(n, c, g, w0, w, s0);
        break;
      case OptimizerKind::Adam:
        if (s.amsgrad)
          adam<true>(n, c, g, w0, w, s0, s1, s2);
        else
          adam<false>(n, c, g, w0, w, s0, s1, s2);
        break;
      case OptimizerKind::RMSprop: {
        // slots: v, then m (momentum > 0), then a (centered)
        const bool momentum = s.momentum > 0;
        T* a = s.centered ? (momentum ? s2 : s1) : nullptr;
        T* const none = nullptr;
        if (s.centered && momentum)
          rmsprop<true, true>(n, c, g, w0, w, s0, s1, a);
        else if (s.centered)
          rmsprop<true, false>(n, c, g, w0, w, s0, none, a);
        else if (momentum)
          rmsprop<false, true>(n, c, g, w0, w, s0, s1, none);
        else
          rmsprop<false, false>(n, c, g, w0, w, s0, none, none);
        break;
      }
    }
  }
}

// Work items: (variable, first element, last element), chunks of at most `chunk` elements.
struct Chunk {
  Index var, i0, i1;
};

inline std::vector<Chunk> chunks_of(const std::vector<Index>& sizes, Index chunk) {
  std::vector<Chunk> out;
  for (Index k = 0; k < static_cast<Index>(sizes.size()); ++k)
    for (Index i = 0; i < sizes[k]; i += chunk)
      out.push_back({k, i, std::min(sizes[k], i + chunk)});
  return out;
}

// Threads worth using for `elements` elements of element-wise work.
inline int threads_for(Index elements, int threads) {
  constexpr Index min_per_thread = Index(1) << 15;
  return static_cast<int>(std::max<Index>(1, std::min<Index>(threads, elements / min_per_thread)));
}

constexpr Index optimizer_chunk = Index(1) << 14;

}  // namespace detail

// The first variable (in order) whose gradient holds a NaN or an infinity, or -1.
template <class T>
Index first_non_finite(const std::vector<VariableUpdate<T>>& vars, int threads) {
  std::vector<Index> sizes;
  Index total = 0;
  for (const auto& u : vars) sizes.push_back(u.n), total += u.n;
  const auto chunks = detail::chunks_of(sizes, detail::optimizer_chunk);
  std::vector<char> bad(chunks.size(), 0);
  parallel_for(static_cast<Index>(chunks.size()), detail::threads_for(total, threads),
               [&](Index k) {
                 const auto& ch = chunks[k];
                 const T* g = vars[ch.var].g;
                 // NaN and the infinities are the values whose exponent bits are all ones (an
                 // integer test, which vectorises where a floating-point reduction would not)
                 using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
                 constexpr U exponent = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
                 U non_finite = 0;
                 for (Index i = ch.i0; i < ch.i1; ++i) {
                   U bits;
                   std::memcpy(&bits, g + i, sizeof bits);
                   non_finite |= (bits & exponent) == exponent;
                 }
                 bad[k] = non_finite != 0;
               });
  for (size_t k = 0; k < chunks.size(); ++k)
    if (bad[k]) return chunks[k].var;
  return -1;
}

// One step of every variable, in place. Variables must not overlap one another.
template <class T>
void optimizer_update(const OptimizerStep& step, const std::vector<VariableUpdate<T>>& vars,
                      int threads) {
  const detail::StepScalars<T> scalars(step);
  std::vector<Index> sizes;
  Index total = 0;
  for (const auto& u : vars) sizes.push_back(u.n), total += u.n;
  const auto chunks = detail::chunks_of(sizes, detail::optimizer_chunk);
  parallel_for(static_cast<Index>(chunks.size()), detail::threads_for(total, threads),
               [&](Index k) {
                 const auto& ch = chunks[k];
                 detail::update_range(step, scalars, vars[ch.var], ch.i0, ch.i1);
               });
}

}  // namespace rnncore
