#include "tokenizer/pre_tokenizer.hpp"

#include <functional>

#include "core/error.hpp"
#include "tokenizer/byte_level_table.hpp"
#include "tokenizer/char_classes.hpp"
#include "tokenizer/pattern.hpp"
#include "tokenizer/split_behavior.hpp"
#include "tokenizer/utf8.hpp"

namespace kiln::tok {

namespace {

// GPT-2's pre-tokenization regex, used by ByteLevel with use_regex=true (HF byte_level.rs).
constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Replaces every piece by the spans `cut` returns for it.
void split_each(std::vector<TextPiece>& pieces,
                const std::function<std::vector<Span>(const std::string&)>& cut) {
  std::vector<TextPiece> out;
  out.reserve(pieces.size());
  for (TextPiece& piece : pieces) {
    for (const Span& span : cut(piece.text)) {
      out.push_back({piece.text.substr(span.begin, span.end - span.begin),
                     piece.at_input_start && span.begin == 0});
    }
  }
  pieces = std::move(out);
}

// Spans of the characters for which `pred` holds, one span per character.
std::vector<Span> char_matches(const std::string& text, const std::function<bool(char32_t)>& pred) {
  std::vector<Span> spans;
  for_each_code_point(text, [&](char32_t cp, size_t pos, size_t len) {
    if (pred(cp)) spans.push_back({pos, pos + len});
  });
  return spans;
}

// The Split regexes whose behaviour at a line start (is_line_start) has been reasoned out:
// Llama 3 / cl100k (also kiln's training default), Qwen2 and o200k (GPT-OSS). In each, no
// alternative can hold a '\n' followed by a letter ([^\r\n\p{L}\p{N}]? excludes '\n' as a
// prefix of letters; [\r\n]* and \s*[\r\n]+ stop before the letter), the '\n' is matched by
// an alternative that ends exactly at the line start whether or not text follows ([\r\n]* or
// \s*[\r\n]+ come before the lookahead alternatives and succeed on a lone '\n'), and nothing
// looks behind, so the scan from the line start is the same with or without the text before it.
constexpr const char* kLineSplitSafeRegexes[] = {
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  bool splits_at_line_starts() const override {
    if (behavior_ != SplitBehavior::kIsolated || invert_) return false;
    for (const char* regex : kLineSplitSafeRegexes) {
      if (pattern_.is_regex(regex)) return true;
    }
    return false;
  }
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_each(pieces, [&](const std::string& text) {
      return split_spans(text.size(), pattern_.find_all(text), behavior_, invert_);
    });
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// Splits by a character predicate (Digits, Punctuation, WhitespaceSplit).
class CharClassPreTokenizer final : public PreTokenizer {
 public:
  CharClassPreTokenizer(std::function<bool(char32_t)> pred, SplitBehavior behavior)
      : pred_(std::move(pred)), behavior_(behavior) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_each(pieces, [&](const std::string& text) {
      return split_spans(text.size(), char_matches(text, pred_), behavior_, false);
    });
  }

 private:
  std::function<bool(char32_t)> pred_;
  SplitBehavior behavior_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space),
        regex_(use_regex ? std::make_unique<Pattern>(Pattern::regex(kGpt2Regex, "ByteLevel"))
                         : nullptr) {}
  // The byte mapping is per byte. A prefix space would be added to the second half too. GPT-2's
  // regex matches the lone '\n' of a line start with \s+ alone whether or not text follows
  // (\s+(?!\S) fails before the letter but matches the same "\n" at the end of a cut text),
  // no alternative holds '\n' and a letter together, and nothing looks behind.
  bool splits_at_line_starts() const override { return !add_prefix_space_; }
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    // HF applies the prefix space to every piece that reaches this stage.
    if (add_prefix_space_) {
      for (TextPiece& piece : pieces) {
        if (piece.text.empty() || piece.text[0] != ' ') piece.text.insert(0, 1, ' ');
      }
    }
    if (regex_) {
      split_each(pieces, [&](const std::string& text) {
        return split_spans(text.size(), regex_->find_all(text), SplitBehavior::kIsolated, false);
      });
    }
    const ByteLevelTable& table = ByteLevelTable::instance();
    for (TextPiece& piece : pieces) piece.text = table.encode(piece.text);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Pattern> regex_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    const Pattern space = Pattern::literal(" ");
    for (TextPiece& piece : pieces) {
      piece.text = space.replace_all(piece.text, replacement_);
      const bool starts_with_replacement = piece.text.starts_with(replacement_);
      const bool prepend = scheme_ == PrependScheme::kAlways ||
                           (scheme_ == PrependScheme::kFirst && piece.at_input_start);
      if (prepend && !starts_with_replacement) piece.text.insert(0, replacement_);
    }
    if (split_) {
      const Pattern marker = Pattern::literal(replacement_);
      split_each(pieces, [&](const std::string& text) {
        return split_spans(text.size(), marker.find_all(text), SplitBehavior::kMergedWithNext,
                           false);
      });
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces);
  }
  // A boundary every step keeps: the first step cuts there and the later ones see only pieces.
  bool splits_at_line_starts() const override {
    for (const auto& step : steps_) {
      if (!step->splits_at_line_starts()) return false;
    }
    return !steps_.empty();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

PrependScheme parse_prepend_scheme(const Json& spec, const std::string& path) {
  if (spec.contains("prepend_scheme") && !spec["prepend_scheme"].is_null()) {
    const std::string scheme = json_string(spec["prepend_scheme"], path + ".prepend_scheme");
    if (scheme == "always") return PrependScheme::kAlways;
    if (scheme == "first") return PrependScheme::kFirst;
    if (scheme == "never") return PrependScheme::kNever;
    fail(KILN_ERR_FORMAT, "tokenizer JSON field " + path +
                              ".prepend_scheme: expected always, "
                              "first or never, got \"" +
                              scheme + "\"");
  }
  // Files written before prepend_scheme existed use add_prefix_space.
  return json_bool_or(spec, "add_prefix_space", path, true) ? PrependScheme::kAlways
                                                            : PrependScheme::kNever;
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& spec, const std::string& path) {
  if (spec.is_null()) return nullptr;
  const std::string type = json_type(spec, path);
  if (type == "Split") {
    return std::make_unique<SplitPreTokenizer>(
        Pattern::from_json(json_require(spec, "pattern", path), path + ".pattern"),
        parse_split_behavior(json_string(json_require(spec, "behavior", path), path + ".behavior"),
                             path + ".behavior"),
        json_bool_or(spec, "invert", path, false));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(
        json_bool_or(spec, "add_prefix_space", path, true),
        json_bool_or(spec, "use_regex", path, true));
  }
  if (type == "Digits") {
    const bool individual = json_bool_or(spec, "individual_digits", path, false);
    return std::make_unique<CharClassPreTokenizer>(
        is_numeric, individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous);
  }
  if (type == "Punctuation") {
    const std::string behavior = json_string_or(spec, "behavior", path, "Isolated");
    return std::make_unique<CharClassPreTokenizer>(
        is_punctuation, parse_split_behavior(behavior, path + ".behavior"));
  }
  if (type == "WhitespaceSplit") {
    return std::make_unique<CharClassPreTokenizer>(is_whitespace, SplitBehavior::kRemoved);
  }
  if (type == "Whitespace") {
    // HF: split on \w+|[^\w\s]+ keeping only the matches.
    return std::make_unique<SplitPreTokenizer>(Pattern::regex(R"(\w+|[^\w\s]+)", path),
                                               SplitBehavior::kRemoved, true);
  }
  if (type == "BertPreTokenizer") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    steps.push_back(
        std::make_unique<CharClassPreTokenizer>(is_whitespace, SplitBehavior::kRemoved));
    steps.push_back(
        std::make_unique<CharClassPreTokenizer>(is_punctuation, SplitBehavior::kIsolated));
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "Metaspace") {
    return std::make_unique<MetaspacePreTokenizer>(
        json_string_or(spec, "replacement", path, "\u2581"), parse_prepend_scheme(spec, path),
        json_bool_or(spec, "split", path, true));
  }
  if (type == "Sequence") {
    const Json& list = json_require(spec, "pretokenizers", path);
    if (!list.is_array()) json_format_error(path + ".pretokenizers", "an array", list);
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = make_pre_tokenizer(list[i], path + ".pretokenizers[" + std::to_string(i) + "]");
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  fail(KILN_ERR_UNSUPPORTED,
       "tokenizer pre_tokenizer type \"" + type + "\" at " + path +
           " is not supported (supported: Split, ByteLevel, Digits, Metaspace, Punctuation, "
           "Whitespace, WhitespaceSplit, BertPreTokenizer, Sequence)");
}

}  // namespace kiln::tok
