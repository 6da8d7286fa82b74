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
