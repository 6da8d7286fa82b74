/*
 * kiln_csharp.i — how kiln.h maps onto C# (included by kiln.i under SWIGCSHARP; the declarations
 * still come from kiln.h only). Generated with
 *   swig -csharp -namespace Kiln.Raw -dllimport kiln_csharp
 * into the internal classes of Kiln.dll's raw layer (Kiln.Raw.kiln_c, one static method per kiln.h
 * function, plus a proxy class per struct) and the C file of libkiln_csharp.so, which P/Invoke
 * loads and which links libkiln. The idiomatic namespace Kiln (bindings/csharp/src) sits on it.
 *   - handles are SafeHandles (the marshaler keeps a handle open for the duration of a call); the
 *     *_free functions are called from SafeHandle.ReleaseHandle with an unowned wrapper;
 *     handle out-parameters are `out IntPtr`;
 *   - size_t is ulong; scalar out-parameters are `out ulong` / `out int`;
 *   - strings are UTF-8 byte arrays (NUL-terminated where kiln.h reads up to the NUL), and arrays
 *     and caller buffers are C# arrays, pinned by the marshaler for the call; arrays kiln keeps
 *     longer than one call (output ids, string lists) and the training batch's arrays are IntPtrs
 *     the caller pins or allocates;
 *   - struct string fields are C# strings the proxies copy (kiln.i's memberin typemaps);
 *   - callbacks are delegates ([UnmanagedFunctionPointer(Cdecl)] types kiln_c.LogFn, ProgressFn,
 *     TokenFn) that the marshaler turns into C function pointers, callable from any thread (kiln's
 *     own included); the caller keeps each delegate alive while kiln may call it;
 *   - kiln_tokenizer_encode_batch's texts are an IntPtr[] into one block the caller pins, their
 *     lengths and the offsets ulong[];
 *   - chat messages are an IntPtr[] of 4 UTF-8 strings per message (role, content,
 *     tool_calls_json, extra_json; IntPtr.Zero = NULL) ended by 4 zeros.
 */

%pragma(csharp) moduleclassmodifiers = "internal class"
%pragma(csharp) imclassclassmodifiers = "internal class"
%typemap(csclassmodifiers) SWIGTYPE "internal class"
%typemap(csclassmodifiers) enum SWIGTYPE "internal enum"

%pragma(csharp) modulecode = %{
  /// <summary>kiln_log_fn.</summary>
  [global::System.Runtime.InteropServices.UnmanagedFunctionPointer(global::System.Runtime.InteropServices.CallingConvention.Cdecl)]
  internal delegate void LogFn(int level, global::System.IntPtr message, global::System.IntPtr userData);
  /// <summary>kiln_progress_fn: non-zero cancels.</summary>
  [global::System.Runtime.InteropServices.UnmanagedFunctionPointer(global::System.Runtime.InteropServices.CallingConvention.Cdecl)]
  internal delegate int ProgressFn(float fraction, global::System.IntPtr stage, global::System.IntPtr userData);
  /// <summary>kiln_token_fn: non-zero stops generation.</summary>
  [global::System.Runtime.InteropServices.UnmanagedFunctionPointer(global::System.Runtime.InteropServices.CallingConvention.Cdecl)]
  internal delegate int TokenFn(global::System.IntPtr text, global::System.UIntPtr textLen, int tokenId, global::System.IntPtr userData);

  /// <summary>A SafeHandle that does not own its pointer: how SafeHandle.ReleaseHandle passes the
  /// pointer it frees to a kiln_*_free function (which takes a SafeHandle like every other).</summary>
  internal sealed class Unowned : global::System.Runtime.InteropServices.SafeHandle
  {
    internal Unowned(global::System.IntPtr raw) : base(global::System.IntPtr.Zero, false) { SetHandle(raw); }
    public override bool IsInvalid { get { return handle == global::System.IntPtr.Zero; } }
    protected override bool ReleaseHandle() { return true; }
  }
%}

/* size_t is 64 bits here (kiln supports 64-bit platforms); SWIG's default would be uint. */
%apply unsigned long long { size_t };
%apply const unsigned long long & { const size_t & };

/* ---- handles: SafeHandle in, out IntPtr out ---- */
%define KILN_CS_HANDLE(TYPE)
%typemap(ctype) TYPE *, const TYPE * "void *"
%typemap(imtype) TYPE *, const TYPE * "global::System.Runtime.InteropServices.SafeHandle"
%typemap(cstype) TYPE *, const TYPE * "global::System.Runtime.InteropServices.SafeHandle"
%typemap(in) TYPE *, const TYPE * "$1 = ($1_ltype)$input;"
%typemap(csin) TYPE *, const TYPE * "$csinput"
%typemap(ctype) TYPE **, const TYPE ** "void **"
%typemap(imtype) TYPE **, const TYPE ** "out global::System.IntPtr"
%typemap(cstype) TYPE **, const TYPE ** "out global::System.IntPtr"
%typemap(in) TYPE **, const TYPE ** "$1 = ($1_ltype)$input;"
%typemap(csin) TYPE **, const TYPE ** "out $csinput"
%enddef
KILN_CS_HANDLE(kiln_runtime)
KILN_CS_HANDLE(kiln_model)
KILN_CS_HANDLE(kiln_session)
KILN_CS_HANDLE(kiln_tokenizer)
KILN_CS_HANDLE(kiln_trainer)

/* ---- scalar out-parameters ---- */
%typemap(ctype) size_t *n_ids, size_t *text_len, size_t *piece_len, size_t *n_logits, size_t *n_out,
    size_t *size "unsigned long long *"
%typemap(imtype) size_t *n_ids, size_t *text_len, size_t *piece_len, size_t *n_logits, size_t *n_out,
    size_t *size "out ulong"
%typemap(cstype) size_t *n_ids, size_t *text_len, size_t *piece_len, size_t *n_logits, size_t *n_out,
    size_t *size "out ulong"
%typemap(csin) size_t *n_ids, size_t *text_len, size_t *piece_len, size_t *n_logits, size_t *n_out,
    size_t *size "out $csinput"
%typemap(in) size_t *n_ids (size_t temp), size_t *text_len (size_t temp), size_t *piece_len (size_t temp),
    size_t *n_logits (size_t temp), size_t *n_out (size_t temp), size_t *size (size_t temp)
    "temp = 0; $1 = &temp;"
%typemap(argout) size_t *n_ids, size_t *text_len, size_t *piece_len, size_t *n_logits, size_t *n_out,
    size_t *size "*$input = (unsigned long long)temp$argnum;"
%typemap(ctype) int32_t *n_past, int32_t *context_length, int32_t *out_id, int32_t *out_size "int32_t *"
%typemap(imtype) int32_t *n_past, int32_t *context_length, int32_t *out_id, int32_t *out_size "out int"
%typemap(cstype) int32_t *n_past, int32_t *context_length, int32_t *out_id, int32_t *out_size "out int"
%typemap(csin) int32_t *n_past, int32_t *context_length, int32_t *out_id, int32_t *out_size "out $csinput"
%typemap(in) int32_t *n_past, int32_t *context_length, int32_t *out_id, int32_t *out_size "$1 = $input;"

/* ---- arrays, buffers and strings for one call: C# arrays (pinned by the marshaler) ---- */
%define KILN_CS_ARRAY(CSTYPE, DECLS...)
%typemap(ctype) DECLS "void *"
%typemap(imtype) DECLS "CSTYPE"
%typemap(cstype) DECLS "CSTYPE"
%typemap(in) DECLS "$1 = ($1_ltype)$input;"
%typemap(csin) DECLS "$csinput"
%enddef
KILN_CS_ARRAY(int[], const int32_t *ids, int32_t *ids, const int32_t *prompt_ids)
KILN_CS_ARRAY(float[], const float *logits, float *logits, float *out)
KILN_CS_ARRAY(byte[], uint8_t *mask, const void *data, void *data, char *text, char *piece)
/* kiln_tokenizer_encode_batch: texts are pointers into a block the caller pins, lengths and
 * offsets size_t arrays (offsets holds n_texts + 1 entries; the caller sizes it). */
KILN_CS_ARRAY(global::System.IntPtr[], const char *const *texts)
KILN_CS_ARRAY(ulong[], const size_t *text_lens, size_t *offsets)
/* UTF-8 text: (pointer, length) inputs, and NUL-terminated paths (the caller appends the NUL). */
KILN_CS_ARRAY(byte[], const char *text, const char *prompt, const char *config_json, const char *path,
              const char *src, const char *dst, const char *directory)

/* ---- pointers the caller manages (pins or allocates): IntPtr, also as struct fields ---- */
%define KILN_CS_INTPTR(DECLS...)
%typemap(ctype) DECLS "void *"
%typemap(imtype) DECLS "global::System.IntPtr"
%typemap(cstype) DECLS "global::System.IntPtr"
%typemap(in) DECLS "$1 = ($1_ltype)$input;"
%typemap(out) DECLS "$result = (void *)$1;"
%typemap(csin) DECLS "$csinput"
%typemap(csout, excode = SWIGEXCODE) DECLS {
    global::System.IntPtr ret = $imcall;$excode
    return ret;
  }
%typemap(csvarin, excode = SWIGEXCODE2) DECLS %{
    set {
      $imcall;$excode
    } %}
%typemap(csvarout, excode = SWIGEXCODE2) DECLS %{
    get {
      global::System.IntPtr ret = $imcall;$excode
      return ret;
    } %}
%enddef
KILN_CS_INTPTR(const int32_t *inputs, const int32_t *targets, const uint8_t *loss_mask,
               const float *loss_weights, const char *const *, int32_t *output_ids, void *)

/* ---- chat messages: IntPtr[], 4 strings per message, ended by a NULL role ---- */
%typemap(ctype) const kiln_chat_message *messages "void **"
%typemap(imtype) const kiln_chat_message *messages "global::System.IntPtr[]"
%typemap(cstype) const kiln_chat_message *messages "global::System.IntPtr[]"
%typemap(csin) const kiln_chat_message *messages "$csinput"
%typemap(in) const kiln_chat_message *messages {
  size_t n = 0;
  void **fields = $input;
  while (fields && fields[4 * n]) ++n;
  kiln_chat_message *m = (kiln_chat_message *)calloc(n + 1, sizeof *m);
  for (size_t i = 0; i < n; ++i) {
    m[i].role = (const char *)fields[4 * i];
    m[i].content = (const char *)fields[4 * i + 1];
    m[i].tool_calls_json = (const char *)fields[4 * i + 2];
    m[i].extra_json = (const char *)fields[4 * i + 3];
  }
  $1 = m;
}
%typemap(freearg) const kiln_chat_message *messages "free((void *)$1);"

/* ---- callbacks: delegates, as arguments and as struct fields ---- */
%define KILN_CS_CALLBACK(CTYPE, DELEGATE)
%typemap(ctype) CTYPE "void *"
%typemap(imtype, out = "global::System.IntPtr") CTYPE "DELEGATE"
%typemap(cstype) CTYPE "DELEGATE"
%typemap(in) CTYPE "$1 = ($1_ltype)$input;"
%typemap(out) CTYPE "$result = (void *)$1;"
%typemap(csin) CTYPE "$csinput"
%typemap(csout, excode = SWIGEXCODE) CTYPE {
    global::System.IntPtr p = $imcall;$excode
    return p == global::System.IntPtr.Zero ? null
        : (DELEGATE)global::System.Runtime.InteropServices.Marshal.GetDelegateForFunctionPointer(p, typeof(DELEGATE));
  }
%typemap(csvarin, excode = SWIGEXCODE2) CTYPE %{
    set {
      $imcall;$excode
    } %}
%typemap(csvarout, excode = SWIGEXCODE2) CTYPE %{
    get {
      global::System.IntPtr p = $imcall;$excode
      return p == global::System.IntPtr.Zero ? null
          : (DELEGATE)global::System.Runtime.InteropServices.Marshal.GetDelegateForFunctionPointer(p, typeof(DELEGATE));
    } %}
%enddef
KILN_CS_CALLBACK(kiln_log_fn, kiln_c.LogFn)
KILN_CS_CALLBACK(kiln_progress_fn, kiln_c.ProgressFn)
KILN_CS_CALLBACK(kiln_token_fn, kiln_c.TokenFn)
