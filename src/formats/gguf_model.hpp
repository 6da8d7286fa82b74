// A transformer model from a GGUF file: the hyper-parameters under `<arch>.*` (docs/gguf.md
// "LLM" keys), the tensors under llama.cpp's names (docs/gguf.md "Standardized tensor names"),
// and the tokenizer under `tokenizer.ggml.*`, each turned into what the safetensors path
// produces (an HF config, HF tensor names and layouts, an HF tokenizer.json), so that the same
// validation, weight resolution and backends serve both.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.hpp"
#include "formats/gguf.hpp"
#include "formats/safetensors.hpp"
#include "model/config.hpp"

namespace kiln {

// general.architecture → the HF architecture kiln implements it with: llama, qwen2, qwen3,
// phi3. Throws KILN_ERR_UNSUPPORTED for others (naming it), KILN_ERR_FORMAT when absent.
std::string gguf_hf_architecture(const GgufFile& file);

// The equivalent HF config.json (as JSON text), from the `<arch>.*` keys, the special token ids
// and the tensor shapes (vocabulary size, tied embeddings, attention biases).
std::string gguf_config_json(const GgufFile& file);

// The ModelConfig of gguf_config_json, validated like any config.json.
ModelConfig gguf_model_config(const GgufFile& file);

// Every tensor dequantised to float32 under its HF name and in HF layout (rows of llama q/k
// projections un-permuted; see gguf_weights.cpp). Throws KILN_ERR_UNSUPPORTED for a tensor kiln
// has no place for (naming it), KILN_ERR_CANCELLED when `progress` returns false.
std::unique_ptr<WeightSet> gguf_weights(const GgufFile& file, const ModelConfig& config,
                                        const ProgressFn& progress);

// The same tensors as stored, for a backend that computes on block-quantised weights: views into
// the file's mapping (F32/F16/BF16 as those dtypes, block formats as DType::GGML with their
// ggml_type); only Llama q/k rows are copied, to reorder them. The set keeps `file` alive. Same
// errors as gguf_weights.
std::unique_ptr<WeightSet> gguf_weights_as_stored(std::shared_ptr<const GgufFile> file,
                                                  const ModelConfig& config,
                                                  const ProgressFn& progress);

}  // namespace kiln
