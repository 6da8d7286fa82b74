// Token (+ learned position) embedding of the training graph: forward gathers BF16 rows into the
// float32 residual stream; backward scatters the gradient deterministically — the (id, token)
// pairs are stable-sorted by id (cub radix sort), then each id's rows are summed in token order
// by one thread per column, so no two threads ever add into the same gradient element.
#include <cub/device/device_radix_sort.cuh>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "train_common.cuh"

namespace kiln::cuda::train {

namespace {

constexpr int kThreads = 256;

// One thread per 8 columns of one token (VEC: dim % 8 == 0, rows 16-byte aligned) or per column.
template <bool VEC>
__global__ void embedding_forward_kernel(const int32_t* ids, const bf16* tok, const bf16* pos,
                                         float* out, int64_t n_tokens, int64_t seq, int64_t dim) {
  constexpr int V = VEC ? 8 : 1;
  const int64_t per_row = dim / V;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_tokens * per_row) return;
  const int64_t n = i / per_row, c = (i % per_row) * V;
  const bf16* t = tok + static_cast<int64_t>(ids[n]) * dim + c;
  const bf16* p = pos != nullptr ? pos + (n % seq) * dim + c : nullptr;
  float* o = out + n * dim + c;
  if constexpr (VEC) {
    float v[8];
    detail::load8(t, v);
    if (p != nullptr) {
      float w[8];
      detail::load8(p, w);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] += w[k];
    }
    detail::store8(o, v);
  } else {
    float v = __bfloat162float(*t);
    if (p != nullptr) v += __bfloat162float(*p);
    *o = v;
  }
}

__global__ void iota_kernel(int32_t* out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = static_cast<int32_t>(i);
}

// grid (sorted position, column block): the block at the first position of an id's run sums
// that run's rows in token order (the sort is stable) and adds them once to grad_tok.
__global__ void embedding_tok_grad_kernel(const int32_t* sorted_ids, const int32_t* order,
                                          const float* d_out, float* grad_tok, int64_t n_tokens,
                                          int64_t dim, int32_t padding_idx) {
  const int64_t start = blockIdx.x;
  const int32_t id = sorted_ids[start];
  if (start > 0 && sorted_ids[start - 1] == id) return;  // not the first of its run
  if (id == padding_idx) return;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= dim) return;
  // The run's end by binary search (the keys are sorted), so that the summing loop has a known
  // bound and its loads can be in flight together rather than one per key comparison.
  int64_t lo = start + 1, hi = n_tokens;  // the end is in [lo, hi]
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (sorted_ids[mid] == id) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  const int64_t end = lo;
  float sum = 0.0f;
#pragma unroll 8
  for (int64_t j = start; j < end; ++j) sum += d_out[static_cast<int64_t>(order[j]) * dim + c];
  grad_tok[static_cast<int64_t>(id) * dim + c] += sum;
}

// grad_pos[p, c] += Σ over tokens n ≡ p (mod seq), in order of n.
__global__ void embedding_pos_grad_kernel(const float* d_out, float* grad_pos, int64_t n_tokens,
                                          int64_t seq, int64_t dim) {
  const int64_t p = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= dim) return;
  float sum = 0.0f;
  for (int64_t n = p; n < n_tokens; n += seq) sum += d_out[n * dim + c];
  grad_pos[p * dim + c] += sum;
}

// Workspace layout: sorted keys, values (token indices) before and after the sort (int32 ×
// n_tokens each, 256-byte aligned), then cub's temporary storage.
size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

size_t cub_temp_bytes(int64_t n_tokens) {
  size_t bytes = 0;
  KILN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<int>(n_tokens)));
  return bytes;
}

}  // namespace

void embedding_forward(const int32_t* ids, const bf16* tok, const bf16* pos, float* out,
                       int64_t n_tokens, int64_t seq, int64_t dim, cudaStream_t stream) {
  if (n_tokens <= 0 || dim <= 0) return;
  const bool vec =
      dim % 8 == 0 && detail::aligned16(tok, out) && (pos == nullptr || detail::aligned16(pos));
  const int64_t items = vec ? n_tokens * (dim / 8) : n_tokens * dim;
  const auto blocks = static_cast<unsigned>((items + kThreads - 1) / kThreads);
  if (vec) {
    embedding_forward_kernel<true>
        <<<blocks, kThreads, 0, stream>>>(ids, tok, pos, out, n_tokens, seq, dim);
  } else {
    embedding_forward_kernel<false>
        <<<blocks, kThreads, 0, stream>>>(ids, tok, pos, out, n_tokens, seq, dim);
  }
  check_launch("embedding_forward_kernel");
}

size_t embedding_backward_workspace_bytes(int64_t n_tokens) {
  if (n_tokens <= 0) return 0;
  return 3 * align256(static_cast<size_t>(n_tokens) * sizeof(int32_t)) + cub_temp_bytes(n_tokens);
}

void embedding_backward(const int32_t* ids, const float* d_out, float* grad_tok, float* grad_pos,
                        int64_t n_tokens, int64_t seq, int64_t dim, int32_t padding_idx,
                        void* workspace, cudaStream_t stream) {
  if (n_tokens <= 0 || dim <= 0) return;
  const size_t array_bytes = align256(static_cast<size_t>(n_tokens) * sizeof(int32_t));
  auto* base = static_cast<unsigned char*>(workspace);
  auto* keys_out = reinterpret_cast<int32_t*>(base);
  auto* values_in = reinterpret_cast<int32_t*>(base + array_bytes);
  auto* values_out = reinterpret_cast<int32_t*>(base + 2 * array_bytes);
  void* temp = base + 3 * array_bytes;
  size_t temp_bytes = cub_temp_bytes(n_tokens);

  iota_kernel<<<static_cast<unsigned>((n_tokens + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      values_in, n_tokens);
  check_launch("iota_kernel");
  // Ids are validated non-negative, so the int32 keys sort as unsigned would; radix sort is stable.
  KILN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ids, keys_out, values_in,
                                                  values_out, static_cast<int>(n_tokens), 0,
                                                  static_cast<int>(sizeof(int32_t) * 8), stream));
  const dim3 tok_grid(static_cast<unsigned>(n_tokens),
                      static_cast<unsigned>((dim + kThreads - 1) / kThreads));
  embedding_tok_grad_kernel<<<tok_grid, kThreads, 0, stream>>>(
      keys_out, values_out, d_out, grad_tok, n_tokens, dim, padding_idx);
  check_launch("embedding_tok_grad_kernel");
  if (grad_pos != nullptr) {
    const int64_t positions = seq < n_tokens ? seq : n_tokens;
    const dim3 pos_grid(static_cast<unsigned>(positions),
                        static_cast<unsigned>((dim + kThreads - 1) / kThreads));
    embedding_pos_grad_kernel<<<pos_grid, kThreads, 0, stream>>>(d_out, grad_pos, n_tokens, seq,
                                                                 dim);
    check_launch("embedding_pos_grad_kernel");
  }
}

}  // namespace kiln::cuda::train
