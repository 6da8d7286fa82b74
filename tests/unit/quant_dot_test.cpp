// The CPU backend's integer dot kernels for block-quantised weights, against float64 references:
// weights from the float64 reference dequantiser (ggml_reference.hpp, written from the formats'
// definitions), activations either as the kernels see them (8-bit blocks) or as float32.
//
// Error budget. The kernels compute Σ_j w_j x̂_j, where x̂_j = d_b q_j is the 8-bit rounding of
// x_j in activation block b (d_b = max|x| over the block / 127, so |x_j − x̂_j| <= d_b / 2).
//  (1) Against the same 8-bit activations, only float32 rounding remains: a few roundings per
//      block (the float16 factors times d_b, the integer sum converted, one subtraction) and one
//      per block in the running sum. With M = Σ_j (|w_j| + |min part of w_j|) · |x̂_j| (the
//      magnitudes of everything summed, minimums included since they are subtracted whole), the
//      error is at most (blocks + 8) · 2^-24 · M.
//  (2) Against the float32 activations: add the activation rounding, at most
//      Σ_b (d_b / 2) Σ_{j in b} |w_j|.
#include "backend/cpu/quant_dot.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/quant_activation.hpp"
#include "backend/cpu/quant_kernel_util.hpp"
#include "backend/cpu/quant_matmul.hpp"
#include "ggml_reference.hpp"

namespace kiln {
namespace {

using cpu::ActBlock256;
using cpu::ActBlock32;
using quant::GgmlType;

const quant::GgmlTypeInfo& info_of(GgmlType t) {
  return *quant::find_ggml_type(static_cast<uint32_t>(t));
}

// The part of element k that the format subtracts (or adds) as a block / sub-block minimum.
double min_part(GgmlType t, const uint8_t* b, int k) {
  switch (t) {
    case GgmlType::Q4_1:
    case GgmlType::Q5_1:
      return test::half(b + 2);
    case GgmlType::Q2_K:
      return test::half(b + 82) * (b[k / 16] >> 4);
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      int scale = 0, min = 0;
      test::k4_scale_min(b + 4, k / 32, scale, min);
      return test::half(b + 2) * min;
    }
    default:
      return 0.0;
  }
}

// A row of `n` random float32 activations: normal values with a few outliers and an all-zero
// stretch (its blocks have scale 0).
std::vector<float> random_activations(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(rng);
  for (int64_t i = 0; i < n; i += 97) x[static_cast<size_t>(i)] *= 20.0f;
  for (int64_t i = 0; i < std::min<int64_t>(n, 40); ++i) x[static_cast<size_t>(n - 1 - i)] = 0;
  return x;
}

// 8-bit activations (as the kernels' format) for x.
struct Activations {
  std::vector<ActBlock32> b32;
  std::vector<ActBlock256> b256;
  const void* data(cpu::ActFormat f) const {
    return f == cpu::ActFormat::Block32 ? static_cast<const void*>(b32.data()) : b256.data();
  }
  // x̂_j.
  double value(cpu::ActFormat f, int64_t j) const {
    if (f == cpu::ActFormat::Block32) {
      const ActBlock32& b = b32[static_cast<size_t>(j / 32)];
      return static_cast<double>(b.d) * b.q[j % 32];
    }
    const ActBlock256& b = b256[static_cast<size_t>(j / 256)];
    return static_cast<double>(b.d) * b.q[j % 256];
  }
};

Activations quantize(const std::vector<float>& x) {
  Activations a;
  const auto n = static_cast<int64_t>(x.size());
  if (n % 32 == 0) {
    a.b32.resize(static_cast<size_t>(n / 32));
    cpu::quantize_act_32(x.data(), a.b32.data(), n);
  }
  if (n % 256 == 0) {
    a.b256.resize(static_cast<size_t>(n / 256));
    cpu::quantize_act_256(x.data(), a.b256.data(), n);
  }
  return a;
}

// One weight row against activations, all in float64.
struct RowReference {
  double exact = 0;      // Σ w_j x_j
  double vs_act8 = 0;    // Σ w_j x̂_j
  double magnitude = 0;  // M of the error budget
  double act_bound = 0;  // Σ_b (d_b / 2) Σ_{j in b} |w_j|
};

RowReference row_reference(GgmlType t, const uint8_t* row, const std::vector<float>& x,
                           const Activations& a, cpu::ActFormat f) {
  const quant::GgmlTypeInfo& info = info_of(t);
  RowReference r;
  const auto n = static_cast<int64_t>(x.size());
  const int64_t act_block = f == cpu::ActFormat::Block32 ? 32 : 256;
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* block = row + (j / info.block_size) * info.block_bytes;
    const int k = static_cast<int>(j % info.block_size);
    const double w = test::reference(t, block, k);
    const double xq = a.value(f, j);
    r.exact += w * x[static_cast<size_t>(j)];
    r.vs_act8 += w * xq;
    r.magnitude += (std::fabs(w) + std::fabs(min_part(t, block, k))) * std::fabs(xq);
    // d_b from its definition, in float64, from the float32 activations.
    double amax = 0;
    const int64_t b0 = j / act_block * act_block;
    for (int64_t i = b0; i < b0 + act_block; ++i) {
      amax = std::max(amax, std::fabs(static_cast<double>(x[static_cast<size_t>(i)])));
    }
    r.act_bound += amax / 127.0 / 2.0 * std::fabs(w);
  }
  return r;
}

class QuantDot : public ::testing::TestWithParam<GgmlType> {};

TEST_P(QuantDot, EqualsFloat64DotOfTheSameActivationsAndStaysInTheActivationRoundingBound) {
  const GgmlType t = GetParam();
  const cpu::QuantDotKernel* kernel = cpu::find_quant_dot(t);
  ASSERT_NE(kernel, nullptr);
  const quant::GgmlTypeInfo& info = info_of(t);
  EXPECT_EQ(kernel->block_size, info.block_size);
  EXPECT_EQ(kernel->block_bytes, info.block_bytes);
  std::mt19937 rng(77 + static_cast<unsigned>(t));
  // Awkward lengths: one block, odd counts, counts not a multiple of any vector width.
  const std::vector<int> block_counts =
      info.block_size == 32 ? std::vector<int>{1, 3, 7, 37, 129} : std::vector<int>{1, 2, 5, 11};
  for (int blocks : block_counts) {
    const int64_t k = blocks * info.block_size;
    const auto x = random_activations(k, rng);
    const Activations a = quantize(x);
    for (int rep = 0; rep < 4; ++rep) {
      auto row = test::random_blocks(t, blocks, rng);
      // Shift by one byte on odd repetitions: file data is only byte-aligned.
      std::vector<uint8_t> storage(row.size() + 1);
      uint8_t* w = storage.data() + (rep % 2);
      std::copy(row.begin(), row.end(), w);
      const double got = kernel->dot(w, a.data(kernel->act), blocks);
      const RowReference r = row_reference(t, w, x, a, kernel->act);
      const double float_bound = (blocks + 8) * std::ldexp(1.0, -24) * r.magnitude;
      EXPECT_LE(std::fabs(got - r.vs_act8), float_bound)
          << info.name << " blocks " << blocks << " rep " << rep << ": got " << got
          << ", float64 with the same 8-bit activations " << r.vs_act8;
      EXPECT_LE(std::fabs(got - r.exact), r.act_bound + float_bound)
          << info.name << " blocks " << blocks << ": got " << got << ", float64 exact " << r.exact;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllKernels, QuantDot,
                         ::testing::Values(GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                                           GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q2_K,
                                           GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K,
                                           GgmlType::Q6_K),
                         [](const auto& p) { return std::string(info_of(p.param).name); });

TEST(QuantDot, NoKernelForPlainFloatsAndMxfp4) {
  EXPECT_EQ(cpu::find_quant_dot(GgmlType::F32), nullptr);
  EXPECT_EQ(cpu::find_quant_dot(GgmlType::F16), nullptr);
  EXPECT_EQ(cpu::find_quant_dot(GgmlType::MXFP4), nullptr);
}

TEST(QuantActivation, RoundsEachValueToTheNearestStepOfItsBlock) {
  std::mt19937 rng(5);
  const auto x = random_activations(256 * 6, rng);
  const Activations a = quantize(x);
  for (size_t j = 0; j < x.size(); ++j) {
    for (const auto f : {cpu::ActFormat::Block32, cpu::ActFormat::Block256}) {
      const int64_t size = f == cpu::ActFormat::Block32 ? 32 : 256;
      double amax = 0;
      for (size_t i = j / size * size; i < (j / size + 1) * size; ++i) {
        amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
      }
      const double d = f == cpu::ActFormat::Block32 ? a.b32[j / 32].d : a.b256[j / 256].d;
      // d is max|x| / 127 rounded to float32.
      EXPECT_NEAR(d, amax / 127.0, amax / 127.0 * std::ldexp(1.0, -23)) << j;
      EXPECT_LE(std::fabs(x[j] - a.value(f, static_cast<int64_t>(j))), d / 2 * (1 + 1e-6)) << j;
    }
  }
  // The sums the minimum terms use.
  for (const ActBlock32& b : a.b32) {
    int s = 0;
    for (int8_t q : b.q) s += q;
    EXPECT_FLOAT_EQ(b.sum, b.d * static_cast<float>(s));
  }
  for (const ActBlock256& b : a.b256) {
    for (int i = 0; i < 16; ++i) {
      int s = 0;
      for (int j = 0; j < 16; ++j) s += b.q[16 * i + j];
      EXPECT_EQ(b.bsums[i], s);
    }
  }
  // The zero tail gives scale 0 and zero codes, not NaN.
  EXPECT_EQ(a.b32.back().d, 0.0f);
  for (int8_t q : a.b32.back().q) EXPECT_EQ(q, 0);
}

TEST(QuantKernelUtil, HalfToFloatIsExactForEveryPattern) {
  for (int h = 0; h < 65536; ++h) {
    const uint8_t bytes[2] = {static_cast<uint8_t>(h & 0xFF), static_cast<uint8_t>(h >> 8)};
    const double want = test::half(bytes);
    const float got = cpu::load_half(bytes);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << h;
      EXPECT_EQ(std::signbit(got), (h & 0x8000) != 0) << h;
    }
  }
}

// The threaded matrix products: every output is the kernel's dot of its row, whatever the thread
// count (bit-identical), and the dequantise + sgemm path is the float64 product with the exact
// weights up to float32 rounding.
TEST(QuantMatmul, ThreadedProductsAgreeWithTheFloat64Reference) {
  std::mt19937 rng(9);
  for (const GgmlType t : {GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::Q6_K}) {
    const quant::GgmlTypeInfo& info = info_of(t);
    const int blocks = info.block_size == 32 ? 9 : 3;
    const int64_t k = blocks * info.block_size;
    for (const int64_t n : {int64_t{1}, int64_t{17}, int64_t{45}}) {
      for (const int64_t m : {int64_t{1}, int64_t{5}, int64_t{19}}) {
        const auto w = test::random_blocks(t, static_cast<int>(n) * blocks, rng);
        std::vector<float> x, bias(static_cast<size_t>(n));
        for (int64_t i = 0; i < m; ++i) {
          const auto row = random_activations(k, rng);
          x.insert(x.end(), row.begin(), row.end());
        }
        for (auto& b : bias) b = std::normal_distribution<float>(0, 1)(rng);
        const cpu::QuantMatrix qm{w.data(), cpu::find_quant_dot(t)};
        std::vector<float> y1(static_cast<size_t>(m * n)), y3(y1.size()), yd(y1.size());
        cpu::linear_quant(x.data(), qm, bias.data(), y1.data(), m, k, n, 1);
        cpu::linear_quant(x.data(), qm, bias.data(), y3.data(), m, k, n, 3);
        cpu::linear_quant_dequant(x.data(), qm, bias.data(), yd.data(), m, k, n, 2);
        EXPECT_EQ(y1, y3) << info.name << " n " << n << " m " << m;
        for (int64_t i = 0; i < m; ++i) {
          const std::vector<float> xi(x.begin() + i * k, x.begin() + (i + 1) * k);
          const Activations a = quantize(xi);
          for (int64_t r = 0; r < n; ++r) {
            const uint8_t* row = w.data() + static_cast<size_t>(r * blocks) * info.block_bytes;
            const RowReference ref = row_reference(t, row, xi, a, qm.kernel->act);
            const double float_bound =
                (blocks + 8) * std::ldexp(1.0, -24) * ref.magnitude + 1e-6 * std::fabs(bias[r]);
            const float got = y1[static_cast<size_t>(i * n + r)];
            EXPECT_NEAR(got, ref.vs_act8 + bias[r], float_bound)
                << info.name << " " << i << "," << r;
            // sgemm sums k products in float32: k · 2^-24 · Σ|w x| bounds its rounding.
            double abs_sum = 0;
            for (int64_t j = 0; j < k; ++j) {
              abs_sum +=
                  std::fabs(test::reference(t, row + (j / info.block_size) * info.block_bytes,
                                            static_cast<int>(j % info.block_size)) *
                            xi[static_cast<size_t>(j)]);
            }
            EXPECT_NEAR(yd[static_cast<size_t>(i * n + r)], ref.exact + bias[r],
                        (k + 2) * std::ldexp(1.0, -24) * (abs_sum + std::fabs(bias[r])))
                << info.name << " dequant path " << i << "," << r;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace kiln
