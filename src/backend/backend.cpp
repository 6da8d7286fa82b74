// Defaults of the Backend interface that need complete types the header only declares.
#include "backend/backend.hpp"

#include "core/error.hpp"
#include "train/train_engine.hpp"

namespace kiln {

std::unique_ptr<train::TrainEngine> Backend::create_train_engine(const train::TrainState&) const {
  return nullptr;
}

DataParallelId Backend::create_data_parallel_id() const {
  fail(KILN_ERR_UNSUPPORTED,
       "data-parallel training needs a CUDA runtime (NCCL between GPUs); this runtime's backend "
       "trains on one device only");
}

}  // namespace kiln
