// Decode GEMV layouts measured side by side (standalone; built on the GPU machine with nvcc, not
// part of the library): y[n] = W[n × k] · x[k], BF16 W and x, float32 y, for the matrix shapes of
// the Qwen2.5-0.5B and -7B decode steps. Each variant streams a rotating set of copies of W larger
// than the L2 cache, as a decode step does (every matrix read once per token), and reports µs per
// product and the achieved bandwidth. Variants:
//   row     one warp per row, every 16-byte load of a chunk of 8·256 elements in flight (kernels/gemv.cu)
//   splitS  S warps per row (S = 2, 4, 8), each taking a contiguous 1/S of k with its loads in flight,
//           partial sums added in shared memory in warp order (deterministic)
// usage: nvcc -O3 -arch=sm_90 -o gemv_variants tools/bench/gemv_variants.cu && ./gemv_variants
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(x)                                                                        \
  do {                                                                                  \
    cudaError_t e = (x);                                                                \
    if (e != cudaSuccess) {                                                             \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e));     \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float dot8(const uint4& a, const uint4& b) {
  const auto* a2 = reinterpret_cast<const __nv_bfloat162*>(&a);
  const auto* b2 = reinterpret_cast<const __nv_bfloat162*>(&b);
  float s = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 x = __bfloat1622float2(a2[j]), y = __bfloat1622float2(b2[j]);
    s += x.x * y.x + x.y * y.y;
  }
  return s;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// S warps per row, W warps per block (rows per block = W / S). Each warp: k range [lo, hi), all
// loads of up to kL per lane in flight per pass.
template <int S, int kL>
__global__ void gemv_split(const bf16* __restrict__ x, const bf16* __restrict__ w, float* y,
                          int k, int n) {
  extern __shared__ float part[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rows_per_block = blockDim.x / 32 / S;
  const int row = blockIdx.x * rows_per_block + warp / S;
  const int slice = warp % S;
  float acc = 0.0f;
  if (row < n) {
    const int k8 = k / 8;  // 16-byte units
    const int per = (k8 + S - 1) / S;
    const int lo = slice * per, hi = min(k8, lo + per);
    const uint4* wr = reinterpret_cast<const uint4*>(w + static_cast<size_t>(row) * k);
    const uint4* xr = reinterpret_cast<const uint4*>(x);
    for (int base = lo; base < hi; base += 32 * kL) {
      uint4 wv[kL];
#pragma unroll
      for (int i = 0; i < kL; ++i) {
        const int idx = base + i * 32 + lane;
        wv[i] = idx < hi ? __ldg(wr + idx) : uint4{};
      }
#pragma unroll
      for (int i = 0; i < kL; ++i) {
        const int idx = base + i * 32 + lane;
        if (idx < hi) acc += dot8(wv[i], xr[idx]);
      }
    }
  }
  acc = warp_sum(acc);
  if (S == 1) {
    if (lane == 0 && row < n) y[row] = acc;
    return;
  }
  if (lane == 0) part[warp] = acc;
  __syncthreads();
  if (slice == 0 && lane == 0 && row < n) {
    float s = 0.0f;
    for (int j = 0; j < S; ++j) s += part[warp + j];
    y[row] = s;
  }
}

struct Shape {
  const char* name;
  int n, k;
};

template <int S, int kL>
float time_variant(const bf16* x, const std::vector<bf16*>& ws, float* y, int k, int n, int warps) {
  const int rows_per_block = warps / S;
  const dim3 grid((n + rows_per_block - 1) / rows_per_block);
  const size_t smem = warps * sizeof(float);
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int r = 0; r < 3; ++r) {
    gemv_split<S, kL><<<grid, warps * 32, smem>>>(x, ws[r % ws.size()], y, k, n);
  }
  const int reps = 200;
  CHECK(cudaEventRecord(a));
  for (int r = 0; r < reps; ++r) {
    gemv_split<S, kL><<<grid, warps * 32, smem>>>(x, ws[r % ws.size()], y, k, n);
  }
  CHECK(cudaEventRecord(b));
  CHECK(cudaEventSynchronize(b));
  float ms = 0;
  CHECK(cudaEventElapsedTime(&ms, a, b));
  CHECK(cudaGetLastError());
  return ms * 1000.0f / reps;
}

int main() {
  const Shape shapes[] = {{"0.5B qkv", 1152, 896},     {"0.5B wo", 896, 896},
                          {"0.5B gate_up", 9728, 896}, {"0.5B down", 896, 4864},
                          {"0.5B lm_head", 151936, 896}, {"7B qkv", 4608, 3584},
                          {"7B wo", 3584, 3584},       {"7B gate_up", 37888, 3584},
                          {"7B down", 3584, 18944}};
  bf16* x;
  float* y;
  CHECK(cudaMalloc(&x, 32768 * sizeof(bf16)));
  CHECK(cudaMalloc(&y, 200000 * sizeof(float)));
  CHECK(cudaMemset(x, 0, 32768 * sizeof(bf16)));
  std::printf("%-14s %10s | %s\n", "shape", "MB", "µs (TB/s) per variant: row/4w row/8w split2 split4 split8");
  for (const Shape& s : shapes) {
    const size_t bytes = static_cast<size_t>(s.n) * s.k * sizeof(bf16);
    const int copies = static_cast<int>(std::max<size_t>(2, (200u << 20) / bytes + 1));
    std::vector<bf16*> ws(copies);
    for (auto& p : ws) {
      CHECK(cudaMalloc(&p, bytes));
      CHECK(cudaMemset(p, 0, bytes));
    }
    const float t[] = {time_variant<1, 8>(x, ws, y, s.k, s.n, 4), time_variant<1, 8>(x, ws, y, s.k, s.n, 8),
                       time_variant<2, 8>(x, ws, y, s.k, s.n, 8), time_variant<4, 8>(x, ws, y, s.k, s.n, 8),
                       time_variant<8, 8>(x, ws, y, s.k, s.n, 8)};
    std::printf("%-14s %10.1f |", s.name, bytes / 1e6);
    for (float us : t) std::printf(" %7.2f (%4.2f)", us, bytes / (us * 1e-6) / 1e12);
    std::printf("\n");
    for (auto p : ws) CHECK(cudaFree(p));
  }
  return 0;
}
