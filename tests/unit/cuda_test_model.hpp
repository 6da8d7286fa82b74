// Small random models for the CUDA executor's tests, built through the same ModelConfig and
// TransformerWeights a loaded checkpoint produces (tensors over test-owned bytes, stored as F32,
// F16 or BF16), and the prefill-then-decode driver the tests compare executors with. Shared by
// cuda_model_test.cpp and cuda_decode_megakernel_test.cpp.
#pragma once

#include <cmath>
#include <cstring>
#include <deque>
#include <memory>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "backend/cuda/device_memory.hpp"
#include "cuda_test_util.hpp"
#include "model/config.hpp"
#include "model/transformer_weights.hpp"

namespace kiln::cuda::test_model {

enum class Storage { F32, F16, BF16 };

struct Variant {
  const char* name;
  bool qkv_bias = false, o_bias = false, qk_norm = false, fused = false, tied = false;
  float partial_rotary = 1.0f;
  Storage storage = Storage::BF16;
  int32_t n_heads = 4, n_kv_heads = 2, head_dim = 16;
  // 2048 and up: the decode step runs RMSNorm as its own kernel and the products over rows this
  // long split each row over several warps (kernels/gemv.cu).
  int32_t hidden = 72, intermediate = 131;
  int32_t n_layers = 3, vocab = 61;
};

inline void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

inline uint16_t f32_to_f16_bits(float f) {  // round to nearest; values here are normal and small
  uint32_t b;
  std::memcpy(&b, &f, 4);
  const uint32_t sign = (b >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((b >> 23) & 0xFF) - 127 + 15;
  if (exp <= 0) return static_cast<uint16_t>(sign);
  const uint32_t mant = (b & 0x7FFFFFu) + 0x1000u;  // round half up at bit 13
  return static_cast<uint16_t>(sign | ((exp << 10) + (mant >> 13)));
}

// Stored tensors over test-owned bytes.
class TensorPool {
 public:
  const TensorView* add(const std::string& name, std::vector<int64_t> shape,
                        const std::vector<float>& values, Storage storage) {
    auto& bytes = buffers_.emplace_back();
    TensorView view;
    view.name = name;
    view.shape = std::move(shape);
    view.file = "test-memory";
    const size_t n = values.size();
    if (storage == Storage::F32) {
      view.dtype = DType::F32;
      bytes.resize(n * 4);
      std::memcpy(bytes.data(), values.data(), n * 4);
    } else {
      view.dtype = storage == Storage::F16 ? DType::F16 : DType::BF16;
      bytes.resize(n * 2);
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = storage == Storage::F16 ? f32_to_f16_bits(values[i])
                                                   : ::kiln::cuda::test::to_bf16_bits(values[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
    }
    view.data = bytes.data();
    view.nbytes = bytes.size();
    views_.push_back(std::move(view));
    return &views_.back();
  }

 private:
  std::deque<std::vector<uint8_t>> buffers_;
  std::deque<TensorView> views_;
};

struct TestModel {
  ModelConfig config;
  TensorPool pool;
  TransformerWeights weights;
  std::vector<float> inv_freq;

  explicit TestModel(const Variant& v, uint32_t seed = 77) {
    config.architecture = "TestForCausalLM";
    config.traits = ArchTraits{"TestForCausalLM", v.qkv_bias, v.qk_norm, v.fused, v.fused, true};
    config.qk_norm = v.qk_norm ? QkNormKind::BeforeRopeWeighted : QkNormKind::None;
    config.vocab_size = v.vocab;
    config.hidden_size = v.hidden;
    config.n_layers = v.n_layers;
    config.n_heads = v.n_heads;
    config.n_kv_heads = v.n_kv_heads;
    config.head_dim = v.head_dim;
    config.intermediate_size = v.intermediate;
    config.max_position_embeddings = 1024;
    config.rms_norm_eps = 1e-5f;
    config.rope_theta = 10000.0f;
    config.partial_rotary_factor = v.partial_rotary;
    config.tie_word_embeddings = v.tied;
    config.attention_bias = v.o_bias;
    const auto rot = static_cast<int64_t>(static_cast<float>(v.head_dim) * v.partial_rotary);
    for (int64_t i = 0; i < rot / 2; ++i) {
      inv_freq.push_back(static_cast<float>(1.0 / std::pow(1e4, 2.0 * double(i) / double(rot))));
    }

    std::mt19937 gen(seed);
    auto uniform = [&](int64_t n, double lo, double hi) {
      std::uniform_real_distribution<float> d(static_cast<float>(lo), static_cast<float>(hi));
      std::vector<float> out(static_cast<size_t>(n));
      for (auto& x : out) x = d(gen);
      return out;
    };
    const int64_t H = config.hidden_size, I = config.intermediate_size, V = config.vocab_size;
    const int64_t qd = int64_t{v.n_heads} * v.head_dim, kvd = int64_t{v.n_kv_heads} * v.head_dim;
    auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
      const double a = 1.7 / std::sqrt(static_cast<double>(cols));
      return WeightRef{pool.add(name, {rows, cols}, uniform(rows * cols, -a, a), v.storage), 0,
                       rows, cols};
    };
    auto vec = [&](const std::string& name, int64_t n, double lo, double hi) {
      return WeightRef{pool.add(name, {n}, uniform(n, lo, hi), v.storage), 0, n, 1};
    };
    weights.embed = WeightRef{pool.add("embed", {V, H}, uniform(V * H, -1, 1), v.storage), 0, V, H};
    weights.final_norm = vec("norm", H, 0.8, 1.2);
    weights.lm_head = v.tied ? weights.embed : matrix("lm_head", V, H);
    for (int l = 0; l < config.n_layers; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      LayerWeights lw;
      lw.attn_norm = vec(p + "input_layernorm", H, 0.8, 1.2);
      if (v.fused) {
        const WeightRef all = matrix(p + "qkv_proj", qd + 2 * kvd, H);
        lw.wq = WeightRef{all.tensor, 0, qd, H};
        lw.wk = WeightRef{all.tensor, qd, kvd, H};
        lw.wv = WeightRef{all.tensor, qd + kvd, kvd, H};
      } else {
        lw.wq = matrix(p + "q_proj", qd, H);
        lw.wk = matrix(p + "k_proj", kvd, H);
        lw.wv = matrix(p + "v_proj", kvd, H);
      }
      if (v.qkv_bias) {
        lw.bq = vec(p + "q_bias", qd, -0.3, 0.3);
        lw.bk = vec(p + "k_bias", kvd, -0.3, 0.3);
        lw.bv = vec(p + "v_bias", kvd, -0.3, 0.3);
      }
      lw.wo = matrix(p + "o_proj", H, qd);
      if (v.o_bias) lw.bo = vec(p + "o_bias", H, -0.3, 0.3);
      if (v.qk_norm) {
        lw.q_norm = vec(p + "q_norm", v.head_dim, 0.5, 1.5);
        lw.k_norm = vec(p + "k_norm", v.head_dim, 0.5, 1.5);
      }
      lw.ffn_norm = vec(p + "post_attention_layernorm", H, 0.8, 1.2);
      if (v.fused) {
        const WeightRef all = matrix(p + "gate_up_proj", 2 * I, H);
        lw.w_gate = WeightRef{all.tensor, 0, I, H};
        lw.w_up = WeightRef{all.tensor, I, I, H};
      } else {
        lw.w_gate = matrix(p + "gate_proj", I, H);
        lw.w_up = matrix(p + "up_proj", I, H);
      }
      lw.w_down = matrix(p + "down_proj", H, I);
      weights.layers.push_back(lw);
    }
  }
};

inline std::shared_ptr<DeviceAllocator> uncapped() {
  return DeviceAllocator::create(0, 0, "test GPU");
}

inline std::vector<int32_t> random_ids(size_t n, int32_t vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = d(gen);
  return ids;
}

// Prefill `prompt` (logits of every row), then decode `extra` one at a time (last-row logits).
inline std::vector<std::vector<float>> run(const ModelExecutor& exec, SessionState& state,
                                           const std::vector<int32_t>& prompt,
                                           const std::vector<int32_t>& extra, int32_t vocab) {
  std::vector<std::vector<float>> out;
  out.emplace_back(prompt.size() * vocab, NAN);
  exec.forward(state, prompt, 0, out.back().data(), true, nullptr);
  for (size_t i = 0; i < extra.size(); ++i) {
    out.emplace_back(vocab, NAN);
    exec.forward(state, std::span(&extra[i], 1), static_cast<int32_t>(prompt.size() + i),
                 out.back().data(), false, nullptr);
  }
  return out;
}

}  // namespace kiln::cuda::test_model
