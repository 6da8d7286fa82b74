// The CUDA executor: the same HF Llama-family decoder as cpu::CpuTransformer (Llama, Qwen2 with
// qkv bias, Qwen3 with q/k norm, Phi3 with fused projections), with the weights resident in device
// memory as BF16 (norm weights and biases float32), activations in float32, matrix products in
// cuBLAS (BF16 in, float32 accumulate) and the KV cache in BF16 on the device. GGUF layer matrices
// in Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K stay in that format on the device: decode
// multiplies them with fused kernels (kernels/quant_gemv.cu; by default dotting the integers with
// an int8 copy of x, see QuantDot in kernels.hpp), prefill
// dequantises one matrix at a time into a per-session BF16 scratch buffer for cuBLAS. A quantised
// embedding table (and lm_head) stays quantised too: rows are gathered by a dequantising kernel,
// the decode step's logits come from the fused kernel, and many-row logits dequantise the lm_head
// a tile of vocabulary rows at a time. The F32 precision (ModelDims::f32) keeps every weight,
// the KV cache and the products' inputs in float32 instead (cuda_transformer_f32.cpp). Each session
// owns a CUDA stream and a cuBLAS handle, so sessions on one model may run from different threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "backend/backend.hpp"
#include "backend/cuda/cuda_handles.hpp"
#include "backend/cuda/device_memory.hpp"
#include "backend/cuda/device_sampler.hpp"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/nccl_comm.hpp"
#include "backend/cuda/weight_upload.hpp"
#include "model/config.hpp"
#include "model/transformer_weights.hpp"

namespace kiln::cuda {

struct ModelDims {
  int64_t vocab, hidden, n_heads, n_kv_heads, head_dim, intermediate, rot_dim;
  int32_t n_layers;
  // Elements of the largest quantised matrix (0: none): the session's prefill scratch.
  int64_t quant_scratch_elements = 0;
  // Largest k of a quantised one-row product whose x is quantised once into the session's buffer
  // (QuantDot::kInt8 with the prequantised kernels; 0: none).
  int64_t quant_x_elements = 0;
  // The F32 checking precision (KILN_PRECISION_F32): float32 weights, KV cache and matrix inputs,
  // full-float32 cuBLAS; see cuda_transformer_f32.cpp.
  bool f32 = false;
  // A tensor-parallel rank (tensor_parallel_executor.hpp): o_proj and down_proj write partial
  // sums into a scratch buffer that is all-reduced across the ranks before the residual add.
  bool collectives = false;
  // Bytes of one element of the KV cache and of a matrix product's input buffer.
  size_t element_bytes() const { return f32 ? sizeof(float) : sizeof(bf16); }
  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  int64_t qkv_dim() const { return q_dim() + 2 * kv_dim(); }
};

// A session's device state: KV cache ([n_layers][context][kv_dim] BF16 for K and for V), its
// stream and cuBLAS handle (with its own workspace, so that its calls can be captured), activation
// buffers sized for the largest batch seen so far, and the captured decode step: a one-token
// forward with logits is recorded once as a CUDA graph (every pointer it uses is fixed, the
// position is read from device memory) and replayed for each following token.
class CudaSessionState final : public SessionState {
 public:
  // Throws KILN_ERR_OUT_OF_MEMORY (naming the KV cache and its bytes) when it does not fit.
  CudaSessionState(std::shared_ptr<DeviceAllocator> allocator, const ModelDims& dims,
                   int32_t context_length);
  ~CudaSessionState() override;
  int32_t context_length() const override { return context_length_; }

 private:
  friend class CudaTransformer;
  friend class TensorParallelExecutor;
  // Grows the activation buffers to hold `n_tokens` rows and `logit_rows` rows of logits (which
  // drops the captured decode step: its pointers would be stale).
  void reserve(int64_t n_tokens, int64_t logit_rows);
  // Device copy of [start_pos, ids...]: the position, then the batch's token ids.
  int32_t* position() const { return ids_.as<int32_t>(); }
  int32_t* token_ids() const { return ids_.as<int32_t>() + 1; }
  bf16* k_cache(int32_t layer) const;
  bf16* v_cache(int32_t layer) const;
  float* k_cache_f32(int32_t layer) const;
  float* v_cache_f32(int32_t layer) const;

  // The BF16 scratch a quantised matrix is dequantised into for a many-row product (allocated at
  // the first batch of more than one token; null while none).
  bf16* quant_scratch() const { return quant_scratch_.as<bf16>(); }
  // x of a one-row quantised product quantised to int8 (kernels.hpp, quantize_x_int8): allocated
  // with the session, so that the captured decode step allocates nothing.
  void* quant_x() const { return quant_x_.get(); }

  std::shared_ptr<DeviceAllocator> allocator_;
  ModelDims dims_;
  int32_t context_length_;
  Stream stream_;
  CublasHandle cublas_;
  DeviceBuffer k_cache_, v_cache_, decode_partials_, decode_counters_, cublas_workspace_, quant_x_;
  int64_t token_capacity_ = 0, logit_row_capacity_ = 0;
  DeviceBuffer ids_, x_, normed_, qkv_, q_, attn_, gate_up_, act_, logits_, quant_scratch_;
  DeviceBuffer partial_;  // [n × hidden] float: a rank's share of o_proj / down_proj (collectives)
  PinnedBuffer ids_host_, logits_host_;
  GraphExec decode_step_;  // ends with the logits in logits_ (copied out only when asked for)
  std::unique_ptr<DeviceSampler> sampler_;  // made at the first forward_sample
};

class CudaTransformer final : public ModelExecutor {
 public:
  // Validates every weight shape against the config (KILN_ERR_FORMAT naming the tensor) and
  // uploads them (KILN_ERR_OUT_OF_MEMORY under the allocator's cap or the device's memory, with
  // every partial allocation freed). `inv_freq`: the RoPE inverse frequencies. `f32`: the F32
  // checking precision (every matrix float32, GGUF blocks dequantised at upload). `quant_dot`: the
  // decode step's arithmetic on quantised matrices (kernels.hpp); by default KILN_CUDA_QUANT_DOT
  // ("int8", the default, or "float"; anything else is KILN_ERR_INVALID_ARGUMENT).
  CudaTransformer(const ModelConfig& config, const TransformerWeights& weights,
                  const std::vector<float>& inv_freq, std::shared_ptr<DeviceAllocator> allocator,
                  const ProgressFn& progress = {}, bool f32 = false,
                  std::optional<QuantDot> quant_dot = std::nullopt,
                  std::shared_ptr<NcclComm> collective = nullptr);

  std::unique_ptr<SessionState> create_state(int32_t context_length) const override;
  void forward(SessionState& state, std::span<const int32_t> ids, int32_t start_pos, float* logits,
               bool all_positions, const std::atomic<bool>* cancel) const override;
  // Draws on the device (device_sampler.hpp) unless KILN_CUDA_HOST_SAMPLING=1 was set when this
  // executor was made (then nullopt: the session samples on the host, for tests and benchmarks).
  std::optional<int32_t> forward_sample(SessionState& state, std::span<const int32_t> ids,
                                        int32_t start_pos, const DeviceSampleRequest& req,
                                        const std::atomic<bool>* cancel) const override;
  int64_t n_parameters() const override { return n_parameters_; }
  int device() const { return allocator_->device(); }

  // The layers' projection matrices (q/k/v, o, gate/up, down): their weights and the device bytes
  // they take (block-quantised ones as stored: e.g. 0.5625 bytes per weight for Q4_K).
  struct LayerMatrixStorage {
    int64_t weights = 0, device_bytes = 0, quantized_weights = 0;
  };
  LayerMatrixStorage layer_matrix_storage() const { return storage_; }

 private:
  struct Layer {
    DeviceBuffer attn_norm, bqkv, bo, q_norm, k_norm, ffn_norm;
    DeviceMatrix wqkv, wo, w_gate_up, w_down;
  };
  // y[n × W.rows] = x[n × W.cols] · Wᵀ + beta · y: cuBLAS/gemv for BF16; for a quantised W the
  // fused kernels when n = 1, else dequantise into the session's scratch and cuBLAS.
  void linear(CudaSessionState& s, const DeviceMatrix& w, const bf16* x, float* y, int64_t n,
              float beta) const;
  // The one-row product with a quantised W (every segment): x quantised once into the session's
  // buffer and the prequantised kernels when prequantised_one_row(s, w), else quant_gemv.
  void quant_linear_one_row(CudaSessionState& s, const DeviceMatrix& w, const bf16* x, float* y,
                            float beta) const;
  bool prequantised_one_row(const CudaSessionState& s, const DeviceMatrix& w) const;
  // The product with the x already quantised into s.quant_x() (by the kernel that produced x).
  void quant_linear_prequantised(CudaSessionState& s, const DeviceMatrix& w, float* y,
                                 float beta) const;
  void validate(const ModelConfig& config, const TransformerWeights& w) const;
  // y[n × hidden] += x · Wᵀ: in the product's epilogue, or, on a tensor-parallel rank, as the
  // all-reduced sum of every rank's x · Wᵀ (partial_ then one add; biases come after, once).
  void project_into_residual(CudaSessionState& s, const DeviceMatrix& w, const bf16* x, float* y,
                             int64_t n) const;
  // Selects the device and grows the session's buffers for run() with these arguments (run does
  // it too; a tensor-parallel executor calls it first on every rank so that running out of
  // memory cannot stop one rank while the others wait in a collective).
  void prepare(CudaSessionState& s, int64_t n, bool host_logits, bool all_positions,
               bool keep_logits) const;
  // forward() with the last row's logits either copied to host_logits (when not null) or, with
  // keep_logits, left in the session's logits_ buffer for the device sampler.
  void run(CudaSessionState& s, std::span<const int32_t> ids, int32_t start_pos, float* host_logits,
           bool all_positions, bool keep_logits, const std::atomic<bool>* cancel) const;
  // Enqueues the copy of the staged [start_pos, ids] and the embedding and layers for n tokens.
  void enqueue_layers(CudaSessionState& s, int64_t n, int32_t start_pos,
                      const std::atomic<bool>* cancel) const;
  // The final norm and the head over `rows` rows of x starting at row `first_row` into logits_,
  // then copied to `out` (host memory) unless it is null.
  void compute_logits(CudaSessionState& s, int64_t first_row, int64_t rows, float* out) const;
  // The F32 precision's forms of the two above (cuda_transformer_f32.cpp): no fused kernels,
  // cuBLAS for every product.
  void enqueue_layers_f32(CudaSessionState& s, int64_t n, int32_t start_pos,
                          const std::atomic<bool>* cancel) const;
  void compute_logits_f32(CudaSessionState& s, int64_t first_row, int64_t rows, float* out) const;

  friend class TensorParallelExecutor;  // runs each rank's run() on the rank's own thread

  std::shared_ptr<DeviceAllocator> allocator_;
  std::shared_ptr<NcclComm> collective_;  // set on a tensor-parallel rank
  ModelDims dims_{};
  float eps_;
  bool qk_norm_;
  // The one-row quantised products' arithmetic (KILN_CUDA_QUANT_DOT at load; kInt8 by default).
  QuantDot quant_dot_;
  // With kInt8: x quantised once per product into the session's buffer, then the prequantised
  // GEMV (kernels/quant_gemv_prequant.cu; the default), or the per-block kernels of quant_gemv
  // (KILN_CUDA_QGEMV=old at load, for A/B in one process tree).
  bool prequantize_x_ = true;
  // The decode attention kernel quantises its output for a quantised o_proj, which then takes the
  // prequantised GEMV (KILN_CUDA_ATTN_QX=0 at load turns it off, for A/B in one process tree).
  bool attention_quantizes_output_ = true;
  // Which of the decode step's norms run inside the product after them while the hidden size is
  // small (KILN_CUDA_FUSED_NORMS at load: "all", the default; "qkv"; "none"; for A/B).
  enum class FusedNorms { kAll, kQkv, kNone };
  FusedNorms fused_norms_ = FusedNorms::kAll;
  const DeviceMatrix& lm_head() const { return tied_ ? embed_ : lm_head_; }

  DeviceMatrix embed_, lm_head_;  // lm_head_ empty when tied
  bool tied_ = false;
  DeviceBuffer final_norm_, inv_freq_;
  // Vocabulary rows of a quantised lm_head dequantised per pass of a many-row logits product.
  int64_t logit_tile_rows_ = 0;
  std::vector<Layer> layers_;
  int64_t n_parameters_ = 0;
  LayerMatrixStorage storage_;
  bool host_sampling_ = false;  // KILN_CUDA_HOST_SAMPLING=1 at construction
};

}  // namespace kiln::cuda
