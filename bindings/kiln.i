/*
 * kiln.i — the SWIG interface over capi/kiln.h.
 *
 * Every declaration comes from kiln.h through %include below: nothing is copied here, so a function
 * added to the header appears in the generated module on the next build (bindings/check_coverage.py
 * fails the build's tests when one is not reachable). What this file adds is how kiln.h's C
 * conventions map onto the target language:
 *   - (pointer, length) input strings take a str or bytes;
 *   - (pointer, length) input arrays and caller buffers take objects with the buffer protocol
 *     (array.array, bytearray, memoryview, numpy arrays), None meaning (NULL, 0);
 *   - out-parameters (handles, counts, ids) are returned after the status: [status, out...];
 *   - options_default(options, struct_size) fills struct_size from the options type itself, and the
 *     struct proxies' constructors set struct_size, so callers never spell a sizeof;
 *   - callbacks (token stream, progress, log) are C trampolines that take the target language's
 *     callable as user_data and call back into it.
 * That list is Python's (the SWIGPYTHON section below). Go and C# have their own sections, in
 * kiln_go.i (swig -go -cgo: package kiln.dev/kiln/raw) and kiln_csharp.i (swig -csharp: namespace
 * Kiln.Raw and libkiln_csharp.so), included at the end under SWIGGO / SWIGCSHARP with the helpers
 * they share (kiln_bind.i). The thin idiomatic layer of each language (bindings/<language>/) sits
 * on top of its generated module.
 *
 * Python: generated with -threads, so every wrapped call releases the GIL while it runs in kiln
 * (two Python threads can generate on two sessions at once) and the trampolines take the GIL back
 * (PyGILState_Ensure) whichever thread kiln calls them on.
 */
%module(threads = "1") kiln_c

%{
#include <stdlib.h>
#include <string.h>
#include "kiln.h"
%}

%include <stdint.i>
%include <typemaps.i>

/* SWIG's parser does not know GCC attributes; KILN_API only carries visibility. */
#define __attribute__(x)

#ifdef SWIGPYTHON

%{
/* Views `obj` as a C-contiguous buffer of `itemsize`-byte items whose struct format letter is one
 * of `formats` (e.g. "iI" for 32-bit ids); sets a Python TypeError naming `what` otherwise. */
static int kiln_py_get_buffer(PyObject *obj, Py_buffer *view, size_t itemsize, const char *formats,
                              int writable, const char *what) {
  int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
  if (PyObject_GetBuffer(obj, view, flags) != 0) {
    PyErr_Format(PyExc_TypeError, "%s: expected a %sC-contiguous buffer (e.g. array.array('%c')), got %s",
                 what, writable ? "writable " : "", formats[0], Py_TYPE(obj)->tp_name);
    return -1;
  }
  const char *fmt = view->format ? view->format : "B";
  if (*fmt == '@' || *fmt == '=' || *fmt == '<') ++fmt;
  if ((size_t)view->itemsize != itemsize || fmt[0] == '\0' || fmt[1] != '\0' || !strchr(formats, fmt[0])) {
    PyErr_Format(PyExc_TypeError, "%s: expected items of format '%c' (%zu bytes), got format '%s' (%zd bytes)",
                 what, formats[0], itemsize, view->format ? view->format : "B", view->itemsize);
    PyBuffer_Release(view);
    return -1;
  }
  return 0;
}

/* Calls a Python callable from any thread. On an exception the callback counts as asking to stop:
 * the exception is reported through sys.unraisablehook (never propagated into kiln). */
static int kiln_py_call_stop(PyObject *callable, PyObject *args) {
  int stop = 1;
  if (args) {
    PyObject *r = PyObject_CallObject(callable, args);
    Py_DECREF(args);
    if (r) {
      stop = PyObject_IsTrue(r);
      Py_DECREF(r);
      if (stop >= 0) return stop;
      stop = 1;
    }
  }
  PyErr_WriteUnraisable(callable);
  return stop;
}

static int kiln_py_token_trampoline(const char *text, size_t text_len, int32_t token_id, void *user_data) {
  PyGILState_STATE gil = PyGILState_Ensure();
  PyObject *args = Py_BuildValue("(Ni)", PyUnicode_DecodeUTF8(text, (Py_ssize_t)text_len, "replace"),
                                 (int)token_id);
  int stop = kiln_py_call_stop((PyObject *)user_data, args);
  PyGILState_Release(gil);
  return stop;
}

static int kiln_py_progress_trampoline(float fraction, const char *stage, void *user_data) {
  PyGILState_STATE gil = PyGILState_Ensure();
  PyObject *args = Py_BuildValue("(dN)", (double)fraction, PyUnicode_DecodeUTF8(stage, (Py_ssize_t)strlen(stage), "replace"));
  int stop = kiln_py_call_stop((PyObject *)user_data, args);
  PyGILState_Release(gil);
  return stop;
}

static void kiln_py_log_trampoline(kiln_log_level level, const char *message, void *user_data) {
  PyGILState_STATE gil = PyGILState_Ensure();
  PyObject *args = Py_BuildValue("(iN)", (int)level, PyUnicode_DecodeUTF8(message, (Py_ssize_t)strlen(message), "replace"));
  PyObject *r = args ? PyObject_CallObject((PyObject *)user_data, args) : NULL;
  Py_XDECREF(args);
  if (r) Py_DECREF(r); else PyErr_WriteUnraisable((PyObject *)user_data);
  PyGILState_Release(gil);
}

/* The process-wide log sink's callable: kiln keeps the C pointer for the life of the process, so
 * the module keeps the one strong reference that makes the pointer valid. */
static PyObject *kiln_py_global_log_callable = NULL;
%}

/* ---- input strings: (pointer, length) from str (UTF-8) or bytes ---- */
%typemap(in) (const char *text, size_t text_len), (const char *prompt, size_t prompt_len) {
  Py_ssize_t n = 0;
  char *s = NULL;
  if (PyUnicode_Check($input)) {
    s = (char *)PyUnicode_AsUTF8AndSize($input, &n);
    if (!s) SWIG_fail;
  } else if (PyBytes_Check($input)) {
    if (PyBytes_AsStringAndSize($input, &s, &n) != 0) SWIG_fail;
  } else {
    PyErr_Format(PyExc_TypeError, "$symname: expected str or bytes, got %s", Py_TYPE($input)->tp_name);
    SWIG_fail;
  }
  $1 = s;
  $2 = (size_t)n;
}
%typemap(typecheck) (const char *text, size_t text_len), (const char *prompt, size_t prompt_len) {
  $1 = PyUnicode_Check($input) || PyBytes_Check($input);
}

/* ---- read-only arrays: (pointer, count) from a buffer ---- */
%define KILN_PY_IN_ARRAY(TYPE, PTR, COUNT, FORMATS)
%typemap(in) (const TYPE *PTR, size_t COUNT) (Py_buffer view, int have_view = 0) {
  if ($input == Py_None) {
    $1 = NULL;
    $2 = 0;
  } else {
    if (kiln_py_get_buffer($input, &view, sizeof(TYPE), FORMATS, 0, "$symname: PTR") != 0) SWIG_fail;
    have_view = 1;
    $1 = (TYPE *)view.buf;
    $2 = (size_t)(view.len / (Py_ssize_t)sizeof(TYPE));
  }
}
%typemap(freearg) (const TYPE *PTR, size_t COUNT) {
  if (have_view$argnum) PyBuffer_Release(&view$argnum);
}
%enddef
KILN_PY_IN_ARRAY(int32_t, ids, n_ids, "iI")
KILN_PY_IN_ARRAY(int32_t, prompt_ids, n_prompt_ids, "iI")
KILN_PY_IN_ARRAY(float, logits, n_logits, "f")

/* ---- caller buffers: (pointer, capacity) from a writable buffer or None ---- */
%define KILN_PY_OUT_BUFFER(TYPE, PTR, FORMATS)
%typemap(in) (TYPE *PTR, size_t capacity) (Py_buffer view, int have_view = 0) {
  if ($input == Py_None) {
    $1 = NULL;
    $2 = 0;
  } else {
    if (kiln_py_get_buffer($input, &view, sizeof(TYPE), FORMATS, 1, "$symname: PTR") != 0) SWIG_fail;
    have_view = 1;
    $1 = (TYPE *)view.buf;
    $2 = (size_t)(view.len / (Py_ssize_t)sizeof(TYPE));
  }
}
%typemap(freearg) (TYPE *PTR, size_t capacity) {
  if (have_view$argnum) PyBuffer_Release(&view$argnum);
}
%enddef
KILN_PY_OUT_BUFFER(int32_t, ids, "iI")
KILN_PY_OUT_BUFFER(float, logits, "f")
KILN_PY_OUT_BUFFER(char, text, "Bbc")
KILN_PY_OUT_BUFFER(char, piece, "Bbc")

/* ---- scalar out-parameters: returned after the status ---- */
%typemap(in, numinputs = 0) size_t *n_ids (size_t tmp = 0), size_t *text_len (size_t tmp = 0),
    size_t *piece_len (size_t tmp = 0), size_t *n_logits (size_t tmp = 0) {
  $1 = &tmp;
}
%typemap(argout) size_t *n_ids, size_t *text_len, size_t *piece_len, size_t *n_logits {
  $result = SWIG_Python_AppendOutput($result, PyLong_FromSize_t(*$1));
}
%apply int32_t *OUTPUT { int32_t *n_past, int32_t *context_length, int32_t *out_id, int32_t *out_size };

/* ---- handle out-parameters ---- */
%define KILN_PY_OUT_HANDLE(TYPE, NAME)
%typemap(in, numinputs = 0) TYPE **NAME (TYPE *tmp = NULL) {
  $1 = &tmp;
}
%typemap(argout) TYPE **NAME {
  $result = SWIG_Python_AppendOutput($result, SWIG_NewPointerObj((void *)*$1, $*1_descriptor, 0));
}
%enddef
KILN_PY_OUT_HANDLE(kiln_runtime, out_runtime)
KILN_PY_OUT_HANDLE(kiln_model, out_model)
KILN_PY_OUT_HANDLE(kiln_session, out_session)
KILN_PY_OUT_HANDLE(kiln_tokenizer, out_tokenizer)
/* kiln_model_tokenizer's borrowed handle: the same proxy type (SWIG drops the const), never owned. */
KILN_PY_OUT_HANDLE(const kiln_tokenizer, out_tokenizer)

/* ---- the process-wide log sink: a callable (or None) plus its minimum level ---- */
%typemap(in) (kiln_log_fn fn, void *user_data) {
  if ($input == Py_None) {
    $1 = NULL;
    $2 = NULL;
  } else if (PyCallable_Check($input)) {
    $1 = kiln_py_log_trampoline;
    $2 = $input;
  } else {
    PyErr_SetString(PyExc_TypeError, "kiln_set_log_callback: expected a callable(level, message) or None");
    SWIG_fail;
  }
}
%typemap(argout) (kiln_log_fn fn, void *user_data) {
  /* Hold the new sink's callable only once kiln took it, then drop the old one. */
  if (PyLong_Check($result) && PyLong_AsLong($result) == KILN_OK) {
    PyObject *old = kiln_py_global_log_callable;
    kiln_py_global_log_callable = $input == Py_None ? NULL : $input;
    Py_XINCREF(kiln_py_global_log_callable);
    Py_XDECREF(old);
  }
}

/* Callback fields of the options structs are set through these helpers (a struct field can only
 * hold a C function pointer). The callable is borrowed: the caller keeps it alive while kiln may
 * call it (the idiomatic layer holds it on the Runtime/the generate call). */
%inline %{
void kiln_py_generate_options_set_token_callback(kiln_generate_options *options, PyObject *callback) {
  options->token_fn = callback == Py_None ? NULL : kiln_py_token_trampoline;
  options->token_user_data = callback == Py_None ? NULL : callback;
}
void kiln_py_model_load_options_set_progress_callback(kiln_model_load_options *options, PyObject *callback) {
  options->progress_fn = callback == Py_None ? NULL : kiln_py_progress_trampoline;
  options->progress_user_data = callback == Py_None ? NULL : callback;
}
void kiln_py_quantize_options_set_progress_callback(kiln_quantize_options *options, PyObject *callback) {
  options->progress_fn = callback == Py_None ? NULL : kiln_py_progress_trampoline;
  options->progress_user_data = callback == Py_None ? NULL : callback;
}
void kiln_py_runtime_options_set_log_callback(kiln_runtime_options *options, PyObject *callback) {
  options->log_fn = callback == Py_None ? NULL : kiln_py_log_trampoline;
  options->log_user_data = callback == Py_None ? NULL : callback;
}
%}

/* generate options' output_ids: a writable int32 buffer the caller keeps alive during the call. */
%typemap(in) (int32_t *output_ids, size_t output_ids_capacity) (Py_buffer view) {
  if ($input == Py_None) {
    $1 = NULL;
    $2 = 0;
  } else {
    if (kiln_py_get_buffer($input, &view, sizeof(int32_t), "iI", 1, "output_ids") != 0) SWIG_fail;
    $1 = (int32_t *)view.buf;
    $2 = (size_t)(view.len / (Py_ssize_t)sizeof(int32_t));
    PyBuffer_Release(&view); /* the pointer stays valid while the caller keeps the buffer alive */
  }
}
%inline %{
void kiln_py_generate_options_set_output_ids(kiln_generate_options *options, int32_t *output_ids,
                                             size_t output_ids_capacity) {
  options->output_ids = output_ids;
  options->output_ids_capacity = output_ids_capacity;
}
%}

/* generate options' stop strings: an owned array of NUL-terminated copies. */
%inline %{
typedef struct kiln_py_strings {
  char **items;
  size_t n;
} kiln_py_strings;
void kiln_py_generate_options_set_stop_strings(kiln_generate_options *options, const kiln_py_strings *strings) {
  options->stop_strings = strings ? (const char *const *)strings->items : NULL;
  options->n_stop_strings = strings ? strings->n : 0;
}
%}
/* The constructor calls the Python C API: it must keep the GIL (-threads releases it otherwise). */
%nothread kiln_py_strings::kiln_py_strings;
%exception kiln_py_strings::kiln_py_strings {
  $action
  if (!result) SWIG_fail;
}
%extend kiln_py_strings {
  kiln_py_strings(PyObject *sequence) {
    PyObject *seq = PySequence_Fast(sequence, "kiln_py_strings: expected a sequence of str");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    kiln_py_strings *s = (kiln_py_strings *)calloc(1, sizeof *s);
    s->items = (char **)calloc((size_t)n + 1, sizeof(char *));
    for (Py_ssize_t i = 0; i < n; ++i) {
      Py_ssize_t len = 0;
      const char *utf8 = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(seq, i), &len);
      if (!utf8) {
        for (size_t j = 0; j < s->n; ++j) free(s->items[j]);
        free(s->items);
        free(s);
        Py_DECREF(seq);
        return NULL;
      }
      s->items[i] = (char *)malloc((size_t)len + 1);
      memcpy(s->items[i], utf8, (size_t)len + 1);
      s->n = (size_t)i + 1;
    }
    Py_DECREF(seq);
    return s;
  }
  ~kiln_py_strings() {
    for (size_t i = 0; i < $self->n; ++i) free($self->items[i]);
    free($self->items);
    free($self);
  }
}

/* kiln_tokenizer_train's file list: a kiln_py_strings (the idiomatic layer builds it). */
%typemap(in) (const char *const *files, size_t n_files) {
  kiln_py_strings *strings = NULL;
  if (SWIG_ConvertPtr($input, (void **)&strings, $descriptor(kiln_py_strings *), 0) != 0 || !strings) {
    SWIG_exception_fail(SWIG_TypeError, "$symname: files must be a kiln_py_strings");
  }
  $1 = ($1_ltype)strings->items;
  $2 = strings->n;
}
/* Training options' special tokens and progress callback, borrowed like the generate options'
 * stop strings: the caller keeps the kiln_py_strings and the callable alive during the call. */
%inline %{
void kiln_py_tokenizer_train_options_set_special_tokens(kiln_tokenizer_train_options *options,
                                                        const kiln_py_strings *strings) {
  options->special_tokens = strings ? (const char *const *)strings->items : NULL;
  options->n_special_tokens = strings ? strings->n : 0;
}
void kiln_py_tokenizer_train_options_set_progress_callback(kiln_tokenizer_train_options *options,
                                                           PyObject *callback) {
  options->progress_fn = callback == Py_None ? NULL : kiln_py_progress_trampoline;
  options->progress_user_data = callback == Py_None ? NULL : callback;
}
%}

/* ---- chat messages: a sequence of (role, content, tool_calls_json, extra_json) tuples, each
 * item a str or None (the idiomatic layer builds them from dicts). The UTF-8 pointers are the str
 * objects' own, valid while the sequence (held until freearg) holds them. ---- */
%typemap(in) (const kiln_chat_message *messages, size_t n_messages) (PyObject *seq = NULL) {
  seq = PySequence_Fast($input, "$symname: messages must be a sequence of 4-tuples");
  if (!seq) SWIG_fail;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  $1 = (kiln_chat_message *)calloc((size_t)n + 1, sizeof(kiln_chat_message));
  $2 = (size_t)n;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 4) {
      PyErr_Format(PyExc_TypeError, "$symname: message %zd: expected a (role, content, tool_calls_json, extra_json) tuple", i);
      SWIG_fail;
    }
    const char **fields[4] = {&$1[i].role, &$1[i].content, &$1[i].tool_calls_json, &$1[i].extra_json};
    for (int f = 0; f < 4; ++f) {
      PyObject *value = PyTuple_GET_ITEM(item, f);
      if (value == Py_None) continue;
      if (!PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "$symname: message %zd field %d: expected str or None, got %s", i, f, Py_TYPE(value)->tp_name);
        SWIG_fail;
      }
      *fields[f] = PyUnicode_AsUTF8(value);
      if (!*fields[f]) SWIG_fail;
    }
  }
}
%typemap(freearg) (const kiln_chat_message *messages, size_t n_messages) {
  free((kiln_chat_message *)$1);
  Py_XDECREF(seq$argnum);
}

/* ---- render_tokens' ids and mask: two writable buffers of the same length, or None and None ---- */
%typemap(in) (int32_t *ids, uint8_t *mask, size_t capacity) (Py_buffer ids_view, Py_buffer mask_view, int have_ids = 0, int have_mask = 0) {
  PyObject *ids_obj = NULL, *mask_obj = NULL;
  if (!PyArg_ParseTuple($input, "OO:$symname buffers", &ids_obj, &mask_obj)) SWIG_fail;
  if (ids_obj == Py_None && mask_obj == Py_None) {
    $1 = NULL;
    $2 = NULL;
    $3 = 0;
  } else {
    if (kiln_py_get_buffer(ids_obj, &ids_view, sizeof(int32_t), "iI", 1, "$symname: ids") != 0) SWIG_fail;
    have_ids = 1;
    if (kiln_py_get_buffer(mask_obj, &mask_view, sizeof(uint8_t), "Bb", 1, "$symname: mask") != 0) SWIG_fail;
    have_mask = 1;
    if (ids_view.len / (Py_ssize_t)sizeof(int32_t) != mask_view.len) {
      PyErr_Format(PyExc_ValueError, "$symname: ids holds %zd entries but mask %zd; they must match",
                   ids_view.len / (Py_ssize_t)sizeof(int32_t), mask_view.len);
      SWIG_fail;
    }
    $1 = (int32_t *)ids_view.buf;
    $2 = (uint8_t *)mask_view.buf;
    $3 = (size_t)mask_view.len;
  }
}
%typemap(freearg) (int32_t *ids, uint8_t *mask, size_t capacity) {
  if (have_ids$argnum) PyBuffer_Release(&ids_view$argnum);
  if (have_mask$argnum) PyBuffer_Release(&mask_view$argnum);
}

/* ---- encode_batch's texts: a sequence of str (UTF-8) or bytes. The pointers are the objects' own,
 * valid while the sequence (held until freearg) holds them. ---- */
%typemap(in) (const char *const *texts, const size_t *text_lens, size_t n_texts) (PyObject *seq = NULL) {
  seq = PySequence_Fast($input, "$symname: texts must be a sequence of str or bytes");
  if (!seq) SWIG_fail;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  $1 = ($1_ltype)calloc((size_t)n + 1, sizeof(char *));
  $2 = (size_t *)calloc((size_t)n + 1, sizeof(size_t));
  $3 = (size_t)n;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
    Py_ssize_t len = 0;
    char *s = NULL;
    if (PyUnicode_Check(item)) {
      s = (char *)PyUnicode_AsUTF8AndSize(item, &len);
      if (!s) SWIG_fail;
    } else if (PyBytes_Check(item)) {
      if (PyBytes_AsStringAndSize(item, &s, &len) != 0) SWIG_fail;
    } else {
      PyErr_Format(PyExc_TypeError, "$symname: texts[%zd]: expected str or bytes, got %s", i, Py_TYPE(item)->tp_name);
      SWIG_fail;
    }
    ((const char **)$1)[i] = s;
    ((size_t *)$2)[i] = (size_t)len;
  }
}
%typemap(freearg) (const char *const *texts, const size_t *text_lens, size_t n_texts) {
  free((void *)$1);
  free((void *)$2);
  Py_XDECREF(seq$argnum);
}
/* encode_batch's offsets: a writable buffer of size_t ('N', or 'Q' on LP64) with room for
 * len(texts) + 1 entries, checked here because C trusts it. arg4 is n_texts: offsets is only a
 * parameter of kiln_tokenizer_encode_batch(tokenizer, texts, text_lens, n_texts, ...). */
%typemap(in) size_t *offsets (Py_buffer view, int have_view = 0, size_t count = 0) {
  if (kiln_py_get_buffer($input, &view, sizeof(size_t), "NQLI", 1, "$symname: offsets") != 0) SWIG_fail;
  have_view = 1;
  count = (size_t)view.len / sizeof(size_t);
  $1 = (size_t *)view.buf;
}
%typemap(check) size_t *offsets {
  if (count$argnum < arg4 + 1) {
    PyErr_Format(PyExc_ValueError, "$symname: offsets holds %zu entries but needs len(texts) + 1 = %zu",
                 count$argnum, (size_t)arg4 + 1);
    SWIG_fail;
  }
}
%typemap(freearg) size_t *offsets {
  if (have_view$argnum) PyBuffer_Release(&view$argnum);
}

#endif /* SWIGPYTHON */

/* ---- options_default(options, struct_size): struct_size is the options type's own size ---- */
#ifndef SWIGPYTHON
/* Go and C#: struct_size is no argument (only the *_default functions have a parameter of that
 * name; the struct members of that name are read-only, set by the proxies' constructors). */
%typemap(in, numinputs = 0) size_t struct_size "$1 = sizeof(*arg1);"
%immutable struct_size;
%define KILN_OPTIONS_SIZE(TYPE)
%enddef
#else
%define KILN_OPTIONS_SIZE(TYPE)
%typemap(in, numinputs = 1) (TYPE *options, size_t struct_size) {
  if (SWIG_ConvertPtr($input, (void **)&$1, $1_descriptor, 0) != 0 || !$1) {
    SWIG_exception_fail(SWIG_TypeError, "$symname: expected a " #TYPE);
  }
  $2 = sizeof(TYPE);
}
%enddef
#endif
%define KILN_STRUCT(TYPE)
KILN_OPTIONS_SIZE(TYPE)
/* A new proxy starts zeroed with struct_size set, ready for kiln_*_get_info or *_default. */
%extend TYPE {
  TYPE() {
    TYPE *p = (TYPE *)calloc(1, sizeof(TYPE));
    p->struct_size = sizeof(TYPE);
    return p;
  }
  ~TYPE() { free($self); }
}
%enddef
KILN_STRUCT(kiln_runtime_options)
KILN_STRUCT(kiln_runtime_info)
KILN_STRUCT(kiln_model_load_options)
KILN_STRUCT(kiln_quantize_options)
KILN_STRUCT(kiln_model_info)
KILN_STRUCT(kiln_session_options)
KILN_STRUCT(kiln_sampling_options)
KILN_STRUCT(kiln_generate_options)
KILN_STRUCT(kiln_generate_result)
KILN_STRUCT(kiln_data_parallel_options)

/* kiln_chat_options owns copies of the strings set on it (a Python str's buffer would not outlive
 * the assignment): a set frees the previous copy, the destructor frees them all. Set them after
 * kiln_chat_options_default, which writes NULLs over them. */
KILN_OPTIONS_SIZE(kiln_chat_options)
%typemap(memberin) const char *tools_json, const char *extra_context_json,
    const char *template_override, const char *template_name {
  free((char *)$1);
  $1 = NULL;
  if ($input) {
    size_t size = strlen($input) + 1;
    $1 = (const char *)memcpy(malloc(size), $input, size);
  }
}
%extend kiln_chat_options {
  kiln_chat_options() {
    kiln_chat_options *p = (kiln_chat_options *)calloc(1, sizeof(kiln_chat_options));
    p->struct_size = sizeof(kiln_chat_options);
    return p;
  }
  ~kiln_chat_options() {
    free((char *)$self->tools_json);
    free((char *)$self->extra_context_json);
    free((char *)$self->template_override);
    free((char *)$self->template_name);
    free($self);
  }
}

/* kiln_tokenizer_train_options owns a copy of its pattern, as kiln_chat_options does of its
 * strings (set it after kiln_tokenizer_train_options_default, which writes NULL over it). */
KILN_OPTIONS_SIZE(kiln_tokenizer_train_options)
%typemap(memberin) const char *pattern {
  free((char *)$1);
  $1 = NULL;
  if ($input) {
    size_t size = strlen($input) + 1;
    $1 = (const char *)memcpy(malloc(size), $input, size);
  }
}
%extend kiln_tokenizer_train_options {
  kiln_tokenizer_train_options() {
    kiln_tokenizer_train_options *p =
        (kiln_tokenizer_train_options *)calloc(1, sizeof(kiln_tokenizer_train_options));
    p->struct_size = sizeof(kiln_tokenizer_train_options);
    return p;
  }
  ~kiln_tokenizer_train_options() {
    free((char *)$self->pattern);
    free($self);
  }
}
#ifdef SWIGPYTHON
%immutable kiln_tokenizer_train_options::special_tokens; /* set through a kiln_py_strings */
#endif

/* Borrowed strings inside info structs are read-only. */
%immutable kiln_runtime_info::device_name;
%immutable kiln_model_info::architecture;
/* Python passes messages as tuples (the typemap above); a proxy's setters would leak copies. */
%immutable kiln_chat_message::role;
%immutable kiln_chat_message::content;
%immutable kiln_chat_message::tool_calls_json;
%immutable kiln_chat_message::extra_json;

/* The training section's mappings (their own file: one job per file). */
%include "kiln_train.i"

/* kiln_nccl_id: the target languages cannot assign a C array member, so its bytes are read and
 * written one at a time through these helpers (once per process: the cost does not matter). */
%immutable kiln_nccl_id::bytes;
%inline %{
int kiln_bind_nccl_id_byte(const kiln_nccl_id *id, int k) {
  return k >= 0 && k < KILN_NCCL_ID_BYTES ? id->bytes[k] : -1;
}
void kiln_bind_nccl_id_set_byte(kiln_nccl_id *id, int k, int value) {
  if (k >= 0 && k < KILN_NCCL_ID_BYTES) id->bytes[k] = (unsigned char)value;
}
%}

/* Go's and C#'s mappings (their own files, as the training section's). */
#ifdef SWIGGO
%include "kiln_go.i"
%include "kiln_bind.i"
#endif
#ifdef SWIGCSHARP
%include "kiln_csharp.i"
%include "kiln_bind.i"
#endif

%include "kiln.h"
