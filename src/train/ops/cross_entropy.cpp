#include "train/ops/cross_entropy.hpp"

#include <algorithm>
#include <cmath>

namespace kiln::train {

template <class T>
void cross_entropy_forward_backward(const T* z, const int32_t* targets, const T* scale, T* loss,
                                    T* dz, int64_t rows, int64_t vocab, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (rows * vocab > (1 << 14))
  for (int64_t r = 0; r < rows; ++r) {
    const T* zr = z + r * vocab;
    T* dr = dz != nullptr ? dz + r * vocab : nullptr;
    const int32_t target = targets[r];
    if (target < 0) {
      loss[r] = T(0);
      if (dr != nullptr) std::fill(dr, dr + vocab, T(0));
      continue;
    }
    T max = zr[0];
    for (int64_t j = 1; j < vocab; ++j) max = std::max(max, zr[j]);
    // The sum of exponentials in double: over a large vocabulary a float sum would lose digits.
    double sum = 0.0;
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(zr[j] - max));
    const double lse = static_cast<double>(max) + std::log(sum);
    const T z_target = zr[target];
    loss[r] = static_cast<T>(lse - static_cast<double>(z_target));
    if (dr == nullptr) continue;
    const T s = scale[r];
    for (int64_t j = 0; j < vocab; ++j) {
      dr[j] = s * static_cast<T>(std::exp(static_cast<double>(zr[j]) - lse));
    }
    dr[target] -= s;
  }
}

template void cross_entropy_forward_backward<float>(const float*, const int32_t*, const float*,
                                                    float*, float*, int64_t, int64_t, int);
template void cross_entropy_forward_backward<double>(const double*, const int32_t*, const double*,
                                                     double*, double*, int64_t, int64_t, int);

}  // namespace kiln::train
