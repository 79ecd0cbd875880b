// Embedding's weight gradient: a scatter-add of the output gradient into the rows read.
//
//   dE[v, :] = sum of dy[p, :] over the positions p (in increasing order) with ids[p] == v
//
// np.add.at computes exactly this, one position after another from a zeroed matrix. Here
// the positions are first grouped by id with a stable counting sort (so each id's positions
// stay in increasing order), then every row is summed on its own: threads split the rows,
// and a row's sum is the same chain of additions (0 + dy[p0] + dy[p1] + ...) whatever the
// thread count, hence bit-identical to np.add.at and across thread counts.
#pragma once

#include <algorithm>
#include <vector>

#include "rnncore/threads.hpp"
#include "rnncore/types.hpp"

namespace rnncore {

// The first position whose id is outside [0, V), or -1 when every id is in range.
template <class I>
Index first_id_out_of_range(const I* ids, Index N, Index V) {
  for (Index p = 0; p < N; ++p)
    if (ids[p] < 0 || static_cast<Index>(ids[p]) >= V) return p;
  return -1;
}

// ids (N), dy (N, D) row-major, dE (V, D) written in full (rows no id reads are zero). The
// ids must be in [0, V) (first_id_out_of_range).
template <class T, class I>
void embedding_backward(const I* ids, Index N, const T* dy, Index D, Index V, T* dE, int threads) {
  // start[v] .. start[v + 1]: the slice of `order` holding the positions of id v
  std::vector<Index> start(static_cast<size_t>(V) + 1, 0);
  for (Index p = 0; p < N; ++p) ++start[static_cast<size_t>(ids[p]) + 1];
  for (Index v = 0; v < V; ++v) start[v + 1] += start[v];
  std::vector<Index> order(static_cast<size_t>(N));
  {
    std::vector<Index> next(start.begin(), start.end() - 1);
    for (Index p = 0; p < N; ++p) order[next[static_cast<size_t>(ids[p])]++] = p;
  }
  // Row shards weighted by the rows to zero plus the rows to add.
  const auto shards = split_rows(V, threads, D * (1 + N / std::max<Index>(V, 1)));
  parallel_for(static_cast<Index>(shards.size()) - 1, threads, [&](Index s) {
    for (Index v = shards[s]; v < shards[s + 1]; ++v) {
      T* row = dE + v * D;
      std::fill(row, row + D, T(0));
      for (Index k = start[v]; k < start[v + 1]; ++k) {
        const T* src = dy + order[k] * D;
        for (Index j = 0; j < D; ++j) row[j] += src[j];
      }
    }
  });
}

}  // namespace rnncore
