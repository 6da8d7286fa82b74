/*
 * kiln_train.i — how kiln.h's "Training" section maps onto the target language (included by kiln.i
 * just before it includes kiln.h; the declarations themselves still come from kiln.h only).
 *   - kiln_model_create's config text takes a str or bytes;
 *   - a kiln_batch is passed as one tuple (batch_size, seq_len, inputs, targets, mask, weights): the
 *     arrays are objects with the buffer protocol (numpy arrays are used in place, zero-copy), mask
 *     and weights may be None, and every array must hold exactly batch_size * seq_len items (a
 *     ValueError otherwise, so kiln never reads past a buffer);
 *   - kiln_trainer_forward's inputs are one tuple (inputs, batch_size, seq_len), checked the same way;
 *   - data states are bytes-like objects; out-parameters are returned after the status;
 *   - the options' array fields (mtp_loss_weights, param_groups) and the result's mtp_losses have
 *     helpers, since a C array member cannot be assigned from Python.
 * Helpers that touch Python objects are %nothread: they must keep the GIL (every other wrapped call
 * releases it while kiln runs).
 */

#ifdef SWIGPYTHON

%{
/* Views `obj` as `count` items of `itemsize` bytes (format letter in `formats`); a ValueError names
 * `what` when the count differs. */
static int kiln_py_get_exact_buffer(PyObject *obj, Py_buffer *view, size_t itemsize, const char *formats,
                                    size_t count, const char *what) {
  if (kiln_py_get_buffer(obj, view, itemsize, formats, 0, what) != 0) return -1;
  size_t have = (size_t)(view->len / (Py_ssize_t)itemsize);
  if (have != count) {
    PyErr_Format(PyExc_ValueError, "%s holds %zu items but batch_size * seq_len is %zu", what, have, count);
    PyBuffer_Release(view);
    return -1;
  }
  return 0;
}
%}

/* ---- kiln_model_create's config text: str (UTF-8) or bytes ---- */
%apply (const char *text, size_t text_len) { (const char *config_json, size_t config_json_len) };

/* ---- kiln_batch: (batch_size, seq_len, inputs, targets[, mask[, weights]]) or None ---- */
%typemap(in) const kiln_batch *batch (kiln_batch tmp, Py_buffer views[4], int n_views = 0) {
  if ($input == Py_None) {
    $1 = NULL;
  } else {
    int batch_size = 0, seq_len = 0;
    PyObject *inputs = Py_None, *targets = Py_None, *mask = Py_None, *weights = Py_None;
    if (!PyTuple_Check($input) ||
        !PyArg_ParseTuple($input, "iiOO|OO:$symname batch", &batch_size, &seq_len, &inputs, &targets, &mask, &weights)) {
      if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_TypeError, "$symname: batch must be a (batch_size, seq_len, inputs, targets, mask, weights) tuple");
      }
      SWIG_fail;
    }
    memset(&tmp, 0, sizeof tmp);
    tmp.struct_size = sizeof tmp;
    tmp.batch_size = batch_size;
    tmp.seq_len = seq_len;
    /* kiln itself rejects sizes <= 0 (with its message); arrays are only sized for valid ones. */
    size_t n = batch_size > 0 && seq_len > 0 ? (size_t)batch_size * (size_t)seq_len : 0;
    PyObject *objs[4] = {inputs, targets, mask, weights};
    static const char *names[4] = {"$symname: inputs", "$symname: targets", "$symname: mask", "$symname: weights"};
    static const size_t sizes[4] = {sizeof(int32_t), sizeof(int32_t), sizeof(uint8_t), sizeof(float)};
    static const char *formats[4] = {"iI", "iI", "Bb?", "f"};
    const void *ptrs[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4; ++i) {
      if (objs[i] == Py_None) continue;
      if (kiln_py_get_exact_buffer(objs[i], &views[n_views], sizes[i], formats[i], n, names[i]) != 0) SWIG_fail;
      ptrs[i] = views[n_views++].buf;
    }
    tmp.inputs = (const int32_t *)ptrs[0];
    tmp.targets = (const int32_t *)ptrs[1];
    tmp.loss_mask = (const uint8_t *)ptrs[2];
    tmp.loss_weights = (const float *)ptrs[3];
    $1 = &tmp;
  }
}
%typemap(freearg) const kiln_batch *batch {
  for (int i = 0; i < n_views$argnum; ++i) PyBuffer_Release(&views$argnum[i]);
}

/* ---- kiln_trainer_forward's inputs: (inputs, batch_size, seq_len) ---- */
%typemap(in) (const int32_t *inputs, int32_t batch_size, int32_t seq_len) (Py_buffer view, int have_view = 0) {
  PyObject *inputs = NULL;
  int batch_size = 0, seq_len = 0;
  if (!PyTuple_Check($input) || !PyArg_ParseTuple($input, "Oii:$symname inputs", &inputs, &batch_size, &seq_len)) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "$symname: expected an (inputs, batch_size, seq_len) tuple");
    SWIG_fail;
  }
  $1 = NULL;
  if (inputs != Py_None) {
    size_t n = batch_size > 0 && seq_len > 0 ? (size_t)batch_size * (size_t)seq_len : 0;
    if (kiln_py_get_exact_buffer(inputs, &view, sizeof(int32_t), "iI", n, "$symname: inputs") != 0) SWIG_fail;
    have_view = 1;
    $1 = ($1_ltype)view.buf;
  }
  $2 = (int32_t)batch_size;
  $3 = (int32_t)seq_len;
}
%typemap(freearg) (const int32_t *inputs, int32_t batch_size, int32_t seq_len) {
  if (have_view$argnum) PyBuffer_Release(&view$argnum);
}
KILN_PY_OUT_BUFFER(float, out, "f")

/* ---- data state: bytes-like in, a writable bytes-like buffer (or None) out ---- */
%typemap(in) (const void *data, size_t size) (Py_buffer view, int have_view = 0) {
  if ($input == Py_None) {
    $1 = NULL;
    $2 = 0;
  } else {
    if (PyObject_GetBuffer($input, &view, PyBUF_C_CONTIGUOUS) != 0) SWIG_fail;
    have_view = 1;
    $1 = view.buf;
    $2 = (size_t)view.len;
  }
}
%typemap(freearg) (const void *data, size_t size) {
  if (have_view$argnum) PyBuffer_Release(&view$argnum);
}
%typemap(in) (void *data, size_t capacity) (Py_buffer view, int have_view = 0) {
  if ($input == Py_None) {
    $1 = NULL;
    $2 = 0;
  } else {
    if (PyObject_GetBuffer($input, &view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) != 0) SWIG_fail;
    have_view = 1;
    $1 = view.buf;
    $2 = (size_t)view.len;
  }
}
%typemap(freearg) (void *data, size_t capacity) {
  if (have_view$argnum) PyBuffer_Release(&view$argnum);
}

/* ---- scalar and handle out-parameters ---- */
%typemap(in, numinputs = 0) size_t *n_out (size_t tmp = 0), size_t *size (size_t tmp = 0) {
  $1 = &tmp;
}
%typemap(argout) size_t *n_out, size_t *size {
  $result = SWIG_Python_AppendOutput($result, PyLong_FromSize_t(*$1));
}
KILN_PY_OUT_HANDLE(kiln_trainer, out_trainer)

/* ---- the trainer's step progress callback: a callable(fraction, stage) or None ---- */
%typemap(in) (kiln_progress_fn fn, void *user_data) {
  if ($input == Py_None) {
    $1 = NULL;
    $2 = NULL;
  } else if (PyCallable_Check($input)) {
    $1 = kiln_py_progress_trampoline;
    $2 = $input;
  } else {
    PyErr_SetString(PyExc_TypeError, "$symname: expected a callable(fraction, stage) or None");
    SWIG_fail;
  }
}

/* Callable fields and arrays of the training structs. Callables are borrowed: the caller (the
 * kiln.Trainer object) keeps them alive while kiln may call them. */
%nothread kiln_py_trainer_options_set_mtp_loss_weights;
%nothread kiln_py_train_result_mtp_losses;
%inline %{
void kiln_py_trainer_options_set_progress_callback(kiln_trainer_options *options, PyObject *callback) {
  options->progress_fn = callback == Py_None ? NULL : kiln_py_progress_trampoline;
  options->progress_user_data = callback == Py_None ? NULL : callback;
}
/* Sets mtp_loss_weights[0..len(weights)) (at most KILN_MAX_MTP_HEADS numbers); returns None. */
PyObject *kiln_py_trainer_options_set_mtp_loss_weights(kiln_trainer_options *options, PyObject *weights) {
  PyObject *seq = PySequence_Fast(weights, "mtp_loss_weights: expected a sequence of numbers");
  if (!seq) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  if (n > KILN_MAX_MTP_HEADS) {
    Py_DECREF(seq);
    return PyErr_Format(PyExc_ValueError, "mtp_loss_weights: %zd weights given, at most %d", n, KILN_MAX_MTP_HEADS);
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    double w = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
    if (w == -1.0 && PyErr_Occurred()) {
      Py_DECREF(seq);
      return NULL;
    }
    options->mtp_loss_weights[i] = (float)w;
  }
  Py_DECREF(seq);
  Py_RETURN_NONE;
}
/* The KILN_MAX_MTP_HEADS entries of result.mtp_losses as a tuple. */
PyObject *kiln_py_train_result_mtp_losses(const kiln_train_result *result) {
  PyObject *t = PyTuple_New(KILN_MAX_MTP_HEADS);
  for (int k = 0; t && k < KILN_MAX_MTP_HEADS; ++k) PyTuple_SET_ITEM(t, k, PyFloat_FromDouble(result->mtp_losses[k]));
  return t;
}
%}

/* Parameter groups: an owned array built from a sequence of (role, learning_rate, weight_decay)
 * (negative numbers: not set); it must outlive the kiln_trainer_create call (kiln copies it there). */
%inline %{
typedef struct kiln_py_param_groups {
  kiln_param_group *items;
  size_t n;
} kiln_py_param_groups;
void kiln_py_trainer_options_set_param_groups(kiln_trainer_options *options, const kiln_py_param_groups *groups) {
  options->param_groups = groups ? groups->items : NULL;
  options->n_param_groups = groups ? groups->n : 0;
}
%}
%nothread kiln_py_param_groups::kiln_py_param_groups;
%exception kiln_py_param_groups::kiln_py_param_groups {
  $action
  if (!result) SWIG_fail;
}
%extend kiln_py_param_groups {
  kiln_py_param_groups(PyObject *sequence) {
    PyObject *seq = PySequence_Fast(sequence, "param_groups: expected a sequence of (role, learning_rate, weight_decay)");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    kiln_py_param_groups *g = (kiln_py_param_groups *)calloc(1, sizeof *g);
    g->items = (kiln_param_group *)calloc((size_t)n + 1, sizeof(kiln_param_group));
    for (Py_ssize_t i = 0; i < n; ++i) {
      int role = 0;
      double learning_rate = 0, weight_decay = 0;
      if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "idd:param group", &role, &learning_rate, &weight_decay)) {
        free(g->items);
        free(g);
        Py_DECREF(seq);
        return NULL;
      }
      /* An out-of-range role reaches kiln, which rejects it naming param_groups[i].role. */
      g->items[i].role = (kiln_param_role)role;
      g->items[i].learning_rate = (float)learning_rate;
      g->items[i].weight_decay = (float)weight_decay;
      g->n = (size_t)i + 1;
    }
    Py_DECREF(seq);
    return g;
  }
  ~kiln_py_param_groups() {
    free($self->items);
    free($self);
  }
}

#endif /* SWIGPYTHON */

KILN_STRUCT(kiln_trainer_options)
KILN_STRUCT(kiln_trainer_info)
KILN_STRUCT(kiln_train_result)

/* kiln_model_create_options owns a copy of tokenizer_path (a Python str's buffer would not outlive
 * the assignment); set it after kiln_model_create_options_default, which writes NULL over it. */
KILN_OPTIONS_SIZE(kiln_model_create_options)
%typemap(memberin) const char *tokenizer_path {
  free((char *)$1);
  $1 = NULL;
  if ($input) {
    size_t size = strlen($input) + 1;
    $1 = (const char *)memcpy(malloc(size), $input, size);
  }
}
%extend kiln_model_create_options {
  kiln_model_create_options() {
    kiln_model_create_options *p = (kiln_model_create_options *)calloc(1, sizeof(kiln_model_create_options));
    p->struct_size = sizeof(kiln_model_create_options);
    return p;
  }
  ~kiln_model_create_options() {
    free((char *)$self->tokenizer_path);
    free($self);
  }
}

/* Borrowed strings are read-only; array members are set through the helpers above. */
%immutable kiln_trainer_info::architecture;
%immutable kiln_trainer_options::mtp_loss_weights;
%immutable kiln_train_result::mtp_losses;
