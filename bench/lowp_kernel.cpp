// The per-step product h U alone (M rows, K x N): float32 vs bf16 vs int8 weights, through
// PackedWeights and packed_gemm (cpp/include/rnncore/lowp.hpp), bf16 and int8 on the
// portable path and on the best hardware path (lowp_x86.hpp) this build and CPU run. Build
// and run (see results/lowp-profile.md):
//   g++ -O3 -std=c++17 -march=x86-64-v4 -mprefer-vector-width=512 -ffp-contract=fast \
//       -Icpp/include -I<eigen3> bench/lowp_kernel.cpp -o /tmp/lowp_kernel && \
//       /tmp/lowp_kernel 1 128 512
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>
#include "rnncore/lowp.hpp"
using namespace rnncore;
int main(int argc, char** argv) {
  if (argc < 4) return std::fprintf(stderr, "usage: %s M K N\n", argv[0]), 2;
  const Index M = atoi(argv[1]), K = atoi(argv[2]), N = atoi(argv[3]);
  std::mt19937 g(1);
  std::normal_distribution<float> d;
  std::vector<float> U(K * N), A(M * K), C(M * N);
  for (auto& u : U) u = d(g) * 0.1f;
  for (auto& a : A) a = d(g);
  std::vector<std::uint16_t> ub(K * N);
  std::vector<std::int8_t> uq(K * N);
  std::vector<float> sc(N, 0.01f);
  for (Index i = 0; i < K * N; ++i) {
    uint32_t b;
    memcpy(&b, &U[i], 4);
    ub[i] = b >> 16;
    uq[i] = (int8_t)(i % 200 - 100);
  }
  LowpSource bf16{Precision::BF16, ub.data(), nullptr};
  LowpSource int8{Precision::Int8, uq.data(), sc.data()};
  PackedWeights<float> ps[5];
  ps[0].pack(U.data(), K, N, N);
  bf16.cap = int8.cap = static_cast<int>(LowpPath::Portable);
  ps[1].pack(nullptr, bf16, K, N, N);
  ps[2].pack(nullptr, int8, K, N, N);
  bf16.cap = int8.cap = static_cast<int>(LowpPath::Avx512Bf16);  // the best this CPU runs
  ps[3].pack(nullptr, bf16, K, N, N);
  ps[4].pack(nullptr, int8, K, N, N);
  std::string names[5] = {"f32", "bf16 portable", "int8 portable"};
  for (int w = 3; w < 5; ++w)
    names[w] = std::string(w == 3 ? "bf16 " : "int8 ") + lowp_path_name(ps[w].q.path);
  double best[5] = {1e9, 1e9, 1e9, 1e9, 1e9};
  for (int rep = 0; rep < 30; ++rep)
    for (int w = 0; w < 5; ++w) {
      auto t0 = std::chrono::steady_clock::now();
      for (int it = 0; it < 2000; ++it) packed_gemm(A.data(), K, M, ps[w], C.data(), N, true);
      double us =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
          2000;
      if (us < best[w]) best[w] = us;
    }
  for (int w = 0; w < 5; ++w)
    printf("M=%ld K=%ld N=%ld %-18s: %.3f us (best of 30), %.1f GFMA/s, %.2fx f32\n", (long)M,
           (long)K, (long)N, names[w].c_str(), best[w], M * K * N / best[w] / 1e3,
           best[0] / best[w]);
}
