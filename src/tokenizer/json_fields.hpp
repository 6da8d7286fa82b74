// Typed access to tokenizer.json fields. Every failure is a KILN_ERR_FORMAT naming the JSON path
// (e.g. "model.merges[12]"), what was expected and what was found.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace kiln::tok {

using Json = nlohmann::json;

[[noreturn]] void json_format_error(const std::string& path, const std::string& expected,
                                    const Json& got);

const Json& json_require(const Json& object, const char* key, const std::string& path);
std::string json_string(const Json& value, const std::string& path);
int64_t json_int(const Json& value, const std::string& path);
bool json_bool(const Json& value, const std::string& path);

// Optional fields: a missing key or JSON null gives the fallback.
std::string json_string_or(const Json& object, const char* key, const std::string& path,
                           const std::string& fallback);
bool json_bool_or(const Json& object, const char* key, const std::string& path, bool fallback);
int64_t json_int_or(const Json& object, const char* key, const std::string& path, int64_t fallback);
std::optional<std::string> json_optional_string(const Json& object, const char* key,
                                                const std::string& path);

// The "type" of a component object such as {"type": "NFC"}.
std::string json_type(const Json& component, const std::string& path);

}  // namespace kiln::tok
