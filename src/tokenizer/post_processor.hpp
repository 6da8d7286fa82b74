// HF post-processors (tokenizers/src/processors) reduced to what encode(add_special=true) needs for
// a single sequence: the special-token ids placed before and after it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/json_fields.hpp"

namespace kiln::tok {

struct SpecialTokenFrame {
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
};

// Reads tokenizer.json's "post_processor". Returns nullopt when it adds no tokens (null, or only
// ByteLevel), so that tokenizer_config.json's add_bos_token/add_eos_token decide instead.
// Supported: TemplateProcessing (its "single" template), RobertaProcessing, BertProcessing,
// ByteLevel, Sequence.
std::optional<SpecialTokenFrame> read_post_processor(const Json& spec, const std::string& path);

}  // namespace kiln::tok
