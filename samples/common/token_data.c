/* See token_data.h. */
#include "token_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ends_with(const char* s, const char* suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int read_file(const char* path, unsigned char** data, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "kiln-train: cannot open '%s'\n", path);
    return 1;
  }
  size_t cap = 1 << 20, n = 0;
  unsigned char* buf = malloc(cap);
  for (;;) {
    if (!buf) break;
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (n < cap) break;
    unsigned char* bigger = realloc(buf, cap * 2);
    if (!bigger) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = bigger, cap *= 2;
  }
  int failed = !buf || ferror(f);
  fclose(f);
  if (failed) {
    free(buf);
    fprintf(stderr, "kiln-train: cannot read '%s'\n", path);
    return 1;
  }
  *data = buf;
  *size = n;
  return 0;
}

/* llm.c token shards: 256 int32 header (magic 20240520, version 1, token count) + uint16 ids. */
static int parse_llmc(const char* path, const unsigned char* data, size_t size, token_data* out) {
  int32_t header[256];
  if (size < sizeof header) {
    fprintf(stderr, "kiln-train: '%s' is shorter than llm.c's 1024-byte header\n", path);
    return 1;
  }
  memcpy(header, data, sizeof header);
  if (header[0] != 20240520 || header[1] != 1) {
    fprintf(stderr, "kiln-train: '%s' is not an llm.c token file (magic %d, version %d)\n", path,
            header[0], header[1]);
    return 1;
  }
  size_t count = (size_t)(uint32_t)header[2];
  if (count > (size - sizeof header) / 2) {
    fprintf(stderr, "kiln-train: '%s' claims %zu tokens but holds %zu\n", path, count,
            (size - sizeof header) / 2);
    return 1;
  }
  out->ids = malloc((count ? count : 1) * sizeof(int32_t));
  if (!out->ids) return 1;
  for (size_t i = 0; i < count; ++i) {
    uint16_t v;
    memcpy(&v, data + sizeof header + 2 * i, 2);
    out->ids[i] = v;
  }
  out->n = count;
  return 0;
}

static int parse_raw(const char* path, const unsigned char* data, size_t size, size_t width,
                     token_data* out) {
  if (size % width != 0) {
    fprintf(stderr, "kiln-train: '%s' has %zu bytes, not a multiple of %zu\n", path, size, width);
    return 1;
  }
  size_t count = size / width;
  out->ids = malloc((count ? count : 1) * sizeof(int32_t));
  if (!out->ids) return 1;
  for (size_t i = 0; i < count; ++i) {
    if (width == 2) {
      uint16_t v;
      memcpy(&v, data + 2 * i, 2);
      out->ids[i] = v;
    } else {
      uint32_t v;
      memcpy(&v, data + 4 * i, 4);
      if (v > 0x7fffffffu) {
        fprintf(stderr, "kiln-train: '%s' token %zu is %u, not a valid id\n", path, i, v);
        return 1;
      }
      out->ids[i] = (int32_t)v;
    }
  }
  out->n = count;
  return 0;
}

static int tokenize_text(const char* path, const unsigned char* data, size_t size,
                         const kiln_tokenizer* tok, token_data* out) {
  if (!tok) {
    fprintf(stderr, "kiln-train: '%s' is text but the model has no tokenizer\n", path);
    return 1;
  }
  size_t needed = 0;
  kiln_status st = kiln_tokenizer_encode(tok, (const char*)data, size, 0, NULL, 0, &needed);
  if (st != KILN_OK && st != KILN_ERR_BUFFER_TOO_SMALL) {
    fprintf(stderr, "kiln-train: tokenizing '%s': %s\n", path, kiln_last_error());
    return 1;
  }
  out->ids = malloc((needed ? needed : 1) * sizeof(int32_t));
  if (!out->ids) return 1;
  if (kiln_tokenizer_encode(tok, (const char*)data, size, 0, out->ids, needed, &out->n) !=
      KILN_OK) {
    fprintf(stderr, "kiln-train: tokenizing '%s': %s\n", path, kiln_last_error());
    return 1;
  }
  return 0;
}

int token_data_load(const char* path, const kiln_tokenizer* tokenizer, token_data* out) {
  memset(out, 0, sizeof *out);
  unsigned char* data = NULL;
  size_t size = 0;
  if (read_file(path, &data, &size)) return 1;
  int rc;
  if (ends_with(path, ".bin"))
    rc = parse_llmc(path, data, size, out);
  else if (ends_with(path, ".u16"))
    rc = parse_raw(path, data, size, 2, out);
  else if (ends_with(path, ".u32"))
    rc = parse_raw(path, data, size, 4, out);
  else
    rc = tokenize_text(path, data, size, tokenizer, out);
  free(data);
  if (rc) token_data_free(out);
  return rc;
}

void token_data_free(token_data* d) {
  free(d->ids);
  d->ids = NULL;
  d->n = 0;
}

int token_data_check_vocab(const token_data* d, int32_t vocab_size, const char* what) {
  for (size_t i = 0; i < d->n; ++i) {
    if (d->ids[i] < 0 || d->ids[i] >= vocab_size) {
      fprintf(stderr, "kiln-train: %s token %zu is id %d, outside the model's vocabulary [0, %d)\n",
              what, i, d->ids[i], vocab_size);
      return 1;
    }
  }
  return 0;
}

void token_data_split(token_data* all, double fraction, size_t min_tail, token_data* val) {
  size_t tail = (size_t)((double)all->n * fraction);
  if (tail < min_tail) tail = min_tail;
  if (tail > all->n / 2) tail = all->n / 2;
  val->ids = all->ids + (all->n - tail);
  val->n = tail;
  all->n -= tail;
}

/* One row from offset `start`: see token_next_batch for the two layouts. */
static void fill_row(const token_data* d, uint64_t start, int32_t bos, int32_t T, int32_t* inputs,
                     int32_t* targets) {
  const int32_t* row = d->ids + start;
  if (bos >= 0) {
    inputs[0] = bos;
    memcpy(inputs + 1, row, (size_t)(T - 1) * sizeof(int32_t));
    memcpy(targets, row, (size_t)T * sizeof(int32_t));
  } else {
    memcpy(inputs, row, (size_t)T * sizeof(int32_t));
    memcpy(targets, row + 1, (size_t)T * sizeof(int32_t));
  }
}

void token_next_batch(const token_data* d, token_cursor* cursor, int32_t bos, int32_t B, int32_t T,
                      int32_t* inputs, int32_t* targets) {
  for (int32_t b = 0; b < B; ++b) {
    if (cursor->position + (uint64_t)T + 1 > d->n) {
      cursor->position = 0;
      cursor->epoch += 1;
    }
    fill_row(d, cursor->position, bos, T, inputs + (size_t)b * T, targets + (size_t)b * T);
    cursor->position += (uint64_t)T;
  }
}

/* splitmix64's output function (Steele, Lea, Flood): a fixed, well-mixed 64-bit hash. */
static uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void token_random_batch(const token_data* d, token_cursor* cursor, uint64_t seed, int32_t bos,
                        int32_t B, int32_t T, int32_t* inputs, int32_t* targets) {
  const uint64_t span = d->n - (uint64_t)T; /* offsets 0 .. n - T - 1 keep row + T in range */
  for (int32_t b = 0; b < B; ++b) {
    const uint64_t h = mix64(mix64(seed ^ mix64(cursor->position)) + (uint64_t)b);
    fill_row(d, h % span, bos, T, inputs + (size_t)b * T, targets + (size_t)b * T);
  }
  cursor->position += 1;
}
