// Data-parallel training through the ABI (kiln_nccl_id_create, kiln_data_parallel_options,
// kiln_trainer_join_data_parallel; issue 8). On the CPU: the statuses and messages of every
// refusal, and that a refused join leaves the trainer usable. On a GPU: a group of one rank
// (NCCL's all-reduce over one process) must train exactly as a trainer outside any group — losses,
// gradient norms, evaluation and the final weights bit for bit, with gradient accumulation and
// residual dropout on, because the data-parallel path rescales nothing when it has one rank and a
// sum over one rank is the value itself. Several ranks need several GPUs (not lent here); those
// runs are issue 8's open part. GPU tests skip (reported as skipped) without a CUDA build or GPU.
//
// The gradient all-reduce overlapped with the backward pass (KILN_DP_BUCKET_MB, default 25 MiB;
// 0 = one all-reduce after the backward pass): at one rank a bucket's all-reduce changes nothing,
// so the bucketed group must train bit for bit as the single all-reduce and as no group. What
// makes that test able to fail at one rank: the engine refuses (KILN_ERR_INTERNAL) a gradient
// write into a bucket already handed to the all-reduce, a backward pass whose release points do
// not follow the plan or that ends with a bucket unreleased, a micro-batch after the releasing
// one, and a step that reaches all_reduce_grads without having released its buckets, so wiring
// that is wrong fails the step instead of passing silently. What one rank cannot show: a missing
// stream dependency (an all-reduce racing its bucket's last write changes nothing when it sums one
// rank) and the gain of the overlap; both need several GPUs.
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>

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

ModelPtr create_model(kiln_runtime* rt, const char* config = kTinyLlama) {
  kiln_model_create_options o;
  kiln_model_create_options_default(&o, sizeof o);
  o.seed = 11;
  kiln_model* m = nullptr;
  EXPECT_EQ(kiln_model_create(rt, config, std::strlen(config), &o, &m), KILN_OK)
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

// A CUDA runtime, or the reason there is none: only "no usable CUDA device" (KILN_ERR_BACKEND)
// and "built without CUDA" (KILN_ERR_UNSUPPORTED) are reasons to skip; any other failure to make
// one is recorded as the test's failure (a test that then skips still reports FAILED).
RuntimePtr cuda_runtime(std::string& skip) {
  kiln_runtime_options o;
  kiln_runtime_options_default(&o, sizeof o);
  o.backend = KILN_BACKEND_CUDA;
  kiln_runtime* rt = nullptr;
  const kiln_status st = kiln_runtime_create(&o, &rt);
  if (st != KILN_OK) skip = std::string(kiln_status_name(st)) + ": " + kiln_last_error();
  if (st != KILN_OK && st != KILN_ERR_BACKEND && st != KILN_ERR_UNSUPPORTED) {
    ADD_FAILURE() << "kiln_runtime_create(CUDA) failed for a reason other than no device: " << skip;
  }
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

namespace kiln_abi_test {
namespace {

// Sets KILN_DP_BUCKET_MB (unset for nullptr) for the lifetime of the object, then restores it:
// the engine reads it when a trainer joins a group.
class BucketEnv {
 public:
  explicit BucketEnv(const char* mib) {
    if (const char* old = std::getenv(kName)) old_ = old;
    if (mib != nullptr) {
      ::setenv(kName, mib, 1);
    } else {
      ::unsetenv(kName);
    }
  }
  ~BucketEnv() {
    if (old_) {
      ::setenv(kName, old_->c_str(), 1);
    } else {
      ::unsetenv(kName);
    }
  }
  BucketEnv(const BucketEnv&) = delete;
  BucketEnv& operator=(const BucketEnv&) = delete;

 private:
  static constexpr const char* kName = "KILN_DP_BUCKET_MB";
  std::optional<std::string> old_;
};

// Joins `t` to a fresh group of one with KILN_DP_BUCKET_MB = mib; false (with a failure
// recorded) when that did not work.
bool join_alone(kiln_runtime* rt, kiln_trainer* t, const char* mib) {
  kiln_nccl_id id;
  if (kiln_nccl_id_create(rt, &id) != KILN_OK) {
    ADD_FAILURE() << kiln_last_error();
    return false;
  }
  const BucketEnv env(mib);
  kiln_data_parallel_options o = group_of(1, 0);
  o.id = id;
  const kiln_status st = kiln_trainer_join_data_parallel(t, &o);
  EXPECT_EQ(st, KILN_OK) << "KILN_DP_BUCKET_MB=" << (mib ? mib : "(unset)") << ": "
                         << kiln_last_error();
  return st == KILN_OK;
}

// Why the test must skip (no NCCL), or nothing.
std::optional<std::string> why_no_group(kiln_runtime* rt) {
  kiln_nccl_id id;
  const kiln_status st = kiln_nccl_id_create(rt, &id);
  if (st == KILN_ERR_UNSUPPORTED) return std::string("no NCCL: ") + kiln_last_error();
  EXPECT_EQ(st, KILN_OK) << kiln_last_error();  // the joins that follow then fail too
  return std::nullopt;
}

// Buckets of 0.02 MiB (20,972 bytes) on the tiny Llama (tensors of 256 B to 24 KiB): 16 buckets,
// every half-block cut into several (the final norm shares one with the head, the attention norm
// with q, k with v; each 24 KiB MLP projection and the embedding are alone), all 16 all-reduced on
// the comm stream during each step's second micro-batch (the last as its backward pass ends), with
// clipping, accumulation and dropout on. Losses, gradient norms and the final weights must be
// identical to the single all-reduce's and to no group's.
TEST(DataParallelCuda, BucketedAllReduceTrainsBitForBitAsOneAllReduceAndAsNoGroup) {
  std::string skip;
  RuntimePtr rt = cuda_runtime(skip);
  if (!rt) GTEST_SKIP() << "no CUDA runtime: " << skip;
  if (const auto why = why_no_group(rt.get())) GTEST_SKIP() << *why;

  ModelPtr m = create_model(rt.get());
  TrainerPtr alone = make_trainer(m.get());
  TrainerPtr single = make_trainer(m.get());
  TrainerPtr bucketed = make_trainer(m.get());
  ASSERT_TRUE(alone && single && bucketed);
  {
    // A malformed value is refused by name and leaves the trainer outside any group.
    kiln_nccl_id id;
    ASSERT_EQ(kiln_nccl_id_create(rt.get(), &id), KILN_OK) << kiln_last_error();
    const BucketEnv env("lots");
    kiln_data_parallel_options o = group_of(1, 0);
    o.id = id;
    EXPECT_EQ(kiln_trainer_join_data_parallel(bucketed.get(), &o), KILN_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(kiln_last_error()).find("KILN_DP_BUCKET_MB is 'lots'"), std::string::npos)
        << kiln_last_error();
  }
  ASSERT_TRUE(join_alone(rt.get(), single.get(), "0"));
  ASSERT_TRUE(join_alone(rt.get(), bucketed.get(), "0.02"));

  int clipped = 0;
  for (uint32_t step = 0; step < 6; ++step) {
    const Batch b = batch(100 + step);
    const kiln_batch v = b.view();
    kiln_train_result ra, rs, rb;
    ra.struct_size = rs.struct_size = rb.struct_size = sizeof ra;
    ASSERT_EQ(kiln_train_step(alone.get(), &v, &ra), KILN_OK) << kiln_last_error();
    ASSERT_EQ(kiln_train_step(single.get(), &v, &rs), KILN_OK) << kiln_last_error();
    ASSERT_EQ(kiln_train_step(bucketed.get(), &v, &rb), KILN_OK) << kiln_last_error();
    EXPECT_EQ(rb.loss, rs.loss) << "step " << step;
    EXPECT_EQ(rb.grad_norm, rs.grad_norm) << "step " << step;
    EXPECT_EQ(rb.loss, ra.loss) << "step " << step;
    EXPECT_EQ(rb.grad_norm, ra.grad_norm) << "step " << step;
    clipped += rb.grad_norm > 0.5;
    std::printf(
        "[ buckets ] step %u: loss %.9g / %.9g / %.9g grad norm %.9g / %.9g / %.9g "
        "(bucketed / single all-reduce / no group)\n",
        step, rb.loss, rs.loss, ra.loss, rb.grad_norm, rs.grad_norm, ra.grad_norm);
  }
  EXPECT_GT(clipped, 0) << "the test means to cover clipping after the bucketed all-reduce";
  const std::vector<float> la = logits_of(alone.get()), ls = logits_of(single.get()),
                           lb = logits_of(bucketed.get());
  ASSERT_EQ(la.size(), lb.size());
  EXPECT_EQ(0, std::memcmp(lb.data(), ls.data(), lb.size() * sizeof(float)))
      << "the weights after six steps differ from the single all-reduce's";
  EXPECT_EQ(0, std::memcmp(lb.data(), la.data(), lb.size() * sizeof(float)))
      << "the weights after six steps differ from no group's";
}

// The other layouts whose release order differs: GPT-2 (tied head written by every head first and
// by the embedding last, learned positions, LayerNorm and biases: bias gradients from cuBLASLt
// epilogues) with one MTP head, and NanoChat (embedding norm, no norm weights, untied head) with
// two, each with buckets of 0.01 MiB (nearly every tensor alone). The CUDA engine's
// backward pass must reach the plan's points in order (else the step fails) and train bit for bit
// as no group.
TEST(DataParallelCuda, BucketedAllReduceFollowsMtpTiedAndEmbedNormLayouts) {
  std::string skip;
  RuntimePtr rt = cuda_runtime(skip);
  if (!rt) GTEST_SKIP() << "no CUDA runtime: " << skip;
  if (const auto why = why_no_group(rt.get())) GTEST_SKIP() << *why;

  for (const auto& [family, mtp] : {std::pair{"gpt2", 1}, std::pair{"nanochat", 2}}) {
    SCOPED_TRACE(family);
    std::ifstream in(fixtures() / "hf" / family / "config.json");
    ASSERT_TRUE(in) << family;
    std::stringstream text;
    text << in.rdbuf();
    const std::string config = text.str();
    ModelPtr m = create_model(rt.get(), config.c_str());
    ASSERT_TRUE(m);
    kiln_trainer_options o = trainer_options();
    o.n_mtp_heads = mtp;
    kiln_trainer *ra = nullptr, *rb = nullptr;
    ASSERT_EQ(kiln_trainer_create(m.get(), &o, &ra), KILN_OK) << kiln_last_error();
    TrainerPtr alone(ra);
    ASSERT_EQ(kiln_trainer_create(m.get(), &o, &rb), KILN_OK) << kiln_last_error();
    TrainerPtr bucketed(rb);
    ASSERT_TRUE(join_alone(rt.get(), bucketed.get(), "0.01"));
    for (uint32_t step = 0; step < 4; ++step) {
      const Batch b = batch(300 + step);
      const kiln_batch v = b.view();
      kiln_train_result x, y;
      x.struct_size = y.struct_size = sizeof x;
      ASSERT_EQ(kiln_train_step(alone.get(), &v, &x), KILN_OK) << kiln_last_error();
      ASSERT_EQ(kiln_train_step(bucketed.get(), &v, &y), KILN_OK) << kiln_last_error();
      EXPECT_EQ(y.loss, x.loss) << "step " << step;
      EXPECT_EQ(y.objective, x.objective) << "step " << step;
      EXPECT_EQ(y.grad_norm, x.grad_norm) << "step " << step;
      std::printf(
          "[ buckets ] %s + %d MTP step %u: objective %.9g / %.9g grad norm %.9g / %.9g "
          "(bucketed / no group)\n",
          family, mtp, step, y.objective, x.objective, y.grad_norm, x.grad_norm);
    }
    const std::vector<float> la = logits_of(alone.get()), lb = logits_of(bucketed.get());
    ASSERT_EQ(la.size(), lb.size());
    EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)))
        << "the weights after four steps differ";
  }
}

// A 160 M-parameter Llama (640 MB of float32 gradients; at the default 25 MiB, 27 buckets: each
// MLP half cut in two (its norm + gate + up, then down), each attention half one, the head and the
// embedding alone; at 1 MiB, 75 buckets) trained with the
// single all-reduce and with buckets of the default size and of 1 MiB, interleaved step by step:
// identical losses and gradient norms, and the cost of the buckets at one rank (where an
// all-reduce moves nothing, so this is the price of the events, the second stream and the
// extra launches, not the gain of the overlap, which needs several GPUs).
TEST(DataParallelCuda, BucketedAllReduceCostAtOneRank) {
  std::string skip;
  RuntimePtr rt = cuda_runtime(skip);
  if (!rt) GTEST_SKIP() << "no CUDA runtime: " << skip;
  if (const auto why = why_no_group(rt.get())) GTEST_SKIP() << *why;

  static const char* kMedium =
      R"({"architectures":["LlamaForCausalLM"],"vocab_size":32000,"hidden_size":1024,
          "intermediate_size":2816,"num_hidden_layers":8,"num_attention_heads":16,
          "num_key_value_heads":8,"max_position_embeddings":512,"rms_norm_eps":1e-5,
          "tie_word_embeddings":false})";
  constexpr int32_t rows = 8, cols = 256, vocab = 32000;
  ModelPtr m = create_model(rt.get(), kMedium);
  ASSERT_TRUE(m);
  const char* mibs[] = {"0", nullptr, "1"};
  const char* names[] = {"single all-reduce", "buckets of 25 MiB (default)", "buckets of 1 MiB"};
  std::vector<TrainerPtr> trainers;
  for (const char* mib : mibs) {
    trainers.push_back(make_trainer(m.get()));
    ASSERT_TRUE(trainers.back());
    ASSERT_TRUE(join_alone(rt.get(), trainers.back().get(), mib));
  }
  const auto make_batch = [&](uint32_t seed) {
    Batch b;
    uint32_t s = seed;
    const auto next = [&] { return (s = s * 1664525u + 1013904223u) >> 8; };
    for (int i = 0; i < rows * cols; ++i) b.inputs.push_back(static_cast<int32_t>(next() % vocab));
    for (int i = 0; i < rows * cols; ++i) b.targets.push_back(static_cast<int32_t>(next() % vocab));
    return b;
  };
  constexpr int kWarmup = 2, kTimed = 10;
  std::vector<double> ms(trainers.size(), 0.0);
  for (int step = 0; step < kWarmup + kTimed; ++step) {
    const Batch b = make_batch(500 + static_cast<uint32_t>(step));
    const kiln_batch v{sizeof(kiln_batch), rows,    cols,   b.inputs.data(),
                       b.targets.data(),   nullptr, nullptr};
    std::vector<kiln_train_result> r(trainers.size());
    for (size_t i = 0; i < trainers.size(); ++i) {
      r[i].struct_size = sizeof r[i];
      const auto t0 = std::chrono::steady_clock::now();
      ASSERT_EQ(kiln_train_step(trainers[i].get(), &v, &r[i]), KILN_OK) << kiln_last_error();
      const auto t1 = std::chrono::steady_clock::now();
      if (step >= kWarmup) ms[i] += std::chrono::duration<double, std::milli>(t1 - t0).count();
    }
    for (size_t i = 1; i < trainers.size(); ++i) {
      EXPECT_EQ(r[i].loss, r[0].loss) << names[i] << " step " << step;
      EXPECT_EQ(r[i].grad_norm, r[0].grad_norm) << names[i] << " step " << step;
    }
  }
  for (size_t i = 0; i < trainers.size(); ++i) {
    std::printf(
        "[ buckets ] world 1, 160 M parameters, %d x %d tokens, accumulation 2: %s "
        "%.2f ms/step (mean of %d)\n",
        rows, cols, names[i], ms[i] / kTimed, kTimed);
  }
}

}  // namespace
}  // namespace kiln_abi_test
