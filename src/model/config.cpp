// ModelConfig from HF config.json / generation_config.json. Field names and defaults follow the
// transformers configuration classes (LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config,
// Phi3Config, GPT2Config, NanoChatConfig); where the Llama-family classes disagree on a default
// (rms_norm_eps), the field is required.
#include "model/config.hpp"

#include <cmath>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "model/config_fields.hpp"
#include "model/rope_config.hpp"
#include "util/mapped_file.hpp"

namespace kiln {

namespace {

using nlohmann::json;

constexpr ArchTraits kArchitectures[] = {
    // hf_name, qkv_bias, qk_norm, fused_qkv, fused_gate_up, honors_attention_bias
    {"LlamaForCausalLM", false, false, false, false, true},
    {"MistralForCausalLM", false, false, false, false, false},
    {"Qwen2ForCausalLM", true, false, false, false, false},
    {"Qwen3ForCausalLM", false, true, false, false, true},
    {"Phi3ForCausalLM", false, false, true, true, false},
    // GPT-2's q/k/v are fused too, but as Conv1D columns: the Gpt2 family resolves them itself.
    {"GPT2LMHeadModel", false, false, false, false, false, ArchFamily::Gpt2},
    {"NanoChatForCausalLM", false, false, false, false, true, ArchFamily::NanoChat},
};

std::string supported_architectures() {
  std::string list;
  for (const auto& a : kArchitectures) list += (list.empty() ? "" : ", ") + std::string(a.hf_name);
  return list;
}

json parse_json(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(KILN_ERR_FORMAT, origin + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) {
    fail(KILN_ERR_FORMAT, origin + ": expected a JSON object, got a " + j.type_name());
  }
  return j;
}

// Token ids: an int, a list of ints, or null (absent). Each must lie in [0, vocab_size).
std::vector<int32_t> token_ids(const ConfigFields& f, const char* key, int32_t vocab_size) {
  std::vector<int32_t> ids;
  const json* v = f.find(key);
  if (v == nullptr) return ids;
  const auto add = [&](const json& id, const std::string& field) {
    const int64_t value = f.integer_value(id, field);
    if (value < 0 || value >= vocab_size) {
      f.bad(field, "is " + std::to_string(value) + ", outside the vocabulary [0, " +
                       std::to_string(vocab_size) + ")");
    }
    ids.push_back(static_cast<int32_t>(value));
  };
  if (v->is_array()) {
    for (size_t i = 0; i < v->size(); ++i)
      add((*v)[i], std::string(key) + "[" + std::to_string(i) + "]");
  } else {
    add(*v, key);
  }
  return ids;
}

void add_unique(std::vector<int32_t>& ids, const std::vector<int32_t>& more) {
  for (int32_t id : more) {
    bool present = false;
    for (int32_t have : ids) present = present || have == id;
    if (!present) ids.push_back(id);
  }
}

void validate(const ModelConfig& c, const ConfigFields& f, const char* eps_field = "rms_norm_eps") {
  if (c.n_heads % c.n_kv_heads != 0) {
    f.bad("num_key_value_heads", "(" + std::to_string(c.n_kv_heads) +
                                     ") must divide num_attention_heads (" +
                                     std::to_string(c.n_heads) + ")");
  }
  if (c.positions == PositionKind::Rope && c.head_dim % 2 != 0) {
    f.bad("head_dim", "is " + std::to_string(c.head_dim) + "; RoPE needs an even head_dim");
  }
  if (static_cast<int64_t>(c.n_heads) * c.head_dim > std::numeric_limits<int32_t>::max()) {
    f.bad("head_dim", "times num_attention_heads overflows 32 bits");
  }
  if (!(c.rms_norm_eps > 0.0f) || !std::isfinite(c.rms_norm_eps)) {
    f.bad(eps_field, "must be a positive number");
  }
}

// head_dim: explicit, or hidden_size / num_attention_heads (which must divide).
int32_t head_dim_of(const ConfigFields& f, const ModelConfig& c, const char* hidden_field,
                    const char* heads_field) {
  if (f.find("head_dim") != nullptr) return f.positive_int("head_dim");
  if (c.hidden_size % c.n_heads != 0) {
    f.bad("head_dim", std::string("is absent and ") + hidden_field + " (" +
                          std::to_string(c.hidden_size) + ") is not divisible by " + heads_field +
                          " (" + std::to_string(c.n_heads) + ")");
  }
  return c.hidden_size / c.n_heads;
}

// Llama, Mistral, Qwen2, Qwen3, Phi3: the common LlamaConfig keys.
void read_llama(const ConfigFields& f, ModelConfig& c) {
  if (c.traits.qk_norm) c.qk_norm = QkNormKind::BeforeRopeWeighted;
  c.vocab_size = f.positive_int("vocab_size");
  c.hidden_size = f.positive_int("hidden_size");
  c.n_layers = f.positive_int("num_hidden_layers");
  c.n_heads = f.positive_int("num_attention_heads");
  c.n_kv_heads = f.optional_positive_int("num_key_value_heads", c.n_heads);
  c.head_dim = head_dim_of(f, c, "hidden_size", "num_attention_heads");
  c.intermediate_size = f.positive_int("intermediate_size");
  c.max_position_embeddings = f.positive_int("max_position_embeddings");
  c.rms_norm_eps = f.number("rms_norm_eps");
  c.tie_word_embeddings = f.optional_bool("tie_word_embeddings", false);
  c.attention_bias = c.traits.honors_attention_bias && f.optional_bool("attention_bias", false);
  c.mlp_bias = f.optional_bool("mlp_bias", false);
  validate(c, f);
  read_rope(f, c);
}

// The first of `keys` present in the config (GPT2Config's attribute_map lets the generic names
// stand in for n_embd & co.); the first key when none is, so that messages name the usual one.
const char* present_key(const ConfigFields& f, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    if (f.find(k) != nullptr) return k;
  }
  return *keys.begin();
}

// GPT2Config (defaults from transformers' configuration_gpt2.py): pre-LayerNorm blocks with
// biases everywhere, learned positions, gelu_new MLP of n_inner (null: 4 * n_embd), tied head.
void read_gpt2(const ConfigFields& f, ModelConfig& c) {
  c.norm = NormKind::LayerNorm;
  c.mlp = MlpKind::GeluTanh;
  c.positions = PositionKind::Learned;
  c.vocab_size = f.positive_int("vocab_size");
  const char* hidden_key = present_key(f, {"n_embd", "hidden_size"});
  const char* heads_key = present_key(f, {"n_head", "num_attention_heads"});
  c.hidden_size = f.positive_int(hidden_key);
  c.n_layers = f.positive_int(present_key(f, {"n_layer", "num_hidden_layers"}));
  c.n_heads = f.positive_int(heads_key);
  c.n_kv_heads = c.n_heads;
  if (c.hidden_size % c.n_heads != 0) {
    f.bad(heads_key, "(" + std::to_string(c.n_heads) + ") does not divide " + hidden_key + " (" +
                         std::to_string(c.hidden_size) + ")");
  }
  c.head_dim = c.hidden_size / c.n_heads;  // GPT2Attention: embed_dim // num_heads, no override
  if (c.hidden_size > std::numeric_limits<int32_t>::max() / 4) {
    f.bad(hidden_key, "is too large (4 × " + std::string(hidden_key) + " overflows 32 bits)");
  }
  c.intermediate_size = f.optional_positive_int("n_inner", 4 * c.hidden_size);
  c.max_position_embeddings =
      f.positive_int(present_key(f, {"n_positions", "max_position_embeddings"}));
  c.rms_norm_eps = static_cast<float>(f.optional_number("layer_norm_epsilon", 1e-5));
  c.tie_word_embeddings = f.optional_bool("tie_word_embeddings", true);
  c.attention_bias = true;  // c_attn and c_proj always have biases
  c.mlp_bias = true;        // c_fc and c_proj too
  const std::string act = f.optional_string("activation_function", "gelu_new");
  // gelu_pytorch_tanh is the same tanh approximation, computed by torch's fused kernel.
  if (act != "gelu_new" && act != "gelu_pytorch_tanh") {
    f.unsupported("activation_function '" + act + "' is not supported for " + c.architecture +
                  "; supported: gelu_new, gelu_pytorch_tanh");
  }
  if (!f.optional_bool("scale_attn_weights", true)) {
    f.unsupported("scale_attn_weights = false is not supported for " + c.architecture);
  }
  if (f.optional_bool("scale_attn_by_inverse_layer_idx", false)) {
    f.unsupported("scale_attn_by_inverse_layer_idx = true is not supported for " + c.architecture);
  }
  if (f.optional_bool("add_cross_attention", false)) {
    f.unsupported("add_cross_attention = true is not supported (kiln runs decoder-only models)");
  }
  validate(c, f, "layer_norm_epsilon");
}

// NanoChatConfig (transformers' port of karpathy/nanochat): parameter-free RMSNorm on the
// embedding, before attention and MLP and at the end; RoPE (reversed rotation) then a
// parameter-free q/k RMSNorm; ReLU² MLP (fc1, fc2, no biases); logits soft-capped.
void read_nanochat(const nlohmann::json& j, const ConfigFields& f, ModelConfig& c) {
  c.norm = NormKind::RmsNormNoWeight;
  c.mlp = MlpKind::ReluSquared;
  c.qk_norm = QkNormKind::AfterRopeNoWeight;
  c.embed_norm = true;
  c.rope_reversed = true;
  c.vocab_size = f.positive_int("vocab_size");
  c.hidden_size = f.positive_int("hidden_size");
  c.n_layers = f.positive_int("num_hidden_layers");
  c.n_heads = f.positive_int("num_attention_heads");
  c.n_kv_heads = f.optional_positive_int("num_key_value_heads", c.n_heads);
  c.head_dim = head_dim_of(f, c, "hidden_size", "num_attention_heads");
  c.intermediate_size = f.positive_int("intermediate_size");
  c.max_position_embeddings = f.positive_int("max_position_embeddings");
  c.rms_norm_eps = static_cast<float>(f.optional_number("rms_norm_eps", 1e-6));
  c.tie_word_embeddings = f.optional_bool("tie_word_embeddings", false);
  c.attention_bias = f.optional_bool("attention_bias", false);
  c.mlp_bias = false;  // NanoChatMLP's fc1/fc2 never have biases
  const std::string act = f.optional_string("hidden_act", "relu2");
  if (act != "relu2") {
    f.unsupported("hidden_act '" + act + "' is not supported for " + c.architecture +
                  "; supported: relu2");
  }
  // Absent: the class default 15; an explicit null turns the soft-cap off.
  const auto cap = j.find("final_logit_softcapping");
  if (cap == j.end()) {
    c.logit_softcap = 15.0f;
  } else if (!cap->is_null()) {
    const double v = f.number("final_logit_softcapping");
    if (!(v > 0) || !std::isfinite(v)) f.bad("final_logit_softcapping", "must be positive");
    c.logit_softcap = static_cast<float>(v);
  }
  validate(c, f);
  read_rope(f, c);
}

ModelConfig parse_config(const std::string& config_json, const std::string& config_origin,
                         const std::string& generation_json, const std::string& generation_origin) {
  const json j = parse_json(config_json, config_origin);
  const ConfigFields f(j, config_origin);
  ModelConfig c;

  const json* archs = f.find("architectures");
  if (archs == nullptr || !archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    f.bad("architectures", "must be a non-empty list of architecture names");
  }
  c.architecture = (*archs)[0].get<std::string>();
  const ArchTraits* traits = find_arch_traits(c.architecture);
  if (traits == nullptr) {
    fail(KILN_ERR_UNSUPPORTED, config_origin + ": architecture " + c.architecture +
                                   " is not supported; supported: " + supported_architectures());
  }
  c.traits = *traits;
  switch (traits->family) {
    case ArchFamily::Llama:
      read_llama(f, c);
      break;
    case ArchFamily::Gpt2:
      read_gpt2(f, c);
      break;
    case ArchFamily::NanoChat:
      read_nanochat(j, f, c);
      break;
  }

  // pad_token_id only matters for training (ModelConfig::padding_idx); an id outside the
  // vocabulary (some configs carry another tokenizer's) is ignored rather than refused.
  if (c.traits.family != ArchFamily::Gpt2) {
    const json* pad = f.find("pad_token_id");
    if (pad != nullptr && pad->is_number_integer()) {
      const int64_t id = pad->get<int64_t>();
      if (id >= 0 && id < c.vocab_size) c.padding_idx = static_cast<int32_t>(id);
    }
  }

  c.bos_token_id = -1;
  const auto bos = token_ids(f, "bos_token_id", c.vocab_size);
  if (bos.size() > 1) f.bad("bos_token_id", "must be a single id");
  if (!bos.empty()) c.bos_token_id = bos[0];
  const auto config_eos = token_ids(f, "eos_token_id", c.vocab_size);

  // generation_config.json is what transformers' generate() stops on; config.json's ids are kept
  // too, after those, so that neither source's stop token is lost.
  std::vector<int32_t> eos;
  if (!generation_json.empty()) {
    const json g = parse_json(generation_json, generation_origin);
    const ConfigFields gf(g, generation_origin);
    const auto gen_bos = token_ids(gf, "bos_token_id", c.vocab_size);
    if (gen_bos.size() > 1) gf.bad("bos_token_id", "must be a single id");
    if (!gen_bos.empty()) c.bos_token_id = gen_bos[0];
    eos = token_ids(gf, "eos_token_id", c.vocab_size);
  }
  add_unique(eos, config_eos);
  c.eos_token_ids = eos;
  return c;
}

}  // namespace

const ArchTraits* find_arch_traits(const std::string& hf_architecture) {
  for (const auto& a : kArchitectures) {
    if (hf_architecture == a.hf_name) return &a;
  }
  return nullptr;
}

ModelConfig load_model_config(const std::filesystem::path& model_dir) {
  const auto config_path = model_dir / "config.json";
  const auto generation_path = model_dir / "generation_config.json";
  const std::string config_text = read_text_file(config_path);
  std::error_code ec;
  const std::string generation_text =
      std::filesystem::exists(generation_path, ec) ? read_text_file(generation_path) : "";
  return parse_config(config_text, config_path.string(), generation_text, generation_path.string());
}

ModelConfig parse_model_config(const std::string& config_json, const std::string& generation_json,
                               const std::string& origin) {
  return parse_config(config_json, origin, generation_json, origin + " (generation config)");
}

}  // namespace kiln
