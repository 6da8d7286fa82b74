#include "tokenizer/batch_encode.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

#include "core/error.hpp"

namespace kiln {

std::vector<std::vector<int32_t>> encode_batch(const Tokenizer& tokenizer,
                                               std::span<const std::string_view> texts,
                                               bool add_special, bool parse_special,
                                               int n_threads) {
  if (n_threads < 0) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "encode batch: n_threads is " + std::to_string(n_threads) + "; expected >= 0");
  }
  // Texts are handed out in small runs: one atomic increment per text would make short lines
  // (a corpus split at newlines averages ~40 bytes) contend on the counter.
  constexpr size_t kTextsPerGrab = 64;
  const size_t n = texts.size();
  const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
  const size_t threads = std::min<size_t>(n_threads > 0 ? static_cast<size_t>(n_threads) : hardware,
                                          (n + kTextsPerGrab - 1) / kTextsPerGrab);

  std::vector<std::vector<int32_t>> results(n);
  std::atomic<size_t> next{0};
  std::mutex error_mutex;
  size_t first_error = n;  // index of the lowest failed text
  std::exception_ptr error;
  const auto work = [&] {
    for (;;) {
      const size_t begin = next.fetch_add(kTextsPerGrab);
      if (begin >= n) return;
      const size_t end = std::min(n, begin + kTextsPerGrab);
      for (size_t i = begin; i < end; ++i) {
        try {
          results[i] = tokenizer.encode(texts[i], add_special, parse_special);
        } catch (const Error& e) {
          const std::lock_guard<std::mutex> lock(error_mutex);
          if (i < first_error) {
            first_error = i;
            error = std::make_exception_ptr(
                Error(e.status(), "texts[" + std::to_string(i) + "]: " + e.what()));
          }
        } catch (...) {
          const std::lock_guard<std::mutex> lock(error_mutex);
          if (i < first_error) {
            first_error = i;
            error = std::current_exception();
          }
        }
      }
    }
  };
  {
    std::vector<std::jthread> workers;
    for (size_t t = 1; t < threads; ++t) workers.emplace_back(work);
    work();
  }
  if (error) std::rethrow_exception(error);
  return results;
}

}  // namespace kiln
