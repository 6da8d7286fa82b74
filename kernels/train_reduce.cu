// Deterministic reductions of the training step: column sums (bias gradients), the float32 → BF16
// copy, the sum of squares behind the global gradient norm, and the fixed-order second pass of
// every per-block partial sum (train_common.cuh).
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "train_common.cuh"

namespace kiln::cuda::train {

namespace {

// Rows per partial of column_sum: each (column group, row chunk) block writes one partial row, so
// the order of the additions depends only on the shape.
constexpr int64_t kColumnChunkRows = 32;
constexpr int kColumnThreads = 128;

// Block: kPartialCols columns × kPartialLanes lanes; lane j sums groups j, j + kPartialLanes, ...
// in order, then lane sums are added in lane order: a fixed order for a given shape, with enough
// threads in flight for thousands of groups.
constexpr int kPartialCols = 32;
constexpr int kPartialLanes = 16;

__global__ void add_partial_sums_kernel(const float* partials, int64_t groups, int64_t stride,
                                        int64_t width, float* out) {
  __shared__ float lane_sums[kPartialLanes][kPartialCols + 1];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kPartialCols + threadIdx.x;
  float sum = 0.0f;
  if (c < width) {
    for (int64_t g = threadIdx.y; g < groups; g += kPartialLanes) sum += partials[g * stride + c];
  }
  lane_sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y != 0 || c >= width) return;
  float total = lane_sums[0][threadIdx.x];
  for (int j = 1; j < kPartialLanes; ++j) total += lane_sums[j][threadIdx.x];
  out[c] += total;
}

__device__ __forceinline__ void load_columns(const float* p, float (&v)[8], int n) {
  if (n == 8) {
    detail::load8(p, v);
  } else {
    v[0] = p[0];
  }
}
__device__ __forceinline__ void load_columns(const bf16* p, float (&v)[8], int n) {
  if (n == 8) {
    detail::load8(p, v);
  } else {
    v[0] = __bfloat162float(p[0]);
  }
}

// Block (x: column group, y: row chunk); each thread sums V adjacent columns over the chunk's rows.
template <class T, int V>
__global__ void column_partial_kernel(const T* x, float* partials, int64_t rows, int64_t cols) {
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (c0 >= cols) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kColumnChunkRows;
  const int64_t r1 = r0 + kColumnChunkRows < rows ? r0 + kColumnChunkRows : rows;
  float acc[8] = {};
  for (int64_t r = r0; r < r1; ++r) {
    float v[8];
    load_columns(x + r * cols + c0, v, V);
#pragma unroll
    for (int i = 0; i < V; ++i) acc[i] += v[i];
  }
  float* dst = partials + static_cast<int64_t>(blockIdx.y) * cols + c0;
#pragma unroll
  for (int i = 0; i < V; ++i) dst[i] = acc[i];
}

// out[c] += x[c]: column_sum of one row, one launch (the epilogues' bias gradients land in scratch
// and are added this way, several times per layer).
template <class T>
__global__ void add_row_kernel(const T* x, float* out, int64_t cols) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  if constexpr (sizeof(T) == 2) {
    out[c] += __bfloat162float(x[c]);
  } else {
    out[c] += x[c];
  }
}

template <class T>
void column_sum_impl(const T* x, float* out, int64_t rows, int64_t cols, float* workspace,
                     cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  if (rows == 1) {
    constexpr int kThreads = 256;
    add_row_kernel<T>
        <<<static_cast<unsigned>((cols + kThreads - 1) / kThreads), kThreads, 0, stream>>>(x, out,
                                                                                           cols);
    check_launch("add_row_kernel");
    return;
  }
  const int64_t chunks = (rows + kColumnChunkRows - 1) / kColumnChunkRows;
  const bool vec = cols % 8 == 0 && detail::aligned16(x);
  const int64_t per_thread = vec ? 8 : 1;
  const int64_t threads_needed = cols / per_thread;
  const dim3 grid(static_cast<unsigned>((threads_needed + kColumnThreads - 1) / kColumnThreads),
                  static_cast<unsigned>(chunks));
  if (vec) {
    column_partial_kernel<T, 8><<<grid, kColumnThreads, 0, stream>>>(x, workspace, rows, cols);
  } else {
    column_partial_kernel<T, 1><<<grid, kColumnThreads, 0, stream>>>(x, workspace, rows, cols);
  }
  check_launch("column_partial_kernel");
  detail::add_partial_sums(workspace, chunks, cols, cols, out, stream);
}

__global__ void to_bf16_kernel(const float* src, bf16* dst, int64_t n, bool vec) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (vec) {
    const int64_t base = i * 8;
    if (base + 8 <= n) {
      float v[8];
      detail::load8(src + base, v);
      detail::store8(dst + base, v);
    } else {
      for (int64_t j = base; j < n; ++j) dst[j] = __float2bfloat16(src[j]);
    }
  } else if (i < n) {
    dst[i] = __float2bfloat16(src[i]);
  }
}

// sum_squares: a grid fixed by n (never by the GPU), each thread strides over float4s, then a
// double block sum into workspace[block]; a one-block second pass adds the blocks in order.
constexpr int kSquaresThreads = 256;
constexpr int64_t kSquaresMaxBlocks = 1024;

int64_t squares_blocks(int64_t n) {
  const int64_t per_block = static_cast<int64_t>(kSquaresThreads) * 16;
  int64_t blocks = (n + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  return blocks < kSquaresMaxBlocks ? blocks : kSquaresMaxBlocks;
}

__device__ __forceinline__ double warp_sum_double(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ double block_sum_double(double v) {
  __shared__ double partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum_double(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int n_warps = blockDim.x / 32;
  v = lane < n_warps ? partial[lane] : 0.0;
  return warp_sum_double(v);
}

__global__ void sum_squares_partial_kernel(const float* x, int64_t n, bool vec, double* partials) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  double acc = 0.0;
  if (vec) {
    const int64_t n4 = n / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int64_t i = tid; i < n4; i += stride) {
      const float4 v = x4[i];
      acc += static_cast<double>(v.x) * v.x + static_cast<double>(v.y) * v.y +
             static_cast<double>(v.z) * v.z + static_cast<double>(v.w) * v.w;
    }
    for (int64_t i = n4 * 4 + tid; i < n; i += stride) acc += static_cast<double>(x[i]) * x[i];
  } else {
    for (int64_t i = tid; i < n; i += stride) acc += static_cast<double>(x[i]) * x[i];
  }
  const double total = block_sum_double(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void sum_partials_double_kernel(const double* partials, int64_t count, double* result) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  const double total = block_sum_double(acc);
  if (threadIdx.x == 0) *result = total;
}

}  // namespace

namespace detail {

void add_partial_sums(const float* partials, int64_t groups, int64_t stride, int64_t width,
                      float* out, cudaStream_t stream) {
  if (width <= 0) return;
  const auto blocks = static_cast<unsigned>((width + kPartialCols - 1) / kPartialCols);
  add_partial_sums_kernel<<<blocks, dim3(kPartialCols, kPartialLanes), 0, stream>>>(
      partials, groups, stride, width, out);
  check_launch("add_partial_sums_kernel");
}

}  // namespace detail

size_t column_sum_workspace_floats(int64_t rows, int64_t cols) {
  const int64_t chunks = (rows + kColumnChunkRows - 1) / kColumnChunkRows;
  return static_cast<size_t>(chunks * cols);
}

void column_sum(const bf16* x, float* out, int64_t rows, int64_t cols, float* workspace,
                cudaStream_t stream) {
  column_sum_impl(x, out, rows, cols, workspace, stream);
}

void column_sum(const float* x, float* out, int64_t rows, int64_t cols, float* workspace,
                cudaStream_t stream) {
  column_sum_impl(x, out, rows, cols, workspace, stream);
}

void to_bf16(const float* src, bf16* dst, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  constexpr int threads = 256;
  const bool vec = detail::aligned16(src, dst);
  const int64_t items = vec ? (n + 7) / 8 : n;
  const auto blocks = static_cast<unsigned>((items + threads - 1) / threads);
  to_bf16_kernel<<<blocks, threads, 0, stream>>>(src, dst, n, vec);
  check_launch("to_bf16_kernel");
}

size_t sum_squares_workspace_doubles(int64_t n) { return static_cast<size_t>(squares_blocks(n)); }

void sum_squares(const float* x, int64_t n, double* workspace, double* result,
                 cudaStream_t stream) {
  const int64_t blocks = squares_blocks(n);
  const bool vec = detail::aligned16(x);
  sum_squares_partial_kernel<<<static_cast<unsigned>(blocks), kSquaresThreads, 0, stream>>>(
      x, n < 0 ? 0 : n, vec, workspace);
  check_launch("sum_squares_partial_kernel");
  sum_partials_double_kernel<<<1, kSquaresThreads, 0, stream>>>(workspace, blocks, result);
  check_launch("sum_partials_double_kernel");
}

}  // namespace kiln::cuda::train
