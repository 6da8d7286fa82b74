// ModelConfig -> HF config.json text, with the field names of the transformers configuration
// class of each family: LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config, Phi3Config,
// GPT2Config, NanoChatConfig. For the Llama family, parse_model_config() of the result gives the
// same ModelConfig back.
#pragma once

#include <string>

#include "core/dtype.hpp"
#include "model/config.hpp"

namespace kiln {

// `weights_dtype` becomes "torch_dtype". Throws kiln::Error: KILN_ERR_UNSUPPORTED (an
// architecture without a writer, naming it), KILN_ERR_INVALID_ARGUMENT (a config the family's
// format cannot express, e.g. GQA for GPT-2 or a norm kind the family does not use; naming the
// field).
std::string model_config_to_json(const ModelConfig& config, DType weights_dtype);

}  // namespace kiln
