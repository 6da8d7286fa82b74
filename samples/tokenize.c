/* kiln-tokenize: text ↔ token ids with a tokenizer.json, no model weights needed.
 * Uses only kiln.h (through the kiln_tokenizer_* functions). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json_line.h"
#include "kiln.h"
#include "sample_util.h"

static void usage(FILE* out) {
  fprintf(
      out,
      "usage: kiln-tokenize [encode] -t DIR --jsonl IN.jsonl [--special]\n"
      "       kiln-tokenize decode -t DIR --jsonl IN.jsonl [--skip-special]\n"
      "       kiln-tokenize bench -t DIR --text FILE [--special] [--repeat N] [--ids-out FILE]\n"
      "\n"
      "encode  reads lines {\"id\": n, \"text\": \"...\"} and prints {\"id\": n, \"ids\": [...]}.\n"
      "        No BOS/EOS is added. With --special, special-token text in the input (such as\n"
      "        \"<|im_start|>\") becomes that token, as HF tokenizers' encode(text,\n"
      "        add_special_tokens=False) does; without it, it is plain text.\n"
      "decode  reads lines {\"id\": n, \"ids\": [...]} and prints {\"id\": n, \"text\": \"...\"}.\n"
      "        --skip-special drops special tokens from the text.\n"
      "bench   encodes FILE line by line (split on '\\n', the newline excluded) on\n"
      "        one thread and prints the load time and the throughput in MB/s; --ids-out\n"
      "        writes every line's ids as int32 (native endian) followed by -1.\n"
      "\n"
      "  -t, --tokenizer DIR   a directory with tokenizer.json (+ tokenizer_config.json), or a\n"
      "                        tokenizer.json file\n"
      "      --jsonl FILE      input lines; \"-\" reads stdin\n"
      "  -h, --help            show this help\n");
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Grows *buf to hold at least n int32 ids. */
static int reserve_ids(int32_t** buf, size_t* cap, size_t n) {
  if (n <= *cap) return 0;
  {
    int32_t* grown = (int32_t*)realloc(*buf, n * sizeof(int32_t));
    if (!grown) return 1;
    *buf = grown;
    *cap = n;
  }
  return 0;
}

/* Encodes text into *ids (grown as needed). Returns a kiln_status. */
static kiln_status encode(const kiln_tokenizer* tok, const char* text, size_t len, uint32_t flags,
                          int32_t** ids, size_t* cap, size_t* n) {
  kiln_status st = kiln_tokenizer_encode(tok, text, len, flags, *ids, *cap, n);
  if (st == KILN_ERR_BUFFER_TOO_SMALL) {
    if (reserve_ids(ids, cap, *n)) return KILN_ERR_OUT_OF_MEMORY;
    st = kiln_tokenizer_encode(tok, text, len, flags, *ids, *cap, n);
  }
  return st;
}

static int run_encode(const kiln_tokenizer* tok, FILE* in, uint32_t flags) {
  char *line = NULL, err[160];
  size_t line_cap = 0, ids_cap = 0, lineno = 0;
  int32_t* ids = NULL;
  json_line row;
  ssize_t len;
  int rc = 0;
  memset(&row, 0, sizeof row);
  while ((len = getline(&line, &line_cap, in)) >= 0) {
    size_t n = 0, i;
    ++lineno;
    if (len == 0 || (len == 1 && line[0] == '\n')) continue;
    if (json_line_parse(line, (size_t)len, &row, err, sizeof err)) {
      fprintf(stderr, "line %zu: %s\n", lineno, err);
      rc = 1;
      break;
    }
    if (!row.has_id || !row.has_text) {
      fprintf(stderr, "line %zu: expected members \"id\" (integer) and \"text\" (string)\n",
              lineno);
      rc = 1;
      break;
    }
    if (sample_check(encode(tok, row.text, row.text_len, flags, &ids, &ids_cap, &n), "encode")) {
      fprintf(stderr, "  (line %zu, id %lld)\n", lineno, row.id);
      rc = 1;
      break;
    }
    printf("{\"id\": %lld, \"ids\": [", row.id);
    for (i = 0; i < n; ++i) printf(i ? ", %d" : "%d", (int)ids[i]);
    printf("]}\n");
  }
  json_line_free(&row);
  free(line);
  free(ids);
  return rc;
}

static int run_decode(const kiln_tokenizer* tok, FILE* in, uint32_t flags) {
  char *line = NULL, *text = NULL, err[160];
  size_t line_cap = 0, text_cap = 0, lineno = 0;
  json_line row;
  ssize_t len;
  int rc = 0;
  memset(&row, 0, sizeof row);
  while ((len = getline(&line, &line_cap, in)) >= 0) {
    size_t n = 0;
    kiln_status st;
    ++lineno;
    if (len == 0 || (len == 1 && line[0] == '\n')) continue;
    if (json_line_parse(line, (size_t)len, &row, err, sizeof err)) {
      fprintf(stderr, "line %zu: %s\n", lineno, err);
      rc = 1;
      break;
    }
    if (!row.has_id || !row.has_ids) {
      fprintf(stderr, "line %zu: expected members \"id\" (integer) and \"ids\" (array)\n", lineno);
      rc = 1;
      break;
    }
    st = kiln_tokenizer_decode(tok, row.ids, row.n_ids, flags, text, text_cap, &n);
    if (st == KILN_ERR_BUFFER_TOO_SMALL) {
      char* grown = (char*)realloc(text, n);
      if (!grown)
        st = KILN_ERR_OUT_OF_MEMORY;
      else {
        text = grown;
        text_cap = n;
        st = kiln_tokenizer_decode(tok, row.ids, row.n_ids, flags, text, text_cap, &n);
      }
    }
    if (sample_check(st, "decode")) {
      fprintf(stderr, "  (line %zu, id %lld)\n", lineno, row.id);
      rc = 1;
      break;
    }
    printf("{\"id\": %lld, \"text\": ", row.id);
    json_write_string(stdout, text, n);
    printf("}\n");
  }
  json_line_free(&row);
  free(line);
  free(text);
  return rc;
}

/* Reads a whole file into a malloc'd buffer. */
static char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  char* data = NULL;
  long n;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
    data = (char*)malloc((size_t)n + 1);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
      free(data);
      data = NULL;
    }
    *size = (size_t)n;
  }
  fclose(f);
  return data;
}

static int run_bench(const kiln_tokenizer* tok, double load_s, const char* path, uint32_t flags,
                     long repeat, const char* ids_out) {
  size_t size = 0, ids_cap = 0, n_tokens = 0, n_lines = 0;
  int32_t* ids = NULL;
  char* data = read_file(path, &size);
  FILE* out = NULL;
  double start, seconds;
  long r;
  int rc = 0;
  if (!data) {
    fprintf(stderr, "cannot read %s\n", path);
    return 1;
  }
  if (ids_out && !(out = fopen(ids_out, "wb"))) {
    fprintf(stderr, "cannot write %s\n", ids_out);
    free(data);
    return 1;
  }
  start = now_seconds();
  for (r = 0; r < repeat && rc == 0; ++r) {
    size_t pos = 0;
    /* Every '\n' ends a line; the text after the last one is a line too (Python's split('\n')). */
    for (;;) {
      const char* nl = (const char*)memchr(data + pos, '\n', size - pos);
      size_t end = nl ? (size_t)(nl - data) : size, n = 0;
      if (sample_check(encode(tok, data + pos, end - pos, flags, &ids, &ids_cap, &n), "encode")) {
        fprintf(stderr, "  (line %zu of %s)\n", n_lines + 1, path);
        rc = 1;
        break;
      }
      n_tokens += n;
      ++n_lines;
      if (out && r == 0) {
        const int32_t sep = -1;
        fwrite(ids, sizeof(int32_t), n, out);
        fwrite(&sep, sizeof sep, 1, out);
      }
      if (!nl) break;
      pos = end + 1;
    }
  }
  seconds = now_seconds() - start;
  int32_t vocab = 0;
  if (rc == 0 && sample_check(kiln_tokenizer_vocab_size(tok, &vocab), "vocab size")) rc = 1;
  if (rc == 0) {
    printf(
        "{\"load_s\": %.4f, \"bytes\": %zu, \"lines\": %zu, \"tokens\": %zu, \"encode_s\": %.4f, "
        "\"mb_per_s\": %.3f, \"vocab_size\": %d}\n",
        load_s, size * (size_t)repeat, n_lines, n_tokens, seconds,
        (double)size * (double)repeat / 1e6 / seconds, (int)vocab);
  }
  if (out) fclose(out);
  free(ids);
  free(data);
  return rc;
}

int main(int argc, char** argv) {
  const char *command = "encode", *tok_path = NULL, *jsonl = NULL, *text_path = NULL,
             *ids_out = NULL;
  uint32_t encode_flags = 0, decode_flags = 0;
  long repeat = 1;
  int i = 1, rc;
  kiln_tokenizer* tok = NULL;
  double load_start, load_s;
  FILE* in;

  if (argc > 1 && argv[1][0] != '-') {
    command = argv[1];
    i = 2;
    if (strcmp(command, "encode") != 0 && strcmp(command, "decode") != 0 &&
        strcmp(command, "bench") != 0) {
      fprintf(stderr, "unknown command '%s' (expected encode, decode or bench)\n", command);
      usage(stderr);
      return 2;
    }
  }
  for (; i < argc; ++i) {
    const char* a = argv[i];
    int has_value = i + 1 < argc;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else if ((strcmp(a, "-t") == 0 || strcmp(a, "--tokenizer") == 0) && has_value) {
      tok_path = argv[++i];
    } else if (strcmp(a, "--jsonl") == 0 && has_value) {
      jsonl = argv[++i];
    } else if (strcmp(a, "--text") == 0 && has_value) {
      text_path = argv[++i];
    } else if (strcmp(a, "--ids-out") == 0 && has_value) {
      ids_out = argv[++i];
    } else if (strcmp(a, "--repeat") == 0 && has_value) {
      if (sample_parse_long(argv[++i], 1, 1000, &repeat)) {
        fprintf(stderr, "--repeat expects an integer in 1..1000, got '%s'\n", argv[i]);
        return 2;
      }
    } else if (strcmp(a, "--special") == 0) {
      encode_flags |= KILN_TOKENIZE_PARSE_SPECIAL;
    } else if (strcmp(a, "--skip-special") == 0) {
      decode_flags |= KILN_DETOKENIZE_SKIP_SPECIAL;
    } else {
      fprintf(stderr, "unknown or incomplete argument '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (!tok_path) {
    fprintf(stderr, "missing -t TOKENIZER_DIR\n");
    usage(stderr);
    return 2;
  }
  if (strcmp(command, "bench") == 0 ? !text_path : !jsonl) {
    fprintf(stderr,
            strcmp(command, "bench") == 0 ? "missing --text FILE\n" : "missing --jsonl FILE\n");
    usage(stderr);
    return 2;
  }

  load_start = now_seconds();
  if (sample_check(kiln_tokenizer_load(tok_path, &tok), "kiln_tokenizer_load")) return 1;
  load_s = now_seconds() - load_start;

  if (strcmp(command, "bench") == 0) {
    rc = run_bench(tok, load_s, text_path, encode_flags, repeat, ids_out);
  } else {
    in = strcmp(jsonl, "-") == 0 ? stdin : fopen(jsonl, "rb");
    if (!in) {
      fprintf(stderr, "cannot open %s\n", jsonl);
      kiln_tokenizer_free(tok);
      return 1;
    }
    rc = strcmp(command, "decode") == 0 ? run_decode(tok, in, decode_flags)
                                        : run_encode(tok, in, encode_flags);
    if (in != stdin) fclose(in);
  }
  kiln_tokenizer_free(tok);
  return rc;
}
