// Which GGUF type kiln-quantize writes for each tensor: the target's type, and for Q4_K_M
// llama.cpp's mix (llama-quant.cpp, llama_tensor_get_type, for a dense model that is not Falcon
// and not a 70B), so that kiln's Q4_K_M file of a model holds the same types as llama.cpp's.
//
//   1-D tensors (norms, biases)            F32
//   F16 target / Q8_0 target               F16 / Q8_0 for every matrix
//   Q4_K_M:
//     output.weight, or token_embd.weight
//     when there is no output.weight       Q6_K; Q8_0 when its rows are not whole super-blocks
//     blk.i.attn_v / blk.i.ffn_down        Q6_K where use_more_bits(i, n_layers), else Q4_K
//     every other matrix (token_embd of an
//     untied model included)               Q4_K
//   then rows that are not whole 256-element super-blocks fall back as llama.cpp's do: Q4_K →
//   Q5_0, Q6_K → Q8_0; and a row that is not whole 32-element blocks either → F16.
//
// use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i − n/8) % 3 == 2 (integer division). llama.cpp
// counts attn_v and ffn_down tensors in its loader's order, which sorts by layer number, so its
// counter is the layer index used here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/quant/ggml_type.hpp"

namespace kiln {

enum class QuantizeTarget { F16, Q8_0, Q4_K_M };

// dims in ggml order (dims[0] is the row length). has_output: the model has its own
// output.weight (untied embeddings). n_layers: the model's block count.
quant::GgmlType quantized_tensor_type(QuantizeTarget target, const std::string& name,
                                      const std::vector<int64_t>& dims, bool has_output,
                                      int64_t n_layers);

}  // namespace kiln
