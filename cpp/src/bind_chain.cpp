// A chain of a model's layers in one core call (issue 16): Masking, recurrent layers (through
// their streams, stream.hpp) and Dense on the last axis, run one after the other with one
// GIL release and no Python between them.
//
// The layers' own calls run the same kernels on buffers allocated the same way (new_array:
// 64-byte aligned, so the vectorised loops take the same paths), and the Python rules between
// them are written once more here with their Keras semantics:
//   Masking:   mask[b, t] = any_k x[b, t, k] != mask_value;  x[b, t] = 0 where not mask[b, t]
//   recurrent: the stream's run with the mask; with return_sequences and
//              zero_output_for_mask, y[b, s] = 0 where the step it came from is masked (step
//              T-1-s when going backwards); the mask goes on with return_sequences, else none
//   Dense:     act(x W + b) on the last axis (dense.hpp); the mask goes on unchanged
// so the chain gives the layer-by-layer results bit for bit (tests/test_native_chain.py).
//
// An op is a tuple: ("masking", mask_value), ("recurrent", stream, return_sequences,
// zero_output_for_mask) or ("dense", kernel, bias or None, activation). Python builds a chain
// from the layers' streams and weights (rnncore/models/native_chain.py) and builds it again
// when one of them changes; the streams repack their weights when those are updated.
#include <pybind11/stl.h>

#include <cmath>

#include "bindings.hpp"
#include "checks.hpp"
#include "rnncore/dense.hpp"
#include "stream.hpp"

namespace rnncore::bind {
namespace {

enum class OpKind { Masking, Recurrent, Dense };

template <class T>
struct Op {
  OpKind kind = OpKind::Dense;
  std::string name;  // for messages: ops[i] (kind)
  T mask_value = 0;
  Stream<T>* stream = nullptr;
  bool return_sequences = false, zero_output_for_mask = false;
  const T* W = nullptr;
  const T* b = nullptr;
  Activation act = Activation::Linear;
  Index width_in = 0, width_out = 0;  // Dense: the kernel's; recurrent: the output's
};

// A chain of ops over fixed streams and weights, parsed once (the ops keep them alive) and
// run for any batch: each run sizes its buffers and checks its input, then releases the GIL.
// Runs from several threads may proceed at once (a carrying stream serialises its own).
template <class T>
class Chain {
 public:
  explicit Chain(const py::list& ops) {
    if (ops.empty()) throw py::value_error("ops: expected at least one op");
    for (size_t i = 0; i < ops.size(); ++i) {
      const auto t = ops[i].cast<py::tuple>();
      const std::string kind = t[0].cast<std::string>();
      const std::string name = "ops[" + std::to_string(i) + "] (" + kind + ")";
      Op<T> op;
      if (kind == "masking") {
        op.kind = OpKind::Masking;
        op.mask_value = static_cast<T>(t[1].cast<double>());
      } else if (kind == "recurrent") {
        op.kind = OpKind::Recurrent;
        try {
          op.stream = t[1].cast<Stream<T>*>();
        } catch (const py::cast_error&) {
          throw py::type_error(name + ": expected a stream of the chain's dtype, got " +
                               py::str(py::type::of(t[1])).cast<std::string>());
        }
        op.return_sequences = t[2].cast<bool>();
        op.zero_output_for_mask = t[3].cast<bool>();
        op.width_out = op.stream->out_width();
      } else if (kind == "dense") {
        op.kind = OpKind::Dense;
        const auto kernel = t[1].cast<py::array>();
        check_ndim(kernel, "kernel", 2, "(input_dim, units)");
        op.width_in = kernel.shape(0), op.width_out = kernel.shape(1);
        op.W = float_input<T>(kernel, (name + " kernel").c_str(), {op.width_in, op.width_out});
        if (!t[2].is_none())
          op.b = float_input<T>(t[2].cast<py::array>(), (name + " bias").c_str(), {op.width_out});
        op.act = activation_from_name(t[3].cast<std::string>());
      } else {
        throw py::value_error(name + ": unknown op");
      }
      op.name = name;
      ops_.push_back(std::move(op));
    }
    refs_ = ops;  // keeps the streams and weights alive
  }

  py::tuple run(const py::array& x, const std::optional<py::array>& mask) {
    if (x.ndim() != 2 && x.ndim() != 3)
      throw py::value_error("x: expected (batch, timesteps, features) or (batch, features), got " +
                            shape_str(shape_of(x)));
    const T* x_data = float_input<T>(x, "x", shape_of(x));
    const Index B = x.shape(0), Tn = x.ndim() == 3 ? x.shape(1) : 1;
    if (mask && x.ndim() != 3) throw py::value_error("mask: only for 3-D inputs");
    const std::uint8_t* mask_data = x.ndim() == 3 ? mask_input(mask, B, Tn) : nullptr;

    // Size every buffer and check every shape with the GIL held.
    const size_t n = ops_.size();
    std::vector<py::array> outs(n);
    std::vector<T*> ys(n);
    std::vector<std::uint8_t*> masks(n, nullptr);  // what each op hands on
    std::vector<int> ranks(n + 1);
    std::vector<Index> widths(n + 1);
    ranks[0] = static_cast<int>(x.ndim()), widths[0] = x.shape(x.ndim() - 1);
    py::object out_mask = mask ? py::object(*mask) : py::object(py::none());
    py::array computed_mask;
    for (size_t i = 0; i < n; ++i) {
      const Op<T>& op = ops_[i];
      int rank = ranks[i];
      Index width = widths[i];
      if (op.kind != OpKind::Dense && rank != 3)
        throw py::value_error(op.name + ": expected a 3-D input (batch, timesteps, features)");
      if (op.kind == OpKind::Masking) {
        computed_mask = new_array<bool>({B, Tn});
        masks[i] = static_cast<std::uint8_t*>(computed_mask.mutable_data());
        out_mask = computed_mask;
      } else if (op.kind == OpKind::Recurrent) {
        if (op.stream->input_dim() != width)
          throw py::value_error(op.name + ": expected " + std::to_string(op.stream->input_dim()) +
                                " input features, got " + std::to_string(width));
        if (op.stream->fixed_batch() >= 0 && op.stream->fixed_batch() != B)
          throw py::value_error(op.name + ": the layer is stateful with batch size " +
                                std::to_string(op.stream->fixed_batch()) +
                                "; got input batch size " + std::to_string(B));
        if (!op.return_sequences) {
          rank = 2;
          out_mask = py::none();
        }
        width = op.width_out;
      } else {
        if (op.width_in != width)
          throw py::value_error(op.name + ": expected " + std::to_string(op.width_in) +
                                " input features, got " + std::to_string(width));
        width = op.width_out;
      }
      checked_elements({B, Tn, width}, "output");
      auto out = rank == 3 ? new_array<T>({B, Tn, width}) : new_array<T>({B, width});
      ys[i] = out.mutable_data();
      outs[i] = std::move(out);
      ranks[i + 1] = rank, widths[i + 1] = width;
    }

    {
      py::gil_scoped_release release;
      const T* in = x_data;
      const std::uint8_t* m = mask_data;
      for (size_t i = 0; i < n; ++i) {
        const Op<T>& op = ops_[i];
        T* y = ys[i];
        const Index rows = ranks[i] == 3 ? B * Tn : B, D = widths[i];
        switch (op.kind) {
          case OpKind::Masking: {
            std::uint8_t* mm = masks[i];
            for (Index r = 0; r < rows; ++r) {
              const T* src = in + r * D;
              bool keep = false;  // NaN != v, as in NumPy
              for (Index k = 0; k < D && !keep; ++k) keep = !(src[k] == op.mask_value);
              mm[r] = keep;
              if (keep)
                std::copy_n(src, D, y + r * D);
              else
                std::fill_n(y + r * D, D, T(0));
            }
            m = mm;
            break;
          }
          case OpKind::Recurrent: {
            op.stream->compute(in, B, Tn, m, op.return_sequences, {}, y, {});
            if (m && op.return_sequences && op.zero_output_for_mask) {
              const bool back = op.stream->go_backwards();
              const Index H = op.width_out;
              for (Index b = 0; b < B; ++b)
                for (Index s = 0; s < Tn; ++s)
                  if (!m[b * Tn + (back ? Tn - 1 - s : s)])
                    std::fill_n(y + (b * Tn + s) * H, H, T(0));
            }
            if (!op.return_sequences) m = nullptr;
            break;
          }
          case OpKind::Dense:
            dense_forward(in, rows, D, op.W, op.width_out, op.b, op.act, y, get_num_threads());
            break;
        }
        in = y;
      }
    }
    return py::make_tuple(outs.back(), out_mask);
  }

 private:
  std::vector<Op<T>> ops_;
  py::list refs_;
};

template <class T>
void bind_chain(py::module_& m, const char* name) {
  py::class_<Chain<T>>(m, name, py::module_local())
      .def("run", &Chain<T>::run, py::arg("x"), py::arg("mask") = py::none(),
           "Run the chain on x (batch, timesteps, features) or (batch, features), with an "
           "optional (batch, timesteps) bool mask. Returns (output, mask or None).");
}

}  // namespace

void register_chain(py::module_& m) {
  bind_chain<float>(m, "Chain32");
  bind_chain<double>(m, "Chain64");
  m.def(
      "make_chain",
      [](const py::list& ops, bool float64) -> py::object {
        if (float64)
          return py::cast(new Chain<double>(ops), py::return_value_policy::take_ownership);
        return py::cast(new Chain<float>(ops), py::return_value_policy::take_ownership);
      },
      py::arg("ops"), py::arg("float64"),
      "A chain of layers run in one call (chain.run(x, mask=None) -> (output, mask or None)): "
      "ops is a list of ('masking', mask_value), ('recurrent', stream, return_sequences, "
      "zero_output_for_mask) and ('dense', kernel, bias or None, activation), in float64 or "
      "float32. The GIL is released once per run.");
}

}  // namespace rnncore::bind
