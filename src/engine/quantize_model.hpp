// kiln_model_quantize: a Hugging Face model directory or a GGUF file → a GGUF file of one target
// type (F16, Q8_0 or llama.cpp's Q4_K_M mix), written per the public GGUF layout
// (formats/gguf_writer.hpp) with the metadata llama.cpp reads: general.architecture, the
// `<arch>.*` hyper-parameters, `tokenizer.ggml.*` from the source's tokenizer.
//
// Tensor types: engine/quant_mix.hpp (llama.cpp's Q4_K_M mix, its fallbacks included).
#pragma once

#include <filesystem>

#include "backend/backend.hpp"
#include "engine/quant_mix.hpp"

namespace kiln {

// Throws kiln::Error: KILN_ERR_NOT_FOUND (src, or dst's directory, missing), KILN_ERR_FORMAT /
// KILN_ERR_UNSUPPORTED (a source kiln cannot read or an architecture, tokenizer or RoPE scaling the
// writer does not handle, named), KILN_ERR_IO (dst cannot be written, with the OS reason),
// KILN_ERR_CANCELLED. The destination is written atomically: on any error it is left as it was.
void quantize_model(const std::filesystem::path& src, const std::filesystem::path& dst,
                    QuantizeTarget target, int n_threads, const ProgressFn& progress);

}  // namespace kiln
