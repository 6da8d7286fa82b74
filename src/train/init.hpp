// Fresh, seeded initialisation of a model's trainable tensors, per family, following the
// initialisation each family's reference trainer uses:
//
//   Llama family (RMSNorm with weight)   transformers' LlamaPreTrainedModel._init_weights: every
//       Linear weight and the embedding N(0, 0.02²) (initializer_range 0.02), biases 0, norm
//       weights 1.
//   GPT-2 (LayerNorm)                    transformers' GPT2PreTrainedModel._init_weights: Linear
//       weights, token and position embeddings N(0, 0.02²); the residual projections (o_proj =
//       attn.c_proj, down_proj = mlp.c_proj) N(0, (0.02 / sqrt(2 · n_layers))²); biases 0,
//       LayerNorm weights 1.
//   NanoChat (parameter-free RMSNorm)    karpathy/nanochat GPT.init_weights: embedding N(0, 1);
//       Linear weights N(0, σ²) with σ = 1/sqrt(fan_in) · min(1, sqrt(fan_out / fan_in));
//       lm_head, o_proj and down_proj zero.
// MTP heads are initialised like layers.
//
// Deterministic: tensor `name` draws from its own stream, seeded by (seed, name), so a tensor's
// values depend on the seed and its name only (not on the order or presence of other tensors).
#pragma once

#include <cstdint>
#include <span>

#include "model/config.hpp"
#include "train/param_layout.hpp"

namespace kiln::train {

// Writes every tensor of `layout` into `values` (layout.total() elements; padding set to 0).
// Throws KILN_ERR_INVALID_ARGUMENT when values has the wrong size.
void init_params(const ModelConfig& config, const ParamLayout& layout, uint64_t seed,
                 std::span<float> values);

}  // namespace kiln::train
