// Prefill attention (kernels/attention_prefill*.cu): the tensor-core kernel, the CUDA-core
// fallback and the dispatcher between them against a float64 causal softmax attention written
// here from the definition, over chunked-prefill shapes (start_pos > 0), GQA groups 1 / 2 / 7 and
// awkward token counts, outputs poisoned with NaN before every run. Then the two kernels timed on
// the Qwen2.5-0.5B shape (the lead's GPU run prints the gain). Without a GPU every test skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/kernels.hpp"
#include "cuda_test_util.hpp"

namespace kiln::cuda {
namespace {

using test::DeviceArray;
using test::from_bf16;
using test::random_normal;
using test::to_bf16;

struct Shape {
  int64_t n_tokens, start_pos;
  int32_t n_heads, n_kv_heads, head_dim;
  std::string name() const {
    return "tokens " + std::to_string(n_tokens) + " start " + std::to_string(start_pos) +
           " heads " + std::to_string(n_heads) + "/" + std::to_string(n_kv_heads) + " head_dim " +
           std::to_string(head_dim);
  }
  // Multiply-adds of Q·Kᵀ and P·V over the causal keys, 2 flops each.
  double flops() const {
    double keys = 0;
    for (int64_t t = 0; t < n_tokens; ++t) keys += static_cast<double>(start_pos + t + 1);
    return 4.0 * keys * n_heads * head_dim;
  }
};

// float64 causal GQA attention: query t (position start_pos + t) of head h over cache rows
// 0 .. start_pos + t of KV head h / (n_heads / n_kv_heads), scores q·k / sqrt(head_dim).
std::vector<double> reference(const std::vector<float>& q, const std::vector<float>& k,
                              const std::vector<float>& v, const Shape& c) {
  const int64_t D = c.head_dim, group = c.n_heads / c.n_kv_heads, kv_dim = c.n_kv_heads * D;
  std::vector<double> out(c.n_tokens * c.n_heads * D);
  std::vector<double> s;
  for (int64_t t = 0; t < c.n_tokens; ++t) {
    const int64_t n_keys = c.start_pos + t + 1;
    s.assign(n_keys, 0.0);
    for (int64_t h = 0; h < c.n_heads; ++h) {
      const float* qv = &q[(t * c.n_heads + h) * D];
      const int64_t kv_off = (h / group) * D;
      double mx = -INFINITY;
      for (int64_t j = 0; j < n_keys; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += double(qv[d]) * k[j * kv_dim + kv_off + d];
        s[j] = dot / std::sqrt(double(D));
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (auto& e : s) sum += (e = std::exp(e - mx));
      double* o = &out[(t * c.n_heads + h) * D];
      for (int64_t j = 0; j < n_keys; ++j) {
        const double p = s[j] / sum;
        for (int64_t d = 0; d < D; ++d) o[d] += p * v[j * kv_dim + kv_off + d];
      }
    }
  }
  return out;
}

// ‖got − want‖₂ / ‖want‖₂; NaN (an unwritten, poisoned element) propagates.
double relative_l2(const std::vector<float>& got, const std::vector<double>& want) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::sqrt(err / norm);
}

using Kernel = std::function<void(const float*, const bf16*, const bf16*, bf16*, const Shape&)>;

const Kernel kDispatch = [](const float* q, const bf16* k, const bf16* v, bf16* o, const Shape& c) {
  attention_prefill(q, k, v, o, c.n_tokens, c.start_pos, c.n_heads, c.n_kv_heads, c.head_dim,
                    nullptr);
};
const Kernel kCudaCores = [](const float* q, const bf16* k, const bf16* v, bf16* o,
                             const Shape& c) {
  attention_prefill_cuda_cores(q, k, v, o, c.n_tokens, c.start_pos, c.n_heads, c.n_kv_heads,
                               c.head_dim, nullptr);
};
Kernel mma_kernel(MmaPrecision precision, int warps) {
  return [precision, warps](const float* q, const bf16* k, const bf16* v, bf16* o, const Shape& c) {
    attention_prefill_mma(q, k, v, o, c.n_tokens, c.start_pos, c.n_heads, c.n_kv_heads, c.head_dim,
                          precision, warps, nullptr);
  };
}
const char* name(MmaPrecision p) { return p == MmaPrecision::kBf16 ? "bf16" : "bf16x2"; }

struct Inputs {
  std::vector<float> q;
  std::vector<bf16> k, v;  // the cache: start_pos + n_tokens rows in use, then spare rows
  std::vector<double> want;
};

Inputs make_inputs(const Shape& c, std::mt19937& rng) {
  const int64_t D = c.head_dim, kv_dim = c.n_kv_heads * D;
  const int64_t ctx = c.start_pos + c.n_tokens + 5;  // rows past the keys in use: never read
  Inputs in;
  // Scores q·k / sqrt(D) with a standard deviation of 2: the softmax is neither uniform nor
  // one-hot, so both the exponentials and the weighted sum of V matter.
  in.q = random_normal(c.n_tokens * c.n_heads * D, rng, 2.0f);
  in.k = to_bf16(random_normal(ctx * kv_dim, rng));
  in.v = to_bf16(random_normal(ctx * kv_dim, rng));
  in.want = reference(in.q, from_bf16(in.k), from_bf16(in.v), c);
  // Spare cache rows are NaN: a kernel reading past start_pos + n_tokens poisons its output.
  for (int64_t i = (c.start_pos + c.n_tokens) * kv_dim; i < ctx * kv_dim; ++i) {
    __nv_bfloat16_raw nan;
    nan.x = 0x7FC0;
    in.k[i] = nan;
    in.v[i] = nan;
  }
  return in;
}

// Runs `kernel` on poisoned output and returns the relative L2 error against the reference.
double run(const Kernel& kernel, const Shape& c, const Inputs& in) {
  DeviceArray<float> d_q(in.q);
  DeviceArray<bf16> d_k(in.k), d_v(in.v), d_out(in.want.size());
  kernel(d_q.get(), d_k.get(), d_v.get(), d_out.get(), c);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return relative_l2(from_bf16(d_out.download()), in.want);
}

// kBf16: BF16 inputs to both products (q after scaling, P) and a BF16 output, relative L2 error
// ~3e-3 on these inputs (scores of std 2), worst 5.16e-3 over the 108 shapes on the H100 (run of
// 2026-11-24; hence 7e-3). The CUDA-core kernel (float32 q and P) and kBf16x2 (q and P as two BF16
// terms each) round only the output: ~1.7e-3 (2^-9 relative per element), worst 1.80e-3.
constexpr double kBf16Tolerance = 7e-3;
constexpr double kFloat32Tolerance = 3e-3;

class CudaAttentionPrefill : public ::testing::Test {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
  std::mt19937 rng{20261124};
};

TEST_F(CudaAttentionPrefill, EveryPathMatchesFloat64CausalAttention) {
  double worst_bf16 = 0, worst_x2 = 0, worst_cores = 0, worst_dispatch = 0;
  int cases = 0;
  for (const int32_t D : {64, 128}) {
    for (const int32_t group : {1, 2, 7}) {
      // Two KV heads, except group 7 (the 0.5B model's 14/2 is covered by the timing shape's
      // check below; one KV head keeps the float64 reference quick).
      const int32_t n_kv = group == 7 ? 1 : 2;
      for (const int64_t start : {0, 5, 200}) {
        for (const int64_t n : {1, 7, 64, 100, 256, 300}) {
          const Shape c{n, start, group * n_kv, n_kv, D};
          SCOPED_TRACE(c.name());
          const Inputs in = make_inputs(c, rng);
          const double one_term = run(mma_kernel(MmaPrecision::kBf16, 0), c, in);
          const double x2 = run(mma_kernel(MmaPrecision::kBf16x2, 0), c, in);
          const double cores = run(kCudaCores, c, in);
          const double dispatch = run(kDispatch, c, in);
          // A NaN (an element left poisoned) fails these comparisons too.
          EXPECT_LE(one_term, kBf16Tolerance) << "tensor cores, bf16";
          EXPECT_LE(x2, kFloat32Tolerance) << "tensor cores, bf16x2";
          EXPECT_LE(cores, kFloat32Tolerance) << "CUDA cores";
          EXPECT_LE(dispatch, kFloat32Tolerance) << "attention_prefill";
          const auto worst = [](double& w, double e) {
            w = std::max(w, std::isnan(e) ? INFINITY : e);
          };
          worst(worst_bf16, one_term);
          worst(worst_x2, x2);
          worst(worst_cores, cores);
          worst(worst_dispatch, dispatch);
          ++cases;
        }
      }
    }
  }
  std::printf(
      "[prefill attention] %d shapes, worst relative L2 vs float64: tensor cores bf16 %.2e (limit "
      "%.0e), tensor cores bf16x2 %.2e, CUDA cores %.2e, attention_prefill %.2e (limit %.0e)\n",
      cases, worst_bf16, kBf16Tolerance, worst_x2, worst_cores, worst_dispatch, kFloat32Tolerance);
}

TEST_F(CudaAttentionPrefill, EveryBlockSizeAndSmallHeadDims) {
  // Fixed block sizes (1, 2, 4 warps) on shapes whose row count is not a multiple of any block,
  // and the head dims that use the padded kernels (16 → 32, 32, 40 → 64, 80 → 96, 96, 120 → 128).
  double worst[2] = {0, 0};  // bf16, bf16x2
  const auto check = [&](const Kernel& kernel, MmaPrecision p, const Shape& c, const Inputs& in) {
    const double e = run(kernel, c, in);
    const bool x2 = p == MmaPrecision::kBf16x2;
    EXPECT_LE(e, x2 ? kFloat32Tolerance : kBf16Tolerance) << "tensor cores, " << name(p);
    worst[x2] = std::max(worst[x2], std::isnan(e) ? INFINITY : e);
  };
  for (const MmaPrecision p : {MmaPrecision::kBf16, MmaPrecision::kBf16x2}) {
    for (const int warps : {1, 2, 4}) {
      for (const Shape& c : {Shape{37, 0, 6, 2, 64}, Shape{19, 45, 4, 4, 128},
                             Shape{130, 3, 14, 2, 64}, Shape{50, 70, 7, 7, 64}}) {
        SCOPED_TRACE(c.name() + " warps " + std::to_string(warps));
        check(mma_kernel(p, warps), p, c, make_inputs(c, rng));
      }
    }
    for (const int32_t D : {16, 32, 40, 80, 96, 120}) {
      for (const Shape& c : {Shape{33, 7, 4, 2, D}, Shape{100, 200, 6, 3, D}}) {
        SCOPED_TRACE(c.name());
        const Inputs in = make_inputs(c, rng);
        check(mma_kernel(p, 0), p, c, in);
        EXPECT_LE(run(kCudaCores, c, in), kFloat32Tolerance) << "CUDA cores";
      }
    }
  }
  std::printf(
      "[prefill attention] block sizes / head dims: worst tensor-core relative L2 bf16 %.2e, "
      "bf16x2 %.2e\n",
      worst[0], worst[1]);
}

TEST_F(CudaAttentionPrefill, FallbackServesWhatTheTensorCoreKernelDoesNot) {
  // head_dim 256 is past the tensor-core kernel: attention_prefill still answers, exactly as the
  // CUDA-core kernel does.
  const Shape c{21, 9, 4, 2, 256};
  const Inputs in = make_inputs(c, rng);
  DeviceArray<float> d_q(in.q);
  DeviceArray<bf16> d_k(in.k), d_v(in.v), d_out(in.want.size());
  EXPECT_FALSE(attention_prefill_mma_supported(d_q.get(), d_k.get(), d_v.get(), d_out.get(), 256));
  EXPECT_TRUE(attention_prefill_mma_supported(d_q.get(), d_k.get(), d_v.get(), d_out.get(), 128));
  // A misaligned q (float offset 1 = 4 bytes) goes to the fallback as well.
  EXPECT_FALSE(
      attention_prefill_mma_supported(d_q.get() + 1, d_k.get(), d_v.get(), d_out.get(), 64));
  EXPECT_THROW(
      attention_prefill_mma(d_q.get(), d_k.get(), d_v.get(), d_out.get(), c.n_tokens, c.start_pos,
                            c.n_heads, c.n_kv_heads, 256, MmaPrecision::kBf16x2, 0, nullptr),
      std::exception);
  EXPECT_THROW(
      attention_prefill_mma(d_q.get(), d_k.get(), d_v.get(), d_out.get(), c.n_tokens, c.start_pos,
                            c.n_heads, c.n_kv_heads, 64, MmaPrecision::kBf16x2, 3, nullptr),
      std::exception);
  const double dispatch = run(kDispatch, c, in);
  EXPECT_LE(dispatch, kFloat32Tolerance);
  DeviceArray<bf16> a(in.want.size()), b(in.want.size());
  kDispatch(d_q.get(), d_k.get(), d_v.get(), a.get(), c);
  kCudaCores(d_q.get(), d_k.get(), d_v.get(), b.get(), c);
  const auto got_a = from_bf16(a.download()), got_b = from_bf16(b.download());
  for (size_t i = 0; i < got_a.size(); ++i) ASSERT_EQ(got_a[i], got_b[i]) << i;
}

// Mean time of `kernel` over many launches (after a warm-up), in microseconds.
double time_us(const Kernel& kernel, const Shape& c, const float* q, const bf16* k, const bf16* v,
               bf16* out) {
  constexpr int kWarmup = 20, kIters = 200;
  for (int i = 0; i < kWarmup; ++i) kernel(q, k, v, out, c);
  cudaEvent_t begin, end;
  EXPECT_EQ(cudaEventCreate(&begin), cudaSuccess);
  EXPECT_EQ(cudaEventCreate(&end), cudaSuccess);
  EXPECT_EQ(cudaEventRecord(begin, nullptr), cudaSuccess);
  for (int i = 0; i < kIters; ++i) kernel(q, k, v, out, c);
  EXPECT_EQ(cudaEventRecord(end, nullptr), cudaSuccess);
  EXPECT_EQ(cudaEventSynchronize(end), cudaSuccess);
  float ms = 0;
  EXPECT_EQ(cudaEventElapsedTime(&ms, begin, end), cudaSuccess);
  (void)cudaEventDestroy(begin);
  (void)cudaEventDestroy(end);
  return 1000.0 * ms / kIters;
}

TEST_F(CudaAttentionPrefill, TimingOnTheQwen05bShape) {
  // One 256-token chunk of Qwen2.5-0.5B (14 heads over 2 KV heads, head_dim 64), first and second
  // chunk of a prompt; per layer (24 layers per chunk in pp512).
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  std::printf("[prefill attention timing] %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  for (const int64_t start : {0, 256}) {
    const Shape c{256, start, 14, 2, 64};
    const Inputs in = make_inputs(c, rng);
    DeviceArray<float> d_q(in.q);
    DeviceArray<bf16> d_k(in.k), d_v(in.v), d_out(in.want.size());
    // The timed shape computes the right thing (the full 14/2 grouping).
    EXPECT_LE(run(kDispatch, c, in), kFloat32Tolerance) << c.name();
    const double old_us = time_us(kCudaCores, c, d_q.get(), d_k.get(), d_v.get(), d_out.get());
    const double tflop = c.flops() / 1e12;
    std::printf("  %s: CUDA cores %8.1f us %6.2f TFLOP/s\n", c.name().c_str(), old_us,
                tflop / (old_us * 1e-6));
    const double new_us = time_us(kDispatch, c, d_q.get(), d_k.get(), d_v.get(), d_out.get());
    std::printf("  %s: attention_prefill (bf16x2, auto block) %8.1f us %6.2f TFLOP/s (%.1fx)\n",
                c.name().c_str(), new_us, tflop / (new_us * 1e-6), old_us / new_us);
    // The variants, for tuning (TFLOP/s counts the attention's flops, not bf16x2's doubled work).
    for (const MmaPrecision p : {MmaPrecision::kBf16, MmaPrecision::kBf16x2}) {
      for (const int warps : {0, 1, 2, 4}) {
        const double us =
            time_us(mma_kernel(p, warps), c, d_q.get(), d_k.get(), d_v.get(), d_out.get());
        std::printf("  %s: tensor cores %-6s, %s warps/block %8.1f us %6.2f TFLOP/s (%.1fx)\n",
                    c.name().c_str(), name(p), warps == 0 ? "auto" : std::to_string(warps).c_str(),
                    us, tflop / (us * 1e-6), old_us / us);
      }
    }
    // The point of the kernel: not a tight bound (timings vary), but it must be clearly faster.
    EXPECT_LT(new_us, old_us) << c.name();
  }
}

}  // namespace
}  // namespace kiln::cuda

#else

TEST(CudaAttentionPrefill, NotBuilt) { GTEST_SKIP() << "built without CUDA (KILN_CUDA=OFF)"; }

#endif
