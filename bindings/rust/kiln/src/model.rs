//! kiln::Model: immutable weights, config and tokenizer, shared by sessions and threads.
use crate::callbacks::{progress_trampoline, Guarded, ProgressFn};
use crate::error::{check, fill, Error, Result};
use crate::runtime::{Runtime, RuntimeHandle};
use crate::session::{Session, SessionOptions};
use crate::sys;
use crate::tokenizer::{Tokenizer, TokenizerRef};
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_void};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub architecture: String,
    pub vocab_size: i32,
    pub hidden_size: i32,
    pub n_layers: i32,
    pub n_heads: i32,
    pub n_kv_heads: i32,
    pub head_dim: i32,
    pub intermediate_size: i32,
    pub context_length: i32,
    pub n_parameters: i64,
    /// None when the model has none.
    pub bos_token_id: Option<i32>,
    pub eos_token_id: Option<i32>,
    pub add_bos: bool,
}

pub(crate) struct ModelHandle {
    pub raw: *mut sys::kiln_model,
    _runtime: Arc<RuntimeHandle>,
}

// SAFETY: kiln.h: a model is immutable after loading; every call on it is thread-safe.
unsafe impl Send for ModelHandle {}
unsafe impl Sync for ModelHandle {}

impl ModelHandle {
    /// Wraps a kiln_model* kiln made on `runtime` (kiln_model_create, kiln_trainer_snapshot).
    pub(crate) fn new(raw: *mut sys::kiln_model, runtime: Arc<RuntimeHandle>) -> Self {
        ModelHandle {
            raw,
            _runtime: runtime,
        }
    }

    pub(crate) fn runtime(&self) -> &Arc<RuntimeHandle> {
        &self._runtime
    }
}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        // SAFETY: sessions hold their own Arc, so no wrapper uses the model after this.
        unsafe { sys::kiln_model_free(self.raw) }
    }
}

/// A loaded model. Cheap to clone; `Send + Sync`: share it between threads, one session each.
#[derive(Clone)]
pub struct Model {
    pub(crate) handle: Arc<ModelHandle>,
}

pub(crate) fn path_cstring(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::new(
            sys::KILN_ERR_INVALID_ARGUMENT,
            format!("model path {:?} contains a NUL byte", path),
        )
    })
}

fn opt_id(id: i32) -> Option<i32> {
    if id < 0 {
        None
    } else {
        Some(id)
    }
}

/// The number format a model computes in (kiln.h, `kiln_precision`): `Default` is BF16 on CUDA
/// and float32 on the CPU; `Bf16` is CUDA only; `F32` is the CUDA checking mode (float32
/// throughout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Default,
    Bf16,
    F32,
}

impl Precision {
    fn to_raw(self) -> sys::kiln_precision {
        match self {
            Precision::Default => sys::KILN_PRECISION_DEFAULT,
            Precision::Bf16 => sys::KILN_PRECISION_BF16,
            Precision::F32 => sys::KILN_PRECISION_F32,
        }
    }
}

impl Model {
    /// Loads a Hugging Face model directory.
    pub fn load(runtime: &Runtime, path: impl AsRef<Path>) -> Result<Model> {
        Self::load_raw(runtime, path.as_ref(), None, Precision::Default)
    }

    /// Loads in the given precision (see `Precision`).
    pub fn load_with_precision(
        runtime: &Runtime,
        path: impl AsRef<Path>,
        precision: Precision,
    ) -> Result<Model> {
        Self::load_raw(runtime, path.as_ref(), None, precision)
    }

    /// Loads with `progress(fraction, stage)`; returning true cancels (ErrorKind::Cancelled). A
    /// panic in `progress` cancels the load and is resumed here.
    pub fn load_with_progress(
        runtime: &Runtime,
        path: impl AsRef<Path>,
        mut progress: impl FnMut(f32, &str) -> bool,
    ) -> Result<Model> {
        let f: &mut ProgressFn = &mut progress;
        let mut guard = Guarded::new(f);
        let result = Self::load_raw(runtime, path.as_ref(), Some(&mut guard), Precision::Default);
        guard.resume();
        result
    }

    fn load_raw(
        runtime: &Runtime,
        path: &Path,
        progress: Option<&mut Guarded<ProgressFn>>,
        precision: Precision,
    ) -> Result<Model> {
        let cpath = path_cstring(path)?;
        // SAFETY: zeroed C struct filled by kiln.
        let mut options: sys::kiln_model_load_options = unsafe { std::mem::zeroed() };
        check(unsafe {
            sys::kiln_model_load_options_default(&mut options, std::mem::size_of_val(&options))
        })?;
        options.precision = precision.to_raw();
        if let Some(guard) = progress {
            options.progress_fn = Some(progress_trampoline);
            options.progress_user_data = guard as *mut Guarded<ProgressFn> as *mut c_void;
        }
        let mut raw = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; the progress state outlives it.
        check(unsafe {
            sys::kiln_model_load(runtime.handle.raw, cpath.as_ptr(), &options, &mut raw)
        })?;
        Ok(Model {
            handle: Arc::new(ModelHandle {
                raw,
                _runtime: runtime.handle.clone(),
            }),
        })
    }

    pub fn info(&self) -> Result<ModelInfo> {
        // SAFETY: zeroed then struct_size set, as kiln.h asks.
        let mut i: sys::kiln_model_info = unsafe { std::mem::zeroed() };
        i.struct_size = std::mem::size_of_val(&i);
        check(unsafe { sys::kiln_model_get_info(self.handle.raw, &mut i) })?;
        // SAFETY: valid while the model lives; copied now.
        let architecture = unsafe { CStr::from_ptr(i.architecture) }
            .to_string_lossy()
            .into_owned();
        Ok(ModelInfo {
            architecture,
            vocab_size: i.vocab_size,
            hidden_size: i.hidden_size,
            n_layers: i.n_layers,
            n_heads: i.n_heads,
            n_kv_heads: i.n_kv_heads,
            head_dim: i.head_dim,
            intermediate_size: i.intermediate_size,
            context_length: i.context_length,
            n_parameters: i.n_parameters,
            bos_token_id: opt_id(i.bos_token_id),
            eos_token_id: opt_id(i.eos_token_id),
            add_bos: i.add_bos != 0,
        })
    }

    /// Every id that ends generation.
    pub fn eos_ids(&self) -> Result<Vec<i32>> {
        fill(|buf, cap, n| unsafe { sys::kiln_model_eos_ids(self.handle.raw, buf, cap, n) })
    }

    /// Text to ids. `add_special` adds BOS/EOS as the tokenizer config says; `parse_special` lets
    /// special-token text become the special token (only for text you wrote).
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<i32>> {
        let flags = (if add_special {
            sys::KILN_TOKENIZE_ADD_SPECIAL
        } else {
            0
        }) | (if parse_special {
            sys::KILN_TOKENIZE_PARSE_SPECIAL
        } else {
            0
        });
        fill(|buf, cap, n| unsafe {
            sys::kiln_tokenize(
                self.handle.raw,
                text.as_ptr() as *const c_char,
                text.len(),
                flags,
                buf,
                cap,
                n,
            )
        })
    }

    /// Ids to the bytes they stand for.
    pub fn detokenize_bytes(&self, ids: &[i32], skip_special: bool) -> Result<Vec<u8>> {
        let flags = if skip_special {
            sys::KILN_DETOKENIZE_SKIP_SPECIAL
        } else {
            0
        };
        let bytes: Vec<c_char> = fill(|buf, cap, n| unsafe {
            sys::kiln_detokenize(self.handle.raw, ids.as_ptr(), ids.len(), flags, buf, cap, n)
        })?;
        Ok(bytes.into_iter().map(|b| b as u8).collect())
    }

    /// Ids to text (invalid UTF-8 from partial tokens becomes U+FFFD).
    pub fn detokenize(&self, ids: &[i32], skip_special: bool) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.detokenize_bytes(ids, skip_special)?).into_owned())
    }

    /// The raw bytes of one token (may be part of a UTF-8 character).
    pub fn token_to_piece(&self, id: i32) -> Result<Vec<u8>> {
        let bytes: Vec<c_char> = fill(|buf, cap, n| unsafe {
            sys::kiln_token_to_piece(self.handle.raw, id, buf, cap, n)
        })?;
        Ok(bytes.into_iter().map(|b| b as u8).collect())
    }

    /// The model's tokenizer, borrowed for as long as `self` is; ErrorKind::Unsupported for a
    /// model without one.
    pub fn tokenizer(&self) -> Result<TokenizerRef<'_>> {
        Tokenizer::borrow_from(self)
    }

    /// A new session on this model.
    pub fn session(&self, options: &SessionOptions) -> Result<Session> {
        Session::new(self, options)
    }
}
