"""kiln.Runtime: a backend, a device and a thread pool; models are loaded through it."""

from __future__ import annotations

import enum
import os
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ._callbacks import LogCallback
from ._errors import check, check_out
from ._native import c

if TYPE_CHECKING:
    from ._model import Model


class Backend(enum.IntEnum):
    AUTO = c.KILN_BACKEND_AUTO
    CPU = c.KILN_BACKEND_CPU
    CUDA = c.KILN_BACKEND_CUDA


class Precision(enum.IntEnum):
    """The number format a model computes in (kiln.h, kiln_precision): DEFAULT is BF16 on CUDA and
    float32 on the CPU; BF16 is CUDA only; F32 is the CUDA checking mode (float32 throughout)."""

    DEFAULT = c.KILN_PRECISION_DEFAULT
    BF16 = c.KILN_PRECISION_BF16
    F32 = c.KILN_PRECISION_F32


class QuantizeType(enum.IntEnum):
    F16 = c.KILN_QUANTIZE_F16
    Q8_0 = c.KILN_QUANTIZE_Q8_0
    Q4_K_M = c.KILN_QUANTIZE_Q4_K_M


class LogLevel(enum.IntEnum):
    DEBUG = c.KILN_LOG_DEBUG
    INFO = c.KILN_LOG_INFO
    WARN = c.KILN_LOG_WARN
    ERROR = c.KILN_LOG_ERROR
    NONE = c.KILN_LOG_NONE


@dataclass(frozen=True)
class RuntimeInfo:
    backend: Backend
    n_threads: int
    device_name: str


LogFn = Callable[[LogLevel, str], Any]


def set_log_callback(fn: Optional[LogFn], min_level: LogLevel = LogLevel.WARN) -> None:
    """Sets the process-wide log sink ``fn(level, message)`` (None restores stderr)."""
    check(c.kiln_set_log_callback(None if fn is None else LogCallback(fn), int(min_level)))


def version() -> str:
    """kiln's version string ("0.1.0" plus build details)."""
    return c.kiln_version_string()


class Runtime:
    """A kiln runtime. Use as a context manager or call close(); closing it closes the models and
    sessions made from it first (kiln requires that order)."""

    def __init__(
        self,
        backend: Backend = Backend.AUTO,
        *,
        n_threads: int = 0,
        device_index: int = 0,
        log: Optional[LogFn] = None,
        log_level: LogLevel = LogLevel.WARN,
        device_memory_limit: int = 0,
        tensor_parallel: int = 0,
    ) -> None:
        self._handle = None
        self._children: "weakref.WeakSet[Any]" = weakref.WeakSet()
        options = c.kiln_runtime_options()
        check(c.kiln_runtime_options_default(options))
        options.backend = int(backend)
        options.n_threads = n_threads
        options.device_index = device_index
        options.log_level = int(log_level)
        options.device_memory_limit = device_memory_limit
        options.tensor_parallel = tensor_parallel
        # kiln keeps the sink for the runtime's life: so does this object.
        self._log = LogCallback(log) if log is not None else None
        if self._log is not None:
            c.kiln_py_runtime_options_set_log_callback(options, self._log)
        self._handle = check_out(c.kiln_runtime_create(options))

    @property
    def handle(self) -> Any:
        """The raw kiln_runtime* (SWIG pointer); raises kiln.Error once closed."""
        if self._handle is None:
            from ._errors import Error

            raise Error(c.KILN_ERR_INVALID_ARGUMENT, "the kiln.Runtime is closed")
        return self._handle

    @property
    def closed(self) -> bool:
        return self._handle is None

    @property
    def info(self) -> RuntimeInfo:
        info = c.kiln_runtime_info()
        check(c.kiln_runtime_get_info(self.handle, info))
        return RuntimeInfo(Backend(info.backend), info.n_threads, info.device_name)

    def nccl_id(self) -> bytes:
        """A new data-parallel group id (``kiln_nccl_id_create``): 128 opaque bytes to hand to every
        rank's ``Trainer.join_data_parallel``. Needs a CUDA runtime and NCCL."""
        nid = c.kiln_nccl_id()
        check(c.kiln_nccl_id_create(self.handle, nid))
        return bytes(c.kiln_bind_nccl_id_byte(nid, k) for k in range(c.KILN_NCCL_ID_BYTES))

    def load_model(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        progress: Optional[Callable[[float, str], Any]] = None,
        precision: "Precision" = Precision.DEFAULT,
    ) -> "Model":
        """Loads a Hugging Face model directory. ``progress(fraction, stage)`` may return True (or
        raise) to cancel the load. ``precision``: see ``Precision``."""
        from ._model import Model

        return Model(self, path, progress=progress, precision=precision)

    def quantize(
        self,
        src: Union[str, "os.PathLike[str]"],
        dst: Union[str, "os.PathLike[str]"],
        type: QuantizeType = QuantizeType.Q4_K_M,
        *,
        n_threads: int = 0,
        progress: Optional[Callable[[float, str], Any]] = None,
    ) -> None:
        """Converts a Hugging Face model directory or a GGUF file ``src`` to the GGUF file
        ``dst`` (written atomically). ``progress(fraction, stage)`` may return True (or raise) to
        cancel."""
        from ._callbacks import GuardedCallback

        options = c.kiln_quantize_options()
        check(c.kiln_quantize_options_default(options))
        options.type = int(type)
        options.n_threads = n_threads
        guard = GuardedCallback(progress) if progress is not None else None
        if guard is not None:
            c.kiln_py_quantize_options_set_progress_callback(options, guard)
        status = c.kiln_model_quantize(self.handle, os.fspath(src), os.fspath(dst), options)
        if guard is not None:
            guard.reraise()
        check(status)

    def _adopt(self, child: Any) -> None:
        self._children.add(child)

    def close(self) -> None:
        """Frees the runtime after closing every model and session made from it. Idempotent."""
        if self._handle is None:
            return
        for child in sorted(self._children, key=lambda ch: ch._close_order):
            child.close()
        c.kiln_runtime_free(self._handle)
        self._handle = None

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
