// Hardware low-precision paths: the products of lowp.hpp on the CPU's bf16 and int8 dot-product
// instructions, with the activations (the A rows: x, h_{t-1}) converted per call. Chosen at
// run time (lowp_path_for) by what the CPU has and what this module was compiled for:
//
//   avx512_bf16  (x86_64_v4 module)  vdpbf16ps: each float32 lane j adds a_k w[k, j] +
//                a_{k+1} w[k+1, j], the two products of bf16 values exact, the sums rounded
//                to float32. A row is rounded to bf16 (nearest even) once per call:
//                |a_k - bf16(a_k)| <= 2^-8 |a_k|, so an output moves by at most
//                2^-8 sum_k |a_k| |w[k, j]| (plus float32 rounding) from the portable path
//                on the same bf16 weights.
//   avx512_vnni  (x86_64_v4 module, 512-bit)  vpdpbusd: each int32 lane j adds four products
//   avx_vnni     (x86_64_v3 module, 256-bit)  u8 x s8 of k, k+1, k+2, k+3. A row is quantized
//                on its own, symmetric: s_a = max_k |a_k| / 127, qa_k = rne(a_k / s_a) in
//                [-127, 127], |a_k - s_a qa_k| <= s_a / 2 (and a float32 division's rounding).
//                The instruction wants unsigned activations: it is given qa_k + 128 (1..255)
//                and the sum is corrected by 128 sum_k q[k, j], the column sums packed with
//                the weights. The int32 sums are exact (K < 65536 keeps them in range), then
//                C = start + (s_a s_j) dot. An output moves by at most
//                s_j (s_a / 2) sum_k |q[k, j]| (plus float32 rounding) from the portable path.
//
// Each output is one chain of the same instructions in k order whatever the rows' blocking,
// the batch and the threads: a row's activations are converted from that row alone, and k is
// not split. Packing (groups of G = 2 or 4 consecutive k per 32-bit lane): panel p, group g
// holds NR columns x G values, column j's G values adjacent (index G j + k % G), zero past K
// and N.
//
// The kernels carry a target attribute with every instruction set the module's hardware
// paths use (the x86_64_v4 module: AVX512-BF16 and AVX512-VNNI; x86_64_v3: AVX-VNNI), so the
// module builds for any CPU of its level and runs a path only where lowp_path_for found the
// CPU's support. The code of one path uses no intrinsic of the other; no code here lends
// itself to the compiler's own use of them (no bf16 conversions in the int8 kernel, no
// integer dot-product reductions in the bf16 one).
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(__x86_64__) && defined(__AVX2__)
#include <immintrin.h>
#endif

#include "rnncore/packed_gemm.hpp"

namespace rnncore {

enum class Precision { F32, BF16, Int8 };

// Ranked: RNNCORE_LOWP_PATH / set_lowp_path names a cap, and each precision takes the best
// path at or below it that serves it and runs here.
enum class LowpPath : int { Portable = 0, AvxVnni = 1, Avx512Vnni = 2, Avx512Bf16 = 3 };
inline constexpr LowpPath lowp_all_paths[] = {LowpPath::Portable, LowpPath::AvxVnni,
                                              LowpPath::Avx512Vnni, LowpPath::Avx512Bf16};

inline const char* lowp_path_name(LowpPath p) {
  switch (p) {
    case LowpPath::AvxVnni:
      return "avx_vnni";
    case LowpPath::Avx512Vnni:
      return "avx512_vnni";
    case LowpPath::Avx512Bf16:
      return "avx512_bf16";
    default:
      return "portable";
  }
}

inline Precision lowp_path_serves(LowpPath p) {
  return p == LowpPath::Avx512Bf16 ? Precision::BF16 : Precision::Int8;  // Portable: both
}

#if defined(__x86_64__) && defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
#define RNNCORE_LOWP_HW 512
#define RNNCORE_LOWP_TARGET __attribute__((target("avx512bf16,avx512vnni")))
#elif defined(__x86_64__) && defined(__AVX2__) && (defined(__GNUC__) || defined(__clang__))
#define RNNCORE_LOWP_HW 256
#define RNNCORE_LOWP_TARGET __attribute__((target("avxvnni")))
#endif

// Whether this module has the path's kernel and this CPU (and OS: the module's level was
// checked at import) runs it.
inline bool lowp_path_runs(LowpPath p) {
  if (p == LowpPath::Portable) return true;
#if RNNCORE_LOWP_HW == 512
  __builtin_cpu_init();
  if (p == LowpPath::Avx512Bf16) return __builtin_cpu_supports("avx512bf16");
  if (p == LowpPath::Avx512Vnni) return __builtin_cpu_supports("avx512vnni");
#elif RNNCORE_LOWP_HW == 256
  __builtin_cpu_init();
  if (p == LowpPath::AvxVnni) return __builtin_cpu_supports("avxvnni");
#endif
  return false;
}

inline std::atomic<int>& lowp_path_cap() {
  static std::atomic<int> cap{static_cast<int>(LowpPath::Avx512Bf16)};
  return cap;
}

// The path weights of this precision take under `cap` (K: their rows; the int8 sums need
// K < 65536).
inline LowpPath lowp_path_for(Precision precision, Index K = 0,
                              int cap = lowp_path_cap().load(std::memory_order_relaxed)) {
  for (int r = cap; r > 0; --r) {
    const auto p = static_cast<LowpPath>(r);
    if (lowp_path_serves(p) == precision && lowp_path_runs(p) && K < 65536) return p;
  }
  return LowpPath::Portable;
}

namespace lowp_hw {

using F = Kernel<float>;
using V = F::vec;
constexpr int L = F::lanes, NR = F::NR;
typedef std::int32_t IV __attribute__((vector_size(vector_bytes)));
typedef std::int32_t IVu __attribute__((vector_size(vector_bytes), aligned(4)));  // unaligned

// K x N values (rows `ld` apart) in panels of NR columns, G consecutive k per column adjacent.
template <int G, class Q>
void pack_groups(const Q* src, Index K, Index N, Index ld, Index panels, Buffer<Q>& out) {
  const Index KG = (K + G - 1) / G;
  out.reserve_resize(static_cast<size_t>(panels * KG * G * NR));
  std::fill_n(out.data(), out.size(), Q(0));
  for (Index p = 0; p < panels; ++p) {
    const Index c0 = p * NR, w = std::min<Index>(NR, N - c0);
    for (Index k = 0; k < K; ++k)
      for (Index j = 0; j < w; ++j)
        out[static_cast<size_t>((p * KG + k / G) * G * NR + G * j + k % G)] = src[k * ld + c0 + j];
  }
}

// 128 sum_k q[k, c] per column, zero past N: the correction of the +128 offset.
inline void offset_sums(const std::int8_t* src, Index K, Index N, Index ld, Index padded,
                        Buffer<std::int32_t>& out) {
  out.reserve_resize(static_cast<size_t>(padded));
  std::fill_n(out.data(), padded, 0);
  for (Index k = 0; k < K; ++k)
    for (Index c = 0; c < N; ++c) out[c] += 128 * src[k * ld + c];
}

#if defined(RNNCORE_LOWP_HW)

// One call's view of the packed weights and the converted rows.
struct Call {
  const std::uint32_t* a;  // row r's groups at a + r * a_stride (bf16 pairs, or u8 quads)
  Index a_stride;
  const float* a_scale;  // int8: s_a per row
  const void* panels;
  Index KG, N;
  const float* scale;        // int8: s_j
  const std::int32_t* corr;  // int8: 128 sum_k q[k, j]
  float* C;
  Index ldc;
  detail::Start start;
  const float* bias;
};

// The instruction: acc += the G products of lane j (bf16 pairs into float32, u8 x s8 quads
// into int32).
RNNCORE_LOWP_TARGET inline V dot(V acc, IV a, IV b) {
#if RNNCORE_LOWP_HW == 512
  return (V)_mm512_dpbf16_ps((__m512)acc, (__m512bh)a, (__m512bh)b);
#else
  (void)a, (void)b;
  return acc;  // no bf16 path in a 256-bit module
#endif
}
RNNCORE_LOWP_TARGET inline IV dot(IV acc, IV a, IV b) {
#if RNNCORE_LOWP_HW == 512
  return (IV)_mm512_dpbusd_epi32((__m512i)acc, (__m512i)a, (__m512i)b);
#else
  return (IV)_mm256_dpbusd_avx_epi32((__m256i)acc, (__m256i)a, (__m256i)b);
#endif
}

// C rows [r0, r0 + R), panels [p0, p0 + NP): Acc = V (bf16: from the start values) or IV
// (int8: from zero, then start + s_a s_j (sum - corr)).
template <class Acc, int R, int NP>
RNNCORE_LOWP_TARGET void block(const Call& c, Index r0, Index p0) {
  constexpr bool int8 = std::is_same_v<Acc, IV>;
  constexpr int G = int8 ? 4 : 2, bytes = int8 ? 1 : 2;
  Acc acc[NP][R][2];
  V init[NP][R][2];
  for (int q = 0; q < NP; ++q) {
    const Index c0 = (p0 + q) * NR, w = std::min<Index>(NR, c.N - c0);
    for (int r = 0; r < R; ++r) {
      float* row = c.C + (r0 + r) * c.ldc + c0;
      alignas(vector_bytes) float tmp[NR] = {};
      if (c.start != detail::Start::Zero)
        std::copy_n(c.start == detail::Start::C ? row : c.bias + c0, w, tmp);
      std::memcpy(init[q][r], tmp, sizeof(tmp));
      for (int h = 0; h < 2; ++h) {
        if constexpr (int8)
          acc[q][r][h] = IV{};
        else
          acc[q][r][h] = init[q][r][h];
      }
    }
  }
  const char* base = static_cast<const char*>(c.panels) + p0 * c.KG * G * NR * bytes;
  const std::uint32_t* a = c.a + r0 * c.a_stride;
  const Index panel_bytes = c.KG * G * NR * bytes;
  for (Index g = 0; g < c.KG; ++g) {
#pragma GCC unroll 8
    for (int q = 0; q < NP; ++q) {
      const IVu* b = reinterpret_cast<const IVu*>(base + q * panel_bytes + g * G * NR * bytes);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const IV ak = IV{} + static_cast<std::int32_t>(a[r * c.a_stride + g]);
        acc[q][r][0] = dot(acc[q][r][0], ak, b[0]);
        acc[q][r][1] = dot(acc[q][r][1], ak, b[1]);
      }
    }
  }
  for (int q = 0; q < NP; ++q) {
    const Index c0 = (p0 + q) * NR, w = std::min<Index>(NR, c.N - c0);
    for (int r = 0; r < R; ++r) {
      alignas(vector_bytes) V out[2];
      for (int h = 0; h < 2; ++h) {
        if constexpr (int8) {
          IV corr;
          V s;
          std::memcpy(&corr, c.corr + c0 + h * L, sizeof(corr));
          std::memcpy(&s, c.scale + c0 + h * L, sizeof(s));
          const V sum = __builtin_convertvector(acc[q][r][h] - corr, V);
          out[h] = init[q][r][h] + (c.a_scale[r0 + r] * s) * sum;
        } else {
          out[h] = acc[q][r][h];
        }
      }
      std::memcpy(c.C + (r0 + r) * c.ldc + c0, out, static_cast<size_t>(w) * sizeof(float));
    }
  }
}

// R rows over panels [p, p_end), several panels at once when rows are few (as lowp.hpp).
template <class Acc, int R>
void rows(const Call& c, Index r0, Index p, Index p_end) {
  constexpr int NP = R == 1 ? 4 : R == 2 ? 2 : 1;
  for (; p + NP <= p_end; p += NP) block<Acc, R, NP>(c, r0, p);
  for (; p < p_end; ++p) block<Acc, R, 1>(c, r0, p);
}

template <class Acc, int... R>
void rows_n(Index n, std::integer_sequence<int, R...>, const Call& c, Index r0, Index p,
            Index p_end) {
  ((n == R + 1 ? rows<Acc, R + 1>(c, r0, p, p_end) : void()), ...);
}

// Row a (K floats) as bf16 pairs, rounded to nearest even: word g holds a_{2g} (low half)
// and a_{2g+1}; out has room for K rounded up to 16.
RNNCORE_LOWP_TARGET inline void to_bf16_pairs(const float* a, Index K, std::uint32_t* out) {
#if RNNCORE_LOWP_HW == 512
  for (Index k = 0; k < K; k += 16) {
    const Index n = std::min<Index>(16, K - k);
    const __mmask16 m = static_cast<__mmask16>(n == 16 ? 0xFFFF : (1u << n) - 1);
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, a + k));
    std::memcpy(out + k / 2, &h, sizeof(h));
  }
#else
  (void)a, (void)K, (void)out;
#endif
}

// Row a (K floats) quantized symmetric on its own: qa + 128 as u8 quads (out has room for K
// rounded up to 4 * L, zero-padded); returns s_a = max |a| / 127.
inline float to_u8_quads(const float* a, Index K, std::uint32_t* out) {
  float amax = 0;
  bool finite = true;
  for (Index k = 0; k < K; ++k) {
    finite = finite && std::isfinite(a[k]);
    amax = std::max(amax, std::abs(a[k]));
  }
  const float s = finite ? amax / 127 : 0.0f;
  auto* u = reinterpret_cast<std::uint8_t*>(out);
  for (Index k = 0; k < K; ++k) {
    const float v = s > 0 ? std::nearbyint(a[k] / s) : 0.0f;
    u[k] =
        static_cast<std::uint8_t>(static_cast<int>(std::min(127.0f, std::max(-127.0f, v))) + 128);
  }
  std::fill(u + K, u + (K + 4 * L - 1) / (4 * L) * (4 * L), std::uint8_t(128));
  return finite ? s : NAN;  // a non-finite row gives NaN outputs
}

// C = start + A P on the hardware path: rows in blocks of MB converted at once, each group
// of GP panels streamed against the block's rows (as lowp::gemm, without the k chunks).
template <class Acc>
void gemm(const float* A, Index lda, Index M, const void* panels, Index K, Index N, Index npanels,
          const float* scale, const std::int32_t* corr, float* C, Index ldc, detail::Start start,
          const float* bias) {
  constexpr bool int8 = std::is_same_v<Acc, IV>;
  constexpr int MR = F::MR, G = int8 ? 4 : 2;
  constexpr Index MB = 4 * MR, GP = 4;
  const Index stride = (K + 4 * L - 1) / (4 * L) * (4 * L) / G;  // words per converted row
  thread_local Buffer<std::uint32_t> rows_buf;
  rows_buf.reserve_resize(static_cast<size_t>(MB * stride));
  float a_scale[MB];
  Call c{rows_buf.data(), stride, a_scale, panels, (K + G - 1) / G, N,
         scale,           corr,   C,       ldc,    start,           bias};
  for (Index m0 = 0; m0 < M; m0 += MB) {
    const Index mb = std::min(MB, M - m0);
    for (Index r = 0; r < mb; ++r) {
      std::uint32_t* out = rows_buf.data() + r * stride;
      if constexpr (int8)
        a_scale[r] = to_u8_quads(A + (m0 + r) * lda, K, out);
      else
        to_bf16_pairs(A + (m0 + r) * lda, K, out);
    }
    c.C = C + m0 * ldc;
    for (Index p = 0; p < npanels; p += GP) {
      const Index p_end = std::min(npanels, p + GP);
      for (Index r0 = 0; r0 < mb; r0 += MR)
        rows_n<Acc>(std::min<Index>(MR, mb - r0), std::make_integer_sequence<int, MR>{}, c, r0, p,
                    p_end);
    }
  }
}

#endif  // RNNCORE_LOWP_HW

}  // namespace lowp_hw
}  // namespace rnncore
