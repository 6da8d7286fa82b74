// Model: an immutable loaded model — config, tokenizer, and the backend's executor holding the
// weights. Shared (std::shared_ptr) between the model handle and every session on it, so a model
// handle may be freed before its sessions.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "backend/backend.hpp"
#include "model/config.hpp"
#include "tokenizer/tokenizer.hpp"

namespace kiln {

class Runtime;
class WeightSet;

struct Model {
  ModelConfig config;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the directory has no tokenizer.json
  std::unique_ptr<ModelExecutor> executor;
  std::shared_ptr<const WeightSet> weights;
  bool add_bos = false;
  int32_t bos_id = -1;
  std::vector<int32_t> eos_ids;
  int64_t n_parameters = 0;
  std::filesystem::path
      directory;  // where it was loaded from (chat templates read tokenizer_config.json)
  // The texts the model was built from, kept so training can checkpoint and export it: config.json
  // (empty for GGUF), tokenizer.json and tokenizer_config.json (empty when absent).
  std::string config_json;
  std::string tokenizer_json;
  std::string tokenizer_config_json;

  const Tokenizer& require_tokenizer() const;
};

// Sets bos_id, eos_ids and add_bos from the config and the tokenizer.
void resolve_special_ids(Model& model);

// Loads a model directory. Throws kiln::Error (see kiln_model_load for the statuses).
// `precision`: a valid kiln_precision, passed to the backend.
std::shared_ptr<const Model> load_model(const Runtime& runtime, const std::filesystem::path& path,
                                        const ProgressFn& progress,
                                        kiln_precision precision = KILN_PRECISION_DEFAULT);

}  // namespace kiln
