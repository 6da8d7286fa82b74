// Tokenizer: HF tokenizer.json (+ tokenizer_config.json) → ids and back.
// Supports BPE models in both families: byte-level (GPT-2, Llama 3, Qwen2/2.5/3, GPT-OSS) and
// SentencePiece-style with "▁" and byte_fallback (Llama 2, Mistral, Phi-3).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

namespace tok {
class LoadTimer;
}

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // tokenizer_config_json may be a path that does not exist (then defaults apply).
  // Throws kiln::Error: KILN_ERR_NOT_FOUND, KILN_ERR_FORMAT (naming the JSON field),
  // KILN_ERR_UNSUPPORTED (Unigram/WordPiece/unknown component, naming it).
  // `timer`, when given, records how long each stage of the load took.
  static std::unique_ptr<Tokenizer> from_files(const std::filesystem::path& tokenizer_json,
                                               const std::filesystem::path& tokenizer_config_json,
                                               tok::LoadTimer* timer = nullptr);
  static std::unique_ptr<Tokenizer> from_json(std::string_view tokenizer_json,
                                              std::string_view tokenizer_config_json,
                                              tok::LoadTimer* timer = nullptr);

  // add_special: BOS/EOS per the post-processor / tokenizer_config (add_bos_token, add_eos_token).
  // parse_special: added-token text in the input becomes that token; otherwise it is plain text.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special,
                                      bool parse_special) const = 0;
  // The ids that encode(preceding + text, false, parse_special) gives for `text`, where the cut
  // between the two falls on a token boundary. How the first piece of `text` is encoded depends
  // on what precedes it: SentencePiece-style tokenizers (Metaspace prepend_scheme "first", a
  // Prepend normalizer) put "▁" before the input's start or, for Prepend, after an added token,
  // but not in the middle of plain text. Reads all of `preceding` (an added-token scan).
  virtual std::vector<int32_t> encode_continuation(std::string_view preceding,
                                                   std::string_view text,
                                                   bool parse_special) const = 0;
  // encode() on up to n_threads threads (0 = the hardware's): the text is cut where the pieces
  // on each side cannot depend on each other — at added tokens (with parse_special) and, for
  // pipelines where it has been shown safe, at line starts — and the ids are exactly encode()'s.
  // Short texts and pipelines with no safe cut run on the calling thread.
  virtual std::vector<int32_t> encode_threaded(std::string_view text, bool add_special,
                                               bool parse_special, int n_threads) const = 0;
  // Throws KILN_ERR_OUT_OF_RANGE for an id outside [0, vocab_size()).
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special) const = 0;
  // Raw bytes of one token as it contributes to decoded text in the middle of a sequence
  // (byte-level mapping undone, "▁" → " ", <0xAB> → byte 0xAB). Throws KILN_ERR_OUT_OF_RANGE.
  virtual std::string token_bytes(int32_t id) const = 0;

  virtual int32_t vocab_size() const = 0;  // max id + 1, added tokens included
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual bool is_special(int32_t id) const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual bool adds_bos() const = 0;  // does encode(add_special=true) prepend BOS
};

// Incremental detokenizer for streaming: push ids one at a time, get back only complete UTF-8
// text. Handles byte-level tokens that split a character, byte-fallback sequences spanning several
// tokens, and the leading-space rule of "▁" tokenizers (the first token's leading space is
// stripped exactly as decode() would). The concatenation of every push() plus flush() equals
// decode(all ids).
class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special);
  std::string push(int32_t id);
  // Whatever is still held, rendered exactly as decode() renders it (an incomplete UTF-8 tail
  // becomes U+FFFD). Ends the stream: the decoder is reset for a new sequence.
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t emitted_bytes_ = 0;  // bytes of decode(ids_) already returned
};

}  // namespace kiln
