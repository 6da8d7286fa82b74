// kiln_session_*, kiln_forward, kiln_generate*, kiln_sample entry points.
#include <cmath>
#include <vector>

#include "shim.hpp"

using kiln::fail;
using kiln::capi::check_struct_size;
using kiln::capi::guarded;
using kiln::capi::init_options;
using kiln::capi::require_non_null;

namespace {

kiln_session_options session_defaults() {
  kiln_session_options o{};
  o.struct_size = sizeof o;
  o.context_length = 0;
  o.seed = 0xC0FFEE;
  return o;
}

kiln_sampling_options sampling_defaults() {
  kiln_sampling_options o{};
  o.struct_size = sizeof o;
  const kiln::SamplingParams p;
  o.temperature = p.temperature;
  o.top_k = p.top_k;
  o.top_p = p.top_p;
  o.min_p = p.min_p;
  o.repetition_penalty = p.repetition_penalty;
  o.presence_penalty = p.presence_penalty;
  o.frequency_penalty = p.frequency_penalty;
  o.penalty_last_n = p.penalty_last_n;
  return o;
}

kiln_generate_options generate_defaults() {
  kiln_generate_options o{};
  o.struct_size = sizeof o;
  o.max_tokens = 256;
  o.tokenize_flags = KILN_TOKENIZE_ADD_SPECIAL;
  return o;
}

kiln::SamplingParams to_params(const kiln_sampling_options* opts) {
  check_struct_size(opts, "kiln_sampling_options");
  const kiln_sampling_options o = opts ? *opts : sampling_defaults();
  auto bad = [](const char* field, double v, const char* expected) {
    fail(KILN_ERR_INVALID_ARGUMENT, std::string("kiln_sampling_options.") + field + " is " +
                                        std::to_string(v) + "; expected " + expected);
  };
  if (!std::isfinite(o.temperature) || o.temperature < 0) bad("temperature", o.temperature, ">= 0");
  if (!(o.top_p > 0 && o.top_p <= 1)) bad("top_p", o.top_p, "in (0, 1]");
  if (!(o.min_p >= 0 && o.min_p <= 1)) bad("min_p", o.min_p, "in [0, 1]");
  if (o.top_k < 0) bad("top_k", o.top_k, ">= 0");
  if (!(o.repetition_penalty > 0) || !std::isfinite(o.repetition_penalty)) {
    bad("repetition_penalty", o.repetition_penalty, "> 0 (1 = off)");
  }
  if (!std::isfinite(o.presence_penalty)) bad("presence_penalty", o.presence_penalty, "finite");
  if (!std::isfinite(o.frequency_penalty)) bad("frequency_penalty", o.frequency_penalty, "finite");
  kiln::SamplingParams p;
  p.temperature = o.temperature;
  p.top_k = o.top_k;
  p.top_p = o.top_p;
  p.min_p = o.min_p;
  p.repetition_penalty = o.repetition_penalty;
  p.presence_penalty = o.presence_penalty;
  p.frequency_penalty = o.frequency_penalty;
  p.penalty_last_n = o.penalty_last_n;
  return p;
}

void run_generate(kiln_session* session, std::span<const int32_t> prompt,
                  const kiln_generate_options& o, kiln_generate_result* result) {
  kiln::GenerateParams gp;
  gp.sampling = to_params(o.sampling);
  gp.max_tokens = o.max_tokens;
  gp.ignore_eos = o.ignore_eos != 0;
  if (o.n_stop_strings > 0) require_non_null(o.stop_strings, "kiln_generate_options.stop_strings");
  for (size_t i = 0; i < o.n_stop_strings; ++i) {
    if (!o.stop_strings[i]) {
      fail(KILN_ERR_INVALID_ARGUMENT,
           "kiln_generate_options.stop_strings[" + std::to_string(i) + "] is NULL");
    }
    if (o.stop_strings[i][0] != '\0') gp.stop_strings.emplace_back(o.stop_strings[i]);
  }
  if (o.token_fn) {
    gp.on_token = [fn = o.token_fn, ud = o.token_user_data](std::string_view text, int32_t id) {
      return fn(text.data(), text.size(), id, ud) == 0;
    };
  }
  if (o.output_ids_capacity > 0) require_non_null(o.output_ids, "kiln_generate_options.output_ids");
  gp.output_ids = o.output_ids;
  gp.output_ids_capacity = o.output_ids_capacity;

  const kiln::GenerateStats s = session->impl->generate(prompt, gp);
  if (result) {
    result->n_prompt_tokens = s.n_prompt_tokens;
    result->n_generated = s.n_generated;
    result->stop_reason = s.stop_reason;
    result->prefill_seconds = s.prefill_seconds;
    result->decode_seconds = s.decode_seconds;
    result->prefill_tokens_per_second =
        s.prefill_seconds > 0 ? s.n_prompt_tokens / s.prefill_seconds : 0.0;
    result->decode_tokens_per_second =
        s.decode_seconds > 0 ? s.n_generated / s.decode_seconds : 0.0;
  }
}

}  // namespace

extern "C" {

KILN_API kiln_status kiln_session_options_default(kiln_session_options* options,
                                                  size_t struct_size) {
  return guarded(
      [&] { init_options(options, struct_size, "kiln_session_options", session_defaults()); });
}

KILN_API kiln_status kiln_sampling_options_default(kiln_sampling_options* options,
                                                   size_t struct_size) {
  return guarded(
      [&] { init_options(options, struct_size, "kiln_sampling_options", sampling_defaults()); });
}

KILN_API kiln_status kiln_generate_options_default(kiln_generate_options* options,
                                                   size_t struct_size) {
  return guarded(
      [&] { init_options(options, struct_size, "kiln_generate_options", generate_defaults()); });
}

KILN_API kiln_status kiln_session_create(kiln_model* model, const kiln_session_options* options,
                                         kiln_session** out_session) {
  return guarded([&] {
    require_non_null(out_session, "out_session");
    *out_session = nullptr;
    require_non_null(model, "model");
    check_struct_size(options, "kiln_session_options");
    const kiln_session_options o = options ? *options : session_defaults();
    auto s = std::make_unique<kiln_session>();
    s->impl = std::make_unique<kiln::Session>(model->impl, o.context_length, o.seed);
    *out_session = s.release();
  });
}

KILN_API void kiln_session_free(kiln_session* session) { delete session; }

KILN_API kiln_status kiln_session_reset(kiln_session* session) {
  return guarded([&] {
    require_non_null(session, "session");
    kiln::Session::Guard guard(*session->impl);
    session->impl->reset();
  });
}

KILN_API kiln_status kiln_session_position(const kiln_session* session, int32_t* n_past,
                                           int32_t* context_length) {
  return guarded([&] {
    require_non_null(session, "session");
    kiln::Session::Guard guard(*session->impl);
    if (n_past) *n_past = session->impl->n_past();
    if (context_length) *context_length = session->impl->context_length();
  });
}

KILN_API kiln_status kiln_session_cancel(kiln_session* session) {
  return guarded([&] {
    require_non_null(session, "session");
    session->impl->cancel();
  });
}

KILN_API kiln_status kiln_forward(kiln_session* session, const int32_t* ids, size_t n_ids,
                                  kiln_logits_mode mode, float* logits, size_t capacity,
                                  size_t* n_logits) {
  return guarded([&] {
    require_non_null(session, "session");
    if (n_ids > 0) require_non_null(ids, "ids");
    kiln::Session::Guard guard(*session->impl);
    const size_t vocab = static_cast<size_t>(session->impl->model().config.vocab_size);
    size_t needed = 0;
    mode = kiln::capi::checked_enum(mode, KILN_LOGITS_NONE, KILN_LOGITS_ALL,
                                    "mode (KILN_LOGITS_NONE, _LAST or _ALL)");
    switch (mode) {
      case KILN_LOGITS_NONE: needed = 0; break;
      case KILN_LOGITS_LAST: needed = n_ids > 0 ? vocab : 0; break;
      case KILN_LOGITS_ALL: needed = n_ids * vocab; break;
    }
    if (n_logits) *n_logits = needed;
    if (needed > capacity) {
      fail(KILN_ERR_BUFFER_TOO_SMALL, "logits need " + std::to_string(needed) +
                                          " floats but the buffer holds " +
                                          std::to_string(capacity));
    }
    if (needed > 0) require_non_null(logits, "logits");
    session->impl->forward(std::span<const int32_t>(ids, n_ids), needed > 0 ? logits : nullptr,
                           mode == KILN_LOGITS_ALL);
  });
}

KILN_API kiln_status kiln_generate(kiln_session* session, const char* prompt, size_t prompt_len,
                                   const kiln_generate_options* options,
                                   kiln_generate_result* result) {
  return guarded([&] {
    require_non_null(session, "session");
    if (prompt_len > 0) require_non_null(prompt, "prompt");
    check_struct_size(options, "kiln_generate_options");
    check_struct_size(result, "kiln_generate_result");
    kiln::Session::Guard guard(*session->impl);
    const kiln_generate_options o = options ? *options : generate_defaults();
    if (o.tokenize_flags & ~static_cast<uint32_t>(KILN_TOKENIZE_ADD_SPECIAL | KILN_TOKENIZE_PARSE_SPECIAL)) {
      fail(KILN_ERR_INVALID_ARGUMENT, "kiln_generate_options.tokenize_flags has unknown bits set");
    }
    const auto& tok = session->impl->model().require_tokenizer();
    // Continuing a conversation: BOS belongs only at the very start of the context.
    const bool add_special =
        (o.tokenize_flags & KILN_TOKENIZE_ADD_SPECIAL) && session->impl->n_past() == 0;
    std::vector<int32_t> ids = tok.encode(std::string_view(prompt ? prompt : "", prompt_len),
                                          add_special,
                                          o.tokenize_flags & KILN_TOKENIZE_PARSE_SPECIAL);
    run_generate(session, ids, o, result);
  });
}

KILN_API kiln_status kiln_generate_ids(kiln_session* session, const int32_t* prompt_ids,
                                       size_t n_prompt_ids, const kiln_generate_options* options,
                                       kiln_generate_result* result) {
  return guarded([&] {
    require_non_null(session, "session");
    if (n_prompt_ids > 0) require_non_null(prompt_ids, "prompt_ids");
    check_struct_size(options, "kiln_generate_options");
    check_struct_size(result, "kiln_generate_result");
    kiln::Session::Guard guard(*session->impl);
    const kiln_generate_options o = options ? *options : generate_defaults();
    run_generate(session, std::span<const int32_t>(prompt_ids, n_prompt_ids), o, result);
  });
}

KILN_API kiln_status kiln_sample(kiln_session* session, const float* logits, size_t n_logits,
                                 const kiln_sampling_options* options, int32_t* out_id) {
  return guarded([&] {
    require_non_null(session, "session");
    require_non_null(logits, "logits");
    require_non_null(out_id, "out_id");
    kiln::Session::Guard guard(*session->impl);
    const size_t vocab = static_cast<size_t>(session->impl->model().config.vocab_size);
    if (n_logits != vocab) {
      fail(KILN_ERR_INVALID_ARGUMENT, "n_logits is " + std::to_string(n_logits) +
                                          "; expected the vocabulary size " + std::to_string(vocab));
    }
    const kiln::SamplingParams p = to_params(options);
    std::vector<float> work(logits, logits + n_logits);
    *out_id = session->impl->sample(work, p);
  });
}

}  // extern "C"
