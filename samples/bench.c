/* kiln-bench: prompt-processing and token-generation throughput of a model, measured the way
 * llama-bench measures them (pp: one batch of N prompt tokens; tg: N tokens decoded one at a time
 * from an empty context), median of several runs. Uses only kiln.h. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln.h"
#include "sample_util.h"

static void usage(FILE* out) {
  fprintf(out,
          "usage: kiln-bench -m MODEL_DIR [options]\n"
          "Measure prompt processing (pp) and token generation (tg) speed in tokens/second.\n"
          "\n"
          "  -m, --model PATH    Hugging Face model directory or GGUF file (required)\n"
          "  -p, --n-prompt N    prompt tokens for pp (default: 512; 0 skips pp)\n"
          "  -n, --n-gen N       generated tokens for tg (default: 128; 0 skips tg)\n"
          "  -r, --repetitions R runs of each test; the median is reported (default: 3)\n"
          "  -t, --threads N     CPU threads (default: all cores)\n"
          "      --backend NAME  auto, cpu or cuda (default: auto)\n"
          "      --precision P   default, bf16 (CUDA) or f32 (CUDA checking mode; the CPU's own)\n"
          "      --tensor-parallel N  split the model across N CUDA GPUs (default: 1, off)\n"
          "  -h, --help          show this help\n"
          "\n"
          "Output: 'load <s>' (kiln_model_load) and 'first token <s>' (load + session create +\n"
          "a 1-token prompt decoded), then one line per test, 'pp512 <tok/s>' and 'tg128 <tok/s>'.\n");
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(int argc, char** argv) {
  const char* model_dir = NULL;
  long n_prompt = 512, n_gen = 128, reps = 3, threads = 0;
  kiln_precision precision = KILN_PRECISION_DEFAULT;
  kiln_runtime_options rt_opts;
  if (sample_check(kiln_runtime_options_default(&rt_opts, sizeof rt_opts), "options")) return 1;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    }
    if (!v) {
      fprintf(stderr, "kiln-bench: %s needs a value (see --help)\n", a);
      return 2;
    }
    int bad = 0;
    if (!strcmp(a, "-m") || !strcmp(a, "--model"))
      model_dir = v;
    else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt"))
      bad = sample_parse_long(v, 0, 1 << 20, &n_prompt);
    else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen"))
      bad = sample_parse_long(v, 0, 1 << 20, &n_gen);
    else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions"))
      bad = sample_parse_long(v, 1, 1000, &reps);
    else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
      bad = sample_parse_long(v, 0, 4096, &threads);
    else if (!strcmp(a, "--backend"))
      bad = sample_parse_backend(v, &rt_opts.backend);
    else if (!strcmp(a, "--precision"))
      bad = sample_parse_precision(v, &precision);
    else if (!strcmp(a, "--tensor-parallel")) {
      long tp = 1;
      bad = sample_parse_long(v, 1, 64, &tp);
      rt_opts.tensor_parallel = (int32_t)tp;
    }
    else {
      fprintf(stderr, "kiln-bench: unknown option '%s' (see --help)\n", a);
      return 2;
    }
    if (bad) {
      fprintf(stderr, "kiln-bench: bad value '%s' for %s\n", v, a);
      return 2;
    }
    ++i;
  }
  if (!model_dir) {
    usage(stderr);
    return 2;
  }
  rt_opts.n_threads = (int32_t)threads;
  kiln_runtime* rt = NULL;
  kiln_model* model = NULL;
  kiln_session* session = NULL;
  int32_t* ids = NULL;
  float* logits = NULL;
  double* times = NULL;
  int rc = 1;
  double t_start = now_seconds();
  if (sample_check(kiln_runtime_create(&rt_opts, &rt), "creating the runtime")) goto done;
  double t_runtime = now_seconds();
  kiln_model_load_options load_opts;
  kiln_model_load_options_default(&load_opts, sizeof load_opts);
  load_opts.precision = precision;
  if (sample_check(kiln_model_load(rt, model_dir, &load_opts, &model), "loading the model"))
    goto done;
  double t_loaded = now_seconds();
  kiln_model_info info;
  info.struct_size = sizeof info;
  kiln_runtime_info rinfo;
  rinfo.struct_size = sizeof rinfo;
  if (sample_check(kiln_model_get_info(model, &info), "model info") ||
      sample_check(kiln_runtime_get_info(rt, &rinfo), "runtime info")) {
    goto done;
  }
  kiln_session_options s_opts;
  kiln_session_options_default(&s_opts, sizeof s_opts);
  /* At least the 8 warm-up tokens: short runs (-p 0 -n 3) must not read past the ids. */
  long longest = n_prompt > n_gen ? n_prompt : n_gen;
  if (longest < 8) longest = 8;
  s_opts.context_length = (int32_t)longest + 1;
  if (sample_check(kiln_session_create(model, &s_opts, &session), "creating the session"))
    goto done;

  size_t n_ids = (size_t)longest;
  ids = malloc((n_ids + 1) * sizeof *ids);
  logits = malloc((size_t)info.vocab_size * sizeof *logits);
  times = malloc((size_t)reps * sizeof *times);
  if (!ids || !logits || !times) goto done;
  /* Arbitrary but fixed token ids inside the vocabulary. */
  uint32_t state = 12345u;
  for (size_t i = 0; i < n_ids + 1; ++i) {
    state = state * 1664525u + 1013904223u;
    ids[i] = (int32_t)(state % (uint32_t)info.vocab_size);
  }
  size_t n = 0;
  /* Time to first token from a cold start: one 1-token prompt decoded right after loading. */
  if (sample_check(kiln_forward(session, ids, 1, KILN_LOGITS_LAST, logits, (size_t)info.vocab_size, &n),
                   "first token")) {
    goto done;
  }
  double t_first = now_seconds();
  kiln_session_reset(session);
  printf("model %s (%s, %lld parameters), backend %s, %d threads\n", model_dir, info.architecture,
         (long long)info.n_parameters, rinfo.device_name, rinfo.n_threads);
  printf("load %.3f s (kiln_model_load, weights uploaded), first token %.3f s (load + session + "
         "1-token decode), runtime %.3f s (kiln_runtime_create, before both)\n",
         t_loaded - t_runtime, t_first - t_runtime, t_runtime - t_start);
  /* Warm-up: pages the weights in and sizes the scratch buffers. */
  if (sample_check(
          kiln_forward(session, ids, 8, KILN_LOGITS_LAST, logits, (size_t)info.vocab_size, &n),
          "warm-up")) {
    goto done;
  }
  for (int test = 0; test < 2; ++test) {
    long count = test == 0 ? n_prompt : n_gen;
    if (count == 0) continue;
    for (long r = 0; r < reps; ++r) {
      kiln_session_reset(session);
      double t0 = now_seconds();
      if (test == 0) {
        if (sample_check(kiln_forward(session, ids, (size_t)count, KILN_LOGITS_LAST, logits,
                                      (size_t)info.vocab_size, &n),
                         "pp")) {
          goto done;
        }
      } else {
        for (long k = 0; k < count; ++k) {
          if (sample_check(kiln_forward(session, ids + k, 1, KILN_LOGITS_LAST, logits,
                                        (size_t)info.vocab_size, &n),
                           "tg")) {
            goto done;
          }
        }
      }
      times[r] = now_seconds() - t0;
    }
    qsort(times, (size_t)reps, sizeof *times, cmp_double);
    double median = times[reps / 2];
    printf("%s%ld %.2f tok/s (median of %ld, %.4f s)\n", test == 0 ? "pp" : "tg", count,
           (double)count / median, reps, median);
  }
  rc = 0;
done:
  free(times);
  free(logits);
  free(ids);
  kiln_session_free(session);
  kiln_model_free(model);
  kiln_runtime_free(rt);
  return rc;
}
