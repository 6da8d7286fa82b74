// The CUDA training engine: the TrainGraph's forward/backward (src/train/train_graph.cpp) on the
// GPU in the precision recipe of train_kernels.hpp. Per block, forward:
//   n1 = norm(x) [bf16]; qkv = n1·Wqkvᵀ (+b) [bf16]; q,k,v = qkv_forward(qkv); o = attn(q,k,v)
//   x_mid = o·Woᵀ + bo + x [f32]; n2 = norm(x_mid); h = n2·Wguᵀ (+b) [bf16]; a = act(h)
//   out = a·Wdownᵀ + bdown + x_mid [f32]
// Backward walks it in reverse, turning the block's output gradient into its input gradient in
// place (d, float32), with dX = dY·W and dW += dYᵀ·X (float32 gradients, beta = 1). The logits are
// made, turned into their gradient by cross_entropy, and consumed chunk by chunk, so vocab × tokens
// is never whole.
#include "backend/cuda/train/cuda_engine.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/cuda_handles.hpp"
#include "backend/cuda/nccl_comm.hpp"
#include "backend/cuda/train/lt_gemm.hpp"
#include "backend/cuda/train/muon_update.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "core/error.hpp"
#include "train/data_parallel/grad_buckets.hpp"
#include "train/data_parallel/shard_plan.hpp"
#include "train/dropout_mask.hpp"
#include "train/model_layout.hpp"

namespace kiln::cuda::train {

namespace {

using kiln::train::BlockOffsets;
using kiln::train::ForwardOutputs;
using kiln::train::GradPoint;
using kiln::train::GradPointKind;
using kiln::train::HeadLoss;
using kiln::train::TrainBatch;
using kiln::train::TrainState;

constexpr size_t kLtWorkspace = size_t{32} << 20;
// Bias gradients in the epilogues of the products that already read the output gradient (one
// pass over it fewer per bias); off, they come from column sums of the float32 gradient.
constexpr bool kBiasGradEpilogue = true;
// The logits of one chunk of rows are at most this many bytes (BF16): 16 k tokens × 50 k vocab
// would otherwise take 1.6 GB.
constexpr size_t kLogitChunkBytes = size_t{256} << 20;

std::string n_str(int64_t v) { return std::to_string(v); }

// Carves typed pointers out of one allocation; run once without a base to measure.
class Arena {
 public:
  explicit Arena(void* base) : base_(static_cast<char*>(base)) {}
  template <class T>
  T* take(int64_t count) {
    off_ = (off_ + 255) / 256 * 256;
    T* p = base_ != nullptr ? reinterpret_cast<T*>(base_ + off_) : nullptr;
    off_ += static_cast<size_t>(std::max<int64_t>(count, 0)) * sizeof(T);
    return p;
  }
  size_t size() const { return off_ + 256; }

 private:
  char* base_;
  size_t off_ = 0;
};

// Pointers of the BF16 compute copies of one block (fused where the kernels read them fused).
struct BlockWeights {
  BlockOffsets o;          // float32 offsets in the ParamLayout
  bf16* w_qkv = nullptr;   // [q_dim + 2·kv_dim][hidden]
  bf16* b_qkv = nullptr;   // [q_dim + 2·kv_dim] or null
  bf16* w_o = nullptr;     // [hidden][q_dim]
  bf16* w_gu = nullptr;    // [(2 or 1)·inter][hidden]: gate rows then up rows (SwiGLU)
  bf16* b_gu = nullptr;    // [(2 or 1)·inter] or null
  bf16* w_down = nullptr;  // [hidden][inter]
};

// One block's activations kept for backward (rows × seq tokens).
struct BlockActs {
  bf16 *n1, *qkv, *q, *k, *v, *o, *n2, *h, *a;
  float *mean1, *rstd1, *q_rstd, *k_rstd, *lse, *x_mid, *mean2, *rstd2, *out;
};

class CudaEngine final : public kiln::train::TrainEngine {
 public:
  CudaEngine(const TrainState& state, std::shared_ptr<DeviceAllocator> allocator)
      : s_(state),
        c_(state.config),
        alloc_(std::move(allocator)),
        device_((use_device(alloc_->device()), alloc_->device())) {
    H_ = c_.hidden_size, V_ = c_.vocab_size, nh_ = c_.n_heads, nkv_ = c_.n_kv_heads,
    hd_ = c_.head_dim, I_ = c_.intermediate_size;
    qd_ = nh_ * hd_, kvd_ = nkv_ * hd_, qkv_ = qd_ + 2 * kvd_;
    gu_ = c_.mlp == MlpKind::SwiGLU ? 2 : 1;
    L_ = c_.n_layers, n_heads_ = 1 + c_.n_mtp_heads;
    norm_type_ = c_.norm == NormKind::LayerNorm ? NormType::LayerNorm : NormType::RmsNorm;
    act_ = c_.mlp == MlpKind::SwiGLU     ? Activation::SwiGlu
           : c_.mlp == MlpKind::GeluTanh ? Activation::GeluTanh
                                         : Activation::ReluSquared;
    if (c_.logit_softcap < 0.0f || !std::isfinite(c_.logit_softcap)) {
      fail(KILN_ERR_INVALID_ARGUMENT,
           "logit_softcap must be >= 0, got " + std::to_string(c_.logit_softcap));
    }
    const int64_t total = s_.layout.total();
    const size_t fbytes = static_cast<size_t>(total) * sizeof(float);
    values_ = alloc_->allocate(fbytes, "training weights (float32)");
    grads_ = alloc_->allocate(fbytes, "training gradients (float32)");
    adam_m_ = alloc_->allocate(fbytes, "AdamW first moments");
    adam_v_ = alloc_->allocate(fbytes, "AdamW second moments");
    KILN_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, fbytes, stream_.get()));
    KILN_CUDA_CHECK(cudaMemsetAsync(adam_m_.get(), 0, fbytes, stream_.get()));
    KILN_CUDA_CHECK(cudaMemsetAsync(adam_v_.get(), 0, fbytes, stream_.get()));
    if (s_.options.optimizer.kind == OptimizerKind::Muon) create_muon(fbytes);
    carve_weights();
    build_adamw_chunks(0, total, 0);
    if (c_.positions == PositionKind::Rope) {
      const std::vector<float> inv = rope_inverse_frequencies(c_);
      if (inv.empty() || static_cast<int64_t>(inv.size()) * 2 > hd_) {
        fail(KILN_ERR_INVALID_ARGUMENT, "RoPE: " + n_str(static_cast<int64_t>(inv.size())) +
                                            " frequencies for head_dim " + n_str(hd_));
      }
      rot_dim_ = static_cast<int32_t>(inv.size() * 2);
      KILN_CUDA_CHECK(cudaMemcpyAsync(inv_freq_, inv.data(), inv.size() * sizeof(float),
                                      cudaMemcpyHostToDevice, stream_.get()));
    }
    gemm_ = std::make_unique<LtGemm>(alloc_, kLtWorkspace);
    upload_state();
  }

  ~CudaEngine() override {
    // Work still queued reads the buffers about to be freed.
    cudaStreamSynchronize(stream_.get());
    if (comm_stream_) cudaStreamSynchronize(comm_stream_->get());
  }

  // ---- TrainEngine ---------------------------------------------------------------------------

  void reserve(int64_t rows, int64_t cols) override {
    if (rows <= cap_rows_ && cols == S_) return;
    use_device(device_);
    stream_.synchronize();
    acts_buf_ = DeviceBuffer();
    pinned_ = PinnedBuffer();
    cap_rows_ = 0;
    Arena measure(nullptr);
    carve_acts(measure, rows, cols);
    DeviceBuffer buf = alloc_->allocate(measure.size(), "training activations for " + n_str(rows) +
                                                            " × " + n_str(cols) + " tokens");
    Arena real(buf.get());
    carve_acts(real, rows, cols);
    const int64_t n = rows * cols;
    PinnedBuffer pinned(static_cast<size_t>(n * (1 + 3 * n_heads_)) * 4 + 64,
                        "training batch staging");
    h_ids_ = pinned.as<int32_t>();
    h_targets_ = h_ids_ + n;
    h_scales_ = reinterpret_cast<float*>(h_targets_ + n * n_heads_);
    h_loss_ = h_scales_ + n * n_heads_;
    {
      const std::vector<float> ones(static_cast<size_t>(n), 1.0f);
      KILN_CUDA_CHECK(cudaMemcpyAsync(ones_, ones.data(), ones.size() * sizeof(float),
                                      cudaMemcpyHostToDevice, stream_.get()));
      stream_.synchronize();  // before `ones` goes
    }
    acts_buf_ = std::move(buf);
    pinned_ = std::move(pinned);
    cap_rows_ = rows;
    S_ = cols;
  }

  void zero_grads() override {
    use_device(device_);
    join_comm_stream();  // a bucket of the last step may still be reducing in place
    overlap_next_ = bucketed_step_ = false;
    KILN_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, grads_.size(), stream_.get()));
  }

  std::vector<HeadLoss> forward_backward(const TrainBatch& batch,
                                         std::span<const double> normalisers,
                                         std::span<const float> mtp_weights,
                                         const kiln::train::Dropout& dropout,
                                         const std::atomic<bool>* cancel) override {
    // Consumed whatever happens below: a refused call must not leave the next micro-batch (a
    // first one, maybe) releasing buckets.
    const bool overlap = std::exchange(overlap_next_, false);
    if (bucketed_step_) {
      // It would add to gradients already handed to (or summed by) the all-reduce.
      fail(KILN_ERR_INTERNAL,
           "gradient buckets: a micro-batch after the one that released the step's gradients "
           "(only the step's last micro-batch may be announced)");
    }
    if (!(dropout.p >= 0.0f && dropout.p < 1.0f)) {
      fail(KILN_ERR_INVALID_ARGUMENT,
           "residual dropout " + std::to_string(dropout.p) + " outside [0, 1)");
    }
    const std::vector<double> own = kiln::train::loss_weight_totals(c_, batch, S_);
    std::vector<double> scales(static_cast<size_t>(n_heads_), 0.0);
    if (static_cast<int32_t>(normalisers.size()) != n_heads_) {
      fail(KILN_ERR_INVALID_ARGUMENT, "expected " + n_str(n_heads_) + " loss normalisers, got " +
                                          n_str(static_cast<int64_t>(normalisers.size())));
    }
    for (int32_t h = 0; h < n_heads_; ++h) {
      const double norm = normalisers[h];
      const double coef =
          h == 0 || mtp_weights.empty() ? 1.0 : static_cast<double>(mtp_weights[h - 1]);
      if (!std::isfinite(norm) || norm < 0.0 || (h == 0 && norm == 0.0) ||
          (own[h] > 0.0 && norm == 0.0)) {
        fail(KILN_ERR_INVALID_ARGUMENT,
             "loss normaliser of head " + n_str(h) + " is " + std::to_string(norm) +
                 " (this batch alone weighs " + std::to_string(own[h]) +
                 "); a step whose total loss weight is 0 cannot be trained");
      }
      scales[h] = norm > 0.0 ? coef / norm : 0.0;
    }
    drop_ = dropout;
    // The step's last micro-batch (the trainer said so): its backward pass hands each bucket to
    // the all-reduce as soon as it is final.
    overlapping_ = overlap;
    if (overlapping_) bucket_cursor_->start();
    try {
      auto losses = run(batch, scales, true, cancel);
      if (overlapping_ && !bucket_cursor_->finished()) {
        fail(KILN_ERR_INTERNAL,
             "gradient buckets: the backward pass ended before every bucket "
             "was released");
      }
      bucketed_step_ = overlapping_;
      overlapping_ = false;
      drop_ = {};
      return losses;
    } catch (...) {
      drop_ = {};  // forward_loss and forward_logits never drop
      if (overlapping_) {
        overlapping_ = false;
        use_device(device_);
        join_comm_stream();  // nothing may touch the gradients before the released buckets
      }
      throw;
    }
  }

  std::vector<HeadLoss> forward_loss(const TrainBatch& batch,
                                     const std::atomic<bool>* cancel) override {
    (void)kiln::train::loss_weight_totals(c_, batch, S_);  // validates the batch
    return run(batch, std::vector<double>(static_cast<size_t>(n_heads_), 0.0), false, cancel);
  }

  void forward_logits(std::span<const int32_t> ids, const ForwardOutputs<float>& out,
                      const std::atomic<bool>* cancel) override {
    use_device(device_);
    const int64_t rows = check_ids(ids);
    const int64_t n = rows * S_;
    const auto expect = [&](size_t got, int64_t want, const char* what) {
      if (got != 0 && static_cast<int64_t>(got) != want) {
        fail(KILN_ERR_INVALID_ARGUMENT, std::string(what) + " holds " +
                                            n_str(static_cast<int64_t>(got)) +
                                            " elements, expected " + n_str(want));
      }
    };
    expect(out.logits.size(), n_heads_ * n * V_, "logits output");
    expect(out.trunk_hidden.size(), n * H_, "trunk hidden output");
    expect(out.final_hidden.size(), n * H_, "final hidden output");
    std::memcpy(h_ids_, ids.data(), static_cast<size_t>(n) * sizeof(int32_t));
    KILN_CUDA_CHECK(cudaMemcpyAsync(ids_, h_ids_, static_cast<size_t>(n) * sizeof(int32_t),
                                    cudaMemcpyHostToDevice, stream_.get()));
    forward_trunk_and_heads(rows, cancel);
    if (!out.trunk_hidden.empty()) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(out.trunk_hidden.data(), trunk_output(),
                                      static_cast<size_t>(n * H_) * sizeof(float),
                                      cudaMemcpyDeviceToHost, stream_.get()));
    }
    if (!out.final_hidden.empty()) {
      // The head norm again, this time also in float32 (d_n is free in a forward pass).
      norm_forward(norm_type_, acts_[head_block(0)].out, W(off_final_w_), W(off_final_b_), eps(),
                   g_bf16_, d_n_, head_mean_[0], head_rstd_[0], n, H_, stream_.get());
      KILN_CUDA_CHECK(cudaMemcpyAsync(out.final_hidden.data(), d_n_,
                                      static_cast<size_t>(n * H_) * sizeof(float),
                                      cudaMemcpyDeviceToHost, stream_.get()));
    }
    stream_.synchronize();
    if (out.logits.empty()) return;
    std::vector<bf16> chunk(static_cast<size_t>(chunk_rows_ * V_));
    const float cap = c_.logit_softcap;
    for (int32_t h = 0; h < n_heads_; ++h) {
      for (int64_t r0 = 0; r0 < n; r0 += chunk_rows_) {
        const int64_t m = std::min(chunk_rows_, n - r0);
        head_logits(h, r0, m);
        KILN_CUDA_CHECK(cudaMemcpyAsync(chunk.data(), logits_,
                                        static_cast<size_t>(m * V_) * sizeof(bf16),
                                        cudaMemcpyDeviceToHost, stream_.get()));
        stream_.synchronize();
        float* dst = out.logits.data() + (h * n + r0) * V_;
        for (int64_t i = 0; i < m * V_; ++i) {
          const float z = __bfloat162float(chunk[static_cast<size_t>(i)]);
          dst[i] = cap > 0.0f ? cap * std::tanh(z / cap) : z;
        }
      }
    }
  }

  double clip_grads(float clip_norm) override {
    use_device(device_);
    if (zero_) {
      // ZeRO-1: this rank holds the reduced gradient of its shard only; the global norm is the
      // sum over the ranks of each shard's sum of squares.
      if (owned_.size() > 0) {
        sum_squares(grads_.as<float>() + owned_.begin, owned_.size(), sumsq_ws_, sumsq_,
                    stream_.get());
      } else {
        KILN_CUDA_CHECK(cudaMemsetAsync(sumsq_, 0, sizeof(double), stream_.get()));
      }
      comm_->all_reduce_sum(sumsq_, 1, stream_.get());
    } else {
      sum_squares(grads_.as<float>(), s_.layout.total(), sumsq_ws_, sumsq_, stream_.get());
    }
    clip_scale(sumsq_, clip_norm, clip_scale_, norm_, stream_.get());
    double norm = 0.0;
    KILN_CUDA_CHECK(
        cudaMemcpyAsync(&norm, norm_, sizeof norm, cudaMemcpyDeviceToHost, stream_.get()));
    stream_.synchronize();
    return norm;
  }

  void optimizer_step(double lr_multiplier) override {
    use_device(device_);
    const OptimizerOptions& o = s_.options.optimizer;
    const int64_t t = s_.optimizer.steps_taken() + 1;
    const double bc1 = 1.0 - std::pow(static_cast<double>(o.beta1), static_cast<double>(t));
    const double bc2 = 1.0 - std::pow(static_cast<double>(o.beta2), static_cast<double>(t));
    const auto& specs = s_.layout.specs();
    if (zero_) {
      zero_adamw_step(lr_multiplier, bc1, bc2);
      s_.optimizer.set_steps_taken(t);
      return;
    }
    adamw_step(lr_multiplier, bc1, bc2);
    for (size_t i = 0; i < specs.size(); ++i) {
      const ParamSpec& sp = specs[i];
      if (uses_muon(o.kind, sp.role)) {
        // Per ParamLayout tensor (q, k, v, gate, up separately, as the CPU optimizer does), on
        // the float32 master; the BF16 pointer is that tensor's rows inside the fused copy.
        muon_->update(values_.as<float>() + sp.offset, bf16_of_[i], grads_.as<float>() + sp.offset,
                      clip_scale_, muon_m_.as<float>() + sp.offset, sp.shape[0], sp.shape[1],
                      muon_step(o, lr_multiplier));
      }
    }
    s_.optimizer.set_steps_taken(t);
  }

  void download_grads(std::span<float> out) override {
    if (static_cast<int64_t>(out.size()) != s_.layout.total()) {
      fail(KILN_ERR_INVALID_ARGUMENT, "gradient output holds " +
                                          n_str(static_cast<int64_t>(out.size())) +
                                          " floats, the layout " + n_str(s_.layout.total()));
    }
    use_device(device_);
    join_comm_stream();
    stream_.synchronize();
    KILN_CUDA_CHECK(cudaMemcpyAsync(out.data(), grads_.get(), out.size() * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream_.get()));
    stream_.synchronize();
  }

  void download_state() override {
    use_device(device_);
    stream_.synchronize();
    KILN_CUDA_CHECK(cudaMemcpyAsync(s_.values.data(), values_.get(), host_bytes(),
                                    cudaMemcpyDeviceToHost, stream_.get()));
    if (zero_) {
      // Only this rank's slice of the moments exists here; the rest of the host mirror is stale
      // (a sharded checkpoint saves only the slice: Trainer::save_checkpoint_shard).
      for (TensorKind kind : s_.optimizer.flat_kinds()) {
        KILN_CUDA_CHECK(cudaMemcpyAsync(s_.optimizer.flat_state(kind).data() + owned_.begin,
                                        moment(kind),
                                        static_cast<size_t>(owned_.size()) * sizeof(float),
                                        cudaMemcpyDeviceToHost, stream_.get()));
      }
      stream_.synchronize();
      return;
    }
    for (const OptimizerState& st : s_.optimizer.state()) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(st.data, moment(st.kind) + st.param->offset,
                                      static_cast<size_t>(st.param->numel) * sizeof(float),
                                      cudaMemcpyDeviceToHost, stream_.get()));
    }
    stream_.synchronize();
  }

  void upload_state() override {
    use_device(device_);
    stream_.synchronize();
    KILN_CUDA_CHECK(cudaMemcpyAsync(values_.get(), s_.values.data(), host_bytes(),
                                    cudaMemcpyHostToDevice, stream_.get()));
    if (zero_) {
      for (TensorKind kind : s_.optimizer.flat_kinds()) {
        KILN_CUDA_CHECK(cudaMemcpyAsync(
            moment(kind), std::as_const(s_.optimizer).flat_state(kind).data() + owned_.begin,
            static_cast<size_t>(owned_.size()) * sizeof(float), cudaMemcpyHostToDevice,
            stream_.get()));
      }
    } else {
      for (const ConstOptimizerState& st : std::as_const(s_.optimizer).state()) {
        KILN_CUDA_CHECK(cudaMemcpyAsync(moment(st.kind) + st.param->offset, st.data,
                                        static_cast<size_t>(st.param->numel) * sizeof(float),
                                        cudaMemcpyHostToDevice, stream_.get()));
      }
    }
    const auto& specs = s_.layout.specs();
    for (size_t i = 0; i < specs.size(); ++i) {
      if (bf16_of_[i] == nullptr) continue;
      to_bf16(values_.as<float>() + specs[i].offset, bf16_of_[i], specs[i].numel, stream_.get());
    }
    stream_.synchronize();
  }

  // ---- data parallel (kiln_trainer_join_data_parallel) ---------------------------------------

  void join_data_parallel(const DataParallelId& id, int world_size, int rank,
                          bool shard_optimizer_state) override {
    use_device(device_);
    stream_.synchronize();
    if (shard_optimizer_state && s_.options.optimizer.kind == OptimizerKind::Muon) {
      fail(KILN_ERR_INTERNAL, "ZeRO-1 with Muon reached the CUDA engine");  // the trainer refuses
    }
    // KILN_DP_BUCKET_MB: read (and refused when malformed) before the group is joined. ZeRO-1
    // keeps its single reduce-scatter: its per-rank shards cut across any bucket boundaries.
    const int64_t bucket_bytes =
        shard_optimizer_state
            ? 0
            : kiln::train::grad_bucket_bytes_from_env(std::getenv("KILN_DP_BUCKET_MB"));
    std::unique_ptr<kiln::train::GradBucketPlan> plan;
    if (bucket_bytes > 0) {
      plan = std::make_unique<kiln::train::GradBucketPlan>(c_, s_.layout, bucket_bytes);
    }
    // The host sums (a few per head) go through this small device buffer, allocated once here.
    dp_sums_ = alloc_->allocate(kDataParallelSums * sizeof(double), "data-parallel loss sums");
    comm_ = std::make_unique<NcclComm>(id, world_size, rank);
    if (shard_optimizer_state) shard_optimizer(world_size, rank);
    if (plan) {
      comm_stream_.emplace();
      grads_ready_.emplace();
      grads_reduced_.emplace();
      bucket_plan_ = std::move(plan);
      bucket_cursor_ = std::make_unique<kiln::train::GradBucketCursor>(*bucket_plan_);
    }
  }

  void overlap_grad_reduce_with_next_backward() override {
    overlap_next_ = bucket_plan_ != nullptr;
  }

  void all_reduce_host(std::span<double> values) override {
    if (!comm_ || values.empty()) return;
    if (values.size() > static_cast<size_t>(kDataParallelSums)) {
      fail(KILN_ERR_INTERNAL, "data-parallel sums: " + n_str(static_cast<int64_t>(values.size())) +
                                  " values, room for " + n_str(kDataParallelSums));
    }
    use_device(device_);
    join_comm_stream();  // one collective at a time on the communicator (see join_comm_stream)
    const size_t bytes = values.size() * sizeof(double);
    KILN_CUDA_CHECK(cudaMemcpyAsync(dp_sums_.get(), values.data(), bytes, cudaMemcpyHostToDevice,
                                    stream_.get()));
    comm_->all_reduce_sum(dp_sums_.as<double>(), values.size(), stream_.get());
    KILN_CUDA_CHECK(cudaMemcpyAsync(values.data(), dp_sums_.get(), bytes, cudaMemcpyDeviceToHost,
                                    stream_.get()));
    stream_.synchronize();
  }

  void all_reduce_grads() override {
    if (!comm_) return;
    use_device(device_);
    if (zero_) {
      // Each rank receives the sum of its own shard only: the shard it updates.
      comm_->reduce_scatter_sum(grads_.as<float>(), static_cast<size_t>(zero_->shard_size()),
                                stream_.get());
    } else if (bucket_plan_) {
      // Every bucket was enqueued on the comm stream during the last backward pass: clipping and
      // the update wait for them. A step whose last micro-batch released nothing means the
      // trainer did not announce it: refused rather than reduced whole, so that a group of one
      // (where either way gives the same numbers) cannot hide an overlap that never happens.
      if (!std::exchange(bucketed_step_, false)) {
        fail(KILN_ERR_INTERNAL,
             "gradient buckets: the gradients of this step were not reduced during its last "
             "backward pass (overlap_grad_reduce_with_next_backward was not called)");
      }
      join_comm_stream();
    } else {
      comm_->all_reduce_sum(grads_.as<float>(), static_cast<size_t>(s_.layout.total()),
                            stream_.get());
    }
  }

 private:
  // ---- bucketed all-reduce (train/data_parallel/grad_buckets.hpp) ----------------------------

  // The backward pass reached `point`: the buckets it releases are all-reduced on the comm
  // stream, after everything the compute stream has enqueued so far (their last writers among
  // it), while the compute stream goes on. Nothing outside the step's last backward pass.
  void grads_final(const GradPoint& point) {
    if (!overlapping_) return;
    const auto [first, end] = bucket_cursor_->reach(point);
    if (first == end) return;
    KILN_CUDA_CHECK(cudaEventRecord(grads_ready_->get(), stream_.get()));
    KILN_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_->get(), grads_ready_->get(), 0));
    const auto& buckets = bucket_plan_->buckets();
    for (int32_t b = first; b < end; ++b) {
      comm_->all_reduce_sum(grads_.as<float>() + buckets[b].begin,
                            static_cast<size_t>(buckets[b].end - buckets[b].begin),
                            comm_stream_->get());
    }
  }

  // The compute stream waits for everything enqueued on the comm stream. Called before anything
  // reads or rewrites the gradients after a bucketed backward pass (clipping, zeroing, download)
  // and before a collective on the compute stream: NCCL does not promise that two collectives of
  // one communicator on two streams make progress concurrently, so they never overlap here.
  void join_comm_stream() {
    if (!comm_stream_) return;
    KILN_CUDA_CHECK(cudaEventRecord(grads_reduced_->get(), comm_stream_->get()));
    KILN_CUDA_CHECK(cudaStreamWaitEvent(stream_.get(), grads_reduced_->get(), 0));
  }

  // ---- AdamW (one multi-tensor launch per step) ----------------------------------------------

  // One AdamWStep per ParamRole: lr and weight decay are per role, so the role is the group.
  static constexpr int kRoles = static_cast<int>(kParamRoleCount);
  static_assert(kRoles <= kAdamWMaxGroups, "a ParamRole without an AdamW group");

  // The chunk table of every AdamW tensor clipped to the flat elements [lo, hi) (all of them, or
  // this rank's ZeRO-1 slice), moments indexed from state_base. Built and uploaded once (it holds
  // offsets and the BF16 copy pointers, neither of which moves); the launch takes the buffers'
  // base pointers and the per-step constants.
  void build_adamw_chunks(int64_t lo, int64_t hi, int64_t state_base) {
    const auto& specs = s_.layout.specs();
    std::vector<AdamWSegment> segments;
    for (size_t i = 0; i < specs.size(); ++i) {
      const ParamSpec& sp = specs[i];
      if (uses_muon(s_.options.optimizer.kind, sp.role)) continue;
      const int64_t a = std::max(sp.offset, lo), b = std::min(sp.offset + sp.numel, hi);
      if (b <= a) continue;
      AdamWSegment seg;
      seg.offset = a;
      seg.state_offset = a - state_base;
      seg.numel = b - a;
      seg.p_bf16 = bf16_of_[i] != nullptr ? bf16_of_[i] + (a - sp.offset) : nullptr;
      seg.group = static_cast<int32_t>(sp.role);
      segments.push_back(seg);
    }
    const std::vector<AdamWChunk> chunks = adamw_chunks(segments);
    n_adamw_chunks_ = static_cast<int64_t>(chunks.size());
    adamw_chunks_ = DeviceBuffer();
    if (chunks.empty()) return;
    const size_t bytes = chunks.size() * sizeof(AdamWChunk);
    adamw_chunks_ = alloc_->allocate(bytes, "AdamW chunk table");
    KILN_CUDA_CHECK(cudaMemcpyAsync(adamw_chunks_.get(), chunks.data(), bytes,
                                    cudaMemcpyHostToDevice, stream_.get()));
    stream_.synchronize();  // `chunks` is pageable and about to go
  }

  // The AdamW update of every tensor the table covers, one launch. The per-role constants are
  // computed as the per-tensor path computed them (lr rounded to float from double).
  void adamw_step(double lr_multiplier, double bc1, double bc2) {
    const OptimizerOptions& o = s_.options.optimizer;
    std::array<AdamWStep, kRoles> steps{};
    for (int r = 0; r < kRoles; ++r) {
      const auto role = static_cast<ParamRole>(r);
      AdamWStep& st = steps[static_cast<size_t>(r)];
      st.lr = static_cast<float>(static_cast<double>(o.lr_for(role)) * lr_multiplier);
      st.beta1 = o.beta1, st.beta2 = o.beta2, st.eps = o.eps;
      st.weight_decay = o.weight_decay_for(role);
      st.bias1 = static_cast<float>(bc1), st.bias2 = static_cast<float>(bc2);
    }
    adamw_update_multi(values_.as<float>(), grads_.as<float>(), adam_m_.as<float>(),
                       adam_v_.as<float>(), adamw_chunks_.as<AdamWChunk>(), n_adamw_chunks_,
                       steps.data(), kRoles, clip_scale_, stream_.get());
  }

  // ---- ZeRO-1 (train/data_parallel/shard_plan.hpp) -------------------------------------------

  size_t host_bytes() const { return static_cast<size_t>(s_.layout.total()) * sizeof(float); }

  // Pads the weight and gradient buffers to world × shard size (NCCL's reduce-scatter and
  // all-gather move equal counts) and keeps only this rank's slice of the Adam moments.
  void shard_optimizer(int world_size, int rank) {
    zero_.emplace(s_.layout.total(), world_size);
    owned_ = zero_->owned(rank);
    const size_t padded = static_cast<size_t>(zero_->padded_total()) * sizeof(float);
    const size_t shard = static_cast<size_t>(zero_->shard_size()) * sizeof(float);
    const size_t owned = static_cast<size_t>(owned_.size()) * sizeof(float);
    DeviceBuffer values = alloc_->allocate(padded, "training weights (float32, ZeRO-1 padded)");
    DeviceBuffer grads = alloc_->allocate(padded, "training gradients (float32, ZeRO-1 padded)");
    DeviceBuffer m = alloc_->allocate(shard, "AdamW first moments (ZeRO-1 shard)");
    DeviceBuffer v = alloc_->allocate(shard, "AdamW second moments (ZeRO-1 shard)");
    cudaStream_t st = stream_.get();
    KILN_CUDA_CHECK(cudaMemsetAsync(values.get(), 0, padded, st));
    KILN_CUDA_CHECK(cudaMemsetAsync(grads.get(), 0, padded, st));
    KILN_CUDA_CHECK(cudaMemsetAsync(m.get(), 0, shard, st));
    KILN_CUDA_CHECK(cudaMemsetAsync(v.get(), 0, shard, st));
    KILN_CUDA_CHECK(
        cudaMemcpyAsync(values.get(), values_.get(), host_bytes(), cudaMemcpyDeviceToDevice, st));
    KILN_CUDA_CHECK(cudaMemcpyAsync(m.get(), adam_m_.as<float>() + owned_.begin, owned,
                                    cudaMemcpyDeviceToDevice, st));
    KILN_CUDA_CHECK(cudaMemcpyAsync(v.get(), adam_v_.as<float>() + owned_.begin, owned,
                                    cudaMemcpyDeviceToDevice, st));
    stream_.synchronize();
    values_ = std::move(values);
    grads_ = std::move(grads);
    adam_m_ = std::move(m);
    adam_v_ = std::move(v);
    build_adamw_chunks(owned_.begin, owned_.end, owned_.begin);
  }

  // AdamW on this rank's slice of every tensor (the moments are indexed from the slice's start:
  // the chunk table was built for the slice), then every rank's updated float32 slice to every
  // rank, and the BF16 copies of the parts this rank did not update. A slice edge is a multiple
  // of ParamLayout::kAlign from the tensor's start, so the kernel's vector alignment is that of
  // the unsharded step. With one rank the slice is the whole buffer: the same launch on the same
  // data as the unsharded step.
  void zero_adamw_step(double lr_multiplier, double bc1, double bc2) {
    const auto& specs = s_.layout.specs();
    float* values = values_.as<float>();
    adamw_step(lr_multiplier, bc1, bc2);
    comm_->all_gather(values, static_cast<size_t>(zero_->shard_size()), stream_.get());
    for (size_t i = 0; i < specs.size(); ++i) {
      if (bf16_of_[i] == nullptr) continue;
      const ParamSpec& sp = specs[i];
      const int64_t end = sp.offset + sp.numel;
      const int64_t mine_lo = std::clamp(owned_.begin, sp.offset, end);
      const int64_t mine_hi = std::clamp(owned_.end, mine_lo, end);
      if (mine_lo > sp.offset)
        to_bf16(values + sp.offset, bf16_of_[i], mine_lo - sp.offset, stream_.get());
      if (end > mine_hi) {
        to_bf16(values + mine_hi, bf16_of_[i] + (mine_hi - sp.offset), end - mine_hi,
                stream_.get());
      }
    }
  }

 private:
  // ---- buffers -------------------------------------------------------------------------------

  float* W(int64_t off) const { return off < 0 ? nullptr : values_.as<float>() + off; }
  // The gradient at `off` for a write (every caller enqueues one). While the backward pass hands
  // buckets to the all-reduce, a write into a released bucket would race with it (and reduce a
  // partial sum): refused, so a misplaced grads_final() fails loudly even in a group of one.
  float* G(int64_t off) const {
    if (off < 0) return nullptr;
    if (overlapping_) bucket_cursor_->check_writable(off);
    return grads_.as<float>() + off;
  }
  float eps() const { return c_.rms_norm_eps; }
  float* moment(TensorKind kind) const {
    if (kind == TensorKind::AdamM) return adam_m_.as<float>();
    if (kind == TensorKind::AdamV) return adam_v_.as<float>();
    if (kind == TensorKind::MuonMomentum && muon_m_.get() != nullptr) return muon_m_.as<float>();
    fail(KILN_ERR_INTERNAL, "the CUDA trainer holds no optimizer state of this kind");
  }

  // Muon mode: the momentum buffer (zero, in the ParamLayout like the Adam moments; upload_state
  // fills it from a checkpoint) and the Newton-Schulz scratch, sized for the largest Muon-updated
  // matrix so that no step allocates.
  void create_muon(size_t fbytes) {
    muon_m_ = alloc_->allocate(fbytes, "Muon momentum buffers");
    KILN_CUDA_CHECK(cudaMemsetAsync(muon_m_.get(), 0, fbytes, stream_.get()));
    int64_t max_numel = 1, max_short = 1;
    for (const ParamSpec& sp : s_.layout.specs()) {
      if (!uses_muon(s_.options.optimizer.kind, sp.role)) continue;
      if (sp.shape.size() != 2) {  // the host Optimizer in s_ has refused this already
        fail(KILN_ERR_INVALID_ARGUMENT, "Muon updates 2-D matrices; '" + sp.name + "' is not");
      }
      max_numel = std::max(max_numel, sp.numel);
      max_short = std::max(max_short, std::min(sp.shape[0], sp.shape[1]));
    }
    muon_ = std::make_unique<MuonUpdater>(*alloc_, max_numel, max_short, stream_.get());
  }

  // The BF16 weight copies and the small persistent buffers; fills bf16_of_ (one pointer per
  // ParamSpec, null for the tensors the matrix products never read).
  void carve_weights() {
    const ParamLayout& lay = s_.layout;
    off_embed_ = lay.at("model.embed_tokens.weight").offset;
    off_pos_ = kiln::train::offset_or_none(lay, "model.embed_positions.weight");
    off_final_w_ = kiln::train::offset_or_none(lay, "model.norm.weight");
    off_final_b_ = kiln::train::offset_or_none(lay, "model.norm.bias");
    const int64_t head = kiln::train::offset_or_none(lay, "lm_head.weight");
    off_unembed_ = head >= 0 ? head : off_embed_;
    for (int32_t l = 0; l < L_; ++l) {
      blocks_.push_back({kiln::train::block_offsets(lay, kiln::train::layer_prefix(l))});
    }
    for (int32_t k = 1; k <= c_.n_mtp_heads; ++k) {
      blocks_.push_back({kiln::train::block_offsets(lay, kiln::train::mtp_head_prefix(k))});
    }
    const auto carve = [&](Arena& a) {
      std::map<int64_t, bf16*> by_offset;
      by_offset[off_embed_] = embed_bf16_ = a.take<bf16>(V_ * H_);
      if (off_pos_ >= 0) {
        by_offset[off_pos_] = pos_bf16_ = a.take<bf16>(c_.max_position_embeddings * H_);
      }
      unembed_bf16_ = embed_bf16_;
      if (head >= 0) by_offset[head] = unembed_bf16_ = a.take<bf16>(V_ * H_);
      for (BlockWeights& b : blocks_) {
        const BlockOffsets& o = b.o;
        b.w_qkv = a.take<bf16>(qkv_ * H_);
        by_offset[o.wq] = b.w_qkv;
        by_offset[o.wk] = b.w_qkv + qd_ * H_;
        by_offset[o.wv] = b.w_qkv + (qd_ + kvd_) * H_;
        if (o.bq >= 0) {
          b.b_qkv = a.take<bf16>(qkv_);
          by_offset[o.bq] = b.b_qkv;
          by_offset[o.bk] = b.b_qkv + qd_;
          by_offset[o.bv] = b.b_qkv + qd_ + kvd_;
        }
        by_offset[o.wo] = b.w_o = a.take<bf16>(H_ * qd_);
        b.w_gu = a.take<bf16>(gu_ * I_ * H_);
        if (o.w_gate >= 0) by_offset[o.w_gate] = b.w_gu;
        by_offset[o.w_up] = b.w_gu + (gu_ - 1) * I_ * H_;
        if (o.b_up >= 0) {
          b.b_gu = a.take<bf16>(gu_ * I_);
          if (o.b_gate >= 0) by_offset[o.b_gate] = b.b_gu;
          by_offset[o.b_up] = b.b_gu + (gu_ - 1) * I_;
        }
        by_offset[o.w_down] = b.w_down = a.take<bf16>(H_ * I_);
      }
      inv_freq_ = a.take<float>(std::max<int64_t>(hd_ / 2, 1));
      sumsq_ = a.take<double>(1);
      norm_ = a.take<double>(1);
      clip_scale_ = a.take<float>(1);
      sumsq_ws_ =
          a.take<double>(static_cast<int64_t>(sum_squares_workspace_doubles(s_.layout.total())));
      bf16_of_.assign(lay.specs().size(), nullptr);
      for (size_t i = 0; i < lay.specs().size(); ++i) {
        const auto it = by_offset.find(lay.specs()[i].offset);
        if (it != by_offset.end()) bf16_of_[i] = it->second;
      }
    };
    Arena measure(nullptr);
    carve(measure);
    weights_bf16_ = alloc_->allocate(measure.size(), "training weights (BF16 compute copy)");
    Arena real(weights_bf16_.get());
    carve(real);
  }

  QkvShape shape(int64_t rows) const {
    return QkvShape{static_cast<int32_t>(rows), static_cast<int32_t>(S_),
                    static_cast<int32_t>(nh_),  static_cast<int32_t>(nkv_),
                    static_cast<int32_t>(hd_),  rot_dim_};
  }

  void carve_acts(Arena& a, int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    S_ = cols;  // shape() reads it; reserve() sets it again after success
    acts_.assign(blocks_.size(), BlockActs{});
    for (BlockActs& x : acts_) {
      x.n1 = a.take<bf16>(n * H_);
      x.mean1 = a.take<float>(n);
      x.rstd1 = a.take<float>(n);
      x.qkv = a.take<bf16>(n * qkv_);
      x.q = a.take<bf16>(n * qd_);
      x.k = a.take<bf16>(n * kvd_);
      x.v = a.take<bf16>(n * kvd_);
      x.q_rstd = a.take<float>(n * nh_);
      x.k_rstd = a.take<float>(n * nkv_);
      x.o = a.take<bf16>(n * qd_);
      x.lse = a.take<float>(n * nh_);
      x.x_mid = a.take<float>(n * H_);
      x.n2 = a.take<bf16>(n * H_);
      x.mean2 = a.take<float>(n);
      x.rstd2 = a.take<float>(n);
      x.h = a.take<bf16>(n * gu_ * I_);
      x.a = a.take<bf16>(n * I_);
      x.out = a.take<float>(n * H_);
    }
    embed_raw_ = a.take<float>(n * H_);
    embed_normed_ = c_.embed_norm ? a.take<float>(n * H_) : nullptr;
    embed_mean_ = a.take<float>(n);
    embed_rstd_ = a.take<float>(n);
    head_y_.assign(static_cast<size_t>(n_heads_), nullptr);
    head_mean_.assign(static_cast<size_t>(n_heads_), nullptr);
    head_rstd_.assign(static_cast<size_t>(n_heads_), nullptr);
    for (int32_t h = 0; h < n_heads_; ++h) {
      head_y_[h] = a.take<bf16>(n * H_);
      head_mean_[h] = a.take<float>(n);
      head_rstd_[h] = a.take<float>(n);
    }
    chunk_rows_ = std::max<int64_t>(
        1, std::min<int64_t>(n, static_cast<int64_t>(kLogitChunkBytes / sizeof(bf16)) / V_));
    if (chunk_rows_ >= 64) chunk_rows_ = chunk_rows_ / 64 * 64;
    logits_ = a.take<bf16>(chunk_rows_ * V_);
    d_head_y_ = a.take<float>(n * H_);
    d_trunk_ = a.take<float>(n * H_);
    d_tmp_ = n_heads_ > 1 ? a.take<float>(n * H_) : nullptr;
    d_n_ = a.take<float>(n * H_);
    g_bf16_ = a.take<bf16>(n * H_);
    d_a_ = a.take<float>(n * I_);
    dh_ = a.take<bf16>(n * gu_ * I_);
    d_o_ = a.take<bf16>(n * qd_);
    dq_ = a.take<float>(n * qd_);
    dk_ = a.take<float>(n * kvd_);
    dv_ = a.take<float>(n * kvd_);
    dqkv_ = a.take<bf16>(n * qkv_);
    bias_scratch_ = a.take<float>(std::max(qkv_, gu_ * I_));
    const QkvShape sh = shape(rows);
    size_t floats =
        std::max({norm_backward_workspace_floats(n, H_), qkv_backward_workspace_floats(sh),
                  attention_backward_workspace_floats(sh),
                  column_sum_workspace_floats(n, std::max(H_, gu_ * I_)),
                  column_sum_workspace_floats(1, n * H_),
                  column_sum_workspace_floats(1, std::max(qkv_, gu_ * I_))});
    floats = std::max(floats, (embedding_backward_workspace_bytes(n) + 3) / 4);
    workspace_ = a.take<float>(static_cast<int64_t>(floats));
    ones_ = a.take<float>(n);
    ids_ = a.take<int32_t>(n);
    targets_ = a.take<int32_t>(n * n_heads_);
    scales_ = a.take<float>(n * n_heads_);
    row_loss_ = a.take<float>(n * n_heads_);
  }

  // ---- forward -------------------------------------------------------------------------------

  int64_t check_ids(std::span<const int32_t> ids) const {
    const auto n = static_cast<int64_t>(ids.size());
    if (n == 0 || n % S_ != 0 || n / S_ > cap_rows_) {
      fail(KILN_ERR_INVALID_ARGUMENT, "batch holds " + n_str(n) +
                                          " input ids; the CUDA trainer "
                                          "was sized for up to " +
                                          n_str(cap_rows_) + " rows of " + n_str(S_));
    }
    for (int64_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= V_) {
        fail(KILN_ERR_OUT_OF_RANGE, "input id " + n_str(ids[i]) + " at index " + n_str(i) +
                                        " outside [0, " + n_str(V_) + ")");
      }
    }
    return n / S_;
  }

  void check_cancel(const std::atomic<bool>* cancel) {
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
      stream_.synchronize();  // the staging buffers are reused by the next call
      fail(KILN_ERR_CANCELLED, "training step cancelled");
    }
  }

  const float* trunk_output() const {
    if (L_ >= 2) return acts_[static_cast<size_t>(L_ - 2)].out;
    return c_.embed_norm ? embed_normed_ : embed_raw_;
  }
  const float* block_input(size_t bi) const {
    if (bi >= static_cast<size_t>(L_)) return trunk_output();
    if (bi > 0) return acts_[bi - 1].out;
    return c_.embed_norm ? embed_normed_ : embed_raw_;
  }
  size_t head_block(int32_t h) const {
    return h == 0 ? static_cast<size_t>(L_ - 1) : static_cast<size_t>(L_ + h - 1);
  }

  QkNorm qk_norm(const BlockOffsets& o) const {
    QkNorm q;
    q.enabled = c_.qk_norm != QkNormKind::None;
    q.order =
        c_.qk_norm == QkNormKind::AfterRopeNoWeight ? QkOrder::RopeThenNorm : QkOrder::NormThenRope;
    q.q_weight = W(o.q_norm);
    q.k_weight = W(o.k_norm);
    q.eps = eps();
    return q;
  }
  bool rope_reversed() const { return c_.qk_norm == QkNormKind::AfterRopeNoWeight; }
  const float* inv_freq() const { return rot_dim_ > 0 ? inv_freq_ : nullptr; }
  float attn_scale() const { return 1.0f / std::sqrt(static_cast<float>(hd_)); }

  // The dropout site `site` of the running micro-batch (drop_ is active).
  DropoutSite dropout_site(uint32_t site) const {
    DropoutSite d;
    d.key = kiln::train::dropout_site_key(drop_.seed, drop_.step, site);
    d.index0 = static_cast<uint64_t>(drop_.first_row * S_ * H_);
    d.threshold = kiln::train::dropout_threshold(drop_.p);
    d.scale = kiln::train::dropout_scale<float>(drop_.p);
    return d;
  }

  // y[n × out] = x[n × in] · Wᵀ (+ bias) (+ residual)
  void linear(const bf16* x, const bf16* w, int64_t n, int64_t in, int64_t out, void* y,
              OutType type, const void* bias = nullptr, const float* residual = nullptr) {
    RowGemm g;
    g.trans_b = true;
    g.m = n, g.n = out, g.k = in;
    g.a = x, g.lda = in, g.b = w, g.ldb = in;
    g.d = y, g.ldd = out, g.out = type;
    g.bias = bias;
    if (residual != nullptr) g.c = residual, g.beta = 1.0f;
    if (bias != nullptr && type == OutType::F32 && !gemm_->supported(g)) {
      // No cuBLASLt algorithm with a float32 bias epilogue on this GPU/library: the product
      // without it, then y += 1·biasᵀ as a float32 rank-1 product (exact, deterministic).
      g.bias = nullptr;
      gemm_->run(g, stream_.get());
      const float one = 1.0f;
      KILN_CUDA_CHECK(cublasSgemm(blas_.get(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(out),
                                  static_cast<int>(n), 1, &one, static_cast<const float*>(bias),
                                  static_cast<int>(out), ones_, 1, &one, static_cast<float*>(y),
                                  static_cast<int>(out)));
      return;
    }
    gemm_->run(g, stream_.get());
  }
  // dx[n × in] = dy[n × out] (ld ldy) · W[out × in]
  void linear_dx(const bf16* dy, int64_t ldy, const bf16* w, int64_t n, int64_t in, int64_t out,
                 void* dx, OutType type) {
    RowGemm g;
    g.m = n, g.n = in, g.k = out;
    g.a = dy, g.lda = ldy, g.b = w, g.ldb = in;
    g.d = dx, g.ldd = in, g.out = type;
    gemm_->run(g, stream_.get());
  }
  // gw[out × in] += dy[n × out]ᵀ (ld ldy) · x[n × in], and, when gb is not null, gb[out] += Σ
  // over rows of dy: in the product's epilogue (from the BF16 dy, as torch.autocast does) where
  // cuBLASLt has it, else from dy_f32 [n × out] (ld out) by a column sum.
  void linear_dw(const bf16* dy, int64_t ldy, const bf16* x, int64_t n, int64_t in, int64_t out,
                 float* gw, const float* dy_f32 = nullptr, float* gb = nullptr) {
    RowGemm g;
    g.trans_a = true;
    g.m = out, g.n = in, g.k = n;
    g.a = dy, g.lda = ldy, g.b = x, g.ldb = in;
    g.d = gw, g.ldd = in, g.out = OutType::F32, g.c = gw, g.beta = 1.0f;
    if (gb != nullptr && kBiasGradEpilogue && out <= std::max(qkv_, gu_ * I_)) {
      RowGemm with_grad = g;
      with_grad.epilogue = Epilogue::kBiasGradOfA;
      with_grad.bias_grad = bias_scratch_;  // "=": added to gb below
      if (gemm_->try_run(with_grad, stream_.get())) {
        column_sum(bias_scratch_, gb, 1, out, workspace_, stream_.get());
        return;
      }
    }
    gemm_->run(g, stream_.get());
    if (gb != nullptr) column_sum(dy_f32, gb, n, out, workspace_, stream_.get());
  }

  // GELU MLP forward in one product: the up projection's epilogue adds the bias, keeps the
  // pre-activation in a.h (what the backward reads) and writes a.a = gelu_tanh(h), instead of a
  // product writing h and an activation kernel reading it back. False, with nothing done, for
  // other activations or where cuBLASLt lacks the epilogue.
  bool gelu_up_fused(const BlockWeights& b, BlockActs& a, int64_t n) {
    if (act_ != Activation::GeluTanh || I_ % 8 != 0) return false;
    RowGemm g;
    g.trans_b = true;
    g.m = n, g.n = I_, g.k = H_;
    g.a = a.n2, g.lda = H_, g.b = b.w_gu, g.ldb = H_;
    g.d = a.a, g.ldd = I_, g.out = OutType::BF16;
    g.bias = b.b_gu;
    g.epilogue = Epilogue::kGeluAux, g.aux = a.h, g.ld_aux = I_;
    return gemm_->try_run(g, stream_.get());
  }

  enum class GeluBackward { kNotFused, kFused, kWithBiasGrad };
  // GELU MLP backward: dh_ = (dy · W_down) ⊙ gelu_tanh'(a.h) in the dX product's epilogue (no
  // float32 dA round trip, no activation kernel), and the up projection's bias gradient
  // (gb, "+=") from the same epilogue where cuBLASLt can give it in float32. a.h holds the
  // pre-activation whichever forward path wrote it.
  GeluBackward gelu_down_dx_fused(const BlockWeights& b, const BlockActs& a, int64_t n, float* gb) {
    if (act_ != Activation::GeluTanh || I_ % 8 != 0) return GeluBackward::kNotFused;
    RowGemm g;
    g.m = n, g.n = I_, g.k = H_;
    g.a = g_bf16_, g.lda = H_, g.b = b.w_down, g.ldb = I_;
    g.d = dh_, g.ldd = I_, g.out = OutType::BF16;
    g.epilogue = Epilogue::kDGeluBiasGrad, g.aux = a.h, g.ld_aux = I_;
    if (gb != nullptr && kBiasGradEpilogue) {
      RowGemm with_grad = g;
      with_grad.bias_grad = bias_scratch_, with_grad.bias_grad_type = OutType::F32;
      if (gemm_->try_run(with_grad, stream_.get())) {
        column_sum(bias_scratch_, gb, 1, I_, workspace_, stream_.get());
        return GeluBackward::kWithBiasGrad;
      }
    }
    // A BF16 bias gradient (all cuBLASLt may offer) would round the sum: the caller sums dh_.
    return gemm_->try_run(g, stream_.get()) ? GeluBackward::kFused : GeluBackward::kNotFused;
  }

  void block_forward(size_t bi, int64_t rows) {
    const BlockWeights& b = blocks_[bi];
    const BlockOffsets& o = b.o;
    BlockActs& a = acts_[bi];
    const int64_t n = rows * S_;
    cudaStream_t st = stream_.get();
    const float* x = block_input(bi);
    norm_forward(norm_type_, x, W(o.attn_norm_w), W(o.attn_norm_b), eps(), a.n1, nullptr, a.mean1,
                 a.rstd1, n, H_, st);
    linear(a.n1, b.w_qkv, n, H_, qkv_, a.qkv, OutType::BF16, b.b_qkv);
    qkv_forward(a.qkv, nullptr, shape(rows), qk_norm(o), inv_freq(), rope_reversed(), a.q, a.k, a.v,
                a.q_rstd, a.k_rstd, st);
    attention_forward(a.q, a.k, a.v, a.o, a.lse, shape(rows), attn_scale(), st);
    const bool drop = drop_.active();
    // With dropout the residual joins after the mask (dropout_apply), not in the GEMM epilogue.
    linear(a.o, b.w_o, n, qd_, H_, a.x_mid, OutType::F32, W(o.bo), drop ? nullptr : x);
    if (drop) {
      dropout_apply(dropout_site(kiln::train::dropout_site_attention(static_cast<int64_t>(bi))),
                    a.x_mid, x, a.x_mid, nullptr, n * H_, st);
    }
    norm_forward(norm_type_, a.x_mid, W(o.mlp_norm_w), W(o.mlp_norm_b), eps(), a.n2, nullptr,
                 a.mean2, a.rstd2, n, H_, st);
    if (!gelu_up_fused(b, a, n)) {
      linear(a.n2, b.w_gu, n, H_, gu_ * I_, a.h, OutType::BF16, b.b_gu);
      activation_forward(act_, a.h, a.a, n, I_, st);
    }
    linear(a.a, b.w_down, n, I_, H_, a.out, OutType::F32, W(o.b_down), drop ? nullptr : a.x_mid);
    if (drop) {
      dropout_apply(dropout_site(kiln::train::dropout_site_mlp(static_cast<int64_t>(bi))), a.out,
                    a.x_mid, a.out, nullptr, n * H_, st);
    }
  }

  void forward_trunk_and_heads(int64_t rows, const std::atomic<bool>* cancel) {
    const int64_t n = rows * S_;
    cudaStream_t st = stream_.get();
    embedding_forward(ids_, embed_bf16_, pos_bf16_, embed_raw_, n, S_, H_, st);
    if (c_.embed_norm) {
      norm_forward(norm_type_, embed_raw_, W(off_final_w_), W(off_final_b_), eps(), g_bf16_,
                   embed_normed_, embed_mean_, embed_rstd_, n, H_, st);
    }
    if (drop_.active()) {
      float* first = c_.embed_norm ? embed_normed_ : embed_raw_;
      dropout_apply(dropout_site(kiln::train::kDropoutSiteEmbedding), first, nullptr, first,
                    nullptr, n * H_, st);
    }
    for (size_t bi = 0; bi < blocks_.size(); ++bi) {
      check_cancel(cancel);
      block_forward(bi, rows);
    }
    for (int32_t h = 0; h < n_heads_; ++h) {
      norm_forward(norm_type_, acts_[head_block(h)].out, W(off_final_w_), W(off_final_b_), eps(),
                   head_y_[h], nullptr, head_mean_[h], head_rstd_[h], n, H_, st);
    }
  }

  // BF16 logits of rows [r0, r0 + m) of head h into logits_ (before the soft-cap).
  void head_logits(int32_t h, int64_t r0, int64_t m) {
    linear(head_y_[h] + r0 * H_, unembed_bf16_, m, H_, V_, logits_, OutType::BF16);
  }

  // ---- backward ------------------------------------------------------------------------------

  // d: the gradient of block bi's output in, of its input out (float32, in place). g_bf16_ holds
  // bf16(d) on the way in when `d_bf16_ready` (the norm backward that wrote d also wrote it: one
  // to_bf16 pass fewer per block), and always on the way out.
  void block_backward(size_t bi, float* d, int64_t rows, bool d_bf16_ready) {
    const BlockWeights& b = blocks_[bi];
    const BlockOffsets& o = b.o;
    BlockActs& a = acts_[bi];
    const int64_t n = rows * S_;
    cudaStream_t st = stream_.get();
    const int64_t gi = gu_ * I_;
    const bool drop = drop_.active();
    // MLP. With dropout its output's gradient is the residual's through the mask, into d_n_
    // (free until the gate/up dX below) and its BF16 copy.
    const float* d_down = d;
    if (drop) {
      dropout_apply(dropout_site(kiln::train::dropout_site_mlp(static_cast<int64_t>(bi))), d,
                    nullptr, d_n_, g_bf16_, n * H_, st);
      d_down = d_n_;
    } else {
      if (!d_bf16_ready) to_bf16(d, g_bf16_, n * H_, st);
    }
    const GeluBackward gelu = gelu_down_dx_fused(b, a, n, G(o.b_up));
    if (gelu == GeluBackward::kNotFused) {
      linear_dx(g_bf16_, H_, b.w_down, n, I_, H_, d_a_, OutType::F32);
    }
    linear_dw(g_bf16_, H_, a.a, n, I_, H_, G(o.w_down), d_down, G(o.b_down));
    if (gelu == GeluBackward::kNotFused) activation_backward(act_, a.h, d_a_, dh_, n, I_, st);
    linear_dx(dh_, gi, b.w_gu, n, H_, gi, d_n_, OutType::F32);
    if (o.w_gate >= 0) linear_dw(dh_, gi, a.n2, n, H_, I_, G(o.w_gate));
    linear_dw(dh_ + (gu_ - 1) * I_, gi, a.n2, n, H_, I_, G(o.w_up));
    if (o.b_up >= 0 && gelu != GeluBackward::kWithBiasGrad) {
      KILN_CUDA_CHECK(cudaMemsetAsync(bias_scratch_, 0, static_cast<size_t>(gi) * 4, st));
      column_sum(dh_, bias_scratch_, n, gi, workspace_, st);
      if (o.b_gate >= 0) column_sum(bias_scratch_, G(o.b_gate), 1, I_, workspace_, st);
      column_sum(bias_scratch_ + (gu_ - 1) * I_, G(o.b_up), 1, I_, workspace_, st);
    }
    norm_backward(norm_type_, d_n_, a.x_mid, W(o.mlp_norm_w), a.mean2, a.rstd2, d, true, g_bf16_,
                  G(o.mlp_norm_w), G(o.mlp_norm_b), n, H_, workspace_, st);
    grads_final({GradPointKind::BlockMlp, static_cast<int32_t>(bi)});
    // attention (d_n_ is free again: the norm's backward has read it)
    const float* d_attn = d;
    if (drop) {
      dropout_apply(dropout_site(kiln::train::dropout_site_attention(static_cast<int64_t>(bi))), d,
                    nullptr, d_n_, g_bf16_, n * H_, st);
      d_attn = d_n_;
    }
    linear_dx(g_bf16_, H_, b.w_o, n, qd_, H_, d_o_, OutType::BF16);
    linear_dw(g_bf16_, H_, a.o, n, qd_, H_, G(o.wo), d_attn, G(o.bo));
    attention_backward(a.q, a.k, a.v, a.o, a.lse, d_o_, dq_, dk_, dv_, shape(rows), attn_scale(),
                       workspace_, st);
    float* dbias = nullptr;
    if (o.bq >= 0) {
      KILN_CUDA_CHECK(cudaMemsetAsync(bias_scratch_, 0, static_cast<size_t>(qkv_) * 4, st));
      dbias = bias_scratch_;
    }
    qkv_backward(dq_, dk_, dv_, a.qkv, nullptr, shape(rows), qk_norm(o), inv_freq(),
                 rope_reversed(), a.q_rstd, a.k_rstd, dqkv_, G(o.q_norm), G(o.k_norm), dbias,
                 workspace_, st);
    if (dbias != nullptr) {
      column_sum(dbias, G(o.bq), 1, qd_, workspace_, st);
      column_sum(dbias + qd_, G(o.bk), 1, kvd_, workspace_, st);
      column_sum(dbias + qd_ + kvd_, G(o.bv), 1, kvd_, workspace_, st);
    }
    linear_dx(dqkv_, qkv_, b.w_qkv, n, H_, qkv_, d_n_, OutType::F32);
    linear_dw(dqkv_, qkv_, a.n1, n, H_, qd_, G(o.wq));
    linear_dw(dqkv_ + qd_, qkv_, a.n1, n, H_, kvd_, G(o.wk));
    linear_dw(dqkv_ + qd_ + kvd_, qkv_, a.n1, n, H_, kvd_, G(o.wv));
    norm_backward(norm_type_, d_n_, block_input(bi), W(o.attn_norm_w), a.mean1, a.rstd1, d, true,
                  g_bf16_, G(o.attn_norm_w), G(o.attn_norm_b), n, H_, workspace_, st);
    grads_final({GradPointKind::BlockAttention, static_cast<int32_t>(bi)});
  }

  // Per-head targets and loss scales of a micro-batch (head K at token r learns targets[r + K]
  // with that token's mask and weight), staged for upload.
  void stage_targets(const TrainBatch& batch, int64_t n, const std::vector<double>& scales) {
    for (int32_t h = 0; h < n_heads_; ++h) {
      for (int64_t r = 0; r < n; ++r) {
        int32_t t = -1;
        double w = 0.0;
        if (r % S_ + h < S_) {
          const int64_t j = r + h;
          if (batch.targets[j] >= 0 && (batch.loss_mask.empty() || batch.loss_mask[j] != 0)) {
            t = batch.targets[j];
            w = batch.loss_weights.empty() ? 1.0 : static_cast<double>(batch.loss_weights[j]);
          }
        }
        h_targets_[h * n + r] = t;
        h_scales_[h * n + r] = static_cast<float>(scales[h] * w);
      }
    }
  }

  std::vector<HeadLoss> run(const TrainBatch& batch, const std::vector<double>& scales,
                            bool backward, const std::atomic<bool>* cancel) {
    use_device(device_);
    const int64_t rows = check_ids(batch.inputs);
    const int64_t n = rows * S_;
    cudaStream_t st = stream_.get();
    std::memcpy(h_ids_, batch.inputs.data(), static_cast<size_t>(n) * sizeof(int32_t));
    stage_targets(batch, n, scales);
    const size_t hn = static_cast<size_t>(n * n_heads_);
    KILN_CUDA_CHECK(
        cudaMemcpyAsync(ids_, h_ids_, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice, st));
    KILN_CUDA_CHECK(cudaMemcpyAsync(targets_, h_targets_, hn * 4, cudaMemcpyHostToDevice, st));
    KILN_CUDA_CHECK(cudaMemcpyAsync(scales_, h_scales_, hn * 4, cudaMemcpyHostToDevice, st));
    forward_trunk_and_heads(rows, cancel);
    for (int32_t h = 0; h < n_heads_; ++h) {
      check_cancel(cancel);
      for (int64_t r0 = 0; r0 < n; r0 += chunk_rows_) {
        const int64_t m = std::min(chunk_rows_, n - r0);
        head_logits(h, r0, m);
        cross_entropy(logits_, targets_ + h * n + r0, scales_ + h * n + r0, c_.logit_softcap,
                      row_loss_ + h * n + r0, m, V_, backward, st);
        if (!backward) continue;
        linear_dx(logits_, V_, unembed_bf16_, m, H_, V_, d_head_y_ + r0 * H_, OutType::F32);
        linear_dw(logits_, V_, head_y_[h] + r0 * H_, m, H_, V_, G(off_unembed_));
      }
      if (!backward) continue;
      const size_t hb = head_block(h);
      float* d = h == 0 ? d_trunk_ : d_tmp_;
      norm_backward(norm_type_, d_head_y_, acts_[hb].out, W(off_final_w_), head_mean_[h],
                    head_rstd_[h], d, false, g_bf16_, G(off_final_w_), G(off_final_b_), n, H_,
                    workspace_, st);
      // Every head has written the unembedding and the final norm (unless embed_norm).
      if (h == n_heads_ - 1) grads_final({GradPointKind::HeadOutputs, -1});
      block_backward(hb, d, rows, true);
      if (h > 0) column_sum(d_tmp_, d_trunk_, 1, n * H_, workspace_, st);
    }
    if (backward) {
      for (int32_t l = L_ - 2; l >= 0; --l) {
        check_cancel(cancel);
        // After MTP heads, d_trunk_ has had their gradients added since g_bf16_ was written.
        block_backward(static_cast<size_t>(l), d_trunk_, rows, l < L_ - 2 || n_heads_ == 1);
      }
      if (drop_.active()) {
        dropout_apply(dropout_site(kiln::train::kDropoutSiteEmbedding), d_trunk_, nullptr, d_trunk_,
                      nullptr, n * H_, st);
      }
      const float* d_embed = d_trunk_;
      if (c_.embed_norm) {
        norm_backward(norm_type_, d_trunk_, embed_raw_, W(off_final_w_), embed_mean_, embed_rstd_,
                      d_n_, false, nullptr, G(off_final_w_), G(off_final_b_), n, H_, workspace_,
                      st);
        d_embed = d_n_;
      }
      embedding_backward(ids_, d_embed, G(off_embed_), G(off_pos_), n, S_, H_, c_.padding_idx,
                         workspace_, st);
      grads_final({GradPointKind::Embedding, -1});
    }
    KILN_CUDA_CHECK(cudaMemcpyAsync(h_loss_, row_loss_, hn * 4, cudaMemcpyDeviceToHost, st));
    stream_.synchronize();
    std::vector<HeadLoss> losses(static_cast<size_t>(n_heads_));
    for (int32_t h = 0; h < n_heads_; ++h) {
      for (int64_t r = 0; r < n; ++r) {
        if (h_targets_[h * n + r] < 0) continue;
        const int64_t j = r + h;
        const double w =
            batch.loss_weights.empty() ? 1.0 : static_cast<double>(batch.loss_weights[j]);
        losses[h].loss_sum += w * static_cast<double>(h_loss_[h * n + r]);
        losses[h].weight_sum += w;
        ++losses[h].tokens;
      }
    }
    return losses;
  }

  // ---- members -------------------------------------------------------------------------------

  TrainState s_;
  const ModelConfig& c_;
  std::shared_ptr<DeviceAllocator> alloc_;
  int device_;  // made current before the stream is created on it
  Stream stream_;
  int64_t H_ = 0, V_ = 0, nh_ = 0, nkv_ = 0, hd_ = 0, I_ = 0, qd_ = 0, kvd_ = 0, qkv_ = 0, gu_ = 1;
  int32_t L_ = 0, n_heads_ = 1, rot_dim_ = 0;
  NormType norm_type_ = NormType::RmsNorm;
  Activation act_ = Activation::SwiGlu;
  int64_t off_embed_ = -1, off_pos_ = -1, off_final_w_ = -1, off_final_b_ = -1, off_unembed_ = -1;

  DeviceBuffer values_, grads_, adam_m_, adam_v_, weights_bf16_, acts_buf_;
  DeviceBuffer muon_m_;                // Muon mode only: the momentum of Muon-updated tensors
  std::unique_ptr<MuonUpdater> muon_;  // Muon mode only
  DeviceBuffer adamw_chunks_;          // adamw_update_multi's work list (build_adamw_chunks)
  int64_t n_adamw_chunks_ = 0;
  PinnedBuffer pinned_;
  std::unique_ptr<LtGemm> gemm_;
  CublasHandle blas_{stream_.get()};  // only for the bias fallback in linear()
  std::vector<BlockWeights> blocks_;
  std::vector<bf16*> bf16_of_;
  bf16 *embed_bf16_ = nullptr, *pos_bf16_ = nullptr, *unembed_bf16_ = nullptr;
  float* inv_freq_ = nullptr;
  double *sumsq_ = nullptr, *norm_ = nullptr, *sumsq_ws_ = nullptr;
  float* clip_scale_ = nullptr;

  int64_t cap_rows_ = 0, S_ = 0, chunk_rows_ = 1;
  kiln::train::Dropout drop_;  // the running forward_backward's; inactive otherwise
  // Data-parallel group (null outside one) and its staging buffer for host sums: 3 per head.
  static constexpr int64_t kDataParallelSums = 3 * (1 + KILN_MAX_MTP_HEADS);
  std::unique_ptr<NcclComm> comm_;
  DeviceBuffer dp_sums_;
  // Bucketed all-reduce (joined without ZeRO-1 and KILN_DP_BUCKET_MB != 0; null/empty otherwise):
  // the plan, where the running backward pass is in it, the stream the buckets are reduced on,
  // and the events ordering it with stream_. Declared after comm_: destroyed before it.
  std::unique_ptr<kiln::train::GradBucketPlan> bucket_plan_;
  std::unique_ptr<kiln::train::GradBucketCursor> bucket_cursor_;
  std::optional<Stream> comm_stream_;
  std::optional<Event> grads_ready_, grads_reduced_;
  bool overlap_next_ = false;   // the trainer announced the step's last micro-batch
  bool overlapping_ = false;    // that micro-batch's forward_backward is running
  bool bucketed_step_ = false;  // its buckets are enqueued; all_reduce_grads only waits for them
  // ZeRO-1 (joined with shard_optimizer_state): the plan and this rank's slice; adam_m_ / adam_v_
  // then hold only the slice, values_ and grads_ are padded to zero_->padded_total().
  std::optional<kiln::train::ShardPlan> zero_;
  kiln::train::ShardRange owned_;
  std::vector<BlockActs> acts_;
  std::vector<bf16*> head_y_;
  std::vector<float*> head_mean_, head_rstd_;
  float *embed_raw_ = nullptr, *embed_normed_ = nullptr, *embed_mean_ = nullptr,
        *embed_rstd_ = nullptr;
  bf16 *logits_ = nullptr, *g_bf16_ = nullptr, *dh_ = nullptr, *d_o_ = nullptr, *dqkv_ = nullptr;
  float *d_head_y_ = nullptr, *d_trunk_ = nullptr, *d_tmp_ = nullptr, *d_n_ = nullptr,
        *d_a_ = nullptr, *dq_ = nullptr, *dk_ = nullptr, *dv_ = nullptr, *bias_scratch_ = nullptr,
        *workspace_ = nullptr, *scales_ = nullptr, *row_loss_ = nullptr, *ones_ = nullptr;
  int32_t *ids_ = nullptr, *targets_ = nullptr;
  int32_t *h_ids_ = nullptr, *h_targets_ = nullptr;
  float *h_scales_ = nullptr, *h_loss_ = nullptr;
};

}  // namespace

std::unique_ptr<kiln::train::TrainEngine> make_cuda_engine(
    const TrainState& state, std::shared_ptr<DeviceAllocator> allocator) {
  return std::make_unique<CudaEngine>(state, std::move(allocator));
}

}  // namespace kiln::cuda::train
