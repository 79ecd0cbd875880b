// Build and machine facts, and the thread count setting.
#include <Eigen/Core>

#include <atomic>
#include <limits>
#include <string>

#include "bindings.hpp"
#include "rnncore/lowp.hpp"
#include "rnncore/packed_gemm.hpp"
#include "rnncore/peak.hpp"
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

// The CPU's low-precision instructions, for build_info (lowp_x86.hpp uses avx512_bf16,
// avx512_vnni and avx_vnni where its module has the kernel; AMX is not used). GCC 12 /
// Clang 16 names.
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
  m.attr("simd") = simd_in_use();
  m.attr("eigen_version") = std::to_string(EIGEN_WORLD_VERSION) + "." +
                            std::to_string(EIGEN_MAJOR_VERSION) + "." +
                            std::to_string(EIGEN_MINOR_VERSION);
  // The low-precision kernels (lowp.hpp, lowp_x86.hpp) this module has and this CPU runs,
  // lowest first; set_lowp_path caps the one weights packed from then on take.
  py::list paths;
  for (rnncore::LowpPath p : rnncore::lowp_all_paths)
    if (rnncore::lowp_path_runs(p)) paths.append(rnncore::lowp_path_name(p));
  m.attr("lowp_paths") = py::tuple(paths);
  m.def(
      "set_lowp_path",
      [](const std::string& name) {
        std::string known;
        for (rnncore::LowpPath p : rnncore::lowp_all_paths) {
          if (!rnncore::lowp_path_runs(p)) continue;
          if (name == rnncore::lowp_path_name(p)) {
            rnncore::lowp_path_cap() = static_cast<int>(p);
            return;
          }
          known += std::string(known.empty() ? "" : ", ") + "'" + rnncore::lowp_path_name(p) + "'";
        }
        throw py::value_error("set_lowp_path: expected name one of " + known +
                              " (the paths this module and CPU run), got '" + name + "'");
      },
      py::arg("name"),
      "Cap the low-precision path: weights quantized and packed from now on take, per mode, "
      "the best path at or below `name` that serves the mode ('portable' serves both, "
      "'avx512_bf16' bf16, 'avx512_vnni' and 'avx_vnni' int8). Weights already packed (a "
      "stream, a model's chain) keep theirs.");
  m.def(
      "lowp_path_for",
      [](const std::string& mode) {
        if (mode != "bf16" && mode != "int8")
          throw py::value_error("lowp_path_for: expected mode 'bf16' or 'int8', got '" + mode +
                                "'");
        return std::string(rnncore::lowp_path_name(rnncore::lowp_path_for(
            mode == "bf16" ? rnncore::Precision::BF16 : rnncore::Precision::Int8)));
      },
      py::arg("mode"), "The path weights of `mode` ('bf16' or 'int8') packed now take.");
  m.def("lowp_cpu_features", &lowp_cpu_features,
        "The CPU's bf16/int8 instructions (avx512_bf16, avx512_vnni, avx_vnni, amx_bf16, "
        "amx_int8): what this CPU has, not what rnncore uses.");
  m.def("cpu_supports", &cpu_supports, py::arg("level"),
        "Whether this CPU runs code compiled for an instruction-set level "
        "('baseline', 'x86_64_v3', 'x86_64_v4').");
  m.def(
      "kernel_info",
      []() {
        const rnncore::CacheSizes& c = rnncore::cache_sizes();
        py::dict d;
        d["l1d_bytes"] = c.l1d;
        d["l2_bytes"] = c.l2;
        d["l3_bytes"] = c.l3;
        d["cache_source"] = c.source;
        d["vector_bytes"] = rnncore::vector_bytes;
        auto add = [&d](const char* name, auto blocking, int mr, int nr) {
          py::dict b;
          b["MR"] = mr, b["NR"] = nr, b["KC"] = blocking.KC, b["MC"] = blocking.MC;
          d[name] = b;
        };
        add("float32", rnncore::blocking<float>(), rnncore::Kernel<float>::MR,
            rnncore::Kernel<float>::NR);
        add("float64", rnncore::blocking<double>(), rnncore::Kernel<double>::MR,
            rnncore::Kernel<double>::NR);
        return d;
      },
      "The matrix kernel's blocking: cache sizes the OS reports (bytes, and where they were "
      "read: sysconf, sysfs, or default when neither reported them), the vector width, and per "
      "dtype the register block MR x NR, the panel chunk KC and the A block MC.");
  m.def(
      "set_blocking",
      [](const std::string& dtype, rnncore::Index kc, rnncore::Index mc) {
        if (kc < 0 || mc < 0 || kc > 1 << 16 || mc > 1 << 16)
          throw py::value_error("set_blocking: expected 0 <= kc, mc <= 65536, got kc=" +
                                std::to_string(kc) + ", mc=" + std::to_string(mc));
        if (dtype == "float32")
          rnncore::set_blocking<float>(kc, mc);
        else if (dtype == "float64")
          rnncore::set_blocking<double>(kc, mc);
        else
          throw py::value_error("set_blocking: expected dtype 'float32' or 'float64', got '" +
                                dtype + "'");
      },
      py::arg("dtype"), py::arg("kc"), py::arg("mc"),
      "For tuning: the matrix kernel's KC and MC (MC rounded up to a multiple of MR) for one "
      "dtype; 0 restores the value derived from the cache sizes. Results do not change.");
  m.def(
      "team_check",
      [](long runs, int threads) {
        // Back-to-back runs of 1..9 items (the item count changing every run, where a stale
        // claim of one run could take the next run's items): each item must run exactly
        // once, and none after its run returned. Returns the runs that broke either rule.
        if (runs < 0 || threads < 1)
          throw py::value_error("team_check: expected runs >= 0 and threads >= 1");
        py::gil_scoped_release release;
        long bad = 0;
        std::atomic<int> counts[9];
        for (long r = 0; r < runs; ++r) {
          const rnncore::Index n = 1 + r % 9;
          for (auto& c : counts) c.store(0);
          rnncore::parallel_for(n, threads, [&](rnncore::Index i) {
            for (int spin = 0; spin < int(r % 64); ++spin) rnncore::detail::cpu_relax();
            counts[i].fetch_add(1);
          });
          bool ok = true;
          for (rnncore::Index i = 0; i < 9; ++i) ok = ok && counts[i].load() == (i < n ? 1 : 0);
          rnncore::detail::cpu_relax();  // a late item would land here, counted next
          for (rnncore::Index i = 0; i < 9; ++i) ok = ok && counts[i].load() == (i < n ? 1 : 0);
          bad += !ok;
        }
        return bad;
      },
      py::arg("runs"), py::arg("threads"),
      "For tests: runs the thread team back to back and counts the runs in which an item ran "
      "twice, not at all, or after its run returned (0 expected).");
  m.def(
      "peak_flops",
      [](int threads, const std::string& dtype) {
        if (threads < 1) throw py::value_error("peak_flops: expected threads >= 1");
        py::gil_scoped_release release;
        if (dtype == "float32") return rnncore::peak_flops<float>(threads);
        if (dtype == "float64") return rnncore::peak_flops<double>(threads);
        py::gil_scoped_acquire acquire;
        throw py::value_error("peak_flops: expected dtype 'float32' or 'float64', got '" + dtype +
                              "'");
      },
      py::arg("threads") = 1, py::arg("dtype") = "float32",
      "Measured peak FLOP/s (2 per FMA lane) of a register-only FMA loop in this module's "
      "vector width, on `threads` threads at once (about 0.2 s).");
  m.def("get_num_threads", &rnncore::get_num_threads,
        "Threads the kernels use (set_num_threads, else OMP_NUM_THREADS, else the CPUs this "
        "process may run on).");
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
