// Registration functions of the binding files; module.cpp only calls these.
#pragma once

#include <pybind11/pybind11.h>

namespace rnncore::bind {

void register_info(pybind11::module_& m);
void register_rnn(pybind11::module_& m);
void register_dense(pybind11::module_& m);
void register_stream(pybind11::module_& m);
void register_chain(pybind11::module_& m);
void register_train(pybind11::module_& m);
void register_windows(pybind11::module_& m);
void register_norm(pybind11::module_& m);

}  // namespace rnncore::bind
