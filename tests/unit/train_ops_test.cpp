// The training graph's ops: each forward pass against a float64 reference written here from the
// formula, each backward pass against central finite differences of that forward pass in float64
// (L = Σ r ∘ out for a random r, so dL/dout = r), on awkward sizes; plus thread-count
// independence of the reductions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "train/ops/activations.hpp"
#include "train/ops/attention.hpp"
#include "train/ops/cross_entropy.hpp"
#include "train/ops/embedding.hpp"
#include "train/ops/matmul.hpp"
#include "train/ops/norm.hpp"
#include "train/ops/rope.hpp"

namespace kiln::train {
namespace {

using Vec = std::vector<double>;

Vec random_vec(size_t n, uint32_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Compares `grad` with central differences of `loss` with respect to every element of `x`.
// Relative to the largest gradient magnitude, so tiny entries do not blow up the ratio.
void expect_gradient(const std::function<double()>& loss, Vec& x, const Vec& grad, const char* what,
                     double tol = 1e-7) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  const double h = 1e-5;
  double max_err = 0, max_mag = 1e-12;
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = loss();
    x[i] = keep - h;
    const double down = loss();
    x[i] = keep;
    const double numeric = (up - down) / (2 * h);
    max_err = std::max(max_err, std::abs(numeric - grad[i]));
    max_mag = std::max(max_mag, std::abs(numeric));
  }
  EXPECT_LT(max_err / max_mag, tol)
      << what << ": max abs error " << max_err << ", max |grad| " << max_mag;
}

void expect_close(const Vec& got, const Vec& want, const char* what, double tol = 1e-12) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << what << " at " << i;
  }
}

// ---------------------------------------------------------------------------------------------
// linear

Vec reference_linear(const Vec& x, const Vec& w, const Vec* b, int64_t m, int64_t k, int64_t n) {
  Vec y(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = b ? (*b)[j] : 0.0;
      for (int64_t l = 0; l < k; ++l) s += x[i * k + l] * w[j * k + l];
      y[i * n + j] = s;
    }
  return y;
}

class LinearTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(LinearTest, ForwardMatchesReferenceAndBackwardMatchesFiniteDifferences) {
  const auto [m, k, n] = GetParam();
  Vec x = random_vec(m * k, 1), w = random_vec(n * k, 2), b = random_vec(n, 3);
  const Vec r = random_vec(m * n, 4);
  Vec y(m * n);
  linear_forward<double>(x.data(), w.data(), b.data(), y.data(), m, k, n, 2);
  expect_close(y, reference_linear(x, w, &b, m, k, n), "linear forward");

  Vec dx(m * k, 5.0), dw(n * k, 0.0), db(n, 0.0);
  linear_backward<double>(r.data(), x.data(), w.data(), dx.data(), false, dw.data(), db.data(), m,
                          k, n, 2);
  const auto loss = [&] { return dot(r, reference_linear(x, w, &b, m, k, n)); };
  expect_gradient(loss, x, dx, "dx");
  expect_gradient(loss, w, dw, "dw");
  expect_gradient(loss, b, db, "dbias");

  // accumulate_dx adds; dw and db always add.
  Vec dx2 = dx, dw2 = dw;
  linear_backward<double>(r.data(), x.data(), w.data(), dx2.data(), true, dw2.data(), nullptr, m, k,
                          n, 1);
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_NEAR(dx2[i], 2 * dx[i], 1e-12);
  for (size_t i = 0; i < dw.size(); ++i) EXPECT_NEAR(dw2[i], 2 * dw[i], 1e-12);
}

// Sizes straddle the 64 × 128 output tiles.
INSTANTIATE_TEST_SUITE_P(Sizes, LinearTest,
                         ::testing::Values(std::make_tuple(1, 1, 1), std::make_tuple(5, 7, 3),
                                           std::make_tuple(67, 5, 131),
                                           std::make_tuple(3, 130, 2)));

TEST(TrainMatmul, TiledGemmIsBitIdenticalAcrossThreadCounts) {
  const int64_t m = 150, n = 300, k = 77;
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> a(m * k), b(k * n);
  for (auto& v : a) v = dist(gen);
  for (auto& v : b) v = dist(gen);
  std::vector<float> c1(m * n), c2(m * n);
  tiled_gemm<float>(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c1.data(), n, 1);
  tiled_gemm<float>(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c2.data(), n, 2);
  EXPECT_EQ(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)), 0);
}

// ---------------------------------------------------------------------------------------------
// norms

Vec reference_norm(const Vec& x, const Vec* w, const Vec* b, bool centre, int64_t rows, int64_t dim,
                   double eps) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0;
    if (centre) {
      for (int64_t i = 0; i < dim; ++i) mu += x[r * dim + i];
      mu /= dim;
    }
    double var = 0;
    for (int64_t i = 0; i < dim; ++i) var += (x[r * dim + i] - mu) * (x[r * dim + i] - mu);
    var /= dim;
    for (int64_t i = 0; i < dim; ++i) {
      double v = (x[r * dim + i] - mu) / std::sqrt(var + eps);
      if (w) v *= (*w)[i];
      if (b) v += (*b)[i];
      y[r * dim + i] = v;
    }
  }
  return y;
}

TEST(TrainNorm, RmsNormWithAndWithoutWeight) {
  const int64_t rows = 7, dim = 67;  // dim crosses the 64-column weight-gradient blocks
  const double eps = 1e-5;
  for (bool weighted : {true, false}) {
    Vec x = random_vec(rows * dim, 11), w = random_vec(dim, 12, 0.5, 1.5);
    const Vec r = random_vec(rows * dim, 13);
    Vec y(x.size()), rstd(rows);
    rms_norm_forward<double>(x.data(), weighted ? w.data() : nullptr, y.data(), rstd.data(), rows,
                             dim, eps, 2);
    expect_close(y, reference_norm(x, weighted ? &w : nullptr, nullptr, false, rows, dim, eps),
                 "rms forward");
    Vec dx(x.size(), 0.0), dw(dim, 0.0);
    rms_norm_backward<double>(r.data(), x.data(), weighted ? w.data() : nullptr, rstd.data(),
                              dx.data(), weighted ? dw.data() : nullptr, rows, dim, 2);
    const auto loss = [&] {
      return dot(r, reference_norm(x, weighted ? &w : nullptr, nullptr, false, rows, dim, eps));
    };
    expect_gradient(loss, x, dx, "rms dx");
    if (weighted) expect_gradient(loss, w, dw, "rms dw");
  }
}

TEST(TrainNorm, LayerNorm) {
  const int64_t rows = 5, dim = 70;
  const double eps = 1e-5;
  Vec x = random_vec(rows * dim, 21, -2, 3), w = random_vec(dim, 22, 0.5, 1.5),
      b = random_vec(dim, 23);
  const Vec r = random_vec(rows * dim, 24);
  Vec y(x.size()), mean(rows), rstd(rows);
  layer_norm_forward<double>(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows,
                             dim, eps, 2);
  expect_close(y, reference_norm(x, &w, &b, true, rows, dim, eps), "layernorm forward");
  Vec dx(x.size(), 0.0), dw(dim, 0.0), db(dim, 0.0);
  layer_norm_backward<double>(r.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                              dw.data(), db.data(), rows, dim, 2);
  const auto loss = [&] { return dot(r, reference_norm(x, &w, &b, true, rows, dim, eps)); };
  expect_gradient(loss, x, dx, "ln dx");
  expect_gradient(loss, w, dw, "ln dw");
  expect_gradient(loss, b, db, "ln db");
}

// ---------------------------------------------------------------------------------------------
// RoPE

// HF: q·cos + rotate_half(q)·sin on the first `rot` elements, rotate_half(x) = (-x2, x1) (or
// (x2, -x1) for NanoChat, direction -1).
Vec reference_rope(const Vec& x, const std::vector<float>& inv_freq, int64_t batch, int64_t seq,
                   int64_t heads, int64_t hd, int direction) {
  Vec y = x;
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const double* v = x.data() + ((b * seq + t) * heads + h) * hd;
        double* o = y.data() + ((b * seq + t) * heads + h) * hd;
        for (int64_t i = 0; i < 2 * half; ++i) {
          const double angle = t * static_cast<double>(inv_freq[i % half]);
          const double rotated = i < half ? -direction * v[i + half] : direction * v[i - half];
          o[i] = v[i] * std::cos(angle) + rotated * std::sin(angle);
        }
      }
  return y;
}

TEST(TrainRope, BothDirectionsAndPartialRotary) {
  const int64_t batch = 2, seq = 6, heads = 3, hd = 10;
  const std::vector<float> inv_freq = {1.0f, 0.37f, 0.05f};  // rot = 6 of head_dim 10
  for (int direction : {1, -1}) {
    const auto table = make_rope_table<double>(inv_freq, seq, direction);
    Vec x = random_vec(batch * seq * heads * hd, 31);
    const Vec r = random_vec(x.size(), 32);
    Vec y = x;
    rope_forward<double>(y.data(), table, batch, heads, hd, 2);
    expect_close(y, reference_rope(x, inv_freq, batch, seq, heads, hd, direction), "rope fwd",
                 1e-12);
    Vec dx = r;
    rope_backward<double>(dx.data(), table, batch, heads, hd, 2);
    const auto loss = [&] {
      return dot(r, reference_rope(x, inv_freq, batch, seq, heads, hd, direction));
    };
    expect_gradient(loss, x, dx, "rope dx");
  }
}

// ---------------------------------------------------------------------------------------------
// attention

Vec reference_attention(const Vec& q, const Vec& k, const Vec& v, int64_t batch, int64_t seq,
                        int64_t nh, int64_t nkv, int64_t hd) {
  Vec out(q.size(), 0.0);
  const int64_t group = nh / nkv;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t i = 0; i < seq; ++i) {
        const double* qi = q.data() + ((b * seq + i) * nh + h) * hd;
        std::vector<double> s(i + 1);
        double max = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          const double* kj = k.data() + ((b * seq + j) * nkv + h / group) * hd;
          double d = 0;
          for (int64_t e = 0; e < hd; ++e) d += qi[e] * kj[e];
          s[j] = d / std::sqrt(static_cast<double>(hd));
          max = std::max(max, s[j]);
        }
        double sum = 0;
        for (auto& e : s) sum += (e = std::exp(e - max));
        double* o = out.data() + ((b * seq + i) * nh + h) * hd;
        for (int64_t j = 0; j <= i; ++j) {
          const double* vj = v.data() + ((b * seq + j) * nkv + h / group) * hd;
          for (int64_t e = 0; e < hd; ++e) o[e] += s[j] / sum * vj[e];
        }
      }
  return out;
}

TEST(TrainAttention, CausalGqaForwardAndBackward) {
  const int64_t batch = 2, seq = 7, nh = 6, nkv = 2, hd = 5;
  Vec q = random_vec(batch * seq * nh * hd, 41, -2, 2), k = random_vec(batch * seq * nkv * hd, 42),
      v = random_vec(batch * seq * nkv * hd, 43);
  const Vec r = random_vec(q.size(), 44);
  Vec out(q.size()), probs(batch * nh * seq * seq);
  attention_forward<double>(q.data(), k.data(), v.data(), out.data(), probs.data(), batch, seq, nh,
                            nkv, hd, 2);
  expect_close(out, reference_attention(q, k, v, batch, seq, nh, nkv, hd), "attention fwd");
  Vec dq(q.size(), 9.0), dk(k.size(), 9.0), dv(v.size(), 9.0);  // overwritten
  attention_backward<double>(r.data(), q.data(), k.data(), v.data(), probs.data(), dq.data(),
                             dk.data(), dv.data(), batch, seq, nh, nkv, hd, 2);
  const auto loss = [&] { return dot(r, reference_attention(q, k, v, batch, seq, nh, nkv, hd)); };
  expect_gradient(loss, q, dq, "dq");
  expect_gradient(loss, k, dk, "dk");
  expect_gradient(loss, v, dv, "dv");
}

TEST(TrainAttention, BackwardIsBitIdenticalAcrossThreadCounts) {
  const int64_t batch = 3, seq = 33, nh = 4, nkv = 1, hd = 8;
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> dist(-1, 1);
  const auto rnd = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& e : v) e = dist(gen);
    return v;
  };
  auto q = rnd(batch * seq * nh * hd), k = rnd(batch * seq * nkv * hd),
       v = rnd(batch * seq * nkv * hd), d = rnd(q.size());
  std::vector<float> out(q.size()), probs(batch * nh * seq * seq);
  attention_forward<float>(q.data(), k.data(), v.data(), out.data(), probs.data(), batch, seq, nh,
                           nkv, hd, 2);
  std::vector<float> dq1(q.size()), dk1(k.size()), dv1(v.size()), dq2 = dq1, dk2 = dk1, dv2 = dv1;
  attention_backward<float>(d.data(), q.data(), k.data(), v.data(), probs.data(), dq1.data(),
                            dk1.data(), dv1.data(), batch, seq, nh, nkv, hd, 1);
  attention_backward<float>(d.data(), q.data(), k.data(), v.data(), probs.data(), dq2.data(),
                            dk2.data(), dv2.data(), batch, seq, nh, nkv, hd, 2);
  EXPECT_EQ(dq1, dq2);
  EXPECT_EQ(dk1, dk2);
  EXPECT_EQ(dv1, dv2);
}

// ---------------------------------------------------------------------------------------------
// activations

TEST(TrainActivations, SwiGlu) {
  const int64_t n = 37;
  Vec g = random_vec(n, 51, -4, 4), u = random_vec(n, 52, -2, 2);
  const Vec r = random_vec(n, 53);
  const auto ref = [&] {
    Vec a(n);
    for (int64_t i = 0; i < n; ++i) a[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    return a;
  };
  Vec a(n);
  swiglu_forward<double>(g.data(), u.data(), a.data(), n, 1);
  expect_close(a, ref(), "swiglu fwd");
  Vec dg(n), du(n);
  swiglu_backward<double>(r.data(), g.data(), u.data(), dg.data(), du.data(), n, 1);
  const auto loss = [&] { return dot(r, ref()); };
  expect_gradient(loss, g, dg, "dgate");
  expect_gradient(loss, u, du, "dup");
}

void check_unary(void (*fwd)(const double*, double*, int64_t, int),
                 void (*bwd)(const double*, const double*, double*, int64_t, int),
                 const std::function<double(double)>& ref, const Vec& x0, const char* what) {
  Vec x = x0;
  const int64_t n = static_cast<int64_t>(x.size());
  const Vec r = random_vec(n, 61);
  const auto apply_ref = [&] {
    Vec y(n);
    for (int64_t i = 0; i < n; ++i) y[i] = ref(x[i]);
    return y;
  };
  Vec y(n);
  fwd(x.data(), y.data(), n, 1);
  expect_close(y, apply_ref(), what);
  Vec dx(n);
  bwd(r.data(), x.data(), dx.data(), n, 1);
  expect_gradient([&] { return dot(r, apply_ref()); }, x, dx, what);
}

TEST(TrainActivations, GeluTanh) {
  check_unary(
      gelu_tanh_forward<double>, gelu_tanh_backward<double>,
      [](double v) {
        return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
      },
      random_vec(41, 62, -5, 5), "gelu_tanh");
}

TEST(TrainActivations, ReluSquared) {
  Vec x = random_vec(41, 63, -3, 3);
  for (auto& v : x)
    if (std::abs(v) < 1e-3) v = 0.5;  // keep finite differences off the kink
  check_unary(
      relu_squared_forward<double>, relu_squared_backward<double>,
      [](double v) { return v > 0 ? v * v : 0.0; }, x, "relu_squared");
}

TEST(TrainActivations, Softcap) {
  const double cap = 3.0;
  const int64_t n = 29;
  Vec x = random_vec(n, 64, -10, 10);
  const Vec r = random_vec(n, 65);
  const auto ref = [&] {
    Vec y(n);
    for (int64_t i = 0; i < n; ++i) y[i] = cap * std::tanh(x[i] / cap);
    return y;
  };
  Vec y(n);
  softcap_forward<double>(x.data(), y.data(), n, cap, 1);
  expect_close(y, ref(), "softcap fwd");
  Vec dx(n);
  softcap_backward<double>(r.data(), y.data(), dx.data(), n, cap, 1);
  expect_gradient([&] { return dot(r, ref()); }, x, dx, "softcap");
}

// ---------------------------------------------------------------------------------------------
// embeddings, cross-entropy

TEST(TrainEmbedding, LookupAndPositions) {
  const int64_t vocab = 9, dim = 70, batch = 2, seq = 5;
  const std::vector<int32_t> ids = {3, 0, 3, 8, 1, 1, 3, 7, 2, 3};  // repeats accumulate
  Vec table = random_vec(vocab * dim, 71), pos = random_vec(seq * dim, 72);
  const Vec r = random_vec(batch * seq * dim, 73);
  const auto ref = [&] {
    Vec x(batch * seq * dim);
    for (int64_t row = 0; row < batch * seq; ++row)
      for (int64_t j = 0; j < dim; ++j)
        x[row * dim + j] = table[ids[row] * dim + j] + pos[(row % seq) * dim + j];
    return x;
  };
  Vec x(batch * seq * dim);
  embedding_forward<double>(table.data(), ids.data(), x.data(), batch * seq, dim, 2);
  positions_forward<double>(pos.data(), x.data(), batch, seq, dim, 2);
  expect_close(x, ref(), "embedding fwd");
  Vec dtable(table.size(), 0.0), dpos(pos.size(), 0.0);
  embedding_backward<double>(r.data(), ids.data(), dtable.data(), batch * seq, dim, 2);
  positions_backward<double>(r.data(), dpos.data(), batch, seq, dim, 2);
  const auto loss = [&] { return dot(r, ref()); };
  expect_gradient(loss, table, dtable, "dtable");
  expect_gradient(loss, pos, dpos, "dpositions");
}

TEST(TrainCrossEntropy, LossAndGradientWithIgnoredRows) {
  const int64_t rows = 6, vocab = 11;
  Vec z = random_vec(rows * vocab, 81, -6, 6);
  const std::vector<int32_t> targets = {3, -1, 0, 10, -1, 5};
  const Vec scale = {0.5, 7.0, 1.0, 2.0, 3.0, 0.25};
  const auto ref = [&] {  // Σ_r scale · (log Σ e^z - z_target) over counted rows
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (targets[r] < 0) continue;
      double sum = 0;
      for (int64_t j = 0; j < vocab; ++j) sum += std::exp(z[r * vocab + j]);
      total += scale[r] * (std::log(sum) - z[r * vocab + targets[r]]);
    }
    return total;
  };
  Vec loss(rows), dz(z.size());
  cross_entropy_forward_backward<double>(z.data(), targets.data(), scale.data(), loss.data(),
                                         dz.data(), rows, vocab, 2);
  double weighted = 0;
  for (int64_t r = 0; r < rows; ++r) weighted += scale[r] * loss[r];
  EXPECT_NEAR(weighted, ref(), 1e-12);
  EXPECT_EQ(loss[1], 0.0);
  EXPECT_EQ(loss[4], 0.0);
  expect_gradient(ref, z, dz, "dlogits");

  // In place: dz aliasing z gives the same gradient.
  Vec inplace = z;
  cross_entropy_forward_backward<double>(inplace.data(), targets.data(), scale.data(), loss.data(),
                                         inplace.data(), rows, vocab, 1);
  expect_close(inplace, dz, "in-place dz", 1e-15);
}

}  // namespace
}  // namespace kiln::train
