#include "engine/quantize_model.hpp"

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>

#include "core/error.hpp"
#include "engine/quant_mix.hpp"
#include "formats/gguf.hpp"
#include "formats/gguf_tokenizer.hpp"
#include "formats/gguf_writer.hpp"
#include "formats/quant/quantize.hpp"
#include "formats/safetensors.hpp"
#include "model/config.hpp"
#include "util/mapped_file.hpp"

namespace kiln {

namespace fs = std::filesystem;
using nlohmann::json;
using quant::GgmlType;

namespace {

// llama.cpp's enum llama_ftype values for general.file_type.
constexpr uint32_t kFileTypeF16 = 1, kFileTypeQ8_0 = 7, kFileTypeQ4_K_M = 15;
// GGML_QNT_VERSION: the K-quant / legacy block layouts of blocks.hpp.
constexpr uint32_t kQuantizationVersion = 2;
constexpr uint32_t kAlignment = 32;
// GGUF token types (llama.cpp's enum llama_token_type).
constexpr int32_t kTokenNormal = 1, kTokenControl = 3, kTokenUserDefined = 4, kTokenUnused = 5;

// One tensor of the source in GGUF naming and layout, read as float32 on demand.
struct SourceTensor {
  std::string name;
  std::vector<int64_t> dims;  // ggml order
  // Fills out with the tensor as float32, converting whole rows on up to `threads` threads.
  std::function<void(std::vector<float>& out, int threads)> read;
};

struct Source {
  GgufMetadata metadata;  // everything but general.file_type / quantization_version / alignment
  std::vector<SourceTensor> tensors;
  int64_t n_layers = 0;
};

// ---------------------------------------------------------------------------------------------
// HF directory → GGUF names, layouts and metadata (the inverse of formats/gguf_weights.cpp and
// gguf_config.cpp).

std::string gguf_architecture(const ModelConfig& c, const fs::path& dir) {
  if (c.architecture == "LlamaForCausalLM" || c.architecture == "MistralForCausalLM") {
    return "llama";
  }
  if (c.architecture == "Qwen2ForCausalLM") return "qwen2";
  if (c.architecture == "Qwen3ForCausalLM") return "qwen3";
  fail(KILN_ERR_UNSUPPORTED, dir.string() +
                                 ": kiln-quantize writes llama, Mistral, Qwen2 and "
                                 "Qwen3 models, not " +
                                 c.architecture);
}

struct GgufName {
  std::string name;
  int32_t permute_heads = 0;  // > 0: llama.cpp's q/k row permutation over this many heads
};

std::optional<GgufName> gguf_name(const std::string& hf, const ModelConfig& c) {
  if (hf == "model.embed_tokens.weight") return GgufName{"token_embd.weight"};
  if (hf == "model.norm.weight") return GgufName{"output_norm.weight"};
  if (hf == "lm_head.weight") return GgufName{"output.weight"};
  static const std::regex kLayer(R"(model\.layers\.(\d+)\.(.+)\.(weight|bias))");
  std::smatch m;
  if (!std::regex_match(hf, m, kLayer)) return std::nullopt;
  static const std::pair<const char*, const char*> kParts[] = {
      {"input_layernorm", "attn_norm"},    {"self_attn.q_proj", "attn_q"},
      {"self_attn.k_proj", "attn_k"},      {"self_attn.v_proj", "attn_v"},
      {"self_attn.o_proj", "attn_output"}, {"self_attn.q_norm", "attn_q_norm"},
      {"self_attn.k_norm", "attn_k_norm"}, {"post_attention_layernorm", "ffn_norm"},
      {"mlp.gate_proj", "ffn_gate"},       {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"}};
  for (const auto& [part, gguf] : kParts) {
    if (m[2].str() != part) continue;
    GgufName out{"blk." + m[1].str() + "." + gguf + "." + m[3].str()};
    if (c.architecture == "LlamaForCausalLM" || c.architecture == "MistralForCausalLM") {
      if (m[2].str() == "self_attn.q_proj") out.permute_heads = c.n_heads;
      if (m[2].str() == "self_attn.k_proj") out.permute_heads = c.n_kv_heads;
    }
    return out;
  }
  return std::nullopt;
}

// Calls convert(r0, r1) over [0, n_rows) in chunks of whole rows on up to `threads` threads: a 7B
// model's BF16 → float32 pass is as large as its quantisation, so it gets the same threads.
template <typename ConvertRows>
void convert_rows_parallel(int64_t n_rows, int threads, const ConvertRows& convert) {
  constexpr int64_t kChunkRows = 64;
  const int64_t chunks = (n_rows + kChunkRows - 1) / kChunkRows;
#pragma omp parallel for num_threads(threads) schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    convert(c * kChunkRows, std::min(n_rows, (c + 1) * kChunkRows));
  }
}

// HF rotate_half rows → llama.cpp's interleaved rows (convert_hf_to_gguf.py LlamaModel.permute):
// within each head, HF row i*half + j becomes row 2*j + i.
void permute_rows(std::vector<float>& v, int64_t rows, int64_t cols, int32_t heads) {
  const int64_t head = rows / heads, half = head / 2;
  std::vector<float> out(v.size());
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < 2; ++i) {
      for (int64_t j = 0; j < half; ++j) {
        std::memcpy(&out[static_cast<size_t>((h * head + 2 * j + i) * cols)],
                    &v[static_cast<size_t>((h * head + i * half + j) * cols)],
                    static_cast<size_t>(cols) * sizeof(float));
      }
    }
  }
  v.swap(out);
}

// A token named in tokenizer_config.json: a string or {"content": string}.
std::optional<std::string> config_token(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return std::nullopt;
}

void add_tokenizer_metadata(const fs::path& dir, const ModelConfig& c, GgufMetadata& md) {
  const fs::path tok_path = dir / "tokenizer.json";
  std::error_code ec;
  if (!fs::exists(tok_path, ec)) return;  // a model without a tokenizer stays without one
  const std::string text = read_text_file(tok_path);
  const json tok = json::parse(text, nullptr, false);
  if (!tok.is_object() || !tok.contains("model") || tok["model"].value("type", "") != "BPE") {
    fail(KILN_ERR_UNSUPPORTED, tok_path.string() +
                                   ": kiln-quantize writes byte-level BPE tokenizers only "
                                   "(tokenizer.ggml.model \"gpt2\")");
  }
  const auto pre = gguf_pre_matching(text);
  if (!pre) {
    fail(KILN_ERR_UNSUPPORTED, tok_path.string() +
                                   ": its pre-tokenizer is none of the GGUF families kiln knows "
                                   "(qwen2, llama-bpe, gpt2)");
  }
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  const auto put = [&](int64_t id, const std::string& s, int32_t type) {
    if (id < 0) return;
    if (static_cast<size_t>(id) >= tokens.size()) {
      tokens.resize(static_cast<size_t>(id) + 1);
      types.resize(static_cast<size_t>(id) + 1, 0);
    }
    tokens[static_cast<size_t>(id)] = s;
    types[static_cast<size_t>(id)] = type;
  };
  for (const auto& [s, id] : tok["model"]["vocab"].items()) put(id.get<int64_t>(), s, kTokenNormal);
  for (const json& a : tok.value("added_tokens", json::array())) {
    put(a.at("id").get<int64_t>(), a.at("content").get<std::string>(),
        a.value("special", false) ? kTokenControl : kTokenUserDefined);
  }
  // Ids without a token (gaps, and the embedding rows past the tokenizer) get llama.cpp's
  // placeholder, so that the vocabulary has one entry per embedding row.
  const size_t n_vocab = std::max(tokens.size(), static_cast<size_t>(c.vocab_size));
  tokens.resize(n_vocab);
  types.resize(n_vocab, 0);
  for (size_t id = 0; id < n_vocab; ++id) {
    if (types[id] == 0) {
      tokens[id] = "[PAD" + std::to_string(id) + "]";
      types[id] = kTokenUnused;
    }
  }
  std::vector<std::string> merges;
  for (const json& m : tok["model"].value("merges", json::array())) {
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
  }
  json cfg = json::object();
  if (fs::exists(dir / "tokenizer_config.json", ec)) {
    cfg = json::parse(read_text_file(dir / "tokenizer_config.json"), nullptr, false);
    if (!cfg.is_object()) cfg = json::object();
  }
  const auto id_of = [&](const std::optional<std::string>& s) -> std::optional<int32_t> {
    if (!s) return std::nullopt;
    for (size_t id = 0; id < tokens.size(); ++id) {
      if (tokens[id] == *s && types[id] != kTokenUnused) return static_cast<int32_t>(id);
    }
    return std::nullopt;
  };
  md.emplace_back("tokenizer.ggml.model", gguf_string("gpt2"));
  md.emplace_back("tokenizer.ggml.pre", gguf_string(*pre));
  md.emplace_back("tokenizer.ggml.tokens", gguf_strings(tokens));
  md.emplace_back("tokenizer.ggml.token_type", gguf_i32s(types));
  md.emplace_back("tokenizer.ggml.merges", gguf_strings(merges));
  std::optional<int32_t> bos = c.bos_token_id >= 0 ? std::optional<int32_t>(c.bos_token_id)
                                                   : id_of(config_token(cfg, "bos_token"));
  std::optional<int32_t> eos = !c.eos_token_ids.empty() ? std::optional<int32_t>(c.eos_token_ids[0])
                                                        : id_of(config_token(cfg, "eos_token"));
  if (bos) md.emplace_back("tokenizer.ggml.bos_token_id", gguf_u32(static_cast<uint32_t>(*bos)));
  if (eos) md.emplace_back("tokenizer.ggml.eos_token_id", gguf_u32(static_cast<uint32_t>(*eos)));
  if (const auto pad = id_of(config_token(cfg, "pad_token"))) {
    md.emplace_back("tokenizer.ggml.padding_token_id", gguf_u32(static_cast<uint32_t>(*pad)));
  }
  md.emplace_back("tokenizer.ggml.add_bos_token", gguf_bool(cfg.value("add_bos_token", false)));
  md.emplace_back("tokenizer.ggml.add_eos_token", gguf_bool(cfg.value("add_eos_token", false)));
  if (cfg.contains("chat_template") && cfg["chat_template"].is_string()) {
    md.emplace_back("tokenizer.chat_template", gguf_string(cfg["chat_template"]));
  }
}

Source hf_source(const fs::path& dir) {
  const ModelConfig c = load_model_config(dir);
  const std::string arch = gguf_architecture(c, dir);
  if (c.rope_scaling.type != RopeScalingType::None) {
    fail(KILN_ERR_UNSUPPORTED, dir.string() +
                                   ": RoPE scaling (rope_type other than \"default\") cannot be "
                                   "written to GGUF by kiln-quantize yet (llama.cpp stores llama3 "
                                   "scaling as a rope_freqs tensor)");
  }
  Source s;
  s.n_layers = c.n_layers;
  const std::string p = arch + ".";
  auto& md = s.metadata;
  md.emplace_back("general.architecture", gguf_string(arch));
  md.emplace_back("general.name", gguf_string(fs::absolute(dir).filename().string()));
  md.emplace_back(p + "context_length", gguf_u32(static_cast<uint32_t>(c.max_position_embeddings)));
  md.emplace_back(p + "embedding_length", gguf_u32(static_cast<uint32_t>(c.hidden_size)));
  md.emplace_back(p + "block_count", gguf_u32(static_cast<uint32_t>(c.n_layers)));
  md.emplace_back(p + "feed_forward_length", gguf_u32(static_cast<uint32_t>(c.intermediate_size)));
  md.emplace_back(p + "attention.head_count", gguf_u32(static_cast<uint32_t>(c.n_heads)));
  md.emplace_back(p + "attention.head_count_kv", gguf_u32(static_cast<uint32_t>(c.n_kv_heads)));
  md.emplace_back(p + "attention.key_length", gguf_u32(static_cast<uint32_t>(c.head_dim)));
  md.emplace_back(p + "attention.value_length", gguf_u32(static_cast<uint32_t>(c.head_dim)));
  md.emplace_back(
      p + "rope.dimension_count",
      gguf_u32(static_cast<uint32_t>(static_cast<float>(c.head_dim) * c.partial_rotary_factor)));
  md.emplace_back(p + "rope.freq_base", gguf_f32(c.rope_theta));
  md.emplace_back(p + "attention.layer_norm_rms_epsilon", gguf_f32(c.rms_norm_eps));
  add_tokenizer_metadata(dir, c, md);

  std::shared_ptr<const WeightSet> weights = WeightSet::open_dir(dir);
  for (const std::string& hf : weights->names()) {
    if (hf == "lm_head.weight" && c.tie_word_embeddings) continue;  // HF ties it; unused
    const auto name = gguf_name(hf, c);
    if (!name) {
      fail(KILN_ERR_UNSUPPORTED,
           dir.string() + ": tensor " + hf + " has no GGUF name kiln-quantize knows for " + arch);
    }
    const TensorView& t = weights->get(hf);
    SourceTensor st;
    st.name = name->name;
    st.dims.assign(t.shape.rbegin(), t.shape.rend());
    const int32_t heads = name->permute_heads;
    st.read = [weights, &t, heads](std::vector<float>& out, int threads) {
      out.resize(static_cast<size_t>(t.numel()));
      const int64_t rows = t.shape.empty() ? 1 : t.shape[0];
      const int64_t cols = rows > 0 ? t.numel() / rows : 0;
      const size_t elem = dtype_size(t.dtype);
      convert_rows_parallel(rows, threads, [&](int64_t r0, int64_t r1) {
        const auto first = static_cast<size_t>(r0 * cols);
        convert_to_f32(t.dtype, static_cast<const uint8_t*>(t.data) + first * elem,
                       out.data() + first, static_cast<size_t>((r1 - r0) * cols));
      });
      if (heads > 0) permute_rows(out, rows, cols, heads);
    };
    s.tensors.push_back(std::move(st));
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// GGUF → GGUF: metadata copied, tensors dequantised and re-quantised under their own names.

Source gguf_source(const fs::path& path) {
  std::shared_ptr<const GgufFile> f = GgufFile::open(path);
  const auto arch = f->get_string("general.architecture");
  if (!arch)
    fail(KILN_ERR_FORMAT, path.string() + ": metadata \"general.architecture\" is missing");
  Source s;
  s.n_layers = f->get_integer(*arch + ".block_count").value_or(0);
  for (const auto& [key, value] : f->metadata()) {
    if (key == "general.alignment" || key == "general.file_type" ||
        key == "general.quantization_version") {
      continue;
    }
    s.metadata.emplace_back(key, value);
  }
  // general.architecture first, as llama.cpp's writer orders it (readers do not depend on it).
  std::stable_partition(s.metadata.begin(), s.metadata.end(),
                        [](const auto& kv) { return kv.first == "general.architecture"; });
  for (const GgufTensor& t : f->tensors()) {
    SourceTensor st;
    st.name = t.name;
    st.dims = t.dims;
    st.read = [f, &t](std::vector<float>& out, int threads) {
      out.resize(static_cast<size_t>(t.numel()));
      const int64_t row = t.dims[0];
      if (row <= 0) return;  // an empty tensor: nothing to convert
      const int64_t n_rows = t.numel() / row;
      const size_t row_bytes = quant::quantized_bytes(t.type, row);
      convert_rows_parallel(n_rows, threads, [&](int64_t r0, int64_t r1) {
        quant::dequantize(t.type, t.data + static_cast<size_t>(r0) * row_bytes,
                          out.data() + r0 * row, (r1 - r0) * row);
      });
    };
    s.tensors.push_back(std::move(st));
  }
  return s;
}

// ---------------------------------------------------------------------------------------------

}  // namespace

void quantize_model(const fs::path& src, const fs::path& dst, QuantizeTarget target, int n_threads,
                    const ProgressFn& progress) {
  std::error_code ec;
  if (!fs::exists(src, ec)) {
    fail(KILN_ERR_NOT_FOUND, "quantize source '" + src.string() + "' does not exist");
  }
  if (progress && !progress(0.0f, "reading")) {
    fail(KILN_ERR_CANCELLED, "quantizing " + src.string() + " cancelled by the progress callback");
  }
  Source s = fs::is_directory(src, ec) ? hf_source(src) : gguf_source(src);
  const bool has_output =
      std::any_of(s.tensors.begin(), s.tensors.end(),
                  [](const SourceTensor& t) { return t.name == "output.weight"; });

  GgufMetadata md;
  md.reserve(s.metadata.size() + 3);
  md.push_back(s.metadata.front());  // general.architecture
  const uint32_t file_type = target == QuantizeTarget::F16    ? kFileTypeF16
                             : target == QuantizeTarget::Q8_0 ? kFileTypeQ8_0
                                                              : kFileTypeQ4_K_M;
  md.emplace_back("general.file_type", gguf_u32(file_type));
  if (target != QuantizeTarget::F16) {
    md.emplace_back("general.quantization_version", gguf_u32(kQuantizationVersion));
  }
  md.emplace_back("general.alignment", gguf_u32(kAlignment));
  md.insert(md.end(), s.metadata.begin() + 1, s.metadata.end());

  std::vector<GgufTensorPlan> plan;
  for (const SourceTensor& t : s.tensors) {
    plan.push_back(
        {t.name, t.dims, quantized_tensor_type(target, t.name, t.dims, has_output, s.n_layers)});
  }
  const int threads = std::max(1, n_threads);
  const auto produce = [&](size_t i, std::vector<uint8_t>& out) {
    std::vector<float> values;
    s.tensors[i].read(values, threads);
    const int64_t row = plan[i].dims[0];
    const auto n_rows = static_cast<int64_t>(values.size()) / row;
    const size_t row_bytes = quant::quantized_bytes(plan[i].type, row);
    out.resize(row_bytes * static_cast<size_t>(n_rows));
#pragma omp parallel for num_threads(threads) schedule(static) if (n_rows > 64)
    for (int64_t r = 0; r < n_rows; ++r) {
      quant::quantize(plan[i].type, values.data() + r * row,
                      out.data() + static_cast<size_t>(r) * row_bytes, row);
    }
  };
  write_gguf(dst, md, plan, produce, progress);
}

}  // namespace kiln
