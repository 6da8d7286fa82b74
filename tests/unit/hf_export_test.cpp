// HF export: the exported directory read back through kiln's own SafetensorsFile / WeightSet /
// config parser / model loader, with the HF names and layouts of each family spelled out here
// from transformers' modelling code (not from the exporter).
#include "train/hf_export.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.hpp"
#include "engine/model.hpp"
#include "engine/runtime.hpp"
#include "formats/safetensors.hpp"
#include "model/config_writer.hpp"
#include "model/transformer_weights.hpp"
#include "test_support.hpp"
#include "util/mapped_file.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The canonical layout of docs/training-design.md for a config, written out here.
ParamLayout canonical_layout(const ModelConfig& c) {
  ParamLayout l;
  const int64_t H = c.hidden_size, Q = int64_t{c.n_heads} * c.head_dim,
                KV = int64_t{c.n_kv_heads} * c.head_dim, I = c.intermediate_size;
  const bool layer_norm = c.norm == NormKind::LayerNorm;
  const bool has_norm_weight = c.norm != NormKind::RmsNormNoWeight;
  const bool gated = c.mlp == MlpKind::SwiGLU;
  const bool biases = layer_norm;  // GPT-2: every linear has a bias
  l.add("model.embed_tokens.weight", {c.vocab_size, H}, ParamRole::Embedding);
  if (c.positions == PositionKind::Learned) {
    l.add("model.embed_positions.weight", {c.max_position_embeddings, H}, ParamRole::Position);
  }
  for (int L = 0; L < c.n_layers; ++L) {
    const std::string p = "model.layers." + std::to_string(L) + ".";
    if (has_norm_weight) l.add(p + "input_layernorm.weight", {H}, ParamRole::Norm);
    if (layer_norm) l.add(p + "input_layernorm.bias", {H}, ParamRole::Bias);
    l.add(p + "self_attn.q_proj.weight", {Q, H}, ParamRole::Matrix);
    l.add(p + "self_attn.k_proj.weight", {KV, H}, ParamRole::Matrix);
    l.add(p + "self_attn.v_proj.weight", {KV, H}, ParamRole::Matrix);
    if (biases || c.traits.qkv_bias) {
      l.add(p + "self_attn.q_proj.bias", {Q}, ParamRole::Bias);
      l.add(p + "self_attn.k_proj.bias", {KV}, ParamRole::Bias);
      l.add(p + "self_attn.v_proj.bias", {KV}, ParamRole::Bias);
    }
    l.add(p + "self_attn.o_proj.weight", {H, Q}, ParamRole::Matrix);
    if (biases) l.add(p + "self_attn.o_proj.bias", {H}, ParamRole::Bias);
    if (c.qk_norm == QkNormKind::BeforeRopeWeighted) {
      l.add(p + "self_attn.q_norm.weight", {c.head_dim}, ParamRole::Norm);
      l.add(p + "self_attn.k_norm.weight", {c.head_dim}, ParamRole::Norm);
    }
    if (has_norm_weight) l.add(p + "post_attention_layernorm.weight", {H}, ParamRole::Norm);
    if (layer_norm) l.add(p + "post_attention_layernorm.bias", {H}, ParamRole::Bias);
    if (gated) l.add(p + "mlp.gate_proj.weight", {I, H}, ParamRole::Matrix);
    l.add(p + "mlp.up_proj.weight", {I, H}, ParamRole::Matrix);
    if (biases) l.add(p + "mlp.up_proj.bias", {I}, ParamRole::Bias);
    l.add(p + "mlp.down_proj.weight", {H, I}, ParamRole::Matrix);
    if (biases) l.add(p + "mlp.down_proj.bias", {H}, ParamRole::Bias);
  }
  if (has_norm_weight) l.add("model.norm.weight", {H}, ParamRole::Norm);
  if (layer_norm) l.add("model.norm.bias", {H}, ParamRole::Bias);
  if (!c.tie_word_embeddings) l.add("lm_head.weight", {c.vocab_size, H}, ParamRole::Head);
  return l;
}

std::vector<float> random_values(const ParamLayout& l, uint32_t seed) {
  std::vector<float> v(static_cast<size_t>(l.total()), 0.0f);
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.5f);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float> read_f32(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  convert_to_f32(t.dtype, t.data, out.data(), out.size());
  return out;
}

std::vector<float> param(const ParamLayout& l, const std::vector<float>& v, const std::string& n) {
  const ParamSpec& s = l.at(n);
  return {v.begin() + s.offset, v.begin() + s.offset + s.numel};
}

ModelConfig llama_family_config(const std::string& arch, bool tied) {
  json j = {{"architectures", {arch}},
            {"vocab_size", 32},
            {"hidden_size", 16},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 4},
            {"num_key_value_heads", 2},
            {"intermediate_size", 24},
            {"max_position_embeddings", 64},
            {"rms_norm_eps", 1e-5},
            {"rope_theta", 500000.0},
            {"tie_word_embeddings", tied},
            {"bos_token_id", 1},
            {"eos_token_id", {2, 3}},
            {"rope_scaling",
             {{"rope_type", "llama3"},
              {"factor", 8.0},
              {"low_freq_factor", 1.0},
              {"high_freq_factor", 4.0},
              {"original_max_position_embeddings", 32}}}};
  if (arch != "Phi3ForCausalLM") j["head_dim"] = 8;  // != hidden / heads: must survive
  if (arch == "LlamaForCausalLM") j["attention_bias"] = false;
  return parse_model_config(j.dump(), "", arch + " test config");
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
  EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_EQ(a.rope_scaling.low_freq_factor, b.rope_scaling.low_freq_factor);
  EXPECT_EQ(a.rope_scaling.high_freq_factor, b.rope_scaling.high_freq_factor);
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings,
            b.rope_scaling.original_max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
}

class LlamaFamilyExport : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaFamilyExport, SameTensorsThroughWeightSetConfigAndModelLoader) {
  for (bool tied : {false, true}) {
    const ModelConfig config = llama_family_config(GetParam(), tied);
    const ParamLayout layout = canonical_layout(config);
    const std::vector<float> values = random_values(layout, 42);
    const fs::path dir = test::temp_dir("hf-export") / GetParam();
    HfExportOptions options;
    options.tokenizer_config_json = R"({"add_bos_token": true})";
    export_hf_model(dir, config, layout, values.data(), options);

    expect_same_config(config, load_model_config(dir));
    EXPECT_EQ(test::read_file(dir / "tokenizer_config.json"), options.tokenizer_config_json);
    EXPECT_FALSE(fs::exists(dir / "tokenizer.json"));

    const auto weights = WeightSet::open_dir(dir);
    size_t expected_count = 0;
    for (const ParamSpec& s : layout.specs()) {
      ++expected_count;
      const TensorView& t = weights->get(s.name);  // canonical names are these families' names
      EXPECT_EQ(t.dtype, DType::F32);
      EXPECT_EQ(t.shape, s.shape) << s.name;
      EXPECT_EQ(read_f32(t), param(layout, values, s.name)) << s.name;
    }
    EXPECT_EQ(weights->names().size(), expected_count);
    EXPECT_NO_THROW(resolve_transformer_weights(load_model_config(dir), *weights));

    // kiln's own loader (CPU backend) takes the directory as it would any HF model.
    RuntimeOptions ro;
    ro.backend = KILN_BACKEND_CPU;
    ro.n_threads = 1;
    const Runtime runtime(ro);
    const auto model = load_model(runtime, dir, nullptr);
    EXPECT_EQ(model->n_parameters, layout.n_parameters());
    for (const ParamSpec& s : layout.specs()) {
      EXPECT_EQ(read_f32(model->weights->get(s.name)), param(layout, values, s.name)) << s.name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, LlamaFamilyExport,
                         ::testing::Values("LlamaForCausalLM", "MistralForCausalLM",
                                           "Qwen2ForCausalLM", "Qwen3ForCausalLM"));

TEST(HfExport, Phi3FusesQkvAndGateUpInHfOrder) {
  const ModelConfig config = llama_family_config("Phi3ForCausalLM", false);
  const ParamLayout layout = canonical_layout(config);
  const std::vector<float> values = random_values(layout, 7);
  const fs::path dir = test::temp_dir("hf-phi3");
  export_hf_model(dir, config, layout, values.data(), {});
  const auto weights = WeightSet::open_dir(dir);
  for (int L = 0; L < config.n_layers; ++L) {
    const std::string p = "model.layers." + std::to_string(L) + ".";
    EXPECT_EQ(weights->find(p + "self_attn.q_proj.weight"), nullptr);
    // Phi3Attention: qkv_proj output rows are q, then k, then v.
    std::vector<float> qkv = param(layout, values, p + "self_attn.q_proj.weight");
    for (const char* part : {"k_proj", "v_proj"}) {
      const auto v = param(layout, values, p + "self_attn." + part + ".weight");
      qkv.insert(qkv.end(), v.begin(), v.end());
    }
    const TensorView& fused = weights->get(p + "self_attn.qkv_proj.weight");
    EXPECT_EQ(fused.shape, (std::vector<int64_t>{16 + 2 * 8, 16}));
    EXPECT_EQ(read_f32(fused), qkv);
    // Phi3MLP: gate, up = gate_up.chunk(2) (gate rows first).
    std::vector<float> gate_up = param(layout, values, p + "mlp.gate_proj.weight");
    const auto up = param(layout, values, p + "mlp.up_proj.weight");
    gate_up.insert(gate_up.end(), up.begin(), up.end());
    EXPECT_EQ(read_f32(weights->get(p + "mlp.gate_up_proj.weight")), gate_up);
  }
  expect_same_config(config, load_model_config(dir));
  EXPECT_NO_THROW(resolve_transformer_weights(load_model_config(dir), *weights));
}

ModelConfig gpt2_config() {
  ModelConfig c;
  c.architecture = "GPT2LMHeadModel";
  c.vocab_size = 20;
  c.hidden_size = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.intermediate_size = 32;
  c.max_position_embeddings = 12;
  c.rms_norm_eps = 1e-5f;
  c.tie_word_embeddings = true;
  c.norm = NormKind::LayerNorm;
  c.mlp = MlpKind::GeluTanh;
  c.positions = PositionKind::Learned;
  c.bos_token_id = 19;
  c.eos_token_ids = {19};
  return c;
}

TEST(HfExport, Gpt2Conv1DLayoutAndConfig) {
  const ModelConfig config = gpt2_config();
  const ParamLayout layout = canonical_layout(config);
  const std::vector<float> values = random_values(layout, 9);
  const fs::path dir = test::temp_dir("hf-gpt2");
  export_hf_model(dir, config, layout, values.data(), {});
  const auto file = SafetensorsFile::open(dir / "model.safetensors");
  const auto& t = file->tensors();
  // transformers' GPT2 state dict (tied lm_head is not stored).
  std::vector<std::string> want = {"transformer.wte.weight", "transformer.wpe.weight",
                                   "transformer.ln_f.weight", "transformer.ln_f.bias"};
  for (int L = 0; L < 2; ++L) {
    for (const char* n :
         {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
          "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight",
          "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"}) {
      want.push_back("transformer.h." + std::to_string(L) + "." + n);
    }
  }
  EXPECT_EQ(t.size(), want.size());
  for (const auto& n : want) EXPECT_EQ(t.count(n), 1u) << n;

  // Conv1D: y = x @ W + b with W [in, out]; c_attn's out index runs over q, k, v.
  const auto c_attn = read_f32(t.at("transformer.h.1.attn.c_attn.weight"));
  EXPECT_EQ(t.at("transformer.h.1.attn.c_attn.weight").shape, (std::vector<int64_t>{8, 24}));
  const char* parts[] = {"q_proj", "k_proj", "v_proj"};
  for (int part = 0; part < 3; ++part) {
    const auto w =
        param(layout, values, std::string("model.layers.1.self_attn.") + parts[part] + ".weight");
    for (int o = 0; o < 8; ++o)
      for (int i = 0; i < 8; ++i) ASSERT_EQ(c_attn[i * 24 + part * 8 + o], w[o * 8 + i]);
  }
  const auto b = read_f32(t.at("transformer.h.1.attn.c_attn.bias"));
  EXPECT_EQ(std::vector<float>(b.begin() + 8, b.begin() + 16),
            param(layout, values, "model.layers.1.self_attn.k_proj.bias"));
  const auto fc = read_f32(t.at("transformer.h.0.mlp.c_fc.weight"));           // [8, 32]
  const auto up = param(layout, values, "model.layers.0.mlp.up_proj.weight");  // [32, 8]
  EXPECT_EQ(t.at("transformer.h.0.mlp.c_fc.weight").shape, (std::vector<int64_t>{8, 32}));
  for (int o = 0; o < 32; ++o)
    for (int i = 0; i < 8; ++i) ASSERT_EQ(fc[i * 32 + o], up[o * 8 + i]);
  const auto proj = read_f32(t.at("transformer.h.0.mlp.c_proj.weight"));           // [32, 8]
  const auto down = param(layout, values, "model.layers.0.mlp.down_proj.weight");  // [8, 32]
  for (int o = 0; o < 8; ++o)
    for (int i = 0; i < 32; ++i) ASSERT_EQ(proj[i * 8 + o], down[o * 32 + i]);
  EXPECT_EQ(read_f32(t.at("transformer.wpe.weight")),
            param(layout, values, "model.embed_positions.weight"));

  const json j = json::parse(test::read_file(dir / "config.json"));
  EXPECT_EQ(j["model_type"], "gpt2");
  EXPECT_EQ(j["n_embd"], 8);
  EXPECT_EQ(j["n_positions"], 12);
  EXPECT_EQ(j["n_inner"], 32);
  EXPECT_EQ(j["n_head"], 2);
  EXPECT_EQ(j["activation_function"], "gelu_new");
  EXPECT_EQ(j["layer_norm_epsilon"], 1e-5);
  EXPECT_EQ(j["eos_token_id"], 19);
}

TEST(HfExport, NanoChatNamesAndConfig) {
  ModelConfig c;
  c.architecture = "NanoChatForCausalLM";
  c.vocab_size = 24;
  c.hidden_size = 16;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 64;
  c.max_position_embeddings = 32;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 10000.0f;
  c.norm = NormKind::RmsNormNoWeight;
  c.mlp = MlpKind::ReluSquared;
  c.qk_norm = QkNormKind::AfterRopeNoWeight;
  c.embed_norm = true;
  c.logit_softcap = 15.0f;
  c.n_mtp_heads = 1;
  ParamLayout layout = canonical_layout(c);
  layout.add("model.mtp_heads.1.mlp.up_proj.weight", {64, 16}, ParamRole::Matrix);
  const std::vector<float> values = random_values(layout, 3);
  const fs::path dir = test::temp_dir("hf-nanochat");
  export_hf_model(dir, c, layout, values.data(), {});
  const auto file = SafetensorsFile::open(dir / "model.safetensors");
  // NanoChatMLP: fc1 [intermediate, hidden], fc2 [hidden, intermediate]; norms have no weights;
  // the MTP head is not part of the HF model.
  std::vector<std::string> names;
  for (const auto& [n, v] : file->tensors()) names.push_back(n);
  EXPECT_EQ(names,
            (std::vector<std::string>{
                "lm_head.weight", "model.embed_tokens.weight", "model.layers.0.mlp.fc1.weight",
                "model.layers.0.mlp.fc2.weight", "model.layers.0.self_attn.k_proj.weight",
                "model.layers.0.self_attn.o_proj.weight", "model.layers.0.self_attn.q_proj.weight",
                "model.layers.0.self_attn.v_proj.weight"}));
  EXPECT_EQ(read_f32(file->tensors().at("model.layers.0.mlp.fc2.weight")),
            param(layout, values, "model.layers.0.mlp.down_proj.weight"));
  const json j = json::parse(test::read_file(dir / "config.json"));
  EXPECT_EQ(j["model_type"], "nanochat");
  EXPECT_EQ(j["hidden_act"], "relu2");
  EXPECT_EQ(j["final_logit_softcapping"], 15.0);
  EXPECT_EQ(j["rope_parameters"]["rope_theta"], 10000.0);
  EXPECT_EQ(j["intermediate_size"], 64);
  EXPECT_FALSE(j.contains("head_dim"));  // hidden / heads: left to NanoChatConfig's default
}

TEST(HfExport, SafetensorsHeaderIsSortedAlignedAndBf16RoundsToNearestEven) {
  const ModelConfig config = llama_family_config("LlamaForCausalLM", true);
  const ParamLayout layout = canonical_layout(config);
  std::vector<float> values = random_values(layout, 5);
  // Exact ties: 1 + 2^-8 (halfway between bf16 1 and 1 + 2^-7) rounds to even = 1;
  // 1 + 3 * 2^-8 rounds to even = 1 + 2^-6.
  const int64_t e = layout.at("model.embed_tokens.weight").offset;
  values[e] = 1.0f + 1.0f / 256;
  values[e + 1] = 1.0f + 3.0f / 256;
  values[e + 2] = 1.0f + 1.0f / 256 + 1.0f / 65536;  // above the tie: up
  const fs::path dir = test::temp_dir("hf-bf16");
  HfExportOptions options;
  options.dtype = DType::BF16;
  export_hf_model(dir, config, layout, values.data(), options);

  const std::string bytes = test::read_file(dir / "model.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  const json header = json::parse(bytes.substr(8, n));
  uint64_t expect_begin = 0;
  std::string previous;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    EXPECT_LT(previous, name);
    previous = name;
    EXPECT_EQ(entry["dtype"], "BF16");
    EXPECT_EQ(entry["data_offsets"][0], expect_begin) << name;  // back to back
    expect_begin = entry["data_offsets"][1];
  }
  EXPECT_EQ(8 + n + expect_begin, bytes.size());

  const auto weights = WeightSet::open_dir(dir);
  const auto embed = read_f32(weights->get("model.embed_tokens.weight"));
  EXPECT_EQ(embed[0], 1.0f);
  EXPECT_EQ(embed[1], 1.0f + 1.0f / 64);
  EXPECT_EQ(embed[2], 1.0f + 1.0f / 128);
  for (size_t i = 3; i < embed.size(); ++i) {
    const float v = values[static_cast<size_t>(e) + i];
    EXPECT_LE(std::fabs(embed[i] - v), std::fabs(v) / 256) << i;  // within half a bf16 ulp
  }
  EXPECT_EQ(json::parse(test::read_file(dir / "config.json"))["torch_dtype"], "bfloat16");
}

TEST(HfExport, ErrorsNameTheTensorOrArchitecture) {
  const auto status_of = [](auto&& fn) -> std::pair<kiln_status, std::string> {
    try {
      fn();
    } catch (const Error& e) {
      return {e.status(), e.what()};
    }
    return {KILN_OK, ""};
  };
  ModelConfig config = llama_family_config("LlamaForCausalLM", false);
  ParamLayout layout = canonical_layout(config);
  layout.add("model.extra.weight", {4}, ParamRole::Norm);
  std::vector<float> values(static_cast<size_t>(layout.total()), 0.0f);
  const fs::path dir = test::temp_dir("hf-errors");
  config.architecture = "FalconForCausalLM";
  auto [s1, m1] = status_of([&] { export_hf_model(dir, config, layout, values.data(), {}); });
  EXPECT_EQ(s1, KILN_ERR_UNSUPPORTED);
  EXPECT_NE(m1.find("FalconForCausalLM"), std::string::npos) << m1;

  // GPT-2 has no place for a gate projection; Phi3 needs k_proj to fuse.
  const ModelConfig gpt2 = gpt2_config();
  ParamLayout gl = canonical_layout(gpt2);
  gl.add("model.layers.0.mlp.gate_proj.weight", {32, 8}, ParamRole::Matrix);
  std::vector<float> gv(static_cast<size_t>(gl.total()), 0.0f);
  auto [s2, m2] = status_of([&] { hf_tensors(gpt2, gl, gv.data()); });
  EXPECT_EQ(s2, KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(m2.find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << m2;

  const ModelConfig phi3 = llama_family_config("Phi3ForCausalLM", false);
  ParamLayout pl;
  pl.add("model.layers.0.self_attn.q_proj.weight", {16, 16}, ParamRole::Matrix);
  std::vector<float> pv(static_cast<size_t>(pl.total()), 0.0f);
  auto [s3, m3] = status_of([&] { hf_tensors(phi3, pl, pv.data()); });
  EXPECT_EQ(s3, KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(m3.find("model.layers.0.self_attn.k_proj.weight"), std::string::npos) << m3;

  ModelConfig gqa = gpt2_config();
  gqa.n_kv_heads = 1;
  auto [s4, m4] = status_of([&] { model_config_to_json(gqa, DType::F32); });
  EXPECT_EQ(s4, KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(m4.find("num_key_value_heads"), std::string::npos) << m4;
}

}  // namespace
}  // namespace kiln
