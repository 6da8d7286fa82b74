// ModelConfig parsing (config.json + generation_config.json) and RoPE inverse frequencies.
#include "model/config.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/error.hpp"
#include "test_support.hpp"

namespace kiln {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Shaped like Llama-3.2-1B's config.json (same field set; small sizes).
json llama_config() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 256, "initializer_range": 0.02, "intermediate_size": 512,
    "max_position_embeddings": 131072, "mlp_bias": false, "num_attention_heads": 4,
    "num_hidden_layers": 2, "num_key_value_heads": 2, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "use_cache": true, "vocab_size": 128256})");
}

ModelConfig parse(const json& config, const std::string& generation = "") {
  return parse_model_config(config.dump(), generation, "test/config.json");
}

void expect_error(const std::function<void()>& fn, kiln_status status,
                  const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    for (const auto& p : parts) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message lacks \"" << p << "\": " << e.what();
    }
    return;
  }
  ADD_FAILURE() << "no kiln::Error thrown";
}

void expect_config_error(const json& config, kiln_status status, std::vector<std::string> parts) {
  parts.push_back("test/config.json");
  expect_error([&] { parse(config); }, status, parts);
}

// ---------------------------------------------------------------------------------------------
// Architectures

TEST(ModelConfig, ParsesLlama) {
  const ModelConfig c = parse(llama_config());
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_STREQ(c.traits.hf_name, "LlamaForCausalLM");
  EXPECT_FALSE(c.traits.qkv_bias || c.traits.qk_norm || c.traits.fused_qkv ||
               c.traits.fused_gate_up);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.intermediate_size, 512);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.partial_rotary_factor, 1.0f);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Llama3);
  EXPECT_EQ(c.rope_scaling.factor, 32.0f);
  EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0f);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
}

TEST(ModelConfig, LlamaHonoursAttentionBias) {
  json j = llama_config();
  j["attention_bias"] = true;
  EXPECT_TRUE(parse(j).attention_bias);
}

TEST(ModelConfig, ParsesMistralWithNullHeadDim) {
  const json j = json::parse(R"({
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "head_dim": null, "hidden_size": 128, "intermediate_size": 352,
    "max_position_embeddings": 32768, "num_attention_heads": 8, "num_hidden_layers": 3,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
    "sliding_window": null, "tie_word_embeddings": false, "vocab_size": 32768})");
  const ModelConfig c = parse(j);
  EXPECT_STREQ(c.traits.hf_name, "MistralForCausalLM");
  EXPECT_FALSE(c.traits.qkv_bias || c.traits.qk_norm || c.traits.fused_qkv);
  EXPECT_EQ(c.head_dim, 16);  // hidden_size / num_attention_heads
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.rope_theta, 1000000.0f);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::None);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{2}));
}

TEST(ModelConfig, ParsesQwen2WithQkvBias) {
  const json j = json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 64, "intermediate_size": 160,
    "max_position_embeddings": 32768, "max_window_layers": 21, "num_attention_heads": 4,
    "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
    "use_sliding_window": false, "vocab_size": 151936})");
  const ModelConfig c = parse(j);
  EXPECT_TRUE(c.traits.qkv_bias);
  EXPECT_FALSE(c.traits.qk_norm || c.traits.fused_qkv || c.traits.fused_gate_up);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);  // o_proj has no bias in Qwen2
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-6f);
  // Qwen2's modelling code hard-codes its biases; a stray attention_bias flag changes nothing.
  json k = j;
  k["attention_bias"] = true;
  EXPECT_FALSE(parse(k).attention_bias);
}

TEST(ModelConfig, ParsesQwen3WithQkNormAndWideHeads) {
  const json j = json::parse(R"({
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
    "eos_token_id": 151645, "head_dim": 32, "hidden_size": 64, "intermediate_size": 192,
    "max_position_embeddings": 40960, "num_attention_heads": 4, "num_hidden_layers": 2,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": null,
    "rope_theta": 1000000, "tie_word_embeddings": true, "vocab_size": 151936})");
  const ModelConfig c = parse(j);
  EXPECT_TRUE(c.traits.qk_norm);
  EXPECT_FALSE(c.traits.qkv_bias || c.traits.fused_qkv);
  EXPECT_EQ(c.head_dim, 32);            // heads * head_dim (128) != hidden_size (64): allowed
  EXPECT_EQ(c.rope_theta, 1000000.0f);  // an integer theta is accepted
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::None);
}

TEST(ModelConfig, ParsesPhi3WithFusedProjections) {
  const json j = json::parse(R"({
    "architectures": ["Phi3ForCausalLM"], "attention_bias": false, "bos_token_id": 1,
    "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_size": 96, "intermediate_size": 256,
    "max_position_embeddings": 4096, "num_attention_heads": 3, "num_hidden_layers": 2,
    "num_key_value_heads": 3, "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-05,
    "rope_scaling": null, "rope_theta": 10000.0, "sliding_window": 2047,
    "tie_word_embeddings": false, "vocab_size": 32064})");
  const ModelConfig c = parse(j);
  EXPECT_TRUE(c.traits.fused_qkv);
  EXPECT_TRUE(c.traits.fused_gate_up);
  EXPECT_FALSE(c.traits.qkv_bias || c.traits.qk_norm);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.n_kv_heads, 3);
}

TEST(ModelConfig, DefaultsForOptionalFields) {
  json j = llama_config();
  for (const char* key :
       {"num_key_value_heads", "head_dim", "tie_word_embeddings", "attention_bias", "mlp_bias",
        "rope_theta", "rope_scaling", "bos_token_id", "eos_token_id"}) {
    j.erase(key);
  }
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::None);
  EXPECT_EQ(c.bos_token_id, -1);
  EXPECT_TRUE(c.eos_token_ids.empty());
}

TEST(ModelConfig, ArchitectureTableLookup) {
  for (const char* name :
       {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
        "Phi3ForCausalLM", "GPT2LMHeadModel", "NanoChatForCausalLM"}) {
    const ArchTraits* t = find_arch_traits(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_STREQ(t->hf_name, name);
  }
  EXPECT_EQ(find_arch_traits("GPT2LMHeadModel")->family, ArchFamily::Gpt2);
  EXPECT_EQ(find_arch_traits("NanoChatForCausalLM")->family, ArchFamily::NanoChat);
  EXPECT_EQ(find_arch_traits("Phi3ForCausalLM")->family, ArchFamily::Llama);
  EXPECT_EQ(find_arch_traits("GPTNeoXForCausalLM"), nullptr);
  EXPECT_EQ(find_arch_traits("llamaforcausallm"), nullptr);
}

TEST(ModelConfig, LlamaFamilyKeepsTheDefaultStructure) {
  for (const char* arch : {"LlamaForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM"}) {
    json j = llama_config();
    j["architectures"] = {arch};
    const ModelConfig c = parse(j);
    EXPECT_EQ(c.norm, NormKind::RmsNorm) << arch;
    EXPECT_EQ(c.mlp, MlpKind::SwiGLU) << arch;
    EXPECT_EQ(c.positions, PositionKind::Rope) << arch;
    EXPECT_EQ(c.qk_norm, c.traits.qk_norm ? QkNormKind::BeforeRopeWeighted : QkNormKind::None);
    EXPECT_FALSE(c.embed_norm || c.rope_reversed) << arch;
    EXPECT_EQ(c.logit_softcap, 0.0f) << arch;
  }
}

// Shaped like openai-community/gpt2's config.json (same keys; small sizes).
json gpt2_config() {
  return json::parse(R"({
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1, "bos_token_id": 50, "embd_pdrop": 0.1, "eos_token_id": 50,
    "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
    "n_ctx": 128, "n_embd": 96, "n_head": 12, "n_layer": 3, "n_positions": 128,
    "resid_pdrop": 0.1, "summary_activation": null, "summary_first_dropout": 0.1,
    "summary_proj_to_labels": true, "summary_type": "cls_index", "summary_use_proj": true,
    "vocab_size": 64})");
}

TEST(ModelConfig, ParsesGpt2) {
  const ModelConfig c = parse(gpt2_config());
  EXPECT_EQ(c.traits.family, ArchFamily::Gpt2);
  EXPECT_EQ(c.vocab_size, 64);
  EXPECT_EQ(c.hidden_size, 96);
  EXPECT_EQ(c.n_layers, 3);
  EXPECT_EQ(c.n_heads, 12);
  EXPECT_EQ(c.n_kv_heads, 12);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.intermediate_size, 4 * 96);  // n_inner absent: 4 × n_embd
  EXPECT_EQ(c.max_position_embeddings, 128);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_TRUE(c.tie_word_embeddings);  // GPT2Config's default
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.mlp_bias);
  EXPECT_EQ(c.norm, NormKind::LayerNorm);
  EXPECT_EQ(c.mlp, MlpKind::GeluTanh);
  EXPECT_EQ(c.positions, PositionKind::Learned);
  EXPECT_EQ(c.qk_norm, QkNormKind::None);
  EXPECT_FALSE(c.embed_norm || c.rope_reversed);
  EXPECT_EQ(c.logit_softcap, 0.0f);
  EXPECT_TRUE(rope_inverse_frequencies(c).empty());
  EXPECT_EQ(c.bos_token_id, 50);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{50});
}

TEST(ModelConfig, Gpt2OptionalKeysAndGenericNames) {
  json j = gpt2_config();
  j["n_inner"] = 200;
  j["tie_word_embeddings"] = false;
  j["activation_function"] = "gelu_pytorch_tanh";
  j.erase("layer_norm_epsilon");
  ModelConfig c = parse(j);
  EXPECT_EQ(c.intermediate_size, 200);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);  // GPT2Config's default
  EXPECT_EQ(c.mlp, MlpKind::GeluTanh);

  j["n_inner"] = nullptr;  // null: 4 × n_embd, as GPT2Block reads it
  EXPECT_EQ(parse(j).intermediate_size, 4 * 96);

  // GPT2Config's attribute_map: hidden_size & co. name the same fields.
  json generic = gpt2_config();
  const std::pair<const char*, const char*> renames[] = {
      {"n_embd", "hidden_size"},
      {"n_head", "num_attention_heads"},
      {"n_layer", "num_hidden_layers"},
      {"n_positions", "max_position_embeddings"}};
  for (const auto& [from, to] : renames) {
    generic[to] = generic[from];
    generic.erase(from);
  }
  c = parse(generic);
  EXPECT_EQ(c.hidden_size, 96);
  EXPECT_EQ(c.n_heads, 12);
  EXPECT_EQ(c.n_layers, 3);
  EXPECT_EQ(c.max_position_embeddings, 128);
}

TEST(ModelConfig, Gpt2VariantsKilnDoesNotRunAreUnsupported) {
  json j = gpt2_config();
  j["activation_function"] = "relu";
  expect_config_error(j, KILN_ERR_UNSUPPORTED, {"activation_function", "relu", "gelu_new"});
  j = gpt2_config();
  j["scale_attn_by_inverse_layer_idx"] = true;
  expect_config_error(j, KILN_ERR_UNSUPPORTED, {"scale_attn_by_inverse_layer_idx"});
  j = gpt2_config();
  j["scale_attn_weights"] = false;
  expect_config_error(j, KILN_ERR_UNSUPPORTED, {"scale_attn_weights"});
  j = gpt2_config();
  j["add_cross_attention"] = true;
  expect_config_error(j, KILN_ERR_UNSUPPORTED, {"add_cross_attention"});
  j = gpt2_config();
  j["n_head"] = 7;
  expect_config_error(j, KILN_ERR_FORMAT, {"n_head", "7", "n_embd", "96"});
  j = gpt2_config();
  j["layer_norm_epsilon"] = 0;
  expect_config_error(j, KILN_ERR_FORMAT, {"layer_norm_epsilon", "positive"});
  j = gpt2_config();
  j.erase("n_embd");
  expect_config_error(j, KILN_ERR_FORMAT, {"n_embd", "missing"});
}

// Shaped like karpathy/nanochat-d32 converted by transformers (same keys; small sizes).
json nanochat_config() {
  return json::parse(R"({
    "architectures": ["NanoChatForCausalLM"], "attention_bias": false,
    "attention_dropout": 0.0, "bos_token_id": 60, "dtype": "bfloat16", "eos_token_id": 61,
    "final_logit_softcapping": 15.0, "hidden_act": "relu2", "hidden_size": 128,
    "initializer_range": 0.02, "intermediate_size": 512, "max_position_embeddings": 2048,
    "model_type": "nanochat", "num_attention_heads": 2, "num_hidden_layers": 3,
    "num_key_value_heads": 2, "pad_token_id": 61, "rms_norm_eps": 1e-06,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    "tie_word_embeddings": false, "use_cache": true, "vocab_size": 64})");
}

TEST(ModelConfig, ParsesNanoChat) {
  const ModelConfig c = parse(nanochat_config());
  EXPECT_EQ(c.traits.family, ArchFamily::NanoChat);
  EXPECT_EQ(c.hidden_size, 128);
  EXPECT_EQ(c.n_layers, 3);
  EXPECT_EQ(c.n_heads, 2);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.intermediate_size, 512);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_FALSE(c.tie_word_embeddings || c.attention_bias || c.mlp_bias);
  EXPECT_EQ(c.norm, NormKind::RmsNormNoWeight);
  EXPECT_EQ(c.mlp, MlpKind::ReluSquared);
  EXPECT_EQ(c.positions, PositionKind::Rope);
  EXPECT_EQ(c.qk_norm, QkNormKind::AfterRopeNoWeight);
  EXPECT_TRUE(c.embed_norm);
  EXPECT_TRUE(c.rope_reversed);
  EXPECT_EQ(c.logit_softcap, 15.0f);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  // HF's inv_freq (positive): the reversed rotation is the executor's business.
  const auto inv = rope_inverse_frequencies(c);
  ASSERT_EQ(inv.size(), 32u);
  EXPECT_EQ(inv[0], 1.0f);
  EXPECT_FLOAT_EQ(inv[1], static_cast<float>(std::pow(10000.0, -2.0 / 64)));
}

TEST(ModelConfig, NanoChatSoftcapDefaultsAndNull) {
  json j = nanochat_config();
  j["final_logit_softcapping"] = 30;
  EXPECT_EQ(parse(j).logit_softcap, 30.0f);
  j.erase("final_logit_softcapping");
  EXPECT_EQ(parse(j).logit_softcap, 15.0f);  // NanoChatConfig's default
  j["final_logit_softcapping"] = nullptr;
  EXPECT_EQ(parse(j).logit_softcap, 0.0f);  // explicitly off
  j["final_logit_softcapping"] = -1;
  expect_config_error(j, KILN_ERR_FORMAT, {"final_logit_softcapping", "positive"});
  j = nanochat_config();
  j.erase("rms_norm_eps");
  EXPECT_FLOAT_EQ(parse(j).rms_norm_eps, 1e-6f);
  j["hidden_act"] = "silu";
  expect_config_error(j, KILN_ERR_UNSUPPORTED, {"hidden_act", "silu", "relu2"});
}

// ---------------------------------------------------------------------------------------------
// Special ids

TEST(ModelConfig, GenerationConfigOverridesAndExtendsEos) {
  json j = llama_config();
  j["eos_token_id"] = 128001;
  j["bos_token_id"] = 5;
  const ModelConfig c =
      parse(j, R"({"bos_token_id": 128000, "eos_token_id": [128009, 128001], "do_sample": true})");
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{128009, 128001}));

  const ModelConfig d = parse(j, R"({"eos_token_id": 128008, "bos_token_id": null})");
  EXPECT_EQ(d.bos_token_id, 5);
  EXPECT_EQ(d.eos_token_ids, (std::vector<int32_t>{128008, 128001}));
}

TEST(ModelConfig, NullEosIsEmpty) {
  json j = llama_config();
  j["eos_token_id"] = nullptr;
  EXPECT_TRUE(parse(j, R"({"eos_token_id": null})").eos_token_ids.empty());
}

TEST(ModelConfig, RejectsBadTokenIds) {
  json j = llama_config();
  j["eos_token_id"] = 128256;
  expect_config_error(j, KILN_ERR_FORMAT, {"eos_token_id", "128256", "vocabulary"});
  j["eos_token_id"] = {1, "2"};
  expect_config_error(j, KILN_ERR_FORMAT, {"eos_token_id[1]", "integer"});
  expect_error([&] { parse(llama_config(), R"({"eos_token_id": -1})"); }, KILN_ERR_FORMAT,
               {"generation config", "eos_token_id"});
  expect_error([&] { parse(llama_config(), "{not json"); }, KILN_ERR_FORMAT,
               {"generation config", "JSON"});
}

// ---------------------------------------------------------------------------------------------
// RoPE settings: both config styles

TEST(ModelConfig, AcceptsTransformers5RopeParameters) {
  json j = llama_config();
  j.erase("rope_theta");
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_theta", 500000.0},  {"rope_type", "llama3"},
                          {"factor", 32.0},          {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  const ModelConfig v5 = parse(j);
  const ModelConfig v4 = parse(llama_config());
  EXPECT_EQ(v5.rope_theta, 500000.0f);
  EXPECT_EQ(v5.rope_scaling.type, RopeScalingType::Llama3);
  EXPECT_EQ(v5.rope_scaling.factor, 32.0f);
  EXPECT_EQ(rope_inverse_frequencies(v5), rope_inverse_frequencies(v4));

  j["rope_parameters"] = {{"rope_theta", 1e6}, {"rope_type", "default"}};
  const ModelConfig plain = parse(j);
  EXPECT_EQ(plain.rope_theta, 1e6f);
  EXPECT_EQ(plain.rope_scaling.type, RopeScalingType::None);
}

TEST(ModelConfig, AcceptsLegacyTypeKeyForLinearScaling) {
  json j = llama_config();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Linear);
  EXPECT_EQ(c.rope_scaling.factor, 4.0f);
}

TEST(ModelConfig, DegenerateScalingsAreDefault) {
  for (const char* type : {"dynamic", "yarn", "ntk"}) {
    json j = llama_config();
    j["rope_scaling"] = {{"rope_type", type}, {"factor", 1.0}};
    EXPECT_EQ(parse(j).rope_scaling.type, RopeScalingType::None) << type;
  }
}

TEST(ModelConfig, RejectsUnsupportedRopeTypes) {
  json j = llama_config();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_config_error(j, KILN_ERR_UNSUPPORTED, {"rope_scaling.rope_type", "'yarn'", "llama3"});
  j["rope_scaling"] = {{"type", "longrope"}, {"long_factor", {1.0}}, {"short_factor", {1.0}}};
  expect_config_error(j, KILN_ERR_UNSUPPORTED, {"'longrope'"});
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  expect_config_error(j, KILN_ERR_UNSUPPORTED, {"'dynamic'"});
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 8.0}, {"rope_theta", 1e4}};
  expect_config_error(j, KILN_ERR_UNSUPPORTED, {"rope_parameters.rope_type", "'yarn'"});
}

TEST(ModelConfig, RejectsIncompleteLlama3Scaling) {
  json j = llama_config();
  j["rope_scaling"].erase("low_freq_factor");
  expect_config_error(j, KILN_ERR_FORMAT, {"rope_scaling.low_freq_factor", "missing"});
  j = llama_config();
  j["rope_scaling"]["high_freq_factor"] = 0.5;
  expect_config_error(j, KILN_ERR_FORMAT, {"rope_scaling.high_freq_factor", "greater"});
  j = llama_config();
  j["rope_scaling"]["factor"] = "32";
  expect_config_error(j, KILN_ERR_FORMAT, {"rope_scaling.factor", "number"});
  j = llama_config();
  j["rope_scaling"] = "llama3";
  expect_config_error(j, KILN_ERR_FORMAT, {"rope_scaling", "object"});
}

// ---------------------------------------------------------------------------------------------
// RoPE inverse frequencies against float64 references written from the definitions.

std::vector<double> default_reference(double theta, int dim) {
  std::vector<double> out;
  for (int i = 0; i < dim / 2; ++i) out.push_back(std::pow(theta, -2.0 * i / dim));
  return out;
}

TEST(RopeFrequencies, DefaultMatchesDefinition) {
  json j = llama_config();
  j.erase("rope_scaling");
  j["rope_theta"] = 10000.0;
  const auto got = rope_inverse_frequencies(parse(j));
  const auto want = default_reference(10000.0, 64);
  ASSERT_EQ(got.size(), 32u);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;
}

TEST(RopeFrequencies, LinearDividesByFactor) {
  json j = llama_config();
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 4.0}};
  const auto got = rope_inverse_frequencies(parse(j));
  const auto want = default_reference(500000.0, 64);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i] / 4.0) << i;
}

TEST(RopeFrequencies, PartialRotaryFactorHalvesTheCount) {
  json j = llama_config();
  j.erase("rope_scaling");
  j["partial_rotary_factor"] = 0.5;
  const auto got = rope_inverse_frequencies(parse(j));
  const auto want = default_reference(500000.0, 32);
  ASSERT_EQ(got.size(), 16u);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;
}

// Llama 3.1 frequency scaling as Meta's reference model writes it (apply_scaling in
// llama/model.py): per frequency, by wavelength band.
std::vector<double> llama3_reference(double theta, int dim, double scale, double low_ff,
                                     double high_ff, double old_context) {
  std::vector<double> out;
  const double pi = std::acos(-1.0);
  for (double freq : default_reference(theta, dim)) {
    const double wavelen = 2 * pi / freq;
    if (wavelen < old_context / high_ff) {
      out.push_back(freq);
    } else if (wavelen > old_context / low_ff) {
      out.push_back(freq / scale);
    } else {
      const double smooth = (old_context / wavelen - low_ff) / (high_ff - low_ff);
      out.push_back((1 - smooth) * freq / scale + smooth * freq);
    }
  }
  return out;
}

TEST(RopeFrequencies, Llama3MatchesReferenceInAllThreeBands) {
  const ModelConfig c = parse(llama_config());
  const auto got = rope_inverse_frequencies(c);
  const auto want = llama3_reference(500000.0, 64, 32.0, 1.0, 4.0, 8192.0);
  ASSERT_EQ(got.size(), want.size());
  const auto plain = default_reference(500000.0, 64);
  int kept = 0, divided = 0, smoothed = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_FLOAT_EQ(got[i], want[i]) << i;
    if (want[i] == plain[i]) {
      ++kept;
    } else if (want[i] == plain[i] / 32.0) {
      ++divided;
    } else {
      ++smoothed;
    }
  }
  // The test config must exercise every band of the piecewise definition.
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(smoothed, 0);
}

TEST(RopeFrequencies, Llama3WithOtherParameters) {
  json j = llama_config();
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 2.0},
                       {"high_freq_factor", 6.0},
                       {"original_max_position_embeddings", 4096}};
  j["rope_theta"] = 10000.0;
  j["head_dim"] = 128;
  const auto got = rope_inverse_frequencies(parse(j));
  const auto want = llama3_reference(10000.0, 128, 8.0, 2.0, 6.0, 4096.0);
  ASSERT_EQ(got.size(), 64u);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(ModelConfig, RejectsMissingRequiredFields) {
  for (const char* key : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                          "intermediate_size", "max_position_embeddings", "rms_norm_eps"}) {
    json j = llama_config();
    j.erase(key);
    expect_config_error(j, KILN_ERR_FORMAT, {key, "missing"});
  }
  json j = llama_config();
  j["hidden_size"] = nullptr;
  expect_config_error(j, KILN_ERR_FORMAT, {"hidden_size", "missing"});
}

TEST(ModelConfig, RejectsWrongTypesAndValues) {
  json j = llama_config();
  j["hidden_size"] = "256";
  expect_config_error(j, KILN_ERR_FORMAT, {"hidden_size", "\"256\"", "integer"});
  j = llama_config();
  j["num_hidden_layers"] = 2.5;
  expect_config_error(j, KILN_ERR_FORMAT, {"num_hidden_layers", "integer"});
  j = llama_config();
  j["vocab_size"] = 0;
  expect_config_error(j, KILN_ERR_FORMAT, {"vocab_size", "positive"});
  j = llama_config();
  j["intermediate_size"] = -4;
  expect_config_error(j, KILN_ERR_FORMAT, {"intermediate_size", "-4"});
  j = llama_config();
  j["tie_word_embeddings"] = "yes";
  expect_config_error(j, KILN_ERR_FORMAT, {"tie_word_embeddings", "true or false"});
  j = llama_config();
  j["rms_norm_eps"] = "1e-5";
  expect_config_error(j, KILN_ERR_FORMAT, {"rms_norm_eps", "number"});
  j = llama_config();
  j["rms_norm_eps"] = 0;
  expect_config_error(j, KILN_ERR_FORMAT, {"rms_norm_eps", "positive"});
  j = llama_config();
  j["rope_theta"] = -1;
  expect_config_error(j, KILN_ERR_FORMAT, {"rope_theta"});
  j = llama_config();
  j["partial_rotary_factor"] = 1.5;
  expect_config_error(j, KILN_ERR_FORMAT, {"partial_rotary_factor", "(0, 1]"});
  j = llama_config();
  j["head_dim"] = 63;
  expect_config_error(j, KILN_ERR_FORMAT, {"head_dim", "even"});
}

TEST(ModelConfig, RejectsHeadsNotDivisibleByKvHeads) {
  json j = llama_config();
  j["num_key_value_heads"] = 3;
  expect_config_error(j, KILN_ERR_FORMAT, {"num_key_value_heads", "(3)", "(4)"});
}

TEST(ModelConfig, RejectsUnderivableHeadDim) {
  json j = llama_config();
  j.erase("head_dim");
  j["num_attention_heads"] = 6;
  j["num_key_value_heads"] = 6;
  expect_config_error(j, KILN_ERR_FORMAT, {"head_dim", "hidden_size (256)", "(6)"});
}

TEST(ModelConfig, RejectsUnknownArchitectureListingSupportedOnes) {
  json j = llama_config();
  j["architectures"] = {"GPTNeoXForCausalLM"};
  expect_config_error(
      j, KILN_ERR_UNSUPPORTED,
      {"GPTNeoXForCausalLM", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
       "Qwen3ForCausalLM", "Phi3ForCausalLM", "GPT2LMHeadModel", "NanoChatForCausalLM"});
  j["architectures"] = json::array();
  expect_config_error(j, KILN_ERR_FORMAT, {"architectures"});
  j.erase("architectures");
  expect_config_error(j, KILN_ERR_FORMAT, {"architectures"});
}

TEST(ModelConfig, RejectsInvalidJson) {
  expect_error([] { parse_model_config("{\"vocab_size\": ", "", "x/config.json"); },
               KILN_ERR_FORMAT, {"x/config.json", "JSON"});
  expect_error([] { parse_model_config("[1]", "", "x/config.json"); }, KILN_ERR_FORMAT,
               {"x/config.json", "object"});
}

// ---------------------------------------------------------------------------------------------
// load_model_config from a directory

TEST(LoadModelConfig, ReadsConfigAndGenerationConfig) {
  const fs::path dir = test::temp_dir("cfg");
  test::write_file(dir / "config.json", llama_config().dump(2));
  EXPECT_EQ(load_model_config(dir).eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
  test::write_file(dir / "generation_config.json", R"({"eos_token_id": 7})");
  EXPECT_EQ(load_model_config(dir).eos_token_ids,
            (std::vector<int32_t>{7, 128001, 128008, 128009}));
  test::write_file(dir / "generation_config.json", R"({"eos_token_id": "x"})");
  expect_error([&] { load_model_config(dir); }, KILN_ERR_FORMAT,
               {(dir / "generation_config.json").string(), "eos_token_id"});
}

TEST(LoadModelConfig, ErrorsNameTheFile) {
  const fs::path dir = test::temp_dir("cfg-missing");
  expect_error([&] { load_model_config(dir); }, KILN_ERR_NOT_FOUND,
               {(dir / "config.json").string()});
  json j = llama_config();
  j.erase("vocab_size");
  test::write_file(dir / "config.json", j.dump());
  expect_error([&] { load_model_config(dir); }, KILN_ERR_FORMAT,
               {(dir / "config.json").string(), "vocab_size"});
}

}  // namespace
}  // namespace kiln
