//! kiln::Tokenizer: a tokenizer.json on its own (no weights), or a model's own tokenizer.
use crate::error::{check, fill, Error, Result};
use crate::model::Model;
use crate::sys;
use std::ffi::CString;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::raw::c_char;
use std::path::Path;

/// Text to ids and back. `Tokenizer::load` owns its handle and frees it on `Drop`; a model's
/// tokenizer is a [`TokenizerRef`] borrowed from the [`Model`]. `Send + Sync`: kiln.h makes the
/// handle immutable once loaded, so one tokenizer may be used from many threads at once.
pub struct Tokenizer {
    raw: *const sys::kiln_tokenizer,
    /// False for a model's tokenizer: kiln frees that one with the model.
    owned: bool,
}

// SAFETY: kiln.h: a tokenizer is immutable once loaded; every call on it only reads it.
unsafe impl Send for Tokenizer {}
unsafe impl Sync for Tokenizer {}

impl Drop for Tokenizer {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: the handle came from kiln_tokenizer_load and no other wrapper holds it.
            unsafe { sys::kiln_tokenizer_free(self.raw as *mut sys::kiln_tokenizer) }
        }
    }
}

/// A model's tokenizer, valid while the model it was borrowed from is (the lifetime says so).
pub struct TokenizerRef<'model> {
    tokenizer: Tokenizer,
    _model: PhantomData<&'model Model>,
}

impl Deref for TokenizerRef<'_> {
    type Target = Tokenizer;
    fn deref(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

fn encode_flags(add_special: bool, parse_special: bool) -> u32 {
    (if add_special {
        sys::KILN_TOKENIZE_ADD_SPECIAL
    } else {
        0
    }) | (if parse_special {
        sys::KILN_TOKENIZE_PARSE_SPECIAL
    } else {
        0
    })
}

impl Tokenizer {
    /// Loads a directory holding tokenizer.json (tokenizer_config.json is read too when present),
    /// or a tokenizer.json file itself.
    pub fn load(path: impl AsRef<Path>) -> Result<Tokenizer> {
        use std::os::unix::ffi::OsStrExt;
        let path = path.as_ref();
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            Error::new(
                sys::KILN_ERR_INVALID_ARGUMENT,
                format!("tokenizer path {:?} contains a NUL byte", path),
            )
        })?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: both pointers are valid for the call.
        check(unsafe { sys::kiln_tokenizer_load(cpath.as_ptr(), &mut raw) })?;
        Ok(Tokenizer { raw, owned: true })
    }

    /// Wraps a handle kiln gave this caller to own (kiln_tokenizer_load, kiln_tokenizer_train).
    pub(crate) fn from_owned_raw(raw: *mut sys::kiln_tokenizer) -> Tokenizer {
        Tokenizer { raw, owned: true }
    }

    pub(crate) fn raw_handle(&self) -> *const sys::kiln_tokenizer {
        self.raw
    }

    /// The model's tokenizer (kiln_model_tokenizer); Model::tokenizer is the public way in.
    pub(crate) fn borrow_from(model: &Model) -> Result<TokenizerRef<'_>> {
        let mut raw = std::ptr::null();
        // SAFETY: the model handle is alive for the call and, through the lifetime, for the ref.
        check(unsafe { sys::kiln_model_tokenizer(model.handle.raw, &mut raw) })?;
        Ok(TokenizerRef {
            tokenizer: Tokenizer { raw, owned: false },
            _model: PhantomData,
        })
    }

    /// True for `Tokenizer::load`'s (freed on drop), false for a model's borrowed one.
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// Number of ids (max id + 1, added tokens included).
    pub fn vocab_size(&self) -> Result<i32> {
        let mut size = 0;
        // SAFETY: the handle is alive; `size` is valid for the call.
        check(unsafe { sys::kiln_tokenizer_vocab_size(self.raw, &mut size) })?;
        Ok(size)
    }

    /// Text to ids. `add_special` adds BOS/EOS as tokenizer_config.json says; `parse_special` lets
    /// special-token text become the special token (only for text you wrote).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<i32>> {
        let flags = encode_flags(add_special, parse_special);
        fill(|buf, cap, n| unsafe {
            sys::kiln_tokenizer_encode(
                self.raw,
                text.as_ptr() as *const c_char,
                text.len(),
                flags,
                buf,
                cap,
                n,
            )
        })
    }

    /// One long text to ids on up to `n_threads` threads (0: one per core); the ids are exactly
    /// `encode`'s (kiln cuts the text only where the pieces cannot influence each other).
    pub fn encode_threaded(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        n_threads: i32,
    ) -> Result<Vec<i32>> {
        let flags = encode_flags(add_special, parse_special);
        // SAFETY: the handle and `text` are alive for the call; fill passes a valid buffer.
        fill(|buf, cap, n| unsafe {
            sys::kiln_tokenizer_encode_threaded(
                self.raw,
                text.as_ptr() as *const c_char,
                text.len(),
                flags,
                n_threads,
                buf,
                cap,
                n,
            )
        })
    }

    /// Many texts to ids on up to `n_threads` threads (0: one per core), each exactly as `encode`
    /// would (HF tokenizers' encode_batch). Texts are `&str` or raw bytes; bytes that are not
    /// UTF-8 give an `InvalidArgument` error naming the text (`texts[i]`).
    pub fn encode_batch<T: AsRef<[u8]>>(
        &self,
        texts: &[T],
        add_special: bool,
        parse_special: bool,
        n_threads: i32,
    ) -> Result<Vec<Vec<i32>>> {
        let flags = encode_flags(add_special, parse_special);
        let ptrs: Vec<*const c_char> = texts
            .iter()
            .map(|t| t.as_ref().as_ptr() as *const c_char)
            .collect();
        let lens: Vec<usize> = texts.iter().map(|t| t.as_ref().len()).collect();
        let mut offsets = vec![0usize; texts.len() + 1];
        // An id covers at least one byte: for byte-level BPE this is enough, so usually one call.
        let mut ids = vec![0i32; lens.iter().sum::<usize>() + 4 * texts.len() + 16];
        let mut needed = 0usize;
        let mut call = |ids: &mut Vec<i32>, needed: &mut usize| {
            // SAFETY: `ptrs`/`lens` describe `texts`, alive for the call; `offsets` holds
            // texts.len() + 1 entries and `ids` ids.len().
            unsafe {
                sys::kiln_tokenizer_encode_batch(
                    self.raw,
                    ptrs.as_ptr(),
                    lens.as_ptr(),
                    texts.len(),
                    flags,
                    n_threads,
                    ids.as_mut_ptr(),
                    ids.len(),
                    offsets.as_mut_ptr(),
                    needed,
                )
            }
        };
        let mut status = call(&mut ids, &mut needed);
        if status == sys::KILN_ERR_BUFFER_TOO_SMALL {
            ids = vec![0i32; needed];
            status = call(&mut ids, &mut needed);
        }
        check(status)?;
        Ok(offsets
            .windows(2)
            .map(|w| ids[w[0]..w[1]].to_vec())
            .collect())
    }

    /// Ids to the bytes they stand for.
    pub fn decode_bytes(&self, ids: &[i32], skip_special: bool) -> Result<Vec<u8>> {
        let flags = if skip_special {
            sys::KILN_DETOKENIZE_SKIP_SPECIAL
        } else {
            0
        };
        let bytes: Vec<c_char> = fill(|buf, cap, n| unsafe {
            sys::kiln_tokenizer_decode(self.raw, ids.as_ptr(), ids.len(), flags, buf, cap, n)
        })?;
        Ok(bytes.into_iter().map(|b| b as u8).collect())
    }

    /// Ids to text (invalid UTF-8 from partial tokens becomes U+FFFD).
    pub fn decode(&self, ids: &[i32], skip_special: bool) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids, skip_special)?).into_owned())
    }
}
