// HF checkpoint -> the trainer's float32 parameters, for every trainable family: the Llama family
// (Llama, Mistral, Qwen2, Qwen3, Phi3), GPT-2 and NanoChat. Tensors are found and shape-checked by
// resolve_transformer_weights (which splits Phi3's fused qkv_proj / gate_up_proj into row slices
// and describes GPT-2's Conv1D weights as transposed slices of c_attn) and converted from
// F32/F16/BF16 into nn.Linear orientation.
#pragma once

#include <span>

#include "formats/safetensors.hpp"
#include "model/config.hpp"
#include "train/param_layout.hpp"

namespace kiln::train {

// Overwrites every tensor of `layout` that the checkpoint provides. Tensors it cannot provide —
// the MTP heads — keep their values, so a trainer calls init_params first. Throws
// KILN_ERR_INVALID_ARGUMENT when values has the wrong size, and whatever
// resolve_transformer_weights throws (a missing tensor or a wrong shape: KILN_ERR_FORMAT).
void import_hf_weights(const ModelConfig& config, const ParamLayout& layout,
                       const WeightSet& weights, std::span<float> values);

}  // namespace kiln::train
