// Muon on the device (src/backend/cuda/train/muon_update.hpp, kernels/train_muon.cu) against
// float64 references written here from the formulas of train/optimizer/muon.hpp (not from kiln's
// CPU code): the Newton-Schulz quintic on random matrices of awkward shapes, tall and wide; the
// momentum / Nesterov lerps; whole updates (two in a row, with a clipping factor, with and without
// Nesterov and weight decay). A float32 iteration lands ~3e-6 (max error / max |X|) from the
// float64 one on these shapes (kiln's CPU optimizer measured against this reference: 1.5e-6 to
// 3e-6); the bounds leave 15× room, while TF32 products (10-bit mantissa) would be off by ~1e-3.
// Two runs of the same update are bit-identical. Without a GPU every test skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/device_memory.hpp"
#include "backend/cuda/train/muon_update.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "core/error.hpp"
#include "cuda_test_util.hpp"

namespace kiln::cuda::train {
namespace {

using test::DeviceArray;
using test::from_bf16;
using test::random_normal;
using test::round_to_bf16;

constexpr double kNsMaxErr = 5e-5;  // max |err| / max |X|
constexpr double kNsRelL2 = 2e-5;

// The quintic, from the formula: X = G / (||G||_F + 1e-7), transposed first when G is tall; then
// `steps` times A = X Xᵀ, B = b A + c A A, X = a X + B X; transposed back.
std::vector<double> newton_schulz_f64(const std::vector<double>& g, int64_t rows, int64_t cols,
                                      int steps) {
  const bool tall = rows > cols;
  const int64_t r = tall ? cols : rows, c = tall ? rows : cols;
  double sq = 0.0;
  for (const double v : g) sq += v * v;
  const double inv = 1.0 / (std::sqrt(sq) + 1e-7);
  std::vector<double> x(static_cast<size_t>(r * c));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j)
      x[tall ? j * rows + i : i * cols + j] = g[i * cols + j] * inv;
  }
  const double qa = 3.4445, qb = -4.7750, qc = 2.0315;
  std::vector<double> a(static_cast<size_t>(r * r)), b(a.size()), y(x.size());
  for (int s = 0; s < steps; ++s) {
    for (int64_t i = 0; i < r; ++i) {
      for (int64_t j = 0; j < r; ++j) {
        double acc = 0.0;
        for (int64_t k = 0; k < c; ++k) acc += x[i * c + k] * x[j * c + k];
        a[i * r + j] = acc;
      }
    }
    for (int64_t i = 0; i < r; ++i) {
      for (int64_t j = 0; j < r; ++j) b[i * r + j] = qb * a[i * r + j];
      for (int64_t k = 0; k < r; ++k) {
        const double aik = qc * a[i * r + k];
        for (int64_t j = 0; j < r; ++j) b[i * r + j] += aik * a[k * r + j];
      }
    }
    for (int64_t i = 0; i < r; ++i) {
      for (int64_t j = 0; j < c; ++j) y[i * c + j] = qa * x[i * c + j];
      for (int64_t k = 0; k < r; ++k) {
        const double bik = b[i * r + k];
        for (int64_t j = 0; j < c; ++j) y[i * c + j] += bik * x[k * c + j];
      }
    }
    x.swap(y);
  }
  std::vector<double> out(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) out[i * cols + j] = x[tall ? j * rows + i : i * cols + j];
  }
  return out;
}

struct Errors {
  double max_rel;  // max |err| / max |want|
  double rel_l2;
};
Errors errors(const std::vector<float>& got, const std::vector<double>& want) {
  double max_err = 0.0, max_want = 0.0, num = 0.0, den = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::abs(static_cast<double>(got[i]) - want[i]);
    max_err = std::isnan(e) ? INFINITY : std::max(max_err, e);
    max_want = std::max(max_want, std::abs(want[i]));
    num += e * e;
    den += want[i] * want[i];
  }
  return {max_err / std::max(max_want, 1e-300), std::sqrt(num / std::max(den, 1e-300))};
}

template <class T>
bool bit_identical(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

class CudaMuon : public ::testing::Test {
 protected:
  void SetUp() override {
    KILN_SKIP_WITHOUT_CUDA();
    allocator_ = DeviceAllocator::create(0, 0, "test GPU");
    ASSERT_CUDA_OK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }
  std::shared_ptr<DeviceAllocator> allocator_;
  cudaStream_t stream_ = nullptr;
  std::mt19937 rng_{20261125};
};

TEST_F(CudaMuon, NewtonSchulzFollowsFloat64Reference) {
  const int64_t shapes[][2] = {{37, 91},   {91, 37}, {256, 64}, {64, 256},
                               {768, 768}, {1, 5},   {5, 1},    {3, 3}};
  MuonUpdater muon(*allocator_, 768 * 768, 768, stream_);
  for (const auto& s : shapes) {
    const int64_t rows = s[0], cols = s[1];
    for (const int steps : {1, 5}) {
      const auto g = random_normal(static_cast<size_t>(rows * cols), rng_, 0.02f);
      DeviceArray<float> d_g(g), d_out(g.size());
      muon.newton_schulz5(d_g.get(), d_out.get(), rows, cols, steps);
      ASSERT_CUDA_OK(cudaStreamSynchronize(stream_));
      const auto got = d_out.download();
      const auto want = newton_schulz_f64({g.begin(), g.end()}, rows, cols, steps);
      const Errors e = errors(got, want);
      std::printf("[ newton-schulz ] %lld × %lld, %d steps: max err / max |X| %.3e, rel L2 %.3e\n",
                  static_cast<long long>(rows), static_cast<long long>(cols), steps, e.max_rel,
                  e.rel_l2);
      EXPECT_LE(e.max_rel, kNsMaxErr) << rows << " × " << cols << ", " << steps << " steps";
      EXPECT_LE(e.rel_l2, kNsRelL2) << rows << " × " << cols << ", " << steps << " steps";
      // The input is left alone (it is the momentum-blended gradient in an update).
      EXPECT_TRUE(bit_identical(d_g.download(), g)) << rows << " × " << cols;
    }
  }
}

TEST_F(CudaMuon, MomentumFollowsFloat64Reference) {
  const int64_t n = 1000 + 3;  // not a multiple of the block
  const auto g = random_normal(n, rng_), buf0 = random_normal(n, rng_);
  for (const bool nesterov : {true, false}) {
    for (const bool scaled : {false, true}) {
      const float mu = 0.95f, scale = 0.375f;
      DeviceArray<float> d_g(g), d_buf(buf0), d_u(n), d_scale(std::vector<float>{scale});
      muon_momentum(d_g.get(), scaled ? d_scale.get() : nullptr, d_buf.get(), d_u.get(), n, mu,
                    nesterov, stream_);
      ASSERT_CUDA_OK(cudaStreamSynchronize(stream_));
      const auto buf = d_buf.download(), u = d_u.download();
      for (int64_t i = 0; i < n; ++i) {
        const double gi = static_cast<double>(g[i]) * (scaled ? scale : 1.0);
        const double m = mu;
        const double b = m * buf0[i] + (1.0 - m) * gi;
        const double ui = nesterov ? (1.0 - m) * gi + m * b : b;
        ASSERT_NEAR(buf[i], b, 1e-6 * (std::abs(b) + std::abs(gi)) + 1e-12) << "buf[" << i << "]";
        ASSERT_NEAR(u[i], ui, 1e-6 * (std::abs(b) + std::abs(gi)) + 1e-12) << "u[" << i << "]";
      }
    }
  }
}

// Two updates in a row of p (both orientations), as muon.hpp writes them, in float64.
TEST_F(CudaMuon, UpdatesFollowFloat64Reference) {
  const int64_t shapes[][2] = {{37, 91}, {91, 37}, {64, 64}};
  MuonUpdater muon(*allocator_, 64 * 64, 64, stream_);  // the largest of the three
  for (const auto& s : shapes) {
    const int64_t rows = s[0], cols = s[1], n = rows * cols;
    for (const bool nesterov : {true, false}) {
      for (const double wd : {0.0, 0.1}) {
        MuonStep step;
        step.lr = 0.02 * 0.5;  // a schedule multiplier of 0.5
        step.momentum = 0.95f;
        step.nesterov = nesterov;
        step.ns_steps = 5;
        step.weight_decay = wd;
        const float scale = 0.625f;  // a clipping factor
        const auto p0 = random_normal(n, rng_, 0.05f);
        const std::vector<std::vector<float>> grads = {random_normal(n, rng_, 0.01f),
                                                       random_normal(n, rng_, 0.01f)};
        DeviceArray<float> d_p(p0), d_buf(std::vector<float>(n, 0.0f)),
            d_scale(std::vector<float>{scale});
        DeviceArray<bf16> d_p16(n);
        std::vector<double> p(p0.begin(), p0.end()), buf(n, 0.0);
        const double mu = step.momentum;
        for (const auto& g : grads) {
          DeviceArray<float> d_g(g);
          muon.update(d_p.get(), d_p16.get(), d_g.get(), d_scale.get(), d_buf.get(), rows, cols,
                      step);
          ASSERT_CUDA_OK(cudaStreamSynchronize(stream_));
          std::vector<double> u(n);
          for (int64_t i = 0; i < n; ++i) {
            const double gi = static_cast<double>(g[i]) * scale;
            buf[i] = mu * buf[i] + (1.0 - mu) * gi;
            u[i] = nesterov ? (1.0 - mu) * gi + mu * buf[i] : buf[i];
          }
          const auto x = newton_schulz_f64(u, rows, cols, step.ns_steps);
          const double alpha = step.lr * std::sqrt(std::max(1.0, double(rows) / double(cols)));
          for (int64_t i = 0; i < n; ++i) p[i] = p[i] * (1.0 - step.lr * wd) - alpha * x[i];
        }
        const auto got_p = d_p.download(), got_buf = d_buf.download();
        // The step's change, not the weights, is what must be right to the NS tolerance.
        std::vector<float> delta(n);
        std::vector<double> want_delta(n);
        for (int64_t i = 0; i < n; ++i) {
          delta[i] = got_p[i] - p0[i];
          want_delta[i] = p[i] - p0[i];
        }
        const Errors ep = errors(delta, want_delta), eb = errors(got_buf, buf);
        std::printf(
            "[ muon update ] %lld × %lld nesterov %d wd %.1f: Δp max err %.3e rel L2 "
            "%.3e; momentum max err %.3e\n",
            static_cast<long long>(rows), static_cast<long long>(cols), nesterov, wd, ep.max_rel,
            ep.rel_l2, eb.max_rel);
        // Δp's float32 rounding (p ~ 0.05, Δp ~ 1e-3) adds ~1e-7 / 1e-3 to the NS error.
        EXPECT_LE(ep.max_rel, 4 * kNsMaxErr) << rows << " × " << cols;
        EXPECT_LE(ep.rel_l2, 4 * kNsRelL2) << rows << " × " << cols;
        EXPECT_LE(eb.max_rel, 1e-6) << rows << " × " << cols;
        // The compute copy is the rounded master weight.
        const auto p16 = from_bf16(d_p16.download());
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(p16[i], round_to_bf16(got_p[i])) << "bf16 copy [" << i << "]";
        }
      }
    }
  }
}

TEST_F(CudaMuon, UpdateIsDeterministic) {
  const int64_t rows = 300, cols = 130, n = rows * cols;
  MuonUpdater muon(*allocator_, n, 130, stream_);
  const auto p0 = random_normal(n, rng_, 0.05f), g = random_normal(n, rng_, 0.01f),
             b0 = random_normal(n, rng_, 0.01f);
  MuonStep step;
  step.lr = 0.02;
  std::vector<std::vector<float>> results;
  for (int run = 0; run < 2; ++run) {
    DeviceArray<float> d_p(p0), d_g(g), d_buf(b0);
    for (int k = 0; k < 3; ++k) {
      muon.update(d_p.get(), nullptr, d_g.get(), nullptr, d_buf.get(), rows, cols, step);
    }
    ASSERT_CUDA_OK(cudaStreamSynchronize(stream_));
    results.push_back(d_p.download());
    results.push_back(d_buf.download());
  }
  EXPECT_TRUE(bit_identical(results[0], results[2])) << "weights differ between two runs";
  EXPECT_TRUE(bit_identical(results[1], results[3])) << "momentum differs between two runs";
}

TEST_F(CudaMuon, MatrixBeyondTheScratchIsRefused) {
  MuonUpdater muon(*allocator_, 64 * 32, 32, stream_);
  DeviceArray<float> a(64 * 64), b(64 * 64);
  try {
    muon.newton_schulz5(a.get(), b.get(), 64, 64, 5);
    FAIL() << "a 64 × 64 matrix was accepted by scratch for 64 × 32";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("64 × 64"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kiln::cuda::train

#else

TEST(CudaMuon, NotBuilt) { GTEST_SKIP() << "built without CUDA (KILN_CUDA=OFF)"; }

#endif
