// The per-step product h U alone (M rows, K x N): float32 vs bf16 vs int8 weights, through
// PackedWeights and packed_gemm (cpp/include/rnncore/lowp.hpp). Build and run (see
// results/lowp-profile.md):
//   g++ -O3 -std=c++17 -march=x86-64-v3 -ffp-contract=fast -Icpp/include -I<eigen3> \
//       bench/lowp_kernel.cpp -o /tmp/lowp_kernel && /tmp/lowp_kernel 1 128 512
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>
#include "rnncore/lowp.hpp"
using namespace rnncore;
int main(int argc, char** argv) {
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
  PackedWeights<float> pf, pb, pq;
  pf.pack(U.data(), K, N, N);
  pb.pack(nullptr, LowpSource{Precision::BF16, ub.data(), nullptr}, K, N, N);
  pq.pack(nullptr, LowpSource{Precision::Int8, uq.data(), sc.data()}, K, N, N);
  const char* names[] = {"f32", "bf16", "int8"};
  PackedWeights<float>* ps[] = {&pf, &pb, &pq};
  double best[3] = {1e9, 1e9, 1e9};
  for (int rep = 0; rep < 30; ++rep)
    for (int w = 0; w < 3; ++w) {
      auto t0 = std::chrono::steady_clock::now();
      for (int it = 0; it < 2000; ++it) packed_gemm(A.data(), K, M, *ps[w], C.data(), N, true);
      double us =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
          2000;
      if (us < best[w]) best[w] = us;
    }
  for (int w = 0; w < 3; ++w)
    printf("M=%ld K=%ld N=%ld %s: %.3f us (best of 30), %.1f GFMA/s\n", (long)M, (long)K, (long)N,
           names[w], best[w], M * K * N / best[w] / 1e3);
}
