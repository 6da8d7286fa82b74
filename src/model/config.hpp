// ModelConfig: everything the engine needs to know about a transformer, read from an HF
// config.json (+ generation_config.json). Architectures are data (ArchTraits) over one transformer
// implementation, not one class per model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kiln {

enum class RopeScalingType { None, Linear, Llama3 };

// The structural choices that separate the transformer families kiln runs and trains. The Llama
// family (Llama, Mistral, Qwen2/3, Phi3) is the default of every field; GPT-2 and NanoChat
// (karpathy/nanochat as ported to transformers' NanoChatForCausalLM) set the others.
enum class NormKind {
  RmsNorm,          // x / rms(x) * weight (Llama family)
  RmsNormNoWeight,  // x / rms(x), no parameters (NanoChat)
  LayerNorm,        // (x - mean) / std * weight + bias (GPT-2)
};
enum class MlpKind {
  SwiGLU,       // down(silu(gate(x)) * up(x)) (Llama family)
  GeluTanh,     // proj(gelu_tanh(fc(x) + b_fc)) + b_proj (GPT-2 "gelu_new")
  ReluSquared,  // proj(relu(fc(x))^2) (NanoChat)
};
enum class PositionKind {
  Rope,     // rotary embeddings on q and k (rotate-half layout)
  Learned,  // a learned [max_positions, hidden] table added to the token embedding (GPT-2)
};
enum class QkNormKind {
  None,
  BeforeRopeWeighted,  // Qwen3: per-head RMSNorm with a [head_dim] weight, then RoPE
  AfterRopeNoWeight,   // NanoChat: RoPE, then a parameter-free per-head RMSNorm
};

struct RopeScaling {
  RopeScalingType type = RopeScalingType::None;
  float factor = 1.0f;
  // llama3 only (HF transformers' _compute_llama3_parameters).
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int32_t original_max_position_embeddings = 8192;
};

// Which config keys and tensor names an architecture uses (the structure itself is in
// ModelConfig's NormKind / MlpKind / ... fields, which the parser fills per family).
enum class ArchFamily {
  Llama,  // model.layers.N.self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj, RMSNorm weights
  Gpt2,   // [transformer.]h.N.attn.c_attn / c_proj and mlp.c_fc / c_proj (Conv1D), ln_1/ln_2/ln_f
  NanoChat,  // model.layers.N.self_attn.{q,k,v,o}_proj, mlp.fc1 / fc2, no norm parameters
};

// How one HF architecture maps onto the shared transformer. Looked up by config.json's
// `architectures[0]`.
struct ArchTraits {
  const char* hf_name;  // "LlamaForCausalLM"
  bool qkv_bias;        // Qwen2: q/k/v projections have biases
  bool qk_norm;         // Qwen3: per-head RMSNorm on q and k before RoPE
  bool fused_qkv;       // Phi3: self_attn.qkv_proj holds q, k, v stacked by rows
  bool fused_gate_up;   // Phi3: mlp.gate_up_proj holds gate then up stacked by rows
  // Whether HF's modelling code reads config.json `attention_bias` (Llama, Qwen3). Mistral, Qwen2
  // and Phi3 hard-code their biases: there the flag is ignored and ModelConfig::attention_bias
  // stays false.
  bool honors_attention_bias;
  ArchFamily family = ArchFamily::Llama;
};

// nullptr when the architecture is not supported.
const ArchTraits* find_arch_traits(const std::string& hf_architecture);

struct ModelConfig {
  std::string architecture;  // config.json architectures[0]
  ArchTraits traits{};
  int32_t vocab_size = 0;
  int32_t hidden_size = 0;
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;  // explicit head_dim or hidden/heads
  int32_t intermediate_size = 0;
  int32_t max_position_embeddings = 0;
  // The epsilon of every norm, whatever its kind: rms_norm_eps (Llama family, NanoChat) or GPT-2's
  // layer_norm_epsilon.
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  float partial_rotary_factor = 1.0f;  // share of head_dim that is rotated (1 for all supported)
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // o_proj bias too (Llama's `attention_bias` flag; GPT-2: true)
  bool mlp_bias = false;        // biases on the MLP projections (GPT-2: true)
  // Special ids from config.json / generation_config.json (-1 / empty when absent).
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;

  // Structure (defaults = Llama family; see the enums above).
  NormKind norm = NormKind::RmsNorm;
  MlpKind mlp = MlpKind::SwiGLU;
  PositionKind positions = PositionKind::Rope;
  QkNormKind qk_norm = QkNormKind::None;  // BeforeRopeWeighted when traits.qk_norm
  bool embed_norm = false;     // NanoChat: the norm is applied to the token embedding too
  float logit_softcap = 0.0f;  // > 0: logits = softcap * tanh(logits / softcap) (NanoChat)
  // NanoChat rotates by -position * inv_freq: its rotate_half is cat(x2, -x1), not cat(-x2, x1).
  // rope_inverse_frequencies() still returns HF's (positive) inv_freq; the executor flips the sign.
  bool rope_reversed = false;
  // Multi-token prediction (training): extra future-token heads after the trunk, each one
  // transformer layer, sharing the final norm and unembedding (Meta's MTP layout). 0 = none.
  int32_t n_mtp_heads = 0;
  // The embedding row that gets no gradient from the lookup: transformers builds its token
  // embedding as nn.Embedding(..., padding_idx=config.pad_token_id) for the Llama family and
  // NanoChat (GPT-2 has none). -1 = none.
  int32_t padding_idx = -1;
};

// Parses <dir>/config.json and, if present, <dir>/generation_config.json. Throws kiln::Error:
// KILN_ERR_NOT_FOUND (no config.json), KILN_ERR_FORMAT (bad JSON, missing or inconsistent field,
// naming the field and file), KILN_ERR_UNSUPPORTED (architecture, naming it and listing supported).
ModelConfig load_model_config(const std::filesystem::path& model_dir);

// The same from JSON text (config_json required, generation_json may be empty). `origin` names the
// source in messages.
ModelConfig parse_model_config(const std::string& config_json, const std::string& generation_json,
                               const std::string& origin);

// RoPE inverse frequencies (head_dim*partial/2 of them) with the scaling applied, exactly as HF
// transformers computes them (in float64, then rounded to float32). Empty unless positions == Rope.
std::vector<float> rope_inverse_frequencies(const ModelConfig& config);

}  // namespace kiln
