// Residual dropout masks (GPT-2 style: the embedding output and each sub-layer's output before it
// joins the residual stream), shared by the CPU TrainGraph, the CUDA kernels and the tests, so
// every engine draws the SAME mask.
//
// A mask is a pure function of (seed, step, site, element) — counter-based, no RNG state:
//   keep(i) = bits(site_key(seed, step, site), i) >= threshold(p),  threshold = floor(p · 2^32)
// and a kept value is scaled by 1/(1-p) (inverted dropout, as torch.nn.functional.dropout).
// Consequences: the backward pass recomputes the mask instead of storing it (one hash per
// element is cheaper than a [tokens × hidden] buffer per site); a run resumed from a checkpoint
// (which records the seed and the step) draws the masks of the uninterrupted run; and the element
// index counts over the whole step's batch (row-major [rows × seq × hidden]), so splitting the
// step into grad-accumulation micro-batches does not change the masks.
//
// Sites: 0 = the embedding output (the first block's input, after embed_norm when the model has
// one), 1 + 2·b = block b's attention output (after o_proj), 2 + 2·b = its MLP output (after
// down_proj); blocks are the layers 0..L-1 then the MTP heads.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define KILN_DROPOUT_HD __host__ __device__ __forceinline__
#else
#define KILN_DROPOUT_HD inline
#endif

namespace kiln::train {

// splitmix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit avalanche mix.
KILN_DROPOUT_HD uint64_t dropout_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

constexpr uint64_t kDropoutGamma = 0x9E3779B97F4A7C15ull;  // splitmix64's increment

// One stream per (seed, step, site); chained mixes so nearby triples give unrelated keys.
KILN_DROPOUT_HD uint64_t dropout_site_key(uint64_t seed, int64_t step, uint32_t site) {
  uint64_t k = dropout_mix(seed + kDropoutGamma);
  k = dropout_mix(k ^ static_cast<uint64_t>(step));
  return dropout_mix(k ^ (static_cast<uint64_t>(site) + kDropoutGamma));
}

// 32 uniform bits for element `index` of a site: splitmix64 at position `index` of the stream.
KILN_DROPOUT_HD uint32_t dropout_bits(uint64_t site_key, uint64_t index) {
  return static_cast<uint32_t>(dropout_mix(site_key + (index + 1) * kDropoutGamma) >> 32);
}

KILN_DROPOUT_HD bool dropout_keep(uint64_t site_key, uint64_t index, uint32_t threshold) {
  return dropout_bits(site_key, index) >= threshold;
}

KILN_DROPOUT_HD uint32_t dropout_site_attention(int64_t block) {
  return static_cast<uint32_t>(1 + 2 * block);
}
KILN_DROPOUT_HD uint32_t dropout_site_mlp(int64_t block) {
  return static_cast<uint32_t>(2 + 2 * block);
}
constexpr uint32_t kDropoutSiteEmbedding = 0;

// P(drop) = threshold / 2^32 = p up to 2^-32. p in [0, 1).
inline uint32_t dropout_threshold(float p) {
  return static_cast<uint32_t>(std::floor(static_cast<double>(p) * 4294967296.0));
}

// The scale of a kept value in precision T (float: the value every engine multiplies by).
template <class T>
T dropout_scale(float p) {
  return T(1) / (T(1) - static_cast<T>(p));
}

// What one micro-batch's training forward drops. p = 0: nothing (bit-identical to no dropout).
struct Dropout {
  float p = 0.0f;
  uint64_t seed = 0;
  int64_t step = 0;       // optimizer steps taken before this step
  int64_t first_row = 0;  // the micro-batch's first row within the step's batch
  bool active() const { return p > 0.0f; }
};

}  // namespace kiln::train
