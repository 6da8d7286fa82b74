// kiln_tokenizer_train / kiln_tokenizer_save: byte-level BPE training behind the C ABI.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "shim.hpp"
#include "tokenizer/bpe_trainer.hpp"
#include "util/atomic_file.hpp"

using kiln::fail;
using kiln::capi::check_struct_size;
using kiln::capi::guarded;
using kiln::capi::require_non_null;

namespace {
namespace fs = std::filesystem;

kiln_tokenizer_train_options train_defaults() {
  kiln_tokenizer_train_options o{};
  o.struct_size = sizeof o;
  o.vocab_size = 32768;
  o.pattern = nullptr;
  o.special_tokens = nullptr;
  o.n_special_tokens = 0;
  o.n_threads = 0;
  o.min_frequency = 2;
  o.progress_fn = nullptr;
  o.progress_user_data = nullptr;
  return o;
}

kiln::tok::BpeTrainOptions to_train_options(const kiln_tokenizer_train_options& o) {
  kiln::tok::BpeTrainOptions options;
  options.vocab_size = o.vocab_size;
  if (o.pattern) options.pattern = o.pattern;
  if (o.n_special_tokens > 0) require_non_null(o.special_tokens, "options.special_tokens");
  for (size_t i = 0; i < o.n_special_tokens; ++i) {
    if (!o.special_tokens[i]) {
      fail(KILN_ERR_INVALID_ARGUMENT, "options.special_tokens[" + std::to_string(i) + "] is NULL");
    }
    options.special_tokens.emplace_back(o.special_tokens[i]);
  }
  options.n_threads = o.n_threads;
  options.min_frequency = o.min_frequency;
  if (o.progress_fn) {
    const kiln_progress_fn fn = o.progress_fn;
    void* user_data = o.progress_user_data;
    options.progress = [fn, user_data](float fraction, const char* stage) {
      return fn(fraction, stage, user_data) == 0;
    };
  }
  return options;
}
}  // namespace

extern "C" {

KILN_API kiln_status kiln_tokenizer_train_options_default(kiln_tokenizer_train_options* options,
                                                          size_t struct_size) {
  return guarded([&] {
    kiln::capi::init_options(options, struct_size, "kiln_tokenizer_train_options",
                             train_defaults());
  });
}

KILN_API kiln_status kiln_tokenizer_train(const char* const* files, size_t n_files,
                                          const kiln_tokenizer_train_options* options,
                                          kiln_tokenizer** out_tokenizer) {
  return guarded([&] {
    require_non_null(out_tokenizer, "out_tokenizer");
    *out_tokenizer = nullptr;
    if (n_files > 0) require_non_null(files, "files");
    check_struct_size(options, "kiln_tokenizer_train_options");
    std::vector<fs::path> paths;
    for (size_t i = 0; i < n_files; ++i) {
      if (!files[i]) fail(KILN_ERR_INVALID_ARGUMENT, "files[" + std::to_string(i) + "] is NULL");
      paths.emplace_back(files[i]);
    }
    const kiln_tokenizer_train_options opts = options ? *options : train_defaults();
    auto handle = std::make_unique<kiln_tokenizer>();
    handle->trained_json = kiln::tok::train_bpe(paths, to_train_options(opts));
    handle->owned = kiln::Tokenizer::from_json(handle->trained_json, "");
    handle->impl = handle->owned.get();
    *out_tokenizer = handle.release();
  });
}

KILN_API kiln_status kiln_tokenizer_save(const kiln_tokenizer* tokenizer, const char* path) {
  return guarded([&] {
    require_non_null(tokenizer, "tokenizer");
    require_non_null(path, "path");
    if (tokenizer->trained_json.empty()) {
      fail(KILN_ERR_UNSUPPORTED,
           "kiln_tokenizer_save: this tokenizer was loaded, not trained; copy its tokenizer.json");
    }
    fs::path target(path);
    if (target.extension() != ".json") {
      std::error_code ec;
      fs::create_directories(target, ec);
      if (ec) {
        fail(KILN_ERR_IO, "cannot create directory " + target.string() + ": " + ec.message());
      }
      target /= "tokenizer.json";
    }
    kiln::write_file_atomically(target, tokenizer->trained_json);
  });
}

}  // extern "C"
