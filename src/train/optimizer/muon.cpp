#include "train/optimizer/muon.hpp"

#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.hpp"

namespace kiln {

namespace {

constexpr float kA = 3.4445f, kB = -4.7750f, kC = 2.0315f;
constexpr double kNormEps = 1e-7;
constexpr int64_t kParallelMin = 1 << 14;

void transpose(const float* src, float* dst, int64_t rows, int64_t cols, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) dst[j * rows + i] = src[i * cols + j];
  }
}

void grow(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

}  // namespace

void newton_schulz5(const float* g, float* out, int64_t rows, int64_t cols, int steps,
                    MuonScratch& s, int n_threads) {
  const bool tall = rows > cols;
  const int64_t r = tall ? cols : rows;  // X is r × c with r <= c
  const int64_t c = tall ? rows : cols;
  grow(s.x, r * c);
  grow(s.xt, r * c);
  grow(s.a, r * r);
  grow(s.at, r * r);
  grow(s.aa, r * r);
  grow(s.bx, r * c);
  float* x = s.x.data();
  if (tall) {
    transpose(g, x, rows, cols, n_threads);
  } else {
    std::copy(g, g + r * c, x);
  }
  // Frobenius norm in double, in index order (deterministic).
  double sq = 0.0;
  for (int64_t i = 0; i < r * c; ++i) sq += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / (std::sqrt(sq) + kNormEps));
  for (int64_t i = 0; i < r * c; ++i) x[i] *= inv;

  float* xt = s.xt.data();
  float* a = s.a.data();
  float* at = s.at.data();
  float* b = s.aa.data();
  float* bx = s.bx.data();
  for (int it = 0; it < steps; ++it) {
    // A = X Xᵀ: linear(x, w) computes x · wᵀ.
    cpu::linear(x, x, nullptr, a, r, c, r, n_threads);
    // A A, as A · (Aᵀ)ᵀ: A is symmetric in exact arithmetic but not bit-for-bit after rounding.
    transpose(a, at, r, r, n_threads);
    cpu::linear(a, at, nullptr, b, r, r, r, n_threads);
    for (int64_t i = 0; i < r * r; ++i) b[i] = kB * a[i] + kC * b[i];
    // B X, as B · (Xᵀ)ᵀ.
    transpose(x, xt, r, c, n_threads);
    cpu::linear(b, xt, nullptr, bx, r, r, c, n_threads);
    for (int64_t i = 0; i < r * c; ++i) x[i] = kA * x[i] + bx[i];
  }
  if (tall) {
    transpose(x, out, r, c, n_threads);
  } else {
    std::copy(x, x + r * c, out);
  }
}

void muon_update(float* p, const float* g, float* buf, int64_t rows, int64_t cols,
                 const MuonStep& step, MuonScratch& s, int n_threads) {
  const int64_t n = rows * cols;
  const float mu = static_cast<float>(step.momentum);
  const float one_minus_mu = static_cast<float>(1.0 - step.momentum);
  grow(s.u, n);
  grow(s.ortho, n);
  float* u = s.u.data();
  float* ortho = s.ortho.data();
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    // torch's lerp_(end, w) = self + w * (end - self).
    const float bi = buf[i] + one_minus_mu * (g[i] - buf[i]);
    buf[i] = bi;
    u[i] = step.nesterov ? g[i] + mu * (bi - g[i]) : bi;
  }
  newton_schulz5(u, ortho, rows, cols, step.ns_steps, s, n_threads);
  const double scale =
      std::sqrt(std::max(1.0, static_cast<double>(rows) / static_cast<double>(cols)));
  const float alpha = static_cast<float>(step.lr * scale);
  const float decay = static_cast<float>(1.0 - step.lr * step.weight_decay);
  const bool decays = step.weight_decay != 0.0;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float pi = decays ? p[i] * decay : p[i];
    p[i] = pi - alpha * ortho[i];
  }
}

}  // namespace kiln
