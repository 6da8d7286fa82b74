// Kiln.Tokenizer: a tokenizer.json on its own (no weights), or a model's own tokenizer.
using System;
using System.Collections.Generic;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Kiln.Raw;

namespace Kiln
{
    /// <summary>A kiln_tokenizer. An owned one (kiln_tokenizer_load) is freed on release; a model's
    /// borrowed one frees nothing but holds a reference on the model's handle, so the model is freed
    /// only after every tokenizer borrowed from it is released.</summary>
    internal sealed class TokenizerHandle : SafeHandle
    {
        private SafeHandle model; // null when owned

        internal TokenizerHandle(IntPtr raw, SafeHandle modelHandle) : base(IntPtr.Zero, true)
        {
            if (modelHandle != null)
            {
                bool added = false;
                modelHandle.DangerousAddRef(ref added);
                model = modelHandle;
            }
            SetHandle(raw);
        }

        internal bool Owned { get { return model == null; } }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }

        protected override bool ReleaseHandle()
        {
            if (model == null) kiln_c.kiln_tokenizer_free(new kiln_c.Unowned(handle));
            else model.DangerousRelease();
            return true;
        }
    }

    /// <summary>Text to ids and back. Immutable once loaded, so one Tokenizer may be used from many
    /// threads. <see cref="Load"/> owns its handle (Dispose frees it); <see cref="Model.Tokenizer"/>
    /// borrows the model's and keeps the model alive until it is disposed too.</summary>
    public sealed class Tokenizer : IDisposable
    {
        internal readonly TokenizerHandle Handle;

        private Tokenizer(TokenizerHandle handle) { Handle = handle; }

        /// <summary>Loads a directory holding tokenizer.json (tokenizer_config.json is read too when
        /// present), or a tokenizer.json file itself.</summary>
        public static Tokenizer Load(string path)
        {
            IntPtr raw;
            KilnException.Check(kiln_c.kiln_tokenizer_load(Utf8.CString(path), out raw));
            return new Tokenizer(new TokenizerHandle(raw, null));
        }

        /// <summary>Trains a byte-level BPE tokenizer on UTF-8 text files (kiln_tokenizer_train).
        /// vocabSize counts the 256 byte tokens, the merges and the special tokens (which get the
        /// last ids); pattern null means Llama 3's pre-tokenizer regex; progress(fraction, stage)
        /// returning true cancels. Save the result with <see cref="Save"/>.</summary>
        public static Tokenizer Train(string[] files, int vocabSize = 32768, string[] specialTokens = null,
                                      string pattern = null, int threads = 0, int minFrequency = 2,
                                      Func<float, string, bool> progress = null)
        {
            var unmanaged = new List<IntPtr>();
            ExceptionDispatchInfo error = null;
            kiln_c.ProgressFn fn = null;
            using (var o = new kiln_tokenizer_train_options())
            try
            {
                KilnException.Check(kiln_c.kiln_tokenizer_train_options_default(o));
                o.vocab_size = vocabSize;
                o.n_threads = threads;
                o.min_frequency = minFrequency;
                if (pattern != null) o.pattern = pattern; // the options own a copy (kiln.i)
                specialTokens = specialTokens ?? new string[0];
                o.special_tokens = StringArray(specialTokens, unmanaged);
                o.n_special_tokens = (ulong)specialTokens.Length;
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
                var status = kiln_c.kiln_tokenizer_train(StringArray(files, unmanaged), (ulong)files.Length, o, out raw);
                GC.KeepAlive(fn);
                if (error != null) error.Throw();
                KilnException.Check(status);
                return new Tokenizer(new TokenizerHandle(raw, null));
            }
            finally
            {
                foreach (var p in unmanaged) Marshal.FreeHGlobal(p);
            }
        }

        private static IntPtr Unmanaged(byte[] bytes, List<IntPtr> owned)
        {
            IntPtr p = Marshal.AllocHGlobal(Math.Max(bytes.Length, 1));
            owned.Add(p);
            Marshal.Copy(bytes, 0, p, bytes.Length);
            return p;
        }

        private static IntPtr StringArray(string[] values, List<IntPtr> owned)
        {
            if (values.Length == 0) return IntPtr.Zero;
            IntPtr array = Marshal.AllocHGlobal(IntPtr.Size * values.Length);
            owned.Add(array);
            for (int i = 0; i < values.Length; i++)
                Marshal.WriteIntPtr(array, i * IntPtr.Size, Unmanaged(Utf8.CString(values[i]), owned));
            return array;
        }

        /// <summary>Writes a trained tokenizer's tokenizer.json atomically: to path when it ends in
        /// .json, else into the directory path (created when missing). A loaded tokenizer throws
        /// KilnException (Unsupported).</summary>
        public void Save(string path)
        {
            KilnException.Check(kiln_c.kiln_tokenizer_save(Handle, Utf8.CString(path)));
        }

        internal static Tokenizer Borrow(ModelHandle model)
        {
            IntPtr raw;
            KilnException.Check(kiln_c.kiln_model_tokenizer(model, out raw));
            return new Tokenizer(new TokenizerHandle(raw, model));
        }

        /// <summary>True for Load's (freed by Dispose), false for a model's borrowed one.</summary>
        public bool Owned { get { return Handle.Owned; } }

        /// <summary>Number of ids (max id + 1, added tokens included).</summary>
        public int VocabSize
        {
            get
            {
                int size;
                KilnException.Check(kiln_c.kiln_tokenizer_vocab_size(Handle, out size));
                return size;
            }
        }

        /// <summary>Text to ids; addSpecial adds BOS/EOS as tokenizer_config.json says, parseSpecial
        /// lets special-token text become the special token (only for text you wrote).</summary>
        public int[] Encode(string text, bool addSpecial = false, bool parseSpecial = false)
        {
            var bytes = Utf8.Bytes(text);
            uint flags = Flags.Tokenize(addSpecial, parseSpecial);
            return Buffers.Fill<int>((int[] b, ulong c, out ulong n) =>
                kiln_c.kiln_tokenizer_encode(Handle, bytes, (ulong)bytes.Length, flags, b, c, out n));
        }

        /// <summary>One long text to ids on up to nThreads threads (0: one per core); the ids are
        /// exactly Encode's (kiln cuts the text only where the pieces cannot influence each other).</summary>
        public int[] EncodeThreaded(string text, bool addSpecial = false, bool parseSpecial = false, int nThreads = 0)
        {
            var bytes = Utf8.Bytes(text);
            uint flags = Flags.Tokenize(addSpecial, parseSpecial);
            return Buffers.Fill<int>((int[] b, ulong c, out ulong n) =>
                kiln_c.kiln_tokenizer_encode_threaded(Handle, bytes, (ulong)bytes.Length, flags, nThreads, b, c, out n));
        }

        /// <summary>Many texts to ids on up to nThreads threads (0: one per core), each exactly as
        /// Encode would (HF tokenizers' encode_batch).</summary>
        public int[][] EncodeBatch(IList<string> texts, bool addSpecial = false, bool parseSpecial = false, int nThreads = 0)
        {
            int count = texts.Count;
            var encoded = new byte[count][];
            int total = 0;
            for (int i = 0; i < count; ++i)
            {
                encoded[i] = Utf8.Bytes(texts[i]);
                total += encoded[i].Length;
            }
            // One pinned block holds every text; kiln reads texts[i] as a pointer into it.
            var block = new byte[total + 1];
            var lens = new ulong[count + 1];
            var offsets = new ulong[count + 1];
            var pointers = new IntPtr[count + 1];
            uint flags = Flags.Tokenize(addSpecial, parseSpecial);
            var pin = GCHandle.Alloc(block, GCHandleType.Pinned);
            try
            {
                IntPtr start = pin.AddrOfPinnedObject();
                int pos = 0;
                for (int i = 0; i < count; ++i)
                {
                    Buffer.BlockCopy(encoded[i], 0, block, pos, encoded[i].Length);
                    pointers[i] = start + pos;
                    lens[i] = (ulong)encoded[i].Length;
                    pos += encoded[i].Length;
                }
                // An id covers at least one byte: for byte-level BPE this is enough, so usually one call.
                var ids = new int[total + 4 * count + 16];
                ulong needed;
                var status = kiln_c.kiln_tokenizer_encode_batch(Handle, pointers, lens, (ulong)count, flags, nThreads,
                                                                ids, (ulong)ids.Length, offsets, out needed);
                if (status == kiln_status.KILN_ERR_BUFFER_TOO_SMALL)
                {
                    // kiln filled offsets and needed: one retry with room for them suffices.
                    ids = new int[(int)needed];
                    status = kiln_c.kiln_tokenizer_encode_batch(Handle, pointers, lens, (ulong)count, flags, nThreads,
                                                                ids, (ulong)ids.Length, offsets, out needed);
                }
                KilnException.Check(status);
                var result = new int[count][];
                for (int i = 0; i < count; ++i)
                {
                    int from = (int)offsets[i], to = (int)offsets[i + 1];
                    result[i] = new int[to - from];
                    Array.Copy(ids, from, result[i], 0, to - from);
                }
                return result;
            }
            finally
            {
                pin.Free();
            }
        }

        /// <summary>Ids to the bytes they stand for.</summary>
        public byte[] DecodeBytes(int[] ids, bool skipSpecial = false)
        {
            uint flags = Flags.Detokenize(skipSpecial);
            return Buffers.Fill<byte>((byte[] b, ulong c, out ulong n) =>
                kiln_c.kiln_tokenizer_decode(Handle, ids, (ulong)ids.Length, flags, b, c, out n));
        }

        /// <summary>Ids to text (invalid UTF-8 from partial tokens becomes U+FFFD).</summary>
        public string Decode(int[] ids, bool skipSpecial = false)
        {
            return System.Text.Encoding.UTF8.GetString(DecodeBytes(ids, skipSpecial));
        }

        public void Dispose() { Handle.Dispose(); }
    }

    public sealed partial class Model
    {
        /// <summary>The model's tokenizer, borrowed: it keeps the model's handle alive until it is
        /// disposed. Throws KilnException (Unsupported) for a model without one.</summary>
        public Tokenizer Tokenizer { get { return Tokenizer.Borrow(Handle); } }
    }
}
