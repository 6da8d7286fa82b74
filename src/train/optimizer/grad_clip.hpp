// Global-norm gradient clipping, as torch.nn.utils.clip_grad_norm_ (norm_type 2): the L2 norm of
// all gradients together; when it exceeds max_norm every gradient is scaled by
// max_norm / (norm + 1e-6).
#pragma once

#include "train/param_layout.hpp"

namespace kiln {

// The L2 norm of the gradients of every tensor in `layout` (padding between tensors is not read),
// accumulated in double in a fixed order: fixed-size chunks in layout order, each summed in
// order, then the chunk sums in order. The result is bit-identical for every thread count.
double global_grad_norm(const ParamLayout& layout, const float* grads, int n_threads);

// Computes the norm as above and, when max_norm > 0 and the norm is finite and above max_norm,
// scales the gradients in place. Returns the norm before clipping. A non-finite norm leaves the
// gradients untouched (scaling would turn them all into NaN or 0); the caller sees it and can
// skip the step. Throws KILN_ERR_INVALID_ARGUMENT for a negative or non-finite max_norm.
double clip_grad_norm(const ParamLayout& layout, float* grads, double max_norm, int n_threads);

}  // namespace kiln
