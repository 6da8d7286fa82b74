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
      "                     [--threads N]\n"
      "       kiln-tokenize bench --load -t DIR [--repeat N] [--phases]\n"
      "       kiln-tokenize train --vocab N --out DIR [--special-token TOKEN]... [--pattern RE]\n"
      "                     [--threads N] [--min-frequency N] [--quiet] FILE...\n"
      "\n"
      "encode  reads lines {\"id\": n, \"text\": \"...\"} and prints {\"id\": n, \"ids\": [...]}.\n"
      "        No BOS/EOS is added. With --special, special-token text in the input (such as\n"
      "        \"<|im_start|>\") becomes that token, as HF tokenizers' encode(text,\n"
      "        add_special_tokens=False) does; without it, it is plain text.\n"
      "decode  reads lines {\"id\": n, \"ids\": [...]} and prints {\"id\": n, \"text\": \"...\"}.\n"
      "        --skip-special drops special tokens from the text.\n"
      "bench   encodes FILE line by line (split on '\\n', the newline excluded) on\n"
      "        one thread, then all lines in one kiln_tokenizer_encode_batch call on\n"
      "        --threads N threads (default 0: all cores), and prints the load time, both\n"
      "        throughputs in MB/s and whether the batch ids equal the single-thread ids\n"
      "        (exit status 1 when not); --ids-out writes every line's ids as int32 (native\n"
      "        endian) followed by -1. With --load it only loads the tokenizer N times\n"
      "        (at least 5) and prints the first load's time (the process's first, cold\n"
      "        load) and the fastest and median of the other loads; --phases adds each\n"
      "        load's stage times (file read, JSON parse, vocabulary, merges, ...).\n"
      "train   trains a byte-level BPE tokenizer (GPT-2 / Llama 3 style) on the UTF-8 text\n"
      "        FILEs and writes DIR/tokenizer.json, loadable by kiln and HF tokenizers.\n"
      "        --vocab counts the 256 byte tokens, the merges and the special tokens (which\n"
      "        get the last ids, in the order given). --pattern is the pre-tokenizer regex\n"
      "        (default: Llama 3's). --threads counts words on N threads (default: all\n"
      "        cores); --min-frequency stops before merging a pair seen fewer times\n"
      "        (default 2). A progress bar goes to stderr unless --quiet.\n"
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

/* The batch half of the benchmark: every line of `data` (as the single-thread loop split it) in
 * one kiln_tokenizer_encode_batch call on `threads` threads (0 = all cores). `single` holds the
 * single-thread ids of every line, back to back; *same says whether the batch gave exactly those.
 */
static int bench_batch(const kiln_tokenizer* tok, const char* data, size_t size, size_t n_lines,
                       uint32_t flags, long threads, const int32_t* single, size_t n_single,
                       double* seconds, int* same) {
  const char** texts = (const char**)malloc((n_lines + 1) * sizeof *texts);
  size_t* lens = (size_t*)malloc((n_lines + 1) * sizeof *lens);
  size_t* offsets = (size_t*)malloc((n_lines + 1) * sizeof *offsets);
  int32_t* ids = (int32_t*)malloc((n_single + 1) * sizeof *ids);
  size_t pos = 0, i = 0, n = 0;
  double start;
  int rc = 0;
  if (!texts || !lens || !offsets || !ids) {
    fprintf(stderr, "out of memory for the batch benchmark\n");
    rc = 1;
  }
  while (rc == 0 && i < n_lines) {
    const char* nl = (const char*)memchr(data + pos, '\n', size - pos);
    size_t end = nl ? (size_t)(nl - data) : size;
    texts[i] = data + pos;
    lens[i++] = end - pos;
    pos = end + 1;
  }
  if (rc == 0) {
    start = now_seconds();
    rc = sample_check(kiln_tokenizer_encode_batch(tok, texts, lens, n_lines, flags,
                                                  (int32_t)threads, ids, n_single + 1, offsets, &n),
                      "encode batch");
    *seconds = now_seconds() - start;
    *same = rc == 0 && n == n_single && memcmp(ids, single, n * sizeof *ids) == 0;
  }
  free(ids);
  free(offsets);
  free(lens);
  free((void*)texts);
  return rc;
}

static int run_bench(const kiln_tokenizer* tok, double load_s, const char* path, uint32_t flags,
                     long repeat, const char* ids_out, long threads) {
  size_t size = 0, ids_cap = 0, n_tokens = 0, n_lines = 0, all_cap = 0, n_all = 0;
  int32_t *ids = NULL, *all = NULL;
  char* data = read_file(path, &size);
  FILE* out = NULL;
  double start, seconds, batch_s = 0.0;
  long r;
  int rc = 0, same = 0;
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
      if (r == 0) {
        /* Kept to compare the batch call's ids with (a copy: cheap next to encoding). */
        if (reserve_ids(&all, &all_cap, n_all + n + 1)) {
          fprintf(stderr, "out of memory\n");
          rc = 1;
          break;
        }
        memcpy(all + n_all, ids, n * sizeof *ids);
        n_all += n;
      }
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
  if (rc == 0) {
    rc = bench_batch(tok, data, size, n_lines / (size_t)repeat, flags, threads, all, n_all,
                     &batch_s, &same);
  }
  int32_t vocab = 0;
  if (rc == 0 && sample_check(kiln_tokenizer_vocab_size(tok, &vocab), "vocab size")) rc = 1;
  if (rc == 0) {
    printf(
        "{\"load_s\": %.4f, \"bytes\": %zu, \"lines\": %zu, \"tokens\": %zu, \"encode_s\": %.4f, "
        "\"mb_per_s\": %.3f, \"batch_threads\": %ld, \"batch_s\": %.4f, "
        "\"batch_mb_per_s\": %.3f, \"batch_ids_identical\": %s, \"vocab_size\": %d}\n",
        load_s, size * (size_t)repeat, n_lines, n_tokens, seconds,
        (double)size * (double)repeat / 1e6 / seconds, threads, batch_s,
        (double)size / 1e6 / batch_s, same ? "true" : "false", (int)vocab);
  }
  if (out) fclose(out);
  free(all);
  free(ids);
  free(data);
  return rc != 0 ? rc : (same ? 0 : 1);
}

/* bench --load: loads the tokenizer `repeat` times (at least 5) and prints the first load of the
 * process (cold heap, file maybe not in the page cache) and the fastest and median of the others;
 * the minimum is the figure to compare on a machine other people load too. With --phases the
 * library's debug log line of each load (where the time went, stage by stage) follows its time. */
static int cmp_double(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

typedef struct load_phases {
  char last[2048]; /* the last "tokenizer load ..." debug line */
} load_phases;

static void keep_load_phases(kiln_log_level level, const char* message, void* user_data) {
  load_phases* phases = (load_phases*)user_data;
  if (level == KILN_LOG_DEBUG && strncmp(message, "tokenizer load ", 15) == 0) {
    snprintf(phases->last, sizeof phases->last, "%s", message);
  } else if (level >= KILN_LOG_WARN) {
    fprintf(stderr, "kiln: %s\n", message);
  }
}

static int run_load_bench(const char* tok_path, long repeat, int show_phases) {
  double times[1000], first = 0;
  long r, n = repeat < 5 ? 5 : repeat;
  load_phases phases;
  phases.last[0] = '\0';
  if (show_phases && sample_check(kiln_set_log_callback(keep_load_phases, &phases, KILN_LOG_DEBUG),
                                  "kiln_set_log_callback")) {
    return 1;
  }
  for (r = 0; r < n; ++r) {
    kiln_tokenizer* tok = NULL;
    double start = now_seconds();
    if (sample_check(kiln_tokenizer_load(tok_path, &tok), "kiln_tokenizer_load")) return 1;
    times[r] = now_seconds() - start;
    kiln_tokenizer_free(tok);
    if (show_phases) printf("load %ld: %.1f ms: %s\n", r + 1, times[r] * 1e3, phases.last);
  }
  first = times[0];
  qsort(times + 1, (size_t)(n - 1), sizeof times[0], cmp_double);
  printf("first load: %.1f ms (fresh process)\n", first * 1e3);
  printf("repeated loads: min %.1f ms, median %.1f ms (%ld more loads in the same process)\n",
         times[1] * 1e3, times[1 + (n - 1) / 2] * 1e3, n - 1);
  printf(
      "{\"loads\": %ld, \"first_load_s\": %.4f, \"repeat_min_s\": %.4f, "
      "\"repeat_median_s\": %.4f}\n",
      n, first, times[1], times[1 + (n - 1) / 2]);
  if (show_phases) kiln_set_log_callback(NULL, NULL, KILN_LOG_WARN);
  return 0;
}

#define MAX_LIST_ARGS 1024 /* training files, special tokens */

/* A one-line progress bar on stderr, redrawn when the stage or the percentage changes. */
typedef struct progress_bar {
  char stage[16];
  int percent;
  double start;
} progress_bar;

static int draw_progress(float fraction, const char* stage, void* user_data) {
  progress_bar* bar = (progress_bar*)user_data;
  int percent = (int)(fraction * 100.0f + 0.5f), filled, i;
  if (percent == bar->percent && strncmp(stage, bar->stage, sizeof bar->stage) == 0) return 0;
  if (bar->percent >= 0 && strncmp(stage, bar->stage, sizeof bar->stage) != 0) fputc('\n', stderr);
  snprintf(bar->stage, sizeof bar->stage, "%s", stage);
  bar->percent = percent;
  filled = percent * 40 / 100;
  fprintf(stderr, "\r%-6s [", stage);
  for (i = 0; i < 40; ++i) fputc(i < filled ? '#' : '.', stderr);
  fprintf(stderr, "] %3d%%  %.1f s", percent, now_seconds() - bar->start);
  fflush(stderr);
  return 0;
}

static int run_train(const char* const* files, size_t n_files, long vocab, const char* out_dir,
                     const char* const* specials, size_t n_specials, const char* pattern,
                     long threads, long min_frequency, int quiet) {
  kiln_tokenizer_train_options opts;
  kiln_tokenizer* tok = NULL;
  progress_bar bar;
  int32_t size = 0;
  double start = now_seconds();
  if (sample_check(kiln_tokenizer_train_options_default(&opts, sizeof opts), "train options"))
    return 1;
  opts.vocab_size = (int32_t)vocab;
  opts.pattern = pattern;
  opts.special_tokens = specials;
  opts.n_special_tokens = n_specials;
  opts.n_threads = (int32_t)threads;
  opts.min_frequency = (int32_t)min_frequency;
  memset(&bar, 0, sizeof bar);
  bar.percent = -1;
  bar.start = start;
  if (!quiet) {
    opts.progress_fn = draw_progress;
    opts.progress_user_data = &bar;
  }
  if (sample_check(kiln_tokenizer_train(files, n_files, &opts, &tok), "kiln_tokenizer_train")) {
    if (!quiet) fputc('\n', stderr);
    return 1;
  }
  if (!quiet) fputc('\n', stderr);
  if (sample_check(kiln_tokenizer_save(tok, out_dir), "kiln_tokenizer_save") ||
      sample_check(kiln_tokenizer_vocab_size(tok, &size), "vocab size")) {
    kiln_tokenizer_free(tok);
    return 1;
  }
  printf("{\"vocab_size\": %d, \"out\": ", (int)size);
  json_write_string(stdout, out_dir, strlen(out_dir));
  printf(", \"seconds\": %.2f}\n", now_seconds() - start);
  kiln_tokenizer_free(tok);
  return 0;
}

int main(int argc, char** argv) {
  const char *command = "encode", *tok_path = NULL, *jsonl = NULL, *text_path = NULL,
             *ids_out = NULL;
  uint32_t encode_flags = 0, decode_flags = 0;
  long repeat = 1, vocab = 0, threads = 0, min_frequency = 2;
  const char *out_dir = NULL, *pattern = NULL;
  const char *train_files[MAX_LIST_ARGS], *specials[MAX_LIST_ARGS];
  size_t n_train_files = 0, n_specials = 0;
  int i = 1, rc, quiet = 0, load_only = 0, show_phases = 0;
  kiln_tokenizer* tok = NULL;
  double load_start, load_s;
  FILE* in;

  if (argc > 1 && argv[1][0] != '-') {
    command = argv[1];
    i = 2;
    if (strcmp(command, "encode") != 0 && strcmp(command, "decode") != 0 &&
        strcmp(command, "bench") != 0 && strcmp(command, "train") != 0) {
      fprintf(stderr, "unknown command '%s' (expected encode, decode, bench or train)\n", command);
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
    } else if (strcmp(a, "--vocab") == 0 && has_value) {
      if (sample_parse_long(argv[++i], 257, 16777216, &vocab)) {
        fprintf(stderr, "--vocab expects an integer in 257..16777216, got '%s'\n", argv[i]);
        return 2;
      }
    } else if (strcmp(a, "--threads") == 0 && has_value) {
      if (sample_parse_long(argv[++i], 0, 4096, &threads)) {
        fprintf(stderr, "--threads expects an integer in 0..4096, got '%s'\n", argv[i]);
        return 2;
      }
    } else if (strcmp(a, "--min-frequency") == 0 && has_value) {
      if (sample_parse_long(argv[++i], 1, 2147483647L, &min_frequency)) {
        fprintf(stderr, "--min-frequency expects a positive integer, got '%s'\n", argv[i]);
        return 2;
      }
    } else if (strcmp(a, "--out") == 0 && has_value) {
      out_dir = argv[++i];
    } else if (strcmp(a, "--pattern") == 0 && has_value) {
      pattern = argv[++i];
    } else if (strcmp(a, "--special-token") == 0 && has_value) {
      if (n_specials == MAX_LIST_ARGS) {
        fprintf(stderr, "at most %d --special-token arguments\n", MAX_LIST_ARGS);
        return 2;
      }
      specials[n_specials++] = argv[++i];
    } else if (strcmp(a, "--load") == 0) {
      load_only = 1;
    } else if (strcmp(a, "--phases") == 0) {
      show_phases = 1;
    } else if (strcmp(a, "--quiet") == 0) {
      quiet = 1;
    } else if (strcmp(command, "train") == 0 && a[0] != '-') {
      if (n_train_files == MAX_LIST_ARGS) {
        fprintf(stderr, "at most %d training files\n", MAX_LIST_ARGS);
        return 2;
      }
      train_files[n_train_files++] = a;
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
  if (strcmp(command, "train") == 0) {
    if (!vocab || !out_dir || n_train_files == 0) {
      fprintf(stderr, "train needs --vocab N, --out DIR and at least one FILE\n");
      usage(stderr);
      rc = 2;
    } else {
      rc = run_train(train_files, n_train_files, vocab, out_dir, specials, n_specials, pattern,
                     threads, min_frequency, quiet);
    }
    return rc;
  }
  if (!tok_path) {
    fprintf(stderr, "missing -t TOKENIZER_DIR\n");
    usage(stderr);
    return 2;
  }
  if (strcmp(command, "bench") == 0 && load_only)
    return run_load_bench(tok_path, repeat, show_phases);
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
    rc = run_bench(tok, load_s, text_path, encode_flags, repeat, ids_out, threads);
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
