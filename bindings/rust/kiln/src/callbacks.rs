//! C trampolines for kiln's callbacks. user_data points at the Rust closure's state; a panic in the
//! closure is caught (it must not unwind into C), stops the operation and is resumed by the caller
//! once kiln has returned.
use crate::runtime::LogLevel;
use crate::sys;
use std::any::Any;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A closure that can stop the operation, plus the panic it raised, if any.
pub(crate) struct Guarded<'a, A: ?Sized> {
    pub f: &'a mut A,
    pub panic: Option<Box<dyn Any + Send + 'static>>,
}

impl<'a, A: ?Sized> Guarded<'a, A> {
    pub fn new(f: &'a mut A) -> Self {
        Guarded { f, panic: None }
    }

    fn run(&mut self, call: impl FnOnce(&mut A) -> bool) -> c_int {
        if self.panic.is_some() {
            return 1;
        }
        let f = &mut *self.f;
        match catch_unwind(AssertUnwindSafe(|| call(f))) {
            Ok(stop) => stop as c_int,
            Err(payload) => {
                self.panic = Some(payload);
                1
            }
        }
    }

    /// Re-raises the closure's panic on the caller's thread, after kiln returned.
    pub fn resume(self) {
        if let Some(payload) = self.panic {
            std::panic::resume_unwind(payload);
        }
    }
}

pub(crate) type TokenFn<'a> = dyn FnMut(&str, i32) -> bool + 'a;
pub(crate) type ProgressFn<'a> = dyn FnMut(f32, &str) -> bool + 'a;
pub(crate) type LogFn = dyn Fn(LogLevel, &str) + Send + Sync;

pub(crate) unsafe extern "C" fn token_trampoline(
    text: *const c_char,
    text_len: usize,
    token_id: i32,
    user_data: *mut c_void,
) -> c_int {
    // SAFETY: user_data is the Guarded<TokenFn> the generate call lent kiln for its duration;
    // text holds text_len bytes valid during this call.
    let state = &mut *(user_data as *mut Guarded<TokenFn>);
    let bytes = if text_len == 0 {
        &[][..]
    } else {
        std::slice::from_raw_parts(text as *const u8, text_len)
    };
    let text = String::from_utf8_lossy(bytes);
    state.run(|f| f(&text, token_id))
}

pub(crate) unsafe extern "C" fn progress_trampoline(
    fraction: f32,
    stage: *const c_char,
    user_data: *mut c_void,
) -> c_int {
    // SAFETY: user_data is the Guarded<ProgressFn> Model::load lent kiln; stage is NUL-terminated.
    let state = &mut *(user_data as *mut Guarded<ProgressFn>);
    let stage = CStr::from_ptr(stage).to_string_lossy();
    state.run(|f| f(fraction, &stage))
}

pub(crate) unsafe extern "C" fn log_trampoline(
    level: sys::kiln_log_level,
    message: *const c_char,
    user_data: *mut c_void,
) {
    // SAFETY: user_data is a Box<LogFn> that outlives every kiln call able to log to it.
    let f = &*(user_data as *const Box<LogFn>);
    let message = CStr::from_ptr(message).to_string_lossy();
    // A log call cannot stop anything: a panicking sink loses that one message.
    let _ = catch_unwind(AssertUnwindSafe(|| f(LogLevel::from_raw(level), &message)));
}
