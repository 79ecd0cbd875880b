// The one owner of threads: OpenMP when the compiler has it, else a plain serial loop.
#pragma once

#include <algorithm>
#include <atomic>
#include <vector>

#include "rnncore/types.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rnncore {

inline constexpr bool has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

// 0 means "not set": use OpenMP's default (OMP_NUM_THREADS, else the machine's cores).
inline std::atomic<int>& num_threads_setting() {
  static std::atomic<int> n{0};
  return n;
}

inline int get_num_threads() {
  const int n = num_threads_setting().load();
  if (n > 0) return n;
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline void set_num_threads(int n) { num_threads_setting().store(std::max(n, 0)); }

// Split `rows` into at most `threads` contiguous shards of near-equal size; fewer when the
// work would not pay for a thread. Returns the shard boundaries (size = shards + 1).
inline std::vector<Index> split_rows(Index rows, int threads, Index work_per_row) {
  // Below roughly 1 MFLOP per shard a thread costs more than it saves.
  constexpr Index min_work_per_shard = Index(1) << 19;
  Index shards = std::min<Index>(std::max(threads, 1), std::max<Index>(rows, 1));
  const double work = static_cast<double>(rows) * static_cast<double>(work_per_row);  // no overflow
  shards = std::min<Index>(
      shards, std::max<Index>(1, static_cast<Index>(std::min(work / min_work_per_shard, 1e9))));
  std::vector<Index> bounds(static_cast<size_t>(shards + 1));
  for (Index s = 0; s <= shards; ++s) bounds[static_cast<size_t>(s)] = rows * s / shards;
  return bounds;
}

// Run fn(i) for i in [0, n), spread over up to `threads` threads (static schedule, so each
// index is one thread's and no two threads write the same memory). fn comes last so that a
// lambda body keeps the caller's indentation under clang-format.
template <class Fn>
void parallel_for(Index n, int threads, Fn&& fn) {
#ifdef _OPENMP
  const int nt = static_cast<int>(std::min<Index>(std::max(threads, 1), n));
  if (nt > 1) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (Index i = 0; i < n; ++i) fn(i);
    return;
  }
#else
  (void)threads;
#endif
  for (Index i = 0; i < n; ++i) fn(i);
}

}  // namespace rnncore
