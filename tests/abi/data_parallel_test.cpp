// Data-parallel training through the ABI (kiln_nccl_id_create, kiln_data_parallel_options,
// kiln_trainer_join_data_parallel; issue 8). On the CPU: the statuses and messages of every
// refusal, and that a refused join leaves the trainer usable. On a GPU: a group of one rank
// (NCCL's all-reduce over one process) must train exactly as a trainer outside any group — losses,
// gradient norms, evaluation and the final weights bit for bit, with gradient accumulation and
// residual dropout on, because the data-parallel path rescales nothing when it has one rank and a
// sum over one rank is the value itself. Several ranks need several GPUs (not lent here); those
// runs are issue 8's open part. GPU tests skip (reported as skipped) without a CUDA build or GPU.
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <filesystem>

#include "abi_util.hpp"

namespace kiln_abi_test {
namespace {

struct TrainerDeleter {
  void operator()(kiln_trainer* t) const { kiln_trainer_free(t); }
};
using TrainerPtr = std::unique_ptr<kiln_trainer, TrainerDeleter>;

constexpr int32_t kB = 4, kT = 16, kVocab = 64;

const char* kTinyLlama =
    R"({"architectures":["LlamaForCausalLM"],"vocab_size":64,"hidden_size":64,
        "intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,
        "num_key_value_heads":2,"max_position_embeddings":64,"rms_norm_eps":1e-5,
        "tie_word_embeddings":false})";

ModelPtr create_model(kiln_runtime* rt) {
  kiln_model_create_options o;
  kiln_model_create_options_default(&o, sizeof o);
  o.seed = 11;
  kiln_model* m = nullptr;
  EXPECT_EQ(kiln_model_create(rt, kTinyLlama, std::strlen(kTinyLlama), &o, &m), KILN_OK)
      << kiln_last_error();
  return ModelPtr(m);
}

kiln_trainer_options trainer_options() {
  kiln_trainer_options o;
  kiln_trainer_options_default(&o, sizeof o);
  o.learning_rate = 3e-3f;
  o.grad_accum_steps = 2;
  o.residual_dropout = 0.1f;
  o.max_grad_norm = 0.5f;  // low enough to clip: the clipped path runs after the all-reduce
  return o;
}

TrainerPtr make_trainer(kiln_model* m) {
  const kiln_trainer_options o = trainer_options();
  kiln_trainer* t = nullptr;
  EXPECT_EQ(kiln_trainer_create(m, &o, &t), KILN_OK) << kiln_last_error();
  return TrainerPtr(t);
}

struct Batch {
  std::vector<int32_t> inputs, targets;
  kiln_batch view() const {
    return {sizeof(kiln_batch), kB, kT, inputs.data(), targets.data(), nullptr, nullptr};
  }
};

Batch batch(uint32_t seed) {
  Batch b;
  uint32_t s = seed;
  const auto next = [&] { return (s = s * 1664525u + 1013904223u) >> 8; };
  for (int i = 0; i < kB * kT; ++i) b.inputs.push_back(static_cast<int32_t>(next() % kVocab));
  for (int i = 0; i < kB * kT; ++i) b.targets.push_back(static_cast<int32_t>(next() % kVocab));
  return b;
}

kiln_data_parallel_options group_of(int32_t world, int32_t rank) {
  kiln_data_parallel_options o;
  EXPECT_EQ(kiln_data_parallel_options_default(&o, sizeof o), KILN_OK);
  o.world_size = world;
  o.rank = rank;
  return o;
}

TEST(DataParallelOptions, DefaultsAreAGroupOfOneAndUnknownSizesAreRefused) {
  kiln_data_parallel_options o;
  std::memset(&o, 0xAB, sizeof o);
  ASSERT_EQ(kiln_data_parallel_options_default(&o, sizeof o), KILN_OK);
  EXPECT_EQ(o.struct_size, sizeof o);
  EXPECT_EQ(o.world_size, 1);
  EXPECT_EQ(o.rank, 0);
  EXPECT_EQ(o.shard_optimizer_state, 0);
  EXPECT_EQ(kiln_data_parallel_options_default(&o, sizeof o + 8), KILN_ERR_VERSION_MISMATCH);
  EXPECT_NE(std::string(kiln_last_error()).find("kiln_data_parallel_options"), std::string::npos);
  EXPECT_EQ(kiln_data_parallel_options_default(nullptr, sizeof o), KILN_ERR_INVALID_ARGUMENT);
}

TEST(DataParallelCpu, NcclIdNeedsACudaRuntime) {
  RuntimePtr rt = make_cpu_runtime();
  kiln_nccl_id id;
  EXPECT_EQ(kiln_nccl_id_create(rt.get(), &id), KILN_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(kiln_last_error()).find("CUDA runtime"), std::string::npos)
      << kiln_last_error();
  EXPECT_EQ(kiln_nccl_id_create(nullptr, &id), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_nccl_id_create(rt.get(), nullptr), KILN_ERR_INVALID_ARGUMENT);
}

TEST(DataParallelCpu, RefusedJoinsNameTheProblemAndLeaveTheTrainerUsable) {
  RuntimePtr rt = make_cpu_runtime();
  ModelPtr m = create_model(rt.get());
  TrainerPtr t = make_trainer(m.get());
  ASSERT_TRUE(t);

  for (const auto& [world, rank] : {std::pair{0, 0}, std::pair{2, 2}, std::pair{2, -1}}) {
    const kiln_data_parallel_options o = group_of(world, rank);
    EXPECT_EQ(kiln_trainer_join_data_parallel(t.get(), &o), KILN_ERR_INVALID_ARGUMENT)
        << world << " " << rank;
    EXPECT_NE(std::string(kiln_last_error()).find("world_size " + std::to_string(world)),
              std::string::npos)
        << kiln_last_error();
  }
  const kiln_data_parallel_options one = group_of(1, 0);
  EXPECT_EQ(kiln_trainer_join_data_parallel(t.get(), &one), KILN_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(kiln_last_error()).find("CUDA trainer"), std::string::npos)
      << kiln_last_error();
  EXPECT_EQ(kiln_trainer_join_data_parallel(nullptr, &one), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_trainer_join_data_parallel(t.get(), nullptr), KILN_ERR_INVALID_ARGUMENT);

  const Batch b = batch(3);
  const kiln_batch v = b.view();
  kiln_train_result r;
  r.struct_size = sizeof r;
  EXPECT_EQ(kiln_train_step(t.get(), &v, &r), KILN_OK) << kiln_last_error();
  EXPECT_EQ(r.step, 1);
  EXPECT_TRUE(std::isfinite(r.loss));
}

// shard_optimizer_state reaches the trainer: a bad value and Muon are refused by name before the
// engine is asked (so on the CPU too), and a caller compiled before the field (a struct_size that
// ends before it) gets the unsharded default, whatever bytes follow its struct.
TEST(DataParallelCpu, ShardOptimizerStateIsCheckedAndOldCallersGetItOff) {
  RuntimePtr rt = make_cpu_runtime();
  ModelPtr m = create_model(rt.get());
  TrainerPtr t = make_trainer(m.get());
  ASSERT_TRUE(t);
  kiln_data_parallel_options o = group_of(1, 0);
  o.shard_optimizer_state = 2;
  EXPECT_EQ(kiln_trainer_join_data_parallel(t.get(), &o), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("shard_optimizer_state is 2"), std::string::npos)
      << kiln_last_error();

  kiln_trainer_options muon = trainer_options();
  muon.optimizer = KILN_OPTIMIZER_MUON;
  kiln_trainer* raw = nullptr;
  ASSERT_EQ(kiln_trainer_create(m.get(), &muon, &raw), KILN_OK) << kiln_last_error();
  TrainerPtr mt(raw);
  o.shard_optimizer_state = 1;
  EXPECT_EQ(kiln_trainer_join_data_parallel(mt.get(), &o), KILN_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(kiln_last_error()).find("Muon"), std::string::npos) << kiln_last_error();

  // The pre-field struct: 2 in the bytes after it must not be read as the field.
  o.shard_optimizer_state = 2;
  o.struct_size = offsetof(kiln_data_parallel_options, shard_optimizer_state);
  EXPECT_EQ(kiln_trainer_join_data_parallel(mt.get(), &o), KILN_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(kiln_last_error()).find("CUDA trainer"), std::string::npos)
      << kiln_last_error();
}

// A CUDA runtime, or the reason there is none.
RuntimePtr cuda_runtime(std::string& skip) {
  kiln_runtime_options o;
  kiln_runtime_options_default(&o, sizeof o);
  o.backend = KILN_BACKEND_CUDA;
  kiln_runtime* rt = nullptr;
  const kiln_status st = kiln_runtime_create(&o, &rt);
  if (st != KILN_OK) skip = std::string(kiln_status_name(st)) + ": " + kiln_last_error();
  return RuntimePtr(rt);
}

TEST(DataParallelCuda, AGroupOfOneTrainsBitForBitAsNoGroup) {
  std::string skip;
  RuntimePtr rt = cuda_runtime(skip);
  if (!rt) GTEST_SKIP() << "no CUDA runtime: " << skip;
  kiln_nccl_id id;
  const kiln_status st = kiln_nccl_id_create(rt.get(), &id);
  if (st == KILN_ERR_UNSUPPORTED) GTEST_SKIP() << "no NCCL: " << kiln_last_error();
  ASSERT_EQ(st, KILN_OK) << kiln_last_error();

  ModelPtr m = create_model(rt.get());
  TrainerPtr alone = make_trainer(m.get());
  TrainerPtr grouped = make_trainer(m.get());
  ASSERT_TRUE(alone && grouped);
  kiln_data_parallel_options o = group_of(1, 0);
  o.id = id;
  ASSERT_EQ(kiln_trainer_join_data_parallel(grouped.get(), &o), KILN_OK) << kiln_last_error();
  EXPECT_EQ(kiln_trainer_join_data_parallel(grouped.get(), &o), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("already"), std::string::npos);

  int clipped = 0;
  for (uint32_t step = 0; step < 6; ++step) {
    const Batch b = batch(100 + step);
    const kiln_batch v = b.view();
    kiln_train_result ra, rg;
    ra.struct_size = rg.struct_size = sizeof ra;
    ASSERT_EQ(kiln_train_step(alone.get(), &v, &ra), KILN_OK) << kiln_last_error();
    ASSERT_EQ(kiln_train_step(grouped.get(), &v, &rg), KILN_OK) << kiln_last_error();
    EXPECT_EQ(ra.loss, rg.loss) << "step " << step;
    EXPECT_EQ(ra.grad_norm, rg.grad_norm) << "step " << step;
    EXPECT_EQ(ra.n_tokens, rg.n_tokens);
    EXPECT_EQ(ra.weight_sum, rg.weight_sum);
    clipped += ra.grad_norm > 0.5;
    std::printf("[ data parallel ] step %u: loss %.9g grad norm %.9g (both)\n", step, rg.loss,
                rg.grad_norm);
  }
  EXPECT_GT(clipped, 0) << "the test means to cover clipping after the all-reduce";

  const Batch e = batch(999);
  const kiln_batch ev = e.view();
  kiln_train_result ea, eg;
  ea.struct_size = eg.struct_size = sizeof ea;
  ASSERT_EQ(kiln_eval_loss(alone.get(), &ev, &ea), KILN_OK);
  ASSERT_EQ(kiln_eval_loss(grouped.get(), &ev, &eg), KILN_OK);
  EXPECT_EQ(ea.loss, eg.loss);

  size_t n = 0;
  ASSERT_EQ(kiln_trainer_forward(alone.get(), e.inputs.data(), kB, kT, KILN_TRAINER_OUTPUT_LOGITS,
                                 nullptr, 0, &n),
            KILN_ERR_BUFFER_TOO_SMALL);
  std::vector<float> la(n), lg(n);
  ASSERT_EQ(kiln_trainer_forward(alone.get(), e.inputs.data(), kB, kT, KILN_TRAINER_OUTPUT_LOGITS,
                                 la.data(), n, &n),
            KILN_OK);
  ASSERT_EQ(kiln_trainer_forward(grouped.get(), e.inputs.data(), kB, kT, KILN_TRAINER_OUTPUT_LOGITS,
                                 lg.data(), n, &n),
            KILN_OK);
  EXPECT_EQ(0, std::memcmp(la.data(), lg.data(), n * sizeof(float)))
      << "the weights after six steps differ";
}

// The weights of a trainer as logits of a fixed batch (every parameter reaches them).
std::vector<float> logits_of(kiln_trainer* t) {
  const Batch e = batch(999);
  size_t n = 0;
  EXPECT_EQ(
      kiln_trainer_forward(t, e.inputs.data(), kB, kT, KILN_TRAINER_OUTPUT_LOGITS, nullptr, 0, &n),
      KILN_ERR_BUFFER_TOO_SMALL);
  std::vector<float> out(n);
  EXPECT_EQ(kiln_trainer_forward(t, e.inputs.data(), kB, kT, KILN_TRAINER_OUTPUT_LOGITS, out.data(),
                                 n, &n),
            KILN_OK)
      << kiln_last_error();
  return out;
}

// Steps both trainers on the same batches; every reported number must be identical.
void expect_same_steps(kiln_trainer* a, kiln_trainer* b, uint32_t first, uint32_t count,
                       const char* what, int* clipped) {
  for (uint32_t step = first; step < first + count; ++step) {
    const Batch bt = batch(100 + step);
    const kiln_batch v = bt.view();
    kiln_train_result ra, rb;
    ra.struct_size = rb.struct_size = sizeof ra;
    ASSERT_EQ(kiln_train_step(a, &v, &ra), KILN_OK) << kiln_last_error();
    ASSERT_EQ(kiln_train_step(b, &v, &rb), KILN_OK) << kiln_last_error();
    EXPECT_EQ(ra.loss, rb.loss) << what << " step " << step;
    EXPECT_EQ(ra.grad_norm, rb.grad_norm) << what << " step " << step;
    if (clipped != nullptr) *clipped += ra.grad_norm > 0.5;
    std::printf("[ zero-1 ] %s step %u: loss %.9g / %.9g grad norm %.9g / %.9g\n", what, step,
                ra.loss, rb.loss, ra.grad_norm, rb.grad_norm);
  }
}

// ZeRO-1 with one rank: the shard is the whole buffer, the reduce-scatter, the norm's all-reduce
// and the all-gather move one rank's data onto itself, so the sharded group must train bit for bit
// as a trainer outside any group (AdamW, clipping, accumulation and dropout on). Then its sharded
// checkpoint (main file + one shard) must resume, in a trainer outside any group, exactly where
// the unsharded trainer goes on.
TEST(DataParallelCuda, ShardedGroupOfOneTrainsAndResumesBitForBit) {
  std::string skip;
  RuntimePtr rt = cuda_runtime(skip);
  if (!rt) GTEST_SKIP() << "no CUDA runtime: " << skip;
  kiln_nccl_id id;
  const kiln_status st = kiln_nccl_id_create(rt.get(), &id);
  if (st == KILN_ERR_UNSUPPORTED) GTEST_SKIP() << "no NCCL: " << kiln_last_error();
  ASSERT_EQ(st, KILN_OK) << kiln_last_error();

  ModelPtr m = create_model(rt.get());
  TrainerPtr alone = make_trainer(m.get());
  TrainerPtr sharded = make_trainer(m.get());
  ASSERT_TRUE(alone && sharded);
  kiln_data_parallel_options o = group_of(1, 0);
  o.id = id;
  o.shard_optimizer_state = 1;
  ASSERT_EQ(kiln_trainer_join_data_parallel(sharded.get(), &o), KILN_OK) << kiln_last_error();

  int clipped = 0;
  expect_same_steps(alone.get(), sharded.get(), 0, 6, "sharded vs alone", &clipped);
  EXPECT_GT(clipped, 0) << "the test means to cover clipping with the all-reduced norm";
  {
    const std::vector<float> la = logits_of(alone.get()), ls = logits_of(sharded.get());
    ASSERT_EQ(la.size(), ls.size());
    EXPECT_EQ(0, std::memcmp(la.data(), ls.data(), la.size() * sizeof(float)))
        << "the weights after six steps differ";
  }

  const fs::path dir = fs::temp_directory_path() / ("kiln-zero-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "ckpt").string();
  ASSERT_EQ(kiln_checkpoint_save(sharded.get(), path.c_str()), KILN_OK) << kiln_last_error();
  EXPECT_TRUE(fs::exists(path + ".optimizer-rank-0-of-1"));
  kiln_trainer* raw = nullptr;
  ASSERT_EQ(kiln_checkpoint_load(rt.get(), path.c_str(), &raw), KILN_OK) << kiln_last_error();
  TrainerPtr resumed(raw);
  expect_same_steps(alone.get(), resumed.get(), 6, 4, "alone vs resumed from shards", nullptr);
  {
    const std::vector<float> la = logits_of(alone.get()), lr = logits_of(resumed.get());
    EXPECT_EQ(0, std::memcmp(la.data(), lr.data(), la.size() * sizeof(float)))
        << "the weights after the resumed steps differ";
  }
  fs::remove(path + ".optimizer-rank-0-of-1");
  EXPECT_EQ(kiln_checkpoint_load(rt.get(), path.c_str(), &raw), KILN_ERR_NOT_FOUND);
  EXPECT_NE(std::string(kiln_last_error()).find("optimizer-rank-0-of-1"), std::string::npos)
      << kiln_last_error();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kiln_abi_test
