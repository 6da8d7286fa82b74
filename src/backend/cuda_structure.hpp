// What the CUDA backend implements of ModelConfig's structural choices. Kept outside
// src/backend/cuda/ so that it is built, and tested, without nvcc.
#pragma once

#include "model/config.hpp"

namespace kiln {

// Throws KILN_ERR_UNSUPPORTED naming the architecture and every structural feature the CUDA
// executor lacks (today: everything but the Llama family's RMSNorm / SwiGLU / RoPE decoder), and
// pointing at the CPU backend, which runs them all. Returns for the Llama family.
void require_cuda_structure(const ModelConfig& config);

}  // namespace kiln
