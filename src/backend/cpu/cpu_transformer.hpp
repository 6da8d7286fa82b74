// The CPU executor: the HF Llama-family decoder (Llama, Qwen2 with qkv bias, Qwen3 with q/k norm,
// Phi3 with fused projections given as row slices), GPT-2 (LayerNorm, learned positions, GELU-tanh
// MLP, biases) and NanoChat (parameter-free RMSNorm also on the embedding, RoPE then q/k norm,
// ReLU² MLP, logit soft-cap) in float32 over weights already resolved against the config. The
// structure is chosen once per layer from ModelConfig's NormKind / MlpKind / ... fields, never per
// element. The backend wrapper (cpu_backend.cpp) does the resolving; this part takes plain inputs
// so that it can be tested without a model file.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.hpp"
#include "backend/cpu/f32_weights.hpp"
#include "backend/cpu/ops.hpp"
#include "model/config.hpp"
#include "model/transformer_weights.hpp"

namespace kiln::cpu {

// A session's KV cache ([n_layers][context][n_kv_heads × head_dim] for K and for V) and the
// scratch its forward passes reuse.
class CpuSessionState final : public SessionState {
 public:
  // Throws KILN_ERR_OUT_OF_MEMORY naming the bytes when the cache cannot be allocated.
  CpuSessionState(int32_t context_length, int32_t n_layers, int64_t kv_dim);
  int32_t context_length() const override { return context_length_; }

  float* k_cache(int32_t layer) { return k_.get() + layer * layer_stride(); }
  float* v_cache(int32_t layer) { return v_.get() + layer * layer_stride(); }
  // At least `n` floats of scratch; contents are not kept between calls.
  float* scratch(size_t n);

 private:
  size_t layer_stride() const { return static_cast<size_t>(context_length_) * kv_dim_; }
  int32_t context_length_;
  size_t kv_dim_;
  std::unique_ptr<float[]> k_, v_;
  std::unique_ptr<float[]> scratch_;
  size_t scratch_size_ = 0;
};

class CpuTransformer final : public ModelExecutor {
 public:
  // Takes every weight as float32 (zero-copy where stored as aligned F32), checking each shape
  // against the config (KILN_ERR_FORMAT naming the tensor). `inv_freq` holds the RoPE inverse
  // frequencies (head_dim × partial_rotary_factor / 2 of them; none for learned positions).
  // `keep_alive` holds whatever the weights point into (the mmap'd WeightSet). `progress` (may be
  // empty) hears per-layer progress and may cancel (KILN_ERR_CANCELLED). n_threads < 1 means 1.
  CpuTransformer(const ModelConfig& config, const TransformerWeights& weights,
                 std::vector<float> inv_freq, int n_threads,
                 std::shared_ptr<const void> keep_alive = {}, const ProgressFn& progress = {});

  std::unique_ptr<SessionState> create_state(int32_t context_length) const override;
  void forward(SessionState& state, std::span<const int32_t> ids, int32_t start_pos, float* logits,
               bool all_positions, const std::atomic<bool>* cancel) const override;
  int64_t n_parameters() const override { return n_parameters_; }
  // Where the weights live: in place in the mapping or converted (resident-memory accounting).
  const F32WeightStore& weight_store() const { return store_; }

 private:
  struct Layer {
    const float* attn_norm;
    Matrix wq, wk, wv, wo;
    const float *bq, *bk, *bv, *bo, *q_norm, *k_norm, *ffn_norm;
    Matrix w_gate, w_up, w_down;
    const float *attn_norm_bias, *ffn_norm_bias, *b_up, *b_down;
  };

  // The config's norm over `rows` rows of hidden_ (weight/bias may be null where the kind has
  // none).
  void norm(const float* x, const float* weight, const float* bias, float* out, int64_t rows) const;

  std::shared_ptr<const void> keep_alive_;
  F32WeightStore store_;
  int n_threads_;
  int64_t vocab_, hidden_, n_heads_, n_kv_heads_, head_dim_, intermediate_, rot_dim_;
  int32_t n_layers_;
  float eps_;
  NormKind norm_kind_;
  MlpKind mlp_kind_;
  QkNormKind qk_norm_;
  bool embed_norm_;
  float logit_softcap_;
  int64_t max_positions_;
  std::vector<float> inv_freq_;
  Matrix embed_;
  const float* positions_ = nullptr;  // learned [max_positions × hidden], or null (RoPE)
  const float* final_norm_ = nullptr;
  const float* final_norm_bias_ = nullptr;
  Matrix lm_head_;
  std::vector<Layer> layers_;
  int64_t n_parameters_ = 0;
};

}  // namespace kiln::cpu
