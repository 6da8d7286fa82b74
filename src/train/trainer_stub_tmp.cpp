// TEMPORARY until the graph and optimizer land (never merged as is).
#include "core/error.hpp"
#include "engine/model.hpp"
#include "train/model_init.hpp"
#include "train/trainer.hpp"

namespace kiln {
std::vector<WeightSet::OwnedF32Tensor> initial_hf_tensors(const ModelConfig&, uint64_t) {
  fail(KILN_ERR_UNSUPPORTED, "training is not built yet");
}
std::unique_ptr<Trainer> Trainer::create(const Model&, const TrainerOptions&) {
  fail(KILN_ERR_UNSUPPORTED, "training is not built yet");
}
std::unique_ptr<Trainer> Trainer::load_checkpoint(const std::filesystem::path&) {
  fail(KILN_ERR_UNSUPPORTED, "training is not built yet");
}
void TrainerOptions::validate() const {}
Trainer::Guard::Guard(const Trainer& t) : t_(t) {
  if (t_.busy_.exchange(true)) fail(KILN_ERR_BUSY, "trainer in use by another thread");
}
Trainer::Guard::~Guard() { t_.busy_.store(false); }
}  // namespace kiln
