// resolve_transformer_weights over small synthetic checkpoints written by the test, with the HF
// tensor names and shapes spelled out here independently of the resolver.
#include "model/transformer_weights.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "test_support.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Sizes shared by every test model: H=2 heads, K=1 kv head, D=4 head_dim.
constexpr int64_t kVocab = 16, kHidden = 8, kHeads = 2, kKvHeads = 1, kInter = 12, kLayers = 2;

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype = "F32";
};

json config_json(const std::string& arch, int64_t head_dim) {
  return {{"architectures", {arch}},       {"vocab_size", kVocab},
          {"hidden_size", kHidden},        {"num_hidden_layers", kLayers},
          {"num_attention_heads", kHeads}, {"num_key_value_heads", kKvHeads},
          {"head_dim", head_dim},          {"intermediate_size", kInter},
          {"max_position_embeddings", 64}, {"rms_norm_eps", 1e-6},
          {"tie_word_embeddings", false}};
}

ModelConfig make_config(const json& j) { return parse_model_config(j.dump(), "", "config.json"); }

// The tensors an HF checkpoint of this architecture holds (transformers' modeling_<arch>.py
// module names; nn.Linear weights are [out, in]).
std::vector<Tensor> hf_tensors(const std::string& arch, int64_t head_dim, bool tied = false) {
  const int64_t q = kHeads * head_dim, kv = kKvHeads * head_dim;
  std::vector<Tensor> t = {{"model.embed_tokens.weight", {kVocab, kHidden}},
                           {"model.norm.weight", {kHidden}}};
  if (!tied) t.push_back({"lm_head.weight", {kVocab, kHidden}});
  for (int64_t i = 0; i < kLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t.push_back({p + "input_layernorm.weight", {kHidden}});
    t.push_back({p + "post_attention_layernorm.weight", {kHidden}});
    t.push_back({p + "self_attn.o_proj.weight", {kHidden, q}});
    t.push_back({p + "mlp.down_proj.weight", {kHidden, kInter}});
    if (arch == "Phi3ForCausalLM") {
      t.push_back({p + "self_attn.qkv_proj.weight", {q + 2 * kv, kHidden}});
      t.push_back({p + "mlp.gate_up_proj.weight", {2 * kInter, kHidden}});
      continue;
    }
    t.push_back({p + "self_attn.q_proj.weight", {q, kHidden}});
    t.push_back({p + "self_attn.k_proj.weight", {kv, kHidden}});
    t.push_back({p + "self_attn.v_proj.weight", {kv, kHidden}});
    t.push_back({p + "mlp.gate_proj.weight", {kInter, kHidden}});
    t.push_back({p + "mlp.up_proj.weight", {kInter, kHidden}});
    if (arch == "Qwen2ForCausalLM") {
      t.push_back({p + "self_attn.q_proj.bias", {q}});
      t.push_back({p + "self_attn.k_proj.bias", {kv}});
      t.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    if (arch == "Qwen3ForCausalLM") {
      t.push_back({p + "self_attn.q_norm.weight", {head_dim}});
      t.push_back({p + "self_attn.k_norm.weight", {head_dim}});
    }
  }
  return t;
}

std::string length_prefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out;
}

// Element size of the dtypes used here.
size_t element_size(const std::string& dtype) {
  return dtype == "F32" ? 4 : dtype == "I64" ? 8 : 2;
}

// Every row r of a 2-D tensor (every element r of a 1-D one) holds the value r, so a row slice
// can be checked by reading its first element. F16/BF16 tensors hold zeros.
std::string tensor_bytes(const Tensor& t) {
  int64_t numel = 1;
  for (int64_t d : t.shape) numel *= d;
  std::string bytes(static_cast<size_t>(numel) * element_size(t.dtype), '\0');
  if (t.dtype == "F32") {
    const int64_t cols = t.shape.size() == 2 ? t.shape[1] : 1;
    for (int64_t i = 0; i < numel; ++i) {
      const float v = static_cast<float>(i / cols);
      std::memcpy(&bytes[static_cast<size_t>(i) * 4], &v, 4);
    }
  }
  return bytes;
}

std::string safetensors_bytes(const std::vector<Tensor>& tensors) {
  json header = json::object();
  std::string buffer;
  for (const auto& t : tensors) {
    const std::string bytes = tensor_bytes(t);
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {buffer.size(), buffer.size() + bytes.size()}}};
    buffer += bytes;
  }
  const std::string text = header.dump();
  return length_prefix(text.size()) + text + buffer;
}

// One model.safetensors, or (shards=2) two shards with an index, the tensors dealt alternately.
fs::path write_model(const std::vector<Tensor>& tensors, int shards = 1) {
  const fs::path dir = test::temp_dir("tw");
  if (shards == 1) {
    test::write_file(dir / "model.safetensors", safetensors_bytes(tensors));
    return dir;
  }
  std::vector<std::vector<Tensor>> parts(static_cast<size_t>(shards));
  json weight_map = json::object();
  for (size_t i = 0; i < tensors.size(); ++i) parts[i % shards].push_back(tensors[i]);
  for (int s = 0; s < shards; ++s) {
    const std::string file =
        "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
    test::write_file(dir / file, safetensors_bytes(parts[s]));
    for (const auto& t : parts[s]) weight_map[t.name] = file;
  }
  test::write_file(dir / "model.safetensors.index.json", json{{"weight_map", weight_map}}.dump());
  return dir;
}

void set_shape(std::vector<Tensor>& tensors, const std::string& name, std::vector<int64_t> shape) {
  for (auto& t : tensors) {
    if (t.name == name) t.shape = std::move(shape);
  }
}

void remove_tensor(std::vector<Tensor>& tensors, const std::string& name) {
  std::erase_if(tensors, [&](const Tensor& t) { return t.name == name; });
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

// Checks ref is the whole tensor `name` as a [rows x cols] block.
void expect_ref(const WeightRef& ref, const WeightSet& w, const std::string& name, int64_t rows,
                int64_t cols) {
  ASSERT_TRUE(ref.present()) << name;
  EXPECT_EQ(ref.tensor, &w.get(name)) << name;
  EXPECT_EQ(ref.row_begin, 0) << name;
  EXPECT_EQ(ref.rows, rows) << name;
  EXPECT_EQ(ref.cols, cols) << name;
  EXPECT_EQ(ref.data(), w.get(name).data) << name;
  EXPECT_EQ(ref.nbytes(), w.get(name).nbytes) << name;
}

float first_value(const WeightRef& ref) {
  float v;
  std::memcpy(&v, ref.data(), 4);
  return v;
}

struct Loaded {
  std::unique_ptr<WeightSet> weights;
  TransformerWeights resolved;
};

Loaded load(const ModelConfig& c, const fs::path& dir) {
  Loaded l;
  l.weights = WeightSet::open_dir(dir);
  l.resolved = resolve_transformer_weights(c, *l.weights);
  return l;
}

// ---------------------------------------------------------------------------------------------

TEST(TransformerWeights, ResolvesLlama) {
  const ModelConfig c = make_config(config_json("LlamaForCausalLM", 4));
  const Loaded m = load(c, write_model(hf_tensors("LlamaForCausalLM", 4)));
  const WeightSet& w = *m.weights;
  const TransformerWeights& t = m.resolved;
  expect_ref(t.embed, w, "model.embed_tokens.weight", kVocab, kHidden);
  expect_ref(t.final_norm, w, "model.norm.weight", kHidden, 1);
  expect_ref(t.lm_head, w, "lm_head.weight", kVocab, kHidden);
  ASSERT_EQ(t.layers.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const LayerWeights& l = t.layers[static_cast<size_t>(i)];
    expect_ref(l.attn_norm, w, p + "input_layernorm.weight", kHidden, 1);
    expect_ref(l.ffn_norm, w, p + "post_attention_layernorm.weight", kHidden, 1);
    expect_ref(l.wq, w, p + "self_attn.q_proj.weight", 8, kHidden);
    expect_ref(l.wk, w, p + "self_attn.k_proj.weight", 4, kHidden);
    expect_ref(l.wv, w, p + "self_attn.v_proj.weight", 4, kHidden);
    expect_ref(l.wo, w, p + "self_attn.o_proj.weight", kHidden, 8);
    expect_ref(l.w_gate, w, p + "mlp.gate_proj.weight", kInter, kHidden);
    expect_ref(l.w_up, w, p + "mlp.up_proj.weight", kInter, kHidden);
    expect_ref(l.w_down, w, p + "mlp.down_proj.weight", kHidden, kInter);
    for (const WeightRef* absent : {&l.bq, &l.bk, &l.bv, &l.bo, &l.q_norm, &l.k_norm}) {
      EXPECT_FALSE(absent->present());
    }
  }
}

TEST(TransformerWeights, TiedEmbeddingsShareTheEmbedding) {
  json j = config_json("LlamaForCausalLM", 4);
  j["tie_word_embeddings"] = true;
  const Loaded m = load(make_config(j), write_model(hf_tensors("LlamaForCausalLM", 4, true)));
  expect_ref(m.resolved.lm_head, *m.weights, "model.embed_tokens.weight", kVocab, kHidden);
}

TEST(TransformerWeights, UntiedModelWithoutLmHeadIsAFormatError) {
  const ModelConfig c = make_config(config_json("LlamaForCausalLM", 4));
  const auto w = WeightSet::open_dir(write_model(hf_tensors("LlamaForCausalLM", 4, true)));
  expect_error([&] { resolve_transformer_weights(c, *w); }, KILN_ERR_FORMAT,
               {"lm_head.weight", "model.safetensors", "tie_word_embeddings is false"});
}

TEST(TransformerWeights, LlamaAttentionBiasAddsAllFourBiases) {
  json j = config_json("LlamaForCausalLM", 4);
  j["attention_bias"] = true;
  auto tensors = hf_tensors("LlamaForCausalLM", 4);
  for (int i = 0; i < kLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".self_attn.";
    tensors.push_back({p + "q_proj.bias", {8}});
    tensors.push_back({p + "k_proj.bias", {4}});
    tensors.push_back({p + "v_proj.bias", {4}});
    tensors.push_back({p + "o_proj.bias", {kHidden}});
  }
  const Loaded m = load(make_config(j), write_model(tensors));
  const LayerWeights& l = m.resolved.layers[1];
  expect_ref(l.bq, *m.weights, "model.layers.1.self_attn.q_proj.bias", 8, 1);
  expect_ref(l.bk, *m.weights, "model.layers.1.self_attn.k_proj.bias", 4, 1);
  expect_ref(l.bv, *m.weights, "model.layers.1.self_attn.v_proj.bias", 4, 1);
  expect_ref(l.bo, *m.weights, "model.layers.1.self_attn.o_proj.bias", kHidden, 1);
}

TEST(TransformerWeights, ResolvesQwen2Biases) {
  const ModelConfig c = make_config(config_json("Qwen2ForCausalLM", 4));
  const Loaded m = load(c, write_model(hf_tensors("Qwen2ForCausalLM", 4)));
  for (int i = 0; i < kLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".self_attn.";
    const LayerWeights& l = m.resolved.layers[static_cast<size_t>(i)];
    expect_ref(l.bq, *m.weights, p + "q_proj.bias", 8, 1);
    expect_ref(l.bk, *m.weights, p + "k_proj.bias", 4, 1);
    expect_ref(l.bv, *m.weights, p + "v_proj.bias", 4, 1);
    EXPECT_FALSE(l.bo.present());
    EXPECT_FALSE(l.q_norm.present());
  }
}

TEST(TransformerWeights, Qwen2MissingBiasIsAFormatError) {
  const ModelConfig c = make_config(config_json("Qwen2ForCausalLM", 4));
  auto tensors = hf_tensors("Qwen2ForCausalLM", 4);
  remove_tensor(tensors, "model.layers.1.self_attn.k_proj.bias");
  const auto w = WeightSet::open_dir(write_model(tensors));
  expect_error([&] { resolve_transformer_weights(c, *w); }, KILN_ERR_FORMAT,
               {"model.layers.1.self_attn.k_proj.bias", "not found"});
}

TEST(TransformerWeights, ResolvesQwen3NormsWithWideHeads) {
  // head_dim 8: heads * head_dim = 16 != hidden_size 8, as in real Qwen3 checkpoints.
  const ModelConfig c = make_config(config_json("Qwen3ForCausalLM", 8));
  const Loaded m = load(c, write_model(hf_tensors("Qwen3ForCausalLM", 8)));
  const LayerWeights& l = m.resolved.layers[0];
  expect_ref(l.q_norm, *m.weights, "model.layers.0.self_attn.q_norm.weight", 8, 1);
  expect_ref(l.k_norm, *m.weights, "model.layers.0.self_attn.k_norm.weight", 8, 1);
  expect_ref(l.wq, *m.weights, "model.layers.0.self_attn.q_proj.weight", 16, kHidden);
  expect_ref(l.wk, *m.weights, "model.layers.0.self_attn.k_proj.weight", 8, kHidden);
  expect_ref(l.wo, *m.weights, "model.layers.0.self_attn.o_proj.weight", kHidden, 16);
  EXPECT_FALSE(l.bq.present());
}

TEST(TransformerWeights, Qwen3NormWithWrongShapeIsAFormatError) {
  const ModelConfig c = make_config(config_json("Qwen3ForCausalLM", 8));
  auto tensors = hf_tensors("Qwen3ForCausalLM", 8);
  set_shape(tensors, "model.layers.1.self_attn.k_norm.weight", {kHidden * 2});
  const auto w = WeightSet::open_dir(write_model(tensors));
  expect_error([&] { resolve_transformer_weights(c, *w); }, KILN_ERR_FORMAT,
               {"tensor model.layers.1.self_attn.k_norm.weight in model.safetensors has shape "
                "[16], expected [8] (head_dim=8)"});
}

TEST(TransformerWeights, SlicesPhi3FusedProjectionsByRows) {
  const ModelConfig c = make_config(config_json("Phi3ForCausalLM", 4));
  const Loaded m = load(c, write_model(hf_tensors("Phi3ForCausalLM", 4)));
  for (int i = 0; i < kLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const LayerWeights& l = m.resolved.layers[static_cast<size_t>(i)];
    const TensorView& qkv = m.weights->get(p + "self_attn.qkv_proj.weight");
    const TensorView& gate_up = m.weights->get(p + "mlp.gate_up_proj.weight");
    // q: rows [0, 8), k: rows [8, 12), v: rows [12, 16) of the [16 x 8] qkv_proj.
    const struct {
      const WeightRef* ref;
      const TensorView* whole;
      int64_t row_begin, rows;
    } slices[] = {{&l.wq, &qkv, 0, 8},
                  {&l.wk, &qkv, 8, 4},
                  {&l.wv, &qkv, 12, 4},
                  {&l.w_gate, &gate_up, 0, kInter},
                  {&l.w_up, &gate_up, kInter, kInter}};
    for (const auto& s : slices) {
      EXPECT_EQ(s.ref->tensor, s.whole);
      EXPECT_EQ(s.ref->row_begin, s.row_begin);
      EXPECT_EQ(s.ref->rows, s.rows);
      EXPECT_EQ(s.ref->cols, kHidden);
      EXPECT_EQ(s.ref->data(), s.whole->data + s.row_begin * kHidden * 4);
      EXPECT_EQ(s.ref->nbytes(), static_cast<size_t>(s.rows * kHidden * 4));
      // Row r of the fused tensor holds the value r (tensor_bytes).
      EXPECT_EQ(first_value(*s.ref), static_cast<float>(s.row_begin));
    }
    expect_ref(l.wo, *m.weights, p + "self_attn.o_proj.weight", kHidden, 8);
    expect_ref(l.w_down, *m.weights, p + "mlp.down_proj.weight", kHidden, kInter);
    EXPECT_FALSE(l.bq.present());
  }
}

TEST(TransformerWeights, SliceOfHalfPrecisionTensorUsesTwoByteElements) {
  const ModelConfig c = make_config(config_json("Phi3ForCausalLM", 4));
  auto tensors = hf_tensors("Phi3ForCausalLM", 4);
  for (auto& t : tensors) t.dtype = "BF16";
  const Loaded m = load(c, write_model(tensors));
  const LayerWeights& l = m.resolved.layers[0];
  const TensorView& qkv = m.weights->get("model.layers.0.self_attn.qkv_proj.weight");
  EXPECT_EQ(qkv.dtype, DType::BF16);
  EXPECT_EQ(l.wv.data(), qkv.data + 12 * kHidden * 2);
  EXPECT_EQ(l.wv.nbytes(), static_cast<size_t>(4 * kHidden * 2));
}

TEST(TransformerWeights, Phi3FusedShapeMismatchExplainsTheExpectation) {
  const ModelConfig c = make_config(config_json("Phi3ForCausalLM", 4));
  auto tensors = hf_tensors("Phi3ForCausalLM", 4);
  set_shape(tensors, "model.layers.0.self_attn.qkv_proj.weight", {24, kHidden});
  set_shape(tensors, "model.layers.0.mlp.gate_up_proj.weight", {kInter, kHidden});
  const auto w = WeightSet::open_dir(write_model(tensors));
  expect_error([&] { resolve_transformer_weights(c, *w); }, KILN_ERR_FORMAT,
               {"model.layers.0.self_attn.qkv_proj.weight", "[24, 8]", "expected [16, 8]",
                "num_attention_heads=2", "2 × (num_key_value_heads=1"});
}

TEST(TransformerWeights, ShapeMismatchNamesTensorShardAndConfigFields) {
  const ModelConfig c = make_config(config_json("LlamaForCausalLM", 4));
  auto tensors = hf_tensors("LlamaForCausalLM", 4);
  set_shape(tensors, "model.layers.1.self_attn.k_proj.weight", {8, kHidden});
  const fs::path dir = write_model(tensors, 2);
  const auto w = WeightSet::open_dir(dir);
  const std::string shard = w->get("model.layers.1.self_attn.k_proj.weight").file;
  EXPECT_NE(shard.find("-of-00002.safetensors"), std::string::npos);
  expect_error([&] { resolve_transformer_weights(c, *w); }, KILN_ERR_FORMAT,
               {"tensor model.layers.1.self_attn.k_proj.weight in " + shard +
                " has shape [8, 8], expected [4, 8] (num_key_value_heads=1 × head_dim=4, "
                "hidden_size=8)"});
}

TEST(TransformerWeights, OtherShapeMismatches) {
  const ModelConfig c = make_config(config_json("LlamaForCausalLM", 4));
  const struct {
    std::string name;
    std::vector<int64_t> shape;
    std::string expected;
  } cases[] = {
      {"model.embed_tokens.weight", {kVocab + 1, kHidden}, "expected [16, 8] (vocab_size=16"},
      {"model.norm.weight", {kHidden, 1}, "expected [8] (hidden_size=8)"},
      {"model.layers.0.self_attn.o_proj.weight", {8, 4}, "expected [8, 8]"},
      {"model.layers.1.mlp.down_proj.weight",
       {kInter, kHidden},
       "expected [8, 12] (hidden_size=8, intermediate_size=12)"},
      {"lm_head.weight", {kHidden, kVocab}, "expected [16, 8]"},
  };
  for (const auto& k : cases) {
    auto tensors = hf_tensors("LlamaForCausalLM", 4);
    set_shape(tensors, k.name, k.shape);
    const auto w = WeightSet::open_dir(write_model(tensors));
    expect_error([&] { resolve_transformer_weights(c, *w); }, KILN_ERR_FORMAT,
                 {"tensor " + k.name + " in model.safetensors", k.expected});
  }
}

TEST(TransformerWeights, MissingTensorIsAFormatErrorNamingIt) {
  const ModelConfig c = make_config(config_json("LlamaForCausalLM", 4));
  auto tensors = hf_tensors("LlamaForCausalLM", 4);
  remove_tensor(tensors, "model.layers.1.mlp.up_proj.weight");
  const auto w = WeightSet::open_dir(write_model(tensors));
  expect_error([&] { resolve_transformer_weights(c, *w); }, KILN_ERR_FORMAT,
               {"model.layers.1.mlp.up_proj.weight", "not found", "model.safetensors"});

  // A Llama config over a Phi3 checkpoint: the unfused names are missing.
  const auto phi = WeightSet::open_dir(write_model(hf_tensors("Phi3ForCausalLM", 4)));
  expect_error([&] { resolve_transformer_weights(c, *phi); }, KILN_ERR_FORMAT,
               {"model.layers.0.self_attn.q_proj.weight", "not found"});
}

TEST(TransformerWeights, NeededTensorInUnsupportedDtypeIsUnsupported) {
  const ModelConfig c = make_config(config_json("LlamaForCausalLM", 4));
  auto tensors = hf_tensors("LlamaForCausalLM", 4);
  for (auto& t : tensors) {
    if (t.name == "model.layers.0.self_attn.v_proj.weight") t.dtype = "I64";
  }
  const auto w = WeightSet::open_dir(write_model(tensors));
  expect_error([&] { resolve_transformer_weights(c, *w); }, KILN_ERR_UNSUPPORTED,
               {"model.layers.0.self_attn.v_proj.weight", "I64"});
}

TEST(TransformerWeights, MlpBiasIsUnsupported) {
  json j = config_json("LlamaForCausalLM", 4);
  j["mlp_bias"] = true;
  const auto w = WeightSet::open_dir(write_model(hf_tensors("LlamaForCausalLM", 4)));
  expect_error([&] { resolve_transformer_weights(make_config(j), *w); }, KILN_ERR_UNSUPPORTED,
               {"mlp_bias"});
}

// ---------------------------------------------------------------------------------------------
// GPT-2 and NanoChat

json gpt2_config_json(bool tied = true) {
  return {{"architectures", {"GPT2LMHeadModel"}},
          {"vocab_size", kVocab},
          {"n_embd", kHidden},
          {"n_layer", kLayers},
          {"n_head", kHeads},
          {"n_inner", kInter},
          {"n_positions", 32},
          {"tie_word_embeddings", tied}};
}

// GPT2LMHeadModel's tensors (modeling_gpt2.py: Conv1D weights are [in, out]), with the
// attn.bias causal-mask buffers older checkpoints carry.
std::vector<Tensor> gpt2_tensors(const std::string& prefix, bool with_lm_head = false) {
  std::vector<Tensor> t = {{prefix + "wte.weight", {kVocab, kHidden}},
                           {prefix + "wpe.weight", {32, kHidden}},
                           {prefix + "ln_f.weight", {kHidden}},
                           {prefix + "ln_f.bias", {kHidden}}};
  if (with_lm_head) t.push_back({"lm_head.weight", {kVocab, kHidden}});
  for (int64_t i = 0; i < kLayers; ++i) {
    const std::string p = prefix + "h." + std::to_string(i) + ".";
    t.push_back({p + "ln_1.weight", {kHidden}});
    t.push_back({p + "ln_1.bias", {kHidden}});
    t.push_back({p + "attn.c_attn.weight", {kHidden, 3 * kHidden}});
    t.push_back({p + "attn.c_attn.bias", {3 * kHidden}});
    t.push_back({p + "attn.c_proj.weight", {kHidden, kHidden}});
    t.push_back({p + "attn.c_proj.bias", {kHidden}});
    t.push_back({p + "attn.bias", {1, 1, 32, 32}});
    t.push_back({p + "ln_2.weight", {kHidden}});
    t.push_back({p + "ln_2.bias", {kHidden}});
    t.push_back({p + "mlp.c_fc.weight", {kHidden, kInter}});
    t.push_back({p + "mlp.c_fc.bias", {kInter}});
    t.push_back({p + "mlp.c_proj.weight", {kInter, kHidden}});
    t.push_back({p + "mlp.c_proj.bias", {kHidden}});
  }
  return t;
}

// A transposed block of `name`: output features [row_begin, row_begin + rows) of a stored
// [cols, *] tensor.
void expect_conv1d(const WeightRef& ref, const WeightSet& w, const std::string& name,
                   int64_t row_begin, int64_t rows, int64_t cols) {
  ASSERT_TRUE(ref.present()) << name;
  EXPECT_EQ(ref.tensor, &w.get(name)) << name;
  EXPECT_TRUE(ref.transposed) << name;
  EXPECT_EQ(ref.row_begin, row_begin) << name;
  EXPECT_EQ(ref.rows, rows) << name;
  EXPECT_EQ(ref.cols, cols) << name;
}

TEST(TransformerWeights, ResolvesGpt2WithAndWithoutTheTransformerPrefix) {
  for (const std::string prefix : {"transformer.", ""}) {
    SCOPED_TRACE(prefix);
    const ModelConfig c = make_config(gpt2_config_json());
    const Loaded m = load(c, write_model(gpt2_tensors(prefix)));
    const WeightSet& w = *m.weights;
    const TransformerWeights& t = m.resolved;
    expect_ref(t.embed, w, prefix + "wte.weight", kVocab, kHidden);
    expect_ref(t.lm_head, w, prefix + "wte.weight", kVocab, kHidden);  // tied, none stored
    expect_ref(t.positions, w, prefix + "wpe.weight", 32, kHidden);
    expect_ref(t.final_norm, w, prefix + "ln_f.weight", kHidden, 1);
    expect_ref(t.final_norm_bias, w, prefix + "ln_f.bias", kHidden, 1);
    ASSERT_EQ(t.layers.size(), 2u);
    for (int i = 0; i < 2; ++i) {
      const std::string p = prefix + "h." + std::to_string(i) + ".";
      const LayerWeights& l = t.layers[static_cast<size_t>(i)];
      expect_ref(l.attn_norm, w, p + "ln_1.weight", kHidden, 1);
      expect_ref(l.attn_norm_bias, w, p + "ln_1.bias", kHidden, 1);
      expect_ref(l.ffn_norm, w, p + "ln_2.weight", kHidden, 1);
      expect_ref(l.ffn_norm_bias, w, p + "ln_2.bias", kHidden, 1);
      // c_attn's output columns are q | k | v, hidden each.
      expect_conv1d(l.wq, w, p + "attn.c_attn.weight", 0, kHidden, kHidden);
      expect_conv1d(l.wk, w, p + "attn.c_attn.weight", kHidden, kHidden, kHidden);
      expect_conv1d(l.wv, w, p + "attn.c_attn.weight", 2 * kHidden, kHidden, kHidden);
      EXPECT_EQ(first_value(l.bq), 0.0f);  // 1-D tensors hold their index
      EXPECT_EQ(first_value(l.bk), static_cast<float>(kHidden));
      EXPECT_EQ(first_value(l.bv), static_cast<float>(2 * kHidden));
      expect_conv1d(l.wo, w, p + "attn.c_proj.weight", 0, kHidden, kHidden);
      expect_ref(l.bo, w, p + "attn.c_proj.bias", kHidden, 1);
      expect_conv1d(l.w_up, w, p + "mlp.c_fc.weight", 0, kInter, kHidden);
      expect_ref(l.b_up, w, p + "mlp.c_fc.bias", kInter, 1);
      expect_conv1d(l.w_down, w, p + "mlp.c_proj.weight", 0, kHidden, kInter);
      expect_ref(l.b_down, w, p + "mlp.c_proj.bias", kHidden, 1);
      for (const WeightRef* absent : {&l.w_gate, &l.q_norm, &l.k_norm}) {
        EXPECT_FALSE(absent->present());
      }
    }
  }
}

TEST(TransformerWeights, Gpt2UntiedHeadAndShapeErrors) {
  const Loaded m =
      load(make_config(gpt2_config_json(false)), write_model(gpt2_tensors("transformer.", true)));
  expect_ref(m.resolved.lm_head, *m.weights, "lm_head.weight", kVocab, kHidden);

  const auto no_head = WeightSet::open_dir(write_model(gpt2_tensors("transformer.")));
  expect_error([&] { resolve_transformer_weights(make_config(gpt2_config_json(false)), *no_head); },
               KILN_ERR_FORMAT, {"lm_head.weight", "tie_word_embeddings is false"});

  // An nn.Linear-shaped c_fc ([out, in]) is not GPT-2's Conv1D layout.
  auto tensors = gpt2_tensors("transformer.");
  set_shape(tensors, "transformer.h.1.mlp.c_fc.weight", {kInter, kHidden});
  const auto linear = WeightSet::open_dir(write_model(tensors));
  expect_error(
      [&] { resolve_transformer_weights(make_config(gpt2_config_json()), *linear); },
      KILN_ERR_FORMAT,
      {"transformer.h.1.mlp.c_fc.weight", "[12, 8]", "expected [8, 12]", "intermediate_size=12"});

  tensors = gpt2_tensors("");
  remove_tensor(tensors, "wpe.weight");
  const auto no_positions = WeightSet::open_dir(write_model(tensors));
  expect_error([&] { resolve_transformer_weights(make_config(gpt2_config_json()), *no_positions); },
               KILN_ERR_FORMAT, {"wpe.weight", "not found"});
}

std::vector<Tensor> nanochat_tensors() {
  std::vector<Tensor> t = {{"model.embed_tokens.weight", {kVocab, kHidden}},
                           {"lm_head.weight", {kVocab, kHidden}}};
  for (int64_t i = 0; i < kLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t.push_back({p + "self_attn.q_proj.weight", {kHeads * 4, kHidden}});
    t.push_back({p + "self_attn.k_proj.weight", {kKvHeads * 4, kHidden}});
    t.push_back({p + "self_attn.v_proj.weight", {kKvHeads * 4, kHidden}});
    t.push_back({p + "self_attn.o_proj.weight", {kHidden, kHeads * 4}});
    t.push_back({p + "mlp.fc1.weight", {kInter, kHidden}});
    t.push_back({p + "mlp.fc2.weight", {kHidden, kInter}});
  }
  return t;
}

TEST(TransformerWeights, ResolvesNanoChatWithoutNormWeights) {
  json j = config_json("NanoChatForCausalLM", 4);
  j["hidden_act"] = "relu2";
  const Loaded m = load(make_config(j), write_model(nanochat_tensors()));
  const WeightSet& w = *m.weights;
  const TransformerWeights& t = m.resolved;
  expect_ref(t.embed, w, "model.embed_tokens.weight", kVocab, kHidden);
  expect_ref(t.lm_head, w, "lm_head.weight", kVocab, kHidden);
  EXPECT_FALSE(t.final_norm.present() || t.final_norm_bias.present() || t.positions.present());
  for (int i = 0; i < 2; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const LayerWeights& l = t.layers[static_cast<size_t>(i)];
    expect_ref(l.wq, w, p + "self_attn.q_proj.weight", 8, kHidden);
    expect_ref(l.wk, w, p + "self_attn.k_proj.weight", 4, kHidden);
    expect_ref(l.wv, w, p + "self_attn.v_proj.weight", 4, kHidden);
    expect_ref(l.wo, w, p + "self_attn.o_proj.weight", kHidden, 8);
    expect_ref(l.w_up, w, p + "mlp.fc1.weight", kInter, kHidden);
    expect_ref(l.w_down, w, p + "mlp.fc2.weight", kHidden, kInter);
    for (const WeightRef* absent : {&l.attn_norm, &l.ffn_norm, &l.q_norm, &l.k_norm, &l.w_gate,
                                    &l.bq, &l.bo, &l.b_up, &l.b_down}) {
      EXPECT_FALSE(absent->present());
    }
  }
}

}  // namespace
}  // namespace kiln
