/*
 * kiln.h — the public C ABI of kiln, an embeddable LLM runtime.
 *
 * This header is the whole public surface: the samples, the bindings and every user go through it.
 * It is C99, has no dependencies beyond <stddef.h>/<stdint.h>, and is stable: functions and enum
 * values are only ever added, never renumbered or removed.
 *
 * ---------------------------------------------------------------------------------------------
 * Conventions (read these once; every function below follows them)
 * ---------------------------------------------------------------------------------------------
 * Status.   Every fallible call returns a kiln_status. On failure, kiln_last_error() on the same
 *           thread returns a specific message (what failed, which file/tensor/argument, expected vs
 *           got). No C++ exception ever crosses this boundary.
 * Handles.  Opaque pointers. kiln_*_free(NULL) is a no-op. A model may be freed while sessions on
 *           it are alive: its memory is kept until the last session is freed.
 * Options.  Passed by pointer, never by value. Each options struct starts with `struct_size`. Fill
 *           it with kiln_*_options_default(&opts, sizeof opts) and then change the fields you care
 *           about; NULL options mean defaults. Structs grow only by appending fields: a program
 *           built against an older kiln.h keeps working with a newer library, which reads the
 *           older struct and uses the defaults for the fields added since. A struct_size the
 *           library does not know (a header newer than the library) is rejected with
 *           KILN_ERR_VERSION_MISMATCH and a message naming both sizes.
 * Buffers.  Caller-owned. A call that fills a buffer takes its capacity and always reports the size
 *           it needed through an out-parameter; when the capacity is too small it returns
 *           KILN_ERR_BUFFER_TOO_SMALL, changes no state, and one retry with the reported size
 *           succeeds. Pass a NULL buffer with capacity 0 to ask for the size.
 * Strings.  UTF-8. Inputs are (pointer, length) pairs where text may contain NUL; returned
 *           `const char *` are borrowed, with the lifetime written next to the function.
 * Callbacks.Every callback is a function pointer plus its own `void *user_data`; its comment says
 *           which thread calls it. Callbacks that return int stop the operation when they return
 *           non-zero.
 * Threads.  kiln_runtime: all calls are thread-safe. kiln_model: immutable after loading; every
 *           call that takes a `const kiln_model *` is thread-safe, and many sessions on one model
 *           may run on many threads at once. kiln_session: one thread at a time; a second thread
 *           that enters a session which is in use gets KILN_ERR_BUSY (detected, never undefined
 *           behaviour). kiln_session_cancel() is the exception: call it from any thread.
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#if defined(KILN_BUILDING_LIBRARY)
#define KILN_API __declspec(dllexport)
#else
#define KILN_API __declspec(dllimport)
#endif
#else
#define KILN_API __attribute__((visibility("default")))
#endif

/* Bumped only when an existing declaration changes incompatibly (never so far). */
#define KILN_ABI_VERSION 1

/* ============================================================================================= */
/* Status codes (values are stable)                                                              */
/* ============================================================================================= */
typedef enum kiln_status {
  KILN_OK = 0,
  KILN_ERR_INVALID_ARGUMENT = 1, /* NULL handle/pointer, bad option value, bad flag            */
  KILN_ERR_NOT_FOUND = 2,        /* a file or directory that does not exist                     */
  KILN_ERR_IO = 3,               /* a file exists but cannot be read or written                 */
  KILN_ERR_FORMAT = 4,           /* a file is malformed, truncated or lies about its contents   */
  KILN_ERR_UNSUPPORTED = 5,      /* valid input kiln does not handle (architecture, dtype, ...) */
  KILN_ERR_OUT_OF_MEMORY = 6,    /* host or device memory exhausted (message gives the bytes)   */
  KILN_ERR_BUFFER_TOO_SMALL = 7, /* caller buffer too small; the size needed was reported       */
  KILN_ERR_OUT_OF_RANGE = 8,     /* token id, position or index outside its valid range         */
  KILN_ERR_CONTEXT_FULL = 9,     /* the session's context cannot hold the tokens given          */
  KILN_ERR_CANCELLED = 10,       /* kiln_session_cancel() or a callback asked to stop           */
  KILN_ERR_BACKEND = 11,         /* the compute backend failed (CUDA error, no device, ...)     */
  KILN_ERR_BUSY = 12,            /* a session used from two threads at once                     */
  KILN_ERR_VERSION_MISMATCH = 13,/* struct_size or ABI version not known to this library         */
  KILN_ERR_INTERNAL = 14         /* a bug in kiln: please report the message                    */
} kiln_status;

/* Stable English name of a status ("KILN_ERR_FORMAT"). Static storage; never NULL. */
KILN_API const char *kiln_status_name(kiln_status status);

/* The message of the last failed call on this thread ("" when none). Thread-local; valid until the
 * next kiln call on this thread. */
KILN_API const char *kiln_last_error(void);

/* The ABI version the library was built with (compare with KILN_ABI_VERSION). */
KILN_API uint32_t kiln_abi_version(void);
/* "0.1.0" plus build details. Static storage. */
KILN_API const char *kiln_version_string(void);

/* ============================================================================================= */
/* Logging                                                                                       */
/* ============================================================================================= */
typedef enum kiln_log_level {
  KILN_LOG_DEBUG = 0,
  KILN_LOG_INFO = 1,
  KILN_LOG_WARN = 2,
  KILN_LOG_ERROR = 3,
  KILN_LOG_NONE = 4
} kiln_log_level;

/* A log sink. `message` is one line without a trailing newline, valid during the call only.
 * Called on the thread that made the kiln call producing the message, synchronously. */
typedef void (*kiln_log_fn)(kiln_log_level level, const char *message, void *user_data);

/* The process-wide sink, used by runtimes that have none of their own and by messages that belong
 * to no runtime. Set it before creating runtimes; setting it while other threads make kiln calls
 * is safe but those calls may still log to the old sink. NULL restores the default (stderr for
 * WARN and above). */
KILN_API kiln_status kiln_set_log_callback(kiln_log_fn fn, void *user_data, kiln_log_level min_level);

/* ============================================================================================= */
/* Runtime: backend + device + threads                                                           */
/* ============================================================================================= */
typedef struct kiln_runtime kiln_runtime;
typedef struct kiln_model kiln_model;
typedef struct kiln_session kiln_session;
typedef struct kiln_trainer kiln_trainer; /* training: see "Training" below */

typedef enum kiln_backend {
  KILN_BACKEND_AUTO = 0, /* CUDA when built with it and a device is present, else CPU */
  KILN_BACKEND_CPU = 1,
  KILN_BACKEND_CUDA = 2
} kiln_backend;

typedef struct kiln_runtime_options {
  size_t struct_size;
  kiln_backend backend;          /* default KILN_BACKEND_AUTO                                  */
  int32_t device_index;          /* CUDA device ordinal; default 0                             */
  int32_t n_threads;             /* CPU threads; 0 = number of cores (default)                 */
  kiln_log_fn log_fn;            /* NULL = the process-wide sink                               */
  void *log_user_data;
  kiln_log_level log_level;      /* minimum level delivered; default KILN_LOG_WARN             */
  uint64_t device_memory_limit;  /* bytes kiln may take on the device; 0 = no cap (default)    */
  /* Tensor parallelism (appended in revision 2): the number of GPUs of this host that each model
   * loaded on the runtime is split across, devices device_index .. device_index + N - 1. 0 or 1
   * (default) = off: one GPU, no NCCL. N > 1 needs the CUDA backend, N devices and NCCL
   * (libnccl.so.2): each layer's attention heads and FFN columns are divided among the GPUs
   * (num_attention_heads must be divisible by N; num_key_value_heads must divide or be divisible
   * by N; embedding, norms and lm_head are copied to every GPU) and the partial outputs summed
   * with one NCCL all-reduce after o_proj and one after down_proj per layer. A session still
   * belongs to one thread at a time; sessions on different threads share the model as before.
   * kiln_runtime_create: negative -> KILN_ERR_INVALID_ARGUMENT; N > 1 on the CPU backend (also
   * AUTO falling back to it) -> KILN_ERR_UNSUPPORTED; N > the devices from device_index on ->
   * KILN_ERR_INVALID_ARGUMENT naming both counts. kiln_model_load: a model whose heads do not
   * split over N -> KILN_ERR_INVALID_ARGUMENT naming the counts; no loadable NCCL, the F32
   * precision, or a GGUF o_proj/down_proj whose slice would cut a quantisation block ->
   * KILN_ERR_UNSUPPORTED. Each forward pass of such a model runs on N - 1 extra threads inside
   * the call (one per GPU), and a cancel takes effect before a pass, not between its layers. */
  int32_t tensor_parallel;
} kiln_runtime_options;

KILN_API kiln_status kiln_runtime_options_default(kiln_runtime_options *options, size_t struct_size);
KILN_API kiln_status kiln_runtime_create(const kiln_runtime_options *options, kiln_runtime **out_runtime);
/* Models and sessions created from the runtime must be freed first. */
KILN_API void kiln_runtime_free(kiln_runtime *runtime);

typedef struct kiln_runtime_info {
  size_t struct_size;
  kiln_backend backend;          /* the backend actually chosen (never AUTO)                   */
  int32_t n_threads;             /* CPU threads in use                                         */
  const char *device_name;       /* "CPU" or the GPU's name; valid while the runtime lives     */
} kiln_runtime_info;

KILN_API kiln_status kiln_runtime_get_info(const kiln_runtime *runtime, kiln_runtime_info *info);

/* ============================================================================================= */
/* Model: immutable weights + config + tokenizer, shareable across threads                       */
/* ============================================================================================= */

/* Progress of a long operation. fraction in [0, 1]; stage is a short label ("weights"), valid
 * during the call. Called on the thread that called the operation. Return non-zero to cancel: the
 * operation then returns KILN_ERR_CANCELLED and frees what it took. */
typedef int (*kiln_progress_fn)(float fraction, const char *stage, void *user_data);

/* The number format a model computes in (kiln_model_load_options.precision).
 * KILN_PRECISION_DEFAULT: the backend's own: BF16 on CUDA, float32 on the CPU.
 * KILN_PRECISION_BF16: CUDA only (BF16 weights, matrix inputs and KV cache, float32 accumulation);
 *   on a CPU runtime the load fails with KILN_ERR_UNSUPPORTED (the CPU computes in float32).
 * KILN_PRECISION_F32: float32 weights, KV cache and arithmetic throughout (cuBLAS without TF32):
 *   a checking mode on CUDA (about 2x the device memory of BF16 and slower), the default on the
 *   CPU. On CUDA a GGUF file's block-quantised matrices are dequantised to float32 at load (their
 *   exact values; 4 bytes per weight) instead of staying quantised.
 * Any other value gives KILN_ERR_INVALID_ARGUMENT. */
typedef enum kiln_precision {
  KILN_PRECISION_DEFAULT = 0,
  KILN_PRECISION_BF16 = 1,
  KILN_PRECISION_F32 = 2
} kiln_precision;

typedef struct kiln_model_load_options {
  size_t struct_size;
  kiln_progress_fn progress_fn;  /* optional                                                   */
  void *progress_user_data;
  kiln_precision precision;      /* default KILN_PRECISION_DEFAULT (see kiln_precision)        */
} kiln_model_load_options;

KILN_API kiln_status kiln_model_load_options_default(kiln_model_load_options *options, size_t struct_size);

/* Loads a model from `path`: a Hugging Face model directory (config.json, *.safetensors,
 * tokenizer.json, tokenizer_config.json, generation_config.json), or a GGUF file (v2/v3, as
 * llama.cpp writes them; recognised by its magic bytes, with tensor types F32, F16, BF16, Q4_0,
 * Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K and MXFP4, and a `gpt2` BPE tokenizer). Supported
 * architectures: LlamaForCausalLM (Llama 2/3), MistralForCausalLM, Qwen2ForCausalLM,
 * Qwen3ForCausalLM, Phi3ForCausalLM (GGUF: llama, qwen2, qwen3, phi3); anything else gives
 * KILN_ERR_UNSUPPORTED naming it. Called on one thread; the progress callback runs on it. */
KILN_API kiln_status kiln_model_load(kiln_runtime *runtime, const char *path,
                                     const kiln_model_load_options *options, kiln_model **out_model);
KILN_API void kiln_model_free(kiln_model *model);

typedef struct kiln_model_info {
  size_t struct_size;
  const char *architecture;      /* e.g. "LlamaForCausalLM"; valid while the model lives       */
  int32_t vocab_size;            /* rows of the output layer (logits per position)             */
  int32_t hidden_size;
  int32_t n_layers;
  int32_t n_heads;
  int32_t n_kv_heads;
  int32_t head_dim;
  int32_t intermediate_size;
  int32_t context_length;        /* max_position_embeddings                                    */
  int64_t n_parameters;
  int32_t bos_token_id;          /* -1 when the model has none                                 */
  int32_t eos_token_id;          /* the first end-of-sequence id; -1 when none                 */
  int32_t add_bos;               /* 1 when tokenizing with KILN_TOKENIZE_ADD_SPECIAL adds BOS  */
} kiln_model_info;

KILN_API kiln_status kiln_model_get_info(const kiln_model *model, kiln_model_info *info);

/* All ids that end generation (generation_config.json's eos_token_id may be a list). */
KILN_API kiln_status kiln_model_eos_ids(const kiln_model *model, int32_t *ids, size_t capacity,
                                        size_t *n_ids);

/* ============================================================================================= */
/* Conversion to GGUF (kiln-quantize)                                                           */
/* ============================================================================================= */
typedef enum kiln_quantize_type {
  KILN_QUANTIZE_F16 = 1,    /* every matrix F16                                                 */
  KILN_QUANTIZE_Q8_0 = 2,   /* every matrix Q8_0                                                */
  KILN_QUANTIZE_Q4_K_M = 3  /* llama.cpp's Q4_K_M mix: Q4_K, Q6_K for the output layer and some
                               attn_v / ffn_down (docs/architecture.md says which)              */
} kiln_quantize_type;

typedef struct kiln_quantize_options {
  size_t struct_size;
  kiln_quantize_type type;       /* default KILN_QUANTIZE_Q4_K_M                               */
  int32_t n_threads;             /* <= 0: the runtime's thread count                           */
  kiln_progress_fn progress_fn;  /* optional; stages "reading", "writing"                      */
  void *progress_user_data;
} kiln_quantize_options;

KILN_API kiln_status kiln_quantize_options_default(kiln_quantize_options *options, size_t struct_size);

/* Converts `src` (a Hugging Face model directory or a GGUF file, as kiln_model_load reads them)
 * into a GGUF v3 file at `dst` of options->type: general.architecture, the <arch>.* hyper-
 * parameters, tokenizer.ggml.* from the source's tokenizer (byte-level BPE), general.alignment
 * 32, norms and biases in F32. `dst` is written atomically (a temporary file next to it, fsync,
 * rename): on any error it is left as it was. Errors: KILN_ERR_NOT_FOUND (src, or dst's
 * directory, missing), KILN_ERR_INVALID_ARGUMENT (a type outside kiln_quantize_type),
 * KILN_ERR_FORMAT / KILN_ERR_UNSUPPORTED (a source kiln cannot read or convert, named),
 * KILN_ERR_IO (dst not writable or a directory, with the reason), KILN_ERR_CANCELLED. Runs on the calling thread (which the progress
 * callback is called on) plus n_threads workers. */
KILN_API kiln_status kiln_model_quantize(kiln_runtime *runtime, const char *src, const char *dst,
                                         const kiln_quantize_options *options);

/* ============================================================================================= */
/* Tokenizer                                                                                     */
/* ============================================================================================= */
enum {
  /* Add BOS/EOS as the model's tokenizer config says (add_bos_token, add_eos_token). */
  KILN_TOKENIZE_ADD_SPECIAL = 1u << 0,
  /* Treat special-token text in the input ("<|im_start|>") as the special token. Off by default:
   * user content should never be able to inject control tokens. Turn it on for text you wrote. */
  KILN_TOKENIZE_PARSE_SPECIAL = 1u << 1
};

/* Text → ids. Fills ids[0..capacity) and sets *n_ids to the count needed. */
KILN_API kiln_status kiln_tokenize(const kiln_model *model, const char *text, size_t text_len,
                                   uint32_t flags, int32_t *ids, size_t capacity, size_t *n_ids);

enum {
  KILN_DETOKENIZE_SKIP_SPECIAL = 1u << 0 /* drop special tokens from the text */
};

/* Ids → text (not NUL-terminated; *text_len is the byte count needed). Ids out of range give
 * KILN_ERR_OUT_OF_RANGE. */
KILN_API kiln_status kiln_detokenize(const kiln_model *model, const int32_t *ids, size_t n_ids,
                                     uint32_t flags, char *text, size_t capacity, size_t *text_len);

/* The raw bytes one token stands for (may be part of a UTF-8 character). */
KILN_API kiln_status kiln_token_to_piece(const kiln_model *model, int32_t id, char *piece,
                                         size_t capacity, size_t *piece_len);

/* ============================================================================================= */
/* Session: KV cache + sampler + RNG; one thread at a time                                       */
/* ============================================================================================= */
typedef struct kiln_session_options {
  size_t struct_size;
  int32_t context_length;        /* tokens the KV cache holds; 0 = the model's (capped at 4096) */
  uint64_t seed;                 /* RNG seed for sampling; default 0xC0FFEE                    */
} kiln_session_options;

KILN_API kiln_status kiln_session_options_default(kiln_session_options *options, size_t struct_size);
KILN_API kiln_status kiln_session_create(kiln_model *model, const kiln_session_options *options,
                                         kiln_session **out_session);
KILN_API void kiln_session_free(kiln_session *session);

/* Empties the KV cache and re-seeds the RNG with the session's seed. */
KILN_API kiln_status kiln_session_reset(kiln_session *session);

/* Tokens currently in the KV cache, and its capacity. */
KILN_API kiln_status kiln_session_position(const kiln_session *session, int32_t *n_past,
                                           int32_t *context_length);

/* Asks the call running on `session` to stop; safe from any thread, including callbacks. The
 * running call (or, when none is running, the next call) returns KILN_ERR_CANCELLED; the session
 * stays usable, and its KV cache holds the tokens processed before the stop. */
KILN_API kiln_status kiln_session_cancel(kiln_session *session);

typedef enum kiln_logits_mode {
  KILN_LOGITS_NONE = 0,  /* only fill the KV cache                   */
  KILN_LOGITS_LAST = 1,  /* logits of the last position: vocab floats */
  KILN_LOGITS_ALL = 2    /* every position: n_ids × vocab, row-major  */
} kiln_logits_mode;

/* Runs ids through the model after the tokens already in the KV cache, appending them to it.
 * Logits are float32; *n_logits is set to the float count needed. With a buffer that is too small
 * nothing is computed. Ids outside [0, vocab) → KILN_ERR_OUT_OF_RANGE; more ids than the cache
 * has room for → KILN_ERR_CONTEXT_FULL; in both cases nothing is computed. */
KILN_API kiln_status kiln_forward(kiln_session *session, const int32_t *ids, size_t n_ids,
                                  kiln_logits_mode mode, float *logits, size_t capacity,
                                  size_t *n_logits);

typedef struct kiln_sampling_options {
  size_t struct_size;
  float temperature;             /* 0 = greedy (argmax). Default 0.8                           */
  int32_t top_k;                 /* 0 = off. Default 40                                        */
  float top_p;                   /* 1 = off. Default 0.95                                      */
  float min_p;                   /* 0 = off. Default 0.05                                      */
  float repetition_penalty;      /* 1 = off (CTRL-style, divides positive logits). Default 1   */
  float presence_penalty;        /* 0 = off. Default 0                                         */
  float frequency_penalty;       /* 0 = off. Default 0                                         */
  int32_t penalty_last_n;        /* tokens looked back at for penalties; default 64; -1 = all  */
} kiln_sampling_options;

KILN_API kiln_status kiln_sampling_options_default(kiln_sampling_options *options, size_t struct_size);

/* Called for every generated token on the thread that called kiln_generate. `text` holds only
 * complete UTF-8 characters (it may be empty while a multi-byte character is still incomplete) and
 * is valid during the call. Return non-zero to stop generating (stop reason KILN_STOP_CALLBACK).
 * End-of-sequence tokens are not passed. When generation ends, text still held back (a possible
 * start of a stop string, or an incomplete character at the very end) comes in one last call with
 * token_id -1. The concatenation of every `text` is the generated text, minus any stop string. */
typedef int (*kiln_token_fn)(const char *text, size_t text_len, int32_t token_id, void *user_data);

typedef enum kiln_stop_reason {
  KILN_STOP_NONE = 0,
  KILN_STOP_EOS = 1,             /* the model produced an end-of-sequence id                  */
  KILN_STOP_MAX_TOKENS = 2,      /* max_tokens generated                                      */
  KILN_STOP_STRING = 3,          /* a stop string appeared (it is not passed to the callback) */
  KILN_STOP_CALLBACK = 4,        /* the token callback returned non-zero                      */
  KILN_STOP_CONTEXT_FULL = 5     /* the KV cache is full                                      */
} kiln_stop_reason;

typedef struct kiln_generate_options {
  size_t struct_size;
  const kiln_sampling_options *sampling; /* NULL = kiln_sampling_options_default            */
  int32_t max_tokens;            /* default 256                                                */
  uint32_t tokenize_flags;       /* for a text prompt; default KILN_TOKENIZE_ADD_SPECIAL       */
  int32_t ignore_eos;            /* 1 = do not stop at EOS ids; default 0                      */
  const char *const *stop_strings; /* optional array of NUL-terminated UTF-8 strings           */
  size_t n_stop_strings;
  kiln_token_fn token_fn;        /* optional streaming callback                               */
  void *token_user_data;
  int32_t *output_ids;           /* optional caller buffer for the generated ids              */
  size_t output_ids_capacity;    /* ids beyond it are generated but not stored                */
} kiln_generate_options;

KILN_API kiln_status kiln_generate_options_default(kiln_generate_options *options, size_t struct_size);

typedef struct kiln_generate_result {
  size_t struct_size;
  int32_t n_prompt_tokens;
  int32_t n_generated;           /* tokens sampled (including a final EOS)                    */
  kiln_stop_reason stop_reason;
  double prefill_seconds;
  double decode_seconds;
  double prefill_tokens_per_second;
  double decode_tokens_per_second;
} kiln_generate_result;

/* Tokenizes `prompt`, appends it to the session's context (after what the KV cache already holds),
 * and samples until a stop condition. The context stays in the cache, so calls can continue a
 * conversation; call kiln_session_reset() to start over. `result` may be NULL; when given, set its
 * struct_size (sizeof(kiln_generate_result)). A prompt that does not fit the context returns
 * KILN_ERR_CONTEXT_FULL; filling the cache while generating ends with KILN_STOP_CONTEXT_FULL. */
KILN_API kiln_status kiln_generate(kiln_session *session, const char *prompt, size_t prompt_len,
                                   const kiln_generate_options *options, kiln_generate_result *result);

/* The same with a tokenized prompt (may be empty when the cache already holds context). */
KILN_API kiln_status kiln_generate_ids(kiln_session *session, const int32_t *prompt_ids, size_t n_prompt_ids,
                                       const kiln_generate_options *options, kiln_generate_result *result);

/* Samples one id from logits (vocab floats) with the session's RNG and the given options. The
 * penalties look at the tokens already in the session's context. */
KILN_API kiln_status kiln_sample(kiln_session *session, const float *logits, size_t n_logits,
                                 const kiln_sampling_options *options, int32_t *out_id);

/* ============================================================================================= */
/* Chat templates                                                                                */
/* ============================================================================================= */
/* A conversation message. Strings are NUL-terminated UTF-8 and only read during the call. */
typedef struct kiln_chat_message {
  const char *role;              /* "system", "user", "assistant", "tool", ...                */
  const char *content;           /* NULL = no content (the template sees None)                */
  const char *tool_calls_json;   /* NULL, or a JSON array: message.tool_calls                  */
  const char *extra_json;        /* NULL, or a JSON object merged into the message
                                  * (tool_call_id, name, reasoning_content, thinking, ...)      */
} kiln_chat_message;

typedef struct kiln_chat_options {
  size_t struct_size;
  int32_t add_generation_prompt; /* 1 = end with the assistant header. Default 1              */
  const char *tools_json;        /* NULL, or a JSON array of tool definitions: `tools`         */
  const char *extra_context_json;/* NULL, or a JSON object of extra template variables
                                  * (enable_thinking, reasoning_effort, date_string, ...)      */
  const char *template_override; /* NULL = the model's chat_template from tokenizer_config.json;
                                  * else a Jinja template string used instead                  */
  const char *template_name;     /* NULL = "default" when the config lists named templates     */
  int64_t now_unix_seconds;      /* clock of strftime_now() (local time); 0 = now. Default 0   */
  uint64_t max_steps;            /* evaluation budget; exceeded → KILN_ERR_OUT_OF_RANGE.
                                  * Default 5,000,000                                          */
  size_t max_output_bytes;       /* output budget; exceeded → KILN_ERR_OUT_OF_RANGE. 16 MiB   */
} kiln_chat_options;

KILN_API kiln_status kiln_chat_options_default(kiln_chat_options *options, size_t struct_size);

/* Renders a conversation with the model's chat template exactly as HF transformers'
 * apply_chat_template(tokenize=False) does (Jinja2 with trim_blocks and lstrip_blocks; bos_token and
 * eos_token from tokenizer_config.json). The text is not NUL-terminated; *text_len is the byte
 * count needed. Errors: KILN_ERR_INVALID_ARGUMENT for bad JSON, a model without a template, or the
 * template's raise_exception() (its message is in kiln_last_error()); KILN_ERR_FORMAT for a template
 * syntax error (with line and column) or a filter/test kiln lacks; KILN_ERR_OUT_OF_RANGE when a
 * budget is exceeded. Thread-safe (the model is only read). */
KILN_API kiln_status kiln_chat_render(const kiln_model *model, const kiln_chat_message *messages,
                                      size_t n_messages, const kiln_chat_options *options, char *text,
                                      size_t capacity, size_t *text_len);

/* Renders and tokenizes for training: ids[i] with mask[i] = 1 when the token belongs to an
 * assistant reply: whatever the template writes for an assistant message after its header, as it
 * writes it (so templates that rewrite the content, such as Qwen3's dropping earlier <think>
 * blocks, are followed), up to and including the turn's end-of-turn special token (<|im_end|>,
 * <|eot_id|>, </s>), which the model must learn to emit (nanochat's render_conversation and HF's
 * {% generation %} blocks count it the same way). Headers, other messages and text after the
 * end-of-turn token get 0. Each message's text is attributed by following the template's loop
 * over the messages; the header is what the template writes as its generation prompt. Both
 * buffers hold `capacity` entries; *n_ids is the count needed. Each span (template text, reply) is
 * tokenized on its own with special tokens parsed and no BOS/EOS added, as nanochat's
 * render_conversation does. A template that writes an assistant message outside its loop over the
 * messages, or in two places, gives KILN_ERR_UNSUPPORTED. Thread-safe. */
KILN_API kiln_status kiln_chat_render_tokens(const kiln_model *model, const kiln_chat_message *messages,
                                             size_t n_messages, const kiln_chat_options *options,
                                             int32_t *ids, uint8_t *mask, size_t capacity, size_t *n_ids);

/* ============================================================================================= */
/* Training: fresh models, train steps, evaluation, checkpoints, export                          */
/* ============================================================================================= */
/* Semantics of batches, masks and weights (also docs/training.md):
 *   A batch is B rows × T positions. targets[b*T + t] is the id the model should predict after
 *   reading inputs[b*T + 0..t]; -1 means "no target here". The step's loss is
 *       loss = Σ w_i · CE_i / Σ w_i     over the counted positions i,
 *   a position being counted when its target is >= 0 and its loss_mask byte (when given) is not 0;
 *   w_i is loss_weights[i] (1 when no weights are given; must be finite and >= 0). Masked positions
 *   contribute nothing; a weight scales its position's share. The normalisation spans the whole
 *   step, so grad_accum_steps changes memory use, not the gradient. A step whose counted weight
 *   is 0 gives KILN_ERR_INVALID_ARGUMENT.
 * Threads. A kiln_trainer is used by one thread at a time (a second thread gets KILN_ERR_BUSY);
 *   kiln_trainer_cancel() may be called from any thread. The model a trainer was created from is
 *   only read at creation: the trainer owns its own float32 copy of the weights, so sessions on the
 *   original model are unaffected. kiln_trainer_snapshot() hands out the current weights as a new
 *   model for generation.
 * Device. A trainer computes where its model's runtime does (kiln_checkpoint_load: where the
 *   runtime passed to it does). CPU runtime: float32 throughout (OpenMP + OpenBLAS); results are
 *   bit-identical across runs for the same inputs, seed and thread count. CUDA runtime: float32
 *   master weights, gradients and AdamW moments on the GPU, BF16 matrix products with float32
 *   accumulation (torch.autocast(bfloat16)'s recipe), so losses follow a float32 run to ~1e-2
 *   relative; bit-identical across runs on the same GPU, and a resumed run equals an uninterrupted
 *   one. Its memory counts against the runtime's device_memory_limit (KILN_ERR_OUT_OF_MEMORY
 *   names the bytes). Every trainable family trains on CUDA, including those the CUDA backend
 *   cannot run sessions on (GPT-2, NanoChat: such a model loads on a CUDA runtime for training,
 *   and kiln_session_create on it gives KILN_ERR_UNSUPPORTED). Muon runs on both (its momentum
 *   float32 on the device, its Newton-Schulz iteration float32 on either). Checkpoints are the
 *   same file on both devices. */

/* A fresh model from a Hugging Face style config.json text (architectures[0] must be one kiln
 * trains: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM,
 * Phi3ForCausalLM, GPT2LMHeadModel, NanoChatForCausalLM), its weights initialised from `seed` the
 * way the family's reference code does it (docs/training.md). */
typedef struct kiln_model_create_options {
  size_t struct_size;
  uint64_t seed;                 /* initialisation seed; default 1337                          */
  const char *tokenizer_path;    /* optional: a tokenizer.json file or a directory holding one
                                  * (and tokenizer_config.json); NULL = no tokenizer (ids only) */
} kiln_model_create_options;

KILN_API kiln_status kiln_model_create_options_default(kiln_model_create_options *options,
                                                       size_t struct_size);
KILN_API kiln_status kiln_model_create(kiln_runtime *runtime, const char *config_json,
                                       size_t config_json_len,
                                       const kiln_model_create_options *options,
                                       kiln_model **out_model);

typedef enum kiln_optimizer {
  KILN_OPTIMIZER_ADAMW = 0,      /* AdamW (decoupled weight decay) on every tensor             */
  KILN_OPTIMIZER_MUON = 1        /* nanochat's recipe: Muon on the 2-D matrices inside blocks,
                                  * AdamW on embeddings, head, norms and biases                 */
} kiln_optimizer;

typedef enum kiln_lr_schedule {
  KILN_LR_CONSTANT = 0,
  KILN_LR_WARMUP_COSINE = 1,     /* linear warmup, then cosine down to min_lr_ratio · lr       */
  KILN_LR_WARMUP_LINEAR = 2,     /* linear warmup, then linear down to min_lr_ratio · lr       */
  KILN_LR_WARMUP_STABLE_DECAY = 3/* warmup, constant, then linear decay over the last
                                  * decay_fraction of total_steps                              */
} kiln_lr_schedule;

/* The kinds of trainable tensor (docs/training.md lists which tensor is which). */
typedef enum kiln_param_role {
  KILN_PARAM_MATRIX = 0,         /* 2-D weights inside blocks (attention, MLP)                 */
  KILN_PARAM_EMBEDDING = 1,      /* the token embedding (also the head when tied)             */
  KILN_PARAM_POSITION = 2,       /* learned positions (GPT-2)                                  */
  KILN_PARAM_HEAD = 3,           /* an untied lm_head                                          */
  KILN_PARAM_NORM = 4,           /* norm weights                                               */
  KILN_PARAM_BIAS = 5            /* biases                                                     */
} kiln_param_role;

/* A parameter group, as torch's: the AdamW-updated tensors of `role` get their own learning rate
 * and/or weight decay (nanochat, for one, trains embeddings and the head at other rates). A later
 * group for the same role replaces an earlier one. In Muon mode, matrices follow the muon_*
 * options instead. */
typedef struct kiln_param_group {
  kiln_param_role role;
  float learning_rate;           /* < 0 = the trainer's learning_rate (0 freezes the tensors)  */
  float weight_decay;            /* < 0 = the default for the role                             */
} kiln_param_group;

#define KILN_MAX_MTP_HEADS 8

typedef struct kiln_trainer_options {
  size_t struct_size;
  kiln_optimizer optimizer;      /* default KILN_OPTIMIZER_ADAMW                               */
  float learning_rate;           /* peak LR of AdamW-updated tensors; default 3e-4             */
  float beta1, beta2;            /* default 0.9, 0.95                                          */
  float epsilon;                 /* default 1e-8                                               */
  float weight_decay;            /* decoupled; default 0.1, applied to matrices and an untied
                                  * head only (norms, biases, embeddings: 0) unless a group says */
  float muon_learning_rate;      /* Muon's LR for block matrices; default 0.02                 */
  float muon_momentum;           /* default 0.95 (Nesterov)                                    */
  int32_t muon_ns_steps;         /* Newton-Schulz iterations; default 5                        */
  const kiln_param_group *param_groups; /* optional; copied at creation                       */
  size_t n_param_groups;
  kiln_lr_schedule schedule;     /* default KILN_LR_CONSTANT                                   */
  int64_t warmup_steps;          /* default 0                                                  */
  int64_t total_steps;           /* needed by the decaying schedules; default 0                */
  float min_lr_ratio;            /* floor of the decay, as a fraction of the peak; default 0   */
  float decay_fraction;          /* WSD: share of total_steps spent decaying; default 0.2      */
  int32_t grad_accum_steps;      /* micro-batches per step (must divide the batch's rows); 1   */
  float max_grad_norm;           /* global-norm clipping; 0 = off; default 1.0                 */
  uint64_t seed;                 /* trainer RNG (MTP head init); default 1337                  */
  int32_t n_mtp_heads;           /* extra future-token heads, 0..KILN_MAX_MTP_HEADS; default 0 */
  float mtp_loss_weights[KILN_MAX_MTP_HEADS]; /* weight of head k's loss; default 1 each       */
  kiln_progress_fn progress_fn;  /* optional: called during each step: stage "forward" before
                                  * each micro-batch's forward + backward pass (fraction = the
                                  * share of micro-batches done), "optimizer" before the update
                                  * (fraction 1); non-zero cancels the step                    */
  void *progress_user_data;
  float residual_dropout;        /* GPT-2-style dropout probability on the embedding output and on
                                  * each attention / MLP output before it joins the residual
                                  * (MTP heads included); kept values scale by 1/(1-p); only in
                                  * kiln_train_step (eval and forward never drop); masks are a
                                  * function of seed, step and position, so a resumed run draws
                                  * the same ones on CPU and CUDA. [0, 1); default 0 = off      */
} kiln_trainer_options;

KILN_API kiln_status kiln_trainer_options_default(kiln_trainer_options *options, size_t struct_size);

/* A trainer over a float32 copy of `model`'s weights (the model may be freed afterwards). Errors:
 * KILN_ERR_UNSUPPORTED for a model kiln cannot train (a quantised GGUF, an architecture without a
 * backward pass), KILN_ERR_INVALID_ARGUMENT for a bad option (named), KILN_ERR_OUT_OF_MEMORY with
 * the bytes asked for (weights, gradients and optimizer state take 4× the float32 weights with
 * AdamW). */
KILN_API kiln_status kiln_trainer_create(const kiln_model *model, const kiln_trainer_options *options,
                                         kiln_trainer **out_trainer);
KILN_API void kiln_trainer_free(kiln_trainer *trainer);

typedef struct kiln_batch {
  size_t struct_size;            /* sizeof(kiln_batch)                                         */
  int32_t batch_size;            /* B rows                                                     */
  int32_t seq_len;               /* T positions per row (<= the model's context length)        */
  const int32_t *inputs;         /* [B*T] token ids                                            */
  const int32_t *targets;        /* [B*T] ids to predict, -1 = none                             */
  const uint8_t *loss_mask;      /* optional [B*T]: 0 = do not count this position             */
  const float *loss_weights;     /* optional [B*T]: per-position weight (see above)            */
} kiln_batch;

typedef struct kiln_train_result {
  size_t struct_size;            /* sizeof(kiln_train_result)                                  */
  double loss;                   /* the main (next-token) head's loss, normalised as above     */
  double objective;              /* what was minimised: loss + Σ mtp weight · head loss        */
  double mtp_losses[KILN_MAX_MTP_HEADS]; /* each extra head's loss (0 beyond n_mtp_heads)      */
  int64_t n_tokens;              /* counted positions of the main head                         */
  double weight_sum;             /* Σ w_i over them                                            */
  double grad_norm;              /* global gradient norm before clipping (0 for evaluation)    */
  double learning_rate;          /* peak-scaled LR used by this step (AdamW groups)            */
  double tokens_per_second;      /* B*T over the step's wall time                              */
  int64_t step;                  /* optimizer steps taken so far, this one included            */
} kiln_train_result;

/* One optimizer step on `batch`: forward, backward, clipping, the LR schedule and the update.
 * `result` may be NULL. On any error (bad ids → KILN_ERR_OUT_OF_RANGE naming the position,
 * KILN_ERR_CANCELLED, ...) the weights and optimizer state are unchanged. */
KILN_API kiln_status kiln_train_step(kiln_trainer *trainer, const kiln_batch *batch,
                                     kiln_train_result *result);
/* The loss on `batch` without updating anything (grad_norm = 0, step unchanged). */
KILN_API kiln_status kiln_eval_loss(kiln_trainer *trainer, const kiln_batch *batch,
                                    kiln_train_result *result);
/* Asks the running step of `trainer` to stop (it returns KILN_ERR_CANCELLED, nothing changed).
 * Any thread; a request made while no step runs applies to the next one. */
KILN_API kiln_status kiln_trainer_cancel(kiln_trainer *trainer);

typedef struct kiln_trainer_info {
  size_t struct_size;
  int64_t step;                  /* optimizer steps taken                                      */
  int64_t n_parameters;          /* trainable parameters, MTP heads included                   */
  int32_t n_mtp_heads;
  const char *architecture;      /* valid while the trainer lives                              */
} kiln_trainer_info;

KILN_API kiln_status kiln_trainer_get_info(const kiln_trainer *trainer, kiln_trainer_info *info);

typedef enum kiln_trainer_output {
  KILN_TRAINER_OUTPUT_LOGITS = 0,/* [1 + n_mtp_heads][B*T][vocab]: main head first             */
  KILN_TRAINER_OUTPUT_HIDDEN = 1 /* [B*T][hidden]: the trunk's output (input of the last layer
                                  * and of every MTP head)                                     */
} kiln_trainer_output;

/* Runs the current weights on inputs [B*T] and writes `what` into out[0..capacity) floats;
 * *n_out is the count needed. */
KILN_API kiln_status kiln_trainer_forward(kiln_trainer *trainer, const int32_t *inputs,
                                          int32_t batch_size, int32_t seq_len,
                                          kiln_trainer_output what, float *out, size_t capacity,
                                          size_t *n_out);

/* The current weights as a new model (its own handle, free it with kiln_model_free), for
 * generation on the runtime's backend. MTP heads are not part of it. */
KILN_API kiln_status kiln_trainer_snapshot(const kiln_trainer *trainer, kiln_model **out_model);

/* Opaque bytes saved with checkpoints for the caller's data loader (cursor, shuffling RNG, ...).
 * Copied; at most 1 MiB. */
KILN_API kiln_status kiln_trainer_set_data_state(kiln_trainer *trainer, const void *data, size_t size);
KILN_API kiln_status kiln_trainer_get_data_state(const kiln_trainer *trainer, void *data,
                                                 size_t capacity, size_t *size);

/* Writes a checkpoint file: weights, optimizer moments, step, schedule, options, RNG state, data
 * state, config and tokenizer (schemas/checkpoint.fbs; docs/training.md). Atomic: written to a
 * temporary file beside `path`, flushed to disk, then renamed over it, so a crash leaves the
 * previous checkpoint intact. */
KILN_API kiln_status kiln_checkpoint_save(const kiln_trainer *trainer, const char *path);
/* Recreates a trainer from a checkpoint, ready to continue exactly where it was saved (same
 * options; the progress callback is not saved: pass `progress_fn` again through
 * kiln_trainer_set_progress if wanted). Every size and offset is verified before use:
 * KILN_ERR_FORMAT names what is wrong. */
KILN_API kiln_status kiln_checkpoint_load(kiln_runtime *runtime, const char *path,
                                          kiln_trainer **out_trainer);
/* Replaces the step progress callback (NULL to remove). */
KILN_API kiln_status kiln_trainer_set_progress(kiln_trainer *trainer, kiln_progress_fn fn,
                                               void *user_data);

/* Writes the current weights as a Hugging Face model directory (model.safetensors in float32,
 * config.json, and the tokenizer files when the model has them) that transformers loads. The
 * directory is created if needed; files are replaced atomically. MTP heads are not exported. */
KILN_API kiln_status kiln_trainer_export_hf(const kiln_trainer *trainer, const char *directory);

/* ---- Data-parallel training: several processes, one GPU each, over NCCL ------------------------
 * Recipe: one process creates a group id with kiln_nccl_id_create and hands its bytes to every
 * process (MPI_Bcast, a file, an environment variable in hex, a Go channel...). Each process
 * creates its runtime on its own GPU (kiln_runtime_options.device), loads the same model, creates
 * its trainer with the same options (or loads the same checkpoint) and calls
 * kiln_trainer_join_data_parallel with its rank before its first step. From then on every rank
 * calls kiln_train_step (and kiln_eval_loss) together, each with its own batch of the same shape:
 * the loss is normalised over all ranks' tokens (the global batch), the gradients are summed over
 * the ranks (NCCL all-reduce) before clipping, and every rank applies the same update, so the
 * weights stay identical and equal, up to floating-point summation order, to one process training
 * on the concatenated batch. Residual dropout masks are drawn by global row, as one process would.
 * The results every rank reports are the global ones. Any rank may save a checkpoint (the state is
 * replicated; with shard_optimizer_state, below, every rank saves together): it resumes on any
 * number of ranks. A step cancelled on one rank leaves the others
 * waiting inside NCCL: cancel every rank. NCCL is loaded at first use (libnccl.so.2):
 * KILN_ERR_UNSUPPORTED when it is missing, on a CPU runtime, or with Muon. Set
 * NCCL_NVLS_ENABLE=0 where NVLink multicast must stay off. */
#define KILN_NCCL_ID_BYTES 128
typedef struct kiln_nccl_id {
  unsigned char bytes[KILN_NCCL_ID_BYTES]; /* ncclUniqueId: opaque, copy it as it is             */
} kiln_nccl_id;

/* A new group id (ncclGetUniqueId; it names the calling host, so create it on rank 0's host). */
KILN_API kiln_status kiln_nccl_id_create(kiln_runtime *runtime, kiln_nccl_id *out_id);

typedef struct kiln_data_parallel_options {
  size_t struct_size;
  int32_t world_size;            /* processes in the group, >= 1; default 1                     */
  int32_t rank;                  /* this process, 0 .. world_size - 1; default 0                */
  kiln_nccl_id id;               /* from kiln_nccl_id_create, the same bytes on every rank      */
  /* Appended (a struct_size that ends before it means 0). 1: ZeRO-1, each rank keeps only its
   * 1/world_size slice of the AdamW moments (the optimizer memory divided by the ranks): the
   * gradients are reduce-scattered instead of all-reduced, the clipping norm is the global one,
   * each rank updates its slice of the float32 weights and the slices are all-gathered, so every
   * rank still holds the whole model and the results are those of the unsharded group. Every
   * rank must then call kiln_checkpoint_save together, with the same path: rank 0 writes `path`
   * (weights, step, options: no optimizer state) and rank R writes its slice to
   * "<path>.optimizer-rank-R-of-W"; kiln_checkpoint_load reads them all back and resumes on any
   * number of ranks, sharded or not, or in no group at all (a missing shard file:
   * KILN_ERR_NOT_FOUND naming it). KILN_ERR_UNSUPPORTED with Muon (it orthogonalises whole
   * matrices). 0 (default): every rank keeps the whole state. Values other than 0 and 1:
   * KILN_ERR_INVALID_ARGUMENT. */
  int32_t shard_optimizer_state;
} kiln_data_parallel_options;

KILN_API kiln_status kiln_data_parallel_options_default(kiln_data_parallel_options *options,
                                                        size_t struct_size);
/* Joins the group; blocks until every rank has joined. Once per trainer; every rank must hold the
 * same weights and optimizer state when it joins (the same model and options, or the same
 * checkpoint). world_size 1 is a group of one (the same code path, for tests and uniform launch
 * scripts). KILN_ERR_INVALID_ARGUMENT for a bad size or rank, or a trainer already in a group. */
KILN_API kiln_status kiln_trainer_join_data_parallel(kiln_trainer *trainer,
                                                     const kiln_data_parallel_options *options);

/* ============================================================================================= */
/* Standalone tokenizer: a tokenizer.json without a model                                        */
/* ============================================================================================= */
/* Immutable once loaded: every function below only reads it, so one handle may be used from many
 * threads at once. The same flags as kiln_tokenize / kiln_detokenize apply. */
typedef struct kiln_tokenizer kiln_tokenizer;

/* Loads a tokenizer from `path`: a directory holding tokenizer.json (and, optionally,
 * tokenizer_config.json for add_bos_token/add_eos_token), or a tokenizer.json file itself (then a
 * tokenizer_config.json next to it is read when present). KILN_ERR_NOT_FOUND when there is no
 * tokenizer.json; KILN_ERR_FORMAT / KILN_ERR_UNSUPPORTED as for kiln_model_load. A large
 * tokenizer's merges are resolved on up to 8 of kiln's own threads, which end before the call
 * returns (kiln_model_load does the same for a model's tokenizer). */
KILN_API kiln_status kiln_tokenizer_load(const char *path, kiln_tokenizer **out_tokenizer);
/* Frees a handle from kiln_tokenizer_load (NULL is fine). Never pass kiln_model_tokenizer's. */
KILN_API void kiln_tokenizer_free(kiln_tokenizer *tokenizer);

/* Text → ids; as kiln_tokenize. Text that is not valid UTF-8 gives KILN_ERR_INVALID_ARGUMENT
 * naming the byte offset. */
KILN_API kiln_status kiln_tokenizer_encode(const kiln_tokenizer *tokenizer, const char *text,
                                           size_t text_len, uint32_t flags, int32_t *ids,
                                           size_t capacity, size_t *n_ids);
/* Ids → text; as kiln_detokenize (invalid UTF-8 in the decoded bytes becomes U+FFFD). */
KILN_API kiln_status kiln_tokenizer_decode(const kiln_tokenizer *tokenizer, const int32_t *ids,
                                           size_t n_ids, uint32_t flags, char *text,
                                           size_t capacity, size_t *text_len);
/* Number of ids (max id + 1, added tokens included). */
KILN_API kiln_status kiln_tokenizer_vocab_size(const kiln_tokenizer *tokenizer, int32_t *out_size);

/* Text → ids on up to n_threads threads (0 = one per core; 1 = the calling thread only), for one
 * long text (a document, a corpus shard). The ids are exactly kiln_tokenizer_encode's with the
 * same flags: the text is cut only where the pieces cannot influence each other (at special
 * tokens with KILN_TOKENIZE_PARSE_SPECIAL and, for pipelines where that is proven safe, at line
 * starts) and texts under ~128 KiB, or without such cuts, are encoded on the calling thread.
 * Buffers, errors and the UTF-8 rule as kiln_tokenizer_encode; n_threads < 0 gives
 * KILN_ERR_INVALID_ARGUMENT. The worker threads are kiln's own and end before the call returns. */
KILN_API kiln_status kiln_tokenizer_encode_threaded(const kiln_tokenizer *tokenizer,
                                                    const char *text, size_t text_len,
                                                    uint32_t flags, int32_t n_threads,
                                                    int32_t *ids, size_t capacity, size_t *n_ids);

/* Many texts → ids on up to n_threads threads (0 = one per core), each text encoded exactly as
 * kiln_tokenizer_encode would with the same flags (HF tokenizers' encode_batch). texts[i] holds
 * text_lens[i] bytes of UTF-8 (not NUL-terminated; NULL is fine when the length is 0). The ids of
 * all texts are written back to back: text i's are ids[offsets[i] .. offsets[i + 1]). `offsets`
 * holds n_texts + 1 entries and *n_ids = offsets[n_texts] is the count needed. When capacity is
 * smaller, KILN_ERR_BUFFER_TOO_SMALL comes back with *n_ids and offsets filled in, so one retry
 * suffices (it encodes again). A text that is not valid UTF-8 gives KILN_ERR_INVALID_ARGUMENT
 * naming it ("texts[i]: ...") and the byte; when several are, the lowest i. NULL texts, text_lens
 * or offsets (with n_texts > 0), a NULL texts[i] of non-zero length, and n_threads < 0 give
 * KILN_ERR_INVALID_ARGUMENT. The worker threads are kiln's own and end before the call returns. */
KILN_API kiln_status kiln_tokenizer_encode_batch(const kiln_tokenizer *tokenizer,
                                                 const char *const *texts, const size_t *text_lens,
                                                 size_t n_texts, uint32_t flags, int32_t n_threads,
                                                 int32_t *ids, size_t capacity, size_t *offsets,
                                                 size_t *n_ids);

/* The model's tokenizer, borrowed: valid while the model lives, not to be freed. A model without
 * a tokenizer gives KILN_ERR_UNSUPPORTED (and sets *out_tokenizer to NULL). */
KILN_API kiln_status kiln_model_tokenizer(const kiln_model *model,
                                          const kiln_tokenizer **out_tokenizer);

/* ============================================================================================= */
/* Training a byte-level BPE tokenizer                                                           */
/* ============================================================================================= */
/* The pre-tokenizer regex used when kiln_tokenizer_train_options.pattern is NULL: Llama 3's, the
 * GPT-4 (cl100k) style split that nanochat also trains with. */
#define KILN_TOKENIZER_DEFAULT_PATTERN                                                           \
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+" \
  "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct kiln_tokenizer_train_options {
  size_t struct_size;
  int32_t vocab_size;            /* ids of the result: 256 byte tokens + merged tokens + special
                                  * tokens. Default 32768. Fewer when no pair is frequent enough */
  const char *pattern;           /* pre-tokenizer regex (PCRE2/Oniguruma syntax, UTF-8, NUL-
                                  * terminated); NULL = KILN_TOKENIZER_DEFAULT_PATTERN (default) */
  const char *const *special_tokens; /* optional NUL-terminated UTF-8 strings; they get the ids
                                  * after the learned ones, in this order, and their text in the
                                  * training files is not counted                               */
  size_t n_special_tokens;
  int32_t n_threads;             /* threads counting words; 0 = number of cores (default)      */
  int32_t min_frequency;         /* pairs seen fewer times are never merged; default 2         */
  kiln_progress_fn progress_fn;  /* optional; stages "count", "merge", "done"                  */
  void *progress_user_data;
} kiln_tokenizer_train_options;

KILN_API kiln_status kiln_tokenizer_train_options_default(kiln_tokenizer_train_options *options,
                                                          size_t struct_size);

/* Trains a byte-level BPE tokenizer (GPT-2 / Llama 3 style) on UTF-8 text files and returns it
 * loaded, as kiln_tokenizer_load would from the tokenizer.json that kiln_tokenizer_save writes:
 * Split(pattern, Isolated) + ByteLevel pre-tokenizer, BPE model, ByteLevel decoder, no BOS/EOS.
 * Ids 0..255 are the bytes; each step merges the most frequent adjacent pair (counted over the
 * pre-token words of all files), ties going to the pair with the smallest (left id, right id), so
 * the result depends only on the files and options, never on n_threads. Each file is cut into
 * blocks of about 1 MiB that end after a newline; no word spans two blocks. Errors:
 * KILN_ERR_INVALID_ARGUMENT (vocab_size too small, duplicate or empty special tokens, a file that
 * is not UTF-8, naming the byte), KILN_ERR_NOT_FOUND / KILN_ERR_IO (files), KILN_ERR_FORMAT (a
 * pattern that does not compile), KILN_ERR_CANCELLED (the progress callback returned non-zero).
 * The progress callback runs on the calling thread; the counting threads are kiln's own. Free the
 * result with kiln_tokenizer_free. */
KILN_API kiln_status kiln_tokenizer_train(const char *const *files, size_t n_files,
                                          const kiln_tokenizer_train_options *options,
                                          kiln_tokenizer **out_tokenizer);

/* Writes the tokenizer.json of a tokenizer from kiln_tokenizer_train. `path` ending in ".json" is
 * the file to write; any other path is a directory (created when missing) that receives
 * tokenizer.json. The write is atomic: the file is either the old one or the complete new one. A
 * tokenizer that was loaded rather than trained gives KILN_ERR_UNSUPPORTED (copy its file). */
KILN_API kiln_status kiln_tokenizer_save(const kiln_tokenizer *tokenizer, const char *path);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KILN_H */
