// Bindings of the stream (stream.hpp), the one object the recurrent layers call.
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "stream.hpp"

namespace rnncore::bind {
namespace {

template <class T>
void bind_stream(py::module_& m, const char* name) {
  // module_local: each instruction-set module registers its own Stream classes (the C++ type
  // has the same name in all of them, and pybind11 keeps one registry per process).
  py::class_<Stream<T>>(m, name, py::module_local())
      .def("run", &Stream<T>::run, py::arg("x"), py::arg("mask") = py::none(),
           py::arg("return_sequences") = false, py::arg("initial_state") = std::vector<py::array>{},
           py::arg("return_state") = false,
           "Run x (batch, timesteps, input_dim) from initial_state if given (a list; [] for "
           "none), else from the carried states; carry the final states on. Returns the "
           "output sequence or the last output, or with return_state the tuple (output, "
           "*final states).")
      .def("get_states", &Stream<T>::get_states,
           "Copies of the carried states ([] without a batch size).")
      .def("set_states", &Stream<T>::set_states, py::arg("states"),
           "Set the carried states ([] resets them to zeros).")
      .def("repack", &Stream<T>::repack,
           "Read the weights again before the next call (after modifying them in place).")
      .def_property_readonly("batch_size", &Stream<T>::batch_size,
                             "Rows of the carried states, or None when nothing is carried.")
      .def_property_readonly("go_backwards", &Stream<T>::go_backwards)
      .def_property_readonly("quantize", &Stream<T>::quantize,
                             "The weights' low precision: 'bf16', 'int8', or '' (none).");
}

}  // namespace

void register_stream(py::module_& m) {
  bind_stream<float>(m, "Stream32");
  bind_stream<double>(m, "Stream64");
  m.def(
      "make_stream",
      [](const std::string& cell, const py::array& kernel, const py::array& recurrent_kernel,
         std::optional<py::array> bias, std::optional<py::ssize_t> batch_size,
         const std::string& activation, const std::string& recurrent_activation, bool reset_after,
         bool go_backwards, std::optional<py::array> peephole, std::optional<py::array> projection,
         double cell_clip, bool input_forget, const std::string& output_activation,
         const std::string& quantize, std::optional<py::array> kernel_scale,
         std::optional<py::array> recurrent_scale) -> py::object {
        Variants v{std::move(peephole), std::move(projection), cell_clip, input_forget,
                   output_activation};
        const CellSpec spec = make_spec(cell, activation, recurrent_activation, reset_after, v);
        const Precision precision = precision_from_name(quantize);
        if (precision != Precision::F32)  // float32 models only
          return py::cast(new Stream<float>(spec, kernel, recurrent_kernel, std::move(bias),
                                            batch_size, go_backwards, std::move(v), precision,
                                            std::move(kernel_scale), std::move(recurrent_scale)),
                          py::return_value_policy::take_ownership);
        if (is_float64(recurrent_kernel, "recurrent_kernel"))
          return py::cast(new Stream<double>(spec, kernel, recurrent_kernel, std::move(bias),
                                             batch_size, go_backwards, std::move(v)),
                          py::return_value_policy::take_ownership);
        return py::cast(new Stream<float>(spec, kernel, recurrent_kernel, std::move(bias),
                                          batch_size, go_backwards, std::move(v)),
                        py::return_value_policy::take_ownership);
      },
      py::arg("cell"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("batch_size"), py::arg("activation"), py::arg("recurrent_activation"),
      py::arg("reset_after"), py::arg("go_backwards"), py::arg("peephole") = py::none(),
      py::arg("projection") = py::none(), py::arg("cell_clip") = 0.0,
      py::arg("input_forget") = false, py::arg("output_activation") = "", py::arg("quantize") = "",
      py::arg("kernel_scale") = py::none(), py::arg("recurrent_scale") = py::none(),
      "A stream over one layer's weights (kept by reference; after modifying them in place "
      "call repack()) carrying states of batch_size rows between calls, or nothing when "
      "batch_size is None. With quantize='bf16' kernel and recurrent_kernel are uint16 "
      "(bfloat16 bits), with 'int8' int8 with float32 kernel_scale and recurrent_scale "
      "(one per column); float32 inference only.");
}

}  // namespace rnncore::bind
