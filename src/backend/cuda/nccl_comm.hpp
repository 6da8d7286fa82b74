// A data-parallel group of processes (one GPU each) over NCCL, for the CUDA trainer
// (kiln_trainer_join_data_parallel). NCCL is loaded with dlopen when a group is first used
// (libnccl.so.2 from the library path or the CUDA install): a kiln build runs, and everything
// but data-parallel training works, on machines without NCCL. Each communicator holds its own
// reference to the library (dlopen counts them), so kiln keeps no process-wide state; the library
// itself stays mapped once loaded (RTLD_NODELETE), because NCCL's bootstrap thread outlives the
// calls that start it.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace kiln::cuda {

// The bytes of an ncclUniqueId (NCCL_UNIQUE_ID_BYTES).
constexpr size_t kNcclIdBytes = 128;
using NcclId = std::array<uint8_t, kNcclIdBytes>;

class NcclComm {
 public:
  // A fresh group id (ncclGetUniqueId: rank 0's address and a random tag). KILN_ERR_UNSUPPORTED
  // when NCCL cannot be loaded or kiln was built without nccl.h, KILN_ERR_BACKEND on NCCL errors.
  static NcclId create_id();

  // Joins the group as `rank` of `world_size` on the current CUDA device; blocks until every
  // rank has joined (ncclCommInitRank). Errors as create_id.
  NcclComm(const NcclId& id, int world_size, int rank);
  // One communicator per device of `devices` (rank i on devices[i]), for ranks driven from one
  // process (tensor parallelism; ncclCommInitAll). Each rank's calls must then come from its own
  // thread (or inside one ncclGroupStart/End). Errors as create_id.
  static std::vector<std::unique_ptr<NcclComm>> create_local_group(const std::vector<int>& devices);

  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int world_size() const { return world_size_; }
  int rank() const { return rank_; }

  // In-place sums over the ranks, enqueued on `stream` (device pointers).
  void all_reduce_sum(float* data, size_t count, cudaStream_t stream);
  void all_reduce_sum(double* data, size_t count, cudaStream_t stream);
  // ZeRO-1 (train/data_parallel/shard_plan.hpp): `data` holds world_size * shard_count floats.
  // reduce_scatter_sum leaves at data + rank * shard_count the sum over the ranks of that shard
  // (ncclReduceScatter, in place); all_gather fills every other rank's shard from its owner
  // (ncclAllGather, in place). Enqueued on `stream`.
  void reduce_scatter_sum(float* data, size_t shard_count, cudaStream_t stream);
  void all_gather(float* data, size_t shard_count, cudaStream_t stream);

 private:
  struct Library;
  NcclComm(std::unique_ptr<Library> lib, void* comm, int world_size, int rank);
  std::unique_ptr<Library> lib_;
  void* comm_ = nullptr;  // ncclComm_t
  int world_size_, rank_;
};

}  // namespace kiln::cuda
