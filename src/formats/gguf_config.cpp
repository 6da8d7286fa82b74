// GGUF metadata → HF config.json. Key names: docs/gguf.md "LLM" (`[llm].context_length`,
// `[llm].embedding_length`, `[llm].block_count`, `[llm].feed_forward_length`,
// `[llm].attention.head_count(_kv)`, `[llm].attention.layer_norm_rms_epsilon`,
// `[llm].attention.key_length`, `[llm].rope.dimension_count`, `[llm].rope.freq_base`,
// `[llm].rope.scaling.*`) and "Tokenizer" (`tokenizer.ggml.*_token_id`).
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "formats/gguf_model.hpp"

namespace kiln {

namespace {

using nlohmann::json;

struct ArchName {
  const char* gguf;
  const char* hf;
};
// Mistral checkpoints are converted to `llama` by llama.cpp and run as Llama.
constexpr ArchName kArchs[] = {{"llama", "LlamaForCausalLM"},
                               {"qwen2", "Qwen2ForCausalLM"},
                               {"qwen3", "Qwen3ForCausalLM"},
                               {"phi3", "Phi3ForCausalLM"}};

int64_t require_integer(const GgufFile& f, const std::string& key) {
  const auto v = f.get_integer(key);
  if (!v) fail(KILN_ERR_FORMAT, f.origin() + ": metadata \"" + key + "\" is missing");
  return *v;
}

double require_number(const GgufFile& f, const std::string& key) {
  const auto v = f.get_number(key);
  if (!v) fail(KILN_ERR_FORMAT, f.origin() + ": metadata \"" + key + "\" is missing");
  return *v;
}

}  // namespace

std::string gguf_hf_architecture(const GgufFile& f) {
  const auto arch = f.get_string("general.architecture");
  if (!arch) fail(KILN_ERR_FORMAT, f.origin() + ": metadata \"general.architecture\" is missing");
  for (const auto& a : kArchs) {
    if (*arch == a.gguf) return a.hf;
  }
  fail(KILN_ERR_UNSUPPORTED, f.origin() + ": GGUF architecture \"" + *arch +
                                 "\" is not supported; supported: llama, qwen2, qwen3, phi3");
}

std::string gguf_config_json(const GgufFile& f) {
  const std::string hf = gguf_hf_architecture(f);
  const std::string p = *f.get_string("general.architecture") + ".";
  // Objects made up front: nlohmann::json 3.11's operator[] on a null value marks it an object
  // before allocating one, so a failed allocation there leaves a value whose destructor crashes.
  json c = json::object();
  c["architectures"] = json::array({hf});
  c["max_position_embeddings"] = require_integer(f, p + "context_length");
  const int64_t hidden = require_integer(f, p + "embedding_length");
  c["hidden_size"] = hidden;
  c["num_hidden_layers"] = require_integer(f, p + "block_count");
  c["intermediate_size"] = require_integer(f, p + "feed_forward_length");
  const int64_t heads = require_integer(f, p + "attention.head_count");
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = f.get_integer(p + "attention.head_count_kv").value_or(heads);
  c["rms_norm_eps"] = require_number(f, p + "attention.layer_norm_rms_epsilon");

  int64_t head_dim = heads > 0 ? hidden / heads : 0;
  if (const auto key_length = f.get_integer(p + "attention.key_length")) {
    head_dim = *key_length;
    c["head_dim"] = head_dim;
    const auto value_length = f.get_integer(p + "attention.value_length");
    if (value_length && *value_length != *key_length) {
      fail(KILN_ERR_UNSUPPORTED, f.origin() + ": " + p + "attention.value_length (" +
                                     std::to_string(*value_length) + ") differs from " + p +
                                     "attention.key_length (" + std::to_string(*key_length) +
                                     "); kiln needs equal key and value head sizes");
    }
  }

  json rope = json::object();
  rope["rope_theta"] = f.get_number(p + "rope.freq_base").value_or(10000.0);
  if (const auto dims = f.get_integer(p + "rope.dimension_count"); dims && head_dim > 0) {
    rope["partial_rotary_factor"] = static_cast<double>(*dims) / static_cast<double>(head_dim);
  }
  // docs/gguf.md: rope.scaling.type is none, linear or yarn; factor and original_context_length
  // go with it. Types the config reader does not implement are refused there, naming them.
  const std::string scaling = f.get_string(p + "rope.scaling.type").value_or("none");
  if (scaling == "none") {
    rope["rope_type"] = "default";
  } else {
    rope["rope_type"] = scaling;
    if (const auto factor = f.get_number(p + "rope.scaling.factor")) rope["factor"] = *factor;
    if (const auto orig = f.get_integer(p + "rope.scaling.original_context_length")) {
      rope["original_max_position_embeddings"] = *orig;
    }
  }
  c["rope_parameters"] = rope;

  // Shapes the metadata does not state: the vocabulary from the embedding (GGUF dims [hidden,
  // vocab]), tied embeddings from a missing output.weight, Llama/Qwen3 attention biases from
  // their presence.
  const GgufTensor* embed = f.find_tensor("token_embd.weight");
  if (embed == nullptr) fail(KILN_ERR_FORMAT, f.origin() + ": tensor token_embd.weight is missing");
  if (embed->dims.size() != 2) {
    fail(KILN_ERR_FORMAT, f.origin() + ": tensor token_embd.weight has " +
                              std::to_string(embed->dims.size()) + " dimensions, expected 2");
  }
  c["vocab_size"] = embed->dims[1];
  c["tie_word_embeddings"] = f.find_tensor("output.weight") == nullptr;
  c["attention_bias"] = f.find_tensor("blk.0.attn_output.bias") != nullptr;

  if (const auto bos = f.get_integer("tokenizer.ggml.bos_token_id")) c["bos_token_id"] = *bos;
  // llama.cpp ends generation on EOS and on EOT / EOM (end of turn / message) when present.
  json eos = json::array();
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                          "tokenizer.ggml.eom_token_id"}) {
    if (const auto id = f.get_integer(key)) {
      if (std::find(eos.begin(), eos.end(), json(*id)) == eos.end()) eos.push_back(*id);
    }
  }
  if (!eos.empty()) c["eos_token_id"] = eos;
  return c.dump();
}

ModelConfig gguf_model_config(const GgufFile& f) {
  return parse_model_config(gguf_config_json(f), "", f.origin() + " (GGUF metadata)");
}

}  // namespace kiln
