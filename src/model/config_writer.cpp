#include "model/config_writer.hpp"

#include <charconv>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace kiln {

namespace {

using nlohmann::json;

// The shortest decimal that reads back as the same float (1e-06, not 9.99999997e-07): humans
// read config.json, and the parser rounds the double back to exactly this float.
double decimal(float f) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), f);
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

[[noreturn]] void cannot(const ModelConfig& c, const std::string& field, const std::string& what) {
  fail(KILN_ERR_INVALID_ARGUMENT,
       "cannot write a " + c.architecture + " config.json: " + field + " " + what);
}

void require(const ModelConfig& c, bool ok, const std::string& field, const std::string& what) {
  if (!ok) cannot(c, field, what);
}

void special_ids(const ModelConfig& c, json& j) {
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else if (!c.eos_token_ids.empty()) {
    j["eos_token_id"] = c.eos_token_ids;
  }
}

json rope_scaling(const ModelConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  switch (s.type) {
    case RopeScalingType::None:
      return nullptr;
    case RopeScalingType::Linear:
      return {{"rope_type", "linear"}, {"factor", decimal(s.factor)}};
    case RopeScalingType::Llama3:
      return {{"rope_type", "llama3"},
              {"factor", decimal(s.factor)},
              {"low_freq_factor", decimal(s.low_freq_factor)},
              {"high_freq_factor", decimal(s.high_freq_factor)},
              {"original_max_position_embeddings", s.original_max_position_embeddings}};
  }
  return nullptr;
}

const char* llama_family_model_type(const std::string& arch) {
  if (arch == "LlamaForCausalLM") return "llama";
  if (arch == "MistralForCausalLM") return "mistral";
  if (arch == "Qwen2ForCausalLM") return "qwen2";
  if (arch == "Qwen3ForCausalLM") return "qwen3";
  if (arch == "Phi3ForCausalLM") return "phi3";
  return nullptr;
}

json llama_family(const ModelConfig& c, const char* model_type) {
  require(c, c.norm == NormKind::RmsNorm, "norm", "must be RMSNorm with a weight");
  require(c, c.mlp == MlpKind::SwiGLU, "mlp", "must be SwiGLU");
  require(c, c.positions == PositionKind::Rope, "positions", "must be RoPE");
  require(c, !c.embed_norm, "embed_norm", "is not part of this family");
  require(c, c.logit_softcap == 0.0f, "logit_softcap", "is not part of this family");
  require(c, !c.mlp_bias, "mlp_bias", "is not supported");
  const bool phi3 = c.architecture == "Phi3ForCausalLM";
  json j = {{"architectures", {c.architecture}},
            {"model_type", model_type},
            {"vocab_size", c.vocab_size},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_hidden_layers", c.n_layers},
            {"num_attention_heads", c.n_heads},
            {"num_key_value_heads", c.n_kv_heads},
            {"max_position_embeddings", c.max_position_embeddings},
            {"rms_norm_eps", decimal(c.rms_norm_eps)},
            {"rope_theta", decimal(c.rope_theta)},
            {"rope_scaling", rope_scaling(c)},
            {"hidden_act", "silu"},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"pad_token_id", c.padding_idx >= 0 ? json(c.padding_idx) : json(nullptr)},
            {"use_cache", true}};
  if (phi3) {
    // Phi3Attention derives head_dim from hidden_size / num_attention_heads.
    require(c, int64_t{c.head_dim} * c.n_heads == c.hidden_size, "head_dim",
            "must be hidden_size / num_attention_heads for Phi3");
    if (c.partial_rotary_factor != 1.0f) {
      j["partial_rotary_factor"] = decimal(c.partial_rotary_factor);
    }
  } else {
    j["head_dim"] = c.head_dim;
    require(c, c.partial_rotary_factor == 1.0f, "partial_rotary_factor", "must be 1");
  }
  if (c.traits.honors_attention_bias) j["attention_bias"] = c.attention_bias;
  if (c.architecture == "LlamaForCausalLM") j["mlp_bias"] = false;
  if (c.architecture == "Qwen2ForCausalLM" || c.architecture == "Qwen3ForCausalLM") {
    j["use_sliding_window"] = false;
  }
  return j;
}

json gpt2(const ModelConfig& c) {
  require(c, c.norm == NormKind::LayerNorm, "norm", "must be LayerNorm for GPT-2");
  require(c, c.mlp == MlpKind::GeluTanh, "mlp", "must be GeluTanh (gelu_new) for GPT-2");
  require(c, c.positions == PositionKind::Learned, "positions", "must be learned for GPT-2");
  require(c, c.n_kv_heads == c.n_heads, "num_key_value_heads", "must equal the heads (no GQA)");
  require(c, int64_t{c.head_dim} * c.n_heads == c.hidden_size, "head_dim",
          "must be hidden_size / num_attention_heads for GPT-2");
  require(c, c.logit_softcap == 0.0f && !c.embed_norm && c.qk_norm == QkNormKind::None, "structure",
          "has features GPT-2 lacks (softcap, embedding norm or qk-norm)");
  json j = {{"architectures", {c.architecture}},
            {"model_type", "gpt2"},
            {"vocab_size", c.vocab_size},
            {"n_positions", c.max_position_embeddings},
            {"n_embd", c.hidden_size},
            {"n_layer", c.n_layers},
            {"n_head", c.n_heads},
            {"n_inner", c.intermediate_size},
            {"activation_function", "gelu_new"},
            {"layer_norm_epsilon", decimal(c.rms_norm_eps)},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"use_cache", true}};
  return j;
}

json nanochat(const ModelConfig& c) {
  require(c, c.norm == NormKind::RmsNormNoWeight, "norm", "must be the weightless RMSNorm");
  require(c, c.mlp == MlpKind::ReluSquared, "mlp", "must be ReluSquared (relu2)");
  require(c, c.positions == PositionKind::Rope, "positions", "must be RoPE");
  require(c, c.rope_scaling.type == RopeScalingType::None, "rope_scaling", "must be none");
  require(c, c.partial_rotary_factor == 1.0f, "partial_rotary_factor", "must be 1");
  require(c, c.embed_norm, "embed_norm", "must be set (NanoChatModel norms the embedding)");
  require(c, c.qk_norm == QkNormKind::AfterRopeNoWeight, "qk_norm",
          "must be the weightless norm after RoPE");
  json j = {{"architectures", {c.architecture}},
            {"model_type", "nanochat"},
            {"vocab_size", c.vocab_size},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_hidden_layers", c.n_layers},
            {"num_attention_heads", c.n_heads},
            {"num_key_value_heads", c.n_kv_heads},
            {"max_position_embeddings", c.max_position_embeddings},
            {"hidden_act", "relu2"},
            {"rms_norm_eps", decimal(c.rms_norm_eps)},
            {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", decimal(c.rope_theta)}}},
            {"final_logit_softcapping",
             c.logit_softcap > 0.0f ? json(decimal(c.logit_softcap)) : json(nullptr)},
            {"attention_bias", c.attention_bias},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"pad_token_id", c.padding_idx >= 0 ? json(c.padding_idx) : json(nullptr)},
            {"use_cache", true}};
  // NanoChatAttention reads head_dim when present, else hidden_size / num_attention_heads.
  if (int64_t{c.head_dim} * c.n_heads != c.hidden_size) j["head_dim"] = c.head_dim;
  return j;
}

}  // namespace

std::string model_config_to_json(const ModelConfig& c, DType weights_dtype) {
  json j;
  if (const char* model_type = llama_family_model_type(c.architecture)) {
    j = llama_family(c, model_type);
  } else if (c.architecture == "GPT2LMHeadModel") {
    j = gpt2(c);
  } else if (c.architecture == "NanoChatForCausalLM") {
    j = nanochat(c);
  } else {
    fail(KILN_ERR_UNSUPPORTED, "cannot write a config.json for architecture '" + c.architecture +
                                   "'; supported: LlamaForCausalLM, MistralForCausalLM, "
                                   "Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM, "
                                   "GPT2LMHeadModel, NanoChatForCausalLM");
  }
  special_ids(c, j);
  j["torch_dtype"] = weights_dtype == DType::BF16  ? "bfloat16"
                     : weights_dtype == DType::F16 ? "float16"
                                                   : "float32";
  return j.dump(2) + "\n";
}

}  // namespace kiln
