// kiln_tokenizer_*: a tokenizer.json used on its own, without weights (kiln-tokenize, data
// pipelines), and the borrowed view of a loaded model's tokenizer.
#include <algorithm>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/log.hpp"
#include "shim.hpp"
#include "tokenizer/batch_encode.hpp"
#include "tokenizer/load_timer.hpp"

using kiln::fail;
using kiln::capi::check_flags;
using kiln::capi::copy_out;
using kiln::capi::guarded;
using kiln::capi::require_non_null;

namespace {
namespace fs = std::filesystem;

// `path` is a directory with tokenizer.json or the tokenizer.json file itself; the config is the
// tokenizer_config.json beside it (Tokenizer::from_files applies defaults when it is absent).
std::unique_ptr<kiln::Tokenizer> load_tokenizer(const fs::path& path) {
  std::error_code ec;
  const bool is_dir = fs::is_directory(path, ec);
  const fs::path json = is_dir ? path / "tokenizer.json" : path;
  if (!fs::is_regular_file(json, ec)) {
    fail(KILN_ERR_NOT_FOUND, is_dir
                                 ? "tokenizer directory " + path.string() + " has no tokenizer.json"
                                 : "tokenizer file " + path.string() + " does not exist");
  }
  // Where the load time went, for whoever listens at debug level (kiln-tokenize bench --phases).
  kiln::tok::LoadTimer timer;
  auto tokenizer =
      kiln::Tokenizer::from_files(json, json.parent_path() / "tokenizer_config.json", &timer);
  // A sink of its own at debug level defers to the process-wide sink's threshold (log.cpp).
  kiln::Logger(kiln::LogSink{nullptr, nullptr, KILN_LOG_DEBUG})
      .debug("tokenizer load " + json.string() + ": " + timer.summary());
  return tokenizer;
}

const kiln::Tokenizer& require_tokenizer(const kiln_tokenizer* tokenizer) {
  require_non_null(tokenizer, "tokenizer");
  if (!tokenizer->impl) fail(KILN_ERR_INVALID_ARGUMENT, "tokenizer handle holds no tokenizer");
  return *tokenizer->impl;
}
}  // namespace

extern "C" {

KILN_API kiln_status kiln_tokenizer_load(const char* path, kiln_tokenizer** out_tokenizer) {
  return guarded([&] {
    require_non_null(out_tokenizer, "out_tokenizer");
    *out_tokenizer = nullptr;
    require_non_null(path, "path");
    auto handle = std::make_unique<kiln_tokenizer>();
    handle->owned = load_tokenizer(path);
    handle->impl = handle->owned.get();
    *out_tokenizer = handle.release();
  });
}

KILN_API void kiln_tokenizer_free(kiln_tokenizer* tokenizer) { delete tokenizer; }

KILN_API kiln_status kiln_tokenizer_encode(const kiln_tokenizer* tokenizer, const char* text,
                                           size_t text_len, uint32_t flags, int32_t* ids,
                                           size_t capacity, size_t* n_ids) {
  return guarded([&] {
    const kiln::Tokenizer& tok = require_tokenizer(tokenizer);
    if (text_len > 0) require_non_null(text, "text");
    check_flags(flags, KILN_TOKENIZE_ADD_SPECIAL | KILN_TOKENIZE_PARSE_SPECIAL, "tokenize flags");
    const std::vector<int32_t> out =
        tok.encode(std::string_view(text ? text : "", text_len), flags & KILN_TOKENIZE_ADD_SPECIAL,
                   flags & KILN_TOKENIZE_PARSE_SPECIAL);
    copy_out(out.data(), out.size(), sizeof(int32_t), ids, capacity, n_ids, "token ids");
  });
}

KILN_API kiln_status kiln_tokenizer_encode_threaded(const kiln_tokenizer* tokenizer,
                                                    const char* text, size_t text_len,
                                                    uint32_t flags, int32_t n_threads, int32_t* ids,
                                                    size_t capacity, size_t* n_ids) {
  return guarded([&] {
    const kiln::Tokenizer& tok = require_tokenizer(tokenizer);
    if (text_len > 0) require_non_null(text, "text");
    check_flags(flags, KILN_TOKENIZE_ADD_SPECIAL | KILN_TOKENIZE_PARSE_SPECIAL, "tokenize flags");
    if (n_threads < 0) {
      fail(KILN_ERR_INVALID_ARGUMENT,
           "n_threads is " + std::to_string(n_threads) + "; expected >= 0 (0 = one per core)");
    }
    const std::vector<int32_t> out = tok.encode_threaded(
        std::string_view(text ? text : "", text_len), flags & KILN_TOKENIZE_ADD_SPECIAL,
        flags & KILN_TOKENIZE_PARSE_SPECIAL, n_threads);
    copy_out(out.data(), out.size(), sizeof(int32_t), ids, capacity, n_ids, "token ids");
  });
}

KILN_API kiln_status kiln_tokenizer_encode_batch(const kiln_tokenizer* tokenizer,
                                                 const char* const* texts, const size_t* text_lens,
                                                 size_t n_texts, uint32_t flags, int32_t n_threads,
                                                 int32_t* ids, size_t capacity, size_t* offsets,
                                                 size_t* n_ids) {
  return guarded([&] {
    const kiln::Tokenizer& tok = require_tokenizer(tokenizer);
    require_non_null(n_ids, "n_ids");
    require_non_null(offsets, "offsets");
    if (n_texts > 0) {
      require_non_null(texts, "texts");
      require_non_null(text_lens, "text_lens");
    }
    check_flags(flags, KILN_TOKENIZE_ADD_SPECIAL | KILN_TOKENIZE_PARSE_SPECIAL, "tokenize flags");
    std::vector<std::string_view> views(n_texts);
    for (size_t i = 0; i < n_texts; ++i) {
      if (!texts[i] && text_lens[i] > 0) {
        fail(KILN_ERR_INVALID_ARGUMENT, "texts[" + std::to_string(i) + "] is NULL but text_lens[" +
                                            std::to_string(i) + "] is " +
                                            std::to_string(text_lens[i]));
      }
      views[i] = std::string_view(texts[i] ? texts[i] : "", text_lens[i]);
    }
    const auto results = kiln::encode_batch(tok, views, flags & KILN_TOKENIZE_ADD_SPECIAL,
                                            flags & KILN_TOKENIZE_PARSE_SPECIAL, n_threads);
    size_t total = 0;
    for (size_t i = 0; i < n_texts; ++i) {
      offsets[i] = total;
      total += results[i].size();
    }
    offsets[n_texts] = total;
    *n_ids = total;
    if (total > capacity) {
      fail(KILN_ERR_BUFFER_TOO_SMALL, "token ids need room for " + std::to_string(total) +
                                          " but the buffer holds " + std::to_string(capacity));
    }
    if (total > 0) require_non_null(ids, "ids");
    for (size_t i = 0; i < n_texts; ++i) {
      std::copy(results[i].begin(), results[i].end(), ids + offsets[i]);
    }
  });
}

KILN_API kiln_status kiln_tokenizer_decode(const kiln_tokenizer* tokenizer, const int32_t* ids,
                                           size_t n_ids, uint32_t flags, char* text,
                                           size_t capacity, size_t* text_len) {
  return guarded([&] {
    const kiln::Tokenizer& tok = require_tokenizer(tokenizer);
    if (n_ids > 0) require_non_null(ids, "ids");
    check_flags(flags, KILN_DETOKENIZE_SKIP_SPECIAL, "detokenize flags");
    const std::string out =
        tok.decode(std::span<const int32_t>(ids, n_ids), flags & KILN_DETOKENIZE_SKIP_SPECIAL);
    copy_out(out.data(), out.size(), 1, text, capacity, text_len, "text");
  });
}

KILN_API kiln_status kiln_tokenizer_vocab_size(const kiln_tokenizer* tokenizer, int32_t* out_size) {
  return guarded([&] {
    require_non_null(tokenizer, "tokenizer");
    require_non_null(out_size, "out_size");
    *out_size = tokenizer->impl ? tokenizer->impl->vocab_size() : 0;
  });
}

KILN_API kiln_status kiln_model_tokenizer(const kiln_model* model,
                                          const kiln_tokenizer** out_tokenizer) {
  return guarded([&] {
    require_non_null(out_tokenizer, "out_tokenizer");
    *out_tokenizer = nullptr;
    require_non_null(model, "model");
    if (!model->tokenizer.impl) {
      kiln::fail(KILN_ERR_UNSUPPORTED,
                 "this model has no tokenizer (its directory has no tokenizer.json)");
    }
    *out_tokenizer = &model->tokenizer;
  });
}

}  // extern "C"
