// ConfigFields: typed, validated access to the fields of one JSON object from an HF config file,
// with errors that name the file and the field (KILN_ERR_FORMAT).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace kiln {

class ConfigFields {
 public:
  // `origin` names the file in messages; `prefix` qualifies field names ("rope_scaling.").
  ConfigFields(const nlohmann::json& object, std::string origin, std::string prefix = "");

  // The field's value, or nullptr when it is absent or null (HF writes null for "use the default").
  const nlohmann::json* find(const char* key) const;
  // A nested object: throws when the field is not an object.
  ConfigFields child(const char* key) const;

  int32_t positive_int(const char* key) const;
  int32_t optional_positive_int(const char* key, int32_t fallback) const;
  double number(const char* key) const;
  double optional_number(const char* key, double fallback) const;
  bool optional_bool(const char* key, bool fallback) const;
  std::string optional_string(const char* key, const std::string& fallback) const;
  // An integer JSON value (`field` names it in the message).
  int64_t integer_value(const nlohmann::json& value, const std::string& field) const;

  [[noreturn]] void bad(const std::string& field, const std::string& what) const;
  [[noreturn]] void unsupported(const std::string& message) const;
  std::string qualified(const std::string& field) const { return prefix_ + field; }

 private:
  const nlohmann::json& object_;
  std::string origin_;
  std::string prefix_;
};

}  // namespace kiln
