// P/Invoke declarations of kiln.h (the raw layer of the Kiln namespace). Struct layouts mirror
// kiln.h field by field (size_t is UIntPtr); kiln checks each struct's struct_size, so a layout
// that drifted from the header fails with KILN_ERR_VERSION_MISMATCH instead of corrupting memory.
// bindings/check_coverage.py fails when a kiln.h function has no declaration here.
using System;
using System.Runtime.InteropServices;

namespace Kiln
{
    internal static partial class Native
    {
        private const string Lib = "kiln";
        internal const uint AbiVersion = 1; // KILN_ABI_VERSION of the kiln.h these mirror

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void LogFn(int level, IntPtr message, IntPtr userData);
        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate int ProgressFn(float fraction, IntPtr stage, IntPtr userData);
        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate int TokenFn(IntPtr text, UIntPtr textLen, int tokenId, IntPtr userData);

        [StructLayout(LayoutKind.Sequential)]
        internal struct RuntimeOptions
        {
            public UIntPtr struct_size; public int backend; public int device_index; public int n_threads;
            public IntPtr log_fn; public IntPtr log_user_data; public int log_level; public ulong device_memory_limit;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct RuntimeInfo
        {
            public UIntPtr struct_size; public int backend; public int n_threads; public IntPtr device_name;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct ModelLoadOptions
        {
            public UIntPtr struct_size; public IntPtr progress_fn; public IntPtr progress_user_data;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct QuantizeOptions
        {
            public UIntPtr struct_size; public int type; public int n_threads; public IntPtr progress_fn;
            public IntPtr progress_user_data;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct ModelInfo
        {
            public UIntPtr struct_size; public IntPtr architecture; public int vocab_size; public int hidden_size;
            public int n_layers; public int n_heads; public int n_kv_heads; public int head_dim;
            public int intermediate_size; public int context_length; public long n_parameters;
            public int bos_token_id; public int eos_token_id; public int add_bos;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct SessionOptions
        {
            public UIntPtr struct_size; public int context_length; public ulong seed;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct SamplingOptions
        {
            public UIntPtr struct_size; public float temperature; public int top_k; public float top_p; public float min_p;
            public float repetition_penalty; public float presence_penalty; public float frequency_penalty;
            public int penalty_last_n;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct GenerateOptions
        {
            public UIntPtr struct_size; public IntPtr sampling; public int max_tokens; public uint tokenize_flags;
            public int ignore_eos; public IntPtr stop_strings; public UIntPtr n_stop_strings; public IntPtr token_fn;
            public IntPtr token_user_data; public IntPtr output_ids; public UIntPtr output_ids_capacity;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct GenerateResult
        {
            public UIntPtr struct_size; public int n_prompt_tokens; public int n_generated; public int stop_reason;
            public double prefill_seconds; public double decode_seconds; public double prefill_tokens_per_second;
            public double decode_tokens_per_second;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct ChatMessage
        {
            public IntPtr role; public IntPtr content; public IntPtr tool_calls_json; public IntPtr extra_json;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct ChatOptions
        {
            public UIntPtr struct_size; public int add_generation_prompt; public IntPtr tools_json;
            public IntPtr extra_context_json; public IntPtr template_override; public IntPtr template_name;
            public long now_unix_seconds; public ulong max_steps; public UIntPtr max_output_bytes;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct TokenizerTrainOptions
        {
            public UIntPtr struct_size; public int vocab_size; public IntPtr pattern; public IntPtr special_tokens;
            public UIntPtr n_special_tokens; public int n_threads; public int min_frequency; public IntPtr progress_fn;
            public IntPtr progress_user_data;
        }

        internal static UIntPtr SizeOf<T>() { return (UIntPtr)Marshal.SizeOf(typeof(T)); }

        [DllImport(Lib)] internal static extern IntPtr kiln_status_name(int status);
        [DllImport(Lib)] internal static extern IntPtr kiln_last_error();
        [DllImport(Lib)] internal static extern uint kiln_abi_version();
        [DllImport(Lib)] internal static extern IntPtr kiln_version_string();
        [DllImport(Lib)] internal static extern int kiln_set_log_callback(LogFn fn, IntPtr userData, int minLevel);

        [DllImport(Lib)] internal static extern int kiln_runtime_options_default(ref RuntimeOptions options, UIntPtr structSize);
        [DllImport(Lib)] internal static extern int kiln_runtime_create(ref RuntimeOptions options, out IntPtr runtime);
        [DllImport(Lib)] internal static extern void kiln_runtime_free(IntPtr runtime);
        [DllImport(Lib)] internal static extern int kiln_runtime_get_info(RuntimeHandle runtime, ref RuntimeInfo info);

        [DllImport(Lib)] internal static extern int kiln_model_load_options_default(ref ModelLoadOptions options, UIntPtr structSize);
        [DllImport(Lib)] internal static extern int kiln_model_load(RuntimeHandle runtime, byte[] path, ref ModelLoadOptions options, out IntPtr model);
        [DllImport(Lib)] internal static extern int kiln_quantize_options_default(ref QuantizeOptions options, UIntPtr structSize);
        [DllImport(Lib)] internal static extern int kiln_model_quantize(RuntimeHandle runtime, byte[] src, byte[] dst, ref QuantizeOptions options);
        [DllImport(Lib)] internal static extern void kiln_model_free(IntPtr model);
        [DllImport(Lib)] internal static extern int kiln_model_get_info(ModelHandle model, ref ModelInfo info);
        [DllImport(Lib)] internal static extern int kiln_model_eos_ids(ModelHandle model, int[] ids, UIntPtr capacity, out UIntPtr nIds);

        [DllImport(Lib)] internal static extern int kiln_tokenize(ModelHandle model, byte[] text, UIntPtr textLen, uint flags, int[] ids, UIntPtr capacity, out UIntPtr nIds);
        [DllImport(Lib)] internal static extern int kiln_detokenize(ModelHandle model, int[] ids, UIntPtr nIds, uint flags, byte[] text, UIntPtr capacity, out UIntPtr textLen);
        [DllImport(Lib)] internal static extern int kiln_token_to_piece(ModelHandle model, int id, byte[] piece, UIntPtr capacity, out UIntPtr pieceLen);

        [DllImport(Lib)] internal static extern int kiln_tokenizer_load(byte[] path, out IntPtr tokenizer);
        [DllImport(Lib)] internal static extern void kiln_tokenizer_free(IntPtr tokenizer);
        [DllImport(Lib)] internal static extern int kiln_tokenizer_encode(TokenizerHandle tokenizer, byte[] text, UIntPtr textLen, uint flags, int[] ids, UIntPtr capacity, out UIntPtr nIds);
        [DllImport(Lib)] internal static extern int kiln_tokenizer_decode(TokenizerHandle tokenizer, int[] ids, UIntPtr nIds, uint flags, byte[] text, UIntPtr capacity, out UIntPtr textLen);
        [DllImport(Lib)] internal static extern int kiln_tokenizer_vocab_size(TokenizerHandle tokenizer, out int size);
        [DllImport(Lib)] internal static extern int kiln_tokenizer_encode_threaded(TokenizerHandle tokenizer, byte[] text, UIntPtr textLen, uint flags, int nThreads, int[] ids, UIntPtr capacity, out UIntPtr nIds);
        [DllImport(Lib)] internal static extern int kiln_tokenizer_encode_batch(TokenizerHandle tokenizer, IntPtr[] texts, UIntPtr[] textLens, UIntPtr nTexts, uint flags, int nThreads, int[] ids, UIntPtr capacity, [Out] UIntPtr[] offsets, out UIntPtr nIds);
        [DllImport(Lib)] internal static extern int kiln_model_tokenizer(ModelHandle model, out IntPtr tokenizer);
        [DllImport(Lib)] internal static extern int kiln_tokenizer_train_options_default(ref TokenizerTrainOptions options, UIntPtr structSize);
        [DllImport(Lib)] internal static extern int kiln_tokenizer_train(IntPtr files, UIntPtr nFiles, ref TokenizerTrainOptions options, out IntPtr tokenizer);
        [DllImport(Lib)] internal static extern int kiln_tokenizer_save(TokenizerHandle tokenizer, byte[] path);

        [DllImport(Lib)] internal static extern int kiln_session_options_default(ref SessionOptions options, UIntPtr structSize);
        [DllImport(Lib)] internal static extern int kiln_session_create(ModelHandle model, ref SessionOptions options, out IntPtr session);
        [DllImport(Lib)] internal static extern void kiln_session_free(IntPtr session);
        [DllImport(Lib)] internal static extern int kiln_session_reset(SessionHandle session);
        [DllImport(Lib)] internal static extern int kiln_session_position(SessionHandle session, out int nPast, out int contextLength);
        [DllImport(Lib)] internal static extern int kiln_session_cancel(SessionHandle session);
        [DllImport(Lib)] internal static extern int kiln_forward(SessionHandle session, int[] ids, UIntPtr nIds, int mode, float[] logits, UIntPtr capacity, out UIntPtr nLogits);

        [DllImport(Lib)] internal static extern int kiln_sampling_options_default(ref SamplingOptions options, UIntPtr structSize);
        [DllImport(Lib)] internal static extern int kiln_generate_options_default(ref GenerateOptions options, UIntPtr structSize);
        [DllImport(Lib)] internal static extern int kiln_generate(SessionHandle session, byte[] prompt, UIntPtr promptLen, ref GenerateOptions options, ref GenerateResult result);
        [DllImport(Lib)] internal static extern int kiln_generate_ids(SessionHandle session, int[] promptIds, UIntPtr nPromptIds, ref GenerateOptions options, ref GenerateResult result);
        [DllImport(Lib)] internal static extern int kiln_sample(SessionHandle session, float[] logits, UIntPtr nLogits, ref SamplingOptions options, out int id);

        [DllImport(Lib)] internal static extern int kiln_chat_options_default(ref ChatOptions options, UIntPtr structSize);
        [DllImport(Lib)] internal static extern int kiln_chat_render(ModelHandle model, ChatMessage[] messages, UIntPtr nMessages, ref ChatOptions options, byte[] text, UIntPtr capacity, out UIntPtr textLen);
        [DllImport(Lib)] internal static extern int kiln_chat_render_tokens(ModelHandle model, ChatMessage[] messages, UIntPtr nMessages, ref ChatOptions options, int[] ids, byte[] mask, UIntPtr capacity, out UIntPtr nIds);
    }
}
