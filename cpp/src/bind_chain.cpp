// A chain of a model's layers in one core call (issue 16): Masking, recurrent layers (through
// their streams, stream.hpp), Dense and LayerNormalization on the last axis, run one after the
// other with one GIL release and no Python between them.
//
// The layers' own calls run the same kernels on buffers allocated the same way (new_array:
// 64-byte aligned, so the vectorised loops take the same paths), and the Python rules between
// them are written once more here with their Keras semantics:
//   Masking:   mask[b, t] = any_k x[b, t, k] != mask_value;  x[b, t] = 0 where not mask[b, t]
//   recurrent: the stream's run with the mask; with return_sequences and
//              zero_output_for_mask, y[b, s] = 0 where the step it came from is masked (step
//              T-1-s when going backwards); the mask goes on with return_sequences, else none
//   Dense:     act(x W + b) on the last axis (dense.hpp); the mask goes on unchanged
//   Embedding: y[b, t] = E[id] for integer ids in [0, V); the mask becomes ids != 0 with
//              mask_zero, else none
//   Bidirectional: the forward and the backward (go_backwards) streams on the same input
//              and mask, each zeroing its masked outputs by its zero_output_for_mask, the
//              backward sequence flipped back to input order, then merged: concat, sum,
//              ave ((a + b) / 2) or mul; the mask goes on with return_sequences
//   LayerNormalization (last axis): each row (x - mean) / sqrt(var + eps) * gamma + beta, or
//              x / sqrt(var + eps) * gamma with rms_scaling (norm.hpp, the function the
//              layer's own call runs); the mask goes on unchanged, as Keras passes it
//   Conv1D, MaxPooling1D / AveragePooling1D (channels_last): windows.hpp, the functions the
//              layers' own calls run, padded as Keras pads for the op's input length (which
//              they change: each op has its own timesteps); the mask is dropped, as in Keras
// so the chain gives the layer-by-layer results bit for bit (tests/test_native_chain.py).
// run_slots is a stream pool's step over the same ops: the recurrent ops' states come from
// and go back to rows of the pool's state table, all in the one call.
//
// An op is a tuple: ("masking", mask_value), ("recurrent", stream, return_sequences,
// zero_output_for_mask), ("dense", kernel, bias or None, activation), ("embedding",
// embeddings, mask_zero) (first op only: the chain's input is then integer ids) or
// ("bidirectional", forward stream, backward stream, return_sequences, forward
// zero_output_for_mask, backward zero_output_for_mask, merge_mode) or ("layer_norm", gamma or
// None, beta or None, epsilon, rms_scaling) or ("conv1d", kernel, bias or None, groups, strides,
// dilation, padding, activation) or ("pool1d", pool_size, strides, padding, average). Python
// builds a chain from the layers' streams and
// weights (rnncore/models/native_chain.py) and builds it again when one of them changes; the
// streams repack their weights when those are updated.
#include <pybind11/stl.h>

#include <cmath>

#include "bindings.hpp"
#include "checks.hpp"
#include "rnncore/dense.hpp"
#include "rnncore/norm.hpp"
#include "rnncore/windows.hpp"
#include "stream.hpp"

namespace rnncore::bind {
namespace {

enum class OpKind {
  Masking,
  Recurrent,
  Dense,
  Embedding,
  Bidirectional,
  LayerNorm,
  Conv1D,
  Pool1D
};
enum class Padding { Valid, Same, Causal };
enum class Merge { Concat, Sum, Ave, Mul };

template <class T>
struct Op {
  OpKind kind = OpKind::Dense;
  std::string name;  // for messages: ops[i] (kind)
  T mask_value = 0;
  Stream<T>* stream = nullptr;
  Stream<T>* backward = nullptr;  // Bidirectional: the go_backwards stream
  bool return_sequences = false, zero_output_for_mask = false, zero_backward = false;
  bool mask_zero = false;
  Merge merge = Merge::Concat;
  const T* W = nullptr;  // Dense: the kernel; Embedding: the embeddings (V, width_out)
  const T* b = nullptr;
  const T* gamma = nullptr;  // LayerNorm: gamma and beta (width_in) or null
  const T* beta = nullptr;
  double epsilon = 0;
  bool rms_scaling = false;
  Index vocab = 0;
  Activation act = Activation::Linear;
  // Dense: the kernel's; recurrent: the output's; LayerNorm: gamma's or beta's (0: any)
  Index width_in = 0, width_out = 0;
  // Conv1D (W: the kernel (size, width_in / groups, width_out), b: the bias) and Pool1D:
  // the window (its padding amounts are the input length's, window_for) and the padding mode
  Window window;
  Padding padding = Padding::Valid;
  Index groups = 1;
  bool average = false;  // Pool1D: average, else max
};

// The window of a Conv1D / Pool1D op over Tn input steps, padded as Keras pads
// (layers/_windows.py pad_amounts): causal all before, same the extra step after.
template <class T>
Window window_for(const Op<T>& op, Index Tn) {
  Window w = op.window;
  const Index span = w.dilation * (w.size - 1) + 1;
  if (op.padding == Padding::Causal) {
    w.left = span - 1;
  } else if (op.padding == Padding::Same) {
    const Index out = (Tn + w.stride - 1) / w.stride;
    const Index total = std::max<Index>(0, (out - 1) * w.stride + span - Tn);
    w.left = total / 2, w.right = total - total / 2;
  }
  return w;
}

Padding padding_from_name(const std::string& name, const std::string& op) {
  if (name == "valid") return Padding::Valid;
  if (name == "same") return Padding::Same;
  if (name == "causal") return Padding::Causal;
  throw py::value_error(op + ": unknown padding '" + name + "'");
}

template <class T>
Stream<T>* stream_arg(const py::handle& h, const std::string& name) {
  try {
    return h.cast<Stream<T>*>();
  } catch (const py::cast_error&) {
    throw py::type_error(name + ": expected a stream of the chain's dtype, got " +
                         py::str(py::type::of(h)).cast<std::string>());
  }
}

// Zeroes y (B, T, H)'s outputs at masked steps; go_backwards: output s is step T-1-s.
template <class T>
void zero_masked(T* y, const std::uint8_t* m, Index B, Index Tn, Index H, bool go_backwards) {
  for (Index b = 0; b < B; ++b)
    for (Index s = 0; s < Tn; ++s)
      if (!m[b * Tn + (go_backwards ? Tn - 1 - s : s)]) std::fill_n(y + (b * Tn + s) * H, H, T(0));
}

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
        op.stream = stream_arg<T>(t[1], name);
        op.return_sequences = t[2].cast<bool>();
        op.zero_output_for_mask = t[3].cast<bool>();
        op.width_out = op.stream->out_width();
      } else if (kind == "bidirectional") {
        op.kind = OpKind::Bidirectional;
        op.stream = stream_arg<T>(t[1], name);
        op.backward = stream_arg<T>(t[2], name);
        op.return_sequences = t[3].cast<bool>();
        op.zero_output_for_mask = t[4].cast<bool>();
        op.zero_backward = t[5].cast<bool>();
        const std::string merge = t[6].cast<std::string>();
        const Index hf = op.stream->out_width(), hb = op.backward->out_width();
        if (merge == "concat")
          op.merge = Merge::Concat, op.width_out = hf + hb;
        else if (merge == "sum" || merge == "ave" || merge == "mul")
          op.merge = merge == "sum"   ? Merge::Sum
                     : merge == "ave" ? Merge::Ave
                                      : Merge::Mul,
          op.width_out = hf;
        else
          throw py::value_error(name + ": unknown merge_mode '" + merge + "'");
        if (op.merge != Merge::Concat && hf != hb)
          throw py::value_error(name + ": merge_mode " + merge + " needs equal widths");
        if (op.stream->input_dim() != op.backward->input_dim())
          throw py::value_error(name + ": the two streams differ in input features");
      } else if (kind == "embedding") {
        op.kind = OpKind::Embedding;
        if (i != 0) throw py::value_error(name + ": only as the first op");
        const auto E = t[1].cast<py::array>();
        check_ndim(E, "embeddings", 2, "(input_dim, output_dim)");
        op.vocab = E.shape(0), op.width_out = E.shape(1);
        op.W = float_input<T>(E, (name + " embeddings").c_str(), {op.vocab, op.width_out});
        op.mask_zero = t[2].cast<bool>();
      } else if (kind == "dense") {
        op.kind = OpKind::Dense;
        const auto kernel = t[1].cast<py::array>();
        check_ndim(kernel, "kernel", 2, "(input_dim, units)");
        op.width_in = kernel.shape(0), op.width_out = kernel.shape(1);
        op.W = float_input<T>(kernel, (name + " kernel").c_str(), {op.width_in, op.width_out});
        if (!t[2].is_none())
          op.b = float_input<T>(t[2].cast<py::array>(), (name + " bias").c_str(), {op.width_out});
        op.act = activation_from_name(t[3].cast<std::string>());
      } else if (kind == "layer_norm") {
        op.kind = OpKind::LayerNorm;
        for (int k : {1, 2}) {
          if (t[k].is_none()) continue;
          const auto a = t[k].cast<py::array>();
          const char* what = k == 1 ? " gamma" : " beta";
          check_ndim(a, (name + what).c_str(), 1, "(features,)");
          if (op.width_in && a.shape(0) != op.width_in)
            throw py::value_error(name + ": gamma and beta differ in size");
          op.width_in = a.shape(0);
          (k == 1 ? op.gamma : op.beta) = float_input<T>(a, (name + what).c_str(), {op.width_in});
        }
        op.epsilon = t[3].cast<double>();
        if (!(op.epsilon >= 0))
          throw py::value_error(name + ": expected epsilon >= 0, got " +
                                std::to_string(op.epsilon));
        op.rms_scaling = t[4].cast<bool>();
      } else if (kind == "conv1d") {
        // ("conv1d", kernel (size, channels / groups, filters), bias or None, groups,
        //  strides, dilation, padding, activation)
        op.kind = OpKind::Conv1D;
        const auto kernel = t[1].cast<py::array>();
        check_ndim(kernel, (name + " kernel").c_str(), 3,
                   "(kernel_size, channels / groups, filters)");
        op.groups = t[3].cast<Index>();
        const Index k = kernel.shape(0), Cg = kernel.shape(1), F = kernel.shape(2);
        if (op.groups < 1 || F % op.groups != 0)
          throw py::value_error(name + ": filters must divide into groups");
        op.width_in = Cg * op.groups, op.width_out = F;
        op.W = float_input<T>(kernel, (name + " kernel").c_str(), {k, Cg, F});
        if (!t[2].is_none())
          op.b = float_input<T>(t[2].cast<py::array>(), (name + " bias").c_str(), {F});
        op.window = Window{k, t[4].cast<Index>(), t[5].cast<Index>(), 0, 0};
        op.padding = padding_from_name(t[6].cast<std::string>(), name);
        op.act = activation_from_name(t[7].cast<std::string>());
      } else if (kind == "pool1d") {
        // ("pool1d", pool_size, strides, padding, average)
        op.kind = OpKind::Pool1D;
        op.window = Window{t[1].cast<Index>(), t[2].cast<Index>(), 1, 0, 0};
        op.padding = padding_from_name(t[3].cast<std::string>(), name);
        if (op.padding == Padding::Causal) throw py::value_error(name + ": no causal pooling");
        op.average = t[4].cast<bool>();
      } else {
        throw py::value_error(name + ": unknown op");
      }
      if ((op.kind == OpKind::Conv1D || op.kind == OpKind::Pool1D) &&
          (op.window.size < 1 || op.window.stride < 1 || op.window.dilation < 1))
        throw py::value_error(name + ": expected a window size, strides and dilation >= 1");
      op.name = name;
      ops_.push_back(std::move(op));
    }
    refs_ = ops;  // keeps the streams and weights alive
  }

  py::tuple run(const py::array& x, const std::optional<py::array>& mask) {
    Run r;
    prepare(r, x, mask);
    {
      py::gil_scoped_release release;
      execute(r, {});
    }
    return py::make_tuple(r.outs.back(), r.out_mask);
  }

  // A stream pool's step (rnncore/models/stream_pool.py): the recurrent ops start from the
  // rows `slots` of the pool's state table and leave their final states there, all in one
  // call. `table` holds one (capacity, width) array per state of each recurrent op, in op
  // order (h, or h and c); row i of the batch x is the stream in slot slots[i] (distinct
  // slots). The rows are gathered into scratch, the chain runs from them, and the final
  // states are scattered back only after every op has run, with the GIL released once. The
  // caller holds the slots for the step (no other call reads or writes them meanwhile).
  // Returns the chain's output.
  py::array run_slots(const py::array& x, const py::array& slots, const py::list& table) {
    Run r;
    prepare(r, x, std::nullopt);
    const Index B = r.B;
    // the table's arrays, checked against the recurrent ops' states
    std::vector<T*> rows_of;  // each state's table
    std::vector<Index> widths;
    std::vector<std::pair<size_t, int>> owner;  // (op, state) of each table entry
    for (size_t i = 0; i < ops_.size(); ++i) {
      const Op<T>& op = ops_[i];
      if (op.kind == OpKind::Bidirectional)
        throw py::value_error(op.name + ": a pool runs recurrent layers going forwards only");
      if (op.kind != OpKind::Recurrent) continue;
      for (int k = 0; k < op.stream->n_states(); ++k) owner.emplace_back(i, k);
    }
    if (table.size() != owner.size())
      throw py::value_error("table: expected " + std::to_string(owner.size()) +
                            " state arrays (each recurrent op's states), got " +
                            std::to_string(table.size()));
    Index capacity = -1;
    for (size_t j = 0; j < owner.size(); ++j) {
      const std::string name = "table[" + std::to_string(j) + "]";
      auto a = table[j].cast<py::array>();
      check_ndim(a, name.c_str(), 2, "(capacity, width)");
      if (capacity < 0) capacity = a.shape(0);
      const Index w = ops_[owner[j].first].stream->width(owner[j].second);
      float_input<T>(a, name.c_str(), {capacity, w});
      if (!a.writeable()) throw py::value_error(name + ": expected a writeable array");
      rows_of.push_back(static_cast<T*>(a.mutable_data()));
      widths.push_back(w);
    }
    check_ndim(slots, "slots", 1, "(batch,)");
    if (!has_dtype<std::int64_t>(slots) || slots.shape(0) != B)
      throw py::value_error("slots: expected " + std::to_string(B) + " int64 slots, got " +
                            dtype_str(slots) + " " + shape_str(shape_of(slots)));
    check_contiguous(slots, "slots");
    const auto* slot = static_cast<const std::int64_t*>(slots.data());
    std::vector<bool> taken(static_cast<size_t>(std::max<Index>(capacity, 0)), false);
    for (Index b = 0; b < B && capacity >= 0; ++b) {  // (no states: nothing to read)
      if (slot[b] < 0 || slot[b] >= capacity || taken[static_cast<size_t>(slot[b])])
        throw py::value_error("slots: " + std::to_string(slot[b]) +
                              " is out of range or given twice (capacity " +
                              std::to_string(capacity) + ")");
      taken[static_cast<size_t>(slot[b])] = true;
    }
    // one scratch block per state, each starting 64-byte aligned as a Buffer of its own
    constexpr Index align = 64 / sizeof(T);
    std::vector<Index> offset(owner.size());
    Index total = 0;
    for (size_t j = 0; j < owner.size(); ++j) {
      offset[j] = total;
      total += (checked_elements({B, widths[j]}, "states") + align - 1) / align * align;
    }
    Buffer<T> scratch(static_cast<size_t>(total));
    std::vector<std::array<T*, max_states>> states(ops_.size());
    for (size_t j = 0; j < owner.size(); ++j)
      states[owner[j].first][owner[j].second] = scratch.data() + offset[j];
    {
      py::gil_scoped_release release;
      for (size_t j = 0; j < owner.size(); ++j)
        for (Index b = 0; b < B; ++b)
          std::copy_n(rows_of[j] + slot[b] * widths[j], widths[j],
                      scratch.data() + offset[j] + b * widths[j]);
      execute(r, states);
      for (size_t j = 0; j < owner.size(); ++j)
        for (Index b = 0; b < B; ++b)
          std::copy_n(scratch.data() + offset[j] + b * widths[j], widths[j],
                      rows_of[j] + slot[b] * widths[j]);
    }
    return r.outs.back();
  }

 private:
  // A run's input and buffers, sized and checked with the GIL held (prepare), then computed
  // without it (execute).
  struct Run {
    Index B = 0, Tn = 0;
    const T* x = nullptr;
    std::vector<Index> ids;  // Embedding: the ids, checked
    const std::uint8_t* mask = nullptr;
    std::vector<py::array> outs;
    std::vector<T*> ys;
    std::vector<std::uint8_t*> masks;  // a mask an op computes
    std::vector<int> ranks;
    std::vector<Index> widths, steps;  // each op's input (steps: its timesteps)
    py::object out_mask;
    py::array computed_mask;
    Buffer<T> directions;  // Bidirectional: the two streams' outputs, sized once per run
  };

  void prepare(Run& r, const py::array& x, const std::optional<py::array>& mask) const {
    const bool ids = ops_.front().kind == OpKind::Embedding;
    if (ids ? x.ndim() != 2 : (x.ndim() != 2 && x.ndim() != 3))
      throw py::value_error(
          std::string("x: expected ") +
          (ids ? "(batch, timesteps) ids" : "(batch, timesteps, features) or (batch, features)") +
          ", got " + shape_str(shape_of(x)));
    const Index B = x.shape(0), Tn = ids || x.ndim() == 3 ? x.shape(1) : 1;
    r.B = B, r.Tn = Tn;
    if (ids) {
      r.ids = checked_ids(x, ops_.front().vocab);
    } else {
      r.x = float_input<T>(x, "x", shape_of(x));
    }
    if (mask && (ids || x.ndim() != 3)) throw py::value_error("mask: only for 3-D float inputs");
    r.mask = !ids && x.ndim() == 3 ? mask_input(mask, B, Tn) : nullptr;

    // Size every buffer and check every shape with the GIL held.
    const size_t n = ops_.size();
    r.outs.resize(n);
    r.ys.resize(n);
    r.masks.assign(n, nullptr);
    r.ranks.resize(n + 1);
    r.widths.resize(n + 1);
    r.steps.resize(n + 1);
    r.steps[0] = Tn;
    r.ranks[0] = ids ? 3 : static_cast<int>(x.ndim());
    r.widths[0] = ids ? 0 : x.shape(x.ndim() - 1);
    r.out_mask = mask ? py::object(*mask) : py::object(py::none());
    Index directions_size = 0;
    for (size_t i = 0; i < n; ++i) {
      const Op<T>& op = ops_[i];
      int rank = r.ranks[i];
      Index width = r.widths[i], Ti = r.steps[i], steps = Ti;
      if (op.kind != OpKind::Dense && op.kind != OpKind::LayerNorm && rank != 3)
        throw py::value_error(op.name + ": expected a 3-D input (batch, timesteps, features)");
      if (op.kind == OpKind::Masking || (op.kind == OpKind::Embedding && op.mask_zero)) {
        r.computed_mask = new_array<bool>({B, Ti});
        r.masks[i] = static_cast<std::uint8_t*>(r.computed_mask.mutable_data());
        r.out_mask = r.computed_mask;
      } else if (op.kind == OpKind::Embedding) {
        r.out_mask = py::none();
      } else if (op.kind == OpKind::Recurrent || op.kind == OpKind::Bidirectional) {
        for (Stream<T>* st : {op.stream, op.backward}) {
          if (!st) continue;
          if (st->input_dim() != width)
            throw py::value_error(op.name + ": expected " + std::to_string(st->input_dim()) +
                                  " input features, got " + std::to_string(width));
          if (st->fixed_batch() >= 0 && st->fixed_batch() != B)
            throw py::value_error(op.name + ": the layer is stateful with batch size " +
                                  std::to_string(st->fixed_batch()) + "; got input batch size " +
                                  std::to_string(B));
        }
        if (op.backward)
          directions_size =
              std::max(directions_size,
                       checked_elements({B, Ti, op.stream->out_width() + op.backward->out_width()},
                                        "output"));
        if (!op.return_sequences) {
          rank = 2;
          r.out_mask = py::none();
        }
      } else if (op.kind == OpKind::Conv1D || op.kind == OpKind::Pool1D) {
        if (op.kind == OpKind::Conv1D && op.width_in != width)
          throw py::value_error(op.name + ": expected " + std::to_string(op.width_in) +
                                " input channels, got " + std::to_string(width));
        const Window w = window_for(op, Ti);
        steps = w.steps(Ti);
        if (steps <= 0)
          throw py::value_error(op.name + ": " + std::to_string(Ti) +
                                " steps are fewer than the window spans");
        checked_elements({B, w.padded(Ti), width}, "padded input");
        r.out_mask = py::none();  // dropped, as Keras's Conv1D and pooling drop it
      } else if (op.width_in != width && (op.kind == OpKind::Dense || op.width_in)) {
        throw py::value_error(op.name + ": expected " + std::to_string(op.width_in) +
                              " input features, got " + std::to_string(width));
      }
      if (op.kind != OpKind::Masking && op.kind != OpKind::LayerNorm && op.kind != OpKind::Pool1D)
        width = op.width_out;
      checked_elements({B, steps, width}, "output");
      auto out = rank == 3 ? new_array<T>({B, steps, width}) : new_array<T>({B, width});
      r.ys[i] = out.mutable_data();
      r.outs[i] = std::move(out);
      r.ranks[i + 1] = rank, r.widths[i + 1] = width, r.steps[i + 1] = steps;
    }
    r.directions.reserve_resize(static_cast<size_t>(directions_size));
  }

  // Runs the ops on a prepared run, without the GIL. `states`, when not empty, gives each
  // recurrent op (by index) the buffers its states start from and end in (the same buffer
  // for both: a stream reads its initial states before it writes the final ones).
  void execute(Run& r, const std::vector<std::array<T*, max_states>>& states) const {
    const Index B = r.B;
    const T* in = r.x;
    const std::uint8_t* m = r.mask;
    for (size_t i = 0; i < ops_.size(); ++i) {
      const Op<T>& op = ops_[i];
      const Index Tn = r.steps[i];  // the op's input timesteps
      T* y = r.ys[i];
      const Index rows = r.ranks[i] == 3 ? B * Tn : B, D = r.widths[i];
      switch (op.kind) {
        case OpKind::Masking: {
          std::uint8_t* mm = r.masks[i];
          for (Index row = 0; row < rows; ++row) {
            const T* src = in + row * D;
            bool keep = false;  // NaN != v, as in NumPy
            for (Index k = 0; k < D && !keep; ++k) keep = !(src[k] == op.mask_value);
            mm[row] = keep;
            if (keep)
              std::copy_n(src, D, y + row * D);
            else
              std::fill_n(y + row * D, D, T(0));
          }
          m = mm;
          break;
        }
        case OpKind::Embedding: {
          const Index E = op.width_out;
          for (Index row = 0; row < B * Tn; ++row)
            std::copy_n(op.W + r.ids[row] * E, E, y + row * E);
          if (r.masks[i])
            for (Index row = 0; row < B * Tn; ++row) r.masks[i][row] = r.ids[row] != 0;
          m = r.masks[i];
          break;
        }
        case OpKind::Recurrent: {
          std::array<const T*, max_states> initial{};
          std::array<T*, max_states> finals{};
          if (!states.empty())
            for (int k = 0; k < max_states; ++k) initial[k] = finals[k] = states[i][k];
          op.stream->compute(in, B, Tn, m, op.return_sequences, initial, y, finals);
          if (m && op.return_sequences && op.zero_output_for_mask)
            zero_masked(y, m, B, Tn, op.width_out, op.stream->go_backwards());
          if (!op.return_sequences) m = nullptr;
          break;
        }
        case OpKind::Bidirectional:
          bidirectional(op, in, B, Tn, m, y, r.directions.data());
          if (!op.return_sequences) m = nullptr;
          break;
        case OpKind::Dense:
          dense_forward(in, rows, D, op.W, op.width_out, op.b, op.act, y, get_num_threads());
          break;
        case OpKind::LayerNorm:
          layer_norm_forward(in, rows, D, op.gamma, op.beta, op.epsilon, op.rms_scaling, y,
                             get_num_threads());
          break;
        case OpKind::Conv1D:
          conv1d_forward(in, B, Tn, D, op.W, op.width_out, op.groups, op.b, window_for(op, Tn),
                         op.act, y, get_num_threads());
          m = nullptr;
          break;
        case OpKind::Pool1D:
          pool1d_forward(in, B, Tn, D, window_for(op, Tn), op.average, y, get_num_threads());
          m = nullptr;
          break;
      }
      in = y;
    }
  }

  // The ids of an Embedding's input (B, T), int32 or int64; one outside [0, V) is an error
  // (the layer's own call then raises, naming where it is).
  static std::vector<Index> checked_ids(const py::array& x, Index vocab) {
    const Index count = x.shape(0) * x.shape(1);
    std::vector<Index> out(static_cast<size_t>(count));
    auto read = [&](auto* p) {
      for (Index r = 0; r < count; ++r) {
        const Index id = static_cast<Index>(p[r]);
        if (id < 0 || id >= vocab)
          throw py::value_error("x: id " + std::to_string(p[r]) + " is out of range for " +
                                std::to_string(vocab) + " embeddings");
        out[static_cast<size_t>(r)] = id;
      }
    };
    check_contiguous(x, "x");
    if (has_dtype<std::int64_t>(x))
      read(static_cast<const std::int64_t*>(x.data()));
    else if (has_dtype<std::int32_t>(x))
      read(static_cast<const std::int32_t*>(x.data()));
    else
      throw py::type_error("x: expected int32 or int64 ids, got " + dtype_str(x));
    return out;
  }

  // y = merge(forward(x), flip(backward(x))) on (B, T, .) or (B, .); `scratch` (B, T,
  // hf + hb) holds the backward stream's output, and the forward one's for concat (the other
  // merges write it into y and merge in place).
  static void bidirectional(const Op<T>& op, const T* x, Index B, Index Tn, const std::uint8_t* m,
                            T* y, T* scratch) {
    const Index hf = op.stream->out_width(), hb = op.backward->out_width(), W = op.width_out;
    const bool seq = op.return_sequences;
    T* yb = scratch;
    T* yf = op.merge == Merge::Concat ? scratch + B * (seq ? Tn : 1) * hb : y;
    op.stream->compute(x, B, Tn, m, seq, {}, yf, {});
    op.backward->compute(x, B, Tn, m, seq, {}, yb, {});
    if (m && seq) {
      if (op.zero_output_for_mask) zero_masked(yf, m, B, Tn, hf, op.stream->go_backwards());
      if (op.zero_backward) zero_masked(yb, m, B, Tn, hb, op.backward->go_backwards());
    }
    const Index steps = seq ? Tn : 1;
    for (Index b = 0; b < B; ++b)
      for (Index s = 0; s < steps; ++s) {
        const T* f = yf + (b * steps + s) * hf;
        const T* r = yb + (b * steps + (seq ? steps - 1 - s : s)) * hb;  // flipped back
        T* o = y + (b * steps + s) * W;
        switch (op.merge) {
          case Merge::Concat:
            std::copy_n(f, hf, o);
            std::copy_n(r, hb, o + hf);
            break;
          case Merge::Sum:
            for (Index j = 0; j < W; ++j) o[j] = f[j] + r[j];
            break;
          case Merge::Ave:
            for (Index j = 0; j < W; ++j) o[j] = (f[j] + r[j]) / T(2);
            break;
          case Merge::Mul:
            for (Index j = 0; j < W; ++j) o[j] = f[j] * r[j];
            break;
        }
      }
  }

  std::vector<Op<T>> ops_;
  py::list refs_;
};

template <class T>
void bind_chain(py::module_& m, const char* name) {
  py::class_<Chain<T>>(m, name, py::module_local())
      .def("run", &Chain<T>::run, py::arg("x"), py::arg("mask") = py::none(),
           "Run the chain on x (batch, timesteps, features) or (batch, features), with an "
           "optional (batch, timesteps) bool mask. Returns (output, mask or None).")
      .def("run_slots", &Chain<T>::run_slots, py::arg("x"), py::arg("slots"), py::arg("table"),
           "A stream pool's step: run x (batch, timesteps, features), or (batch, timesteps) "
           "ids, with the recurrent ops starting from rows `slots` (int64, distinct) of the "
           "state table (one (capacity, width) array per state of each recurrent op, in op "
           "order) and leaving their final states there. Returns the output.");
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
      "zero_output_for_mask), ('dense', kernel, bias or None, activation), ('embedding', "
      "embeddings, mask_zero) (first only; x is then int ids), ('bidirectional', "
      "forward stream, backward stream, return_sequences, zero_forward, zero_backward, "
      "merge_mode) and ('layer_norm', gamma or None, beta or None, epsilon, rms_scaling), in "
      "float64 or float32. The GIL is released once per run.");
}

}  // namespace rnncore::bind
