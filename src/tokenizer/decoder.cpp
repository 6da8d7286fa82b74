#include "tokenizer/decoder.hpp"

#include <optional>

#include "core/error.hpp"
#include "tokenizer/byte_level_table.hpp"
#include "tokenizer/pattern.hpp"
#include "tokenizer/utf8.hpp"

namespace kiln::tok {

namespace {

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += p;
  return out;
}

// All tokens' bytes through the inverse byte table, then one lossy UTF-8 conversion of the whole
// (HF decoders/byte_level.rs). A token with characters outside the table keeps its own bytes.
class ByteLevelDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string bytes;
    for (auto& token : tokens) bytes += decode_mid_token(std::move(token));
    return {utf8_lossy(bytes)};
  }
  std::string decode_mid_token(std::string token) const override {
    auto bytes = ByteLevelTable::instance().decode(token);
    return bytes ? std::move(*bytes) : std::move(token);
  }
};

// "<0xAB>" → the byte value, or nullopt for any other token.
std::optional<char> byte_fallback_value(const std::string& token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token[5] != '>') return std::nullopt;
  const auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(token[3]), lo = hex(token[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<char>(hi * 16 + lo);
}

// Runs of "<0xAB>" tokens become their bytes when the run is valid UTF-8, else one U+FFFD per
// byte (HF decoders/byte_fallback.rs).
class ByteFallbackDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string run;
    const auto flush_run = [&] {
      if (run.empty()) return;
      if (!find_invalid_utf8(run)) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run.size(); ++i) out.emplace_back(kReplacementChar);
      }
      run.clear();
    };
    for (auto& token : tokens) {
      if (const auto byte = byte_fallback_value(token)) {
        run.push_back(*byte);
      } else {
        flush_run();
        out.push_back(std::move(token));
      }
    }
    flush_run();
    return out;
  }
  std::string decode_mid_token(std::string token) const override {
    const auto byte = byte_fallback_value(token);
    return byte ? std::string(1, *byte) : std::move(token);
  }
};

class FuseDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    return {join(tokens)};
  }
  std::string decode_mid_token(std::string token) const override { return token; }
};

// Removes up to `start` leading and `stop` trailing `content` characters from each token.
class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (auto& token : tokens) token = strip(token);
    return tokens;
  }
  // In real pipelines Strip follows Fuse, so it acts on the ends of the whole output only.
  std::string decode_mid_token(std::string token) const override { return token; }

 private:
  std::string strip(const std::string& token) const {
    std::vector<Span> chars;
    std::vector<char32_t> cps;
    for_each_code_point(token, [&](char32_t cp, size_t pos, size_t len) {
      chars.push_back({pos, pos + len});
      cps.push_back(cp);
    });
    size_t first = 0;
    while (first < start_ && first < cps.size() && cps[first] == content_) ++first;
    size_t last = cps.size();
    for (size_t i = 0; i < stop_ && last > first && cps[last - 1] == content_; ++i) --last;
    if (first >= last) return {};
    return token.substr(chars[first].begin, chars[last - 1].end - chars[first].begin);
  }
  char32_t content_;
  size_t start_, stop_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (auto& token : tokens) token = pattern_.replace_all(token, content_);
    return tokens;
  }
  std::string decode_mid_token(std::string token) const override {
    return pattern_.replace_all(token, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Replacement character → space; in the first token of the sequence the replacement characters
// are dropped instead, unless the prepend scheme is "never" (HF decoders: Metaspace).
class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(Pattern::literal(std::move(replacement))), strip_first_(strip_first) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = replacement_.replace_all(tokens[i], (i == 0 && strip_first_) ? "" : " ");
    }
    return tokens;
  }
  std::string decode_mid_token(std::string token) const override {
    return replacement_.replace_all(token, " ");
  }

 private:
  Pattern replacement_;
  bool strip_first_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (const auto& step : steps_) tokens = step->decode_chain(std::move(tokens));
    return tokens;
  }
  std::string decode_mid_token(std::string token) const override {
    for (const auto& step : steps_) token = step->decode_mid_token(std::move(token));
    return token;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

char32_t single_char(const std::string& text, const std::string& path) {
  size_t len = 0;
  const auto cp = decode_utf8_at(text, 0, len);
  if (!cp || len != text.size()) {
    fail(KILN_ERR_FORMAT,
         "tokenizer JSON field " + path + ": expected one character, got \"" + text + "\"");
  }
  return *cp;
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const Json& spec, const std::string& path) {
  if (spec.is_null()) return nullptr;
  const std::string type = json_type(spec, path);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const std::string content = json_string(json_require(spec, "content", path), path + ".content");
    const int64_t start = json_int_or(spec, "start", path, 0);
    const int64_t stop = json_int_or(spec, "stop", path, 0);
    if (start < 0 || stop < 0) {
      fail(KILN_ERR_FORMAT, "tokenizer " + path + ": Strip start/stop must be non-negative");
    }
    return std::make_unique<StripDecoder>(single_char(content, path + ".content"),
                                          static_cast<size_t>(start), static_cast<size_t>(stop));
  }
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(
        Pattern::from_json(json_require(spec, "pattern", path), path + ".pattern"),
        json_string(json_require(spec, "content", path), path + ".content"));
  }
  if (type == "Metaspace") {
    bool strip_first = json_bool_or(spec, "add_prefix_space", path, true);
    if (const auto scheme = json_optional_string(spec, "prepend_scheme", path)) {
      strip_first = *scheme != "never";
    }
    return std::make_unique<MetaspaceDecoder>(json_string_or(spec, "replacement", path, "\u2581"),
                                              strip_first);
  }
  if (type == "Sequence") {
    const Json& list = json_require(spec, "decoders", path);
    if (!list.is_array()) json_format_error(path + ".decoders", "an array", list);
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = make_decoder(list[i], path + ".decoders[" + std::to_string(i) + "]");
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  fail(KILN_ERR_UNSUPPORTED, "tokenizer decoder type \"" + type + "\" at " + path +
                                 " is not supported (supported: ByteLevel, Metaspace, "
                                 "ByteFallback, Fuse, Strip, Replace, Sequence)");
}

}  // namespace kiln::tok
