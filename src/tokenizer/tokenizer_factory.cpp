// Tokenizer::from_files / from_json: read and parse the JSON files, then build an HfTokenizer.
#include <memory>

#include "core/error.hpp"
#include "tokenizer/hf_tokenizer.hpp"
#include "tokenizer/load_timer.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/tokenizer_json_reader.hpp"
#include "util/mapped_file.hpp"

namespace kiln {

namespace {

void check_is_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    fail(KILN_ERR_NOT_FOUND, "tokenizer file " + path.string() + " does not exist");
  }
  if (std::filesystem::is_directory(path, ec)) {
    fail(KILN_ERR_IO, "tokenizer file " + path.string() + " is a directory");
  }
}

std::unique_ptr<Tokenizer> build(std::string_view tokenizer_json, bool padded,
                                 std::string_view tokenizer_config_json, tok::LoadTimer* timer) {
  std::unique_ptr<Tokenizer> built;
  {
    const tok::TokenizerJsonReader tokenizer(tokenizer_json, "tokenizer.json", padded, timer);
    tok::Json config;
    if (!tokenizer_config_json.empty()) {
      try {
        config = tok::Json::parse(tokenizer_config_json);
      } catch (const tok::Json::parse_error& e) {
        fail(KILN_ERR_FORMAT, std::string("tokenizer_config.json is not valid JSON: ") + e.what());
      }
      if (!config.is_object()) {
        fail(KILN_ERR_FORMAT, std::string("tokenizer_config.json is not a JSON object (got ") +
                                  config.type_name() + ")");
      }
    }
    tok::mark_stage(timer, "config");
    built =
        std::make_unique<tok::HfTokenizer>(tokenizer.document(), config, tokenizer.tables(), timer);
  }
  tok::mark_stage(timer, "free parse buffers");
  return built;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_json(std::string_view tokenizer_json,
                                                std::string_view tokenizer_config_json,
                                                tok::LoadTimer* timer) {
  return build(tokenizer_json, /*padded=*/false, tokenizer_config_json, timer);
}

std::unique_ptr<Tokenizer> Tokenizer::from_files(const std::filesystem::path& tokenizer_json,
                                                 const std::filesystem::path& tokenizer_config_json,
                                                 tok::LoadTimer* timer) {
  // Mapped, not read: simdjson parses the page cache's copy in place (see open_padded).
  check_is_file(tokenizer_json);
  const auto tokenizer_file =
      MappedFile::open_padded(tokenizer_json, tok::TokenizerJsonReader::kPadding);
  const std::string_view tokenizer_text(reinterpret_cast<const char*>(tokenizer_file->data()),
                                        tokenizer_file->size());
  std::error_code ec;
  std::string config_text;
  if (std::filesystem::exists(tokenizer_config_json, ec)) {
    check_is_file(tokenizer_config_json);
    config_text = read_text_file(tokenizer_config_json);
  }
  tok::mark_stage(timer, "read files");
  try {
    return build(tokenizer_text, /*padded=*/true, config_text, timer);
  } catch (const Error& e) {
    // Say which files the message is about.
    throw Error(e.status(), std::string(e.what()) + " (loading " + tokenizer_json.string() +
                                (config_text.empty() ? std::string()
                                                     : " with " + tokenizer_config_json.string()) +
                                ")");
  }
}

}  // namespace kiln
