// Defaults of the Backend interface that need complete types the header only declares.
#include "backend/backend.hpp"

#include "train/train_engine.hpp"

namespace kiln {

std::unique_ptr<train::TrainEngine> Backend::create_train_engine(const train::TrainState&) const {
  return nullptr;
}

}  // namespace kiln
