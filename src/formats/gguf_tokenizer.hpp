// The tokenizer stored in GGUF metadata (docs/gguf.md "Tokenizer": tokenizer.ggml.model,
// .tokens, .token_type, .merges, .pre, .*_token_id, .add_bos_token / .add_eos_token), rebuilt as
// the HF tokenizer.json + tokenizer_config.json it was converted from, so that one tokenizer
// implementation serves both formats.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "formats/gguf.hpp"
#include "tokenizer/tokenizer.hpp"

namespace kiln {

struct TokenizerJson {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
};

// Supported: tokenizer.ggml.model "gpt2" (byte-level BPE) with tokenizer.ggml.pre "qwen2",
// "llama-bpe" (Llama 3), "gpt2" or "default" (both: GPT-2's byte-level regex). Throws
// KILN_ERR_UNSUPPORTED naming any other model or pre-tokenizer, KILN_ERR_FORMAT for inconsistent
// metadata (array lengths, types, ids out of range), naming the key.
TokenizerJson gguf_tokenizer_json(const GgufFile& file);

// The tokenizer.ggml.pre whose rebuilt pre-tokenizer, normalizer and ignore_merges equal those of
// an HF tokenizer.json (parsed JSON text), for writing GGUF; nullopt when none does.
std::optional<std::string> gguf_pre_matching(const std::string& tokenizer_json);

// nullptr when the file has no tokenizer.ggml.model; otherwise as gguf_tokenizer_json, built.
std::unique_ptr<Tokenizer> gguf_tokenizer(const GgufFile& file);

}  // namespace kiln
