// Chat templates: Model.ChatRender and Model.ChatRenderTokens over kiln.h's kiln_chat_* functions.
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using Kiln.Raw;

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

    /// <summary>The native messages and options of one call: the messages as the raw layer takes
    /// them (4 NUL-terminated UTF-8 strings each in unmanaged memory, IntPtr.Zero = NULL, then 4
    /// zeros), the options as a kiln_chat_options proxy (freed by Dispose).</summary>
    internal sealed class NativeChat : IDisposable
    {
        private readonly List<IntPtr> strings = new List<IntPtr>();
        internal readonly IntPtr[] Messages;
        internal readonly ulong Count;
        internal readonly kiln_chat_options Options = new kiln_chat_options();

        internal NativeChat(IList<ChatMessage> messages, ChatOptions options)
        {
            try
            {
                Count = (ulong)messages.Count;
                Messages = new IntPtr[4 * (messages.Count + 1)];
                for (int i = 0; i < messages.Count; i++)
                {
                    var m = messages[i];
                    if (m == null || m.Role == null) throw new ArgumentException("chat message " + i + " has no Role");
                    Messages[4 * i] = Str(m.Role);
                    Messages[4 * i + 1] = Str(m.Content);
                    Messages[4 * i + 2] = Str(m.ToolCallsJson);
                    Messages[4 * i + 3] = Str(m.ExtraJson);
                }
                KilnException.Check(kiln_c.kiln_chat_options_default(Options));
                options = options ?? new ChatOptions();
                Options.add_generation_prompt = options.AddGenerationPrompt ? 1 : 0;
                // The options own copies of these strings (kiln.i's memberin typemaps); null leaves NULL.
                if (options.ToolsJson != null) Options.tools_json = options.ToolsJson;
                if (options.ExtraContextJson != null) Options.extra_context_json = options.ExtraContextJson;
                if (options.TemplateOverride != null) Options.template_override = options.TemplateOverride;
                if (options.TemplateName != null) Options.template_name = options.TemplateName;
                Options.now_unix_seconds = options.NowUnixSeconds;
                if (options.MaxSteps.HasValue) Options.max_steps = options.MaxSteps.Value;
                if (options.MaxOutputBytes.HasValue) Options.max_output_bytes = options.MaxOutputBytes.Value;
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
            Options.Dispose();
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
                var text = Buffers.Fill<byte>((byte[] b, ulong c, out ulong n) =>
                    kiln_c.kiln_chat_render(Handle, chat.Messages, chat.Count, chat.Options, b, c, out n));
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
                ulong n;
                var status = kiln_c.kiln_chat_render_tokens(Handle, chat.Messages, chat.Count, chat.Options, null, null, 0, out n);
                if (status != kiln_status.KILN_ERR_BUFFER_TOO_SMALL) KilnException.Check(status);
                ids = new int[(int)n];
                mask = new byte[(int)n];
                KilnException.Check(kiln_c.kiln_chat_render_tokens(Handle, chat.Messages, chat.Count, chat.Options, ids, mask, n, out n));
                if ((int)n != ids.Length)
                {
                    Array.Resize(ref ids, (int)n);
                    Array.Resize(ref mask, (int)n);
                }
            }
        }
    }
}
