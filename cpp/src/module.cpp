// The compiled module. It is built once per instruction-set level (RNNCORE_MODULE names it:
// _core_baseline, _core_x86_64_v3, ...); rnncore/_core.py imports the best one the CPU runs.
#include "bindings.hpp"

PYBIND11_MODULE(RNNCORE_MODULE, m) {
  m.doc() = "rnncore's compiled core: recurrent kernels over NumPy buffers.";
  rnncore::bind::register_info(m);
  rnncore::bind::register_rnn(m);
  rnncore::bind::register_dense(m);
  rnncore::bind::register_stream(m);
  rnncore::bind::register_chain(m);
  rnncore::bind::register_train(m);
  rnncore::bind::register_windows(m);
  rnncore::bind::register_norm(m);
}
