// AdamW exactly as torch.optim.AdamW (amsgrad off, maximize off), for one tensor:
//   p <- p * (1 - lr * weight_decay)                       (decoupled decay, before the update)
//   m <- beta1 * m + (1 - beta1) * g
//   v <- beta2 * v + (1 - beta2) * g^2
//   p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// where t >= 1 counts the updates so far, this one included. Per-element arithmetic is float32
// (as torch's CPU kernel); the bias corrections are computed once in double.
#pragma once

#include <cstdint>

namespace kiln {

struct AdamWStep {
  double lr = 0;  // already multiplied by the schedule
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0;
  int64_t t = 1;
};

// Updates n elements of p, m, v in place. Elementwise, so the result does not depend on
// n_threads.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& step,
                  int n_threads);

}  // namespace kiln
