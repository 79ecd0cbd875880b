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
#include <atomic>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>

#include <unistd.h>

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
#ifdef RNNCORE_MR  // experiments only (a standalone driver's -D); the modules never set it
  static constexpr int MR = RNNCORE_MR;
#else
  static constexpr int MR = 6;  // rows per register block: 12 accumulators
#endif
};

// A packed matrix as the kernel reads it: `panels` column panels of NR values, panel p being
// K rows of NR contiguous values (p*NR + j is column j of panel p), zero past column N.
template <class T>
struct Panels {
  const T* data = nullptr;
  Index K = 0, N = 0, panels = 0;
};

// U (K x N) packed into panels once, for many products.
template <class T>
struct PackedMatrix {
  Index K = 0, N = 0, panels = 0;
  Buffer<T> data;

  // Sizes the buffer for a K x N matrix (contents undefined until pack_panels).
  void resize(Index K_, Index N_) {
    K = K_, N = N_, panels = (N + Kernel<T>::NR - 1) / Kernel<T>::NR;
    data.reserve_resize(static_cast<size_t>(panels * K * Kernel<T>::NR));
  }

  // Packs panels [p0, p1) of the matrix whose element (k, n) is U[k * rs + n * cs]: rs = ld,
  // cs = 1 for a row-major U; rs = 1, cs = ld for the transpose of a row-major matrix.
  // Disjoint panel ranges can be packed by different threads.
  void pack_panels(const T* U, Index rs, Index cs, Index p0, Index p1) {
    constexpr int NR = Kernel<T>::NR;
    if (cs == 1) {  // row by row: U is read in order (panel by panel, a tall U's rows are
                    // 4 KiB or more apart and each row of a panel a TLB miss: 4x slower)
      for (Index k = 0; k < K; ++k)
        for (Index p = p0; p < p1; ++p) {
          const Index c0 = p * NR, w = std::min<Index>(NR, N - c0);
          T* dst = data.data() + (p * K + k) * NR;
          std::copy_n(U + k * rs + c0, w, dst);
          std::fill(dst + w, dst + NR, T(0));
        }
      return;
    }
    for (Index p = p0; p < p1; ++p) {
      const Index c0 = p * NR, w = std::min<Index>(NR, N - c0);
      T* dst = data.data() + p * K * NR;
      for (Index j = 0; j < w; ++j) {  // one source column at a time: contiguous when rs = 1
        const T* src = U + (c0 + j) * cs;
        for (Index k = 0; k < K; ++k) dst[k * NR + j] = src[k * rs];
      }
      for (Index k = 0; k < K; ++k) std::fill(dst + k * NR + w, dst + (k + 1) * NR, T(0));
    }
  }

  // U (K x N, rows `ld` apart).
  void pack(const T* U, Index K_, Index N_, Index ld) {
    resize(K_, N_);
    pack_panels(U, ld, 1, 0, panels);
  }

  Panels<T> all() const { return {data.data(), K, N, panels}; }
};

// ---------------------------------------------------------------------------------------
// Cache sizes and the blocking derived from them.
//
// The kernel streams a KC x NR chunk of one panel against the MR-row blocks of an A block,
// and the A block (MC x KC, copied k-major) against every panel. Each k chunk past the first
// costs a pass over C (its partial sums are stored and reloaded), so KC is as large as keeps
// the panel chunk within a sixteenth of L2, where the kernel's 2 vector loads per 2 MR FMAs
// are served at full rate: 512 floats with a 512 KiB L2 and AVX2's 16-column panels (the
// constant tuned earlier on AVX2 EPYCs), 512 with a 1 MiB L2 and AVX-512's 32 columns. Sized
// to L1 instead (384 on a 48 KiB L1d, AVX-512), S4's K = 512 splits in two chunks and its
// forward ran 3-9% slower on a Zen 5 EPYC. The A block takes half of L2: MC rows of KC, so a
// tall product (the backward's X^T dG, thousands of k) streams its packed right operand
// from memory once per MC rows of output. The sizes come from the OS at run time (sysfs,
// else sysconf), else the constants below.
struct CacheSizes {
  long l1d = 32 * 1024, l2 = 512 * 1024, l3 = 0;  // bytes
  const char* source = "default";
};

namespace detail {
inline long sysfs_cache_size(int level, bool data) {
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream lf(dir + "level"), tf(dir + "type"), sf(dir + "size");
    int lv = 0;
    std::string type, size;
    if (!(lf >> lv) || !(tf >> type) || !(sf >> size)) continue;
    if (lv != level || type == (data ? "Instruction" : "Data")) continue;
    long v = std::atol(size.c_str());
    if (!size.empty() && (size.back() == 'K' || size.back() == 'k')) v *= 1024;
    if (!size.empty() && size.back() == 'M') v *= 1024 * 1024;
    return v;
  }
  return 0;
}
}  // namespace detail

// sysfs first (the kernel's own view, per cache level); sysconf where it is missing, whose L3
// figure on some AMD CPUs is the whole package's, not one core complex's.
inline CacheSizes detect_cache_sizes() {
  CacheSizes c;
  long l1 = detail::sysfs_cache_size(1, true), l2 = detail::sysfs_cache_size(2, true),
       l3 = detail::sysfs_cache_size(3, true);
  c.source = "sysfs";
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
  if (l1 <= 0 || l2 <= 0) {
    l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE), l3 = 0;
#if defined(_SC_LEVEL3_CACHE_SIZE)
    l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    c.source = "sysconf";
  }
#endif
  if (l1 < 8 * 1024 || l2 < 64 * 1024) return CacheSizes{};  // not reported: the defaults
  c.l1d = l1, c.l2 = l2, c.l3 = std::max(l3, 0L);
  return c;
}

inline const CacheSizes& cache_sizes() {
  static const CacheSizes c = detect_cache_sizes();
  return c;
}

// KC (k values per panel chunk) and MC (rows of A per block, a multiple of MR).
struct Blocking {
  Index KC, MC;
};

template <class T>
Blocking blocking_for(const CacheSizes& c) {
  constexpr Index NR = Kernel<T>::NR, MR = Kernel<T>::MR, size = sizeof(T);
  const Index KC = std::clamp<Index>(c.l2 / 16 / (NR * size) / 64 * 64, 64, 2048);
  const Index MC = std::clamp<Index>(c.l2 / 2 / (KC * size) / MR * MR, MR, 64 * MR);
  return {KC, MC};
}

// The blocking in force: derived from the cache sizes once, or set (for tuning) by
// set_blocking; 0 restores the derived value.
template <class T>
std::atomic<Index>* blocking_override() {
  static std::atomic<Index> v[2] = {0, 0};
  return v;
}

template <class T>
Blocking blocking() {
  constexpr Index MR = Kernel<T>::MR;
  static const Blocking derived = blocking_for<T>(cache_sizes());
  const Index kc = blocking_override<T>()[0].load(std::memory_order_relaxed),
              mc = blocking_override<T>()[1].load(std::memory_order_relaxed);
  return {kc > 0 ? kc : derived.KC, mc > 0 ? (mc + MR - 1) / MR * MR : derived.MC};
}

template <class T>
void set_blocking(Index kc, Index mc) {
  blocking_override<T>()[0] = std::max<Index>(kc, 0);
  blocking_override<T>()[1] = std::max<Index>(mc, 0);
}

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
inline void block(Index k0, Index kc, const T* a, const Panels<T>& P, Index p0, T* C, Index ldc,
                  Start start, const T* bias) {
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
  const T* panel = P.data + (p0 * P.K + k0) * NR;
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
inline void tail_rows(Index k0, Index kc, const T* a, const Panels<T>& P, T* C, Index ldc,
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
                        const T* a, const Panels<T>& P, T* C, Index ldc, Start start,
                        const T* bias) {
  ((rows == R + 1 ? tail_rows<T, R + 1>(k0, kc, a, P, C, ldc, start, bias) : void()), ...);
}

}  // namespace detail

// C (M x P.N, rows ldc apart) = A (M x P.K) * P, plus, by `start`, nothing, C's own values
// (C += A P) or the row vector `bias` (C = A P + bias). A's element (i, k) is A[i * lda + k],
// or with a_transposed A[k * lda + i]: then A is the transpose of a row-major K x M matrix,
// as in the weight gradients X^T dG (backward.hpp).
//
// Blocking (the BLIS scheme, with P packed beforehand): rows go in blocks of MC and k in
// chunks of KC (blocking(), from the cache sizes); each block's A chunk is copied k-major per
// MR rows into a per-thread buffer, then each panel's KC x NR chunk is streamed against all
// the block's rows. Copying A costs K/(2N) of the product and turns the kernel's reads of A
// into one contiguous stream; a block of rows reads each panel once, where a whole tall A (a
// projection's thousand rows) would be re-read from L2 or L3 for every panel. None of this
// changes a result: each output is one FMA chain over k in order (see block).
template <class T>
void packed_gemm(const T* A, Index lda, Index M, const Panels<T>& P, T* C, Index ldc,
                 detail::Start start, const T* bias = nullptr, bool a_transposed = false) {
  using detail::Start;
  constexpr int MR = Kernel<T>::MR;
  const Blocking bl = blocking<T>();
  const Index KC = bl.KC, MC = bl.MC;
  thread_local Buffer<T> a_mem;
  a_mem.reserve_resize(static_cast<size_t>(std::min(MC, std::max<Index>(M, 1)) * KC));
  T* a_buf = a_mem.data();
  for (Index m0 = 0; m0 < M; m0 += MC) {
    const Index mc = std::min(MC, M - m0), full = mc / MR * MR, rest = mc - full;
    for (Index k0 = 0; k0 < P.K || k0 == 0; k0 += KC) {
      const Index kc = std::min(KC, P.K - k0);
      const Start s = k0 == 0 ? start : Start::C;
      // a_buf: per block of R rows, kc x R values, k-major. A single row already is.
      if (mc == 1 && !a_transposed) {
        detail::tail_rows<T, 1>(k0, kc, A + m0 * lda + k0, P, C + m0 * ldc, ldc, s, bias);
        continue;
      }
      for (Index r0 = 0; r0 < mc; r0 += MR) {
        const Index R = std::min<Index>(MR, mc - r0);
        T* dst = a_buf + r0 * kc;
        if (a_transposed) {  // the R values of one k are adjacent in A already
          for (Index k = 0; k < kc; ++k) std::copy_n(A + (k0 + k) * lda + m0 + r0, R, dst + k * R);
          continue;
        }
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

template <class T>
void packed_gemm(const T* A, Index lda, Index M, const PackedMatrix<T>& P, T* C, Index ldc,
                 detail::Start start, const T* bias = nullptr) {
  packed_gemm(A, lda, M, P.all(), C, ldc, start, bias);
}

// The two common cases by name.
template <class T>
void packed_gemm(const T* A, Index lda, Index M, const PackedMatrix<T>& P, T* C, Index ldc,
                 bool accumulate) {
  packed_gemm(A, lda, M, P.all(), C, ldc, accumulate ? detail::Start::C : detail::Start::Zero);
}

}  // namespace rnncore
