#include "engine/model.hpp"

#include <chrono>
#include <fstream>
#include <string_view>
#include <system_error>

#include "core/error.hpp"
#include "engine/runtime.hpp"
#include "formats/gguf.hpp"
#include "formats/gguf_model.hpp"
#include "formats/gguf_tokenizer.hpp"
#include "formats/safetensors.hpp"
#include "util/mapped_file.hpp"

namespace kiln {

namespace fs = std::filesystem;

const Tokenizer& Model::require_tokenizer() const {
  if (!tokenizer) {
    fail(KILN_ERR_UNSUPPORTED,
         "this model has no tokenizer (its directory has no tokenizer.json); pass token ids "
         "instead");
  }
  return *tokenizer;
}

namespace {

void report(const ProgressFn& progress, float fraction, const char* stage) {
  if (progress && !progress(fraction, stage)) {
    fail(KILN_ERR_CANCELLED,
         std::string("model loading cancelled by the progress callback during ") + stage);
  }
}

}  // namespace

// The special ids of a model: the tokenizer config decides BOS insertion; EOS ids are the union of
// generation_config.json / config.json and the tokenizer's eos_token, so generation stops on any.
void resolve_special_ids(Model& m) {
  m.bos_id = m.config.bos_token_id;
  m.eos_ids = m.config.eos_token_ids;
  if (m.tokenizer) {
    m.add_bos = m.tokenizer->adds_bos();
    if (auto bos = m.tokenizer->bos_id()) m.bos_id = *bos;
    if (auto eos = m.tokenizer->eos_id()) {
      bool present = false;
      for (int32_t id : m.eos_ids) present = present || id == *eos;
      if (!present) m.eos_ids.push_back(*eos);
    }
  }
}

namespace {

// Progress of a sub-stage mapped onto [begin, begin + span] of the whole load.
ProgressFn sub_progress(const ProgressFn& progress, float begin, float span) {
  return [progress, begin, span](float f, const char* stage) {
    return !progress || progress(begin + span * f, stage);
  };
}

void load_hf_directory(const Runtime& runtime, const fs::path& path, const ProgressFn& progress,
                       kiln_precision precision, Model& model) {
  std::error_code ec;
  report(progress, 0.0f, "config");
  model.directory = path;
  model.config = load_model_config(path);
  model.config_json = read_text_file(path / "config.json");

  report(progress, 0.01f, "tokenizer");
  if (fs::exists(path / "tokenizer.json", ec)) {
    model.tokenizer_json = read_text_file(path / "tokenizer.json");
    if (fs::exists(path / "tokenizer_config.json", ec)) {
      model.tokenizer_config_json = read_text_file(path / "tokenizer_config.json");
    }
    model.tokenizer =
        Tokenizer::from_files(path / "tokenizer.json", path / "tokenizer_config.json");
    if (model.tokenizer->vocab_size() > model.config.vocab_size) {
      fail(KILN_ERR_FORMAT, "tokenizer.json in '" + path.string() + "' has " +
                                std::to_string(model.tokenizer->vocab_size()) +
                                " tokens but config.json's vocab_size is " +
                                std::to_string(model.config.vocab_size));
    }
  } else {
    runtime.logger().warn("'" + path.string() +
                          "' has no tokenizer.json: only token ids can be used with this model");
  }
  resolve_special_ids(model);

  report(progress, 0.02f, "weights");
  std::shared_ptr<const WeightSet> weights = WeightSet::open_dir(path);
  model.weights = weights;
  model.executor = runtime.backend().load_model(model.config, weights,
                                                sub_progress(progress, 0.02f, 0.98f), precision);
}

bool has_gguf_magic(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string_view(magic, 4) == "GGUF";
}

// A GGUF file: config, tokenizer and weights all come from the one file. A backend that computes
// on quantised blocks (the CPU) gets the tensors as stored, in the file's mapping; for the others
// they are dequantised to float32 at load, after which the file is unmapped.
void load_gguf(const Runtime& runtime, const fs::path& path, const ProgressFn& progress,
               kiln_precision precision, Model& model) {
  report(progress, 0.0f, "config");
  std::shared_ptr<const GgufFile> file = GgufFile::open(path);
  model.config = gguf_model_config(*file);

  report(progress, 0.01f, "tokenizer");
  model.tokenizer = gguf_tokenizer(*file);
  if (!model.tokenizer) {
    runtime.logger().warn("'" + path.string() +
                          "' has no tokenizer.ggml.model: only token ids can be used with it");
  } else if (model.tokenizer->vocab_size() > model.config.vocab_size) {
    fail(KILN_ERR_FORMAT, "the tokenizer in '" + path.string() + "' has " +
                              std::to_string(model.tokenizer->vocab_size()) +
                              " tokens but token_embd.weight has " +
                              std::to_string(model.config.vocab_size) + " rows");
  }
  resolve_special_ids(model);

  report(progress, 0.02f, "weights");
  const ProgressFn weight_progress = sub_progress(progress, 0.02f, 0.48f);
  std::shared_ptr<const WeightSet> weights =
      runtime.backend().keeps_quantized_weights()
          ? gguf_weights_as_stored(file, model.config, weight_progress)
          : gguf_weights(*file, model.config, weight_progress);
  model.weights = weights;
  model.executor = runtime.backend().load_model(model.config, weights,
                                                sub_progress(progress, 0.5f, 0.5f), precision);
}

}  // namespace

std::shared_ptr<const Model> load_model(const Runtime& runtime, const fs::path& path,
                                        const ProgressFn& progress, kiln_precision precision) {
  const auto t0 = std::chrono::steady_clock::now();
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    fail(KILN_ERR_NOT_FOUND, "model path '" + path.string() + "' does not exist");
  }
  auto model = std::make_shared<Model>();
  if (fs::is_directory(path, ec)) {
    load_hf_directory(runtime, path, progress, precision, *model);
  } else if (has_gguf_magic(path)) {
    load_gguf(runtime, path, progress, precision, *model);
  } else {
    fail(KILN_ERR_UNSUPPORTED, "model path '" + path.string() +
                                   "' is a file but not a GGUF file; kiln loads GGUF files and "
                                   "Hugging Face model directories (config.json + *.safetensors "
                                   "+ tokenizer.json)");
  }
  model->n_parameters = model->executor->n_parameters();
  report(progress, 1.0f, "done");

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  runtime.logger().info("loaded " + model->config.architecture + " from '" + path.string() +
                        "': " + std::to_string(model->n_parameters) + " parameters in " +
                        std::to_string(secs) + " s");
  return model;
}

}  // namespace kiln
