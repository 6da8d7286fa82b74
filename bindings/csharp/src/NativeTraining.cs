// P/Invoke declarations of kiln.h's "Training" section (the rest of kiln.h is in Native.cs). Struct
// layouts mirror kiln.h field by field; kiln checks struct_size, so a drifted layout fails with
// KILN_ERR_VERSION_MISMATCH. Fixed-size C arrays are spelled out as fields (the structs stay
// blittable: no marshaling copies).
using System;
using System.Runtime.InteropServices;

namespace Kiln
{
    internal static partial class Native
    {
        internal const int MaxMtpHeads = 8; // KILN_MAX_MTP_HEADS

        [StructLayout(LayoutKind.Sequential)]
        internal struct ModelCreateOptions
        {
            public UIntPtr struct_size; public ulong seed; public IntPtr tokenizer_path;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct ParamGroup
        {
            public int role; public float learning_rate; public float weight_decay;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct TrainerOptions
        {
            public UIntPtr struct_size; public int optimizer; public float learning_rate; public float beta1, beta2;
            public float epsilon; public float weight_decay; public float muon_learning_rate; public float muon_momentum;
            public int muon_ns_steps; public IntPtr param_groups; public UIntPtr n_param_groups; public int schedule;
            public long warmup_steps; public long total_steps; public float min_lr_ratio; public float decay_fraction;
            public int grad_accum_steps; public float max_grad_norm; public ulong seed; public int n_mtp_heads;
            public float mtp_loss_weight0, mtp_loss_weight1, mtp_loss_weight2, mtp_loss_weight3;
            public float mtp_loss_weight4, mtp_loss_weight5, mtp_loss_weight6, mtp_loss_weight7;
            public IntPtr progress_fn; public IntPtr progress_user_data;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct Batch
        {
            public UIntPtr struct_size; public int batch_size; public int seq_len; public IntPtr inputs;
            public IntPtr targets; public IntPtr loss_mask; public IntPtr loss_weights;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct TrainResult
        {
            public UIntPtr struct_size; public double loss; public double objective;
            public double mtp_loss0, mtp_loss1, mtp_loss2, mtp_loss3, mtp_loss4, mtp_loss5, mtp_loss6, mtp_loss7;
            public long n_tokens; public double weight_sum; public double grad_norm; public double learning_rate;
            public double tokens_per_second; public long step;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct TrainerInfo
        {
            public UIntPtr struct_size; public long step; public long n_parameters; public int n_mtp_heads;
            public IntPtr architecture;
        }

        [DllImport(Lib)] internal static extern int kiln_model_create_options_default(ref ModelCreateOptions options, UIntPtr structSize);
        [DllImport(Lib)] internal static extern int kiln_model_create(RuntimeHandle runtime, byte[] configJson, UIntPtr configJsonLen, ref ModelCreateOptions options, out IntPtr model);

        [DllImport(Lib)] internal static extern int kiln_trainer_options_default(ref TrainerOptions options, UIntPtr structSize);
        [DllImport(Lib)] internal static extern int kiln_trainer_create(ModelHandle model, ref TrainerOptions options, out IntPtr trainer);
        [DllImport(Lib)] internal static extern void kiln_trainer_free(IntPtr trainer);
        [DllImport(Lib)] internal static extern int kiln_train_step(TrainerHandle trainer, ref Batch batch, ref TrainResult result);
        [DllImport(Lib)] internal static extern int kiln_eval_loss(TrainerHandle trainer, ref Batch batch, ref TrainResult result);
        [DllImport(Lib)] internal static extern int kiln_trainer_cancel(TrainerHandle trainer);
        [DllImport(Lib)] internal static extern int kiln_trainer_get_info(TrainerHandle trainer, ref TrainerInfo info);
        [DllImport(Lib)] internal static extern int kiln_trainer_forward(TrainerHandle trainer, IntPtr inputs, int batchSize, int seqLen, int what, float[] output, UIntPtr capacity, out UIntPtr nOut);
        [DllImport(Lib)] internal static extern int kiln_trainer_snapshot(TrainerHandle trainer, out IntPtr model);
        [DllImport(Lib)] internal static extern int kiln_trainer_set_data_state(TrainerHandle trainer, byte[] data, UIntPtr size);
        [DllImport(Lib)] internal static extern int kiln_trainer_get_data_state(TrainerHandle trainer, byte[] data, UIntPtr capacity, out UIntPtr size);
        [DllImport(Lib)] internal static extern int kiln_checkpoint_save(TrainerHandle trainer, byte[] path);
        [DllImport(Lib)] internal static extern int kiln_checkpoint_load(RuntimeHandle runtime, byte[] path, out IntPtr trainer);
        [DllImport(Lib)] internal static extern int kiln_trainer_set_progress(TrainerHandle trainer, ProgressFn fn, IntPtr userData);
        [DllImport(Lib)] internal static extern int kiln_trainer_export_hf(TrainerHandle trainer, byte[] directory);
    }
}
