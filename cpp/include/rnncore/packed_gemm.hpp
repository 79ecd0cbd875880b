// The per-step recurrent product  C (+)= A U  with U packed once.
//
// Every time step multiplies the previous state by the same recurrent matrix U. A general
// GEMM (Eigen's included) re-packs U into its panel layout on every call, i.e. on every step:
// measured at 16% of an S3 LSTM forward, more with several threads each packing all of U.
// Here U is packed once per call (once per stream for stateful layers) into column panels of
// NR values, and a register-blocked kernel of MR rows x NR columns streams over it.
//
// Written with GCC/Clang vector extensions, so one source compiles to SSE2, AVX2/FMA or
// AVX-512 by the build's -march level (the vector width follows it).
#pragma once

#include <algorithm>
#include <cstring>

#include "rnncore/types.hpp"

namespace rnncore {

#if defined(__AVX512F__)
inline constexpr int vector_bytes = 64;
#else
inline constexpr int vector_bytes = 32;
#endif

template <class T>
struct Kernel {
  static constexpr int lanes = vector_bytes / static_cast<int>(sizeof(T));
  typedef T vec __attribute__((vector_size(vector_bytes)));
  static constexpr int NR = 2 * lanes;  // columns per panel: two vectors
  static constexpr int MR = 6;          // rows per register block: 12 accumulators
};

// U (K x N, rows `ld` apart) in panels of NR columns: panel p is K rows of NR contiguous
// values, U[k, p*NR + j], zero past column N.
template <class T>
struct PackedMatrix {
  Index K = 0, N = 0, panels = 0;
  Buffer<T> data;

  void pack(const T* U, Index K_, Index N_, Index ld) {
    constexpr int NR = Kernel<T>::NR;
    K = K_, N = N_, panels = (N + NR - 1) / NR;
    data.resize(static_cast<size_t>(panels * K * NR));
    for (Index p = 0; p < panels; ++p) {
      const Index c0 = p * NR, w = std::min<Index>(NR, N - c0);
      T* dst = data.data() + p * K * NR;
      for (Index k = 0; k < K; ++k) {
        std::copy_n(U + k * ld + c0, w, dst + k * NR);
        std::fill(dst + k * NR + w, dst + (k + 1) * NR, T(0));
      }
    }
  }
};

namespace detail {

template <class T>
inline typename Kernel<T>::vec load(const T* p) {
  typename Kernel<T>::vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// C[0:R, cols of NP panels] (+)= A[0:R, 0:K] * panels, for R <= MR rows.
//
// An FMA waits ~4 cycles for its accumulator and two issue per cycle, so about 8 independent
// accumulators keep the units busy: R rows x 2 vectors x NP panels of them. Batch 1 (the
// streaming and small-sequence case) therefore takes 4 panels at once. Each output is the
// same sum in the same k order whatever R and NP are, so the result of a row does not depend
// on how rows are split between threads.
template <class T, int R, int NP>
inline void block(Index K, const T* A, Index lda, const PackedMatrix<T>& P, Index p0, T* C,
                  Index ldc, bool accumulate) {
  using K_ = Kernel<T>;
  using V = typename K_::vec;
  constexpr int L = K_::lanes, NR = K_::NR;
  V acc[NP][R][2];
  for (int q = 0; q < NP; ++q)
    for (int r = 0; r < R; ++r) acc[q][r][0] = acc[q][r][1] = V{};
  const T* panel = P.data.data() + p0 * K * NR;
  for (Index k = 0; k < K; ++k) {
    for (int q = 0; q < NP; ++q) {
      const T* b = panel + q * K * NR + k * NR;
      const V b0 = load(b), b1 = load(b + L);
      for (int r = 0; r < R; ++r) {
        const T a = A[r * lda + k];
        acc[q][r][0] += a * b0;
        acc[q][r][1] += a * b1;
      }
    }
  }
  alignas(vector_bytes) T tmp[NR];
  for (int q = 0; q < NP; ++q) {
    const Index c0 = (p0 + q) * NR, w = std::min<Index>(NR, P.N - c0);
    for (int r = 0; r < R; ++r) {
      std::memcpy(tmp, &acc[q][r][0], sizeof(V));
      std::memcpy(tmp + L, &acc[q][r][1], sizeof(V));
      T* c = C + r * ldc + c0;
      if (accumulate)
        for (Index j = 0; j < w; ++j) c[j] += tmp[j];
      else
        std::copy_n(tmp, w, c);
    }
  }
}

// R rows (< MR) over all panels, NP panels at a time, then one at a time.
template <class T, int R>
inline void rows_block(Index K, const T* A, Index lda, const PackedMatrix<T>& P, T* C, Index ldc,
                       bool accumulate) {
  constexpr int NP = R == 1 ? 4 : R == 2 ? 2 : 1;
  Index p = 0;
  for (; p + NP <= P.panels; p += NP) block<T, R, NP>(K, A, lda, P, p, C, ldc, accumulate);
  for (; p < P.panels; ++p) block<T, R, 1>(K, A, lda, P, p, C, ldc, accumulate);
}

}  // namespace detail

// C (M x P.N, rows ldc apart) = A (M x P.K, rows lda apart) * P, or += when accumulate.
template <class T>
void packed_gemm(const T* A, Index lda, Index M, const PackedMatrix<T>& P, T* C, Index ldc,
                 bool accumulate) {
  constexpr int MR = Kernel<T>::MR;
  const Index full = M / MR * MR;
  // Full row blocks panel by panel, so that each panel stays in L1 across the row blocks.
  for (Index p = 0; p < P.panels; ++p)
    for (Index r = 0; r < full; r += MR)
      detail::block<T, MR, 1>(P.K, A + r * lda, lda, P, p, C + r * ldc, ldc, accumulate);
  const T* a = A + full * lda;
  T* c = C + full * ldc;
  switch (M - full) {
    case 1: detail::rows_block<T, 1>(P.K, a, lda, P, c, ldc, accumulate); break;
    case 2: detail::rows_block<T, 2>(P.K, a, lda, P, c, ldc, accumulate); break;
    case 3: detail::rows_block<T, 3>(P.K, a, lda, P, c, ldc, accumulate); break;
    case 4: detail::rows_block<T, 4>(P.K, a, lda, P, c, ldc, accumulate); break;
    case 5: detail::rows_block<T, 5>(P.K, a, lda, P, c, ldc, accumulate); break;
    default: break;
  }
}

}  // namespace rnncore
