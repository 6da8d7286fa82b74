#include "train/optimizer/grad_clip.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace kiln {

namespace {

// The summation order is fixed by this chunk size, never by the thread count.
constexpr int64_t kChunk = 1 << 14;

struct Chunk {
  int64_t begin, end;  // element range in the buffer
};

std::vector<Chunk> chunks_of(const ParamLayout& layout) {
  std::vector<Chunk> chunks;
  for (const ParamSpec& s : layout.specs()) {
    for (int64_t b = 0; b < s.numel; b += kChunk) {
      chunks.push_back({s.offset + b, s.offset + std::min(s.numel, b + kChunk)});
    }
  }
  return chunks;
}

}  // namespace

double global_grad_norm(const ParamLayout& layout, const float* grads, int n_threads) {
  const std::vector<Chunk> chunks = chunks_of(layout);
  std::vector<double> sums(chunks.size(), 0.0);
  const int64_t n = static_cast<int64_t>(chunks.size());
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n > 1)
  for (int64_t c = 0; c < n; ++c) {
    double s = 0.0;
    for (int64_t i = chunks[c].begin; i < chunks[c].end; ++i) {
      const double g = grads[i];
      s += g * g;
    }
    sums[c] = s;
  }
  double total = 0.0;
  for (double s : sums) total += s;
  return std::sqrt(total);
}

double clip_grad_norm(const ParamLayout& layout, float* grads, double max_norm, int n_threads) {
  if (!(max_norm >= 0.0) || !std::isfinite(max_norm)) {
    fail(KILN_ERR_INVALID_ARGUMENT, "gradient clipping: max_norm is " + std::to_string(max_norm) +
                                        ", expected a finite value >= 0 (0 = no clipping)");
  }
  const double norm = global_grad_norm(layout, grads, n_threads);
  if (max_norm == 0.0 || !std::isfinite(norm) || norm <= max_norm) return norm;
  const float scale = static_cast<float>(max_norm / (norm + 1e-6));
  for (const ParamSpec& s : layout.specs()) {
    float* g = grads + s.offset;
    const int64_t numel = s.numel;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (numel >= kChunk)
    for (int64_t i = 0; i < numel; ++i) g[i] *= scale;
  }
  return norm;
}

}  // namespace kiln
