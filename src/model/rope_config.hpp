// Reading RoPE settings from an HF config: the transformers-4 fields (`rope_theta`,
// `rope_scaling` {type|rope_type, factor, ...}) and the transformers-5 `rope_parameters`
// {rope_theta, rope_type, factor, ...}. rope_inverse_frequencies() is declared in config.hpp.
#pragma once

#include "model/config.hpp"
#include "model/config_fields.hpp"

namespace kiln {

// Sets config.rope_theta, .rope_scaling and .partial_rotary_factor (head_dim must already be set).
// Throws KILN_ERR_FORMAT for malformed fields, KILN_ERR_UNSUPPORTED for a rope type kiln does not
// implement (yarn, longrope, dynamic, ... unless their factor is 1, where they equal the default).
void read_rope(const ConfigFields& fields, ModelConfig& config);

}  // namespace kiln
