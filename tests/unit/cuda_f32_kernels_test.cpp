// The F32 precision's kernels (KILN_PRECISION_F32) against float64 references written from the
// definitions: causal GQA attention over float32 caches (prefill, and decode across the split-K
// boundaries), and the full-float32 cuBLAS product linear_f32 (which must not use TF32: its error
// is checked at float32 accumulation level, far below TF32's ~1e-3). Without a GPU every test
// skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_handles.hpp"
#include "backend/cuda/gemm.hpp"
#include "backend/cuda/kernels.hpp"
#include "cuda_test_util.hpp"

namespace kiln::cuda {
namespace {

using test::DeviceArray;
using test::random_normal;

// Every element within rel·|want| + abs_slack; the worst relative error is printed.
void expect_close(const std::vector<float>& got, const std::vector<double>& want, double rel,
                  double abs_slack, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  size_t bad = 0;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(double(got[i]) - want[i]);
    worst = std::max(worst, err / (std::abs(want[i]) + abs_slack));
    if (!(err <= std::abs(want[i]) * rel + abs_slack)) {
      if (++bad <= 5)
        ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
    }
  }
  std::printf("[ f32      ] %-40s worst relative error %.3e\n", what.c_str(), worst);
  EXPECT_EQ(bad, 0u) << what << ": elements out of tolerance";
}

struct AttnCase {
  int64_t n_tokens, start_pos;
  int32_t n_heads, n_kv_heads, head_dim;
};

// float64 causal grouped-query attention, softmax(q·kᵀ/sqrt(D))·v.
std::vector<double> attention_reference(const std::vector<float>& q, const std::vector<float>& k,
                                        const std::vector<float>& v, const AttnCase& c) {
  const int64_t D = c.head_dim, group = c.n_heads / c.n_kv_heads, kv_dim = c.n_kv_heads * D;
  std::vector<double> out(c.n_tokens * c.n_heads * D);
  for (int64_t t = 0; t < c.n_tokens; ++t) {
    const int64_t n_keys = c.start_pos + t + 1;
    for (int64_t h = 0; h < c.n_heads; ++h) {
      const int64_t g = h / group;
      std::vector<double> s(n_keys);
      double mx = -INFINITY;
      for (int64_t j = 0; j < n_keys; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) {
          dot += double(q[(t * c.n_heads + h) * D + d]) * k[j * kv_dim + g * D + d];
        }
        s[j] = dot / std::sqrt(double(D));
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (auto& e : s) sum += (e = std::exp(e - mx));
      for (int64_t d = 0; d < D; ++d) {
        double o = 0;
        for (int64_t j = 0; j < n_keys; ++j) o += s[j] * v[j * kv_dim + g * D + d];
        out[(t * c.n_heads + h) * D + d] = o / sum;
      }
    }
  }
  return out;
}

class CudaF32Kernels : public ::testing::Test {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
  std::mt19937 rng{4242};

  void run_attention(const AttnCase& c, bool decode, int64_t extra_context = 0) {
    const std::string what = std::string(decode ? "decode" : "prefill") + " tokens " +
                             std::to_string(c.n_tokens) + " start " + std::to_string(c.start_pos) +
                             " D " + std::to_string(c.head_dim);
    const int64_t D = c.head_dim, kv_dim = c.n_kv_heads * D;
    const int64_t n_keys = c.start_pos + c.n_tokens, ctx = n_keys + 3;
    const auto q = random_normal(c.n_tokens * c.n_heads * D, rng, 8.0f / std::sqrt(float(D)));
    const auto k = random_normal(ctx * kv_dim, rng);
    const auto v = random_normal(ctx * kv_dim, rng);
    const auto want = attention_reference(q, k, v, c);
    DeviceArray<float> d_q(q), d_k(k), d_v(v), d_out(c.n_tokens * c.n_heads * D);
    if (decode) {
      const int64_t max_keys = n_keys + extra_context;
      DeviceArray<float> partials(decode_partials_floats(c.n_heads, c.head_dim, max_keys));
      DeviceArray<int32_t> position(std::vector<int32_t>{static_cast<int32_t>(c.start_pos)});
      attention_decode_f32(d_q.get(), d_k.get(), d_v.get(), d_out.get(), position.get(), max_keys,
                           c.n_heads, c.n_kv_heads, c.head_dim, partials.get(), nullptr);
    } else {
      attention_prefill_f32(d_q.get(), d_k.get(), d_v.get(), d_out.get(), c.n_tokens, c.start_pos,
                            c.n_heads, c.n_kv_heads, c.head_dim, nullptr);
    }
    // float32 arithmetic over at most a few thousand keys: far tighter than BF16's 1/256.
    expect_close(d_out.download(), want, 1e-4, 1e-5, what);
  }
};

TEST_F(CudaF32Kernels, PrefillAttentionMatchesFloat64Attention) {
  const AttnCase cases[] = {{37, 0, 6, 2, 64}, {19, 45, 4, 4, 128}, {5, 3, 8, 1, 256},
                            {50, 0, 4, 2, 16}, {17, 70, 6, 3, 96},  {130, 0, 14, 2, 64}};
  for (const AttnCase& c : cases) run_attention(c, false);
}

TEST_F(CudaF32Kernels, DecodeAttentionMatchesFloat64AttentionAcrossSplits) {
  for (const int64_t n_keys : {1, 256, 257, 3001}) {
    run_attention({1, n_keys - 1, 14, 2, 64}, true);
    run_attention({1, n_keys - 1, 14, 2, 64}, true, 700);
  }
  run_attention({1, 520, 8, 1, 256}, true);
}

TEST_F(CudaF32Kernels, LinearF32IsAFullFloat32Product) {
  CublasHandle handle(nullptr);
  const int64_t shapes[][3] = {{1, 896, 1153}, {1, 4864, 301}, {7, 100, 77}, {33, 896, 130}};
  for (const auto& [m, k, n] : shapes) {
    const auto x = random_normal(m * k, rng);
    const auto w = random_normal(n * k, rng);
    const auto y0 = random_normal(m * n, rng);
    for (const float beta : {0.0f, 1.0f}) {
      DeviceArray<float> d_x(x), d_w(w), d_y(m * n);
      if (beta != 0.0f) d_y.upload(y0);
      linear_f32(handle.get(), d_x.get(), d_w.get(), d_y.get(), m, k, n, n, beta);
      std::vector<double> want(m * n);
      double scale = 0;  // the typical magnitude of the terms: sqrt(k) for unit normals
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double s = beta != 0.0f ? y0[i * n + j] : 0.0;
          for (int64_t l = 0; l < k; ++l) s += double(x[i * k + l]) * w[j * k + l];
          want[i * n + j] = s;
        }
      }
      scale = std::sqrt(double(k));
      // float32 accumulation of k unit products: error ~1e-7·sqrt(k)·scale; TF32 inputs (10-bit
      // mantissas) would give ~1e-3·scale and fail.
      expect_close(d_y.download(), want, 0.0, 2e-5 * scale,
                   "linear_f32 " + std::to_string(m) + "x" + std::to_string(k) + "x" +
                       std::to_string(n) + " beta " + std::to_string(int(beta)));
    }
  }
}

}  // namespace
}  // namespace kiln::cuda

#else

TEST(CudaF32Kernels, NotBuilt) { GTEST_SKIP() << "built without CUDA (KILN_CUDA=OFF)"; }

#endif
