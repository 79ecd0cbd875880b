// Fused optimizer steps: one call updates every variable of a step, in place.
//
// The rules are Keras 3's, in the operation order of rnncore's NumPy formulas
// (rnncore.reference.apply_gradients), rounding where NumPy rounds: every operation on a
// variable's elements is in its dtype T, except Adam's last line, which NumPy computes in
// float64 (its alpha is a float64 scalar), and the scalars, which the caller computes in
// float64 as NumPy does and which are rounded to T here as NumPy rounds a Python float
// meeting a T array. This file is compiled with -ffp-contract=off: a * b + c must round twice,
// as NumPy's separate multiply and add do. Each element's update reads only that element,
// so the result does not depend on how threads split the elements.
#pragma once

#include <algorithm>
#include <cmath>
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

// Elements [i0, i1) of one variable. Each loop body reads element i of every array before
// writing it, so the loops vectorise and a gradient aliasing the weight is still read first.
template <class T>
void update_range(const OptimizerStep& s, const StepScalars<T>& c, const VariableUpdate<T>& u,
                  Index i0, Index i1) {
  T* w = u.w;
  const T* g_in = u.g;
  const bool decay = u.has_decay, scale = u.has_clip_scale, clipv = s.clipvalue > 0;
  const T decay_t = static_cast<T>(u.decay), scale_t = static_cast<T>(u.clip_scale);
  // g as the clipping leaves it:  g scale (norm)  or  min(max(g, -clipvalue), clipvalue)
  auto grad = [&](Index i) {
    T g = g_in[i];
    if (scale) g = g * scale_t;
    if (clipv) g = std::min(std::max(g, c.clip_lo), c.clip_hi);
    return g;
  };
  // w as the weight decay leaves it:  w (1 - weight_decay lr)
  auto weight = [&](Index i) { return decay ? w[i] * decay_t : w[i]; };
  switch (s.kind) {
    case OptimizerKind::SGD: {
      T* m = u.slot[0];
      if (!m) {
        //   w <- w - lr g
        for (Index i = i0; i < i1; ++i) w[i] = weight(i) - c.lr * grad(i);
      } else if (s.nesterov) {
        //   m <- momentum m - lr g;   w <- w + (momentum m - lr g)
        for (Index i = i0; i < i1; ++i) {
          const T g = grad(i), wi = weight(i);
          const T m1 = c.momentum * m[i] - c.lr * g;
          m[i] = m1;
          w[i] = wi + (c.momentum * m1 - c.lr * g);
        }
      } else {
        //   m <- momentum m - lr g;   w <- w + m
        for (Index i = i0; i < i1; ++i) {
          const T g = grad(i), wi = weight(i);
          const T m1 = c.momentum * m[i] - c.lr * g;
          m[i] = m1;
          w[i] = wi + m1;
        }
      }
      break;
    }
    case OptimizerKind::Adam: {
      T *m = u.slot[0], *v = u.slot[1], *v_hat = u.slot[2];
      //   m <- m + (g - m)(1 - beta_1);   v <- v + (g^2 - v)(1 - beta_2)
      //   (amsgrad: v_hat <- max(v_hat, v), used as v)
      //   w <- w - (m alpha) / (sqrt(v) + epsilon)        (in float64, then rounded to T)
      for (Index i = i0; i < i1; ++i) {
        const T g = grad(i), wi = weight(i);
        const T m1 = m[i] + (g - m[i]) * c.c1;
        T v1 = v[i] + (g * g - v[i]) * c.c2;
        m[i] = m1;
        v[i] = v1;
        if (v_hat) v1 = v_hat[i] = std::max(v_hat[i], v1);
        const T denominator = std::sqrt(v1) + c.eps;
        w[i] = static_cast<T>(static_cast<double>(wi) - (static_cast<double>(m1) * c.alpha) /
                                                            static_cast<double>(denominator));
      }
      break;
    }
    case OptimizerKind::RMSprop: {
      T* v = u.slot[0];
      T* m = s.momentum > 0 ? u.slot[1] : nullptr;
      T* a = s.centered ? u.slot[m ? 2 : 1] : nullptr;
      //   v <- rho v + ((1 - rho) g) g
      //   (centered: a <- rho a + (1 - rho) g;  denominator = (v - a a) + epsilon)
      //   denominator = v + epsilon;   increment = (lr g) / sqrt(denominator)
      //   w <- w - increment     (momentum: m <- momentum m + increment;  w <- w - m)
      for (Index i = i0; i < i1; ++i) {
        const T g = grad(i), wi = weight(i);
        const T v1 = c.rho * v[i] + (c.c_rho * g) * g;
        v[i] = v1;
        T denominator;
        if (a) {
          const T a1 = c.rho * a[i] + c.c_rho * g;
          a[i] = a1;
          denominator = (v1 - a1 * a1) + c.eps;
        } else {
          denominator = v1 + c.eps;
        }
        const T increment = (c.lr * g) / std::sqrt(denominator);
        if (m) {
          const T m1 = c.momentum * m[i] + increment;
          m[i] = m1;
          w[i] = wi - m1;
        } else {
          w[i] = wi - increment;
        }
      }
      break;
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
  parallel_for(
      static_cast<Index>(chunks.size()), detail::threads_for(total, threads), [&](Index k) {
        const auto& ch = chunks[k];
        const T* g = vars[ch.var].g;
        bool ok = true;  // x - x is 0 for a finite x, NaN for NaN and infinities (vectorises)
        for (Index i = ch.i0; i < ch.i1; ++i) ok &= (g[i] - g[i]) == T(0);
        bad[k] = !ok;
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
