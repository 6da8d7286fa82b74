// The CPU engine: float32 gradients in the ParamLayout, the host TrainGraph for forward/backward,
// clip_grad_norm and the host Optimizer, all operating directly on the trainer's TrainState.
#include <omp.h>

#include <algorithm>
#include <new>
#include <string>

#include "core/error.hpp"
#include "train/optimizer/grad_clip.hpp"
#include "train/train_engine.hpp"

namespace kiln::train {

namespace {

int n_threads() { return std::max(1, omp_get_max_threads()); }

class CpuEngine final : public TrainEngine {
 public:
  explicit CpuEngine(const TrainState& state) : s_(state), grads_(allocate(s_.layout.total())) {}

  void reserve(int64_t rows, int64_t cols) override {
    if (graph_ && graph_->max_batch() >= rows && graph_->seq() == cols) return;
    graph_.reset();
    graph_ = std::make_unique<TrainGraph<float>>(s_.config, rows, cols, n_threads());
  }

  void zero_grads() override { std::fill(grads_.begin(), grads_.end(), 0.0f); }

  std::vector<HeadLoss> forward_backward(const TrainBatch& batch,
                                         std::span<const double> normalisers,
                                         std::span<const float> mtp_weights, const Dropout& dropout,
                                         const std::atomic<bool>* cancel) override {
    return graph_->forward_backward(s_.values, grads_, batch, normalisers, mtp_weights, cancel,
                                    dropout);
  }

  std::vector<HeadLoss> forward_loss(const TrainBatch& batch,
                                     const std::atomic<bool>* cancel) override {
    return graph_->forward_loss(s_.values, batch, cancel);
  }

  void forward_logits(std::span<const int32_t> ids, const ForwardOutputs<float>& out,
                      const std::atomic<bool>* cancel) override {
    graph_->forward_logits(s_.values, ids, out, cancel);
  }

  double clip_grads(float clip_norm) override {
    return clip_grad_norm(s_.layout, grads_.data(), clip_norm, n_threads());
  }

  void optimizer_step(double lr_multiplier) override {
    s_.optimizer.step(s_.values.data(), grads_.data(), lr_multiplier);
  }

  void download_grads(std::span<float> out) override {
    std::copy(grads_.begin(), grads_.end(), out.begin());
  }
  void download_state() override {}
  void upload_state() override {}

 private:
  static std::vector<float> allocate(int64_t n) {
    try {
      return std::vector<float>(static_cast<size_t>(n), 0.0f);
    } catch (const std::bad_alloc&) {
      fail(KILN_ERR_OUT_OF_MEMORY, "out of host memory for the trainer's gradients: " +
                                       std::to_string(n * 4) + " bytes asked for");
    }
  }

  TrainState s_;
  std::vector<float> grads_;
  std::unique_ptr<TrainGraph<float>> graph_;
};

}  // namespace

std::unique_ptr<TrainEngine> make_cpu_engine(const TrainState& state) {
  return std::make_unique<CpuEngine>(state);
}

}  // namespace kiln::train
