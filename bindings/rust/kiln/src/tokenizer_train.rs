//! Training a byte-level BPE tokenizer (kiln_tokenizer_train) and saving it (kiln_tokenizer_save).
use crate::callbacks::{progress_trampoline, Guarded, ProgressFn};
use crate::error::{check, Error, Result};
use crate::sys;
use crate::tokenizer::Tokenizer;
use std::ffi::CString;
use std::os::raw::{c_char, c_void};
use std::path::Path;

/// Options of [`Tokenizer::train`]; `Default` gives kiln's defaults.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// 256 byte tokens + merges + special tokens.
    pub vocab_size: i32,
    /// Get the last ids, in this order; their text in the files is not counted.
    pub special_tokens: Vec<String>,
    /// Pre-tokenizer regex; `None` = Llama 3's (`KILN_TOKENIZER_DEFAULT_PATTERN`).
    pub pattern: Option<String>,
    /// Counting threads; 0 = all cores.
    pub n_threads: i32,
    /// Pairs seen fewer times are never merged.
    pub min_frequency: i32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            vocab_size: 32768,
            special_tokens: Vec::new(),
            pattern: None,
            n_threads: 0,
            min_frequency: 2,
        }
    }
}

fn c_string(value: &[u8], what: &str) -> Result<CString> {
    CString::new(value).map_err(|_| {
        Error::new(
            sys::KILN_ERR_INVALID_ARGUMENT,
            format!("{} contains a NUL byte", what),
        )
    })
}

impl Tokenizer {
    /// Trains a byte-level BPE tokenizer on UTF-8 text files. Save it with [`Tokenizer::save`].
    pub fn train<P: AsRef<Path>>(files: &[P], options: &TrainOptions) -> Result<Tokenizer> {
        Self::train_raw(files, options, None)
    }

    /// As [`Tokenizer::train`], calling `progress(fraction, stage)` on this thread; returning true
    /// cancels (ErrorKind::Cancelled). A panic in `progress` cancels and is resumed here.
    pub fn train_with_progress<P: AsRef<Path>>(
        files: &[P],
        options: &TrainOptions,
        mut progress: impl FnMut(f32, &str) -> bool,
    ) -> Result<Tokenizer> {
        let f: &mut ProgressFn = &mut progress;
        let mut guard = Guarded::new(f);
        let result = Self::train_raw(files, options, Some(&mut guard));
        guard.resume();
        result
    }

    fn train_raw<P: AsRef<Path>>(
        files: &[P],
        options: &TrainOptions,
        progress: Option<&mut Guarded<ProgressFn>>,
    ) -> Result<Tokenizer> {
        use std::os::unix::ffi::OsStrExt;
        let paths = files
            .iter()
            .map(|p| c_string(p.as_ref().as_os_str().as_bytes(), "a training file path"))
            .collect::<Result<Vec<_>>>()?;
        let path_ptrs: Vec<*const c_char> = paths.iter().map(|p| p.as_ptr()).collect();
        let specials = options
            .special_tokens
            .iter()
            .map(|s| c_string(s.as_bytes(), "a special token"))
            .collect::<Result<Vec<_>>>()?;
        let special_ptrs: Vec<*const c_char> = specials.iter().map(|s| s.as_ptr()).collect();
        let pattern = match &options.pattern {
            Some(p) => Some(c_string(p.as_bytes(), "the pattern")?),
            None => None,
        };
        // SAFETY: zeroed C struct filled by kiln.
        let mut o: sys::kiln_tokenizer_train_options = unsafe { std::mem::zeroed() };
        check(unsafe {
            sys::kiln_tokenizer_train_options_default(&mut o, std::mem::size_of_val(&o))
        })?;
        o.vocab_size = options.vocab_size;
        o.n_threads = options.n_threads;
        o.min_frequency = options.min_frequency;
        if let Some(p) = &pattern {
            o.pattern = p.as_ptr();
        }
        if !special_ptrs.is_empty() {
            o.special_tokens = special_ptrs.as_ptr();
            o.n_special_tokens = special_ptrs.len();
        }
        if let Some(guard) = progress {
            o.progress_fn = Some(progress_trampoline);
            o.progress_user_data = guard as *mut Guarded<ProgressFn> as *mut c_void;
        }
        let mut raw = std::ptr::null_mut();
        // SAFETY: every pointer (paths, specials, pattern, progress state) outlives the call.
        check(unsafe {
            sys::kiln_tokenizer_train(path_ptrs.as_ptr(), path_ptrs.len(), &o, &mut raw)
        })?;
        Ok(Tokenizer::from_owned_raw(raw))
    }

    /// Writes a trained tokenizer's tokenizer.json atomically: to `path` when it ends in .json,
    /// else into the directory `path` (created when missing). A loaded tokenizer gives
    /// ErrorKind::Unsupported.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let cpath = c_string(path.as_ref().as_os_str().as_bytes(), "the save path")?;
        // SAFETY: the handle is alive and the path valid for the call.
        check(unsafe { sys::kiln_tokenizer_save(self.raw_handle(), cpath.as_ptr()) })
    }
}
