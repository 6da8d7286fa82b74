// LayerNorm / RMSNorm of the training graph (float32 in, BF16 out for the next matrix product)
// and their backward. One warp per row, 16-byte loads when dim % 4 == 0; the weight and bias
// gradients are per-chunk column partials in the workspace, added in chunk order (deterministic).
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "common.cuh"
#include "train_common.cuh"

namespace kiln::cuda::train {

namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kThreads = kWarpsPerBlock * 32;
// Rows per dw/db partial.
constexpr int64_t kChunkRows = 64;
constexpr int kColumnThreads = 128;

// 4 BF16 values as one 8-byte word.
struct alignas(8) Bf16x4 {
  __nv_bfloat162 h[2];
};

// Elements of a row handled together by a lane: 4 (one float4) or 1.
template <int V>
__device__ __forceinline__ void load_v(const float* p, float (&v)[V]) {
  if constexpr (V == 4) {
    const float4 a = *reinterpret_cast<const float4*>(p);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  } else {
    v[0] = *p;
  }
}
template <int V>
__device__ __forceinline__ void store_v(float* p, const float (&v)[V]) {
  if constexpr (V == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    *p = v[0];
  }
}
template <int V>
__device__ __forceinline__ void store_v(bf16* p, const float (&v)[V]) {
  if constexpr (V == 4) {
    Bf16x4 word;
    word.h[0] = __floats2bfloat162_rn(v[0], v[1]);
    word.h[1] = __floats2bfloat162_rn(v[2], v[3]);
    *reinterpret_cast<Bf16x4*>(p) = word;
  } else {
    *p = __float2bfloat16(v[0]);
  }
}
template <int V>
__device__ __forceinline__ void load_or_one(const float* p, float (&v)[V]) {
  if (p != nullptr) {
    load_v<V>(p, v);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = 1.0f;
  }
}

template <int V>
__global__ void norm_forward_kernel(bool layer_norm, const float* x, const float* w, const float* b,
                                    float eps, bf16* y, float* y_f32, float* mean, float* rstd,
                                    int64_t rows, int64_t dim) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const float* xr = x + row * dim;
  const float inv_dim = 1.0f / static_cast<float>(dim);
  float mu = 0.0f;
  if (layer_norm) {
    float s = 0.0f;
    for (int64_t c = lane * V; c < dim; c += 32 * V) {
      float v[V];
      load_v<V>(xr + c, v);
#pragma unroll
      for (int k = 0; k < V; ++k) s += v[k];
    }
    mu = cuda::detail::warp_sum(s) * inv_dim;
  }
  // Second pass over the (L1-resident) row: the variance about the mean, not E[x²] - mean².
  float ss = 0.0f;
  for (int64_t c = lane * V; c < dim; c += 32 * V) {
    float v[V];
    load_v<V>(xr + c, v);
#pragma unroll
    for (int k = 0; k < V; ++k) ss += (v[k] - mu) * (v[k] - mu);
  }
  const float r = rsqrtf(cuda::detail::warp_sum(ss) * inv_dim + eps);
  for (int64_t c = lane * V; c < dim; c += 32 * V) {
    float v[V], wv[V];
    load_v<V>(xr + c, v);
    load_or_one<V>(w != nullptr ? w + c : nullptr, wv);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = (v[k] - mu) * r * wv[k];
    if (b != nullptr) {
      float bv[V];
      load_v<V>(b + c, bv);
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] += bv[k];
    }
    store_v<V>(y + row * dim + c, v);
    if (y_f32 != nullptr) store_v<V>(y_f32 + row * dim + c, v);
  }
  if (lane == 0) {
    if (mean != nullptr) mean[row] = mu;
    rstd[row] = r;
  }
}

// dx = rstd · (g - mean(g) - x̂ · mean(g · x̂)) with g = dy · w (LayerNorm);
// dx = rstd · (g - x̂ · mean(g · x̂)) (RMSNorm, x̂ = x · rstd).
template <int V>
__global__ void norm_backward_kernel(bool layer_norm, const float* dy, const float* x,
                                     const float* w, const float* mean, const float* rstd,
                                     float* dx, bool accumulate, bf16* dx_bf16, int64_t rows,
                                     int64_t dim) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const float* xr = x + row * dim;
  const float* dyr = dy + row * dim;
  const float mu = layer_norm ? mean[row] : 0.0f;
  const float r = rstd[row];
  float sum_g = 0.0f, sum_gx = 0.0f;
  for (int64_t c = lane * V; c < dim; c += 32 * V) {
    float xv[V], gv[V], wv[V];
    load_v<V>(xr + c, xv);
    load_v<V>(dyr + c, gv);
    load_or_one<V>(w != nullptr ? w + c : nullptr, wv);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float g = gv[k] * wv[k];
      sum_g += g;
      sum_gx += g * (xv[k] - mu) * r;
    }
  }
  const float inv_dim = 1.0f / static_cast<float>(dim);
  const float mean_g = layer_norm ? cuda::detail::warp_sum(sum_g) * inv_dim : 0.0f;
  const float mean_gx = cuda::detail::warp_sum(sum_gx) * inv_dim;
  for (int64_t c = lane * V; c < dim; c += 32 * V) {
    float xv[V], gv[V], wv[V];
    load_v<V>(xr + c, xv);
    load_v<V>(dyr + c, gv);
    load_or_one<V>(w != nullptr ? w + c : nullptr, wv);
    float out[V];
    if (accumulate) {
      load_v<V>(dx + row * dim + c, out);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) out[k] = 0.0f;
    }
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float xhat = (xv[k] - mu) * r;
      out[k] += r * (gv[k] * wv[k] - mean_g - xhat * mean_gx);
    }
    store_v<V>(dx + row * dim + c, out);
    if (dx_bf16 != nullptr) store_v<V>(dx_bf16 + row * dim + c, out);
  }
}

// Per (column, row chunk): Σ dy · x̂ and Σ dy over the chunk's rows, into
// partials[chunk][0 .. dim) (dw) and partials[chunks + chunk][0 .. dim) (db).
__global__ void norm_param_partial_kernel(bool layer_norm, const float* dy, const float* x,
                                          const float* mean, const float* rstd, bool want_dw,
                                          bool want_db, float* partials, int64_t rows, int64_t dim,
                                          int64_t chunks) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= dim) return;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * kChunkRows;
  const int64_t r1 = r0 + kChunkRows < rows ? r0 + kChunkRows : rows;
  float sdw = 0.0f, sdb = 0.0f;
  for (int64_t r = r0; r < r1; ++r) {
    const float g = dy[r * dim + c];
    if (want_dw) {
      const float mu = layer_norm ? mean[r] : 0.0f;
      sdw += g * ((x[r * dim + c] - mu) * rstd[r]);
    }
    sdb += g;
  }
  if (want_dw) partials[chunk * dim + c] = sdw;
  if (want_db) partials[(chunks + chunk) * dim + c] = sdb;
}

// The fused backward for rows that fit in registers (dim ≤ 32 · V · ITER): each warp reads its
// kRowsPerWarp rows of x, dy (and dx when accumulating: all three loads of a row are in flight
// together, one memory latency per row) once, writes dx, and keeps the dw / db column sums of
// those rows in registers. The block adds its warps' sums in shared memory in warp order and
// writes one partial row (zeros from warps past the last row included), so the second pass reads
// one row per block rather than per warp. Blocks of kFusedWarps warps: at the ~160 registers a
// thread needs for dim 768, small blocks let an SM hold more warps than 256-thread blocks do
// (wider rows are held to 2 blocks per SM, where they do not spill).
constexpr int64_t kRowsPerWarp = 8;
constexpr int kFusedWarps = 4;
constexpr int kFusedThreads = kFusedWarps * 32;
constexpr int kMaxIter = 8;
constexpr int kMaxFusedDim = 32 * 4 * kMaxIter;

// out[0 .. dim) = Σ over the block's warps (in warp order) of their acc rows.
template <int V, int ITER>
__device__ __forceinline__ void write_block_partial(const float (&acc)[ITER][V],
                                                    float (*stage)[kMaxFusedDim], int64_t dim,
                                                    float* out) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int k = 0; k < ITER; ++k) {
    const int64_t c = (static_cast<int64_t>(k) * 32 + lane) * V;
    if (c < dim) {
#pragma unroll
      for (int j = 0; j < V; ++j) stage[warp][c + j] = acc[k][j];
    }
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < dim; c += kFusedThreads) {
    float sum = stage[0][c];
#pragma unroll
    for (int w = 1; w < kFusedWarps; ++w) sum += stage[w][c];
    out[c] = sum;
  }
  __syncthreads();  // before stage is written again
}

template <int V, int ITER>
__global__ void __launch_bounds__(kFusedThreads, ITER <= 6 ? 3 : 2)
    norm_backward_fused_kernel(bool layer_norm, const float* dy, const float* x, const float* w,
                               const float* mean, const float* rstd, float* dx, bool accumulate,
                               bf16* dx_bf16, int64_t rows, int64_t dim, float* partials,
                               int64_t groups, bool want_db) {
  const int lane = threadIdx.x % 32;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kFusedWarps + threadIdx.x / 32;
  const int64_t r0 = warp * kRowsPerWarp;
  const int64_t r1 = r0 + kRowsPerWarp < rows ? r0 + kRowsPerWarp : rows;
  const float inv_dim = 1.0f / static_cast<float>(dim);
  float adw[ITER][V], adb[ITER][V];
#pragma unroll
  for (int k = 0; k < ITER; ++k) {
#pragma unroll
    for (int j = 0; j < V; ++j) adw[k][j] = 0.0f, adb[k][j] = 0.0f;
  }
  for (int64_t row = r0; row < r1; ++row) {
    const float mu = layer_norm ? mean[row] : 0.0f;
    const float r = rstd[row];
    // Registers live across the row's reductions: x̂, g = dy · w and dx only. The weight is
    // re-read per row (an L1 hit), and dw / db take dy before it becomes g, which keeps the
    // kernel near 160 registers at dim 768 (3 blocks of kFusedWarps per SM).
    float xv[ITER][V], gv[ITER][V], out[ITER][V];
    float sum_g = 0.0f, sum_gx = 0.0f;
#pragma unroll
    for (int k = 0; k < ITER; ++k) {
      const int64_t c = (static_cast<int64_t>(k) * 32 + lane) * V;
      if (c < dim) {
        float wv[V];
        load_v<V>(x + row * dim + c, xv[k]);
        load_v<V>(dy + row * dim + c, gv[k]);
        load_or_one<V>(w != nullptr ? w + c : nullptr, wv);
        if (accumulate) {
          load_v<V>(dx + row * dim + c, out[k]);
        } else {
#pragma unroll
          for (int j = 0; j < V; ++j) out[k][j] = 0.0f;
        }
#pragma unroll
        for (int j = 0; j < V; ++j) {
          xv[k][j] = (xv[k][j] - mu) * r;  // x̂ from here on
          adw[k][j] += gv[k][j] * xv[k][j];
          adb[k][j] += gv[k][j];
          gv[k][j] *= wv[j];  // g from here on
          sum_g += gv[k][j];
          sum_gx += gv[k][j] * xv[k][j];
        }
      }
    }
    const float mean_g = layer_norm ? cuda::detail::warp_sum(sum_g) * inv_dim : 0.0f;
    const float mean_gx = cuda::detail::warp_sum(sum_gx) * inv_dim;
#pragma unroll
    for (int k = 0; k < ITER; ++k) {
      const int64_t c = (static_cast<int64_t>(k) * 32 + lane) * V;
      if (c < dim) {
#pragma unroll
        for (int j = 0; j < V; ++j) out[k][j] += r * (gv[k][j] - mean_g - xv[k][j] * mean_gx);
        store_v<V>(dx + row * dim + c, out[k]);
        if (dx_bf16 != nullptr) store_v<V>(dx_bf16 + row * dim + c, out[k]);
      }
    }
  }
  if (partials == nullptr) return;  // the same for every thread of the launch
  __shared__ float stage[kFusedWarps][kMaxFusedDim];
  write_block_partial<V, ITER>(adw, stage, dim, partials + blockIdx.x * dim);
  if (want_db)
    write_block_partial<V, ITER>(adb, stage, dim, partials + (groups + blockIdx.x) * dim);
}

// Launches the fused kernel with the smallest ITER that covers dim; false when dim is too wide.
template <int V, int ITER = 1>
bool launch_fused_backward(unsigned blocks, cudaStream_t stream, bool layer_norm, const float* dy,
                           const float* x, const float* w, const float* mean, const float* rstd,
                           float* dx, bool accumulate, bf16* dx_bf16, int64_t rows, int64_t dim,
                           float* partials, int64_t groups, bool want_db) {
  if constexpr (ITER > kMaxIter) {
    return false;
  } else {
    if (dim > static_cast<int64_t>(32) * V * ITER) {
      return launch_fused_backward<V, ITER + 1>(blocks, stream, layer_norm, dy, x, w, mean, rstd,
                                                dx, accumulate, dx_bf16, rows, dim, partials,
                                                groups, want_db);
    }
    norm_backward_fused_kernel<V, ITER>
        <<<blocks, kFusedThreads, 0, stream>>>(layer_norm, dy, x, w, mean, rstd, dx, accumulate,
                                               dx_bf16, rows, dim, partials, groups, want_db);
    check_launch("norm_backward_fused_kernel");
    return true;
  }
}

// Blocks of the fused kernel = partial rows it writes per parameter.
int64_t fused_groups(int64_t rows) {
  const int64_t rows_per_block = kRowsPerWarp * kFusedWarps;
  return (rows + rows_per_block - 1) / rows_per_block;
}

}  // namespace

void norm_forward(NormType type, const float* x, const float* w, const float* b, float eps, bf16* y,
                  float* y_f32, float* mean, float* rstd, int64_t rows, int64_t dim,
                  cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  const bool layer_norm = type == NormType::LayerNorm;
  const auto blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const bool vec = dim % 4 == 0 && detail::aligned16(x) && (w == nullptr || detail::aligned16(w)) &&
                   (b == nullptr || detail::aligned16(b)) &&
                   reinterpret_cast<uintptr_t>(y) % 8 == 0 &&
                   (y_f32 == nullptr || detail::aligned16(y_f32));
  if (vec) {
    norm_forward_kernel<4><<<blocks, kThreads, 0, stream>>>(
        layer_norm, x, w, layer_norm ? b : nullptr, eps, y, y_f32, mean, rstd, rows, dim);
  } else {
    norm_forward_kernel<1><<<blocks, kThreads, 0, stream>>>(
        layer_norm, x, w, layer_norm ? b : nullptr, eps, y, y_f32, mean, rstd, rows, dim);
  }
  check_launch("norm_forward_kernel");
}

size_t norm_backward_workspace_floats(int64_t rows, int64_t dim) {
  // Enough for either path: the fused one's per-warp partials or the column kernel's chunks.
  const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
  const int64_t groups = fused_groups(rows) > chunks ? fused_groups(rows) : chunks;
  return static_cast<size_t>(2 * groups * dim);
}

void norm_backward(NormType type, const float* dy, const float* x, const float* w,
                   const float* mean, const float* rstd, float* dx, bool accumulate, bf16* dx_bf16,
                   float* dw, float* db, int64_t rows, int64_t dim, float* workspace,
                   cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  const bool layer_norm = type == NormType::LayerNorm;
  const bool want_db = db != nullptr && layer_norm;
  const bool want_params = dw != nullptr || want_db;
  const bool vec = dim % 4 == 0 && detail::aligned16(dy, x, dx) &&
                   (w == nullptr || detail::aligned16(w)) &&
                   (dx_bf16 == nullptr || reinterpret_cast<uintptr_t>(dx_bf16) % 8 == 0) &&
                   (!want_params || detail::aligned16(workspace));

  // Rows that fit in registers: one pass, dw / db from per-warp partials.
  const int64_t groups = fused_groups(rows);
  const auto fused_blocks = static_cast<unsigned>(groups);
  float* partials = want_params ? workspace : nullptr;
  const bool fused =
      vec ? launch_fused_backward<4>(fused_blocks, stream, layer_norm, dy, x, w, mean, rstd, dx,
                                     accumulate, dx_bf16, rows, dim, partials, groups, want_db)
          : launch_fused_backward<1>(fused_blocks, stream, layer_norm, dy, x, w, mean, rstd, dx,
                                     accumulate, dx_bf16, rows, dim, partials, groups, want_db);
  if (fused) {
    if (dw != nullptr) detail::add_partial_sums(workspace, groups, dim, dim, dw, stream);
    if (want_db) detail::add_partial_sums(workspace + groups * dim, groups, dim, dim, db, stream);
    return;
  }

  // Wide rows: dx one warp per row, then dw / db from a column pass over dy and x.
  const auto blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  if (vec) {
    norm_backward_kernel<4><<<blocks, kThreads, 0, stream>>>(layer_norm, dy, x, w, mean, rstd, dx,
                                                             accumulate, dx_bf16, rows, dim);
  } else {
    norm_backward_kernel<1><<<blocks, kThreads, 0, stream>>>(layer_norm, dy, x, w, mean, rstd, dx,
                                                             accumulate, dx_bf16, rows, dim);
  }
  check_launch("norm_backward_kernel");
  if (!want_params) return;
  const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
  const dim3 grid(static_cast<unsigned>((dim + kColumnThreads - 1) / kColumnThreads),
                  static_cast<unsigned>(chunks));
  norm_param_partial_kernel<<<grid, kColumnThreads, 0, stream>>>(
      layer_norm, dy, x, mean, rstd, dw != nullptr, want_db, workspace, rows, dim, chunks);
  check_launch("norm_param_partial_kernel");
  if (dw != nullptr) detail::add_partial_sums(workspace, chunks, dim, dim, dw, stream);
  if (want_db) detail::add_partial_sums(workspace + chunks * dim, chunks, dim, dim, db, stream);
}

}  // namespace kiln::cuda::train
