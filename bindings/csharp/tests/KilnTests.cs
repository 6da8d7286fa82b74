// Tests of the C# binding against the tiny-qwen2 fixture and HF transformers' outputs. A console
// program (no test framework ships with Debian's mono): prints one line per test, exits 1 on failure.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;
using System.Threading;
using Kiln;

static class KilnTests
{
    static string Tiny;
    static string PromptText, GreedyText;
    static int[] PromptIds, GreedyIds;

    static int[] JsonIds(string json, string key)
    {
        var m = Regex.Match(json, "\"" + key + "\":\\s*\\[([^\\]]*)\\]");
        return m.Groups[1].Value.Split(',').Select(s => int.Parse(s.Trim())).ToArray();
    }

    static string JsonString(string json, string key)
    {
        return Regex.Match(json, "\"" + key + "\":\\s*\"([^\"\\\\]*)\"").Groups[1].Value;
    }

    static void Check(bool ok, string what) { if (!ok) throw new Exception("check failed: " + what); }

    static void Equal<T>(IEnumerable<T> got, IEnumerable<T> want, string what)
    {
        Check(got.SequenceEqual(want), what + ": got [" + string.Join(",", got) + "], want [" + string.Join(",", want) + "]");
    }

    static T Throws<T>(Action a) where T : Exception
    {
        try { a(); } catch (T e) { return e; }
        throw new Exception("expected " + typeof(T).Name);
    }

    // One thread: the CI machine has two cores shared with the rest of the test suite.
    static Runtime Cpu() { return new Runtime(Backend.Cpu, 1); }

    static GenerateOptions Greedy(int n)
    {
        return new GenerateOptions { Sampling = Sampling.Greedy(), MaxTokens = n, IgnoreEos = true };
    }

    static void InfoAndAbi()
    {
        Library.CheckAbi();
        Check(Library.Version.Contains("0.1.0"), "version");
        using (var rt = Cpu())
        using (var m = rt.LoadModel(Tiny))
        {
            Check(rt.Info.Backend == Backend.Cpu, "backend");
            var info = m.Info;
            Check(info.Architecture == "Qwen2ForCausalLM" && info.VocabSize == 512, "model info");
            Check(m.EosIds.Contains(info.EosTokenId), "eos ids");
        }
    }

    // On the CPU: F32 is the CPU's own precision (same info), BF16 is a CUDA precision.
    static void PrecisionOption()
    {
        using (var rt = Cpu())
        {
            using (var m = rt.LoadModel(Tiny, null, Precision.F32))
                Check(m.Info.VocabSize == 512, "F32 load");
            try
            {
                rt.LoadModel(Tiny, null, Precision.Bf16).Dispose();
                Check(false, "BF16 on the CPU loaded");
            }
            catch (KilnException e)
            {
                Check(e.Status == Status.Unsupported && e.Message.Contains("KILN_PRECISION_BF16"),
                      "BF16 on the CPU: " + e.Status + " " + e.Message);
            }
        }
    }

    static void TokenizeRoundTrip()
    {
        using (var rt = Cpu())
        using (var m = rt.LoadModel(Tiny))
        {
            var ids = m.Tokenize(PromptText);
            Equal(ids.Take(PromptIds.Length), PromptIds, "ids");
            Check(m.Detokenize(ids) == PromptText, "round trip");
            Equal(PromptIds.SelectMany(m.TokenToPiece), m.DetokenizeBytes(PromptIds), "pieces");
        }
    }

    // hf_ref.json's token_ids are HF's ids of exactly this prefix of prompt_text (its prompt_decoded).
    const string Phrase = "The quick brown fox jumps over";

    static void CheckTokenizer(Tokenizer tok, string who)
    {
        Check(tok.Decode(PromptIds) == Phrase, who + ": decode(token_ids)");
        var ids = tok.Encode(Phrase);
        Equal(ids, PromptIds, who + ": encode");
        Check(tok.Decode(ids) == Phrase, who + ": round trip");
        Check(tok.VocabSize == 512, who + ": vocab size " + tok.VocabSize);
    }

    static void StandaloneAndModelTokenizersMatchTransformers()
    {
        Check(PromptText.StartsWith(Phrase, StringComparison.Ordinal), "prompt_text starts with the phrase");
        var tok = Tokenizer.Load(Tiny);
        Check(tok.Owned, "a loaded tokenizer is owned");
        CheckTokenizer(tok, "standalone");
        tok.Dispose();
        tok.Dispose(); // idempotent
        Throws<ObjectDisposedException>(() => tok.Encode(Phrase));

        using (var rt = Cpu())
        {
            var m = rt.LoadModel(Tiny);
            var borrowed = m.Tokenizer;
            Check(!borrowed.Owned, "a model's tokenizer is borrowed");
            m.Dispose(); // the borrowed tokenizer keeps the model's handle alive
            CheckTokenizer(borrowed, "model");
            borrowed.Dispose();
        }
        Check(Throws<KilnException>(() => Tokenizer.Load(Path.Combine(Tiny, "no-such-dir"))).Status == Status.NotFound,
              "missing tokenizer.json");
    }

    static void EncodeBatchAndThreadedMatchEncode()
    {
        using (var tok = Tokenizer.Load(Tiny))
        {
            var texts = new List<string>();
            for (int i = 0; i < 50; ++i)
                texts.AddRange(new[] { Phrase, "", "Hello, world!", "<|im_start|>user\nHi<|im_end|>", "Grüße 🙂" });
            foreach (int threads in new[] { 1, 2, 4 })
            {
                var got = tok.EncodeBatch(texts, false, true, threads);
                Check(got[0].SequenceEqual(PromptIds), "batch ids of the phrase are HF's (" + threads + " threads)");
                for (int i = 0; i < texts.Count; ++i)
                    Check(got[i].SequenceEqual(tok.Encode(texts[i], false, true)), "batch text " + i + " equals Encode");
            }
            var sb = new System.Text.StringBuilder();
            for (int r = 0; r < 300; ++r) sb.Append(string.Join("\n", texts));
            string longText = sb.ToString();
            var single = tok.Encode(longText, false, true);
            foreach (int threads in new[] { 1, 2, 4 })
                Check(tok.EncodeThreaded(longText, false, true, threads).SequenceEqual(single), "EncodeThreaded equals Encode");
            Check(Throws<KilnException>(() => tok.EncodeBatch(new[] { "a" }, false, false, -1)).Status == Status.InvalidArgument,
                  "n_threads -1 is an invalid argument");
        }
    }

    static void TrainSaveAndReload()
    {
        string dir = Path.Combine(Path.GetTempPath(), "kiln-cs-train-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string corpus = Path.Combine(dir, "corpus.txt");
            File.WriteAllText(corpus, string.Concat(Enumerable.Repeat("low lower lowest newer newest wider widest\n", 50)));
            var stages = new List<string>();
            using (var tok = Tokenizer.Train(new[] { corpus }, 300, new[] { "<|end|>" },
                                             progress: (f, stage) => { stages.Add(stage); return false; }))
            {
                Check(stages.Count > 0 && stages[stages.Count - 1] == "done", "progress ends with done");
                string text = "lowest wider \U0001F642 \u65B0";
                var ids = tok.Encode(text);
                Check(tok.Decode(ids) == text, "trained round trip");
                // "low", " lowest" and " wider" are training words seen 50 times: one token each.
                Check(tok.Encode("low lowest wider").Length == 3, "training words are single tokens");
                Equal(tok.Encode("<|end|>", false, true), new[] { tok.VocabSize - 1 }, "special token id");
                tok.Save(Path.Combine(dir, "out"));
                using (var again = Tokenizer.Load(Path.Combine(dir, "out")))
                    Equal(again.Encode(text), ids, "reloaded ids");
            }
            Check(Throws<KilnException>(() => Tokenizer.Train(new[] { corpus }, 300, progress: (f, s) => true)).Status
                  == Status.Cancelled, "cancel");
            using (var loaded = Tokenizer.Load(Tiny))
                Check(Throws<KilnException>(() => loaded.Save(Path.Combine(dir, "copy"))).Status == Status.Unsupported,
                      "saving a loaded tokenizer");
        }
        finally { Directory.Delete(dir, true); }
    }

    static void GreedyEqualsTransformersAndStreamConcatenates()
    {
        using (var rt = Cpu())
        using (var m = rt.LoadModel(Tiny))
        using (var s = m.CreateSession())
        {
            var g = s.Complete(PromptIds, Greedy(GreedyIds.Length));
            Equal(g.Ids, GreedyIds, "greedy ids");
            Check(g.StopReason == StopReason.MaxTokens && g.Text == GreedyText, "greedy text " + g.Text);
            s.Reset();
            var pieces = s.Generate(PromptIds, Greedy(GreedyIds.Length)).ToList();
            Check(pieces.Count > 1 && string.Concat(pieces) == m.Detokenize(s.LastResult.Ids), "stream");
            Equal(s.LastResult.Ids, GreedyIds, "streamed ids");
        }
    }

    static void ForwardAndSample()
    {
        using (var rt = Cpu())
        using (var m = rt.LoadModel(Tiny))
        using (var s = m.CreateSession())
        {
            var logits = s.Forward(PromptIds);
            Check(logits.Length == 512, "logits length");
            int argmax = Array.IndexOf(logits, logits.Max());
            Check(s.Sample(logits, Sampling.Greedy()) == argmax && argmax == GreedyIds[0], "sample");
            int capacity;
            Check(s.Position(out capacity) == PromptIds.Length, "position");
        }
    }

    static void StopAfterNPieces()
    {
        using (var rt = Cpu())
        using (var m = rt.LoadModel(Tiny))
        using (var s = m.CreateSession())
        {
            int n = 0;
            var g = s.Complete(PromptIds, Greedy(100), (p, id) => ++n == 3);
            Check(g.StopReason == StopReason.Callback && g.NGenerated == 3, "callback stop");
            s.Reset();
            var got = new List<string>();
            foreach (var piece in s.Generate(PromptIds, Greedy(200)))
            {
                got.Add(piece);
                if (got.Count == 3) break;
            }
            Check(s.LastResult.StopReason == StopReason.Callback && s.LastResult.NGenerated < 200, "stream break");
            Equal(s.LastResult.Ids.Take(3), GreedyIds.Take(3), "ids before the break");
        }
    }

    static void ThrowingCallbackIsContained()
    {
        using (var rt = Cpu())
        using (var m = rt.LoadModel(Tiny))
        using (var s = m.CreateSession())
        {
            int calls = 0;
            var e = Throws<InvalidOperationException>(() =>
                s.Complete(PromptIds, Greedy(8), (p, id) => { calls++; throw new InvalidOperationException("from the callback"); }));
            Check(e.Message == "from the callback" && calls == 1, "rethrown once");
            Throws<DivideByZeroException>(() => rt.LoadModel(Tiny, (f, stage) => { throw new DivideByZeroException(); }));
            s.Reset();
            Equal(s.Complete(PromptIds, Greedy(2)).Ids, GreedyIds.Take(2), "usable after");
        }
    }

    static void ErrorsCarryKilnMessages()
    {
        using (var rt = Cpu())
        using (var m = rt.LoadModel(Tiny))
        {
            var e = Throws<KilnException>(() => rt.LoadModel("/no/such/model-dir"));
            Check(e.Status == Status.NotFound && e.StatusName == "KILN_ERR_NOT_FOUND", "status");
            Check(e.KilnMessage.Contains("/no/such/model-dir"), "message " + e.KilnMessage);
            using (var s = m.CreateSession())
                Check(Throws<KilnException>(() => s.Forward(new[] { 100000 })).Status == Status.OutOfRange, "range");
            using (var small = m.CreateSession(4))
                Check(Throws<KilnException>(() => small.Forward(new[] { 1, 2, 3, 4, 5 })).Status == Status.ContextFull, "full");
            Check(Throws<KilnException>(() => new Runtime(Backend.Cpu, -3)).Status == Status.InvalidArgument, "threads");
            Check(Throws<KilnException>(() => new Runtime(Backend.Cpu, 1, null, LogLevel.Warn, 2)).Status == Status.Unsupported,
                  "tensor parallel on the CPU");
            Check(Throws<KilnException>(() => rt.LoadModel(Tiny, (f, stage) => true)).Status == Status.Cancelled, "cancel load");
            var closed = m.CreateSession();
            closed.Dispose();
            Throws<ObjectDisposedException>(() => closed.Reset());
        }
    }

    static void QuantizeWritesAGgufThatReloads()
    {
        using (var rt = Cpu())
        {
            string dst = Path.Combine(Path.GetTempPath(), "kiln-cs-quant-" + System.Diagnostics.Process.GetCurrentProcess().Id + ".gguf");
            var stages = new List<string>();
            rt.Quantize(Tiny, dst, QuantizeType.Q8_0, 1, (f, stage) => { stages.Add(stage); return false; });
            Check(stages.Contains("writing"), "progress stages");
            using (var m = rt.LoadModel(dst))
                Check(m.Info.Architecture == "Qwen2ForCausalLM", "reloaded " + m.Info.Architecture);
            File.Delete(dst);
            Check(Throws<KilnException>(() => rt.Quantize("/no/such/model-dir", dst)).Status == Status.NotFound,
                  "missing source");
        }
    }

    static void LogCallbacks()
    {
        var lines = new List<string>();
        using (var rt = new Runtime(Backend.Cpu, 1, (level, msg) => { lock (lines) lines.Add(msg); }, LogLevel.Debug))
            rt.LoadModel(Tiny).Dispose();
        Check(lines.Any(l => l.Contains("loaded Qwen2ForCausalLM")), "runtime log");
        var global = new List<string>();
        Library.SetLogCallback((level, msg) => { lock (global) global.Add(msg); }, LogLevel.Debug);
        using (new Runtime(Backend.Cpu, 1, null, LogLevel.Debug)) { }
        Library.SetLogCallback(null, LogLevel.Warn);
        Check(global.Any(l => l.Contains("runtime created")), "process log");
    }

    static void TwoThreadsTwoSessions()
    {
        using (var rt = Cpu())
        using (var m = rt.LoadModel(Tiny))
        {
            var results = new int[2][];
            var threads = Enumerable.Range(0, 2).Select(i => new Thread(() =>
            {
                using (var s = m.CreateSession())
                    results[i] = s.Complete(PromptIds, Greedy(GreedyIds.Length)).Ids;
            })).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            Equal(results[0], GreedyIds, "thread 0");
            Equal(results[1], GreedyIds, "thread 1");
        }
    }

    static void ManyHandlesAreFreed()
    {
        // Disposed and finalized handles: the runtime is freed last, whatever the order (SafeHandle
        // references), and nothing crashes when the finalizer thread frees them.
        for (int i = 0; i < 30; i++)
        {
            var rt = Cpu();
            var m = rt.LoadModel(Tiny);
            var s = m.CreateSession();
            rt.Dispose();  // first: kiln must still not see the runtime freed before its children
            Check(s.Complete(PromptIds, Greedy(1)).Ids[0] == GreedyIds[0], "child outlives disposed runtime");
            if (i % 2 == 0) { s.Dispose(); m.Dispose(); }
        }
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    static string ChatFixtures;

    // HF transformers' apply_chat_template(tokenize=False) text for a fixture conversation.
    static string HfChatRender(string template, string conversation)
    {
        string json = File.ReadAllText(Path.Combine(ChatFixtures, "expected", "hf_renders.json"));
        int at = json.IndexOf("\"renders\":");
        foreach (var key in new[] { template, conversation })
        {
            at = json.IndexOf("\"" + key + "\":", at);
            Check(at >= 0, key + " in hf_renders.json");
        }
        var m = new Regex("\"text\":\\s*\"((?:[^\"\\\\]|\\\\.)*)\"").Match(json, at);
        Check(m.Success, "text of " + template + "/" + conversation);
        return Regex.Unescape(m.Groups[1].Value); // JSON's string escapes are a subset of these
    }

    static ChatOptions Qwen3Options(bool addGenerationPrompt)
    {
        return new ChatOptions
        {
            AddGenerationPrompt = addGenerationPrompt,
            TemplateOverride = File.ReadAllText(Path.Combine(ChatFixtures, "templates", "qwen3.jinja")),
        };
    }

    static void ChatRenderMatchesTransformers()
    {
        using (var rt = Cpu())
        using (var m = rt.LoadModel(Tiny))
        {
            var messages = new[] { new ChatMessage("system", "You are a terse assistant."), new ChatMessage("user", "What is 2+2?") };
            string text = m.ChatRender(messages, Qwen3Options(true));
            string want = HfChatRender("qwen3", "system_user_gen");
            Check(text == want, "ChatRender: got " + text + ", HF rendered " + want);
        }
    }

    static void ChatRenderTokensMasksTheAssistantReply()
    {
        using (var rt = Cpu())
        using (var m = rt.LoadModel(Tiny))
        {
            var messages = new[] { new ChatMessage("user", "Hi"), new ChatMessage("assistant", "Hello there") };
            int[] ids;
            byte[] mask;
            m.ChatRenderTokens(messages, Qwen3Options(false), out ids, out mask);
            Check(ids.Length == mask.Length, "ids and mask lengths");
            Check(mask.Contains((byte)1), "a token masked as assistant content");
            var masked = ids.Where((id, i) => mask[i] == 1).ToArray();
            // Qwen3 writes an empty think block before the last reply; the mask covers the reply
            // as written, up to and including its end-of-turn token.
            Check(m.Detokenize(masked) == "<think>\n\n</think>\n\nHello there<|im_end|>",
                  "masked tokens are the assistant's reply and its end-of-turn token");
        }
    }

    static int Main()
    {
        string src = Environment.GetEnvironmentVariable("KILN_SOURCE_DIR") ?? "../../..";
        Tiny = Path.Combine(src, "tests", "fixtures", "tiny-qwen2");
        ChatFixtures = Path.Combine(src, "tests", "fixtures", "chat");
        string json = File.ReadAllText(Path.Combine(Tiny, "hf_ref.json"));
        PromptText = JsonString(json, "prompt_text");
        GreedyText = JsonString(json, "greedy_continuation_text");
        PromptIds = JsonIds(json, "token_ids");
        GreedyIds = JsonIds(json, "greedy_continuation_ids");

        var tests = new Dictionary<string, Action>
        {
            { "InfoAndAbi", InfoAndAbi }, { "TokenizeRoundTrip", TokenizeRoundTrip },
            { "PrecisionOption", PrecisionOption },
            { "StandaloneAndModelTokenizersMatchTransformers", StandaloneAndModelTokenizersMatchTransformers },
            { "TrainSaveAndReload", TrainSaveAndReload },
            { "EncodeBatchAndThreadedMatchEncode", EncodeBatchAndThreadedMatchEncode },
            { "GreedyEqualsTransformersAndStreamConcatenates", GreedyEqualsTransformersAndStreamConcatenates },
            { "ForwardAndSample", ForwardAndSample }, { "StopAfterNPieces", StopAfterNPieces },
            { "ThrowingCallbackIsContained", ThrowingCallbackIsContained },
            { "ErrorsCarryKilnMessages", ErrorsCarryKilnMessages }, { "LogCallbacks", LogCallbacks },
            { "QuantizeWritesAGgufThatReloads", QuantizeWritesAGgufThatReloads },
            { "TwoThreadsTwoSessions", TwoThreadsTwoSessions }, { "ManyHandlesAreFreed", ManyHandlesAreFreed },
            { "ChatRenderMatchesTransformers", ChatRenderMatchesTransformers },
            { "ChatRenderTokensMasksTheAssistantReply", ChatRenderTokensMasksTheAssistantReply },
        };
        foreach (var t in TrainingTests.All(src)) tests.Add(t.Key, t.Value);
        int failed = 0;
        foreach (var t in tests)
        {
            try { t.Value(); Console.WriteLine("PASS " + t.Key); }
            catch (Exception e) { failed++; Console.WriteLine("FAIL " + t.Key + ": " + e); }
        }
        Console.WriteLine("{0} passed, {1} failed", tests.Count - failed, failed);
        return failed == 0 ? 0 : 1;
    }
}
