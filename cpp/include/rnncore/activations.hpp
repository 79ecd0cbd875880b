// Activations, applied to a whole gate block at once.
//
// The kind is chosen at run time but dispatched once per block (one switch per gate per
// step), never per element: each branch is a vectorised Eigen array expression. This keeps
// SIMD code without instantiating every cell for all 5 x 5 activation pairs.
//
// Definitions follow Keras 3:
//   tanh(z), sigmoid(z) = 1 / (1 + e^-z), relu(z) = max(z, 0), linear(z) = z,
//   hard_sigmoid(z) = relu6(z + 3) / 6 = clip(z / 6 + 1/2, 0, 1),
//   softmax(z)_j = e^{z_j} / sum_k e^{z_k} over each row (a block's rows are samples).
// NaN propagates through every one of them, as in the NumPy reference.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

#include "rnncore/types.hpp"

namespace rnncore {

enum class Activation { Tanh, Sigmoid, Relu, HardSigmoid, Linear, Softmax };

// `argument` names the parameter in the error, e.g. "recurrent_activation".
inline Activation activation_from_name(const std::string& name,
                                       const char* argument = "activation") {
  if (name == "tanh") return Activation::Tanh;
  if (name == "sigmoid") return Activation::Sigmoid;
  if (name == "relu") return Activation::Relu;
  if (name == "hard_sigmoid") return Activation::HardSigmoid;
  if (name == "linear") return Activation::Linear;
  if (name == "softmax") return Activation::Softmax;
  throw InvalidArgument(std::string(argument) + ": unknown activation '" + name +
                        "', expected one of tanh, sigmoid, relu, hard_sigmoid, linear, softmax");
}

// z <- act(z), in place on any Eigen block.
template <class Block>
void activate(Activation act, Block&& z) {
  using T = typename std::decay_t<Block>::Scalar;
  auto a = z.array();
  switch (act) {
    case Activation::Tanh:
      a = a.tanh();
      break;
    case Activation::Sigmoid:
      // float: Eigen's logistic, whose scalar and SIMD paths agree, with the subnormal
      // results it gives below z ~ -88 flushed to the exact 0 (as sigmoid(-inf) must be).
      // double: Eigen's scalar and SIMD exp differ in the last bit, which made results
      // depend on buffer alignment; 1/2 (1 + tanh(z/2)) is exact to rounding, saturates
      // cleanly and runs one scalar path only.
      if constexpr (std::is_same_v<T, float>) {
        a = a.logistic();
        a = (a < std::numeric_limits<T>::min()).select(T(0), a);
      } else {
        a = T(0.5) * ((a * T(0.5)).tanh() + T(1));
      }
      break;
    case Activation::Relu:
      // select keeps NaN (NaN < 0 is false), unlike a plain max.
      a = (a < T(0)).select(T(0), a);
      break;
    case Activation::HardSigmoid:
      a = a * T(1.0 / 6.0) + T(0.5);
      a = (a < T(0)).select(T(0), a);
      a = (a > T(1)).select(T(1), a);
      break;
    case Activation::Linear:
      break;
    case Activation::Softmax:
      // Shift by the row maximum so that exp never overflows. One scalar pass per row, in
      // column order: Eigen's packet exp and sum differ from their scalar forms in the last
      // bit and take a row's unaligned head and tail apart from its packets, so a row's
      // result depended on its address, i.e. on its place in the batch (seen with SSE2).
      for (Index r = 0; r < z.rows(); ++r) {
        T top = z(r, 0);
        for (Index j = 1; j < z.cols(); ++j) top = std::max(top, z(r, j));
        T sum = T(0);
        for (Index j = 0; j < z.cols(); ++j) {
          z(r, j) = std::exp(z(r, j) - top);
          sum += z(r, j);
        }
        for (Index j = 0; j < z.cols(); ++j) z(r, j) /= sum;
      }
      break;
  }
}

// dz <- dz * act'(z), with act' written through the output y = act(z), which is what the
// forward pass keeps:
//   tanh' = 1 - y^2, sigmoid' = y (1 - y), relu' = [y > 0],
//   hard_sigmoid' = [0 < y < 1] / 6, linear' = 1,
//   softmax: dz_j = y_j (dy_j - sum_k dy_k y_k) per row (a Jacobian, not a diagonal).
template <class DBlock, class YBlock>
void activate_backward(Activation act, DBlock&& dz, const YBlock& y_) {
  using T = typename std::decay_t<DBlock>::Scalar;
  auto d = dz.array();
  auto y = y_.array();
  switch (act) {
    case Activation::Tanh:
      d *= T(1) - y.square();
      break;
    case Activation::Sigmoid:
      d *= y * (T(1) - y);
      break;
    case Activation::Relu:
      d = (y > T(0)).select(d, T(0));
      break;
    case Activation::HardSigmoid:
      d = (y > T(0) && y < T(1)).select(d * T(1.0 / 6.0), T(0));
      break;
    case Activation::Linear:
      break;
    case Activation::Softmax:
      for (Index r = 0; r < dz.rows(); ++r) {
        const T dot = (dz.row(r).array() * y_.row(r).array()).sum();
        dz.row(r).array() = y_.row(r).array() * (dz.row(r).array() - dot);
      }
      break;
  }
}

// ---------------------------------------------------------------------------------------
// Fused passes (float): the cells' element-wise work done in one pass per row, a SIMD
// vector of units at a time, with the activations as functor types chosen once per call.
// Each functor computes exactly what activate / activate_backward compute above for float,
// with the same Eigen packet math (ptanh, Eigen's logistic), so that both paths agree.

namespace fused {

using Eigen::internal::pcmp_lt;
using Eigen::internal::pmul;
using Eigen::internal::pselect;
using Eigen::internal::pset1;
using Eigen::internal::psub;
using Packet = Eigen::internal::packet_traits<float>::type;  // the module's vector width
inline constexpr Index lanes = Eigen::internal::packet_traits<float>::size;

// y = act(z)  and  d * act'(z) written through y (see activate_backward).
struct Tanh {
  static Packet f(const Packet& z) { return Eigen::internal::ptanh(z); }
  static Packet df(const Packet& d, const Packet& y) {
    return pmul(d, psub(pset1<Packet>(1.f), pmul(y, y)));
  }
};
struct Sigmoid {
  static Packet f(const Packet& z) {
    const Packet y = Eigen::internal::scalar_logistic_op<float>().packetOp(z);
    const Packet zero = pset1<Packet>(0.f);
    return pselect(pcmp_lt(y, pset1<Packet>(std::numeric_limits<float>::min())), zero, y);
  }
  static Packet df(const Packet& d, const Packet& y) {
    return pmul(d, pmul(y, psub(pset1<Packet>(1.f), y)));
  }
};
struct Relu {
  static Packet f(const Packet& z) {
    const Packet zero = pset1<Packet>(0.f);
    return pselect(pcmp_lt(z, zero), zero, z);
  }
  static Packet df(const Packet& d, const Packet& y) {
    const Packet zero = pset1<Packet>(0.f);
    return pselect(pcmp_lt(zero, y), d, zero);
  }
};
struct HardSigmoid {
  static Packet f(const Packet& z) {
    const Packet zero = pset1<Packet>(0.f), one = pset1<Packet>(1.f);
    Packet a = Eigen::internal::padd(pmul(z, pset1<Packet>(float(1.0 / 6.0))), pset1<Packet>(0.5f));
    a = pselect(pcmp_lt(a, zero), zero, a);
    return pselect(pcmp_lt(one, a), one, a);
  }
  static Packet df(const Packet& d, const Packet& y) {
    const Packet zero = pset1<Packet>(0.f), one = pset1<Packet>(1.f);
    const Packet inside = Eigen::internal::pand(pcmp_lt(zero, y), pcmp_lt(y, one));
    return pselect(inside, pmul(d, pset1<Packet>(float(1.0 / 6.0))), zero);
  }
};
struct Linear {
  static Packet f(const Packet& z) { return z; }
  static Packet df(const Packet& d, const Packet&) { return d; }
};

// Calls fn(Functor{}) for an element-wise activation and returns true; false for softmax,
// which couples a row's units and stays on the block path.
template <class Fn>
bool with_activation(Activation act, Fn&& fn) {
  switch (act) {
    case Activation::Tanh:
      fn(Tanh{});
      return true;
    case Activation::Sigmoid:
      fn(Sigmoid{});
      return true;
    case Activation::Relu:
      fn(Relu{});
      return true;
    case Activation::HardSigmoid:
      fn(HardSigmoid{});
      return true;
    case Activation::Linear:
      fn(Linear{});
      return true;
    case Activation::Softmax:
      return false;
  }
  return false;
}

// Units [j, j + lanes) of a row: plain unaligned loads and stores.
struct Full {
  Index j;
  Packet load(const float* row) const { return Eigen::internal::ploadu<Packet>(row + j); }
  void store(float* row, const Packet& v) const { Eigen::internal::pstoreu(row + j, v); }
};
// The last n < lanes units of a row, through a zero-padded vector: every unit takes the same
// vector code whatever its row or its address, so results do not depend on either.
struct Tail {
  Index j, n;
  Packet load(const float* row) const {
    alignas(64) float t[lanes] = {};
    std::copy_n(row + j, n, t);
    return Eigen::internal::pload<Packet>(t);
  }
  void store(float* row, const Packet& v) const {
    alignas(64) float t[lanes];
    Eigen::internal::pstore(t, v);
    std::copy_n(t, n, row + j);
  }
};

// body(cols) for each vector of units of a row of H: cols.load(p) / cols.store(p, v) read
// and write units of any row p that is laid out like the units (a gate's slice, a state).
template <class Body>
void over_units(Index H, Body&& body) {
  Index j = 0;
  for (; j + lanes <= H; j += lanes) body(Full{j});
  if (j < H) body(Tail{j, H - j});
}

}  // namespace fused

}  // namespace rnncore
