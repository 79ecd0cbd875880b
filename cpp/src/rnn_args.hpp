// Arguments of the recurrent bindings (rnn_forward, rnn_backward and the streams): the cell
// spec from its names, and the weights, states and masks checked against it. Written once so
// that a call and a stream refuse the same things with the same messages.
#pragma once

#include <array>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "checks.hpp"
#include "rnncore/api.hpp"

namespace rnncore::bind {

// The LSTM variants' arguments (cells.hpp), all optional: peepholes (3, H), a projection
// W_hr (H, P), clip > 0 (0: none), coupled input/forget gates, the activation of c_t
// ("" for `activation`).
struct Variants {
  std::optional<py::array> peephole, projection;
  double cell_clip = 0;
  bool input_forget = false;
  std::string output_activation;
};

inline CellSpec make_spec(const std::string& cell, const std::string& activation,
                          const std::string& recurrent_activation, bool reset_after,
                          const Variants& v = {}) {
  CellSpec spec;
  spec.kind = cell_from_name(cell);
  spec.act = activation_from_name(activation);
  spec.rec_act = activation_from_name(recurrent_activation, "recurrent_activation");
  spec.reset_after = reset_after;
  spec.out_act = v.output_activation.empty()
                     ? spec.act
                     : activation_from_name(v.output_activation, "output_activation");
  spec.peephole = v.peephole.has_value();
  if (!(v.cell_clip >= 0) || std::isinf(v.cell_clip))
    throw py::value_error("cell_clip: expected a finite number > 0 (or none), got " +
                          std::to_string(v.cell_clip));
  spec.clip = v.cell_clip;
  spec.input_forget = v.input_forget;
  if (v.projection) {
    check_ndim(*v.projection, "projection", 2, "(units, projection_units)");
    spec.proj = v.projection->shape(1);
    if (spec.proj < 1)
      throw py::value_error("projection: expected at least 1 projection unit, got shape " +
                            shape_str(shape_of(*v.projection)));
  }
  if (spec.kind != CellKind::LSTM && spec.has_variants())
    throw py::value_error(
        "peephole, projection, cell_clip, input_forget and output_activation are LSTM "
        "options, given for " +
        cell);
  return spec;
}

inline const char* cell_label(const CellSpec& spec) {
  switch (spec.kind) {
    case CellKind::SimpleRNN:
      return "simple_rnn";
    case CellKind::LSTM:
      return "lstm";
    default:
      return spec.reset_after ? "gru (reset_after=True)" : "gru (reset_after=False)";
  }
}

// The units H, read off recurrent_kernel (H, G*H), or with a projection (P, G*H) off the
// projection (H, P): checked first, since every other shape depends on it.
inline Index units_of(const CellSpec& spec, const py::array& recurrent_kernel,
                      const std::optional<py::array>& projection = std::nullopt) {
  check_ndim(recurrent_kernel, "recurrent_kernel", 2, "(units, gates*units)");
  const Index G = spec.gates();
  if (spec.proj > 0) {
    const Index H = projection->shape(0), P = spec.proj;
    if (recurrent_kernel.shape(0) != P || recurrent_kernel.shape(1) != G * H)
      throw py::value_error("recurrent_kernel: expected shape (projection_units, 4*units) = " +
                            shape_str({P, G * H}) + " for the projection of shape " +
                            shape_str({H, P}) + ", got " + shape_str(shape_of(recurrent_kernel)));
    return H;
  }
  const Index H = recurrent_kernel.shape(0);
  if (recurrent_kernel.shape(1) != G * H)
    throw py::value_error("recurrent_kernel: expected shape (units, " + std::to_string(G) +
                          "*units) = " + shape_str({H, G * H}) + " for " + cell_label(spec) +
                          ", got " + shape_str(shape_of(recurrent_kernel)));
  return H;
}

// Low-precision weights (lowp.hpp), for float32 inference: quantize "" (none), "bf16" (the
// values are uint16: each weight's bfloat16 bits) or "int8" (int8 values and one float32
// scale per column, w = scale * q).
inline Precision precision_from_name(const std::string& quantize) {
  if (quantize.empty()) return Precision::F32;
  if (quantize == "bf16") return Precision::BF16;
  if (quantize == "int8") return Precision::Int8;
  throw py::value_error("quantize: expected 'bf16', 'int8' or none, got '" + quantize + "'");
}

inline LowpSource lowp_input(Precision p, const py::array& values,
                             const std::optional<py::array>& scale, const std::string& name,
                             const std::vector<Index>& shape) {
  const bool int8 = p == Precision::Int8;
  const bool ok = int8 ? has_dtype<std::int8_t>(values) : has_dtype<std::uint16_t>(values);
  if (!ok)
    throw py::type_error(name + ": expected dtype " + (int8 ? "int8" : "uint16 (bfloat16 bits)") +
                         " for quantize='" + (int8 ? "int8" : "bf16") + "', got " +
                         dtype_str(values));
  check_shape(values, name.c_str(), shape);
  check_contiguous(values, name.c_str());
  const std::string scale_name = name + "_scale";
  if (!int8) {
    if (scale) throw py::value_error(scale_name + ": expected none for quantize='bf16'");
    return {p, values.data(), nullptr};
  }
  if (!scale)
    throw py::value_error(scale_name + ": expected float32 scales of shape " +
                          shape_str({shape[1]}) + " for quantize='int8', got none");
  return {p, values.data(),
          float_input<float>(*scale, scale_name.c_str(), {shape[1]}, name.c_str())};
}

// U and the bias in Keras's layout: (G*H,), or (2, 3H) for GRU reset_after. dtype T, the
// dtype of `ref`.
// With a precision other than F32, U is low precision (lowp_input) and the rest float32.
template <class T>
Recurrent<T> recurrent_weights(const CellSpec& spec, const py::array& recurrent_kernel,
                               const std::optional<py::array>& bias, Index H, const char* ref,
                               const Variants& v = {}, Precision precision = Precision::F32,
                               const std::optional<py::array>& recurrent_scale = std::nullopt) {
  const Index GH = spec.gates() * H, Hp = spec.out_cols(H);
  Recurrent<T> rec;
  rec.H = H;
  rec.Hp = Hp;
  if (precision == Precision::F32)
    rec.U = float_input<T>(recurrent_kernel, "recurrent_kernel", {Hp, GH}, ref);
  else
    rec.U_low =
        lowp_input(precision, recurrent_kernel, recurrent_scale, "recurrent_kernel", {Hp, GH});
  if (v.peephole) rec.peephole = float_input<T>(*v.peephole, "peephole", {3, H}, ref);
  if (v.projection) rec.projection = float_input<T>(*v.projection, "projection", {H, Hp}, ref);
  if (bias)
    rec.bias = spec.bias_two_rows() ? float_input<T>(*bias, "bias", {2, GH}, ref)
                                    : float_input<T>(*bias, "bias", {GH}, ref);
  return rec;
}

// A list of states (h; or h, c), each (B, width of the state: H, or an LSTM's projection
// units for h): empty for "none given" (nullptr each), else exactly the cell's count. `what`
// names the argument (initial_state, d_final_state, ...).
template <class T>
std::array<const T*, max_states> state_inputs(const CellSpec& spec,
                                              const std::vector<py::array>& states,
                                              const char* what, Index B, Index H, const char* ref) {
  const Index N = spec.n_states();
  if (!states.empty() && static_cast<Index>(states.size()) != N)
    throw py::value_error(std::string(what) + ": expected " + std::to_string(N) + " array(s) for " +
                          cell_label(spec) + ", got " + std::to_string(states.size()));
  std::array<const T*, max_states> out{};
  for (size_t k = 0; k < states.size(); ++k) {
    const std::string name = std::string(what) + "[" + std::to_string(k) + "]";
    out[k] =
        float_input<T>(states[k], name.c_str(), {B, spec.state_cols(static_cast<int>(k), H)}, ref);
  }
  return out;
}

// A (B, T) bool mask, C-contiguous; nullptr for none.
inline const std::uint8_t* mask_input(const std::optional<py::array>& mask, Index B, Index Tn) {
  if (!mask) return nullptr;
  if (!has_dtype<bool>(*mask))
    throw py::type_error("mask: expected dtype bool, got " + dtype_str(*mask));
  check_shape(*mask, "mask", {B, Tn});
  check_contiguous(*mask, "mask");
  return static_cast<const std::uint8_t*>(mask->data());
}

}  // namespace rnncore::bind
