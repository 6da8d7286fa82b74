#include "tokenizer/hf_tokenizer.hpp"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include "core/error.hpp"
#include "tokenizer/utf8.hpp"

namespace kiln::tok {

namespace {
const Json& field_or_null(const Json& object, const char* key) {
  static const Json null_json;
  if (!object.is_object()) return null_json;
  const auto it = object.find(key);
  return it == object.end() ? null_json : *it;
}
}  // namespace

HfTokenizer::HfTokenizer(const Json& tokenizer, const Json& config, const BpeTables* tables,
                         LoadTimer* timer)
    : model_(BpeModel::from_json(json_require(tokenizer, "model", "tokenizer"), "model", tables,
                                 timer)),
      added_(AddedVocabulary::from_json(field_or_null(tokenizer, "added_tokens"), "added_tokens")),
      normalizer_(make_normalizer(field_or_null(tokenizer, "normalizer"), "normalizer")),
      pre_tokenizer_(
          make_pre_tokenizer(field_or_null(tokenizer, "pre_tokenizer"), "pre_tokenizer")),
      decoder_(make_decoder(field_or_null(tokenizer, "decoder"), "decoder")) {
  vocab_size_ = std::max(model_.max_id(), added_.max_id().value_or(-1)) + 1;
  line_splittable_ = (!normalizer_ || normalizer_->splits_before_ascii_letter()) &&
                     pre_tokenizer_ && pre_tokenizer_->splits_at_line_starts();
  bos_id_ = config_token_id(config, "bos_token");
  eos_id_ = config_token_id(config, "eos_token");

  // A post-processor that adds tokens is authoritative (HF applies it); otherwise transformers'
  // tokenizer classes add BOS/EOS according to tokenizer_config.json.
  if (auto frame =
          read_post_processor(field_or_null(tokenizer, "post_processor"), "post_processor")) {
    special_frame_ = std::move(*frame);
  } else {
    const std::string where = "tokenizer_config";
    if (json_bool_or(config, "add_bos_token", where, false)) {
      if (!bos_id_) {
        fail(KILN_ERR_FORMAT, "tokenizer_config.json sets add_bos_token but has no bos_token");
      }
      special_frame_.prefix.push_back(*bos_id_);
    }
    if (json_bool_or(config, "add_eos_token", where, false)) {
      if (!eos_id_) {
        fail(KILN_ERR_FORMAT, "tokenizer_config.json sets add_eos_token but has no eos_token");
      }
      special_frame_.suffix.push_back(*eos_id_);
    }
  }
  for (const int32_t id : special_frame_.prefix) check_id(id, "post_processor special token");
  for (const int32_t id : special_frame_.suffix) check_id(id, "post_processor special token");
  mark_stage(timer, "added tokens, normalizer, pre-tokenizer, decoder");
}

// bos_token / eos_token: a token string, {"content": "..."} (an AddedToken), or null.
std::optional<int32_t> HfTokenizer::config_token_id(const Json& config, const char* key) const {
  const Json& value = field_or_null(config, key);
  if (value.is_null()) return std::nullopt;
  const std::string path = std::string("tokenizer_config.") + key;
  const std::string content =
      value.is_object() ? json_string(json_require(value, "content", path), path + ".content")
                        : json_string(value, path);
  const auto id = token_to_id(content);
  if (!id) {
    fail(KILN_ERR_FORMAT, "tokenizer_config.json " + std::string(key) + " \"" + content +
                              "\" is not a token of tokenizer.json");
  }
  return id;
}

void HfTokenizer::check_id(int32_t id, const char* what) const {
  if (id < 0 || id >= vocab_size_) {
    fail(KILN_ERR_OUT_OF_RANGE, std::string(what) + ": token id " + std::to_string(id) +
                                    " is outside [0, " + std::to_string(vocab_size_) + ")");
  }
}

void HfTokenizer::encode_text(const Segment& segment, bool parse_special,
                              std::vector<int32_t>& out) const {
  std::vector<Segment> parts;
  if (normalizer_) {
    parts.push_back({segment.continues_text ? normalizer_->normalize_continuation(segment.text)
                                            : normalizer_->normalize(segment.text),
                     -1, segment.at_input_start, segment.continues_text});
  } else {
    parts.push_back(segment);
  }
  if (parse_special && added_.has_normalized_tokens()) {
    parts = added_.split(std::move(parts), /*normalized=*/true);
  }
  for (const Segment& part : parts) {
    if (part.token_id >= 0) {
      out.push_back(part.token_id);
      continue;
    }
    std::vector<TextPiece> pieces{{part.text, part.at_input_start}};
    if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
    for (const TextPiece& piece : pieces) model_.encode_word(piece.text, out);
  }
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_special,
                                         bool parse_special) const {
  if (const auto bad = find_invalid_utf8(text)) {
    fail(KILN_ERR_INVALID_ARGUMENT, "tokenizer encode: input text is not valid UTF-8 at byte " +
                                        std::to_string(*bad) + " of " +
                                        std::to_string(text.size()));
  }
  return encode_segment({std::string(text), -1, true, false}, add_special, parse_special);
}

std::vector<int32_t> HfTokenizer::encode_continuation(std::string_view preceding,
                                                      std::string_view text,
                                                      bool parse_special) const {
  if (preceding.empty()) return encode(text, /*add_special=*/false, parse_special);
  if (const auto bad = find_invalid_utf8(text)) {
    fail(KILN_ERR_INVALID_ARGUMENT, "tokenizer encode: input text is not valid UTF-8 at byte " +
                                        std::to_string(*bad) + " of " +
                                        std::to_string(text.size()));
  }
  // Text right after an added token starts a new stretch for the normalizer (HF normalizes
  // each stretch between added tokens on its own); otherwise it continues the stretch.
  bool after_plain_text = true;
  if (parse_special) {
    const std::vector<Segment> before =
        added_.split({{std::string(preceding), -1, true, false}}, /*normalized=*/false);
    after_plain_text = !before.empty() && before.back().token_id < 0;
  }
  return encode_segment({std::string(text), -1, false, after_plain_text}, /*add_special=*/false,
                        parse_special);
}

std::vector<int32_t> HfTokenizer::encode_segment(Segment whole, bool add_special,
                                                 bool parse_special) const {
  const size_t text_size = whole.text.size();
  std::vector<Segment> segments{std::move(whole)};
  // parse_special=false treats the text of every added token (special or not, e.g. Qwen's
  // <think>) as ordinary text: HF's split_special_tokens=True, extended to non-special ones so
  // that user text can never inject control tokens.
  if (parse_special) segments = added_.split(std::move(segments), /*normalized=*/false);

  std::vector<int32_t> ids;
  ids.reserve(text_size / 3 + 4);
  if (add_special) ids = special_frame_.prefix;
  for (const Segment& segment : segments) {
    if (segment.token_id >= 0) {
      ids.push_back(segment.token_id);
    } else if (!segment.text.empty()) {
      encode_text(segment, parse_special, ids);
    }
  }
  if (add_special)
    ids.insert(ids.end(), special_frame_.suffix.begin(), special_frame_.suffix.end());
  return ids;
}

std::vector<int32_t> HfTokenizer::encode_threaded(std::string_view text, bool add_special,
                                                  bool parse_special, int n_threads) const {
  // Below this a thread costs more than it saves.
  constexpr size_t kMinBytesPerThread = size_t{64} << 10;
  const unsigned threads = n_threads > 0 ? static_cast<unsigned>(n_threads)
                                         : std::max(1u, std::thread::hardware_concurrency());
  if (threads <= 1 || text.size() < 2 * kMinBytesPerThread) {
    return encode(text, add_special, parse_special);
  }
  if (const auto bad = find_invalid_utf8(text)) {
    fail(KILN_ERR_INVALID_ARGUMENT, "tokenizer encode: input text is not valid UTF-8 at byte " +
                                        std::to_string(*bad) + " of " +
                                        std::to_string(text.size()));
  }
  std::vector<Segment> segments{{std::string(text), -1, true, false}};
  if (parse_special) segments = added_.split(std::move(segments), /*normalized=*/false);

  // Work items: an added token, or a stretch [begin, end) of a plain segment. Normalized added
  // tokens are matched after normalization, possibly across a line start: then no line cuts.
  struct Item {
    const Segment* segment;
    size_t begin, end;
  };
  const bool cut_lines = line_splittable_ && !(parse_special && added_.has_normalized_tokens());
  const size_t target = std::max(kMinBytesPerThread, text.size() / (threads * 4));
  std::vector<Item> items;
  for (const Segment& segment : segments) {
    const size_t size = segment.text.size();
    size_t begin = 0;
    while (cut_lines && size - begin > 2 * target) {
      size_t cut = begin + target;
      while (cut < size && !is_line_start(segment.text, cut)) {
        const size_t nl = segment.text.find('\n', cut);
        if (nl == std::string::npos) {
          cut = size;
          break;
        }
        cut = nl + 1;
      }
      if (cut >= size) break;
      items.push_back({&segment, begin, cut});
      begin = cut;
    }
    items.push_back({&segment, begin, size});
  }

  std::vector<std::vector<int32_t>> results(items.size());
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  const auto work = [&] {
    try {
      for (size_t i; (i = next++) < items.size();) {
        const Item& item = items[i];
        if (item.segment->token_id >= 0) {
          results[i].push_back(item.segment->token_id);
        } else if (item.end > item.begin) {
          const Segment part{item.segment->text.substr(item.begin, item.end - item.begin), -1,
                             item.segment->at_input_start && item.begin == 0,
                             item.segment->continues_text && item.begin == 0};
          encode_text(part, parse_special, results[i]);
        }
      }
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = items.size();
    }
  };
  {
    std::vector<std::jthread> workers;
    const size_t n_workers = std::min<size_t>(threads, items.size());
    for (size_t t = 1; t < n_workers; ++t) workers.emplace_back(work);
    work();
  }
  if (error) std::rethrow_exception(error);

  std::vector<int32_t> ids;
  size_t total = special_frame_.prefix.size() + special_frame_.suffix.size();
  for (const auto& r : results) total += r.size();
  ids.reserve(total);
  if (add_special) ids = special_frame_.prefix;
  for (const auto& r : results) ids.insert(ids.end(), r.begin(), r.end());
  if (add_special) {
    ids.insert(ids.end(), special_frame_.suffix.begin(), special_frame_.suffix.end());
  }
  return ids;
}

std::optional<std::string_view> HfTokenizer::token_string(int32_t id) const {
  if (const AddedToken* added = added_.find_by_id(id)) return added->content;
  return model_.id_to_token(id);
}

std::string HfTokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    check_id(id, "tokenizer decode");
    if (skip_special && is_special(id)) continue;
    // An id inside the range that names no token (a hole in the vocabulary) decodes to nothing,
    // as in HF.
    if (const auto token = token_string(id)) tokens.emplace_back(*token);
  }
  if (!decoder_) {  // HF joins raw tokens with spaces when there is no decoder
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  std::string out;
  for (const std::string& piece : decoder_->decode_chain(std::move(tokens))) out += piece;
  return out;
}

std::string HfTokenizer::token_bytes(int32_t id) const {
  check_id(id, "tokenizer token_bytes");
  const auto token = token_string(id);
  if (!token) return {};
  return decoder_ ? decoder_->decode_mid_token(std::string(*token)) : std::string(*token);
}

std::optional<int32_t> HfTokenizer::token_to_id(std::string_view token) const {
  if (const auto id = added_.find_by_content(token)) return id;
  return model_.token_to_id(token);
}

bool HfTokenizer::is_special(int32_t id) const {
  const AddedToken* added = added_.find_by_id(id);
  return added && added->special;
}

bool HfTokenizer::adds_bos() const {
  return bos_id_ && !special_frame_.prefix.empty() && special_frame_.prefix.front() == *bos_id_;
}

}  // namespace kiln::tok
