#include "model/config_fields.hpp"

#include <cmath>
#include <limits>

#include "core/error.hpp"

namespace kiln {

using nlohmann::json;

ConfigFields::ConfigFields(const json& object, std::string origin, std::string prefix)
    : object_(object), origin_(std::move(origin)), prefix_(std::move(prefix)) {}

const json* ConfigFields::find(const char* key) const {
  auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

ConfigFields ConfigFields::child(const char* key) const {
  const json* v = find(key);
  if (v == nullptr || !v->is_object()) bad(key, "must be an object");
  return ConfigFields(*v, origin_, prefix_ + key + ".");
}

void ConfigFields::bad(const std::string& field, const std::string& what) const {
  fail(KILN_ERR_FORMAT, origin_ + ": " + prefix_ + field + " " + what);
}

void ConfigFields::unsupported(const std::string& message) const {
  fail(KILN_ERR_UNSUPPORTED, origin_ + ": " + message);
}

int64_t ConfigFields::integer_value(const json& value, const std::string& field) const {
  if (!value.is_number_integer()) bad(field, "is " + value.dump() + ", expected an integer");
  if (value.is_number_unsigned() &&
      value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    bad(field, "is " + value.dump() + ", too large");
  }
  return value.get<int64_t>();
}

int32_t ConfigFields::positive_int(const char* key) const {
  const json* v = find(key);
  if (v == nullptr) bad(key, "is missing");
  const int64_t value = integer_value(*v, key);
  if (value <= 0 || value > std::numeric_limits<int32_t>::max()) {
    bad(key, "is " + std::to_string(value) + ", expected a positive 32-bit integer");
  }
  return static_cast<int32_t>(value);
}

int32_t ConfigFields::optional_positive_int(const char* key, int32_t fallback) const {
  return find(key) == nullptr ? fallback : positive_int(key);
}

double ConfigFields::number(const char* key) const {
  const json* v = find(key);
  if (v == nullptr) bad(key, "is missing");
  if (!v->is_number()) bad(key, "is " + v->dump() + ", expected a number");
  const double value = v->get<double>();
  if (!std::isfinite(value)) bad(key, "is not finite");
  return value;
}

double ConfigFields::optional_number(const char* key, double fallback) const {
  return find(key) == nullptr ? fallback : number(key);
}

bool ConfigFields::optional_bool(const char* key, bool fallback) const {
  const json* v = find(key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) bad(key, "is " + v->dump() + ", expected true or false");
  return v->get<bool>();
}

std::string ConfigFields::optional_string(const char* key, const std::string& fallback) const {
  const json* v = find(key);
  if (v == nullptr) return fallback;
  if (!v->is_string()) bad(key, "is " + v->dump() + ", expected a string");
  return v->get<std::string>();
}

}  // namespace kiln
