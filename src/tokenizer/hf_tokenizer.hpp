// kiln::Tokenizer for HF tokenizer.json files: added tokens → normalizer → pre-tokenizer → BPE
// model → post-processor on the way in, decoder pipeline on the way out
// (the order of HF tokenizers' TokenizerImpl::encode_single_sequence / decode).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "tokenizer/added_vocabulary.hpp"
#include "tokenizer/bpe_model.hpp"
#include "tokenizer/decoder.hpp"
#include "tokenizer/json_fields.hpp"
#include "tokenizer/load_timer.hpp"
#include "tokenizer/normalizer.hpp"
#include "tokenizer/post_processor.hpp"
#include "tokenizer/pre_tokenizer.hpp"
#include "tokenizer/tokenizer.hpp"

namespace kiln::tok {

class HfTokenizer final : public Tokenizer {
 public:
  // `config` is tokenizer_config.json (null when absent). `tables`, when given, holds
  // model.vocab and model.merges already read (see BpeModel::from_json). `timer` records the
  // build's stages when given.
  HfTokenizer(const Json& tokenizer, const Json& config, const BpeTables* tables = nullptr,
              LoadTimer* timer = nullptr);

  std::vector<int32_t> encode(std::string_view text, bool add_special,
                              bool parse_special) const override;
  std::vector<int32_t> encode_continuation(std::string_view preceding, std::string_view text,
                                           bool parse_special) const override;
  std::vector<int32_t> encode_threaded(std::string_view text, bool add_special, bool parse_special,
                                       int n_threads) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special) const override;
  std::string token_bytes(int32_t id) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  bool is_special(int32_t id) const override;
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::optional<int32_t> eos_id() const override { return eos_id_; }
  bool adds_bos() const override;
  // Does encode_threaded cut plain text at line starts (see is_line_start)?
  bool cuts_at_line_starts() const { return line_splittable_; }

 private:
  std::vector<int32_t> encode_segment(Segment whole, bool add_special, bool parse_special) const;
  void encode_text(const Segment& segment, bool parse_special, std::vector<int32_t>& out) const;
  void check_id(int32_t id, const char* what) const;
  std::optional<std::string_view> token_string(int32_t id) const;
  std::optional<int32_t> config_token_id(const Json& config, const char* key) const;

  BpeModel model_;
  AddedVocabulary added_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  SpecialTokenFrame special_frame_;  // what add_special=true puts around the ids
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
  int32_t vocab_size_ = 0;
  // Normalizer and pre-tokenizer allow cutting the text at line starts (encode_threaded).
  bool line_splittable_ = false;
};

}  // namespace kiln::tok
