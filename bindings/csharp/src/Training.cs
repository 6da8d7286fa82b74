// Training: Model.Create (a fresh model from a config), Kiln.Trainer (steps, evaluation, forward,
// checkpoints, export). Batch semantics (targets of -1, masks, weights) are kiln.h's ("Training").
using System;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Kiln.Raw;

namespace Kiln
{
    public enum Optimizer { AdamW = kiln_optimizer.KILN_OPTIMIZER_ADAMW, Muon = kiln_optimizer.KILN_OPTIMIZER_MUON }
    public enum LrSchedule
    {
        Constant = kiln_lr_schedule.KILN_LR_CONSTANT, WarmupCosine = kiln_lr_schedule.KILN_LR_WARMUP_COSINE,
        WarmupLinear = kiln_lr_schedule.KILN_LR_WARMUP_LINEAR,
        WarmupStableDecay = kiln_lr_schedule.KILN_LR_WARMUP_STABLE_DECAY,
    }

    /// <summary>What Trainer.Forward returns: Logits is [1 + NMtpHeads][B][T][vocab] (main head
    /// first), Hidden is [B][T][hidden] (the trunk's output); float32, row-major.</summary>
    public enum TrainerOutput
    {
        Logits = kiln_trainer_output.KILN_TRAINER_OUTPUT_LOGITS, Hidden = kiln_trainer_output.KILN_TRAINER_OUTPUT_HIDDEN,
    }

    /// <summary>The kinds of trainable tensor (kiln.h's kiln_param_role).</summary>
    public enum ParamRole
    {
        /// <summary>2-D weights inside blocks (attention, MLP).</summary>
        Matrix = kiln_param_role.KILN_PARAM_MATRIX,
        /// <summary>The token embedding (also the head when tied).</summary>
        Embedding = kiln_param_role.KILN_PARAM_EMBEDDING,
        /// <summary>Learned positions (GPT-2).</summary>
        Position = kiln_param_role.KILN_PARAM_POSITION,
        /// <summary>An untied lm_head.</summary>
        Head = kiln_param_role.KILN_PARAM_HEAD,
        /// <summary>Norm weights.</summary>
        Norm = kiln_param_role.KILN_PARAM_NORM,
        /// <summary>Biases.</summary>
        Bias = kiln_param_role.KILN_PARAM_BIAS,
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
        /// <summary>GPT-2-style residual dropout probability in [0, 1), train steps only; 0 = off.</summary>
        public float ResidualDropout;
        /// <summary>Called during every step: stage "forward" before each micro-batch's forward +
        /// backward pass (fraction = the share of micro-batches done), then "optimizer" before the
        /// update (fraction 1); returning true cancels the step. An exception it throws cancels the step and is rethrown by it.</summary>
        public Func<float, string, bool> Progress;

        public TrainerOptions()
        {
            using (var o = Defaults())
            {
            Optimizer = (Optimizer)o.optimizer; LearningRate = o.learning_rate; Beta1 = o.beta1; Beta2 = o.beta2;
            Epsilon = o.epsilon; WeightDecay = o.weight_decay; MuonLearningRate = o.muon_learning_rate;
            MuonMomentum = o.muon_momentum; MuonNsSteps = o.muon_ns_steps; Schedule = (LrSchedule)o.schedule;
            WarmupSteps = o.warmup_steps; TotalSteps = o.total_steps; MinLrRatio = o.min_lr_ratio;
            DecayFraction = o.decay_fraction; GradAccumSteps = o.grad_accum_steps; MaxGradNorm = o.max_grad_norm;
            Seed = o.seed; NMtpHeads = o.n_mtp_heads; ResidualDropout = o.residual_dropout;
            MtpLossWeights = new float[kiln_c.KILN_MAX_MTP_HEADS];
            for (int k = 0; k < MtpLossWeights.Length; k++)
                MtpLossWeights[k] = kiln_c.kiln_bind_trainer_options_mtp_loss_weight(o, k);
            }
        }

        internal static kiln_trainer_options Defaults()
        {
            var o = new kiln_trainer_options();
            KilnException.Check(kiln_c.kiln_trainer_options_default(o));
            return o;
        }

        /// <summary>A kiln_trainer_options holding these settings (the caller frees its parameter
        /// groups with kiln_bind_trainer_options_free_param_groups, then disposes it).</summary>
        internal kiln_trainer_options ToNative()
        {
            if (MtpLossWeights == null || MtpLossWeights.Length > kiln_c.KILN_MAX_MTP_HEADS)
                throw new ArgumentException("MtpLossWeights must hold at most " + kiln_c.KILN_MAX_MTP_HEADS + " weights");
            var o = Defaults();
            o.optimizer = (kiln_optimizer)Optimizer; o.learning_rate = LearningRate; o.beta1 = Beta1; o.beta2 = Beta2;
            o.epsilon = Epsilon; o.weight_decay = WeightDecay; o.muon_learning_rate = MuonLearningRate;
            o.muon_momentum = MuonMomentum; o.muon_ns_steps = MuonNsSteps; o.schedule = (kiln_lr_schedule)Schedule;
            o.warmup_steps = WarmupSteps; o.total_steps = TotalSteps; o.min_lr_ratio = MinLrRatio;
            o.decay_fraction = DecayFraction; o.grad_accum_steps = GradAccumSteps; o.max_grad_norm = MaxGradNorm;
            o.seed = Seed; o.n_mtp_heads = NMtpHeads; o.residual_dropout = ResidualDropout;
            for (int k = 0; k < kiln_c.KILN_MAX_MTP_HEADS; k++)
                kiln_c.kiln_bind_trainer_options_set_mtp_loss_weight(o, k, k < MtpLossWeights.Length ? MtpLossWeights[k] : 0f);
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
        internal kiln_c.ProgressFn Progress;

        protected override void Free(IntPtr raw)
        {
            kiln_c.kiln_trainer_free(new kiln_c.Unowned(raw));
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
            using (var o = new kiln_model_create_options())
            {
                KilnException.Check(kiln_c.kiln_model_create_options_default(o));
                if (seed.HasValue) o.seed = seed.Value;
                if (tokenizerPath != null) o.tokenizer_path = tokenizerPath; // the options own a copy
                var config = Utf8.Bytes(configJson);
                IntPtr raw;
                KilnException.Check(kiln_c.kiln_model_create(runtime.Handle, config, (ulong)config.Length, o, out raw));
                return Adopt(raw, runtime.Handle);
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
            var groups = options.ParamGroups ?? new ParamGroup[0];
            for (int i = 0; i < groups.Length; i++)
            {
                if (groups[i] == null) throw new ArgumentException("ParamGroups[" + i + "] is null");
                // kiln reads a negative number as "not set": here that is null, so a negative (or
                // NaN) value is a mistake rather than a silent fallback.
                if (!((groups[i].LearningRate ?? 0f) >= 0f) || !((groups[i].WeightDecay ?? 0f) >= 0f))
                    throw new ArgumentException("ParamGroups[" + i + "]: LearningRate and WeightDecay must be >= 0 or null");
            }
            var o = options.ToNative();
            try
            {
                foreach (var g in groups) // kiln reads a negative value as "not set"
                    kiln_c.kiln_bind_trainer_options_add_param_group(o, (int)g.Role, g.LearningRate ?? -1f, g.WeightDecay ?? -1f);
                kiln_c.ProgressFn fn = options.Progress == null ? null : ProgressTrampoline(options.Progress);
                o.progress_fn = fn;
                IntPtr raw;
                KilnException.Check(kiln_c.kiln_trainer_create(model.Handle, o, out raw));
                Handle.Adopt(raw, model.Handle.Parent);
                Handle.Progress = fn; // kiln holds its pointer until kiln_trainer_free
            }
            finally
            {
                kiln_c.kiln_bind_trainer_options_free_param_groups(o);
                o.Dispose();
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
            KilnException.Check(kiln_c.kiln_checkpoint_load(runtime.Handle, Utf8.CString(path), out raw));
            return new Trainer(raw, runtime.Handle);
        }

        private kiln_c.ProgressFn ProgressTrampoline(Func<float, string, bool> progress)
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
                kiln_c.ProgressFn fn = value == null ? null : ProgressTrampoline(value);
                KilnException.Check(kiln_c.kiln_trainer_set_progress(Handle, fn, IntPtr.Zero));
                Handle.Progress = fn; // the previous delegate is no longer held by kiln
            }
        }

        public TrainerInfo Info
        {
            get
            {
                using (var i = new kiln_trainer_info())
                {
                    KilnException.Check(kiln_c.kiln_trainer_get_info(Handle, i));
                    return new TrainerInfo
                    {
                        Step = i.step, NParameters = i.n_parameters, NMtpHeads = i.n_mtp_heads, Architecture = i.architecture,
                    };
                }
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
                using (var r = new kiln_train_result())
                {
                var status = evaluate
                    ? kiln_c.kiln_eval_loss(Handle, batch, seq, Address(pins[0]), Address(pins[1]), Address(pins[2]), Address(pins[3]), r)
                    : kiln_c.kiln_train_step(Handle, batch, seq, Address(pins[0]), Address(pins[1]), Address(pins[2]), Address(pins[3]), r);
                var error = progressError;
                progressError = null;
                if (error != null) error.Throw();
                KilnException.Check(status);
                var mtp = new double[nMtpHeads];
                for (int k = 0; k < mtp.Length; k++) mtp[k] = kiln_c.kiln_bind_train_result_mtp_loss(r, k);
                return new TrainResult
                {
                    Loss = r.loss, Objective = r.objective, MtpLosses = mtp, NTokens = r.n_tokens,
                    WeightSum = r.weight_sum, GradNorm = r.grad_norm, LearningRate = r.learning_rate,
                    TokensPerSecond = r.tokens_per_second, Step = r.step,
                };
                }
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
                ulong needed;
                var w = (kiln_trainer_output)what;
                var status = kiln_c.kiln_trainer_forward(Handle, ids, batch, seq, w, null, 0, out needed);
                if (status != kiln_status.KILN_ERR_BUFFER_TOO_SMALL) KilnException.Check(status);
                var output = new float[(long)needed];
                KilnException.Check(kiln_c.kiln_trainer_forward(Handle, ids, batch, seq, w, output, needed, out needed));
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
            KilnException.Check(kiln_c.kiln_trainer_snapshot(Handle, out raw));
            return Model.Adopt(raw, Handle.Parent);
        }

        /// <summary>Opaque bytes (at most 1 MiB) saved with checkpoints for your data loader.</summary>
        public byte[] DataState
        {
            get
            {
                return Buffers.Fill<byte>((byte[] b, ulong c, out ulong n) => kiln_c.kiln_trainer_get_data_state(Handle, b, c, out n));
            }
            set
            {
                var bytes = value ?? new byte[0];
                KilnException.Check(kiln_c.kiln_trainer_set_data_state(Handle, bytes, (ulong)bytes.Length));
            }
        }

        /// <summary>Stops the running step (it throws Status.Cancelled, nothing changed); safe from any
        /// thread. When no step runs, the next one is cancelled.</summary>
        public void Cancel() { KilnException.Check(kiln_c.kiln_trainer_cancel(Handle)); }

        /// <summary>Writes a checkpoint atomically (a crash leaves the previous file intact).</summary>
        public void Save(string path) { KilnException.Check(kiln_c.kiln_checkpoint_save(Handle, Utf8.CString(path))); }

        /// <summary>Writes the current weights as a Hugging Face model directory.</summary>
        public void ExportHF(string directory)
        {
            KilnException.Check(kiln_c.kiln_trainer_export_hf(Handle, Utf8.CString(directory)));
        }

        /// <summary>Joins a data-parallel group (kiln_trainer_join_data_parallel; kiln.h has the
        /// semantics): every rank calls it with the same id (from <see cref="Runtime.NcclId"/> on one
        /// rank) and worldSize and its own rank; blocks until all have joined. shardOptimizerState:
        /// ZeRO-1, each rank keeps (and checkpoints) its slice of the AdamW state; every rank then
        /// calls SaveCheckpoint together.</summary>
        public void JoinDataParallel(int worldSize, int rank, byte[] ncclId, bool shardOptimizerState = false)
        {
            if (ncclId == null || ncclId.Length != kiln_c.KILN_NCCL_ID_BYTES)
                throw new ArgumentException("the NCCL id must hold " + kiln_c.KILN_NCCL_ID_BYTES + " bytes", nameof(ncclId));
            using (var o = new kiln_data_parallel_options())
            {
                KilnException.Check(kiln_c.kiln_data_parallel_options_default(o));
                o.world_size = worldSize;
                o.rank = rank;
                o.shard_optimizer_state = shardOptimizerState ? 1 : 0;
                kiln_nccl_id id = o.id; // a view into o
                for (int k = 0; k < ncclId.Length; ++k) kiln_c.kiln_bind_nccl_id_set_byte(id, k, ncclId[k]);
                KilnException.Check(kiln_c.kiln_trainer_join_data_parallel(Handle, o));
            }
        }

        public void Dispose() { Handle.Dispose(); }
    }
}
