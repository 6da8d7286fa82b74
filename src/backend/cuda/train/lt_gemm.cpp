#include "backend/cuda/train/lt_gemm.hpp"

#include <limits>
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"

namespace kiln::cuda::train {

namespace {

void lt_check(cublasStatus_t status, const char* call) { check(status, call); }
#define KILN_LT_CHECK(call) lt_check((call), #call)

// The largest power of two (up to 256) dividing the address: cuBLASLt picks only algorithms that
// work at that alignment.
int alignment(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && v % static_cast<uintptr_t>(a) != 0) a /= 2;
  return a;
}

std::string shape(const RowGemm& g) {
  return std::to_string(g.m) + " × " + std::to_string(g.k) + (g.trans_a ? " (Aᵀ)" : "") + " by " +
         std::to_string(g.k) + " × " + std::to_string(g.n) + (g.trans_b ? " (Bᵀ)" : "");
}

cublasLtEpilogue_t lt_epilogue(const RowGemm& g) {
  switch (g.epilogue) {
    case Epilogue::kNone:
      return g.bias != nullptr ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    case Epilogue::kGeluAux:
      return g.bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    case Epilogue::kDGeluBiasGrad:
      return g.bias_grad != nullptr ? CUBLASLT_EPILOGUE_DGELU_BGRAD : CUBLASLT_EPILOGUE_DGELU;
    case Epilogue::kBiasGradOfA:
      // Our A is cuBLASLt's B (see plan()): its bias gradient is over the columns of its D.
      return CUBLASLT_EPILOGUE_BGRADB;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

cudaDataType_t data_type(OutType t) { return t == OutType::F32 ? CUDA_R_32F : CUDA_R_16BF; }

// The epilogue's own arguments, before any cuBLASLt call (a bad one would otherwise surface as an
// opaque CUBLAS_STATUS_INVALID_VALUE).
void check_epilogue(const RowGemm& g) {
  const bool needs_aux = g.epilogue == Epilogue::kGeluAux || g.epilogue == Epilogue::kDGeluBiasGrad;
  if (needs_aux && (g.aux == nullptr || g.ld_aux < g.n || g.ld_aux % 8 != 0)) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "training matrix product " + shape(g) +
             ": the GELU epilogue needs an aux matrix with ld >= " + std::to_string(g.n) +
             " and a multiple of 8, got " + (g.aux == nullptr ? "none" : std::to_string(g.ld_aux)));
  }
  if (g.epilogue == Epilogue::kBiasGradOfA && g.bias_grad == nullptr) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "training matrix product " + shape(g) + ": the bias-gradient epilogue has no output");
  }
  if ((g.epilogue == Epilogue::kDGeluBiasGrad || g.epilogue == Epilogue::kBiasGradOfA) &&
      g.bias != nullptr) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "training matrix product " + shape(g) + ": a bias-gradient epilogue takes no bias input");
  }
}

}  // namespace

struct LtGemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, cd = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (cd) cublasLtMatrixLayoutDestroy(cd);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

LtGemm::LtGemm(std::shared_ptr<DeviceAllocator> allocator, size_t workspace_bytes) {
  workspace_ = allocator->allocate(workspace_bytes, "cuBLASLt workspace");
  KILN_LT_CHECK(cublasLtCreate(&handle_));
}

LtGemm::~LtGemm() {
  plans_.clear();
  if (handle_) cublasLtDestroy(handle_);
}

LtGemm::Key LtGemm::key_of(const RowGemm& g) {
  return Key{g.trans_a,
             g.trans_b,
             g.m,
             g.n,
             g.k,
             g.lda,
             g.ldb,
             g.ldd,
             static_cast<int>(g.out),
             g.bias != nullptr,
             g.beta != 0.0f,
             g.c == g.d,
             alignment(g.a),
             alignment(g.b),
             alignment(g.d),
             g.c ? alignment(g.c) : 256,
             static_cast<int>(g.epilogue),
             g.ld_aux,
             g.bias_grad != nullptr,
             static_cast<int>(g.bias_grad_type),
             g.aux ? alignment(g.aux) : 256,
             g.bias_grad ? alignment(g.bias_grad) : 256};
}

LtGemm::Plan* LtGemm::plan(const RowGemm& g) {
  const Key key = key_of(g);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();

  // Column-major view: the row-major D[m × n] is Dᵀ[n × m] = op(B)ᵀ · op(A)ᵀ, so cuBLASLt's A is
  // our B and its B our A; a row-major matrix read column-major is its transpose.
  auto p = std::make_unique<Plan>();
  const cudaDataType_t out = data_type(g.out);
  KILN_LT_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  KILN_LT_CHECK(
      cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
  KILN_LT_CHECK(
      cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
  // The epilogue's attributes: a value this cuBLASLt refuses makes the product unsupported (the
  // engine then keeps its kernels), not an error. The pointers are set here too: the heuristic
  // reads their alignment from them.
  const cublasLtEpilogue_t epilogue = lt_epilogue(g);
  cublasStatus_t set = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                      &epilogue, sizeof epilogue);
  const bool grad_epilogue =
      g.epilogue == Epilogue::kDGeluBiasGrad || g.epilogue == Epilogue::kBiasGradOfA;
  const void* vector = grad_epilogue ? g.bias_grad : g.bias;
  if (vector != nullptr) {
    const cudaDataType_t bias_type = grad_epilogue ? data_type(g.bias_grad_type) : out;
    if (set == CUBLAS_STATUS_SUCCESS) {
      set = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                           sizeof bias_type);
    }
    if (set == CUBLAS_STATUS_SUCCESS) {
      set = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vector,
                                           sizeof vector);
    }
  }
  if (g.aux != nullptr) {
    if (set == CUBLAS_STATUS_SUCCESS) {
      set = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &g.ld_aux,
                                           sizeof g.ld_aux);
    }
    if (set == CUBLAS_STATUS_SUCCESS) {
      set = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                           &g.aux, sizeof g.aux);
    }
  }
  if (set != CUBLAS_STATUS_SUCCESS) {
    plans_.emplace(key, nullptr);
    return nullptr;
  }
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  // cuBLASLt A = our B: stored column-major as [n × k] (trans_b) ... see the header.
  KILN_LT_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, g.trans_b ? u(g.k) : u(g.n),
                                           g.trans_b ? u(g.n) : u(g.k), g.ldb));
  KILN_LT_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, g.trans_a ? u(g.m) : u(g.k),
                                           g.trans_a ? u(g.k) : u(g.m), g.lda));
  KILN_LT_CHECK(cublasLtMatrixLayoutCreate(&p->cd, out, u(g.n), u(g.m), g.ldd));

  cublasLtMatmulPreference_t pref = nullptr;
  KILN_LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_.size();
  const uint32_t al_a = static_cast<uint32_t>(alignment(g.b)),
                 al_b = static_cast<uint32_t>(alignment(g.a)),
                 al_c = static_cast<uint32_t>(g.c ? alignment(g.c) : 256),
                 al_d = static_cast<uint32_t>(alignment(g.d));
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                              &al_a, sizeof al_a);
  }
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                              &al_b, sizeof al_b);
  }
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                              &al_c, sizeof al_c);
  }
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                              &al_d, sizeof al_d);
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(handle_, p->desc, p->a, p->b, p->cd, p->cd, pref, 1,
                                        &result, &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    plans_.emplace(key, nullptr);
    return nullptr;
  }
  p->algo = result.algo;
  return plans_.emplace(key, std::move(p)).first->second.get();
}

bool LtGemm::supported(const RowGemm& g) {
  check_epilogue(g);
  return plan(g) != nullptr;
}

void LtGemm::check_dims(const RowGemm& g) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (g.m > kMax || g.n > kMax || g.k > kMax) {
    fail(KILN_ERR_UNSUPPORTED,
         "training matrix product " + shape(g) + " exceeds cuBLASLt's 32-bit dimensions");
  }
  check_epilogue(g);
}

cublasStatus_t LtGemm::launch(Plan& p, const RowGemm& g, cudaStream_t stream) {
  const bool grad_epilogue =
      g.epilogue == Epilogue::kDGeluBiasGrad || g.epilogue == Epilogue::kBiasGradOfA;
  const void* vector = grad_epilogue ? g.bias_grad : g.bias;
  if (vector != nullptr) {
    KILN_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vector,
                                                 sizeof vector));
  }
  if (g.aux != nullptr) {
    KILN_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                                 &g.aux, sizeof g.aux));
  }
  const float alpha = 1.0f;
  const float beta = g.beta;
  const void* c = g.c != nullptr ? g.c : g.d;
  return cublasLtMatmul(handle_, p.desc, &alpha, g.b, p.a, g.a, p.b, &beta, c, p.cd, g.d, p.cd,
                        &p.algo, workspace_.get(), workspace_.size(), stream);
}

void LtGemm::run(const RowGemm& g, cudaStream_t stream) {
  check_dims(g);
  if (g.m == 0 || g.n == 0) return;
  Plan* found = plan(g);
  if (found == nullptr) {
    fail(KILN_ERR_BACKEND, "cuBLASLt has no algorithm for the training matrix product " + shape(g) +
                               (g.bias ? " with a bias" : "") + " with epilogue " +
                               std::to_string(static_cast<int>(lt_epilogue(g))) + " into " +
                               (g.out == OutType::F32 ? "float32" : "BF16"));
  }
  lt_check(launch(*found, g, stream), "cublasLtMatmul");
}

bool LtGemm::try_run(const RowGemm& g, cudaStream_t stream) {
  check_dims(g);
  if (g.m == 0 || g.n == 0) return true;
  Plan* found = plan(g);
  if (found == nullptr) return false;
  const cublasStatus_t st = launch(*found, g, stream);
  if (st == CUBLAS_STATUS_INVALID_VALUE || st == CUBLAS_STATUS_NOT_SUPPORTED) {
    // Rejected before launching anything (an epilogue/type mix the heuristic let through):
    // remembered, so supported() says no from now on.
    plans_[key_of(g)] = nullptr;
    return false;
  }
  lt_check(st, "cublasLtMatmul");
  return true;
}

}  // namespace kiln::cuda::train
