// Fresh weights for a model described by a config: the trainer's seeded initialisation, converted
// to the HF-named tensors the inference backends load.
#pragma once

#include <cstdint>
#include <vector>

#include "formats/safetensors.hpp"
#include "model/config.hpp"

namespace kiln {

// Throws KILN_ERR_UNSUPPORTED for an architecture kiln cannot initialise.
std::vector<WeightSet::OwnedF32Tensor> initial_hf_tensors(const ModelConfig& config, uint64_t seed);

}  // namespace kiln
