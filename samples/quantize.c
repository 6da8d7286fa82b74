/* kiln-quantize: convert a Hugging Face model directory or a GGUF file to a GGUF file of type
 * F16, Q8_0 or Q4_K_M (kiln_model_quantize). Uses only kiln.h. */
#include <stdio.h>
#include <string.h>

#include "kiln.h"
#include "sample_util.h"

static void usage(FILE* out) {
  fprintf(out,
          "usage: kiln-quantize SRC DST [TYPE] [options]\n"
          "Convert SRC (a Hugging Face model directory or a GGUF file) to the GGUF file DST.\n"
          "TYPE is f16, q8_0 or q4_k_m (default: q4_k_m, llama.cpp's mix). DST is written\n"
          "atomically: on any error it is left as it was.\n"
          "\n"
          "  -t, --threads N     worker threads (default: all cores)\n"
          "  -h, --help          show this help\n");
}

static int parse_type(const char* name, kiln_quantize_type* out) {
  if (!strcmp(name, "f16") || !strcmp(name, "F16"))
    *out = KILN_QUANTIZE_F16;
  else if (!strcmp(name, "q8_0") || !strcmp(name, "Q8_0"))
    *out = KILN_QUANTIZE_Q8_0;
  else if (!strcmp(name, "q4_k_m") || !strcmp(name, "Q4_K_M"))
    *out = KILN_QUANTIZE_Q4_K_M;
  else
    return 1;
  return 0;
}

int main(int argc, char** argv) {
  const char* positional[3] = {NULL, NULL, NULL};
  int n_positional = 0;
  long threads = 0;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
      if (i + 1 >= argc || sample_parse_long(argv[i + 1], 0, 4096, &threads)) {
        fprintf(stderr, "kiln-quantize: %s needs a thread count (see --help)\n", a);
        return 2;
      }
      ++i;
      continue;
    }
    if (a[0] == '-' || n_positional == 3) {
      fprintf(stderr, "kiln-quantize: unexpected argument '%s' (see --help)\n", a);
      return 2;
    }
    positional[n_positional++] = a;
  }
  if (n_positional < 2) {
    usage(stderr);
    return 2;
  }
  kiln_quantize_options opts;
  if (sample_check(kiln_quantize_options_default(&opts, sizeof opts), "options")) return 1;
  if (positional[2] && parse_type(positional[2], &opts.type)) {
    fprintf(stderr, "kiln-quantize: unknown type '%s'; expected f16, q8_0 or q4_k_m\n",
            positional[2]);
    return 2;
  }
  opts.n_threads = (int32_t)threads;
  opts.progress_fn = sample_progress_bar;

  kiln_runtime_options rt_opts;
  kiln_runtime_options_default(&rt_opts, sizeof rt_opts);
  rt_opts.backend = KILN_BACKEND_CPU;
  rt_opts.n_threads = (int32_t)threads;
  kiln_runtime* rt = NULL;
  if (sample_check(kiln_runtime_create(&rt_opts, &rt), "creating the runtime")) return 1;
  const int rc =
      sample_check(kiln_model_quantize(rt, positional[0], positional[1], &opts), "quantizing");
  if (rc == 0) fprintf(stderr, "kiln-quantize: wrote %s\n", positional[1]);
  kiln_runtime_free(rt);
  return rc;
}
