/* kiln-logits: write the float32 logits of every position of a token sequence, so kiln can be
 * compared with any other implementation. Uses only kiln.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "sample_util.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: kiln-logits -m MODEL_DIR --ids 1,2,3 -o OUT.bin [options]\n"
          "Run the token ids through the model in one batch and write the logits of every\n"
          "position as little-endian float32, row-major [n_ids x vocab].\n"
          "\n"
          "  -m, --model DIR     Hugging Face model directory (required)\n"
          "      --ids LIST      comma-separated token ids (required)\n"
          "  -o, --output FILE   where to write the logits (required)\n"
          "      --backend NAME  auto, cpu or cuda (default: auto)\n"
          "      --precision P   default, bf16 (CUDA) or f32 (CUDA checking mode; the CPU's own)\n"
          "  -t, --threads N     CPU threads (default: all cores)\n"
          "  -h, --help          show this help\n");
}

int main(int argc, char **argv) {
  const char *model_dir = NULL, *ids_text = NULL, *out_path = NULL;
  long threads = 0;
  kiln_precision precision = KILN_PRECISION_DEFAULT;
  kiln_runtime_options rt_opts;
  if (sample_check(kiln_runtime_options_default(&rt_opts, sizeof rt_opts), "options")) return 1;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    }
    if (!v) {
      fprintf(stderr, "kiln-logits: %s needs a value (see --help)\n", a);
      return 2;
    }
    int bad = 0;
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) model_dir = v;
    else if (!strcmp(a, "--ids")) ids_text = v;
    else if (!strcmp(a, "-o") || !strcmp(a, "--output")) out_path = v;
    else if (!strcmp(a, "--backend")) bad = sample_parse_backend(v, &rt_opts.backend);
    else if (!strcmp(a, "--precision")) bad = sample_parse_precision(v, &precision);
    else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) bad = sample_parse_long(v, 0, 4096, &threads);
    else {
      fprintf(stderr, "kiln-logits: unknown option '%s' (see --help)\n", a);
      return 2;
    }
    if (bad) {
      fprintf(stderr, "kiln-logits: bad value '%s' for %s\n", v, a);
      return 2;
    }
    ++i;
  }
  if (!model_dir || !ids_text || !out_path) {
    usage(stderr);
    return 2;
  }
  int32_t *ids = NULL;
  size_t n_ids = 0;
  if (sample_parse_ids(ids_text, &ids, &n_ids) || n_ids == 0) {
    fprintf(stderr, "kiln-logits: --ids must be a non-empty comma-separated list of integers\n");
    free(ids);
    return 2;
  }

  rt_opts.n_threads = (int32_t)threads;
  kiln_runtime *rt = NULL;
  kiln_model *model = NULL;
  kiln_session *session = NULL;
  float *logits = NULL;
  FILE *out = NULL;
  int rc = 1;
  if (sample_check(kiln_runtime_create(&rt_opts, &rt), "creating the runtime")) goto done;
  kiln_model_load_options load_opts;
  kiln_model_load_options_default(&load_opts, sizeof load_opts);
  load_opts.progress_fn = sample_progress_bar;
  load_opts.precision = precision;
  if (sample_check(kiln_model_load(rt, model_dir, &load_opts, &model), "loading the model")) {
    goto done;
  }
  kiln_session_options s_opts;
  kiln_session_options_default(&s_opts, sizeof s_opts);
  s_opts.context_length = (int32_t)n_ids;
  if (sample_check(kiln_session_create(model, &s_opts, &session), "creating the session")) {
    goto done;
  }
  size_t needed = 0;
  /* Ask for the size first (nothing is computed), then run with a buffer of that size. */
  kiln_status st = kiln_forward(session, ids, n_ids, KILN_LOGITS_ALL, NULL, 0, &needed);
  if (st != KILN_ERR_BUFFER_TOO_SMALL && sample_check(st, "sizing the logits")) goto done;
  logits = malloc(needed * sizeof *logits);
  if (!logits) {
    fprintf(stderr, "kiln-logits: out of memory for %zu logits\n", needed);
    goto done;
  }
  if (sample_check(kiln_forward(session, ids, n_ids, KILN_LOGITS_ALL, logits, needed, &needed),
                   "running the model")) {
    goto done;
  }
  out = fopen(out_path, "wb");
  if (!out || fwrite(logits, sizeof *logits, needed, out) != needed || fclose(out) != 0) {
    out = NULL;
    fprintf(stderr, "kiln-logits: cannot write %s\n", out_path);
    goto done;
  }
  out = NULL;
  fprintf(stderr, "kiln-logits: wrote %zu x %zu float32 logits to %s\n", n_ids, needed / n_ids,
          out_path);
  rc = 0;
done:
  if (out) fclose(out);
  free(logits);
  free(ids);
  kiln_session_free(session);
  kiln_model_free(model);
  kiln_runtime_free(rt);
  return rc;
}
