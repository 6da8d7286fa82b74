// The CUDA kernels on GGUF block-quantised weights (kernels/quant_gemv.cu) against a float64 CPU
// reference: random blocks of each format (random quants, scales and mins; the float16 factors
// kept finite), dequantised on the CPU by kiln::quant::dequantize (which gguf_dequant_test checks
// bit for bit against llama.cpp's own dequantisation of llama.cpp-written files), then dotted in
// double. Awkward shapes: row counts that are not a multiple of the kernels' 8 rows per block, k a
// few blocks or a long row. Outputs start poisoned (NaN) with guard elements past the end that
// must stay poisoned. The integer path (QuantDot::kInt8: x quantised to int8) is checked twice
// over: against float64 with the same int8 quantisation of x, written here from its
// specification (agreement to float rounding: the integer arithmetic is exact), and against the
// unquantised x within the rounding bound of that quantisation (relative L2 printed, with its
// prediction). Without a GPU (CI) every test skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/kernels.hpp"
#include "core/error.hpp"
#include "cuda_test_util.hpp"
#include "formats/quant/ggml_type.hpp"

namespace kiln::cuda {
namespace {

using test::DeviceArray;

struct Format {
  QuantFormat format;
  quant::GgmlType type;
  const char* name;
  std::vector<int> half_offsets;  // float16 fields (d, m / dmin) within a block
};

void PrintTo(const Format& f, std::ostream* os) { *os << f.name; }

std::vector<Format> formats() {
  using quant::GgmlType;
  return {{QuantFormat::Q8_0, GgmlType::Q8_0, "q8_0", {0}},
          {QuantFormat::Q4_0, GgmlType::Q4_0, "q4_0", {0}},
          {QuantFormat::Q4_1, GgmlType::Q4_1, "q4_1", {0, 2}},
          {QuantFormat::Q5_0, GgmlType::Q5_0, "q5_0", {0}},
          {QuantFormat::Q5_1, GgmlType::Q5_1, "q5_1", {0, 2}},
          {QuantFormat::Q4_K, GgmlType::Q4_K, "q4_k", {0, 2}},
          {QuantFormat::Q5_K, GgmlType::Q5_K, "q5_k", {0, 2}},
          {QuantFormat::Q6_K, GgmlType::Q6_K, "q6_k", {208}}};
}

// IEEE binary16 bits of a normal value in ±[2^-10, 2^-4): random sign, exponent and mantissa.
uint16_t random_half(std::mt19937& rng) {
  const uint32_t sign = rng() & 1u, exp = 5 + rng() % 6, mant = rng() & 0x3FFu;
  return static_cast<uint16_t>((sign << 15) | (exp << 10) | mant);
}

// A rows × k matrix of random blocks of format f, and its exact float dequantisation.
struct QuantMatrix {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  size_t row_bytes;
};

QuantMatrix random_matrix(const Format& f, int64_t rows, int64_t k, std::mt19937& rng) {
  QuantMatrix m;
  const int64_t block = quant_block_elements(f.format);
  const size_t block_bytes = quant_block_bytes(f.format);
  m.row_bytes = quant_row_bytes(f.format, k);
  m.bytes.resize(static_cast<size_t>(rows) * m.row_bytes);
  for (auto& b : m.bytes) b = static_cast<uint8_t>(rng());
  const size_t blocks = m.bytes.size() / block_bytes;
  for (size_t b = 0; b < blocks; ++b) {
    for (int off : f.half_offsets) {
      const uint16_t h = random_half(rng);
      std::memcpy(m.bytes.data() + b * block_bytes + off, &h, 2);
    }
  }
  m.values.resize(static_cast<size_t>(rows * k));
  quant::dequantize(f.type, m.bytes.data(), m.values.data(), rows * k);
  EXPECT_EQ(k % block, 0);
  return m;
}

DeviceArray<uint8_t> upload_bytes(const std::vector<uint8_t>& bytes) {
  return DeviceArray<uint8_t>(bytes);  // cudaMalloc: 256-byte aligned
}

QuantMatrixView view_of(const Format& f, const DeviceArray<uint8_t>& d, int64_t rows, int64_t k,
                        size_t row_bytes) {
  return QuantMatrixView{d.get(), f.format, rows, k, row_bytes};
}

bool is_poison(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return bits == 0xFFFFFFFFu;
}

class QuantKernels : public ::testing::TestWithParam<Format> {};

TEST_P(QuantKernels, GemvMatchesFloat64ReferenceWithAndWithoutAccumulation) {
  KILN_SKIP_WITHOUT_CUDA();
  const Format& f = GetParam();
  const int64_t block = quant_block_elements(f.format);
  std::mt19937 rng(7);
  for (const int64_t k : {block * 3, block == 32 ? int64_t{896} : int64_t{4864}}) {
    for (const int64_t rows : {int64_t{1}, int64_t{37}, int64_t{200}}) {
      SCOPED_TRACE("k = " + std::to_string(k) + ", rows = " + std::to_string(rows));
      const QuantMatrix m = random_matrix(f, rows, k, rng);
      std::vector<float> xf = test::random_normal(k, rng);
      for (auto& v : xf) v = test::round_to_bf16(v);  // x is BF16 in the kernels
      const auto d_w = upload_bytes(m.bytes);
      DeviceArray<__nv_bfloat16> d_x(test::to_bf16(xf));
      constexpr int64_t kGuard = 5;
      DeviceArray<float> d_y(static_cast<size_t>(rows + kGuard));
      const QuantMatrixView w = view_of(f, d_w, rows, k, m.row_bytes);

      std::vector<double> ref(rows), scale(rows);
      for (int64_t r = 0; r < rows; ++r) {
        double acc = 0, abs_acc = 0;
        for (int64_t i = 0; i < k; ++i) {
          const double p = static_cast<double>(m.values[r * k + i]) * xf[i];
          acc += p;
          abs_acc += std::fabs(p);
        }
        ref[r] = acc;
        scale[r] = abs_acc;
      }
      quant_gemv(w, d_x.get(), d_y.get(), 0.0f, QuantDot::kFloat, nullptr);
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      std::vector<float> y = d_y.download();
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_NEAR(y[r], ref[r], 1e-4 * scale[r] + 1e-6) << "row " << r << " (beta 0)";
      }
      for (int64_t g = 0; g < kGuard; ++g) EXPECT_TRUE(is_poison(y[rows + g])) << "guard " << g;

      // beta = 1 accumulates into y (the residual add of o_proj / down_proj).
      std::vector<float> y0(static_cast<size_t>(rows + kGuard));
      for (auto& v : y0) v = std::uniform_real_distribution<float>(-2, 2)(rng);
      d_y.upload(y0);
      quant_gemv(w, d_x.get(), d_y.get(), 1.0f, QuantDot::kFloat, nullptr);
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      y = d_y.download();
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_NEAR(y[r], y0[r] + ref[r], 1e-4 * scale[r] + 1e-5) << "row " << r << " (beta 1)";
      }
      for (int64_t g = 0; g < kGuard; ++g) EXPECT_EQ(y[rows + g], y0[rows + g]);
    }
  }
}

TEST_P(QuantKernels, EmbeddingGatherWritesTheExactRowsOfTheIds) {
  KILN_SKIP_WITHOUT_CUDA();
  const Format& f = GetParam();
  const int64_t block = quant_block_elements(f.format);
  std::mt19937 rng(13);
  const int64_t rows = 29, k = block * 3;
  const QuantMatrix m = random_matrix(f, rows, k, rng);
  const auto d_w = upload_bytes(m.bytes);
  const std::vector<int32_t> ids = {0, 28, 5, 5, 17, 3, 28};
  DeviceArray<int32_t> d_ids(ids);
  const auto n = static_cast<int64_t>(ids.size());
  constexpr int64_t kGuard = 8;
  DeviceArray<float> d_out(static_cast<size_t>(n * k + kGuard));
  quant_embedding_gather(d_ids.get(), view_of(f, d_w, rows, k, m.row_bytes), d_out.get(), n,
                         nullptr);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> out = d_out.download();
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < k; ++i) {
      ASSERT_EQ(out[t * k + i], m.values[ids[t] * k + i]) << "token " << t << ", element " << i;
    }
  }
  for (int64_t g = 0; g < kGuard; ++g) EXPECT_TRUE(is_poison(out[n * k + g])) << "guard " << g;
}

TEST_P(QuantKernels, DequantiseToBf16IsTheExactValueRoundedToNearestEven) {
  KILN_SKIP_WITHOUT_CUDA();
  const Format& f = GetParam();
  const int64_t block = quant_block_elements(f.format);
  std::mt19937 rng(11);
  const int64_t rows = 13, k = block * 5;
  const QuantMatrix m = random_matrix(f, rows, k, rng);
  const auto d_w = upload_bytes(m.bytes);
  constexpr int64_t kGuard = 16;
  DeviceArray<__nv_bfloat16> d_out(static_cast<size_t>(rows * k + kGuard));
  quant_dequantize_bf16(view_of(f, d_w, rows, k, m.row_bytes), d_out.get(), nullptr);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  const std::vector<__nv_bfloat16> out = d_out.download();
  for (int64_t i = 0; i < rows * k; ++i) {
    const __nv_bfloat16_raw raw = out[i];
    ASSERT_EQ(raw.x, test::to_bf16_bits(m.values[i]))
        << "element " << i << " (row " << i / k << ", column " << i % k << "): exact value "
        << m.values[i];
  }
  for (int64_t g = 0; g < kGuard; ++g) {
    const __nv_bfloat16_raw raw = out[rows * k + g];
    EXPECT_EQ(raw.x, 0xFFFF) << "guard " << g;
  }
}

// The normalised vector as the kernels compute it, in double (the kernels round it to BF16: the
// tolerance below covers one BF16 rounding per element).
std::vector<double> rms_normed(const std::vector<float>& x, const std::vector<float>& w,
                               double eps) {
  double ss = 0;
  for (float v : x) ss += static_cast<double>(v) * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = w[i] * (x[i] * inv);
  return out;
}

TEST_P(QuantKernels, FusedRmsNormGemvAndSwigluMatchFloat64Reference) {
  KILN_SKIP_WITHOUT_CUDA();
  const Format& f = GetParam();
  const int64_t block = quant_block_elements(f.format);
  std::mt19937 rng(5);
  const int64_t k = block == 32 ? 896 : 768, inter = 45;
  const float eps = 1e-6f;
  const std::vector<float> x = test::random_normal(k, rng, 3.0f);
  std::vector<float> norm_w = test::random_normal(k, rng, 0.1f);
  for (auto& v : norm_w) v += 1.0f;
  const std::vector<double> xn = rms_normed(x, norm_w, eps);
  DeviceArray<float> d_x(x), d_norm(norm_w);

  const QuantMatrix m = random_matrix(f, 2 * inter, k, rng);
  const auto d_w = upload_bytes(m.bytes);
  std::vector<double> ref(2 * inter), err(2 * inter);
  for (int64_t r = 0; r < 2 * inter; ++r) {
    double acc = 0, abs_acc = 0;
    for (int64_t i = 0; i < k; ++i) {
      acc += m.values[r * k + i] * xn[i];
      abs_acc += std::fabs(m.values[r * k + i] * xn[i]);
    }
    ref[r] = acc;
    err[r] = abs_acc * (1.0 / 256 + 1e-4) + 1e-6;  // BF16 rounding of x, float accumulation
  }

  constexpr int64_t kGuard = 3;
  DeviceArray<float> d_y(static_cast<size_t>(2 * inter + kGuard));
  rms_norm_quant_gemv(d_x.get(), d_norm.get(), eps, view_of(f, d_w, 2 * inter, k, m.row_bytes),
                      d_y.get(), 0.0f, QuantDot::kFloat, nullptr);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> y = d_y.download();
  for (int64_t r = 0; r < 2 * inter; ++r) ASSERT_NEAR(y[r], ref[r], err[r]) << "row " << r;
  for (int64_t g = 0; g < kGuard; ++g) EXPECT_TRUE(is_poison(y[2 * inter + g]));

  DeviceArray<__nv_bfloat16> d_act(static_cast<size_t>(inter + kGuard));
  rms_norm_quant_gemv_swiglu(d_x.get(), d_norm.get(), eps,
                             view_of(f, d_w, 2 * inter, k, m.row_bytes), d_act.get(),
                             QuantDot::kFloat, nullptr);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> act = test::from_bf16(d_act.download());
  for (int64_t i = 0; i < inter; ++i) {
    const double g = ref[i], u = ref[inter + i];
    const double silu = g / (1.0 + std::exp(-g));
    const double want = silu * u;
    // |d silu / dg| <= 1.1; one BF16 rounding of the result.
    const double tol = 1.1 * err[i] * std::fabs(u) + std::fabs(silu) * err[inter + i] +
                       std::fabs(want) / 128 + 1e-6;
    ASSERT_NEAR(act[i], want, tol) << "SwiGLU element " << i;
  }
  const std::vector<__nv_bfloat16> raw_act = d_act.download();
  for (int64_t g = 0; g < kGuard; ++g) {
    const __nv_bfloat16_raw raw = raw_act[inter + g];
    EXPECT_EQ(raw.x, 0xFFFF) << "guard " << g;
  }
}

// ---------------------------------------------------------------------------------------------
// The integer path (QuantDot::kInt8, kernels/quant_dot_int8.cuh).

// x quantised as the integer path specifies it, written from that specification: per 32-element
// block d = RN(max|x| / 127) in float, xi = round-half-even(RN(x · RN(127 / max|x|))) (both 0
// when max|x| < 2^-100). xhat = d · xi exactly (in double); scale = each element's block d.
struct Int8X {
  std::vector<double> xhat, scale;
};

Int8X int8_quantise(const std::vector<float>& x) {
  Int8X q{std::vector<double>(x.size()), std::vector<double>(x.size())};
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0.0f;
    for (size_t i = b; i < b + 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const bool zero = amax < 0x1p-100f;
    const float d = zero ? 0.0f : amax / 127.0f;
    const float inv = zero ? 0.0f : 127.0f / amax;
    for (size_t i = b; i < b + 32; ++i) {
      const float ratio = x[i] * inv;
      q.xhat[i] = static_cast<double>(d) * std::nearbyint(ratio);
      q.scale[i] = d;
    }
  }
  return q;
}

// Per row of a product with the exactly dequantised weights: the product with the unquantised x,
// with x̂, Σ|w·x̂| (the scale of float rounding), the worst case of the int8 rounding, Σ|w|·d/2
// (|x̂ − x| <= d/2 + 3·2^-24·|x| from the roundings of d, 127 / max|x| and the product: < d/2 ·
// (1 + 5e-5), hence the 1e-4),
// and its variance when the rounding errors are independent and uniform, Σ w²·d²/12.
struct RowRefs {
  std::vector<double> exact, quantised, magnitude, worst, variance;
};

RowRefs row_refs(const QuantMatrix& m, int64_t rows, int64_t k, const std::vector<float>& x,
                 const Int8X& q) {
  RowRefs r;
  for (int64_t row = 0; row < rows; ++row) {
    double exact = 0, quantised = 0, magnitude = 0, worst = 0, variance = 0;
    for (int64_t i = 0; i < k; ++i) {
      const double w = m.values[row * k + i];
      exact += w * x[i];
      quantised += w * q.xhat[i];
      magnitude += std::fabs(w * q.xhat[i]);
      worst += std::fabs(w) * q.scale[i] * 0.5 * (1 + 1e-4);
      variance += w * w * q.scale[i] * q.scale[i] / 12;
    }
    r.exact.push_back(exact);
    r.quantised.push_back(quantised);
    r.magnitude.push_back(magnitude);
    r.worst.push_back(worst);
    r.variance.push_back(variance);
  }
  return r;
}

// Float rounding of the integer path relative to Σ|w·x̂|: the chunk's scales applied in 2-4 float
// operations (for the formats with a min, two products of up to ~4x the chunk's Σ|w·x̂| that may
// cancel), then at most 19 additions per lane and 5 across the warp: < 30 · 4 · 2^-24 ≈ 7e-6.
constexpr double kInt8FloatRounding = 2e-5;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b, size_t n) {
  return std::memcmp(a.data(), b.data(), n * sizeof(float)) == 0;
}

TEST_P(QuantKernels, Int8GemvIsExactOnTheQuantisedXAndWithinItsRoundingOfTheUnquantisedX) {
  KILN_SKIP_WITHOUT_CUDA();
  const Format& f = GetParam();
  const int64_t block = quant_block_elements(f.format);
  std::mt19937 rng(17);
  const std::vector<int64_t> ks = block == 32 ? std::vector<int64_t>{96, 896, 3584, 4864}
                                              : std::vector<int64_t>{768, 3584, 4864};
  for (const int64_t k : ks) {
    for (const int64_t rows : {int64_t{1}, int64_t{37}, int64_t{200}}) {
      SCOPED_TRACE("k = " + std::to_string(k) + ", rows = " + std::to_string(rows));
      const QuantMatrix m = random_matrix(f, rows, k, rng);
      std::vector<float> xf = test::random_normal(k, rng);
      // Outliers, as real activations have: blocks with one large value get a coarse grid.
      for (int64_t i = 0; i < k; i += 53) xf[i] *= 16.0f;
      for (auto& v : xf) v = test::round_to_bf16(v);
      const auto d_w = upload_bytes(m.bytes);
      DeviceArray<__nv_bfloat16> d_x(test::to_bf16(xf));
      constexpr int64_t kGuard = 5;
      DeviceArray<float> d_y(static_cast<size_t>(rows + kGuard));
      const QuantMatrixView w = view_of(f, d_w, rows, k, m.row_bytes);

      quant_gemv(w, d_x.get(), d_y.get(), 0.0f, QuantDot::kFloat, nullptr);
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      const std::vector<float> y_float = d_y.download();
      quant_gemv(w, d_x.get(), d_y.get(), 0.0f, QuantDot::kInt8, nullptr);
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      const std::vector<float> y = d_y.download();
      quant_gemv(w, d_x.get(), d_y.get(), 0.0f, QuantDot::kInt8, nullptr);
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      EXPECT_TRUE(same_bits(y, d_y.download(), rows)) << "two runs differ";
      for (int64_t g = 0; g < kGuard; ++g) EXPECT_TRUE(is_poison(y[rows + g])) << "guard " << g;
      ASSERT_TRUE(quant_dot_int8_supported(f.format, k));

      const RowRefs ref = row_refs(m, rows, k, xf, int8_quantise(xf));
      double err2 = 0, float_err2 = 0, ref2 = 0, predicted2 = 0;
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_NEAR(y[r], ref.quantised[r], kInt8FloatRounding * ref.magnitude[r] + 1e-30)
            << "row " << r << ": not the product with the int8 x";
        ASSERT_NEAR(y[r], ref.exact[r], ref.worst[r] + kInt8FloatRounding * ref.magnitude[r])
            << "row " << r << ": beyond the int8 rounding of x";
        err2 += (y[r] - ref.exact[r]) * (y[r] - ref.exact[r]);
        float_err2 += (y_float[r] - ref.exact[r]) * (y_float[r] - ref.exact[r]);
        ref2 += ref.exact[r] * ref.exact[r];
        predicted2 += ref.variance[r];
      }
      const double rel = std::sqrt(err2 / ref2), predicted = std::sqrt(predicted2 / ref2);
      std::printf(
          "[ int8     ] %-5s k = %4lld, rows = %3lld: rel L2 vs the unquantised x %.3e "
          "(predicted %.3e; float path %.3e)\n",
          f.name, static_cast<long long>(k), static_cast<long long>(rows), rel, predicted,
          std::sqrt(float_err2 / ref2));
      // A sum of many independent roundings: 4 standard deviations.
      EXPECT_LE(rel, 4 * predicted);

      // beta = 1 accumulates into y.
      std::vector<float> y0(static_cast<size_t>(rows + kGuard));
      for (auto& v : y0) v = std::uniform_real_distribution<float>(-2, 2)(rng);
      d_y.upload(y0);
      quant_gemv(w, d_x.get(), d_y.get(), 1.0f, QuantDot::kInt8, nullptr);
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      const std::vector<float> y1 = d_y.download();
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_NEAR(y1[r], y0[r] + ref.quantised[r],
                    kInt8FloatRounding * ref.magnitude[r] + 4e-7 * std::fabs(y0[r]))
            << "row " << r << " (beta 1)";
      }
      for (int64_t g = 0; g < kGuard; ++g) EXPECT_EQ(y1[rows + g], y0[rows + g]);
    }
  }
}

TEST_P(QuantKernels, Int8FusedNormGemvAndSwigluAreTheUnfusedStepsAndMatchTheReference) {
  KILN_SKIP_WITHOUT_CUDA();
  const Format& f = GetParam();
  const int64_t block = quant_block_elements(f.format);
  std::mt19937 rng(23);
  const int64_t inter = 45;
  const float eps = 1e-6f;
  for (const int64_t k :
       block == 32 ? std::vector<int64_t>{896, 4864} : std::vector<int64_t>{768, 4864}) {
    SCOPED_TRACE("k = " + std::to_string(k));
    const std::vector<float> x = test::random_normal(k, rng, 3.0f);
    std::vector<float> norm_w = test::random_normal(k, rng, 0.1f);
    for (auto& v : norm_w) v += 1.0f;
    DeviceArray<float> d_x(x), d_norm(norm_w);
    const QuantMatrix m = random_matrix(f, 2 * inter, k, rng);
    const auto d_w = upload_bytes(m.bytes);
    const QuantMatrixView w = view_of(f, d_w, 2 * inter, k, m.row_bytes);

    // The unfused steps: rms_norm to BF16, then the product.
    DeviceArray<__nv_bfloat16> d_normed(static_cast<size_t>(k));
    rms_norm(d_x.get(), nullptr, d_norm.get(), d_normed.get(), 1, k, eps, nullptr);
    DeviceArray<float> d_unfused(static_cast<size_t>(2 * inter));
    quant_gemv(w, d_normed.get(), d_unfused.get(), 0.0f, QuantDot::kInt8, nullptr);
    constexpr int64_t kGuard = 3;
    DeviceArray<float> d_y(static_cast<size_t>(2 * inter + kGuard));
    rms_norm_quant_gemv(d_x.get(), d_norm.get(), eps, w, d_y.get(), 0.0f, QuantDot::kInt8, nullptr);
    DeviceArray<__nv_bfloat16> d_act(static_cast<size_t>(inter + kGuard));
    rms_norm_quant_gemv_swiglu(d_x.get(), d_norm.get(), eps, w, d_act.get(), QuantDot::kInt8,
                               nullptr);
    ASSERT_CUDA_OK(cudaDeviceSynchronize());
    const std::vector<float> y = d_y.download();
    EXPECT_TRUE(same_bits(y, d_unfused.download(), 2 * inter)) << "fused != rms_norm + gemv";
    for (int64_t g = 0; g < kGuard; ++g) EXPECT_TRUE(is_poison(y[2 * inter + g]));

    // Against float64: exactly the product with the int8 quantisation of the BF16 normalised x
    // the GPU computed, and within BF16 + int8 rounding of the unrounded normalised x.
    const std::vector<float> normed = test::from_bf16(d_normed.download());
    const RowRefs ref = row_refs(m, 2 * inter, k, normed, int8_quantise(normed));
    const std::vector<double> xn = rms_normed(x, norm_w, eps);
    std::vector<double> exact(2 * inter), err(2 * inter);
    for (int64_t r = 0; r < 2 * inter; ++r) {
      double acc = 0, abs_acc = 0;
      for (int64_t i = 0; i < k; ++i) {
        acc += m.values[r * k + i] * xn[i];
        abs_acc += std::fabs(m.values[r * k + i] * xn[i]);
      }
      exact[r] = acc;
      err[r] = abs_acc * (1.0 / 256 + 1e-4) + ref.worst[r] + 1e-6;  // BF16 of x, then int8
      ASSERT_NEAR(y[r], ref.quantised[r], kInt8FloatRounding * ref.magnitude[r] + 1e-30)
          << "row " << r;
      ASSERT_NEAR(y[r], exact[r], err[r]) << "row " << r;
    }

    // SwiGLU: out = bf16(silu(g) · u) of the same dots (one BF16 rounding, at most 2^-8 of the
    // value, and an ulp or two of expf), and within the propagated bounds of the float64
    // reference.
    const std::vector<float> act = test::from_bf16(d_act.download());
    for (int64_t i = 0; i < inter; ++i) {
      const float g = y[i], u = y[inter + i];
      const float same = g / (1.0f + std::exp(-g)) * u;
      ASSERT_NEAR(act[i], same, std::fabs(same) / 250 + 1e-30) << "SwiGLU element " << i;
      const double eg = exact[i], eu = exact[inter + i];
      const double silu = eg / (1.0 + std::exp(-eg)), want = silu * eu;
      const double tol = 1.1 * err[i] * std::fabs(eu) + std::fabs(silu) * err[inter + i] +
                         1.1 * err[i] * err[inter + i] + std::fabs(want) / 128 + 1e-6;
      ASSERT_NEAR(act[i], want, tol) << "SwiGLU element " << i;
    }
    const std::vector<__nv_bfloat16> raw_act = d_act.download();
    for (int64_t g = 0; g < kGuard; ++g) {
      const __nv_bfloat16_raw raw = raw_act[inter + g];
      EXPECT_EQ(raw.x, 0xFFFF) << "guard " << g;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The prequantised path (kernels/quant_gemv_prequant.cu): x quantised once into a device buffer,
// then the product in every layout the kernels have.

// The buffer against the specification (int8_quantise above): the int8 values, then one float
// scale per 32 elements, then one int sum per 16 elements (quant_dot_int8.cuh's layout).
void expect_quantised_x_matches_the_specification(const std::vector<float>& xf,
                                                  const std::vector<uint8_t>& buffer) {
  const size_t k = xf.size();
  ASSERT_EQ(buffer.size(), quantized_x_bytes(static_cast<int64_t>(k)));
  const Int8X spec = int8_quantise(xf);
  std::vector<float> d(k / 32);
  std::vector<int32_t> sums(k / 16);
  std::memcpy(d.data(), buffer.data() + k, d.size() * sizeof(float));
  std::memcpy(sums.data(), buffer.data() + k + d.size() * sizeof(float), sums.size() * 4);
  for (size_t b = 0; b < k / 32; ++b) {
    ASSERT_EQ(d[b], static_cast<float>(spec.scale[32 * b])) << "scale of block " << b;
  }
  for (size_t h = 0; h < k / 16; ++h) {
    int32_t sum = 0;
    for (size_t i = 16 * h; i < 16 * h + 16; ++i) {
      const auto q = static_cast<int8_t>(buffer[i]);
      const double want = spec.scale[i] == 0 ? 0.0 : spec.xhat[i] / spec.scale[i];
      ASSERT_EQ(static_cast<double>(q), want) << "element " << i;
      sum += q;
    }
    ASSERT_EQ(sums[h], sum) << "sum of half-block " << h;
  }
}

// Every layout, and for Q4_K each of them again with chunk pairs (pair_dot_q4k).
std::vector<QuantGemvLayout> every_layout(QuantFormat format) {
  std::vector<QuantGemvLayout> layouts;
  for (bool wide : {false, true}) {
    if (wide && format != QuantFormat::Q4_K) break;
    for (int s : {1, 2, 4, 8}) {
      for (int p : {0, 3}) {
        layouts.push_back(QuantGemvLayout{s, 1, p, false, wide});
        layouts.push_back(QuantGemvLayout{s, 2, p, false, wide});
        layouts.push_back(QuantGemvLayout{s, 2, p, true, wide});
        layouts.push_back(QuantGemvLayout{s, 4, p, true, wide});
      }
    }
  }
  return layouts;
}

// Awkward shapes: row counts that are not multiples of any layout's rows per block (1, 3, 37,
// 203), a few blocks of k, the 7B down_proj's k = 18944 with few rows (a row group longer than
// its threads many times over), and k = 65536, beyond the per-block path's shared memory.
TEST_P(QuantKernels, PrequantisedGemvIsTheProductWithTheInt8XInEveryLayout) {
  KILN_SKIP_WITHOUT_CUDA();
  const Format& f = GetParam();
  const int64_t block = quant_block_elements(f.format);
  std::mt19937 rng(29);
  struct Case {
    int64_t k, rows;
  };
  const std::vector<Case> cases = {{block * 3, 1}, {block * 3, 37}, {block == 32 ? 896 : 768, 203},
                                   {3584, 3},      {18944, 1},      {18944, 13},
                                   {65536, 2}};
  for (const Case& c : cases) {
    const int64_t k = c.k, rows = c.rows;
    SCOPED_TRACE("k = " + std::to_string(k) + ", rows = " + std::to_string(rows));
    const QuantMatrix m = random_matrix(f, rows, k, rng);
    std::vector<float> xf = test::random_normal(k, rng);
    for (int64_t i = 0; i < k; i += 53) xf[i] *= 16.0f;
    for (int64_t i = 64; i < std::min<int64_t>(k, 96); ++i) xf[i] = 0.0f;  // an all-zero block
    for (auto& v : xf) v = test::round_to_bf16(v);
    const auto d_w = upload_bytes(m.bytes);
    DeviceArray<__nv_bfloat16> d_x(test::to_bf16(xf));
    DeviceArray<uint8_t> d_xq(quantized_x_bytes(k));
    constexpr int64_t kGuard = 5;
    DeviceArray<float> d_y(static_cast<size_t>(rows + kGuard));
    const QuantMatrixView w = view_of(f, d_w, rows, k, m.row_bytes);

    quantize_x_int8(d_x.get(), k, d_xq.get(), nullptr);
    ASSERT_CUDA_OK(cudaDeviceSynchronize());
    expect_quantised_x_matches_the_specification(xf, d_xq.download());
    const RowRefs ref = row_refs(m, rows, k, xf, int8_quantise(xf));

    std::vector<QuantGemvLayout> layouts = every_layout(f.format);
    layouts.push_back(quant_gemv_layout(f.format, rows, k));
    for (size_t li = 0; li < layouts.size(); ++li) {
      const QuantGemvLayout l = layouts[li];
      const bool table = li + 1 == layouts.size();
      SCOPED_TRACE(std::string(table ? "the table's layout: " : "layout ") +
                   std::to_string(l.warps_per_row) + " warps per row, " +
                   std::to_string(l.rows_per_group) + " rows per group" +
                   (l.shared_x ? " sharing x, " : ", ") + (l.wide_chunks ? "chunk pairs, " : "") +
                   std::to_string(l.prefetch_lines) + " prefetch lines");
      d_y.poison();
      if (table) {
        quant_gemv_prequantized(w, d_xq.get(), d_y.get(), 0.0f, nullptr);
      } else {
        quant_gemv_prequantized(w, d_xq.get(), d_y.get(), 0.0f, l, nullptr);
      }
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      const std::vector<float> y = d_y.download();
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_NEAR(y[r], ref.quantised[r], kInt8FloatRounding * ref.magnitude[r] + 1e-30)
            << "row " << r << ": not the product with the int8 x";
      }
      for (int64_t g = 0; g < kGuard; ++g) EXPECT_TRUE(is_poison(y[rows + g])) << "guard " << g;
      // Deterministic: the same layout gives the same bits (the table's through both overloads).
      quant_gemv_prequantized(w, d_xq.get(), d_y.get(), 0.0f, l, nullptr);
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      EXPECT_TRUE(same_bits(y, d_y.download(), rows)) << "two runs differ";

      // beta = 1 accumulates into y (the residual add of o_proj / down_proj).
      std::vector<float> y0(static_cast<size_t>(rows + kGuard));
      for (auto& v : y0) v = std::uniform_real_distribution<float>(-2, 2)(rng);
      d_y.upload(y0);
      quant_gemv_prequantized(w, d_xq.get(), d_y.get(), 1.0f, l, nullptr);
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      const std::vector<float> y1 = d_y.download();
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_NEAR(y1[r], y0[r] + ref.quantised[r],
                    kInt8FloatRounding * ref.magnitude[r] + 4e-7 * std::fabs(y0[r]))
            << "row " << r << " (beta 1)";
      }
      for (int64_t g = 0; g < kGuard; ++g) EXPECT_EQ(y1[rows + g], y0[rows + g]);
    }
  }
}

// The producers of the decode step's x that quantise it in their own kernel: the same BF16
// output as the plain kernel, bit for bit, and the same buffer as quantize_x_int8 of that output,
// which is the specification's quantisation of it.
TEST(QuantKernelsShape, NormAndSwigluQuantiseTheirOutputsAsQuantizeXInt8Would) {
  KILN_SKIP_WITHOUT_CUDA();
  std::mt19937 rng(31);
  for (const int64_t dim : {int64_t{896}, int64_t{3584}, int64_t{8192}, int64_t{18944}}) {
    SCOPED_TRACE("dim = " + std::to_string(dim));
    std::vector<float> x = test::random_normal(dim, rng, 3.0f);
    for (int64_t i = 0; i < dim; i += 61) x[i] *= 20.0f;
    std::vector<float> norm_w = test::random_normal(dim, rng, 0.1f);
    for (auto& v : norm_w) v += 1.0f;
    DeviceArray<float> d_x(x), d_norm(norm_w);
    DeviceArray<__nv_bfloat16> d_plain(static_cast<size_t>(dim)), d_out(static_cast<size_t>(dim));
    DeviceArray<uint8_t> d_xq(quantized_x_bytes(dim)), d_xq_ref(quantized_x_bytes(dim));

    rms_norm(d_x.get(), nullptr, d_norm.get(), d_plain.get(), 1, dim, 1e-6f, nullptr);
    rms_norm_quantize_x(d_x.get(), d_norm.get(), d_out.get(), d_xq.get(), dim, 1e-6f, nullptr);
    quantize_x_int8(d_plain.get(), dim, d_xq_ref.get(), nullptr);
    ASSERT_CUDA_OK(cudaDeviceSynchronize());
    const std::vector<__nv_bfloat16> plain = d_plain.download(), out = d_out.download();
    EXPECT_EQ(std::memcmp(plain.data(), out.data(), plain.size() * 2), 0) << "rms_norm output";
    const std::vector<uint8_t> xq = d_xq.download();
    EXPECT_TRUE(xq == d_xq_ref.download()) << "rms_norm_quantize_x != quantize_x_int8";
    expect_quantised_x_matches_the_specification(test::from_bf16(out), xq);

    // SwiGLU of one row of [gate | up].
    std::vector<float> gate_up = test::random_normal(2 * dim, rng, 2.0f);
    DeviceArray<float> d_gate_up(gate_up);
    d_plain.poison();
    d_out.poison();
    swiglu(d_gate_up.get(), d_plain.get(), 1, dim, nullptr);
    swiglu_quantize_x(d_gate_up.get(), d_out.get(), d_xq.get(), dim, nullptr);
    quantize_x_int8(d_plain.get(), dim, d_xq_ref.get(), nullptr);
    ASSERT_CUDA_OK(cudaDeviceSynchronize());
    const std::vector<__nv_bfloat16> plain_act = d_plain.download(), act = d_out.download();
    EXPECT_EQ(std::memcmp(plain_act.data(), act.data(), act.size() * 2), 0) << "SwiGLU output";
    const std::vector<uint8_t> act_q = d_xq.download();
    EXPECT_TRUE(act_q == d_xq_ref.download()) << "swiglu_quantize_x != quantize_x_int8";
    expect_quantised_x_matches_the_specification(test::from_bf16(act), act_q);
  }
}

TEST(QuantKernelsShape, PrequantisedPathRefusesUnalignedXAndLayoutsWithoutAKernel) {
  KILN_SKIP_WITHOUT_CUDA();
  DeviceArray<__nv_bfloat16> d_x(64);
  DeviceArray<uint8_t> d_xq(quantized_x_bytes(64) + 16);
  try {
    quantize_x_int8(d_x.get(), 48, d_xq.get(), nullptr);
    ADD_FAILURE() << "k = 48 (not whole 32-element blocks) was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_INTERNAL);
    EXPECT_NE(std::string(e.what()).find("k = 48"), std::string::npos) << e.what();
  }
  DeviceArray<uint8_t> d_w(quant_row_bytes(QuantFormat::Q8_0, 64) * 2);
  const QuantMatrixView w{d_w.get(), QuantFormat::Q8_0, 2, 64,
                          quant_row_bytes(QuantFormat::Q8_0, 64)};
  for (const QuantGemvLayout l :
       {QuantGemvLayout{3, 1, 0, false}, QuantGemvLayout{1, 4, 0, false},
        QuantGemvLayout{1, 1, -1, false}, QuantGemvLayout{1, 3, 0, true}}) {
    try {
      quant_gemv_prequantized(w, d_xq.get(), nullptr, 0.0f, l, nullptr);
      ADD_FAILURE() << "layout " << l.warps_per_row << "/" << l.rows_per_group << "/"
                    << l.prefetch_lines << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), KILN_ERR_INTERNAL);
      EXPECT_NE(std::string(e.what()).find("no kernel for"), std::string::npos) << e.what();
    }
  }
  try {
    quant_gemv_prequantized(w, d_xq.get() + 4, nullptr, 0.0f, nullptr);
    ADD_FAILURE() << "an unaligned x buffer was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_INTERNAL);
  }
}

TEST(QuantKernelsShape, Int8PathTakesWholeBlocksWhileXFitsSharedMemory) {
  for (const Format& f : formats()) {
    const int64_t block = quant_block_elements(f.format);
    EXPECT_TRUE(quant_dot_int8_supported(f.format, block * 19)) << f.name;
    EXPECT_TRUE(quant_dot_int8_supported(f.format, 18944)) << f.name;   // 7B down_proj
    EXPECT_FALSE(quant_dot_int8_supported(f.format, 65536)) << f.name;  // 88 KiB of x in shared
    EXPECT_FALSE(quant_dot_int8_supported(f.format, block * 3 + block / 2)) << f.name;
    EXPECT_FALSE(quant_dot_int8_supported(f.format, 0)) << f.name;
  }
}

TEST(QuantKernelsShape, RowBytesFollowTheGgufBlockSizes) {
  // Independent of the GPU: ggml's block sizes (elements, bytes) per format.
  EXPECT_EQ(quant_row_bytes(QuantFormat::Q8_0, 64), 68u);
  EXPECT_EQ(quant_row_bytes(QuantFormat::Q4_0, 64), 36u);
  EXPECT_EQ(quant_row_bytes(QuantFormat::Q4_1, 64), 40u);
  EXPECT_EQ(quant_row_bytes(QuantFormat::Q5_0, 64), 44u);
  EXPECT_EQ(quant_row_bytes(QuantFormat::Q5_1, 64), 48u);
  EXPECT_EQ(quant_row_bytes(QuantFormat::Q4_K, 512), 288u);
  EXPECT_EQ(quant_row_bytes(QuantFormat::Q5_K, 512), 352u);
  EXPECT_EQ(quant_row_bytes(QuantFormat::Q6_K, 512), 420u);
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantKernels, ::testing::ValuesIn(formats()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kiln::cuda

#else

TEST(CudaQuantKernels, NotBuilt) { GTEST_SKIP() << "built without CUDA (KILN_CUDA=OFF)"; }

#endif
