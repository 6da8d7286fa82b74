#include "tokenizer/post_processor.hpp"

#include "core/error.hpp"

namespace kiln::tok {

namespace {

int32_t id_in_range(const Json& value, const std::string& path) {
  const int64_t id = json_int(value, path);
  if (id < 0 || id > INT32_MAX) json_format_error(path, "a non-negative 32-bit id", value);
  return static_cast<int32_t>(id);
}

// TemplateProcessing "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}, ...]
// where each special token's ids come from "special_tokens": {"<s>": {"ids": [1], ...}}.
SpecialTokenFrame read_template(const Json& spec, const std::string& path) {
  const Json& single = json_require(spec, "single", path);
  if (!single.is_array())
    json_format_error(path + ".single", "an array of template pieces", single);
  const Json* specials = spec.contains("special_tokens") ? &spec["special_tokens"] : nullptr;
  SpecialTokenFrame frame;
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string item_path = path + ".single[" + std::to_string(i) + "]";
    const Json& item = single[i];
    if (item.is_object() && item.contains("Sequence")) {
      const std::string seq =
          json_string(json_require(item["Sequence"], "id", item_path + ".Sequence"),
                      item_path + ".Sequence.id");
      if (seq != "A") {
        fail(KILN_ERR_FORMAT, "tokenizer " + item_path +
                                  ": the single-sequence template refers "
                                  "to sequence \"" +
                                  seq + "\", expected \"A\"");
      }
      seen_sequence = true;
      continue;
    }
    if (!item.is_object() || !item.contains("SpecialToken")) {
      json_format_error(item_path, "{\"SpecialToken\": ...} or {\"Sequence\": ...}", item);
    }
    const std::string name =
        json_string(json_require(item["SpecialToken"], "id", item_path + ".SpecialToken"),
                    item_path + ".SpecialToken.id");
    if (!specials || !specials->contains(name)) {
      fail(KILN_ERR_FORMAT, "tokenizer " + path + ".special_tokens has no entry \"" + name +
                                "\" used by " + item_path);
    }
    const std::string ids_path = path + ".special_tokens[\"" + name + "\"].ids";
    const Json& ids = json_require((*specials)[name], "ids", path + ".special_tokens");
    if (!ids.is_array()) json_format_error(ids_path, "an array of ids", ids);
    auto& target = seen_sequence ? frame.suffix : frame.prefix;
    for (size_t k = 0; k < ids.size(); ++k) {
      target.push_back(id_in_range(ids[k], ids_path + "[" + std::to_string(k) + "]"));
    }
  }
  return frame;
}

// RobertaProcessing / BertProcessing: "cls": ["<s>", 0], "sep": ["</s>", 2] → cls A sep.
SpecialTokenFrame read_cls_sep(const Json& spec, const std::string& path) {
  const auto read = [&](const char* key) {
    const Json& pair = json_require(spec, key, path);
    const std::string where = path + "." + key;
    if (!pair.is_array() || pair.size() != 2) json_format_error(where, "[token, id]", pair);
    return id_in_range(pair[1], where + "[1]");
  };
  return {{read("cls")}, {read("sep")}};
}

}  // namespace

std::optional<SpecialTokenFrame> read_post_processor(const Json& spec, const std::string& path) {
  if (spec.is_null()) return std::nullopt;
  const std::string type = json_type(spec, path);
  if (type == "ByteLevel") return std::nullopt;  // adjusts offsets only
  if (type == "TemplateProcessing") return read_template(spec, path);
  if (type == "RobertaProcessing" || type == "BertProcessing") return read_cls_sep(spec, path);
  if (type == "Sequence") {
    const Json& list = json_require(spec, "processors", path);
    if (!list.is_array()) json_format_error(path + ".processors", "an array", list);
    std::optional<SpecialTokenFrame> combined;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = read_post_processor(list[i], path + ".processors[" + std::to_string(i) + "]");
      if (!step) continue;
      if (!combined) {
        combined = std::move(step);
        continue;
      }
      // Each processor wraps the output of the previous one.
      step->prefix.insert(step->prefix.end(), combined->prefix.begin(), combined->prefix.end());
      combined->prefix = std::move(step->prefix);
      combined->suffix.insert(combined->suffix.end(), step->suffix.begin(), step->suffix.end());
    }
    return combined;
  }
  fail(KILN_ERR_UNSUPPORTED, "tokenizer post_processor type \"" + type + "\" at " + path +
                                 " is not supported (supported: TemplateProcessing, "
                                 "RobertaProcessing, BertProcessing, ByteLevel, Sequence)");
}

}  // namespace kiln::tok
