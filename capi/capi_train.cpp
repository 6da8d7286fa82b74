// kiln_model_create, kiln_trainer_*, kiln_train_step / kiln_eval_loss, checkpoints and export.
#include <cmath>
#include <string>
#include <vector>

#include "engine/model_factory.hpp"
#include "shim.hpp"

using kiln::fail;
using kiln::capi::check_struct_size;
using kiln::capi::checked_enum;
using kiln::capi::copy_out;
using kiln::capi::guarded;
using kiln::capi::raw_enum;
using kiln::capi::require_non_null;

namespace {

kiln_model_create_options create_defaults() {
  kiln_model_create_options o{};
  o.struct_size = sizeof o;
  o.seed = 1337;
  return o;
}

kiln_trainer_options trainer_defaults() {
  kiln_trainer_options o{};
  o.struct_size = sizeof o;
  o.optimizer = KILN_OPTIMIZER_ADAMW;
  o.learning_rate = 3e-4f;
  o.beta1 = 0.9f;
  o.beta2 = 0.95f;
  o.epsilon = 1e-8f;
  o.weight_decay = 0.1f;
  o.muon_learning_rate = 0.02f;
  o.muon_momentum = 0.95f;
  o.muon_ns_steps = 5;
  o.schedule = KILN_LR_CONSTANT;
  o.warmup_steps = 0;
  o.total_steps = 0;
  o.min_lr_ratio = 0.0f;
  o.decay_fraction = 0.2f;
  o.grad_accum_steps = 1;
  o.max_grad_norm = 1.0f;
  o.seed = 1337;
  o.n_mtp_heads = 0;
  for (int k = 0; k < KILN_MAX_MTP_HEADS; ++k) o.mtp_loss_weights[k] = 1.0f;
  return o;
}

kiln::TrainerOptions to_engine(const kiln_trainer_options& o) {
  kiln::TrainerOptions t;
  kiln::OptimizerOptions& opt = t.optimizer;
  opt.kind = checked_enum(o.optimizer, KILN_OPTIMIZER_ADAMW, KILN_OPTIMIZER_MUON,
                          "kiln_trainer_options.optimizer") == KILN_OPTIMIZER_MUON
                 ? kiln::OptimizerKind::Muon
                 : kiln::OptimizerKind::AdamW;
  opt.lr = o.learning_rate;
  opt.beta1 = o.beta1;
  opt.beta2 = o.beta2;
  opt.eps = o.epsilon;
  opt.weight_decay = o.weight_decay;
  opt.muon.lr = o.muon_learning_rate;
  opt.muon.momentum = o.muon_momentum;
  opt.muon.ns_steps = o.muon_ns_steps;
  if (o.n_param_groups > 0) require_non_null(o.param_groups, "kiln_trainer_options.param_groups");
  for (size_t i = 0; i < o.n_param_groups; ++i) {
    const kiln_param_group& g = o.param_groups[i];
    const std::string what = "kiln_trainer_options.param_groups[" + std::to_string(i) + "].role";
    const int role =
        raw_enum(checked_enum(g.role, KILN_PARAM_MATRIX, KILN_PARAM_BIAS, what.c_str()));
    if (std::isnan(g.learning_rate) || std::isnan(g.weight_decay)) {
      fail(KILN_ERR_INVALID_ARGUMENT, "kiln_trainer_options.param_groups[" + std::to_string(i) +
                                          "] has a NaN learning_rate or weight_decay");
    }
    kiln::ParamGroup& group = opt.groups[static_cast<size_t>(role)];
    if (g.learning_rate >= 0) group.lr = g.learning_rate;
    if (g.weight_decay >= 0) group.weight_decay = g.weight_decay;
  }
  kiln::LrSchedule& s = t.schedule;
  switch (checked_enum(o.schedule, KILN_LR_CONSTANT, KILN_LR_WARMUP_STABLE_DECAY,
                       "kiln_trainer_options.schedule")) {
    case KILN_LR_CONSTANT:
      s.kind = kiln::ScheduleKind::Constant;
      break;
    case KILN_LR_WARMUP_COSINE:
      s.kind = kiln::ScheduleKind::WarmupCosine;
      break;
    case KILN_LR_WARMUP_LINEAR:
      s.kind = kiln::ScheduleKind::WarmupLinear;
      break;
    case KILN_LR_WARMUP_STABLE_DECAY:
      s.kind = kiln::ScheduleKind::WarmupStableDecay;
      break;
  }
  s.warmup_steps = o.warmup_steps;
  s.total_steps = o.total_steps;
  s.min_lr_ratio = o.min_lr_ratio;
  s.decay_fraction = o.decay_fraction;
  t.grad_accum_steps = o.grad_accum_steps;
  t.clip_norm = o.max_grad_norm;
  t.seed = o.seed;
  t.residual_dropout = o.residual_dropout;
  if (o.n_mtp_heads < 0 || o.n_mtp_heads > KILN_MAX_MTP_HEADS) {
    fail(KILN_ERR_INVALID_ARGUMENT, "kiln_trainer_options.n_mtp_heads is " +
                                        std::to_string(o.n_mtp_heads) + "; expected 0.." +
                                        std::to_string(KILN_MAX_MTP_HEADS));
  }
  t.mtp_weights.assign(o.mtp_loss_weights, o.mtp_loss_weights + o.n_mtp_heads);
  kiln::validate_trainer_options(t);
  return t;
}

kiln::ProgressFn wrap_progress(kiln_progress_fn fn, void* user_data) {
  if (fn == nullptr) return {};
  return [fn, user_data](float f, const char* stage) { return fn(f, stage, user_data) == 0; };
}

kiln::BatchView to_view(const kiln_batch* batch) {
  require_non_null(batch, "batch");
  check_struct_size(batch, "kiln_batch");
  if (batch->batch_size <= 0 || batch->seq_len <= 0) {
    fail(KILN_ERR_INVALID_ARGUMENT, "kiln_batch has batch_size " +
                                        std::to_string(batch->batch_size) + " and seq_len " +
                                        std::to_string(batch->seq_len) + "; both must be > 0");
  }
  require_non_null(batch->inputs, "kiln_batch.inputs");
  require_non_null(batch->targets, "kiln_batch.targets");
  const size_t n = static_cast<size_t>(batch->batch_size) * static_cast<size_t>(batch->seq_len);
  kiln::BatchView v;
  v.rows = batch->batch_size;
  v.cols = batch->seq_len;
  v.inputs = {batch->inputs, n};
  v.targets = {batch->targets, n};
  if (batch->loss_mask) v.loss_mask = {batch->loss_mask, n};
  if (batch->loss_weights) v.loss_weights = {batch->loss_weights, n};
  return v;
}

void fill_result(const kiln::StepResult& r, kiln_train_result* out) {
  if (!out) return;
  out->loss = r.loss;
  out->objective = r.objective;
  for (int k = 0; k < KILN_MAX_MTP_HEADS; ++k) out->mtp_losses[k] = r.mtp_losses[k];
  out->n_tokens = r.n_tokens;
  out->weight_sum = r.weight_sum;
  out->grad_norm = r.grad_norm;
  out->learning_rate = r.learning_rate;
  out->tokens_per_second = r.tokens_per_second;
  out->step = r.step;
}

kiln_trainer* trainer_handle(std::unique_ptr<kiln::Trainer> impl, const kiln::Runtime* runtime) {
  auto h = std::make_unique<kiln_trainer>();
  h->impl = std::move(impl);
  h->runtime = runtime;
  return h.release();
}

kiln_model* model_handle(std::shared_ptr<const kiln::Model> impl, const kiln::Runtime* runtime) {
  auto model = std::make_unique<kiln_model>();
  model->impl = std::move(impl);
  model->runtime = runtime;
  model->tokenizer.impl = model->impl->tokenizer.get();
  return model.release();
}

}  // namespace

extern "C" {

KILN_API kiln_status kiln_model_create_options_default(kiln_model_create_options* options,
                                                       size_t struct_size) {
  return guarded([&] {
    kiln::capi::init_options(options, struct_size, "kiln_model_create_options", create_defaults());
  });
}

KILN_API kiln_status kiln_model_create(kiln_runtime* runtime, const char* config_json,
                                       size_t config_json_len,
                                       const kiln_model_create_options* options,
                                       kiln_model** out_model) {
  return guarded([&] {
    require_non_null(out_model, "out_model");
    *out_model = nullptr;
    require_non_null(runtime, "runtime");
    require_non_null(config_json, "config_json");
    check_struct_size(options, "kiln_model_create_options");
    const kiln_model_create_options o = options ? *options : create_defaults();
    auto model = kiln::create_model(*runtime->impl, std::string(config_json, config_json_len),
                                    o.seed, o.tokenizer_path ? o.tokenizer_path : "");
    *out_model = model_handle(std::move(model), runtime->impl.get());
  });
}

KILN_API kiln_status kiln_trainer_options_default(kiln_trainer_options* options,
                                                  size_t struct_size) {
  return guarded([&] {
    kiln::capi::init_options(options, struct_size, "kiln_trainer_options", trainer_defaults());
  });
}

KILN_API kiln_status kiln_trainer_create(const kiln_model* model,
                                         const kiln_trainer_options* options,
                                         kiln_trainer** out_trainer) {
  return guarded([&] {
    require_non_null(out_trainer, "out_trainer");
    *out_trainer = nullptr;
    require_non_null(model, "model");
    const kiln_trainer_options o =
        kiln::capi::read_options(options, trainer_defaults(), "kiln_trainer_options");
    // The trainer computes where the model's runtime does (a CUDA runtime trains on the GPU).
    const kiln::Backend* backend = model->runtime ? &model->runtime->backend() : nullptr;
    auto impl = kiln::Trainer::create(*model->impl, to_engine(o), backend);
    impl->set_progress(wrap_progress(o.progress_fn, o.progress_user_data));
    *out_trainer = trainer_handle(std::move(impl), model->runtime);
  });
}

KILN_API void kiln_trainer_free(kiln_trainer* trainer) { delete trainer; }

KILN_API kiln_status kiln_train_step(kiln_trainer* trainer, const kiln_batch* batch,
                                     kiln_train_result* result) {
  return guarded([&] {
    require_non_null(trainer, "trainer");
    check_struct_size(result, "kiln_train_result");
    const kiln::BatchView view = to_view(batch);
    kiln::Trainer::Guard guard(*trainer->impl);
    fill_result(trainer->impl->train_step(view), result);
  });
}

KILN_API kiln_status kiln_eval_loss(kiln_trainer* trainer, const kiln_batch* batch,
                                    kiln_train_result* result) {
  return guarded([&] {
    require_non_null(trainer, "trainer");
    check_struct_size(result, "kiln_train_result");
    const kiln::BatchView view = to_view(batch);
    kiln::Trainer::Guard guard(*trainer->impl);
    fill_result(trainer->impl->eval_loss(view), result);
  });
}

KILN_API kiln_status kiln_trainer_cancel(kiln_trainer* trainer) {
  return guarded([&] {
    require_non_null(trainer, "trainer");
    trainer->impl->cancel();
  });
}

KILN_API kiln_status kiln_trainer_get_info(const kiln_trainer* trainer, kiln_trainer_info* info) {
  return guarded([&] {
    require_non_null(trainer, "trainer");
    require_non_null(info, "info");
    check_struct_size(info, "kiln_trainer_info");
    const kiln::Trainer& t = *trainer->impl;
    info->step = t.step();
    info->n_parameters = t.n_parameters();
    info->n_mtp_heads = static_cast<int32_t>(t.options().mtp_weights.size());
    info->architecture = t.config().architecture.c_str();
  });
}

KILN_API kiln_status kiln_trainer_forward(kiln_trainer* trainer, const int32_t* inputs,
                                          int32_t batch_size, int32_t seq_len,
                                          kiln_trainer_output what, float* out, size_t capacity,
                                          size_t* n_out) {
  return guarded([&] {
    require_non_null(trainer, "trainer");
    require_non_null(inputs, "inputs");
    const auto kind = checked_enum(what, KILN_TRAINER_OUTPUT_LOGITS, KILN_TRAINER_OUTPUT_HIDDEN,
                                   "what") == KILN_TRAINER_OUTPUT_HIDDEN
                          ? kiln::TrainerOutput::Hidden
                          : kiln::TrainerOutput::Logits;
    if (batch_size <= 0 || seq_len <= 0) {
      fail(KILN_ERR_INVALID_ARGUMENT, "batch_size " + std::to_string(batch_size) + " and seq_len " +
                                          std::to_string(seq_len) + " must both be > 0");
    }
    require_non_null(n_out, "n_out");
    kiln::Trainer::Guard guard(*trainer->impl);
    const size_t need = trainer->impl->forward_size(batch_size, seq_len, kind);
    *n_out = need;
    if (capacity < need) {
      fail(KILN_ERR_BUFFER_TOO_SMALL, "the trainer's forward output needs " + std::to_string(need) +
                                          " floats; capacity is " + std::to_string(capacity));
    }
    require_non_null(out, "out");
    const size_t n = static_cast<size_t>(batch_size) * static_cast<size_t>(seq_len);
    trainer->impl->forward({inputs, n}, batch_size, seq_len, kind, {out, need});
  });
}

KILN_API kiln_status kiln_trainer_snapshot(const kiln_trainer* trainer, kiln_model** out_model) {
  return guarded([&] {
    require_non_null(out_model, "out_model");
    *out_model = nullptr;
    require_non_null(trainer, "trainer");
    if (trainer->runtime == nullptr) {
      fail(KILN_ERR_INVALID_ARGUMENT, "this trainer has no runtime to place a snapshot on");
    }
    kiln::Trainer::Guard guard(*trainer->impl);
    *out_model = model_handle(trainer->impl->snapshot(*trainer->runtime), trainer->runtime);
  });
}

KILN_API kiln_status kiln_trainer_set_data_state(kiln_trainer* trainer, const void* data,
                                                 size_t size) {
  return guarded([&] {
    require_non_null(trainer, "trainer");
    if (size > 0) require_non_null(data, "data");
    constexpr size_t kMax = size_t{1} << 20;
    if (size > kMax) {
      fail(KILN_ERR_INVALID_ARGUMENT,
           "data state is " + std::to_string(size) + " bytes; at most 1 MiB is kept");
    }
    kiln::Trainer::Guard guard(*trainer->impl);
    trainer->impl->set_data_state({static_cast<const uint8_t*>(data), size});
  });
}

KILN_API kiln_status kiln_trainer_get_data_state(const kiln_trainer* trainer, void* data,
                                                 size_t capacity, size_t* size) {
  return guarded([&] {
    require_non_null(trainer, "trainer");
    const auto& bytes = trainer->impl->data_state();
    copy_out(bytes.data(), bytes.size(), 1, data, capacity, size, "data state");
  });
}

KILN_API kiln_status kiln_checkpoint_save(const kiln_trainer* trainer, const char* path) {
  return guarded([&] {
    require_non_null(trainer, "trainer");
    require_non_null(path, "path");
    kiln::Trainer::Guard guard(*trainer->impl);
    trainer->impl->save_checkpoint(path);
  });
}

KILN_API kiln_status kiln_checkpoint_load(kiln_runtime* runtime, const char* path,
                                          kiln_trainer** out_trainer) {
  return guarded([&] {
    require_non_null(out_trainer, "out_trainer");
    *out_trainer = nullptr;
    require_non_null(runtime, "runtime");
    require_non_null(path, "path");
    *out_trainer = trainer_handle(kiln::Trainer::load_checkpoint(path, &runtime->impl->backend()),
                                  runtime->impl.get());
  });
}

KILN_API kiln_status kiln_trainer_set_progress(kiln_trainer* trainer, kiln_progress_fn fn,
                                               void* user_data) {
  return guarded([&] {
    require_non_null(trainer, "trainer");
    kiln::Trainer::Guard guard(*trainer->impl);
    trainer->impl->set_progress(wrap_progress(fn, user_data));
  });
}

KILN_API kiln_status kiln_trainer_export_hf(const kiln_trainer* trainer, const char* directory) {
  return guarded([&] {
    require_non_null(trainer, "trainer");
    require_non_null(directory, "directory");
    kiln::Trainer::Guard guard(*trainer->impl);
    trainer->impl->export_hf(directory);
  });
}

}  // extern "C"
