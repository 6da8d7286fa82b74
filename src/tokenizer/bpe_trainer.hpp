// Byte-level BPE training (GPT-2 / Llama 3 style): text files → pre-token words with their counts
// → merges learned greedily by pair frequency → a tokenizer.json that kiln and HF `tokenizers`
// load and encode identically.
//
// The vocabulary: ids 0..255 are the 256 bytes (id = byte value, written with GPT-2's byte ↔
// character table), then one id per new token in the order the merges create them, then the
// special tokens. A merge whose bytes equal an existing token reuses that token's id (as HF's
// trainer does), so merges continue until the vocabulary has `vocab_size` ids.
//
// Tie-breaking (documented so that results are reproducible across thread counts and machines):
// each step merges the pair with the highest count over the whole corpus; among equal counts,
// the pair (left id, right id) that is smallest in lexicographic order wins.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kiln::tok {

// The pre-tokenizer regex of Llama 3 (and, with \p{N}{1,3}, the GPT-4 cl100k pattern that
// nanochat also trains with), in the form both PCRE2 and HF's Oniguruma compile.
inline constexpr const char* kDefaultTrainPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Reports progress; returns false to cancel (training then throws KILN_ERR_CANCELLED).
// Always called on the thread that called train_bpe.
using TrainProgress = std::function<bool(float fraction, const char* stage)>;

struct BpeTrainOptions {
  int32_t vocab_size = 32768;  // 256 byte tokens + merged tokens + special tokens
  std::string pattern = kDefaultTrainPattern;
  std::vector<std::string> special_tokens;
  int32_t n_threads = 0;      // word counting threads; 0 = hardware concurrency
  int64_t min_frequency = 2;  // stop before merging a pair seen fewer times than this
  TrainProgress progress;     // optional
};

// Word (pre-token chunk) → how often it occurs. Keys are raw UTF-8 bytes.
using WordCounts = std::unordered_map<std::string, int64_t>;

// Counts the pre-token words of `files`. Each file is cut into blocks of about 1 MiB that end
// after a '\n' (a fixed rule, so counts never depend on the thread count); the special tokens'
// text is cut out of each block and never counted; each stretch between them is split with the
// regex exactly as the Split(Isolated) pre-tokenizer does at encode time. Throws KILN_ERR_NOT_FOUND
// / KILN_ERR_IO for unreadable files, KILN_ERR_INVALID_ARGUMENT for text that is not UTF-8.
WordCounts count_words(const std::vector<std::filesystem::path>& files,
                       const BpeTrainOptions& options);

// A learned merge: (left id, right id) → merged id.
struct LearnedMerge {
  int32_t left;
  int32_t right;
  int32_t merged;
};

struct LearnedBpe {
  std::vector<std::string> token_bytes;  // id → raw bytes; ids 0..255 are the bytes
  std::vector<LearnedMerge> merges;      // in rank order
};

// Learns merges until the vocabulary has `n_tokens` ids (bytes included) or no pair occurs
// `min_frequency` times. `progress` may be empty.
LearnedBpe learn_merges(const WordCounts& words, int32_t n_tokens, int64_t min_frequency,
                        const TrainProgress& progress);

// The tokenizer.json text for `bpe`: Split(pattern, Isolated) + ByteLevel pre-tokenizer, BPE
// model, ByteLevel decoder, the special tokens as added tokens after the learned ids.
std::string trained_tokenizer_json(const LearnedBpe& bpe, const std::string& pattern,
                                   const std::vector<std::string>& special_tokens);

// count_words + learn_merges + trained_tokenizer_json, with the options checked first
// (KILN_ERR_INVALID_ARGUMENT naming the bad value; KILN_ERR_FORMAT for a regex that does not
// compile).
std::string train_bpe(const std::vector<std::filesystem::path>& files,
                      const BpeTrainOptions& options);

}  // namespace kiln::tok
