// Rotary position embedding of the training graph, in HF's rotate-half layout: within each head
// vector the pairs (v[i], v[i + rot/2]), i < rot/2, are rotated by the angle pos · inv_freq[i];
// elements from `rot` on (partial rotary) pass through. Rows are [batch × seq] tokens whose
// position is their index within the sequence.
//
// `direction` is +1 for the Llama family (q·cos + rotate_half(q)·sin with rotate_half(x) =
// (-x2, x1)) and -1 for NanoChat, whose rotate_half returns (x2, -x1) (transformers'
// modeling_nanochat.py, matching karpathy/nanochat's apply_rotary_emb): the same rotation by the
// negative angle.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kiln::train {

template <class T>
struct RopeTable {
  int64_t seq = 0, half = 0;  // positions 0..seq-1; rot/2 frequencies
  std::vector<T> cos, sin;    // [seq × half]; sin already carries the direction's sign
};

// The angle is pos · inv_freq in T (float32 for training, as HF computes it), its cosine and sine
// taken in double and rounded to T.
template <class T>
RopeTable<T> make_rope_table(std::span<const float> inv_freq, int64_t seq, int direction);

// In place on x [batch × seq × heads × head_dim]; rot_dim = 2 · table.half.
template <class T>
void rope_forward(T* x, const RopeTable<T>& table, int64_t batch, int64_t heads, int64_t head_dim,
                  int n_threads);

// Gradient of rope_forward, in place on dx (the rotation by the opposite angle).
template <class T>
void rope_backward(T* dx, const RopeTable<T>& table, int64_t batch, int64_t heads, int64_t head_dim,
                   int n_threads);

}  // namespace kiln::train
