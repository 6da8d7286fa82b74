// Token embedding lookup and learned position table of the training graph, forward and backward.
// Rows are [batch × seq] tokens, a token's position its index within the sequence. Backward
// passes ADD into the tables' gradients, summing rows in token order (thread-count independent).
#pragma once

#include <cstdint>

namespace kiln::train {

// out[r] = table[ids[r]], dim elements per row. ids are assumed in range (the graph checks them).
template <class T>
void embedding_forward(const T* table, const int32_t* ids, T* out, int64_t rows, int64_t dim,
                       int n_threads);
// dtable[ids[r]] += dout[r], except for ids equal to padding_idx (-1 = none): as torch's
// nn.Embedding(padding_idx=...), which transformers builds from config.json's pad_token_id, that
// row gets no gradient from the lookup.
template <class T>
void embedding_backward(const T* dout, const int32_t* ids, T* dtable, int64_t rows, int64_t dim,
                        int n_threads, int32_t padding_idx = -1);

// x[b, t] += table[t]
template <class T>
void positions_forward(const T* table, T* x, int64_t batch, int64_t seq, int64_t dim,
                       int n_threads);
// dtable[t] += Σ_b dx[b, t]
template <class T>
void positions_backward(const T* dx, T* dtable, int64_t batch, int64_t seq, int64_t dim,
                        int n_threads);

}  // namespace kiln::train
