"""kiln.Error and one subclass per kiln_status, raised with kiln's own message."""

from __future__ import annotations

from ._native import c


class Error(Exception):
    """A failed kiln call. ``status`` is the kiln_status code, ``status_name`` its name
    ("KILN_ERR_FORMAT") and ``message`` kiln's message (what failed, which file/argument)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = int(status)
        self.status_name = c.kiln_status_name(self.status)
        self.message = message
        super().__init__(f"{self.status_name}: {message}")


class InvalidArgumentError(Error, ValueError):
    """A NULL handle, a bad option value or a bad flag."""


class NotFoundError(Error):
    """A file or directory that does not exist."""


class IOError_(Error):
    """A file exists but cannot be read or written."""


class FormatError(Error):
    """A file is malformed, truncated or lies about its contents."""


class UnsupportedError(Error):
    """Valid input kiln does not handle (architecture, dtype, ...)."""


class OutOfMemoryError(Error, MemoryError):
    """Host or device memory exhausted."""


class BufferTooSmallError(Error):
    """A caller buffer was too small (the bindings retry, so this is rare)."""


class OutOfRangeError(Error, IndexError):
    """A token id, position or index outside its valid range."""


class ContextFullError(Error):
    """The session's context cannot hold the tokens given."""


class CancelledError(Error):
    """Session.cancel() or a callback asked to stop."""


class BackendError(Error):
    """The compute backend failed."""


class BusyError(Error):
    """A session used from two threads at once."""


class VersionMismatchError(Error):
    """A struct size or ABI version this library does not know."""


class InternalError(Error):
    """A bug in kiln."""


_BY_STATUS: dict[int, type[Error]] = {
    c.KILN_ERR_INVALID_ARGUMENT: InvalidArgumentError,
    c.KILN_ERR_NOT_FOUND: NotFoundError,
    c.KILN_ERR_IO: IOError_,
    c.KILN_ERR_FORMAT: FormatError,
    c.KILN_ERR_UNSUPPORTED: UnsupportedError,
    c.KILN_ERR_OUT_OF_MEMORY: OutOfMemoryError,
    c.KILN_ERR_BUFFER_TOO_SMALL: BufferTooSmallError,
    c.KILN_ERR_OUT_OF_RANGE: OutOfRangeError,
    c.KILN_ERR_CONTEXT_FULL: ContextFullError,
    c.KILN_ERR_CANCELLED: CancelledError,
    c.KILN_ERR_BACKEND: BackendError,
    c.KILN_ERR_BUSY: BusyError,
    c.KILN_ERR_VERSION_MISMATCH: VersionMismatchError,
    c.KILN_ERR_INTERNAL: InternalError,
}


def error_for(status: int, message: str) -> Error:
    """The Error subclass for ``status`` carrying ``message``."""
    return _BY_STATUS.get(int(status), Error)(status, message)


def check(status: int) -> None:
    """Raises the matching Error with kiln_last_error() when ``status`` is not KILN_OK. Must run on
    the thread that made the failed call (kiln's message is thread-local)."""
    if status != c.KILN_OK:
        raise error_for(status, c.kiln_last_error())


def check_out(result: list):  # type: ignore[type-arg]
    """Unpacks a SWIG [status, out...] list: raises on failure, returns the out value(s)."""
    check(result[0])
    return result[1] if len(result) == 2 else tuple(result[1:])
