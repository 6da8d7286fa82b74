// ZeRO-1 checkpoints: the optimizer state cut into one file per rank (schemas/checkpoint.fbs,
// OptimizerShard; docs/training-design.md, "Sharded optimizer state").
//
// A sharded checkpoint at `path` is the main file (weights, step, options, RNG and data state;
// `optimizer_world` = W and no state tensors), written once by rank 0, plus W shard files
// "<path>.optimizer-rank-R-of-W", each written by rank R with its slice (train/data_parallel/
// shard_plan.hpp) of every flat optimizer buffer. Each file is an ordinary checkpoint file,
// written atomically and verified on load like one. A shard records its world, rank, slice, the
// buffer length and the step, so a shard left over from another save or another world is refused.
//
// Loading at another world size M (or with no group at all) reads, through the same shard plan,
// only the shards that overlap the wanted range. Nothing here talks to other ranks: rank and world
// are plain arguments, so one process can write or read every rank's part (tests do).
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "train/checkpoint/checkpoint.hpp"
#include "train/data_parallel/shard_plan.hpp"
#include "train/tensor_kind.hpp"

namespace kiln {

// The name of every state tensor in a shard file (its kind tells them apart).
inline constexpr char kOptimizerShardTensor[] = "optimizer_state";

// "<checkpoint>.optimizer-rank-<rank>-of-<world>".
std::filesystem::path optimizer_shard_path(const std::filesystem::path& checkpoint, int32_t rank,
                                           int32_t world);

// One flat optimizer buffer (all of it, or the slice a rank holds).
struct FlatStateSlice {
  TensorKind kind;
  std::span<const float> data;
};
struct FlatStateTarget {
  TensorKind kind;
  std::span<float> data;
};

// Writes shard `rank` of `plan` for the checkpoint at `checkpoint` saved at `step`: each slice
// holds exactly plan.owned(rank).size() floats (the rank's part of the flat buffer of its kind).
// Throws KILN_ERR_INVALID_ARGUMENT (a slice of another length, a repeated or Value kind, a rank
// outside the plan) and what save_checkpoint throws.
void save_optimizer_shard(const std::filesystem::path& checkpoint, const train::ShardPlan& plan,
                          int32_t rank, int64_t step, std::span<const FlatStateSlice> slices);

// Fills each target (wanted.size() floats) with [wanted.begin, wanted.end) of the flat buffer of
// its kind, read from the shard files that `plan` (the world they were written at) says overlap
// it. Throws KILN_ERR_NOT_FOUND naming a missing shard file, KILN_ERR_FORMAT naming the file and
// field when a shard disagrees with the plan or the step (another save, another world) or lacks a
// state tensor, KILN_ERR_INVALID_ARGUMENT for a target of the wrong length or a range outside the
// plan, and what LoadedCheckpoint::open throws.
void load_optimizer_shards(const std::filesystem::path& checkpoint, const train::ShardPlan& plan,
                           int64_t step, train::ShardRange wanted,
                           std::span<const FlatStateTarget> targets);

}  // namespace kiln
