#include "tokenizer/tokenizer_json_reader.hpp"

#include <simdjson.h>

#include <climits>
#include <new>

#include "core/error.hpp"

namespace kiln::tok {

namespace dom = simdjson::dom;

struct TokenizerJsonReader::Parser {
  dom::parser parser;
};

namespace {

// The same value as nlohmann::json::parse would build (non-negative integers are unsigned there).
Json to_json(dom::element e) {
  switch (e.type()) {
    case dom::element_type::OBJECT: {
      Json object = Json::object();
      const dom::object fields = e.get_object().value_unsafe();
      for (const dom::key_value_pair field : fields) {
        object[std::string(field.key)] = to_json(field.value);  // a repeated key keeps the last
      }
      return object;
    }
    case dom::element_type::ARRAY: {
      Json array = Json::array();
      const dom::array items = e.get_array().value_unsafe();
      for (const dom::element item : items) array.push_back(to_json(item));
      return array;
    }
    case dom::element_type::STRING:
      return std::string(e.get_string().value_unsafe());
    case dom::element_type::INT64: {
      const int64_t v = e.get_int64().value_unsafe();
      return v >= 0 ? Json(static_cast<uint64_t>(v)) : Json(v);
    }
    case dom::element_type::UINT64:
      return e.get_uint64().value_unsafe();
    case dom::element_type::DOUBLE:
      return e.get_double().value_unsafe();
    case dom::element_type::BOOL:
      return e.get_bool().value_unsafe();
    case dom::element_type::NULL_VALUE:
      return nullptr;
  }
  return nullptr;
}

bool read_vocab(dom::element vocab, BpeTables& tables) {
  dom::object object;
  if (vocab.get_object().get(object)) return false;
  tables.vocab.reserve(object.size());
  for (const dom::key_value_pair field : object) {
    int64_t id = -1;
    if (field.value.get_int64().get(id) || id < 0 || id > INT32_MAX) return false;
    tables.vocab.emplace_back(field.key, static_cast<int32_t>(id));
    tables.vocab_bytes += field.key.size();
  }
  return true;
}

bool read_merges(dom::element merges, BpeTables& tables) {
  dom::array array;
  if (merges.get_array().get(array)) return false;
  tables.merges.reserve(array.size());
  for (const dom::element entry : array) {
    std::string_view text;
    if (!entry.get_string().get(text)) {  // "left right"
      const size_t space = text.find(' ');
      if (space == std::string_view::npos || text.find(' ', space + 1) != std::string_view::npos) {
        return false;
      }
      tables.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
      continue;
    }
    dom::array pair;
    std::string_view left, right;
    if (entry.get_array().get(pair) || pair.size() != 2 || pair.at(0).get_string().get(left) ||
        pair.at(1).get_string().get(right)) {
      return false;
    }
    tables.merges.emplace_back(left, right);
  }
  return true;
}

}  // namespace

static_assert(TokenizerJsonReader::kPadding >= simdjson::SIMDJSON_PADDING);

TokenizerJsonReader::TokenizerJsonReader(std::string_view text, const std::string& what,
                                         bool padded, LoadTimer* timer)
    : parser_(std::make_unique<Parser>()) {
  simdjson::padded_string copy;
  if (!padded) {
    copy = simdjson::padded_string(text);
    // simdjson reports a failed allocation as a value, not an exception: it must not read as
    // "not valid JSON".
    if (copy.size() != text.size()) throw std::bad_alloc();
  }
  dom::element root;
  const simdjson::error_code parsed =
      parser_->parser
          .parse(padded ? text.data() : copy.data(), text.size(), /*realloc_if_needed=*/false)
          .get(root);
  if (parsed == simdjson::MEMALLOC) throw std::bad_alloc();
  mark_stage(timer, "simdjson parse");
  if (parsed) {
    // Error path only: nlohmann says where the text stops being JSON.
    try {
      const Json parsed = Json::parse(text);
      (void)parsed;
    } catch (const Json::parse_error& e) {
      fail(KILN_ERR_FORMAT, what + " is not valid JSON: " + e.what());
    }
    fail(KILN_ERR_FORMAT, what + " is not valid JSON");
  }
  dom::object object;
  if (root.get_object().get(object)) {
    fail(KILN_ERR_FORMAT, what + " is not a JSON object (got " + to_json(root).type_name() + ")");
  }
  document_ = Json::object();
  bool model_seen = false;
  for (const dom::key_value_pair field : object) {
    dom::object model;
    if (field.key != "model" || field.value.get_object().get(model)) {
      document_[std::string(field.key)] = to_json(field.value);
      continue;
    }
    dom::element vocab, merges;
    BpeTables tables;
    mark_stage(timer, model_seen ? "document" : "document before model");
    model_seen = true;
    const bool fast = !model["vocab"].get(vocab) && !model["merges"].get(merges) &&
                      read_vocab(vocab, tables) && read_merges(merges, tables);
    mark_stage(timer, "vocab + merges lists");
    Json settings = Json::object();
    for (const dom::key_value_pair member : model) {
      if (fast && (member.key == "vocab" || member.key == "merges")) continue;
      settings[std::string(member.key)] = to_json(member.value);
    }
    document_["model"] = std::move(settings);
    if (fast) {
      tables_ = std::move(tables);
    } else {
      tables_.reset();
    }
  }
  mark_stage(timer, "document");
}

TokenizerJsonReader::~TokenizerJsonReader() = default;

}  // namespace kiln::tok
