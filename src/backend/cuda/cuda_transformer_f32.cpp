// The F32 checking precision of the CUDA executor (KILN_PRECISION_F32): the same decoder as
// cuda_transformer.cpp with every weight matrix, the KV cache and every matrix product's input in
// float32, and the products in cuBLAS with full float32 arithmetic (linear_f32: no TF32). It exists
// to check the BF16 path and the kernels against the CPU backend and the HF float32 fixtures
// (relative L2 ≤ 1e-4), so it favours plainness over speed: no fused norm+GEMV kernels, cuBLAS
// even for the decode step's one-row products. The decode step is still captured as a CUDA graph
// by forward() (nothing here allocates or synchronises while capturing).
#include <algorithm>
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/cuda_transformer.hpp"
#include "backend/cuda/gemm.hpp"
#include "backend/cuda/kernels.hpp"
#include "core/error.hpp"

namespace kiln::cuda {

namespace {

float* f32(const DeviceBuffer& b) { return b.as<float>(); }

// y[n × W.rows] = x[n × W.cols] · Wᵀ + beta · y for a float32 matrix.
void linear_matrix(cublasHandle_t handle, const DeviceMatrix& w, const float* x, float* y,
                   int64_t n, float beta) {
  if (w.f32_ptr() == nullptr) {
    fail(KILN_ERR_INTERNAL, "F32 product with a matrix not uploaded as float32");
  }
  linear_f32(handle, x, w.f32_ptr(), y, n, w.cols, w.rows, w.rows, beta);
}

}  // namespace

void CudaTransformer::enqueue_layers_f32(CudaSessionState& s, int64_t n, int32_t start_pos,
                                         const std::atomic<bool>* cancel) const {
  const ModelDims& d = dims_;
  const cudaStream_t stream = s.stream_.get();
  const cublasHandle_t cublas = s.cublas_.get();
  const QkvShape shape{static_cast<int32_t>(d.n_heads), static_cast<int32_t>(d.n_kv_heads),
                       static_cast<int32_t>(d.head_dim), static_cast<int32_t>(d.rot_dim)};
  float* x = f32(s.x_);
  float* normed = f32(s.normed_);
  float* attn = f32(s.attn_);
  float* act = f32(s.act_);

  KILN_CUDA_CHECK(cudaMemcpyAsync(s.ids_.get(), s.ids_host_.as<int32_t>(),
                                  static_cast<size_t>(n + 1) * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream));
  embedding_gather(s.token_ids(), embed_.f32_ptr(), x, n, d.hidden, stream);

  for (int32_t li = 0; li < d.n_layers; ++li) {
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
      s.stream_.synchronize();
      fail(KILN_ERR_CANCELLED, "forward pass cancelled");
    }
    const Layer& L = layers_[li];
    float* k_cache = s.k_cache_f32(li);
    float* v_cache = s.v_cache_f32(li);

    rms_norm(x, nullptr, f32(L.attn_norm), normed, n, d.hidden, eps_, stream);
    linear_matrix(cublas, L.wqkv, normed, f32(s.qkv_), n, 0.0f);
    qkv_rope(f32(s.qkv_), f32(L.bqkv), f32(L.q_norm), f32(L.k_norm), eps_, f32(inv_freq_),
             s.position(), n, shape, f32(s.q_), k_cache, v_cache, stream);
    if (n == 1) {
      attention_decode_f32(f32(s.q_), k_cache, v_cache, attn, s.position(), s.context_length(),
                           shape.n_heads, shape.n_kv_heads, shape.head_dim, f32(s.decode_partials_),
                           stream);
    } else {
      attention_prefill_f32(f32(s.q_), k_cache, v_cache, attn, n, start_pos, shape.n_heads,
                            shape.n_kv_heads, shape.head_dim, stream);
    }
    // Residual adds in the products' epilogues (beta = 1), as in the BF16 path.
    linear_matrix(cublas, L.wo, attn, x, n, 1.0f);
    if (L.bo) bias_add(x, f32(L.bo), n, d.hidden, stream);

    rms_norm(x, nullptr, f32(L.ffn_norm), normed, n, d.hidden, eps_, stream);
    linear_matrix(cublas, L.w_gate_up, normed, f32(s.gate_up_), n, 0.0f);
    swiglu(f32(s.gate_up_), act, n, d.intermediate, stream);
    linear_matrix(cublas, L.w_down, act, x, n, 1.0f);
  }
  if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
    s.stream_.synchronize();
    fail(KILN_ERR_CANCELLED, "forward pass cancelled");
  }
}

void CudaTransformer::compute_logits_f32(CudaSessionState& s, int64_t first_row, int64_t rows,
                                         float* out) const {
  const cudaStream_t stream = s.stream_.get();
  rms_norm(f32(s.x_) + first_row * dims_.hidden, nullptr, f32(final_norm_), f32(s.normed_), rows,
           dims_.hidden, eps_, stream);
  linear_matrix(s.cublas_.get(), lm_head(), f32(s.normed_), f32(s.logits_), rows, 0.0f);
  if (out == nullptr) return;
  KILN_CUDA_CHECK(cudaMemcpyAsync(out, s.logits_.get(),
                                  static_cast<size_t>(rows * dims_.vocab) * sizeof(float),
                                  cudaMemcpyDeviceToHost, stream));
}

}  // namespace kiln::cuda
