// The CUDA executor on a small random model whose matrices are GGUF block-quantised, each role in
// its own format as llama.cpp's mixes do (q/k and v in different formats: a q/k/v matrix of two
// segments; gate and up in different formats: the decode step's unfused SwiGLU fallback; Phi3's
// fused projections as row slices of one quantised tensor; the embedding and an untied lm_head
// quantised too: gathered and multiplied quantised, the lm_head in vocabulary tiles for many-row
// logits). The reference is the CPU executor on the same
// weights dequantised to float32 by kiln::quant::dequantize (checked bit for bit against
// llama.cpp in gguf_dequant_test), so the only differences are the CUDA path's BF16 activations
// and KV cache. Prefill and token-by-token decode. Without a GPU (CI) every test skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_transformer.hpp"
#include "backend/cuda/cuda_transformer.hpp"
#include "backend/cuda/device_memory.hpp"
#include "core/error.hpp"
#include "cuda_test_util.hpp"
#include "formats/quant/ggml_type.hpp"
#include "formats/quant/quantize.hpp"
#include "test_support.hpp"

namespace kiln::cuda {
namespace {

using kiln::test::relative_l2;
using quant::GgmlType;

// A float16 field of a block (d, or the m / dmin subtracted): its byte offset and the largest
// magnitude it is multiplied by in the block's values (the largest |quant| times the largest
// sub-block scale), so that every format can be given weights of one common size.
struct HalfField {
  int offset;
  double largest_multiplier;
};
std::vector<HalfField> half_fields(GgmlType t) {
  switch (t) {
    case GgmlType::Q8_0:
      return {{0, 128}};
    case GgmlType::Q4_0:
      return {{0, 8}};
    case GgmlType::Q5_0:
      return {{0, 16}};
    case GgmlType::Q4_1:
      return {{0, 15}, {2, 1}};
    case GgmlType::Q5_1:
      return {{0, 31}, {2, 1}};
    case GgmlType::Q4_K:
      return {{0, 63 * 15}, {2, 63}};  // 6-bit scales and mins
    case GgmlType::Q5_K:
      return {{0, 63 * 31}, {2, 63}};
    case GgmlType::Q6_K:
      return {{208, 128 * 32}};  // int8 scales, quants -32..31
    case GgmlType::Q3_K:
      return {{108, 32 * 4}};  // scales -32..31, quants -4..3
    default:
      ADD_FAILURE() << "no half fields for this format";
      return {};
  }
}

// Each tensor twice: as random blocks of its format (what the CUDA executor gets) and dequantised
// to float32 (what the CPU reference gets).
class QuantPool {
 public:
  explicit QuantPool(uint32_t seed) : rng_(seed) {}

  std::pair<const TensorView*, const TensorView*> matrix(const std::string& name, int64_t rows,
                                                         int64_t cols, GgmlType type) {
    const quant::GgmlTypeInfo* info = quant::find_ggml_type(static_cast<uint32_t>(type));
    const int64_t n = rows * cols;
    auto& bytes =
        buffers_.emplace_back(static_cast<size_t>(n / info->block_size) * info->block_bytes);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng_());
    // Each float16 field scaled so that the block's largest possible |weight| is in
    // [2^-6, 2^-4) whatever the format (random sign, octave and mantissa; for the K-quants a
    // subnormal half, as real files have). Raw random halves give Q6_K weights ~100 times those of
    // Q4_0, and a model whose attention and SwiGLU amplify the BF16 rounding (2^-9) of the CUDA
    // path's activations and KV cache into 0.1 relative error in the logits (a float64 forward
    // rounding at the same points predicts it), leaving nothing to test. At this size that
    // rounding costs 2-4e-3, while dropping one MLP or shifting v by a row costs over 7e-2.
    std::uniform_real_distribution<double> mantissa(1.0, 2.0);
    for (size_t b = 0; b < bytes.size() / info->block_bytes; ++b) {
      for (const HalfField& field : half_fields(type)) {
        const double largest = std::ldexp(mantissa(rng_), -6 + static_cast<int>(rng_() % 2));
        const double value = (rng_() & 1u ? -largest : largest) / field.largest_multiplier;
        const uint16_t h = quant::float_to_half(static_cast<float>(value));
        std::memcpy(bytes.data() + b * info->block_bytes + field.offset, &h, 2);
      }
    }
    TensorView q;
    q.name = name;
    q.dtype = DType::GGML;
    q.ggml_type = type;
    q.shape = {rows, cols};
    q.data = bytes.data();
    q.nbytes = bytes.size();
    q.file = "test-memory";
    views_.push_back(q);
    const TensorView* quantised = &views_.back();

    auto& floats = buffers_.emplace_back(static_cast<size_t>(n) * 4);
    std::vector<float> values(static_cast<size_t>(n));
    quant::dequantize(type, bytes.data(), values.data(), n);
    std::memcpy(floats.data(), values.data(), floats.size());
    TensorView f = q;
    f.dtype = DType::F32;
    f.ggml_type = GgmlType::F32;
    f.data = floats.data();
    f.nbytes = floats.size();
    views_.push_back(f);
    return {quantised, &views_.back()};
  }

  const TensorView* vector(const std::string& name, int64_t n, float lo, float hi) {
    auto& bytes = buffers_.emplace_back(static_cast<size_t>(n) * 4);
    std::uniform_real_distribution<float> d(lo, hi);
    for (int64_t i = 0; i < n; ++i) {
      const float v = d(rng_);
      std::memcpy(bytes.data() + 4 * i, &v, 4);
    }
    TensorView t;
    t.name = name;
    t.dtype = DType::F32;
    t.shape = {n};
    t.data = bytes.data();
    t.nbytes = bytes.size();
    t.file = "test-memory";
    views_.push_back(t);
    return &views_.back();
  }

 private:
  std::mt19937 rng_;
  std::deque<std::vector<uint8_t>> buffers_;
  std::deque<TensorView> views_;
};

struct Mix {
  const char* name;
  GgmlType q, k, v, o, gate, up, down, embed, lm_head;
  bool fused = false;  // Phi3: qkv and gate/up as row slices of one tensor (formats q and gate)
  bool tied = false;
  int32_t vocab = 67;  // > 8192: the lm_head is dequantised in two tiles for many-row logits
  // >= 2048: the decode step runs each RMSNorm as its own kernel (as on the 7B shape), which with
  // the int8 products quantises x for the product after it, and so does the SwiGLU kernel.
  int64_t hidden = 256;
};
void PrintTo(const Mix& m, std::ostream* os) { *os << m.name; }

struct QuantTestModel {
  ModelConfig config;
  QuantPool pool{91};
  TransformerWeights quantised, reference;
  std::vector<float> inv_freq;

  explicit QuantTestModel(const Mix& mix) {
    config.architecture = "TestForCausalLM";
    config.traits = ArchTraits{"TestForCausalLM", true, false, mix.fused, mix.fused, true};
    config.qk_norm = QkNormKind::None;
    config.vocab_size = mix.vocab;
    config.hidden_size = mix.hidden;  // whole K-quant super-blocks
    config.n_layers = 2;
    // Wide: q_dim = hidden, so that o_proj's x (k = 2048) is quantised by its own kernel.
    config.n_heads = mix.hidden >= 2048 ? static_cast<int32_t>(mix.hidden / 64) : 4;
    config.n_kv_heads = 2;
    config.head_dim = 64;
    config.intermediate_size = 512;
    config.max_position_embeddings = 256;
    config.rms_norm_eps = 1e-5f;
    config.rope_theta = 10000.0f;
    config.tie_word_embeddings = mix.tied;
    for (int64_t i = 0; i < 32; ++i) {
      inv_freq.push_back(static_cast<float>(1.0 / std::pow(1e4, 2.0 * double(i) / 64.0)));
    }
    const int64_t H = mix.hidden, I = 512, V = mix.vocab, qd = config.n_heads * int64_t{64},
                  kvd = 128;
    auto both = [&](WeightRef& qref, WeightRef& fref, const std::string& name, int64_t rows,
                    int64_t cols, GgmlType t) {
      const auto [q, f] = pool.matrix(name, rows, cols, t);
      qref = WeightRef{q, 0, rows, cols};
      fref = WeightRef{f, 0, rows, cols};
    };
    auto vec = [&](WeightRef& qref, WeightRef& fref, const std::string& name, int64_t n, float lo,
                   float hi) {
      qref = fref = WeightRef{pool.vector(name, n, lo, hi), 0, n, 1};
    };
    both(quantised.embed, reference.embed, "embed", V, H, mix.embed);
    vec(quantised.final_norm, reference.final_norm, "norm", H, 0.8f, 1.2f);
    if (mix.tied) {
      quantised.lm_head = quantised.embed;
      reference.lm_head = reference.embed;
    } else {
      both(quantised.lm_head, reference.lm_head, "lm_head", V, H, mix.lm_head);
    }
    for (int l = 0; l < config.n_layers; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      LayerWeights q, f;
      vec(q.attn_norm, f.attn_norm, p + "input_layernorm", H, 0.8f, 1.2f);
      if (mix.fused) {
        WeightRef aq, af;
        both(aq, af, p + "qkv_proj", qd + 2 * kvd, H, mix.q);
        for (auto [lw, all] : {std::pair{&q, aq}, std::pair{&f, af}}) {
          lw->wq = WeightRef{all.tensor, 0, qd, H};
          lw->wk = WeightRef{all.tensor, qd, kvd, H};
          lw->wv = WeightRef{all.tensor, qd + kvd, kvd, H};
        }
      } else {
        both(q.wq, f.wq, p + "q_proj", qd, H, mix.q);
        both(q.wk, f.wk, p + "k_proj", kvd, H, mix.k);
        both(q.wv, f.wv, p + "v_proj", kvd, H, mix.v);
      }
      vec(q.bq, f.bq, p + "q_bias", qd, -0.3f, 0.3f);
      vec(q.bk, f.bk, p + "k_bias", kvd, -0.3f, 0.3f);
      vec(q.bv, f.bv, p + "v_bias", kvd, -0.3f, 0.3f);
      both(q.wo, f.wo, p + "o_proj", H, qd, mix.o);
      vec(q.ffn_norm, f.ffn_norm, p + "post_attention_layernorm", H, 0.8f, 1.2f);
      if (mix.fused) {
        WeightRef aq, af;
        both(aq, af, p + "gate_up_proj", 2 * I, H, mix.gate);
        for (auto [lw, all] : {std::pair{&q, aq}, std::pair{&f, af}}) {
          lw->w_gate = WeightRef{all.tensor, 0, I, H};
          lw->w_up = WeightRef{all.tensor, I, I, H};
        }
      } else {
        both(q.w_gate, f.w_gate, p + "gate_proj", I, H, mix.gate);
        both(q.w_up, f.w_up, p + "up_proj", I, H, mix.up);
      }
      both(q.w_down, f.w_down, p + "down_proj", H, I, mix.down);
      quantised.layers.push_back(q);
      reference.layers.push_back(f);
    }
  }
};

class CudaQuantModel : public ::testing::TestWithParam<Mix> {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
};

// Decode bound of the integer path (QuantDot::kInt8), whose one-row products take x quantised to
// int8 per 32 elements: an error of standard deviation d/sqrt(12), d = max|x|/127 over the block
// (about 2.4 σ/127 for 32 normal values), i.e. ~5.5e-3 σ against BF16's ~1.1e-3 σ; so at most ~5x
// the 2-4e-3 that BF16 rounding costs on this model (less: attention and the KV cache stay BF16).
// A dropped MLP or a shifted v costs over 7e-2.
constexpr double kInt8DecodeBound = 3e-2;

TEST_P(CudaQuantModel, LogitsMatchTheCpuExecutorOnTheDequantisedWeights) {
  const Mix& mix = GetParam();
  QuantTestModel m(mix);
  const cpu::CpuTransformer cpu(m.config, m.reference, m.inv_freq, 2);

  std::mt19937 gen(3);
  std::uniform_int_distribution<int32_t> d(0, m.config.vocab_size - 1);
  std::vector<int32_t> ids(19);
  for (auto& id : ids) id = d(gen);
  const int32_t V = m.config.vocab_size;
  const size_t prompt = 11;
  auto cs = cpu.create_state(64);
  std::vector<float> want(ids.size() * V, NAN);
  cpu.forward(*cs, ids, 0, want.data(), true, nullptr);

  // The int8 products twice: x quantised once per product (the default) and in every block of
  // the product (KILN_CUDA_QGEMV=old, read when the executor is made).
  struct Path {
    QuantDot dot;
    const char* qgemv;
  };
  for (const Path path : {Path{QuantDot::kFloat, "new"}, Path{QuantDot::kInt8, "new"},
                          Path{QuantDot::kInt8, "old"}}) {
    const QuantDot dot = path.dot;
    const bool int8 = dot == QuantDot::kInt8;
    SCOPED_TRACE(int8 ? std::string("int8 products, KILN_CUDA_QGEMV=") + path.qgemv
                      : std::string("float products"));
    ASSERT_EQ(setenv("KILN_CUDA_QGEMV", path.qgemv, 1), 0);
    const CudaTransformer gpu(m.config, m.quantised, m.inv_freq,
                              DeviceAllocator::create(0, 0, "test GPU"), {}, false, dot);
    unsetenv("KILN_CUDA_QGEMV");
    const CudaTransformer::LayerMatrixStorage storage = gpu.layer_matrix_storage();
    // Every layer matrix stays quantised, except those in a format without a CUDA kernel (Q3_K).
    const int64_t bf16_weights = mix.down == GgmlType::Q3_K ? int64_t{2} * 256 * 512 : 0;
    EXPECT_EQ(storage.quantized_weights, storage.weights - bf16_weights);

    // CPU: everything in one prefill. CUDA: the first `prompt` ids in one prefill, then one at a
    // time (the captured decode step), each step's last-row logits.
    auto gs = gpu.create_state(64);
    std::vector<float> got(ids.size() * V, NAN);
    gpu.forward(*gs, std::span(ids).first(prompt), 0, got.data(), true, nullptr);
    for (size_t t = prompt; t < ids.size(); ++t) {
      gpu.forward(*gs, std::span(ids).subspan(t, 1), static_cast<int32_t>(t), got.data() + t * V,
                  false, nullptr);
    }
    const double prefill_err = relative_l2(got.data(), want.data(), prompt * V);
    const double decode_err =
        relative_l2(got.data() + prompt * V, want.data() + prompt * V, (ids.size() - prompt) * V);
    std::printf("[ quant    ] %-14s %-9s prefill rel L2 %.3e, decode rel L2 %.3e\n", mix.name,
                int8 ? (std::strcmp(path.qgemv, "new") == 0 ? "int8" : "int8 old") : "float",
                prefill_err, decode_err);
    // Exact weights; BF16 matrix inputs and KV cache (the bound of the BF16 executor tests). The
    // prefill dequantises to BF16 for cuBLAS on either path.
    EXPECT_LE(prefill_err, 1e-2);
    EXPECT_LE(decode_err, int8 ? kInt8DecodeBound : 1e-2);
    EXPECT_FALSE(std::isnan(prefill_err) || std::isnan(decode_err));
  }
}

// KILN_CUDA_QUANT_DOT is read when the model is built, before anything touches the device (so this
// runs without a GPU too): an unknown value is refused by name, not taken for a default.
TEST(CudaQuantDot, AnUnknownKilnCudaQuantDotValueIsAnInvalidArgument) {
  QuantTestModel m(Mix{"q8_0", GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0,
                       GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0,
                       GgmlType::Q8_0});
  ASSERT_EQ(setenv("KILN_CUDA_QUANT_DOT", "fast", 1), 0);
  try {
    const CudaTransformer gpu(m.config, m.quantised, m.inv_freq,
                              DeviceAllocator::create(0, 0, "test GPU"));
    ADD_FAILURE() << "KILN_CUDA_QUANT_DOT=fast was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("KILN_CUDA_QUANT_DOT is \"fast\""), std::string::npos)
        << e.what();
  }
  unsetenv("KILN_CUDA_QUANT_DOT");
}

TEST(CudaQuantDot, AnUnknownKilnCudaQgemvValueIsAnInvalidArgument) {
  QuantTestModel m(Mix{"q8_0", GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0,
                       GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0,
                       GgmlType::Q8_0});
  ASSERT_EQ(setenv("KILN_CUDA_QGEMV", "newest", 1), 0);
  try {
    const CudaTransformer gpu(m.config, m.quantised, m.inv_freq,
                              DeviceAllocator::create(0, 0, "test GPU"));
    ADD_FAILURE() << "KILN_CUDA_QGEMV=newest was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("KILN_CUDA_QGEMV is \"newest\""), std::string::npos)
        << e.what();
  }
  unsetenv("KILN_CUDA_QGEMV");
}

INSTANTIATE_TEST_SUITE_P(
    Mixes, CudaQuantModel,
    ::testing::Values(
        // llama.cpp's Q4_K_M pattern: v and down in q6_K (q/k/v in two segments).
        Mix{"q4_k_m_like", GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_K,
            GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q6_K, GgmlType::Q6_K},
        // Every other format; gate and up differ (unfused SwiGLU in decode), three q/k/v segments.
        Mix{"legacy_mix", GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_1, GgmlType::Q5_0,
            GgmlType::Q4_1, GgmlType::Q5_K, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4_0},
        // Phi3-style fused tensors sliced by rows; tied embeddings in q8_0.
        Mix{"fused_tied_q8_0", GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0,
            GgmlType::Q5_K, GgmlType::Q5_K, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0, true,
            true},
        // A vocabulary of two lm_head tiles (8192 + 8 rows) for the many-row logits.
        Mix{"large_vocab_q6_k_head", GgmlType::Q5_0, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q5_0,
            GgmlType::Q5_0, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q6_K, false,
            false, 8200},
        // A format without a CUDA kernel (Q3_K, down_proj and the embedding) is dequantised to
        // BF16 at upload; the rest stays quantised.
        Mix{"q6_k_with_q3_k", GgmlType::Q6_K, GgmlType::Q6_K, GgmlType::Q6_K, GgmlType::Q6_K,
            GgmlType::Q6_K, GgmlType::Q6_K, GgmlType::Q3_K, GgmlType::Q3_K, GgmlType::Q6_K},
        // The Q4_K_M pattern at hidden 2048: the 7B shape's unfused decode step (RMSNorm and
        // SwiGLU kernels writing the int8 x of the products after them).
        Mix{"q4_k_m_like_wide", GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_K,
            GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q6_K, GgmlType::Q6_K, false,
            false, 67, 2048}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kiln::cuda

#else

TEST(CudaQuantModel, NotBuilt) { GTEST_SKIP() << "built without CUDA (KILN_CUDA=OFF)"; }

#endif
