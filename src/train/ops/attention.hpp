// Causal grouped-query self-attention of the training graph, forward and backward.
//
// q, out: [batch × seq × n_heads × head_dim]; k, v: [batch × seq × n_kv_heads × head_dim]. Query
// head h reads kv head h / (n_heads / n_kv_heads) (HF repeat_kv). Scores are q·k / sqrt(head_dim),
// key j ≤ query i only, softmax with the row maximum subtracted.
//
// The forward pass keeps the probabilities, [batch × n_heads × seq × seq] (zero above the
// diagonal), for the backward pass: memory O(seq²) per head and sequence. That is fine for the
// sequence lengths CPU training runs; a flash-style recomputation would remove it.
#pragma once

#include <cstdint>

namespace kiln::train {

template <class T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* probs, int64_t batch,
                       int64_t seq, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                       int n_threads);

// Overwrites dq, dk, dv. A kv head's gradient sums over its query heads in head order, one thread
// per (sequence, kv head): thread-count independent.
template <class T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* probs, T* dq,
                        T* dk, T* dv, int64_t batch, int64_t seq, int64_t n_heads,
                        int64_t n_kv_heads, int64_t head_dim, int n_threads);

}  // namespace kiln::train
