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
      // Shift by the row maximum so that exp never overflows.
      for (Index r = 0; r < z.rows(); ++r) {
        auto row = z.row(r).array();
        row = (row - row.maxCoeff()).exp();
        row /= row.sum();
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

}  // namespace rnncore
