// AdamW (torch.optim.AdamW's decoupled-decay formula) over float32 master weights, refreshing the
// BF16 compute copy in the same pass, and torch's clip_grad_norm_ factor computed on the device so
// the step needs no host synchronisation.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "core/error.hpp"
#include "train_common.cuh"

namespace kiln::cuda::train {

namespace {

constexpr int kThreads = 256;

struct AdamWConsts {
  float decay, step_size, bc2_sqrt, b1, b2, one_minus_b1, one_minus_b2, eps;
};

// Every operation spelled out with its rounding: the compiler may otherwise contract a multiply
// and an add into an FMA in one kernel and not in another (it did: the per-tensor and the
// multi-tensor kernels disagreed in the last bit), and both must give the same bits.
__device__ __forceinline__ float adamw_one(float p, float g, float& m, float& v,
                                           const AdamWConsts& c) {
  p = __fmul_rn(p, c.decay);
  m = __fadd_rn(__fmul_rn(c.b1, m), __fmul_rn(c.one_minus_b1, g));
  v = __fadd_rn(__fmul_rn(c.b2, v), __fmul_rn(__fmul_rn(c.one_minus_b2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), c.bc2_sqrt), c.eps);
  return __fsub_rn(p, __fmul_rn(c.step_size, __fdiv_rn(m, denom)));
}

// Parameters i .. i + 3 with 16-byte loads and stores (p, g, m, v 16-byte aligned at i; the BF16
// copy, when there is one, 8-byte aligned there: it is written in pairs). The one body both
// kernels use, so that they cannot drift apart.
__device__ __forceinline__ void adamw_four(float* __restrict__ p, const float* __restrict__ g,
                                           float* __restrict__ m, float* __restrict__ v,
                                           bf16* __restrict__ p_bf16, int64_t i, float scale,
                                           const AdamWConsts& c) {
  float4 pp = *reinterpret_cast<const float4*>(p + i);
  const float4 gg = *reinterpret_cast<const float4*>(g + i);
  float4 mm = *reinterpret_cast<const float4*>(m + i);
  float4 vv = *reinterpret_cast<const float4*>(v + i);
  pp.x = adamw_one(pp.x, __fmul_rn(gg.x, scale), mm.x, vv.x, c);
  pp.y = adamw_one(pp.y, __fmul_rn(gg.y, scale), mm.y, vv.y, c);
  pp.z = adamw_one(pp.z, __fmul_rn(gg.z, scale), mm.z, vv.z, c);
  pp.w = adamw_one(pp.w, __fmul_rn(gg.w, scale), mm.w, vv.w, c);
  *reinterpret_cast<float4*>(p + i) = pp;
  *reinterpret_cast<float4*>(m + i) = mm;
  *reinterpret_cast<float4*>(v + i) = vv;
  if (p_bf16 != nullptr) {
    *reinterpret_cast<__nv_bfloat162*>(p_bf16 + i) = __floats2bfloat162_rn(pp.x, pp.y);
    *reinterpret_cast<__nv_bfloat162*>(p_bf16 + i + 2) = __floats2bfloat162_rn(pp.z, pp.w);
  }
}

// Parameter i alone (any alignment).
__device__ __forceinline__ void adamw_single(float* __restrict__ p, const float* __restrict__ g,
                                             float* __restrict__ m, float* __restrict__ v,
                                             bf16* __restrict__ p_bf16, int64_t i, float scale,
                                             const AdamWConsts& c) {
  float mi = m[i], vi = v[i];
  const float pi = adamw_one(p[i], __fmul_rn(g[i], scale), mi, vi, c);
  p[i] = pi;
  m[i] = mi;
  v[i] = vi;
  if (p_bf16 != nullptr) p_bf16[i] = __float2bfloat16(pi);
}

// VEC: each thread updates 4 adjacent parameters with 16-byte loads (all pointers aligned).
template <bool VEC>
__global__ void adamw_kernel(float* p, bf16* p_bf16, const float* grad, float* m, float* v,
                             int64_t n, AdamWConsts c, const float* grad_scale) {
  const float scale = grad_scale != nullptr ? *grad_scale : 1.0f;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if constexpr (VEC) {
    const int64_t base = i * 4;
    if (base + 4 <= n) {
      adamw_four(p, grad, m, v, p_bf16, base, scale, c);
    } else {
      for (int64_t j = base; j < n; ++j) adamw_single(p, grad, m, v, p_bf16, j, scale, c);
    }
  } else if (i < n) {
    adamw_single(p, grad, m, v, p_bf16, i, scale, c);
  }
}

// The per-step constants, derived in double and rounded once: the single place both entry points
// take them from, which is what makes adamw_update_multi bit-identical to adamw_update.
AdamWConsts adamw_consts(const AdamWStep& step) {
  AdamWConsts c{};
  c.decay = static_cast<float>(1.0 - static_cast<double>(step.lr) * step.weight_decay);
  c.step_size = static_cast<float>(static_cast<double>(step.lr) / step.bias1);
  c.bc2_sqrt = static_cast<float>(std::sqrt(static_cast<double>(step.bias2)));
  c.b1 = step.beta1;
  c.b2 = step.beta2;
  c.one_minus_b1 = static_cast<float>(1.0 - static_cast<double>(step.beta1));
  c.one_minus_b2 = static_cast<float>(1.0 - static_cast<double>(step.beta2));
  c.eps = step.eps;
  return c;
}

// The constants of every group of one multi-tensor launch, passed by value (kernel parameters):
// the schedule changes lr every step, and an argument needs neither an upload nor a sync.
struct AdamWGroupConsts {
  AdamWConsts c[kAdamWMaxGroups];
};

// One block per chunk. The vector path needs p/grad/m/v 16-byte aligned and the BF16 copy 8-byte
// aligned (it is written in pairs); a chunk starts a multiple of kAdamWChunkElems into its
// segment, so within a segment every chunk takes the same path.
__global__ void __launch_bounds__(kThreads)
    adamw_multi_kernel(float* __restrict__ p, const float* __restrict__ grad, float* __restrict__ m,
                       float* __restrict__ v, const AdamWChunk* __restrict__ chunks,
                       const __grid_constant__ AdamWGroupConsts groups,
                       const float* __restrict__ grad_scale) {
  const AdamWChunk ch = chunks[blockIdx.x];
  const AdamWConsts c = groups.c[ch.group];
  const float scale = grad_scale != nullptr ? *grad_scale : 1.0f;
  float* __restrict__ cp = p + ch.offset;
  const float* __restrict__ cg = grad + ch.offset;
  float* __restrict__ cm = m + ch.state_offset;
  float* __restrict__ cv = v + ch.state_offset;
  bf16* __restrict__ cb = ch.p_bf16;
  const int n = ch.numel;
  const auto addr = [](const void* q) { return reinterpret_cast<uintptr_t>(q); };
  const bool vec = ((addr(cp) | addr(cg) | addr(cm) | addr(cv)) % 16 == 0) && addr(cb) % 8 == 0;
  int scalar_from = 0;
  if (vec) {
    scalar_from = n & ~3;
#pragma unroll 2
    for (int base = threadIdx.x * 4; base < scalar_from; base += kThreads * 4) {
      adamw_four(cp, cg, cm, cv, cb, base, scale, c);
    }
  }
  for (int j = scalar_from + static_cast<int>(threadIdx.x); j < n; j += kThreads) {
    adamw_single(cp, cg, cm, cv, cb, j, scale, c);
  }
}

__global__ void clip_scale_kernel(const double* sum_squares, float max_norm, float* scale,
                                  double* norm) {
  const double total_norm = sqrt(*sum_squares);
  *norm = total_norm;
  *scale = (max_norm > 0.0f && total_norm > static_cast<double>(max_norm))
               ? static_cast<float>(static_cast<double>(max_norm) / (total_norm + 1e-6))
               : 1.0f;
}

}  // namespace

void adamw_update(float* p, bf16* p_bf16, const float* grad, float* m, float* v, int64_t n,
                  const AdamWStep& step, const float* grad_scale, cudaStream_t stream) {
  if (n <= 0) return;
  const AdamWConsts c = adamw_consts(step);
  // The BF16 copy is written in pairs: 4-byte alignment of p_bf16 + base needs 8-byte alignment
  // of p_bf16 itself, which 16-byte alignment of the float32 buffers does not imply.
  const bool vec = detail::aligned16(p, grad, m, v) &&
                   (p_bf16 == nullptr || reinterpret_cast<uintptr_t>(p_bf16) % 8 == 0);
  const int64_t items = vec ? (n + 3) / 4 : n;
  const auto blocks = static_cast<unsigned>((items + kThreads - 1) / kThreads);
  if (vec) {
    adamw_kernel<true><<<blocks, kThreads, 0, stream>>>(p, p_bf16, grad, m, v, n, c, grad_scale);
  } else {
    adamw_kernel<false><<<blocks, kThreads, 0, stream>>>(p, p_bf16, grad, m, v, n, c, grad_scale);
  }
  check_launch("adamw_kernel");
}

std::vector<AdamWChunk> adamw_chunks(const std::vector<AdamWSegment>& segments) {
  std::vector<AdamWChunk> chunks;
  for (const AdamWSegment& seg : segments) {
    if (seg.group < 0 || seg.group >= kAdamWMaxGroups) {
      fail(KILN_ERR_INVALID_ARGUMENT, "adamw_chunks: group " + std::to_string(seg.group) +
                                          " outside [0, " + std::to_string(kAdamWMaxGroups) + ")");
    }
    for (int64_t at = 0; at < seg.numel; at += kAdamWChunkElems) {
      AdamWChunk ch{};
      ch.offset = seg.offset + at;
      ch.state_offset = seg.state_offset + at;
      ch.p_bf16 = seg.p_bf16 != nullptr ? seg.p_bf16 + at : nullptr;
      ch.numel = static_cast<int32_t>(std::min(kAdamWChunkElems, seg.numel - at));
      ch.group = seg.group;
      chunks.push_back(ch);
    }
  }
  return chunks;
}

void adamw_update_multi(float* p, const float* grad, float* m, float* v, const AdamWChunk* chunks,
                        int64_t n_chunks, const AdamWStep* steps, int n_groups,
                        const float* grad_scale, cudaStream_t stream) {
  if (n_chunks <= 0) return;
  if (n_groups < 0 || n_groups > kAdamWMaxGroups || n_chunks > INT32_MAX) {
    fail(KILN_ERR_INVALID_ARGUMENT, "adamw_update_multi: " + std::to_string(n_groups) +
                                        " groups (at most " + std::to_string(kAdamWMaxGroups) +
                                        "), " + std::to_string(n_chunks) + " chunks");
  }
  // Unused groups stay zero: the chunk table was checked against kAdamWMaxGroups, not n_groups.
  AdamWGroupConsts groups{};
  for (int gi = 0; gi < n_groups; ++gi) groups.c[gi] = adamw_consts(steps[gi]);
  adamw_multi_kernel<<<static_cast<unsigned>(n_chunks), kThreads, 0, stream>>>(
      p, grad, m, v, chunks, groups, grad_scale);
  check_launch("adamw_multi_kernel");
}

void clip_scale(const double* sum_squares, float max_norm, float* scale, double* norm,
                cudaStream_t stream) {
  clip_scale_kernel<<<1, 1, 0, stream>>>(sum_squares, max_norm, scale, norm);
  check_launch("clip_scale_kernel");
}

}  // namespace kiln::cuda::train
