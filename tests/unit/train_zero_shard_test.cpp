// ZeRO-1 without a communicator (issue 8): the shard plan, and sharded checkpoints written by
// simulated ranks and read back at other world sizes.
//
// The references are independent of the code under test: the plan is checked element by element
// against the properties NCCL's ReduceScatter / AllGather need (equal, aligned, disjoint shards
// that cover the buffer in rank order) and resharding against a full buffer of known values; the
// trainer round trip against the unsharded checkpoint path of the same trainer state.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "core/error.hpp"
#include "engine/model.hpp"
#include "engine/model_factory.hpp"
#include "engine/runtime.hpp"
#include "test_support.hpp"
#include "train/checkpoint/checkpoint.hpp"
#include "train/checkpoint/sharded_optimizer.hpp"
#include "train/data_parallel/shard_plan.hpp"
#include "train/param_layout.hpp"
#include "train/trainer.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using train::ShardCopy;
using train::ShardPlan;
using train::ShardRange;

// ---- the plan ------------------------------------------------------------------------------

TEST(ShardPlan, WorkedExamples) {
  // 100 elements over 3 ranks: ceil(100/3) = 34, rounded up to 16 -> 48 per rank.
  const ShardPlan p(100, 3);
  EXPECT_EQ(p.shard_size(), 48);
  EXPECT_EQ(p.padded_total(), 144);
  EXPECT_EQ(p.owned(0), (ShardRange{0, 48}));
  EXPECT_EQ(p.owned(1), (ShardRange{48, 96}));
  EXPECT_EQ(p.owned(2), (ShardRange{96, 100}));
  // One rank owns everything, padded to 16.
  const ShardPlan one(100, 1);
  EXPECT_EQ(one.owned(0), (ShardRange{0, 100}));
  EXPECT_EQ(one.shard_size(), 112);
  // More ranks than 16-element chunks: the last ranks own nothing.
  const ShardPlan wide(20, 4);
  EXPECT_EQ(wide.shard_size(), 16);
  EXPECT_EQ(wide.owned(0), (ShardRange{0, 16}));
  EXPECT_EQ(wide.owned(1), (ShardRange{16, 20}));
  EXPECT_EQ(wide.owned(2), (ShardRange{20, 20}));
  EXPECT_EQ(wide.owned(3), (ShardRange{20, 20}));
}

TEST(ShardPlan, EveryElementHasExactlyOneOwnerAndShardsSuitTheCollectives) {
  for (int64_t total : {1, 15, 16, 17, 100, 1000, 4099, 65536, 123457}) {
    for (int32_t world = 1; world <= 9; ++world) {
      const ShardPlan p(total, world);
      SCOPED_TRACE("total " + std::to_string(total) + " world " + std::to_string(world));
      EXPECT_EQ(p.shard_size() % ParamLayout::kAlign, 0);
      EXPECT_GE(p.padded_total(), total);
      // Minimal: one alignment step less would not cover the buffer.
      EXPECT_LT((p.shard_size() - ParamLayout::kAlign) * world, total);
      std::vector<int> owners(static_cast<size_t>(total), 0);
      int64_t next = 0;
      for (int32_t r = 0; r < world; ++r) {
        const ShardRange o = p.owned(r);
        EXPECT_EQ(o.begin, std::min<int64_t>(next, total)) << "rank " << r;
        EXPECT_LE(o.size(), p.shard_size());
        // The rank's padded shard in a padded buffer starts at r * shard_size (NCCL's layout).
        if (o.size() > 0) {
          EXPECT_EQ(o.begin, r * p.shard_size());
        }
        for (int64_t i = o.begin; i < o.end; ++i) ++owners[static_cast<size_t>(i)];
        next = o.end;
      }
      EXPECT_EQ(next, total);
      for (int64_t i = 0; i < total; ++i) ASSERT_EQ(owners[static_cast<size_t>(i)], 1) << i;
    }
  }
}

TEST(ShardPlan, BadSizesAreRefused) {
  EXPECT_FAILS(ShardPlan(0, 2), KILN_ERR_INVALID_ARGUMENT, "0 elements");
  EXPECT_FAILS(ShardPlan(10, 0), KILN_ERR_INVALID_ARGUMENT, "world size is 0");
  const ShardPlan p(10, 2);
  EXPECT_FAILS(p.owned(2), KILN_ERR_INVALID_ARGUMENT, "rank 2");
  EXPECT_FAILS(p.owned(-1), KILN_ERR_INVALID_ARGUMENT, "rank -1");
  EXPECT_FAILS(shard_copies(p, {5, 11}), KILN_ERR_INVALID_ARGUMENT, "[5, 11)");
}

// Resharding: cut a buffer of known values at world W, reassemble every rank's range at world M
// through shard_copies, compare with the buffer itself.
TEST(ShardPlan, CopiesReassembleAnyRangeFromAnyWorld) {
  for (int64_t total : {1, 33, 100, 1000, 4099}) {
    std::vector<int64_t> full(static_cast<size_t>(total));
    std::iota(full.begin(), full.end(), 7);
    for (int32_t w = 1; w <= 6; ++w) {
      const ShardPlan from(total, w);
      std::vector<std::vector<int64_t>> shards;
      for (int32_t r = 0; r < w; ++r) {
        const ShardRange o = from.owned(r);
        shards.emplace_back(full.begin() + o.begin, full.begin() + o.end);
      }
      for (int32_t m = 1; m <= 6; ++m) {
        const ShardPlan to(total, m);
        for (int32_t r = 0; r < m; ++r) {
          const ShardRange want = to.owned(r);
          std::vector<int64_t> got(static_cast<size_t>(want.size()), -1);
          int64_t covered = 0;
          for (const ShardCopy& c : shard_copies(from, want)) {
            ASSERT_GT(c.count, 0);
            ASSERT_LE(c.source_offset + c.count,
                      static_cast<int64_t>(shards[c.source_rank].size()));
            for (int64_t i = 0; i < c.count; ++i) {
              got[static_cast<size_t>(c.dest_offset + i)] =
                  shards[c.source_rank][static_cast<size_t>(c.source_offset + i)];
            }
            covered += c.count;
          }
          EXPECT_EQ(covered, want.size());
          const std::vector<int64_t> expect(full.begin() + want.begin, full.begin() + want.end);
          ASSERT_EQ(got, expect) << "total " << total << " W " << w << " M " << m << " r " << r;
        }
      }
    }
  }
}

// ---- sharded optimizer files -----------------------------------------------------------------

struct FullState {
  std::vector<float> m, v;
};

FullState random_state(int64_t total, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  FullState s;
  for (int64_t i = 0; i < total; ++i) s.m.push_back(d(rng));
  for (int64_t i = 0; i < total; ++i) s.v.push_back(std::abs(d(rng)));
  return s;
}

void write_shards(const fs::path& path, const FullState& s, int32_t world, int64_t step) {
  const ShardPlan plan(static_cast<int64_t>(s.m.size()), world);
  for (int32_t r = 0; r < world; ++r) {
    const ShardRange o = plan.owned(r);
    const auto cut = [&](const std::vector<float>& b) {
      return std::span<const float>(b).subspan(static_cast<size_t>(o.begin),
                                               static_cast<size_t>(o.size()));
    };
    const FlatStateSlice slices[] = {{TensorKind::AdamM, cut(s.m)}, {TensorKind::AdamV, cut(s.v)}};
    save_optimizer_shard(path, plan, r, step, slices);
  }
}

// Reads `want` of both buffers from the shards written at `world`.
FullState read_range(const fs::path& path, int64_t total, int32_t world, int64_t step,
                     ShardRange want) {
  FullState got;
  got.m.assign(static_cast<size_t>(want.size()), -1.0f);
  got.v.assign(static_cast<size_t>(want.size()), -1.0f);
  const FlatStateTarget targets[] = {{TensorKind::AdamM, got.m}, {TensorKind::AdamV, got.v}};
  load_optimizer_shards(path, ShardPlan(total, world), step, want, targets);
  return got;
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(ShardedOptimizer, ThreeShardsReloadAtTwoAndAtOneBitForBit) {
  const fs::path dir = test::temp_dir("zero-shards");
  const int64_t total = 1000;
  const FullState full = random_state(total, 5);
  write_shards(dir / "ckpt", full, 3, 42);
  for (int32_t r = 0; r < 3; ++r)
    EXPECT_TRUE(fs::exists(dir / ("ckpt.optimizer-rank-" + std::to_string(r) + "-of-3")));
  for (int32_t m : {1, 2, 3, 4, 7}) {
    const ShardPlan to(total, m);
    for (int32_t r = 0; r < m; ++r) {
      const ShardRange want = to.owned(r);
      const FullState got = read_range(dir / "ckpt", total, 3, 42, want);
      const auto cut = [&](const std::vector<float>& b) {
        return std::span<const float>(b).subspan(static_cast<size_t>(want.begin),
                                                 static_cast<size_t>(want.size()));
      };
      EXPECT_TRUE(same_bits(got.m, cut(full.m))) << "M " << m << " rank " << r;
      EXPECT_TRUE(same_bits(got.v, cut(full.v))) << "M " << m << " rank " << r;
    }
  }
}

TEST(ShardedOptimizer, MoreRanksThanChunksWritesEmptyShards) {
  const fs::path dir = test::temp_dir("zero-empty");
  const FullState full = random_state(20, 9);
  write_shards(dir / "ckpt", full, 4, 3);  // ranks 2 and 3 own nothing
  const FullState got = read_range(dir / "ckpt", 20, 4, 3, {0, 20});
  EXPECT_TRUE(same_bits(got.m, full.m));
  EXPECT_TRUE(same_bits(got.v, full.v));
}

TEST(ShardedOptimizer, MissingWrongOrCorruptShardsAreNamed) {
  const fs::path dir = test::temp_dir("zero-bad");
  const int64_t total = 300;
  write_shards(dir / "ckpt", random_state(total, 1), 3, 10);
  const fs::path rank1 = optimizer_shard_path(dir / "ckpt", 1, 3);
  const std::string rank1_bytes = test::read_file(rank1);

  fs::remove(rank1);
  EXPECT_FAILS(read_range(dir / "ckpt", total, 3, 10, {0, total}), KILN_ERR_NOT_FOUND,
               rank1.string());
  // A range inside rank 0's shard does not need rank 1's file.
  EXPECT_NO_THROW(read_range(dir / "ckpt", total, 3, 10, {0, 50}));

  // Corrupt manifest: flatbuffers verification names the file.
  std::string corrupt = rank1_bytes;
  for (size_t i = 16; i < 48; ++i) corrupt[i] = static_cast<char>(0xFF);
  test::write_file(rank1, corrupt);
  EXPECT_FAILS(read_range(dir / "ckpt", total, 3, 10, {0, total}), KILN_ERR_FORMAT, rank1.string());

  // Truncated data.
  test::write_file(rank1, rank1_bytes.substr(0, rank1_bytes.size() - 8));
  EXPECT_FAILS(read_range(dir / "ckpt", total, 3, 10, {0, total}), KILN_ERR_FORMAT,
               "runs past the end");

  // A shard from another save (another step).
  test::write_file(rank1, rank1_bytes);
  EXPECT_FAILS(read_range(dir / "ckpt", total, 3, 11, {0, total}), KILN_ERR_FORMAT,
               "saved at step 10");

  // A shard of another world under this name.
  write_shards(dir / "other", random_state(total, 2), 2, 10);
  fs::copy_file(optimizer_shard_path(dir / "other", 1, 2), rank1,
                fs::copy_options::overwrite_existing);
  EXPECT_FAILS(read_range(dir / "ckpt", total, 3, 10, {0, total}), KILN_ERR_FORMAT, "rank 1 of 2");

  // A shard cut from a buffer of another length.
  write_shards(dir / "longer", random_state(total + 64, 2), 3, 10);
  fs::copy_file(optimizer_shard_path(dir / "longer", 1, 3), rank1,
                fs::copy_options::overwrite_existing);
  EXPECT_FAILS(read_range(dir / "ckpt", total, 3, 10, {0, total}), KILN_ERR_FORMAT,
               "the shard plan gives");

  // A plain checkpoint file where a shard should be.
  CheckpointContents plain;
  save_checkpoint(rank1, plain);
  EXPECT_FAILS(read_range(dir / "ckpt", total, 3, 10, {0, total}), KILN_ERR_FORMAT,
               "not an optimizer shard");
}

TEST(ShardedOptimizer, WriterRefusesSlicesOfTheWrongLength) {
  const fs::path dir = test::temp_dir("zero-writer");
  const ShardPlan plan(100, 3);
  std::vector<float> slice(47);
  const FlatStateSlice slices[] = {{TensorKind::AdamM, slice}};
  EXPECT_FAILS(save_optimizer_shard(dir / "c", plan, 0, 1, slices), KILN_ERR_INVALID_ARGUMENT,
               "owns 48");
  EXPECT_FAILS(save_optimizer_shard(dir / "c", plan, 3, 1, slices), KILN_ERR_INVALID_ARGUMENT,
               "rank 3");
  EXPECT_FALSE(fs::exists(optimizer_shard_path(dir / "c", 0, 3)));
}

// ---- a trainer's sharded checkpoint ------------------------------------------------------------

constexpr const char* kTinyLlama =
    R"({"architectures":["LlamaForCausalLM"],"vocab_size":64,"hidden_size":32,
        "intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,
        "num_key_value_heads":2,"max_position_embeddings":32,"rms_norm_eps":1e-5,
        "tie_word_embeddings":false})";

struct Batch {
  std::vector<int32_t> inputs, targets;
  BatchView view() const { return {2, 8, inputs, targets, {}, {}}; }
};

Batch batch(uint32_t seed) {
  std::mt19937 rng(seed);
  Batch b;
  for (int i = 0; i < 16; ++i) b.inputs.push_back(static_cast<int32_t>(rng() % 64));
  for (int i = 0; i < 16; ++i) b.targets.push_back(static_cast<int32_t>(rng() % 64));
  return b;
}

// Every tensor of two checkpoint files, bit for bit (names, kinds, shapes and bytes).
void expect_same_tensors(const fs::path& a, const fs::path& b) {
  const auto ca = LoadedCheckpoint::open(a), cb = LoadedCheckpoint::open(b);
  const CheckpointContents &x = ca->contents(), &y = cb->contents();
  EXPECT_EQ(x.step, y.step);
  EXPECT_EQ(x.rng_state, y.rng_state);
  ASSERT_EQ(x.tensors.size(), y.tensors.size());
  for (const CheckpointTensor& t : x.tensors) {
    const CheckpointTensor* u = y.find(t.name, t.kind);
    ASSERT_NE(u, nullptr) << t.name;
    ASSERT_EQ(t.nbytes, u->nbytes) << t.name;
    EXPECT_EQ(0, std::memcmp(t.data, u->data, t.nbytes))
        << t.name << " " << tensor_kind_name(t.kind);
  }
}

TEST(ShardedOptimizer, TrainerSavedByThreeRanksResumesWithoutAGroupExactly) {
  const fs::path dir = test::temp_dir("zero-trainer");
  RuntimeOptions ro;
  ro.backend = KILN_BACKEND_CPU;
  ro.n_threads = 1;
  Runtime rt(ro);
  const auto model = create_model(rt, kTinyLlama, 3, "");
  TrainerOptions o;
  o.optimizer.lr = 3e-3f;
  o.clip_norm = 0.5f;
  o.grad_accum_steps = 2;
  auto trainer = Trainer::create(*model, o, &rt.backend());
  for (uint32_t s = 0; s < 3; ++s) trainer->train_step(batch(s).view());

  trainer->save_checkpoint(dir / "plain");
  for (int32_t r = 0; r < 3; ++r) trainer->save_checkpoint_shard(dir / "sharded", r, 3);
  {
    const auto main = LoadedCheckpoint::open(dir / "sharded");
    EXPECT_EQ(main->contents().optimizer_world, 3);
    for (const CheckpointTensor& t : main->contents().tensors) {
      EXPECT_EQ(t.kind, TensorKind::Value) << t.name << ": the main file holds no state";
    }
  }

  // M = 1, no group: the state assembled from the shards is the state itself.
  auto resumed = Trainer::load_checkpoint(dir / "sharded", &rt.backend());
  resumed->save_checkpoint(dir / "resaved");
  expect_same_tensors(dir / "plain", dir / "resaved");
  // ...and it trains on exactly as the original does.
  for (uint32_t s = 3; s < 5; ++s) {
    const StepResult a = trainer->train_step(batch(s).view());
    const StepResult b = resumed->train_step(batch(s).view());
    EXPECT_EQ(a.loss, b.loss) << "step " << s;
    EXPECT_EQ(a.grad_norm, b.grad_norm) << "step " << s;
  }
  trainer->save_checkpoint(dir / "plain5");
  resumed->save_checkpoint(dir / "resumed5");
  expect_same_tensors(dir / "plain5", dir / "resumed5");

  // A missing shard is named; the shard file itself is not a checkpoint.
  const fs::path rank2 = optimizer_shard_path(dir / "sharded", 2, 3);
  fs::remove(rank2);
  EXPECT_FAILS(Trainer::load_checkpoint(dir / "sharded", &rt.backend()), KILN_ERR_NOT_FOUND,
               rank2.string());
  EXPECT_FAILS(Trainer::load_checkpoint(optimizer_shard_path(dir / "sharded", 0, 3), &rt.backend()),
               KILN_ERR_FORMAT, "is an optimizer shard file");
  EXPECT_FAILS(trainer->save_checkpoint_shard(dir / "x", 3, 3), KILN_ERR_INVALID_ARGUMENT,
               "rank 3");
}

}  // namespace
}  // namespace kiln
