#include "tokenizer/json_fields.hpp"

#include "core/error.hpp"

namespace kiln::tok {

void json_format_error(const std::string& path, const std::string& expected, const Json& got) {
  std::string shown = got.is_discarded() ? std::string("nothing") : got.dump();
  if (shown.size() > 80) shown = shown.substr(0, 77) + "...";
  fail(KILN_ERR_FORMAT, "tokenizer JSON field " + path + ": expected " + expected + ", got " +
                            std::string(got.type_name()) + " " + shown);
}

const Json& json_require(const Json& object, const char* key, const std::string& path) {
  if (!object.is_object()) json_format_error(path, "an object", object);
  const auto it = object.find(key);
  if (it == object.end()) {
    fail(KILN_ERR_FORMAT, "tokenizer JSON field " + path + "." + key + " is missing");
  }
  return *it;
}

std::string json_string(const Json& value, const std::string& path) {
  if (!value.is_string()) json_format_error(path, "a string", value);
  return value.get<std::string>();
}

int64_t json_int(const Json& value, const std::string& path) {
  if (!value.is_number_integer()) json_format_error(path, "an integer", value);
  return value.get<int64_t>();
}

bool json_bool(const Json& value, const std::string& path) {
  if (!value.is_boolean()) json_format_error(path, "true or false", value);
  return value.get<bool>();
}

namespace {
const Json* find_present(const Json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}
}  // namespace

std::string json_string_or(const Json& object, const char* key, const std::string& path,
                           const std::string& fallback) {
  const Json* v = find_present(object, key);
  return v ? json_string(*v, path + "." + key) : fallback;
}

bool json_bool_or(const Json& object, const char* key, const std::string& path, bool fallback) {
  const Json* v = find_present(object, key);
  return v ? json_bool(*v, path + "." + key) : fallback;
}

int64_t json_int_or(const Json& object, const char* key, const std::string& path,
                    int64_t fallback) {
  const Json* v = find_present(object, key);
  return v ? json_int(*v, path + "." + key) : fallback;
}

std::optional<std::string> json_optional_string(const Json& object, const char* key,
                                                const std::string& path) {
  const Json* v = find_present(object, key);
  if (!v) return std::nullopt;
  return json_string(*v, path + "." + key);
}

std::string json_type(const Json& component, const std::string& path) {
  return json_string(json_require(component, "type", path), path + ".type");
}

}  // namespace kiln::tok
