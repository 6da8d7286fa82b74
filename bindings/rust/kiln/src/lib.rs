//! Safe Rust API over kiln, an embeddable LLM runtime (the C ABI in capi/kiln.h, through kiln-sys).
//!
//! ```no_run
//! let runtime = kiln::Runtime::new(&kiln::RuntimeOptions::cpu(0))?;
//! let model = kiln::Model::load(&runtime, "models/kjv-tiny")?;
//! let mut session = model.session(&kiln::SessionOptions::default())?;
//! session.generate("In the beginning", &kiln::GenerateOptions::default(), |piece, _id| {
//!     print!("{}", piece);
//!     false // true stops generation
//! })?;
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! Ownership follows kiln.h: a `Model` keeps its `Runtime` alive and a `Session` its `Model`, so
//! handles are freed (on `Drop`) in the order kiln requires. Threading follows kiln.h too: `Runtime`
//! and `Model` are `Send + Sync`; a `Session` is `Send` but not `Sync` (one thread at a time), and
//! its `CancelHandle` may be used from any thread. The same holds for a `Trainer` (training: see
//! `Model::create` and `Trainer`) and its `TrainerCancelHandle`.

mod callbacks;
mod chat;
mod error;
mod model;
mod quantize;
mod runtime;
mod session;
mod tokenizer;
mod train;
mod tokenizer_train;

pub use chat::{ChatMessage, ChatOptions};
pub use error::{Error, ErrorKind, Result};
pub use model::{Model, ModelInfo, Precision};
pub use quantize::QuantizeType;
pub use runtime::{
    reset_log_callback, set_log_callback, Backend, LogLevel, Runtime, RuntimeInfo, RuntimeOptions,
};
pub use session::{
    CancelHandle, GenerateOptions, Generation, LogitsMode, Sampling, Session, SessionOptions,
    StopReason,
};
pub use tokenizer::{Tokenizer, TokenizerRef};
pub use train::{
    Batch, LrSchedule, ModelCreateOptions, Optimizer, ParamGroup, ParamRole, TrainResult, Trainer,
    TrainerCancelHandle, TrainerInfo, TrainerOptions, TrainerOutput, MAX_MTP_HEADS,
};
pub use tokenizer_train::TrainOptions;

/// The raw FFI layer, for what the safe API does not cover.
pub use kiln_sys as sys;

use std::ffi::CStr;

/// kiln's version string ("0.1.0" plus build details).
pub fn version() -> String {
    // SAFETY: static storage, never NULL (kiln.h).
    unsafe { CStr::from_ptr(sys::kiln_version_string()) }
        .to_string_lossy()
        .into_owned()
}

/// Fails with `ErrorKind::VersionMismatch` when libkiln's ABI is not the one kiln-sys was generated
/// from. `Runtime::new` calls it, so every other handle has passed it.
pub fn check_abi() -> Result<()> {
    // SAFETY: no arguments, no state.
    let found = unsafe { sys::kiln_abi_version() };
    if found == sys::KILN_ABI_VERSION {
        Ok(())
    } else {
        Err(Error::new(
            sys::KILN_ERR_VERSION_MISMATCH,
            format!(
                "libkiln has ABI version {} but these bindings need {}",
                found,
                sys::KILN_ABI_VERSION
            ),
        ))
    }
}
