// CPU primitives vs float64 references written here from the math definitions, on awkward sizes,
// plus thread-count independence (1 vs 2 threads must give bit-identical results).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "test_support.hpp"

namespace kiln::cpu {
namespace {

using kiln::test::relative_l2;

constexpr double kTolerance = 1e-5;

std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

std::vector<float> to_float(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ---------------------------------------------------------------------------------------------
// linear

std::vector<double> reference_linear(const std::vector<float>& x, const std::vector<float>& w,
                                     const float* bias, int64_t m, int64_t k, int64_t n) {
  std::vector<double> y(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = bias ? bias[j] : 0.0;
      for (int64_t p = 0; p < k; ++p) acc += static_cast<double>(x[i * k + p]) * w[j * k + p];
      y[i * n + j] = acc;
    }
  }
  return y;
}

TEST(CpuOpsLinear, MatchesFloat64ReferenceOnAwkwardShapes) {
  struct Shape {
    int64_t m, k, n;
  };
  for (const Shape s : {Shape{1, 1, 1}, Shape{1, 13, 5}, Shape{1, 67, 300}, Shape{3, 13, 131},
                        Shape{17, 67, 300}, Shape{9, 129, 257}}) {
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE(testing::Message()
                   << "m=" << s.m << " k=" << s.k << " n=" << s.n << " bias=" << with_bias);
      auto x = random_floats(s.m * s.k, 1);
      auto w = random_floats(s.n * s.k, 2);
      auto b = random_floats(s.n, 3);
      const float* bias = with_bias ? b.data() : nullptr;
      std::vector<float> y(s.m * s.n, std::numeric_limits<float>::quiet_NaN());
      linear(x.data(), w.data(), bias, y.data(), s.m, s.k, s.n, 2);
      auto ref = to_float(reference_linear(x, w, bias, s.m, s.k, s.n));
      EXPECT_LE(relative_l2(y.data(), ref.data(), y.size()), kTolerance);
    }
  }
}

TEST(CpuOpsLinear, ThreadCountDoesNotChangeBits) {
  for (int64_t m : {1, 5}) {
    const int64_t k = 77, n = 517;  // several output blocks, the last one partial
    auto x = random_floats(m * k, 4);
    auto w = random_floats(n * k, 5);
    auto b = random_floats(n, 6);
    std::vector<float> y1(m * n), y2(m * n);
    linear(x.data(), w.data(), b.data(), y1.data(), m, k, n, 1);
    linear(x.data(), w.data(), b.data(), y2.data(), m, k, n, 2);
    EXPECT_TRUE(bit_identical(y1, y2)) << "m=" << m;
  }
}

// BF16 weights kept as BF16: the reference widens each weight exactly (bits << 16) in float64 math.
TEST(CpuOpsLinear, Bf16WeightsMatchFloat64ReferenceAndThreadCounts) {
  struct Shape {
    int64_t m, k, n;
  };
  for (const Shape s : {Shape{1, 13, 5}, Shape{1, 67, 300}, Shape{1, 256, 33}, Shape{5, 67, 71},
                        Shape{70, 129, 257}}) {
    SCOPED_TRACE(testing::Message() << "m=" << s.m << " k=" << s.k << " n=" << s.n);
    const auto x = random_floats(static_cast<size_t>(s.m * s.k), 11);
    const auto wf = random_floats(static_cast<size_t>(s.n * s.k), 12);
    const auto bias = random_floats(static_cast<size_t>(s.n), 13);
    std::vector<uint16_t> wb(wf.size());
    std::vector<float> widened(wf.size());
    for (size_t i = 0; i < wf.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &wf[i], 4);
      wb[i] = static_cast<uint16_t>(bits >> 16);  // truncation: any BF16 value will do
      const uint32_t back = static_cast<uint32_t>(wb[i]) << 16;
      std::memcpy(&widened[i], &back, 4);
    }
    const auto ref = to_float(reference_linear(x, widened, bias.data(), s.m, s.k, s.n));
    Matrix w;
    w.bf16 = wb.data();
    std::vector<float> y1(ref.size(), std::numeric_limits<float>::quiet_NaN()), y2 = y1;
    linear(x.data(), w, bias.data(), y1.data(), s.m, s.k, s.n, 1);
    linear(x.data(), w, bias.data(), y2.data(), s.m, s.k, s.n, 2);
    EXPECT_LE(relative_l2(y1.data(), ref.data(), ref.size()), kTolerance);
    EXPECT_TRUE(bit_identical(y1, y2));
  }
}

// ---------------------------------------------------------------------------------------------
// rms_norm

std::vector<double> reference_rms_norm(const std::vector<float>& x, const std::vector<float>& w,
                                       int64_t rows, int64_t dim, double eps) {
  std::vector<double> out(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (int64_t i = 0; i < dim; ++i) ms += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
    ms /= static_cast<double>(dim);
    const double inv = 1.0 / std::sqrt(ms + eps);
    for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = x[r * dim + i] * inv * w[i];
  }
  return out;
}

TEST(CpuOpsRmsNorm, MatchesFloat64ReferenceAndWorksInPlace) {
  for (int64_t dim : {1, 7, 48, 1001}) {
    for (float eps : {1e-6f, 1e-5f, 0.5f}) {
      const int64_t rows = 5;
      SCOPED_TRACE(testing::Message() << "dim=" << dim << " eps=" << eps);
      auto x = random_floats(rows * dim, 7, -3.0f, 3.0f);
      auto w = random_floats(dim, 8, 0.5f, 1.5f);
      auto ref = to_float(reference_rms_norm(x, w, rows, dim, eps));
      std::vector<float> out(x.size());
      rms_norm(x.data(), w.data(), out.data(), rows, dim, eps, 2);
      EXPECT_LE(relative_l2(out.data(), ref.data(), out.size()), kTolerance);
      // Element-wise too: every row is its own normalisation.
      for (size_t i = 0; i < out.size(); ++i) {
        EXPECT_NEAR(out[i], ref[i], 1e-6 * (1.0 + std::fabs(ref[i])));
      }
      std::vector<float> in_place = x;
      rms_norm(in_place.data(), w.data(), in_place.data(), rows, dim, eps, 1);
      EXPECT_TRUE(bit_identical(in_place, out));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// rope

std::vector<double> reference_rope(const std::vector<float>& x, const std::vector<int32_t>& pos,
                                   int64_t n_heads, int64_t head_dim, int64_t rot_dim,
                                   const std::vector<float>& inv_freq) {
  std::vector<double> out(x.begin(), x.end());
  const int64_t half = rot_dim / 2;
  for (size_t t = 0; t < pos.size(); ++t) {
    for (int64_t h = 0; h < n_heads; ++h) {
      const size_t base = (t * n_heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const double theta = pos[t] * static_cast<double>(inv_freq[i]);
        const double a = x[base + i], b = x[base + i + half];
        out[base + i] = a * std::cos(theta) - b * std::sin(theta);
        out[base + i + half] = b * std::cos(theta) + a * std::sin(theta);
      }
    }
  }
  return out;
}

TEST(CpuOpsRope, MatchesFloat64ReferenceIncludingPartialRotary) {
  struct Case {
    int64_t head_dim, rot_dim;
  };
  for (const Case c : {Case{12, 12}, Case{10, 6}, Case{16, 4}, Case{2, 2}}) {
    const int64_t n_tokens = 6, n_heads = 3;
    SCOPED_TRACE(testing::Message() << "head_dim=" << c.head_dim << " rot=" << c.rot_dim);
    std::vector<float> inv_freq(c.rot_dim / 2);
    for (size_t i = 0; i < inv_freq.size(); ++i) {
      inv_freq[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / c.rot_dim));
    }
    const std::vector<int32_t> positions = {7, 8, 9, 10, 31, 0};  // start_pos > 0, and any order
    auto x = random_floats(n_tokens * n_heads * c.head_dim, 9);
    auto ref = to_float(reference_rope(x, positions, n_heads, c.head_dim, c.rot_dim, inv_freq));
    auto y = x;
    rope(y.data(), positions.data(), n_tokens, n_heads, c.head_dim, c.rot_dim, inv_freq.data(), 2);
    EXPECT_LE(relative_l2(y.data(), ref.data(), y.size()), kTolerance);
    // Elements past rot_dim are passed through untouched.
    for (int64_t v = 0; v < n_tokens * n_heads; ++v) {
      for (int64_t i = c.rot_dim; i < c.head_dim; ++i) {
        ASSERT_EQ(y[v * c.head_dim + i], x[v * c.head_dim + i]);
      }
    }
    auto y1 = x;
    rope(y1.data(), positions.data(), n_tokens, n_heads, c.head_dim, c.rot_dim, inv_freq.data(), 1);
    EXPECT_TRUE(bit_identical(y, y1));
  }
}

// ---------------------------------------------------------------------------------------------
// attention

std::vector<double> reference_attention(const std::vector<float>& q, const std::vector<float>& kc,
                                        const std::vector<float>& vc, int64_t n_tokens,
                                        int64_t start_pos, int64_t n_heads, int64_t n_kv,
                                        int64_t hd) {
  std::vector<double> out(static_cast<size_t>(n_tokens * n_heads * hd));
  const int64_t ratio = n_heads / n_kv;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t h = 0; h < n_heads; ++h) {
      const int64_t kvh = h / ratio;
      const int64_t n_keys = start_pos + t + 1;
      std::vector<double> s(n_keys);
      double mx = -INFINITY;
      for (int64_t j = 0; j < n_keys; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < hd; ++d) {
          dot += static_cast<double>(q[(t * n_heads + h) * hd + d]) * kc[(j * n_kv + kvh) * hd + d];
        }
        s[j] = dot / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, s[j]);
      }
      double z = 0;
      for (auto& v : s) z += (v = std::exp(v - mx));
      for (int64_t d = 0; d < hd; ++d) {
        double acc = 0;
        for (int64_t j = 0; j < n_keys; ++j) acc += s[j] / z * vc[(j * n_kv + kvh) * hd + d];
        out[(t * n_heads + h) * hd + d] = acc;
      }
    }
  }
  return out;
}

TEST(CpuOpsAttention, MatchesFloat64ReferenceForGqaRatiosAndOffsets) {
  struct Case {
    int64_t n_heads, n_kv, head_dim, n_tokens, start_pos;
  };
  const Case cases[] = {{4, 4, 12, 6, 0}, {6, 3, 7, 5, 4},   {8, 2, 12, 1, 9},
                        {8, 2, 9, 7, 3},  {2, 1, 64, 3, 20}, {5, 5, 1, 4, 2}};
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message()
                 << "heads=" << c.n_heads << " kv=" << c.n_kv << " hd=" << c.head_dim
                 << " n=" << c.n_tokens << " start=" << c.start_pos);
    const int64_t max_ctx = c.start_pos + c.n_tokens + 3;
    const int64_t valid = c.start_pos + c.n_tokens;
    const int64_t row = c.n_kv * c.head_dim;
    // Scores of a few units so the softmax is far from uniform.
    auto q = random_floats(c.n_tokens * c.n_heads * c.head_dim, 10, -2.0f, 2.0f);
    auto kc = random_floats(max_ctx * row, 11, -2.0f, 2.0f);
    auto vc = random_floats(max_ctx * row, 12);
    // Rows past the valid ones must never be read: poison them.
    for (int64_t i = valid * row; i < max_ctx * row; ++i) {
      kc[i] = vc[i] = std::numeric_limits<float>::quiet_NaN();
    }
    auto ref = to_float(
        reference_attention(q, kc, vc, c.n_tokens, c.start_pos, c.n_heads, c.n_kv, c.head_dim));
    std::vector<float> out(q.size()), out1(q.size());
    attention(q.data(), kc.data(), vc.data(), out.data(), c.n_tokens, c.start_pos, c.n_heads,
              c.n_kv, c.head_dim, 2);
    EXPECT_LE(relative_l2(out.data(), ref.data(), out.size()), kTolerance);
    attention(q.data(), kc.data(), vc.data(), out1.data(), c.n_tokens, c.start_pos, c.n_heads,
              c.n_kv, c.head_dim, 1);
    EXPECT_TRUE(bit_identical(out, out1));
  }
}

TEST(CpuOpsAttention, LargeScoresDoNotOverflow) {
  // Scores in the hundreds: exp without max subtraction would overflow float32.
  const int64_t n_heads = 2, n_kv = 1, hd = 4, n_tokens = 3;
  auto q = random_floats(n_tokens * n_heads * hd, 13, 20.0f, 30.0f);
  auto kc = random_floats(n_tokens * n_kv * hd, 14, 20.0f, 30.0f);
  auto vc = random_floats(n_tokens * n_kv * hd, 15);
  auto ref = to_float(reference_attention(q, kc, vc, n_tokens, 0, n_heads, n_kv, hd));
  std::vector<float> out(q.size());
  attention(q.data(), kc.data(), vc.data(), out.data(), n_tokens, 0, n_heads, n_kv, hd, 2);
  EXPECT_LE(relative_l2(out.data(), ref.data(), out.size()), kTolerance);
}

// ---------------------------------------------------------------------------------------------
// elementwise

TEST(CpuOpsElementwise, SwigluAndAddMatchReference) {
  for (int64_t n : {1, 17, 40001}) {  // the largest crosses the parallel threshold
    SCOPED_TRACE(n);
    auto g = random_floats(n, 16, -8.0f, 8.0f);
    auto u = random_floats(n, 17, -2.0f, 2.0f);
    std::vector<float> ref(n), out(n);
    for (int64_t i = 0; i < n; ++i) {
      const double gd = g[i];
      ref[i] = static_cast<float>(gd / (1.0 + std::exp(-gd)) * u[i]);
    }
    swiglu(g.data(), u.data(), out.data(), n, 2);
    EXPECT_LE(relative_l2(out.data(), ref.data(), n), kTolerance);
    auto aliased = g;  // out may alias gate
    swiglu(aliased.data(), u.data(), aliased.data(), n, 1);
    EXPECT_TRUE(bit_identical(aliased, out));

    auto dst = g;
    add_inplace(dst.data(), u.data(), n, 2);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(dst[i], g[i] + u[i]);
  }
}

TEST(CpuOpsRmsNorm, NullWeightIsTheParameterFreeNorm) {
  const int64_t rows = 4, dim = 37;
  auto x = random_floats(rows * dim, 21, -3.0f, 3.0f);
  const std::vector<float> ones(dim, 1.0f);
  auto ref = to_float(reference_rms_norm(x, ones, rows, dim, 1e-6f));
  std::vector<float> out(x.size());
  rms_norm(x.data(), nullptr, out.data(), rows, dim, 1e-6f, 2);
  EXPECT_LE(relative_l2(out.data(), ref.data(), out.size()), kTolerance);
}

// torch.nn.LayerNorm: biased variance, eps inside the square root, then weight and bias.
TEST(CpuOpsLayerNorm, MatchesFloat64ReferenceAndWorksInPlace) {
  for (int64_t dim : {1, 7, 64, 1001}) {
    for (float eps : {1e-5f, 0.5f}) {
      const int64_t rows = 5;
      SCOPED_TRACE(testing::Message() << "dim=" << dim << " eps=" << eps);
      // An offset mean, so that a missing mean subtraction shows.
      auto x = random_floats(rows * dim, 22, -1.0f, 5.0f);
      auto w = random_floats(dim, 23, 0.5f, 1.5f);
      auto b = random_floats(dim, 24, -0.5f, 0.5f);
      std::vector<float> ref(x.size());
      for (int64_t r = 0; r < rows; ++r) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < dim; ++i) mean += x[r * dim + i];
        mean /= static_cast<double>(dim);
        for (int64_t i = 0; i < dim; ++i) var += std::pow(x[r * dim + i] - mean, 2);
        var /= static_cast<double>(dim);
        for (int64_t i = 0; i < dim; ++i) {
          ref[r * dim + i] =
              static_cast<float>((x[r * dim + i] - mean) / std::sqrt(var + eps) * w[i] + b[i]);
        }
      }
      std::vector<float> out(x.size());
      layer_norm(x.data(), w.data(), b.data(), out.data(), rows, dim, eps, 2);
      for (size_t i = 0; i < out.size(); ++i) {
        EXPECT_NEAR(out[i], ref[i], 1e-5 * (1.0 + std::fabs(ref[i])));
      }
      std::vector<float> in_place = x;
      layer_norm(in_place.data(), w.data(), b.data(), in_place.data(), rows, dim, eps, 1);
      EXPECT_TRUE(bit_identical(in_place, out));
    }
  }
}

TEST(CpuOpsElementwise, GeluTanhReluSquaredAndSoftcapMatchReference) {
  for (int64_t n : {1, 17, 40001}) {  // the largest crosses the parallel threshold
    SCOPED_TRACE(n);
    const auto x = random_floats(n, 25, -8.0f, 8.0f);
    std::vector<float> gelu(n), relu2(n), capped(n);
    const double k = std::sqrt(2.0 / std::numbers::pi);
    for (int64_t i = 0; i < n; ++i) {
      const double v = x[i];
      gelu[i] = static_cast<float>(0.5 * v * (1.0 + std::tanh(k * (v + 0.044715 * v * v * v))));
      relu2[i] = static_cast<float>(v > 0 ? v * v : 0.0);
      capped[i] = static_cast<float>(3.0 * std::tanh(v / 3.0));
    }
    auto out = x;
    gelu_tanh(out.data(), n, 2);
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(out[i], gelu[i], 1e-6 * (1 + std::fabs(gelu[i])));
    out = x;
    relu_squared(out.data(), n, 2);
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(out[i], relu2[i], 1e-6 * (1 + relu2[i]));
    out = x;
    softcap(out.data(), n, 3.0f, 2);
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(out[i], capped[i], 1e-6);
  }
}

}  // namespace
}  // namespace kiln::cpu
