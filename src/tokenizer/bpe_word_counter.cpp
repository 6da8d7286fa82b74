// count_words: the first stage of BPE training, run on several threads.
#include <algorithm>
#include <atomic>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "core/error.hpp"
#include "tokenizer/bpe_model.hpp"
#include "tokenizer/bpe_trainer.hpp"
#include "tokenizer/pattern.hpp"
#include "tokenizer/split_behavior.hpp"
#include "tokenizer/utf8.hpp"

namespace kiln::tok {

namespace {

constexpr size_t kBlockBytes = size_t{1} << 20;

using LocalCounts = std::unordered_map<std::string, int64_t, StringHash, std::equal_to<>>;

std::string read_corpus_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    fail(KILN_ERR_NOT_FOUND, "training file " + path.string() + " does not exist");
  }
  if (std::filesystem::is_directory(path, ec)) {
    fail(KILN_ERR_IO, "training file " + path.string() + " is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(KILN_ERR_IO, "cannot open training file " + path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail(KILN_ERR_IO, "cannot read training file " + path.string());
  return std::move(buffer).str();
}

// Blocks of at least kBlockBytes ending just after a '\n' (the last one ends with the text).
std::vector<std::string_view> cut_blocks(std::string_view text) {
  std::vector<std::string_view> blocks;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.size();
    if (text.size() - begin > kBlockBytes) {
      const size_t nl = text.find('\n', begin + kBlockBytes - 1);
      if (nl != std::string_view::npos) end = nl + 1;
    }
    blocks.push_back(text.substr(begin, end - begin));
    begin = end;
  }
  return blocks;
}

class BlockCounter {
 public:
  BlockCounter(const Pattern& pattern, const std::vector<std::string>& specials)
      : pattern_(pattern), specials_(specials) {}

  void count(std::string_view block, LocalCounts& counts) const {
    // Cut out the special tokens' text: the leftmost occurrence of any of them, longest first.
    size_t pos = 0;
    while (pos < block.size()) {
      size_t best = std::string_view::npos, best_len = 0;
      for (const std::string& special : specials_) {
        const size_t at = block.find(special, pos);
        if (at < best || (at == best && special.size() > best_len)) {
          best = at;
          best_len = special.size();
        }
      }
      const size_t end = best == std::string_view::npos ? block.size() : best;
      count_plain(block.substr(pos, end - pos), counts);
      pos = best == std::string_view::npos ? block.size() : best + best_len;
    }
  }

 private:
  void count_plain(std::string_view text, LocalCounts& counts) const {
    if (text.empty()) return;
    for (const Span& span :
         split_spans(text.size(), pattern_.find_all(text), SplitBehavior::kIsolated, false)) {
      const std::string_view word = text.substr(span.begin, span.end - span.begin);
      const auto it = counts.find(word);
      if (it != counts.end()) {
        ++it->second;
      } else {
        counts.emplace(std::string(word), 1);
      }
    }
  }

  const Pattern& pattern_;
  const std::vector<std::string>& specials_;
};

}  // namespace

WordCounts count_words(const std::vector<std::filesystem::path>& files,
                       const BpeTrainOptions& options) {
  const Pattern pattern = Pattern::regex(options.pattern, "training pattern");
  const BlockCounter counter(pattern, options.special_tokens);
  const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
  const unsigned n_threads =
      options.n_threads > 0 ? static_cast<unsigned>(options.n_threads) : hardware;

  // Progress is reported in bytes over every file, so sizes are needed up front.
  uint64_t total_bytes = 0, done_before = 0;
  for (const auto& path : files) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (!ec) total_bytes += size;
  }

  std::vector<LocalCounts> per_thread(n_threads);
  for (const auto& path : files) {
    const std::string text = read_corpus_file(path);
    if (const auto bad = find_invalid_utf8(text)) {
      fail(KILN_ERR_INVALID_ARGUMENT, "training file " + path.string() +
                                          " is not valid UTF-8 at byte " + std::to_string(*bad));
    }
    const std::vector<std::string_view> blocks = cut_blocks(text);
    std::atomic<size_t> next_block{0};
    std::atomic<uint64_t> bytes_done{0};
    std::atomic<bool> stop{false};
    std::exception_ptr worker_error;
    std::mutex error_mutex;
    const auto work = [&](LocalCounts& counts, bool report) {
      try {
        for (size_t b; !stop && (b = next_block++) < blocks.size();) {
          counter.count(blocks[b], counts);
          bytes_done += blocks[b].size();
          if (report && options.progress) {
            const float fraction =
                total_bytes ? static_cast<float>(done_before + bytes_done) / total_bytes : 1.0f;
            if (!options.progress(std::min(fraction, 1.0f), "count")) stop = true;
          }
        }
      } catch (...) {
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (!worker_error) worker_error = std::current_exception();
        stop = true;
      }
    };
    {
      std::vector<std::jthread> workers;
      for (unsigned t = 1; t < n_threads; ++t) {
        workers.emplace_back([&, t] { work(per_thread[t], false); });
      }
      // The calling thread counts too, and is the one that calls the progress callback.
      work(per_thread[0], true);
    }
    if (worker_error) std::rethrow_exception(worker_error);
    if (stop) fail(KILN_ERR_CANCELLED, "tokenizer training cancelled by the progress callback");
    done_before += text.size();
    // The other threads may have taken the last blocks: report the whole file as done.
    if (options.progress) {
      const float fraction = total_bytes ? static_cast<float>(done_before) / total_bytes : 1.0f;
      if (!options.progress(std::min(fraction, 1.0f), "count")) {
        fail(KILN_ERR_CANCELLED, "tokenizer training cancelled by the progress callback");
      }
    }
  }

  WordCounts total;
  total.reserve(per_thread[0].size());
  for (LocalCounts& counts : per_thread) {
    for (auto& [word, n] : counts) total[word] += n;
    LocalCounts().swap(counts);
  }
  return total;
}

}  // namespace kiln::tok
