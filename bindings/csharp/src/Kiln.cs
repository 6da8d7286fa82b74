// The Kiln namespace: Runtime, Model and Session over kiln.h. Every class is IDisposable (its
// SafeHandle also frees it on finalization); failures throw KilnException with kiln's message.
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Threading;
using Kiln.Raw;

namespace Kiln
{
    // The values are kiln.h's, through the SWIG-generated enums of the raw layer.
    public enum Backend
    {
        Auto = kiln_backend.KILN_BACKEND_AUTO, Cpu = kiln_backend.KILN_BACKEND_CPU, Cuda = kiln_backend.KILN_BACKEND_CUDA,
    }
    /// <summary>The number format a model computes in (kiln.h, kiln_precision): Default is BF16 on CUDA and
    /// float32 on the CPU; Bf16 is CUDA only; F32 is the CUDA checking mode (float32 throughout).</summary>
    public enum Precision
    {
        Default = kiln_precision.KILN_PRECISION_DEFAULT, Bf16 = kiln_precision.KILN_PRECISION_BF16,
        F32 = kiln_precision.KILN_PRECISION_F32,
    }
    public enum LogLevel
    {
        Debug = kiln_log_level.KILN_LOG_DEBUG, Info = kiln_log_level.KILN_LOG_INFO, Warn = kiln_log_level.KILN_LOG_WARN,
        Error = kiln_log_level.KILN_LOG_ERROR, None = kiln_log_level.KILN_LOG_NONE,
    }
    public enum StopReason
    {
        None = kiln_stop_reason.KILN_STOP_NONE, Eos = kiln_stop_reason.KILN_STOP_EOS,
        MaxTokens = kiln_stop_reason.KILN_STOP_MAX_TOKENS, String = kiln_stop_reason.KILN_STOP_STRING,
        Callback = kiln_stop_reason.KILN_STOP_CALLBACK, ContextFull = kiln_stop_reason.KILN_STOP_CONTEXT_FULL,
    }
    public enum LogitsMode
    {
        None = kiln_logits_mode.KILN_LOGITS_NONE, Last = kiln_logits_mode.KILN_LOGITS_LAST, All = kiln_logits_mode.KILN_LOGITS_ALL,
    }
    public enum QuantizeType
    {
        F16 = kiln_quantize_type.KILN_QUANTIZE_F16, Q8_0 = kiln_quantize_type.KILN_QUANTIZE_Q8_0,
        Q4_K_M = kiln_quantize_type.KILN_QUANTIZE_Q4_K_M,
    }

    public static class Library
    {
        /// <summary>kiln's version string.</summary>
        public static string Version { get { return kiln_c.kiln_version_string(); } }

        /// <summary>Throws when libkiln is missing or its ABI is not the one these bindings mirror.</summary>
        public static void CheckAbi()
        {
            uint found;
            int built;
            try
            {
                found = kiln_c.kiln_abi_version();
                built = kiln_c.KILN_ABI_VERSION; // kiln.h's, as libkiln_csharp.so was compiled with it
            }
            catch (Exception e) when (e is DllNotFoundException || e is TypeInitializationException)
            {
                throw new DllNotFoundException("libkiln_csharp.so or libkiln.so not found: add their directory "
                    + "to LD_LIBRARY_PATH (e.g. $KILN_PREFIX/lib, or `pkg-config --variable=libdir kiln`)", e);
            }
            if (found != (uint)built)
                throw new KilnException(Status.VersionMismatch, string.Format(
                    "libkiln has ABI version {0} but these bindings need {1}", found, built));
        }

        private static readonly object LogLock = new object();
        // kiln keeps the sink's function pointer: this reference keeps its delegate from being collected.
#pragma warning disable 414
        private static kiln_c.LogFn processLog;
#pragma warning restore 414

        /// <summary>Sets the process-wide log sink (null restores stderr).</summary>
        public static void SetLogCallback(Action<LogLevel, string> sink, LogLevel minLevel)
        {
            lock (LogLock)
            {
                kiln_c.LogFn fn = sink == null ? null : Session.LogTrampoline(sink);
                KilnException.Check(kiln_c.kiln_set_log_callback(fn, IntPtr.Zero, (kiln_log_level)minLevel));
                processLog = fn;
            }
        }
    }

    public sealed class RuntimeInfo
    {
        public Backend Backend; public int NThreads; public string DeviceName;
    }

    public sealed class Runtime : IDisposable
    {
        internal readonly RuntimeHandle Handle;

        public Runtime(Backend backend = Backend.Auto, int nThreads = 0, Action<LogLevel, string> log = null,
                       LogLevel logLevel = LogLevel.Warn, int tensorParallel = 0)
        {
            Library.CheckAbi();
            kiln_c.LogFn fn = log == null ? null : Session.LogTrampoline(log);
            IntPtr raw;
            using (var o = new kiln_runtime_options())
            {
                KilnException.Check(kiln_c.kiln_runtime_options_default(o));
                o.backend = (kiln_backend)backend;
                o.n_threads = nThreads;
                o.log_level = (kiln_log_level)logLevel;
                o.log_fn = fn;
                o.tensor_parallel = tensorParallel;
                KilnException.Check(kiln_c.kiln_runtime_create(o, out raw));
            }
            Handle = new RuntimeHandle(raw) { Log = fn };
        }

        public RuntimeInfo Info
        {
            get
            {
                using (var i = new kiln_runtime_info())
                {
                    KilnException.Check(kiln_c.kiln_runtime_get_info(Handle, i));
                    return new RuntimeInfo { Backend = (Backend)i.backend, NThreads = i.n_threads, DeviceName = i.device_name };
                }
            }
        }

        /// <summary>A new data-parallel group id (kiln_nccl_id_create): opaque bytes to hand to every
        /// rank's <see cref="Trainer.JoinDataParallel"/>. Needs a CUDA runtime and NCCL.</summary>
        public byte[] NcclId()
        {
            using (var id = new kiln_nccl_id())
            {
                KilnException.Check(kiln_c.kiln_nccl_id_create(Handle, id));
                var bytes = new byte[kiln_c.KILN_NCCL_ID_BYTES];
                for (int k = 0; k < bytes.Length; ++k) bytes[k] = (byte)kiln_c.kiln_bind_nccl_id_byte(id, k);
                return bytes;
            }
        }

        /// <summary>Loads a Hugging Face model directory; progress(fraction, stage) returning true cancels;
        /// precision: see <see cref="Precision"/>.</summary>
        public Model LoadModel(string path, Func<float, string, bool> progress = null,
                               Precision precision = Precision.Default)
        {
            return new Model(this, path, progress, precision);
        }

        /// <summary>Converts a Hugging Face model directory or a GGUF file to the GGUF file dst (written
        /// atomically); nThreads &lt;= 0 uses the runtime's threads; progress(fraction, stage) returning true cancels.</summary>
        public void Quantize(string src, string dst, QuantizeType type = QuantizeType.Q4_K_M, int nThreads = 0,
                             Func<float, string, bool> progress = null)
        {
            using (var o = new kiln_quantize_options())
            {
                KilnException.Check(kiln_c.kiln_quantize_options_default(o));
                o.type = (kiln_quantize_type)type;
                o.n_threads = nThreads;
                Quantize(src, dst, o, progress);
            }
        }

        private void Quantize(string src, string dst, kiln_quantize_options o, Func<float, string, bool> progress)
        {
            ExceptionDispatchInfo error = null;
            kiln_c.ProgressFn fn = null;
            if (progress != null)
            {
                fn = (fraction, stage, _) =>
                {
                    if (error != null) return 1;
                    try { return progress(fraction, Utf8.Read(stage)) ? 1 : 0; }
                    catch (Exception e) { error = ExceptionDispatchInfo.Capture(e); return 1; }
                };
                o.progress_fn = fn;
            }
            var status = kiln_c.kiln_model_quantize(Handle, Utf8.CString(src), Utf8.CString(dst), o);
            GC.KeepAlive(fn);
            if (error != null) error.Throw();
            KilnException.Check(status);
        }

        /// <summary>Releases this reference; kiln frees the runtime once its models and sessions are gone.</summary>
        public void Dispose() { Handle.Dispose(); }
    }

    public sealed class ModelInfo
    {
        public string Architecture; public int VocabSize, HiddenSize, NLayers, NHeads, NKVHeads, HeadDim;
        public int IntermediateSize, ContextLength; public long NParameters; public int BosTokenId, EosTokenId;
        public bool AddBos;
    }

    public sealed partial class Model : IDisposable
    {
        internal readonly ModelHandle Handle = new ModelHandle();

        internal Model(Runtime runtime, string path, Func<float, string, bool> progress, Precision precision)
        {
            using (var o = new kiln_model_load_options())
            {
                KilnException.Check(kiln_c.kiln_model_load_options_default(o));
                o.precision = (kiln_precision)precision;
                Load(runtime, path, o, progress);
            }
        }

        private void Load(Runtime runtime, string path, kiln_model_load_options o, Func<float, string, bool> progress)
        {
            ExceptionDispatchInfo error = null;
            kiln_c.ProgressFn fn = null;
            if (progress != null)
            {
                fn = (fraction, stage, _) =>
                {
                    if (error != null) return 1;
                    try { return progress(fraction, Utf8.Read(stage)) ? 1 : 0; }
                    catch (Exception e) { error = ExceptionDispatchInfo.Capture(e); return 1; }
                };
                o.progress_fn = fn;
            }
            IntPtr raw;
            var status = kiln_c.kiln_model_load(runtime.Handle, Utf8.CString(path), o, out raw);
            GC.KeepAlive(fn);
            if (error != null) error.Throw();
            KilnException.Check(status);
            Handle.Adopt(raw, runtime.Handle);
        }

        public ModelInfo Info
        {
            get
            {
                using (var i = new kiln_model_info())
                {
                KilnException.Check(kiln_c.kiln_model_get_info(Handle, i));
                return new ModelInfo
                {
                    Architecture = i.architecture, VocabSize = i.vocab_size, HiddenSize = i.hidden_size,
                    NLayers = i.n_layers, NHeads = i.n_heads, NKVHeads = i.n_kv_heads, HeadDim = i.head_dim,
                    IntermediateSize = i.intermediate_size, ContextLength = i.context_length,
                    NParameters = i.n_parameters, BosTokenId = i.bos_token_id, EosTokenId = i.eos_token_id,
                    AddBos = i.add_bos != 0,
                };
                }
            }
        }

        public int[] EosIds
        {
            get { return Buffers.Fill<int>((int[] b, ulong c, out ulong n) => kiln_c.kiln_model_eos_ids(Handle, b, c, out n)); }
        }

        /// <summary>Text to ids; addSpecial adds BOS/EOS as the tokenizer config says.</summary>
        public int[] Tokenize(string text, bool addSpecial = true, bool parseSpecial = false)
        {
            var bytes = Utf8.Bytes(text);
            uint flags = Flags.Tokenize(addSpecial, parseSpecial);
            return Buffers.Fill<int>((int[] b, ulong c, out ulong n) =>
                kiln_c.kiln_tokenize(Handle, bytes, (ulong)bytes.Length, flags, b, c, out n));
        }

        public byte[] DetokenizeBytes(int[] ids, bool skipSpecial = false)
        {
            uint flags = Flags.Detokenize(skipSpecial);
            return Buffers.Fill<byte>((byte[] b, ulong c, out ulong n) =>
                kiln_c.kiln_detokenize(Handle, ids, (ulong)ids.Length, flags, b, c, out n));
        }

        public string Detokenize(int[] ids, bool skipSpecial = false)
        {
            return System.Text.Encoding.UTF8.GetString(DetokenizeBytes(ids, skipSpecial));
        }

        /// <summary>The raw bytes of one token (may be part of a UTF-8 character).</summary>
        public byte[] TokenToPiece(int id)
        {
            return Buffers.Fill<byte>((byte[] b, ulong c, out ulong n) => kiln_c.kiln_token_to_piece(Handle, id, b, c, out n));
        }

        public Session CreateSession(int contextLength = 0, ulong? seed = null)
        {
            return new Session(this, contextLength, seed);
        }

        /// <summary>Frees the model; its sessions stay usable (they keep the weights).</summary>
        public void Dispose() { Handle.Dispose(); }
    }
}
