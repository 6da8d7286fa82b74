// Token sampling on the device, mirroring the host sampler (src/session/sampler.cpp and
// sampling_filters.cpp) operation for operation so that the chosen ids agree: the same float
// operations for penalties and temperature (written as _rn intrinsics so that nvcc cannot contract
// them into FMAs the host does not do), the same rank order (higher logit first, lower id first on
// ties, NaN never a candidate), softmax and cumulative sums in double. Every reduction has a fixed
// order (one block, or CUB's block primitives), so a draw is deterministic run to run; only the
// order of additions differs from the host's sequential sums (last-ulp differences in double).
#include <algorithm>
#include <climits>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"

namespace kiln::cuda {

namespace {

constexpr int kThreads = 1024;  // the single-block kernels
constexpr int kElementwiseThreads = 256;

// A key whose unsigned order is the float order, with -0 and +0 one key (they compare equal, so
// the id decides between them as on the host) and NaN 0, below every other key (-inf's is
// 0x007FFFFF).
__device__ __forceinline__ uint32_t order_key(float f) {
  if (isnan(f)) return 0u;
  if (f == 0.0f) f = 0.0f;
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

struct MaxU64 {
  __device__ unsigned long long operator()(unsigned long long a, unsigned long long b) const {
    return a > b ? a : b;
  }
};

__global__ void penalties_kernel(float* logits, const int32_t* ids, const int32_t* counts,
                                 int32_t n, PenaltyParams p) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float l = logits[ids[i]];
  if (p.repetition != 1.0f) l = l > 0.0f ? __fdiv_rn(l, p.repetition) : __fmul_rn(l, p.repetition);
  l = __fsub_rn(l, p.presence);
  l = __fsub_rn(l, __fmul_rn(p.frequency, __int2float_rn(counts[i])));
  logits[ids[i]] = l;
}

// The host's argmax_lowest_id walks `best` forward while logits[best] is NaN and otherwise moves
// it only to a strictly larger logit: the lowest id among the largest non-NaN logits, or the last
// id when every logit is NaN. As a maximum of 64-bit keys: a non-NaN logit's order key above its
// inverted id (larger logit, then lower id, wins); a NaN's key is its id alone (every non-NaN key
// is larger; among NaNs the last id wins).
__global__ __launch_bounds__(kThreads) void argmax_kernel(const float* logits, int32_t n,
                                                          int32_t* out) {
  using Reduce = cub::BlockReduce<unsigned long long, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  unsigned long long best = 0;
  for (int32_t i = threadIdx.x; i < n; i += kThreads) {
    const uint32_t key = order_key(logits[i]);
    const unsigned long long k =
        key == 0u ? static_cast<unsigned long long>(i)
                  : (static_cast<unsigned long long>(key) << 32) | (0xFFFFFFFFu - uint32_t(i));
    best = best > k ? best : k;
  }
  best = Reduce(tmp).Reduce(best, MaxU64{});
  if (threadIdx.x == 0) {
    *out = (best >> 32) == 0 ? static_cast<int32_t>(best)
                             : static_cast<int32_t>(0xFFFFFFFFu - uint32_t(best & 0xFFFFFFFFu));
  }
}

// keys[i] = order_key(logits[i] / temperature) (the host's `l /= temperature`), ids[i] = i.
__global__ void keys_kernel(const float* logits, int32_t n, float temperature, uint32_t* keys,
                            int32_t* ids) {
  for (int32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    keys[i] = order_key(__fdiv_rn(logits[i], temperature));
    ids[i] = i;
  }
}

// Block-wide helpers of the single-block filter kernel; every thread calls them.
struct Shared {
  union {
    cub::BlockReduce<double, kThreads>::TempStorage reduce;
    cub::BlockScan<double, kThreads>::TempStorage scan;
  } tmp;
  double value;
  int32_t index;
};

__device__ double block_sum_broadcast(Shared& sh, double v) {
  v = cub::BlockReduce<double, kThreads>(sh.tmp.reduce).Sum(v);
  if (threadIdx.x == 0) sh.value = v;
  __syncthreads();
  v = sh.value;
  __syncthreads();  // sh reused by the next helper
  return v;
}

// Running sums of value(i) over i = 0 .. n-1 in order, chunk by chunk (block-wide inclusive scan
// plus the carry of the chunks before): returns the first i whose sum satisfies reached(sum), or
// -1 when none does; `total` gets the sum over all n (over the terms up to the hit when there is
// one).
template <typename Value, typename Reached>
__device__ int32_t first_reaching(Shared& sh, int32_t n, Value value, Reached reached,
                                  double* total) {
  double carry = 0.0;
  for (int32_t base = 0; base < n; base += kThreads) {
    const int32_t i = base + static_cast<int32_t>(threadIdx.x);
    const double v = i < n ? value(i) : 0.0;
    double sum;
    cub::BlockScan<double, kThreads>(sh.tmp.scan).InclusiveSum(v, sum);
    sum += carry;
    if (threadIdx.x == 0) sh.index = INT_MAX;
    __syncthreads();
    if (i < n && reached(sum)) atomicMin(&sh.index, i);  // the minimum: order-independent
    if (threadIdx.x == kThreads - 1) sh.value = sum;
    __syncthreads();
    const int32_t hit = sh.index;
    carry = sh.value;
    __syncthreads();  // sh reused by the next chunk
    if (hit != INT_MAX) {
      if (static_cast<int32_t>(threadIdx.x) == hit - base) sh.value = sum;
      __syncthreads();
      *total = sh.value;
      __syncthreads();
      return hit;
    }
  }
  *total = carry;
  return -1;
}

// From candidates sorted by rank (keys descending, ids ascending among equal keys): top-k,
// softmax in double, min-p, top-p, renormalise, inverse CDF at u; the host's filter_candidates +
// sample_token. Writes the id, or -1 when every logit is NaN.
__global__ __launch_bounds__(kThreads) void filter_draw_kernel(const uint32_t* keys,
                                                               const int32_t* ids, int32_t n_all,
                                                               SampleFilter f, double u,
                                                               int32_t* out) {
  __shared__ Shared sh;
  // NaN keys (0) sort last; the candidates are the keys before the first 0.
  if (threadIdx.x == 0) {
    int32_t lo = 0, hi = n_all;
    while (lo < hi) {
      const int32_t mid = lo + (hi - lo) / 2;
      if (keys[mid] == 0u) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    sh.index = lo;
  }
  __syncthreads();
  int32_t n = sh.index;
  __syncthreads();
  if (n == 0) {
    if (threadIdx.x == 0) *out = -1;
    return;
  }
  if (f.top_k > 0 && f.top_k < n) n = f.top_k;

  const double max_logit = static_cast<double>(key_value(keys[0]));
  auto weight = [&](int32_t i) { return exp(static_cast<double>(key_value(keys[i])) - max_logit); };
  double part = 0.0;
  for (int32_t i = threadIdx.x; i < n; i += kThreads) part += weight(i);
  const double total = block_sum_broadcast(sh, part);
  auto prob = [&](int32_t i) { return weight(i) / total; };

  // min-p: probabilities fall along the rank order, so the survivors are a prefix.
  int32_t m = n;
  if (f.min_p > 0.0f) {
    if (threadIdx.x == 0) {
      const double threshold = static_cast<double>(f.min_p) * prob(0);
      int32_t lo = 1, hi = n;  // prob(0) is the largest and always survives
      while (lo < hi) {
        const int32_t mid = lo + (hi - lo) / 2;
        if (prob(mid) < threshold) {
          hi = mid;
        } else {
          lo = mid + 1;
        }
      }
      sh.index = lo;
    }
    __syncthreads();
    m = sh.index;
    __syncthreads();
  }

  // top-p: the shortest prefix whose cumulative probability reaches top_p.
  int32_t keep = m;
  double mass = 0.0;
  if (f.top_p < 1.0f) {
    const double target = static_cast<double>(f.top_p);
    const int32_t hit = first_reaching(
        sh, m, prob, [target](double c) { return c >= target; }, &mass);
    if (hit >= 0) keep = hit + 1;
  } else {
    // No prefix search needed: a plain block sum (one pass, no scan per chunk).
    double mass_part = 0.0;
    for (int32_t i = threadIdx.x; i < m; i += kThreads) mass_part += prob(i);
    mass = block_sum_broadcast(sh, mass_part);
  }

  // The draw over the renormalised kept probabilities, in rank order.
  double drawn_mass = 0.0;
  const int32_t hit = first_reaching(
      sh, keep, [&](int32_t i) { return prob(i) / mass; }, [u](double c) { return u < c; },
      &drawn_mass);
  if (threadIdx.x == 0) *out = ids[hit >= 0 ? hit : keep - 1];
}

}  // namespace

void apply_penalties(float* logits, const int32_t* ids, const int32_t* counts, int32_t n,
                     PenaltyParams params, cudaStream_t stream) {
  if (n <= 0) return;
  penalties_kernel<<<detail::grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      logits, ids, counts, n, params);
  check_launch("penalties_kernel");
}

void argmax_lowest_id(const float* logits, int32_t n, int32_t* out, cudaStream_t stream) {
  argmax_kernel<<<1, kThreads, 0, stream>>>(logits, n, out);
  check_launch("argmax_kernel");
}

size_t sampling_workspace_bytes(int32_t n) {
  size_t bytes = 0;
  KILN_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(
      nullptr, bytes, static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), n));
  return bytes;
}

void sample_filtered(const float* logits, int32_t n, float temperature, SampleFilter filter,
                     double u, SamplingWorkspace ws, int32_t* out, cudaStream_t stream) {
  const unsigned blocks = std::min<unsigned>(detail::grid_for(n, kElementwiseThreads), 1024);
  keys_kernel<<<blocks, kElementwiseThreads, 0, stream>>>(logits, n, temperature, ws.keys, ws.ids);
  check_launch("keys_kernel");
  // Radix sort is stable: equal keys keep their ascending ids, the host's tie order.
  size_t temp_bytes = ws.temp_bytes;
  KILN_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(
      ws.temp, temp_bytes, ws.keys, ws.sorted_keys, ws.ids, ws.sorted_ids, n, 0, 32, stream));
  filter_draw_kernel<<<1, kThreads, 0, stream>>>(ws.sorted_keys, ws.sorted_ids, n, filter, u, out);
  check_launch("filter_draw_kernel");
}

}  // namespace kiln::cuda
