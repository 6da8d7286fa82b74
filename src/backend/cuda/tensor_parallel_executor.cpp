#include "backend/cuda/tensor_parallel_executor.hpp"

#include <cstdlib>
#include <exception>
#include <string_view>
#include <thread>

#include "core/error.hpp"
#include "model/tensor_parallel_weights.hpp"

namespace kiln::cuda {

namespace {

class TensorParallelState final : public SessionState {
 public:
  explicit TensorParallelState(int32_t context_length) : context_length_(context_length) {}
  int32_t context_length() const override { return context_length_; }
  std::vector<std::unique_ptr<SessionState>> ranks;

 private:
  int32_t context_length_;
};

TensorParallelState& tp_state(SessionState& s) {
  auto* t = dynamic_cast<TensorParallelState*>(&s);
  if (t == nullptr) {
    fail(KILN_ERR_INTERNAL, "session state of another backend given to the tensor-parallel one");
  }
  return *t;
}

CudaSessionState& rank_state(TensorParallelState& s, size_t r) {
  return static_cast<CudaSessionState&>(*s.ranks[r]);
}

int64_t elements(const WeightRef& r) { return r.present() ? r.rows * r.cols : 0; }

// The unsplit model's parameters, counted as CudaTransformer counts them (a tied head once).
int64_t count_parameters(const ModelConfig& config, const TransformerWeights& w) {
  const bool tied = w.embed.tensor == w.lm_head.tensor && w.embed.row_begin == w.lm_head.row_begin;
  int64_t total = elements(w.embed) + elements(w.final_norm) + (tied ? 0 : elements(w.lm_head));
  const bool qk_norm = config.qk_norm == QkNormKind::BeforeRopeWeighted;
  for (const LayerWeights& l : w.layers) {
    for (const WeightRef* r : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv, &l.bo,
                               &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down}) {
      total += elements(*r);
    }
    if (qk_norm) total += elements(l.q_norm) + elements(l.k_norm);
  }
  return total;
}

// Frees every element on a thread of its own: ncclCommDestroy may wait for the group's other
// communicators, which one thread destroying them in turn would never reach.
template <typename Ptr>
void free_in_parallel(std::vector<Ptr>& items) {
  std::vector<std::jthread> threads;
  for (auto& item : items) threads.emplace_back([&item] { item.reset(); });
}

}  // namespace

bool tensor_parallel_forced_by_environment() {
  const char* v = std::getenv("KILN_CUDA_TP_FORCE_COLLECTIVES");
  return v != nullptr && std::string_view(v) == "1";
}

TensorParallelExecutor::TensorParallelExecutor(
    const ModelConfig& config, const TransformerWeights& weights,
    const std::vector<float>& inv_freq,
    const std::vector<std::shared_ptr<DeviceAllocator>>& allocators, const ProgressFn& progress)
    : n_parameters_(count_parameters(config, weights)) {
  const auto tp = static_cast<int32_t>(allocators.size());
  validate_tensor_parallel(config, tp);
  std::vector<int> devices;
  for (const auto& a : allocators) devices.push_back(a->device());
  // Shared from here on, so that a rank whose construction fails drops only its reference and
  // the communicators are destroyed together below.
  std::vector<std::shared_ptr<NcclComm>> comms;
  for (auto& c : NcclComm::create_local_group(devices)) comms.push_back(std::move(c));
  try {
    build_ranks(config, weights, inv_freq, allocators, progress, comms);
  } catch (...) {
    // A failed or cancelled load: the ranks built so far, then the last references to the
    // communicators.
    free_in_parallel(ranks_);
    free_in_parallel(comms);
    throw;
  }
}

void TensorParallelExecutor::build_ranks(
    const ModelConfig& config, const TransformerWeights& weights,
    const std::vector<float>& inv_freq,
    const std::vector<std::shared_ptr<DeviceAllocator>>& allocators, const ProgressFn& progress,
    const std::vector<std::shared_ptr<NcclComm>>& comms) {
  const auto tp = static_cast<int32_t>(allocators.size());
  for (int32_t r = 0; r < tp; ++r) {
    const TensorParallelShard shard = plan_tensor_parallel(config, tp, r);
    const ShardedWeights sliced(weights, shard);
    ProgressFn rank_progress;
    if (progress) {
      rank_progress = [&progress, r, tp](float f, const char* stage) {
        return progress((static_cast<float>(r) + f) / static_cast<float>(tp), stage);
      };
    }
    ranks_.push_back(std::make_unique<CudaTransformer>(
        shard_config(config, shard), sliced.weights(), inv_freq, allocators[r], rank_progress,
        false, std::nullopt, comms[r]));
  }
}

TensorParallelExecutor::~TensorParallelExecutor() { free_in_parallel(ranks_); }

std::unique_ptr<SessionState> TensorParallelExecutor::create_state(int32_t context_length) const {
  auto s = std::make_unique<TensorParallelState>(context_length);
  for (const auto& rank : ranks_) s->ranks.push_back(rank->create_state(context_length));
  return s;
}

template <typename Fn>
void TensorParallelExecutor::on_every_rank(Fn&& fn) const {
  std::vector<std::exception_ptr> errors(ranks_.size());
  {
    std::vector<std::jthread> threads;
    for (size_t r = 1; r < ranks_.size(); ++r) {
      threads.emplace_back([&, r] {
        try {
          fn(r);
        } catch (...) {
          errors[r] = std::current_exception();
        }
      });
    }
    try {
      fn(0);
    } catch (...) {
      errors[0] = std::current_exception();
    }
  }  // joins
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

void TensorParallelExecutor::forward(SessionState& base, std::span<const int32_t> ids,
                                     int32_t start_pos, float* logits, bool all_positions,
                                     const std::atomic<bool>* cancel) const {
  if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
    fail(KILN_ERR_CANCELLED, "forward pass cancelled");
  }
  TensorParallelState& s = tp_state(base);
  const auto n = static_cast<int64_t>(ids.size());
  const bool want = logits != nullptr;
  // Every rank's buffers first, on this thread: an out-of-memory error then stops the pass
  // before any rank has entered a collective.
  for (size_t r = 0; r < ranks_.size(); ++r) {
    ranks_[r]->prepare(rank_state(s, r), n, r == 0 && want, r == 0 && all_positions,
                       r != 0 && want);
  }
  // Ranks other than 0 compute the head too when logits are wanted (into their device buffer):
  // their decode graphs then have the same shape as rank 0's, and the cost is one GEMV each.
  on_every_rank([&](size_t r) {
    if (r == 0) {
      ranks_[0]->run(rank_state(s, 0), ids, start_pos, logits, all_positions, false, nullptr);
    } else {
      ranks_[r]->run(rank_state(s, r), ids, start_pos, nullptr, false, want, nullptr);
    }
  });
}

std::optional<int32_t> TensorParallelExecutor::forward_sample(
    SessionState& base, std::span<const int32_t> ids, int32_t start_pos,
    const DeviceSampleRequest& req, const std::atomic<bool>* cancel) const {
  // Rank 0 must run whenever the others do: when it would sample on the host, nothing runs here.
  if (ranks_[0]->host_sampling_ || ids.empty()) return std::nullopt;
  if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
    fail(KILN_ERR_CANCELLED, "forward pass cancelled");
  }
  TensorParallelState& s = tp_state(base);
  const auto n = static_cast<int64_t>(ids.size());
  for (size_t r = 0; r < ranks_.size(); ++r) {
    ranks_[r]->prepare(rank_state(s, r), n, false, false, true);
  }
  std::optional<int32_t> token;
  on_every_rank([&](size_t r) {
    if (r == 0) {
      token = ranks_[0]->forward_sample(rank_state(s, 0), ids, start_pos, req, nullptr);
    } else {
      ranks_[r]->run(rank_state(s, r), ids, start_pos, nullptr, false, true, nullptr);
    }
  });
  return token;
}

}  // namespace kiln::cuda
