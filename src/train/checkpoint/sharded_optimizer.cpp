#include "train/checkpoint/sharded_optimizer.hpp"

#include <cstring>
#include <set>
#include <string>

#include "core/error.hpp"

namespace kiln {

namespace {

std::string range_text(train::ShardRange r) {
  return "[" + std::to_string(r.begin) + ", " + std::to_string(r.end) + ")";
}

// The state tensor of `kind` in a verified shard file, checked to hold `numel` floats.
const CheckpointTensor& shard_tensor(const LoadedCheckpoint& shard, TensorKind kind,
                                     int64_t numel) {
  const std::string file = "optimizer shard '" + shard.path().string() + "'";
  const CheckpointTensor* t = shard.contents().find(kOptimizerShardTensor, kind);
  if (t == nullptr) {
    fail(KILN_ERR_FORMAT,
         file + " has no " + std::string(tensor_kind_name(kind)) + " state tensor");
  }
  if (t->dtype != DType::F32 || t->shape != std::vector<int64_t>{numel}) {
    fail(KILN_ERR_FORMAT, file + ": its " + std::string(tensor_kind_name(kind)) +
                              " tensor is not " + std::to_string(numel) + " float32 values");
  }
  return *t;
}

// Opens shard `rank` and checks that it is the one `plan` and `step` call for.
std::unique_ptr<LoadedCheckpoint> open_shard(const std::filesystem::path& checkpoint,
                                             const train::ShardPlan& plan, int32_t rank,
                                             int64_t step) {
  const std::filesystem::path path = optimizer_shard_path(checkpoint, rank, plan.world());
  if (!std::filesystem::exists(path)) {
    fail(KILN_ERR_NOT_FOUND, "checkpoint '" + checkpoint.string() + "': optimizer shard '" +
                                 path.string() + "' (rank " + std::to_string(rank) + " of " +
                                 std::to_string(plan.world()) + ") is missing");
  }
  auto shard = LoadedCheckpoint::open(path);
  const CheckpointContents& c = shard->contents();
  const std::string file = "optimizer shard '" + path.string() + "'";
  if (!c.shard) fail(KILN_ERR_FORMAT, file + " has no shard field (not an optimizer shard)");
  const CheckpointShard& s = *c.shard;
  const train::ShardRange want = plan.owned(rank);
  if (s.world != plan.world() || s.rank != rank) {
    fail(KILN_ERR_FORMAT, file + " says it is rank " + std::to_string(s.rank) + " of " +
                              std::to_string(s.world) + ", its name rank " + std::to_string(rank) +
                              " of " + std::to_string(plan.world()));
  }
  if (s.layout_total != plan.total() || s.begin != want.begin || s.end != want.end) {
    fail(KILN_ERR_FORMAT, file + " holds " + range_text({s.begin, s.end}) + " of " +
                              std::to_string(s.layout_total) + " elements; the shard plan gives " +
                              range_text(want) + " of " + std::to_string(plan.total()));
  }
  if (c.step != step) {
    fail(KILN_ERR_FORMAT, file + " was saved at step " + std::to_string(c.step) +
                              ", the checkpoint at step " + std::to_string(step) +
                              " (a shard of another save)");
  }
  return shard;
}

}  // namespace

std::filesystem::path optimizer_shard_path(const std::filesystem::path& checkpoint, int32_t rank,
                                           int32_t world) {
  std::filesystem::path p = checkpoint;
  p += ".optimizer-rank-" + std::to_string(rank) + "-of-" + std::to_string(world);
  return p;
}

void save_optimizer_shard(const std::filesystem::path& checkpoint, const train::ShardPlan& plan,
                          int32_t rank, int64_t step, std::span<const FlatStateSlice> slices) {
  const train::ShardRange owned = plan.owned(rank);
  const std::filesystem::path path = optimizer_shard_path(checkpoint, rank, plan.world());
  const auto bad = [&](const std::string& what) {
    fail(KILN_ERR_INVALID_ARGUMENT, "cannot save optimizer shard '" + path.string() + "': " + what);
  };
  CheckpointContents c;
  c.step = step;
  c.shard = CheckpointShard{plan.world(), rank, plan.total(), owned.begin, owned.end};
  std::set<TensorKind> kinds;
  for (const FlatStateSlice& s : slices) {
    const std::string kind = tensor_kind_name(s.kind);
    if (s.kind == TensorKind::Value) bad("a value tensor is not optimizer state");
    if (!kinds.insert(s.kind).second) bad("the " + kind + " slice is given twice");
    if (static_cast<int64_t>(s.data.size()) != owned.size()) {
      bad("the " + kind + " slice has " + std::to_string(s.data.size()) + " floats, rank " +
          std::to_string(rank) + " owns " + std::to_string(owned.size()) + " " + range_text(owned));
    }
    if (owned.size() == 0) continue;  // a rank past the end of a small buffer holds nothing
    c.tensors.push_back({kOptimizerShardTensor,
                         s.kind,
                         DType::F32,
                         {owned.size()},
                         reinterpret_cast<const uint8_t*>(s.data.data()),
                         s.data.size() * sizeof(float)});
  }
  save_checkpoint(path, c);
}

void load_optimizer_shards(const std::filesystem::path& checkpoint, const train::ShardPlan& plan,
                           int64_t step, train::ShardRange wanted,
                           std::span<const FlatStateTarget> targets) {
  const std::vector<train::ShardCopy> copies = train::shard_copies(plan, wanted);
  for (const FlatStateTarget& t : targets) {
    if (static_cast<int64_t>(t.data.size()) != wanted.size()) {
      fail(KILN_ERR_INVALID_ARGUMENT, "checkpoint '" + checkpoint.string() + "': the " +
                                          std::string(tensor_kind_name(t.kind)) + " target has " +
                                          std::to_string(t.data.size()) + " floats for the range " +
                                          range_text(wanted));
    }
  }
  for (const train::ShardCopy& copy : copies) {
    const auto shard = open_shard(checkpoint, plan, copy.source_rank, step);
    const int64_t numel = plan.owned(copy.source_rank).size();
    for (const FlatStateTarget& t : targets) {
      const CheckpointTensor& src = shard_tensor(*shard, t.kind, numel);
      std::memcpy(t.data.data() + copy.dest_offset,
                  reinterpret_cast<const float*>(src.data) + copy.source_offset,
                  static_cast<size_t>(copy.count) * sizeof(float));
    }
  }
}

}  // namespace kiln
