//! kiln::Error: a kiln_status plus kiln's message for it.
use crate::sys;
use std::ffi::CStr;
use std::fmt;

/// What kind of failure an `Error` is (kiln.h's kiln_status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    Io,
    Format,
    Unsupported,
    OutOfMemory,
    BufferTooSmall,
    OutOfRange,
    ContextFull,
    Cancelled,
    Backend,
    Busy,
    VersionMismatch,
    Internal,
    /// A status this binding does not know (a newer library).
    Other(u32),
}

impl ErrorKind {
    fn from_status(status: sys::kiln_status) -> Self {
        match status {
            sys::KILN_ERR_INVALID_ARGUMENT => Self::InvalidArgument,
            sys::KILN_ERR_NOT_FOUND => Self::NotFound,
            sys::KILN_ERR_IO => Self::Io,
            sys::KILN_ERR_FORMAT => Self::Format,
            sys::KILN_ERR_UNSUPPORTED => Self::Unsupported,
            sys::KILN_ERR_OUT_OF_MEMORY => Self::OutOfMemory,
            sys::KILN_ERR_BUFFER_TOO_SMALL => Self::BufferTooSmall,
            sys::KILN_ERR_OUT_OF_RANGE => Self::OutOfRange,
            sys::KILN_ERR_CONTEXT_FULL => Self::ContextFull,
            sys::KILN_ERR_CANCELLED => Self::Cancelled,
            sys::KILN_ERR_BACKEND => Self::Backend,
            sys::KILN_ERR_BUSY => Self::Busy,
            sys::KILN_ERR_VERSION_MISMATCH => Self::VersionMismatch,
            sys::KILN_ERR_INTERNAL => Self::Internal,
            other => Self::Other(other),
        }
    }
}

/// A failed kiln call: its status and kiln's message (what failed, which file/argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: sys::kiln_status,
    message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn new(status: sys::kiln_status, message: String) -> Self {
        Error { status, message }
    }

    /// The error for `status` with kiln_last_error(); call on the thread of the failed call.
    pub(crate) fn last(status: sys::kiln_status) -> Self {
        // SAFETY: thread-local string, valid until the next kiln call on this thread; copied now.
        let message = unsafe { CStr::from_ptr(sys::kiln_last_error()) }
            .to_string_lossy()
            .into_owned();
        Error::new(status, message)
    }

    pub fn kind(&self) -> ErrorKind {
        ErrorKind::from_status(self.status)
    }

    /// The raw kiln_status value.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The status's stable name ("KILN_ERR_FORMAT").
    pub fn status_name(&self) -> String {
        // SAFETY: static storage, never NULL, for any value (kiln.h).
        unsafe { CStr::from_ptr(sys::kiln_status_name(self.status)) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status_name(), self.message)
    }
}

impl std::error::Error for Error {}

/// Ok for KILN_OK, else the Error with kiln's message.
pub(crate) fn check(status: sys::kiln_status) -> Result<()> {
    if status == sys::KILN_OK {
        Ok(())
    } else {
        Err(Error::last(status))
    }
}

/// kiln.h's buffer protocol: ask for the size with no buffer, then fill one of that size.
pub(crate) fn fill<T: Clone + Default>(
    mut call: impl FnMut(*mut T, usize, &mut usize) -> sys::kiln_status,
) -> Result<Vec<T>> {
    let mut needed = 0usize;
    let status = call(std::ptr::null_mut(), 0, &mut needed);
    if status != sys::KILN_ERR_BUFFER_TOO_SMALL {
        check(status)?;
    }
    let mut buffer = vec![T::default(); needed];
    check(call(buffer.as_mut_ptr(), buffer.len(), &mut needed))?;
    buffer.truncate(needed);
    Ok(buffer)
}
