// The CUDA training kernels (src/backend/cuda/train_kernels.hpp, kernels/train_*.cu, all but
// attention) against float64 references written here from the formulas: random inputs of awkward
// sizes (not multiples of 8/32/128, dim 1 where allowed), outputs poisoned with NaN, "+=" outputs
// pre-filled with random values, every nullable argument both ways, and two runs of each reducing
// kernel compared bit for bit. Gradients of the composite q/k/v transform are checked against
// central differences of the float64 forward, so no derivative is shared with the kernels.
// Without a GPU every test skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numbers>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda/device_memory.hpp"
#include "backend/cuda/train/lt_gemm.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "core/error.hpp"
#include "cuda_test_util.hpp"
#include "train/dropout_mask.hpp"

namespace kiln::cuda::train {
namespace {

using test::DeviceArray;
using test::from_bf16;
using test::random_normal;
using test::round_to_bf16;
using test::to_bf16;

constexpr double kBf16Rel = 1.0 / 256.0;  // one BF16 rounding (2^-9) plus float32 slack

// Every element within rel · |want| + abs; on failure the first few offenders and a summary with
// the largest absolute and relative errors and where they are (the lead sees only the log).
void expect_close(const std::vector<float>& got, const std::vector<double>& want, double rel,
                  double abs, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0, worst_abs_at = 0, worst_rel_at = 0;
  double worst_abs = 0.0, worst_rel = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]);
    const double tol = rel * std::abs(want[i]) + abs;
    if (!(err <= tol)) {  // NaN fails too
      if (++bad <= 5) {
        ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i]
                      << " (|err| " << err << " > tol " << tol << ")";
      }
    }
    if (!(err <= worst_abs)) worst_abs = err, worst_abs_at = i;
    const double r = err / std::max(std::abs(want[i]), 1e-30);
    if (!(r <= worst_rel)) worst_rel = r, worst_rel_at = i;
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size()
                     << " elements out of tolerance; max |err| " << worst_abs << " at ["
                     << worst_abs_at << "], max rel err " << worst_rel << " at [" << worst_rel_at
                     << "]";
}

void expect_close(const std::vector<bf16>& got, const std::vector<double>& want, double rel,
                  double abs, const std::string& what) {
  expect_close(from_bf16(got), want, rel, abs, what);
}

template <class T>
void expect_bit_identical(const std::vector<T>& a, const std::vector<T>& b,
                          const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) {
      ADD_FAILURE() << what << ": two runs differ first at [" << i << "] (not deterministic)";
      return;
    }
  }
}

std::vector<double> widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }

std::vector<float> rounded(std::vector<float> v) {
  for (auto& x : v) x = round_to_bf16(x);
  return v;
}

void sync_ok() { ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << "kernel failed"; }

class CudaTrainKernels : public ::testing::Test {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
  std::mt19937 rng{20261124};
};

// ---- embedding --------------------------------------------------------------------------------

TEST_F(CudaTrainKernels, EmbeddingForwardAddsTokenAndPositionRows) {
  for (const int64_t dim : {1, 13, 64, 300}) {
    for (const bool with_pos : {false, true}) {
      const int64_t vocab = 17, seq = 7, n = 3 * seq - 2;  // a last sequence cut short
      const auto tok = rounded(random_normal(vocab * dim, rng));
      const auto pos = rounded(random_normal(seq * dim, rng));
      std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
      std::vector<int32_t> ids(n);
      for (auto& id : ids) id = pick(rng);
      DeviceArray<int32_t> d_ids(ids);
      DeviceArray<bf16> d_tok(to_bf16(tok)), d_pos(to_bf16(pos));
      DeviceArray<float> out(n * dim);
      embedding_forward(d_ids.get(), d_tok.get(), with_pos ? d_pos.get() : nullptr, out.get(), n,
                        seq, dim, nullptr);
      sync_ok();
      std::vector<double> want(n * dim);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t c = 0; c < dim; ++c) {
          want[t * dim + c] = static_cast<double>(tok[ids[t] * dim + c]) +
                              (with_pos ? static_cast<double>(pos[(t % seq) * dim + c]) : 0.0);
        }
      }
      expect_close(out.download(), want, 1e-7, 0.0,
                   "embedding_forward dim " + std::to_string(dim) + (with_pos ? " +pos" : ""));
    }
  }
}

TEST_F(CudaTrainKernels, EmbeddingBackwardSumsRowsPerIdDeterministically) {
  for (const int64_t dim : {1, 37, 300}) {
    for (const int32_t padding : {-1, 3}) {
      for (const bool with_pos : {false, true}) {
        const int64_t vocab = 12, seq = 20, n = 15 * seq + 7;
        // Id 11 never occurs: its gradient row must stay exactly as it was.
        std::uniform_int_distribution<int32_t> pick(0, 10);
        std::vector<int32_t> ids(n);
        for (auto& id : ids) id = pick(rng);
        const auto d_out_h = random_normal(n * dim, rng);
        const auto tok0 = random_normal(vocab * dim, rng);
        const auto pos0 = random_normal(seq * dim, rng);
        std::vector<double> want_tok = widen(tok0), want_pos = widen(pos0);
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t c = 0; c < dim; ++c) {
            if (ids[t] != padding) want_tok[ids[t] * dim + c] += d_out_h[t * dim + c];
            want_pos[(t % seq) * dim + c] += d_out_h[t * dim + c];
          }
        }
        DeviceArray<int32_t> d_ids(ids);
        DeviceArray<float> d_out(d_out_h);
        DeviceArray<unsigned char> workspace(embedding_backward_workspace_bytes(n));
        std::vector<float> runs_tok[2], runs_pos[2];
        for (int run = 0; run < 2; ++run) {
          DeviceArray<float> grad_tok(tok0), grad_pos(pos0);
          workspace.poison();
          embedding_backward(d_ids.get(), d_out.get(), grad_tok.get(),
                             with_pos ? grad_pos.get() : nullptr, n, seq, dim, padding,
                             workspace.get(), nullptr);
          sync_ok();
          runs_tok[run] = grad_tok.download();
          runs_pos[run] = grad_pos.download();
        }
        const std::string what = "embedding_backward dim " + std::to_string(dim) + " padding " +
                                 std::to_string(padding) + (with_pos ? " +pos" : "");
        expect_close(runs_tok[0], want_tok, 1e-5, 1e-5, what + " grad_tok");
        if (with_pos) {
          expect_close(runs_pos[0], want_pos, 1e-5, 1e-5, what + " grad_pos");
        } else {
          expect_close(runs_pos[0], widen(pos0), 0.0, 0.0, what + " grad_pos untouched");
        }
        for (int64_t c = 0; c < dim; ++c) {
          ASSERT_EQ(runs_tok[0][11 * dim + c], tok0[11 * dim + c]) << what << ": unused id row";
          if (padding >= 0) {
            ASSERT_EQ(runs_tok[0][padding * dim + c], tok0[padding * dim + c])
                << what << ": padding row";
          }
        }
        expect_bit_identical(runs_tok[0], runs_tok[1], what + " grad_tok");
        expect_bit_identical(runs_pos[0], runs_pos[1], what + " grad_pos");
      }
    }
  }
}

// ---- norms ------------------------------------------------------------------------------------

struct NormRef {
  std::vector<double> y, mean, rstd;
};

NormRef norm_reference(NormType type, const std::vector<float>& x, const float* w, const float* b,
                       double eps, int64_t rows, int64_t dim) {
  NormRef r{std::vector<double>(rows * dim), std::vector<double>(rows), std::vector<double>(rows)};
  for (int64_t i = 0; i < rows; ++i) {
    const float* xr = x.data() + i * dim;
    double mu = 0.0;
    if (type == NormType::LayerNorm) {
      for (int64_t c = 0; c < dim; ++c) mu += xr[c];
      mu /= static_cast<double>(dim);
    }
    double ss = 0.0;
    for (int64_t c = 0; c < dim; ++c) ss += (xr[c] - mu) * (xr[c] - mu);
    const double rstd = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
    for (int64_t c = 0; c < dim; ++c) {
      r.y[i * dim + c] = (xr[c] - mu) * rstd * (w != nullptr ? w[c] : 1.0) +
                         (b != nullptr && type == NormType::LayerNorm ? b[c] : 0.0);
    }
    r.mean[i] = mu;
    r.rstd[i] = rstd;
  }
  return r;
}

const char* norm_name(NormType t) { return t == NormType::LayerNorm ? "LayerNorm" : "RmsNorm"; }

TEST_F(CudaTrainKernels, NormForwardMatchesTheFormula) {
  const float eps = 1e-5f;
  const int64_t rows = 37;
  for (const NormType type : {NormType::LayerNorm, NormType::RmsNorm}) {
    for (const int64_t dim : {1, 7, 64, 768, 771}) {
      for (int variant = 0; variant < 3; ++variant) {  // (w, b), (w, -), (-, -)
        const bool has_w = variant < 2, has_b = variant == 0, want_f32 = variant != 1;
        auto x = random_normal(rows * dim, rng, 1.5f);
        for (auto& v : x) v += 2.0f;  // an offset mean: LayerNorm must centre first
        auto w = random_normal(dim, rng, 0.3f);
        for (auto& v : w) v += 1.0f;
        const auto b = random_normal(dim, rng, 0.2f);
        const auto ref = norm_reference(type, x, has_w ? w.data() : nullptr,
                                        has_b ? b.data() : nullptr, eps, rows, dim);
        DeviceArray<float> d_x(x), d_w(w), d_b(b), y_f32(rows * dim), mean(rows), rstd(rows);
        DeviceArray<bf16> y(rows * dim);
        const bool ln = type == NormType::LayerNorm;
        norm_forward(type, d_x.get(), has_w ? d_w.get() : nullptr, has_b ? d_b.get() : nullptr, eps,
                     y.get(), want_f32 ? y_f32.get() : nullptr, ln ? mean.get() : nullptr,
                     rstd.get(), rows, dim, nullptr);
        sync_ok();
        const std::string what = std::string(norm_name(type)) + " dim " + std::to_string(dim) +
                                 (has_w ? " w" : "") + (has_b ? " b" : "");
        expect_close(y.download(), ref.y, kBf16Rel, 1e-5, what + " y");
        if (want_f32) expect_close(y_f32.download(), ref.y, 1e-5, 1e-5, what + " y_f32");
        expect_close(rstd.download(), ref.rstd, 1e-5, 0.0, what + " rstd");
        if (ln) expect_close(mean.download(), ref.mean, 1e-6, 1e-6, what + " mean");
      }
    }
  }
}

TEST_F(CudaTrainKernels, NormBackwardMatchesTheFormulaAndIsDeterministic) {
  const double eps = 1e-5;
  // 300: several 64-row partial chunks (wide path) and 32-row blocks (fused path), the last one
  // short with whole warps past the end; 5: one block, most of it empty.
  for (const int64_t rows : {int64_t{300}, int64_t{5}}) {
    for (const NormType type : {NormType::LayerNorm, NormType::RmsNorm}) {
      const bool ln = type == NormType::LayerNorm;
      // 1, 7, 64, 768: the register-resident path; 771 and 1100: the wide-row path (scalar and
      // vectorised).
      for (const int64_t dim : {1, 7, 64, 768, 771, 1100}) {
        for (int variant = 0; variant < 4; ++variant) {
          // variant 0: w, dw, db, accumulate, dx_bf16; 1: w, no dw/db, "="; 2: no w (parameter
          // free), accumulate, dx_bf16; 3: no w, "=", no dx_bf16.
          const bool has_w = variant < 2, with_dw = variant == 0, accumulate = variant % 2 == 0;
          const bool want_bf16 = variant != 3;
          auto x = random_normal(rows * dim, rng, 1.5f);
          for (auto& v : x) v += 0.5f;
          auto w = random_normal(dim, rng, 0.3f);
          for (auto& v : w) v += 1.0f;
          const auto dy = random_normal(rows * dim, rng);
          const auto dx0 = random_normal(rows * dim, rng);
          const auto dw0 = random_normal(dim, rng), db0 = random_normal(dim, rng);
          const auto fwd = norm_reference(type, x, nullptr, nullptr, eps, rows, dim);
          std::vector<float> mean_f(rows), rstd_f(rows);
          for (int64_t i = 0; i < rows; ++i) {
            mean_f[i] = static_cast<float>(fwd.mean[i]);
            rstd_f[i] = static_cast<float>(fwd.rstd[i]);
          }
          // dx = rstd (g - mean(g) - x̂ mean(g x̂)), g = dy w (RMSNorm: no mean(g) term).
          std::vector<double> want_dx(rows * dim), want_dw = widen(dw0), want_db = widen(db0);
          for (int64_t i = 0; i < rows; ++i) {
            double sg = 0.0, sgx = 0.0;
            for (int64_t c = 0; c < dim; ++c) {
              const double xhat = (x[i * dim + c] - fwd.mean[i]) * fwd.rstd[i];
              const double g = dy[i * dim + c] * (has_w ? w[c] : 1.0);
              sg += g;
              sgx += g * xhat;
              want_dw[c] += dy[i * dim + c] * xhat;
              want_db[c] += dy[i * dim + c];
            }
            const double mg = ln ? sg / static_cast<double>(dim) : 0.0;
            const double mgx = sgx / static_cast<double>(dim);
            for (int64_t c = 0; c < dim; ++c) {
              const double xhat = (x[i * dim + c] - fwd.mean[i]) * fwd.rstd[i];
              const double g = dy[i * dim + c] * (has_w ? w[c] : 1.0);
              want_dx[i * dim + c] =
                  (accumulate ? dx0[i * dim + c] : 0.0) + fwd.rstd[i] * (g - mg - xhat * mgx);
            }
          }
          DeviceArray<float> d_x(x), d_w(w), d_dy(dy), d_mean(mean_f), d_rstd(rstd_f);
          DeviceArray<float> workspace(norm_backward_workspace_floats(rows, dim));
          std::vector<float> got_dx[2], got_dw[2], got_db[2];
          std::vector<bf16> got_bf16;
          for (int run = 0; run < 2; ++run) {
            DeviceArray<float> dx(rows * dim), dw(dw0), db(db0);
            if (accumulate) dx.upload(dx0);
            DeviceArray<bf16> dx_bf16(rows * dim);
            workspace.poison();
            norm_backward(type, d_dy.get(), d_x.get(), has_w ? d_w.get() : nullptr,
                          ln ? d_mean.get() : nullptr, d_rstd.get(), dx.get(), accumulate,
                          want_bf16 ? dx_bf16.get() : nullptr, with_dw ? dw.get() : nullptr,
                          with_dw ? db.get() : nullptr, rows, dim, workspace.get(), nullptr);
            sync_ok();
            got_dx[run] = dx.download();
            got_dw[run] = dw.download();
            got_db[run] = db.download();
            if (run == 0) got_bf16 = dx_bf16.download();
          }
          const std::string what = std::string(norm_name(type)) + " backward rows " +
                                   std::to_string(rows) + " dim " + std::to_string(dim) +
                                   " variant " + std::to_string(variant);
          expect_close(got_dx[0], want_dx, 1e-4, 1e-4, what + " dx");
          if (want_bf16) expect_close(got_bf16, want_dx, kBf16Rel, 1e-4, what + " dx_bf16");
          if (with_dw) {
            expect_close(got_dw[0], want_dw, 1e-4, 2e-4, what + " dw");
            if (ln) {
              expect_close(got_db[0], want_db, 1e-4, 2e-4, what + " db");
            } else {
              expect_close(got_db[0], widen(db0), 0.0, 0.0, what + " db untouched (RmsNorm)");
            }
            expect_bit_identical(got_dw[0], got_dw[1], what + " dw");
            expect_bit_identical(got_db[0], got_db[1], what + " db");
          }
          expect_bit_identical(got_dx[0], got_dx[1], what + " dx");
        }
      }
    }
  }
}

// ---- activations ------------------------------------------------------------------------------

double gelu_tanh(double h) {
  return 0.5 * h *
         (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (h + 0.044715 * h * h * h)));
}
double relu_squared(double h) { return h > 0.0 ? h * h : 0.0; }
double silu(double g) { return g / (1.0 + std::exp(-g)); }
// Central difference in float64: a derivative that shares nothing with the kernels' formulas.
double derivative(const std::function<double(double)>& f, double x) {
  const double h = 1e-6;
  return (f(x + h) - f(x - h)) / (2.0 * h);
}

const char* act_name(Activation a) {
  switch (a) {
    case Activation::GeluTanh:
      return "GeluTanh";
    case Activation::ReluSquared:
      return "ReluSquared";
    case Activation::SwiGlu:
      return "SwiGlu";
  }
  return "?";
}

TEST_F(CudaTrainKernels, ActivationsForwardAndBackwardMatchTheFormulas) {
  const int64_t rows = 19;
  for (const Activation act : {Activation::GeluTanh, Activation::ReluSquared, Activation::SwiGlu}) {
    for (const int64_t inter : {1, 13, 64, 200}) {
      const bool glu = act == Activation::SwiGlu;
      const int64_t h_cols = glu ? 2 * inter : inter;
      const auto h = rounded(random_normal(rows * h_cols, rng, 2.0f));
      const auto da = random_normal(rows * inter, rng);
      std::vector<double> want_a(rows * inter), want_dh(rows * h_cols);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < inter; ++c) {
          const double d = da[r * inter + c];
          if (glu) {
            const double g = h[r * h_cols + c], u = h[r * h_cols + inter + c];
            want_a[r * inter + c] = silu(g) * u;
            want_dh[r * h_cols + c] = d * u * derivative(silu, g);
            want_dh[r * h_cols + inter + c] = d * silu(g);
          } else {
            const auto f = act == Activation::GeluTanh ? gelu_tanh : relu_squared;
            const double x = h[r * inter + c];
            want_a[r * inter + c] = f(x);
            want_dh[r * inter + c] = d * derivative(f, x);
          }
        }
      }
      DeviceArray<bf16> d_h(to_bf16(h)), a(rows * inter), dh(rows * h_cols);
      DeviceArray<float> d_da(da);
      activation_forward(act, d_h.get(), a.get(), rows, inter, nullptr);
      activation_backward(act, d_h.get(), d_da.get(), dh.get(), rows, inter, nullptr);
      sync_ok();
      const std::string what = std::string(act_name(act)) + " inter " + std::to_string(inter);
      expect_close(a.download(), want_a, kBf16Rel, 1e-5, what + " forward");
      expect_close(dh.download(), want_dh, kBf16Rel, 1e-4, what + " backward");
    }
  }
}

// ---- q/k/v: bias, RoPE, q/k RMSNorm -------------------------------------------------------------

struct QkvCase {
  const char* name;
  QkvShape shape;
  bool bias, qk_norm;
  QkOrder order;
  bool norm_weights, reversed;
};

enum class Part { Q, K, V };

// The float64 forward of one head vector (x0 = qkv + bias), straight from the header's
// description; `w` null = parameter-free norm. Returns the norm's rstd through *rstd.
std::vector<double> head_forward(std::vector<double> y, Part part, int64_t t, const QkvCase& c,
                                 const std::vector<float>& inv_freq, const double* w, double eps,
                                 double* rstd) {
  if (part == Part::V) return y;
  const auto hd = static_cast<int64_t>(y.size());
  const auto norm = [&] {
    double ss = 0.0;
    for (const double v : y) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(hd) + eps);
    for (int64_t d = 0; d < hd; ++d) y[d] *= r * (w != nullptr ? w[d] : 1.0);
    if (rstd != nullptr) *rstd = r;
  };
  const auto rope = [&] {
    const int64_t half = c.shape.rot_dim / 2;
    for (int64_t i = 0; i < half; ++i) {
      // The angle as the model computes it (float32 product), then rotated in float64.
      double angle = static_cast<double>(static_cast<float>(t) * inv_freq[i]);
      if (c.reversed) angle = -angle;
      const double cs = std::cos(angle), sn = std::sin(angle);
      const double x1 = y[i], x2 = y[i + half];
      y[i] = x1 * cs - x2 * sn;
      y[i + half] = x2 * cs + x1 * sn;
    }
  };
  if (c.qk_norm && c.order == QkOrder::NormThenRope) norm();
  rope();
  if (c.qk_norm && c.order == QkOrder::RopeThenNorm) norm();
  return y;
}

struct QkvData {
  std::vector<float> qkv, bias, inv_freq, q_w, k_w;
};

QkvData make_qkv_data(const QkvCase& c, std::mt19937& rng) {
  const QkvShape& s = c.shape;
  const int64_t width = static_cast<int64_t>(s.n_heads + 2 * s.n_kv_heads) * s.head_dim;
  QkvData d;
  d.qkv = rounded(random_normal(static_cast<size_t>(s.batch) * s.seq * width, rng));
  d.bias = random_normal(width, rng, 0.5f);
  for (int i = 0; i < s.rot_dim / 2; ++i) {
    d.inv_freq.push_back(
        static_cast<float>(std::pow(10000.0, -2.0 * i / static_cast<double>(s.rot_dim))));
  }
  if (d.inv_freq.empty()) d.inv_freq.push_back(0.0f);  // keeps the device array non-empty
  d.q_w = random_normal(s.head_dim, rng, 0.3f);
  d.k_w = random_normal(s.head_dim, rng, 0.3f);
  for (auto& v : d.q_w) v += 1.0f;
  for (auto& v : d.k_w) v += 1.0f;
  return d;
}

const std::vector<QkvCase>& qkv_cases() {
  static const std::vector<QkvCase> cases = {
      {"gpt2 bias, no rope",
       {2, 37, 3, 3, 64, 0},
       true,
       false,
       QkOrder::NormThenRope,
       false,
       false},
      {"llama gqa rope", {2, 37, 4, 2, 40, 40}, false, false, QkOrder::NormThenRope, false, false},
      // No RoPE, no norm: the vectorised backward (head_dim 64, 128), and head_dim 40 (not a
      // divisor of the block's lanes × 8: the general kernel).
      {"plain gqa head_dim 128",
       {1, 70, 4, 2, 128, 0},
       false,
       false,
       QkOrder::NormThenRope,
       false,
       false},
      {"plain bias head_dim 40",
       {2, 37, 2, 1, 40, 0},
       true,
       false,
       QkOrder::NormThenRope,
       false,
       false},
      {"qwen3 norm then rope",
       {2, 37, 4, 2, 64, 64},
       false,
       true,
       QkOrder::NormThenRope,
       true,
       false},
      {"nanochat rope then norm, reversed, partial rot",
       {2, 37, 2, 2, 48, 32},
       false,
       true,
       QkOrder::RopeThenNorm,
       false,
       true},
      {"bias + weighted norm then partial rope, gqa 3:1",
       {1, 70, 3, 1, 40, 16},
       true,
       true,
       QkOrder::NormThenRope,
       true,
       false},
      {"head_dim 256, rope then weighted norm, reversed",
       {1, 5, 2, 1, 256, 256},
       true,
       true,
       QkOrder::RopeThenNorm,
       true,
       true},
  };
  return cases;
}

struct QkvIndex {
  Part part;
  int32_t head, heads;
};

QkvIndex qkv_index(const QkvShape& s, int32_t hv) {
  if (hv < s.n_heads) return {Part::Q, hv, s.n_heads};
  if (hv < s.n_heads + s.n_kv_heads) return {Part::K, hv - s.n_heads, s.n_kv_heads};
  return {Part::V, hv - s.n_heads - s.n_kv_heads, s.n_kv_heads};
}

int64_t attn_offset(const QkvShape& s, int64_t b, int64_t t, int32_t heads, int32_t head) {
  return ((b * heads + head) * s.seq + t) * s.head_dim;
}

QkNorm qk_norm_of(const QkvCase& c, const float* q_w, const float* k_w) {
  QkNorm n;
  n.enabled = c.qk_norm;
  n.order = c.order;
  n.q_weight = c.norm_weights ? q_w : nullptr;
  n.k_weight = c.norm_weights ? k_w : nullptr;
  n.eps = 1e-6f;
  return n;
}

TEST_F(CudaTrainKernels, QkvForwardMatchesTheReference) {
  for (const QkvCase& c : qkv_cases()) {
    const QkvShape& s = c.shape;
    const QkvData d = make_qkv_data(c, rng);
    const int32_t hvs = s.n_heads + 2 * s.n_kv_heads;
    const int64_t hd = s.head_dim, width = hvs * hd, tokens = int64_t{s.batch} * s.seq;
    std::vector<double> want_q(tokens * s.n_heads * hd), want_k(tokens * s.n_kv_heads * hd);
    std::vector<double> want_v(want_k.size()), want_qr(tokens * s.n_heads),
        want_kr(tokens * s.n_kv_heads);
    const std::vector<double> qw(d.q_w.begin(), d.q_w.end()), kw(d.k_w.begin(), d.k_w.end());
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t t = 0; t < s.seq; ++t) {
        const int64_t tok = b * s.seq + t;
        for (int32_t hv = 0; hv < hvs; ++hv) {
          const QkvIndex ix = qkv_index(s, hv);
          std::vector<double> x(hd);
          for (int64_t e = 0; e < hd; ++e) {
            x[e] = d.qkv[tok * width + hv * hd + e] + (c.bias ? d.bias[hv * hd + e] : 0.0);
          }
          double r = 0.0;
          const double* w = c.norm_weights ? (ix.part == Part::Q ? qw.data() : kw.data()) : nullptr;
          const auto y = head_forward(x, ix.part, t, c, d.inv_freq, w, 1e-6, &r);
          auto& out = ix.part == Part::Q ? want_q : ix.part == Part::K ? want_k : want_v;
          std::copy(y.begin(), y.end(), out.begin() + attn_offset(s, b, t, ix.heads, ix.head));
          if (ix.part == Part::Q) want_qr[tok * s.n_heads + ix.head] = r;
          if (ix.part == Part::K) want_kr[tok * s.n_kv_heads + ix.head] = r;
        }
      }
    }
    DeviceArray<bf16> d_qkv(to_bf16(d.qkv)), q(want_q.size()), k(want_k.size()), v(want_v.size());
    DeviceArray<float> d_bias(d.bias), d_freq(d.inv_freq), d_qw(d.q_w), d_kw(d.k_w);
    DeviceArray<float> q_rstd(want_qr.size()), k_rstd(want_kr.size());
    qkv_forward(d_qkv.get(), c.bias ? d_bias.get() : nullptr, s,
                qk_norm_of(c, d_qw.get(), d_kw.get()), s.rot_dim > 0 ? d_freq.get() : nullptr,
                c.reversed, q.get(), k.get(), v.get(), q_rstd.get(), k_rstd.get(), nullptr);
    sync_ok();
    const std::string what = std::string("qkv_forward [") + c.name + "]";
    expect_close(q.download(), want_q, kBf16Rel, 1e-4, what + " q");
    expect_close(k.download(), want_k, kBf16Rel, 1e-4, what + " k");
    expect_close(v.download(), want_v, kBf16Rel, 1e-4, what + " v");
    if (c.qk_norm) {
      expect_close(q_rstd.download(), want_qr, 1e-5, 0.0, what + " q_rstd");
      expect_close(k_rstd.download(), want_kr, 1e-5, 0.0, what + " k_rstd");
    }
  }
}

TEST_F(CudaTrainKernels, QkvBackwardMatchesCentralDifferencesAndIsDeterministic) {
  const double h = 1e-6;
  for (const QkvCase& c : qkv_cases()) {
    const QkvShape& s = c.shape;
    const QkvData d = make_qkv_data(c, rng);
    const int32_t hvs = s.n_heads + 2 * s.n_kv_heads;
    const int64_t hd = s.head_dim, width = hvs * hd, tokens = int64_t{s.batch} * s.seq;
    const auto dq = random_normal(tokens * s.n_heads * hd, rng);
    const auto dk = random_normal(tokens * s.n_kv_heads * hd, rng);
    const auto dv = random_normal(tokens * s.n_kv_heads * hd, rng);
    const auto dbias0 = random_normal(width, rng);
    const auto dqw0 = random_normal(hd, rng), dkw0 = random_normal(hd, rng);
    std::vector<float> q_rstd(tokens * s.n_heads, 0.0f), k_rstd(tokens * s.n_kv_heads, 0.0f);
    std::vector<double> want_dx(tokens * width), want_dbias = widen(dbias0);
    std::vector<double> want_dqw = widen(dqw0), want_dkw = widen(dkw0);
    const std::vector<double> qw(d.q_w.begin(), d.q_w.end()), kw(d.k_w.begin(), d.k_w.end());
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t t = 0; t < s.seq; ++t) {
        const int64_t tok = b * s.seq + t;
        for (int32_t hv = 0; hv < hvs; ++hv) {
          const QkvIndex ix = qkv_index(s, hv);
          const auto& grads = ix.part == Part::Q ? dq : ix.part == Part::K ? dk : dv;
          const float* g = grads.data() + attn_offset(s, b, t, ix.heads, ix.head);
          std::vector<double> x(hd);
          for (int64_t e = 0; e < hd; ++e) {
            x[e] = d.qkv[tok * width + hv * hd + e] + (c.bias ? d.bias[hv * hd + e] : 0.0);
          }
          std::vector<double> w(ix.part == Part::Q ? qw : kw);
          const double* wp = c.norm_weights ? w.data() : nullptr;
          double r = 0.0;
          (void)head_forward(x, ix.part, t, c, d.inv_freq, wp, 1e-6, &r);
          if (ix.part == Part::Q) q_rstd[tok * s.n_heads + ix.head] = static_cast<float>(r);
          if (ix.part == Part::K) k_rstd[tok * s.n_kv_heads + ix.head] = static_cast<float>(r);
          // L = Σ g · y: dL/dx and dL/dw by central differences of the float64 forward.
          const auto loss = [&](const std::vector<double>& xx) {
            const auto y = head_forward(xx, ix.part, t, c, d.inv_freq, wp, 1e-6, nullptr);
            double l = 0.0;
            for (int64_t e = 0; e < hd; ++e) l += g[e] * y[e];
            return l;
          };
          for (int64_t e = 0; e < hd; ++e) {
            auto xp = x, xm = x;
            xp[e] += h;
            xm[e] -= h;
            const double dx = (loss(xp) - loss(xm)) / (2.0 * h);
            want_dx[tok * width + hv * hd + e] = dx;
            want_dbias[hv * hd + e] += dx;
          }
          if (c.qk_norm && c.norm_weights && ix.part != Part::V) {
            auto& want_dw = ix.part == Part::Q ? want_dqw : want_dkw;
            for (int64_t e = 0; e < hd; ++e) {
              const double keep = w[e];
              w[e] = keep + h;
              const double lp = loss(x);
              w[e] = keep - h;
              const double lm = loss(x);
              w[e] = keep;
              want_dw[e] += (lp - lm) / (2.0 * h);
            }
          }
        }
      }
    }
    DeviceArray<bf16> d_qkv(to_bf16(d.qkv));
    DeviceArray<float> d_bias(d.bias), d_freq(d.inv_freq), d_qw(d.q_w), d_kw(d.k_w);
    DeviceArray<float> d_dq(dq), d_dk(dk), d_dv(dv), d_qr(q_rstd), d_kr(k_rstd);
    DeviceArray<float> workspace(qkv_backward_workspace_floats(s));
    const bool want_w = c.qk_norm && c.norm_weights;
    std::vector<bf16> got_dx[2];
    std::vector<float> got_db[2], got_dqw[2], got_dkw[2];
    for (int run = 0; run < 2; ++run) {
      DeviceArray<bf16> dqkv(tokens * width);
      DeviceArray<float> dbias(dbias0), dqw(dqw0), dkw(dkw0);
      workspace.poison();
      qkv_backward(d_dq.get(), d_dk.get(), d_dv.get(), d_qkv.get(), c.bias ? d_bias.get() : nullptr,
                   s, qk_norm_of(c, d_qw.get(), d_kw.get()), s.rot_dim > 0 ? d_freq.get() : nullptr,
                   c.reversed, d_qr.get(), d_kr.get(), dqkv.get(), want_w ? dqw.get() : nullptr,
                   want_w ? dkw.get() : nullptr, c.bias ? dbias.get() : nullptr, workspace.get(),
                   nullptr);
      sync_ok();
      got_dx[run] = dqkv.download();
      got_db[run] = dbias.download();
      got_dqw[run] = dqw.download();
      got_dkw[run] = dkw.download();
    }
    const std::string what = std::string("qkv_backward [") + c.name + "]";
    expect_close(got_dx[0], want_dx, kBf16Rel, 1e-4, what + " dqkv");
    expect_bit_identical(got_dx[0], got_dx[1], what + " dqkv");
    if (c.bias) {
      expect_close(got_db[0], want_dbias, 1e-4, 1e-3, what + " dbias");
      expect_bit_identical(got_db[0], got_db[1], what + " dbias");
    } else {
      expect_close(got_db[0], widen(dbias0), 0.0, 0.0, what + " dbias untouched");
    }
    if (want_w) {
      expect_close(got_dqw[0], want_dqw, 1e-4, 1e-3, what + " dq_weight");
      expect_close(got_dkw[0], want_dkw, 1e-4, 1e-3, what + " dk_weight");
      expect_bit_identical(got_dqw[0], got_dqw[1], what + " dq_weight");
      expect_bit_identical(got_dkw[0], got_dkw[1], what + " dk_weight");
    }
  }
}

// ---- cross-entropy ----------------------------------------------------------------------------

TEST_F(CudaTrainKernels, CrossEntropyLossAndInPlaceGradient) {
  // 1000, 50304: the row staged in shared memory; 60000: too wide for it (read twice).
  for (const int64_t vocab : {1, 77, 1000, 50304, 60000}) {
    for (const float softcap : {0.0f, 15.0f}) {
      const int64_t rows = 9;
      auto x = rounded(random_normal(rows * vocab, rng, 3.0f));
      x[2 * vocab + vocab / 2] = 40.0f;  // one dominant logit (soft-cap matters there)
      std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
      std::vector<int32_t> targets(rows);
      std::vector<float> scale(rows);
      for (int64_t r = 0; r < rows; ++r) {
        targets[r] = pick(rng);
        scale[r] = 0.1f + 0.05f * static_cast<float>(r);
      }
      targets[3] = -1, scale[3] = 0.0f;  // an ignored row
      targets[5] = static_cast<int32_t>(vocab - 1);
      scale[6] = 0.0f;  // a counted target with weight 0 (e.g. masked by the loss weights)
      std::vector<double> want_loss(rows), want_grad(rows * vocab);
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<double> z(vocab);
        double m = -INFINITY;
        for (int64_t i = 0; i < vocab; ++i) {
          const double xi = x[r * vocab + i];
          z[i] = softcap > 0.0f ? softcap * std::tanh(xi / softcap) : xi;
          m = std::max(m, z[i]);
        }
        double sum = 0.0;
        for (int64_t i = 0; i < vocab; ++i) sum += std::exp(z[i] - m);
        const double lse = m + std::log(sum);
        want_loss[r] = targets[r] >= 0 ? lse - z[targets[r]] : 0.0;
        for (int64_t i = 0; i < vocab; ++i) {
          const double p = std::exp(z[i] - lse) - (i == targets[r] ? 1.0 : 0.0);
          const double th = softcap > 0.0f ? std::tanh(x[r * vocab + i] / softcap) : 0.0;
          const double dzdx = softcap > 0.0f ? 1.0 - th * th : 1.0;
          want_grad[r * vocab + i] = scale[r] * p * dzdx;
        }
      }
      DeviceArray<int32_t> d_targets(targets);
      DeviceArray<float> d_scale(scale);
      const std::string what =
          "cross_entropy vocab " + std::to_string(vocab) + " softcap " + std::to_string(softcap);
      {  // loss only: the logits stay as they were
        DeviceArray<bf16> logits(to_bf16(x));
        DeviceArray<float> loss(rows);
        cross_entropy(logits.get(), d_targets.get(), d_scale.get(), softcap, loss.get(), rows,
                      vocab, false, nullptr);
        sync_ok();
        expect_close(loss.download(), want_loss, 1e-5, 2e-5, what + " loss (no grad)");
        expect_close(logits.download(), widen(x), 0.0, 0.0, what + " logits untouched");
      }
      std::vector<float> losses[2];
      std::vector<bf16> grads[2];
      for (int run = 0; run < 2; ++run) {
        DeviceArray<bf16> logits(to_bf16(x));
        DeviceArray<float> loss(rows);
        cross_entropy(logits.get(), d_targets.get(), d_scale.get(), softcap, loss.get(), rows,
                      vocab, true, nullptr);
        sync_ok();
        losses[run] = loss.download();
        grads[run] = logits.download();
      }
      expect_close(losses[0], want_loss, 1e-5, 2e-5, what + " loss");
      expect_close(grads[0], want_grad, kBf16Rel, 1e-8, what + " gradient");
      expect_bit_identical(losses[0], losses[1], what + " loss");
      expect_bit_identical(grads[0], grads[1], what + " gradient");
    }
  }
}

// ---- reductions -------------------------------------------------------------------------------

TEST_F(CudaTrainKernels, ColumnSumAddsEveryRowDeterministically) {
  for (const int64_t rows : {1, 37, 300}) {
    for (const int64_t cols : {1, 13, 40, 768}) {
      const auto xf = random_normal(rows * cols, rng);
      const auto xb = rounded(xf);
      const auto out0 = random_normal(cols, rng);
      std::vector<double> want_f = widen(out0), want_b = widen(out0);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          want_f[c] += xf[r * cols + c];
          want_b[c] += xb[r * cols + c];
        }
      }
      DeviceArray<float> d_xf(xf), workspace(column_sum_workspace_floats(rows, cols));
      DeviceArray<bf16> d_xb(to_bf16(xb));
      const std::string what = "column_sum " + std::to_string(rows) + " x " + std::to_string(cols);
      std::vector<float> got_f[2], got_b[2];
      for (int run = 0; run < 2; ++run) {
        DeviceArray<float> out_f(out0), out_b(out0);
        workspace.poison();
        column_sum(d_xf.get(), out_f.get(), rows, cols, workspace.get(), nullptr);
        sync_ok();
        workspace.poison();
        column_sum(d_xb.get(), out_b.get(), rows, cols, workspace.get(), nullptr);
        sync_ok();
        got_f[run] = out_f.download();
        got_b[run] = out_b.download();
      }
      expect_close(got_f[0], want_f, 1e-5, 1e-4, what + " float32");
      expect_close(got_b[0], want_b, 1e-5, 1e-4, what + " bf16");
      expect_bit_identical(got_f[0], got_f[1], what + " float32");
      expect_bit_identical(got_b[0], got_b[1], what + " bf16");
    }
  }
}

// The GPU draws the mask the CPU engine draws (the shared header evaluated on the host here),
// bit for bit: kept elements are exactly x · scale (+ residual), dropped ones exactly 0 (+
// residual), at an index offset as a later micro-batch has; in place and with the BF16 copy.
TEST_F(CudaTrainKernels, DropoutDrawsTheCpuMaskBitForBit) {
  const int64_t n = (int64_t{1} << 20) + 13;
  const float p = 0.2f;
  DropoutSite site;
  site.key = kiln::train::dropout_site_key(1337, 42, kiln::train::dropout_site_mlp(3));
  site.index0 = 5 * 256 * 256;
  site.threshold = kiln::train::dropout_threshold(p);
  site.scale = kiln::train::dropout_scale<float>(p);
  ASSERT_EQ(site.scale, 1.0f / (1.0f - p));
  const auto x = random_normal(n, rng);
  const auto res = random_normal(n, rng);
  std::vector<float> want_plain(n), want_res(n);
  int64_t dropped = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = kiln::train::dropout_bits(site.key, site.index0 + static_cast<uint64_t>(i)) >=
                      site.threshold;
    dropped += !keep;
    const float v = keep ? x[i] * site.scale : 0.0f;
    want_plain[i] = v;
    want_res[i] = res[i] + v;
  }
  const double sd = std::sqrt(double(p) * (1 - p) / double(n));
  EXPECT_NEAR(double(dropped) / double(n), p, 5 * sd) << "dropped fraction";
  std::printf("dropout: %lld of %lld dropped (%.5f, p = %.2f)\n", static_cast<long long>(dropped),
              static_cast<long long>(n), double(dropped) / double(n), double(p));

  DeviceArray<float> d_x(x), d_res(res), out(n);
  DeviceArray<bf16> out_b(n);
  out.poison();
  dropout_apply(site, d_x.get(), nullptr, out.get(), nullptr, n, nullptr);
  sync_ok();
  expect_bit_identical(out.download(), want_plain, "dropout (no residual)");
  dropout_apply(site, d_x.get(), d_res.get(), out.get(), out_b.get(), n, nullptr);
  sync_ok();
  expect_bit_identical(out.download(), want_res, "dropout + residual");
  const auto got_b = out_b.download();
  for (int64_t i = 0; i < n; ++i) {
    const __nv_bfloat16_raw raw = got_b[i];
    ASSERT_EQ(raw.x, test::to_bf16_bits(want_res[i])) << "bf16 copy [" << i << "]";
  }
  dropout_apply(site, d_x.get(), nullptr, d_x.get(), nullptr, n, nullptr);  // in place
  sync_ok();
  expect_bit_identical(d_x.download(), want_plain, "dropout in place");
}

TEST_F(CudaTrainKernels, ToBf16RoundsToNearestEven) {
  const int64_t n = 1003;
  auto src = random_normal(n + 1, rng, 100.0f);
  src[5] = 1.0f + 1.0f / 256.0f;         // a tie: rounds to even (1.0)
  src[6] = 1.0f + 3.0f / 256.0f;         // a tie: rounds to even (1 + 4/256)
  for (const int64_t offset : {0, 1}) {  // aligned (vectorised) and misaligned (scalar) paths
    DeviceArray<float> d_src(src);
    DeviceArray<bf16> dst(n + 1);
    train::to_bf16(d_src.get() + offset, dst.get() + offset, n, nullptr);
    sync_ok();
    const auto got = dst.download();
    for (int64_t i = 0; i < n; ++i) {
      const __nv_bfloat16_raw raw = got[offset + i];
      ASSERT_EQ(raw.x, test::to_bf16_bits(src[offset + i]))
          << "to_bf16 offset " << offset << " [" << i << "] of " << src[offset + i];
    }
  }
}

TEST_F(CudaTrainKernels, SumSquaresAccumulatesInDoubleDeterministically) {
  for (const int64_t n : {1, 7, 1000, 1000003}) {
    for (const int64_t offset : {0, 1}) {
      const auto x = random_normal(n + 1, rng);
      long double exact = 0.0L;  // 64-bit mantissa on x86: the reference's own error is negligible
      for (int64_t i = 0; i < n; ++i) {
        exact += static_cast<long double>(x[offset + i]) * static_cast<long double>(x[offset + i]);
      }
      const auto want = static_cast<double>(exact);
      DeviceArray<float> d_x(x);
      DeviceArray<double> workspace(sum_squares_workspace_doubles(n)), result(1);
      double got[2];
      for (double& g : got) {
        workspace.poison();
        result.poison();
        sum_squares(d_x.get() + offset, n, workspace.get(), result.get(), nullptr);
        sync_ok();
        g = result.download()[0];
      }
      EXPECT_NEAR(got[0], want, 1e-11 * want) << "sum_squares n " << n << " offset " << offset;
      EXPECT_EQ(std::memcmp(&got[0], &got[1], sizeof(double)), 0)
          << "sum_squares n " << n << ": two runs differ";
    }
  }
}

// ---- AdamW ------------------------------------------------------------------------------------

TEST_F(CudaTrainKernels, AdamWFollowsTorchOverSeveralSteps) {
  const double lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  const float clip = 0.5f;
  for (const int64_t n : {1, 1003}) {
    for (const int64_t offset : {0, 1}) {
      for (const bool with_bf16 : {true, false}) {
        const auto p0 = random_normal(n + 1, rng);
        std::vector<double> p = widen(p0), m(n + 1, 0.0), v(n + 1, 0.0);
        DeviceArray<float> d_p(p0), d_m(std::vector<float>(n + 1, 0.0f)),
            d_v(std::vector<float>(n + 1, 0.0f)), d_g(n + 1), d_scale(std::vector<float>{clip});
        DeviceArray<bf16> d_pb(n + 1);
        for (int t = 1; t <= 3; ++t) {
          const auto g = random_normal(n + 1, rng, 0.3f);
          d_g.upload(g);
          AdamWStep step{};
          step.lr = static_cast<float>(lr);
          step.beta1 = static_cast<float>(b1);
          step.beta2 = static_cast<float>(b2);
          step.eps = static_cast<float>(eps);
          step.weight_decay = static_cast<float>(wd);
          step.bias1 = static_cast<float>(1.0 - std::pow(b1, t));
          step.bias2 = static_cast<float>(1.0 - std::pow(b2, t));
          adamw_update(d_p.get() + offset, with_bf16 ? d_pb.get() + offset : nullptr,
                       d_g.get() + offset, d_m.get() + offset, d_v.get() + offset, n, step,
                       d_scale.get(), nullptr);
          sync_ok();
          // torch.optim.AdamW (decoupled decay), float64, with the β and lr the kernel was given.
          const double fb1 = step.beta1, fb2 = step.beta2, flr = step.lr;
          for (int64_t i = offset; i < offset + n; ++i) {
            const double gi = static_cast<double>(g[i]) * clip;
            p[i] *= 1.0 - flr * static_cast<double>(step.weight_decay);
            m[i] = fb1 * m[i] + (1.0 - fb1) * gi;
            v[i] = fb2 * v[i] + (1.0 - fb2) * gi * gi;
            const double denom = std::sqrt(v[i] / (1.0 - std::pow(fb2, t))) + eps;
            p[i] -= flr * (m[i] / (1.0 - std::pow(fb1, t))) / denom;
          }
        }
        const std::string what = "adamw n " + std::to_string(n) + " offset " +
                                 std::to_string(offset) + (with_bf16 ? " +bf16" : "");
        auto got_p = d_p.download(), got_m = d_m.download(), got_v = d_v.download();
        const auto got_pb = from_bf16(d_pb.download());
        std::vector<float> sp(got_p.begin() + offset, got_p.begin() + offset + n);
        std::vector<float> sm(got_m.begin() + offset, got_m.begin() + offset + n);
        std::vector<float> sv(got_v.begin() + offset, got_v.begin() + offset + n);
        expect_close(sp, {p.begin() + offset, p.begin() + offset + n}, 1e-5, 1e-6, what + " p");
        expect_close(sm, {m.begin() + offset, m.begin() + offset + n}, 1e-4, 1e-7, what + " m");
        expect_close(sv, {v.begin() + offset, v.begin() + offset + n}, 1e-4, 1e-9, what + " v");
        if (offset == 1) {
          EXPECT_EQ(got_p[0], p0[0]) << what << ": element before the range written";
        }
        if (with_bf16) {
          for (int64_t i = offset; i < offset + n; ++i) {
            ASSERT_EQ(got_pb[i], round_to_bf16(got_p[i])) << what << " p_bf16 [" << i << "]";
          }
        }
      }
    }
  }
}

// ---- multi-tensor AdamW -----------------------------------------------------------------------
// Segments laid out in one flat buffer the way the trainer's are, but with every awkwardness the
// trainer avoids: element offsets not a multiple of 4 (scalar path), moments indexed from a
// different offset than the values (ZeRO-1 slices), BF16 copies absent, misaligned or aligned,
// sizes around the chunk size, and one lr / weight decay per segment.
struct MultiAdamWCase {
  std::vector<AdamWSegment> segs;  // p_bf16 holds an element offset into the BF16 buffer here
  int64_t n_values = 0, n_state = 0, n_bf16 = 0;
  std::vector<AdamWStep> steps;  // per segment (group == segment index); bias1/2 set per t
};

MultiAdamWCase multi_adamw_case() {
  struct Shape {
    int64_t numel;
    int64_t skew;   // extra elements before the segment: != 0 mod 4 misaligns it
    int64_t state;  // extra skew of the moments relative to the values
    int bf16;       // 0: none, 1: aligned copy, 2: copy one element off (2-byte aligned)
  };
  const Shape shapes[] = {{1, 0, 0, 1},    {3, 1, 0, 1},     {5, 0, 1, 0},    {1000, 4, 0, 1},
                          {4097, 0, 0, 2}, {8192, 0, 0, 1},  {8193, 2, 2, 1}, {20000, 0, 4, 0},
                          {7, 3, 0, 2},    {16389, 0, 0, 1}, {2, 0, 3, 1},    {12, 0, 0, 0}};
  MultiAdamWCase c;
  int32_t group = 0;
  for (const Shape& s : shapes) {
    AdamWSegment seg;
    seg.offset = c.n_values + s.skew;
    seg.state_offset = c.n_state + s.skew + s.state;
    seg.numel = s.numel;
    seg.group = group++;
    if (s.bf16 != 0) {
      const int64_t at = (c.n_bf16 + 7) / 8 * 8 + (s.bf16 == 2 ? 1 : 0);
      seg.p_bf16 = reinterpret_cast<bf16*>(static_cast<uintptr_t>(at));
      c.n_bf16 = at + s.numel + 5;
    }
    c.n_values = seg.offset + s.numel + 3;  // gaps that must stay untouched
    c.n_state = seg.state_offset + s.numel + 2;
    c.segs.push_back(seg);
    AdamWStep st{};
    st.lr = 1e-3f * static_cast<float>(group);
    st.beta1 = 0.9f, st.beta2 = 0.95f, st.eps = 1e-8f;
    st.weight_decay = (group % 3 == 0) ? 0.0f : 0.05f * static_cast<float>(group);
    c.steps.push_back(st);
  }
  return c;
}

// The case's segments with p_bf16 turned into pointers into `base` (null stays null).
std::vector<AdamWSegment> bind_bf16(std::vector<AdamWSegment> segs, const MultiAdamWCase& c,
                                    bf16* base) {
  for (size_t i = 0; i < segs.size(); ++i) {
    const bool has = c.segs[i].p_bf16 != nullptr;
    segs[i].p_bf16 = has ? base + reinterpret_cast<uintptr_t>(c.segs[i].p_bf16) : nullptr;
  }
  return segs;
}

void set_bias(std::vector<AdamWStep>& steps, int t) {
  for (AdamWStep& st : steps) {
    st.bias1 = static_cast<float>(1.0 - std::pow(static_cast<double>(st.beta1), t));
    st.bias2 = static_cast<float>(1.0 - std::pow(static_cast<double>(st.beta2), t));
  }
}

TEST(AdamWChunks, SplitEachSegmentAtTheChunkSize) {
  // Host-only: runs in a CUDA build without a device too.
  std::vector<AdamWSegment> segs(3);
  segs[0].offset = 5, segs[0].state_offset = 1, segs[0].numel = 2 * kAdamWChunkElems + 3;
  segs[0].group = 2;
  segs[0].p_bf16 = reinterpret_cast<bf16*>(uintptr_t{64});
  segs[1].offset = 100000, segs[1].numel = 0;  // empty: no chunk
  segs[2].offset = 200000, segs[2].state_offset = 7, segs[2].numel = 1;
  const std::vector<AdamWChunk> chunks = adamw_chunks(segs);
  ASSERT_EQ(chunks.size(), 4u);
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(chunks[k].offset, 5 + k * kAdamWChunkElems);
    EXPECT_EQ(chunks[k].state_offset, 1 + k * kAdamWChunkElems);
    EXPECT_EQ(chunks[k].numel, k < 2 ? kAdamWChunkElems : 3);
    EXPECT_EQ(chunks[k].group, 2);
    EXPECT_EQ(chunks[k].p_bf16, segs[0].p_bf16 + k * kAdamWChunkElems);
  }
  EXPECT_EQ(chunks[3].offset, 200000);
  EXPECT_EQ(chunks[3].state_offset, 7);
  EXPECT_EQ(chunks[3].numel, 1);
  EXPECT_EQ(chunks[3].p_bf16, nullptr);
  segs[2].group = kAdamWMaxGroups;
  EXPECT_THROW(adamw_chunks(segs), kiln::Error);
  segs[2].group = -1;
  EXPECT_THROW(adamw_chunks(segs), kiln::Error);
}

// The one launch against the per-tensor adamw_update on a copy of the same state: p, m, v and the
// BF16 copies (gaps included) must match bit for bit over several steps.
TEST_F(CudaTrainKernels, AdamWMultiIsBitIdenticalToPerTensor) {
  MultiAdamWCase c = multi_adamw_case();
  const auto p0 = random_normal(c.n_values, rng);
  const auto m0 = random_normal(c.n_state, rng, 0.01f);
  auto v0 = random_normal(c.n_state, rng, 1e-3f);
  for (auto& x : v0) x = std::abs(x);
  DeviceArray<float> p_a(p0), p_b(p0), m_a(m0), m_b(m0), v_a(v0), v_b(v0), g(c.n_values);
  DeviceArray<float> d_scale(std::vector<float>{0.37f});
  DeviceArray<bf16> pb_a(c.n_bf16), pb_b(c.n_bf16);  // both poisoned alike
  const auto segs_a = bind_bf16(c.segs, c, pb_a.get());
  const auto segs_b = bind_bf16(c.segs, c, pb_b.get());
  const std::vector<AdamWChunk> chunks = adamw_chunks(segs_a);
  DeviceArray<AdamWChunk> d_chunks(chunks);
  for (int t = 1; t <= 3; ++t) {
    g.upload(random_normal(c.n_values, rng, 0.3f));
    set_bias(c.steps, t);
    // Clip scale read from the device, then none (null), as the trainer may pass either.
    const float* scale = t == 2 ? nullptr : d_scale.get();
    adamw_update_multi(p_a.get(), g.get(), m_a.get(), v_a.get(), d_chunks.get(),
                       static_cast<int64_t>(chunks.size()), c.steps.data(),
                       static_cast<int>(c.steps.size()), scale, nullptr);
    for (size_t i = 0; i < segs_b.size(); ++i) {
      const AdamWSegment& s = segs_b[i];
      adamw_update(p_b.get() + s.offset, s.p_bf16, g.get() + s.offset, m_b.get() + s.state_offset,
                   v_b.get() + s.state_offset, s.numel, c.steps[i], scale, nullptr);
    }
    sync_ok();
  }
  const auto got_p = p_a.download();
  expect_bit_identical(got_p, p_b.download(), "adamw_update_multi p");
  expect_bit_identical(m_a.download(), m_b.download(), "adamw_update_multi m");
  expect_bit_identical(v_a.download(), v_b.download(), "adamw_update_multi v");
  const auto got_pb = pb_a.download(), want_pb = pb_b.download();
  ASSERT_EQ(got_pb.size(), want_pb.size());
  EXPECT_EQ(std::memcmp(got_pb.data(), want_pb.data(), got_pb.size() * sizeof(bf16)), 0)
      << "adamw_update_multi BF16 copies differ from adamw_update's";
  // Something moved (the comparison is not of two untouched buffers).
  EXPECT_NE(std::memcmp(got_p.data(), p0.data(), p0.size() * sizeof(float)), 0);
}

// The one launch against torch.optim.AdamW's formula in float64, per segment with its own lr and
// weight decay; the gaps between segments (values and moments) must stay as they were.
TEST_F(CudaTrainKernels, AdamWMultiFollowsTorchPerSegment) {
  MultiAdamWCase c = multi_adamw_case();
  const float clip = 0.5f;
  const auto p0 = random_normal(c.n_values, rng);
  const std::vector<float> zeros(c.n_state, 0.0f);
  DeviceArray<float> d_p(p0), d_m(zeros), d_v(zeros), d_g(c.n_values);
  DeviceArray<float> d_scale(std::vector<float>{clip});
  DeviceArray<bf16> d_pb(c.n_bf16);
  const auto segs = bind_bf16(c.segs, c, d_pb.get());
  const std::vector<AdamWChunk> chunks = adamw_chunks(segs);
  DeviceArray<AdamWChunk> d_chunks(chunks);
  std::vector<double> p = widen(p0), m(c.n_state, 0.0), v(c.n_state, 0.0);
  for (int t = 1; t <= 3; ++t) {
    const auto g = random_normal(c.n_values, rng, 0.3f);
    d_g.upload(g);
    set_bias(c.steps, t);
    adamw_update_multi(d_p.get(), d_g.get(), d_m.get(), d_v.get(), d_chunks.get(),
                       static_cast<int64_t>(chunks.size()), c.steps.data(),
                       static_cast<int>(c.steps.size()), d_scale.get(), nullptr);
    sync_ok();
    for (size_t k = 0; k < segs.size(); ++k) {
      const AdamWSegment& s = segs[k];
      const AdamWStep& st = c.steps[k];
      const double b1 = st.beta1, b2 = st.beta2, lr = st.lr, wd = st.weight_decay;
      for (int64_t e = 0; e < s.numel; ++e) {
        const int64_t i = s.offset + e, j = s.state_offset + e;
        const double gi = static_cast<double>(g[i]) * clip;
        p[i] *= 1.0 - lr * wd;
        m[j] = b1 * m[j] + (1.0 - b1) * gi;
        v[j] = b2 * v[j] + (1.0 - b2) * gi * gi;
        const double denom = std::sqrt(v[j] / (1.0 - std::pow(b2, t))) + st.eps;
        p[i] -= lr * (m[j] / (1.0 - std::pow(b1, t))) / denom;
      }
    }
  }
  // The gaps: p keeps its initial values, m and v their zeros (want == initial there).
  expect_close(d_p.download(), p, 1e-5, 1e-6, "adamw_update_multi p");
  expect_close(d_m.download(), m, 1e-4, 1e-7, "adamw_update_multi m");
  expect_close(d_v.download(), v, 1e-4, 1e-9, "adamw_update_multi v");
  const auto got_p = d_p.download();
  const auto got_pb = from_bf16(d_pb.download());
  for (const AdamWSegment& s : segs) {
    if (s.p_bf16 == nullptr) continue;
    const int64_t at = s.p_bf16 - d_pb.get();
    for (int64_t e = 0; e < s.numel; ++e) {
      ASSERT_EQ(got_pb[at + e], round_to_bf16(got_p[s.offset + e]))
          << "adamw_update_multi p_bf16 of the segment at " << s.offset << " [" << e << "]";
    }
  }
}

TEST_F(CudaTrainKernels, ClipScaleIsTorchClipGradNorm) {
  struct Case {
    double sum_squares;
    float max_norm;
    double want_scale;
  };
  const Case cases[] = {{16.0, 1.0f, 1.0 / (4.0 + 1e-6)},
                        {16.0, 10.0f, 1.0},
                        {16.0, 0.0f, 1.0},
                        {16.0, 4.0f, 1.0},
                        {0.0, 1.0f, 1.0}};
  for (const Case& c : cases) {
    DeviceArray<double> ss(std::vector<double>{c.sum_squares}), norm(1);
    DeviceArray<float> scale(1);
    clip_scale(ss.get(), c.max_norm, scale.get(), norm.get(), nullptr);
    sync_ok();
    EXPECT_DOUBLE_EQ(norm.download()[0], std::sqrt(c.sum_squares));
    EXPECT_NEAR(scale.download()[0], c.want_scale, 1e-7 * c.want_scale)
        << "sum_squares " << c.sum_squares << " max_norm " << c.max_norm;
  }
}

// ---- cuBLASLt training epilogues (src/backend/cuda/train/lt_gemm.hpp) -------------------------
// Products of BF16 inputs are exact in float64, so each reference is the formula on the same
// BF16 values; derivatives by central differences of the float64 GELU-tanh.

double gelu_erf(double h) { return 0.5 * h * (1.0 + std::erf(h / std::numbers::sqrt2)); }

class CudaTrainEpilogues : public CudaTrainKernels {
 protected:
  void SetUp() override {
    CudaTrainKernels::SetUp();
    if (IsSkipped()) return;
    gemm_ = std::make_unique<LtGemm>(DeviceAllocator::create(0, 0, "test GPU"), size_t{32} << 20);
  }
  std::unique_ptr<LtGemm> gemm_;
};

// Row-major float64 product of [m × k] (or its transpose, stored [k × m]) by [k × n].
std::vector<double> product(const std::vector<float>& a, bool trans_a, const std::vector<float>& b,
                            int64_t m, int64_t n, int64_t k) {
  std::vector<double> d(m * n, 0.0);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      const double av = trans_a ? a[j * m + r] : a[r * k + j];
      for (int64_t c = 0; c < n; ++c) d[r * n + c] += av * static_cast<double>(b[j * n + c]);
    }
  }
  return d;
}

// The forward of a GELU MLP's up projection: D = gelu_tanh(x · Wᵀ + bias), aux = the
// pre-activation; rows that are not a multiple of 64, with and without a bias, twice (bitwise).
TEST_F(CudaTrainEpilogues, GeluAuxBiasMatchesFloat64GeluTanh) {
  for (const int64_t m : {67, 130}) {
    for (const bool with_bias : {true, false}) {
      const int64_t n = 200, k = 40;  // n: the aux ld, a multiple of 8
      const auto x = rounded(random_normal(m * k, rng));
      const auto w = rounded(random_normal(n * k, rng, 0.3f));  // [n × k]: used transposed
      const auto bias = rounded(random_normal(n, rng));
      std::vector<float> wt(k * n);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < k; ++j) wt[j * n + i] = w[i * k + j];
      }
      auto pre = product(x, false, wt, m, n, k);
      std::vector<double> want(m * n);
      for (int64_t i = 0; i < m * n; ++i) {
        if (with_bias) pre[i] += bias[i % n];
        want[i] = gelu_tanh(pre[i]);
      }
      DeviceArray<bf16> d_x(to_bf16(x)), d_w(to_bf16(w)), d_bias(to_bf16(bias));
      std::vector<bf16> got[2], got_aux;
      for (int run = 0; run < 2; ++run) {
        DeviceArray<bf16> d(m * n), aux(m * n);
        RowGemm g;
        g.trans_b = true;
        g.m = m, g.n = n, g.k = k;
        g.a = d_x.get(), g.lda = k, g.b = d_w.get(), g.ldb = k;
        g.d = d.get(), g.ldd = n, g.out = OutType::BF16;
        g.bias = with_bias ? d_bias.get() : nullptr;
        g.epilogue = Epilogue::kGeluAux, g.aux = aux.get(), g.ld_aux = n;
        ASSERT_TRUE(gemm_->supported(g)) << "cuBLASLt has no GELU_AUX epilogue for BF16";
        gemm_->run(g, nullptr);
        sync_ok();
        got[run] = d.download();
        if (run == 0) got_aux = aux.download();
      }
      const std::string what =
          "GELU_AUX" + std::string(with_bias ? "_BIAS" : "") + " m " + std::to_string(m);
      // 1e-3: room for an approximate tanh in the epilogue (≤ 2^-11 relative on tanh).
      expect_close(got[0], want, kBf16Rel, 1e-3, what + " D");
      expect_close(got_aux, pre, kBf16Rel, 1e-4, what + " aux (pre-activation)");
      expect_bit_identical(got[0], got[1], what + " D");
    }
  }
}

// cuBLASLt documents its GELU as the tanh approximation; float32 output tells it apart from the
// erf form (they differ by up to ~5e-4 near |h| = 2, far above float32 rounding).
TEST_F(CudaTrainEpilogues, GeluEpilogueIsTheTanhForm) {
  const int64_t m = 96, n = 8, k = 8;
  // x · B with B's first row 1 and the rest 0: the pre-activations are x's first column, exact.
  std::vector<float> x(m * k, 0.0f), b(k * n, 0.0f);
  for (int64_t r = 0; r < m; ++r) x[r * k] = round_to_bf16(-4.0f + 8.0f * r / (m - 1));
  for (int64_t c = 0; c < n; ++c) b[c] = 1.0f;
  std::vector<double> want(m * n), erf_form(m * n), pre(m * n);
  double max_gap = 0.0;
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      pre[r * n + c] = x[r * k];
      want[r * n + c] = gelu_tanh(x[r * k]);
      max_gap = std::max(max_gap, std::abs(want[r * n + c] - gelu_erf(x[r * k])));
    }
  }
  ASSERT_GT(max_gap, 3e-4) << "the sample points do not separate the two GELU forms";
  DeviceArray<bf16> d_x(to_bf16(x)), d_b(to_bf16(b));
  DeviceArray<float> d(m * n), aux(m * n);
  RowGemm g;
  g.m = m, g.n = n, g.k = k;
  g.a = d_x.get(), g.lda = k, g.b = d_b.get(), g.ldb = n;
  g.d = d.get(), g.ldd = n, g.out = OutType::F32;
  g.epilogue = Epilogue::kGeluAux, g.aux = aux.get(), g.ld_aux = n;
  ASSERT_TRUE(gemm_->supported(g)) << "cuBLASLt has no float32 GELU_AUX epilogue";
  gemm_->run(g, nullptr);
  sync_ok();
  // The epilogue may evaluate tanh approximately (tanh.approx: ≤ 2^-11 relative, so up to
  // ~1e-3 on GELU at |h| = 4): within that of the tanh form, and closer to it than to the erf
  // form over the points (an erf GELU would sit at the gap from the tanh form everywhere).
  const auto got = d.download();
  expect_close(got, want, 0.0, 1.2e-3, "float32 GELU epilogue vs float64 GELU-tanh");
  expect_close(aux.download(), pre, 0.0, 0.0, "float32 GELU aux");
  double off_tanh = 0.0, off_erf = 0.0;
  for (int64_t i = 0; i < m * n; ++i) {
    off_tanh += std::abs(got[i] - want[i]);
    off_erf += std::abs(got[i] - gelu_erf(pre[i]));
  }
  EXPECT_LT(off_tanh, off_erf) << "the epilogue's GELU is not (clearly) the tanh form";
  std::printf("  GELU epilogue: Σ|err| vs tanh form %.3g, vs erf form %.3g (max gap %.3g)\n",
              off_tanh, off_erf, max_gap);
}

// The backward of the same MLP: dH = (dY · W_down) ⊙ gelu_tanh'(aux), and the up projection's
// bias gradient Σ_rows dH in float32 where cuBLASLt offers it (the engine's other path sums dH
// itself, covered by cuda_train_test).
TEST_F(CudaTrainEpilogues, DGeluBiasGradMatchesFloat64) {
  for (const int64_t m : {67, 130}) {
    const int64_t n = 200, k = 40;  // m tokens, n = inter (aux ld), k = hidden
    const auto dy = rounded(random_normal(m * k, rng));
    const auto w = rounded(random_normal(k * n, rng, 0.3f));  // W_down [hidden × inter]
    const auto h = rounded(random_normal(m * n, rng, 2.0f));  // the pre-activation
    const auto prod = product(dy, false, w, m, n, k);
    std::vector<double> want(m * n), want_db(n, 0.0), db_abs(n, 0.0), prod_abs(n, 0.0);
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t c = 0; c < n; ++c) {
        const double v = prod[r * n + c] * derivative(gelu_tanh, h[r * n + c]);
        want[r * n + c] = v;
        want_db[c] += v;
        db_abs[c] += std::abs(v);
        prod_abs[c] += std::abs(prod[r * n + c]);
      }
    }
    DeviceArray<bf16> d_dy(to_bf16(dy)), d_w(to_bf16(w)), d_h(to_bf16(h));
    for (const bool with_grad : {false, true}) {
      std::vector<bf16> got[2];
      std::vector<float> got_db[2];
      bool skipped = false;
      for (int run = 0; run < 2 && !skipped; ++run) {
        DeviceArray<bf16> d(m * n);
        DeviceArray<float> db(n);
        RowGemm g;
        g.m = m, g.n = n, g.k = k;
        g.a = d_dy.get(), g.lda = k, g.b = d_w.get(), g.ldb = n;
        g.d = d.get(), g.ldd = n, g.out = OutType::BF16;
        g.epilogue = Epilogue::kDGeluBiasGrad, g.aux = d_h.get(), g.ld_aux = n;
        if (with_grad) g.bias_grad = db.get(), g.bias_grad_type = OutType::F32;
        if (!gemm_->try_run(g, nullptr)) {
          ASSERT_TRUE(with_grad) << "cuBLASLt has no DGELU epilogue for BF16";
          std::printf(
              "  note: no float32 bias gradient with a BF16 DGELU output here; the "
              "engine sums dH with column_sum instead\n");
          skipped = true;
          break;
        }
        sync_ok();
        got[run] = d.download();
        got_db[run] = db.download();
      }
      if (skipped) continue;
      const std::string what =
          std::string(with_grad ? "DGELU_BGRAD" : "DGELU") + " m " + std::to_string(m);
      // Measured on the H100 (cuBLASLt 13): 40 of 26,000 elements differ from float64 by up to
      // 0.62 % — one BF16 rounding inside the epilogue (of the product before gelu') besides the
      // output's, plus an approximate tanh in gelu' (≤ 2e-3 of it) times |dY·W|. The bound:
      // two BF16 roundings (2 · 2^-8) of |dH| plus 2e-3 · |dY·W|.
      {
        const std::vector<float> got_f = from_bf16(got[0]);
        size_t bad = 0;
        for (size_t i = 0; i < got_f.size(); ++i) {
          const double err = std::abs(static_cast<double>(got_f[i]) - want[i]);
          const double tol = 2 * kBf16Rel * std::abs(want[i]) + 2e-3 * std::abs(prod[i]) + 1e-4;
          if (!(err <= tol) && ++bad <= 5) {
            ADD_FAILURE() << what << " dH[" << i << "]: got " << got_f[i] << ", want " << want[i]
                          << " (|err| " << err << " > tol " << tol << ")";
          }
        }
        EXPECT_EQ(bad, 0u) << what << " dH: elements out of tolerance";
      }
      expect_bit_identical(got[0], got[1], what + " dH");
      if (!with_grad) continue;
      // Whether cuBLASLt sums dH before or after its BF16 rounding, each term is off by at most
      // 2^-8 of itself, plus an approximate tanh's error in gelu' (≤ 2e-3) times |dY·W|.
      for (int64_t c = 0; c < n; ++c) {
        const double err = std::abs(static_cast<double>(got_db[0][c]) - want_db[c]);
        EXPECT_LE(err, db_abs[c] / 256.0 + 2e-3 * prod_abs[c] + 1e-4)
            << what << " bias gradient [" << c << "]: got " << got_db[0][c] << ", want "
            << want_db[c];
      }
      expect_bit_identical(got_db[0], got_db[1], what + " bias gradient");
    }
  }
}

// A linear layer's weight gradient dW += dYᵀ·X (C = D, beta 1) with its bias gradient Σ_rows dY
// in the same product's epilogue.
TEST_F(CudaTrainEpilogues, BiasGradOfAMatchesFloat64) {
  for (const int64_t tokens : {67, 130}) {
    const int64_t out = 200, in = 40;
    const auto dy = rounded(random_normal(tokens * out, rng));
    const auto x = rounded(random_normal(tokens * in, rng));
    const auto gw0 = random_normal(out * in, rng);
    auto want = product(dy, true, x, out, in, tokens);
    for (int64_t i = 0; i < out * in; ++i) want[i] += gw0[i];
    std::vector<double> want_db(out, 0.0);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t c = 0; c < out; ++c) want_db[c] += dy[t * out + c];
    }
    DeviceArray<bf16> d_dy(to_bf16(dy)), d_x(to_bf16(x));
    std::vector<float> got[2], got_db[2];
    for (int run = 0; run < 2; ++run) {
      DeviceArray<float> gw(gw0), db(out);
      RowGemm g;
      g.trans_a = true;
      g.m = out, g.n = in, g.k = tokens;
      g.a = d_dy.get(), g.lda = out, g.b = d_x.get(), g.ldb = in;
      g.d = gw.get(), g.ldd = in, g.out = OutType::F32, g.c = gw.get(), g.beta = 1.0f;
      g.epilogue = Epilogue::kBiasGradOfA, g.bias_grad = db.get();
      if (!gemm_->try_run(g, nullptr)) {
        GTEST_SKIP() << "cuBLASLt has no BGRADB epilogue for this product: the engine keeps its "
                        "column sums";
      }
      sync_ok();
      got[run] = gw.download();
      got_db[run] = db.download();
    }
    const std::string what = "BGRADB tokens " + std::to_string(tokens);
    expect_close(got[0], want, 1e-5, 1e-4, what + " dW");
    expect_close(got_db[0], want_db, 1e-5, 1e-4, what + " bias gradient");
    expect_bit_identical(got[0], got[1], what + " dW");
    expect_bit_identical(got_db[0], got_db[1], what + " bias gradient");
  }
}

TEST_F(CudaTrainEpilogues, BadEpilogueArgumentsAreRejected) {
  DeviceArray<bf16> a(64 * 64), d(64 * 64), aux(64 * 64);
  RowGemm g;
  g.m = 64, g.n = 60, g.k = 64;
  g.a = a.get(), g.lda = 64, g.b = a.get(), g.ldb = 64;
  g.d = d.get(), g.ldd = 64, g.out = OutType::BF16;
  g.epilogue = Epilogue::kGeluAux, g.aux = aux.get(), g.ld_aux = 60;  // not a multiple of 8
  try {
    gemm_->run(g, nullptr);
    ADD_FAILURE() << "an aux ld of 60 was accepted";
  } catch (const kiln::Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("multiple of 8"), std::string::npos) << e.what();
  }
  g.epilogue = Epilogue::kBiasGradOfA, g.aux = nullptr, g.ld_aux = 0;
  EXPECT_THROW(gemm_->run(g, nullptr), kiln::Error);  // no bias-gradient output
}

// ---- bandwidth at GPT-2 124M shapes (micro-batch 16 × 1024) -------------------------------------
// Not a correctness test: prints each kernel's time and effective bandwidth for the performance
// notes. Run with --gtest_also_run_disabled_tests --gtest_filter='*Gpt2Shapes*'.

// Mean time in microseconds of `launch` over `reps` runs after one warm-up.
double time_us(const std::function<void()>& launch, int reps = 20) {
  launch();
  cudaEvent_t start, stop;
  (void)cudaEventCreate(&start);
  (void)cudaEventCreate(&stop);
  (void)cudaEventRecord(start);
  for (int i = 0; i < reps; ++i) launch();
  (void)cudaEventRecord(stop);
  (void)cudaEventSynchronize(stop);
  float ms = 0.0f;
  (void)cudaEventElapsedTime(&ms, start, stop);
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  return 1000.0 * ms / reps;
}

template <class T>
void zero(DeviceArray<T>& a) {
  (void)cudaMemset(a.get(), 0, a.bytes());
}

void report(const char* name, double us, double bytes) {
  std::printf("  %-34s %9.1f us  %7.0f GB/s\n", name, us, bytes / (us * 1e-6) / 1e9);
}

TEST_F(CudaTrainKernels, DISABLED_Gpt2ShapesBandwidth) {
  const int64_t rows = 16 * 1024, dim = 768, inter = 3072, vocab = 50304, seq = 1024;
  const int64_t width = 3 * dim, n_params = 124'000'000;
  std::printf("training kernels at GPT-2 124M shapes (%lld tokens):\n",
              static_cast<long long>(rows));
  {
    DeviceArray<float> x(rows * dim), w(dim), b(dim), mean(rows), rstd(rows), dy(rows * dim),
        dx(rows * dim), dw(dim), db(dim), ws(norm_backward_workspace_floats(rows, dim));
    DeviceArray<bf16> y(rows * dim), dxb(rows * dim);
    for (auto* a : {&x, &w, &b, &dy, &dx, &dw, &db}) zero(*a);
    const double n = static_cast<double>(rows * dim);
    report("norm_forward LayerNorm", time_us([&] {
             norm_forward(NormType::LayerNorm, x.get(), w.get(), b.get(), 1e-5f, y.get(), nullptr,
                          mean.get(), rstd.get(), rows, dim, nullptr);
           }),
           n * 6);
    report("norm_backward LayerNorm (+=, bf16)", time_us([&] {
             norm_backward(NormType::LayerNorm, dy.get(), x.get(), w.get(), mean.get(), rstd.get(),
                           dx.get(), true, dxb.get(), dw.get(), db.get(), rows, dim, ws.get(),
                           nullptr);
           }),
           n * 18);
  }
  {
    DeviceArray<bf16> h(rows * inter), a(rows * inter), dh(rows * inter);
    DeviceArray<float> da(rows * inter);
    zero(h);
    zero(da);
    const double n = static_cast<double>(rows * inter);
    report("activation_forward GeluTanh", time_us([&] {
             activation_forward(Activation::GeluTanh, h.get(), a.get(), rows, inter, nullptr);
           }),
           n * 4);
    report("activation_backward GeluTanh", time_us([&] {
             activation_backward(Activation::GeluTanh, h.get(), da.get(), dh.get(), rows, inter,
                                 nullptr);
           }),
           n * 8);
  }
  {
    // The GELU MLP's up projection and its dX: product + kernels vs the cuBLASLt epilogues.
    LtGemm gemm(DeviceAllocator::create(0, 0, "test GPU"), size_t{32} << 20);
    DeviceArray<bf16> n2(rows * dim), w_fc(inter * dim), b_fc(inter), h(rows * inter),
        a(rows * inter), g(rows * dim), w_proj(dim * inter), dh(rows * inter);
    DeviceArray<float> da(rows * inter), db(inter), cws(column_sum_workspace_floats(rows, inter));
    for (auto* x : {&n2, &w_fc, &b_fc, &g, &w_proj}) zero(*x);
    RowGemm up;
    up.trans_b = true;
    up.m = rows, up.n = inter, up.k = dim;
    up.a = n2.get(), up.lda = dim, up.b = w_fc.get(), up.ldb = dim;
    up.d = h.get(), up.ldd = inter, up.out = OutType::BF16, up.bias = b_fc.get();
    RowGemm up_fused = up;
    up_fused.d = a.get(), up_fused.epilogue = Epilogue::kGeluAux;
    up_fused.aux = h.get(), up_fused.ld_aux = inter;
    RowGemm down;
    down.m = rows, down.n = inter, down.k = dim;
    down.a = g.get(), down.lda = dim, down.b = w_proj.get(), down.ldb = inter;
    down.d = da.get(), down.ldd = inter, down.out = OutType::F32;
    RowGemm down_fused = down;
    down_fused.d = dh.get(), down_fused.out = OutType::BF16;
    down_fused.epilogue = Epilogue::kDGeluBiasGrad, down_fused.aux = h.get();
    down_fused.ld_aux = inter, down_fused.bias_grad = db.get();
    const bool bgrad_f32 = gemm.try_run(down_fused, nullptr);
    if (!bgrad_f32) down_fused.bias_grad = nullptr;
    const double flops = 2.0 * static_cast<double>(rows * inter * dim);
    const auto tflops = [&](const char* name, double us) {
      std::printf("  %-34s %9.1f us  %7.0f TFLOP/s\n", name, us, flops / (us * 1e-6) / 1e12);
    };
    tflops("fc product + bias, then gelu kernel", time_us([&] {
             gemm.run(up, nullptr);
             activation_forward(Activation::GeluTanh, h.get(), a.get(), rows, inter, nullptr);
           }));
    tflops("fc product, GELU_AUX_BIAS epilogue", time_us([&] { gemm.run(up_fused, nullptr); }));
    tflops("dH product + dgelu + bias column sum", time_us([&] {
             gemm.run(down, nullptr);
             activation_backward(Activation::GeluTanh, h.get(), da.get(), dh.get(), rows, inter,
                                 nullptr);
             column_sum(dh.get(), db.get(), rows, inter, cws.get(), nullptr);
           }));
    tflops(bgrad_f32 ? "dH product, DGELU_BGRAD epilogue" : "dH product, DGELU (+ column sum)",
           time_us([&] {
             gemm.run(down_fused, nullptr);
             if (!bgrad_f32) column_sum(dh.get(), db.get(), rows, inter, cws.get(), nullptr);
           }));
  }
  {
    DeviceArray<bf16> qkv(rows * width), q(rows * dim), k(rows * dim), v(rows * dim),
        dqkv(rows * width);
    DeviceArray<float> bias(width), dq(rows * dim), dk(rows * dim), dv(rows * dim), dbias(width),
        ws(qkv_backward_workspace_floats({16, 1024, 12, 12, 64, 0}));
    for (auto* a : {&bias, &dq, &dk, &dv, &dbias}) zero(*a);
    zero(qkv);
    const QkvShape shape{16, 1024, 12, 12, 64, 0};
    const double n = static_cast<double>(rows * width);
    report("qkv_forward (bias)", time_us([&] {
             qkv_forward(qkv.get(), bias.get(), shape, QkNorm{}, nullptr, false, q.get(), k.get(),
                         v.get(), nullptr, nullptr, nullptr);
           }),
           n * 4);
    report("qkv_backward (dbias)", time_us([&] {
             qkv_backward(dq.get(), dk.get(), dv.get(), qkv.get(), bias.get(), shape, QkNorm{},
                          nullptr, false, nullptr, nullptr, dqkv.get(), nullptr, nullptr,
                          dbias.get(), ws.get(), nullptr);
           }),
           n * 6);
    DeviceArray<float> cws(column_sum_workspace_floats(rows, width));
    report("column_sum bf16 (qkv bias grad)",
           time_us([&] { column_sum(dqkv.get(), dbias.get(), rows, width, cws.get(), nullptr); }),
           n * 2);
  }
  {
    DeviceArray<bf16> logits(rows * vocab);
    zero(logits);
    std::vector<int32_t> t(rows);
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
    for (auto& x : t) x = pick(rng);
    DeviceArray<int32_t> targets(t);
    DeviceArray<float> scale(std::vector<float>(rows, 1.0f / rows)), loss(rows);
    const double n = static_cast<double>(rows * vocab);
    report("cross_entropy (loss + grad)",
           time_us(
               [&] {
                 cross_entropy(logits.get(), targets.get(), scale.get(), 0.0f, loss.get(), rows,
                               vocab, true, nullptr);
               },
               5),
           n * 4);
    DeviceArray<bf16> tok(vocab * dim), pos(seq * dim);
    DeviceArray<float> out(rows * dim), gtok(vocab * dim), gpos(seq * dim);
    DeviceArray<unsigned char> ews(embedding_backward_workspace_bytes(rows));
    for (auto* a : {&out, &gtok, &gpos}) zero(*a);
    zero(tok);
    zero(pos);
    report("embedding_forward (+pos)", time_us([&] {
             embedding_forward(targets.get(), tok.get(), pos.get(), out.get(), rows, seq, dim,
                               nullptr);
           }),
           static_cast<double>(rows * dim) * 8);
    report("embedding_backward (+pos)", time_us([&] {
             embedding_backward(targets.get(), out.get(), gtok.get(), gpos.get(), rows, seq, dim,
                                -1, ews.get(), nullptr);
           }),
           static_cast<double>(rows * dim) * 12);
  }
  {
    DeviceArray<float> p(n_params), g(n_params), m(n_params), v(n_params), clip(1);
    DeviceArray<bf16> pb(n_params);
    DeviceArray<double> sws(sum_squares_workspace_doubles(n_params)), ss(1);
    for (auto* a : {&p, &g, &m, &v, &clip}) zero(*a);
    AdamWStep step{6e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.1f, 0.05f};
    const double n = static_cast<double>(n_params);
    report("adamw_update (+bf16 copy)", time_us([&] {
             adamw_update(p.get(), pb.get(), g.get(), m.get(), v.get(), n_params, step, clip.get(),
                          nullptr);
           }),
           n * 30);
    report("sum_squares",
           time_us([&] { sum_squares(g.get(), n_params, sws.get(), ss.get(), nullptr); }), n * 4);
  }
  {
    // The trainer's optimizer step: GPT-2 124M's 196 tensors (q, k, v separate), per tensor as
    // before and as one multi-tensor launch. Offsets padded to 64 elements like ParamLayout's.
    std::vector<int64_t> sizes = {vocab * dim, seq * dim};
    for (int l = 0; l < 12; ++l) {
      for (int64_t sz : {dim, dim, dim * dim, dim, dim * dim, dim, dim * dim, dim, dim * dim, dim,
                         dim, dim, inter * dim, inter, dim * inter, dim}) {
        sizes.push_back(sz);
      }
    }
    sizes.push_back(dim), sizes.push_back(dim);
    std::vector<AdamWSegment> segs;
    int64_t total = 0;
    for (const int64_t sz : sizes) {
      AdamWSegment seg;
      seg.offset = seg.state_offset = total;
      seg.numel = sz;
      seg.group = sz >= dim * dim ? 0 : 1;
      segs.push_back(seg);
      total += (sz + 63) / 64 * 64;
    }
    DeviceArray<float> p(total), g(total), m(total), v(total), clip(1);
    DeviceArray<bf16> pb(total);
    for (auto* a : {&p, &g, &m, &v, &clip}) zero(*a);
    for (AdamWSegment& seg : segs) seg.p_bf16 = pb.get() + seg.offset;
    const std::vector<AdamWChunk> chunks = adamw_chunks(segs);
    DeviceArray<AdamWChunk> d_chunks(chunks);
    AdamWStep steps[2] = {{6e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.1f, 0.05f},
                          {6e-4f, 0.9f, 0.95f, 1e-8f, 0.0f, 0.1f, 0.05f}};
    const double bytes = static_cast<double>(total) * 30;
    std::printf("  AdamW step over %zu tensors (%lld parameters, %zu chunks):\n", segs.size(),
                static_cast<long long>(total), chunks.size());
    report("adamw_update per tensor", time_us([&] {
             for (const AdamWSegment& seg : segs) {
               adamw_update(p.get() + seg.offset, seg.p_bf16, g.get() + seg.offset,
                            m.get() + seg.offset, v.get() + seg.offset, seg.numel, steps[seg.group],
                            clip.get(), nullptr);
             }
           }),
           bytes);
    report("adamw_update_multi", time_us([&] {
             adamw_update_multi(p.get(), g.get(), m.get(), v.get(), d_chunks.get(),
                                static_cast<int64_t>(chunks.size()), steps, 2, clip.get(), nullptr);
           }),
           bytes);
  }
  sync_ok();
}

}  // namespace
}  // namespace kiln::cuda::train

#else

TEST(CudaTrainKernels, NotBuilt) { GTEST_SKIP() << "built without CUDA (KILN_CUDA=OFF)"; }

#endif
