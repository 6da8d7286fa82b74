// The training ABI's contract (kiln.h "Training", docs/training.md): the loss definition checked
// against an independent float64 computation from the trainer's own logits, masks and weights,
// gradient accumulation, cancellation, exact checkpoint resume, MTP heads, snapshot and HF export,
// and the statuses of bad input.
#include <atomic>
#include <cstdio>
#include <thread>

#include "abi_util.hpp"

namespace kiln_abi_test {
namespace {

struct TrainerDeleter {
  void operator()(kiln_trainer* t) const { kiln_trainer_free(t); }
};
using TrainerPtr = std::unique_ptr<kiln_trainer, TrainerDeleter>;

constexpr int32_t kB = 2, kT = 8;

double relative_l2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

const char* kTinyLlama =
    R"({"architectures":["LlamaForCausalLM"],"vocab_size":64,"hidden_size":32,
        "intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,
        "num_key_value_heads":2,"max_position_embeddings":32,"rms_norm_eps":1e-5,
        "tie_word_embeddings":false})";

ModelPtr create(kiln_runtime* rt, const char* config = kTinyLlama, uint64_t seed = 7) {
  kiln_model_create_options o;
  kiln_model_create_options_default(&o, sizeof o);
  o.seed = seed;
  kiln_model* m = nullptr;
  kiln_status st = kiln_model_create(rt, config, std::strlen(config), &o, &m);
  EXPECT_EQ(st, KILN_OK) << kiln_last_error();
  return ModelPtr(m);
}

kiln_trainer_options options(float lr = 1e-2f) {
  kiln_trainer_options o;
  kiln_trainer_options_default(&o, sizeof o);
  o.learning_rate = lr;
  return o;
}

TrainerPtr trainer(kiln_model* m, const kiln_trainer_options& o) {
  kiln_trainer* t = nullptr;
  kiln_status st = kiln_trainer_create(m, &o, &t);
  EXPECT_EQ(st, KILN_OK) << kiln_last_error();
  return TrainerPtr(t);
}

struct Data {
  std::vector<int32_t> inputs, targets;
  std::vector<uint8_t> mask;
  std::vector<float> weights;
  kiln_batch batch(bool with_mask = false, bool with_weights = false) const {
    return {sizeof(kiln_batch),
            kB,
            kT,
            inputs.data(),
            targets.data(),
            with_mask ? mask.data() : nullptr,
            with_weights ? weights.data() : nullptr};
  }
};

Data data(uint32_t seed) {
  Data d;
  uint32_t s = seed;
  const auto next = [&] { return (s = s * 1664525u + 1013904223u) >> 8; };
  for (int i = 0; i < kB * kT; ++i) {
    d.inputs.push_back(static_cast<int32_t>(next() % 64));
    d.targets.push_back(static_cast<int32_t>(next() % 64));
    d.mask.push_back(next() % 4 != 0);
    d.weights.push_back(0.25f + static_cast<float>(next() % 100) / 40.0f);
  }
  return d;
}

kiln_train_result result() {
  kiln_train_result r{};
  r.struct_size = sizeof r;
  return r;
}

std::vector<float> logits(kiln_trainer* t, const std::vector<int32_t>& inputs) {
  size_t n = 0;
  EXPECT_EQ(
      kiln_trainer_forward(t, inputs.data(), kB, kT, KILN_TRAINER_OUTPUT_LOGITS, nullptr, 0, &n),
      KILN_ERR_BUFFER_TOO_SMALL);
  std::vector<float> out(n);
  EXPECT_EQ(kiln_trainer_forward(t, inputs.data(), kB, kT, KILN_TRAINER_OUTPUT_LOGITS, out.data(),
                                 out.size(), &n),
            KILN_OK)
      << kiln_last_error();
  return out;
}

// The loss definition, computed here in float64 from the trainer's own logits.
double reference_loss(const std::vector<float>& z, const Data& d, bool mask, bool weights,
                      int V = 64) {
  double num = 0, den = 0;
  for (int i = 0; i < kB * kT; ++i) {
    if (d.targets[i] < 0 || (mask && d.mask[i] == 0)) continue;
    const float* row = z.data() + static_cast<size_t>(i) * V;
    double mx = row[0];
    for (int v = 1; v < V; ++v) mx = std::max(mx, double(row[v]));
    double sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
    const double ce = mx + std::log(sum) - row[d.targets[i]];
    const double w = weights ? d.weights[i] : 1.0;
    num += w * ce;
    den += w;
  }
  return num / den;
}

TEST(TrainApi, LossIsTheWeightedMeanOverCountedPositions) {
  auto rt = make_cpu_runtime();
  auto m = create(rt.get());
  auto t = trainer(m.get(), options());
  Data d = data(1);
  d.targets[5] = -1;
  const auto z = logits(t.get(), d.inputs);
  for (int variant = 0; variant < 4; ++variant) {
    const bool mask = variant & 1, weights = variant & 2;
    auto b = d.batch(mask, weights);
    auto r = result();
    KILN_ASSERT_OK(kiln_eval_loss(t.get(), &b, &r));
    EXPECT_NEAR(r.loss, reference_loss(z, d, mask, weights), 1e-5) << "variant " << variant;
    EXPECT_EQ(r.step, 0);
  }
}

TEST(TrainApi, MaskedPositionsContributeNothing) {
  auto rt = make_cpu_runtime();
  auto m = create(rt.get());
  auto a = trainer(m.get(), options()), b = trainer(m.get(), options());
  Data d1 = data(2), d2 = d1;
  for (int i = 0; i < kB * kT; ++i) {
    if (d2.mask[i] == 0) d2.targets[i] = (d2.targets[i] + 17) % 64;  // only masked ones change
  }
  auto b1 = d1.batch(true, true), b2 = d2.batch(true, true);
  auto r1 = result(), r2 = result();
  KILN_ASSERT_OK(kiln_train_step(a.get(), &b1, &r1));
  KILN_ASSERT_OK(kiln_train_step(b.get(), &b2, &r2));
  EXPECT_EQ(r1.loss, r2.loss);
  EXPECT_EQ(r1.grad_norm, r2.grad_norm);
  EXPECT_EQ(logits(a.get(), d1.inputs), logits(b.get(), d1.inputs));
}

TEST(TrainApi, GradientAccumulationChangesMemoryNotTheUpdate) {
  auto rt = make_cpu_runtime();
  auto m = create(rt.get());
  auto o2 = options();
  o2.grad_accum_steps = 2;
  auto one = trainer(m.get(), options()), two = trainer(m.get(), o2);
  const Data d = data(3);
  auto b = d.batch(true, true);
  auto r1 = result(), r2 = result();
  KILN_ASSERT_OK(kiln_train_step(one.get(), &b, &r1));
  KILN_ASSERT_OK(kiln_train_step(two.get(), &b, &r2));
  EXPECT_NEAR(r1.loss, r2.loss, 1e-6);
  EXPECT_NEAR(r1.grad_norm, r2.grad_norm, 1e-5 * r1.grad_norm);
  const auto z1 = logits(one.get(), d.inputs), z2 = logits(two.get(), d.inputs);
  for (size_t i = 0; i < z1.size(); ++i) ASSERT_NEAR(z1[i], z2[i], 1e-4) << i;
}

TEST(TrainApi, CheckpointResumeIsBitIdentical) {
  auto rt = make_cpu_runtime();
  auto m = create(rt.get());
  auto o = options();
  o.schedule = KILN_LR_WARMUP_COSINE;
  o.warmup_steps = 1;
  o.total_steps = 4;
  o.optimizer = KILN_OPTIMIZER_MUON;
  auto straight = trainer(m.get(), o), first = trainer(m.get(), o);
  std::vector<double> losses;
  for (int s = 0; s < 4; ++s) {
    const Data d = data(10 + s);
    auto b = d.batch(true, true);
    auto r = result();
    KILN_ASSERT_OK(kiln_train_step(straight.get(), &b, &r));
    losses.push_back(r.loss);
  }
  for (int s = 0; s < 2; ++s) {
    const Data d = data(10 + s);
    auto b = d.batch(true, true);
    KILN_ASSERT_OK(kiln_train_step(first.get(), &b, nullptr));
  }
  const uint64_t cursor = 0xDA7A;
  KILN_ASSERT_OK(kiln_trainer_set_data_state(first.get(), &cursor, sizeof cursor));
  const fs::path path = fs::temp_directory_path() / ("kiln_resume_" + std::to_string(getpid()));
  KILN_ASSERT_OK(kiln_checkpoint_save(first.get(), path.string().c_str()));
  first.reset();
  kiln_trainer* raw = nullptr;
  KILN_ASSERT_OK(kiln_checkpoint_load(rt.get(), path.string().c_str(), &raw));
  TrainerPtr resumed(raw);
  uint64_t got = 0;
  size_t n = 0;
  KILN_ASSERT_OK(kiln_trainer_get_data_state(resumed.get(), &got, sizeof got, &n));
  EXPECT_EQ(n, sizeof got);
  EXPECT_EQ(got, cursor);
  for (int s = 2; s < 4; ++s) {
    const Data d = data(10 + s);
    auto b = d.batch(true, true);
    auto r = result();
    KILN_ASSERT_OK(kiln_train_step(resumed.get(), &b, &r));
    EXPECT_EQ(r.loss, losses[s]) << "step " << s;  // bit-identical, not merely close
    EXPECT_EQ(r.step, s + 1);
  }
  const Data probe = data(99);
  EXPECT_EQ(logits(straight.get(), probe.inputs), logits(resumed.get(), probe.inputs));
  fs::remove(path);
}

// Residual dropout's masks are a function of the seed and the step, both in the checkpoint (and
// the probability with them), so 2 steps + save + load + 2 steps equal 4 steps bit for bit.
TEST(TrainApi, ResidualDropoutResumeIsBitIdentical) {
  auto rt = make_cpu_runtime();
  auto m = create(rt.get());
  auto o = options();
  o.residual_dropout = 0.2f;
  o.schedule = KILN_LR_WARMUP_COSINE;
  o.warmup_steps = 1;
  o.total_steps = 4;
  auto straight = trainer(m.get(), o), first = trainer(m.get(), o);
  std::vector<double> losses;
  for (int s = 0; s < 4; ++s) {
    const Data d = data(40 + s);
    auto b = d.batch();
    auto r = result();
    KILN_ASSERT_OK(kiln_train_step(straight.get(), &b, &r));
    losses.push_back(r.loss);
  }
  for (int s = 0; s < 2; ++s) {
    const Data d = data(40 + s);
    auto b = d.batch();
    KILN_ASSERT_OK(kiln_train_step(first.get(), &b, nullptr));
  }
  const fs::path path =
      fs::temp_directory_path() / ("kiln_dropout_resume_" + std::to_string(getpid()));
  KILN_ASSERT_OK(kiln_checkpoint_save(first.get(), path.string().c_str()));
  first.reset();
  kiln_trainer* raw = nullptr;
  KILN_ASSERT_OK(kiln_checkpoint_load(rt.get(), path.string().c_str(), &raw));
  TrainerPtr resumed(raw);
  for (int s = 2; s < 4; ++s) {
    const Data d = data(40 + s);
    auto b = d.batch();
    auto r = result();
    KILN_ASSERT_OK(kiln_train_step(resumed.get(), &b, &r));
    EXPECT_EQ(r.loss, losses[s]) << "step " << s;  // bit-identical, not merely close
  }
  const Data probe = data(99);
  EXPECT_EQ(logits(straight.get(), probe.inputs), logits(resumed.get(), probe.inputs));
  fs::remove(path);
}

// Dropout applies to train steps only: the same weights evaluate to the same loss whatever p, a
// train step's loss is that of the dropped model, and grad accumulation does not change masks.
TEST(TrainApi, ResidualDropoutOnlyInTrainSteps) {
  auto rt = make_cpu_runtime();
  auto m = create(rt.get());
  auto od = options();
  od.residual_dropout = 0.3f;
  auto oa = od;
  oa.grad_accum_steps = 2;
  auto plain = trainer(m.get(), options()), dropped = trainer(m.get(), od),
       accum = trainer(m.get(), oa);
  const Data d = data(5);
  auto b = d.batch(true, true);
  auto e0 = result(), e1 = result();
  KILN_ASSERT_OK(kiln_eval_loss(plain.get(), &b, &e0));
  KILN_ASSERT_OK(kiln_eval_loss(dropped.get(), &b, &e1));
  EXPECT_EQ(e0.loss, e1.loss);  // bit for bit
  EXPECT_EQ(logits(plain.get(), d.inputs), logits(dropped.get(), d.inputs));
  auto r0 = result(), r1 = result(), r2 = result();
  KILN_ASSERT_OK(kiln_train_step(plain.get(), &b, &r0));
  KILN_ASSERT_OK(kiln_train_step(dropped.get(), &b, &r1));
  KILN_ASSERT_OK(kiln_train_step(accum.get(), &b, &r2));
  EXPECT_NEAR(r0.loss, e0.loss, 1e-6);  // no dropout: the step's loss is the evaluation's
  EXPECT_NE(r1.loss, r0.loss);          // dropout: that of a thinned model
  EXPECT_NEAR(r2.loss, r1.loss, 1e-6);
  EXPECT_NEAR(r2.grad_norm, r1.grad_norm, 1e-5 * r1.grad_norm);
}

TEST(TrainApi, ResidualDropoutOutsideZeroToOneIsRejected) {
  auto rt = make_cpu_runtime();
  auto m = create(rt.get());
  kiln_trainer_options defaults;
  KILN_ASSERT_OK(kiln_trainer_options_default(&defaults, sizeof defaults));
  EXPECT_EQ(defaults.residual_dropout, 0.0f);
  for (const float p : {-0.1f, 1.0f, 1.5f, std::nanf("")}) {
    auto o = options();
    o.residual_dropout = p;
    kiln_trainer* bad = nullptr;
    EXPECT_EQ(kiln_trainer_create(m.get(), &o, &bad), KILN_ERR_INVALID_ARGUMENT) << p;
    EXPECT_EQ(bad, nullptr);
    EXPECT_NE(std::string(kiln_last_error()).find("residual_dropout"), std::string::npos)
        << kiln_last_error();
  }
}

TEST(TrainApi, MtpHeadsReportTheirLossesAndShareTheMainHead) {
  auto rt = make_cpu_runtime();
  auto m = create(rt.get());
  auto o = options();
  o.n_mtp_heads = 2;
  o.mtp_loss_weights[0] = 0.5f;
  o.mtp_loss_weights[1] = 0.25f;
  auto t = trainer(m.get(), o);
  const Data d = data(4);
  auto b = d.batch();
  auto r = result();
  KILN_ASSERT_OK(kiln_eval_loss(t.get(), &b, &r));
  EXPECT_GT(r.mtp_losses[0], 0.0);
  EXPECT_GT(r.mtp_losses[1], 0.0);
  EXPECT_EQ(r.mtp_losses[2], 0.0);
  EXPECT_NEAR(r.objective, r.loss + 0.5 * r.mtp_losses[0] + 0.25 * r.mtp_losses[1], 1e-9);
  const auto z = logits(t.get(), d.inputs);
  ASSERT_EQ(z.size(), size_t{3} * kB * kT * 64);
  // Head 2 predicts targets[t + 2]: its loss from its own logits, computed here.
  double num = 0, den = 0;
  for (int row = 0; row < kB; ++row) {
    for (int p = 0; p + 2 < kT; ++p) {
      const float* zr = z.data() + (size_t{2} * kB * kT + size_t(row) * kT + p) * 64;
      double mx = zr[0], sum = 0;
      for (int v = 1; v < 64; ++v) mx = std::max(mx, double(zr[v]));
      for (int v = 0; v < 64; ++v) sum += std::exp(zr[v] - mx);
      num += mx + std::log(sum) - zr[d.targets[row * kT + p + 2]];
      den += 1;
    }
  }
  EXPECT_NEAR(r.mtp_losses[1], num / den, 1e-5);
  // The snapshot is the ordinary model: its logits are the main head's.
  kiln_model* snap = nullptr;
  KILN_ASSERT_OK(kiln_trainer_snapshot(t.get(), &snap));
  ModelPtr snapshot(snap);
  auto s = make_session(snapshot.get());
  std::vector<float> row_logits(size_t{kT} * 64);
  size_t n_logits = 0;
  KILN_ASSERT_OK(kiln_forward(s.get(), d.inputs.data(), kT, KILN_LOGITS_ALL, row_logits.data(),
                              row_logits.size(), &n_logits));
  EXPECT_LT(relative_l2(row_logits.data(), z.data(), row_logits.size()), 1e-5);
}

TEST(TrainApi, ExportedDirectoryLoadsWithTheTrainedWeights) {
  auto rt = make_cpu_runtime();
  auto m = create(rt.get());
  auto t = trainer(m.get(), options());
  const Data d = data(5);
  auto b = d.batch();
  KILN_ASSERT_OK(kiln_train_step(t.get(), &b, nullptr));
  const fs::path dir = fs::temp_directory_path() / ("kiln_export_" + std::to_string(getpid()));
  KILN_ASSERT_OK(kiln_trainer_export_hf(t.get(), dir.string().c_str()));
  auto exported = load(rt.get(), dir);
  ASSERT_TRUE(exported);
  auto s = make_session(exported.get());
  std::vector<float> z(size_t{kT} * 64);
  size_t n_logits = 0;
  KILN_ASSERT_OK(
      kiln_forward(s.get(), d.inputs.data(), kT, KILN_LOGITS_ALL, z.data(), z.size(), &n_logits));
  const auto want = logits(t.get(), d.inputs);
  EXPECT_LT(relative_l2(z.data(), want.data(), z.size()), 1e-5);
  fs::remove_all(dir);
}

int cancel_in_progress(float, const char*, void* calls) {
  ++*static_cast<int*>(calls);
  return 1;
}

TEST(TrainApi, CancelledStepsChangeNothing) {
  auto rt = make_cpu_runtime();
  auto m = create(rt.get());
  auto t = trainer(m.get(), options());
  const Data d = data(6);
  auto b = d.batch();
  const auto before = logits(t.get(), d.inputs);
  KILN_ASSERT_OK(kiln_trainer_cancel(t.get()));  // applies to the next step
  EXPECT_EQ(kiln_train_step(t.get(), &b, nullptr), KILN_ERR_CANCELLED);
  int calls = 0;
  KILN_ASSERT_OK(kiln_trainer_set_progress(t.get(), cancel_in_progress, &calls));
  EXPECT_EQ(kiln_train_step(t.get(), &b, nullptr), KILN_ERR_CANCELLED);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(logits(t.get(), d.inputs), before);
  KILN_ASSERT_OK(kiln_trainer_set_progress(t.get(), nullptr, nullptr));
  auto r = result();
  KILN_ASSERT_OK(kiln_train_step(t.get(), &b, &r));
  EXPECT_EQ(r.step, 1);
}

TEST(TrainApi, BadInputGetsSpecificStatuses) {
  auto rt = make_cpu_runtime();
  auto m = create(rt.get());
  auto t = trainer(m.get(), options());
  Data d = data(7);
  auto b = d.batch();
  d.inputs[3] = 64;
  EXPECT_EQ(kiln_train_step(t.get(), &b, nullptr), KILN_ERR_OUT_OF_RANGE);
  d.inputs[3] = 1;
  Data masked = data(7);
  std::fill(masked.mask.begin(), masked.mask.end(), 0);
  auto mb = masked.batch(true);
  EXPECT_EQ(kiln_train_step(t.get(), &mb, nullptr), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("no counted position"), std::string::npos);
  auto small = b;
  small.struct_size = 8;
  EXPECT_EQ(kiln_train_step(t.get(), &small, nullptr), KILN_ERR_VERSION_MISMATCH);
  EXPECT_EQ(kiln_train_step(nullptr, &b, nullptr), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_train_step(t.get(), nullptr, nullptr), KILN_ERR_INVALID_ARGUMENT);
  auto o = options();
  o.grad_accum_steps = 3;  // does not divide B = 2
  auto t3 = trainer(m.get(), o);
  EXPECT_EQ(kiln_train_step(t3.get(), &b, nullptr), KILN_ERR_INVALID_ARGUMENT);
  o = options();
  o.beta1 = 1.5f;
  kiln_trainer* bad = nullptr;
  EXPECT_EQ(kiln_trainer_create(m.get(), &o, &bad), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bad, nullptr);
  kiln_model* none = nullptr;
  const char* json = "{not json";
  EXPECT_EQ(kiln_model_create(rt.get(), json, std::strlen(json), nullptr, &none), KILN_ERR_FORMAT);
  const char* bert = R"({"architectures":["BertForMaskedLM"],"vocab_size":8})";
  EXPECT_EQ(kiln_model_create(rt.get(), bert, std::strlen(bert), nullptr, &none),
            KILN_ERR_UNSUPPORTED);
  kiln_trainer* loaded = nullptr;
  EXPECT_EQ(kiln_checkpoint_load(rt.get(), "/nonexistent/kiln.ckpt", &loaded), KILN_ERR_NOT_FOUND);
  const fs::path junk = fs::temp_directory_path() / ("kiln_junk_" + std::to_string(getpid()));
  { std::ofstream(junk) << "KILNCKPT but not really a checkpoint"; }
  EXPECT_EQ(kiln_checkpoint_load(rt.get(), junk.string().c_str(), &loaded), KILN_ERR_FORMAT);
  fs::remove(junk);
  // The trainer is still usable after all of that.
  auto r = result();
  KILN_ASSERT_OK(kiln_train_step(t.get(), &b, &r));
  EXPECT_EQ(r.step, 1);
}

TEST(TrainApi, OneTrainerFromTwoThreadsIsBusyNotARace) {
  auto rt = make_cpu_runtime();
  const char* wide =
      R"({"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":128,
          "intermediate_size":256,"num_hidden_layers":4,"num_attention_heads":4,
          "max_position_embeddings":64,"rms_norm_eps":1e-5})";
  auto m = create(rt.get(), wide);
  auto t = trainer(m.get(), options());
  std::vector<int32_t> ids(size_t{8} * 64, 3);
  kiln_batch b = {sizeof b, 8, 64, ids.data(), ids.data(), nullptr, nullptr};
  std::atomic<int> ok{0}, busy{0};
  const auto run = [&] {
    for (int i = 0; i < 3; ++i) {
      const kiln_status st = kiln_train_step(t.get(), &b, nullptr);
      if (st == KILN_OK)
        ++ok;
      else if (st == KILN_ERR_BUSY)
        ++busy;
      else
        ADD_FAILURE() << kiln_status_name(st) << ": " << kiln_last_error();
    }
  };
  std::thread other(run);
  run();
  other.join();
  EXPECT_EQ(ok + busy, 6);
  kiln_trainer_info info{};
  info.struct_size = sizeof info;
  KILN_ASSERT_OK(kiln_trainer_get_info(t.get(), &info));
  EXPECT_EQ(info.step, ok.load());  // a BUSY call changed nothing
}

}  // namespace
}  // namespace kiln_abi_test
