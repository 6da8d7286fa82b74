/* kiln-train-gpu-bench: GPT-2 124M (nanoGPT shape: 12 × 768, 12 heads, vocab 50304, seq 1024,
 * tied) trained on the GPU through kiln.h on random tokens — AdamW (0.9, 0.95, wd 0.1), clip 1.0,
 * constant LR — the PyTorch peer's recipe (train_gpu_torch_peer.py). Times `timed` steps after
 * `warmup` steps on the wall clock (kiln_train_step returns once the step's losses are on the
 * host; the un-synchronised optimizer tail of the first timed step's predecessor and of the last
 * step cancel out) and prints one JSON line. Device memory is cudaMemGetInfo's used bytes after
 * the run minus before the runtime (kiln's allocator never frees during training, so this is its
 * peak; the CUDA context is in neither number).
 * With --muon it then trains the same model again with the Muon optimizer (nanochat's recipe,
 * kiln's defaults) and prints a second line and the time Muon adds per step, so both come from
 * one call on one warm GPU.
 * usage: kiln-train-gpu-bench [--muon] [BATCH [SEQ [WARMUP [TIMED]]]]   (default 16 1024 10 20) */
#define _POSIX_C_SOURCE 199309L
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int check(kiln_status st, const char* what) {
  if (st == KILN_OK) return 0;
  fprintf(stderr, "kiln-train-gpu-bench: %s failed: %s: %s\n", what, kiln_status_name(st),
          kiln_last_error());
  return 1;
}

typedef struct bench_shape {
  int32_t batch, seq;
  int warmup, timed;
} bench_shape;

/* One GPT-2 training run with `optimizer`; prints its JSON line and returns its ms per step
 * (negative on failure, after printing why). */
static double run_bench(bench_shape shape, kiln_optimizer optimizer) {
  const int32_t B = shape.batch, T = shape.seq;
  const int32_t vocab = 50304, layers = 12, width = 768;
  size_t free0 = 0, total = 0, free1 = 0;
  if (cudaMemGetInfo(&free0, &total) != cudaSuccess) {
    fprintf(stderr, "kiln-train-gpu-bench: no CUDA device\n");
    return -1.0;
  }
  char config[512];
  snprintf(config, sizeof config,
           "{\"architectures\":[\"GPT2LMHeadModel\"],\"vocab_size\":%d,\"n_embd\":%d,"
           "\"n_layer\":%d,\"n_head\":12,\"n_positions\":1024,\"n_inner\":null,"
           "\"layer_norm_epsilon\":1e-5,\"activation_function\":\"gelu_new\","
           "\"tie_word_embeddings\":true}",
           vocab, width, layers);
  kiln_runtime_options ro;
  kiln_runtime* rt = NULL;
  kiln_model* model = NULL;
  kiln_trainer* trainer = NULL;
  int32_t* tokens = NULL;
  double ms = -1.0;
  if (check(kiln_runtime_options_default(&ro, sizeof ro), "runtime options")) goto done;
  ro.backend = KILN_BACKEND_CUDA;
  if (check(kiln_runtime_create(&ro, &rt), "kiln_runtime_create")) goto done;
  if (check(kiln_model_create(rt, config, strlen(config), NULL, &model), "kiln_model_create"))
    goto done;
  kiln_trainer_options o;
  if (check(kiln_trainer_options_default(&o, sizeof o), "trainer options")) goto done;
  o.optimizer = optimizer;
  o.learning_rate = 6e-4f;
  o.beta1 = 0.9f;
  o.beta2 = 0.95f;
  o.weight_decay = 0.1f;
  o.max_grad_norm = 1.0f;
  o.schedule = KILN_LR_CONSTANT;
  if (check(kiln_trainer_create(model, &o, &trainer), "kiln_trainer_create")) goto done;
  kiln_model_free(model); /* the trainer has its own copy; the inference weights go */
  model = NULL;
  kiln_trainer_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  if (check(kiln_trainer_get_info(trainer, &info), "kiln_trainer_get_info")) goto done;

  const size_t n = (size_t)B * (size_t)T;
  tokens = malloc((n + 1) * sizeof *tokens);
  if (!tokens) goto done;
  uint64_t s = 0x9E3779B97F4A7C15ull;
  double t0 = 0, first_loss = 0, last_loss = 0;
  for (int step = 0; step < shape.warmup + shape.timed; ++step) {
    for (size_t i = 0; i <= n; ++i) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      tokens[i] = (int32_t)(s % 50257u);
    }
    kiln_batch batch = {sizeof batch, B, T, tokens, tokens + 1, NULL, NULL};
    kiln_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    if (step == shape.warmup) t0 = now_s();
    if (check(kiln_train_step(trainer, &batch, &r), "kiln_train_step")) goto done;
    if (step == 0) first_loss = r.loss;
    last_loss = r.loss;
  }
  const double seconds = now_s() - t0;
  cudaMemGetInfo(&free1, &total);
  const double tok_s = (double)n * shape.timed / seconds;
  /* N without the position table (nanoGPT's convention for MFU). */
  const double n_params = (double)info.n_parameters - 1024.0 * width;
  const double flops_per_token = 6.0 * n_params + 12.0 * layers * width * T;
  const double mfu = tok_s * flops_per_token / 775.5e12;
  ms = 1e3 * seconds / shape.timed;
  printf(
      "{\"peer\": \"kiln\", \"optimizer\": \"%s\", \"batch\": %d, \"seq\": %d, \"params\": %lld, "
      "\"tokens_per_s\": %.0f, \"step_ms\": %.2f, \"mfu\": %.4f, \"flops_per_token\": %.4g, "
      "\"device_mem_gib\": %.2f, \"first_loss\": %.4f, \"last_loss\": %.4f}\n",
      optimizer == KILN_OPTIMIZER_MUON ? "muon" : "adamw", B, T, (long long)info.n_parameters,
      tok_s, ms, mfu, flops_per_token, (double)(free0 - free1) / (1024.0 * 1024.0 * 1024.0),
      first_loss, last_loss);
  fflush(stdout);
done:
  free(tokens);
  kiln_trainer_free(trainer);
  kiln_model_free(model);
  kiln_runtime_free(rt);
  return ms;
}

int main(int argc, char** argv) {
  int muon = 0;
  const char* pos[4] = {NULL, NULL, NULL, NULL};
  int n_pos = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--muon") == 0) {
      muon = 1;
    } else if (n_pos < 4) {
      pos[n_pos++] = argv[i];
    } else {
      fprintf(stderr, "usage: kiln-train-gpu-bench [--muon] [BATCH [SEQ [WARMUP [TIMED]]]]\n");
      return 2;
    }
  }
  bench_shape shape = {pos[0] ? atoi(pos[0]) : 16, pos[1] ? atoi(pos[1]) : 1024,
                       pos[2] ? atoi(pos[2]) : 10, pos[3] ? atoi(pos[3]) : 20};
  if (shape.batch <= 0 || shape.seq <= 0 || shape.warmup < 0 || shape.timed <= 0) {
    fprintf(stderr, "kiln-train-gpu-bench: BATCH, SEQ and TIMED must be > 0, WARMUP >= 0\n");
    return 2;
  }
  const double adamw_ms = run_bench(shape, KILN_OPTIMIZER_ADAMW);
  if (adamw_ms < 0.0) return 1;
  if (!muon) return 0;
  const double muon_ms = run_bench(shape, KILN_OPTIMIZER_MUON);
  if (muon_ms < 0.0) return 1;
  printf("{\"muon_extra_ms_per_step\": %.2f, \"muon_extra_fraction\": %.4f}\n", muon_ms - adamw_ms,
         (muon_ms - adamw_ms) / adamw_ms);
  return 0;
}
