"""Wraps user callbacks so that an exception they raise stops the kiln call and is re-raised to
the caller once kiln returns (it never crosses into C)."""

from __future__ import annotations

from typing import Any, Callable, Optional


class GuardedCallback:
    """Calls ``fn``; a raised exception is kept in ``error`` and turns into "stop" for kiln."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self.error: Optional[BaseException] = None

    def __call__(self, *args: Any) -> bool:
        if self.error is not None:
            return True
        try:
            return bool(self._fn(*args))
        except BaseException as e:  # noqa: BLE001 - re-raised by reraise() on the caller's thread
            self.error = e
            return True

    def reraise(self) -> None:
        """Raises the callback's exception, if it raised one."""
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class LogCallback:
    """A log sink: ``fn(level, message)``; its exceptions are reported, not propagated (a log call
    cannot stop anything)."""

    def __init__(self, fn: Callable[[int, str], Any]) -> None:
        self._fn = fn

    def __call__(self, level: int, message: str) -> None:
        from ._runtime import LogLevel

        self._fn(LogLevel(level), message)
