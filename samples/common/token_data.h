/* Token streams for kiln-train: a text file tokenized with the model's tokenizer, or pre-tokenised
 * shards (llm.c's .bin with its 256-int header, or raw little-endian .u16 / .u32 files), read into
 * memory, and a sequential batch cursor over them. Uses only kiln.h and the C library. */
#ifndef KILN_TOKEN_DATA_H
#define KILN_TOKEN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

typedef struct token_data {
  int32_t* ids;
  size_t n;
} token_data;

/* Reads `path`. Files ending in .bin (llm.c header, uint16 tokens), .u16 or .u32 are token ids;
 * anything else is UTF-8 text tokenized with `tokenizer` (which may then not be NULL). Returns 0
 * on success; otherwise prints why to stderr and returns non-zero. */
int token_data_load(const char* path, const kiln_tokenizer* tokenizer, token_data* out);
void token_data_free(token_data* d);

/* Checks every id is < vocab_size; prints the first bad one and returns non-zero otherwise. */
int token_data_check_vocab(const token_data* d, int32_t vocab_size, const char* what);

/* Splits off the last `fraction` of `all` (at least one batch row) into `val`, keeping the rest in
 * `all`; both then share `all`'s buffer, so free only `all`. */
void token_data_split(token_data* all, double fraction, size_t min_tail, token_data* val);

/* A sequential cursor: each row is T+1 consecutive tokens starting at the cursor (inputs = the
 * first T, targets = the last T), the cursor advancing by T; wraps around at the end (epoch + 1).
 * The cursor is what kiln-train stores in checkpoints as the data-loader state. */
typedef struct token_cursor {
  uint64_t position;
  uint64_t epoch;
} token_cursor;

/* Fills inputs/targets [B*T] from `d` at `cursor` and advances it. d->n must be > T. With
 * bos >= 0 each row instead takes T consecutive tokens y as targets and [bos, y0 .. y(T-2)] as
 * inputs (every window a fresh context that starts with BOS, as models/kjv-tiny/train.py trains
 * and evaluates); bos < 0: the plain shifted window above. */
void token_next_batch(const token_data* d, token_cursor* cursor, int32_t bos, int32_t B, int32_t T,
                      int32_t* inputs, int32_t* targets);

/* Random windows (train.py's sampling): row b of the batch numbered cursor->position starts at an
 * offset drawn uniformly from [0, n - T - 1] by a fixed hash (splitmix64) of (seed, batch number,
 * b), so a run is reproducible, independent of the thread count, and resumable from the cursor;
 * position advances by one per batch. `bos` as in token_next_batch. */
void token_random_batch(const token_data* d, token_cursor* cursor, uint64_t seed, int32_t bos,
                        int32_t B, int32_t T, int32_t* inputs, int32_t* targets);

#endif
