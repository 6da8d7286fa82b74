// Host-side entry points of the CUDA training kernels (kernels/train_*.cu, one file per family).
// The contract between the kernels and the CUDA trainer (src/backend/cuda/train/) — see
// docs/training-design.md, "CUDA".
//
// Precision recipe (the one torch.autocast(bfloat16) gives a nanoGPT-style model, which is what
// the PyTorch peer runs): float32 master weights, gradients and optimizer moments; BF16 copies of
// the weights feed the matrix products; the residual stream and its gradient are float32; every
// tensor that is an INPUT of a matrix product (norm outputs, q/k/v, attention probabilities,
// activations, and their gradients) is BF16; matrix products accumulate in float32.
//
// Rules for every function here:
//  - enqueues on `stream`, never synchronises, checks its launch (KILN_ERR_BACKEND on failure);
//  - row-major layouts; `rows` × `dim` unless stated; shapes are validated by the caller;
//  - DETERMINISTIC: the same inputs give bit-identical outputs on the same GPU (no float atomics
//    whose order varies; reductions in a fixed order), so a resumed run equals an uninterrupted
//    one;
//  - "+=" outputs accumulate into what is there (gradient accumulation over micro-batches and
//    over the uses of a tied tensor), "=" outputs overwrite.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kiln::cuda::train {

using bf16 = __nv_bfloat16;

// ---- kernels/train_embedding.cu -----------------------------------------------------------------
// out[n, :] = tok[ids[n], :] + (pos ? pos[n % seq, :] : 0) as float32 (n < n_tokens; ids were
// validated in [0, vocab) by the caller). tok/pos are the BF16 compute copies.
void embedding_forward(const int32_t* ids, const bf16* tok, const bf16* pos, float* out,
                       int64_t n_tokens, int64_t seq, int64_t dim, cudaStream_t stream);

// grad_tok[ids[n], :] += d_out[n, :] for every n whose id != padding_idx (padding_idx < 0: none),
// grad_pos[n % seq, :] += d_out[n, :] when grad_pos is not null. Deterministic (tokens with the
// same id summed in order of n, e.g. after a stable sort by id); `workspace` holds
// embedding_backward_workspace_bytes(n_tokens) bytes.
size_t embedding_backward_workspace_bytes(int64_t n_tokens);
void embedding_backward(const int32_t* ids, const float* d_out, float* grad_tok, float* grad_pos,
                        int64_t n_tokens, int64_t seq, int64_t dim, int32_t padding_idx,
                        void* workspace, cudaStream_t stream);

// ---- kernels/train_norm.cu ----------------------------------------------------------------------
enum class NormType { LayerNorm, RmsNorm };

// Per row: LayerNorm  y = (x - mean) · rstd · w + b,  rstd = 1/sqrt(var + eps) (biased variance);
//          RmsNorm    y = x · rstd · w,              rstd = 1/sqrt(mean(x²) + eps).
// w null = parameter-free (w = 1); b null = no bias. Writes y as BF16 (and as float32 into y_f32
// when not null), mean (LayerNorm only; may be null for RmsNorm) and rstd [rows] for backward.
void norm_forward(NormType type, const float* x, const float* w, const float* b, float eps, bf16* y,
                  float* y_f32, float* mean, float* rstd, int64_t rows, int64_t dim,
                  cudaStream_t stream);

// Backward of norm_forward given dy (float32). dx: "+=" when accumulate, else "=" (float32);
// dx_bf16 (nullable) = bf16 of the final dx (the next matrix product's input); dw / db (nullable)
// "+=" Σ over rows. `workspace` holds norm_backward_workspace_floats(rows, dim) floats (per-block
// partial sums for dw / db, reduced in a fixed order).
size_t norm_backward_workspace_floats(int64_t rows, int64_t dim);
void norm_backward(NormType type, const float* dy, const float* x, const float* w,
                   const float* mean, const float* rstd, float* dx, bool accumulate, bf16* dx_bf16,
                   float* dw, float* db, int64_t rows, int64_t dim, float* workspace,
                   cudaStream_t stream);

// ---- kernels/train_activation.cu ----------------------------------------------------------------
enum class Activation {
  GeluTanh,     // h [rows × inter]; a = 0.5 h (1 + tanh(√(2/π)(h + 0.044715 h³)))
  ReluSquared,  // h [rows × inter]; a = max(h, 0)²
  SwiGlu,       // h [rows × 2·inter], gate in columns [0, inter), up in [inter, 2·inter);
                // a = silu(gate) · up
};
// a [rows × inter] BF16 from h (BF16, the up-projection's output).
void activation_forward(Activation act, const bf16* h, bf16* a, int64_t rows, int64_t inter,
                        cudaStream_t stream);
// dh (BF16, same shape as h) from da (float32 [rows × inter], the down projection's dX) and h.
void activation_backward(Activation act, const bf16* h, const float* da, bf16* dh, int64_t rows,
                         int64_t inter, cudaStream_t stream);

// ---- kernels/train_qkv.cu -----------------------------------------------------------------------
// Between the fused q/k/v projection and attention. qkv: BF16 [batch·seq × (q_dim + 2·kv_dim)]
// (per token: n_heads q vectors, n_kv_heads k vectors, n_kv_heads v vectors, each head_dim), the
// projection's output without bias. Per head vector, in order: + bias (nullable, float32
// [q_dim + 2·kv_dim]); then, for q and k only, RoPE and RMSNorm in the order `order` says
// (norm skipped when !qk_norm; its weight nullable = parameter-free; eps) — RoPE rotates the first
// rot_dim elements at position t = token index within its row of `seq`, angle t · inv_freq[i]
// (inv_freq: device float32 [rot_dim / 2]), in the rotate_half layout (pairs (i, i + rot_dim/2));
// `rope_reversed` rotates by -angle (NanoChat, see src/train/ops/rope.hpp). v is copied.
// Outputs in attention layout, BF16: q [batch × n_heads × seq × head_dim], k and v
// [batch × n_kv_heads × seq × head_dim]; q_rstd [batch·seq·n_heads] and k_rstd
// [batch·seq·n_kv_heads] (the norm's rstd, for backward; unused when !qk_norm).
struct QkvShape {
  int32_t batch, seq, n_heads, n_kv_heads, head_dim, rot_dim;
};
enum class QkOrder { NormThenRope, RopeThenNorm };  // Qwen3: NormThenRope; NanoChat: RopeThenNorm
struct QkNorm {
  bool enabled = false;
  QkOrder order = QkOrder::NormThenRope;
  const float* q_weight = nullptr;  // [head_dim] or null (parameter-free)
  const float* k_weight = nullptr;
  float eps = 1e-6f;
};
void qkv_forward(const bf16* qkv, const float* bias, QkvShape shape, const QkNorm& norm,
                 const float* inv_freq, bool rope_reversed, bf16* q, bf16* k, bf16* v,
                 float* q_rstd, float* k_rstd, cudaStream_t stream);

// Backward: from dq, dk, dv (float32, attention layout as the outputs above) to dqkv (BF16, the
// projection's output layout: the next matrix products' input), recomputing what it needs from
// qkv + bias. dq_weight / dk_weight (nullable) "+=" the q/k norm weight gradients; dbias
// (nullable) "+=" Σ over tokens of dqkv (float32, from the unrounded values). `workspace` holds
// qkv_backward_workspace_floats(shape) floats.
size_t qkv_backward_workspace_floats(QkvShape shape);
void qkv_backward(const float* dq, const float* dk, const float* dv, const bf16* qkv,
                  const float* bias, QkvShape shape, const QkNorm& norm, const float* inv_freq,
                  bool rope_reversed, const float* q_rstd, const float* k_rstd, bf16* dqkv,
                  float* dq_weight, float* dk_weight, float* dbias, float* workspace,
                  cudaStream_t stream);

// ---- kernels/train_attention.cu -----------------------------------------------------------------
// Causal attention core, flash style (no seq × seq matrix in memory): for each batch b and query
// head h (kv head h / (n_heads / n_kv_heads)), o = softmax(q kᵀ · scale, causal) v. Inputs in the
// attention layout above (BF16); o BF16 [batch × seq × n_heads × head_dim] — token-major, i.e.
// directly the o-projection's input [batch·seq × q_dim]; lse float32 [batch × n_heads × seq] (the
// row log-sum-exp of the scaled scores, kept for backward). head_dim ≤ 256, a multiple of 8.
// Tensor cores (BF16 mma, float32 accumulation) in the FlashAttention-2 scheme: attention is
// ~13 % of GPT-2 124M's training FLOPs, too much to leave on the CUDA cores.
void attention_forward(const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse,
                       QkvShape shape, float scale, cudaStream_t stream);
// Tuning variants of attention_forward for head_dim <= 64 (key tile, warps and 16-row tiles per
// warp, register budget, Q held in registers); variant 0 is what attention_forward runs. Variants
// with production's key tile give the same bits; another key tile rescales the online softmax at
// other points (float rounding). For the benchmark that picks the production shape.
int attention_forward_variants();
void attention_forward_variant(int variant, const bf16* q, const bf16* k, const bf16* v, bf16* o,
                               float* lse, QkvShape shape, float scale, cudaStream_t stream);
// Backward: do (BF16, o's layout) → dq, dk, dv (float32, attention layout; "="). Deterministic
// (dk/dv of a kv head summed over its query heads and query tiles in a fixed order).
// `workspace` holds attention_backward_workspace_floats(shape) floats.
size_t attention_backward_workspace_floats(QkvShape shape);
void attention_backward(const bf16* q, const bf16* k, const bf16* v, const bf16* o,
                        const float* lse, const bf16* d_o, float* dq, float* dk, float* dv,
                        QkvShape shape, float scale, float* workspace, cudaStream_t stream);
// Tuning variants of attention_backward for head_dim <= 64, for the benchmark that picks the
// production shapes: the dK/dV kernel of variant dkdv_variant and the dQ kernel of variant
// dq_variant (-1: that kernel not run; the dQ kernel also writes the delta row terms in
// `workspace` that the dK/dV kernel reads, so it runs first); variant 0 is production. Block
// shapes change the order of no sum, so every variant gives the same bits.
int attention_backward_variants();
void attention_backward_variant(int dkdv_variant, int dq_variant, const bf16* q, const bf16* k,
                                const bf16* v, const bf16* o, const float* lse, const bf16* d_o,
                                float* dq, float* dk, float* dv, QkvShape shape, float scale,
                                float* workspace, cudaStream_t stream);

// ---- kernels/train_cross_entropy.cu -------------------------------------------------------------
// Per row n of logits (BF16 [rows × vocab], the unembedding's output): z = softcap > 0 ?
// softcap · tanh(x / softcap) : x; lse = log Σ exp z. When targets[n] >= 0: row_loss[n] =
// lse - z[targets[n]] (float32, unweighted), else row_loss[n] = 0. When write_grad, the row is
// overwritten IN PLACE by its gradient (BF16): scale[n] · (softmax(z) - onehot(target)) · dz/dx;
// scale[n] = w_n / N_h (0 for rows not counted, whose gradient is then 0).
void cross_entropy(bf16* logits, const int32_t* targets, const float* scale, float softcap,
                   float* row_loss, int64_t rows, int64_t vocab, bool write_grad,
                   cudaStream_t stream);

// ---- kernels/train_dropout.cu -------------------------------------------------------------------
// One residual-dropout site of one micro-batch (src/train/dropout_mask.hpp): element i of the
// call is element index0 + i of the step's mask for the site whose key is `key`.
struct DropoutSite {
  uint64_t key = 0;        // dropout_site_key(seed, step, site)
  uint64_t index0 = 0;     // the micro-batch's first element within the step's batch
  uint32_t threshold = 0;  // dropout_threshold(p): kept iff the element's bits >= it
  float scale = 1.0f;      // dropout_scale<float>(p)
};
// out[i] = (residual ? residual[i] : 0) + (kept(i) ? x[i] · scale : 0) for i < n (float32), and
// out_bf16[i] = bf16(out[i]) when out_bf16 is not null. out may be x (in place). Forward: the
// sub-layer output joining the residual; backward (no residual): the gradient of the sub-layer
// output from the residual's gradient.
void dropout_apply(const DropoutSite& site, const float* x, const float* residual, float* out,
                   bf16* out_bf16, int64_t n, cudaStream_t stream);

// ---- kernels/train_reduce.cu --------------------------------------------------------------------
// out[c] += Σ_r x[r, c] (bias gradients from a BF16 output gradient), fixed order; `workspace`
// holds column_sum_workspace_floats(rows, cols) floats.
size_t column_sum_workspace_floats(int64_t rows, int64_t cols);
void column_sum(const bf16* x, float* out, int64_t rows, int64_t cols, float* workspace,
                cudaStream_t stream);
void column_sum(const float* x, float* out, int64_t rows, int64_t cols, float* workspace,
                cudaStream_t stream);
// dst = bf16(src), n elements.
void to_bf16(const float* src, bf16* dst, int64_t n, cudaStream_t stream);
// *result = Σ x[i]² over n floats, accumulated in double in a fixed order (the global gradient
// norm). `workspace` holds sum_squares_workspace_doubles(n) doubles; result is device memory.
size_t sum_squares_workspace_doubles(int64_t n);
void sum_squares(const float* x, int64_t n, double* workspace, double* result, cudaStream_t stream);

// ---- kernels/train_adamw.cu ---------------------------------------------------------------------
// One AdamW update of n float32 parameters, torch.optim.AdamW's formula (decoupled decay):
//   g = grad · grad_scale (the clipping factor, read from device memory so no host sync is needed)
//   m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;  p -= lr · wd · p
//   p -= lr · (m / bias1) / (sqrt(v / bias2) + eps),  bias1 = 1-β1^t, bias2 = 1-β2^t
//   (host-computed)
// and p_bf16[i] = bf16(p) when p_bf16 is not null (the compute copy).
struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay, bias1, bias2;
};
void adamw_update(float* p, bf16* p_bf16, const float* grad, float* m, float* v, int64_t n,
                  const AdamWStep& step, const float* grad_scale, cudaStream_t stream);

// Multi-tensor AdamW: the same update, bit for bit, of many tensors of one flat float32 buffer in
// one launch (a step of GPT-2 124M is ~200 tensors, most of them small biases and norms whose
// separate launches cost more than their bytes). A segment is one tensor (or the slice of it one
// ZeRO-1 rank owns): p/grad from `offset`, m/v from `state_offset`, its own BF16 copy, and a group
// that picks one of the launch's AdamWSteps (per-role lr and weight decay, which change every step
// with the schedule and so travel as kernel arguments, never as a device upload).
inline constexpr int kAdamWMaxGroups = 16;
// Elements per chunk: one thread block each, so every tensor's tail costs at most one block.
inline constexpr int64_t kAdamWChunkElems = 8192;
struct AdamWSegment {
  int64_t offset = 0;        // first element in p and grad
  int64_t state_offset = 0;  // first element in m and v
  int64_t numel = 0;
  bf16* p_bf16 = nullptr;  // the compute copy of p[offset, offset + numel), or null
  int32_t group = 0;       // index of the AdamWStep applied (< kAdamWMaxGroups)
};
// One block's work: a piece of one segment (at most kAdamWChunkElems elements, starting a
// multiple of kAdamWChunkElems into it, so a chunk is as aligned as its segment).
struct AdamWChunk {
  int64_t offset, state_offset;
  bf16* p_bf16;  // already advanced to the chunk's first element, or null
  int32_t numel, group;
};
// The chunk table of `segments` (empty segments contribute none), built once on the host and
// uploaded by the caller; throws KILN_ERR_INVALID_ARGUMENT for a group out of range.
std::vector<AdamWChunk> adamw_chunks(const std::vector<AdamWSegment>& segments);
// Every chunk of the device table `chunks` (n_chunks entries) updated as adamw_update would,
// chunk.group selecting steps[group] (a host array of n_groups <= kAdamWMaxGroups entries; its
// constants are derived exactly as adamw_update derives them, so results are bit-identical).
// Chunks must not overlap. 16-byte vector accesses where a chunk's pointers allow, else scalar.
void adamw_update_multi(float* p, const float* grad, float* m, float* v, const AdamWChunk* chunks,
                        int64_t n_chunks, const AdamWStep* steps, int n_groups,
                        const float* grad_scale, cudaStream_t stream);
// *scale = (max_norm > 0 && norm > max_norm) ? max_norm / (norm + 1e-6) : 1, with
// norm = sqrt(*sum_squares) also written to *norm (both device memory): torch's clip_grad_norm_.
void clip_scale(const double* sum_squares, float max_norm, float* scale, double* norm,
                cudaStream_t stream);

// ---- kernels/train_muon.cu ----------------------------------------------------------------------
// Muon's elementwise steps (train/optimizer/muon.hpp), float32; the Newton-Schulz matrix products
// around them are cuBLAS (src/backend/cuda/train/muon_update.hpp).
// muon_momentum: g = grad · *grad_scale (null: 1); buf = buf + (1 - momentum)(g - buf);
//   u = nesterov ? g + momentum (buf - g) : buf  (n elements; buf "=" in place, u "=").
void muon_momentum(const float* grad, const float* grad_scale, float* buf, float* u, int64_t n,
                   float momentum, bool nesterov, cudaStream_t stream);
// x = u · float(1 / (sqrt(*sum_squares) + 1e-7)) (sum_squares: device double, Σ u²); u is
// [rows × cols]; x is [rows × cols], or [cols × rows] = (u · inv)ᵀ when transpose.
void muon_normalise(const float* u, const double* sum_squares, float* x, int64_t rows, int64_t cols,
                    bool transpose, cudaStream_t stream);
// dst [cols × rows] = srcᵀ for src [rows × cols] (float32).
void transpose(const float* src, float* dst, int64_t rows, int64_t cols, cudaStream_t stream);
// p [rows × cols] = (decays ? p · decay : p) - alpha · X, X = x [rows × cols], or xᵀ for
// x [cols × rows] when transposed; p_bf16 (nullable) = bf16(p), the compute copy.
void muon_apply(float* p, bf16* p_bf16, const float* x, int64_t rows, int64_t cols, bool transposed,
                float alpha, float decay, bool decays, cudaStream_t stream);

}  // namespace kiln::cuda::train
