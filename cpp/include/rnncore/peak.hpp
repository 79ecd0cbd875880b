// The machine's measured peak FMA rate: a loop of independent vector FMAs on registers only,
// no memory traffic, the ceiling every kernel of this module is read against (bench/).
#pragma once

#include <time.h>

#include <cstring>
#include <vector>

#include "rnncore/packed_gemm.hpp"
#include "rnncore/threads.hpp"

namespace rnncore {

namespace detail {

// `iters` rounds of ACC independent FMA chains acc = acc * m + a, in the module's vector
// width. ACC covers the FMA latency times the FMA ports (4 cycles x 2 ports = 8 on current
// x86 cores) with room to spare, and stays within the register file (16 ymm, 32 zmm).
template <class T>
T fma_chains(long iters, T seed) {
  using V = typename Kernel<T>::vec;
  constexpr int ACC = vector_bytes == 64 ? 16 : 12;
  V acc[ACC], m, a;
  for (int i = 0; i < ACC; ++i) acc[i] = V{} + seed * T(i + 1);
  m = V{} + T(0.999999), a = V{} + T(1e-7);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < ACC; ++i) acc[i] = acc[i] * m + a;  // one FMA (contracted) per chain
  }
  T s = 0;
  for (int i = 0; i < ACC; ++i) {
    T lanes[Kernel<T>::lanes];
    std::memcpy(lanes, &acc[i], sizeof(V));
    for (T v : lanes) s += v;
  }
  return s;
}

}  // namespace detail

// Peak FLOP/s (2 per FMA lane) of `threads` threads each running the register-only loop at
// once: the sum of each thread's rate over its own CPU time (so time the OS gives other
// processes on a shared machine does not count against it), the best of `repeats` runs of
// about `seconds` each.
template <class T>
double peak_flops(int threads, double seconds = 0.05, int repeats = 3) {
  constexpr int ACC = vector_bytes == 64 ? 16 : 12;
  constexpr double flops_per_iter = 2.0 * Kernel<T>::lanes * ACC;
  threads = std::max(threads, 1);
  auto cpu_seconds = [] {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  };
  long iters = 1 << 14;
  volatile T sink = 0;
  for (;;) {  // calibrate on one thread
    const double t0 = cpu_seconds();
    sink = sink + detail::fma_chains<T>(iters, T(1));
    if (cpu_seconds() - t0 > seconds / 4) break;
    iters *= 2;
  }
  iters *= 4;
  double best = 0;
  std::vector<double> rate(static_cast<size_t>(threads));
  for (int r = 0; r < repeats; ++r) {
    parallel_for(threads, threads, [&](Index i) {
      const double t0 = cpu_seconds();
      sink = sink + detail::fma_chains<T>(iters, T(1) + T(i));
      rate[static_cast<size_t>(i)] =
          flops_per_iter * static_cast<double>(iters) / (cpu_seconds() - t0);
    });
    double sum = 0;
    for (double v : rate) sum += v;
    best = std::max(best, sum);
  }
  return best;
}

}  // namespace rnncore
