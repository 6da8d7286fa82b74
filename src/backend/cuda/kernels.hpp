// Host-side entry points of the CUDA kernels in kernels/*.cu (one file per family). Each enqueues
// its work on `stream` and checks the launch (KILN_ERR_BACKEND on failure); none synchronises.
// Layouts are row-major. Activations are float32; inputs of matrix products are BF16 (the
// producers write them in BF16 directly, so no separate conversion pass exists); weights are BF16,
// norm weights and biases float32. The F32 checking precision (KILN_PRECISION_F32) has float32
// overloads / _f32 entries where a BF16 buffer would be read or written. Shapes are validated by
// the caller (CudaTransformer).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kiln::cuda {

using bf16 = __nv_bfloat16;

// kernels/embedding.cu — out[t, :] = float(table[ids[t], :]); ids already validated in [0, vocab).
void embedding_gather(const int32_t* ids, const bf16* table, float* out, int64_t n_tokens,
                      int64_t dim, cudaStream_t stream);
// The F32 precision's form: a float32 table.
void embedding_gather(const int32_t* ids, const float* table, float* out, int64_t n_tokens,
                      int64_t dim, cudaStream_t stream);

// kernels/rms_norm.cu — HF LlamaRMSNorm per row of `dim`: out = weight * (x / sqrt(mean(x²) +
// eps)), written as BF16 (it feeds a matrix product). When `residual` is not null, x += residual
// first and the sum is written back to x (the fused residual-add variant).
void rms_norm(float* x, const float* residual, const float* weight, bf16* out, int64_t rows,
              int64_t dim, float eps, cudaStream_t stream);
// The F32 precision's form: the normalised rows written as float32.
void rms_norm(float* x, const float* residual, const float* weight, float* out, int64_t rows,
              int64_t dim, float eps, cudaStream_t stream);

// The one-row form (bf16 out) that also writes `out` quantised to int8 into xq, as
// quantize_x_int8(out, dim, xq) would (the decode step's input of the prequantised product).
void rms_norm_quantize_x(float* x, const float* weight, bf16* out, void* xq, int64_t dim, float eps,
                         cudaStream_t stream);

// kernels/bias_add.cu — x[r, c] += bias[c] for rows × cols.
void bias_add(float* x, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream);

// kernels/swiglu.cu — gate_up is [rows × 2·dim] (gate in the first dim columns, up in the second,
// the fused gate/up projection's output); out[r, i] = silu(gate) · up as BF16.
void swiglu(const float* gate_up, bf16* out, int64_t rows, int64_t dim, cudaStream_t stream);
void swiglu(const float* gate_up, float* out, int64_t rows, int64_t dim, cudaStream_t stream);
// One row, BF16 out, also quantised into xq as quantize_x_int8(out, dim, xq) would.
void swiglu_quantize_x(const float* gate_up, bf16* out, void* xq, int64_t dim, cudaStream_t stream);

// kernels/qkv_rope.cu — the step between the fused q/k/v projection and attention. qkv is
// [n_tokens × (q_dim + 2·kv_dim)] (q heads, then k heads, then v heads; q_dim = n_heads·head_dim,
// kv_dim = n_kv_heads·head_dim); token t sits at position *start_pos + t. start_pos is read from
// device memory so that a captured decode step (CUDA graph) replays at any position. Per head
// vector, in this order: + bias (nullable; [q_dim + 2·kv_dim]), per-head RMSNorm for q and k heads
// (q_norm / k_norm nullable, [head_dim], Qwen3), RoPE in the rotate_half layout on the first
// rot_dim elements of q and k heads (angle = position · inv_freq[i], float32 product as HF). Writes
// q to q_out [n_tokens × q_dim] (float32) and k, v as BF16 into the caches' rows start_pos + t
// ([ctx × kv_dim]).
struct QkvShape {
  int32_t n_heads, n_kv_heads, head_dim, rot_dim;
};
void qkv_rope(const float* qkv, const float* bias, const float* q_norm, const float* k_norm,
              float eps, const float* inv_freq, const int32_t* start_pos, int64_t n_tokens,
              QkvShape shape, float* q_out, bf16* k_cache, bf16* v_cache, cudaStream_t stream);
// The F32 precision's form: k and v stored unrounded into float32 caches.
void qkv_rope(const float* qkv, const float* bias, const float* q_norm, const float* k_norm,
              float eps, const float* inv_freq, const int32_t* start_pos, int64_t n_tokens,
              QkvShape shape, float* q_out, float* k_cache, float* v_cache, cudaStream_t stream);

// kernels/gemv.cu — y[n] = W[n × k] · x[k] + beta · y (W row-major BF16, x BF16, y float32; y is
// not read when beta = 0): the one-token case of linear_bf16 (gemm.hpp), which dispatches to it.
void gemv_bf16(const bf16* x, const bf16* w, float* y, int64_t k, int64_t n, float beta,
               cudaStream_t stream);

// kernels/gemv.cu — the one-token fused gate/up product with its SwiGLU: out[i] = bf16(silu(g_i) ·
// u_i) where g = W[0:inter] · x and u = W[inter:2·inter] · x; for k ≥ 2048 bit-identical to
// gemv_bf16 over the 2·inter rows followed by swiglu() (shorter rows: the same sums in another
// order). Rows split over warps: needs gemv_swiglu_supported (k ≥ 256, k % 8 == 0, 16-byte
// aligned x and W); the decode step uses it where the norm is not fused into the product.
bool gemv_swiglu_supported(const bf16* x, const bf16* w_gate_up, int64_t k);
void gemv_swiglu_bf16(const bf16* x, const bf16* w_gate_up, bf16* out, int64_t k, int64_t inter,
                      cudaStream_t stream);

// kernels/gemv.cu — the decode step's RMSNorm fused into the one-row product after it: y[n] =
// W[n × k] · bf16(norm_w ⊙ x / rms(x)) + beta · y, with x float32 [k] and the normalised vector
// rounded exactly as rms_norm() rounds it. The swiglu form takes the fused gate/up matrix
// [2·inter × k] and writes out[i] = bf16(silu(gate_i) · up_i) for i < inter. Both need
// rms_norm_gemv_supported(k) (the normalised x is staged in 48 KB of shared memory).
bool rms_norm_gemv_supported(int64_t k);
void rms_norm_gemv_bf16(const float* x, const float* norm_w, float eps, const bf16* w, float* y,
                        int64_t k, int64_t n, float beta, cudaStream_t stream);
void rms_norm_gemv_swiglu_bf16(const float* x, const float* norm_w, float eps,
                               const bf16* w_gate_up, bf16* out, int64_t k, int64_t inter,
                               cudaStream_t stream);

// kernels/quant_gemv.cu — weights kept in a GGUF block format on the device. The ids are ggml's
// (enum ggml_type); a row of k elements is k / block elements consecutive blocks, exactly as a GGUF
// file stores it, and rows follow one another.
enum class QuantFormat : int {
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
};
int64_t quant_block_elements(QuantFormat f);  // 32, or 256 for the K-quants
size_t quant_block_bytes(QuantFormat f);
size_t quant_row_bytes(QuantFormat f, int64_t k);

// rows × k weights, row_bytes = quant_row_bytes(format, k), at a device address aligned to 16
// bytes for Q4_K / Q5_K and to 2 for the others (any row of a matrix allocated whole qualifies).
struct QuantMatrixView {
  const uint8_t* data;
  QuantFormat format;
  int64_t rows, k;
  size_t row_bytes;
};

// How the one-row products below dot a weight row with x:
//  - kFloat: every weight dequantised in registers to its exact float value (as the CPU
//    dequantiser computes it) and multiplied with the BF16 x in float32; ~7 ALU operations per
//    weight. The reference, and the path of formats without an integer one.
//  - kInt8: x quantised per 32-element block to int8 (scale max|x| / 127, round to nearest), the
//    weights' integers dotted with it by __dp4a and the block scales applied per chunk (llama.cpp
//    MMVQ's approximation): x carries a relative error of up to 1/254 of its block's largest value
//    per element; the weights stay exact. Every format, when quant_dot_int8_supported(format, k)
//    (x of k elements fits the blocks' shared memory); otherwise kInt8 takes kFloat.
//    kernels/quant_dot_int8.cuh has the arithmetic.
enum class QuantDot { kFloat, kInt8 };
bool quant_dot_int8_supported(QuantFormat f, int64_t k);

// y[rows] = W · x + beta · y, x BF16 [k] (16-byte aligned), y float32 (unread when beta = 0).
void quant_gemv(const QuantMatrixView& w, const bf16* x, float* y, float beta, QuantDot dot,
                cudaStream_t stream);
// The same after the decode step's RMSNorm, as rms_norm_gemv_bf16 (x float32 [k]); the swiglu form
// takes the fused gate/up matrix (2·inter rows, gate first) and writes out[i] = bf16(silu(gate_i) ·
// up_i). Both need rms_norm_gemv_supported(k). Each equals rms_norm() followed by quant_gemv()
// with the same `dot`, bit for bit.
void rms_norm_quant_gemv(const float* x, const float* norm_w, float eps, const QuantMatrixView& w,
                         float* y, float beta, QuantDot dot, cudaStream_t stream);
void rms_norm_quant_gemv_swiglu(const float* x, const float* norm_w, float eps,
                                const QuantMatrixView& w_gate_up, bf16* out, QuantDot dot,
                                cudaStream_t stream);

// kernels/quant_gemv_prequant.cu — the decode step's kInt8 product in two kernels: x quantised
// once into a device buffer (quantized_x_bytes(k) bytes, 16-byte aligned; the same int8 values,
// scales and sums as the per-block kInt8 path computes), then dotted with the weights by a kernel
// that reads it from global memory. The result is the same exact product with the int8 x as
// quant_gemv(..., QuantDot::kInt8, ...) up to float rounding order, for any k of whole blocks (no
// shared-memory limit). Layout: warps_per_row (S: 1, 2, 4 or 8) warps share a group of
// rows_per_group (R: 1, 2, or 4 with shared_x) rows, walking its chunks as one sequence, or with
// shared_x each chunk of x loaded once and dotted with all R rows; prefetch_lines 128-byte lines
// of the group's weights per thread are asked into L2 first (0 to 64). quant_gemv_layout is the
// table the decode step uses (per shape; the format is there for measurements to use).
struct QuantGemvLayout {
  int warps_per_row, rows_per_group, prefetch_lines;
  bool shared_x;
  // Q4_K only (ignored for other formats): a thread takes two 32-element chunks that share their
  // quant bytes per step (quant_dot_int8.cuh, pair_dot_q4k) — half the weight-side loads.
  bool wide_chunks = false;
};
size_t quantized_x_bytes(int64_t k);
void quantize_x_int8(const bf16* x, int64_t k, void* xq, cudaStream_t stream);
QuantGemvLayout quant_gemv_layout(QuantFormat format, int64_t rows, int64_t k);
void quant_gemv_prequantized(const QuantMatrixView& w, const void* xq, float* y, float beta,
                             cudaStream_t stream);
void quant_gemv_prequantized(const QuantMatrixView& w, const void* xq, float* y, float beta,
                             QuantGemvLayout layout, cudaStream_t stream);

// out[t, :] = float(table[ids[t], :]) for the n_tokens ids (validated in [0, rows)); the
// quantised form of embedding_gather.
void quant_embedding_gather(const int32_t* ids, const QuantMatrixView& table, float* out,
                            int64_t n_tokens, cudaStream_t stream);
// out[rows × k] = the matrix as BF16 (each value the exact dequantised float rounded to nearest
// even), for the prefill's cuBLAS product.
void quant_dequantize_bf16(const QuantMatrixView& w, bf16* out, cudaStream_t stream);

// Largest head_dim the attention kernels take (register tiles of head_dim / 32 per lane).
constexpr int kMaxAttentionHeadDim = 256;

// kernels/attention_prefill*.cu — causal grouped-query attention for n_tokens queries at positions
// start_pos .. start_pos + n_tokens - 1 over cache rows 0 .. start_pos + n_tokens - 1, flash style:
// keys in tiles through shared memory with an online softmax, nothing of size tokens × keys kept.
// q: [n_tokens × n_heads × head_dim] float32; caches [ctx × n_kv_heads × head_dim] BF16; query head
// h reads kv head h / (n_heads / n_kv_heads); scale 1/sqrt(head_dim). out: [n_tokens × n_heads ×
// head_dim] BF16. head_dim must be a multiple of 8 and at most kMaxAttentionHeadDim.
void attention_prefill(const float* q, const bf16* k_cache, const bf16* v_cache, bf16* out,
                       int64_t n_tokens, int64_t start_pos, int32_t n_heads, int32_t n_kv_heads,
                       int32_t head_dim, cudaStream_t stream);

// The two implementations attention_prefill dispatches to, callable directly for tests and
// benchmarks. kernels/attention_prefill_mma.cu: BF16 tensor cores with float32 accumulation,
// used whenever attention_prefill_mma_supported: head_dim a multiple of 8 up to
// kMaxMmaPrefillHeadDim, q / k / v 16-byte aligned, out 4-byte aligned, a GPU of compute
// capability 8.0 or later. precision kBf16: q (after the 1/sqrt(head_dim) scaling) and P are
// rounded to BF16 as the products' inputs, as FlashAttention-2 does (output error about twice the
// CUDA-core kernel's); kBf16x2 (attention_prefill's choice): each is carried as two BF16 terms,
// twice the tensor-core work, as accurate as float32. warps_per_block: 1, 2 or 4 (16 query rows
// each), or 0 to choose from the grid size and the SM count.
// kernels/attention_prefill.cu: float32 CUDA cores, any head_dim attention_prefill takes.
constexpr int kMaxMmaPrefillHeadDim = 128;
enum class MmaPrecision { kBf16, kBf16x2 };
bool attention_prefill_mma_supported(const float* q, const bf16* k_cache, const bf16* v_cache,
                                     bf16* out, int32_t head_dim);
void attention_prefill_mma(const float* q, const bf16* k_cache, const bf16* v_cache, bf16* out,
                           int64_t n_tokens, int64_t start_pos, int32_t n_heads, int32_t n_kv_heads,
                           int32_t head_dim, MmaPrecision precision, int warps_per_block,
                           cudaStream_t stream);
void attention_prefill_cuda_cores(const float* q, const bf16* k_cache, const bf16* v_cache,
                                  bf16* out, int64_t n_tokens, int64_t start_pos, int32_t n_heads,
                                  int32_t n_kv_heads, int32_t head_dim, cudaStream_t stream);
// kernels/attention_prefill.cu — the same for the F32 precision: float32 caches and output (the
// CUDA-core kernel above instantiated for float).
void attention_prefill_f32(const float* q, const float* k_cache, const float* v_cache, float* out,
                           int64_t n_tokens, int64_t start_pos, int32_t n_heads, int32_t n_kv_heads,
                           int32_t head_dim, cudaStream_t stream);

// kernels/attention_decode.cu — the same for one query at position *position (device memory, so a
// captured CUDA graph replays at any position) over cache rows 0 .. *position, the keys split into
// chunks of kDecodeSplitKeys processed by separate blocks (so a long context fills the GPU) whose
// partial softmax states are merged by a second kernel. The grid is sized for `max_keys` (the
// session's context); blocks past the keys in use return at once. `partials` must hold
// decode_partials_floats(n_heads, head_dim, max_keys) floats.
constexpr int kDecodeSplitKeys = 256;
int64_t decode_partials_floats(int32_t n_heads, int32_t head_dim, int64_t max_keys);
void attention_decode(const float* q, const bf16* k_cache, const bf16* v_cache, bf16* out,
                      const int32_t* position, int64_t max_keys, int32_t n_heads,
                      int32_t n_kv_heads, int32_t head_dim, float* partials, cudaStream_t stream);
// The F32 precision's form (the same kernels instantiated for float32 caches and output).
void attention_decode_f32(const float* q, const float* k_cache, const float* v_cache, float* out,
                          const int32_t* position, int64_t max_keys, int32_t n_heads,
                          int32_t n_kv_heads, int32_t head_dim, float* partials,
                          cudaStream_t stream);

// kernels/attention_decode_fused.cu — qkv_rope followed by attention_decode for the one token at
// *position, in one kernel (the decode step's path for a BF16 cache): qkv is the fused projection's
// float32 output [q_dim + 2·kv_dim] before bias, the new key and value go into the caches' row
// *position, out as attention_decode. `partials` as attention_decode's; `counters` holds n_heads
// unsigned ints that are zero before the call and zero again after it. `out_q` (optional, head_dim
// a multiple of 32): out also quantised there, exactly as quantize_x_int8(out, n_heads·head_dim)
// would, for a quantised o_proj through quant_gemv_prequantized.
void attention_decode_fused(const float* qkv, const float* bias, const float* q_norm,
                            const float* k_norm, float eps, const float* inv_freq,
                            const int32_t* position, int64_t max_keys, QkvShape shape,
                            bf16* k_cache, bf16* v_cache, bf16* out, float* partials,
                            unsigned* counters, void* out_q, cudaStream_t stream);

// kernels/sampling.cu — drawing the next token from one row of n float32 logits on the device
// with the host sampler's semantics (src/session/sampler.cpp): the same ids for the same logits,
// options and uniform draw u. Deterministic (fixed reduction orders); `out` is device memory.
//
// logits[ids[i]] gets the CTRL repetition penalty, then - presence - frequency · counts[i]
// (ids distinct and in [0, vocab)), with the host's float operations.
struct PenaltyParams {
  float repetition, presence, frequency;
};
void apply_penalties(float* logits, const int32_t* ids, const int32_t* counts, int32_t n,
                     PenaltyParams params, cudaStream_t stream);
// Greedy: the lowest id among the largest non-NaN logits; the last id when every one is NaN (what
// the host's loop returns then).
void argmax_lowest_id(const float* logits, int32_t n, int32_t* out, cudaStream_t stream);
// temperature > 0: logits / temperature ranked (higher first, lower id on ties, NaN dropped), then
// top-k (<= 0 off) → softmax in double → min-p (<= 0 off) → top-p (>= 1 off) → renormalise →
// the first candidate whose cumulative probability exceeds u (the last kept when none does).
// Writes -1 when every logit is NaN. The workspace holds four arrays of n elements and
// sampling_workspace_bytes(n) bytes of sort storage.
struct SampleFilter {
  int32_t top_k;
  float top_p, min_p;
};
struct SamplingWorkspace {
  uint32_t *keys, *sorted_keys;
  int32_t *ids, *sorted_ids;
  void* temp;
  size_t temp_bytes;
};
size_t sampling_workspace_bytes(int32_t n);
void sample_filtered(const float* logits, int32_t n, float temperature, SampleFilter filter,
                     double u, SamplingWorkspace ws, int32_t* out, cudaStream_t stream);

}  // namespace kiln::cuda
