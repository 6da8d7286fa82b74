// kiln_nccl_id_create, kiln_data_parallel_options_default, kiln_trainer_join_data_parallel: the
// data-parallel group of the CUDA trainer (semantics in kiln.h; NCCL in
// src/backend/cuda/nccl_comm.cpp).
#include <cstring>
#include <string>

#include "shim.hpp"

using kiln::capi::guarded;
using kiln::capi::require_non_null;

namespace {

kiln_data_parallel_options data_parallel_defaults() {
  kiln_data_parallel_options o{};
  o.struct_size = sizeof o;
  o.world_size = 1;
  o.rank = 0;
  o.shard_optimizer_state = 0;
  return o;
}

}  // namespace

KILN_API kiln_status kiln_nccl_id_create(kiln_runtime* runtime, kiln_nccl_id* out_id) {
  return guarded([&] {
    require_non_null(runtime, "runtime");
    require_non_null(out_id, "out_id");
    const kiln::DataParallelId id = runtime->impl->backend().create_data_parallel_id();
    static_assert(sizeof out_id->bytes == std::tuple_size_v<kiln::DataParallelId>);
    std::memcpy(out_id->bytes, id.data(), id.size());
  });
}

KILN_API kiln_status kiln_data_parallel_options_default(kiln_data_parallel_options* options,
                                                        size_t struct_size) {
  return guarded([&] {
    kiln::capi::init_options(options, struct_size, "kiln_data_parallel_options",
                             data_parallel_defaults());
  });
}

KILN_API kiln_status kiln_trainer_join_data_parallel(kiln_trainer* trainer,
                                                     const kiln_data_parallel_options* options) {
  return guarded([&] {
    require_non_null(trainer, "trainer");
    require_non_null(options, "options");
    const kiln_data_parallel_options o =
        kiln::capi::read_options(options, data_parallel_defaults(), "kiln_data_parallel_options");
    kiln::DataParallelId id;
    std::memcpy(id.data(), o.id.bytes, id.size());
    kiln::Trainer::Guard guard(*trainer->impl);
    if (o.shard_optimizer_state != 0 && o.shard_optimizer_state != 1) {
      kiln::fail(KILN_ERR_INVALID_ARGUMENT, "kiln_data_parallel_options.shard_optimizer_state is " +
                                                std::to_string(o.shard_optimizer_state) +
                                                " (expected 0 or 1)");
    }
    trainer->impl->join_data_parallel(id, o.world_size, o.rank, o.shard_optimizer_state == 1);
  });
}
