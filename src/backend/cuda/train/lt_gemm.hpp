// Row-major matrix products of the CUDA trainer through cuBLASLt: BF16 inputs, float32
// accumulation, a float32 or BF16 output, an optional bias in the epilogue and an optional
// accumulator C that may differ from the output D (the residual add of o_proj / down_proj, and
// dW += dYᵀ·X with C = D), and the training epilogues that fold an elementwise kernel into the
// product: bias + GELU-tanh keeping the pre-activation (forward of a GELU MLP), GELU's derivative
// from that pre-activation with the bias gradient (its backward), and the bias gradient of a
// weight-gradient product. Plans (descriptors + the heuristic's algorithm) are cached per shape
// and pointer alignment, so a training step after the first creates nothing.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "backend/cuda/device_memory.hpp"

namespace kiln::cuda::train {

enum class OutType { F32, BF16 };

// What the epilogue does besides the optional bias (RowGemm::bias) of kNone. Bias and bias
// gradient vectors are over D's columns (n; cuBLASLt's rows in its column-major view), except
// kBiasGradOfA's.
enum class Epilogue {
  kNone,
  // D = gelu_tanh(A·B (+ bias)); aux [m × n] (ld_aux, D's type) = A·B (+ bias), the
  // pre-activation the backward needs.
  kGeluAux,
  // D = (A·B) ⊙ gelu_tanh'(aux), aux as kGeluAux wrote it; bias_grad (nullable) = Σ over D's
  // rows of D ("=", not "+=").
  kDGeluBiasGrad,
  // bias_grad = Σ over k of op(A) (length m, "="): the bias gradient of a linear layer from the
  // weight-gradient product dW = dYᵀ·X (A = dY with trans_a).
  kBiasGradOfA,
};

// D[m × n] (ldd) = op(A)[m × k] · op(B)[k × n] + beta · C (+ bias[n] broadcast over rows). All
// row-major: A is stored [m × k] (lda) or, with trans_a, [k × m]; B [k × n] (ldb) or, with
// trans_b, [n × k]. C and D share type and ldd; C may be D (in place) or null when beta == 0.
// The bias has D's type.
struct RowGemm {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const __nv_bfloat16* a = nullptr;
  int64_t lda = 0;
  const __nv_bfloat16* b = nullptr;
  int64_t ldb = 0;
  void* d = nullptr;
  int64_t ldd = 0;
  OutType out = OutType::F32;
  const void* c = nullptr;
  float beta = 0.0f;
  const void* bias = nullptr;
  Epilogue epilogue = Epilogue::kNone;
  void* aux = nullptr;  // kGeluAux (written) / kDGeluBiasGrad (read)
  int64_t ld_aux = 0;   // in elements, a multiple of 8
  void* bias_grad = nullptr;
  OutType bias_grad_type = OutType::F32;  // cuBLASLt may support only D's type
};

class LtGemm {
 public:
  // Takes a `workspace_bytes` device workspace from `allocator`.
  LtGemm(std::shared_ptr<DeviceAllocator> allocator, size_t workspace_bytes);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // Enqueues on `stream`. Throws KILN_ERR_UNSUPPORTED for dimensions beyond 32 bits and
  // KILN_ERR_BACKEND when cuBLASLt has no algorithm or fails (naming the shape).
  void run(const RowGemm& g, cudaStream_t stream);
  // Whether cuBLASLt has an algorithm for `g` (its shape, types, epilogue and alignments); the
  // answer is cached like a plan.
  bool supported(const RowGemm& g);
  // run() where cuBLASLt can: false, with nothing enqueued, when it has no algorithm or rejects
  // the call's epilogue/type combination (then supported() says no from now on). For the
  // optional epilogues, whose support the heuristic alone does not always settle.
  bool try_run(const RowGemm& g, cudaStream_t stream);

 private:
  struct Plan;
  using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int,
                         bool, bool, bool, int, int, int, int, int, int64_t, bool, int, int, int>;
  static Key key_of(const RowGemm& g);
  // Null when cuBLASLt has no algorithm (remembered, so asking again costs a lookup).
  Plan* plan(const RowGemm& g);
  static void check_dims(const RowGemm& g);
  cublasStatus_t launch(Plan& p, const RowGemm& g, cudaStream_t stream);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace kiln::cuda::train
