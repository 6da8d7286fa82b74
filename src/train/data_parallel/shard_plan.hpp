// ZeRO-1 shard plan: which contiguous slice of the flattened optimizer state (the ParamLayout
// buffer, alignment padding included) each rank of a data-parallel group owns, and how a slice at
// one world size is assembled from the shards written at another (resharding checkpoints).
//
// A pure function of (buffer length, world size): every rank, every save and every load computes
// the same boundaries, so nothing about them needs to be communicated. Shards are equal-sized (the
// last one padded past the end of the buffer) because ncclReduceScatter and ncclAllGather move the
// same count to and from every rank, and each shard size is a multiple of ParamLayout::kAlign so
// every rank's slice starts on a 64-byte boundary of a float buffer.
#pragma once

#include <cstdint>
#include <vector>

namespace kiln::train {

// [begin, end) in elements of the flat buffer; may be empty (more ranks than aligned chunks).
struct ShardRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const ShardRange&) const = default;
};

class ShardPlan {
 public:
  // Throws KILN_ERR_INVALID_ARGUMENT for total < 1 or world < 1 (naming the value).
  ShardPlan(int64_t total, int32_t world);

  int64_t total() const { return total_; }
  int32_t world() const { return world_; }
  // Elements per rank: ceil(total / world) rounded up to ParamLayout::kAlign.
  int64_t shard_size() const { return shard_size_; }
  // shard_size() * world(): the length of a buffer padded for the collectives.
  int64_t padded_total() const { return shard_size_ * world_; }
  // The part of [0, total) that `rank` owns (its padded shard clipped to the buffer). Throws
  // KILN_ERR_INVALID_ARGUMENT for a rank outside [0, world).
  ShardRange owned(int32_t rank) const;

 private:
  int64_t total_;
  int32_t world_;
  int64_t shard_size_;
};

// One piece of a resharding copy: `count` elements from offset `source_offset` of shard
// `source_rank` (relative to that shard's owned().begin) to offset `dest_offset` of the wanted
// range (relative to wanted.begin).
struct ShardCopy {
  int32_t source_rank = 0;
  int64_t source_offset = 0;
  int64_t dest_offset = 0;
  int64_t count = 0;
  bool operator==(const ShardCopy&) const = default;
};

// The pieces of `from`'s shards that make up `wanted`, in ascending order, covering it exactly
// once; shards that do not overlap it are not named. Throws KILN_ERR_INVALID_ARGUMENT when
// `wanted` is not inside [0, from.total()].
std::vector<ShardCopy> shard_copies(const ShardPlan& from, ShardRange wanted);

}  // namespace kiln::train
