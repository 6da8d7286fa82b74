// Products with GGUF block-quantised weights kept as stored in device memory (Q8_0, Q4_0, Q4_1,
// Q5_0, Q5_1, Q4_K, Q5_K, Q6_K; layouts in src/formats/quant/blocks.hpp, from ggml-common.h).
//
// Every kernel works on "chunks" of 32 consecutive elements of one weight row: a legacy block, a
// Q4_K/Q5_K sub-block, or one of the eight 32-element groups of a Q6_K super-block (two of its
// 16-element sub-blocks). A chunk is dequantised in registers to float32 exactly as the format
// defines it (each value the correctly rounded result, as the CPU dequantiser computes it).
//  - decode (one row of x): one warp per weight row, lane l taking chunks l, l + 32, ...; x is
//    BF16, read 16 bytes at a time (a chunk is 64 bytes of x). The raw blocks are read once;
//    every block of these formats has an even size, so 2-byte loads are always aligned, and the
//    Q4_K/Q5_K quants (16-byte aligned within their 144/176-byte blocks) are read as uint4.
//  - the fused forms stage bf16(norm_w ⊙ x / rms(x)) in shared memory first, with the same
//    arithmetic as rms_norm_kernel (so fused and unfused decode steps agree bit for bit).
//  - QuantDot::kInt8 (the decode default, every format): instead of dequantising to float, each
//    block quantises its x (normalised first in the fused forms, the same BF16 values) to int8 per
//    32 elements in shared memory and dots the chunks' integers with it by __dp4a
//    (quant_dot_int8.cuh: ~2-3 instructions per weight, x staging included, instead of ~7). Its
//    result is the exact product of the weights with the int8-rounded x up to float rounding; x
//    itself moves by up to max|x| / 254 of its 32-element block per element (llama.cpp MMVQ's q8_1
//    approximation). Lanes still take chunks l, l + 32, ..., two per loop iteration.
//  - prefill: quant_dequantize_bf16 writes the matrix as BF16 (one thread per chunk, four 16-byte
//    stores) for cuBLAS.
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "core/error.hpp"
#include "overlapped_launch.cuh"
#include "quant_blocks.cuh"
#include "quant_dot_int8.cuh"

namespace kiln::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kChunk = 32;

using quant_detail::byte_of;
using quant_detail::half_bits;
using quant_detail::Int8X;
using quant_detail::ld16;
using quant_detail::ld_words;
using quant_detail::scale_min_k4;

// q * d + m with one rounding per operation (no contraction into an FMA): the CPU reference's
// arithmetic.
__device__ __forceinline__ float affine(int q, float d, float m) {
  return __fadd_rn(__fmul_rn(static_cast<float>(q), d), m);
}

// Chunk `c` of a row starting at `row` (device memory), dequantised into v[32].
template <QuantFormat F>
__device__ __forceinline__ void dequant_chunk(const uint8_t* row, int64_t c, float* v);

template <>
__device__ __forceinline__ void dequant_chunk<QuantFormat::Q8_0>(const uint8_t* row, int64_t c,
                                                                 float* v) {
  const uint8_t* b = row + c * 34;
  const float d = half_bits(ld16(b));
  uint32_t w[8];
  ld_words<32>(b + 2, w);
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    v[j] = __fmul_rn(static_cast<float>(static_cast<int8_t>(byte_of(w, j))), d);
  }
}

template <>
__device__ __forceinline__ void dequant_chunk<QuantFormat::Q4_0>(const uint8_t* row, int64_t c,
                                                                 float* v) {
  const uint8_t* b = row + c * 18;
  const float d = half_bits(ld16(b));
  uint32_t w[4];
  ld_words<16>(b + 2, w);
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    const int q = byte_of(w, j);
    v[j] = __fmul_rn(static_cast<float>((q & 0x0F) - 8), d);
    v[j + 16] = __fmul_rn(static_cast<float>((q >> 4) - 8), d);
  }
}

template <>
__device__ __forceinline__ void dequant_chunk<QuantFormat::Q4_1>(const uint8_t* row, int64_t c,
                                                                 float* v) {
  const uint8_t* b = row + c * 20;
  const float d = half_bits(ld16(b)), m = half_bits(ld16(b + 2));
  uint32_t w[4];
  ld_words<16>(b + 4, w);
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    const int q = byte_of(w, j);
    v[j] = affine(q & 0x0F, d, m);
    v[j + 16] = affine(q >> 4, d, m);
  }
}

template <>
__device__ __forceinline__ void dequant_chunk<QuantFormat::Q5_0>(const uint8_t* row, int64_t c,
                                                                 float* v) {
  const uint8_t* b = row + c * 22;
  const float d = half_bits(ld16(b));
  uint32_t qh;
  ld_words<4>(b + 2, &qh);
  uint32_t w[4];
  ld_words<16>(b + 6, w);
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    const int q = byte_of(w, j);
    const int lo = (q & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (q >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    v[j] = __fmul_rn(static_cast<float>(lo - 16), d);
    v[j + 16] = __fmul_rn(static_cast<float>(hi - 16), d);
  }
}

template <>
__device__ __forceinline__ void dequant_chunk<QuantFormat::Q5_1>(const uint8_t* row, int64_t c,
                                                                 float* v) {
  const uint8_t* b = row + c * 24;
  const float d = half_bits(ld16(b)), m = half_bits(ld16(b + 2));
  uint32_t qh;
  ld_words<4>(b + 4, &qh);
  uint32_t w[4];
  ld_words<16>(b + 8, w);
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    const int q = byte_of(w, j);
    const int lo = (q & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (q >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    v[j] = affine(lo, d, m);
    v[j + 16] = affine(hi, d, m);
  }
}

// Q4_K / Q5_K: chunk c is sub-block s = c % 8 of super-block c / 8; its low 4 bits are one nibble
// of the 32 quant bytes 32 * (s / 2) ..; Q5_K's fifth bit is bit s of qh[l].
template <bool kFive>
__device__ __forceinline__ void dequant_k45(const uint8_t* row, int64_t c, float* v) {
  constexpr int kBytes = kFive ? 176 : 144;
  const uint8_t* b = row + (c / 8) * kBytes;
  const int s = static_cast<int>(c % 8);
  const float d = half_bits(ld16(b)), dmin = half_bits(ld16(b + 2));
  uint32_t sw[3];
  ld_words<12>(b + 4, sw);
  const auto* scales = reinterpret_cast<const uint8_t*>(sw);
  int sc = 0, mn = 0;
  scale_min_k4(s, scales, sc, mn);
  const float dl = __fmul_rn(d, static_cast<float>(sc)),
              ml = __fmul_rn(dmin, static_cast<float>(mn));
  const uint8_t* qs = b + (kFive ? 48 : 16) + 32 * (s / 2);
  uint4 q4[2];
  q4[0] = *reinterpret_cast<const uint4*>(qs);
  q4[1] = *reinterpret_cast<const uint4*>(qs + 16);
  const auto* q = reinterpret_cast<const uint32_t*>(q4);
  const int shift = 4 * (s % 2);
  uint4 h4[2];
  if constexpr (kFive) {
    h4[0] = *reinterpret_cast<const uint4*>(b + 16);
    h4[1] = *reinterpret_cast<const uint4*>(b + 32);
  }
  const auto* h = reinterpret_cast<const uint32_t*>(h4);
#pragma unroll
  for (int l = 0; l < 32; ++l) {
    int val = (byte_of(q, l) >> shift) & 0x0F;
    if constexpr (kFive) val |= ((byte_of(h, l) >> s) & 1) << 4;
    v[l] = __fsub_rn(__fmul_rn(dl, static_cast<float>(val)), ml);
  }
}

template <>
__device__ __forceinline__ void dequant_chunk<QuantFormat::Q4_K>(const uint8_t* row, int64_t c,
                                                                 float* v) {
  dequant_k45<false>(row, c, v);
}

template <>
__device__ __forceinline__ void dequant_chunk<QuantFormat::Q5_K>(const uint8_t* row, int64_t c,
                                                                 float* v) {
  dequant_k45<true>(row, c, v);
}

// Q6_K: chunk c is group g = c % 8 of super-block c / 8: half = g / 4, k = g % 4; element l of it
// takes its low 4 bits from ql[64 * half + l + 32 * (k % 2)] (low nibble for k < 2), its top two
// from bit pair k of qh[32 * half + l], and scale 8 * half + 2 * k + l / 16.
template <>
__device__ __forceinline__ void dequant_chunk<QuantFormat::Q6_K>(const uint8_t* row, int64_t c,
                                                                 float* v) {
  const uint8_t* b = row + (c / 8) * 210;
  const int g = static_cast<int>(c % 8), half = g / 4, k = g % 4;
  const float d = half_bits(ld16(b + 208));
  uint32_t ql[8], qh[8], sw;
  ld_words<32>(b + 64 * half + 32 * (k % 2), ql);
  ld_words<32>(b + 128 + 32 * half, qh);
  ld_words<4>(b + 192 + 8 * half + 2 * k, &sw);  // scales 2k, 2k+1 of this half (bytes 0, 1)
  const float s0 = __fmul_rn(d, static_cast<float>(static_cast<int8_t>(sw & 0xFFu)));
  const float s1 = __fmul_rn(d, static_cast<float>(static_cast<int8_t>((sw >> 8) & 0xFFu)));
  const int shift = k < 2 ? 0 : 4;
#pragma unroll
  for (int l = 0; l < 32; ++l) {
    const int low = (byte_of(ql, l) >> shift) & 0x0F;
    const int q = (low | (((byte_of(qh, l) >> (2 * k)) & 3) << 4)) - 32;
    v[l] = __fmul_rn(l < 16 ? s0 : s1, static_cast<float>(q));
  }
}

// Dot of chunk c's 32 values with x[32c .. 32c + 32) (BF16, 16-byte aligned).
template <QuantFormat F>
__device__ __forceinline__ float chunk_dot(const uint8_t* row, int64_t c, const bf16* x) {
  float v[kChunk];
  dequant_chunk<F>(row, c, v);
  float acc = 0.0f;
#pragma unroll
  for (int part = 0; part < 4; ++part) {
    const uint4 xv = *reinterpret_cast<const uint4*>(x + c * kChunk + 8 * part);
    const auto* x2 = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 xf = __bfloat1622float2(x2[j]);
      acc = fmaf(v[8 * part + 2 * j], xf.x, acc);
      acc = fmaf(v[8 * part + 2 * j + 1], xf.y, acc);
    }
  }
  return acc;
}

template <QuantFormat F>
__device__ __forceinline__ float row_dot(const uint8_t* w, size_t row_bytes, int64_t row,
                                         int64_t chunks, const bf16* x, int lane) {
  const uint8_t* r = w + static_cast<size_t>(row) * row_bytes;
  float acc = 0.0f;
  for (int64_t c = lane; c < chunks; c += 32) acc += chunk_dot<F>(r, c, x);
  return detail::warp_sum(acc);
}

// The integer form: two chunks per iteration so that each lane has both chunks' loads in flight.
template <QuantFormat F>
__device__ __forceinline__ float row_dot_int8(const uint8_t* w, size_t row_bytes, int64_t row,
                                              int64_t chunks, const Int8X& xs, int lane) {
  const uint8_t* r = w + static_cast<size_t>(row) * row_bytes;
  float acc = 0.0f;
#pragma unroll 2
  for (int64_t c = lane; c < chunks; c += 32) acc += quant_detail::chunk_dot_int8<F>(r, c, xs);
  return detail::warp_sum(acc);
}

enum class Mode { kPlain, kNorm, kNormSwiglu };

// Elements 8g .. 8g + 7 of the product's x as float: the BF16 input (kPlain; 16-byte aligned) or
// bf16(norm_w ⊙ x / rms(x)) with rms_norm_kernel's arithmetic (so fused and unfused decode steps
// agree bit for bit).
template <Mode M>
__device__ __forceinline__ void x_values_8(const bf16* x, const float* x_f32, const float* norm_w,
                                           float inv_rms, int64_t g, float* v) {
  if constexpr (M == Mode::kPlain) {
    quant_detail::load_bf16_8(x + 8 * g, v);
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t i = 8 * g + j;
      v[j] = __bfloat162float(__float2bfloat16(norm_w[i] * (x_f32[i] * inv_rms)));
    }
  }
}

// kPlain: x is BF16 in global memory. kNorm / kNormSwiglu: x_f32 is normalised first
// (rms_norm_kernel's arithmetic; 256 threads). kNormSwiglu: rows i and n_rows + i are gate and up,
// out[i] = bf16(silu(gate) · up). kInt8: x is quantised into shared memory (quant_dot_int8.cuh)
// and dotted with __dp4a; otherwise the normalised x is staged there as BF16 (kPlain reads x from
// global memory) and dotted with the exactly dequantised weights in float32.
template <QuantFormat F, Mode M, bool kInt8>
__global__ void __launch_bounds__(kWarps * 32)
    quant_gemv_kernel(const bf16* x, const float* x_f32, const float* norm_w, float eps,
                      const uint8_t* w, size_t row_bytes, float* y, bf16* act, int64_t k,
                      int64_t n_rows, float beta, bool trigger_early) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if constexpr (kInt8) {
    // The weights are read by nothing else of the step: their fetch into L2 may start before the
    // inputs are ready and overlaps the quantisation of x below.
    if (row < n_rows) {
      quant_detail::prefetch_l2(w + static_cast<size_t>(row) * row_bytes, row_bytes, lane);
      if constexpr (M == Mode::kNormSwiglu) {
        quant_detail::prefetch_l2(w + static_cast<size_t>(n_rows + row) * row_bytes, row_bytes,
                                  lane);
      }
    }
  }
  // Letting the next kernel's blocks in early measured slower after this kernel (H100, 0.5B Q8_0,
  // tg128 −4.5 % with the attention kernel after it launched early, same call): by default the
  // dependents start at this grid's end (launch_overlapped_opt_in, overlapped_launch.cuh).
  if (trigger_early) detail::allow_dependents();
  detail::wait_for_inputs();
  extern __shared__ uint4 smem_raw[];
  float inv_rms = 0.0f;
  if constexpr (M != Mode::kPlain) {
    float sum_sq = 0.0f;
    for (int64_t i = threadIdx.x; i < k; i += blockDim.x) sum_sq += x_f32[i] * x_f32[i];
    inv_rms = rsqrtf(detail::block_sum(sum_sq) / static_cast<float>(k) + eps);
  }
  [[maybe_unused]] Int8X xs{};
  if constexpr (kInt8) {
    xs = quant_detail::int8_x_layout(smem_raw, k);
    // 8 elements per thread; a warp runs while its first lane has elements (whole 32-element
    // blocks per 4 lanes, so the shuffles inside a block see only lanes with data or only without).
    const int64_t groups = k / 8;
    for (int64_t g = threadIdx.x; g - threadIdx.x % 32 < groups; g += kWarps * 32) {
      float v[8] = {};
      const bool in = g < groups;
      if (in) x_values_8<M>(x, x_f32, norm_w, inv_rms, g, v);
      quant_detail::quantize_8(v, g, in, xs);
    }
    __syncthreads();
  } else if constexpr (M != Mode::kPlain) {
    bf16* staged = reinterpret_cast<bf16*>(smem_raw);
    for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
      staged[i] = __float2bfloat16(norm_w[i] * (x_f32[i] * inv_rms));
    }
    __syncthreads();
    x = staged;
  }
  if (row >= n_rows) return;
  const int64_t chunks = k / kChunk;
  auto dot = [&](int64_t r) {
    if constexpr (kInt8) {
      return row_dot_int8<F>(w, row_bytes, r, chunks, xs, lane);
    } else {
      return row_dot<F>(w, row_bytes, r, chunks, x, lane);
    }
  };
  if constexpr (M == Mode::kNormSwiglu) {
    const float g = dot(row);
    const float u = dot(n_rows + row);
    if (lane == 0) act[row] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
  } else {
    const float acc = dot(row);
    if (lane == 0) y[row] = beta == 0.0f ? acc : beta * y[row] + acc;  // y unread when beta = 0
  }
}

template <QuantFormat F>
__global__ void quant_dequantize_kernel(const uint8_t* w, size_t row_bytes, int64_t k,
                                        int64_t total_chunks, bf16* out) {
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= total_chunks) return;
  const int64_t per_row = k / kChunk;
  const int64_t row = id / per_row, c = id % per_row;
  float v[kChunk];
  dequant_chunk<F>(w + static_cast<size_t>(row) * row_bytes, c, v);
  bf16* dst = out + row * k + c * kChunk;
#pragma unroll
  for (int part = 0; part < 4; ++part) {
    uint4 packed;
    auto* p2 = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      p2[j] = __floats2bfloat162_rn(v[8 * part + 2 * j], v[8 * part + 2 * j + 1]);
    }
    *reinterpret_cast<uint4*>(dst + 8 * part) = packed;
  }
}

// One block per token: row ids[t] of the table, dequantised to float32 (out is 16-byte aligned:
// dim is whole chunks).
template <QuantFormat F>
__global__ void quant_embedding_kernel(const int32_t* ids, const uint8_t* table, size_t row_bytes,
                                       int64_t dim, float* out) {
  const int64_t t = blockIdx.x;
  const uint8_t* row = table + static_cast<size_t>(ids[t]) * row_bytes;
  for (int64_t c = threadIdx.x; c < dim / kChunk; c += blockDim.x) {
    float v[kChunk];
    dequant_chunk<F>(row, c, v);
    auto* dst = reinterpret_cast<float4*>(out + t * dim + c * kChunk);
#pragma unroll
    for (int j = 0; j < kChunk / 4; ++j) {
      dst[j] = make_float4(v[4 * j], v[4 * j + 1], v[4 * j + 2], v[4 * j + 3]);
    }
  }
}

// Calls fn.template run<F>() for the runtime format (CUDA sources are C++17: no template lambdas).
template <typename Fn>
void dispatch(QuantFormat f, const Fn& fn) {
  switch (f) {
    case QuantFormat::Q8_0:
      return fn.template run<QuantFormat::Q8_0>();
    case QuantFormat::Q4_0:
      return fn.template run<QuantFormat::Q4_0>();
    case QuantFormat::Q4_1:
      return fn.template run<QuantFormat::Q4_1>();
    case QuantFormat::Q5_0:
      return fn.template run<QuantFormat::Q5_0>();
    case QuantFormat::Q5_1:
      return fn.template run<QuantFormat::Q5_1>();
    case QuantFormat::Q4_K:
      return fn.template run<QuantFormat::Q4_K>();
    case QuantFormat::Q5_K:
      return fn.template run<QuantFormat::Q5_K>();
    case QuantFormat::Q6_K:
      return fn.template run<QuantFormat::Q6_K>();
  }
  fail(KILN_ERR_INTERNAL,
       "quantised product given format id " + std::to_string(static_cast<int>(f)));
}

// The kernels read Q4_K / Q5_K quants as uint4 (16-byte aligned in their 144 / 176-byte blocks);
// the other formats with 2-byte loads.
size_t quant_alignment(QuantFormat f) {
  return f == QuantFormat::Q4_K || f == QuantFormat::Q5_K ? 16 : 2;
}

void check_shape(const QuantMatrixView& w, const char* what) {
  const int64_t block = quant_block_elements(w.format);
  if (w.k <= 0 || w.k % block != 0 || w.rows < 0 || w.row_bytes != quant_row_bytes(w.format, w.k) ||
      reinterpret_cast<uintptr_t>(w.data) % 16 != 0) {
    fail(KILN_ERR_INTERNAL,
         std::string(what) + ": quantised matrix of " + std::to_string(w.rows) + " rows × " +
             std::to_string(w.k) + " columns (" + std::to_string(w.row_bytes) +
             " bytes per row) is not whole blocks at a " +
             std::to_string(quant_alignment(w.format)) + "-byte aligned address");
  }
}

template <Mode M>
struct GemvLaunch {
  const QuantMatrixView& w;
  const bf16* x;
  const float *x_f32, *norm_w;
  float eps;
  float* y;
  bf16* act;
  int64_t n_rows;
  float beta;
  QuantDot dot;
  cudaStream_t stream;

  template <QuantFormat F, bool kInt8>
  void launch() const {
    size_t smem = 0;
    if (kInt8) {
      smem = quant_detail::int8_x_bytes(w.k);
    } else if (M != Mode::kPlain) {
      smem = static_cast<size_t>(w.k) * sizeof(bf16);
    }
    smem = (smem + 15) / 16 * 16;
    detail::launch_overlapped_opt_in(
        quant_gemv_kernel<F, M, kInt8>, detail::grid_for(n_rows, kWarps), kWarps * 32, smem, stream,
        "quant_gemv_kernel", x, x_f32, norm_w, eps, w.data, w.row_bytes, y, act, w.k, n_rows, beta,
        detail::overlap_mode() == detail::OverlapMode::kAll);
  }

  template <QuantFormat F>
  void run() const {
    if (dot == QuantDot::kInt8 && quant_dot_int8_supported(F, w.k)) return launch<F, true>();
    launch<F, false>();
  }
};

template <Mode M>
void launch_gemv(const GemvLaunch<M>& launch) {
  if (launch.n_rows == 0) return;
  dispatch(launch.w.format, launch);
}

struct EmbeddingLaunch {
  const QuantMatrixView& table;
  const int32_t* ids;
  float* out;
  int64_t n_tokens;
  cudaStream_t stream;

  template <QuantFormat F>
  void run() const {
    quant_embedding_kernel<F><<<static_cast<unsigned>(n_tokens), 128, 0, stream>>>(
        ids, table.data, table.row_bytes, table.k, out);
  }
};

struct DequantLaunch {
  const QuantMatrixView& w;
  bf16* out;
  int64_t total;
  cudaStream_t stream;

  template <QuantFormat F>
  void run() const {
    constexpr int kThreads = 256;
    quant_dequantize_kernel<F><<<detail::grid_for(total, kThreads), kThreads, 0, stream>>>(
        w.data, w.row_bytes, w.k, total, out);
  }
};

}  // namespace

int64_t quant_block_elements(QuantFormat f) {
  switch (f) {
    case QuantFormat::Q4_K:
    case QuantFormat::Q5_K:
    case QuantFormat::Q6_K:
      return 256;
    default:
      return 32;
  }
}

size_t quant_block_bytes(QuantFormat f) {
  switch (f) {
    case QuantFormat::Q8_0:
      return 34;
    case QuantFormat::Q4_0:
      return 18;
    case QuantFormat::Q4_1:
      return 20;
    case QuantFormat::Q5_0:
      return 22;
    case QuantFormat::Q5_1:
      return 24;
    case QuantFormat::Q4_K:
      return 144;
    case QuantFormat::Q5_K:
      return 176;
    case QuantFormat::Q6_K:
      return 210;
  }
  return 0;
}

size_t quant_row_bytes(QuantFormat f, int64_t k) {
  return static_cast<size_t>(k / quant_block_elements(f)) * quant_block_bytes(f);
}

bool quant_dot_int8_supported(QuantFormat f, int64_t k) {
  // The default limit of dynamic shared memory per block, which needs no opt-in.
  constexpr size_t kSharedLimit = 48 * 1024;
  return k > 0 && k % quant_block_elements(f) == 0 && quant_detail::int8_x_bytes(k) <= kSharedLimit;
}

void quant_gemv(const QuantMatrixView& w, const bf16* x, float* y, float beta, QuantDot dot,
                cudaStream_t stream) {
  check_shape(w, "quant_gemv");
  launch_gemv(GemvLaunch<Mode::kPlain>{w, x, nullptr, nullptr, 0.0f, y, nullptr, w.rows, beta, dot,
                                       stream});
}

void rms_norm_quant_gemv(const float* x, const float* norm_w, float eps, const QuantMatrixView& w,
                         float* y, float beta, QuantDot dot, cudaStream_t stream) {
  check_shape(w, "rms_norm_quant_gemv");
  if (!rms_norm_gemv_supported(w.k)) {
    fail(KILN_ERR_INTERNAL, "rms_norm_quant_gemv: k = " + std::to_string(w.k) + " too large");
  }
  launch_gemv(
      GemvLaunch<Mode::kNorm>{w, nullptr, x, norm_w, eps, y, nullptr, w.rows, beta, dot, stream});
}

void rms_norm_quant_gemv_swiglu(const float* x, const float* norm_w, float eps,
                                const QuantMatrixView& w_gate_up, bf16* out, QuantDot dot,
                                cudaStream_t stream) {
  check_shape(w_gate_up, "rms_norm_quant_gemv_swiglu");
  if (!rms_norm_gemv_supported(w_gate_up.k) || w_gate_up.rows % 2 != 0) {
    fail(KILN_ERR_INTERNAL, "rms_norm_quant_gemv_swiglu: k = " + std::to_string(w_gate_up.k) +
                                ", rows = " + std::to_string(w_gate_up.rows));
  }
  launch_gemv(GemvLaunch<Mode::kNormSwiglu>{w_gate_up, nullptr, x, norm_w, eps, nullptr, out,
                                            w_gate_up.rows / 2, 0.0f, dot, stream});
}

void quant_embedding_gather(const int32_t* ids, const QuantMatrixView& table, float* out,
                            int64_t n_tokens, cudaStream_t stream) {
  check_shape(table, "quant_embedding_gather");
  if (n_tokens == 0) return;
  dispatch(table.format, EmbeddingLaunch{table, ids, out, n_tokens, stream});
  check_launch("quant_embedding_kernel");
}

void quant_dequantize_bf16(const QuantMatrixView& w, bf16* out, cudaStream_t stream) {
  check_shape(w, "quant_dequantize_bf16");
  const int64_t total = w.rows * (w.k / kChunk);
  if (total == 0) return;
  dispatch(w.format, DequantLaunch{w, out, total, stream});
  check_launch("quant_dequantize_kernel");
}

}  // namespace kiln::cuda
