// Optimizers, schedules and clipping against float64 references written here from the published
// formulas (torch.optim.AdamW's documented algorithm; nanochat's muon.py for Muon), independent of
// the implementation under test.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include "core/error.hpp"
#include "train/optimizer/grad_clip.hpp"
#include "train/optimizer/lr_schedule.hpp"
#include "train/optimizer/optimizer.hpp"

namespace kiln {
namespace {

using Mat = std::vector<double>;  // row-major

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Buffers of `layout.total()` floats with padding set to NaN: an optimizer that reads or writes
// padding shows up as NaN (read) or a changed NaN pattern (write).
std::vector<float> layout_buffer(const ParamLayout& layout, uint32_t seed, float scale = 1.0f) {
  std::vector<float> buf(static_cast<size_t>(layout.total()),
                         std::numeric_limits<float>::quiet_NaN());
  for (const ParamSpec& s : layout.specs()) {
    const auto v =
        random_floats(static_cast<size_t>(s.numel), seed + static_cast<uint32_t>(s.offset), scale);
    std::copy(v.begin(), v.end(), buf.begin() + s.offset);
  }
  return buf;
}

double rel_l2(const double* ref, const float* got, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (ref[i] - got[i]) * (ref[i] - got[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// ---- float64 references -------------------------------------------------------------------------

struct RefAdam {
  Mat m, v;
};

// torch.optim.AdamW (docs: "decoupled weight decay"): p -= lr*wd*p, then Adam with bias correction.
void ref_adamw(Mat& p, const std::vector<float>& g, RefAdam& st, double lr, double b1, double b2,
               double eps, double wd, int64_t t) {
  if (st.m.empty()) st.m.assign(p.size(), 0.0), st.v.assign(p.size(), 0.0);
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] -= lr * wd * p[i];
    st.m[i] = b1 * st.m[i] + (1 - b1) * g[i];
    st.v[i] = b2 * st.v[i] + (1 - b2) * double(g[i]) * g[i];
    const double mhat = st.m[i] / (1 - std::pow(b1, double(t)));
    const double vhat = st.v[i] / (1 - std::pow(b2, double(t)));
    p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
  }
}

Mat matmul(const Mat& a, const Mat& b, int64_t n, int64_t k, int64_t m) {  // [n,k]·[k,m]
  Mat c(static_cast<size_t>(n * m), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t l = 0; l < k; ++l)
      for (int64_t j = 0; j < m; ++j) c[i * m + j] += a[i * k + l] * b[l * m + j];
  return c;
}

Mat transposed(const Mat& a, int64_t rows, int64_t cols) {
  Mat t(a.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[j * rows + i] = a[i * cols + j];
  return t;
}

// nanochat's zeropower_via_newtonschulz5, in float64.
Mat ref_newton_schulz(const Mat& g, int64_t rows, int64_t cols, int steps) {
  const double a = 3.4445, b = -4.7750, c = 2.0315;
  const bool tall = rows > cols;
  Mat x = tall ? transposed(g, rows, cols) : g;
  const int64_t r = tall ? cols : rows, n = tall ? rows : cols;
  double norm = 0;
  for (double v : x) norm += v * v;
  norm = std::sqrt(norm) + 1e-7;
  for (double& v : x) v /= norm;
  for (int s = 0; s < steps; ++s) {
    const Mat A = matmul(x, transposed(x, r, n), r, n, r);
    const Mat AA = matmul(A, A, r, r, r);
    Mat B(A.size());
    for (size_t i = 0; i < B.size(); ++i) B[i] = b * A[i] + c * AA[i];
    const Mat BX = matmul(B, x, r, r, n);
    for (size_t i = 0; i < x.size(); ++i) x[i] = a * x[i] + BX[i];
  }
  return tall ? transposed(x, r, n) : x;
}

void ref_muon(Mat& p, const std::vector<float>& g, Mat& buf, int64_t rows, int64_t cols, double lr,
              double mu, bool nesterov, double wd) {
  if (buf.empty()) buf.assign(p.size(), 0.0);
  Mat u(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    buf[i] = mu * buf[i] + (1 - mu) * g[i];
    u[i] = nesterov ? (1 - mu) * g[i] + mu * buf[i] : buf[i];
  }
  const Mat x = ref_newton_schulz(u, rows, cols, 5);
  const double scale = std::sqrt(std::max(1.0, double(rows) / double(cols)));
  for (size_t i = 0; i < p.size(); ++i) p[i] = p[i] * (1 - lr * wd) - lr * scale * x[i];
}

ParamLayout mixed_layout() {
  ParamLayout l;
  l.add("model.embed_tokens.weight", {20, 12}, ParamRole::Embedding);
  l.add("model.layers.0.self_attn.q_proj.weight", {16, 12}, ParamRole::Matrix);  // tall
  l.add("model.layers.0.self_attn.q_proj.bias", {16}, ParamRole::Bias);
  l.add("model.layers.0.mlp.down_proj.weight", {12, 28}, ParamRole::Matrix);  // wide
  l.add("model.layers.0.input_layernorm.weight", {12}, ParamRole::Norm);
  l.add("model.embed_positions.weight", {9, 12}, ParamRole::Position);
  l.add("lm_head.weight", {20, 12}, ParamRole::Head);
  return l;
}

Mat slice(const std::vector<float>& buf, const ParamSpec& s) {
  return Mat(buf.begin() + s.offset, buf.begin() + s.offset + s.numel);
}

std::vector<float> grad_of(const std::vector<float>& buf, const ParamSpec& s) {
  return std::vector<float>(buf.begin() + s.offset, buf.begin() + s.offset + s.numel);
}

// ---- AdamW ------------------------------------------------------------------------------------

TEST(AdamW, MatchesTorchFormulaWithRoleDecayAndGroups) {
  const ParamLayout layout = mixed_layout();
  OptimizerOptions o;
  o.lr = 0.01f;
  o.beta1 = 0.8f;
  o.beta2 = 0.95f;
  o.eps = 1e-6f;
  o.weight_decay = 0.1f;
  // Param groups: norms decay after all, embeddings get their own learning rate.
  o.groups[static_cast<size_t>(ParamRole::Norm)].weight_decay = 0.05f;
  o.groups[static_cast<size_t>(ParamRole::Embedding)].lr = 0.03f;
  Optimizer opt(layout, o, 2);

  std::vector<float> values = layout_buffer(layout, 1);
  std::vector<Mat> ref_p;
  std::vector<RefAdam> ref_st(layout.specs().size());
  for (const ParamSpec& s : layout.specs()) ref_p.push_back(slice(values, s));

  const double multipliers[] = {0.5, 1.0, 0.75, 0.25};
  for (int step = 0; step < 4; ++step) {
    const std::vector<float> grads = layout_buffer(layout, 100 + step, 0.1f);
    opt.step(values.data(), grads.data(), multipliers[step]);
    for (size_t i = 0; i < layout.specs().size(); ++i) {
      const ParamSpec& s = layout.specs()[i];
      // The documented defaults: decay for matrix and head only, unless a group says otherwise.
      double wd = (s.role == ParamRole::Matrix || s.role == ParamRole::Head) ? 0.1 : 0.0;
      if (s.role == ParamRole::Norm) wd = 0.05;
      double lr = (s.role == ParamRole::Embedding ? 0.03 : 0.01) * multipliers[step];
      ref_adamw(ref_p[i], grad_of(grads, s), ref_st[i], lr, 0.8, 0.95, 1e-6, wd, step + 1);
    }
  }
  EXPECT_EQ(opt.steps_taken(), 4);
  for (size_t i = 0; i < layout.specs().size(); ++i) {
    const ParamSpec& s = layout.specs()[i];
    EXPECT_LT(rel_l2(ref_p[i].data(), values.data() + s.offset, s.numel), 1e-6) << s.name;
  }
  // Moments exposed under the parameter's name, equal to the reference's.
  const auto state = opt.state();
  ASSERT_EQ(state.size(), 2 * layout.specs().size());
  for (size_t i = 0; i < layout.specs().size(); ++i) {
    EXPECT_EQ(state[2 * i].param->name, layout.specs()[i].name);
    EXPECT_EQ(state[2 * i].kind, TensorKind::AdamM);
    EXPECT_EQ(state[2 * i + 1].kind, TensorKind::AdamV);
    const int64_t n = layout.specs()[i].numel;
    EXPECT_LT(rel_l2(ref_st[i].m.data(), state[2 * i].data, n), 1e-6);
    EXPECT_LT(rel_l2(ref_st[i].v.data(), state[2 * i + 1].data, n), 1e-6);
  }
  // Padding is neither read (no NaN leaked into values) nor written.
  for (const ParamSpec& s : layout.specs()) {
    for (int64_t k = s.numel; k < (s.numel + 15) / 16 * 16; ++k) {
      EXPECT_TRUE(std::isnan(values[static_cast<size_t>(s.offset + k)]));
    }
  }
}

TEST(AdamW, ZeroGradientWithDecayShrinksByExactFactor) {
  // One Adam step with g = 0 moves nothing but the decay: p * (1 - lr * wd).
  ParamLayout layout;
  layout.add("w", {4, 4}, ParamRole::Matrix);
  OptimizerOptions o;
  o.lr = 0.5f;
  o.weight_decay = 0.2f;
  Optimizer opt(layout, o, 1);
  std::vector<float> values(static_cast<size_t>(layout.total()), 2.0f);
  std::vector<float> grads(values.size(), 0.0f);
  opt.step(values.data(), grads.data(), 1.0);
  for (int i = 0; i < 16; ++i) EXPECT_FLOAT_EQ(values[i], 2.0f * (1.0f - 0.5f * 0.2f));
}

// ---- Muon -------------------------------------------------------------------------------------

TEST(Muon, MatchesNanochatRecipeForMatricesAndAdamWForTheRest) {
  const ParamLayout layout = mixed_layout();
  OptimizerOptions o;
  o.kind = OptimizerKind::Muon;
  o.lr = 0.004f;
  o.weight_decay = 0.0f;
  o.muon.lr = 0.02f;
  o.muon.weight_decay = 0.1f;
  Optimizer opt(layout, o, 2);

  std::vector<float> values = layout_buffer(layout, 7);
  const std::vector<float> start = values;
  std::vector<Mat> ref_p, ref_buf(layout.specs().size());
  std::vector<RefAdam> ref_st(layout.specs().size());
  for (const ParamSpec& s : layout.specs()) ref_p.push_back(slice(values, s));

  for (int step = 0; step < 3; ++step) {
    const double mult = step == 0 ? 0.5 : 1.0;
    const std::vector<float> grads = layout_buffer(layout, 200 + step, 0.1f);
    opt.step(values.data(), grads.data(), mult);
    for (size_t i = 0; i < layout.specs().size(); ++i) {
      const ParamSpec& s = layout.specs()[i];
      if (s.role == ParamRole::Matrix) {
        ref_muon(ref_p[i], grad_of(grads, s), ref_buf[i], s.shape[0], s.shape[1], 0.02 * mult, 0.95,
                 true, 0.1);
      } else {
        ref_adamw(ref_p[i], grad_of(grads, s), ref_st[i], 0.004 * mult, 0.9, 0.999, 1e-8, 0.0,
                  step + 1);
      }
    }
  }
  for (size_t i = 0; i < layout.specs().size(); ++i) {
    const ParamSpec& s = layout.specs()[i];
    // Compare the total movement (values - start), which is what the update formula produces.
    Mat ref_delta(static_cast<size_t>(s.numel));
    std::vector<float> delta(static_cast<size_t>(s.numel));
    for (int64_t k = 0; k < s.numel; ++k) {
      ref_delta[k] = ref_p[i][k] - start[s.offset + k];
      delta[k] = values[s.offset + k] - start[s.offset + k];
    }
    EXPECT_LT(rel_l2(ref_delta.data(), delta.data(), s.numel), 2e-4) << s.name;
  }
  // Named state: one muon_momentum per matrix, adam_m/adam_v for the rest.
  int momenta = 0;
  for (const auto& st : opt.state()) {
    if (st.kind == TensorKind::MuonMomentum) {
      ++momenta;
      EXPECT_EQ(st.param->role, ParamRole::Matrix);
    }
  }
  EXPECT_EQ(momenta, 2);
}

TEST(Muon, UpdateIsNearlyOrthogonalAndShapeScaled) {
  // A property of the published recipe, independent of any reference code: the Newton-Schulz
  // output has singular values around 1 (nanochat: S' ~ Uniform(0.5, 1.5)), so its squared
  // Frobenius norm is about min(rows, cols), and the step multiplies it by sqrt(max(1, rows/cols)).
  ParamLayout layout;
  layout.add("w", {48, 12}, ParamRole::Matrix);
  OptimizerOptions o;
  o.kind = OptimizerKind::Muon;
  o.muon.lr = 1.0f;
  o.muon.nesterov = false;
  o.muon.momentum = 0.0f;
  Optimizer opt(layout, o, 1);
  std::vector<float> values(static_cast<size_t>(layout.total()), 0.0f);
  const std::vector<float> grads = layout_buffer(layout, 3);
  opt.step(values.data(), grads.data(), 1.0);
  double sq = 0;
  for (int64_t k = 0; k < 48 * 12; ++k) sq += double(values[k]) * values[k];
  const double per_singular = sq / (48.0 / 12.0) / 12.0;  // mean squared singular value
  EXPECT_GT(per_singular, 0.25);
  EXPECT_LT(per_singular, 2.25);
}

TEST(Optimizer, BitIdenticalAcrossThreadCounts) {
  for (OptimizerKind kind : {OptimizerKind::AdamW, OptimizerKind::Muon}) {
    ParamLayout layout;
    layout.add("a", {150, 130}, ParamRole::Matrix);  // above the parallel thresholds
    layout.add("b", {40000}, ParamRole::Norm);
    OptimizerOptions o;
    o.kind = kind;
    std::vector<float> v1 = layout_buffer(layout, 5), v2 = v1;
    Optimizer one(layout, o, 1), two(layout, o, 2);
    for (int s = 0; s < 2; ++s) {
      const auto g = layout_buffer(layout, 50 + s);
      one.step(v1.data(), g.data(), 1.0);
      two.step(v2.data(), g.data(), 1.0);
    }
    EXPECT_EQ(0, std::memcmp(v1.data(), v2.data(), v1.size() * sizeof(float)))
        << optimizer_kind_name(kind);
  }
}

TEST(Optimizer, StateRestoredIntoAFreshOptimizerContinuesBitExactly) {
  const ParamLayout layout = mixed_layout();
  OptimizerOptions o;
  o.kind = OptimizerKind::Muon;
  Optimizer a(layout, o, 1);
  std::vector<float> va = layout_buffer(layout, 11);
  for (int s = 0; s < 2; ++s) a.step(va.data(), layout_buffer(layout, 60 + s).data(), 1.0);

  Optimizer b(layout, o, 1);
  for (const auto& st : a.state())
    b.restore_state(st.param->name, st.kind, st.data, st.param->numel);
  b.set_steps_taken(a.steps_taken());
  std::vector<float> vb = va;
  const auto g = layout_buffer(layout, 99);
  a.step(va.data(), g.data(), 0.7);
  b.step(vb.data(), g.data(), 0.7);
  EXPECT_EQ(0, std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)));
}

TEST(Optimizer, RejectsBadOptionsAndMismatchedState) {
  ParamLayout layout;
  layout.add("m", {4, 4}, ParamRole::Matrix);
  layout.add("n", {4}, ParamRole::Norm);
  const auto expect_status = [](kiln_status want, const std::string& needle, auto&& fn) {
    try {
      fn();
      ADD_FAILURE() << "no error, expected " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), want) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  OptimizerOptions o;
  o.beta2 = 1.0f;
  expect_status(KILN_ERR_INVALID_ARGUMENT, "beta2", [&] { Optimizer(layout, o, 1); });
  o = {};
  o.lr = -1.0f;
  expect_status(KILN_ERR_INVALID_ARGUMENT, "lr", [&] { Optimizer(layout, o, 1); });
  o = {};
  o.muon.ns_steps = 0;
  expect_status(KILN_ERR_INVALID_ARGUMENT, "muon.ns_steps", [&] { Optimizer(layout, o, 1); });
  o = {};
  o.kind = OptimizerKind::Muon;
  ParamLayout three_d;
  three_d.add("cube", {2, 2, 2}, ParamRole::Matrix);
  expect_status(KILN_ERR_INVALID_ARGUMENT, "cube", [&] { Optimizer(three_d, o, 1); });

  Optimizer adam(layout, OptimizerOptions{}, 1);
  std::vector<float> data(16, 0.0f);
  expect_status(KILN_ERR_FORMAT, "muon_momentum state of 'm'",
                [&] { adam.restore_state("m", TensorKind::MuonMomentum, data.data(), 16); });
  expect_status(KILN_ERR_FORMAT, "has 15 elements",
                [&] { adam.restore_state("m", TensorKind::AdamM, data.data(), 15); });
  expect_status(KILN_ERR_FORMAT, "no trainable parameter",
                [&] { adam.restore_state("x", TensorKind::AdamM, data.data(), 16); });
}

// ---- schedules --------------------------------------------------------------------------------

TEST(LrSchedule, BoundaryStepsFollowTheDocumentedFormulas) {
  LrSchedule s;
  s.kind = ScheduleKind::WarmupCosine;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.min_lr_ratio = 0.1f;
  validate_schedule(s);
  const double r = double(0.1f);
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 0), 0.1);  // (0 + 1) / 10
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 9), 1.0);  // last warmup step
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 10),
                   r + (1 - r) * 0.5 * (1 + std::cos(std::numbers::pi / 100)));
  EXPECT_NEAR(lr_multiplier(s, 59), r + (1 - r) * 0.5, 1e-15);  // halfway: cos(pi/2) = 0
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 109), r);                   // last step reaches the floor
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 500), r);                   // and stays there

  s.kind = ScheduleKind::WarmupLinear;
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 9), 1.0);
  EXPECT_NEAR(lr_multiplier(s, 59), 1 - (1 - r) * 0.5, 1e-15);
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 109), r);

  s.kind = ScheduleKind::WarmupStableDecay;
  s.warmup_steps = 5;
  s.total_steps = 100;
  s.decay_fraction = 0.2f;  // the last 20 steps: 80..99
  validate_schedule(s);
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 4), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 79), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 80), 1 - (1 - r) / 20);
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 99), r);

  LrSchedule c;  // constant, no warmup
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 0), 1.0);
  c.warmup_steps = 4;
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 1), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 1000000), 1.0);
}

TEST(LrSchedule, ValidationNamesTheField) {
  const auto message = [](const LrSchedule& s) -> std::string {
    try {
      validate_schedule(s);
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), KILN_ERR_INVALID_ARGUMENT);
      return e.what();
    }
    return "";
  };
  LrSchedule s;
  s.kind = ScheduleKind::WarmupCosine;
  EXPECT_NE(message(s).find("total_steps"), std::string::npos);
  s.total_steps = 10;
  s.warmup_steps = 11;
  EXPECT_NE(message(s).find("warmup_steps"), std::string::npos);
  s.warmup_steps = 2;
  s.min_lr_ratio = 1.5f;
  EXPECT_NE(message(s).find("min_lr_ratio"), std::string::npos);
  s.min_lr_ratio = 0;
  s.kind = ScheduleKind::WarmupStableDecay;
  s.decay_fraction = 0.9f;  // 9 decay + 2 warmup > 10
  EXPECT_NE(message(s).find("decay steps"), std::string::npos);
  s.decay_fraction = 0.01f;  // rounds to 0 steps
  EXPECT_NE(message(s).find("decay_fraction"), std::string::npos);
}

// ---- clipping ---------------------------------------------------------------------------------

TEST(GradClip, NormInDoubleAndTorchScaling) {
  ParamLayout layout;
  layout.add("a", {3}, ParamRole::Bias);
  layout.add("b", {2, 2}, ParamRole::Matrix);
  std::vector<float> g(static_cast<size_t>(layout.total()),
                       std::numeric_limits<float>::quiet_NaN());
  const float a[] = {3.0f, 0.0f, 0.0f}, b[] = {0.0f, 4.0f, 0.0f, 12.0f};  // norm 13
  std::copy(a, a + 3, g.begin() + layout.at("a").offset);
  std::copy(b, b + 4, g.begin() + layout.at("b").offset);

  std::vector<float> unclipped = g;
  EXPECT_DOUBLE_EQ(clip_grad_norm(layout, unclipped.data(), 20.0, 1), 13.0);
  EXPECT_EQ(unclipped[layout.at("b").offset + 3], 12.0f);  // below the limit: untouched

  EXPECT_DOUBLE_EQ(clip_grad_norm(layout, g.data(), 1.0, 2), 13.0);  // returns the pre-clip norm
  const float scale = static_cast<float>(1.0 / (13.0 + 1e-6));
  EXPECT_FLOAT_EQ(g[layout.at("a").offset], 3.0f * scale);
  EXPECT_FLOAT_EQ(g[layout.at("b").offset + 3], 12.0f * scale);
  EXPECT_TRUE(std::isnan(g[3]));  // padding not touched (nor read: the norm was finite)
  EXPECT_NEAR(global_grad_norm(layout, g.data(), 1), 1.0, 1e-6);

  std::vector<float> inf_g = unclipped;
  inf_g[layout.at("a").offset] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(std::isinf(clip_grad_norm(layout, inf_g.data(), 1.0, 1)));
  EXPECT_EQ(inf_g[layout.at("b").offset + 3], 12.0f);  // left for the caller to skip the step

  EXPECT_THROW(clip_grad_norm(layout, g.data(), -1.0, 1), Error);
}

TEST(GradClip, LargeNormMatchesLongDoubleAndIsThreadIndependent) {
  ParamLayout layout;
  layout.add("x", {300000}, ParamRole::Embedding);
  layout.add("y", {70001}, ParamRole::Matrix);
  const auto g = layout_buffer(layout, 17);
  long double ref = 0;
  for (const ParamSpec& s : layout.specs())
    for (int64_t i = 0; i < s.numel; ++i) ref += (long double)g[s.offset + i] * g[s.offset + i];
  const double n1 = global_grad_norm(layout, g.data(), 1);
  const double n2 = global_grad_norm(layout, g.data(), 2);
  EXPECT_EQ(n1, n2);
  EXPECT_NEAR(n1, std::sqrt((double)ref), 1e-12 * n1);
}

}  // namespace
}  // namespace kiln
