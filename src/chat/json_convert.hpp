// JSON <-> Value, and tojson exactly as HF renders it: Python's json.dumps(x, ensure_ascii=False,
// indent=indent) with insertion-ordered keys (transformers' chat_template_utils.tojson).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "chat/value.hpp"

namespace kiln::chat {

Value from_json(const nlohmann::ordered_json& j);
// Parses UTF-8 JSON text; `what` names the argument in the KILN_ERR_INVALID_ARGUMENT message.
Value parse_json_argument(const std::string& text, const char* what);
// json.dumps(v, ensure_ascii=False, indent=indent): separators ", " / ": " without indent, "," /
// ": " with it. Undefined serializes as null; callables are an error (KILN_ERR_INVALID_ARGUMENT).
std::string to_json(const Value& v, std::optional<int> indent);

}  // namespace kiln::chat
