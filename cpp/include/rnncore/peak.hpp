// The machine's measured peak FMA rate: a loop of independent vector FMAs on registers only,
// no memory traffic, the ceiling every kernel of this module is read against (bench/).
#pragma once

#include <chrono>
#include <cstring>

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
// once; the best of `repeats` timings of about `seconds` each.
template <class T>
double peak_flops(int threads, double seconds = 0.05, int repeats = 3) {
  constexpr int ACC = vector_bytes == 64 ? 16 : 12;
  threads = std::max(threads, 1);
  using clock = std::chrono::steady_clock;
  long iters = 1 << 14;
  volatile T sink = 0;
  for (;;) {  // calibrate on one thread
    const auto t0 = clock::now();
    sink = sink + detail::fma_chains<T>(iters, T(1));
    if (std::chrono::duration<double>(clock::now() - t0).count() > seconds / 4) break;
    iters *= 2;
  }
  iters *= 4;
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = clock::now();
    parallel_for(threads, threads,
                 [&](Index i) { sink = sink + detail::fma_chains<T>(iters, T(1) + T(i)); });
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    best = std::max(best, 2.0 * Kernel<T>::lanes * ACC * static_cast<double>(iters) * threads / s);
  }
  return best;
}

}  // namespace rnncore
