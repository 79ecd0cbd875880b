// Bindings of the training kernels (embedding gradient, fused optimizer step): checks, buffer
// maps, GIL release. Compiled on its own with -ffp-contract=off (CMakeLists.txt), as
// rnncore/optimizers.hpp requires.
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "checks.hpp"
#include "rnncore/embedding.hpp"
#include "rnncore/optimizers.hpp"
#include "rnncore/threads.hpp"

namespace rnncore::bind {
namespace {

template <class T, class I>
py::array embedding_backward_t(const py::array& ids, const py::array& dy, Index V) {
  const Index N = ids.shape(0), D = dy.shape(1);
  const T* dyp = float_input<T>(dy, "dy", {N, D}, "dy");
  const I* idp = static_cast<const I*>(ids.data());
  const Index bad = first_id_out_of_range(idp, N, V);
  if (bad >= 0)
    throw py::value_error("ids: id " + std::to_string(static_cast<long long>(idp[bad])) +
                          " at position " + std::to_string(bad) +
                          " is out of range for input_dim=" + std::to_string(V));
  auto dE = new_array<T>({V, D});
  T* out = dE.mutable_data();
  {
    py::gil_scoped_release release;
    embedding_backward(idp, N, dyp, D, V, out, get_num_threads());
  }
  return dE;
}

template <class T>
py::array embedding_backward_f(const py::array& ids, const py::array& dy, Index V) {
  if (has_dtype<std::int64_t>(ids)) return embedding_backward_t<T, std::int64_t>(ids, dy, V);
  if (has_dtype<std::int32_t>(ids)) return embedding_backward_t<T, std::int32_t>(ids, dy, V);
  throw py::type_error("ids: expected dtype int32 or int64, got " + dtype_str(ids));
}

OptimizerKind kind_from_name(const std::string& name) {
  if (name == "sgd") return OptimizerKind::SGD;
  if (name == "adam") return OptimizerKind::Adam;
  if (name == "rmsprop") return OptimizerKind::RMSprop;
  throw py::value_error("kind: expected 'sgd', 'adam' or 'rmsprop', got '" + name + "'");
}

size_t slot_count(const OptimizerStep& s) {
  switch (s.kind) {
    case OptimizerKind::SGD:
      return s.momentum != 0 ? 1 : 0;
    case OptimizerKind::Adam:
      return s.amsgrad ? 3 : 2;
    case OptimizerKind::RMSprop:
      return 1 + (s.momentum > 0) + s.centered;
  }
  return 0;
}

// Variable k's arrays, checked (dtype of its value, shape, C order) and mapped.
template <class T>
VariableUpdate<T> variable_update(const py::array& w, const py::array& g,
                                  const std::vector<py::array>& slots, size_t k) {
  const std::string at = "[" + std::to_string(k) + "]";
  const std::vector<Index> shape = shape_of(w);
  check_contiguous(w, ("variables" + at).c_str());
  if (!w.writeable()) throw py::value_error("variables" + at + ": the array is read-only");
  VariableUpdate<T> u;
  u.w = static_cast<T*>(py::array(w).mutable_data());  // a new handle to the same buffer
  u.n = static_cast<Index>(w.size());
  const std::string ref = "variables" + at;
  u.g = float_input<T>(g, ("gradients" + at).c_str(), shape, ref.c_str());
  for (size_t j = 0; j < slots.size(); ++j) {
    const std::string name = "slots" + at + "[" + std::to_string(j) + "]";
    float_input<T>(slots[j], name.c_str(), shape, ref.c_str());
    if (!slots[j].writeable()) throw py::value_error(name + ": the array is read-only");
    u.slot[j] = static_cast<T*>(py::array(slots[j]).mutable_data());
  }
  return u;
}

// One step of every variable; returns -1, or the index of the first variable whose gradient
// is not finite, in which case nothing was written.
Index optimizer_update_py(const std::string& kind, const std::vector<py::array>& variables,
                          const std::vector<py::array>& gradients,
                          const std::vector<std::vector<py::array>>& slots,
                          const std::vector<std::optional<double>>& decay,
                          const std::vector<std::optional<double>>& clip_scale,
                          const OptimizerStep& base) {
  OptimizerStep step = base;
  step.kind = kind_from_name(kind);
  const size_t n = variables.size();
  auto count = [n](size_t got, const char* name) {
    if (got != n)
      throw py::value_error(std::string(name) + ": expected " + std::to_string(n) +
                            " entries (one per variable), got " + std::to_string(got));
  };
  count(gradients.size(), "gradients");
  count(slots.size(), "slots");
  count(decay.size(), "decay");
  count(clip_scale.size(), "clip_scale");
  const size_t want = slot_count(step);
  // Variables of both float dtypes may share a step: each dtype is one group, `index` maps a
  // group's entry back to its position in the call.
  std::vector<VariableUpdate<float>> f32;
  std::vector<VariableUpdate<double>> f64;
  std::vector<Index> index32, index64;
  for (size_t k = 0; k < n; ++k) {
    if (slots[k].size() != want)
      throw py::value_error("slots[" + std::to_string(k) + "]: expected " + std::to_string(want) +
                            " arrays for this optimizer, got " + std::to_string(slots[k].size()));
    const std::string name = "variables[" + std::to_string(k) + "]";
    auto fill = [&](auto& u) {
      u.has_decay = decay[k].has_value();
      u.decay = decay[k].value_or(1.0);
      u.has_clip_scale = clip_scale[k].has_value();
      u.clip_scale = clip_scale[k].value_or(1.0);
    };
    if (is_float64(variables[k], name.c_str())) {
      f64.push_back(variable_update<double>(variables[k], gradients[k], slots[k], k));
      fill(f64.back());
      index64.push_back(static_cast<Index>(k));
    } else {
      f32.push_back(variable_update<float>(variables[k], gradients[k], slots[k], k));
      fill(f32.back());
      index32.push_back(static_cast<Index>(k));
    }
  }
  py::gil_scoped_release release;
  const int threads = get_num_threads();
  const Index bad32 = first_non_finite(f32, threads), bad64 = first_non_finite(f64, threads);
  if (bad32 >= 0 || bad64 >= 0) {
    const Index a = bad32 >= 0 ? index32[bad32] : static_cast<Index>(n);
    const Index b = bad64 >= 0 ? index64[bad64] : static_cast<Index>(n);
    return std::min(a, b);
  }
  optimizer_update(step, f32, threads);
  optimizer_update(step, f64, threads);
  return -1;
}

}  // namespace

void register_train(py::module_& m) {
  m.def(
      "embedding_backward",
      [](const py::array& ids, const py::array& dy, Index input_dim) -> py::array {
        check_ndim(ids, "ids", 1, "(positions,)");
        check_contiguous(ids, "ids");
        check_ndim(dy, "dy", 2, "(positions, output_dim)");
        if (input_dim < 1)
          throw py::value_error("input_dim: expected >= 1, got " + std::to_string(input_dim));
        checked_elements({input_dim, dy.shape(1)}, "d_embeddings");
        return is_float64(dy, "dy") ? embedding_backward_f<double>(ids, dy, input_dim)
                                    : embedding_backward_f<float>(ids, dy, input_dim);
      },
      py::arg("ids"), py::arg("dy"), py::arg("input_dim"),
      "Embedding's weight gradient (input_dim, output_dim): the rows of dy (positions, "
      "output_dim) summed into the rows ids (positions,) names, each id's rows in position "
      "order (np.add.at's sums, bit for bit, whatever the thread count).");
  m.def(
      "optimizer_update",
      [](const std::string& kind, const std::vector<py::array>& variables,
         const std::vector<py::array>& gradients, const std::vector<std::vector<py::array>>& slots,
         double learning_rate, const std::vector<std::optional<double>>& decay,
         const std::vector<std::optional<double>>& clip_scale, double clipvalue, double momentum,
         bool nesterov, double one_minus_beta_1, double one_minus_beta_2, double alpha,
         bool amsgrad, double epsilon, double rho, double one_minus_rho, bool centered) -> Index {
        OptimizerStep s;
        s.learning_rate = learning_rate;
        s.clipvalue = clipvalue;
        s.momentum = momentum;
        s.nesterov = nesterov;
        s.one_minus_beta_1 = one_minus_beta_1;
        s.one_minus_beta_2 = one_minus_beta_2;
        s.alpha = alpha;
        s.amsgrad = amsgrad;
        s.epsilon = epsilon;
        s.rho = rho;
        s.one_minus_rho = one_minus_rho;
        s.centered = centered;
        return optimizer_update_py(kind, variables, gradients, slots, decay, clip_scale, s);
      },
      py::arg("kind"), py::arg("variables"), py::arg("gradients"), py::arg("slots"), py::kw_only(),
      py::arg("learning_rate"), py::arg("decay"), py::arg("clip_scale"), py::arg("clipvalue") = 0.0,
      py::arg("momentum") = 0.0, py::arg("nesterov") = false, py::arg("one_minus_beta_1") = 0.0,
      py::arg("one_minus_beta_2") = 0.0, py::arg("alpha") = 0.0, py::arg("amsgrad") = false,
      py::arg("epsilon") = 0.0, py::arg("rho") = 0.0, py::arg("one_minus_rho") = 0.0,
      py::arg("centered") = false,
      "One optimizer step ('sgd', 'adam', 'rmsprop') of every variable, in place: values, "
      "slots (the optimizer's order) and gradients per variable, float32 or float64; decay "
      "(1 - weight_decay lr) and clip_scale (clipping by norm) per variable or None; clipvalue "
      "> 0 clips element-wise. The scalars are float64, as Python computes them. Returns -1, "
      "or the index of the first variable whose gradient is not finite (then nothing is "
      "written).");
}

}  // namespace rnncore::bind
