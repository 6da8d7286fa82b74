// Decode GEMV on GGUF-quantised weights, layouts side by side (issue 5): y[n] = W[n × k] · x[k] for
// the matrix shapes of the Qwen2.5-7B and -0.5B decode steps in Q4_K, Q6_K and Q8_0 (Q8_0 and Q5_0
// where k is not whole 256-element super-blocks: the 0.5B shape's fallback), random valid blocks.
// Each variant streams a rotating set of copies of W larger than the L2 cache, as a decode step
// does, and reports µs per product and the achieved bandwidth (weight bytes / time). Variants:
//   old          quant_gemv(..., QuantDot::kInt8) — the per-block kernel (every 8-row block
//                quantises x itself), called through the production entry point
//   new          quantize_x_int8 + quant_gemv_prequantized with the production layout table
//                (quant_gemv_layout), both kernels timed: what the decode step runs
//   SxR[s][w]/pP the same with S warps per row group, R rows per group (s: sharing each load of
//                x; w: Q4_K chunk pairs, pair_dot_q4k), P prefetch lines
//   (quantize_x_int8 alone is timed per k too.)
// Every variant's output is compared with the old kernel's (same int8 x, so only float rounding
// order differs): max |y − y_old| / rms(y_old) is printed and must stay below 1e-4, else the
// variant is marked FAIL and the program exits 1. One run proves speed and agreement.
// build: cmake --build build-cuda --target quant_gemv_variants (bin/quant_gemv_variants)
// usage: quant_gemv_variants [reps (default 200)]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/kernels.hpp"

#define CHECK(x)                                                                    \
  do {                                                                              \
    cudaError_t e = (x);                                                            \
    if (e != cudaSuccess) {                                                         \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      std::exit(2);                                                                 \
    }                                                                               \
  } while (0)

namespace {

using kiln::cuda::QuantFormat;
using kiln::cuda::QuantGemvLayout;
using kiln::cuda::QuantMatrixView;

struct Shape {
  const char* name;
  int64_t n, k;
};

struct Format {
  QuantFormat format;
  const char* name;
  std::vector<int> half_offsets;  // float16 fields (d, dmin) within a block
};

uint64_t next(uint64_t& s) {  // xorshift64*
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return s * 2685821657736338717ull;
}

// Random blocks: random quants and scales, float16 factors normal values in ±[2^-10, 2^-4).
std::vector<uint8_t> random_blocks(const Format& f, int64_t rows, int64_t k, uint64_t seed) {
  const size_t block_bytes = kiln::cuda::quant_block_bytes(f.format);
  std::vector<uint8_t> bytes(static_cast<size_t>(rows) * kiln::cuda::quant_row_bytes(f.format, k));
  uint64_t s = seed;
  for (size_t i = 0; i + 8 <= bytes.size(); i += 8) {
    const uint64_t v = next(s);
    std::memcpy(bytes.data() + i, &v, 8);
  }
  for (size_t b = 0; b < bytes.size() / block_bytes; ++b) {
    for (int off : f.half_offsets) {
      const uint64_t r = next(s);
      const auto h =
          static_cast<uint16_t>(((r & 1u) << 15) | ((5 + (r >> 1) % 6) << 10) | ((r >> 8) & 0x3FF));
      std::memcpy(bytes.data() + b * block_bytes + off, &h, 2);
    }
  }
  return bytes;
}

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  // µs per call of fn(copy index), after 3 warm-up calls.
  template <typename Fn>
  float time(int reps, int copies, const Fn& fn) {
    for (int r = 0; r < 3; ++r) fn(r % copies);
    CHECK(cudaEventRecord(a));
    for (int r = 0; r < reps; ++r) fn(r % copies);
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    CHECK(cudaGetLastError());
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    return ms * 1000.0f / static_cast<float>(reps);
  }
};

std::vector<float> download(const float* d, int64_t n) {
  std::vector<float> h(static_cast<size_t>(n));
  CHECK(cudaMemcpy(h.data(), d, h.size() * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

// max |y − ref| / rms(ref); infinity when y has a non-finite value.
double max_err(const std::vector<float>& y, const std::vector<float>& ref) {
  double ss = 0, worst = 0;
  for (float v : ref) ss += static_cast<double>(v) * v;
  const double rms = std::sqrt(ss / static_cast<double>(ref.size())) + 1e-30;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) return INFINITY;
    worst = std::max(worst, std::fabs(static_cast<double>(y[i]) - ref[i]) / rms);
  }
  return worst;
}

// S x R (s: the R rows share each load of x) / P prefetch lines
std::string layout_name(QuantGemvLayout l) {
  return std::to_string(l.warps_per_row) + "x" + std::to_string(l.rows_per_group) +
         (l.shared_x ? "s" : "") + (l.wide_chunks ? "w" : "") + "/p" +
         std::to_string(l.prefetch_lines);
}

int run(int reps) {
  const Shape shapes[] = {{"7B qkv", 4608, 3584},      {"7B wo", 3584, 3584},
                          {"7B gate_up", 37888, 3584}, {"7B down", 3584, 18944},
                          {"0.5B qkv", 1152, 896},     {"0.5B wo", 896, 896},
                          {"0.5B gate_up", 9728, 896}, {"0.5B down", 896, 4864}};
  const Format q4k{QuantFormat::Q4_K, "q4_k", {0, 2}}, q6k{QuantFormat::Q6_K, "q6_k", {208}},
      q8{QuantFormat::Q8_0, "q8_0", {0}}, q5{QuantFormat::Q5_0, "q5_0", {0}};
  std::vector<QuantGemvLayout> layouts;
  for (int s : {1, 2, 4, 8}) {
    for (int p : {0, 1, 4}) {
      layouts.push_back(QuantGemvLayout{s, 1, p, false});
      layouts.push_back(QuantGemvLayout{s, 2, p, false});
      layouts.push_back(QuantGemvLayout{s, 2, p, true});
      layouts.push_back(QuantGemvLayout{s, 4, p, true});
      for (int r : {1, 2, 4}) {  // chunk pairs: Q4_K only (skipped for the other formats below)
        layouts.push_back(QuantGemvLayout{s, r, p, r == 4, true});
        if (r == 2) layouts.push_back(QuantGemvLayout{s, r, p, true, true});
      }
    }
  }
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs, L2 %.1f MB; %d reps per variant\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize / 1e6, reps);

  constexpr int64_t kMaxK = 18944;
  std::vector<__nv_bfloat16> xh(kMaxK);
  uint64_t s = 12345;
  for (int64_t i = 0; i < kMaxK; ++i) {
    // Roughly normal (sum of uniforms) with an outlier every 53 elements, as activations have.
    double v = 0;
    for (int j = 0; j < 4; ++j) v += static_cast<double>(next(s) >> 11) / 9007199254740992.0;
    v = (v - 2.0) * 1.7;
    if (i % 53 == 0) v *= 16;
    xh[i] = __float2bfloat16(static_cast<float>(v));
  }
  __nv_bfloat16* x = nullptr;
  float *y = nullptr, *y_old = nullptr;
  void* xq = nullptr;
  CHECK(cudaMalloc(&x, kMaxK * sizeof(__nv_bfloat16)));
  CHECK(cudaMemcpy(x, xh.data(), kMaxK * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice));
  CHECK(cudaMalloc(&y, 40000 * sizeof(float)));
  CHECK(cudaMalloc(&y_old, 40000 * sizeof(float)));
  CHECK(cudaMalloc(&xq, kiln::cuda::quantized_x_bytes(kMaxK)));
  Timer timer;
  bool all_ok = true;

  std::printf("%-13s %-5s %7s | %-22s %9s %7s %10s\n", "shape", "fmt", "MB", "variant", "µs",
              "TB/s", "max err");
  for (const Shape& sh : shapes) {
    const float quant_us =
        timer.time(reps, 1, [&](int) { kiln::cuda::quantize_x_int8(x, sh.k, xq, nullptr); });
    std::printf("%-13s quantize_x_int8 alone (k = %lld): %.2f µs\n", sh.name,
                static_cast<long long>(sh.k), quant_us);
    const std::vector<Format> formats =
        sh.k % 256 == 0 ? std::vector<Format>{q4k, q6k, q8} : std::vector<Format>{q8, q5};
    for (const Format& f : formats) {
      const size_t bytes = static_cast<size_t>(sh.n) * kiln::cuda::quant_row_bytes(f.format, sh.k);
      const int copies = static_cast<int>(std::max<size_t>(2, (200u << 20) / bytes + 1));
      const std::vector<uint8_t> host = random_blocks(f, sh.n, sh.k, 99 + sh.n + sh.k);
      std::vector<uint8_t*> ws(copies);
      for (auto& p : ws) {
        CHECK(cudaMalloc(&p, bytes));
        CHECK(cudaMemcpy(p, host.data(), bytes, cudaMemcpyHostToDevice));
      }
      auto view = [&](int c) {
        return QuantMatrixView{ws[c], f.format, sh.n, sh.k,
                               kiln::cuda::quant_row_bytes(f.format, sh.k)};
      };
      auto report = [&](const std::string& name, float us, double err) {
        const bool ok = err < 1e-4;
        all_ok = all_ok && ok;
        std::printf("%-13s %-5s %7.1f | %-22s %9.2f %7.3f %10.2e%s\n", sh.name, f.name, bytes / 1e6,
                    name.c_str(), us, bytes / (us * 1e-6) / 1e12, err, ok ? "" : "  FAIL");
      };

      const float old_us = timer.time(reps, copies, [&](int c) {
        kiln::cuda::quant_gemv(view(c), x, y_old, 0.0f, kiln::cuda::QuantDot::kInt8, nullptr);
      });
      CHECK(cudaDeviceSynchronize());
      const std::vector<float> ref = download(y_old, sh.n);
      report("old (per-block x)", old_us, 0.0);

      const QuantGemvLayout table = kiln::cuda::quant_gemv_layout(f.format, sh.n, sh.k);
      auto run_new = [&](QuantGemvLayout l, bool with_quantize) {
        CHECK(cudaMemset(y, 0xFF, sh.n * sizeof(float)));
        kiln::cuda::quantize_x_int8(x, sh.k, xq, nullptr);
        kiln::cuda::quant_gemv_prequantized(view(0), xq, y, 0.0f, l, nullptr);
        CHECK(cudaDeviceSynchronize());
        const double err = max_err(download(y, sh.n), ref);
        const float us = timer.time(reps, copies, [&](int c) {
          if (with_quantize) kiln::cuda::quantize_x_int8(x, sh.k, xq, nullptr);
          kiln::cuda::quant_gemv_prequantized(view(c), xq, y, 0.0f, l, nullptr);
        });
        return std::make_pair(us, err);
      };
      const auto [new_us, new_err] = run_new(table, true);
      report("new " + layout_name(table) + " +quant", new_us, new_err);
      float best_us = 1e30f;
      QuantGemvLayout best{};
      for (const QuantGemvLayout& l : layouts) {
        if (l.wide_chunks && f.format != QuantFormat::Q4_K) continue;
        const auto [us, err] = run_new(l, false);
        report("  " + layout_name(l), us, err);
        if (us < best_us) best_us = us, best = l;
      }
      std::printf(
          "%-13s %-5s summary: old %.2f µs, new (table %s, with quantize) %.2f µs = %.2fx; best "
          "layout %s %.2f µs (+ quantize %.2f)\n",
          sh.name, f.name, old_us, layout_name(table).c_str(), new_us, old_us / new_us,
          layout_name(best).c_str(), best_us, quant_us);
      for (auto p : ws) CHECK(cudaFree(p));
    }
  }
  CHECK(cudaFree(x));
  CHECK(cudaFree(y));
  CHECK(cudaFree(y_old));
  CHECK(cudaFree(xq));
  std::printf(all_ok ? "quant_gemv_variants: every variant agrees with the old kernel\n"
                     : "quant_gemv_variants: FAIL (a variant disagrees with the old kernel)\n");
  return all_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) {
    std::printf("quant_gemv_variants: no CUDA device\n");
    return 2;
  }
  try {
    return run(argc > 1 ? std::max(1, std::atoi(argv[1])) : 200);
  } catch (const std::exception& e) {
    std::printf("quant_gemv_variants: %s\n", e.what());
    return 2;
  }
}
