// Muon on the device for the CUDA trainer: one update of one 2-D float32 master weight, the
// formula of train/optimizer/muon.hpp (momentum / Nesterov lerps, Frobenius normalisation into the
// wide orientation, the Newton-Schulz quintic, p -= lr · sqrt(max(1, rows / cols)) · X, optional
// decoupled decay). The Newton-Schulz matrix products are cuBLAS SGEMMs in pedantic float32 math
// (no TF32, no reduced-precision reductions), so the iteration follows the CPU optimizer's float32
// one to float rounding; the Frobenius norm is the fixed-order double reduction of sum_squares.
// Everything is enqueued on one stream in a fixed order: the same inputs give bit-identical
// results on the same GPU.
#pragma once

#include <cstdint>

#include "backend/cuda/cuda_handles.hpp"
#include "backend/cuda/device_memory.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "train/optimizer/muon.hpp"

namespace kiln::cuda::train {

class MuonUpdater {
 public:
  // Scratch for matrices of up to max_numel elements whose shorter side is at most max_short,
  // allocated here once (KILN_ERR_OUT_OF_MEMORY names it); nothing is allocated per update.
  MuonUpdater(DeviceAllocator& allocator, int64_t max_numel, int64_t max_short,
              cudaStream_t stream);

  // out [rows × cols] (device) = the Newton-Schulz orthogonalisation of g [rows × cols] (device),
  // `steps` iterations. out must not alias g. Throws KILN_ERR_INVALID_ARGUMENT for a shape beyond
  // the scratch.
  void newton_schulz5(const float* g, float* out, int64_t rows, int64_t cols, int steps);

  // One Muon update of p [rows × cols] from grad · *grad_scale (grad_scale: device float, the
  // clipping factor; null = 1) with momentum buffer buf, in place; p_bf16 (nullable) gets bf16(p).
  void update(float* p, bf16* p_bf16, const float* grad, const float* grad_scale, float* buf,
              int64_t rows, int64_t cols, const MuonStep& step);

 private:
  void check_shape(int64_t rows, int64_t cols) const;
  // Leaves X (wide: min × max of rows, cols) in the returned scratch buffer.
  float* orthogonalise(const float* u, int64_t rows, int64_t cols, int steps);
  // Row-major C [m × n] = alpha · op(A) · op(B) + beta · C in float32.
  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
            const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
            int64_t ldc);

  cudaStream_t stream_;
  CublasHandle blas_;
  int64_t max_numel_, max_short_;
  DeviceBuffer scratch_;
  float *u_ = nullptr, *x_ = nullptr, *y_ = nullptr, *a_ = nullptr, *b_ = nullptr;
  double *sum_squares_ = nullptr, *sum_squares_ws_ = nullptr;
};

}  // namespace kiln::cuda::train
