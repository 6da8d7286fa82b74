// Models that do not come from a file on disk: a fresh model from a config.json text (seeded
// initialisation, for training from scratch) and a model from weights held in memory (a trainer's
// snapshot or a checkpoint).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/model.hpp"
#include "formats/safetensors.hpp"

namespace kiln {

class Runtime;

// The texts a model is described by (see Model::config_json and friends).
struct ModelTexts {
  std::string config_json;
  std::string tokenizer_json;         // empty = no tokenizer
  std::string tokenizer_config_json;  // may be empty
};

// Throws KILN_ERR_FORMAT / KILN_ERR_UNSUPPORTED for a bad config (as kiln_model_load does),
// KILN_ERR_NOT_FOUND for a tokenizer path without tokenizer.json.
std::shared_ptr<const Model> create_model(const Runtime& runtime, const std::string& config_json,
                                          uint64_t seed,
                                          const std::filesystem::path& tokenizer_path);

// A model from HF-named float32 tensors (what the inference backends load), placed on `runtime`'s
// backend. `origin` names it in messages.
std::shared_ptr<const Model> model_from_tensors(const Runtime& runtime, const ModelTexts& texts,
                                                std::vector<WeightSet::OwnedF32Tensor> tensors,
                                                const std::string& origin);

}  // namespace kiln
