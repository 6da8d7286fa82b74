// Between the fused q/k/v projection and attention: bias, RoPE (rotate_half layout, optionally
// reversed) and the optional per-head RMSNorm of q and k in either order, scattering to the
// attention layout; and the backward, which recomputes the forward's intermediates from qkv.
//
// Grid: (token chunk, head vector); each warp of a block takes every kWarps-th token of the
// chunk and keeps its head vector in shared memory (RoPE pairs elements 32+ lanes apart). The
// backward's bias and norm-weight gradients are per-block partials, summed over the warps in
// order, then over chunks and heads in order (train_common.cuh): deterministic.
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "common.cuh"
#include "core/error.hpp"
#include "train_common.cuh"

namespace kiln::cuda::train {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int64_t kChunkTokens = 64;
constexpr int kMaxHeadDim = 256;

struct Geometry {
  int64_t tokens, width, n_chunks;
  int32_t head_vectors;
};

Geometry geometry(QkvShape s) {
  Geometry g{};
  g.tokens = static_cast<int64_t>(s.batch) * s.seq;
  g.head_vectors = s.n_heads + 2 * s.n_kv_heads;
  g.width = static_cast<int64_t>(g.head_vectors) * s.head_dim;
  g.n_chunks = (g.tokens + kChunkTokens - 1) / kChunkTokens;
  return g;
}

// Kernel arguments in one struct (by value).
struct QkvArgs {
  QkvShape shape;
  const bf16* qkv;
  const float* bias;
  bool qk_norm;
  bool norm_first;  // NormThenRope
  const float* q_weight;
  const float* k_weight;
  float eps;
  const float* inv_freq;
  bool reversed;
};

enum class Part { Q, K, V };

struct HeadOf {
  Part part;
  int32_t head;  // within its part
};

__device__ __forceinline__ HeadOf head_of(const QkvShape& s, int32_t hv) {
  if (hv < s.n_heads) return {Part::Q, hv};
  if (hv < s.n_heads + s.n_kv_heads) return {Part::K, hv - s.n_heads};
  return {Part::V, hv - s.n_heads - s.n_kv_heads};
}

// Offset of (token, head) in the attention layout [batch × heads × seq × head_dim].
__device__ __forceinline__ int64_t attention_offset(const QkvShape& s, int64_t token, int32_t heads,
                                                    int32_t head) {
  const int64_t b = token / s.seq, t = token % s.seq;
  return ((b * heads + head) * s.seq + t) * s.head_dim;
}

// Rotates buf's first rot_dim elements by ±t · inv_freq (forward: sign +1; backward: the
// transpose, sign -1), combined with `reversed`. Caller syncs the warp before and after.
__device__ __forceinline__ void rope(float* buf, const QkvArgs& a, int64_t t, int lane,
                                     float sign) {
  const int half = a.shape.rot_dim / 2;
  for (int i = lane; i < half; i += 32) {
    const float angle = static_cast<float>(t) * a.inv_freq[i];
    float sn, cs;
    sincosf(angle, &sn, &cs);
    if (a.reversed) sn = -sn;
    sn *= sign;
    const float x1 = buf[i], x2 = buf[i + half];
    buf[i] = x1 * cs - x2 * sn;
    buf[i + half] = x2 * cs + x1 * sn;
  }
}

__device__ __forceinline__ float head_rstd(const float* buf, int hd, float eps, int lane) {
  float ss = 0.0f;
  for (int d = lane; d < hd; d += 32) ss += buf[d] * buf[d];
  return rsqrtf(cuda::detail::warp_sum(ss) / static_cast<float>(hd) + eps);
}

__device__ __forceinline__ void load_head(float* buf, const QkvArgs& a, int64_t width,
                                          int64_t token, int32_t hv, int lane) {
  const int hd = a.shape.head_dim;
  const bf16* src = a.qkv + token * width + static_cast<int64_t>(hv) * hd;
  const float* bias = a.bias != nullptr ? a.bias + static_cast<int64_t>(hv) * hd : nullptr;
  for (int d = lane; d < hd; d += 32) {
    buf[d] = __bfloat162float(src[d]) + (bias != nullptr ? bias[d] : 0.0f);
  }
}

__global__ void __launch_bounds__(kThreads)
    qkv_forward_kernel(QkvArgs a, int64_t tokens, int64_t width, bf16* q, bf16* k, bf16* v,
                       float* q_rstd, float* k_rstd) {
  __shared__ float bufs[kWarps][kMaxHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* buf = bufs[warp];
  const int32_t hv = blockIdx.y;
  const HeadOf ho = head_of(a.shape, hv);
  const int hd = a.shape.head_dim;
  const float* w = ho.part == Part::Q ? a.q_weight : a.k_weight;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kChunkTokens;
  const int64_t last = first + kChunkTokens < tokens ? first + kChunkTokens : tokens;
  for (int64_t token = first + warp; token < last; token += kWarps) {
    load_head(buf, a, width, token, hv, lane);
    __syncwarp();
    if (ho.part != Part::V) {
      const int64_t t = token % a.shape.seq;
      float r = 1.0f;
      if (a.qk_norm && a.norm_first) {
        r = head_rstd(buf, hd, a.eps, lane);
        for (int d = lane; d < hd; d += 32) buf[d] *= r * (w != nullptr ? w[d] : 1.0f);
        __syncwarp();
      }
      rope(buf, a, t, lane, 1.0f);
      __syncwarp();
      if (a.qk_norm && !a.norm_first) {
        r = head_rstd(buf, hd, a.eps, lane);
        for (int d = lane; d < hd; d += 32) buf[d] *= r * (w != nullptr ? w[d] : 1.0f);
        __syncwarp();
      }
      if (a.qk_norm && lane == 0) {
        if (ho.part == Part::Q) {
          q_rstd[token * a.shape.n_heads + ho.head] = r;
        } else {
          k_rstd[token * a.shape.n_kv_heads + ho.head] = r;
        }
      }
    }
    bf16* dst;
    if (ho.part == Part::Q) {
      dst = q + attention_offset(a.shape, token, a.shape.n_heads, ho.head);
    } else {
      dst = (ho.part == Part::K ? k : v) +
            attention_offset(a.shape, token, a.shape.n_kv_heads, ho.head);
    }
    for (int d = lane; d < hd; d += 32) dst[d] = __float2bfloat16(buf[d]);
    __syncwarp();  // buf is reloaded for the next token
  }
}

// Norm backward on one head vector: given g (dL/dy) and xhat, writes dL/dx into g and adds
// g · x̂ to the lane's weight-gradient accumulators.
__device__ __forceinline__ void head_norm_backward(float* g, const float* xhat, const float* w,
                                                   float r, int hd, int lane, float* acc_w) {
  float sum = 0.0f;
  for (int d = lane; d < hd; d += 32) {
    acc_w[d] += g[d] * xhat[d];
    sum += g[d] * (w != nullptr ? w[d] : 1.0f) * xhat[d];
  }
  const float mean_gx = cuda::detail::warp_sum(sum) / static_cast<float>(hd);
  for (int d = lane; d < hd; d += 32) {
    const float gx = g[d] * (w != nullptr ? w[d] : 1.0f);
    g[d] = r * (gx - xhat[d] * mean_gx);
  }
}

__global__ void __launch_bounds__(kThreads)
    qkv_backward_kernel(QkvArgs a, int64_t tokens, int64_t width, int64_t n_chunks, const float* dq,
                        const float* dk, const float* dv, const float* q_rstd, const float* k_rstd,
                        bf16* dqkv, float* bias_partials, float* weight_partials) {
  __shared__ float xbufs[kWarps][kMaxHeadDim];
  __shared__ float gbufs[kWarps][kMaxHeadDim];
  __shared__ float acc_b[kWarps][kMaxHeadDim];
  __shared__ float acc_w[kWarps][kMaxHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* xb = xbufs[warp];
  float* gb = gbufs[warp];
  const int32_t hv = blockIdx.y;
  const HeadOf ho = head_of(a.shape, hv);
  const int hd = a.shape.head_dim;
  const float* w = ho.part == Part::Q ? a.q_weight : a.k_weight;
  for (int d = lane; d < hd; d += 32) acc_b[warp][d] = acc_w[warp][d] = 0.0f;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kChunkTokens;
  const int64_t last = first + kChunkTokens < tokens ? first + kChunkTokens : tokens;
  for (int64_t token = first + warp; token < last; token += kWarps) {
    const float* src;
    if (ho.part == Part::Q) {
      src = dq + attention_offset(a.shape, token, a.shape.n_heads, ho.head);
    } else {
      src = (ho.part == Part::K ? dk : dv) +
            attention_offset(a.shape, token, a.shape.n_kv_heads, ho.head);
    }
    for (int d = lane; d < hd; d += 32) gb[d] = src[d];
    if (ho.part != Part::V) {
      const int64_t t = token % a.shape.seq;
      if (a.qk_norm) {
        load_head(xb, a, width, token, hv, lane);
        const float r = ho.part == Part::Q ? q_rstd[token * a.shape.n_heads + ho.head]
                                           : k_rstd[token * a.shape.n_kv_heads + ho.head];
        __syncwarp();
        if (a.norm_first) {
          rope(gb, a, t, lane, -1.0f);  // through the rotation first
          __syncwarp();
          for (int d = lane; d < hd; d += 32) xb[d] *= r;  // x̂ of the input
          head_norm_backward(gb, xb, w, r, hd, lane, acc_w[warp]);
        } else {
          rope(xb, a, t, lane, 1.0f);  // the norm's input is the rotated vector
          __syncwarp();
          for (int d = lane; d < hd; d += 32) xb[d] *= r;
          head_norm_backward(gb, xb, w, r, hd, lane, acc_w[warp]);
          __syncwarp();
          rope(gb, a, t, lane, -1.0f);
        }
      } else {
        __syncwarp();
        rope(gb, a, t, lane, -1.0f);
      }
    }
    __syncwarp();
    bf16* dst = dqkv + token * width + static_cast<int64_t>(hv) * hd;
    for (int d = lane; d < hd; d += 32) {
      dst[d] = __float2bfloat16(gb[d]);
      acc_b[warp][d] += gb[d];
    }
    __syncwarp();  // gb / xb are reloaded for the next token
  }
  __syncthreads();
  const int64_t chunk = blockIdx.x;
  for (int d = threadIdx.x; d < hd; d += kThreads) {
    if (bias_partials != nullptr) {
      float s = 0.0f;
      for (int i = 0; i < kWarps; ++i) s += acc_b[i][d];
      bias_partials[chunk * width + static_cast<int64_t>(hv) * hd + d] = s;
    }
    if (weight_partials != nullptr && ho.part != Part::V) {
      float s = 0.0f;
      for (int i = 0; i < kWarps; ++i) s += acc_w[i][d];
      weight_partials[(static_cast<int64_t>(hv) * n_chunks + chunk) * hd + d] = s;
    }
  }
}

// The forward without RoPE or q/k norm (GPT-2, whose bias is in the product's epilogue): + bias
// and a scatter to the attention layout, 8 elements per thread with 16-byte accesses (the
// conditions of qkv_backward_plain_kernel below).
__global__ void __launch_bounds__(kThreads)
    qkv_forward_plain_kernel(QkvShape s, int64_t tokens, int64_t width, const bf16* qkv,
                             const float* bias, bf16* q, bf16* k, bf16* v) {
  const int hd = s.head_dim;
  const int groups = hd / 8;
  const int group = threadIdx.x % groups;
  const int32_t hv = blockIdx.y;
  const HeadOf ho = head_of(s, hv);
  bf16* dst = ho.part == Part::Q ? q : (ho.part == Part::K ? k : v);
  const int32_t heads = ho.part == Part::Q ? s.n_heads : s.n_kv_heads;
  const int64_t col = static_cast<int64_t>(hv) * hd + group * 8;
  float b[8] = {};
  if (bias != nullptr) detail::load8(bias + col, b);
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kChunkTokens;
  const int64_t last = first + kChunkTokens < tokens ? first + kChunkTokens : tokens;
  for (int64_t token = first + threadIdx.x / groups; token < last; token += kThreads / groups) {
    float x[8];
    detail::load8(qkv + token * width + col, x);
#pragma unroll
    for (int j = 0; j < 8; ++j) x[j] += b[j];
    detail::store8(dst + attention_offset(s, token, heads, ho.head) + group * 8, x);
  }
}

// The backward without RoPE or q/k norm (GPT-2): a layout change plus the bias column sums, so
// no shared-memory head vector and no warp syncs. Each thread moves 8 consecutive elements of its
// head vector (two 16-byte loads, one 16-byte store) for every (kThreads / (head_dim / 8))-th
// token of the chunk, summing them in registers; the block then adds its token lanes in order
// into the same per-chunk bias partials as qkv_backward_kernel. Needs head_dim / 8 to divide
// kThreads and 16-byte aligned rows.
__global__ void __launch_bounds__(kThreads)
    qkv_backward_plain_kernel(QkvShape s, int64_t tokens, int64_t width, const float* dq,
                              const float* dk, const float* dv, bf16* dqkv, float* bias_partials) {
  __shared__ float stage[kThreads * 8];
  const int hd = s.head_dim;
  const int groups = hd / 8;
  const int group = threadIdx.x % groups;
  const int token_lanes = kThreads / groups;
  const int32_t hv = blockIdx.y;
  const HeadOf ho = head_of(s, hv);
  const float* src = ho.part == Part::Q ? dq : (ho.part == Part::K ? dk : dv);
  const int32_t heads = ho.part == Part::Q ? s.n_heads : s.n_kv_heads;
  float acc[8] = {};
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kChunkTokens;
  const int64_t last = first + kChunkTokens < tokens ? first + kChunkTokens : tokens;
  for (int64_t token = first + threadIdx.x / groups; token < last; token += token_lanes) {
    float v[8];
    detail::load8(src + attention_offset(s, token, heads, ho.head) + group * 8, v);
    detail::store8(dqkv + token * width + static_cast<int64_t>(hv) * hd + group * 8, v);
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[j] += v[j];
  }
  if (bias_partials == nullptr) return;  // the same for every thread of the launch
    // Thread t's sums are columns group·8 .. +8 of token lane t / groups: stage[lane · hd + col].
#pragma unroll
  for (int j = 0; j < 8; ++j) stage[threadIdx.x * 8 + j] = acc[j];
  __syncthreads();
  for (int d = threadIdx.x; d < hd; d += kThreads) {
    float sum = stage[d];
    for (int i = 1; i < token_lanes; ++i) sum += stage[i * hd + d];
    bias_partials[static_cast<int64_t>(blockIdx.x) * width + static_cast<int64_t>(hv) * hd + d] =
        sum;
  }
}

QkvArgs make_args(const bf16* qkv, const float* bias, QkvShape shape, const QkNorm& norm,
                  const float* inv_freq, bool rope_reversed) {
  if (shape.head_dim <= 0 || shape.head_dim > kMaxHeadDim || shape.rot_dim < 0 ||
      shape.rot_dim > shape.head_dim || shape.rot_dim % 2 != 0) {
    fail(KILN_ERR_INVALID_ARGUMENT, "qkv kernels: head_dim " + std::to_string(shape.head_dim) +
                                        " / rot_dim " + std::to_string(shape.rot_dim) +
                                        " unsupported (head_dim 1.." + std::to_string(kMaxHeadDim) +
                                        ", rot_dim even and <= head_dim)");
  }
  QkvArgs a{};
  a.shape = shape;
  a.qkv = qkv;
  a.bias = bias;
  a.qk_norm = norm.enabled;
  a.norm_first = norm.order == QkOrder::NormThenRope;
  a.q_weight = norm.q_weight;
  a.k_weight = norm.k_weight;
  a.eps = norm.eps;
  a.inv_freq = inv_freq;
  a.reversed = rope_reversed;
  if (inv_freq == nullptr) a.shape.rot_dim = 0;
  return a;
}

// Whether the plain kernels apply: no RoPE, no q/k norm, head_dim / 8 dividing kThreads, every
// row 16-byte aligned.
template <class A, class B>
bool plain_layout(const QkvArgs& a, const A* token_major, const B* q, const B* k, const B* v) {
  const int hd = a.shape.head_dim;
  return !a.qk_norm && a.shape.rot_dim == 0 && hd % 8 == 0 && kThreads % (hd / 8) == 0 &&
         detail::aligned16(token_major) && detail::aligned16(q, k, v);
}

}  // namespace

void qkv_forward(const bf16* qkv, const float* bias, QkvShape shape, const QkNorm& norm,
                 const float* inv_freq, bool rope_reversed, bf16* q, bf16* k, bf16* v,
                 float* q_rstd, float* k_rstd, cudaStream_t stream) {
  const Geometry g = geometry(shape);
  if (g.tokens <= 0 || g.head_vectors <= 0) return;
  const QkvArgs a = make_args(qkv, bias, shape, norm, inv_freq, rope_reversed);
  const dim3 grid(static_cast<unsigned>(g.n_chunks), static_cast<unsigned>(g.head_vectors));
  if (plain_layout(a, qkv, q, k, v) && (bias == nullptr || detail::aligned16(bias))) {
    qkv_forward_plain_kernel<<<grid, kThreads, 0, stream>>>(a.shape, g.tokens, g.width, qkv, bias,
                                                            q, k, v);
    check_launch("qkv_forward_plain_kernel");
    return;
  }
  qkv_forward_kernel<<<grid, kThreads, 0, stream>>>(a, g.tokens, g.width, q, k, v, q_rstd, k_rstd);
  check_launch("qkv_forward_kernel");
}

size_t qkv_backward_workspace_floats(QkvShape shape) {
  const Geometry g = geometry(shape);
  const int64_t qk_heads = static_cast<int64_t>(shape.n_heads) + shape.n_kv_heads;
  return static_cast<size_t>(g.n_chunks * g.width + qk_heads * g.n_chunks * shape.head_dim);
}

void qkv_backward(const float* dq, const float* dk, const float* dv, const bf16* qkv,
                  const float* bias, QkvShape shape, const QkNorm& norm, const float* inv_freq,
                  bool rope_reversed, const float* q_rstd, const float* k_rstd, bf16* dqkv,
                  float* dq_weight, float* dk_weight, float* dbias, float* workspace,
                  cudaStream_t stream) {
  const Geometry g = geometry(shape);
  if (g.tokens <= 0 || g.head_vectors <= 0) return;
  const QkvArgs a = make_args(qkv, bias, shape, norm, inv_freq, rope_reversed);
  const bool want_weights = norm.enabled && (dq_weight != nullptr || dk_weight != nullptr);
  float* bias_partials = dbias != nullptr ? workspace : nullptr;
  float* weight_partials = want_weights ? workspace + g.n_chunks * g.width : nullptr;
  const dim3 grid(static_cast<unsigned>(g.n_chunks), static_cast<unsigned>(g.head_vectors));
  if (plain_layout(a, dqkv, dq, dk, dv)) {
    qkv_backward_plain_kernel<<<grid, kThreads, 0, stream>>>(a.shape, g.tokens, g.width, dq, dk, dv,
                                                             dqkv, bias_partials);
    check_launch("qkv_backward_plain_kernel");
  } else {
    qkv_backward_kernel<<<grid, kThreads, 0, stream>>>(a, g.tokens, g.width, g.n_chunks, dq, dk, dv,
                                                       q_rstd, k_rstd, dqkv, bias_partials,
                                                       weight_partials);
    check_launch("qkv_backward_kernel");
  }
  if (dbias != nullptr) {
    detail::add_partial_sums(bias_partials, g.n_chunks, g.width, g.width, dbias, stream);
  }
  const int64_t hd = shape.head_dim;
  if (want_weights && dq_weight != nullptr) {
    detail::add_partial_sums(weight_partials, shape.n_heads * g.n_chunks, hd, hd, dq_weight,
                             stream);
  }
  if (want_weights && dk_weight != nullptr) {
    detail::add_partial_sums(weight_partials + shape.n_heads * g.n_chunks * hd,
                             shape.n_kv_heads * g.n_chunks, hd, hd, dk_weight, stream);
  }
}

}  // namespace kiln::cuda::train
