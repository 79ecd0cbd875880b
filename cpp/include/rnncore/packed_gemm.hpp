// The core's one matrix product  C = start + A P,  with P packed once: the per-step
// recurrent product (P = U) and the input projection (P = W, start = the bias).
//
// Every time step multiplies the previous state by the same recurrent matrix U. A general
// GEMM (Eigen's included) re-packs U into its panel layout on every call, i.e. on every step:
// measured at 16% of an S3 LSTM forward, more with several threads each packing all of U.
// Here U and W are packed once per call (once per stream for stateful layers) into column
// panels of NR values, and a register-blocked kernel of MR rows x NR columns streams over
// them. For the projection's tall products it also beat Eigen's GEMM (S3 LSTM forward
// 10-15% faster once the projection moved here, S4 GRU about 15%).
//
// Written with GCC/Clang vector extensions, so one source compiles to SSE2, AVX2/FMA or
// AVX-512 by the build's -march level (the vector width follows it).
#pragma once

#include <algorithm>
#include <cstring>
#include <utility>

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
    data.reserve_resize(static_cast<size_t>(panels * K * NR));
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

// How each output starts: 0, its current value in C (C += A P), or the bias row (C = A P + b).
enum class Start { Zero, C, Bias };

// C[0:R, cols of NP panels] = start + a[0:kc] * panels[k0:k0+kc], for R <= MR rows of A
// packed k-major (a[k*R + r]), so the R values of one k are adjacent.
//
// An FMA waits ~4 cycles for its accumulator and two issue per cycle, so about 8 independent
// accumulators keep the units busy: R rows x 2 vectors x NP panels of them. Batch 1 (the
// streaming and small-sequence case) therefore takes 4 panels at once. Each output is the
// same FMA chain in the same k order whatever R, NP and the k chunking are (a chunk's partial
// sum is stored to C exactly and picked up by the next), so a row's result does not depend
// on how rows are split between threads or blocked.
template <class T, int R, int NP>
inline void block(Index k0, Index kc, const T* a, const PackedMatrix<T>& P, Index p0, T* C,
                  Index ldc, Start start, const T* bias) {
  using K_ = Kernel<T>;
  using V = typename K_::vec;
  constexpr int L = K_::lanes, NR = K_::NR;
  alignas(vector_bytes) T tmp[NR];
  V acc[NP][R][2];
  for (int q = 0; q < NP; ++q) {
    const Index c0 = (p0 + q) * NR, w = std::min<Index>(NR, P.N - c0);
    for (int r = 0; r < R; ++r) {
      if (start == Start::Zero) {
        acc[q][r][0] = acc[q][r][1] = V{};
        continue;
      }
      const T* src = start == Start::C ? C + r * ldc + c0 : bias + c0;
      if (w < NR) {  // the last panel's columns past N are not C's
        std::copy_n(src, w, tmp);
        std::fill(tmp + w, tmp + NR, T(0));
        src = tmp;
      }
      acc[q][r][0] = load(src);
      acc[q][r][1] = load(src + L);
    }
  }
  const T* panel = P.data.data() + (p0 * P.K + k0) * NR;
  for (Index k = 0; k < kc; ++k) {
    for (int q = 0; q < NP; ++q) {
      const T* b = panel + q * P.K * NR + k * NR;
      const V b0 = load(b), b1 = load(b + L);
      for (int r = 0; r < R; ++r) {
        const T ak = a[k * R + r];
        acc[q][r][0] += ak * b0;
        acc[q][r][1] += ak * b1;
      }
    }
  }
  for (int q = 0; q < NP; ++q) {
    const Index c0 = (p0 + q) * NR, w = std::min<Index>(NR, P.N - c0);
    for (int r = 0; r < R; ++r) {
      T* dst = w < NR ? tmp : C + r * ldc + c0;
      std::memcpy(dst, &acc[q][r][0], sizeof(V));
      std::memcpy(dst + L, &acc[q][r][1], sizeof(V));
      if (w < NR) std::copy_n(tmp, w, C + r * ldc + c0);
    }
  }
}

// The last R < MR rows of a row block, over all panels: NP panels at a time, then one.
template <class T, int R>
inline void tail_rows(Index k0, Index kc, const T* a, const PackedMatrix<T>& P, T* C, Index ldc,
                      Start start, const T* bias) {
  constexpr int NP = R == 1 ? 4 : R == 2 ? 2 : 1;
  Index p = 0;
  for (; p + NP <= P.panels; p += NP) block<T, R, NP>(k0, kc, a, P, p, C, ldc, start, bias);
  for (; p < P.panels; ++p) block<T, R, 1>(k0, kc, a, P, p, C, ldc, start, bias);
}

// tail_rows for a row count known only at run time, 1 <= rows < MR: one instantiation
// per count (R + 1 for R in the sequence 0 .. MR-2).
template <class T, int... R>
inline void tail_rows_n(Index rows, std::integer_sequence<int, R...>, Index k0, Index kc,
                        const T* a, const PackedMatrix<T>& P, T* C, Index ldc, Start start,
                        const T* bias) {
  ((rows == R + 1 ? tail_rows<T, R + 1>(k0, kc, a, P, C, ldc, start, bias) : void()), ...);
}

}  // namespace detail

// C (M x P.N, rows ldc apart) = A (M x P.K, rows lda apart) * P, plus, by `start`, nothing,
// C's own values (C += A P) or the row vector `bias` (C = A P + bias).
//
// Blocking (the BLIS scheme, with P packed beforehand): rows go in blocks of MC and k in
// chunks of KC; each block's A chunk is copied k-major per MR rows into a buffer on the
// stack, then each panel's KC x NR chunk is streamed against all the block's rows. Copying
// A costs K/(2N) of the product and turns the kernel's reads of A into one contiguous
// stream; a block of rows reads each panel once, where a whole tall A (a projection's
// thousand rows) would be re-read from L2 or L3 for every panel.
template <class T>
void packed_gemm(const T* A, Index lda, Index M, const PackedMatrix<T>& P, T* C, Index ldc,
                 detail::Start start, const T* bias = nullptr) {
  using detail::Start;
  constexpr int MR = Kernel<T>::MR;
  // KC x NR panel chunks of 32 KiB (measured better than 16 KiB at S3 and S4: fewer passes
  // of C), MC x KC of A in a 48 KiB stack buffer.
  constexpr Index KC = 2048 / static_cast<Index>(sizeof(T)), MC = 4 * MR;
  alignas(vector_bytes) T a_buf[MC * KC];
  for (Index m0 = 0; m0 < M; m0 += MC) {
    const Index mc = std::min(MC, M - m0), full = mc / MR * MR, rest = mc - full;
    for (Index k0 = 0; k0 < P.K || k0 == 0; k0 += KC) {
      const Index kc = std::min(KC, P.K - k0);
      const Start s = k0 == 0 ? start : Start::C;
      // a_buf: per block of R rows, kc x R values, k-major. A single row already is.
      if (mc == 1) {
        detail::tail_rows<T, 1>(k0, kc, A + m0 * lda + k0, P, C + m0 * ldc, ldc, s, bias);
        continue;
      }
      for (Index r0 = 0; r0 < mc; r0 += MR) {
        const Index R = std::min<Index>(MR, mc - r0);
        T* dst = a_buf + r0 * kc;
        for (Index r = 0; r < R; ++r) {
          const T* src = A + (m0 + r0 + r) * lda + k0;
          for (Index k = 0; k < kc; ++k) dst[k * R + r] = src[k];
        }
      }
      T* c = C + m0 * ldc;
      for (Index p = 0; p < P.panels; ++p)
        for (Index r0 = 0; r0 < full; r0 += MR)
          detail::block<T, MR, 1>(k0, kc, a_buf + r0 * kc, P, p, c + r0 * ldc, ldc, s, bias);
      const T* a = a_buf + full * kc;
      c += full * ldc;
      detail::tail_rows_n<T>(rest, std::make_integer_sequence<int, MR - 1>{}, k0, kc, a, P, c, ldc,
                             s, bias);
    }
  }
}

// The two common cases by name.
template <class T>
void packed_gemm(const T* A, Index lda, Index M, const PackedMatrix<T>& P, T* C, Index ldc,
                 bool accumulate) {
  packed_gemm(A, lda, M, P, C, ldc, accumulate ? detail::Start::C : detail::Start::Zero);
}

}  // namespace rnncore
