// The decode step's quantised GEMV with x quantised ONCE per product (v13, issue 5): a small kernel
// (quantize_x_int8) writes x's int8 values, per-32 scales and per-16 sums into a device buffer in
// the layout of quant_dot_int8.cuh's Int8X, and the product kernel dots the weight chunks with it
// straight from global memory (L1-resident: 26 KB for k = 18944). The per-block path
// (quant_gemv.cu, QuantDot::kInt8) re-quantises the whole x in every 8-row block: for the 7B
// down_proj (k = 18944, 448 blocks) that is 448 × 18944 elements of redundant work and ~38 KB of
// BF16 x read per 8 rows (~85 KB of Q4_K weights), all before the first weight is dotted.
//
// Layout (QuantGemvLayout): a block is 8 warps; S warps share a "row group" of R consecutive rows,
// the group's 32·S threads walking the R·(k/32) chunks of those rows as one flat sequence (thread
// t takes chunks t, t + 32·S, ...), so that short rows leave no idle lanes at their end and a long
// row is spread over S warps. Each warp reduces its per-row partial sums by shuffles; with S > 1
// the S partials of a row are added in warp order in shared memory (deterministic: a fixed shape
// gives a fixed summation order). The chunk arithmetic is quant_dot_int8.cuh's, so the result is
// the exact product of the weights with the same int8 x as the per-block path, up to float
// rounding in a different order.
#include <cuda_bf16.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "core/error.hpp"
#include "overlapped_launch.cuh"
#include "quant_dot_int8.cuh"

namespace kiln::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kChunk = 32;
constexpr int kQuantizeThreads = 256;

using quant_detail::Int8X;

// One thread per 8 elements: elements 8g .. 8g + 7 of x (BF16, 16-byte aligned) quantised into xq
// by quantize_8 (the four lanes of a 32-element block sit in one warp: blockDim is a multiple of
// 32 and k a multiple of 32, so a warp's lanes are all in range or the tail lanes hold whole
// blocks past the end).
__global__ void __launch_bounds__(kQuantizeThreads)
    quantize_x_kernel(const bf16* x, int64_t k, uint8_t* xq) {
  detail::allow_dependents();
  detail::wait_for_inputs();
  const Int8X xs = quant_detail::int8_x_layout(xq, k);
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  quant_detail::quantize_bf16_8(x, g, g < k / 8, xs);
}

// Per thread: the chunks t, t + 32·S, ... of the group's rows. kSharedX: each of those chunk
// indices of the first row, dotted with the same chunk of every row of the group (one load of x
// per chunk for R rows: rows past the matrix read row 0 again and are not stored, so the R dots
// are branch-free and their x loads are one). Otherwise the R·(k/32) chunks as one flat sequence.
// The weight-side unit of work: one 32-element chunk, or (kWide, Q4_K) a pair of chunks.
template <QuantFormat F, bool kWide>
struct ChunkDot {
  static constexpr int kElements = 32;
  static __device__ __forceinline__ float dot(const uint8_t* row, int64_t c, const Int8X& xs) {
    return quant_detail::chunk_dot_int8<F>(row, c, xs);
  }
};
template <>
struct ChunkDot<QuantFormat::Q4_K, true> {
  static constexpr int kElements = 64;
  static __device__ __forceinline__ float dot(const uint8_t* row, int64_t p, const Int8X& xs) {
    return quant_detail::pair_dot_q4k(row, p, xs);
  }
};

template <QuantFormat F, int S, int R, bool kSharedX, bool kWide>
__global__ void __launch_bounds__(kWarps * 32)
    quant_gemv_prequant_kernel(const uint8_t* __restrict__ w, size_t row_bytes,
                               const uint8_t* __restrict__ xq, float* y, int64_t k, int64_t n_rows,
                               float beta, int prefetch_lines) {
  static_assert(kWarps % S == 0 && (R == 1 || R == 2 || (R == 4 && kSharedX)), "layout");
  constexpr int kGroups = kWarps / S;
  constexpr int kThreads = 32 * S;  // threads of a row group
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = warp / S, t = (warp % S) * 32 + lane;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kGroups + group) * R;
  const int rows_here = row0 < n_rows ? static_cast<int>(n_rows - row0 < R ? n_rows - row0 : R) : 0;
  const uint8_t* base = w + static_cast<size_t>(row0) * row_bytes;
  // The weights are read by nothing else of the step: their fetch into L2 may start before the
  // inputs are ready (overlapped launch) and runs ahead of the loop's own loads.
  const size_t group_bytes = static_cast<size_t>(rows_here) * row_bytes;
  for (int i = 0; i < prefetch_lines; ++i) {
    const size_t offset = 128 * (static_cast<size_t>(i) * kThreads + t);
    if (offset < group_bytes) asm volatile("prefetch.global.L2 [%0];" ::"l"(base + offset));
  }
  detail::allow_dependents();
  detail::wait_for_inputs();
  const Int8X xs = quant_detail::int8_x_layout(const_cast<uint8_t*>(xq), k);
  using Dot = ChunkDot<F, kWide>;
  const int chunks = static_cast<int>(k / Dot::kElements);
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  if constexpr (kSharedX) {
    const uint8_t* rows[R];
#pragma unroll
    for (int r = 0; r < R; ++r)
      rows[r] = base + static_cast<size_t>(r < rows_here ? r : 0) * row_bytes;
    const int end = rows_here > 0 ? chunks : 0;
#pragma unroll 2
    for (int c = t; c < end; c += kThreads) {
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] += Dot::dot(rows[r], c, xs);
    }
  } else {
    const int total = rows_here * chunks;
#pragma unroll 2
    for (int f = t; f < total; f += kThreads) {
      if constexpr (R == 1) {
        acc[0] += Dot::dot(base, f, xs);
      } else {
        const int second = f >= chunks ? 1 : 0;
        const float v = Dot::dot(base + second * row_bytes, f - second * chunks, xs);
        if (second) {
          acc[1] += v;
        } else {
          acc[0] += v;
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = detail::warp_sum(acc[r]);
  auto store = [&](int r, float sum) {
    float* out = y + row0 + r;
    *out = beta == 0.0f ? sum : beta * *out + sum;  // y unread when beta = 0
  };
  if constexpr (S == 1) {
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r < rows_here) store(r, acc[r]);
      }
    }
  } else {
    __shared__ float partial[kWarps][R];
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r) partial[warp][r] = acc[r];
    }
    __syncthreads();
    if (t < rows_here) {  // first warp of the group, one lane per row
      float sum = 0.0f;
#pragma unroll
      for (int i = 0; i < S; ++i) sum += partial[group * S + i][t];
      store(t, sum);
    }
  }
}

// Calls fn.template run<F>() for the runtime format (CUDA sources are C++17: no template lambdas).
template <typename Fn>
void dispatch_format(QuantFormat f, const Fn& fn) {
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

struct PrequantLaunch {
  const QuantMatrixView& w;
  const void* xq;
  float* y;
  float beta;
  QuantGemvLayout layout;
  cudaStream_t stream;

  template <QuantFormat F, int S, int R, bool kSharedX>
  void launch() const {
    if constexpr (F == QuantFormat::Q4_K) {
      if (layout.wide_chunks) return launch_kernel<F, S, R, kSharedX, true>();
    }
    launch_kernel<F, S, R, kSharedX, false>();
  }

  template <QuantFormat F, int S, int R, bool kSharedX, bool kWide>
  void launch_kernel() const {
    const int64_t rows_per_block = static_cast<int64_t>(kWarps / S) * R;
    detail::launch_overlapped(quant_gemv_prequant_kernel<F, S, R, kSharedX, kWide>,
                              detail::grid_for(w.rows, static_cast<int>(rows_per_block)),
                              kWarps * 32, 0, stream, "quant_gemv_prequant_kernel", w.data,
                              w.row_bytes, static_cast<const uint8_t*>(xq), y, w.k, w.rows, beta,
                              layout.prefetch_lines);
  }

  template <QuantFormat F, int S>
  void with_rows() const {
    if (layout.rows_per_group == 4) return launch<F, S, 4, true>();
    if (layout.rows_per_group == 2 && layout.shared_x) return launch<F, S, 2, true>();
    if (layout.rows_per_group == 2) return launch<F, S, 2, false>();
    launch<F, S, 1, false>();
  }

  template <QuantFormat F>
  void run() const {
    switch (layout.warps_per_row) {
      case 2:
        return with_rows<F, 2>();
      case 4:
        return with_rows<F, 4>();
      case 8:
        return with_rows<F, 8>();
      default:
        return with_rows<F, 1>();
    }
  }
};

bool valid_layout(QuantGemvLayout l) {
  const bool s_ok =
      l.warps_per_row == 1 || l.warps_per_row == 2 || l.warps_per_row == 4 || l.warps_per_row == 8;
  const bool r_ok =
      l.rows_per_group == 1 || l.rows_per_group == 2 || (l.rows_per_group == 4 && l.shared_x);
  return s_ok && r_ok && l.prefetch_lines >= 0 && l.prefetch_lines <= 64;
}

std::string layout_name(QuantGemvLayout l) {
  return std::to_string(l.warps_per_row) + " warps per row, " + std::to_string(l.rows_per_group) +
         " rows per group" + (l.shared_x ? " sharing x" : "") +
         (l.wide_chunks ? ", chunk pairs" : "") + ", " + std::to_string(l.prefetch_lines) +
         " prefetch lines";
}

void check_prequant_shape(const QuantMatrixView& w, const void* xq) {
  const int64_t block = quant_block_elements(w.format);
  if (w.k <= 0 || w.k % block != 0 || w.rows < 0 || w.row_bytes != quant_row_bytes(w.format, w.k) ||
      reinterpret_cast<uintptr_t>(w.data) % 16 != 0 || reinterpret_cast<uintptr_t>(xq) % 16 != 0 ||
      w.k / kChunk > INT32_MAX / 2 || w.rows > INT32_MAX) {
    fail(KILN_ERR_INTERNAL, "quant_gemv_prequantized: quantised matrix of " +
                                std::to_string(w.rows) + " rows × " + std::to_string(w.k) +
                                " columns (" + std::to_string(w.row_bytes) +
                                " bytes per row) is not whole blocks at 16-byte aligned addresses");
  }
}

}  // namespace

size_t quantized_x_bytes(int64_t k) { return quant_detail::int8_x_bytes(k); }

void quantize_x_int8(const bf16* x, int64_t k, void* xq, cudaStream_t stream) {
  if (k <= 0 || k % kChunk != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(xq) % 16 != 0) {
    fail(KILN_ERR_INTERNAL, "quantize_x_int8: k = " + std::to_string(k) +
                                " is not whole 32-element blocks at 16-byte aligned addresses");
  }
  detail::launch_overlapped(quantize_x_kernel, detail::grid_for(k / 8, kQuantizeThreads),
                            kQuantizeThreads, 0, stream, "quantize_x_kernel", x, k,
                            static_cast<uint8_t*>(xq));
}

// The layout table (H100 decode, one token), chosen from tools/bench/quant_gemv_variants.cu's
// measurements (tools/gpu/NOTES.md keeps them and the first guesses).
namespace {

// Blocks of 8 warps a layout gives a matrix of `rows` rows; fewer than 2 per SM leave SMs idle.
constexpr int64_t kMinBlocks = 2 * 132;
int64_t blocks_of(int64_t rows, QuantGemvLayout l) {
  return rows * l.warps_per_row / (static_cast<int64_t>(kWarps) * l.rows_per_group);
}

// Session 6's table (KILN_CUDA_QGEMV_TABLE=v13, for A/B in one process tree).
QuantGemvLayout v13_layout(QuantFormat format, int64_t rows, int64_t k) {
  if (k >= 8192) {
    if (format == QuantFormat::Q8_0) return QuantGemvLayout{8, 1, 0, false};
    if (format == QuantFormat::Q6_K) return QuantGemvLayout{4, 2, 0, true};
    return QuantGemvLayout{4, 1, 0, false};
  }
  if (k >= 2048) {
    if (format == QuantFormat::Q8_0) return QuantGemvLayout{8, 2, 1, true};
    if (format == QuantFormat::Q6_K) return QuantGemvLayout{4, 2, 1, true};
    return QuantGemvLayout{4, 4, 1, true};
  }
  QuantGemvLayout l{1, 2, 1, false};
  if (blocks_of(rows, l) < kMinBlocks) l.rows_per_group = 1;
  return l;
}

// KILN_CUDA_QGEMV_TABLE (read per launch; launches are captured once per decode graph):
// "v13" — session 6's table; "wide" — this table with Q4_K chunk pairs at 2048 <= k < 8192;
// unset — this table.
enum class TableChoice { kCurrent, kV13, kWide };
TableChoice table_from_environment() {
  const char* env = std::getenv("KILN_CUDA_QGEMV_TABLE");
  if (env == nullptr) return TableChoice::kCurrent;
  if (std::string(env) == "v13") return TableChoice::kV13;
  if (std::string(env) == "wide") return TableChoice::kWide;
  return TableChoice::kCurrent;
}

}  // namespace

QuantGemvLayout quant_gemv_layout(QuantFormat format, int64_t rows, int64_t k) {
  const TableChoice choice = table_from_environment();
  if (choice == TableChoice::kV13) return v13_layout(format, rows, k);
  const bool mid_k = k >= 2048 && k < 8192;
  // Q8_0 at 2048 <= k < 8192: 8 warps × 2 rows, each row's own x, prefetch 4 (H100, 2026-11-25,
  // quant_gemv_variants alone: 7B q/k/v 7.25 µs against 8×2s's 7.37, gate/up 47.2 against 47.3;
  // end to end, alternating A/B in one call: 7B Q8_0 tg128 290.7 / 292.6 against 288.9 / 286.3).
  // The K-quants keep session 6's layouts: Q4_K chunk pairs (2 warps × 4 rows sharing x) and
  // 8-warp rows for k >= 8192 were faster alone (gate/up 28.2 against 29.1 µs, down 16.5 against
  // 17.3) but slower end to end (7B Q4_K_M 372.3 / 369.9 against 379.0 / 377.0 tok/s).
  if (format == QuantFormat::Q8_0 && mid_k) return QuantGemvLayout{8, 2, 4, false};
  if (choice == TableChoice::kWide && format == QuantFormat::Q4_K && mid_k) {
    return QuantGemvLayout{2, 4, 1, true, true};
  }
  QuantGemvLayout l = v13_layout(format, rows, k);
  // Short rows (the 0.5B shape's o_proj, 896 × 896, whose x the attention kernel quantises): two
  // warps per row when one leaves fewer than 2 blocks per SM.
  if (k < 2048 && blocks_of(rows, l) < kMinBlocks) l.warps_per_row = 2;
  return l;
}

void quant_gemv_prequantized(const QuantMatrixView& w, const void* xq, float* y, float beta,
                             QuantGemvLayout layout, cudaStream_t stream) {
  check_prequant_shape(w, xq);
  if (!valid_layout(layout)) {
    fail(KILN_ERR_INTERNAL, "quant_gemv_prequantized: no kernel for " + layout_name(layout));
  }
  if (w.rows == 0) return;
  dispatch_format(w.format, PrequantLaunch{w, xq, y, beta, layout, stream});
}

void quant_gemv_prequantized(const QuantMatrixView& w, const void* xq, float* y, float beta,
                             cudaStream_t stream) {
  quant_gemv_prequantized(w, xq, y, beta, quant_gemv_layout(w.format, w.rows, w.k), stream);
}

}  // namespace kiln::cuda
