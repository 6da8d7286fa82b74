// Cross-entropy fused with log-softmax, per row of `vocab` logits.
//
// For a row with targets[r] >= 0: loss[r] = logsumexp(z_r) - z_r[target] (computed with the row
// maximum subtracted), and, when dz is given, dz_r = scale[r] · (softmax(z_r) - onehot(target)),
// the gradient of scale[r] · loss[r]. A row with a negative target is ignored: loss 0, dz_r 0.
// dz may alias z (the logits are overwritten by their gradient). The caller checks that targets
// are below vocab.
#pragma once

#include <cstdint>

namespace kiln::train {

template <class T>
void cross_entropy_forward_backward(const T* z, const int32_t* targets, const T* scale, T* loss,
                                    T* dz, int64_t rows, int64_t vocab, int n_threads);

}  // namespace kiln::train
