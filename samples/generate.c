/* kiln-generate: stream text from a model. The main job of kiln's README.
 * Uses only kiln.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "sample_util.h"

#ifndef KILN_DEFAULT_MODEL_DIR
#define KILN_DEFAULT_MODEL_DIR "models/kjv-tiny"
#endif

#define MAX_STOPS 8

static void usage(FILE *out) {
  fprintf(out,
          "usage: kiln-generate [options]\n"
          "Generate text from a model, streaming it to stdout as it is produced.\n"
          "\n"
          "  -m, --model DIR       Hugging Face model directory (default: $KILN_MODEL, else the\n"
          "                        bundled model " KILN_DEFAULT_MODEL_DIR ")\n"
          "  -p, --prompt TEXT     prompt (default: \"In the beginning\")\n"
          "  -n, --n-predict N     tokens to generate (default: 128)\n"
          "      --temp T          temperature, 0 = greedy (default: 0.8)\n"
          "      --top-k K         keep the K most likely tokens, 0 = off (default: 40)\n"
          "      --top-p P         nucleus sampling, 1 = off (default: 0.95)\n"
          "      --min-p P         drop tokens below P x the top probability (default: 0.05)\n"
          "      --repeat-penalty R  repetition penalty, 1 = off (default: 1.0)\n"
          "      --seed S          RNG seed: the same seed and options give the same text\n"
          "      --stop TEXT       stop when TEXT appears (may be given up to 8 times)\n"
          "      --ignore-eos      keep generating past end-of-sequence tokens\n"
          "      --ctx N           context length of the session (default: the model's, <= 4096)\n"
          "  -t, --threads N       CPU threads (default: all cores)\n"
          "      --backend NAME    auto, cpu or cuda (default: auto)\n"
          "      --precision P     default, bf16 (CUDA) or f32 (CUDA checking mode; the CPU's own)\n"
          "  -v, --verbose         log loading details to stderr\n"
          "  -h, --help            show this help\n"
          "\n"
          "Statistics (tokens, tok/s) go to stderr, the text to stdout.\n");
}

static int on_token(const char *text, size_t len, int32_t id, void *user_data) {
  (void)id;
  (void)user_data;
  fwrite(text, 1, len, stdout);
  fflush(stdout);
  return 0;
}

static const char *stop_reason_name(kiln_stop_reason r) {
  switch (r) {
    case KILN_STOP_EOS: return "end of sequence";
    case KILN_STOP_MAX_TOKENS: return "token limit";
    case KILN_STOP_STRING: return "stop string";
    case KILN_STOP_CALLBACK: return "callback";
    case KILN_STOP_CONTEXT_FULL: return "context full";
    default: return "none";
  }
}

int main(int argc, char **argv) {
  const char *model_dir = getenv("KILN_MODEL");
  if (!model_dir || !*model_dir) model_dir = KILN_DEFAULT_MODEL_DIR;
  const char *prompt = "In the beginning";
  const char *stops[MAX_STOPS];
  size_t n_stops = 0;
  long n_predict = 128, threads = 0, ctx = 0, seed = 0xC0FFEE;
  kiln_precision precision = KILN_PRECISION_DEFAULT;
  int ignore_eos = 0, verbose = 0;

  kiln_sampling_options sampling;
  kiln_runtime_options rt_opts;
  if (sample_check(kiln_sampling_options_default(&sampling, sizeof sampling), "options") ||
      sample_check(kiln_runtime_options_default(&rt_opts, sizeof rt_opts), "options")) {
    return 1;
  }

  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    int bad = 0, takes_value = 1;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--ignore-eos")) {
      ignore_eos = 1, takes_value = 0;
    } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
      verbose = 1, takes_value = 0;
    } else if (!v) {
      fprintf(stderr, "kiln-generate: %s needs a value (see --help)\n", a);
      return 2;
    } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
      model_dir = v;
    } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
      prompt = v;
    } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
      bad = sample_parse_long(v, 0, 1 << 20, &n_predict);
    } else if (!strcmp(a, "--temp")) {
      bad = sample_parse_float(v, &sampling.temperature);
    } else if (!strcmp(a, "--top-p")) {
      bad = sample_parse_float(v, &sampling.top_p);
    } else if (!strcmp(a, "--min-p")) {
      bad = sample_parse_float(v, &sampling.min_p);
    } else if (!strcmp(a, "--repeat-penalty")) {
      bad = sample_parse_float(v, &sampling.repetition_penalty);
    } else if (!strcmp(a, "--top-k")) {
      long k;
      bad = sample_parse_long(v, 0, 1 << 30, &k);
      sampling.top_k = (int32_t)k;
    } else if (!strcmp(a, "--seed")) {
      bad = sample_parse_long(v, 0, 0x7fffffffL, &seed);
    } else if (!strcmp(a, "--stop")) {
      if (n_stops == MAX_STOPS) bad = 1;
      else stops[n_stops++] = v;
    } else if (!strcmp(a, "--ctx")) {
      bad = sample_parse_long(v, 0, 1 << 24, &ctx);
    } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
      bad = sample_parse_long(v, 0, 4096, &threads);
    } else if (!strcmp(a, "--backend")) {
      bad = sample_parse_backend(v, &rt_opts.backend);
    } else if (!strcmp(a, "--precision")) {
      bad = sample_parse_precision(v, &precision);
    } else {
      fprintf(stderr, "kiln-generate: unknown option '%s' (see --help)\n", a);
      return 2;
    }
    if (bad) {
      fprintf(stderr, "kiln-generate: bad value '%s' for %s (see --help)\n", v, a);
      return 2;
    }
    if (takes_value) ++i;
  }

  rt_opts.n_threads = (int32_t)threads;
  rt_opts.log_level = verbose ? KILN_LOG_INFO : KILN_LOG_WARN;
  kiln_runtime *rt = NULL;
  kiln_model *model = NULL;
  kiln_session *session = NULL;
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
  s_opts.context_length = (int32_t)ctx;
  s_opts.seed = (uint64_t)seed;
  if (sample_check(kiln_session_create(model, &s_opts, &session), "creating the session")) {
    goto done;
  }

  kiln_generate_options g_opts;
  kiln_generate_options_default(&g_opts, sizeof g_opts);
  g_opts.sampling = &sampling;
  g_opts.max_tokens = (int32_t)n_predict;
  g_opts.ignore_eos = ignore_eos;
  g_opts.stop_strings = stops;
  g_opts.n_stop_strings = n_stops;
  g_opts.token_fn = on_token;

  kiln_generate_result result;
  memset(&result, 0, sizeof result);
  result.struct_size = sizeof result;
  fputs(prompt, stdout);
  fflush(stdout);
  if (sample_check(kiln_generate(session, prompt, strlen(prompt), &g_opts, &result),
                   "generating")) {
    goto done;
  }
  fputc('\n', stdout);
  fprintf(stderr,
          "\n[kiln] prompt %d tokens (%.1f tok/s), generated %d tokens (%.1f tok/s), stop: %s\n",
          result.n_prompt_tokens, result.prefill_tokens_per_second, result.n_generated,
          result.decode_tokens_per_second, stop_reason_name(result.stop_reason));
  rc = 0;

done:
  kiln_session_free(session);
  kiln_model_free(model);
  kiln_runtime_free(rt);
  return rc;
}
