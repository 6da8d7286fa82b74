// Training: Model.Create (a fresh model from a config), Kiln.Trainer (steps, evaluation, forward,
// checkpoints, export). Batch semantics (targets of -1, masks, weights) are kiln.h's ("Training").
using System;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace Kiln
{
    public enum Optimizer { AdamW = 0, Muon = 1 }
    public enum LrSchedule { Constant = 0, WarmupCosine = 1, WarmupLinear = 2, WarmupStableDecay = 3 }

    /// <summary>What Trainer.Forward returns: Logits is [1 + NMtpHeads][B][T][vocab] (main head
    /// first), Hidden is [B][T][hidden] (the trunk's output); float32, row-major.</summary>
    public enum TrainerOutput { Logits = 0, Hidden = 1 }

    /// <summary>The kinds of trainable tensor (kiln.h's kiln_param_role).</summary>
    public enum ParamRole
    {
        /// <summary>2-D weights inside blocks (attention, MLP).</summary>
        Matrix = 0,
        /// <summary>The token embedding (also the head when tied).</summary>
        Embedding = 1,
        /// <summary>Learned positions (GPT-2).</summary>
        Position = 2,
        /// <summary>An untied lm_head.</summary>
        Head = 3,
        /// <summary>Norm weights.</summary>
        Norm = 4,
        /// <summary>Biases.</summary>
        Bias = 5,
    }

    /// <summary>A parameter group, as torch's: the AdamW-updated tensors of Role get their own
    /// LearningRate (null = the trainer's; 0 freezes them) and/or WeightDecay (null = the role's
    /// default). A later group for the same role replaces an earlier one; in Muon mode matrices
    /// follow the Muon options instead.</summary>
    public sealed class ParamGroup
    {
        public ParamRole Role;
        public float? LearningRate;
        public float? WeightDecay;

        public ParamGroup() { }
        public ParamGroup(ParamRole role, float? learningRate = null, float? weightDecay = null)
        {
            Role = role; LearningRate = learningRate; WeightDecay = weightDecay;
        }
    }

    /// <summary>Trainer settings; new TrainerOptions() holds kiln's defaults.</summary>
    public sealed class TrainerOptions
    {
        public Optimizer Optimizer;
        public float LearningRate, Beta1, Beta2, Epsilon, WeightDecay, MuonLearningRate, MuonMomentum;
        public int MuonNsSteps;
        public ParamGroup[] ParamGroups = new ParamGroup[0];
        public LrSchedule Schedule;
        public long WarmupSteps, TotalSteps;
        public float MinLrRatio, DecayFraction;
        public int GradAccumSteps;
        public float MaxGradNorm;
        public ulong Seed;
        public int NMtpHeads;
        public float[] MtpLossWeights;
        /// <summary>Called during every step: stage "forward" before each micro-batch's forward +
        /// backward pass (fraction = the share of micro-batches done), then "optimizer" before the
        /// update (fraction 1); returning true cancels the step. An exception it throws cancels the step and is rethrown by it.</summary>
        public Func<float, string, bool> Progress;

        public TrainerOptions()
        {
            var o = Defaults();
            Optimizer = (Optimizer)o.optimizer; LearningRate = o.learning_rate; Beta1 = o.beta1; Beta2 = o.beta2;
            Epsilon = o.epsilon; WeightDecay = o.weight_decay; MuonLearningRate = o.muon_learning_rate;
            MuonMomentum = o.muon_momentum; MuonNsSteps = o.muon_ns_steps; Schedule = (LrSchedule)o.schedule;
            WarmupSteps = o.warmup_steps; TotalSteps = o.total_steps; MinLrRatio = o.min_lr_ratio;
            DecayFraction = o.decay_fraction; GradAccumSteps = o.grad_accum_steps; MaxGradNorm = o.max_grad_norm;
            Seed = o.seed; NMtpHeads = o.n_mtp_heads;
            MtpLossWeights = new[] { o.mtp_loss_weight0, o.mtp_loss_weight1, o.mtp_loss_weight2, o.mtp_loss_weight3,
                                     o.mtp_loss_weight4, o.mtp_loss_weight5, o.mtp_loss_weight6, o.mtp_loss_weight7 };
        }

        internal static Native.TrainerOptions Defaults()
        {
            var o = new Native.TrainerOptions();
            KilnException.Check(Native.kiln_trainer_options_default(ref o, Native.SizeOf<Native.TrainerOptions>()));
            return o;
        }

        internal Native.TrainerOptions ToNative()
        {
            if (MtpLossWeights == null || MtpLossWeights.Length > Native.MaxMtpHeads)
                throw new ArgumentException("MtpLossWeights must hold at most " + Native.MaxMtpHeads + " weights");
            var o = Defaults();
            o.optimizer = (int)Optimizer; o.learning_rate = LearningRate; o.beta1 = Beta1; o.beta2 = Beta2;
            o.epsilon = Epsilon; o.weight_decay = WeightDecay; o.muon_learning_rate = MuonLearningRate;
            o.muon_momentum = MuonMomentum; o.muon_ns_steps = MuonNsSteps; o.schedule = (int)Schedule;
            o.warmup_steps = WarmupSteps; o.total_steps = TotalSteps; o.min_lr_ratio = MinLrRatio;
            o.decay_fraction = DecayFraction; o.grad_accum_steps = GradAccumSteps; o.max_grad_norm = MaxGradNorm;
            o.seed = Seed; o.n_mtp_heads = NMtpHeads;
            var w = new float[Native.MaxMtpHeads];
            Array.Copy(MtpLossWeights, w, MtpLossWeights.Length);
            o.mtp_loss_weight0 = w[0]; o.mtp_loss_weight1 = w[1]; o.mtp_loss_weight2 = w[2]; o.mtp_loss_weight3 = w[3];
            o.mtp_loss_weight4 = w[4]; o.mtp_loss_weight5 = w[5]; o.mtp_loss_weight6 = w[6]; o.mtp_loss_weight7 = w[7];
            return o;
        }
    }

    /// <summary>What a train step (or an evaluation) measured.</summary>
    public sealed class TrainResult
    {
        /// <summary>The main (next-token) head's loss.</summary>
        public double Loss;
        /// <summary>Loss + Σ MTP weight · head loss: what was minimised.</summary>
        public double Objective;
        /// <summary>One loss per MTP head.</summary>
        public double[] MtpLosses;
        public long NTokens;
        public double WeightSum;
        /// <summary>Before clipping; 0 for an evaluation.</summary>
        public double GradNorm;
        public double LearningRate, TokensPerSecond;
        /// <summary>Optimizer steps taken so far, this one included.</summary>
        public long Step;
    }

    public sealed class TrainerInfo
    {
        public long Step, NParameters; public int NMtpHeads; public string Architecture;
    }

    /// <summary>A kiln_trainer: holds a reference on its runtime's handle (kiln_trainer_snapshot
    /// places models on it) and keeps its progress delegate alive until kiln_trainer_free.</summary>
    internal sealed class TrainerHandle : ChildHandle
    {
        internal Native.ProgressFn Progress;

        protected override void Free(IntPtr raw)
        {
            Native.kiln_trainer_free(raw);
            Progress = null;
        }
    }

    public sealed partial class Model
    {
        private Model(IntPtr raw, SafeHandle runtime) { Handle.Adopt(raw, runtime); }

        internal static Model Adopt(IntPtr raw, SafeHandle runtime) { return new Model(raw, runtime); }

        /// <summary>A fresh model for training from a Hugging Face style config.json text, its weights
        /// initialised from seed (null: kiln's default) as the family's reference code does.
        /// tokenizerPath is a tokenizer.json or a directory holding one (null: ids only).</summary>
        public static Model Create(Runtime runtime, string configJson, ulong? seed = null, string tokenizerPath = null)
        {
            var o = new Native.ModelCreateOptions();
            KilnException.Check(Native.kiln_model_create_options_default(ref o, Native.SizeOf<Native.ModelCreateOptions>()));
            if (seed.HasValue) o.seed = seed.Value;
            var path = tokenizerPath == null ? default(GCHandle) : GCHandle.Alloc(Utf8.CString(tokenizerPath), GCHandleType.Pinned);
            try
            {
                if (tokenizerPath != null) o.tokenizer_path = path.AddrOfPinnedObject();
                var config = Utf8.Bytes(configJson);
                IntPtr raw;
                KilnException.Check(Native.kiln_model_create(runtime.Handle, config, (UIntPtr)config.Length, ref o, out raw));
                return Adopt(raw, runtime.Handle);
            }
            finally
            {
                if (path.IsAllocated) path.Free();
            }
        }
    }

    /// <summary>Trains a model on its own float32 copy of the weights (the model may be disposed
    /// after the trainer is made). One thread at a time (a second gets Status.Busy); Cancel works
    /// from any thread.</summary>
    public sealed class Trainer : IDisposable
    {
        internal readonly TrainerHandle Handle = new TrainerHandle();
        private readonly int nMtpHeads;
        private ExceptionDispatchInfo progressError;

        public Trainer(Model model, TrainerOptions options = null)
        {
            options = options ?? new TrainerOptions();
            var o = options.ToNative();
            var groups = options.ParamGroups ?? new ParamGroup[0];
            var natives = new Native.ParamGroup[groups.Length];
            for (int i = 0; i < groups.Length; i++)
            {
                if (groups[i] == null) throw new ArgumentException("ParamGroups[" + i + "] is null");
                // kiln reads a negative number as "not set": here that is null, so a negative (or
                // NaN) value is a mistake rather than a silent fallback.
                if (!((groups[i].LearningRate ?? 0f) >= 0f) || !((groups[i].WeightDecay ?? 0f) >= 0f))
                    throw new ArgumentException("ParamGroups[" + i + "]: LearningRate and WeightDecay must be >= 0 or null");
                natives[i] = new Native.ParamGroup
                {
                    // kiln reads a negative value as "not set".
                    role = (int)groups[i].Role, learning_rate = groups[i].LearningRate ?? -1f,
                    weight_decay = groups[i].WeightDecay ?? -1f,
                };
            }
            var pinned = GCHandle.Alloc(natives, GCHandleType.Pinned);
            try
            {
                o.param_groups = groups.Length == 0 ? IntPtr.Zero : pinned.AddrOfPinnedObject();
                o.n_param_groups = (UIntPtr)groups.Length;
                Native.ProgressFn fn = options.Progress == null ? null : ProgressTrampoline(options.Progress);
                if (fn != null) o.progress_fn = Marshal.GetFunctionPointerForDelegate(fn);
                IntPtr raw;
                KilnException.Check(Native.kiln_trainer_create(model.Handle, ref o, out raw));
                Handle.Adopt(raw, model.Handle.Parent);
                Handle.Progress = fn; // kiln holds its pointer until kiln_trainer_free
            }
            finally
            {
                pinned.Free();
            }
            nMtpHeads = Info.NMtpHeads;
        }

        private Trainer(IntPtr raw, SafeHandle runtime)
        {
            Handle.Adopt(raw, runtime);
            nMtpHeads = Info.NMtpHeads;
        }

        /// <summary>Recreates a trainer from a checkpoint written by Save, ready to continue exactly
        /// where it was (the progress callback is not saved: set Progress again).</summary>
        public static Trainer Load(Runtime runtime, string path)
        {
            IntPtr raw;
            KilnException.Check(Native.kiln_checkpoint_load(runtime.Handle, Utf8.CString(path), out raw));
            return new Trainer(raw, runtime.Handle);
        }

        private Native.ProgressFn ProgressTrampoline(Func<float, string, bool> progress)
        {
            return (fraction, stage, _) =>
            {
                if (progressError != null) return 1;
                try { return progress(fraction, Utf8.Read(stage)) ? 1 : 0; }
                catch (Exception e) { progressError = ExceptionDispatchInfo.Capture(e); return 1; }
            };
        }

        /// <summary>Replaces the step progress callback (null removes it); see TrainerOptions.Progress.</summary>
        public Func<float, string, bool> Progress
        {
            set
            {
                Native.ProgressFn fn = value == null ? null : ProgressTrampoline(value);
                KilnException.Check(Native.kiln_trainer_set_progress(Handle, fn, IntPtr.Zero));
                Handle.Progress = fn; // the previous delegate is no longer held by kiln
            }
        }

        public TrainerInfo Info
        {
            get
            {
                var i = new Native.TrainerInfo { struct_size = Native.SizeOf<Native.TrainerInfo>() };
                KilnException.Check(Native.kiln_trainer_get_info(Handle, ref i));
                return new TrainerInfo
                {
                    Step = i.step, NParameters = i.n_parameters, NMtpHeads = i.n_mtp_heads,
                    Architecture = Utf8.Read(i.architecture),
                };
            }
        }

        /// <summary>One optimizer step on a batch of `batch` rows × `seq` positions: inputs and
        /// targets hold batch*seq ids (target -1 = none), mask (0 = not counted) and weights (>= 0)
        /// are optional. On any error the weights and optimizer state are unchanged.</summary>
        public TrainResult Step(int[] inputs, int[] targets, int batch, int seq, byte[] mask = null, float[] weights = null)
        {
            return Run(false, inputs, targets, mask, weights, batch, seq);
        }

        /// <summary>One optimizer step on [batch, seq] arrays.</summary>
        public TrainResult Step(int[,] inputs, int[,] targets, byte[,] mask = null, float[,] weights = null)
        {
            return Run(false, inputs, targets, mask, weights, inputs.GetLength(0), inputs.GetLength(1));
        }

        /// <summary>The loss on a batch without updating anything (GradNorm 0, Step unchanged).</summary>
        public TrainResult EvalLoss(int[] inputs, int[] targets, int batch, int seq, byte[] mask = null, float[] weights = null)
        {
            return Run(true, inputs, targets, mask, weights, batch, seq);
        }

        public TrainResult EvalLoss(int[,] inputs, int[,] targets, byte[,] mask = null, float[,] weights = null)
        {
            return Run(true, inputs, targets, mask, weights, inputs.GetLength(0), inputs.GetLength(1));
        }

        /// <summary>Pins each array, checking first that it holds batch*seq items (kiln reads that
        /// many), so that kiln reads the managed arrays in place.</summary>
        private static GCHandle Pin(Array a, string name, long n, bool optional)
        {
            if (a == null)
            {
                if (optional) return default(GCHandle);
                throw new ArgumentNullException(name);
            }
            if (a.LongLength != n)
                throw new ArgumentException(name + " holds " + a.LongLength + " items but batch*seq is " + n, name);
            return GCHandle.Alloc(a, GCHandleType.Pinned);
        }

        private static IntPtr Address(GCHandle h) { return h.IsAllocated ? h.AddrOfPinnedObject() : IntPtr.Zero; }

        private TrainResult Run(bool evaluate, Array inputs, Array targets, Array mask, Array weights, int batch, int seq)
        {
            long n = batch > 0 && seq > 0 ? (long)batch * seq : 0;
            var pins = new GCHandle[4];
            try
            {
                pins[0] = Pin(inputs, "inputs", n, false);
                pins[1] = Pin(targets, "targets", n, false);
                pins[2] = Pin(mask, "mask", n, true);
                pins[3] = Pin(weights, "weights", n, true);
                var b = new Native.Batch
                {
                    struct_size = Native.SizeOf<Native.Batch>(), batch_size = batch, seq_len = seq,
                    inputs = Address(pins[0]), targets = Address(pins[1]), loss_mask = Address(pins[2]),
                    loss_weights = Address(pins[3]),
                };
                var r = new Native.TrainResult { struct_size = Native.SizeOf<Native.TrainResult>() };
                int status = evaluate ? Native.kiln_eval_loss(Handle, ref b, ref r) : Native.kiln_train_step(Handle, ref b, ref r);
                var error = progressError;
                progressError = null;
                if (error != null) error.Throw();
                KilnException.Check(status);
                var mtp = new[] { r.mtp_loss0, r.mtp_loss1, r.mtp_loss2, r.mtp_loss3, r.mtp_loss4, r.mtp_loss5, r.mtp_loss6, r.mtp_loss7 };
                Array.Resize(ref mtp, nMtpHeads);
                return new TrainResult
                {
                    Loss = r.loss, Objective = r.objective, MtpLosses = mtp, NTokens = r.n_tokens,
                    WeightSum = r.weight_sum, GradNorm = r.grad_norm, LearningRate = r.learning_rate,
                    TokensPerSecond = r.tokens_per_second, Step = r.step,
                };
            }
            finally
            {
                foreach (var h in pins) if (h.IsAllocated) h.Free();
            }
        }

        /// <summary>Runs the current weights on batch*seq input ids; see TrainerOutput for the layout.</summary>
        public float[] Forward(int[] inputs, int batch, int seq, TrainerOutput what = TrainerOutput.Logits)
        {
            return RunForward(inputs, batch, seq, what);
        }

        /// <summary>Runs the current weights on [batch, seq] input ids; see TrainerOutput for the layout.</summary>
        public float[] Forward(int[,] inputs, TrainerOutput what = TrainerOutput.Logits)
        {
            return RunForward(inputs, inputs.GetLength(0), inputs.GetLength(1), what);
        }

        private float[] RunForward(Array inputs, int batch, int seq, TrainerOutput what)
        {
            var pin = Pin(inputs, "inputs", batch > 0 && seq > 0 ? (long)batch * seq : 0, false);
            try
            {
                IntPtr ids = pin.AddrOfPinnedObject();
                UIntPtr needed;
                int status = Native.kiln_trainer_forward(Handle, ids, batch, seq, (int)what, null, UIntPtr.Zero, out needed);
                if (status != (int)Status.BufferTooSmall) KilnException.Check(status);
                var output = new float[(long)needed];
                KilnException.Check(Native.kiln_trainer_forward(Handle, ids, batch, seq, (int)what, output, needed, out needed));
                return output;
            }
            finally
            {
                pin.Free();
            }
        }

        /// <summary>The current weights as a new Model for generation (MTP heads excluded).</summary>
        public Model Snapshot()
        {
            IntPtr raw;
            KilnException.Check(Native.kiln_trainer_snapshot(Handle, out raw));
            return Model.Adopt(raw, Handle.Parent);
        }

        /// <summary>Opaque bytes (at most 1 MiB) saved with checkpoints for your data loader.</summary>
        public byte[] DataState
        {
            get
            {
                return Buffers.Fill<byte>((byte[] b, UIntPtr c, out UIntPtr n) => Native.kiln_trainer_get_data_state(Handle, b, c, out n));
            }
            set
            {
                var bytes = value ?? new byte[0];
                KilnException.Check(Native.kiln_trainer_set_data_state(Handle, bytes, (UIntPtr)bytes.Length));
            }
        }

        /// <summary>Stops the running step (it throws Status.Cancelled, nothing changed); safe from any
        /// thread. When no step runs, the next one is cancelled.</summary>
        public void Cancel() { KilnException.Check(Native.kiln_trainer_cancel(Handle)); }

        /// <summary>Writes a checkpoint atomically (a crash leaves the previous file intact).</summary>
        public void Save(string path) { KilnException.Check(Native.kiln_checkpoint_save(Handle, Utf8.CString(path))); }

        /// <summary>Writes the current weights as a Hugging Face model directory.</summary>
        public void ExportHF(string directory)
        {
            KilnException.Check(Native.kiln_trainer_export_hf(Handle, Utf8.CString(directory)));
        }

        public void Dispose() { Handle.Dispose(); }
    }
}
