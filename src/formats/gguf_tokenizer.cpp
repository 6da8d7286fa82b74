// GGUF tokenizer metadata → HF tokenizer.json. The pre-tokenizer of each `pre` family is the one
// the HF tokenizer.json of that family carries (llama.cpp picks the same split regex for the
// same `pre`, in llama-vocab.cpp); token types follow llama.cpp's enum llama_token_type (1
// normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte): its converter writes HF's
// special added tokens as control and the other added tokens as user-defined.
#include "formats/gguf_tokenizer.hpp"

#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace kiln {

namespace {

using nlohmann::json;

constexpr int64_t kTokenControl = 3;
constexpr int64_t kTokenUserDefined = 4;

// Qwen2's split (tokenizer.json of Qwen2 / Qwen2.5 / Qwen3): single digits.
constexpr const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Llama 3's split: digits in runs of up to three.
constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

json split_then_byte_level(const char* regex) {
  return {{"type", "Sequence"},
          {"pretokenizers", json::array({{{"type", "Split"},
                                          {"pattern", {{"Regex", regex}}},
                                          {"behavior", "Isolated"},
                                          {"invert", false}},
                                         {{"type", "ByteLevel"},
                                          {"add_prefix_space", false},
                                          {"trim_offsets", false},
                                          {"use_regex", false}}})}};
}

struct PreTokenizer {
  json normalizer;
  json pre_tokenizer;
  bool ignore_merges = false;
};

PreTokenizer pre_tokenizer_for(const std::string& pre, const std::string& origin) {
  if (pre == "qwen2") return {{{"type", "NFC"}}, split_then_byte_level(kQwen2Regex), false};
  // Llama 3's tokenizer.json sets ignore_merges (a whole word in the vocabulary is one token).
  if (pre == "llama-bpe") return {nullptr, split_then_byte_level(kLlama3Regex), true};
  if (pre == "gpt2" || pre == "default") {
    return {nullptr,
            {{"type", "ByteLevel"},
             {"add_prefix_space", false},
             {"trim_offsets", true},
             {"use_regex", true}},
            false};
  }
  fail(KILN_ERR_UNSUPPORTED, origin + ": tokenizer.ggml.pre \"" + pre +
                                 "\" is not supported; supported: qwen2, llama-bpe, gpt2, default");
}

std::vector<std::string> string_array(const GgufFile& f, const std::string& key, bool required) {
  const GgufArray* a = f.get_array(key);
  std::vector<std::string> out;
  if (a == nullptr) {
    if (required) fail(KILN_ERR_FORMAT, f.origin() + ": metadata \"" + key + "\" is missing");
    return out;
  }
  if (a->element_type != GgufValueType::STRING) {
    fail(KILN_ERR_FORMAT, f.origin() + ": metadata \"" + key + "\" is an array of " +
                              gguf_value_type_name(a->element_type) + ", expected STRING");
  }
  out.reserve(a->items.size());
  for (const GgufValue& v : a->items) out.push_back(*v.as_string());
  return out;
}

std::vector<int64_t> integer_array(const GgufFile& f, const std::string& key) {
  const GgufArray* a = f.get_array(key);
  std::vector<int64_t> out;
  if (a == nullptr) return out;
  for (size_t i = 0; i < a->items.size(); ++i) {
    const auto v = a->items[i].as_integer();
    if (!v) {
      fail(KILN_ERR_FORMAT, f.origin() + ": metadata \"" + key + "\"[" + std::to_string(i) +
                                "] is " + gguf_value_type_name(a->items[i].type) +
                                ", expected an integer");
    }
    out.push_back(*v);
  }
  return out;
}

// tokens[id] for a *_token_id key, or null when absent.
json special_token(const GgufFile& f, const std::string& key,
                   const std::vector<std::string>& tokens) {
  const auto id = f.get_integer(key);
  if (!id) return nullptr;
  if (*id < 0 || *id >= static_cast<int64_t>(tokens.size())) {
    fail(KILN_ERR_FORMAT, f.origin() + ": metadata \"" + key + "\" is " + std::to_string(*id) +
                              ", outside the vocabulary [0, " + std::to_string(tokens.size()) +
                              ")");
  }
  return tokens[static_cast<size_t>(*id)];
}

}  // namespace

TokenizerJson gguf_tokenizer_json(const GgufFile& f) {
  const std::string model = f.get_string("tokenizer.ggml.model").value_or("");
  if (model != "gpt2") {
    fail(KILN_ERR_UNSUPPORTED, f.origin() + ": tokenizer.ggml.model \"" + model +
                                   "\" is not supported; kiln rebuilds \"gpt2\" (byte-level BPE) "
                                   "tokenizers from GGUF");
  }
  const std::vector<std::string> tokens = string_array(f, "tokenizer.ggml.tokens", true);
  const std::vector<std::string> merges = string_array(f, "tokenizer.ggml.merges", true);
  const std::vector<int64_t> types = integer_array(f, "tokenizer.ggml.token_type");
  if (!types.empty() && types.size() != tokens.size()) {
    fail(KILN_ERR_FORMAT, f.origin() + ": tokenizer.ggml.token_type has " +
                              std::to_string(types.size()) + " entries, tokenizer.ggml.tokens " +
                              std::to_string(tokens.size()));
  }
  const PreTokenizer pre =
      pre_tokenizer_for(f.get_string("tokenizer.ggml.pre").value_or("default"), f.origin());

  json vocab = json::object();
  json added = json::array();
  for (size_t id = 0; id < tokens.size(); ++id) {
    vocab[tokens[id]] = id;
    const int64_t type = types.empty() ? 1 : types[id];
    if (type == kTokenControl || type == kTokenUserDefined) {
      added.push_back({{"id", id},
                       {"content", tokens[id]},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", type == kTokenControl}});
    }
  }
  // GGUF merges are "left right" with the byte-level symbols, as in tokenizer.json's string form.
  json merge_list = json::array();
  for (size_t i = 0; i < merges.size(); ++i) {
    const size_t space = merges[i].find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == merges[i].size()) {
      fail(KILN_ERR_FORMAT, f.origin() + ": tokenizer.ggml.merges[" + std::to_string(i) +
                                "] is \"" + merges[i] + "\", expected \"left right\"");
    }
    merge_list.push_back(json::array({merges[i].substr(0, space), merges[i].substr(space + 1)}));
  }

  json tok = {{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", added},
              {"normalizer", pre.normalizer},
              {"pre_tokenizer", pre.pre_tokenizer},
              {"post_processor", nullptr},
              {"decoder",
               {{"type", "ByteLevel"},
                {"add_prefix_space", true},
                {"trim_offsets", true},
                {"use_regex", true}}},
              {"model",
               {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", pre.ignore_merges},
                {"vocab", vocab},
                {"merges", merge_list}}}};

  json config = {{"bos_token", special_token(f, "tokenizer.ggml.bos_token_id", tokens)},
                 {"eos_token", special_token(f, "tokenizer.ggml.eos_token_id", tokens)},
                 {"pad_token", special_token(f, "tokenizer.ggml.padding_token_id", tokens)},
                 {"add_bos_token", f.get_bool("tokenizer.ggml.add_bos_token").value_or(false)},
                 {"add_eos_token", f.get_bool("tokenizer.ggml.add_eos_token").value_or(false)}};
  try {
    return {tok.dump(), config.dump()};
  } catch (const json::exception& e) {
    // A token that is not valid UTF-8 cannot be written into tokenizer.json.
    fail(KILN_ERR_FORMAT, f.origin() +
                              ": tokenizer metadata holds a string that is not valid "
                              "UTF-8: " +
                              e.what());
  }
}

std::optional<std::string> gguf_pre_matching(const std::string& tokenizer_json) {
  const json hf = json::parse(tokenizer_json, nullptr, false);
  if (!hf.is_object()) return std::nullopt;
  const json model = hf.value("model", json::object());
  const bool ignore_merges = model.is_object() && model.value("ignore_merges", false);
  for (const char* pre : {"qwen2", "llama-bpe", "gpt2"}) {
    const PreTokenizer p = pre_tokenizer_for(pre, "");
    if (hf.value("pre_tokenizer", json()) == p.pre_tokenizer &&
        hf.value("normalizer", json()) == p.normalizer && ignore_merges == p.ignore_merges) {
      return pre;
    }
  }
  return std::nullopt;
}

std::unique_ptr<Tokenizer> gguf_tokenizer(const GgufFile& f) {
  if (f.find("tokenizer.ggml.model") == nullptr) return nullptr;
  const TokenizerJson j = gguf_tokenizer_json(f);
  return Tokenizer::from_json(j.tokenizer_json, j.tokenizer_config_json);
}

}  // namespace kiln
