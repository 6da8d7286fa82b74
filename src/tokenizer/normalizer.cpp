#include "tokenizer/normalizer.hpp"

#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "core/error.hpp"
#include "tokenizer/char_classes.hpp"
#include "tokenizer/pattern.hpp"
#include "tokenizer/utf8.hpp"

namespace kiln::tok {

namespace {

bool is_ascii(std::string_view text) {
  unsigned char any_high = 0;
  for (const char c : text) any_high |= static_cast<unsigned char>(c);
  return any_high < 0x80;
}

// Unicode normalization forms (UAX #15) through utf8proc. The explicit length (no
// UTF8PROC_NULLTERM) keeps embedded U+0000 characters.
class UnicodeFormNormalizer final : public Normalizer {
 public:
  UnicodeFormNormalizer(std::string name, utf8proc_option_t options)
      : name_(std::move(name)), options_(options) {}
  std::string normalize(std::string_view text) const override {
    // ASCII is invariant under all four forms (no ASCII character has a canonical or
    // compatibility decomposition, or combines; UAX #15 section 9 "Detecting Normalization
    // Forms"), and code or English prose is mostly ASCII: skip utf8proc's full decompose/compose.
    if (is_ascii(text)) return std::string(text);
    utf8proc_uint8_t* raw = nullptr;
    const utf8proc_ssize_t length =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                     static_cast<utf8proc_ssize_t>(text.size()), &raw, options_);
    std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(raw, &std::free);
    if (length < 0) {
      fail(KILN_ERR_INVALID_ARGUMENT, "normalizer " + name_ + " failed: " +
                                          utf8proc_errmsg(static_cast<utf8proc_ssize_t>(length)));
    }
    return std::string(reinterpret_cast<const char*>(raw), static_cast<size_t>(length));
  }
  // An ASCII letter has canonical combining class 0, no decomposition, and is the second
  // character of no composition pair (UAX #15), so neither reordering nor composition crosses
  // the position before it.
  bool splits_before_ascii_letter() const override { return true; }

 private:
  std::string name_;
  utf8proc_option_t options_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  std::string normalize(std::string_view text) const override {
    std::string out;
    out.reserve(text.size());
    for_each_code_point(text, [&](char32_t cp, size_t, size_t) {
      append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
    });
    return out;
  }
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string normalize(std::string_view text) const override {
    size_t begin = text.size(), end = 0;
    bool seen_content = false;
    for_each_code_point(text, [&](char32_t cp, size_t pos, size_t len) {
      if (is_whitespace(cp)) return;
      if (!seen_content) begin = pos;
      seen_content = true;
      end = pos + len;
    });
    if (!seen_content) return (left_ || right_) ? std::string() : std::string(text);
    if (!left_) begin = 0;
    if (!right_) end = text.size();
    return std::string(text.substr(begin, end - begin));
  }

 private:
  bool left_, right_;
};

// HF Prepend only touches non-empty text.
class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string normalize(std::string_view text) const override {
    if (text.empty()) return {};
    return prefix_ + std::string(text);
  }
  std::string normalize_continuation(std::string_view text) const override {
    return std::string(text);
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string normalize(std::string_view text) const override {
    return pattern_.replace_all(text, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  std::string normalize(std::string_view text) const override {
    std::string current(text);
    for (const auto& step : steps_) current = step->normalize(current);
    return current;
  }
  std::string normalize_continuation(std::string_view text) const override {
    std::string current(text);
    for (const auto& step : steps_) current = step->normalize_continuation(current);
    return current;
  }
  // Each step keeps the text after the split starting with the same ASCII letter.
  bool splits_before_ascii_letter() const override {
    for (const auto& step : steps_) {
      if (!step->splits_before_ascii_letter()) return false;
    }
    return true;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const Json& spec, const std::string& path) {
  if (spec.is_null()) return nullptr;
  const std::string type = json_type(spec, path);
  const auto stable = static_cast<utf8proc_option_t>(UTF8PROC_STABLE);
  if (type == "NFC") {
    return std::make_unique<UnicodeFormNormalizer>(
        type, static_cast<utf8proc_option_t>(stable | UTF8PROC_COMPOSE));
  }
  if (type == "NFD") {
    return std::make_unique<UnicodeFormNormalizer>(
        type, static_cast<utf8proc_option_t>(stable | UTF8PROC_DECOMPOSE));
  }
  if (type == "NFKC") {
    return std::make_unique<UnicodeFormNormalizer>(
        type, static_cast<utf8proc_option_t>(stable | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeFormNormalizer>(
        type, static_cast<utf8proc_option_t>(stable | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(json_bool_or(spec, "strip_left", path, true),
                                             json_bool_or(spec, "strip_right", path, true));
  }
  if (type == "Prepend") {
    return std::make_unique<PrependNormalizer>(
        json_string(json_require(spec, "prepend", path), path + ".prepend"));
  }
  if (type == "Replace") {
    return std::make_unique<ReplaceNormalizer>(
        Pattern::from_json(json_require(spec, "pattern", path), path + ".pattern"),
        json_string(json_require(spec, "content", path), path + ".content"));
  }
  if (type == "Sequence") {
    const Json& list = json_require(spec, "normalizers", path);
    if (!list.is_array()) json_format_error(path + ".normalizers", "an array", list);
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = make_normalizer(list[i], path + ".normalizers[" + std::to_string(i) + "]");
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  fail(KILN_ERR_UNSUPPORTED, "tokenizer normalizer type \"" + type + "\" at " + path +
                                 " is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, "
                                 "Strip, Prepend, Replace, Sequence)");
}

}  // namespace kiln::tok
