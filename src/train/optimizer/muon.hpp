// Muon (MomentUm Orthogonalized by Newton-Schulz) for one 2-D weight, following nanochat's
// nanochat/muon.py (karpathy/nanochat, after Keller Jordan's Muon and modded-nanogpt):
//   buf <- lerp(buf, g, 1 - momentum)               = momentum * buf + (1 - momentum) * g
//   u   <- nesterov ? lerp(g, buf, momentum) : buf  = (1 - momentum) * g + momentum * buf
//   X   <- zeropower_via_newtonschulz5(u, ns_steps)
//   p   <- p - lr * sqrt(max(1, rows / cols)) * X
// with the Newton-Schulz quintic (a, b, c) = (3.4445, -4.7750, 2.0315): transpose to the wide
// orientation (rows <= cols), X <- X / (||X||_F + 1e-7), then ns_steps times
//   A = X Xᵀ;  B = b A + c A A;  X = a X + B X
// and transpose back.
// Two deliberate differences from nanochat: the iteration runs in float32 (nanochat casts to
// bfloat16 on the GPU; float32 is what a CPU has and is closer to the exact iteration), and an
// optional decoupled weight decay p <- p * (1 - lr * weight_decay) before the update (as
// KellerJordan/Muon's current muon.py; 0 by default, which is nanochat's behaviour).
#pragma once

#include <cstdint>
#include <vector>

namespace kiln {

struct MuonStep {
  double lr = 0;  // already multiplied by the schedule
  double momentum = 0.95;
  bool nesterov = true;
  int ns_steps = 5;
  double weight_decay = 0;
};

// Work buffers reused across tensors (grown on demand).
struct MuonScratch {
  std::vector<float> x, xt, a, at, aa, bx;  // newton_schulz5
  std::vector<float> u, ortho;              // muon_update: its input and output
};

// out (rows × cols) = the Newton-Schulz orthogonalisation of g (rows × cols), as above. Matmuls go
// through kiln's fixed-tile GEMM, so the result is bit-identical for every n_threads.
void newton_schulz5(const float* g, float* out, int64_t rows, int64_t cols, int steps,
                    MuonScratch& scratch, int n_threads);

// One Muon update of p (rows × cols) with gradient g and momentum buffer buf, in place.
void muon_update(float* p, const float* g, float* buf, int64_t rows, int64_t cols,
                 const MuonStep& step, MuonScratch& scratch, int n_threads);

}  // namespace kiln
