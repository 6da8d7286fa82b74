//! kiln::quantize: conversion of a model to a GGUF file (kiln_model_quantize).
use crate::callbacks::{progress_trampoline, Guarded, ProgressFn};
use crate::error::{check, Result};
use crate::model::path_cstring;
use crate::runtime::Runtime;
use crate::sys;
use std::os::raw::c_void;
use std::path::Path;

/// The GGUF type written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantizeType {
    F16,
    Q8_0,
    /// llama.cpp's Q4_K_M mix (Q4_K, Q6_K for the output layer and some attn_v / ffn_down).
    Q4KM,
}

impl QuantizeType {
    fn raw(self) -> sys::kiln_quantize_type {
        match self {
            QuantizeType::F16 => sys::KILN_QUANTIZE_F16,
            QuantizeType::Q8_0 => sys::KILN_QUANTIZE_Q8_0,
            QuantizeType::Q4KM => sys::KILN_QUANTIZE_Q4_K_M,
        }
    }
}

impl Runtime {
    /// Converts a Hugging Face model directory or a GGUF file `src` to the GGUF file `dst`
    /// (written atomically). `n_threads` <= 0 uses the runtime's thread count.
    pub fn quantize(
        &self,
        src: impl AsRef<Path>,
        dst: impl AsRef<Path>,
        kind: QuantizeType,
        n_threads: i32,
    ) -> Result<()> {
        self.quantize_raw(src.as_ref(), dst.as_ref(), kind, n_threads, None)
    }

    /// As `quantize`, with `progress(fraction, stage)`; returning true cancels
    /// (ErrorKind::Cancelled). A panic in `progress` cancels and is resumed here.
    pub fn quantize_with_progress(
        &self,
        src: impl AsRef<Path>,
        dst: impl AsRef<Path>,
        kind: QuantizeType,
        n_threads: i32,
        mut progress: impl FnMut(f32, &str) -> bool,
    ) -> Result<()> {
        let f: &mut ProgressFn = &mut progress;
        let mut guard = Guarded::new(f);
        let result = self.quantize_raw(src.as_ref(), dst.as_ref(), kind, n_threads, Some(&mut guard));
        guard.resume();
        result
    }

    fn quantize_raw(
        &self,
        src: &Path,
        dst: &Path,
        kind: QuantizeType,
        n_threads: i32,
        progress: Option<&mut Guarded<ProgressFn>>,
    ) -> Result<()> {
        let csrc = path_cstring(src)?;
        let cdst = path_cstring(dst)?;
        // SAFETY: zeroed C struct filled by kiln.
        let mut options: sys::kiln_quantize_options = unsafe { std::mem::zeroed() };
        check(unsafe {
            sys::kiln_quantize_options_default(&mut options, std::mem::size_of_val(&options))
        })?;
        options.type_ = kind.raw();
        options.n_threads = n_threads;
        if let Some(guard) = progress {
            options.progress_fn = Some(progress_trampoline);
            options.progress_user_data = guard as *mut Guarded<ProgressFn> as *mut c_void;
        }
        // SAFETY: all pointers are valid for the call; the progress state outlives it.
        check(unsafe {
            sys::kiln_model_quantize(self.handle.raw, csrc.as_ptr(), cdst.as_ptr(), &options)
        })
    }
}
