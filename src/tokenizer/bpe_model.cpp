#include "tokenizer/bpe_model.hpp"

#include <algorithm>
#include <cstdio>
#include <queue>
#include <thread>
#include <vector>

#include "core/error.hpp"
#include "tokenizer/utf8.hpp"

namespace kiln::tok {

namespace {

std::string byte_token_name(unsigned byte) {
  char name[8];
  std::snprintf(name, sizeof(name), "<0x%02X>", byte);
  return name;
}

// One symbol of the word being merged, in a doubly linked list over a vector (HF
// models/bpe/word.rs).
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

struct CandidateMerge {
  int32_t rank;
  int32_t pos;
  int32_t merged_id;
  // std::priority_queue is a max-heap: "less" = higher rank, then later position, so the lowest
  // rank, leftmost merge comes out first.
  bool operator<(const CandidateMerge& other) const {
    if (rank != other.rank) return rank > other.rank;
    return pos > other.pos;
  }
};

}  // namespace

BpeModel BpeModel::from_json(const Json& model, const std::string& path, const BpeTables* tables,
                             LoadTimer* timer) {
  const std::string type = json_string_or(model, "type", path, "BPE");
  if (type != "BPE") {
    fail(KILN_ERR_UNSUPPORTED, "tokenizer model type \"" + type + "\" at " + path +
                                   ".type is not supported (only BPE is)");
  }
  if (model.contains("dropout") && !model["dropout"].is_null()) {
    const Json& dropout = model["dropout"];
    if (!dropout.is_number() || dropout.get<double>() != 0.0) {
      fail(KILN_ERR_UNSUPPORTED, "tokenizer " + path + ".dropout " + dropout.dump() +
                                     ": BPE dropout is a training feature kiln does not apply");
    }
  }
  BpeTables from_model;
  if (!tables) {
    from_model = tables_from_json(model, path);
    tables = &from_model;
  }
  BpeModel bpe;
  bpe.load_vocab(*tables);
  mark_stage(timer, "vocabulary index");
  bpe.continuing_subword_prefix_ = json_string_or(model, "continuing_subword_prefix", path, "");
  bpe.end_of_word_suffix_ = json_string_or(model, "end_of_word_suffix", path, "");
  bpe.fuse_unk_ = json_bool_or(model, "fuse_unk", path, false);
  bpe.byte_fallback_ = json_bool_or(model, "byte_fallback", path, false);
  bpe.ignore_merges_ = json_bool_or(model, "ignore_merges", path, false);
  if (const auto unk = json_optional_string(model, "unk_token", path)) {
    const auto id = bpe.token_to_id(*unk);
    if (!id) {
      fail(KILN_ERR_FORMAT,
           "tokenizer " + path + ".unk_token \"" + *unk + "\" is not in the vocabulary");
    }
    bpe.unk_id_ = *id;
  }
  bpe.load_merges(*tables, path + ".merges", timer);
  return bpe;
}

// Checks model.vocab and model.merges of a parsed JSON object and lists them (views into `model`).
BpeTables BpeModel::tables_from_json(const Json& model, const std::string& path) {
  BpeTables tables;
  const Json& vocab = json_require(model, "vocab", path);
  const std::string vocab_path = path + ".vocab";
  if (!vocab.is_object()) json_format_error(vocab_path, "an object of token → id", vocab);
  tables.vocab.reserve(vocab.size());
  for (const auto& [token, value] : vocab.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() > INT32_MAX) {
      json_format_error(vocab_path + "[\"" + token + "\"]", "a non-negative 32-bit id", value);
    }
    // items() hands out keys by reference into the object, which outlives the tables.
    tables.vocab.emplace_back(std::string_view(token), static_cast<int32_t>(value.get<int64_t>()));
    tables.vocab_bytes += token.size();
  }
  const Json& merges = json_require(model, "merges", path);
  const std::string merges_path = path + ".merges";
  if (!merges.is_array()) json_format_error(merges_path, "an array", merges);
  tables.merges.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const Json& entry = merges[rank];
    if (entry.is_string()) {  // "left right"
      const std::string& text = entry.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        json_format_error(merges_path + "[" + std::to_string(rank) + "]",
                          "two tokens separated by one space", entry);
      }
      tables.merges.emplace_back(std::string_view(text).substr(0, space),
                                 std::string_view(text).substr(space + 1));
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {  // ["left", "right"]
      tables.merges.emplace_back(entry[0].get_ref<const std::string&>(),
                                 entry[1].get_ref<const std::string&>());
    } else {
      json_format_error(merges_path + "[" + std::to_string(rank) + "]",
                        "\"left right\" or [\"left\", \"right\"]", entry);
    }
  }
  return tables;
}

void BpeModel::load_vocab(const BpeTables& tables) {
  vocab_.reserve(tables.vocab.size(), tables.vocab_bytes);
  vocab_.insert_many(tables.vocab.data(), tables.vocab.size());
  vocab_.index_ids();
  for (int32_t id = 0; id <= vocab_.max_id(); ++id) {
    const auto token = vocab_.token(id);
    if (!token || token->size() > 4) continue;  // one UTF-8 character is at most 4 bytes
    size_t len = 0;
    const auto cp = decode_utf8_at(*token, 0, len);
    if (cp && len == token->size()) char_ids_.emplace(*cp, id);
  }
  for (unsigned b = 0; b < 256; ++b) {
    const auto id = token_to_id(byte_token_name(b));
    byte_fallback_ids_[b] = id ? *id : -1;
  }
}

void BpeModel::load_merges(const BpeTables& tables, const std::string& path, LoadTimer* timer) {
  const size_t n_merges = tables.merges.size();
  merges_ = MergeTable(n_merges);
  const size_t prefix_len = continuing_subword_prefix_.size();
  // The merged token drops the right part's continuing-subword prefix (HF models/bpe/model.rs).
  const auto merged_token = [&](size_t rank) {
    const auto [left, right] = tables.merges[rank];
    std::string merged(left);
    merged.append(right.substr(std::min(prefix_len, right.size())));
    return merged;
  };
  // ids[3k], [3k + 1], [3k + 2]: merge k's left, right and merged token. Resolving them is ~1 M
  // vocabulary lookups that nearly all miss the cache, and they only read the vocabulary, so
  // stretches of merges are resolved on several threads; within a stretch, in groups whose
  // lookups TokenIndex::find_many overlaps. The inserts stay on this thread, in rank order: a
  // later duplicate pair must replace an earlier one, as in HF's HashMap.
  std::vector<int32_t> ids(3 * n_merges);
  const auto resolve = [&](size_t begin, size_t end) {
    constexpr size_t kGroup = 128;
    // The group's merged tokens side by side in one buffer: no heap string per merge.
    std::string merged;
    size_t merged_end[kGroup];
    std::string_view keys[3 * kGroup];
    for (size_t base = begin; base < end; base += kGroup) {
      const size_t n = std::min(kGroup, end - base);
      merged.clear();
      for (size_t k = 0; k < n; ++k) {
        const auto [left, right] = tables.merges[base + k];
        merged.append(left);
        merged.append(right.substr(std::min(prefix_len, right.size())));
        merged_end[k] = merged.size();
        keys[3 * k] = left;
        keys[3 * k + 1] = right;
      }
      for (size_t k = 0; k < n; ++k) {  // views once the buffer no longer moves
        const size_t start = k == 0 ? 0 : merged_end[k - 1];
        keys[3 * k + 2] = std::string_view(merged).substr(start, merged_end[k] - start);
      }
      vocab_.find_many(keys, 3 * n, &ids[3 * base]);
    }
  };
  // Below this a thread costs more than it saves (Mistral's 1.8 MB file has 58k merges).
  constexpr size_t kMinMergesPerThread = 32768;
  const size_t threads =
      std::clamp<size_t>(n_merges / kMinMergesPerThread, 1,
                         std::min(8u, std::max(1u, std::thread::hardware_concurrency())));
  {
    std::vector<std::jthread> workers;
    const size_t per_thread = (n_merges + threads - 1) / threads;
    for (size_t t = 1; t < threads; ++t) {
      const size_t begin = std::min(n_merges, t * per_thread);
      workers.emplace_back(resolve, begin, std::min(n_merges, begin + per_thread));
    }
    resolve(0, std::min(n_merges, per_thread));
  }
  mark_stage(timer, "merges resolved");

  constexpr size_t kPrefetchAhead = 16;
  for (size_t k = 0; k < n_merges; ++k) {
    if (k + kPrefetchAhead < n_merges) {
      merges_.prefetch(ids[3 * (k + kPrefetchAhead)], ids[3 * (k + kPrefetchAhead) + 1]);
    }
    const int32_t left_id = ids[3 * k], right_id = ids[3 * k + 1], merged_id = ids[3 * k + 2];
    if (left_id < 0 || right_id < 0 || merged_id < 0) {
      const auto [left, right] = tables.merges[k];
      const std::string missing = left_id < 0    ? std::string(left)
                                  : right_id < 0 ? std::string(right)
                                                 : merged_token(k);
      fail(KILN_ERR_FORMAT, "tokenizer " + path + "[" + std::to_string(k) + "]: token \"" +
                                missing + "\" is not in the vocabulary");
    }
    merges_.insert(left_id, right_id, {static_cast<int32_t>(k), merged_id});
  }
  mark_stage(timer, "merge table");
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  return vocab_.find(token);
}

void BpeModel::add_initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const {
  // HF Word construction: one symbol per character; unknown characters go to byte fallback, then
  // to unk (consecutive unks fused when fuse_unk), or are dropped when there is no unk token.
  const bool plain = continuing_subword_prefix_.empty() && end_of_word_suffix_.empty();
  bool pending_unk = false;
  std::string affixed;
  size_t pos = 0;
  while (pos < word.size()) {
    size_t len = 1;
    const char32_t cp = decode_utf8_at(word, pos, len).value_or(0xFFFD);
    const std::string_view ch = word.substr(pos, len);
    std::optional<int32_t> id;
    if (plain) {
      const auto it = char_ids_.find(cp);
      if (it != char_ids_.end()) id = it->second;
    } else {
      affixed.clear();
      if (pos > 0) affixed += continuing_subword_prefix_;
      affixed += ch;
      if (pos + len == word.size()) affixed += end_of_word_suffix_;
      id = token_to_id(affixed);
    }
    pos += len;
    if (id) {
      if (pending_unk) symbols.push_back(*unk_id_);
      pending_unk = false;
      symbols.push_back(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (char c : ch) all_bytes = all_bytes && byte_fallback_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all_bytes) {
        for (char c : ch) symbols.push_back(byte_fallback_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !fuse_unk_) symbols.push_back(*unk_id_);
      pending_unk = true;
    }
  }
  if (pending_unk) symbols.push_back(*unk_id_);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  std::vector<int32_t> initial;
  initial.reserve(word.size());
  add_initial_symbols(word, initial);
  if (initial.size() <= 1) {
    out.insert(out.end(), initial.begin(), initial.end());
    return;
  }

  const auto n = static_cast<int32_t>(initial.size());
  std::vector<Symbol> symbols(initial.size());
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = {initial[i], i - 1, i + 1 < n ? i + 1 : -1, true};
  }
  std::vector<CandidateMerge> storage;
  storage.reserve(initial.size() * 2);
  std::priority_queue<CandidateMerge> queue(std::less<CandidateMerge>(), std::move(storage));
  const auto consider = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    if (const auto merge = merges_.find(symbols[pos].id, symbols[next].id)) {
      queue.push({merge->rank, pos, merge->merged_id});
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);

  while (!queue.empty()) {
    const CandidateMerge top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    const Symbol& right = symbols[left.next];
    // Stale entry: one side has been merged since this candidate was queued.
    const auto current = merges_.find(left.id, right.id);
    if (!current || current->merged_id != top.merged_id) continue;
    const int32_t right_pos = left.next;
    left.id = top.merged_id;
    left.next = right.next;
    symbols[right_pos].alive = false;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

}  // namespace kiln::tok
