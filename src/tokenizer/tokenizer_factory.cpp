// Tokenizer::from_files / from_json: read and parse the JSON files, then build an HfTokenizer.
#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "tokenizer/hf_tokenizer.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/tokenizer_json_reader.hpp"

namespace kiln {

namespace {

std::string read_whole_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    fail(KILN_ERR_NOT_FOUND, "tokenizer file " + path.string() + " does not exist");
  }
  if (std::filesystem::is_directory(path, ec)) {
    fail(KILN_ERR_IO, "tokenizer file " + path.string() + " is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(KILN_ERR_IO, "cannot open tokenizer file " + path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail(KILN_ERR_IO, "cannot read tokenizer file " + path.string());
  return std::move(buffer).str();
}

tok::Json parse_json(const std::string& text, const std::string& what) {
  try {
    tok::Json json = tok::Json::parse(text);
    if (!json.is_object()) {
      fail(KILN_ERR_FORMAT, what + " is not a JSON object (got " + json.type_name() + ")");
    }
    return json;
  } catch (const tok::Json::parse_error& e) {
    fail(KILN_ERR_FORMAT, what + " is not valid JSON: " + e.what());
  }
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_json(const std::string& tokenizer_json,
                                                const std::string& tokenizer_config_json) {
  const tok::TokenizerJsonReader tokenizer(tokenizer_json, "tokenizer.json");
  const tok::Json config = tokenizer_config_json.empty()
                               ? tok::Json()
                               : parse_json(tokenizer_config_json, "tokenizer_config.json");
  return std::make_unique<tok::HfTokenizer>(tokenizer.document(), config, tokenizer.tables());
}

std::unique_ptr<Tokenizer> Tokenizer::from_files(
    const std::filesystem::path& tokenizer_json,
    const std::filesystem::path& tokenizer_config_json) {
  const std::string tokenizer_text = read_whole_file(tokenizer_json);
  std::error_code ec;
  const std::string config_text = std::filesystem::exists(tokenizer_config_json, ec)
                                      ? read_whole_file(tokenizer_config_json)
                                      : std::string();
  try {
    return from_json(tokenizer_text, config_text);
  } catch (const Error& e) {
    // Say which files the message is about.
    throw Error(e.status(), std::string(e.what()) + " (loading " + tokenizer_json.string() +
                                (config_text.empty() ? std::string()
                                                     : " with " + tokenizer_config_json.string()) +
                                ")");
  }
}

}  // namespace kiln
