// The Kiln namespace: Runtime, Model and Session over kiln.h. Every class is IDisposable (its
// SafeHandle also frees it on finalization); failures throw KilnException with kiln's message.
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Threading;

namespace Kiln
{
    public enum Backend { Auto = 0, Cpu = 1, Cuda = 2 }
    public enum LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3, None = 4 }
    public enum StopReason { None = 0, Eos = 1, MaxTokens = 2, String = 3, Callback = 4, ContextFull = 5 }
    public enum LogitsMode { None = 0, Last = 1, All = 2 }
    public enum QuantizeType { F16 = 1, Q8_0 = 2, Q4_K_M = 3 }

    public static class Library
    {
        /// <summary>kiln's version string.</summary>
        public static string Version { get { return Utf8.Read(Native.kiln_version_string()); } }

        /// <summary>Throws when libkiln is missing or its ABI is not the one these bindings mirror.</summary>
        public static void CheckAbi()
        {
            uint found;
            try { found = Native.kiln_abi_version(); }
            catch (DllNotFoundException e)
            {
                throw new DllNotFoundException("libkiln.so not found: add its directory to LD_LIBRARY_PATH "
                    + "(e.g. $KILN_PREFIX/lib, or `pkg-config --variable=libdir kiln`)", e);
            }
            if (found != Native.AbiVersion)
                throw new KilnException(Status.VersionMismatch, string.Format(
                    "libkiln has ABI version {0} but these bindings need {1}", found, Native.AbiVersion));
        }

        private static readonly object LogLock = new object();
        // kiln keeps the sink's function pointer: this reference keeps its delegate from being collected.
#pragma warning disable 414
        private static Native.LogFn processLog;
#pragma warning restore 414

        /// <summary>Sets the process-wide log sink (null restores stderr).</summary>
        public static void SetLogCallback(Action<LogLevel, string> sink, LogLevel minLevel)
        {
            lock (LogLock)
            {
                Native.LogFn fn = sink == null ? null : Session.LogTrampoline(sink);
                KilnException.Check(Native.kiln_set_log_callback(fn, IntPtr.Zero, (int)minLevel));
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
                       LogLevel logLevel = LogLevel.Warn)
        {
            Library.CheckAbi();
            var o = new Native.RuntimeOptions();
            KilnException.Check(Native.kiln_runtime_options_default(ref o, Native.SizeOf<Native.RuntimeOptions>()));
            o.backend = (int)backend;
            o.n_threads = nThreads;
            o.log_level = (int)logLevel;
            Native.LogFn fn = log == null ? null : Session.LogTrampoline(log);
            if (fn != null) o.log_fn = Marshal.GetFunctionPointerForDelegate(fn);
            IntPtr raw;
            KilnException.Check(Native.kiln_runtime_create(ref o, out raw));
            Handle = new RuntimeHandle(raw) { Log = fn };
        }

        public RuntimeInfo Info
        {
            get
            {
                var i = new Native.RuntimeInfo { struct_size = Native.SizeOf<Native.RuntimeInfo>() };
                KilnException.Check(Native.kiln_runtime_get_info(Handle, ref i));
                return new RuntimeInfo { Backend = (Backend)i.backend, NThreads = i.n_threads, DeviceName = Utf8.Read(i.device_name) };
            }
        }

        /// <summary>Loads a Hugging Face model directory; progress(fraction, stage) returning true cancels.</summary>
        public Model LoadModel(string path, Func<float, string, bool> progress = null)
        {
            return new Model(this, path, progress);
        }

        /// <summary>Converts a Hugging Face model directory or a GGUF file to the GGUF file dst (written
        /// atomically); nThreads &lt;= 0 uses the runtime's threads; progress(fraction, stage) returning true cancels.</summary>
        public void Quantize(string src, string dst, QuantizeType type = QuantizeType.Q4_K_M, int nThreads = 0,
                             Func<float, string, bool> progress = null)
        {
            var o = new Native.QuantizeOptions();
            KilnException.Check(Native.kiln_quantize_options_default(ref o, Native.SizeOf<Native.QuantizeOptions>()));
            o.type = (int)type;
            o.n_threads = nThreads;
            ExceptionDispatchInfo error = null;
            Native.ProgressFn fn = null;
            if (progress != null)
            {
                fn = (fraction, stage, _) =>
                {
                    if (error != null) return 1;
                    try { return progress(fraction, Utf8.Read(stage)) ? 1 : 0; }
                    catch (Exception e) { error = ExceptionDispatchInfo.Capture(e); return 1; }
                };
                o.progress_fn = Marshal.GetFunctionPointerForDelegate(fn);
            }
            int status = Native.kiln_model_quantize(Handle, Utf8.CString(src), Utf8.CString(dst), ref o);
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

        internal Model(Runtime runtime, string path, Func<float, string, bool> progress)
        {
            var o = new Native.ModelLoadOptions();
            KilnException.Check(Native.kiln_model_load_options_default(ref o, Native.SizeOf<Native.ModelLoadOptions>()));
            ExceptionDispatchInfo error = null;
            Native.ProgressFn fn = null;
            if (progress != null)
            {
                fn = (fraction, stage, _) =>
                {
                    if (error != null) return 1;
                    try { return progress(fraction, Utf8.Read(stage)) ? 1 : 0; }
                    catch (Exception e) { error = ExceptionDispatchInfo.Capture(e); return 1; }
                };
                o.progress_fn = Marshal.GetFunctionPointerForDelegate(fn);
            }
            IntPtr raw;
            int status = Native.kiln_model_load(runtime.Handle, Utf8.CString(path), ref o, out raw);
            GC.KeepAlive(fn);
            if (error != null) error.Throw();
            KilnException.Check(status);
            Handle.Adopt(raw, runtime.Handle);
        }

        public ModelInfo Info
        {
            get
            {
                var i = new Native.ModelInfo { struct_size = Native.SizeOf<Native.ModelInfo>() };
                KilnException.Check(Native.kiln_model_get_info(Handle, ref i));
                return new ModelInfo
                {
                    Architecture = Utf8.Read(i.architecture), VocabSize = i.vocab_size, HiddenSize = i.hidden_size,
                    NLayers = i.n_layers, NHeads = i.n_heads, NKVHeads = i.n_kv_heads, HeadDim = i.head_dim,
                    IntermediateSize = i.intermediate_size, ContextLength = i.context_length,
                    NParameters = i.n_parameters, BosTokenId = i.bos_token_id, EosTokenId = i.eos_token_id,
                    AddBos = i.add_bos != 0,
                };
            }
        }

        public int[] EosIds
        {
            get { return Buffers.Fill<int>((int[] b, UIntPtr c, out UIntPtr n) => Native.kiln_model_eos_ids(Handle, b, c, out n)); }
        }

        /// <summary>Text to ids; addSpecial adds BOS/EOS as the tokenizer config says.</summary>
        public int[] Tokenize(string text, bool addSpecial = true, bool parseSpecial = false)
        {
            var bytes = Utf8.Bytes(text);
            uint flags = (addSpecial ? 1u : 0u) | (parseSpecial ? 2u : 0u);
            return Buffers.Fill<int>((int[] b, UIntPtr c, out UIntPtr n) =>
                Native.kiln_tokenize(Handle, bytes, (UIntPtr)bytes.Length, flags, b, c, out n));
        }

        public byte[] DetokenizeBytes(int[] ids, bool skipSpecial = false)
        {
            uint flags = skipSpecial ? 1u : 0u;
            return Buffers.Fill<byte>((byte[] b, UIntPtr c, out UIntPtr n) =>
                Native.kiln_detokenize(Handle, ids, (UIntPtr)ids.Length, flags, b, c, out n));
        }

        public string Detokenize(int[] ids, bool skipSpecial = false)
        {
            return System.Text.Encoding.UTF8.GetString(DetokenizeBytes(ids, skipSpecial));
        }

        /// <summary>The raw bytes of one token (may be part of a UTF-8 character).</summary>
        public byte[] TokenToPiece(int id)
        {
            return Buffers.Fill<byte>((byte[] b, UIntPtr c, out UIntPtr n) => Native.kiln_token_to_piece(Handle, id, b, c, out n));
        }

        public Session CreateSession(int contextLength = 0, ulong? seed = null)
        {
            return new Session(this, contextLength, seed);
        }

        /// <summary>Frees the model; its sessions stay usable (they keep the weights).</summary>
        public void Dispose() { Handle.Dispose(); }
    }
}
