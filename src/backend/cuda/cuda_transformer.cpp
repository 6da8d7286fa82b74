#include "backend/cuda/cuda_transformer.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/gemm.hpp"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/weight_upload.hpp"
#include "backend/cuda_structure.hpp"
#include "core/error.hpp"

namespace kiln::cuda {

namespace {

// Logits of many rows (all_positions) are computed this many rows at a time, so that a long
// prompt does not need a [tokens × vocab] device buffer.
constexpr int64_t kLogitRowsPerPass = 64;
// Activation buffers grow in steps of this many tokens.
constexpr int64_t kTokenGranule = 16;
// A cuBLAS workspace of our own per session: graph capture must not see cuBLAS allocate.
constexpr size_t kCublasWorkspaceBytes = size_t{4} << 20;
// Hidden sizes from which the decode step runs RMSNorm as its own kernel instead of inside every
// block of the product after it (see enqueue_layers).
constexpr int64_t kFusedNormMaxHidden = 2048;
// Shortest rows for which a one-row quantised product whose x no kernel before it quantised gets
// a quantize_x_int8 launch of its own (then the prequantised kernel) rather than v12's kernel,
// whose blocks each quantise x: an extra launch in the graph (~2 µs) against k elements of
// quantisation per 8 rows. Measured on the H100 (quant_gemv_variants, 2026-11-25): the separate
// quantisation costs 3.5–5.6 µs, more than the new kernel saves on any product that needs it
// (7B o_proj 8.5 µs with v12's kernel against 6.7 + 5.6; 0.5B down_proj 6.3 against 4.6 + 4.8),
// so no shape takes it: only products whose x a fused norm or SwiGLU kernel quantised use the
// new kernel. Kept as a threshold for GPUs where the balance differs.
constexpr int64_t kQuantizeKernelMinK = int64_t{1} << 40;

bool same_block(const WeightRef& a, const WeightRef& b) {
  return a.tensor == b.tensor && a.row_begin == b.row_begin && a.rows == b.rows && a.cols == b.cols;
}

int64_t elements(const WeightRef& ref) { return ref.tensor ? ref.rows * ref.cols : 0; }

// KILN_CUDA_QUANT_DOT selects how decode multiplies GGUF-quantised matrices (kernels.hpp,
// QuantDot): "int8" (the default) or "float" (the exact dequantise-and-dot path), so that both can
// be compared in one process tree; read once, when a model is loaded.
QuantDot quant_dot_from_environment() {
  const char* env = std::getenv("KILN_CUDA_QUANT_DOT");
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "int8") == 0) return QuantDot::kInt8;
  if (std::strcmp(env, "float") == 0) return QuantDot::kFloat;
  fail(KILN_ERR_INVALID_ARGUMENT,
       std::string("KILN_CUDA_QUANT_DOT is \"") + env + "\"; expected \"int8\" or \"float\"");
}

// KILN_CUDA_QGEMV selects the kernels of the int8 one-row products: "new" (the default: x
// quantised once per product, kernels/quant_gemv_prequant.cu) or "old" (every block of the product
// quantises x itself, kernels/quant_gemv.cu), so that both can be compared in one process tree;
// read once, when a model is loaded.
bool prequantize_x_from_environment() {
  const char* env = std::getenv("KILN_CUDA_QGEMV");
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "new") == 0) return true;
  if (std::strcmp(env, "old") == 0) return false;
  fail(KILN_ERR_INVALID_ARGUMENT,
       std::string("KILN_CUDA_QGEMV is \"") + env + "\"; expected \"new\" or \"old\"");
}

// KILN_CUDA_ATTN_QX: "1" (the default) — the decode attention kernel writes its output also as the
// int8 x of a quantised o_proj (kernels/attention_decode_fused.cu), "0" — o_proj quantises x
// itself (quant_gemv.cu); read once, when a model is loaded.
bool attention_quantizes_output_from_environment() {
  const char* env = std::getenv("KILN_CUDA_ATTN_QX");
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "1") == 0) return true;
  if (std::strcmp(env, "0") == 0) return false;
  fail(KILN_ERR_INVALID_ARGUMENT,
       std::string("KILN_CUDA_ATTN_QX is \"") + env + "\"; expected \"0\" or \"1\"");
}

// KILN_CUDA_FUSED_NORMS: which decode norms of a small-hidden model run inside the product after
// them — "all" (the default), "qkv" (the FFN's norm on its own, then the split gate/up + SwiGLU
// product), "none"; read once, when a model is loaded.
int fused_norms_from_environment() {
  const char* env = std::getenv("KILN_CUDA_FUSED_NORMS");
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "all") == 0) return 0;
  if (std::strcmp(env, "qkv") == 0) return 1;
  if (std::strcmp(env, "none") == 0) return 2;
  fail(KILN_ERR_INVALID_ARGUMENT, std::string("KILN_CUDA_FUSED_NORMS is \"") + env +
                                      "\"; expected \"all\", \"qkv\" or \"none\"");
}

template <typename T>
T* ptr(const DeviceBuffer& b) {
  return b.as<T>();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CudaSessionState

CudaSessionState::CudaSessionState(std::shared_ptr<DeviceAllocator> allocator,
                                   const ModelDims& dims, int32_t context_length)
    : allocator_(std::move(allocator)),
      dims_(dims),
      context_length_(context_length),
      cublas_(stream_.get()) {
  if (context_length <= 0) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "context length must be positive, got " + std::to_string(context_length));
  }
  const size_t cache_bytes = static_cast<size_t>(dims.n_layers) * context_length *
                             static_cast<size_t>(dims.kv_dim()) * dims.element_bytes();
  const std::string ctx = std::string(dims.f32 ? " (float32)" : "") + " for a context of " +
                          std::to_string(context_length) + " tokens";
  k_cache_ = allocator_->allocate(cache_bytes, "the KV cache (K)" + ctx);
  v_cache_ = allocator_->allocate(cache_bytes, "the KV cache (V)" + ctx);
  decode_partials_ =
      allocator_->allocate(static_cast<size_t>(decode_partials_floats(
                               static_cast<int32_t>(dims.n_heads),
                               static_cast<int32_t>(dims.head_dim), context_length)) *
                               sizeof(float),
                           "decode attention partial results" + ctx);
  decode_counters_ = allocator_->allocate(static_cast<size_t>(dims.n_heads) * sizeof(unsigned),
                                          "decode attention counters");
  KILN_CUDA_CHECK(
      cudaMemsetAsync(decode_counters_.get(), 0, decode_counters_.size(), stream_.get()));
  logits_host_ = PinnedBuffer(static_cast<size_t>(dims.vocab) * sizeof(float), "logits");
  cublas_workspace_ = allocator_->allocate(kCublasWorkspaceBytes, "the cuBLAS workspace" + ctx);
  if (dims.quant_x_elements > 0) {
    quant_x_ = allocator_->allocate(quantized_x_bytes(dims.quant_x_elements),
                                    "the int8 copy of a decode product's input (" +
                                        std::to_string(dims.quant_x_elements) + " elements)");
  }
  KILN_CUDA_CHECK(
      cublasSetWorkspace(cublas_.get(), cublas_workspace_.get(), cublas_workspace_.size()));
}

CudaSessionState::~CudaSessionState() {
  // Work still queued may use the buffers freed below.
  (void)cudaStreamSynchronize(stream_.get());
}

bf16* CudaSessionState::k_cache(int32_t layer) const {
  return k_cache_.as<bf16>() + static_cast<size_t>(layer) * context_length_ * dims_.kv_dim();
}
bf16* CudaSessionState::v_cache(int32_t layer) const {
  return v_cache_.as<bf16>() + static_cast<size_t>(layer) * context_length_ * dims_.kv_dim();
}
float* CudaSessionState::k_cache_f32(int32_t layer) const {
  return k_cache_.as<float>() + static_cast<size_t>(layer) * context_length_ * dims_.kv_dim();
}
float* CudaSessionState::v_cache_f32(int32_t layer) const {
  return v_cache_.as<float>() + static_cast<size_t>(layer) * context_length_ * dims_.kv_dim();
}

void CudaSessionState::reserve(int64_t n_tokens, int64_t logit_rows) {
  if (n_tokens > token_capacity_ || logit_rows > logit_row_capacity_) decode_step_.reset();
  if (n_tokens > token_capacity_) {
    const int64_t cap = (n_tokens + kTokenGranule - 1) / kTokenGranule * kTokenGranule;
    token_capacity_ = 0;  // stays 0 if an allocation below throws
    const auto n = static_cast<size_t>(cap);
    const ModelDims& d = dims_;
    const std::string what = " for a batch of " + std::to_string(cap) + " tokens";
    // Free the old buffers first so that growing never needs both at once.
    for (DeviceBuffer* b : {&ids_, &x_, &normed_, &qkv_, &q_, &attn_, &gate_up_, &act_}) {
      *b = DeviceBuffer();
    }
    ids_host_ = PinnedBuffer();
    ids_ = allocator_->allocate((n + 1) * sizeof(int32_t), "token ids" + what);
    x_ = allocator_->allocate(n * d.hidden * sizeof(float), "the residual stream" + what);
    // Inputs of matrix products: BF16, or float32 in the F32 precision.
    const size_t in_bytes = d.element_bytes();
    normed_ = allocator_->allocate(n * d.hidden * in_bytes, "normalised activations" + what);
    qkv_ = allocator_->allocate(n * d.qkv_dim() * sizeof(float), "q/k/v projections" + what);
    q_ = allocator_->allocate(n * d.q_dim() * sizeof(float), "queries" + what);
    attn_ = allocator_->allocate(n * d.q_dim() * in_bytes, "attention outputs" + what);
    gate_up_ = allocator_->allocate(n * 2 * d.intermediate * sizeof(float), "gate/up" + what);
    act_ = allocator_->allocate(n * d.intermediate * in_bytes, "SwiGLU outputs" + what);
    if (d.collectives) {
      partial_ = DeviceBuffer();
      partial_ =
          allocator_->allocate(n * d.hidden * sizeof(float), "tensor-parallel partial sums" + what);
    }
    ids_host_ = PinnedBuffer((n + 1) * sizeof(int32_t), "token ids");
    token_capacity_ = cap;
  }
  if (n_tokens > 1 && dims_.quant_scratch_elements > 0 && !quant_scratch_) {
    quant_scratch_ =
        allocator_->allocate(static_cast<size_t>(dims_.quant_scratch_elements) * sizeof(bf16),
                             "the BF16 scratch for dequantised weights in prefill (" +
                                 std::to_string(dims_.quant_scratch_elements) + " weights)");
  }
  if (logit_rows > logit_row_capacity_) {
    logit_row_capacity_ = 0;
    logits_ = DeviceBuffer();
    logits_ = allocator_->allocate(static_cast<size_t>(logit_rows) * dims_.vocab * sizeof(float),
                                   "logits of " + std::to_string(logit_rows) + " rows");
    logit_row_capacity_ = logit_rows;
  }
}

// ---------------------------------------------------------------------------------------------
// CudaTransformer

void CudaTransformer::validate(const ModelConfig& config, const TransformerWeights& w) const {
  const ModelDims& d = dims_;
  if (config.mlp_bias) {
    fail(KILN_ERR_UNSUPPORTED,
         "mlp_bias = true is not supported (model " + config.architecture + ")");
  }
  if (d.n_heads <= 0 || d.n_kv_heads <= 0 || d.n_heads % d.n_kv_heads != 0) {
    fail(KILN_ERR_FORMAT, "num_attention_heads " + std::to_string(d.n_heads) +
                              " is not a positive multiple of num_key_value_heads " +
                              std::to_string(d.n_kv_heads));
  }
  if (d.head_dim % 8 != 0 || d.head_dim > kMaxAttentionHeadDim) {
    fail(KILN_ERR_UNSUPPORTED,
         "the CUDA backend needs head_dim to be a multiple of 8 and at most " +
             std::to_string(kMaxAttentionHeadDim) + "; model " + config.architecture + " has " +
             std::to_string(d.head_dim));
  }
  if (static_cast<int32_t>(w.layers.size()) != d.n_layers) {
    fail(KILN_ERR_FORMAT, "weights hold " + std::to_string(w.layers.size()) +
                              " layers, config says " + std::to_string(d.n_layers));
  }
  expect_weight_shape(w.embed, d.vocab, d.hidden, "embed_tokens");
  expect_weight_shape(w.final_norm, d.hidden, 1, "final norm");
  expect_weight_shape(w.lm_head, d.vocab, d.hidden, "lm_head");
  for (const LayerWeights& l : w.layers) {
    expect_weight_shape(l.attn_norm, d.hidden, 1, "input_layernorm");
    expect_weight_shape(l.wq, d.q_dim(), d.hidden, "q_proj");
    expect_weight_shape(l.wk, d.kv_dim(), d.hidden, "k_proj");
    expect_weight_shape(l.wv, d.kv_dim(), d.hidden, "v_proj");
    expect_weight_shape(l.wo, d.hidden, d.q_dim(), "o_proj");
    expect_weight_shape(l.bq, d.q_dim(), 1, "q_proj bias", true);
    expect_weight_shape(l.bk, d.kv_dim(), 1, "k_proj bias", true);
    expect_weight_shape(l.bv, d.kv_dim(), 1, "v_proj bias", true);
    expect_weight_shape(l.bo, d.hidden, 1, "o_proj bias", true);
    expect_weight_shape(l.q_norm, d.head_dim, 1, "q_norm", !qk_norm_);
    expect_weight_shape(l.k_norm, d.head_dim, 1, "k_norm", !qk_norm_);
    expect_weight_shape(l.ffn_norm, d.hidden, 1, "post_attention_layernorm");
    expect_weight_shape(l.w_gate, d.intermediate, d.hidden, "gate_proj");
    expect_weight_shape(l.w_up, d.intermediate, d.hidden, "up_proj");
    expect_weight_shape(l.w_down, d.hidden, d.intermediate, "down_proj");
  }
}

CudaTransformer::CudaTransformer(const ModelConfig& config, const TransformerWeights& w,
                                 const std::vector<float>& inv_freq,
                                 std::shared_ptr<DeviceAllocator> allocator,
                                 const ProgressFn& progress, bool f32,
                                 std::optional<QuantDot> quant_dot,
                                 std::shared_ptr<NcclComm> collective)
    : allocator_(std::move(allocator)),
      collective_(std::move(collective)),
      eps_(config.rms_norm_eps),
      qk_norm_(config.qk_norm == QkNormKind::BeforeRopeWeighted),
      quant_dot_(quant_dot ? *quant_dot : quant_dot_from_environment()),
      prequantize_x_(prequantize_x_from_environment()),
      attention_quantizes_output_(attention_quantizes_output_from_environment()),
      fused_norms_(static_cast<FusedNorms>(fused_norms_from_environment())) {
  // Read once here: the escape hatch to host sampling for tests and benchmarks.
  const char* host_sampling = std::getenv("KILN_CUDA_HOST_SAMPLING");
  host_sampling_ = host_sampling != nullptr && std::string_view(host_sampling) == "1";
  require_cuda_structure(config);
  dims_.vocab = config.vocab_size;
  dims_.hidden = config.hidden_size;
  dims_.n_heads = config.n_heads;
  dims_.n_kv_heads = config.n_kv_heads;
  dims_.head_dim = config.head_dim;
  dims_.intermediate = config.intermediate_size;
  dims_.n_layers = config.n_layers;
  dims_.f32 = f32;
  dims_.collectives = collective_ != nullptr;
  if (f32 && collective_) {
    fail(KILN_ERR_UNSUPPORTED,
         "tensor parallelism runs the BF16 path only; load with the default precision, not F32");
  }
  dims_.rot_dim =
      static_cast<int64_t>(static_cast<float>(dims_.head_dim) * config.partial_rotary_factor);
  dims_.rot_dim -= dims_.rot_dim % 2;
  if (static_cast<int64_t>(inv_freq.size()) * 2 != dims_.rot_dim) {
    fail(KILN_ERR_INTERNAL, "RoPE: " + std::to_string(inv_freq.size()) +
                                " inverse frequencies for a rotary dimension of " +
                                std::to_string(dims_.rot_dim));
  }
  validate(config, w);

  const bool tied = same_block(w.embed, w.lm_head);
  int64_t total = elements(w.embed) + elements(w.final_norm) + (tied ? 0 : elements(w.lm_head));
  for (const LayerWeights& l : w.layers) {
    for (const WeightRef* r : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv, &l.bo,
                               &l.q_norm, &l.k_norm, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down}) {
      if (r == &l.q_norm || r == &l.k_norm) {
        if (qk_norm_) total += elements(*r);
      } else {
        total += elements(*r);
      }
    }
  }
  n_parameters_ = total;

  use_device(allocator_->device());
  WeightUploader up(*allocator_, progress, total);
  // Every matrix goes through here: as stored / BF16, or float32 in the F32 precision.
  auto upload_matrix = [&](const std::vector<const WeightRef*>& parts, const std::string& what) {
    return f32 ? up.upload_matrix_f32(parts, what + " (float32)") : up.upload_matrix(parts, what);
  };
  tied_ = tied;
  embed_ = upload_matrix({&w.embed}, "embed_tokens");
  if (!tied) lm_head_ = upload_matrix({&w.lm_head}, "lm_head");
  final_norm_ = up.upload_f32({&w.final_norm}, {0}, "final norm");
  inv_freq_ = up.upload_host_f32(inv_freq, "RoPE inverse frequencies");

  layers_.reserve(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    const std::string at = " of layer " + std::to_string(i);
    Layer L;
    L.attn_norm = up.upload_f32({&l.attn_norm}, {0}, "input_layernorm" + at);
    L.wqkv = upload_matrix({&l.wq, &l.wk, &l.wv}, "q/k/v_proj" + at);
    if (l.bq.tensor || l.bk.tensor || l.bv.tensor) {
      L.bqkv = up.upload_f32({&l.bq, &l.bk, &l.bv}, {dims_.q_dim(), dims_.kv_dim(), dims_.kv_dim()},
                             "q/k/v_proj bias" + at);
    }
    L.wo = upload_matrix({&l.wo}, "o_proj" + at);
    if (l.bo.tensor) L.bo = up.upload_f32({&l.bo}, {0}, "o_proj bias" + at);
    if (qk_norm_) {
      L.q_norm = up.upload_f32({&l.q_norm}, {0}, "q_norm" + at);
      L.k_norm = up.upload_f32({&l.k_norm}, {0}, "k_norm" + at);
    }
    L.ffn_norm = up.upload_f32({&l.ffn_norm}, {0}, "post_attention_layernorm" + at);
    L.w_gate_up = upload_matrix({&l.w_gate, &l.w_up}, "gate/up_proj" + at);
    L.w_down = upload_matrix({&l.w_down}, "down_proj" + at);
    for (const DeviceMatrix* m : {&L.wqkv, &L.wo, &L.w_gate_up, &L.w_down}) {
      const int64_t weights = m->rows * m->cols;
      storage_.weights += weights;
      storage_.device_bytes += static_cast<int64_t>(m->device_bytes());
      if (m->quantized()) {
        storage_.quantized_weights += weights;
        dims_.quant_scratch_elements = std::max(dims_.quant_scratch_elements, weights);
        dims_.quant_x_elements = std::max(dims_.quant_x_elements, m->cols);
      }
    }
    layers_.push_back(std::move(L));
  }
  if (lm_head().quantized()) {
    // Many-row logits: at least kLogitTileRows vocabulary rows per dequantised tile (fewer GEMMs),
    // more when the layers' scratch is larger anyway.
    constexpr int64_t kLogitTileRows = 8192;
    const int64_t rows = std::min(
        dims_.vocab, std::max(kLogitTileRows, dims_.quant_scratch_elements / dims_.hidden));
    logit_tile_rows_ = rows;
    dims_.quant_scratch_elements = std::max(dims_.quant_scratch_elements, rows * dims_.hidden);
    dims_.quant_x_elements = std::max(dims_.quant_x_elements, dims_.hidden);
  }
  if (f32 || quant_dot_ != QuantDot::kInt8 || !prequantize_x_) dims_.quant_x_elements = 0;
  up.finish();
}

std::unique_ptr<SessionState> CudaTransformer::create_state(int32_t context_length) const {
  use_device(allocator_->device());
  return std::make_unique<CudaSessionState>(allocator_, dims_, context_length);
}

void CudaTransformer::compute_logits(CudaSessionState& s, int64_t first_row, int64_t rows,
                                     float* out) const {
  if (dims_.f32) return compute_logits_f32(s, first_row, rows, out);
  const cudaStream_t stream = s.stream_.get();
  const DeviceMatrix& head = lm_head();
  float* x = ptr<float>(s.x_) + first_row * dims_.hidden;
  const bool prequantised = rows == 1 && prequantised_one_row(s, head);
  if (prequantised) {
    // The norm's kernel quantises its output for the head's product.
    rms_norm_quantize_x(x, ptr<float>(final_norm_), ptr<bf16>(s.normed_), s.quant_x(), dims_.hidden,
                        eps_, stream);
  } else {
    rms_norm(x, nullptr, ptr<float>(final_norm_), ptr<bf16>(s.normed_), rows, dims_.hidden, eps_,
             stream);
  }
  if (prequantised) {
    quant_linear_prequantised(s, head, ptr<float>(s.logits_), 0.0f);
  } else if (!head.quantized()) {
    linear_bf16(s.cublas_.get(), ptr<bf16>(s.normed_), head.bf16_ptr(), ptr<float>(s.logits_), rows,
                dims_.hidden, dims_.vocab, 0.0f);
  } else if (rows == 1) {
    quant_linear_one_row(s, head, ptr<bf16>(s.normed_), ptr<float>(s.logits_), 0.0f);
  } else {
    // A tile of vocabulary rows at a time through the scratch, into the logits' columns.
    const QuantMatrixView& all = head.segments[0].view;
    bf16* scratch = s.quant_scratch();
    if (scratch == nullptr || logit_tile_rows_ * dims_.hidden > dims_.quant_scratch_elements) {
      fail(KILN_ERR_INTERNAL, "quantised lm_head without a large enough dequantisation scratch");
    }
    for (int64_t r0 = 0; r0 < dims_.vocab; r0 += logit_tile_rows_) {
      const int64_t tile = std::min(logit_tile_rows_, dims_.vocab - r0);
      const QuantMatrixView part{all.data + static_cast<size_t>(r0) * all.row_bytes, all.format,
                                 tile, all.k, all.row_bytes};
      quant_dequantize_bf16(part, scratch, stream);
      linear_bf16_strided(s.cublas_.get(), ptr<bf16>(s.normed_), scratch,
                          ptr<float>(s.logits_) + r0, rows, dims_.hidden, tile, dims_.vocab, 0.0f);
    }
  }
  if (out == nullptr) return;
  KILN_CUDA_CHECK(cudaMemcpyAsync(out, s.logits_.get(),
                                  static_cast<size_t>(rows * dims_.vocab) * sizeof(float),
                                  cudaMemcpyDeviceToHost, stream));
}

namespace {
CudaSessionState& cuda_state(SessionState& base_state) {
  auto* s = dynamic_cast<CudaSessionState*>(&base_state);
  if (s == nullptr) fail(KILN_ERR_INTERNAL, "CUDA forward given another backend's state");
  return *s;
}
}  // namespace

void CudaTransformer::forward(SessionState& base_state, std::span<const int32_t> ids,
                              int32_t start_pos, float* logits, bool all_positions,
                              const std::atomic<bool>* cancel) const {
  run(cuda_state(base_state), ids, start_pos, logits, all_positions, false, cancel);
}

std::optional<int32_t> CudaTransformer::forward_sample(SessionState& base_state,
                                                       std::span<const int32_t> ids,
                                                       int32_t start_pos,
                                                       const DeviceSampleRequest& req,
                                                       const std::atomic<bool>* cancel) const {
  if (host_sampling_ || ids.empty()) return std::nullopt;
  CudaSessionState& s = cuda_state(base_state);
  run(s, ids, start_pos, nullptr, false, true, cancel);
  if (!s.sampler_) s.sampler_ = std::make_unique<DeviceSampler>(allocator_, dims_.vocab);
  return s.sampler_->sample(ptr<float>(s.logits_), req, s.stream_.get());
}

void CudaTransformer::prepare(CudaSessionState& s, int64_t n, bool host_logits, bool all_positions,
                              bool keep_logits) const {
  use_device(allocator_->device());
  const bool want_logits = host_logits || keep_logits;
  const int64_t logit_rows =
      !want_logits ? 0 : (all_positions && !keep_logits ? std::min(n, kLogitRowsPerPass) : 1);
  s.reserve(n, logit_rows);
}

void CudaTransformer::run(CudaSessionState& state, std::span<const int32_t> ids, int32_t start_pos,
                          float* logits, bool all_positions, bool keep_logits,
                          const std::atomic<bool>* cancel) const {
  CudaSessionState* s = &state;
  const auto n = static_cast<int64_t>(ids.size());
  if (n == 0) return;
  // The caller has validated these; checked again because a slip would corrupt device memory.
  if (start_pos < 0 || start_pos + n > s->context_length()) {
    fail(KILN_ERR_CONTEXT_FULL,
         "positions " + std::to_string(start_pos) + ".." + std::to_string(start_pos + n - 1) +
             " do not fit a context of " + std::to_string(s->context_length()));
  }
  for (int64_t t = 0; t < n; ++t) {
    if (ids[t] < 0 || ids[t] >= dims_.vocab) {
      fail(KILN_ERR_OUT_OF_RANGE, "token id " + std::to_string(ids[t]) + " at index " +
                                      std::to_string(t) + " outside [0, " +
                                      std::to_string(dims_.vocab) + ")");
    }
  }

  const int64_t V = dims_.vocab;
  const bool want_logits = logits != nullptr || keep_logits;
  prepare(*s, n, logits != nullptr, all_positions, keep_logits);
  // The pinned staging is free: the previous forward on this session ended synchronised.
  int32_t* staged = s->ids_host_.as<int32_t>();
  staged[0] = start_pos;
  std::memcpy(staged + 1, ids.data(), static_cast<size_t>(n) * sizeof(int32_t));
  const cudaStream_t stream = s->stream_.get();
  // The last row's logits in logits_ to the caller's host buffer (the pinned staging first).
  auto copy_out_last_row = [&] {
    KILN_CUDA_CHECK(cudaMemcpyAsync(s->logits_host_.as<float>(), s->logits_.get(),
                                    static_cast<size_t>(V) * sizeof(float), cudaMemcpyDeviceToHost,
                                    stream));
    s->stream_.synchronize();
    std::memcpy(logits, s->logits_host_.as<float>(), static_cast<size_t>(V) * sizeof(float));
  };

  if (n == 1 && want_logits) {
    // Decode: one graph launch replays the captured step (copy-in, layers, head); the logits stay
    // on the device unless the caller wants them (the device sampler reads them there).
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
      fail(KILN_ERR_CANCELLED, "forward pass cancelled");
    }
    if (!s->decode_step_.ready()) {
      KILN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      try {
        enqueue_layers(*s, 1, start_pos, nullptr);
        compute_logits(*s, 0, 1, nullptr);
      } catch (...) {
        GraphExec::abandon_capture(stream);
        throw;
      }
      s->decode_step_.end_capture(stream);
    }
    s->decode_step_.launch(stream);
    if (logits != nullptr) copy_out_last_row();
    return;
  }

  enqueue_layers(*s, n, start_pos, cancel);
  if (logits != nullptr && all_positions) {
    for (int64_t r0 = 0; r0 < n; r0 += kLogitRowsPerPass) {
      compute_logits(*s, r0, std::min(kLogitRowsPerPass, n - r0), logits + r0 * V);
    }
    s->stream_.synchronize();
  } else if (want_logits) {
    compute_logits(*s, n - 1, 1, nullptr);
    if (logits != nullptr) copy_out_last_row();
  } else {
    s->stream_.synchronize();
  }
}

void CudaTransformer::linear(CudaSessionState& s, const DeviceMatrix& w, const bf16* x, float* y,
                             int64_t n, float beta) const {
  if (!w.quantized()) {
    linear_bf16(s.cublas_.get(), x, w.bf16_ptr(), y, n, w.cols, w.rows, beta);
    return;
  }
  const cudaStream_t stream = s.stream_.get();
  if (n == 1) return quant_linear_one_row(s, w, x, y, beta);
  // The segments' rows land one after another: the scratch holds the whole matrix as BF16.
  bf16* scratch = s.quant_scratch();
  if (scratch == nullptr || w.rows * w.cols > dims_.quant_scratch_elements) {
    fail(KILN_ERR_INTERNAL, "quantised product without a large enough dequantisation scratch");
  }
  for (const DeviceMatrix::Segment& seg : w.segments) {
    quant_dequantize_bf16(seg.view, scratch + seg.first_row * w.cols, stream);
  }
  linear_bf16(s.cublas_.get(), x, scratch, y, n, w.cols, w.rows, beta);
}

bool CudaTransformer::prequantised_one_row(const CudaSessionState& s, const DeviceMatrix& w) const {
  return s.quant_x() != nullptr && w.quantized() && w.cols <= dims_.quant_x_elements;
}

void CudaTransformer::quant_linear_prequantised(CudaSessionState& s, const DeviceMatrix& w,
                                                float* y, float beta) const {
  // One quantisation of x serves every segment (q/k/v in two formats, say).
  for (const DeviceMatrix::Segment& seg : w.segments) {
    quant_gemv_prequantized(seg.view, s.quant_x(), y + seg.first_row, beta, s.stream_.get());
  }
}

void CudaTransformer::quant_linear_one_row(CudaSessionState& s, const DeviceMatrix& w,
                                           const bf16* x, float* y, float beta) const {
  const cudaStream_t stream = s.stream_.get();
  if (prequantised_one_row(s, w) && w.cols >= kQuantizeKernelMinK) {
    quantize_x_int8(x, w.cols, s.quant_x(), stream);
    return quant_linear_prequantised(s, w, y, beta);
  }
  for (const DeviceMatrix::Segment& seg : w.segments) {
    quant_gemv(seg.view, x, y + seg.first_row, beta, quant_dot_, stream);
  }
}

void CudaTransformer::project_into_residual(CudaSessionState& s, const DeviceMatrix& w,
                                            const bf16* x, float* y, int64_t n) const {
  if (!collective_) {
    linear(s, w, x, y, n, 1.0f);
    return;
  }
  // Summing the ranks' products and then adding the residual once keeps x identical on every
  // rank (each rank adding into its own x would count the residual world_size times).
  float* partial = ptr<float>(s.partial_);
  const int64_t count = n * dims_.hidden;
  linear(s, w, x, partial, n, 0.0f);
  collective_->all_reduce_sum(partial, static_cast<size_t>(count), s.stream_.get());
  add_f32(s.cublas_.get(), partial, y, count);
}

void CudaTransformer::enqueue_layers(CudaSessionState& state, int64_t n, int32_t start_pos,
                                     const std::atomic<bool>* cancel) const {
  if (dims_.f32) return enqueue_layers_f32(state, n, start_pos, cancel);
  CudaSessionState* s = &state;
  const ModelDims& d = dims_;
  const cudaStream_t stream = s->stream_.get();
  const QkvShape shape{static_cast<int32_t>(d.n_heads), static_cast<int32_t>(d.n_kv_heads),
                       static_cast<int32_t>(d.head_dim), static_cast<int32_t>(d.rot_dim)};
  float* x = ptr<float>(s->x_);
  bf16* normed = ptr<bf16>(s->normed_);

  KILN_CUDA_CHECK(cudaMemcpyAsync(s->ids_.get(), s->ids_host_.as<int32_t>(),
                                  static_cast<size_t>(n + 1) * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream));
  if (embed_.quantized()) {
    quant_embedding_gather(s->token_ids(), embed_.segments[0].view, x, n, stream);
  } else {
    embedding_gather(s->token_ids(), embed_.bf16_ptr(), x, n, d.hidden, stream);
  }

  for (int32_t li = 0; li < d.n_layers; ++li) {
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
      s->stream_.synchronize();
      fail(KILN_ERR_CANCELLED, "forward pass cancelled");
    }
    const Layer& L = layers_[li];
    bf16* k_cache = s->k_cache(li);
    bf16* v_cache = s->v_cache(li);

    // One token: each norm is fused into the product after it (fewer launches in the decode step)
    // while the hidden size is small. Every block of a fused kernel normalises x itself, which for
    // wide models costs more than the launch it saves (H100, 7B shape, hidden 3584: the fused
    // norm + gate/up GEMV ran at 1.8 TB/s, 150 µs, the plain GEMV over the same matrix at 3.0).
    const bool fuse_norms =
        n == 1 && rms_norm_gemv_supported(d.hidden) && d.hidden < kFusedNormMaxHidden;
    const bool fuse_qkv_norm = fuse_norms && fused_norms_ != FusedNorms::kNone;
    const bool fuse_ffn_norm = fuse_norms && fused_norms_ == FusedNorms::kAll;
    if (fuse_qkv_norm && L.wqkv.quantized()) {
      for (const DeviceMatrix::Segment& seg : L.wqkv.segments) {
        rms_norm_quant_gemv(x, ptr<float>(L.attn_norm), eps_, seg.view,
                            ptr<float>(s->qkv_) + seg.first_row, 0.0f, quant_dot_, stream);
      }
    } else if (fuse_qkv_norm) {
      rms_norm_gemv_bf16(x, ptr<float>(L.attn_norm), eps_, L.wqkv.bf16_ptr(), ptr<float>(s->qkv_),
                         d.hidden, d.qkv_dim(), 0.0f, stream);
    } else if (n == 1 && prequantised_one_row(*s, L.wqkv)) {
      // The norm's kernel quantises its output for the product (one launch fewer).
      rms_norm_quantize_x(x, ptr<float>(L.attn_norm), normed, s->quant_x(), d.hidden, eps_, stream);
      quant_linear_prequantised(*s, L.wqkv, ptr<float>(s->qkv_), 0.0f);
    } else {
      rms_norm(x, nullptr, ptr<float>(L.attn_norm), normed, n, d.hidden, eps_, stream);
      linear(*s, L.wqkv, normed, ptr<float>(s->qkv_), n, 0.0f);
    }
    // A quantised o_proj takes its int8 x from the attention kernel (no quantisation of its own).
    const bool wo_prequantised = n == 1 && attention_quantizes_output_ && !collective_ &&
                                 d.head_dim % 32 == 0 && prequantised_one_row(*s, L.wo);
    if (n == 1) {
      attention_decode_fused(ptr<float>(s->qkv_), ptr<float>(L.bqkv), ptr<float>(L.q_norm),
                             ptr<float>(L.k_norm), eps_, ptr<float>(inv_freq_), s->position(),
                             s->context_length(), shape, k_cache, v_cache, ptr<bf16>(s->attn_),
                             ptr<float>(s->decode_partials_), s->decode_counters_.as<unsigned>(),
                             wo_prequantised ? s->quant_x() : nullptr, stream);
    } else {
      qkv_rope(ptr<float>(s->qkv_), ptr<float>(L.bqkv), ptr<float>(L.q_norm), ptr<float>(L.k_norm),
               eps_, ptr<float>(inv_freq_), s->position(), n, shape, ptr<float>(s->q_), k_cache,
               v_cache, stream);
      attention_prefill(ptr<float>(s->q_), k_cache, v_cache, ptr<bf16>(s->attn_), n, start_pos,
                        shape.n_heads, shape.n_kv_heads, shape.head_dim, stream);
    }
    // The residual adds happen in the products' epilogues (beta = 1 accumulates into x).
    if (wo_prequantised) {
      quant_linear_prequantised(*s, L.wo, x, 1.0f);
    } else {
      project_into_residual(*s, L.wo, ptr<bf16>(s->attn_), x, n);
    }
    if (L.bo) bias_add(x, ptr<float>(L.bo), n, d.hidden, stream);

    // Gate and up in one quantised segment fuse with the SwiGLU; in two formats they do not.
    const bool quant_swiglu = L.w_gate_up.segments.size() == 1;
    bool act_quantised = false;  // the SwiGLU output is in s->quant_x() for down_proj
    if (fuse_ffn_norm && (!L.w_gate_up.quantized() || quant_swiglu)) {
      if (quant_swiglu) {
        rms_norm_quant_gemv_swiglu(x, ptr<float>(L.ffn_norm), eps_, L.w_gate_up.segments[0].view,
                                   ptr<bf16>(s->act_), quant_dot_, stream);
      } else {
        rms_norm_gemv_swiglu_bf16(x, ptr<float>(L.ffn_norm), eps_, L.w_gate_up.bf16_ptr(),
                                  ptr<bf16>(s->act_), d.hidden, d.intermediate, stream);
      }
    } else if (n == 1 && !L.w_gate_up.quantized() &&
               gemv_swiglu_supported(normed, L.w_gate_up.bf16_ptr(), d.hidden)) {
      // Wide models' decode: the norm on its own, the SwiGLU in the split GEMV's epilogue.
      rms_norm(x, nullptr, ptr<float>(L.ffn_norm), normed, n, d.hidden, eps_, stream);
      gemv_swiglu_bf16(normed, L.w_gate_up.bf16_ptr(), ptr<bf16>(s->act_), d.hidden, d.intermediate,
                       stream);
    } else if (n == 1 && prequantised_one_row(*s, L.w_gate_up)) {
      // The norm and the SwiGLU kernels quantise their outputs for the products after them.
      rms_norm_quantize_x(x, ptr<float>(L.ffn_norm), normed, s->quant_x(), d.hidden, eps_, stream);
      quant_linear_prequantised(*s, L.w_gate_up, ptr<float>(s->gate_up_), 0.0f);
      act_quantised = prequantised_one_row(*s, L.w_down);
      if (act_quantised) {
        swiglu_quantize_x(ptr<float>(s->gate_up_), ptr<bf16>(s->act_), s->quant_x(), d.intermediate,
                          stream);
      } else {
        swiglu(ptr<float>(s->gate_up_), ptr<bf16>(s->act_), n, d.intermediate, stream);
      }
    } else {
      rms_norm(x, nullptr, ptr<float>(L.ffn_norm), normed, n, d.hidden, eps_, stream);
      linear(*s, L.w_gate_up, normed, ptr<float>(s->gate_up_), n, 0.0f);
      swiglu(ptr<float>(s->gate_up_), ptr<bf16>(s->act_), n, d.intermediate, stream);
    }
    if (act_quantised && !collective_) {
      quant_linear_prequantised(*s, L.w_down, x, 1.0f);
    } else {
      project_into_residual(*s, L.w_down, ptr<bf16>(s->act_), x, n);
    }
  }
  if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
    s->stream_.synchronize();
    fail(KILN_ERR_CANCELLED, "forward pass cancelled");
  }
}

}  // namespace kiln::cuda
