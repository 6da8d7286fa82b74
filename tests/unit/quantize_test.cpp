// kiln's GGUF writing side: the float32 → block quantisers against the float64 reference
// dequantiser (ggml_reference.hpp) with per-element error bounds derived from each format's rule
// (formats/quant/quantize.hpp), float → half rounding against its definition, and the files
// kiln_model_quantize writes, re-read by kiln's GGUF reader and compared with llama.cpp's files of
// the same model (tests/fixtures/gguf/tiny-qwen2).
#include "formats/quant/quantize.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/quantize_model.hpp"
#include "formats/gguf.hpp"
#include "ggml_reference.hpp"
#include "model/config.hpp"
#include "test_support.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using quant::GgmlType;

std::vector<float> weights_like(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(rng);
  for (int64_t i = 0; i < n; i += 211) x[static_cast<size_t>(i)] *= 15.0f;         // outliers
  for (int64_t i = 0; i < 32; ++i) x[static_cast<size_t>(n - 1 - i)] = 0.0f;       // a zero block
  for (int64_t i = 256; i < 288 && i < n; ++i) x[static_cast<size_t>(i)] = 0.01f;  // one sign
  return x;
}

// The per-element bound of the format's rule for element k of block b (see quantize.hpp):
//   Q8_0: d/2, or the clamp loss max|x| − 127 d when the f16 rounding of d shrank it;
//   Q5_0: |d|/2, or the clamp loss max|x| − 15|d| for the values of the sign opposite to the
//         largest-magnitude one (the codes reach 15|d| on that side, 16|d| on the other);
//   Q4_K: d·sc/2 + dmin/2 + 7.5 d (the sub-block's integer scale and min each off by at most
//         half a step of the super-block factors, which moves the range ends by 15·d/2, dmin/2);
//   Q6_K: d·sc/2 + 15.5 d (the range end 31·d·sc is off by at most 31·d/2).
double bound(GgmlType t, const uint8_t* b, int k, const float* block_values) {
  switch (t) {
    case GgmlType::Q8_0: {
      const double d = test::half(b);
      double amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(double(block_values[j])));
      return std::max(d / 2, amax - 127 * d);
    }
    case GgmlType::Q5_0: {
      const double d = std::fabs(test::half(b));
      double amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(double(block_values[j])));
      return std::max(d / 2, amax - 15 * d);
    }
    case GgmlType::Q4_K: {
      int sc = 0, mn = 0;
      test::k4_scale_min(b + 4, k / 32, sc, mn);
      const double d = test::half(b), dmin = test::half(b + 2);
      return d * sc / 2 + dmin / 2 + 7.5 * d;
    }
    case GgmlType::Q6_K: {
      const double d = test::half(b + 208);
      return d * std::fabs(static_cast<int8_t>(b[192 + k / 16])) / 2 + 15.5 * d;
    }
    default:
      return 0;
  }
}

class Quantiser : public ::testing::TestWithParam<GgmlType> {};

TEST_P(Quantiser, DequantisedValuesStayWithinTheFormatsRoundingBound) {
  const GgmlType t = GetParam();
  const quant::GgmlTypeInfo& info = *quant::find_ggml_type(static_cast<uint32_t>(t));
  std::mt19937 rng(3);
  const int64_t n = 256 * 12;
  const auto x = weights_like(n, rng);
  std::vector<uint8_t> q(quant::quantized_bytes(t, n));
  quant::quantize(t, x.data(), q.data(), n);
  double sum_sq_err = 0, sum_sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* block = q.data() + (i / info.block_size) * info.block_bytes;
    const int k = static_cast<int>(i % info.block_size);
    const double got = test::reference(t, block, k);
    const double err = std::fabs(got - x[static_cast<size_t>(i)]);
    const double b = bound(t, block, k, x.data() + (i / info.block_size) * info.block_size);
    EXPECT_LE(err, b * (1 + 1e-6) + 1e-12) << info.name << " element " << i;
    sum_sq_err += err * err;
    sum_sq += double(x[static_cast<size_t>(i)]) * x[static_cast<size_t>(i)];
  }
  // The zero block comes back exactly zero.
  for (int64_t i = n - 32; i < n; ++i) {
    EXPECT_EQ(test::reference(t, q.data() + (i / info.block_size) * info.block_bytes,
                              static_cast<int>(i % info.block_size)),
              0.0)
        << i;
  }
  std::printf("[quantize] %s relative RMS error on normal(0, 0.02) weights: %.4f\n", info.name,
              std::sqrt(sum_sq_err / sum_sq));
}

INSTANTIATE_TEST_SUITE_P(Types, Quantiser,
                         ::testing::Values(GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4_K,
                                           GgmlType::Q6_K),
                         [](const auto& p) {
                           return std::string(
                               quant::find_ggml_type(static_cast<uint32_t>(p.param))->name);
                         });

// Every half converts back to itself; random floats go to the nearer neighbour, ties to even.
TEST(Quantiser, FloatToHalfRoundsToNearestEven) {
  for (int h = 0; h < 0x10000; ++h) {
    const uint8_t bytes[2] = {static_cast<uint8_t>(h & 0xFF), static_cast<uint8_t>(h >> 8)};
    const double v = test::half(bytes);
    if (std::isnan(v)) continue;
    EXPECT_EQ(quant::float_to_half(static_cast<float>(v)), h) << h;
  }
  std::mt19937 rng(4);
  std::uniform_int_distribution<uint32_t> bits(0, 0x477FEFFFu);  // finite halves' range
  for (int i = 0; i < 200000; ++i) {
    uint32_t u = bits(rng);
    float f;
    std::memcpy(&f, &u, 4);
    const uint16_t h = quant::float_to_half(f);
    const auto value = [](int hh) {
      const uint8_t b[2] = {static_cast<uint8_t>(hh & 0xFF), static_cast<uint8_t>(hh >> 8)};
      return test::half(b);
    };
    const double err = std::fabs(value(h) - f);
    if (h > 0) {
      EXPECT_LE(err, std::fabs(value(h - 1) - f)) << f;
    }
    if (h < 0x7BFF) {
      EXPECT_LE(err, std::fabs(value(h + 1) - f)) << f;
    }
    if (h > 0 && h < 0x7BFF &&
        (err == std::fabs(value(h - 1) - f) || err == std::fabs(value(h + 1) - f))) {
      EXPECT_EQ(h & 1, 0) << f;  // a tie went to the even neighbour
    }
  }
  EXPECT_EQ(quant::float_to_half(70000.0f), 0x7C00);
  EXPECT_EQ(quant::float_to_half(-0.0f), 0x8000);
}

fs::path gguf_fixtures() { return test::fixtures_dir() / "gguf" / "tiny-qwen2"; }

// The written file through kiln's own reader: header, alignment, metadata, tensor table.
TEST(QuantizeModel, WrittenFileReadsBackWithTheHfHyperParametersAndLlamaCppsTypeMix) {
  const fs::path dir = test::temp_dir("quantize-model");
  const fs::path out = dir / "q4_k_m.gguf";
  quantize_model(test::fixtures_dir() / "tiny-qwen2", out, QuantizeTarget::Q4_K_M, 2, nullptr);
  const auto f = GgufFile::open(out);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->get_string("general.architecture"), "qwen2");
  EXPECT_EQ(f->get_integer("general.file_type"), 15);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  const ModelConfig hf = load_model_config(test::fixtures_dir() / "tiny-qwen2");
  EXPECT_EQ(f->get_integer("qwen2.embedding_length"), hf.hidden_size);
  EXPECT_EQ(f->get_integer("qwen2.block_count"), hf.n_layers);
  EXPECT_EQ(f->get_integer("qwen2.feed_forward_length"), hf.intermediate_size);
  EXPECT_EQ(f->get_integer("qwen2.attention.head_count"), hf.n_heads);
  EXPECT_EQ(f->get_integer("qwen2.attention.head_count_kv"), hf.n_kv_heads);
  EXPECT_EQ(f->get_number("qwen2.rope.freq_base"), hf.rope_theta);
  EXPECT_FLOAT_EQ(static_cast<float>(*f->get_number("qwen2.attention.layer_norm_rms_epsilon")),
                  hf.rms_norm_eps);
  EXPECT_EQ(f->get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f->get_string("tokenizer.ggml.pre"), "qwen2");
  EXPECT_EQ(f->get_array("tokenizer.ggml.tokens")->items.size(), 512u);
  // Same tensors, same types as llama.cpp's own Q4_K_M file of this model.
  const auto ref = GgufFile::open(gguf_fixtures() / "tiny-qwen2-q4_k_m.gguf");
  ASSERT_EQ(f->tensors().size(), ref->tensors().size());
  for (const GgufTensor& r : ref->tensors()) {
    const GgufTensor* t = f->find_tensor(r.name);
    ASSERT_NE(t, nullptr) << r.name;
    EXPECT_EQ(t->dims, r.dims) << r.name;
    EXPECT_EQ(t->type, r.type) << r.name << ": kiln " << static_cast<int>(t->type) << ", llama.cpp "
                               << static_cast<int>(r.type);
    EXPECT_EQ(t->offset % 32, 0u) << r.name;
  }
}

// A model whose rows are not whole super-blocks (tests/fixtures/hf/qwen2: hidden 64, ffn 160,
// 2 layers, tied): llama.cpp's fallbacks, q5_0 for Q4_K and q8_0 for Q6_K. use_more_bits(i, 2)
// holds for layer 1 only (i >= 7·2/8 = 1); the tied embeddings take the output's Q6_K → q8_0.
TEST(QuantizeModel, Q4_K_MRowsOfPartialSuperBlocksTakeLlamaCppsFallbacks) {
  const fs::path out = test::temp_dir("quantize-fallback") / "q4_k_m.gguf";
  quantize_model(test::fixtures_dir() / "hf" / "qwen2", out, QuantizeTarget::Q4_K_M, 2, nullptr);
  const auto f = GgufFile::open(out);
  const auto type_of = [&](const std::string& name) {
    const GgufTensor* t = f->find_tensor(name);
    EXPECT_NE(t, nullptr) << name;
    return t ? static_cast<GgmlType>(t->type) : GgmlType::F32;
  };
  EXPECT_EQ(type_of("token_embd.weight"), GgmlType::Q8_0);
  EXPECT_EQ(type_of("blk.0.attn_q.weight"), GgmlType::Q5_0);
  EXPECT_EQ(type_of("blk.0.attn_v.weight"), GgmlType::Q5_0);
  EXPECT_EQ(type_of("blk.1.attn_v.weight"), GgmlType::Q8_0);
  EXPECT_EQ(type_of("blk.0.ffn_down.weight"), GgmlType::Q5_0);
  EXPECT_EQ(type_of("blk.1.ffn_down.weight"), GgmlType::Q8_0);
  EXPECT_EQ(type_of("blk.1.ffn_up.weight"), GgmlType::Q5_0);
  EXPECT_EQ(type_of("blk.1.attn_norm.weight"), GgmlType::F32);
}

// F16 is round-to-nearest-even in both writers: kiln's F16 file holds llama.cpp's F16 bytes.
TEST(QuantizeModel, F16TensorsAreByteIdenticalToLlamaCpps) {
  const fs::path dir = test::temp_dir("quantize-f16");
  const fs::path out = dir / "f16.gguf";
  quantize_model(test::fixtures_dir() / "tiny-qwen2", out, QuantizeTarget::F16, 1, nullptr);
  const auto f = GgufFile::open(out);
  const auto ref = GgufFile::open(gguf_fixtures() / "tiny-qwen2-f16.gguf");
  for (const GgufTensor& r : ref->tensors()) {
    const GgufTensor* t = f->find_tensor(r.name);
    ASSERT_NE(t, nullptr) << r.name;
    ASSERT_EQ(t->type, r.type) << r.name;
    ASSERT_EQ(t->nbytes, r.nbytes) << r.name;
    EXPECT_EQ(std::memcmp(t->data, r.data, r.nbytes), 0) << r.name;
  }
}

}  // namespace
}  // namespace kiln
