// Build and machine facts, and the thread count setting.
#include <Eigen/Core>

#include <limits>
#include <string>

#include "bindings.hpp"
#include "rnncore/threads.hpp"

namespace rnncore::bind {

namespace py = pybind11;

namespace {

// Whether this CPU (and its OS) runs code built for an x86-64 micro-architecture level.
// Answered by the baseline module before a faster one is imported.
bool cpu_supports(const std::string& level) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool v2 = __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("popcnt") &&
                  __builtin_cpu_supports("ssse3");
  const bool v3 = v2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vl");
  if (level == "x86_64_v2") return v2;
  if (level == "x86_64_v3") return v3;
  if (level == "x86_64_v4") return v4;
#endif
  return level == "baseline" || level == "native";
}

// The vector extensions this module's Eigen kernels were compiled for.
std::string simd_in_use() {
  std::string s;
  auto add = [&s](const char* name) { s += s.empty() ? name : std::string(" ") + name; };
#if defined(EIGEN_VECTORIZE_AVX512)
  add("AVX512");
#endif
#if defined(EIGEN_VECTORIZE_AVX2)
  add("AVX2");
#endif
#if defined(EIGEN_VECTORIZE_FMA)
  add("FMA");
#endif
#if defined(EIGEN_VECTORIZE_AVX)
  add("AVX");
#endif
#if defined(EIGEN_VECTORIZE_SSE4_2)
  add("SSE4.2");
#endif
#if defined(EIGEN_VECTORIZE_SSE2)
  add("SSE2");
#endif
#if defined(EIGEN_VECTORIZE_NEON)
  add("NEON");
#endif
  return s.empty() ? "none" : s;
}

// The CPU's low-precision instructions, for build_info (only the portable path uses any of
// them today: none of these; they are reported so a user can tell what a faster path would
// find). GCC 12 / Clang 16 names.
py::dict lowp_cpu_features() {
  py::dict d;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  d["avx512_bf16"] = __builtin_cpu_supports("avx512bf16") != 0;
  d["avx512_vnni"] = __builtin_cpu_supports("avx512vnni") != 0;
  d["avx_vnni"] = __builtin_cpu_supports("avxvnni") != 0;
  d["amx_bf16"] = __builtin_cpu_supports("amx-bf16") != 0;
  d["amx_int8"] = __builtin_cpu_supports("amx-int8") != 0;
#endif
  return d;
}

}  // namespace

void register_info(py::module_& m) {
  m.attr("isa") = RNNCORE_ISA;
  m.attr("has_openmp") = rnncore::has_openmp();
  m.attr("simd") = simd_in_use();
  m.attr("eigen_version") = std::to_string(EIGEN_WORLD_VERSION) + "." +
                            std::to_string(EIGEN_MAJOR_VERSION) + "." +
                            std::to_string(EIGEN_MINOR_VERSION);
  // The low-precision kernels built in (lowp.hpp): weights widened to float32 in registers
  // at this module's vector width.
  m.attr("lowp_paths") = py::make_tuple("portable");
  m.def("lowp_cpu_features", &lowp_cpu_features,
        "The CPU's bf16/int8 instructions (avx512_bf16, avx512_vnni, avx_vnni, amx_bf16, "
        "amx_int8): what this CPU has, not what rnncore uses.");
  m.def("cpu_supports", &cpu_supports, py::arg("level"),
        "Whether this CPU runs code compiled for an instruction-set level "
        "('baseline', 'x86_64_v3', 'x86_64_v4').");
  m.def("get_num_threads", &rnncore::get_num_threads,
        "Threads the kernels use (set_num_threads, else OMP_NUM_THREADS, else all cores).");
  m.def(
      "set_num_threads",
      [](const py::object& n) {
        // A Python integer (or one NumPy's integers convert to), never a bool or a float:
        // 2.5 threads is a mistake to report, not to round.
        if (PyBool_Check(n.ptr()) || !PyIndex_Check(n.ptr()))
          throw py::type_error("set_num_threads: expected an integer n, got " +
                               py::repr(n).cast<std::string>() + " (" + Py_TYPE(n.ptr())->tp_name +
                               ")");
        const py::int_ value(n);
        const std::string shown = py::str(value).cast<std::string>();
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
        if (overflow < 0 || (overflow == 0 && v < 0))
          throw py::value_error("set_num_threads: expected n >= 0, got " + shown);
        if (overflow > 0 || v > std::numeric_limits<int>::max())
          throw py::value_error("set_num_threads: expected n <= " +
                                std::to_string(std::numeric_limits<int>::max()) + ", got " + shown);
        rnncore::set_num_threads(static_cast<int>(v));
      },
      py::arg("n"), "Set the threads the kernels use; 0 restores the default.");
}

}  // namespace rnncore::bind
