//! kiln::Session: KV cache, sampler and RNG over a model; one thread at a time.
use crate::callbacks::{token_trampoline, Guarded, TokenFn};
use crate::error::{check, Error, Result};
use crate::model::{Model, ModelHandle};
use crate::sys;
use std::cell::Cell;
use std::ffi::CString;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_void};
use std::sync::Arc;

/// Options of `Model::session`; `Default` is kiln's defaults.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Tokens the KV cache holds; 0 = the model's (capped at 4096).
    pub context_length: i32,
    /// RNG seed for sampling.
    pub seed: u64,
}

impl Default for SessionOptions {
    fn default() -> Self {
        // SAFETY: zeroed C struct filled by kiln.
        let mut raw: sys::kiln_session_options = unsafe { std::mem::zeroed() };
        unsafe { sys::kiln_session_options_default(&mut raw, std::mem::size_of_val(&raw)) };
        SessionOptions {
            context_length: raw.context_length,
            seed: raw.seed,
        }
    }
}

/// Sampling settings; `Default` is kiln's defaults, `greedy()` is argmax.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub penalty_last_n: i32,
}

impl Default for Sampling {
    fn default() -> Self {
        // SAFETY: zeroed C struct filled by kiln.
        let mut raw: sys::kiln_sampling_options = unsafe { std::mem::zeroed() };
        unsafe { sys::kiln_sampling_options_default(&mut raw, std::mem::size_of_val(&raw)) };
        Sampling {
            temperature: raw.temperature,
            top_k: raw.top_k,
            top_p: raw.top_p,
            min_p: raw.min_p,
            repetition_penalty: raw.repetition_penalty,
            presence_penalty: raw.presence_penalty,
            frequency_penalty: raw.frequency_penalty,
            penalty_last_n: raw.penalty_last_n,
        }
    }
}

impl Sampling {
    pub fn greedy() -> Self {
        Sampling {
            temperature: 0.0,
            ..Default::default()
        }
    }

    fn to_raw(&self) -> sys::kiln_sampling_options {
        // SAFETY: zeroed C struct; every field is then set.
        let mut raw: sys::kiln_sampling_options = unsafe { std::mem::zeroed() };
        raw.struct_size = std::mem::size_of_val(&raw);
        raw.temperature = self.temperature;
        raw.top_k = self.top_k;
        raw.top_p = self.top_p;
        raw.min_p = self.min_p;
        raw.repetition_penalty = self.repetition_penalty;
        raw.presence_penalty = self.presence_penalty;
        raw.frequency_penalty = self.frequency_penalty;
        raw.penalty_last_n = self.penalty_last_n;
        raw
    }
}

/// Options of `Session::generate`; `Default` is kiln's defaults.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub sampling: Sampling,
    pub max_tokens: i32,
    /// For a text prompt: add BOS/EOS as the tokenizer config says.
    pub add_special: bool,
    pub parse_special: bool,
    /// Do not stop at end-of-sequence ids.
    pub ignore_eos: bool,
    /// Strings that end generation (not passed to the callback).
    pub stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        // SAFETY: zeroed C struct filled by kiln.
        let mut raw: sys::kiln_generate_options = unsafe { std::mem::zeroed() };
        unsafe { sys::kiln_generate_options_default(&mut raw, std::mem::size_of_val(&raw)) };
        GenerateOptions {
            sampling: Sampling::default(),
            max_tokens: raw.max_tokens,
            add_special: raw.tokenize_flags & sys::KILN_TOKENIZE_ADD_SPECIAL != 0,
            parse_special: raw.tokenize_flags & sys::KILN_TOKENIZE_PARSE_SPECIAL != 0,
            ignore_eos: raw.ignore_eos != 0,
            stop: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    None,
    Eos,
    MaxTokens,
    String,
    Callback,
    ContextFull,
    Other(u32),
}

impl StopReason {
    fn from_raw(raw: sys::kiln_stop_reason) -> Self {
        match raw {
            sys::KILN_STOP_NONE => StopReason::None,
            sys::KILN_STOP_EOS => StopReason::Eos,
            sys::KILN_STOP_MAX_TOKENS => StopReason::MaxTokens,
            sys::KILN_STOP_STRING => StopReason::String,
            sys::KILN_STOP_CALLBACK => StopReason::Callback,
            sys::KILN_STOP_CONTEXT_FULL => StopReason::ContextFull,
            other => StopReason::Other(other),
        }
    }
}

/// What `generate` produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The concatenated pieces (the generated text minus any stop string).
    pub text: String,
    /// The generated ids (including a final EOS).
    pub ids: Vec<i32>,
    pub stop_reason: StopReason,
    pub n_prompt_tokens: i32,
    pub n_generated: i32,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsMode {
    None,
    Last,
    All,
}

pub(crate) struct SessionHandle {
    raw: *mut sys::kiln_session,
    _model: Arc<ModelHandle>,
}

// SAFETY: the handle moves between threads with its Session; shared access is only
// kiln_session_cancel, which kiln.h allows from any thread.
unsafe impl Send for SessionHandle {}
unsafe impl Sync for SessionHandle {}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        // SAFETY: the last Session/CancelHandle is gone.
        unsafe { sys::kiln_session_free(self.raw) }
    }
}

/// A generation session: `Send`, not `Sync` (kiln.h: one thread at a time). Every call takes
/// `&mut self`; `cancel_handle()` gives a handle that stops it from another thread.
pub struct Session {
    handle: Arc<SessionHandle>,
    _not_sync: PhantomData<Cell<()>>,
}

/// Stops the call running on a session (or its next call) from any thread.
#[derive(Clone)]
pub struct CancelHandle {
    handle: Arc<SessionHandle>,
}

impl CancelHandle {
    pub fn cancel(&self) -> Result<()> {
        check(unsafe { sys::kiln_session_cancel(self.handle.raw) })
    }
}

impl Session {
    pub(crate) fn new(model: &Model, options: &SessionOptions) -> Result<Session> {
        // SAFETY: zeroed C struct filled by kiln, then changed.
        let mut raw: sys::kiln_session_options = unsafe { std::mem::zeroed() };
        check(unsafe { sys::kiln_session_options_default(&mut raw, std::mem::size_of_val(&raw)) })?;
        raw.context_length = options.context_length;
        raw.seed = options.seed;
        let mut session = std::ptr::null_mut();
        check(unsafe { sys::kiln_session_create(model.handle.raw, &raw, &mut session) })?;
        Ok(Session {
            handle: Arc::new(SessionHandle {
                raw: session,
                _model: model.handle.clone(),
            }),
            _not_sync: PhantomData,
        })
    }

    fn raw(&self) -> *mut sys::kiln_session {
        self.handle.raw
    }

    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            handle: self.handle.clone(),
        }
    }

    /// Empties the KV cache and re-seeds the RNG.
    pub fn reset(&mut self) -> Result<()> {
        check(unsafe { sys::kiln_session_reset(self.raw()) })
    }

    /// (tokens in the KV cache, its capacity).
    pub fn position(&self) -> Result<(i32, i32)> {
        let (mut n_past, mut capacity) = (0, 0);
        check(unsafe { sys::kiln_session_position(self.raw(), &mut n_past, &mut capacity) })?;
        Ok((n_past, capacity))
    }

    /// Runs `ids` after the cached context; returns float32 logits (vocab for Last, ids × vocab
    /// row-major for All, empty for None).
    pub fn forward(&mut self, ids: &[i32], mode: LogitsMode) -> Result<Vec<f32>> {
        let raw_mode = match mode {
            LogitsMode::None => sys::KILN_LOGITS_NONE,
            LogitsMode::Last => sys::KILN_LOGITS_LAST,
            LogitsMode::All => sys::KILN_LOGITS_ALL,
        };
        let mut needed = 0usize;
        let status = unsafe {
            sys::kiln_forward(
                self.raw(),
                ids.as_ptr(),
                ids.len(),
                raw_mode,
                std::ptr::null_mut(),
                0,
                &mut needed,
            )
        };
        // With no buffer kiln either ran (LogitsMode::None) or reported the size and ran nothing.
        if status != sys::KILN_ERR_BUFFER_TOO_SMALL {
            check(status)?;
            return Ok(Vec::new());
        }
        let mut logits = vec![0f32; needed];
        check(unsafe {
            sys::kiln_forward(
                self.raw(),
                ids.as_ptr(),
                ids.len(),
                raw_mode,
                logits.as_mut_ptr(),
                logits.len(),
                &mut needed,
            )
        })?;
        Ok(logits)
    }

    /// Samples one id from `logits` (vocab floats) with the session's RNG.
    pub fn sample(&mut self, logits: &[f32], sampling: &Sampling) -> Result<i32> {
        let raw = sampling.to_raw();
        let mut id = -1;
        check(unsafe {
            sys::kiln_sample(self.raw(), logits.as_ptr(), logits.len(), &raw, &mut id)
        })?;
        Ok(id)
    }

    /// Generates after a text prompt, streaming each piece to `on_piece(text, token_id)`; returning
    /// true from it stops generation (StopReason::Callback). A panic in it stops generation and is
    /// resumed here once kiln has returned.
    pub fn generate(
        &mut self,
        prompt: &str,
        options: &GenerateOptions,
        on_piece: impl FnMut(&str, i32) -> bool,
    ) -> Result<Generation> {
        self.run(Prompt::Text(prompt), options, on_piece)
    }

    /// The same with a tokenized prompt (may be empty when the cache already holds context).
    pub fn generate_ids(
        &mut self,
        prompt: &[i32],
        options: &GenerateOptions,
        on_piece: impl FnMut(&str, i32) -> bool,
    ) -> Result<Generation> {
        self.run(Prompt::Ids(prompt), options, on_piece)
    }

    fn run(
        &mut self,
        prompt: Prompt<'_>,
        options: &GenerateOptions,
        mut on_piece: impl FnMut(&str, i32) -> bool,
    ) -> Result<Generation> {
        let stops: Vec<CString> = options
            .stop
            .iter()
            .map(|s| {
                CString::new(s.as_str()).map_err(|_| {
                    Error::new(
                        sys::KILN_ERR_INVALID_ARGUMENT,
                        format!("stop string {:?} contains a NUL byte", s),
                    )
                })
            })
            .collect::<Result<_>>()?;
        let stop_ptrs: Vec<*const c_char> = stops.iter().map(|s| s.as_ptr()).collect();
        let sampling = options.sampling.to_raw();
        let mut ids = vec![0i32; options.max_tokens.max(0) as usize];
        let mut text = String::new();
        let mut collect = |piece: &str, id: i32| {
            text.push_str(piece);
            on_piece(piece, id)
        };
        let f: &mut TokenFn = &mut collect;
        let mut guard = Guarded::new(f);

        // SAFETY: zeroed C struct filled by kiln; every pointer set below outlives the call.
        let mut raw: sys::kiln_generate_options = unsafe { std::mem::zeroed() };
        check(unsafe {
            sys::kiln_generate_options_default(&mut raw, std::mem::size_of_val(&raw))
        })?;
        raw.sampling = &sampling;
        raw.max_tokens = options.max_tokens;
        raw.tokenize_flags = (if options.add_special {
            sys::KILN_TOKENIZE_ADD_SPECIAL
        } else {
            0
        }) | (if options.parse_special {
            sys::KILN_TOKENIZE_PARSE_SPECIAL
        } else {
            0
        });
        raw.ignore_eos = options.ignore_eos as i32;
        raw.stop_strings = if stop_ptrs.is_empty() {
            std::ptr::null()
        } else {
            stop_ptrs.as_ptr()
        };
        raw.n_stop_strings = stop_ptrs.len();
        raw.token_fn = Some(token_trampoline);
        raw.token_user_data = &mut guard as *mut Guarded<TokenFn> as *mut c_void;
        raw.output_ids = ids.as_mut_ptr();
        raw.output_ids_capacity = ids.len();

        let mut result: sys::kiln_generate_result = unsafe { std::mem::zeroed() };
        result.struct_size = std::mem::size_of_val(&result);
        let status = unsafe {
            match prompt {
                Prompt::Text(t) => sys::kiln_generate(
                    self.raw(),
                    t.as_ptr() as *const c_char,
                    t.len(),
                    &raw,
                    &mut result,
                ),
                Prompt::Ids(p) => {
                    sys::kiln_generate_ids(self.raw(), p.as_ptr(), p.len(), &raw, &mut result)
                }
            }
        };
        let error = if status == sys::KILN_OK {
            None
        } else {
            Some(Error::last(status))
        };
        guard.resume();
        if let Some(e) = error {
            return Err(e);
        }
        ids.truncate((result.n_generated.max(0) as usize).min(ids.len()));
        Ok(Generation {
            text,
            ids,
            stop_reason: StopReason::from_raw(result.stop_reason),
            n_prompt_tokens: result.n_prompt_tokens,
            n_generated: result.n_generated,
            prefill_seconds: result.prefill_seconds,
            decode_seconds: result.decode_seconds,
        })
    }
}

enum Prompt<'a> {
    Text(&'a str),
    Ids(&'a [i32]),
}
