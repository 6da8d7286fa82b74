//! Chat templates: `Model::chat_render` and `Model::chat_render_tokens` (kiln.h's kiln_chat_*).
use crate::error::{check, Error, Result};
use crate::model::Model;
use crate::sys;
use std::ffi::CString;
use std::os::raw::c_char;

/// One conversation message. JSON fields are passed to the template as parsed JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatMessage {
    /// "system", "user", "assistant", "tool", ...
    pub role: String,
    /// None: the template sees `content` as None.
    pub content: Option<String>,
    /// A JSON array: the message's `tool_calls`.
    pub tool_calls_json: Option<String>,
    /// A JSON object merged into the message (tool_call_id, name, reasoning_content, ...).
    pub extra_json: Option<String>,
}

impl ChatMessage {
    /// A message with a role and text content only.
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.to_string(),
            content: Some(content.to_string()),
            ..Default::default()
        }
    }
}

/// How to render. `None` fields keep kiln's defaults (kiln_chat_options_default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatOptions {
    /// End with the assistant header. Default true.
    pub add_generation_prompt: bool,
    /// A JSON array of tool definitions: the template's `tools`.
    pub tools_json: Option<String>,
    /// A JSON object of extra template variables (enable_thinking, reasoning_effort, ...).
    pub extra_context_json: Option<String>,
    /// A Jinja template used instead of the model's chat_template.
    pub template_override: Option<String>,
    /// Which named template, when the model's config lists several ("default" otherwise).
    pub template_name: Option<String>,
    /// strftime_now()'s clock in Unix seconds; 0 = now.
    pub now_unix_seconds: i64,
    /// Evaluation budget (exceeded: ErrorKind::OutOfRange).
    pub max_steps: Option<u64>,
    /// Output budget in bytes (exceeded: ErrorKind::OutOfRange).
    pub max_output_bytes: Option<usize>,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            add_generation_prompt: true,
            tools_json: None,
            extra_context_json: None,
            template_override: None,
            template_name: None,
            now_unix_seconds: 0,
            max_steps: None,
            max_output_bytes: None,
        }
    }
}

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| {
        Error::new(
            sys::KILN_ERR_INVALID_ARGUMENT,
            format!("chat {} contains a NUL byte", what),
        )
    })
}

fn opt_cstring(what: &str, s: &Option<String>) -> Result<Option<CString>> {
    s.as_deref().map(|s| cstring(what, s)).transpose()
}

fn ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// The C structs of one call plus the NUL-terminated strings they point into (kept alive here).
struct CChat {
    _strings: Vec<Option<CString>>,
    messages: Vec<sys::kiln_chat_message>,
    options: sys::kiln_chat_options,
}

impl CChat {
    fn new(messages: &[ChatMessage], options: &ChatOptions) -> Result<CChat> {
        let mut strings = Vec::with_capacity(4 * messages.len() + 4);
        let mut c_messages = Vec::with_capacity(messages.len());
        for m in messages {
            let role = Some(cstring("message role", &m.role)?);
            let content = opt_cstring("message content", &m.content)?;
            let tool_calls = opt_cstring("message tool_calls_json", &m.tool_calls_json)?;
            let extra = opt_cstring("message extra_json", &m.extra_json)?;
            // The CStrings' heap buffers do not move when the CStrings move into `strings`.
            c_messages.push(sys::kiln_chat_message {
                role: ptr(&role),
                content: ptr(&content),
                tool_calls_json: ptr(&tool_calls),
                extra_json: ptr(&extra),
            });
            strings.extend([role, content, tool_calls, extra]);
        }
        // SAFETY: zeroed C struct filled by kiln.
        let mut o: sys::kiln_chat_options = unsafe { std::mem::zeroed() };
        check(unsafe { sys::kiln_chat_options_default(&mut o, std::mem::size_of_val(&o)) })?;
        o.add_generation_prompt = options.add_generation_prompt as i32;
        let tools = opt_cstring("tools_json", &options.tools_json)?;
        let extra = opt_cstring("extra_context_json", &options.extra_context_json)?;
        let template = opt_cstring("template_override", &options.template_override)?;
        let name = opt_cstring("template_name", &options.template_name)?;
        o.tools_json = ptr(&tools);
        o.extra_context_json = ptr(&extra);
        o.template_override = ptr(&template);
        o.template_name = ptr(&name);
        o.now_unix_seconds = options.now_unix_seconds;
        if let Some(steps) = options.max_steps {
            o.max_steps = steps;
        }
        if let Some(bytes) = options.max_output_bytes {
            o.max_output_bytes = bytes;
        }
        strings.extend([tools, extra, template, name]);
        Ok(CChat {
            _strings: strings,
            messages: c_messages,
            options: o,
        })
    }
}

impl Model {
    /// Renders a conversation with the model's chat template (or `options.template_override`)
    /// exactly as HF transformers' `apply_chat_template(tokenize=False)` does.
    pub fn chat_render(&self, messages: &[ChatMessage], options: &ChatOptions) -> Result<String> {
        let c = CChat::new(messages, options)?;
        let call = |buf: *mut c_char, cap: usize, len: &mut usize| unsafe {
            // SAFETY: every pointer in `c` is valid for the call; buf holds cap bytes.
            sys::kiln_chat_render(
                self.handle.raw,
                c.messages.as_ptr(),
                c.messages.len(),
                &c.options,
                buf,
                cap,
                len,
            )
        };
        let bytes: Vec<c_char> = crate::error::fill(call)?;
        String::from_utf8(bytes.into_iter().map(|b| b as u8).collect()).map_err(|e| {
            Error::new(
                sys::KILN_ERR_FORMAT,
                format!("the chat template rendered invalid UTF-8: {}", e),
            )
        })
    }

    /// Renders and tokenizes for training: `(ids, mask)` of equal length, `mask[i]` 1 where the
    /// token belongs to an assistant reply as the template writes it, end-of-turn token included
    /// (kiln.h's `kiln_chat_render_tokens`).
    pub fn chat_render_tokens(
        &self,
        messages: &[ChatMessage],
        options: &ChatOptions,
    ) -> Result<(Vec<i32>, Vec<u8>)> {
        let c = CChat::new(messages, options)?;
        let call = |ids: *mut i32, mask: *mut u8, cap: usize, n: &mut usize| unsafe {
            // SAFETY: every pointer in `c` is valid for the call; ids and mask hold cap entries.
            sys::kiln_chat_render_tokens(
                self.handle.raw,
                c.messages.as_ptr(),
                c.messages.len(),
                &c.options,
                ids,
                mask,
                cap,
                n,
            )
        };
        let mut n = 0usize;
        let status = call(std::ptr::null_mut(), std::ptr::null_mut(), 0, &mut n);
        if status != sys::KILN_ERR_BUFFER_TOO_SMALL {
            check(status)?;
        }
        let mut ids = vec![0i32; n];
        let mut mask = vec![0u8; n];
        check(call(ids.as_mut_ptr(), mask.as_mut_ptr(), n, &mut n))?;
        ids.truncate(n);
        mask.truncate(n);
        Ok((ids, mask))
    }
}
