/*
 * kiln_go.i — how kiln.h maps onto Go (included by kiln.i under SWIGGO; the declarations still come
 * from kiln.h only). Generated with `swig -go -cgo -intgosize 64 -package raw`: the result is the
 * cgo package kiln.dev/kiln/raw, the raw layer under the idiomatic package kiln (bindings/go).
 *   - (pointer, length) input strings take a Go string, used in place for the call;
 *   - (pointer, count) arrays and caller buffers take Go slices, used in place for the call (nil
 *     means (NULL, 0), which asks kiln for the size);
 *   - scalar out-parameters take a Go pointer (*uint64 for size_t, *int32), handle out-parameters a
 *     *uintptr that the caller turns into the handle type (SwigcptrStruct_SS_kiln_model(p));
 *   - string lists (files, stop strings, special tokens) and chat messages are packed into one
 *     byte slice on the Go side and unpacked in C: cgo forbids passing Go memory that holds Go
 *     pointers, so a []string cannot cross as it is (each string is NUL-terminated there, so the
 *     idiomatic layer refuses strings holding a NUL before they get here);
 *   - kiln_tokenizer_encode_batch's texts likewise: one byte slice of length-prefixed texts, which
 *     C splits into the pointer and length arrays for the call (texts may hold NUL bytes);
 *   - callbacks are C trampolines whose user_data is a runtime/cgo.Handle of a TokenFunc,
 *     ProgressFunc or LogFunc; the trampoline calls the exported Go function kilnGoToken /
 *     kilnGoProgress / kilnGoLog, which looks the handle up. cgo makes that call legal from any
 *     thread, kiln's own included. The caller keeps the handle until kiln can no longer call it.
 *   - kiln_batch holds four pointers, which Go may not store in C memory: kiln_train_step and
 *     kiln_eval_loss take the four arrays as slices (kiln_bind.i builds the batch on the C stack,
 *     zero copy), under kiln.h's names.
 */

%go_import("runtime/cgo")

/* `type` is a Go keyword (SWIG would call it Xtype). */
%rename(quantize_type) kiln_quantize_options::type;

%insert(cgo_comment_typedefs) %{
#cgo LDFLAGS: -lkiln
%}

%{
/* The exported Go functions the trampolines call (defined in the generated Go file). */
extern int kilnGoToken(char *text, size_t text_len, int32_t token_id, uintptr_t handle);
extern int kilnGoProgress(float fraction, char *stage, uintptr_t handle);
extern void kilnGoLog(int level, char *message, uintptr_t handle);

static int kiln_go_token_trampoline(const char *text, size_t text_len, int32_t token_id, void *user_data) {
  return kilnGoToken((char *)text, text_len, token_id, (uintptr_t)user_data);
}
static int kiln_go_progress_trampoline(float fraction, const char *stage, void *user_data) {
  return kilnGoProgress(fraction, (char *)stage, (uintptr_t)user_data);
}
static void kiln_go_log_trampoline(kiln_log_level level, const char *message, void *user_data) {
  kilnGoLog((int)level, (char *)message, (uintptr_t)user_data);
}

/* Splits a packed list (n NUL-terminated strings back to back) into a malloc'd array of n
 * pointers into `blob`; NULL when n is 0. */
static const char **kiln_go_split(const char *blob, size_t len, size_t *n) {
  size_t count = 0;
  for (size_t i = 0; i < len; ++i) count += blob[i] == '\0';
  *n = count;
  if (count == 0) return NULL;
  const char **items = (const char **)malloc(count * sizeof *items);
  size_t k = 0;
  for (size_t i = 0; i < len; i += strlen(blob + i) + 1) items[k++] = blob + i;
  return items;
}

/* Splits packed texts (each an 8-byte little-endian length, then that many bytes) into malloc'd
 * arrays of pointers into `blob` and of lengths; NULLs when there are none. The texts may hold any
 * byte, NUL included, as kiln_tokenizer_encode_batch's (pointer, length) texts may. */
static uint64_t kiln_go_text_len(const char *at) {
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | (unsigned char)at[k];
  return n;
}
static const char **kiln_go_split_texts(const char *blob, size_t len, size_t **lens, size_t *n) {
  size_t count = 0;
  for (size_t i = 0; i + 8 <= len; i += 8 + kiln_go_text_len(blob + i)) ++count;
  *n = count;
  *lens = NULL;
  if (count == 0) return NULL;
  const char **items = (const char **)malloc(count * sizeof *items);
  *lens = (size_t *)malloc(count * sizeof **lens);
  size_t k = 0;
  for (size_t i = 0; i + 8 <= len; i += 8 + kiln_go_text_len(blob + i), ++k) {
    items[k] = blob + i + 8;
    (*lens)[k] = (size_t)kiln_go_text_len(blob + i);
  }
  return items;
}
%}

%insert(go_wrapper) %{
// TokenFunc receives each generated piece; returning true stops generation.
type TokenFunc func(piece string, tokenID int32) (stop bool)

// ProgressFunc receives a long operation's progress; returning true cancels it.
type ProgressFunc func(fraction float32, stage string) (stop bool)

// LogFunc receives kiln's log lines (level is a kiln_log_level).
type LogFunc func(level int, message string)

// A panic must not unwind into kiln's C frames: it stops the operation instead. The idiomatic
// layer recovers inside its own callbacks (to report the panic); this is the last guard.
func kilnGoStopOnPanic(stop *C.int) {
	if recover() != nil {
		*stop = 1
	}
}

//export kilnGoToken
func kilnGoToken(text *C.char, textLen C.size_t, tokenID C.int32_t, handle C.uintptr_t) (stop C.int) {
	defer kilnGoStopOnPanic(&stop)
	if cgo.Handle(handle).Value().(TokenFunc)(C.GoStringN(text, C.int(textLen)), int32(tokenID)) {
		return 1
	}
	return 0
}

//export kilnGoProgress
func kilnGoProgress(fraction C.float, stage *C.char, handle C.uintptr_t) (stop C.int) {
	defer kilnGoStopOnPanic(&stop)
	if cgo.Handle(handle).Value().(ProgressFunc)(float32(fraction), C.GoString(stage)) {
		return 1
	}
	return 0
}

//export kilnGoLog
func kilnGoLog(level C.int, message *C.char, handle C.uintptr_t) {
	defer func() { _ = recover() }() // a log call cannot stop anything
	cgo.Handle(handle).Value().(LogFunc)(int(level), C.GoString(message))
}

// packStrings lays strings out NUL-terminated back to back (kiln_go_split undoes it in C).
func packStrings(values []string) []byte {
	var blob []byte
	for _, v := range values {
		blob = append(append(blob, v...), 0)
	}
	return blob
}

// packTexts lays texts out as an 8-byte little-endian length, then the bytes, each
// (kiln_go_split_texts undoes it in C): one slice without Go pointers, which cgo lets C read.
func packTexts(texts []string) []byte {
	size := 0
	for _, t := range texts {
		size += 8 + len(t)
	}
	blob := make([]byte, 0, size)
	for _, t := range texts {
		n := uint64(len(t))
		for k := 0; k < 8; k++ {
			blob = append(blob, byte(n>>(8*k)))
		}
		blob = append(blob, t...)
	}
	return blob
}

// ChatMessage is one kiln_chat_message; a nil field is NULL.
type ChatMessage struct {
	Role, Content, ToolCallsJSON, ExtraJSON *string
}

// packChat lays messages out as 4 fields each: 0 (NULL), or 1 and the NUL-terminated text.
func packChat(messages []ChatMessage) []byte {
	blob := []byte{}
	for _, m := range messages {
		for _, f := range []*string{m.Role, m.Content, m.ToolCallsJSON, m.ExtraJSON} {
			if f == nil {
				blob = append(blob, 0)
			} else {
				blob = append(append(append(blob, 1), *f...), 0)
			}
		}
	}
	return blob
}
%}

/* ---- options_default's struct_size: the options type's own size ---- */
%define KILN_GO_OPTIONS_SIZE(TYPE)
%typemap(in, numinputs = 0) (size_t struct_size) "$1 = sizeof(TYPE);"
%enddef

/* ---- (pointer, length) input strings: a Go string, in place ---- */
%define KILN_GO_STRING(PTR, LEN)
%typemap(gotype) (const char *PTR, size_t LEN) "string"
%typemap(in) (const char *PTR, size_t LEN) {
  $1 = $input.n ? $input.p : "";
  $2 = (size_t)$input.n;
}
%enddef
KILN_GO_STRING(text, text_len)
KILN_GO_STRING(prompt, prompt_len)
KILN_GO_STRING(config_json, config_json_len)

/* ---- (pointer, count) arrays and buffers: Go slices, in place ---- */
%define KILN_GO_SLICE(TYPE, GOTYPE, PTR, COUNT)
%typemap(gotype) (TYPE *PTR, size_t COUNT) "[]GOTYPE"
%typemap(in) (TYPE *PTR, size_t COUNT) {
  $1 = ($1_ltype)$input.array;
  $2 = (size_t)$input.len;
}
%enddef
KILN_GO_SLICE(const int32_t, int32, ids, n_ids)
KILN_GO_SLICE(const int32_t, int32, prompt_ids, n_prompt_ids)
KILN_GO_SLICE(const float, float32, logits, n_logits)
KILN_GO_SLICE(int32_t, int32, ids, capacity)
KILN_GO_SLICE(float, float32, logits, capacity)
KILN_GO_SLICE(float, float32, out, capacity)
KILN_GO_SLICE(char, byte, text, capacity)
KILN_GO_SLICE(char, byte, piece, capacity)
KILN_GO_SLICE(const void, byte, data, size)
KILN_GO_SLICE(void, byte, data, capacity)

/* Single pointers to arrays whose length travels elsewhere (the caller checks it). */
%define KILN_GO_ARRAY(TYPE, GOTYPE, NAME)
%typemap(gotype) TYPE *NAME "[]GOTYPE"
%typemap(in) TYPE *NAME "$1 = ($1_ltype)$input.array;"
%enddef
KILN_GO_ARRAY(int32_t, int32, ids)
KILN_GO_ARRAY(uint8_t, byte, mask)
KILN_GO_ARRAY(const int32_t, int32, inputs)
KILN_GO_ARRAY(const int32_t, int32, targets)
KILN_GO_ARRAY(const uint8_t, byte, loss_mask)
KILN_GO_ARRAY(const float, float32, loss_weights)

/* ---- scalar out-parameters: Go pointers ---- */
%typemap(gotype) size_t *n_ids, size_t *text_len, size_t *piece_len, size_t *n_logits,
    size_t *n_out, size_t *size "*uint64"
%typemap(in) size_t *n_ids, size_t *text_len, size_t *piece_len, size_t *n_logits, size_t *n_out,
    size_t *size "$1 = ($1_ltype)$input;"
%typemap(gotype) int32_t *n_past, int32_t *context_length, int32_t *out_id, int32_t *out_size "*int32"
%typemap(in) int32_t *n_past, int32_t *context_length, int32_t *out_id, int32_t *out_size
    "$1 = ($1_ltype)$input;"

/* ---- handle out-parameters: *uintptr ---- */
%typemap(gotype) kiln_runtime **out_runtime, kiln_model **out_model, kiln_session **out_session,
    kiln_tokenizer **out_tokenizer, const kiln_tokenizer **out_tokenizer,
    kiln_trainer **out_trainer "*uintptr"
%typemap(in) kiln_runtime **out_runtime, kiln_model **out_model, kiln_session **out_session,
    kiln_tokenizer **out_tokenizer, const kiln_tokenizer **out_tokenizer,
    kiln_trainer **out_trainer "$1 = ($1_ltype)$input;"

/* ---- string lists: []string, packed ---- */
%define KILN_GO_STRINGS(PTR, COUNT)
%typemap(gotype) (const char *const *PTR, size_t COUNT) "[]string"
%typemap(imtype) (const char *const *PTR, size_t COUNT) "[]byte"
%typemap(goin) (const char *const *PTR, size_t COUNT) "$result = packStrings($input)"
%typemap(in) (const char *const *PTR, size_t COUNT) {
  $1 = ($1_ltype)kiln_go_split((const char *)$input.array, (size_t)$input.len, &$2);
}
%typemap(freearg) (const char *const *PTR, size_t COUNT) "free((void *)$1);"
%enddef
KILN_GO_STRINGS(files, n_files)
KILN_GO_STRINGS(items, n_items)

/* ---- encode_batch's texts: []string, packed with their lengths (any byte, NUL included) ---- */
%typemap(gotype) (const char *const *texts, const size_t *text_lens, size_t n_texts) "[]string"
%typemap(imtype) (const char *const *texts, const size_t *text_lens, size_t n_texts) "[]byte"
%typemap(goin) (const char *const *texts, const size_t *text_lens, size_t n_texts) "$result = packTexts($input)"
%typemap(in) (const char *const *texts, const size_t *text_lens, size_t n_texts) {
  size_t *lens = NULL;
  $1 = ($1_ltype)kiln_go_split_texts((const char *)$input.array, (size_t)$input.len, &lens, &$3);
  $2 = lens;
}
%typemap(freearg) (const char *const *texts, const size_t *text_lens, size_t n_texts) {
  free((void *)$1);
  free((void *)$2);
}
/* encode_batch's offsets: a []uint64 of len(texts) + 1 entries (the caller sizes it). */
KILN_GO_ARRAY(size_t, uint64, offsets)

/* ---- chat messages: []ChatMessage, packed ---- */
%typemap(gotype) (const kiln_chat_message *messages, size_t n_messages) "[]ChatMessage"
%typemap(imtype) (const kiln_chat_message *messages, size_t n_messages) "[]byte"
%typemap(goin) (const kiln_chat_message *messages, size_t n_messages) "$result = packChat($input)"
%typemap(in) (const kiln_chat_message *messages, size_t n_messages) {
  const char *blob = (const char *)$input.array;
  size_t len = (size_t)$input.len, fields = 0;
  for (size_t i = 0; i < len; ++fields) i += blob[i] ? strlen(blob + i + 1) + 2 : 1;
  kiln_chat_message *m = (kiln_chat_message *)calloc(fields / 4 + 1, sizeof *m);
  size_t f = 0;
  for (size_t i = 0; i < len; ++f) {
    const char **field = f % 4 == 0 ? &m[f / 4].role : f % 4 == 1 ? &m[f / 4].content
                       : f % 4 == 2 ? &m[f / 4].tool_calls_json : &m[f / 4].extra_json;
    *field = blob[i] ? blob + i + 1 : NULL;
    i += blob[i] ? strlen(blob + i + 1) + 2 : 1;
  }
  $1 = m;
  $2 = fields / 4;
}
%typemap(freearg) (const kiln_chat_message *messages, size_t n_messages) "free((void *)$1);"

/* ---- callbacks given as arguments: a cgo.Handle (0 = none) ---- */
%typemap(gotype) (kiln_log_fn fn, void *user_data) "uintptr"
%typemap(in) (kiln_log_fn fn, void *user_data) {
  $1 = $input ? kiln_go_log_trampoline : NULL;
  $2 = (void *)$input;
}
%typemap(gotype) (kiln_progress_fn fn, void *user_data) "uintptr"
%typemap(in) (kiln_progress_fn fn, void *user_data) {
  $1 = $input ? kiln_go_progress_trampoline : NULL;
  $2 = (void *)$input;
}

/* Options fields a Go value cannot be stored in directly (C memory must not hold Go pointers):
 * callbacks take a cgo.Handle, string lists a kiln_go_strings (C copies), ids a C array the
 * options own until kiln_go_generate_options_take_output_ids. (The training structs' array fields
 * and kiln_batch go through kiln_bind.i's helpers, shared with C#.) */
%immutable kiln_generate_options::output_ids;
%immutable kiln_generate_options::stop_strings;
%immutable kiln_tokenizer_train_options::special_tokens;

%inline %{
void kiln_go_generate_options_set_token_callback(kiln_generate_options *options, uintptr_t handle) {
  options->token_fn = handle ? kiln_go_token_trampoline : NULL;
  options->token_user_data = (void *)handle;
}
void kiln_go_model_load_options_set_progress_callback(kiln_model_load_options *options, uintptr_t handle) {
  options->progress_fn = handle ? kiln_go_progress_trampoline : NULL;
  options->progress_user_data = (void *)handle;
}
void kiln_go_quantize_options_set_progress_callback(kiln_quantize_options *options, uintptr_t handle) {
  options->progress_fn = handle ? kiln_go_progress_trampoline : NULL;
  options->progress_user_data = (void *)handle;
}
void kiln_go_tokenizer_train_options_set_progress_callback(kiln_tokenizer_train_options *options,
                                                           uintptr_t handle) {
  options->progress_fn = handle ? kiln_go_progress_trampoline : NULL;
  options->progress_user_data = (void *)handle;
}
void kiln_go_trainer_options_set_progress_callback(kiln_trainer_options *options, uintptr_t handle) {
  options->progress_fn = handle ? kiln_go_progress_trampoline : NULL;
  options->progress_user_data = (void *)handle;
}
void kiln_go_runtime_options_set_log_callback(kiln_runtime_options *options, uintptr_t handle) {
  options->log_fn = handle ? kiln_go_log_trampoline : NULL;
  options->log_user_data = (void *)handle;
}

/* An owned C copy of a string list, for options that keep pointers past one call. */
typedef struct kiln_go_strings {
  char *blob;
  const char **items;
  size_t n;
} kiln_go_strings;
kiln_go_strings *kiln_go_strings_new(const char *const *items, size_t n_items) {
  kiln_go_strings *s = (kiln_go_strings *)calloc(1, sizeof *s);
  size_t len = 0;
  for (size_t i = 0; i < n_items; ++i) len += strlen(items[i]) + 1;
  s->blob = (char *)malloc(len + 1);
  s->items = (const char **)calloc(n_items + 1, sizeof *s->items);
  for (size_t i = 0, at = 0; i < n_items; ++i) {
    size_t size = strlen(items[i]) + 1;
    memcpy(s->blob + at, items[i], size);
    s->items[i] = s->blob + at;
    at += size;
  }
  s->n = n_items;
  return s;
}
void kiln_go_strings_free(kiln_go_strings *strings) {
  if (!strings) return;
  free(strings->blob);
  free(strings->items);
  free(strings);
}
void kiln_go_generate_options_set_stop_strings(kiln_generate_options *options, const kiln_go_strings *strings) {
  options->stop_strings = strings && strings->n ? strings->items : NULL;
  options->n_stop_strings = strings ? strings->n : 0;
}
void kiln_go_tokenizer_train_options_set_special_tokens(kiln_tokenizer_train_options *options,
                                                        const kiln_go_strings *strings) {
  options->special_tokens = strings && strings->n ? strings->items : NULL;
  options->n_special_tokens = strings ? strings->n : 0;
}

/* output_ids: a C array of `capacity` ids; take copies them into a Go slice and frees the array. */
void kiln_go_generate_options_alloc_output_ids(kiln_generate_options *options, size_t capacity) {
  options->output_ids = capacity ? (int32_t *)calloc(capacity, sizeof(int32_t)) : NULL;
  options->output_ids_capacity = capacity;
}
void kiln_go_generate_options_take_output_ids(kiln_generate_options *options, int32_t *ids, size_t capacity) {
  if (options->output_ids && ids) {
    size_t n = capacity < options->output_ids_capacity ? capacity : options->output_ids_capacity;
    memcpy(ids, options->output_ids, n * sizeof(int32_t));
  }
  free(options->output_ids);
  options->output_ids = NULL;
  options->output_ids_capacity = 0;
}

%}
