// The trainer: the step logic, checkpoints, HF export and snapshots over float32 host state in
// ParamLayout buffers; the compute (forward/backward, clipping, the update) is its TrainEngine's,
// on the host (cpu_engine.cpp) or on the backend's device (Backend::create_train_engine).
#include "train/trainer.hpp"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "core/error.hpp"
#include "engine/model.hpp"
#include "engine/model_factory.hpp"
#include "model/config_writer.hpp"
#include "train/checkpoint/checkpoint.hpp"
#include "train/checkpoint/sharded_optimizer.hpp"
#include "train/data_parallel/shard_plan.hpp"
#include "train/hf_export.hpp"
#include "train/import.hpp"
#include "train/init.hpp"
#include "train/model_layout.hpp"
#include "train/optimizer/optimizer.hpp"
#include "train/train_engine.hpp"
#include "train/train_graph.hpp"

namespace kiln {

void validate_trainer_options(const TrainerOptions& o) {
  validate_optimizer_options(o.optimizer);
  validate_schedule(o.schedule);
  if (o.grad_accum_steps < 1) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "grad_accum_steps is " + std::to_string(o.grad_accum_steps) + "; it must be >= 1");
  }
  if (!(o.clip_norm >= 0.0f) || !std::isfinite(o.clip_norm)) {
    fail(KILN_ERR_INVALID_ARGUMENT, "max_grad_norm is " + std::to_string(o.clip_norm) +
                                        "; it must be finite and >= 0 (0 = no clipping)");
  }
  if (!(o.residual_dropout >= 0.0f && o.residual_dropout < 1.0f)) {
    fail(KILN_ERR_INVALID_ARGUMENT, "residual_dropout is " + std::to_string(o.residual_dropout) +
                                        "; it must be in [0, 1) (0 = off)");
  }
  if (o.mtp_weights.size() > static_cast<size_t>(kMaxMtpHeads)) {
    fail(KILN_ERR_INVALID_ARGUMENT, "at most " + std::to_string(kMaxMtpHeads) + " MTP heads");
  }
  for (size_t k = 0; k < o.mtp_weights.size(); ++k) {
    if (!(o.mtp_weights[k] >= 0.0f) || !std::isfinite(o.mtp_weights[k])) {
      fail(KILN_ERR_INVALID_ARGUMENT, "mtp_loss_weights[" + std::to_string(k) + "] is " +
                                          std::to_string(o.mtp_weights[k]) +
                                          "; it must be finite and >= 0");
    }
  }
}

Trainer::Guard::Guard(const Trainer& t) : t_(t) {
  if (t_.busy_.exchange(true)) {
    fail(KILN_ERR_BUSY,
         "this trainer is in use by another thread; a trainer is used by one "
         "thread at a time");
  }
}
Trainer::Guard::~Guard() { t_.busy_.store(false); }

namespace {

std::vector<WeightSet::OwnedF32Tensor> to_owned(std::vector<HfTensor> tensors) {
  std::vector<WeightSet::OwnedF32Tensor> out;
  out.reserve(tensors.size());
  for (auto& t : tensors) {
    WeightSet::OwnedF32Tensor o;
    o.name = std::move(t.name);
    o.shape = std::move(t.shape);
    int64_t n = 1;
    for (int64_t d : o.shape) n *= d;
    if (!t.owned.empty()) {
      o.values = std::move(t.owned);
    } else {
      o.values.assign(t.borrowed, t.borrowed + n);
    }
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace

std::vector<WeightSet::OwnedF32Tensor> initial_hf_tensors(const ModelConfig& config,
                                                          uint64_t seed) {
  ModelConfig c = config;
  c.n_mtp_heads = 0;
  const ParamLayout layout = train::make_param_layout(c);
  std::vector<float> values(static_cast<size_t>(layout.total()));
  train::init_params(c, layout, seed, values);
  return to_owned(hf_tensors(c, layout, values.data()));
}

namespace {

int n_threads() { return std::max(1, omp_get_max_threads()); }

class EngineTrainer final : public Trainer {
 public:
  EngineTrainer(ModelConfig config, ModelTexts texts, TrainerOptions options)
      : config_(std::move(config)),
        texts_(std::move(texts)),
        options_(std::move(options)),
        layout_((config_.n_mtp_heads = static_cast<int32_t>(options_.mtp_weights.size()),
                 train::make_param_layout(config_))),
        values_(allocate(layout_.total(), "weights")),
        optimizer_(layout_, options_.optimizer, n_threads()) {
    rng_state_ = {options_.seed};
  }

  // Creates the engine once the host state holds the initial values (and, from a checkpoint, the
  // optimizer moments): a device engine uploads them.
  void attach_engine(const Backend* backend) {
    const train::TrainState state{config_, layout_, options_, values_, optimizer_};
    if (backend != nullptr) engine_ = backend->create_train_engine(state);
    if (!engine_) engine_ = train::make_cpu_engine(state);
  }

  std::vector<float>& values() { return values_; }
  Optimizer& optimizer() { return optimizer_; }
  void set_step(int64_t step) {
    step_ = step;
    optimizer_.set_steps_taken(step);
  }
  void set_rng_state(std::vector<uint64_t> state) { rng_state_ = std::move(state); }

  StepResult train_step(const BatchView& batch) override {
    const auto t0 = std::chrono::steady_clock::now();
    const int32_t accum = options_.grad_accum_steps;
    const auto micro = split(batch, accum, "grad_accum_steps");
    engine_->reserve(batch.rows / accum, batch.cols);
    std::vector<double> normalisers = weight_totals(micro, batch.cols);
    engine_->all_reduce_host(normalisers);  // the global batch's totals in a data-parallel group

    engine_->zero_grads();
    std::vector<train::HeadLoss> total(static_cast<size_t>(n_heads()));
    for (size_t m = 0; m < micro.size(); ++m) {
      report(static_cast<float>(m) / static_cast<float>(micro.size()), "forward");
      // Masks keyed by the seed and the step (both in checkpoints), indexed over the whole batch.
      // In a data-parallel group the rows are those of the global batch (this rank's are after
      // the lower ranks'), so the masks are the ones a single process would draw.
      const train::Dropout dropout{options_.residual_dropout, options_.seed, step_,
                                   static_cast<int64_t>(dp_rank_) * batch.rows +
                                       static_cast<int64_t>(m) * (batch.rows / accum)};
      if (m + 1 == micro.size()) engine_->overlap_grad_reduce_with_next_backward();
      auto losses = run_cancellable([&] {
        return engine_->forward_backward(micro[m], normalisers, options_.mtp_weights, dropout,
                                         &cancel_);
      });
      add(total, losses);
    }
    report(1.0f, "optimizer");
    throw_if_cancelled();
    engine_->all_reduce_grads();
    all_reduce_totals(total);
    const double norm = engine_->clip_grads(options_.clip_norm);
    if (!std::isfinite(norm)) {
      fail(KILN_ERR_OUT_OF_RANGE,
           "the gradient norm of step " + std::to_string(step_ + 1) +
               " is not finite; the update was skipped and the weights are unchanged (lower the "
               "learning rate or check the data)");
    }
    const double multiplier = lr_multiplier(options_.schedule, step_);
    engine_->optimizer_step(multiplier);
    ++step_;

    StepResult r = summarise(total, batch);
    r.grad_norm = norm;
    r.learning_rate = options_.optimizer.lr * multiplier;
    r.step = step_;
    r.tokens_per_second = tokens_per_second(batch, t0);
    return r;
  }

  StepResult eval_loss(const BatchView& batch) override {
    const auto t0 = std::chrono::steady_clock::now();
    const int32_t accum = options_.grad_accum_steps;
    const auto micro = split(batch, batch.rows % accum == 0 ? accum : 1, "grad_accum_steps");
    engine_->reserve(batch.rows / static_cast<int32_t>(micro.size()), batch.cols);
    const std::vector<double> normalisers = weight_totals(micro, batch.cols);
    std::vector<train::HeadLoss> total(static_cast<size_t>(n_heads()));
    for (const auto& m : micro) {
      add(total, run_cancellable([&] { return engine_->forward_loss(m, &cancel_); }));
    }
    (void)normalisers;
    all_reduce_totals(total);
    StepResult r = summarise(total, batch);
    r.learning_rate = options_.optimizer.lr * lr_multiplier(options_.schedule, step_);
    r.step = step_;
    r.tokens_per_second = tokens_per_second(batch, t0);
    return r;
  }

  size_t forward_size(int32_t rows, int32_t cols, TrainerOutput what) const override {
    const size_t n = static_cast<size_t>(rows) * static_cast<size_t>(cols);
    if (what == TrainerOutput::Hidden) return n * static_cast<size_t>(config_.hidden_size);
    return (1 + options_.mtp_weights.size()) * n * static_cast<size_t>(config_.vocab_size);
  }

  void forward(std::span<const int32_t> inputs, int32_t rows, int32_t cols, TrainerOutput what,
               std::span<float> out) override {
    check_shape(rows, cols);
    engine_->reserve(rows, cols);
    train::ForwardOutputs<float> outputs;
    if (what == TrainerOutput::Hidden) {
      outputs.trunk_hidden = out;
    } else {
      outputs.logits = out;
    }
    run_cancellable([&] {
      engine_->forward_logits(inputs, outputs, &cancel_);
      return 0;
    });
  }

  void save_checkpoint(const std::filesystem::path& path) const override {
    if (dp_sharded_) {
      // Only this rank's slice of the optimizer state is here: every rank writes its own.
      save_checkpoint_shard(path, dp_rank_, dp_world_);
      return;
    }
    engine_->download_state();
    CheckpointContents c = checkpoint_header();
    for (const ConstOptimizerState& st : std::as_const(optimizer_).state()) {
      c.tensors.push_back(tensor(*st.param, st.kind, st.data));
    }
    kiln::save_checkpoint(path, c);
  }

  void save_checkpoint_shard(const std::filesystem::path& path, int32_t rank,
                             int32_t world) const override {
    const train::ShardPlan plan(layout_.total(), world);
    const train::ShardRange owned = plan.owned(rank);  // checks the rank
    engine_->download_state();
    if (rank == 0) {
      CheckpointContents c = checkpoint_header();
      c.optimizer_world = world;
      c.optimizer_layout_total = layout_.total();
      kiln::save_checkpoint(path, c);
    }
    std::vector<FlatStateSlice> slices;
    for (TensorKind kind : optimizer_.flat_kinds()) {
      slices.push_back(
          {kind, optimizer_.flat_state(kind).subspan(static_cast<size_t>(owned.begin),
                                                     static_cast<size_t>(owned.size()))});
    }
    save_optimizer_shard(path, plan, rank, step_, slices);
  }

  void export_hf(const std::filesystem::path& directory) const override {
    HfExportOptions o;
    o.tokenizer_json = texts_.tokenizer_json;
    o.tokenizer_config_json = texts_.tokenizer_config_json;
    engine_->download_state();
    export_hf_model(directory, plain_config(), plain_layout(), plain_values().data(), o);
  }

  std::shared_ptr<const Model> snapshot(const Runtime& runtime) const override {
    ModelTexts texts = texts_;
    texts.config_json = config_json();
    engine_->download_state();
    const auto values = plain_values();
    return model_from_tensors(
        runtime, texts, to_owned(hf_tensors(plain_config(), plain_layout(), values.data())),
        "a snapshot of a " + config_.architecture + " trainer at step " + std::to_string(step_));
  }

  const ModelConfig& config() const override { return config_; }
  const TrainerOptions& options() const override { return options_; }
  int64_t step() const override { return step_; }
  int64_t n_parameters() const override { return layout_.n_parameters(); }
  void set_data_state(std::span<const uint8_t> bytes) override {
    data_state_.assign(bytes.begin(), bytes.end());
  }
  const std::vector<uint8_t>& data_state() const override { return data_state_; }
  void set_progress(ProgressFn progress) override { progress_ = std::move(progress); }
  const ParamLayout& layout() const { return layout_; }
  void set_config_json(std::string text) { texts_.config_json = std::move(text); }

 private:
  static std::vector<float> allocate(int64_t n, const char* what) {
    try {
      return std::vector<float>(static_cast<size_t>(n), 0.0f);
    } catch (const std::bad_alloc&) {
      fail(KILN_ERR_OUT_OF_MEMORY, std::string("out of host memory for the trainer's ") + what +
                                       ": " + std::to_string(n * 4) + " bytes asked for");
    }
  }

  void check_shape(int32_t rows, int32_t cols) const {
    if (rows <= 0 || cols <= 0) {
      fail(KILN_ERR_INVALID_ARGUMENT, "a batch needs rows and columns > 0");
    }
    if (cols > config_.max_position_embeddings) {
      fail(KILN_ERR_CONTEXT_FULL, "seq_len " + std::to_string(cols) +
                                      " exceeds the model's context length " +
                                      std::to_string(config_.max_position_embeddings));
    }
  }

  std::vector<train::TrainBatch> split(const BatchView& b, int32_t parts, const char* what) const {
    check_shape(b.rows, b.cols);
    if (b.rows % parts != 0) {
      fail(KILN_ERR_INVALID_ARGUMENT, std::string(what) + " (" + std::to_string(parts) +
                                          ") must divide the batch's " + std::to_string(b.rows) +
                                          " rows");
    }
    const size_t per = static_cast<size_t>(b.rows / parts) * static_cast<size_t>(b.cols);
    std::vector<train::TrainBatch> out;
    for (int32_t p = 0; p < parts; ++p) {
      const size_t off = static_cast<size_t>(p) * per;
      train::TrainBatch m;
      m.inputs = b.inputs.subspan(off, per);
      m.targets = b.targets.subspan(off, per);
      if (!b.loss_mask.empty()) m.loss_mask = b.loss_mask.subspan(off, per);
      if (!b.loss_weights.empty()) m.loss_weights = b.loss_weights.subspan(off, per);
      out.push_back(m);
    }
    return out;
  }

  std::vector<double> weight_totals(const std::vector<train::TrainBatch>& micro,
                                    int32_t cols) const {
    std::vector<double> totals;
    for (const auto& m : micro) {
      const auto t = train::loss_weight_totals(config_, m, cols);
      if (totals.empty()) totals.assign(t.size(), 0.0);
      for (size_t h = 0; h < t.size(); ++h) totals[h] += t[h];
    }
    if (totals.empty() || !(totals[0] > 0.0)) {
      fail(KILN_ERR_INVALID_ARGUMENT,
           "the batch has no counted position (every target is -1, masked, or weighted 0), so "
           "its loss is undefined");
    }
    return totals;
  }

  int32_t n_heads() const { return 1 + config_.n_mtp_heads; }

  template <class F>
  std::invoke_result_t<F> run_cancellable(F&& f) {
    try {
      throw_if_cancelled();
      return f();
    } catch (const Error& e) {
      if (e.status() == KILN_ERR_CANCELLED) cancel_.store(false);
      throw;
    }
  }

  void throw_if_cancelled() {
    if (cancel_.exchange(false)) {
      fail(KILN_ERR_CANCELLED, "the step was cancelled; the weights are unchanged");
    }
  }

  void report(float fraction, const char* stage) {
    if (progress_ && !progress_(fraction, stage)) {
      fail(KILN_ERR_CANCELLED,
           std::string("the step was cancelled by the progress callback during ") + stage +
               "; the weights are unchanged");
    }
  }

  void join_data_parallel(const DataParallelId& id, int32_t world_size, int32_t rank,
                          bool shard_optimizer_state) override {
    if (dp_world_ > 0) {
      fail(KILN_ERR_INVALID_ARGUMENT, "the trainer is already in a data-parallel group (rank " +
                                          std::to_string(dp_rank_) + " of " +
                                          std::to_string(dp_world_) + ")");
    }
    if (world_size < 1 || rank < 0 || rank >= world_size) {
      fail(KILN_ERR_INVALID_ARGUMENT, "data-parallel world_size " + std::to_string(world_size) +
                                          " and rank " + std::to_string(rank) +
                                          ": expected world_size >= 1 and 0 <= rank < world_size");
    }
    if (shard_optimizer_state && options_.optimizer.kind == OptimizerKind::Muon) {
      // Muon orthogonalises whole matrices, which a flat slice of the state cuts apart.
      fail(KILN_ERR_UNSUPPORTED,
           "shard_optimizer_state needs the AdamW optimizer: Muon's state is not sharded");
    }
    engine_->join_data_parallel(id, world_size, rank, shard_optimizer_state);
    dp_world_ = world_size;
    dp_rank_ = rank;
    dp_sharded_ = shard_optimizer_state;
  }

  // Loss sums, weight sums and token counts of every head, summed over a data-parallel group (the
  // token counts are exact in doubles up to 2^53).
  void all_reduce_totals(std::vector<train::HeadLoss>& total) {
    if (dp_world_ == 0) return;
    std::vector<double> flat;
    for (const auto& h : total) {
      flat.insert(flat.end(), {h.loss_sum, h.weight_sum, static_cast<double>(h.tokens)});
    }
    engine_->all_reduce_host(flat);
    for (size_t h = 0; h < total.size(); ++h) {
      total[h].loss_sum = flat[3 * h];
      total[h].weight_sum = flat[3 * h + 1];
      total[h].tokens = static_cast<int64_t>(flat[3 * h + 2]);
    }
  }

  static void add(std::vector<train::HeadLoss>& total, const std::vector<train::HeadLoss>& part) {
    for (size_t h = 0; h < total.size() && h < part.size(); ++h) {
      total[h].loss_sum += part[h].loss_sum;
      total[h].weight_sum += part[h].weight_sum;
      total[h].tokens += part[h].tokens;
    }
  }

  StepResult summarise(const std::vector<train::HeadLoss>& total, const BatchView&) const {
    StepResult r;
    const auto mean = [](const train::HeadLoss& h) {
      return h.weight_sum > 0 ? h.loss_sum / h.weight_sum : 0.0;
    };
    r.loss = mean(total[0]);
    r.objective = r.loss;
    r.n_tokens = total[0].tokens;
    r.weight_sum = total[0].weight_sum;
    for (size_t k = 1; k < total.size(); ++k) {
      r.mtp_losses[k - 1] = mean(total[k]);
      r.objective += options_.mtp_weights[k - 1] * r.mtp_losses[k - 1];
    }
    return r;
  }

  static double tokens_per_second(const BatchView& b, std::chrono::steady_clock::time_point t0) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return s > 0 ? static_cast<double>(b.rows) * b.cols / s : 0.0;
  }

  // Everything a checkpoint's main file holds but the optimizer state.
  CheckpointContents checkpoint_header() const {
    CheckpointContents c;
    c.config_json = config_json();
    c.tokenizer_json = texts_.tokenizer_json;
    c.tokenizer_config_json = texts_.tokenizer_config_json;
    c.options = options_;
    c.step = step_;
    c.rng_state = rng_state_;
    c.data_state = data_state_;
    for (const ParamSpec& s : layout_.specs()) {
      c.tensors.push_back(tensor(s, TensorKind::Value, values_.data() + s.offset));
    }
    return c;
  }

  static CheckpointTensor tensor(const ParamSpec& s, TensorKind kind, const float* data) {
    CheckpointTensor t;
    t.name = s.name;
    t.kind = kind;
    t.dtype = DType::F32;
    t.shape = s.shape;
    t.data = reinterpret_cast<const uint8_t*>(data);
    t.nbytes = static_cast<size_t>(s.numel) * sizeof(float);
    return t;
  }

  // The model without its MTP heads: what inference and HF export see.
  ModelConfig plain_config() const {
    ModelConfig c = config_;
    c.n_mtp_heads = 0;
    return c;
  }
  ParamLayout plain_layout() const { return train::make_param_layout(plain_config()); }
  std::vector<float> plain_values() const {
    const ParamLayout plain = plain_layout();
    std::vector<float> v(static_cast<size_t>(plain.total()), 0.0f);
    for (const ParamSpec& s : plain.specs()) {
      const ParamSpec& from = layout_.at(s.name);
      std::memcpy(v.data() + s.offset, values_.data() + from.offset,
                  static_cast<size_t>(s.numel) * sizeof(float));
    }
    return v;
  }

  std::string config_json() const {
    return texts_.config_json.empty() ? model_config_to_json(plain_config(), DType::F32)
                                      : texts_.config_json;
  }

  ModelConfig config_;
  ModelTexts texts_;
  TrainerOptions options_;
  ParamLayout layout_;
  std::vector<float> values_;
  Optimizer optimizer_;
  std::unique_ptr<train::TrainEngine> engine_;  // last: built over the members above
  int64_t step_ = 0;
  std::vector<uint64_t> rng_state_;
  int32_t dp_world_ = 0, dp_rank_ = 0;  // data-parallel group: 0 = not in one
  bool dp_sharded_ = false;             // ZeRO-1: the engine holds this rank's optimizer slice
  std::vector<uint8_t> data_state_;
  ProgressFn progress_;
};

}  // namespace

std::unique_ptr<Trainer> Trainer::create(const Model& model, const TrainerOptions& options,
                                         const Backend* backend) {
  validate_trainer_options(options);
  if (!model.weights) {
    fail(KILN_ERR_UNSUPPORTED, "this model has no weights kiln can train from");
  }
  ModelTexts texts{model.config_json, model.tokenizer_json, model.tokenizer_config_json};
  auto t = std::make_unique<EngineTrainer>(model.config, std::move(texts), options);
  train::init_params(t->config(), t->layout(), options.seed, t->values());
  train::import_hf_weights(t->config(), t->layout(), *model.weights, t->values());
  t->attach_engine(backend);
  return t;
}

std::unique_ptr<Trainer> Trainer::load_checkpoint(const std::filesystem::path& path,
                                                  const Backend* backend) {
  const auto ckpt = LoadedCheckpoint::open(path);
  const CheckpointContents& c = ckpt->contents();
  const std::string origin = "checkpoint '" + path.string() + "'";
  if (c.shard) {
    fail(KILN_ERR_FORMAT, origin +
                              " is an optimizer shard file, not a checkpoint: load the "
                              "checkpoint it belongs to");
  }
  ModelConfig config = parse_model_config(c.config_json, "", origin + " config");
  validate_trainer_options(c.options);
  // Every tensor the config describes must be in the file, with its shape, before anything is
  // allocated for it: a lying config cannot make the trainer allocate more than the file holds.
  ModelConfig with_heads = config;
  with_heads.n_mtp_heads = static_cast<int32_t>(c.options.mtp_weights.size());
  const ParamLayout layout = train::make_param_layout(with_heads);
  for (const ParamSpec& s : layout.specs()) {
    const CheckpointTensor* v = c.find(s.name, TensorKind::Value);
    if (v == nullptr) fail(KILN_ERR_FORMAT, origin + " has no value for tensor '" + s.name + "'");
    if (v->dtype != DType::F32 || v->shape != s.shape) {
      fail(KILN_ERR_FORMAT, origin + ": tensor '" + s.name +
                                "' has another dtype or shape than the config describes");
    }
  }
  ModelTexts texts{c.config_json, c.tokenizer_json, c.tokenizer_config_json};
  auto t = std::make_unique<EngineTrainer>(config, std::move(texts), c.options);
  for (const ParamSpec& s : t->layout().specs()) {
    const CheckpointTensor* v = c.find(s.name, TensorKind::Value);
    if (v == nullptr) fail(KILN_ERR_FORMAT, origin + " has no value for tensor '" + s.name + "'");
    if (v->dtype != DType::F32 || v->shape != s.shape) {
      fail(KILN_ERR_FORMAT, origin + ": tensor '" + s.name +
                                "' has another dtype or shape than the config describes");
    }
    std::memcpy(t->values().data() + s.offset, v->data, v->nbytes);
  }
  size_t n_state = 0;
  for (const CheckpointTensor& ct : c.tensors) {
    if (ct.kind == TensorKind::Value) {
      if (t->layout().find(ct.name) == nullptr) {
        fail(KILN_ERR_FORMAT, origin + " holds tensor '" + ct.name +
                                  "', which the model its config describes does not have");
      }
      continue;
    }
    if (c.optimizer_world > 0) {
      fail(KILN_ERR_FORMAT, origin + " holds optimizer state '" + ct.name +
                                "' although it says its state is in " +
                                std::to_string(c.optimizer_world) + " shard files");
    }
    if (ct.dtype != DType::F32) {
      fail(KILN_ERR_FORMAT, origin + ": optimizer state '" + ct.name + "' is not float32");
    }
    int64_t n = 1;
    for (int64_t d : ct.shape) n *= d;
    t->optimizer().restore_state(ct.name, ct.kind, reinterpret_cast<const float*>(ct.data), n);
    ++n_state;
  }
  if (c.optimizer_world > 0) {
    // ZeRO-1: the whole flat state, assembled from every shard (the host state is not sharded).
    const int64_t total = t->layout().total();
    if (c.optimizer_layout_total != total) {
      fail(KILN_ERR_FORMAT, origin + ": its optimizer shards cut a buffer of " +
                                std::to_string(c.optimizer_layout_total) +
                                " elements; the model its config describes has " +
                                std::to_string(total));
    }
    std::vector<FlatStateTarget> targets;
    for (TensorKind kind : t->optimizer().flat_kinds()) {
      targets.push_back({kind, t->optimizer().flat_state(kind)});
    }
    load_optimizer_shards(path, train::ShardPlan(total, c.optimizer_world), c.step, {0, total},
                          targets);
  } else {
    const size_t expected = std::as_const(t->optimizer()).state().size();
    if (n_state != expected) {
      fail(KILN_ERR_FORMAT, origin + " holds " + std::to_string(n_state) +
                                " optimizer state tensors; its options need " +
                                std::to_string(expected));
    }
  }
  t->set_step(c.step);
  t->set_rng_state(c.rng_state);
  t->set_data_state(c.data_state);
  t->attach_engine(backend);
  return t;
}

}  // namespace kiln
