// Many texts → ids on a pool of threads: HF tokenizers' encode_batch. The texts are independent
// and Tokenizer is immutable, so each text's ids are exactly Tokenizer::encode's.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.hpp"

namespace kiln {

// encode() of every text on up to n_threads threads (0 = the hardware's). A text that fails
// (invalid UTF-8) is reported as "texts[i]: " + encode's message with encode's status; when
// several fail, the lowest i, so the error does not depend on the thread count.
std::vector<std::vector<int32_t>> encode_batch(const Tokenizer& tokenizer,
                                               std::span<const std::string_view> texts,
                                               bool add_special, bool parse_special, int n_threads);

}  // namespace kiln
