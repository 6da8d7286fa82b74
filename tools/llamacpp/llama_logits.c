/* llama.cpp as an independent reader of GGUF files that kiln writes (issue 5: "files it writes
 * follow the public GGUF layout exactly, so that llama.cpp loads them"). Loads MODEL with
 * llama.cpp's own loader (CPU backend), runs the given token ids as one batch and writes the
 * logits of every position as float32 [n_ids][n_vocab] to OUT. Built against the llama.h of the
 * llama.cpp release that node-llama-cpp ships (tools/llamacpp/check_kiln_gguf.sh sets it up);
 * nothing of it is part of kiln.
 * With --tokenize it instead prints the ids llama.cpp's tokenizer gives TEXT (no BOS, special
 * tokens as plain text), one line of comma-separated ids: the tokenizer.ggml.* keys kiln wrote.
 * usage: llama_logits MODEL.gguf OUT.bin ID [ID ...]
 *        llama_logits MODEL.gguf --tokenize TEXT */
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

#include "ggml-backend.h"
#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
  (void)user;
  if (level >= GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

static bool no_progress(float progress, void *user) {
  (void)progress;
  (void)user;
  return true;
}

static int print_tokens(const struct llama_model *model, const char *text) {
  const struct llama_vocab *vocab = llama_model_get_vocab(model);
  const int32_t cap = (int32_t)strlen(text) + 8;
  llama_token *out = calloc((size_t)cap, sizeof *out);
  const int32_t n = llama_tokenize(vocab, text, (int32_t)strlen(text), out, cap, false, false);
  if (n < 0) {
    fprintf(stderr, "llama_tokenize failed\n");
    return 1;
  }
  for (int32_t i = 0; i < n; ++i) printf("%s%d", i ? "," : "", out[i]);
  printf("\n");
  free(out);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s MODEL.gguf OUT.bin ID [ID ...]\n", argv[0]);
    return 2;
  }
  const int tokenize = strcmp(argv[2], "--tokenize") == 0;
  const int n = tokenize ? 1 : argc - 3;
  llama_token *ids = calloc((size_t)n, sizeof *ids);
  for (int i = 0; i < n && !tokenize; ++i) ids[i] = (llama_token)atoi(argv[3 + i]);

  llama_log_set(quiet, NULL);
  /* The release loads its CPU backend as a plugin picked for this CPU: from LLAMA_BACKEND_DIR
   * (the directory of the release's libraries) when given. */
  const char *backend_dir = getenv("LLAMA_BACKEND_DIR");
  if (backend_dir != NULL) {
    ggml_backend_load_all_from_path(backend_dir);
  } else {
    ggml_backend_load_all();
  }
  llama_backend_init();
  struct llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  mp.progress_callback = no_progress;
  struct llama_model *model = llama_model_load_from_file(argv[1], mp);
  if (model == NULL) {
    fprintf(stderr, "llama.cpp could not load %s\n", argv[1]);
    return 1;
  }
  if (tokenize) return print_tokens(model, argv[3]);
  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = (uint32_t)(n < 64 ? 64 : n);
  cp.n_batch = cp.n_ubatch = (uint32_t)n;
  cp.n_threads = cp.n_threads_batch = 1; /* one thread: reproducible sums */
  struct llama_context *ctx = llama_init_from_model(model, cp);
  if (ctx == NULL) {
    fprintf(stderr, "llama.cpp could not create a context for %s\n", argv[1]);
    return 1;
  }
  struct llama_batch batch = llama_batch_init(n, 0, 1);
  for (int i = 0; i < n; ++i) {
    batch.token[i] = ids[i];
    batch.pos[i] = i;
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = 1;
  }
  batch.n_tokens = n;
  if (llama_decode(ctx, batch) != 0) {
    fprintf(stderr, "llama_decode failed on %s\n", argv[1]);
    return 1;
  }
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  FILE *out = fopen(argv[2], "wb");
  if (out == NULL) {
    perror(argv[2]);
    return 1;
  }
  for (int i = 0; i < n; ++i) {
    const float *row = llama_get_logits_ith(ctx, i);
    if (row == NULL || fwrite(row, sizeof(float), (size_t)n_vocab, out) != (size_t)n_vocab) {
      fprintf(stderr, "no logits for position %d\n", i);
      return 1;
    }
  }
  fclose(out);
  printf("llama.cpp loaded %s: %d positions x %d vocab written to %s\n", argv[1], n, n_vocab,
         argv[2]);
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  free(ids);
  return 0;
}
