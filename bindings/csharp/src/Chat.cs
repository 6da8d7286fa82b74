// Chat templates: Model.ChatRender and Model.ChatRenderTokens over kiln.h's kiln_chat_* functions.
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;

namespace Kiln
{
    /// <summary>One conversation message. The JSON fields reach the template as parsed JSON; null = absent.</summary>
    public sealed class ChatMessage
    {
        public string Role;           // "system", "user", "assistant", "tool", ...
        public string Content;        // null: the template sees content as None
        public string ToolCallsJson;  // a JSON array: the message's tool_calls
        public string ExtraJson;      // a JSON object merged into the message (tool_call_id, name, ...)

        public ChatMessage() { }
        public ChatMessage(string role, string content) { Role = role; Content = content; }
    }

    /// <summary>How to render; null fields keep kiln's defaults.</summary>
    public sealed class ChatOptions
    {
        public bool AddGenerationPrompt = true; // end with the assistant header
        public string ToolsJson;                // a JSON array of tool definitions: the template's tools
        public string ExtraContextJson;         // a JSON object of extra template variables
        public string TemplateOverride;         // a Jinja template used instead of the model's
        public string TemplateName;             // which named template when the config lists several
        public long NowUnixSeconds;             // strftime_now()'s clock; 0 = now
        public ulong? MaxSteps;                 // evaluation budget (exceeded: Status.OutOfRange)
        public ulong? MaxOutputBytes;           // output budget in bytes (exceeded: Status.OutOfRange)
    }

    /// <summary>The native messages and options of one call, with the NUL-terminated UTF-8 copies
    /// of their strings in unmanaged memory (freed by Dispose).</summary>
    internal sealed class NativeChat : IDisposable
    {
        private readonly List<IntPtr> strings = new List<IntPtr>();
        internal readonly Native.ChatMessage[] Messages;
        internal Native.ChatOptions Options;

        internal NativeChat(IList<ChatMessage> messages, ChatOptions options)
        {
            try
            {
                Messages = new Native.ChatMessage[messages.Count];
                for (int i = 0; i < messages.Count; i++)
                {
                    var m = messages[i];
                    if (m == null || m.Role == null) throw new ArgumentException("chat message " + i + " has no Role");
                    Messages[i] = new Native.ChatMessage
                    {
                        role = Str(m.Role), content = Str(m.Content), tool_calls_json = Str(m.ToolCallsJson),
                        extra_json = Str(m.ExtraJson),
                    };
                }
                Options = new Native.ChatOptions();
                KilnException.Check(Native.kiln_chat_options_default(ref Options, Native.SizeOf<Native.ChatOptions>()));
                options = options ?? new ChatOptions();
                Options.add_generation_prompt = options.AddGenerationPrompt ? 1 : 0;
                Options.tools_json = Str(options.ToolsJson);
                Options.extra_context_json = Str(options.ExtraContextJson);
                Options.template_override = Str(options.TemplateOverride);
                Options.template_name = Str(options.TemplateName);
                Options.now_unix_seconds = options.NowUnixSeconds;
                if (options.MaxSteps.HasValue) Options.max_steps = options.MaxSteps.Value;
                if (options.MaxOutputBytes.HasValue) Options.max_output_bytes = (UIntPtr)options.MaxOutputBytes.Value;
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        private IntPtr Str(string s)
        {
            if (s == null) return IntPtr.Zero;
            var bytes = Utf8.CString(s);
            IntPtr p = Marshal.AllocHGlobal(bytes.Length);
            strings.Add(p);
            Marshal.Copy(bytes, 0, p, bytes.Length);
            return p;
        }

        public void Dispose()
        {
            foreach (var p in strings) Marshal.FreeHGlobal(p);
            strings.Clear();
        }
    }

    public sealed partial class Model
    {
        /// <summary>Renders a conversation with the model's chat template (or options.TemplateOverride)
        /// exactly as HF transformers' apply_chat_template(tokenize=False) does.</summary>
        public string ChatRender(IList<ChatMessage> messages, ChatOptions options = null)
        {
            using (var chat = new NativeChat(messages, options))
            {
                var text = Buffers.Fill<byte>((byte[] b, UIntPtr c, out UIntPtr n) =>
                    Native.kiln_chat_render(Handle, chat.Messages, (UIntPtr)chat.Messages.Length, ref chat.Options, b, c, out n));
                return System.Text.Encoding.UTF8.GetString(text);
            }
        }

        /// <summary>Renders and tokenizes for training: ids and mask of equal length, mask[i] = 1
        /// where the token belongs to an assistant reply as the template writes it, end-of-turn
        /// token included (kiln.h's kiln_chat_render_tokens).</summary>
        public void ChatRenderTokens(IList<ChatMessage> messages, ChatOptions options, out int[] ids, out byte[] mask)
        {
            using (var chat = new NativeChat(messages, options))
            {
                UIntPtr n;
                var count = (UIntPtr)chat.Messages.Length;
                int status = Native.kiln_chat_render_tokens(Handle, chat.Messages, count, ref chat.Options, null, null, UIntPtr.Zero, out n);
                if (status != (int)Status.BufferTooSmall) KilnException.Check(status);
                ids = new int[(int)n];
                mask = new byte[(int)n];
                KilnException.Check(Native.kiln_chat_render_tokens(Handle, chat.Messages, count, ref chat.Options, ids, mask, n, out n));
                if ((int)n != ids.Length)
                {
                    Array.Resize(ref ids, (int)n);
                    Array.Resize(ref mask, (int)n);
                }
            }
        }
    }
}
