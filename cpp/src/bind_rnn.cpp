// Bindings of the recurrent forward pass: checks, buffer maps, outputs, GIL release.
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "checks.hpp"
#include "rnn_args.hpp"
#include "rnncore/api.hpp"

namespace rnncore::bind {
namespace {

struct ForwardArgs {
  CellSpec spec;
  py::array x, kernel, recurrent_kernel;
  std::optional<py::array> bias;
  std::vector<py::array> initial_state;
  std::optional<py::array> mask;
  bool go_backwards, return_sequences, training;
  Variants variants;
};

// Checks every forward argument and fills the scan's inputs (no outputs yet).
template <class T>
std::pair<ScanIO<T>, Recurrent<T>> forward_inputs(const ForwardArgs& a) {
  const CellSpec& spec = a.spec;
  check_ndim(a.x, "x", 3, "(batch, timesteps, input_dim)");
  const Index B = a.x.shape(0), Tn = a.x.shape(1), D = a.x.shape(2);
  const Index H = units_of(spec, a.recurrent_kernel, a.variants.projection);
  const Index GH = spec.gates() * H, Ho = spec.out_cols(H);

  ScanIO<T> io;
  io.x = float_input<T>(a.x, "x", {B, Tn, D});
  io.B = B, io.T_ = Tn, io.D = D;
  io.W = float_input<T>(a.kernel, "kernel", {D, GH});
  Recurrent<T> rec = recurrent_weights<T>(spec, a.recurrent_kernel, a.bias, H, "x", a.variants);
  io.initial = state_inputs<T>(spec, a.initial_state, "initial_state", B, H, "x");
  io.mask = mask_input(a.mask, B, Tn);
  io.go_backwards = a.go_backwards;
  io.return_sequences = a.return_sequences;

  // Refuse absurd sizes before allocating anything.
  checked_elements({B, Tn, GH}, "input projection (batch*timesteps*gates*units)");
  checked_elements({B, Tn, std::max(H, Ho)}, "output (batch*timesteps*units)");
  checked_elements({D, GH}, "kernel");
  return {io, rec};
}

// Ho: the width of h (the units, or an LSTM's projection units).
std::vector<Index> output_shape(const ForwardArgs& a, Index Ho) {
  const Index B = a.x.shape(0), Tn = a.x.shape(1);
  return a.return_sequences ? std::vector<Index>{B, Tn, Ho} : std::vector<Index>{B, Ho};
}

template <class T>
py::tuple forward_t(const ForwardArgs& a) {
  auto [io, rec] = forward_inputs<T>(a);
  const CellSpec& spec = a.spec;
  const Index B = io.B, Tn = io.T_, H = rec.H, GH = spec.gates() * H, N = spec.n_states();

  auto y = new_array<T>(output_shape(a, rec.Hp));
  io.y = y.mutable_data();
  py::list finals;
  for (Index k = 0; k < N; ++k) {
    auto s = new_array<T>({B, spec.state_cols(static_cast<int>(k), H)});
    io.final_state[k] = s.mutable_data();
    finals.append(s);
  }
  py::object workspace = py::none();
  if (a.training) {
    py::list ws;
    auto gates = new_array<T>({B, Tn, GH});
    io.ws_gates = gates.mutable_data();
    ws.append(gates);
    for (Index k = 0; k < N; ++k) {
      auto s = new_array<T>({B, Tn, spec.state_cols(static_cast<int>(k), H)});
      io.ws_states[k] = s.mutable_data();
      ws.append(s);
    }
    auto aux = new_array<T>({B, Tn, spec.aux_cols(H)});
    io.ws_aux = aux.mutable_data();
    ws.append(aux);
    workspace = ws;
  }

  {
    py::gil_scoped_release release;
    forward(spec, rec, io, get_num_threads());
  }
  return py::make_tuple(y, finals, workspace);
}

template <class T>
py::tuple backward_t(const ForwardArgs& a, const std::vector<py::array>& workspace,
                     const py::array& d_output, const std::vector<py::array>& d_final_state) {
  auto [io_f, rec] = forward_inputs<T>(a);
  const CellSpec& spec = a.spec;
  const Index B = io_f.B, Tn = io_f.T_, D = io_f.D, H = rec.H, GH = spec.gates() * H;
  const Index N = spec.n_states(), Hp = rec.Hp;
  if (static_cast<Index>(workspace.size()) != N + 2)
    throw py::value_error("workspace: expected the " + std::to_string(N + 2) +
                          " arrays returned by the training forward, got " +
                          std::to_string(workspace.size()));
  io_f.ws_gates = const_cast<T*>(float_input<T>(workspace[0], "workspace[0] (gates)", {B, Tn, GH}));
  for (Index k = 0; k < N; ++k)
    io_f.ws_states[k] = const_cast<T*>(float_input<T>(
        workspace[1 + k], "workspace (states)", {B, Tn, spec.state_cols(static_cast<int>(k), H)}));
  io_f.ws_aux = const_cast<T*>(
      float_input<T>(workspace[N + 1], "workspace (aux)", {B, Tn, spec.aux_cols(H)}));

  BackwardIO<T> io;
  io.fwd = io_f;
  io.dy = float_input<T>(d_output, "d_output", output_shape(a, Hp));
  io.d_final = state_inputs<T>(spec, d_final_state, "d_final_state", B, H, "x");

  auto dx = new_array<T>({B, Tn, D});
  auto dW = new_array<T>({D, GH});
  auto dU = new_array<T>({Hp, GH});
  io.dx = dx.mutable_data();
  io.dW = dW.mutable_data();
  io.dU = dU.mutable_data();
  py::object db = py::none();
  if (a.bias) {
    auto b = new_array<T>(shape_of(*a.bias));
    io.db = b.mutable_data();
    db = b;
  }
  py::object d_peephole = py::none(), d_projection = py::none();
  if (rec.peephole) {
    auto d = new_array<T>({3, H});
    io.d_peephole = d.mutable_data();
    d_peephole = d;
  }
  if (rec.projection) {
    auto d = new_array<T>({H, Hp});
    io.d_projection = d.mutable_data();
    d_projection = d;
  }
  py::list d_initial;
  for (Index k = 0; k < N; ++k) {
    auto d = new_array<T>({B, spec.state_cols(static_cast<int>(k), H)});
    io.d_initial[k] = d.mutable_data();
    d_initial.append(d);
  }
  {
    py::gil_scoped_release release;
    backward(spec, rec, io, get_num_threads());
  }
  return py::make_tuple(dx, dW, dU, db, d_initial, d_peephole, d_projection);
}

// The arguments rnn_forward and rnn_backward share, as one record.
ForwardArgs forward_args(const std::string& cell, const py::array& x, const py::array& kernel,
                         const py::array& recurrent_kernel, std::optional<py::array> bias,
                         std::vector<py::array> initial_state, std::optional<py::array> mask,
                         const std::string& activation, const std::string& recurrent_activation,
                         bool reset_after, bool go_backwards, bool return_sequences, bool training,
                         Variants variants) {
  const CellSpec spec = make_spec(cell, activation, recurrent_activation, reset_after, variants);
  return ForwardArgs{spec,
                     x,
                     kernel,
                     recurrent_kernel,
                     std::move(bias),
                     std::move(initial_state),
                     std::move(mask),
                     go_backwards,
                     return_sequences,
                     training,
                     std::move(variants)};
}

py::tuple rnn_forward(const std::string& cell, const py::array& x, const py::array& kernel,
                      const py::array& recurrent_kernel, std::optional<py::array> bias,
                      std::vector<py::array> initial_state, std::optional<py::array> mask,
                      const std::string& activation, const std::string& recurrent_activation,
                      bool reset_after, bool go_backwards, bool return_sequences, bool training,
                      std::optional<py::array> peephole, std::optional<py::array> projection,
                      double cell_clip, bool input_forget, const std::string& output_activation) {
  const ForwardArgs a = forward_args(
      cell, x, kernel, recurrent_kernel, std::move(bias), std::move(initial_state), std::move(mask),
      activation, recurrent_activation, reset_after, go_backwards, return_sequences, training,
      Variants{std::move(peephole), std::move(projection), cell_clip, input_forget,
               output_activation});
  return is_float64(x, "x") ? forward_t<double>(a) : forward_t<float>(a);
}

py::tuple rnn_backward(const std::string& cell, const py::array& x, const py::array& kernel,
                       const py::array& recurrent_kernel, std::optional<py::array> bias,
                       std::vector<py::array> initial_state, std::optional<py::array> mask,
                       const std::string& activation, const std::string& recurrent_activation,
                       bool reset_after, bool go_backwards, bool return_sequences,
                       const std::vector<py::array>& workspace, const py::array& d_output,
                       const std::vector<py::array>& d_final_state,
                       std::optional<py::array> peephole, std::optional<py::array> projection,
                       double cell_clip, bool input_forget, const std::string& output_activation) {
  const ForwardArgs a = forward_args(
      cell, x, kernel, recurrent_kernel, std::move(bias), std::move(initial_state), std::move(mask),
      activation, recurrent_activation, reset_after, go_backwards, return_sequences, true,
      Variants{std::move(peephole), std::move(projection), cell_clip, input_forget,
               output_activation});
  return is_float64(x, "x") ? backward_t<double>(a, workspace, d_output, d_final_state)
                            : backward_t<float>(a, workspace, d_output, d_final_state);
}

}  // namespace

void register_rnn(py::module_& m) {
  m.def("rnn_forward", &rnn_forward, py::arg("cell"), py::arg("x"), py::arg("kernel"),
        py::arg("recurrent_kernel"), py::arg("bias"), py::arg("initial_state"), py::arg("mask"),
        py::arg("activation"), py::arg("recurrent_activation"), py::arg("reset_after"),
        py::arg("go_backwards"), py::arg("return_sequences"), py::arg("training"),
        py::arg("peephole") = py::none(), py::arg("projection") = py::none(),
        py::arg("cell_clip") = 0.0, py::arg("input_forget") = false,
        py::arg("output_activation") = "",
        R"doc(Forward pass of one recurrent layer over a whole sequence (Keras layouts).

Returns (output, [final states], workspace). output is (batch, timesteps, units) with
return_sequences, else (batch, units); the final states are h (and c for lstm), each
(batch, units). workspace is None unless training=True, then [gates, states..., aux] for
the backward pass. All arrays must share x's dtype (float32 or float64) and be
C-contiguous; the GIL is released while computing. The LSTM variants (cells.hpp): peephole
(3, units) rows p_i, p_f, p_o; projection W_hr (units, P), which makes h, the output and
recurrent_kernel P wide; cell_clip > 0 clips the gates' inputs; input_forget couples
f = 1 - i; output_activation is applied to c_t ("" for activation).)doc");
  m.def("rnn_backward", &rnn_backward, py::arg("cell"), py::arg("x"), py::arg("kernel"),
        py::arg("recurrent_kernel"), py::arg("bias"), py::arg("initial_state"), py::arg("mask"),
        py::arg("activation"), py::arg("recurrent_activation"), py::arg("reset_after"),
        py::arg("go_backwards"), py::arg("return_sequences"), py::arg("workspace"),
        py::arg("d_output"), py::arg("d_final_state"), py::arg("peephole") = py::none(),
        py::arg("projection") = py::none(), py::arg("cell_clip") = 0.0,
        py::arg("input_forget") = false, py::arg("output_activation") = "",
        R"doc(Backward pass (BPTT) of rnn_forward(..., training=True).

Takes the same inputs as that call, its workspace, dL/d(output) and dL/d(final states)
(an empty list for zero). Returns (dx, dkernel, drecurrent_kernel, dbias or None,
[d initial states], dpeephole or None, dprojection or None). The workspace is read, not
modified.)doc");
}

}  // namespace rnncore::bind
