#include "engine/model_factory.hpp"

#include <system_error>

#include "core/error.hpp"
#include "engine/runtime.hpp"
#include "model/config.hpp"
#include "train/model_init.hpp"
#include "util/mapped_file.hpp"

namespace kiln {

namespace fs = std::filesystem;

namespace {

void check_tokenizer_fits(const Model& m, const std::string& origin) {
  if (m.tokenizer && m.tokenizer->vocab_size() > m.config.vocab_size) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         origin + ": the tokenizer has " + std::to_string(m.tokenizer->vocab_size()) +
             " tokens but the config's vocab_size is " + std::to_string(m.config.vocab_size));
  }
}

ModelTexts read_tokenizer_texts(const fs::path& path) {
  ModelTexts t;
  if (path.empty()) return t;
  std::error_code ec;
  const bool is_dir = fs::is_directory(path, ec);
  const fs::path json = is_dir ? path / "tokenizer.json" : path;
  if (!fs::exists(json, ec)) {
    fail(KILN_ERR_NOT_FOUND, "tokenizer path '" + path.string() + "' has no tokenizer.json");
  }
  t.tokenizer_json = read_text_file(json);
  const fs::path config = json.parent_path() / "tokenizer_config.json";
  if (fs::exists(config, ec)) t.tokenizer_config_json = read_text_file(config);
  return t;
}

}  // namespace

std::shared_ptr<const Model> model_from_tensors(const Runtime& runtime, const ModelTexts& texts,
                                                std::vector<WeightSet::OwnedF32Tensor> tensors,
                                                const std::string& origin) {
  auto model = std::make_shared<Model>();
  model->config = parse_model_config(texts.config_json, "", origin);
  model->config_json = texts.config_json;
  model->tokenizer_json = texts.tokenizer_json;
  model->tokenizer_config_json = texts.tokenizer_config_json;
  if (!texts.tokenizer_json.empty()) {
    model->tokenizer = Tokenizer::from_json(texts.tokenizer_json, texts.tokenizer_config_json);
  }
  check_tokenizer_fits(*model, origin);
  resolve_special_ids(*model);
  std::shared_ptr<const WeightSet> weights = WeightSet::from_owned(std::move(tensors), origin);
  model->weights = weights;
  model->executor = runtime.backend().load_model(model->config, weights, {});
  model->n_parameters = model->executor->n_parameters();
  return model;
}

std::shared_ptr<const Model> create_model(const Runtime& runtime, const std::string& config_json,
                                          uint64_t seed, const fs::path& tokenizer_path) {
  ModelTexts texts = read_tokenizer_texts(tokenizer_path);
  texts.config_json = config_json;
  const ModelConfig config =
      parse_model_config(config_json, "", "the config given to kiln_model_create");
  auto tensors = initial_hf_tensors(config, seed);
  auto model =
      model_from_tensors(runtime, texts, std::move(tensors), "a fresh " + config.architecture);
  runtime.logger().info("created a fresh " + config.architecture + " with " +
                        std::to_string(model->n_parameters) + " parameters (seed " +
                        std::to_string(seed) + ")");
  return model;
}

}  // namespace kiln
