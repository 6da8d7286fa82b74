#include "tokenizer/added_vocabulary.hpp"

#include <utf8proc.h>

#include <algorithm>

#include "core/error.hpp"
#include "tokenizer/char_classes.hpp"
#include "tokenizer/utf8.hpp"

namespace kiln::tok {

namespace {

bool is_word_char(char32_t cp) {
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return cp == '_' || (category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_LO) ||
         (category >= UTF8PROC_CATEGORY_ND && category <= UTF8PROC_CATEGORY_NO) ||
         (category >= UTF8PROC_CATEGORY_MN && category <= UTF8PROC_CATEGORY_ME);
}

// The code point ending just before byte `pos` of valid UTF-8 `text`.
char32_t code_point_before(std::string_view text, size_t pos) {
  size_t start = pos - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  size_t len = 1;
  return decode_utf8_at(text, start, len).value_or(0xFFFD);
}

char32_t code_point_at(std::string_view text, size_t pos, size_t& len) {
  len = 1;
  return decode_utf8_at(text, pos, len).value_or(0xFFFD);
}

}  // namespace

bool AddedVocabulary::MatcherSet::empty() const {
  return std::all_of(by_first_byte.begin(), by_first_byte.end(),
                     [](const auto& bucket) { return bucket.empty(); });
}

AddedVocabulary AddedVocabulary::from_json(const Json& list, const std::string& path) {
  AddedVocabulary vocab;
  if (list.is_null()) return vocab;
  if (!list.is_array()) json_format_error(path, "an array", list);
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string p = path + "[" + std::to_string(i) + "]";
    const Json& entry = list[i];
    AddedToken token;
    const int64_t id = json_int(json_require(entry, "id", p), p + ".id");
    if (id < 0 || id > INT32_MAX) json_format_error(p + ".id", "a non-negative 32-bit id", entry);
    token.id = static_cast<int32_t>(id);
    token.content = json_string(json_require(entry, "content", p), p + ".content");
    if (token.content.empty()) json_format_error(p + ".content", "a non-empty string", entry);
    token.special = json_bool_or(entry, "special", p, false);
    token.lstrip = json_bool_or(entry, "lstrip", p, false);
    token.rstrip = json_bool_or(entry, "rstrip", p, false);
    token.single_word = json_bool_or(entry, "single_word", p, false);
    token.normalized = json_bool_or(entry, "normalized", p, !token.special);
    vocab.tokens_.push_back(std::move(token));
  }
  for (size_t i = 0; i < vocab.tokens_.size(); ++i) {
    vocab.index_by_id_[vocab.tokens_[i].id] = i;
    vocab.id_by_content_.emplace(vocab.tokens_[i].content, vocab.tokens_[i].id);
  }
  vocab.build_matchers();
  return vocab;
}

void AddedVocabulary::build_matchers() {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& token = tokens_[i];
    matchers_[token.normalized ? 1 : 0]
        .by_first_byte[static_cast<unsigned char>(token.content[0])]
        .push_back(i);
  }
  for (auto& set : matchers_) {
    for (auto& bucket : set.by_first_byte) {
      std::stable_sort(bucket.begin(), bucket.end(), [&](size_t a, size_t b) {
        return tokens_[a].content.size() > tokens_[b].content.size();
      });
    }
  }
}

std::optional<AddedVocabulary::Match> AddedVocabulary::match_at(std::string_view text, size_t pos,
                                                                const Matcher& matcher) const {
  for (const size_t index : matcher[static_cast<unsigned char>(text[pos])]) {
    const AddedToken& token = tokens_[index];
    if (text.compare(pos, token.content.size(), token.content) != 0) continue;
    size_t begin = pos, end = pos + token.content.size();
    size_t len = 0;
    if (token.single_word) {
      if (begin > 0 && is_word_char(code_point_before(text, begin))) continue;
      if (end < text.size() && is_word_char(code_point_at(text, end, len))) continue;
    }
    if (token.lstrip) {
      while (begin > 0) {
        size_t start = begin - 1;
        while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        if (!is_whitespace(code_point_at(text, start, len))) break;
        begin = start;
      }
    }
    if (token.rstrip) {
      while (end < text.size() && is_whitespace(code_point_at(text, end, len))) end += len;
    }
    return Match{begin, end, token.id};
  }
  return std::nullopt;
}

std::vector<Segment> AddedVocabulary::split(std::vector<Segment> segments, bool normalized) const {
  const MatcherSet& set = matchers_[normalized ? 1 : 0];
  if (set.empty()) return segments;
  std::vector<Segment> out;
  for (Segment& segment : segments) {
    if (segment.token_id >= 0) {
      out.push_back(std::move(segment));
      continue;
    }
    const std::string_view text = segment.text;
    size_t plain_start = 0;  // start of the text not yet emitted
    size_t pos = 0;
    while (pos < text.size()) {
      auto match = match_at(text, pos, set.by_first_byte);
      if (!match) {
        ++pos;  // added tokens are valid UTF-8, so they never match from a continuation byte
        continue;
      }
      // lstrip may only take whitespace that has not been emitted yet.
      match->begin = std::max(match->begin, plain_start);
      if (match->begin > plain_start) {
        out.push_back({std::string(text.substr(plain_start, match->begin - plain_start)), -1,
                       segment.at_input_start && plain_start == 0,
                       segment.continues_text && plain_start == 0});
      }
      out.push_back({std::string(), match->id, false, false});
      plain_start = pos = match->end;
    }
    if (plain_start < text.size()) {
      out.push_back({std::string(text.substr(plain_start)), -1,
                     segment.at_input_start && plain_start == 0,
                     segment.continues_text && plain_start == 0});
    }
  }
  return out;
}

const AddedToken* AddedVocabulary::find_by_id(int32_t id) const {
  const auto it = index_by_id_.find(id);
  return it == index_by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::find_by_content(std::string_view content) const {
  const auto it = id_by_content_.find(std::string(content));
  if (it == id_by_content_.end()) return std::nullopt;
  return it->second;
}

std::optional<int32_t> AddedVocabulary::max_id() const {
  std::optional<int32_t> best;
  for (const AddedToken& token : tokens_) best = std::max(best.value_or(-1), token.id);
  return best;
}

}  // namespace kiln::tok
