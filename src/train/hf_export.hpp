// Export of trained parameters as an HF model directory that transformers (and kiln) load:
// model.safetensors + config.json (+ tokenizer.json / tokenizer_config.json when given).
//
// Canonical names (docs/training-design.md) become each family's HF names:
//   Llama, Mistral, Qwen2, Qwen3   unchanged (the canonical names are theirs)
//   Phi3                           q/k/v_proj -> self_attn.qkv_proj (rows q, k, v);
//                                  gate/up_proj -> mlp.gate_up_proj (rows gate, up)
//   GPT2LMHeadModel                transformer.{wte, wpe, h.L.{ln_1, attn.c_attn, attn.c_proj,
//                                  ln_2, mlp.c_fc, mlp.c_proj}, ln_f}; Conv1D weights are stored
//                                  [in, out], so every linear weight is transposed, and c_attn
//                                  is q, k, v concatenated along the output dimension
//   NanoChatForCausalLM            mlp.up_proj -> mlp.fc1, mlp.down_proj -> mlp.fc2
// MTP heads (model.mtp_heads.*) have no place in these formats and are not exported: the
// exported model is the ordinary model, which is what inference runs.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "model/config.hpp"
#include "train/param_layout.hpp"

namespace kiln {

struct HfExportOptions {
  DType dtype = DType::F32;           // F32 or BF16 (round to nearest even)
  std::string tokenizer_json;         // written when non-empty
  std::string tokenizer_config_json;  // written when non-empty
};

// One tensor of the HF checkpoint: borrowed from the values buffer, or owned when it had to be
// transposed or fused.
struct HfTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* borrowed = nullptr;
  std::vector<float> owned;

  const float* data() const { return owned.empty() ? borrowed : owned.data(); }
};

// The HF tensors for `values` (layout.total() floats). Throws kiln::Error: KILN_ERR_UNSUPPORTED
// (an architecture without a mapping), KILN_ERR_INVALID_ARGUMENT (a tensor the family needs is
// missing from the layout, has the wrong shape to fuse, or a layout tensor has no place in the
// family's checkpoint; each naming the tensor).
std::vector<HfTensor> hf_tensors(const ModelConfig& config, const ParamLayout& layout,
                                 const float* values);

// Writes `dir` (created when missing): model.safetensors (atomically), config.json
// (model_config_to_json) and the tokenizer files given. Throws as hf_tensors() and
// model_config_to_json(), plus KILN_ERR_IO / KILN_ERR_NOT_FOUND naming the file, and
// KILN_ERR_INVALID_ARGUMENT when `dir` holds a model.safetensors.index.json (a reader would
// follow it instead of the exported file).
void export_hf_model(const std::filesystem::path& dir, const ModelConfig& config,
                     const ParamLayout& layout, const float* values,
                     const HfExportOptions& options);

}  // namespace kiln
