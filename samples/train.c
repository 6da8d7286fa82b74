/* kiln-train: train a model with kiln's C ABI — from a preset (a fresh model) or a Hugging Face
 * directory, on a text file or pre-tokenised shards — with a live progress bar, periodic
 * validation, checkpoints, exact --resume, a JSONL log and a loss-curve SVG.
 * Uses only kiln.h. Its flags are a contract scripts rely on (docs/training.md). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, fileno, mkdir */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kiln.h"
#include "sample_util.h"
#include "svg_plot.h"
#include "token_data.h"

#ifndef KILN_DEFAULT_MODEL_DIR
#define KILN_DEFAULT_MODEL_DIR "models/kjv-tiny"
#endif

static void usage(FILE* out) {
  fprintf(
      out,
      "usage: kiln-train (--preset NAME | --model DIR | --resume DIR) --data FILE [options]\n"
      "Train a language model with kiln (CPU, float32), step by step, with checkpoints.\n"
      "\n"
      "Model (one of):\n"
      "      --preset NAME     a fresh model: tiny (Llama, trains in seconds), tiny-gpt2,\n"
      "                        tiny-nanochat, kjv-tiny (the bundled model's shape; its\n"
      "                        defaults follow models/kjv-tiny/train.py: --steps 2000\n"
      "                        --batch 64 --seq 256 --dropout 0.2 --eval-every 100,\n"
      "                        weight decay on the embedding; warmup steps/20 = 100),\n"
      "                        gpt2-124m (GPT-2 small, vocab 50304)\n"
      "      --model DIR       fine-tune a Hugging Face model directory\n"
      "      --resume DIR      continue the run saved in DIR (its options and data cursor);\n"
      "                        --steps is the step to stop at, so the run ends where it would\n"
      "                        have without the interruption\n"
      "      --tokenizer DIR   tokenizer for presets (default: the bundled model's)\n"
      "\n"
      "Data:\n"
      "      --data FILE       training data: UTF-8 text (tokenized with the model's\n"
      "                        tokenizer), llm.c .bin shards, or raw .u16 / .u32 token ids\n"
      "      --val FILE        validation data (default: the last 5%% of --data)\n"
      "      --windows MODE    how rows are cut from the data: sequential (default; consecutive\n"
      "                        windows, wrapping at the end) or random (uniform offsets drawn\n"
      "                        from --seed and the step: reproducible and resumable)\n"
      "      --bos-first       every row is a fresh context starting with the model's BOS:\n"
      "                        inputs [BOS, y0 .. y(T-2)], targets y (training and validation)\n"
      "\n"
      "Run:\n"
      "      --steps N         the step to stop at (default: 100)\n"
      "      --batch B         rows per step (default: 8)\n"
      "      --seq T           tokens per row (default: 64)\n"
      "      --accum N         gradient-accumulation micro-batches per step (default: 1)\n"
      "      --lr LR           peak learning rate (default: 1e-3)\n"
      "      --optimizer NAME  adamw or muon (default: adamw)\n"
      "      --schedule NAME   constant, cosine, linear or wsd (default: cosine)\n"
      "      --warmup N        warmup steps (default: steps/20)\n"
      "      --wd X            weight decay (default: 0.1)\n"
      "      --clip X          global gradient-norm clip, 0 = off (default: 1.0)\n"
      "      --mtp N           extra multi-token-prediction heads (default: 0)\n"
      "      --dropout P       GPT-2-style residual dropout in [0, 1) on the embedding and\n"
      "                        every attention / MLP output, training steps only (default:\n"
      "                        0.2 for --preset kjv-tiny, as its train.py; else 0)\n"
      "      --seed S          seed of the initialisation and the trainer (default: 1337)\n"
      "      --eval-every N    validation loss every N steps, 0 = only at the end\n"
      "                        (default: steps/10)\n"
      "      --eval-batches N  batches per validation (default: 4)\n"
      "\n"
      "Output:\n"
      "      --save DIR        write DIR/checkpoint.kiln (atomically) every --save-every steps\n"
      "                        and at the end, and DIR/loss.svg\n"
      "      --save-every N    (default: 0 = only at the end)\n"
      "      --export DIR      at the end, write a Hugging Face directory transformers loads\n"
      "      --export-best DIR after each validation that beats every earlier one of this\n"
      "                        process, write the weights as a Hugging Face directory (the\n"
      "                        checkpoint a recipe with early stopping keeps)\n"
      "      --log-jsonl FILE  one JSON line per step: {\"step\", \"loss\", \"lr\", "
      "\"grad_norm\",\n"
      "                        \"tokens_per_s\"} and per validation {\"step\", \"val_loss\"};\n"
      "                        appended to on --resume. Same flags and seed give the same\n"
      "                        lines (tokens_per_s, a timing, aside)\n"
      "      --plot FILE       loss-curve SVG (default: DIR/loss.svg with --save)\n"
      "  -t, --threads N       CPU threads (default: all cores)\n"
      "      --backend B       cpu (default; float32, bit-reproducible), cuda (BF16 compute with\n"
      "                        float32 master weights and AdamW state) or auto\n"
      "  -q, --quiet           no progress bar\n"
      "  -h, --help            show this help\n");
}

/* Hugging Face style config.json text for a preset; vocab from the tokenizer. */
static int preset_config(const char* name, int32_t vocab, char* buf, size_t cap) {
  int n;
  if (!strcmp(name, "tiny")) {
    n = snprintf(buf, cap,
                 "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":%d,"
                 "\"hidden_size\":64,\"intermediate_size\":192,\"num_hidden_layers\":2,"
                 "\"num_attention_heads\":4,\"num_key_value_heads\":2,"
                 "\"max_position_embeddings\":256,\"rms_norm_eps\":1e-5,"
                 "\"rope_theta\":10000.0,\"tie_word_embeddings\":true}",
                 vocab);
  } else if (!strcmp(name, "kjv-tiny")) {
    n = snprintf(buf, cap,
                 "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":%d,"
                 "\"hidden_size\":256,\"intermediate_size\":768,\"num_hidden_layers\":6,"
                 "\"num_attention_heads\":8,\"num_key_value_heads\":4,\"head_dim\":32,"
                 "\"max_position_embeddings\":512,\"rms_norm_eps\":1e-5,"
                 "\"rope_theta\":10000.0,\"tie_word_embeddings\":true,"
                 "\"bos_token_id\":1,\"eos_token_id\":0}",
                 vocab);
  } else if (!strcmp(name, "tiny-gpt2")) {
    n = snprintf(buf, cap,
                 "{\"architectures\":[\"GPT2LMHeadModel\"],\"vocab_size\":%d,\"n_embd\":64,"
                 "\"n_layer\":2,\"n_head\":4,\"n_positions\":256,\"n_inner\":null,"
                 "\"layer_norm_epsilon\":1e-5,\"activation_function\":\"gelu_new\","
                 "\"tie_word_embeddings\":true}",
                 vocab);
  } else if (!strcmp(name, "gpt2-124m")) {
    n = snprintf(buf, cap,
                 "{\"architectures\":[\"GPT2LMHeadModel\"],\"vocab_size\":%d,\"n_embd\":768,"
                 "\"n_layer\":12,\"n_head\":12,\"n_positions\":1024,\"n_inner\":null,"
                 "\"layer_norm_epsilon\":1e-5,\"activation_function\":\"gelu_new\","
                 "\"tie_word_embeddings\":true}",
                 vocab > 50304 ? vocab : 50304);
  } else if (!strcmp(name, "tiny-nanochat")) {
    n = snprintf(buf, cap,
                 "{\"architectures\":[\"NanoChatForCausalLM\"],\"vocab_size\":%d,"
                 "\"hidden_size\":64,\"intermediate_size\":256,\"num_hidden_layers\":2,"
                 "\"num_attention_heads\":4,\"num_key_value_heads\":4,"
                 "\"max_position_embeddings\":256,\"rms_norm_eps\":1e-6,"
                 "\"rope_theta\":10000.0,\"final_logit_softcapping\":15.0,"
                 "\"tie_word_embeddings\":false}",
                 vocab);
  } else {
    return 1;
  }
  return n < 0 || (size_t)n >= cap;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void progress_line(int tty, long step, long steps, double loss, double lr, double tps,
                          double eta) {
  if (tty) {
    const int width = 24;
    int filled = (int)((double)width * (double)step / (double)(steps ? steps : 1));
    fprintf(stderr, "\rstep %ld/%ld [", step, steps);
    for (int i = 0; i < width; ++i) fputc(i < filled ? '#' : '.', stderr);
    fprintf(stderr, "] loss %.4f  lr %.2e  %.0f tok/s  ETA %ld:%02ld   ", loss, lr, tps,
            (long)eta / 60, (long)eta % 60);
    fflush(stderr);
  } else {
    fprintf(stderr, "step %ld/%ld loss %.4f lr %.2e %.0f tok/s\n", step, steps, loss, lr, tps);
  }
}

typedef struct series {
  double *x, *y;
  size_t n, cap;
} series;

static void series_add(series* s, double x, double y) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 256;
    double *nx = realloc(s->x, cap * sizeof(double)), *ny;
    if (!nx) return;
    s->x = nx;
    ny = realloc(s->y, cap * sizeof(double));
    if (!ny) return;
    s->y = ny, s->cap = cap;
  }
  s->x[s->n] = x, s->y[s->n] = y, s->n++;
}

static int path_join(char* buf, size_t cap, const char* dir, const char* name) {
  int n = snprintf(buf, cap, "%s/%s", dir, name);
  return n < 0 || (size_t)n >= cap;
}

/* What kiln-train stores as the trainer's data state: the cursor and how rows are drawn, so that
 * --resume continues the same stream. A checkpoint of an older kiln-train holds only the cursor
 * (sequential windows without BOS). */
typedef struct data_state {
  token_cursor cursor;
  uint64_t windows_seed;
  int32_t random_windows; /* 0: sequential, 1: random offsets */
  int32_t bos;            /* >= 0: rows start with this id (--bos-first); -1: plain windows */
} data_state;

/* Validation: the first `n_batches` batches of the validation stream, the same every time. */
static int validate(kiln_trainer* trainer, const token_data* val, int32_t bos, int32_t B, int32_t T,
                    long n_batches, int32_t* inputs, int32_t* targets, double* out_loss) {
  token_cursor cursor = {0, 0};
  double weighted = 0, weight = 0;
  for (long i = 0; i < n_batches; ++i) {
    token_next_batch(val, &cursor, bos, B, T, inputs, targets);
    kiln_batch batch = {sizeof batch, B, T, inputs, targets, NULL, NULL};
    kiln_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    if (sample_check(kiln_eval_loss(trainer, &batch, &r), "validation")) return 1;
    weighted += r.loss * r.weight_sum;
    weight += r.weight_sum;
  }
  *out_loss = weight > 0 ? weighted / weight : NAN;
  return 0;
}

static int save_checkpoint(kiln_trainer* trainer, const char* dir, const data_state* state) {
  char path[4096];
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
    fprintf(stderr, "kiln-train: cannot create '%s': %s\n", dir, strerror(errno));
    return 1;
  }
  if (path_join(path, sizeof path, dir, "checkpoint.kiln")) return 1;
  if (sample_check(kiln_trainer_set_data_state(trainer, state, sizeof *state), "data state"))
    return 1;
  return sample_check(kiln_checkpoint_save(trainer, path), "saving the checkpoint");
}

typedef struct args {
  const char *preset, *model_dir, *resume_dir, *tokenizer_dir, *data, *val, *save_dir, *export_dir,
      *export_best_dir, *log_path, *plot_path, *optimizer, *schedule, *backend, *windows;
  long steps, total_steps, batch, seq, accum, warmup, mtp, seed, eval_every, eval_batches,
      save_every, threads;
  float lr, wd, clip, dropout;
  int quiet, bos_first, steps_given, batch_given, seq_given;
} args;

static int parse_args(int argc, char** argv, args* a) {
  for (int i = 1; i < argc; ++i) {
    const char* k = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    int bad = 0, takes_value = 1;
    if (!strcmp(k, "-h") || !strcmp(k, "--help")) {
      usage(stdout);
      exit(0);
    } else if (!strcmp(k, "--bos-first")) {
      a->bos_first = 1, takes_value = 0;
    } else if (!strcmp(k, "-q") || !strcmp(k, "--quiet")) {
      a->quiet = 1, takes_value = 0;
    } else if (!v) {
      fprintf(stderr, "kiln-train: %s needs a value (see --help)\n", k);
      return 2;
    } else if (!strcmp(k, "--preset"))
      a->preset = v;
    else if (!strcmp(k, "--model"))
      a->model_dir = v;
    else if (!strcmp(k, "--resume"))
      a->resume_dir = v;
    else if (!strcmp(k, "--tokenizer"))
      a->tokenizer_dir = v;
    else if (!strcmp(k, "--data"))
      a->data = v;
    else if (!strcmp(k, "--val"))
      a->val = v;
    else if (!strcmp(k, "--save"))
      a->save_dir = v;
    else if (!strcmp(k, "--export"))
      a->export_dir = v;
    else if (!strcmp(k, "--export-best"))
      a->export_best_dir = v;
    else if (!strcmp(k, "--log-jsonl"))
      a->log_path = v;
    else if (!strcmp(k, "--plot"))
      a->plot_path = v;
    else if (!strcmp(k, "--optimizer"))
      a->optimizer = v;
    else if (!strcmp(k, "--schedule"))
      a->schedule = v;
    else if (!strcmp(k, "--windows")) {
      a->windows = v;
      bad = strcmp(v, "sequential") && strcmp(v, "random");
    } else if (!strcmp(k, "--backend")) {
      a->backend = v;
      bad = strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto");
    } else if (!strcmp(k, "--steps"))
      bad = sample_parse_long(v, 1, 1L << 40, &a->steps), a->steps_given = 1;
    else if (!strcmp(k, "--total-steps"))
      bad = sample_parse_long(v, 1, 1L << 40, &a->total_steps);
    else if (!strcmp(k, "--batch"))
      bad = sample_parse_long(v, 1, 1 << 20, &a->batch), a->batch_given = 1;
    else if (!strcmp(k, "--seq"))
      bad = sample_parse_long(v, 1, 1 << 20, &a->seq), a->seq_given = 1;
    else if (!strcmp(k, "--accum"))
      bad = sample_parse_long(v, 1, 1 << 20, &a->accum);
    else if (!strcmp(k, "--warmup"))
      bad = sample_parse_long(v, 0, 1L << 40, &a->warmup);
    else if (!strcmp(k, "--mtp"))
      bad = sample_parse_long(v, 0, KILN_MAX_MTP_HEADS, &a->mtp);
    else if (!strcmp(k, "--seed"))
      bad = sample_parse_long(v, 0, 0x7fffffffL, &a->seed);
    else if (!strcmp(k, "--eval-every"))
      bad = sample_parse_long(v, 0, 1L << 40, &a->eval_every);
    else if (!strcmp(k, "--eval-batches"))
      bad = sample_parse_long(v, 1, 1 << 20, &a->eval_batches);
    else if (!strcmp(k, "--save-every"))
      bad = sample_parse_long(v, 0, 1L << 40, &a->save_every);
    else if (!strcmp(k, "-t") || !strcmp(k, "--threads"))
      bad = sample_parse_long(v, 0, 4096, &a->threads);
    else if (!strcmp(k, "--lr"))
      bad = sample_parse_float(v, &a->lr) || !(a->lr > 0);
    else if (!strcmp(k, "--wd"))
      bad = sample_parse_float(v, &a->wd) || !(a->wd >= 0);
    else if (!strcmp(k, "--clip"))
      bad = sample_parse_float(v, &a->clip) || !(a->clip >= 0);
    else if (!strcmp(k, "--dropout"))
      bad = sample_parse_float(v, &a->dropout) || !(a->dropout >= 0 && a->dropout < 1);
    else {
      fprintf(stderr, "kiln-train: unknown option '%s' (see --help)\n", k);
      return 2;
    }
    if (bad) {
      fprintf(stderr, "kiln-train: bad value '%s' for %s (see --help)\n", v, k);
      return 2;
    }
    if (takes_value) ++i;
  }
  int sources = !!a->preset + !!a->model_dir + !!a->resume_dir;
  if (sources != 1) {
    fprintf(stderr, "kiln-train: give exactly one of --preset, --model, --resume (see --help)\n");
    return 2;
  }
  if (!a->data) {
    fprintf(stderr, "kiln-train: --data FILE is required (see --help)\n");
    return 2;
  }
  if (a->batch % a->accum != 0) {
    fprintf(stderr, "kiln-train: --accum %ld must divide --batch %ld\n", a->accum, a->batch);
    return 2;
  }
  return 0;
}

/* `embed_group` is storage for a parameter group the options may point at (kiln copies it when the
 * trainer is created). */
static int configure(const args* a, kiln_trainer_options* o, kiln_param_group* embed_group) {
  kiln_trainer_options_default(o, sizeof *o);
  o->learning_rate = a->lr;
  o->weight_decay = a->wd;
  o->max_grad_norm = a->clip;
  o->grad_accum_steps = (int32_t)a->accum;
  o->seed = (uint64_t)a->seed;
  o->n_mtp_heads = (int32_t)a->mtp;
  o->residual_dropout = a->dropout;
  o->total_steps = a->total_steps > 0 ? a->total_steps : a->steps;
  o->warmup_steps = a->warmup >= 0 ? a->warmup : o->total_steps / 20;
  if (!strcmp(a->optimizer, "adamw"))
    o->optimizer = KILN_OPTIMIZER_ADAMW;
  else if (!strcmp(a->optimizer, "muon"))
    o->optimizer = KILN_OPTIMIZER_MUON;
  else {
    fprintf(stderr, "kiln-train: --optimizer is adamw or muon, not '%s'\n", a->optimizer);
    return 2;
  }
  if (!strcmp(a->schedule, "constant"))
    o->schedule = KILN_LR_CONSTANT;
  else if (!strcmp(a->schedule, "cosine"))
    o->schedule = KILN_LR_WARMUP_COSINE;
  else if (!strcmp(a->schedule, "linear"))
    o->schedule = KILN_LR_WARMUP_LINEAR;
  else if (!strcmp(a->schedule, "wsd"))
    o->schedule = KILN_LR_WARMUP_STABLE_DECAY;
  else {
    fprintf(stderr, "kiln-train: --schedule is constant, cosine, linear or wsd, not '%s'\n",
            a->schedule);
    return 2;
  }
  o->min_lr_ratio = 0.1f;
  if (a->preset && !strcmp(a->preset, "kjv-tiny")) {
    /* train.py decays every matrix, the (tied) embedding included; kiln's default spares it. */
    embed_group->role = KILN_PARAM_EMBEDDING;
    embed_group->learning_rate = -1.0f;
    embed_group->weight_decay = a->wd;
    o->param_groups = embed_group;
    o->n_param_groups = 1;
  }
  return 0;
}

/* Creates the trainer from a preset, a model directory or a checkpoint. `model` receives a model
 * whose tokenizer tokenizes the data (the source model, or a snapshot when resuming). */
static int make_trainer(const args* a, kiln_runtime* rt, kiln_trainer** trainer, kiln_model** model,
                        data_state* state, int* resumed) {
  kiln_trainer_options o;
  kiln_param_group embed_group;
  if (configure(a, &o, &embed_group)) return 2;
  if (a->resume_dir) {
    char path[4096];
    if (path_join(path, sizeof path, a->resume_dir, "checkpoint.kiln")) return 1;
    if (sample_check(kiln_checkpoint_load(rt, path, trainer), "resuming")) return 1;
    size_t got = 0;
    data_state saved;
    memset(&saved, 0, sizeof saved);
    if (kiln_trainer_get_data_state(*trainer, &saved, sizeof saved, &got) != KILN_OK ||
        (got != sizeof saved && got != sizeof saved.cursor)) {
      fprintf(stderr, "kiln-train: '%s' holds no kiln-train data cursor\n", path);
      return 1;
    }
    if (got == sizeof saved) {
      *state = saved;
    } else { /* an older checkpoint: the cursor of sequential windows without BOS */
      state->cursor = saved.cursor;
      state->random_windows = 0, state->bos = -1;
    }
    *resumed = 1;
    return sample_check(kiln_trainer_snapshot(*trainer, model), "snapshot");
  }
  if (a->preset) {
    const char* tok_dir = a->tokenizer_dir ? a->tokenizer_dir : KILN_DEFAULT_MODEL_DIR;
    kiln_tokenizer* tok = NULL;
    int32_t vocab = 0;
    if (sample_check(kiln_tokenizer_load(tok_dir, &tok), "loading the tokenizer")) return 1;
    kiln_tokenizer_vocab_size(tok, &vocab);
    kiln_tokenizer_free(tok);
    char config[2048];
    if (preset_config(a->preset, vocab, config, sizeof config)) {
      fprintf(stderr, "kiln-train: unknown preset '%s' (see --help)\n", a->preset);
      return 2;
    }
    kiln_model_create_options c;
    kiln_model_create_options_default(&c, sizeof c);
    c.seed = (uint64_t)a->seed;
    c.tokenizer_path = tok_dir;
    if (sample_check(kiln_model_create(rt, config, strlen(config), &c, model),
                     "creating the model"))
      return 1;
  } else {
    kiln_model_load_options l;
    kiln_model_load_options_default(&l, sizeof l);
    l.progress_fn = a->quiet ? NULL : sample_progress_bar;
    if (sample_check(kiln_model_load(rt, a->model_dir, &l, model), "loading the model")) return 1;
  }
  return sample_check(kiln_trainer_create(*model, &o, trainer), "creating the trainer");
}

int main(int argc, char** argv) {
  args a = {0};
  a.optimizer = "adamw", a.schedule = "cosine", a.backend = "cpu";
  a.steps = 100, a.batch = 8, a.seq = 64, a.accum = 1, a.warmup = -1, a.seed = 1337;
  a.eval_every = -1, a.eval_batches = 4, a.lr = 1e-3f, a.wd = 0.1f, a.clip = 1.0f;
  a.dropout = -1.0f; /* not given: the preset's */
  int rc = parse_args(argc, argv, &a);
  if (rc) return rc;
  /* kjv-tiny's defaults are models/kjv-tiny/train.py's recipe (what an explicit flag overrides). */
  const int kjv = a.preset && !strcmp(a.preset, "kjv-tiny");
  if (a.dropout < 0) a.dropout = kjv ? 0.2f : 0.0f;
  if (kjv) {
    if (!a.steps_given) a.steps = 2000;
    if (!a.batch_given) a.batch = 64;
    if (!a.seq_given) a.seq = 256;
    /* warmup: the general steps/20 is train.py's 100 at its 2000 steps */
    if (a.eval_every < 0) a.eval_every = 100;
  }
  if (a.eval_every < 0) a.eval_every = a.steps >= 10 ? a.steps / 10 : 1;

  kiln_runtime_options rt_opts;
  kiln_runtime_options_default(&rt_opts, sizeof rt_opts);
  /* CPU unless asked: its float32 runs are bit-reproducible anywhere; CUDA trains in BF16. */
  rt_opts.backend = !strcmp(a.backend, "cuda")   ? KILN_BACKEND_CUDA
                    : !strcmp(a.backend, "auto") ? KILN_BACKEND_AUTO
                                                 : KILN_BACKEND_CPU;
  rt_opts.n_threads = (int32_t)a.threads;
  kiln_runtime* rt = NULL;
  kiln_model* model = NULL;
  kiln_trainer* trainer = NULL;
  token_data train = {0}, val = {0}, val_file = {0};
  int32_t *inputs = NULL, *targets = NULL;
  FILE* log = NULL;
  series train_curve = {0}, val_curve = {0};
  data_state data = {{0, 0}, (uint64_t)a.seed, a.windows && !strcmp(a.windows, "random"), -1};
  int resumed = 0;
  rc = 1;
  if (sample_check(kiln_runtime_create(&rt_opts, &rt), "creating the runtime")) goto done;
  rc = make_trainer(&a, rt, &trainer, &model, &data, &resumed);
  if (rc) goto done;
  rc = 1;

  kiln_model_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  kiln_model_get_info(model, &info);
  if (resumed && (a.windows || a.bos_first)) {
    fprintf(stderr, "kiln-train: --windows and --bos-first come from the checkpoint on --resume\n");
    goto done;
  }
  if (!resumed && a.bos_first) {
    if (info.bos_token_id < 0) {
      fprintf(stderr, "kiln-train: --bos-first, but the model has no BOS token\n");
      goto done;
    }
    data.bos = info.bos_token_id;
  }
  const kiln_tokenizer* tok = NULL;
  kiln_model_tokenizer(model, &tok);
  if (token_data_load(a.data, tok, &train)) goto done;
  if (a.val) {
    if (token_data_load(a.val, tok, &val_file)) goto done;
    val = val_file;
  } else {
    token_data_split(&train, 0.05, (size_t)a.seq + 1, &val);
  }
  if (token_data_check_vocab(&train, info.vocab_size, "training") ||
      token_data_check_vocab(&val, info.vocab_size, "validation")) {
    goto done;
  }
  if (train.n <= (size_t)a.seq || val.n <= (size_t)a.seq) {
    fprintf(stderr,
            "kiln-train: '%s' has too few tokens (%zu train, %zu validation) for --seq %ld\n",
            a.data, train.n, val.n, a.seq);
    goto done;
  }
  const size_t n = (size_t)a.batch * (size_t)a.seq;
  inputs = malloc(n * sizeof *inputs);
  targets = malloc(n * sizeof *targets);
  if (!inputs || !targets) goto done;

  if (a.log_path) {
    log = fopen(a.log_path, a.resume_dir ? "a" : "w");
    if (!log) {
      fprintf(stderr, "kiln-train: cannot write '%s'\n", a.log_path);
      goto done;
    }
  }

  kiln_trainer_info tinfo;
  memset(&tinfo, 0, sizeof tinfo);
  tinfo.struct_size = sizeof tinfo;
  kiln_trainer_get_info(trainer, &tinfo);
  const int tty = !a.quiet && isatty(fileno(stderr));
  if (!a.quiet) {
    fprintf(stderr, "kiln-train: %s, %lld parameters, %zu training tokens, step %lld -> %ld\n",
            tinfo.architecture, (long long)tinfo.n_parameters, train.n, (long long)tinfo.step,
            a.steps);
    if (a.resume_dir)
      fprintf(stderr, "kiln-train: options (dropout included) from the checkpoint\n");
    else
      fprintf(stderr, "kiln-train: residual dropout %g\n", (double)a.dropout);
  }
  const int64_t tinfo_total = a.total_steps > 0 ? a.total_steps : a.steps;
  const double t_start = now_seconds();
  const long first = (long)tinfo.step;
  double best_val = INFINITY;
  for (long step = first + 1; step <= a.steps; ++step) {
    if (data.random_windows) {
      token_random_batch(&train, &data.cursor, data.windows_seed, data.bos, (int32_t)a.batch,
                         (int32_t)a.seq, inputs, targets);
    } else {
      token_next_batch(&train, &data.cursor, data.bos, (int32_t)a.batch, (int32_t)a.seq, inputs,
                       targets);
    }
    kiln_batch batch = {sizeof batch, (int32_t)a.batch, (int32_t)a.seq, inputs, targets, NULL,
                        NULL};
    kiln_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    if (sample_check(kiln_train_step(trainer, &batch, &r), "training step")) goto done;
    series_add(&train_curve, (double)step, r.loss);
    if (log) {
      fprintf(log,
              "{\"step\": %ld, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, "
              "\"tokens_per_s\": %.1f}\n",
              step, r.loss, r.learning_rate, r.grad_norm, r.tokens_per_second);
      fflush(log);
    }
    if (!a.quiet) {
      const double elapsed = now_seconds() - t_start;
      const double eta = elapsed / (double)(step - first) * (double)(a.steps - step);
      progress_line(tty, step, a.steps, r.loss, r.learning_rate, r.tokens_per_second, eta);
    }
    /* Validation on the eval_every grid and at the schedule's end, not where a run is cut short,
     * so that an interrupted and resumed run logs exactly what an uninterrupted one does. */
    if ((a.eval_every > 0 && step % a.eval_every == 0) || step == (long)tinfo_total) {
      double vl;
      if (validate(trainer, &val, data.bos, (int32_t)a.batch, (int32_t)a.seq, a.eval_batches,
                   inputs, targets, &vl)) {
        goto done;
      }
      series_add(&val_curve, (double)step, vl);
      if (log) {
        fprintf(log, "{\"step\": %ld, \"val_loss\": %.9g}\n", step, vl);
        fflush(log);
      }
      if (!a.quiet)
        fprintf(stderr, "%sstep %ld: validation loss %.4f\n", tty ? "\n" : "", step, vl);
      if (a.export_best_dir && vl < best_val) {
        best_val = vl;
        if (sample_check(kiln_trainer_export_hf(trainer, a.export_best_dir), "exporting the best"))
          goto done;
        fprintf(stderr,
                "kiln-train: step %ld: best validation loss so far (%.6f), exported to %s\n", step,
                vl, a.export_best_dir);
      }
    }
    if (a.save_dir && ((a.save_every > 0 && step % a.save_every == 0) || step == a.steps)) {
      if (save_checkpoint(trainer, a.save_dir, &data)) goto done;
    }
  }
  if (tty) fputc('\n', stderr);
  if (a.export_dir && sample_check(kiln_trainer_export_hf(trainer, a.export_dir), "exporting"))
    goto done;
  char plot[4096];
  const char* plot_path = a.plot_path;
  if (!plot_path && a.save_dir && !path_join(plot, sizeof plot, a.save_dir, "loss.svg"))
    plot_path = plot;
  if (plot_path) {
    plot_series t = {train_curve.x, train_curve.y, train_curve.n};
    plot_series v = {val_curve.x, val_curve.y, val_curve.n};
    if (svg_plot_losses(plot_path, "kiln-train loss", t, v)) goto done;
  }
  rc = 0;

done:
  if (log) fclose(log);
  free(train_curve.x), free(train_curve.y), free(val_curve.x), free(val_curve.y);
  free(inputs), free(targets);
  token_data_free(&train);
  token_data_free(&val_file);
  kiln_trainer_free(trainer);
  kiln_model_free(model);
  kiln_runtime_free(rt);
  return rc;
}
