// StreamDecoder: decode() of a short window of recent ids, emitting only the part of its text
// that later ids cannot change.
//
// Why a window is enough: each decoder in the HF pipeline changes text only near (a) the start of
// the sequence (Strip, Metaspace's first token), (b) an unfinished UTF-8 character (ByteLevel's
// lossy conversion renders it as U+FFFD) or (c) an unfinished run of byte-fallback tokens ("<0xE4>"
// …, rendered as U+FFFD per byte until the run is valid UTF-8 as a whole). So:
//  - text ending in U+FFFD is held back until the next id decides it;
//  - text from a trailing run of byte-fallback tokens is held back until a normal token ends it;
//  - once everything has been emitted, the window restarts at the last normal token ("anchor"):
//    decode(anchor + later ids) = decode(anchor) + exactly the text those ids add to the full
//    decode, because the anchor absorbs the start-of-sequence rules and ends on a finished
//    character. emitted_bytes_ then counts decode(anchor) as already returned.
// Each push() therefore costs O(window) instead of O(ids so far).
#include <cstdio>

#include "tokenizer/tokenizer.hpp"
#include "tokenizer/utf8.hpp"

namespace kiln {

namespace {

constexpr size_t kMaxWindow = 16;  // ids kept before the window is restarted

// Is `id` a byte-fallback token "<0xAB>"? Detected through the public interface: it contributes
// one byte and is the vocabulary's token for that byte's name.
bool is_byte_fallback(const Tokenizer& tokenizer, int32_t id) {
  const std::string bytes = tokenizer.token_bytes(id);
  if (bytes.size() != 1) return false;
  char name[8];
  std::snprintf(name, sizeof(name), "<0x%02X>", static_cast<unsigned char>(bytes[0]));
  return tokenizer.token_to_id(name) == id;
}

// Index of the last id that is neither skipped nor a byte-fallback token; -1 if none. Sets
// `trailing_bytes` when byte-fallback tokens follow it.
ptrdiff_t last_anchor(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                      bool skip_special, bool& trailing_bytes) {
  trailing_bytes = false;
  for (ptrdiff_t i = static_cast<ptrdiff_t>(ids.size()) - 1; i >= 0; --i) {
    if (skip_special && tokenizer.is_special(ids[i])) continue;
    if (!is_byte_fallback(tokenizer, ids[i])) return i;
    trailing_bytes = true;
  }
  return -1;
}

size_t common_prefix_at_char_boundary(const std::string& a, const std::string& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  while (n > 0 && n < a.size() && (static_cast<unsigned char>(a[n]) & 0xC0) == 0x80) --n;
  return n;
}

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  if (id < 0 || id >= tokenizer_.vocab_size()) {
    tokenizer_.decode(std::span<const int32_t>(&id, 1), skip_special_);  // throws OUT_OF_RANGE
  }
  ids_.push_back(id);
  const std::string text = tokenizer_.decode(ids_, skip_special_);

  size_t stable = text.size();
  while (stable >= tok::kReplacementChar.size() &&
         std::string_view(text).substr(stable - tok::kReplacementChar.size()) ==
             tok::kReplacementChar) {
    stable -= tok::kReplacementChar.size();
  }
  bool trailing_bytes = false;
  const ptrdiff_t anchor = last_anchor(tokenizer_, ids_, skip_special_, trailing_bytes);
  if (trailing_bytes) {
    const std::vector<int32_t> settled(ids_.begin(), ids_.begin() + (anchor + 1));
    stable = std::min(
        stable, common_prefix_at_char_boundary(text, tokenizer_.decode(settled, skip_special_)));
  }

  std::string out;
  if (stable > emitted_bytes_) {
    out = text.substr(emitted_bytes_, stable - emitted_bytes_);
    emitted_bytes_ = stable;
  }
  if (emitted_bytes_ == text.size() && ids_.size() > kMaxWindow) {
    if (anchor > 0) {
      ids_.erase(ids_.begin(), ids_.begin() + anchor);
      emitted_bytes_ = tokenizer_.decode(ids_, skip_special_).size();
    } else if (anchor < 0 && !trailing_bytes) {
      // Only skipped special tokens so far: the decoder never sees them, so forgetting them
      // changes nothing (the next visible token is still the first one).
      ids_.clear();
      emitted_bytes_ = 0;
    }
  }
  return out;
}

std::string StreamDecoder::flush() {
  const std::string text = tokenizer_.decode(ids_, skip_special_);
  std::string out = emitted_bytes_ < text.size() ? text.substr(emitted_bytes_) : std::string();
  ids_.clear();
  emitted_bytes_ = 0;
  return out;
}

}  // namespace kiln
