// Weight-only low precision: bf16 or int8 weights, float32 everything else.
//
// At the small shapes (a streamed step, a few rows per step) the per-step product h U reads
// all of U from L2 every step and does little arithmetic per byte read: it is bound by the
// weights' bytes. Storing them as bf16 halves those bytes, int8 quarters them. The weights
// are packed once into the panel layout of PackedMatrix (packed_gemm.hpp: panels of NR
// columns, K rows each) and widened to float32 in registers inside the kernel; activations,
// states, the accumulation and the gate math stay float32.
//
//   bf16:  w = bits << 16 as float32 (the high half of a float32: 8 significant bits, so
//          |w - w_f32| <= 2^-8 |w_f32| when rounded to nearest even). The widening is exact,
//          so the product is the same FMA chain, bit for bit, as packed_gemm on the
//          dequantized weights.
//   int8:  w[k, j] = s_j q[k, j], q in [-127, 127], one scale s_j per output column
//          (symmetric: s_j = max_k |w[k, j]| / 127, |w - s q| <= s_j / 2). The kernel sums
//          a_k q[k, j] in float32 (q widened exactly) and scales once at the end:
//          C[j] = start[j] + s_j * sum_k a_k q[k, j]
//          which differs from the product with the dequantized weights s_j q only by float32
//          rounding.
//
// As in packed_gemm, every output is the same FMA chain in the same k order whatever the
// rows' blocking and the k chunking are, so a row's result does not depend on how the
// batch is split between threads.
//
// Portable: GCC/Clang vector extensions compiled at each module's ISA level, with one
// intrinsic pair for the int8 widening on AVX2 (see widen). Where the CPU has AVX512-BF16 or
// (AVX512-/AVX-)VNNI, LowpMatrix packs for and lowp_gemm runs lowp_x86.hpp's kernels instead,
// which also round the activations (the path is chosen when the weights are packed).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "rnncore/lowp_x86.hpp"
#include "rnncore/packed_gemm.hpp"

namespace rnncore {

// Low-precision weights as the caller holds them, K x N in Keras's layout (rows `ld`
// apart): bf16 bits (uint16) or int8 values with N scales. F32: none (the float weights).
struct LowpSource {
  Precision precision = Precision::F32;
  const void* values = nullptr;
  const float* scale = nullptr;  // int8: one per column
  // The path cap (lowp_x86.hpp) when the weights were given: a stream or a model's chain
  // packs them at its first call, on the path capped when it was made.
  int cap = lowp_path_cap().load(std::memory_order_relaxed);

  size_t value_bytes() const { return precision == Precision::Int8 ? 1 : 2; }
  // The same weights from column c on.
  LowpSource from_col(Index c) const {
    if (precision == Precision::F32) return *this;
    LowpSource s = *this;
    s.values = static_cast<const char*>(values) + c * value_bytes();
    s.scale = scale ? scale + c : nullptr;
    return s;
  }
};

// The weights packed for lowp_gemm: panel p holds K rows of NR values (columns p*NR ..),
// zero past column N, in the layout of `path` (the portable one below, or lowp_x86.hpp's
// groups of k); scale (int8) is panels*NR floats, zero past N, and corr (int8 on a VNNI
// path) the offset's column sums.
struct LowpMatrix {
  static constexpr int NR = Kernel<float>::NR;
  Precision precision = Precision::F32;  // F32: nothing packed here
  LowpPath path = LowpPath::Portable;    // chosen when packed (lowp_path_for)
  Index K = 0, N = 0, panels = 0;
  Buffer<std::uint16_t> bf16;
  Buffer<std::int8_t> int8;
  Buffer<float> scale;
  Buffer<std::int32_t> corr;

  // Panel p, row k: NR values of columns p*NR.., zero past N. bf16 is stored interleaved:
  // the 32-bit word i of a row holds column i in its low half and column L + i in its high
  // half, so that a shift and a mask widen one row into its two float32 vectors.
  template <class Q>
  static void pack_panels(const Q* src, Index K, Index N, Index ld, Index panels, Buffer<Q>& out) {
    constexpr bool interleave = std::is_same_v<Q, std::uint16_t>;
    constexpr int L = NR / 2;
    out.reserve_resize(static_cast<size_t>(panels * K * NR));
    for (Index p = 0; p < panels; ++p) {
      const Index c0 = p * NR, w = std::min<Index>(NR, N - c0);
      for (Index k = 0; k < K; ++k) {
        Q* dst = out.data() + (p * K + k) * NR;
        for (Index j = 0; j < NR; ++j) {
          const Index at = interleave ? 2 * (j % L) + j / L : j;
          dst[at] = j < w ? src[k * ld + c0 + j] : Q(0);
        }
      }
    }
  }

  void pack(const LowpSource& src, Index K_, Index N_, Index ld) {
    precision = src.precision, K = K_, N = N_, panels = (N + NR - 1) / NR;
    path = lowp_path_for(precision, K, src.cap);
    const bool hw = path != LowpPath::Portable;
    if (precision == Precision::BF16) {
      const auto* values = static_cast<const std::uint16_t*>(src.values);
      if (hw)
        lowp_hw::pack_groups<2>(values, K, N, ld, panels, bf16);
      else
        pack_panels(values, K, N, ld, panels, bf16);
      return;
    }
    const auto* values = static_cast<const std::int8_t*>(src.values);
    if (hw) {
      lowp_hw::pack_groups<4>(values, K, N, ld, panels, int8);
      lowp_hw::offset_sums(values, K, N, ld, panels * NR, corr);
    } else {
      pack_panels(values, K, N, ld, panels, int8);
    }
    scale.reserve_resize(static_cast<size_t>(panels * NR));
    std::fill_n(scale.data(), panels * NR, 0.0f);
    std::copy_n(src.scale, N, scale.data());
  }
};

namespace lowp {

using F = Kernel<float>;
using V = F::vec;
constexpr int L = F::lanes, NR = F::NR;
typedef std::int32_t IV __attribute__((vector_size(vector_bytes)));
typedef std::uint16_t HV __attribute__((vector_size(vector_bytes / 2)));
typedef std::int8_t QV __attribute__((vector_size(vector_bytes / 4)));

// One panel row (NR weights) widened to float32: its two vectors of L lanes.
// bf16, interleaved (see LowpMatrix::pack_panels): the low halves shifted up, the high
// halves masked; two integer operations for NR weights, exact.
inline void widen(const std::uint16_t* p, V out[2]) {
  IV words;
  std::memcpy(&words, p, sizeof(words));
  const IV high_half = IV{} + static_cast<std::int32_t>(0xFFFF0000u);
  const IV lo = words << 16, hi = words & high_half;
  std::memcpy(&out[0], &lo, sizeof(V));
  std::memcpy(&out[1], &hi, sizeof(V));
}
// int8: sign-extended to int32, converted (exact). GCC 12 turns the generic conversion of a
// small integer vector into scalar code, so AVX2 and AVX-512 take intrinsics: one vpmovsxbd
// from memory and one vcvtdq2ps per vector (AVX-512's zero-masked forms: the plain ones
// trip GCC 12's -Wmaybe-uninitialized inside its own headers).
inline void widen(const std::int8_t* p, V out[2]) {
#if defined(__AVX512F__)
  static_assert(L == 16);
  for (int h = 0; h < 2; ++h) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + h * L));
    const __m512 v = _mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_maskz_cvtepi8_epi32(0xFFFF, q));
    std::memcpy(&out[h], &v, sizeof(V));
  }
#elif defined(__AVX2__)
  static_assert(L == 8);
  for (int h = 0; h < 2; ++h) {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + h * L));
    const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    std::memcpy(&out[h], &v, sizeof(V));
  }
#else
  for (int h = 0; h < 2; ++h) {
    QV q;
    std::memcpy(&q, p + h * L, sizeof(q));
    out[h] = __builtin_convertvector(__builtin_convertvector(q, IV), V);
  }
#endif
}

// The NR values of row `src` at panel columns c0.. (w of them real), as two vectors.
inline void load_row(const float* src, Index w, V out[2]) {
  if (w == NR) {
    std::memcpy(out, src, sizeof(V) * 2);
    return;
  }
  alignas(vector_bytes) float tmp[NR] = {};
  std::copy_n(src, w, tmp);
  std::memcpy(out, tmp, sizeof(tmp));
}

// C[0:R, NP panels from p0] = start + a[0:kc] * widen(panels[k0:k0+kc]), a packed k-major
// (a[k*R + r]). bf16 accumulates onto the start values, exactly as packed_gemm's kernel;
// int8 accumulates a q from zero and adds s * sum to the start values at the end.
template <class Q, int R, int NP>
void block(Index k0, Index kc, const float* a, const Q* panels, const LowpMatrix& P, Index p0,
           float* C, Index ldc, detail::Start start, const float* bias) {
  using detail::Start;
  constexpr bool scaled = std::is_same_v<Q, std::int8_t>;
  V acc[NP][R][2], init[NP][R][2];
  for (int q = 0; q < NP; ++q) {
    const Index c0 = (p0 + q) * NR, w = std::min<Index>(NR, P.N - c0);
    for (int r = 0; r < R; ++r) {
      if (start == Start::Zero)
        init[q][r][0] = init[q][r][1] = V{};
      else
        load_row(start == Start::C ? C + r * ldc + c0 : bias + c0, w, init[q][r]);
      acc[q][r][0] = scaled ? V{} : init[q][r][0];
      acc[q][r][1] = scaled ? V{} : init[q][r][1];
    }
  }
  const Q* panel = panels + (p0 * P.K + k0) * NR;
  for (Index k = 0; k < kc; ++k) {
    for (int q = 0; q < NP; ++q) {
      V b[2];
      widen(panel + q * P.K * NR + k * NR, b);
      for (int r = 0; r < R; ++r) {
        const float ak = a[k * R + r];
        acc[q][r][0] += ak * b[0];
        acc[q][r][1] += ak * b[1];
      }
    }
  }
  for (int q = 0; q < NP; ++q) {
    const Index c0 = (p0 + q) * NR, w = std::min<Index>(NR, P.N - c0);
    V s[2];
    if (scaled) std::memcpy(s, P.scale.data() + c0, sizeof(s));
    for (int r = 0; r < R; ++r) {
      alignas(vector_bytes) V out[2] = {acc[q][r][0], acc[q][r][1]};
      if (scaled) {  // start + s * sum a q
        out[0] = init[q][r][0] + s[0] * out[0];
        out[1] = init[q][r][1] + s[1] * out[1];
      }
      std::memcpy(C + r * ldc + c0, out, static_cast<size_t>(w) * sizeof(float));
    }
  }
}

// R rows (1 <= R <= MR) over panels [p, p_end); with few rows several panels at once, so
// that enough independent FMA chains are in flight (see packed_gemm's block).
template <class Q, int R>
void rows(Index k0, Index kc, const float* a, const Q* panels, const LowpMatrix& P, Index p,
          Index p_end, float* C, Index ldc, detail::Start start, const float* bias) {
  constexpr int NP = R == 1 ? 4 : R == 2 ? 2 : 1;
  for (; p + NP <= p_end; p += NP) block<Q, R, NP>(k0, kc, a, panels, P, p, C, ldc, start, bias);
  for (; p < p_end; ++p) block<Q, R, 1>(k0, kc, a, panels, P, p, C, ldc, start, bias);
}

template <class Q, int... R>
void rows_n(Index n, std::integer_sequence<int, R...>, Index k0, Index kc, const float* a,
            const Q* panels, const LowpMatrix& P, Index p, Index p_end, float* C, Index ldc,
            detail::Start start, const float* bias) {
  ((n == R + 1 ? rows<Q, R + 1>(k0, kc, a, panels, P, p, p_end, C, ldc, start, bias) : void()),
   ...);
}

// C = start + A P over M rows. Rows go in blocks of MB, k in chunks of KC whose partial sums
// C carries to the next chunk; a block's A chunk is copied k-major per MR rows (one row
// already is), then each group of GP panels (a few KiB of weights, kept in L1) is streamed
// against all the block's rows, so a tall A (the input projection) reads the weights from
// L2 once per MB rows rather than once per MR.
template <class Q>
void gemm(const float* A, Index lda, Index M, const Q* panels, const LowpMatrix& P, float* C,
          Index ldc, detail::Start start, const float* bias) {
  constexpr int MR = F::MR;
  constexpr Index KC = 512, MB = 4 * MR, GP = 4;
  alignas(vector_bytes) float a_buf[MB * KC];
  for (Index m0 = 0; m0 < M; m0 += MB) {
    const Index mb = std::min(MB, M - m0);
    for (Index k0 = 0; k0 < P.K || k0 == 0; k0 += KC) {
      const Index kc = std::min(KC, P.K - k0);
      const auto s = k0 == 0 ? start : detail::Start::C;
      for (Index r0 = 0; mb > 1 && r0 < mb; r0 += MR) {
        const Index n = std::min<Index>(MR, mb - r0);
        const float* src = A + (m0 + r0) * lda + k0;
        for (Index r = 0; r < n; ++r)
          for (Index k = 0; k < kc; ++k) a_buf[r0 * kc + k * n + r] = src[r * lda + k];
      }
      for (Index p = 0; p < P.panels; p += GP) {
        const Index p_end = std::min(P.panels, p + GP);
        for (Index r0 = 0; r0 < mb; r0 += MR) {
          const Index n = std::min<Index>(MR, mb - r0);
          const float* a = mb > 1 ? a_buf + r0 * kc : A + m0 * lda + k0;
          rows_n<Q>(n, std::make_integer_sequence<int, MR>{}, k0, kc, a, panels, P, p, p_end,
                    C + (m0 + r0) * ldc, ldc, s, bias);
        }
      }
    }
  }
}

}  // namespace lowp

// C (M x P.N) = start + A (M x P.K) P, P's weights widened to float32 in the kernel.
inline void lowp_gemm(const float* A, Index lda, Index M, const LowpMatrix& P, float* C, Index ldc,
                      detail::Start start, const float* bias = nullptr) {
#if defined(RNNCORE_LOWP_HW)
  if (P.path != LowpPath::Portable) {
#if RNNCORE_LOWP_HW == 512
    if (P.precision == Precision::BF16)
      return lowp_hw::gemm<lowp_hw::V>(A, lda, M, P.bf16.data(), P.K, P.N, P.panels, nullptr,
                                       nullptr, C, ldc, start, bias);
#endif
    return lowp_hw::gemm<lowp_hw::IV>(A, lda, M, P.int8.data(), P.K, P.N, P.panels, P.scale.data(),
                                      P.corr.data(), C, ldc, start, bias);
  }
#endif
  if (P.precision == Precision::BF16)
    lowp::gemm(A, lda, M, P.bf16.data(), P, C, ldc, start, bias);
  else
    lowp::gemm(A, lda, M, P.int8.data(), P, C, ldc, start, bias);
}

// One packed weight matrix of the core: float (PackedMatrix) or, for float32 models,
// low precision (LowpMatrix). packed_gemm below takes either.
template <class T>
struct PackedWeights {
  PackedMatrix<T> f;
  LowpMatrix q;  // used instead of f when q.precision is not F32

  // From float weights U (K x N, rows ld apart), or from `low` when it holds any.
  void pack(const T* U, const LowpSource& low, Index K, Index N, Index ld) {
    q.precision = low.precision;
    if (low.precision == Precision::F32)
      f.pack(U, K, N, ld);
    else
      q.pack(low, K, N, ld);
  }
  void pack(const T* U, Index K, Index N, Index ld) { pack(U, LowpSource{}, K, N, ld); }
  bool lowp() const { return q.precision != Precision::F32; }
};

template <class T>
void packed_gemm(const T* A, Index lda, Index M, const PackedWeights<T>& P, T* C, Index ldc,
                 detail::Start start, const T* bias = nullptr) {
  if constexpr (std::is_same_v<T, float>) {
    if (P.lowp()) return lowp_gemm(A, lda, M, P.q, C, ldc, start, bias);
  }
  packed_gemm(A, lda, M, P.f, C, ldc, start, bias);
}

template <class T>
void packed_gemm(const T* A, Index lda, Index M, const PackedWeights<T>& P, T* C, Index ldc,
                 bool accumulate) {
  packed_gemm(A, lda, M, P, C, ldc, accumulate ? detail::Start::C : detail::Start::Zero);
}

}  // namespace rnncore
