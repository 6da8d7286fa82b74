// Defaults of the TrainEngine interface.
#include "train/train_engine.hpp"

#include "core/error.hpp"

namespace kiln::train {

void TrainEngine::join_data_parallel(const DataParallelId&, int, int, bool) {
  fail(KILN_ERR_UNSUPPORTED,
       "data-parallel training needs the CUDA trainer (a CUDA runtime); this trainer runs on the "
       "CPU");
}

}  // namespace kiln::train
