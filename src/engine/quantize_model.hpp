// kiln_model_quantize: a Hugging Face model directory or a GGUF file → a GGUF file of one target
// type (F16, Q8_0 or llama.cpp's Q4_K_M mix), written per the public GGUF layout
// (formats/gguf_writer.hpp) with the metadata llama.cpp reads: general.architecture, the
// `<arch>.*` hyper-parameters, `tokenizer.ggml.*` from the source's tokenizer.
//
// Tensor types. One-dimensional tensors (norms, biases) stay F32. Matrices take the target type,
// except for Q4_K_M, which follows llama.cpp's rule (llama-quant.cpp, llama_tensor_get_type):
// Q6_K for output.weight (token_embd.weight when the embeddings are tied), and for attn_v and
// ffn_down of the layers where use_more_bits(i, n) holds (i < n/8, i >= 7n/8, or (i − n/8) % 3
// == 2); Q4_K elsewhere. A matrix whose rows are not whole 256-element super-blocks falls back to
// Q8_0 (llama.cpp falls back to Q5_0 for Q4_K and to Q8_0 for Q6_K; kiln writes no Q5_0), and a
// row not a multiple of 32 to F16.
#pragma once

#include <filesystem>

#include "backend/backend.hpp"

namespace kiln {

enum class QuantizeTarget { F16, Q8_0, Q4_K_M };

// Throws kiln::Error: KILN_ERR_NOT_FOUND (src, or dst's directory, missing), KILN_ERR_FORMAT /
// KILN_ERR_UNSUPPORTED (a source kiln cannot read or an architecture, tokenizer or RoPE scaling the
// writer does not handle, named), KILN_ERR_IO (dst cannot be written, with the OS reason),
// KILN_ERR_CANCELLED. The destination is written atomically: on any error it is left as it was.
void quantize_model(const std::filesystem::path& src, const std::filesystem::path& dst,
                    QuantizeTarget target, int n_threads, const ProgressFn& progress);

}  // namespace kiln
