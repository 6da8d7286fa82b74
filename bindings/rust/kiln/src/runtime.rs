//! kiln::Runtime: a backend, a device and a thread pool.
use crate::callbacks::{log_trampoline, LogFn};
use crate::error::{check, Result};
use crate::sys;
use std::ffi::CStr;
use std::os::raw::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Auto,
    Cpu,
    Cuda,
}

impl Backend {
    fn to_raw(self) -> sys::kiln_backend {
        match self {
            Backend::Auto => sys::KILN_BACKEND_AUTO,
            Backend::Cpu => sys::KILN_BACKEND_CPU,
            Backend::Cuda => sys::KILN_BACKEND_CUDA,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    None,
}

impl LogLevel {
    pub(crate) fn from_raw(level: sys::kiln_log_level) -> Self {
        match level {
            sys::KILN_LOG_DEBUG => LogLevel::Debug,
            sys::KILN_LOG_INFO => LogLevel::Info,
            sys::KILN_LOG_WARN => LogLevel::Warn,
            sys::KILN_LOG_ERROR => LogLevel::Error,
            _ => LogLevel::None,
        }
    }

    fn to_raw(self) -> sys::kiln_log_level {
        match self {
            LogLevel::Debug => sys::KILN_LOG_DEBUG,
            LogLevel::Info => sys::KILN_LOG_INFO,
            LogLevel::Warn => sys::KILN_LOG_WARN,
            LogLevel::Error => sys::KILN_LOG_ERROR,
            LogLevel::None => sys::KILN_LOG_NONE,
        }
    }
}

/// Options of `Runtime::new`; `Default` is kiln's defaults (kiln_runtime_options_default).
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub backend: Backend,
    pub device_index: i32,
    /// CPU threads; 0 = number of cores.
    pub n_threads: i32,
    pub log_level: LogLevel,
    /// Bytes kiln may take on the device; 0 = no cap.
    pub device_memory_limit: u64,
    /// GPUs each model is split across (devices device_index..+N-1); 0 or 1 = off (kiln.h).
    pub tensor_parallel: i32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        let raw = raw_runtime_options();
        RuntimeOptions {
            backend: Backend::Auto,
            device_index: raw.device_index,
            n_threads: raw.n_threads,
            log_level: LogLevel::from_raw(raw.log_level),
            device_memory_limit: raw.device_memory_limit,
            tensor_parallel: raw.tensor_parallel,
        }
    }
}

impl RuntimeOptions {
    /// The CPU backend with `n_threads` threads (0 = number of cores).
    pub fn cpu(n_threads: i32) -> Self {
        RuntimeOptions {
            backend: Backend::Cpu,
            n_threads,
            ..Default::default()
        }
    }
}

fn raw_runtime_options() -> sys::kiln_runtime_options {
    // SAFETY: a zeroed C struct is a valid value; kiln fills it.
    let mut raw: sys::kiln_runtime_options = unsafe { std::mem::zeroed() };
    let status =
        unsafe { sys::kiln_runtime_options_default(&mut raw, std::mem::size_of_val(&raw)) };
    debug_assert_eq!(status, sys::KILN_OK);
    raw
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    pub backend: Backend,
    pub n_threads: i32,
    pub device_name: String,
}

/// The runtime handle, freed when the last Runtime/Model/Session that needs it is dropped.
pub(crate) struct RuntimeHandle {
    pub raw: *mut sys::kiln_runtime,
    // The log sink kiln holds a pointer to; freed only after kiln_runtime_free.
    _log: Option<Box<Box<LogFn>>>,
}

// SAFETY: kiln.h: "kiln_runtime: all calls are thread-safe".
unsafe impl Send for RuntimeHandle {}
unsafe impl Sync for RuntimeHandle {}

impl Drop for RuntimeHandle {
    fn drop(&mut self) {
        // SAFETY: every model and session holds an Arc to this handle, so none is left.
        unsafe { sys::kiln_runtime_free(self.raw) }
    }
}

/// A kiln runtime. Cheap to clone (shared); freed when the last clone, model and session is gone.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) handle: Arc<RuntimeHandle>,
}

impl Runtime {
    pub fn new(options: &RuntimeOptions) -> Result<Runtime> {
        Self::create(options, None)
    }

    /// A runtime whose log messages (at `options.log_level` and above) go to `sink`.
    pub fn with_log<F>(options: &RuntimeOptions, sink: F) -> Result<Runtime>
    where
        F: Fn(LogLevel, &str) + Send + Sync + 'static,
    {
        Self::create(options, Some(Box::new(Box::new(sink))))
    }

    fn create(options: &RuntimeOptions, log: Option<Box<Box<LogFn>>>) -> Result<Runtime> {
        crate::check_abi()?;
        let mut raw = raw_runtime_options();
        raw.backend = options.backend.to_raw();
        raw.device_index = options.device_index;
        raw.n_threads = options.n_threads;
        raw.log_level = options.log_level.to_raw();
        raw.device_memory_limit = options.device_memory_limit;
        raw.tensor_parallel = options.tensor_parallel;
        if let Some(sink) = &log {
            raw.log_fn = Some(log_trampoline);
            raw.log_user_data = &**sink as *const Box<LogFn> as *mut c_void;
        }
        let mut handle = std::ptr::null_mut();
        // SAFETY: options and the out pointer are valid for the call; the sink outlives the runtime.
        check(unsafe { sys::kiln_runtime_create(&raw, &mut handle) })?;
        Ok(Runtime {
            handle: Arc::new(RuntimeHandle {
                raw: handle,
                _log: log,
            }),
        })
    }

    /// A new data-parallel group id (`kiln_nccl_id_create`): opaque bytes to hand to every rank's
    /// [`crate::Trainer::join_data_parallel`]. Needs a CUDA runtime and NCCL.
    pub fn nccl_id(&self) -> Result<[u8; sys::KILN_NCCL_ID_BYTES as usize]> {
        let mut id = sys::kiln_nccl_id {
            bytes: [0; sys::KILN_NCCL_ID_BYTES as usize],
        };
        check(unsafe { sys::kiln_nccl_id_create(self.handle.raw, &mut id) })?;
        Ok(id.bytes)
    }

    pub fn info(&self) -> Result<RuntimeInfo> {
        // SAFETY: zeroed then struct_size set, as kiln.h asks.
        let mut info: sys::kiln_runtime_info = unsafe { std::mem::zeroed() };
        info.struct_size = std::mem::size_of_val(&info);
        check(unsafe { sys::kiln_runtime_get_info(self.handle.raw, &mut info) })?;
        let backend = if info.backend == sys::KILN_BACKEND_CUDA {
            Backend::Cuda
        } else {
            Backend::Cpu
        };
        // SAFETY: device_name is valid while the runtime lives; copied now.
        let device_name = unsafe { CStr::from_ptr(info.device_name) }
            .to_string_lossy()
            .into_owned();
        Ok(RuntimeInfo {
            backend,
            n_threads: info.n_threads,
            device_name,
        })
    }
}

unsafe extern "C" fn static_log_trampoline<F: Fn(LogLevel, &str)>(
    level: sys::kiln_log_level,
    message: *const c_char,
    user_data: *mut c_void,
) {
    // SAFETY: user_data is the &'static F given to set_log_callback.
    let f = &*(user_data as *const F);
    let message = CStr::from_ptr(message).to_string_lossy();
    let _ = catch_unwind(AssertUnwindSafe(|| f(LogLevel::from_raw(level), &message)));
}

/// Sets the process-wide log sink (used by runtimes without their own). It must be `'static`
/// (e.g. a `static` function or `Box::leak`): kiln may call it from any later kiln call.
pub fn set_log_callback<F>(sink: &'static F, min_level: LogLevel) -> Result<()>
where
    F: Fn(LogLevel, &str) + Send + Sync + 'static,
{
    let user_data = sink as *const F as *mut c_void;
    // SAFETY: the sink lives for the rest of the process.
    check(unsafe {
        sys::kiln_set_log_callback(
            Some(static_log_trampoline::<F>),
            user_data,
            min_level.to_raw(),
        )
    })
}

/// Restores kiln's default process-wide sink (stderr for warnings and errors).
pub fn reset_log_callback() -> Result<()> {
    check(unsafe { sys::kiln_set_log_callback(None, std::ptr::null_mut(), sys::KILN_LOG_WARN) })
}
