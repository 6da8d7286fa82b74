// Tensor-core building blocks shared by the attention kernels (kernels/train_attention.cu,
// kernels/attention_prefill_mma.cu): mma.sync m16n8k16 BF16 with float32 accumulation, ldmatrix
// fragment loads, cp.async tile copies (all sm_80 and later).
//
// Fragment layouts are the PTX ISA's for mma.m16n8k16 (g = lane / 4, c = lane % 4):
//   A (16 × 16, row-major): a0 (g, 2c..2c+1), a1 (g+8, 2c..), a2 (g, 2c+8..), a3 (g+8, 2c+8..)
//   B (16 × 8, k × n):      b0 (k 2c..2c+1, n g), b1 (k 2c+8..2c+9, n g)
//   C (16 × 8, row-major):  c0 c1 (g, 2c..2c+1), c2 c3 (g+8, 2c..2c+1)
// so a C tile pair of one product is directly the A fragment of the next (P·V, dS·K, ...).
// Tiles in shared memory are row-major BF16 with rows padded by 8 elements: the fragment loads
// of a warp then hit 32 different banks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace kiln::cuda::mma {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ uint32_t pack_raw(bf16 lo, bf16 hi) {
  const uint32_t l = __bfloat16_as_ushort(lo), h = __bfloat16_as_ushort(hi);
  return l | (h << 16);
}

// Two floats as one register of BF16 pair, `lo` in the low half (the lower column index).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return pack_raw(v.x, v.y);
}

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ldmatrix: lanes 8i .. 8i+7 give the row addresses of 8 × 8 matrix i; register i of lane t then
// holds row t/4, elements 2(t%4) and 2(t%4)+1 of matrix i (with .trans: column t/4, rows 2(t%4)
// and 2(t%4)+1, i.e. of the transposed matrix).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

// A fragment of rows [r0, r0+16) × columns [k0, k0+16) of a row-major tile with row stride ld:
// matrices (rows +0, cols +0), (+8, +0), (+0, +8), (+8, +8) are a0 .. a3.
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* s, int ld, int r0, int k0,
                                       int lane) {
  ldmatrix_x4(a, s + (r0 + (lane & 15)) * ld + k0 + (lane >> 4) * 8);
}

// B fragments of two n-tiles, n0 and n0+8, with B[k][n] = M[n0 + n][k0 + k] (M row-major: the
// product with Mᵀ): matrices (rows n0, cols k0), (n0, k0+8), (n0+8, k0), (n0+8, k0+8) are
// b0, b1 of tile n0 and b0, b1 of tile n0+8.
__device__ __forceinline__ void load_b_trans2(uint32_t (&b)[4], const bf16* s, int ld, int n0,
                                              int k0, int lane) {
  ldmatrix_x4(b, s + (n0 + (lane & 7) + ((lane >> 4) << 3)) * ld + k0 + (((lane >> 3) & 1) << 3));
}

// B fragments of two n-tiles with B[k][n] = M[k0 + k][n0 + n] (M row-major: the product with M
// itself), through ldmatrix.trans: matrices (rows k0, cols n0), (k0+8, n0), (k0, n0+8),
// (k0+8, n0+8) are b0, b1 of tile n0 and b0, b1 of tile n0+8.
__device__ __forceinline__ void load_b2(uint32_t (&b)[4], const bf16* s, int ld, int k0, int n0,
                                        int lane) {
  ldmatrix_x4_trans(
      b, s + (k0 + (lane & 7) + (((lane >> 3) & 1) << 3)) * ld + n0 + ((lane >> 4) << 3));
}

__device__ __forceinline__ void mma_pair(float (&d0)[4], float (&d1)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[4]) {
  const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
  mma_bf16(d0, a, b0);
  mma_bf16(d1, a, b1);
}

// 2^x on the special-function unit with subnormal results flushed to zero (a probability below
// 2^-126 counts as 0): one MUFU.EX2, where exp2f (ex2.approx without .ftz) adds range fix-ups
// around it — measurable in attention, which takes one exponential per score.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// 16-byte asynchronous copies global → shared (sm_80+); src_bytes 0 writes zeros.
__device__ __forceinline__ void cp_async16(bf16* dst, const bf16* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

// The A fragment for k-step kk of a product whose left operand is a C-layout accumulator
// (16 rows × 8·n tiles): tiles 2kk and 2kk+1 form columns [16kk, 16kk+16).
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&t0)[4],
                                       const float (&t1)[4]) {
  a[0] = pack_bf16(t0[0], t0[1]);
  a[1] = pack_bf16(t0[2], t0[3]);
  a[2] = pack_bf16(t1[0], t1[1]);
  a[3] = pack_bf16(t1[2], t1[3]);
}

// Starts copying rows [row0, row0 + kRows) of a matrix with row stride gstride into a padded
// shared tile; rows at or past n_rows and columns at or past D become zero (so masked products
// stay finite). The caller commits and waits (cp_async_commit, cp_async_wait_all).
template <int kRows, int kD>
__device__ __forceinline__ void load_tile(bf16* s, const bf16* g, int64_t gstride, int row0,
                                          int n_rows, int D) {
  constexpr int kLd = kD + 8;
  constexpr int kChunks = kD / 8;
  for (int i = threadIdx.x; i < kRows * kChunks; i += blockDim.x) {
    const int r = i / kChunks, col = (i % kChunks) * 8;
    const bool in = row0 + r < n_rows && col < D;
    const bf16* src = in ? g + static_cast<int64_t>(row0 + r) * gstride + col : g;
    cp_async16(s + r * kLd + col, src, in ? 16 : 0);
  }
}

template <int kD>
__host__ __device__ constexpr size_t tile_bytes(int rows) {
  return static_cast<size_t>(rows) * (kD + 8) * sizeof(bf16);
}

}  // namespace kiln::cuda::mma
