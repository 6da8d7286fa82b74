// kiln_model_* and tokenizer entry points.
#include <algorithm>
#include <vector>

#include "shim.hpp"

using kiln::fail;
using kiln::capi::check_flags;
using kiln::capi::copy_out;
using kiln::capi::guarded;
using kiln::capi::require_non_null;

namespace {
kiln_model_load_options load_defaults() {
  kiln_model_load_options o{};
  o.struct_size = sizeof o;
  o.precision = KILN_PRECISION_DEFAULT;
  return o;
}
}  // namespace

extern "C" {

KILN_API kiln_status kiln_model_load_options_default(kiln_model_load_options* options,
                                                     size_t struct_size) {
  return guarded([&] {
    kiln::capi::init_options(options, struct_size, "kiln_model_load_options", load_defaults());
  });
}

KILN_API kiln_status kiln_model_load(kiln_runtime* runtime, const char* path,
                                     const kiln_model_load_options* options,
                                     kiln_model** out_model) {
  return guarded([&] {
    require_non_null(out_model, "out_model");
    *out_model = nullptr;
    require_non_null(runtime, "runtime");
    require_non_null(path, "path");
    const kiln_model_load_options o =
        kiln::capi::read_options(options, load_defaults(), "kiln_model_load_options");
    // Compared as the raw int: loading an enum lvalue that holds no enumerator is undefined
    // (UBSan's -fsanitize=enum), and a caller may well pass one.
    const int precision = kiln::capi::raw_enum(o.precision);
    if (precision != KILN_PRECISION_DEFAULT && precision != KILN_PRECISION_BF16 &&
        precision != KILN_PRECISION_F32) {
      fail(KILN_ERR_INVALID_ARGUMENT,
           "kiln_model_load_options.precision is " + std::to_string(precision) +
               "; expected KILN_PRECISION_DEFAULT (0), KILN_PRECISION_BF16 (1) or "
               "KILN_PRECISION_F32 (2)");
    }
    kiln::ProgressFn progress;
    if (o.progress_fn) {
      progress = [fn = o.progress_fn, ud = o.progress_user_data](float f, const char* stage) {
        return fn(f, stage, ud) == 0;
      };
    }
    auto model = std::make_unique<kiln_model>();
    model->impl = kiln::load_model(*runtime->impl, path, progress, o.precision);
    model->runtime = runtime->impl.get();
    model->tokenizer.impl = model->impl->tokenizer.get();
    *out_model = model.release();
  });
}

KILN_API void kiln_model_free(kiln_model* model) { delete model; }

KILN_API kiln_status kiln_model_get_info(const kiln_model* model, kiln_model_info* info) {
  return guarded([&] {
    require_non_null(model, "model");
    require_non_null(info, "info");
    kiln::capi::check_struct_size(info, "kiln_model_info");
    const kiln::Model& m = *model->impl;
    const kiln::ModelConfig& c = m.config;
    info->architecture = c.architecture.c_str();
    info->vocab_size = c.vocab_size;
    info->hidden_size = c.hidden_size;
    info->n_layers = c.n_layers;
    info->n_heads = c.n_heads;
    info->n_kv_heads = c.n_kv_heads;
    info->head_dim = c.head_dim;
    info->intermediate_size = c.intermediate_size;
    info->context_length = c.max_position_embeddings;
    info->n_parameters = m.n_parameters;
    info->bos_token_id = m.bos_id;
    info->eos_token_id = m.eos_ids.empty() ? -1 : m.eos_ids.front();
    info->add_bos = m.add_bos ? 1 : 0;
  });
}

KILN_API kiln_status kiln_model_eos_ids(const kiln_model* model, int32_t* ids, size_t capacity,
                                        size_t* n_ids) {
  return guarded([&] {
    require_non_null(model, "model");
    const auto& eos = model->impl->eos_ids;
    copy_out(eos.data(), eos.size(), sizeof(int32_t), ids, capacity, n_ids, "eos ids");
  });
}

KILN_API kiln_status kiln_tokenize(const kiln_model* model, const char* text, size_t text_len,
                                   uint32_t flags, int32_t* ids, size_t capacity, size_t* n_ids) {
  return guarded([&] {
    require_non_null(model, "model");
    if (text_len > 0) require_non_null(text, "text");
    check_flags(flags, KILN_TOKENIZE_ADD_SPECIAL | KILN_TOKENIZE_PARSE_SPECIAL, "tokenize flags");
    const auto& tok = model->impl->require_tokenizer();
    std::vector<int32_t> out =
        tok.encode(std::string_view(text ? text : "", text_len), flags & KILN_TOKENIZE_ADD_SPECIAL,
                   flags & KILN_TOKENIZE_PARSE_SPECIAL);
    copy_out(out.data(), out.size(), sizeof(int32_t), ids, capacity, n_ids, "token ids");
  });
}

KILN_API kiln_status kiln_detokenize(const kiln_model* model, const int32_t* ids, size_t n_ids,
                                     uint32_t flags, char* text, size_t capacity,
                                     size_t* text_len) {
  return guarded([&] {
    require_non_null(model, "model");
    if (n_ids > 0) require_non_null(ids, "ids");
    check_flags(flags, KILN_DETOKENIZE_SKIP_SPECIAL, "detokenize flags");
    const auto& tok = model->impl->require_tokenizer();
    std::string out =
        tok.decode(std::span<const int32_t>(ids, n_ids), flags & KILN_DETOKENIZE_SKIP_SPECIAL);
    copy_out(out.data(), out.size(), 1, text, capacity, text_len, "text");
  });
}

KILN_API kiln_status kiln_token_to_piece(const kiln_model* model, int32_t id, char* piece,
                                         size_t capacity, size_t* piece_len) {
  return guarded([&] {
    require_non_null(model, "model");
    const auto& tok = model->impl->require_tokenizer();
    std::string out = tok.token_bytes(id);
    copy_out(out.data(), out.size(), 1, piece, capacity, piece_len, "piece");
  });
}

}  // extern "C"
