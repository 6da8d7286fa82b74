// The ggml block dequantisers, bit-exact against a float64 reference (ggml_reference.hpp) from the
// formats' definitions (ggml-common.h block comments, the OCP MX spec for MXFP4): each element is
// located by its index k in the block — which byte, which bits, which sub-block scale — computed
// in float64 and rounded once to float32. Checked on random blocks and on every tensor of
// llama.cpp's tiny-qwen2 GGUF files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "formats/gguf.hpp"
#include "formats/quant/ggml_type.hpp"
#include "ggml_reference.hpp"
#include "test_support.hpp"

namespace kiln {
namespace {

using quant::GgmlType;
using test::random_blocks;
using test::reference;
namespace fs = std::filesystem;

bool same_float(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::memcmp(&a, &b, 4) == 0;
}

// Dequantises `n` elements with kiln and the reference; returns the number of differing bits.
void expect_bit_exact(GgmlType t, const uint8_t* data, int64_t n, const std::string& what) {
  const quant::GgmlTypeInfo* info = quant::find_ggml_type(static_cast<uint32_t>(t));
  ASSERT_NE(info, nullptr);
  std::vector<float> got(static_cast<size_t>(n), -12345.0f);
  quant::dequantize(t, data, got.data(), n);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* block = data + (i / info->block_size) * info->block_bytes;
    const float want =
        static_cast<float>(reference(t, block, static_cast<int>(i % info->block_size)));
    if (!same_float(got[static_cast<size_t>(i)], want)) {
      if (bad++ < 5) {
        ADD_FAILURE() << what << " " << info->name << " element " << i << ": got "
                      << got[static_cast<size_t>(i)] << ", reference " << want;
      }
    }
  }
  EXPECT_EQ(bad, 0) << what << " " << info->name;
}

class RandomBlocks : public ::testing::TestWithParam<GgmlType> {};

TEST_P(RandomBlocks, BitExactAgainstFloat64Reference) {
  std::mt19937 rng(1234 + static_cast<unsigned>(GetParam()));
  const quant::GgmlTypeInfo* info = quant::find_ggml_type(static_cast<uint32_t>(GetParam()));
  const int blocks = info->block_size == 1 ? 4096 : 200;
  const auto data = random_blocks(GetParam(), blocks, rng);
  expect_bit_exact(GetParam(), data.data(), blocks * info->block_size, "random blocks");
  // Unaligned source: the file's blocks are only byte-aligned.
  std::vector<uint8_t> shifted(data.size() + 1);
  std::memcpy(shifted.data() + 1, data.data(), data.size());
  expect_bit_exact(GetParam(), shifted.data() + 1, blocks * info->block_size, "unaligned blocks");
}

INSTANTIATE_TEST_SUITE_P(AllTypes, RandomBlocks,
                         ::testing::Values(GgmlType::F32, GgmlType::F16, GgmlType::BF16,
                                           GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                                           GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q2_K,
                                           GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K,
                                           GgmlType::Q6_K, GgmlType::MXFP4),
                         [](const auto& info) {
                           return std::string(
                               quant::find_ggml_type(static_cast<uint32_t>(info.param))->name);
                         });

// Every float16 bit pattern (subnormals, infinities, NaNs included).
TEST(Dequantize, EveryF16Pattern) {
  std::vector<uint8_t> all(2 * 65536);
  for (int i = 0; i < 65536; ++i) {
    all[2 * i] = static_cast<uint8_t>(i & 0xFF);
    all[2 * i + 1] = static_cast<uint8_t>(i >> 8);
  }
  expect_bit_exact(GgmlType::F16, all.data(), 65536, "all patterns");
}

// Every E8M0 exponent with every code, including the subnormal scales 2^-128, 2^-127 and the top
// exponent, where 12 × 2^127 overflows to infinity as in float32.
TEST(Dequantize, EveryMxfp4ExponentAndCode) {
  std::vector<uint8_t> blocks(256 * 17);
  for (int e = 0; e < 256; ++e) {
    blocks[e * 17] = static_cast<uint8_t>(e);
    for (int j = 0; j < 16; ++j) blocks[e * 17 + 1 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  }
  expect_bit_exact(GgmlType::MXFP4, blocks.data(), 256 * 32, "all exponents");
}

TEST(Dequantize, EveryTensorOfLlamaCppsFiles) {
  const fs::path dir = test::fixtures_dir() / "gguf" / "tiny-qwen2";
  int checked = 0;
  for (const char* type : {"f32", "f16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"}) {
    const auto f = GgufFile::open(dir / ("tiny-qwen2-" + std::string(type) + ".gguf"));
    for (const GgufTensor& t : f->tensors()) {
      expect_bit_exact(t.type, t.data, t.numel(), std::string(type) + " " + t.name);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 7 * 26);
}

TEST(Dequantize, TypeTableMatchesTheBlockLayouts) {
  // Bytes per block from the layouts' field lists (ggml-common.h), not from sizeof.
  const std::pair<GgmlType, size_t> expected[] = {{GgmlType::Q4_0, 2 + 16},
                                                  {GgmlType::Q4_1, 2 + 2 + 16},
                                                  {GgmlType::Q5_0, 2 + 4 + 16},
                                                  {GgmlType::Q5_1, 2 + 2 + 4 + 16},
                                                  {GgmlType::Q8_0, 2 + 32},
                                                  {GgmlType::Q2_K, 16 + 64 + 2 + 2},
                                                  {GgmlType::Q3_K, 32 + 64 + 12 + 2},
                                                  {GgmlType::Q4_K, 2 + 2 + 12 + 128},
                                                  {GgmlType::Q5_K, 2 + 2 + 12 + 32 + 128},
                                                  {GgmlType::Q6_K, 128 + 64 + 16 + 2},
                                                  {GgmlType::MXFP4, 1 + 16}};
  for (const auto& [type, bytes] : expected) {
    EXPECT_EQ(quant::find_ggml_type(static_cast<uint32_t>(type))->block_bytes, bytes);
  }
  EXPECT_EQ(quant::find_ggml_type(9), nullptr);  // q8_1: not a storage type kiln reads
  EXPECT_EQ(quant::ggml_type_name(23), "iq4_xs");
}

}  // namespace
}  // namespace kiln
