// GGUF → ModelConfig and HF-named float32 weights: against the HF checkpoints the GGUF files were
// made from (tests/fixtures/tiny-qwen2), and a Llama GGUF written here the way llama.cpp's
// convert_hf_to_gguf.py writes one (q/k rows permuted by LlamaModel.permute), which kiln must
// undo exactly.
#include "formats/gguf_model.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_transformer.hpp"
#include "core/error.hpp"
#include "formats/gguf.hpp"
#include "formats/safetensors.hpp"
#include "gguf_test_writer.hpp"
#include "model/transformer_weights.hpp"
#include "test_support.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using test::GgufWriter;

fs::path gguf_dir() { return test::fixtures_dir() / "gguf" / "tiny-qwen2"; }

std::vector<float> as_f32(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  convert_to_f32(t.dtype, t.data, out.data(), out.size());
  return out;
}

kiln_status status_of(const std::function<void()>& f, std::string* message = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.status();
  }
  return KILN_OK;
}

TEST(GgufModel, ConfigOfLlamaCppsFileEqualsTheHfConfig) {
  const ModelConfig hf = load_model_config(test::fixtures_dir() / "tiny-qwen2");
  for (const char* type : {"f32", "q4_k_m"}) {
    const auto f = GgufFile::open(gguf_dir() / ("tiny-qwen2-" + std::string(type) + ".gguf"));
    const ModelConfig g = gguf_model_config(*f);
    EXPECT_EQ(g.architecture, hf.architecture);
    EXPECT_TRUE(g.traits.qkv_bias);
    EXPECT_EQ(g.vocab_size, hf.vocab_size);
    EXPECT_EQ(g.hidden_size, hf.hidden_size);
    EXPECT_EQ(g.n_layers, hf.n_layers);
    EXPECT_EQ(g.n_heads, hf.n_heads);
    EXPECT_EQ(g.n_kv_heads, hf.n_kv_heads);
    EXPECT_EQ(g.head_dim, hf.head_dim);
    EXPECT_EQ(g.intermediate_size, hf.intermediate_size);
    EXPECT_EQ(g.max_position_embeddings, hf.max_position_embeddings);
    EXPECT_EQ(g.rms_norm_eps, hf.rms_norm_eps);
    EXPECT_EQ(g.rope_theta, hf.rope_theta);
    EXPECT_EQ(g.partial_rotary_factor, 1.0f);
    EXPECT_EQ(g.tie_word_embeddings, hf.tie_word_embeddings);
    EXPECT_EQ(rope_inverse_frequencies(g), rope_inverse_frequencies(hf));
  }
}

// llama.cpp's F32 file holds the HF tensors unchanged: every one must come back bit-identical
// under its HF name and shape.
TEST(GgufModel, F32WeightsEqualTheSafetensorsCheckpoint) {
  const auto f = GgufFile::open(gguf_dir() / "tiny-qwen2-f32.gguf");
  const ModelConfig c = gguf_model_config(*f);
  const auto weights = gguf_weights(*f, c, nullptr);
  const auto hf = WeightSet::open_dir(test::fixtures_dir() / "tiny-qwen2");
  const auto names = weights->names();
  EXPECT_EQ(names.size(), 26u);
  for (const std::string& name : names) {
    const TensorView* h = hf->find(name);
    ASSERT_NE(h, nullptr) << name << " is not an HF tensor name";
    const TensorView& g = weights->get(name);
    EXPECT_EQ(g.shape, h->shape) << name;
    EXPECT_EQ(as_f32(g), as_f32(*h)) << name;
  }
  // Tied: no lm_head in either; resolve_transformer_weights accepts the set.
  EXPECT_EQ(weights->find("lm_head.weight"), nullptr);
  const TransformerWeights tw = resolve_transformer_weights(c, *weights);
  EXPECT_EQ(tw.layers.size(), 2u);
  EXPECT_TRUE(tw.layers[0].bq.present());
}

// The CPU's view of a quantised file: every tensor in place in the mapping with its ggml type, and
// dequantising it gives exactly what the dequantising loader gives.
TEST(GgufModel, AsStoredViewsPointIntoTheFileAndDequantiseLikeTheFloatSet) {
  std::shared_ptr<const GgufFile> f = GgufFile::open(gguf_dir() / "tiny-qwen2-q4_k_m.gguf");
  const ModelConfig c = gguf_model_config(*f);
  const auto stored = gguf_weights_as_stored(f, c, nullptr);
  const auto floats = gguf_weights(*f, c, nullptr);
  EXPECT_EQ(stored->names(), floats->names());
  int quantised = 0;
  for (const std::string& name : stored->names()) {
    const TensorView& v = stored->get(name);
    EXPECT_EQ(v.shape, floats->get(name).shape) << name;
    std::vector<float> values(static_cast<size_t>(v.numel()));
    if (v.dtype == DType::GGML) {
      ++quantised;
      quant::dequantize(v.ggml_type, v.data, values.data(), v.numel());
    } else {
      values = as_f32(v);
    }
    EXPECT_EQ(values, as_f32(floats->get(name))) << name;
    // In place: the view's bytes are one of the file's tensors.
    bool in_file = false;
    for (const GgufTensor& t : f->tensors()) in_file |= t.data == v.data && t.nbytes == v.nbytes;
    EXPECT_TRUE(in_file) << name;
  }
  EXPECT_EQ(quantised, 15);  // every matrix of this Q4_K_M file (Q4_K, and Q6_K for three)
  EXPECT_EQ(stored->get("model.embed_tokens.weight").ggml_type, quant::GgmlType::Q6_K);
}

// Resident memory of a Q4_K_M model on the CPU backend: the matrices stay in the mapping at their
// stored size; only the float32 norms and biases are converted. Counted independently from the
// file's tensor table.
TEST(GgufModel, CpuKeepsQuantisedMatricesInPlace) {
  std::shared_ptr<const GgufFile> f = GgufFile::open(gguf_dir() / "tiny-qwen2-q4_k_m.gguf");
  const ModelConfig c = gguf_model_config(*f);
  std::shared_ptr<const WeightSet> w = gguf_weights_as_stored(f, c, nullptr);
  const cpu::CpuTransformer exec(c, resolve_transformer_weights(c, *w), rope_inverse_frequencies(c),
                                 1, w);
  size_t matrix_bytes = 0;
  int64_t matrix_elements = 0, vector_elements = 0;
  for (const GgufTensor& t : f->tensors()) {
    if (t.dims.size() == 2) {
      matrix_bytes += t.nbytes;
      matrix_elements += t.numel();
    } else {
      vector_elements += t.numel();
    }
  }
  const cpu::F32WeightStore& store = exec.weight_store();
  EXPECT_EQ(store.in_place_bytes(), matrix_bytes);
  // Norms and biases are F32 in the file: used in place too, nothing converted.
  EXPECT_EQ(store.owned_bytes(), 0u);
  EXPECT_EQ(exec.n_parameters(), matrix_elements + vector_elements);
  const double bytes_per_weight =
      static_cast<double>(matrix_bytes) / static_cast<double>(matrix_elements);
  std::printf("[gguf] q4_k_m matrices: %zu bytes for %lld weights = %.4f bytes/weight\n",
              matrix_bytes, static_cast<long long>(matrix_elements), bytes_per_weight);
  // Q4_K is 144 bytes per 256 weights (0.5625), Q6_K 210 (0.8203); this file mixes both.
  EXPECT_GT(bytes_per_weight, 0.5625);
  EXPECT_LT(bytes_per_weight, 0.8203);
}

// LlamaModel.permute in convert_hf_to_gguf.py: w.reshape(n_head, 2, rows / n_head / 2, *rest)
// .swapaxes(1, 2).reshape(w.shape) — within each head, row i*half + j moves to row 2*j + i.
std::vector<float> llama_cpp_permute(const std::vector<float>& w, int64_t rows, int64_t cols,
                                     int64_t n_head) {
  std::vector<float> out(w.size());
  const int64_t head = rows / n_head, half = head / 2;
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < half; ++j)
        std::memcpy(&out[static_cast<size_t>((h * head + j * 2 + i) * cols)],
                    &w[static_cast<size_t>((h * head + i * half + j) * cols)],
                    static_cast<size_t>(cols) * sizeof(float));
  return out;
}

std::string bytes_of(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// Writes tests/fixtures/hf/llama3 as an F32 llama GGUF, as llama.cpp's converter lays it out.
std::string llama3_as_gguf(bool drop_k_of_layer1 = false, bool extra_tensor = false) {
  const fs::path dir = test::fixtures_dir() / "hf" / "llama3";
  const auto cfg = nlohmann::json::parse(test::read_file(dir / "config.json"));
  const auto hf = WeightSet::open_dir(dir);
  const int n_layers = cfg["num_hidden_layers"], heads = cfg["num_attention_heads"],
            kv_heads = cfg["num_key_value_heads"];
  GgufWriter w;
  w.kv_str("general.architecture", "llama");
  w.kv_u32("llama.context_length", cfg["max_position_embeddings"]);
  w.kv_u32("llama.embedding_length", cfg["hidden_size"]);
  w.kv_u32("llama.block_count", static_cast<uint32_t>(n_layers));
  w.kv_u32("llama.feed_forward_length", cfg["intermediate_size"]);
  w.kv_u32("llama.attention.head_count", static_cast<uint32_t>(heads));
  w.kv_u32("llama.attention.head_count_kv", static_cast<uint32_t>(kv_heads));
  w.kv_u32("llama.attention.key_length", cfg["head_dim"]);
  w.kv_u32("llama.rope.dimension_count", cfg["head_dim"]);
  w.kv_f32("llama.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"].get<float>());
  w.kv_f32("llama.rope.freq_base", cfg["rope_parameters"]["rope_theta"].get<float>());
  const auto add = [&](const std::string& gguf, const std::string& hf_name, int permute_heads) {
    const TensorView& t = hf->get(hf_name);
    std::vector<float> v = as_f32(t);
    const int64_t rows = t.shape[0], cols = t.shape.size() > 1 ? t.shape[1] : 1;
    if (permute_heads) v = llama_cpp_permute(v, rows, cols, permute_heads);
    std::vector<uint64_t> dims(t.shape.rbegin(), t.shape.rend());
    w.tensor(gguf, dims, 0, bytes_of(v));
  };
  add("token_embd.weight", "model.embed_tokens.weight", 0);
  add("output_norm.weight", "model.norm.weight", 0);
  if (hf->find("lm_head.weight") != nullptr) add("output.weight", "lm_head.weight", 0);
  for (int i = 0; i < n_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".",
                      m = "model.layers." + std::to_string(i) + ".";
    add(b + "attn_norm.weight", m + "input_layernorm.weight", 0);
    add(b + "attn_q.weight", m + "self_attn.q_proj.weight", heads);
    if (!(drop_k_of_layer1 && i == 1))
      add(b + "attn_k.weight", m + "self_attn.k_proj.weight", kv_heads);
    add(b + "attn_v.weight", m + "self_attn.v_proj.weight", 0);
    add(b + "attn_output.weight", m + "self_attn.o_proj.weight", 0);
    add(b + "ffn_norm.weight", m + "post_attention_layernorm.weight", 0);
    add(b + "ffn_gate.weight", m + "mlp.gate_proj.weight", 0);
    add(b + "ffn_up.weight", m + "mlp.up_proj.weight", 0);
    add(b + "ffn_down.weight", m + "mlp.down_proj.weight", 0);
  }
  if (extra_tensor) w.tensor("rope_freqs.weight", {16}, 0, std::string(64, '\0'));
  return w.build();
}

std::unique_ptr<GgufFile> parse_owned(const std::string& bytes, const fs::path& path) {
  test::write_file(path, bytes);
  return GgufFile::open(path);
}

TEST(GgufModel, LlamaQkPermutationIsUndone) {
  const fs::path dir = test::temp_dir("gguf-llama");
  const auto f = parse_owned(llama3_as_gguf(), dir / "llama3.gguf");
  const ModelConfig c = gguf_model_config(*f);
  const ModelConfig hf_config = load_model_config(test::fixtures_dir() / "hf" / "llama3");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.n_kv_heads, hf_config.n_kv_heads);
  EXPECT_EQ(c.tie_word_embeddings, hf_config.tie_word_embeddings);
  const auto weights = gguf_weights(*f, c, nullptr);
  const auto hf = WeightSet::open_dir(test::fixtures_dir() / "hf" / "llama3");
  int compared = 0;
  for (const std::string& name : weights->names()) {
    EXPECT_EQ(as_f32(weights->get(name)), as_f32(hf->get(name))) << name;
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(hf->names().size()));
  // The as-stored set reorders the same rows (bytes, whatever the storage).
  std::shared_ptr<const GgufFile> shared = parse_owned(llama3_as_gguf(), dir / "llama3b.gguf");
  const auto as_stored = gguf_weights_as_stored(shared, c, nullptr);
  for (const std::string& name : as_stored->names()) {
    EXPECT_EQ(as_f32(as_stored->get(name)), as_f32(hf->get(name))) << name;
  }
  // The permutation is not the identity on this model: the stored q rows differ from HF's.
  const GgufTensor* q = f->find_tensor("blk.0.attn_q.weight");
  std::vector<float> stored(static_cast<size_t>(q->numel()));
  std::memcpy(stored.data(), q->data, q->nbytes);
  EXPECT_NE(stored, as_f32(hf->get("model.layers.0.self_attn.q_proj.weight")));
}

TEST(GgufModel, MissingAndUnknownTensorsAreNamed) {
  const fs::path dir = test::temp_dir("gguf-llama-bad");
  std::string msg;
  {
    const auto f = parse_owned(llama3_as_gguf(true, false), dir / "missing.gguf");
    const ModelConfig c = gguf_model_config(*f);
    EXPECT_EQ(status_of([&] { gguf_weights(*f, c, nullptr); }, &msg), KILN_ERR_FORMAT);
    EXPECT_NE(msg.find("tensor blk.1.attn_k.weight is missing"), std::string::npos) << msg;
  }
  {
    const auto f = parse_owned(llama3_as_gguf(false, true), dir / "extra.gguf");
    const ModelConfig c = gguf_model_config(*f);
    EXPECT_EQ(status_of([&] { gguf_weights(*f, c, nullptr); }, &msg), KILN_ERR_UNSUPPORTED);
    EXPECT_NE(msg.find("rope_freqs.weight"), std::string::npos) << msg;
  }
}

TEST(GgufModel, ArchitectureAndMetadataErrors) {
  std::string msg;
  GgufWriter gpt;
  gpt.kv_str("general.architecture", "falcon");
  const std::string falcon = gpt.build();
  const auto f1 =
      GgufFile::parse(reinterpret_cast<const uint8_t*>(falcon.data()), falcon.size(), "f.gguf");
  EXPECT_EQ(status_of([&] { gguf_model_config(*f1); }, &msg), KILN_ERR_UNSUPPORTED);
  EXPECT_NE(msg.find("\"falcon\""), std::string::npos) << msg;

  GgufWriter none;
  none.kv_u32("llama.block_count", 1);
  const std::string no_arch = none.build();
  const auto f2 =
      GgufFile::parse(reinterpret_cast<const uint8_t*>(no_arch.data()), no_arch.size(), "n.gguf");
  EXPECT_EQ(status_of([&] { gguf_model_config(*f2); }, &msg), KILN_ERR_FORMAT);
  EXPECT_NE(msg.find("general.architecture"), std::string::npos) << msg;

  GgufWriter partial;
  partial.kv_str("general.architecture", "qwen2");
  partial.kv_u32("qwen2.context_length", 128);
  const std::string p = partial.build();
  const auto f3 = GgufFile::parse(reinterpret_cast<const uint8_t*>(p.data()), p.size(), "p.gguf");
  EXPECT_EQ(status_of([&] { gguf_model_config(*f3); }, &msg), KILN_ERR_FORMAT);
  EXPECT_NE(msg.find("qwen2.embedding_length\" is missing"), std::string::npos) << msg;
}

}  // namespace
}  // namespace kiln
