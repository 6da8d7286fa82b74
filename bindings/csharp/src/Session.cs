using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Threading;
using Kiln.Raw;

namespace Kiln
{
    /// <summary>Sampling settings; new Sampling() is kiln's defaults.</summary>
    public sealed class Sampling
    {
        public float Temperature, TopP, MinP, RepetitionPenalty, PresencePenalty, FrequencyPenalty;
        public int TopK, PenaltyLastN;

        public Sampling()
        {
            using (var s = new kiln_sampling_options())
            {
                KilnException.Check(kiln_c.kiln_sampling_options_default(s));
                Temperature = s.temperature; TopK = s.top_k; TopP = s.top_p; MinP = s.min_p;
                RepetitionPenalty = s.repetition_penalty; PresencePenalty = s.presence_penalty;
                FrequencyPenalty = s.frequency_penalty; PenaltyLastN = s.penalty_last_n;
            }
        }

        public static Sampling Greedy() { return new Sampling { Temperature = 0 }; }

        /// <summary>A kiln_sampling_options holding these settings (the caller disposes it).</summary>
        internal kiln_sampling_options ToNative()
        {
            return new kiln_sampling_options
            {
                temperature = Temperature, top_k = TopK, top_p = TopP, min_p = MinP,
                repetition_penalty = RepetitionPenalty, presence_penalty = PresencePenalty,
                frequency_penalty = FrequencyPenalty, penalty_last_n = PenaltyLastN,
            };
        }
    }

    /// <summary>Generation settings; new GenerateOptions() is kiln's defaults.</summary>
    public sealed class GenerateOptions
    {
        public Sampling Sampling = new Sampling();
        public int MaxTokens;
        public bool AddSpecial, ParseSpecial, IgnoreEos;
        public string[] Stop = new string[0];

        public GenerateOptions()
        {
            using (var g = new kiln_generate_options())
            {
                KilnException.Check(kiln_c.kiln_generate_options_default(g));
                MaxTokens = g.max_tokens;
                AddSpecial = (g.tokenize_flags & Flags.Tokenize(true, false)) != 0;
                ParseSpecial = (g.tokenize_flags & Flags.Tokenize(false, true)) != 0;
                IgnoreEos = g.ignore_eos != 0;
            }
        }
    }

    public sealed class Generation
    {
        public string Text; public int[] Ids; public StopReason StopReason;
        public int NPromptTokens, NGenerated; public double PrefillSeconds, DecodeSeconds;
    }

    /// <summary>A KV cache, sampler and RNG over a model. One thread at a time; Cancel from any.</summary>
    public sealed class Session : IDisposable
    {
        internal readonly SessionHandle Handle = new SessionHandle();
        private readonly Model model;

        internal Session(Model model, int contextLength, ulong? seed)
        {
            this.model = model;
            IntPtr raw;
            using (var o = new kiln_session_options())
            {
                KilnException.Check(kiln_c.kiln_session_options_default(o));
                o.context_length = contextLength;
                if (seed.HasValue) o.seed = seed.Value;
                KilnException.Check(kiln_c.kiln_session_create(model.Handle, o, out raw));
            }
            Handle.Adopt(raw, model.Handle);
        }

        internal static kiln_c.LogFn LogTrampoline(Action<LogLevel, string> sink)
        {
            return (level, message, _) =>
            {
                try { sink((LogLevel)level, Utf8.Read(message)); }
                catch (Exception) { } // a log call cannot stop anything: a throwing sink loses one line
            };
        }

        /// <summary>The model this session runs.</summary>
        public Model Model { get { return model; } }

        public void Reset() { KilnException.Check(kiln_c.kiln_session_reset(Handle)); }

        /// <summary>Tokens in the KV cache, and its capacity.</summary>
        public int Position(out int contextLength)
        {
            int nPast;
            KilnException.Check(kiln_c.kiln_session_position(Handle, out nPast, out contextLength));
            return nPast;
        }

        public void Cancel() { KilnException.Check(kiln_c.kiln_session_cancel(Handle)); }

        /// <summary>Runs ids after the cached context; float32 logits (vocab, or ids × vocab for All).</summary>
        public float[] Forward(int[] ids, LogitsMode mode = LogitsMode.Last)
        {
            ulong needed;
            var status = kiln_c.kiln_forward(Handle, ids, (ulong)ids.Length, (kiln_logits_mode)mode, null, 0, out needed);
            if (status != kiln_status.KILN_ERR_BUFFER_TOO_SMALL)
            {
                KilnException.Check(status);
                return new float[0];
            }
            var logits = new float[(int)needed];
            KilnException.Check(kiln_c.kiln_forward(Handle, ids, (ulong)ids.Length, (kiln_logits_mode)mode, logits, needed, out needed));
            return logits;
        }

        public int Sample(float[] logits, Sampling sampling)
        {
            using (var s = sampling.ToNative())
            {
                int id;
                KilnException.Check(kiln_c.kiln_sample(Handle, logits, (ulong)logits.Length, s, out id));
                return id;
            }
        }

        /// <summary>Generates after a text prompt on this thread; onPiece(text, id) returning true stops.
        /// An exception onPiece throws stops generation and is rethrown here.</summary>
        public Generation Complete(string prompt, GenerateOptions options, Func<string, int, bool> onPiece = null)
        {
            return Run(Utf8.Bytes(prompt), null, options, onPiece);
        }

        public Generation Complete(int[] promptIds, GenerateOptions options, Func<string, int, bool> onPiece = null)
        {
            return Run(null, promptIds, options, onPiece);
        }

        /// <summary>Streams the generated pieces; leaving the loop early stops generation at the next token.</summary>
        public IEnumerable<string> Generate(string prompt, GenerateOptions options) { return Stream(Utf8.Bytes(prompt), null, options); }

        public IEnumerable<string> Generate(int[] promptIds, GenerateOptions options) { return Stream(null, promptIds, options); }

        /// <summary>The result of the last Complete or Generate.</summary>
        public Generation LastResult { get; private set; }

        private IEnumerable<string> Stream(byte[] text, int[] ids, GenerateOptions options)
        {
            var queue = new BlockingCollection<object>();
            int stop = 0;
            var worker = new Thread(() =>
            {
                try
                {
                    Run(text, ids, options, (piece, id) =>
                    {
                        if (piece.Length > 0) queue.Add(piece);
                        return Volatile.Read(ref stop) != 0;
                    });
                    queue.Add(true);
                }
                catch (Exception e) { queue.Add(ExceptionDispatchInfo.Capture(e)); }
            });
            worker.Start();
            try
            {
                while (true)
                {
                    object item = queue.Take();
                    var piece = item as string;
                    if (piece != null) { yield return piece; continue; }
                    var error = item as ExceptionDispatchInfo;
                    if (error != null) error.Throw();
                    yield break;
                }
            }
            finally
            {
                Volatile.Write(ref stop, 1);
                worker.Join();
            }
        }

        private Generation Run(byte[] text, int[] ids, GenerateOptions options, Func<string, int, bool> onPiece)
        {
            var pieces = new System.Text.StringBuilder();
            ExceptionDispatchInfo error = null;
            kiln_c.TokenFn fn = (p, len, id, _) =>
            {
                if (error != null) return 1;
                try
                {
                    string piece = Utf8.Read(p, (int)len);
                    pieces.Append(piece);
                    return onPiece != null && onPiece(piece, id) ? 1 : 0;
                }
                catch (Exception e) { error = ExceptionDispatchInfo.Capture(e); return 1; }
            };
            int maxTokens = Math.Max(options.MaxTokens, 0);
            var unmanaged = new List<IntPtr>();
            using (var g = new kiln_generate_options())
            using (var sampling = options.Sampling.ToNative())
            using (var r = new kiln_generate_result())
            try
            {
                KilnException.Check(kiln_c.kiln_generate_options_default(g));
                g.sampling = sampling;
                g.max_tokens = options.MaxTokens;
                g.tokenize_flags = Flags.Tokenize(options.AddSpecial, options.ParseSpecial);
                g.ignore_eos = options.IgnoreEos ? 1 : 0;
                if (options.Stop.Length > 0)
                {
                    IntPtr array = Marshal.AllocHGlobal(IntPtr.Size * options.Stop.Length);
                    unmanaged.Add(array);
                    for (int i = 0; i < options.Stop.Length; i++)
                    {
                        byte[] s = Utf8.CString(options.Stop[i]);
                        IntPtr p = Marshal.AllocHGlobal(s.Length);
                        unmanaged.Add(p);
                        Marshal.Copy(s, 0, p, s.Length);
                        Marshal.WriteIntPtr(array, i * IntPtr.Size, p);
                    }
                    g.stop_strings = array;
                    g.n_stop_strings = (ulong)options.Stop.Length;
                }
                IntPtr outIds = Marshal.AllocHGlobal(4 * Math.Max(maxTokens, 1));
                unmanaged.Add(outIds);
                g.output_ids = outIds;
                g.output_ids_capacity = (ulong)maxTokens;
                g.token_fn = fn;

                var status = text != null
                    ? kiln_c.kiln_generate(Handle, text, (ulong)text.Length, g, r)
                    : kiln_c.kiln_generate_ids(Handle, ids, (ulong)ids.Length, g, r);
                GC.KeepAlive(fn);
                if (error != null) error.Throw();
                KilnException.Check(status);
                var generated = new int[Math.Min(Math.Max(r.n_generated, 0), maxTokens)];
                Marshal.Copy(outIds, generated, 0, generated.Length);
                LastResult = new Generation
                {
                    Text = pieces.ToString(), Ids = generated, StopReason = (StopReason)r.stop_reason,
                    NPromptTokens = r.n_prompt_tokens, NGenerated = r.n_generated,
                    PrefillSeconds = r.prefill_seconds, DecodeSeconds = r.decode_seconds,
                };
                return LastResult;
            }
            finally
            {
                foreach (var p in unmanaged) Marshal.FreeHGlobal(p);
            }
        }

        public void Dispose() { Handle.Dispose(); }
    }
}
