#include "train/data_parallel/shard_plan.hpp"

#include <algorithm>
#include <string>

#include "core/error.hpp"
#include "train/param_layout.hpp"

namespace kiln::train {

ShardPlan::ShardPlan(int64_t total, int32_t world) : total_(total), world_(world) {
  if (total < 1) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "shard plan: the buffer has " + std::to_string(total) + " elements (must be >= 1)");
  }
  if (world < 1) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "shard plan: world size is " + std::to_string(world) + " (must be >= 1)");
  }
  const int64_t per_rank = (total + world - 1) / world;
  const int64_t align = ParamLayout::kAlign;
  shard_size_ = (per_rank + align - 1) / align * align;
}

ShardRange ShardPlan::owned(int32_t rank) const {
  if (rank < 0 || rank >= world_) {
    fail(KILN_ERR_INVALID_ARGUMENT, "shard plan: rank " + std::to_string(rank) +
                                        " is outside the world of " + std::to_string(world_));
  }
  const int64_t begin = std::min(total_, rank * shard_size_);
  const int64_t end = std::min(total_, begin + shard_size_);
  return {begin, end};
}

std::vector<ShardCopy> shard_copies(const ShardPlan& from, ShardRange wanted) {
  if (wanted.begin < 0 || wanted.end < wanted.begin || wanted.end > from.total()) {
    fail(KILN_ERR_INVALID_ARGUMENT, "shard plan: range [" + std::to_string(wanted.begin) + ", " +
                                        std::to_string(wanted.end) + ") is not inside [0, " +
                                        std::to_string(from.total()) + ")");
  }
  std::vector<ShardCopy> out;
  if (wanted.size() == 0) return out;
  const auto first = static_cast<int32_t>(wanted.begin / from.shard_size());
  for (int32_t r = first; r < from.world(); ++r) {
    const ShardRange src = from.owned(r);
    if (src.begin >= wanted.end) break;
    const int64_t lo = std::max(src.begin, wanted.begin);
    const int64_t hi = std::min(src.end, wanted.end);
    if (hi > lo) out.push_back({r, lo - src.begin, lo - wanted.begin, hi - lo});
  }
  return out;
}

}  // namespace kiln::train
