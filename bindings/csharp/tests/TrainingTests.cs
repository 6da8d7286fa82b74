// Tests of the training API of the C# binding (Model.Create, Kiln.Trainer), run by KilnTests' Main.
// CreateModelErrors and TrainerOptionDefaults run against any libkiln; the
// others need the training engine: they train a fresh tiny Llama (hidden 32, 2 layers, 4 heads, the
// vocabulary of models/kjv-tiny's tokenizer) on fixed text, against references independent of kiln
// (ln(vocab) for a fresh model's loss, the Llama parameter count from the config, kiln's inference
// path for the trainer's forward pass).
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using Kiln;

static class TrainingTests
{
    const string Text = "In the beginning God created the heaven and the earth. And the earth was without form, "
        + "and void; and darkness was upon the face of the deep.";
    const int B = 2, T = 8;
    static string KjvTiny;
    static int Vocab;
    static int[] Inputs, Targets;

    static void Check(bool ok, string what) { if (!ok) throw new Exception("check failed: " + what); }

    static TEx Throws<TEx>(Action a) where TEx : Exception
    {
        try { a(); } catch (TEx e) { return e; }
        throw new Exception("expected " + typeof(TEx).Name);
    }

    static Runtime Cpu() { return new Runtime(Backend.Cpu, 1); }

    static string Config(string architecture = "LlamaForCausalLM")
    {
        return string.Format(CultureInfo.InvariantCulture,
            "{{\"architectures\":[\"{0}\"],\"vocab_size\":{1},\"hidden_size\":32,\"intermediate_size\":64,"
            + "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":4,"
            + "\"max_position_embeddings\":64,\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,"
            + "\"tie_word_embeddings\":true,\"bos_token_id\":1,\"eos_token_id\":0}}", architecture, Vocab);
    }

    static Trainer NewTrainer(Runtime rt, Action<TrainerOptions> edit = null)
    {
        using (var model = Model.Create(rt, Config(), 7, KjvTiny))
        {
            var o = new TrainerOptions { LearningRate = 3e-3f };
            if (edit != null) edit(o);
            return new Trainer(model, o); // the trainer keeps its own copy of the weights
        }
    }

    static void CreateModelErrors()
    {
        using (var rt = Cpu())
        {
            Check(Throws<KilnException>(() => Model.Create(rt, "{not json")).Status == Status.Format, "bad JSON");
            var e = Throws<KilnException>(() => Model.Create(rt, Config("BertForMaskedLM")));
            Check(e.Status == Status.Unsupported && e.KilnMessage.Contains("BertForMaskedLM"), "unsupported: " + e.Message);
            e = Throws<KilnException>(() => Model.Create(rt, Config(), null, Path.Combine(KjvTiny, "no-such-dir")));
            Check(e.Status == Status.NotFound && e.KilnMessage.Contains("no-such-dir"), "missing tokenizer: " + e.Message);
        }
    }

    static void TrainerOptionDefaults()
    {
        var o = new TrainerOptions();
        Check(o.Optimizer == Optimizer.AdamW && o.LearningRate == 3e-4f && o.Beta1 == 0.9f && o.Beta2 == 0.95f
              && o.Epsilon == 1e-8f && o.WeightDecay == 0.1f && o.MuonLearningRate == 0.02f && o.MuonMomentum == 0.95f
              && o.MuonNsSteps == 5 && o.Schedule == LrSchedule.Constant && o.DecayFraction == 0.2f
              && o.GradAccumSteps == 1 && o.MaxGradNorm == 1f && o.Seed == 1337 && o.NMtpHeads == 0
              && o.ResidualDropout == 0f
              && o.MtpLossWeights.Length == 8 && o.MtpLossWeights.All(w => w == 1f), "defaults of kiln.h");
    }

    static void BatchShapesAreChecked()
    {
        using (var rt = Cpu())
        using (var t = NewTrainer(rt))
        {
            // kiln reads batch*seq items of each array: a shorter one never reaches it.
            var e = Throws<ArgumentException>(() => t.Step(new int[6], new int[5], 2, 3));
            Check(e.ParamName == "targets", "short targets: " + e.Message);
            e = Throws<ArgumentException>(() => t.Step(new int[6], new int[6], 2, 3, new byte[7]));
            Check(e.ParamName == "mask", "long mask: " + e.Message);
            Check(t.Info.Step == 0, "nothing ran");
        }
    }

    static long LlamaParameterCount()
    {
        const long h = 32, f = 64, kv = 32, layers = 2;
        return Vocab * h + layers * (2 * h * h + 2 * h * kv + 3 * h * f + 2 * h) + h;
    }

    static void FreshModelShape()
    {
        using (var rt = Cpu())
        using (var m = Model.Create(rt, Config(), 7, KjvTiny))
        {
            var i = m.Info;
            Check(i.Architecture == "LlamaForCausalLM" && i.VocabSize == Vocab && i.HiddenSize == 32 && i.NLayers == 2
                  && i.NHeads == 4 && i.NParameters == LlamaParameterCount(), "info " + i.NParameters);
        }
    }

    static void LossDecreasesAndEvalChangesNothing()
    {
        using (var rt = Cpu())
        using (var t = NewTrainer(rt))
        {
            var losses = new List<double>();
            for (int i = 1; i <= 6; i++)
            {
                var r = t.Step(Inputs, Targets, B, T);
                Check(r.Step == i && r.NTokens == B * T && r.WeightSum == B * T && r.GradNorm > 0, "step " + i);
                losses.Add(r.Loss);
            }
            string all = string.Join(",", losses);
            Check(Math.Abs(losses[0] - Math.Log(Vocab)) < 0.3, "first loss near ln(vocab): " + all);
            Check(losses[5] < losses[0] - 0.5, "loss decreases: " + all);
            var a = t.EvalLoss(Inputs, Targets, B, T);
            var b = t.EvalLoss(To2D(Inputs), To2D(Targets));
            Check(a.Loss == b.Loss && a.Step == 6 && a.GradNorm == 0 && t.Info.Step == 6, "eval changes nothing");
        }
    }

    static T2[,] To2D<T2>(T2[] flat)
    {
        var m = new T2[B, T];
        for (int i = 0; i < flat.Length; i++) m[i / T, i % T] = flat[i];
        return m;
    }

    static void CheckpointResumeAndDataState()
    {
        string dir = Path.Combine(Path.GetTempPath(), "kiln-cs-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            using (var rt = Cpu())
            using (var a = NewTrainer(rt))
            {
                Check(a.DataState.Length == 0, "fresh data state is empty");
                a.Step(Inputs, Targets, B, T);
                a.Step(Inputs, Targets, B, T);
                var state = new byte[] { 99, 0, 255, 7 };
                a.DataState = state;
                Check(a.DataState.SequenceEqual(state), "data state round trip");
                Check(Throws<KilnException>(() => a.DataState = new byte[(1 << 20) + 1]).Status == Status.InvalidArgument, "1 MiB cap");
                string path = Path.Combine(dir, "run.ckpt");
                a.Save(path);
                var uninterrupted = a.Step(Inputs, Targets, B, T);
                using (var b = Trainer.Load(rt, path))
                {
                    Check(b.Info.Step == 2 && b.DataState.SequenceEqual(state), "loaded step and data state");
                    var resumed = b.Step(Inputs, Targets, B, T);
                    Check(resumed.Step == 3 && resumed.Loss == uninterrupted.Loss,
                          "resume is exact: " + resumed.Loss + " vs " + uninterrupted.Loss);
                }
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    static void AllZeroMaskIsInvalidArgument()
    {
        using (var rt = Cpu())
        using (var t = NewTrainer(rt))
        {
            var e = Throws<KilnException>(() => t.Step(Inputs, Targets, B, T, new byte[B * T]));
            Check(e.Status == Status.InvalidArgument && e.KilnMessage.Length > 0 && t.Info.Step == 0, "zero mask: " + e.Message);
        }
    }

    static void DataParallelReachesKiln()
    {
        // A CPU runtime has no NCCL group ids and its trainer cannot join a group; a bad rank is
        // named first, and the trainer keeps working after the refusals.
        using (var rt = Cpu())
        using (var t = NewTrainer(rt))
        {
            var e = Throws<KilnException>(() => rt.NcclId());
            Check(e.Status == Status.Unsupported && e.KilnMessage.Contains("CUDA runtime"), "NcclId on CPU: " + e.Message);
            e = Throws<KilnException>(() => t.JoinDataParallel(2, 5, new byte[128]));
            Check(e.Status == Status.InvalidArgument && e.KilnMessage.Contains("world_size 2 and rank 5"), "rank 5 of 2: " + e.Message);
            e = Throws<KilnException>(() => t.JoinDataParallel(1, 0, new byte[128]));
            Check(e.Status == Status.Unsupported && e.KilnMessage.Contains("CUDA trainer"), "join on CPU: " + e.Message);
            Throws<ArgumentException>(() => t.JoinDataParallel(1, 0, new byte[3]));
            using (var muon = NewTrainer(rt, o => o.Optimizer = Optimizer.Muon))
            {
                // shardOptimizerState reaches kiln: with Muon it is refused by name, before the engine.
                e = Throws<KilnException>(() => muon.JoinDataParallel(1, 0, new byte[128], true));
                Check(e.Status == Status.Unsupported && e.KilnMessage.Contains("Muon"), "sharded join with Muon: " + e.Message);
            }
            Check(!double.IsNaN(t.Step(Inputs, Targets, B, T).Loss), "the trainer no longer trains");
        }
    }

    static void ProgressCallbackCancels()
    {
        using (var rt = Cpu())
        {
            // Two micro-batches: kiln.h promises "forward" before each one's forward + backward pass
            // (fraction = the share done) and "optimizer" before the update (fraction 1).
            var stages = new List<string>();
            Action<TrainerOptions> edit = o =>
            {
                o.GradAccumSteps = 2;
                o.Progress = (f, stage) => { stages.Add(stage + "@" + f.ToString(CultureInfo.InvariantCulture)); return false; };
            };
            using (var t = NewTrainer(rt, edit))
            {
                t.Step(Inputs, Targets, B, T);
                var seen = string.Join(" ", stages);
                Check(seen == "forward@0 forward@0.5 optimizer@1", "stages " + seen);
                double before = t.EvalLoss(Inputs, Targets, B, T).Loss;
                t.Progress = (f, stage) => stage == "optimizer";
                Check(Throws<KilnException>(() => t.Step(Inputs, Targets, B, T)).Status == Status.Cancelled, "cancel");
                Check(t.Info.Step == 1, "a cancelled step changes nothing");
                t.Progress = (f, stage) => { throw new InvalidOperationException("from the callback"); };
                Check(Throws<InvalidOperationException>(() => t.Step(Inputs, Targets, B, T)).Message == "from the callback", "rethrown");
                t.Progress = (f, stage) => { t.Cancel(); return false; };
                Check(Throws<KilnException>(() => t.Step(Inputs, Targets, B, T)).Status == Status.Cancelled, "Cancel()");
                t.Progress = null;
                GC.Collect();
                GC.WaitForPendingFinalizers();
                Check(t.EvalLoss(Inputs, Targets, B, T).Loss == before && t.Info.Step == 1, "weights unchanged");
                Check(t.Step(Inputs, Targets, B, T).Step == 2, "trains again");
            }
        }
    }

    static ParamGroup[] FrozenGroups()
    {
        return ((ParamRole[])Enum.GetValues(typeof(ParamRole))).Select(r => new ParamGroup(r, 0f)).ToArray();
    }

    static void ParamGroupsFreezeAndTrainRoles()
    {
        using (var rt = Cpu())
        {
            double before;
            // A learning rate of 0 freezes a role (kiln.h): with every role frozen a step sees a
            // gradient but changes no weight, decay included.
            using (var t = NewTrainer(rt, o => { o.ParamGroups = FrozenGroups(); o.WeightDecay = 0.5f; }))
            {
                Check(FrozenGroups().Length == 6, "six roles");
                before = t.EvalLoss(Inputs, Targets, B, T).Loss;
                Check(t.Step(Inputs, Targets, B, T).GradNorm > 0, "a gradient");
                Check(t.EvalLoss(Inputs, Targets, B, T).Loss == before, "frozen weights stay");
            }
            // Thawing the norms alone (a later group for a role replaces an earlier one) trains them.
            var thawed = FrozenGroups().Concat(new[] { new ParamGroup(ParamRole.Norm, 1e-2f) }).ToArray();
            using (var t = NewTrainer(rt, o => o.ParamGroups = thawed))
            {
                t.Step(Inputs, Targets, B, T);
                double after = t.EvalLoss(Inputs, Targets, B, T).Loss;
                Check(after < before, "norms alone train: " + before + " -> " + after);
            }
            // kiln reads a negative number as "not set"; here that is null, so a negative one throws.
            var e = Throws<ArgumentException>(() => NewTrainer(rt, o => o.ParamGroups = new[] { new ParamGroup(ParamRole.Bias, null, -0.1f) }));
            Check(e.Message.Contains("ParamGroups[0]"), "negative decay: " + e.Message);
        }
    }

    static void ForwardSizes()
    {
        using (var rt = Cpu())
        using (var t = NewTrainer(rt, o => o.NMtpHeads = 1))
        {
            Check(t.Forward(Inputs, B, T).Length == (1 + 1) * B * T * Vocab, "logits size");
            Check(t.Forward(To2D(Inputs), TrainerOutput.Hidden).Length == B * T * 32, "hidden size");
            var r = t.Step(Inputs, Targets, B, T);
            Check(r.MtpLosses.Length == 1 && Math.Abs(r.Objective - (r.Loss + r.MtpLosses[0])) <= 1e-6 * r.Objective, "mtp");
        }
    }

    static double RelL2(float[] got, float[] want)
    {
        double num = 0, den = 0;
        for (int i = 0; i < want.Length; i++) { num += (got[i] - want[i]) * (double)(got[i] - want[i]); den += want[i] * (double)want[i]; }
        return Math.Sqrt(num / den);
    }

    static void SnapshotAndExport()
    {
        string dir = Path.Combine(Path.GetTempPath(), "kiln-cs-" + Guid.NewGuid().ToString("N"));
        try
        {
            using (var rt = Cpu())
            using (var t = NewTrainer(rt))
            {
                for (int i = 0; i < 3; i++) t.Step(Inputs, Targets, B, T);
                var row = Inputs.Take(T).ToArray();
                var want = t.Forward(row, 1, T);
                using (var snap = t.Snapshot())
                using (var s = snap.CreateSession())
                    Check(RelL2(s.Forward(row, LogitsMode.All), want) < 1e-4, "snapshot logits");
                t.ExportHF(dir);
                using (var exported = rt.LoadModel(dir))
                using (var s = exported.CreateSession())
                    Check(RelL2(s.Forward(row, LogitsMode.All), want) < 1e-4, "exported logits");
            }
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    /// <summary>The tests, keyed by name; `src` is the source tree.</summary>
    internal static Dictionary<string, Action> All(string src)
    {
        KjvTiny = Path.Combine(src, "models", "kjv-tiny");
        using (var tok = Tokenizer.Load(KjvTiny))
        {
            Vocab = tok.VocabSize;
            var ids = tok.Encode(Text);
            if (ids.Length <= B * T) throw new Exception("the training text is too short");
            Inputs = ids.Take(B * T).ToArray();
            Targets = ids.Skip(1).Take(B * T).ToArray();
        }
        return new Dictionary<string, Action>
        {
            { "CreateModelErrors", CreateModelErrors }, { "TrainerOptionDefaults", TrainerOptionDefaults },
            { "BatchShapesAreChecked", BatchShapesAreChecked }, { "FreshModelShape", FreshModelShape },
            { "LossDecreasesAndEvalChangesNothing", LossDecreasesAndEvalChangesNothing },
            { "CheckpointResumeAndDataState", CheckpointResumeAndDataState },
            { "AllZeroMaskIsInvalidArgument", AllZeroMaskIsInvalidArgument },
            { "ProgressCallbackCancels", ProgressCallbackCancels }, { "ForwardSizes", ForwardSizes },
            { "ParamGroupsFreezeAndTrainRoles", ParamGroupsFreezeAndTrainRoles },
            { "SnapshotAndExport", SnapshotAndExport }, { "DataParallelReachesKiln", DataParallelReachesKiln },
        };
    }
}
