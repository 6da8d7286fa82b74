#include "engine/session.hpp"

#include <algorithm>
#include <chrono>

#include "core/error.hpp"
#include "engine/stop_matcher.hpp"

namespace kiln {

namespace {
// Prompt tokens per backend call: bounds scratch memory and how long a cancel takes to land.
constexpr size_t kPrefillChunk = 256;

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
}  // namespace

Session::Guard::Guard(const Session& s) : s_(s) {
  bool expected = false;
  if (!s_.busy_.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
    fail(KILN_ERR_BUSY,
         "this kiln_session is in use by another thread; a session may be used by one thread at "
         "a time (create one session per thread)");
  }
}

Session::Guard::~Guard() { s_.busy_.store(false, std::memory_order_release); }

Session::Session(std::shared_ptr<const Model> model, int32_t context_length, uint64_t seed)
    : model_(std::move(model)), seed_(seed), rng_(seed) {
  const int32_t model_max = model_->config.max_position_embeddings;
  if (context_length < 0) {
    fail(KILN_ERR_INVALID_ARGUMENT, "kiln_session_options.context_length is " +
                                        std::to_string(context_length) + "; expected >= 0");
  }
  if (context_length == 0) context_length = std::min(model_max, kDefaultMaxContext);
  if (model_max > 0 && context_length > model_max) {
    fail(KILN_ERR_OUT_OF_RANGE, "kiln_session_options.context_length is " +
                                    std::to_string(context_length) + " but the model supports " +
                                    std::to_string(model_max) +
                                    " positions (max_position_embeddings)");
  }
  state_ = model_->executor->create_state(context_length);
}

void Session::reset() {
  tokens_.clear();
  rng_.seed(seed_);
  cancel_.store(false);
}

void Session::throw_if_cancelled() {
  if (cancel_.exchange(false)) fail(KILN_ERR_CANCELLED, "cancelled by kiln_session_cancel()");
}

void Session::check_ids(std::span<const int32_t> ids) const {
  const int32_t vocab = model_->config.vocab_size;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      fail(KILN_ERR_OUT_OF_RANGE, "token id " + std::to_string(ids[i]) + " at index " +
                                      std::to_string(i) + " is outside the vocabulary [0, " +
                                      std::to_string(vocab) + ")");
    }
  }
  const size_t room = static_cast<size_t>(context_length() - n_past());
  if (ids.size() > room) {
    fail(KILN_ERR_CONTEXT_FULL,
         std::to_string(ids.size()) + " tokens do not fit: the context holds " +
             std::to_string(n_past()) + " of " + std::to_string(context_length()) +
             " positions (kiln_session_reset() empties it; a larger "
             "context_length gives more room)");
  }
}

void Session::forward(std::span<const int32_t> ids, float* logits, bool all_positions) {
  check_ids(ids);
  throw_if_cancelled();
  if (!all_positions || !logits) {
    forward_chunked(ids, logits);
    return;
  }
  const size_t vocab = static_cast<size_t>(model_->config.vocab_size);
  for (size_t off = 0; off < ids.size(); off += kPrefillChunk) {
    auto chunk = ids.subspan(off, std::min(kPrefillChunk, ids.size() - off));
    run_backend(chunk, logits + off * vocab, true);
    tokens_.insert(tokens_.end(), chunk.begin(), chunk.end());
  }
  // A cancel that arrived after the last layer check still belongs to this call.
  throw_if_cancelled();
}

// The backend answers a cancel request by throwing KILN_ERR_CANCELLED; the request is then
// consumed, so that the call after the cancelled one runs (kiln.h: the running call is stopped).
void Session::run_backend(std::span<const int32_t> chunk, float* logits, bool all_positions) {
  try {
    model_->executor->forward(*state_, chunk, n_past(), logits, all_positions, &cancel_);
  } catch (const Error& e) {
    if (e.status() == KILN_ERR_CANCELLED) cancel_.store(false);
    throw;
  }
}

// Runs ids in chunks; only the last chunk computes logits (of its last row).
void Session::forward_chunked(std::span<const int32_t> ids, float* logits_last_row) {
  for (size_t off = 0; off < ids.size(); off += kPrefillChunk) {
    auto chunk = ids.subspan(off, std::min(kPrefillChunk, ids.size() - off));
    const bool last = off + chunk.size() == ids.size();
    run_backend(chunk, last ? logits_last_row : nullptr, false);
    tokens_.insert(tokens_.end(), chunk.begin(), chunk.end());
  }
  throw_if_cancelled();
}

int32_t Session::sample(std::span<float> logits, const SamplingParams& params) {
  return sample_token(logits, tokens_, params, rng_);
}

int32_t Session::forward_and_sample(std::span<const int32_t> ids, const SamplingParams& params,
                                    std::span<float> logits) {
  const size_t last_off = (ids.size() - 1) / kPrefillChunk * kPrefillChunk;
  if (last_off > 0) forward_chunked(ids.first(last_off), nullptr);
  const auto last = ids.subspan(last_off);
  if (const auto id = forward_sample_on_device(last, params)) return *id;
  forward_chunked(last, logits.data());
  return sample(logits, params);
}

std::optional<int32_t> Session::forward_sample_on_device(std::span<const int32_t> chunk,
                                                         const SamplingParams& params) {
  // The host sampler sees the history with the chunk appended; so does the device's window.
  const size_t before = tokens_.size();
  tokens_.insert(tokens_.end(), chunk.begin(), chunk.end());
  penalty_counts(tokens_, params, static_cast<size_t>(model_->config.vocab_size), penalty_ids_,
                 penalty_counts_);
  tokens_.resize(before);

  DeviceSampleRequest req;
  req.temperature = params.temperature;
  req.top_k = params.top_k;
  req.top_p = params.top_p;
  req.min_p = params.min_p;
  req.repetition_penalty = params.repetition_penalty;
  req.presence_penalty = params.presence_penalty;
  req.frequency_penalty = params.frequency_penalty;
  req.penalty_ids = penalty_ids_;
  req.penalty_counts = penalty_counts_;
  // sample_token draws exactly once when temperature > 0, after the candidates are known to be
  // non-empty; drawn here up front, and given back below wherever sample_token would not draw.
  const Rng rng_before = rng_;
  if (params.temperature > 0.0f) req.u = rng_.next_double();

  std::optional<int32_t> id;
  try {
    id = model_->executor->forward_sample(*state_, chunk, n_past(), req, &cancel_);
  } catch (const Error& e) {
    rng_ = rng_before;
    if (e.status() == KILN_ERR_CANCELLED) cancel_.store(false);
    // All logits NaN: the forward pass itself completed (the chunk is in the cache), as when
    // sample_token throws after forward_chunked on the host path.
    if (e.status() == KILN_ERR_INVALID_ARGUMENT) {
      tokens_.insert(tokens_.end(), chunk.begin(), chunk.end());
    }
    throw;
  }
  if (!id) {
    rng_ = rng_before;
    return std::nullopt;
  }
  tokens_.insert(tokens_.end(), chunk.begin(), chunk.end());
  try {
    throw_if_cancelled();
  } catch (const Error&) {
    rng_ = rng_before;  // a cancel after the forward stops the host path before its draw
    throw;
  }
  return id;
}

GenerateStats Session::generate(std::span<const int32_t> prompt, const GenerateParams& params) {
  if (params.max_tokens < 0) {
    fail(KILN_ERR_INVALID_ARGUMENT, "kiln_generate_options.max_tokens is " +
                                        std::to_string(params.max_tokens) + "; expected >= 0");
  }
  if (prompt.empty() && n_past() == 0) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "the prompt is empty and the session holds no context: there is nothing to continue");
  }
  check_ids(prompt);
  throw_if_cancelled();

  GenerateStats stats;
  stats.n_prompt_tokens = static_cast<int32_t>(prompt.size());
  const size_t vocab = static_cast<size_t>(model_->config.vocab_size);
  std::vector<float> logits(vocab);

  // The next token is drawn together with the forward pass that produces its logits (on the
  // device where the executor samples there), but only when the loop below will take it: the RNG
  // then advances exactly as when sampling at the top of each iteration.
  int32_t next = -1;
  auto advance = [&](std::span<const int32_t> ids) {
    if (stats.n_generated < params.max_tokens) {
      next = forward_and_sample(ids, params.sampling, logits);
    } else {
      forward_chunked(ids, nullptr);
    }
  };

  auto t0 = Clock::now();
  if (prompt.empty()) {
    // Continue from the cache: recompute the last position's logits by re-running its token.
    // (The cache keeps K/V, not logits.) Pop it and feed it again.
    const int32_t last = tokens_.back();
    tokens_.pop_back();
    advance(std::span<const int32_t>(&last, 1));
  } else {
    advance(prompt);
  }
  stats.prefill_seconds = seconds_since(t0);

  const Tokenizer* tok = model_->tokenizer.get();
  std::unique_ptr<StreamDecoder> decoder;
  if (tok) decoder = std::make_unique<StreamDecoder>(*tok, /*skip_special=*/true);
  StopMatcher stops(params.stop_strings);
  auto emit = [&](std::string_view text, int32_t id) {
    return !params.on_token || params.on_token(text, id);
  };

  t0 = Clock::now();
  bool callback_stop = false;
  while (true) {
    if (stats.n_generated >= params.max_tokens) {
      stats.stop_reason = KILN_STOP_MAX_TOKENS;
      break;
    }
    const int32_t id = next;
    if (params.output_ids && static_cast<size_t>(stats.n_generated) < params.output_ids_capacity) {
      params.output_ids[stats.n_generated] = id;
    }
    ++stats.n_generated;
    const bool is_eos =
        std::find(model_->eos_ids.begin(), model_->eos_ids.end(), id) != model_->eos_ids.end();
    if (is_eos && !params.ignore_eos) {
      stats.stop_reason = KILN_STOP_EOS;
      break;
    }
    std::string text = decoder ? decoder->push(id) : std::string();
    std::string released = stops.push(text);
    if (!emit(released, id)) {
      stats.stop_reason = KILN_STOP_CALLBACK;
      callback_stop = true;
    }
    if (stops.stopped()) {
      stats.stop_reason = KILN_STOP_STRING;
      break;
    }
    if (callback_stop) break;
    if (n_past() >= context_length()) {
      stats.stop_reason = KILN_STOP_CONTEXT_FULL;
      break;
    }
    advance(std::span<const int32_t>(&id, 1));
  }
  stats.decode_seconds = seconds_since(t0);

  // Deliver what was held back (an incomplete character, a possible stop-string prefix).
  if (!callback_stop && stats.stop_reason != KILN_STOP_STRING) {
    std::string tail = stops.push(decoder ? decoder->flush() : std::string());
    tail += stops.flush();
    if (!tail.empty()) emit(tail, -1);
  }
  return stats;
}

}  // namespace kiln
