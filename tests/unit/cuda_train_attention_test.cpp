// The CUDA training attention (kernels/train_attention.cu) against a float64 CPU reference of
// causal softmax attention and its backward, written here from the formulas on the BF16-rounded
// inputs: awkward sizes (seq 1, 17, 130, ... not tile multiples), GQA groups 1, 2, 4, 7, head_dim
// 32 ... 256 (also not multiples of 16), outputs poisoned with NaN before each run, and two runs
// compared bit for bit (the kernels promise determinism). Also prints the achieved TFLOP/s at the
// GPT-2 124M and a Llama-like GQA shape (tools/bench/attention_torch_peer.py times torch's SDPA on
// the same shapes). Without a GPU (CI) every test skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda/train_kernels.hpp"
#include "cuda_test_util.hpp"

namespace kiln::cuda::train {
namespace {

using test::DeviceArray;
using test::from_bf16;
using test::random_normal;
using test::to_bf16;

struct Case {
  int batch, n_heads, n_kv_heads, seq, head_dim;
  float qk_std;  // larger → peakier softmax (exercises the online rescaling)
  float scale;   // 0: 1/sqrt(head_dim)
};

std::string describe(const Case& c) {
  std::ostringstream s;
  s << "B=" << c.batch << " H=" << c.n_heads << " Hkv=" << c.n_kv_heads << " T=" << c.seq
    << " D=" << c.head_dim << " qk_std=" << c.qk_std;
  return s.str();
}

// gtest names a failing parameter with this instead of its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << describe(c); }

// Reference outputs, float64, from the definitions:
//   s_j = scale · q_t·k_j (j <= t), lse = log Σ_j exp s_j, p_j = exp(s_j − lse), o = Σ_j p_j v_j;
//   dP_j = dO_t·v_j, Δ = Σ_j p_j dP_j, dS_j = p_j (dP_j − Δ),
//   dq_t = scale Σ_j dS_j k_j, dk_j += scale dS_j q_t, dv_j += p_j dO_t (over the group's heads).
struct Reference {
  std::vector<double> o, lse, dq, dk, dv;
};

Reference reference(const Case& c, double scale, const std::vector<float>& q,
                    const std::vector<float>& k, const std::vector<float>& v,
                    const std::vector<float>& d_o) {
  const int B = c.batch, H = c.n_heads, Hkv = c.n_kv_heads, T = c.seq, D = c.head_dim;
  const int group = H / Hkv;
  Reference r;
  r.o.assign(static_cast<size_t>(B) * T * H * D, 0.0);
  r.lse.assign(static_cast<size_t>(B) * H * T, 0.0);
  r.dq.assign(static_cast<size_t>(B) * H * T * D, 0.0);
  r.dk.assign(static_cast<size_t>(B) * Hkv * T * D, 0.0);
  r.dv.assign(r.dk.size(), 0.0);
  std::vector<double> s(T), p(T), dp(T);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      const size_t qh = (static_cast<size_t>(b) * H + h) * T * D;
      const size_t kh = (static_cast<size_t>(b) * Hkv + h / group) * T * D;
      for (int t = 0; t < T; ++t) {
        const float* qt = &q[qh + static_cast<size_t>(t) * D];
        const size_t ot = ((static_cast<size_t>(b) * T + t) * H + h) * D;  // o / dO layout
        double mx = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += static_cast<double>(qt[d]) * k[kh + j * D + d];
          s[j] = scale * dot;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int j = 0; j <= t; ++j) sum += std::exp(s[j] - mx);
        const double lse = mx + std::log(sum);
        r.lse[(static_cast<size_t>(b) * H + h) * T + t] = lse;
        double delta = 0;
        for (int j = 0; j <= t; ++j) {
          p[j] = std::exp(s[j] - lse);
          double dot = 0;
          for (int d = 0; d < D; ++d) {
            r.o[ot + d] += p[j] * v[kh + j * D + d];
            dot += static_cast<double>(d_o[ot + d]) * v[kh + j * D + d];
          }
          dp[j] = dot;
          delta += p[j] * dot;
        }
        for (int j = 0; j <= t; ++j) {
          const double ds = p[j] * (dp[j] - delta);
          for (int d = 0; d < D; ++d) {
            r.dq[qh + static_cast<size_t>(t) * D + d] += scale * ds * k[kh + j * D + d];
            r.dk[kh + j * D + d] += scale * ds * qt[d];
            r.dv[kh + j * D + d] += p[j] * d_o[ot + d];
          }
        }
      }
    }
  }
  return r;
}

// Relative L2 error ‖got − want‖ / ‖want‖ must stay under l2_tol, and every element within
// elem_tol · (|want| + rms(want)); failures name the worst element. NaN (an unwritten, poisoned
// element) fails both. ‖want‖ and rms are floored at an rms of kFloor: where the exact gradient
// vanishes (seq 1: dq = dk = 0, as dP − Δ = 0) the kernel's float32 rounding (~1e-7) must not
// count as an infinite relative error.
constexpr double kFloor = 1e-2;
void expect_close(const std::vector<float>& got, const std::vector<double>& want, double l2_tol,
                  double elem_tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double err2 = 0, ref2 = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err2 += (got[i] - want[i]) * (got[i] - want[i]);
    ref2 += want[i] * want[i];
  }
  const auto n = static_cast<double>(std::max<size_t>(1, want.size()));
  const double rms = std::max(std::sqrt(ref2 / n), kFloor);
  const double rel_l2 = std::sqrt(err2) / (rms * std::sqrt(n));
  size_t bad = 0, worst = 0;
  double worst_ratio = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(got[i] - want[i]);
    const double allowed = elem_tol * (std::abs(want[i]) + rms);
    const double ratio = std::isnan(err) ? INFINITY : err / allowed;
    if (!(err <= allowed)) ++bad;
    if (!(ratio <= worst_ratio)) {
      worst_ratio = ratio;
      worst = i;
    }
  }
  EXPECT_TRUE(rel_l2 <= l2_tol && bad == 0)
      << what << ": relative L2 error " << rel_l2 << " (tolerance " << l2_tol << "), " << bad
      << " of " << got.size() << " elements out of tolerance; worst [" << worst << "] got "
      << got[worst] << " want " << want[worst] << " (rms of want " << rms << ")";
  std::printf("  %s: relative L2 error %.3g (tolerance %.3g), worst element error / allowed %.3g\n",
              what.c_str(), rel_l2, l2_tol, worst_ratio);
}

template <typename T>
bool bit_identical(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

class CudaTrainAttention : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
};

// Tolerances, derived from the BF16 roundings the kernels make (unit roundoff u = 2^-9, at most
// 2^-8 relative per element counting ties):
//  o    output rounded to BF16 (≤ 2u relative) + P rounded to BF16 before P·V (≤ 2u of Σ p|v|):
//       2 · 2^-8 ≈ 7.8e-3 in L2.
//  lse  float32 throughout (float accumulation over head_dim products, exp2/log2): 2e-4 abs
//       relative to 1 + |lse|.
//  dv   P rounded to BF16 (2^-8): 1e-2 in L2.
//  dq/dk  dS rounded to BF16 and Δ = Σ dO·O from the BF16 o; dP − Δ cancels, so 2e-2 in L2.
// Per element the error follows the magnitude of its own row's terms, not the global rms (the
// first rows, with few keys, have gradients many times the rms), so the element bounds are
// looser: they are there to catch a localised bug (a wrong mask, tile or row), whose error is of
// the order of the value itself. A host emulation of these kernels' warp primitives measured
// relative L2 errors of 1.5e-3 .. 3.2e-3 and worst element ratios of 0.004 (o) .. 0.042 (dq,
// the peaky qk_std 2 case).
constexpr double kTolO = 7.8e-3, kTolOElem = 1.0 / 32;
constexpr double kTolLse = 2e-4;
constexpr double kTolDv = 1e-2, kTolGrad = 2e-2, kTolGradElem = 0.1;

TEST_P(CudaTrainAttention, MatchesTheFloat64ReferenceAndIsDeterministic) {
  const Case c = GetParam();
  SCOPED_TRACE(describe(c));
  std::mt19937 rng(static_cast<unsigned>(c.seq * 131 + c.head_dim * 7 + c.n_heads));
  const size_t nq = static_cast<size_t>(c.batch) * c.n_heads * c.seq * c.head_dim;
  const size_t nkv = static_cast<size_t>(c.batch) * c.n_kv_heads * c.seq * c.head_dim;
  const auto q = to_bf16(random_normal(nq, rng, c.qk_std));
  const auto k = to_bf16(random_normal(nkv, rng, c.qk_std));
  const auto v = to_bf16(random_normal(nkv, rng));
  const auto d_o = to_bf16(random_normal(nq, rng));
  const double scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  const Reference want =
      reference(c, scale, from_bf16(q), from_bf16(k), from_bf16(v), from_bf16(d_o));

  const QkvShape shape{c.batch, c.seq, c.n_heads, c.n_kv_heads, c.head_dim, c.head_dim};
  DeviceArray<bf16> dq_in(q), dk_in(k), dv_in(v), ddo(d_o), o(nq);
  DeviceArray<float> lse(static_cast<size_t>(c.batch) * c.n_heads * c.seq);
  DeviceArray<float> dq(nq), dk(nkv), dv(nkv);
  DeviceArray<float> workspace(std::max<size_t>(1, attention_backward_workspace_floats(shape)));
  const auto fscale = static_cast<float>(scale);

  attention_forward(dq_in.get(), dk_in.get(), dv_in.get(), o.get(), lse.get(), shape, fscale,
                    nullptr);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  const auto o1 = o.download();
  const auto lse1 = lse.download();
  expect_close(from_bf16(o1), want.o, kTolO, kTolOElem, "o");
  {
    size_t bad = 0, worst = 0;
    double worst_err = 0;
    for (size_t i = 0; i < lse1.size(); ++i) {
      const double err = std::abs(lse1[i] - want.lse[i]);
      if (!(err <= kTolLse * (1 + std::abs(want.lse[i])))) ++bad;
      if (!(err <= worst_err)) {
        worst_err = err;
        worst = i;
      }
    }
    EXPECT_EQ(bad, 0u) << "lse: " << bad << " rows out of tolerance; worst [" << worst << "] got "
                       << lse1[worst] << " want " << want.lse[worst];
  }

  attention_backward(dq_in.get(), dk_in.get(), dv_in.get(), o.get(), lse.get(), ddo.get(), dq.get(),
                     dk.get(), dv.get(), shape, fscale, workspace.get(), nullptr);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  const auto dq1 = dq.download(), dk1 = dk.download(), dv1 = dv.download();
  expect_close(dv1, want.dv, kTolDv, kTolGradElem, "dv");
  expect_close(dk1, want.dk, kTolGrad, kTolGradElem, "dk");
  expect_close(dq1, want.dq, kTolGrad, kTolGradElem, "dq");

  // Second run into poisoned outputs: bit-identical.
  o.poison();
  lse.poison();
  attention_forward(dq_in.get(), dk_in.get(), dv_in.get(), o.get(), lse.get(), shape, fscale,
                    nullptr);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_TRUE(bit_identical(o.download(), o1)) << "forward o differs between two runs";
  EXPECT_TRUE(bit_identical(lse.download(), lse1)) << "forward lse differs between two runs";
  dq.poison();
  dk.poison();
  dv.poison();
  workspace.poison();
  attention_backward(dq_in.get(), dk_in.get(), dv_in.get(), o.get(), lse.get(), ddo.get(), dq.get(),
                     dk.get(), dv.get(), shape, fscale, workspace.get(), nullptr);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_TRUE(bit_identical(dq.download(), dq1)) << "dq differs between two runs";
  EXPECT_TRUE(bit_identical(dk.download(), dk1)) << "dk differs between two runs";
  EXPECT_TRUE(bit_identical(dv.download(), dv1)) << "dv differs between two runs";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaTrainAttention,
    ::testing::Values(Case{2, 4, 4, 130, 64, 1.0f, 0.0f},    // GPT-2 head size, T past 2 tiles
                      Case{1, 4, 2, 17, 128, 1.0f, 0.0f},    // GQA 2, T inside one tile
                      Case{1, 7, 1, 200, 96, 1.0f, 0.0f},    // GQA 7 (MQA), D padded to 128
                      Case{3, 2, 1, 1, 32, 1.0f, 0.0f},      // seq 1
                      Case{1, 8, 2, 300, 128, 2.0f, 0.0f},   // GQA 4, peaky softmax
                      Case{1, 2, 1, 70, 256, 1.0f, 0.0f},    // the largest head_dim
                      Case{2, 2, 2, 65, 40, 1.0f, 0.3f},     // D not a multiple of 16, own scale
                      Case{1, 2, 2, 129, 200, 1.0f, 0.0f},   // D 200 (padded to 256)
                      Case{1, 3, 3, 64, 64, 1.5f, 0.0f},     // exactly one tile
                      Case{1, 2, 1, 256, 128, 1.0f, 0.0f}),  // exact tile multiples, GQA 2
    [](const ::testing::TestParamInfo<Case>& info) {
      const Case& c = info.param;
      return "B" + std::to_string(c.batch) + "H" + std::to_string(c.n_heads) + "Hkv" +
             std::to_string(c.n_kv_heads) + "T" + std::to_string(c.seq) + "D" +
             std::to_string(c.head_dim);
    });

TEST(CudaTrainAttentionShapes, RejectsUnsupportedHeadDimsAndGroups) {
  // Validation happens before any launch, so null pointers are never touched.
  const float s = 0.125f;
  EXPECT_THROW(attention_forward(nullptr, nullptr, nullptr, nullptr, nullptr,
                                 QkvShape{1, 4, 2, 1, 20, 20}, s, nullptr),
               std::exception);
  EXPECT_THROW(attention_forward(nullptr, nullptr, nullptr, nullptr, nullptr,
                                 QkvShape{1, 4, 2, 1, 264, 264}, s, nullptr),
               std::exception);
  EXPECT_THROW(
      attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                         nullptr, QkvShape{1, 4, 6, 4, 64, 64}, s, nullptr, nullptr),
      std::exception);
}

// ---- throughput -----------------------------------------------------------------------------
// Cheap deterministic fill (hash → [-1, 1)): host normal sampling of 10⁸ values would dominate.
std::vector<bf16> hashed_bf16(size_t n, uint32_t seed) {
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    f[i] = static_cast<float>(x >> 8) / 8388608.0f - 1.0f;
  }
  return to_bf16(f);
}

float median_ms(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median of 20 timed runs of body (on the default stream, after 3 warm-up runs), in ms.
template <typename Body>
float median_event_ms(Body&& body) {
  cudaEvent_t start = nullptr, stop = nullptr;
  EXPECT_EQ(cudaEventCreate(&start), cudaSuccess);
  EXPECT_EQ(cudaEventCreate(&stop), cudaSuccess);
  for (int i = 0; i < 3; ++i) body();
  std::vector<float> ms;
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(cudaEventRecord(start, nullptr), cudaSuccess);
    body();
    EXPECT_EQ(cudaEventRecord(stop, nullptr), cudaSuccess);
    EXPECT_EQ(cudaEventSynchronize(stop), cudaSuccess);
    float t = 0;
    EXPECT_EQ(cudaEventElapsedTime(&t, start, stop), cudaSuccess);
    ms.push_back(t);
  }
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  return median_ms(ms);
}

TEST(CudaTrainAttentionBench, PrintsTflops) {
  KILN_SKIP_WITHOUT_CUDA();
  struct Shape {
    int B, H, Hkv, T, D;
  };
  for (const Shape& sh : {Shape{16, 12, 12, 1024, 64}, Shape{4, 32, 8, 2048, 128}}) {
    const size_t nq = static_cast<size_t>(sh.B) * sh.H * sh.T * sh.D;
    const size_t nkv = static_cast<size_t>(sh.B) * sh.Hkv * sh.T * sh.D;
    const QkvShape shape{sh.B, sh.T, sh.H, sh.Hkv, sh.D, sh.D};
    const float scale = 1.0f / std::sqrt(static_cast<float>(sh.D));
    DeviceArray<bf16> q(hashed_bf16(nq, 1)), k(hashed_bf16(nkv, 2)), v(hashed_bf16(nkv, 3));
    DeviceArray<bf16> d_o(hashed_bf16(nq, 4)), o(nq);
    DeviceArray<float> lse(static_cast<size_t>(sh.B) * sh.H * sh.T), dq(nq), dk(nkv), dv(nkv);
    DeviceArray<float> workspace(attention_backward_workspace_floats(shape));
    const auto forward = [&] {
      attention_forward(q.get(), k.get(), v.get(), o.get(), lse.get(), shape, scale, nullptr);
    };
    const auto backward = [&] {
      attention_backward(q.get(), k.get(), v.get(), o.get(), lse.get(), d_o.get(), dq.get(),
                         dk.get(), dv.get(), shape, scale, workspace.get(), nullptr);
    };
    const float fwd_ms = median_event_ms(forward);
    const float fwd_bwd_ms = median_event_ms([&] {
      forward();
      backward();
    });
    ASSERT_CUDA_OK(cudaDeviceSynchronize());
    const double fwd_flops = 4.0 * sh.B * sh.H * static_cast<double>(sh.T) * sh.T * sh.D / 2;
    std::printf(
        "[attention bench] B=%d H=%d Hkv=%d T=%d D=%d: forward %.3f ms = %.1f TFLOP/s; "
        "forward+backward %.3f ms = %.1f TFLOP/s (FLOPs: fwd 4·B·H·T²·D/2, bwd 2.5× fwd)\n",
        sh.B, sh.H, sh.Hkv, sh.T, sh.D, fwd_ms, fwd_flops / (fwd_ms * 1e-3) / 1e12, fwd_bwd_ms,
        3.5 * fwd_flops / (fwd_bwd_ms * 1e-3) / 1e12);
    // The timed runs must have produced numbers, not NaN (a sanity check, not a speed bar).
    const auto lse_host = lse.download();
    const auto dv_host = dv.download();
    EXPECT_TRUE(
        std::all_of(lse_host.begin(), lse_host.end(), [](float x) { return std::isfinite(x); }));
    EXPECT_TRUE(
        std::all_of(dv_host.begin(), dv_host.end(), [](float x) { return std::isfinite(x); }));
  }
}

// The forward's tuning variants on the GPT-2 124M shape: time of each, and its output against
// variant 0 (the production kernel): identical bits where only the block shape or the register
// budget differ, float rounding where the key tile differs.
TEST(CudaTrainAttentionBench, ForwardVariants) {
  KILN_SKIP_WITHOUT_CUDA();
  const int B = 16, H = 12, T = 1024, D = 64;
  const size_t n = static_cast<size_t>(B) * H * T * D;
  const QkvShape shape{B, T, H, H, D, D};
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  DeviceArray<bf16> q(hashed_bf16(n, 1)), k(hashed_bf16(n, 2)), v(hashed_bf16(n, 3)), o(n);
  DeviceArray<float> lse(static_cast<size_t>(B) * H * T);
  std::vector<float> o0, lse0;
  for (int variant = 0; variant < attention_forward_variants(); ++variant) {
    const auto run = [&] {
      attention_forward_variant(variant, q.get(), k.get(), v.get(), o.get(), lse.get(), shape,
                                scale, nullptr);
    };
    const float t = median_event_ms(run);
    const std::vector<float> got_o = from_bf16(o.download()), got_lse = lse.download();
    if (variant == 0) {
      o0 = got_o;
      lse0 = got_lse;
    }
    double max_o = 0, max_lse = 0;
    for (size_t i = 0; i < got_o.size(); ++i)
      max_o = std::max(max_o, double(std::abs(got_o[i] - o0[i])));
    for (size_t i = 0; i < got_lse.size(); ++i) {
      max_lse = std::max(max_lse, double(std::abs(got_lse[i] - lse0[i])));
    }
    const double flops = 4.0 * B * H * static_cast<double>(T) * T * D / 2;
    std::printf(
        "[attention forward variant %d] %.3f ms = %.1f TFLOP/s; vs variant 0: max |do| %.3g, "
        "max |dlse| %.3g\n",
        variant, t, flops / (t * 1e-3) / 1e12, max_o, max_lse);
    EXPECT_LT(max_o, 2e-2) << "variant " << variant;
    EXPECT_LT(max_lse, 1e-3) << "variant " << variant;
  }
}

// The backward's tuning variants on the GPT-2 124M shape: the dK/dV and dQ kernels timed
// alone, and their outputs against variant 0 (production). Every variant accumulates in the same
// order (16-key / 16-query chunks ascending, query heads in order), so the bits must agree.
TEST(CudaTrainAttentionBench, BackwardVariants) {
  KILN_SKIP_WITHOUT_CUDA();
  const int B = 16, H = 12, T = 1024, D = 64;
  const size_t n = static_cast<size_t>(B) * H * T * D;
  const QkvShape shape{B, T, H, H, D, D};
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  DeviceArray<bf16> q(hashed_bf16(n, 1)), k(hashed_bf16(n, 2)), v(hashed_bf16(n, 3));
  DeviceArray<bf16> d_o(hashed_bf16(n, 4)), o(n);
  DeviceArray<float> lse(static_cast<size_t>(B) * H * T), dq(n), dk(n), dv(n);
  DeviceArray<float> workspace(attention_backward_workspace_floats(shape));
  attention_forward(q.get(), k.get(), v.get(), o.get(), lse.get(), shape, scale, nullptr);
  const double fwd_flops = 4.0 * B * H * static_cast<double>(T) * T * D / 2;
  std::vector<float> dq0, dk0, dv0;
  for (int variant = 0; variant < attention_backward_variants(); ++variant) {
    const auto run = [&](int dkdv_variant, int dq_variant) {
      attention_backward_variant(dkdv_variant, dq_variant, q.get(), k.get(), v.get(), o.get(),
                                 lse.get(), d_o.get(), dq.get(), dk.get(), dv.get(), shape, scale,
                                 workspace.get(), nullptr);
    };
    ASSERT_CUDA_OK(cudaMemset(dq.get(), 0xff, n * sizeof(float)));  // NaN poison
    ASSERT_CUDA_OK(cudaMemset(dk.get(), 0xff, n * sizeof(float)));
    ASSERT_CUDA_OK(cudaMemset(dv.get(), 0xff, n * sizeof(float)));
    // dQ first: it writes the delta row terms that the dK/dV kernel reads.
    const float dq_ms = median_event_ms([&] { run(-1, variant); });
    const float dkdv_ms = median_event_ms([&] { run(variant, -1); });
    const auto got_dq = dq.download(), got_dk = dk.download(), got_dv = dv.download();
    if (variant == 0) {
      dq0 = got_dq;
      dk0 = got_dk;
      dv0 = got_dv;
    }
    size_t differ = 0;
    for (size_t i = 0; i < n; ++i) {
      differ += std::memcmp(&got_dq[i], &dq0[i], 4) != 0;
      differ += std::memcmp(&got_dk[i], &dk0[i], 4) != 0;
      differ += std::memcmp(&got_dv[i], &dv0[i], 4) != 0;
    }
    // dK/dV: 2 products recomputed + 2 accumulated (4 fwd-sized); dQ: 2 recomputed + 1 (3),
    // and the delta pass.
    std::printf(
        "[attention backward variant %d] dK/dV %.3f ms = %.1f TFLOP/s, dQ %.3f ms = %.1f "
        "TFLOP/s; values differing from variant 0: %zu\n",
        variant, dkdv_ms, 2 * fwd_flops / (dkdv_ms * 1e-3) / 1e12, dq_ms,
        1.5 * fwd_flops / (dq_ms * 1e-3) / 1e12, differ);
    EXPECT_EQ(differ, 0u) << "variant " << variant;
  }
}

}  // namespace
}  // namespace kiln::cuda::train

#else

TEST(CudaTrainAttention, NotBuilt) { GTEST_SKIP() << "built without CUDA (KILN_CUDA=OFF)"; }

#endif
