"""kiln.Session: a KV cache, a sampler and an RNG over a model; one thread at a time."""

from __future__ import annotations

import array
import enum
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterable, List, Optional, Sequence, Tuple, Union

from ._callbacks import GuardedCallback
from ._errors import Error, check, check_out
from ._model import ids_array
from ._native import c

if TYPE_CHECKING:
    from ._model import Model

try:  # numpy is optional: forward() returns zero-copy numpy views when it is importable
    import numpy as _np
except ImportError:  # pragma: no cover - depends on the environment
    _np = None


class StopReason(enum.IntEnum):
    NONE = c.KILN_STOP_NONE
    EOS = c.KILN_STOP_EOS
    MAX_TOKENS = c.KILN_STOP_MAX_TOKENS
    STRING = c.KILN_STOP_STRING
    CALLBACK = c.KILN_STOP_CALLBACK
    CONTEXT_FULL = c.KILN_STOP_CONTEXT_FULL


class LogitsMode(enum.IntEnum):
    NONE = c.KILN_LOGITS_NONE
    LAST = c.KILN_LOGITS_LAST
    ALL = c.KILN_LOGITS_ALL


@dataclass(frozen=True)
class GenerateResult:
    text: str
    ids: List[int]
    stop_reason: StopReason
    n_prompt_tokens: int
    n_generated: int
    prefill_seconds: float
    decode_seconds: float
    prefill_tokens_per_second: float
    decode_tokens_per_second: float


Prompt = Union[str, bytes, Sequence[int]]
OnPiece = Callable[[str, int], Any]

_SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                    "presence_penalty", "frequency_penalty", "penalty_last_n")


def sampling_options(**overrides: Any) -> Any:
    """kiln_sampling_options with kiln's defaults, then every override that is not None."""
    options = c.kiln_sampling_options()
    check(c.kiln_sampling_options_default(options))
    for name, value in overrides.items():
        if name not in _SAMPLING_FIELDS:
            raise TypeError(f"unknown sampling option {name!r} (known: {', '.join(_SAMPLING_FIELDS)})")
        if value is not None:
            setattr(options, name, value)
    return options


class Session:
    """A generation session. Prefer ``Model.session``. Close it (or use ``with``) to free it."""

    _close_order = 0

    def __init__(self, model: "Model", *, context_length: int = 0, seed: Optional[int] = None) -> None:
        self._handle = None
        self._model = model
        options = c.kiln_session_options()
        check(c.kiln_session_options_default(options))
        options.context_length = context_length
        if seed is not None:
            options.seed = seed
        self._handle = check_out(c.kiln_session_create(model.handle, options))
        self.last_result: Optional[GenerateResult] = None
        model.runtime._adopt(self)

    @property
    def handle(self) -> Any:
        """The raw kiln_session* (SWIG pointer); raises kiln.Error once closed."""
        if self._handle is None:
            raise Error(c.KILN_ERR_INVALID_ARGUMENT, "the kiln.Session is closed")
        return self._handle

    @property
    def model(self) -> "Model":
        return self._model

    @property
    def position(self) -> Tuple[int, int]:
        """(tokens in the KV cache, its capacity)."""
        return check_out(c.kiln_session_position(self.handle))

    def reset(self) -> None:
        """Empties the KV cache and re-seeds the RNG with the session's seed."""
        check(c.kiln_session_reset(self.handle))

    def cancel(self) -> None:
        """Stops the call running on this session (or the next one); safe from any thread."""
        check(c.kiln_session_cancel(self.handle))

    def forward(self, ids: Iterable[int], mode: LogitsMode = LogitsMode.LAST) -> Any:
        """Runs ``ids`` after the cached context. Returns the float32 logits: a numpy array when
        numpy is importable (zero-copy), else a memoryview (shape (vocab,) for LAST,
        (len(ids), vocab) for ALL); None for LogitsMode.NONE."""
        buf = ids_array(ids)
        vocab = self._model.info.vocab_size
        rows = {LogitsMode.NONE: 0, LogitsMode.LAST: 1, LogitsMode.ALL: len(buf)}[LogitsMode(mode)]
        logits = array.array("f", bytes(4 * rows * vocab)) if rows else None
        check(c.kiln_forward(self.handle, buf, int(mode), logits)[0])
        if logits is None:
            return None
        shape = (vocab,) if mode == LogitsMode.LAST else (rows, vocab)
        if _np is not None:
            return _np.frombuffer(logits, dtype=_np.float32).reshape(shape)
        return memoryview(logits).cast("B").cast("f", shape)

    def sample(self, logits: Any, **sampling: Any) -> int:
        """Samples one id from ``vocab`` float32 logits with the session's RNG."""
        if not isinstance(logits, (array.array, memoryview)) and _np is None:
            logits = array.array("f", logits)
        return check_out(c.kiln_sample(self.handle, logits, sampling_options(**sampling)))

    def complete(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        ignore_eos: bool = False,
        add_special: bool = True,
        parse_special: bool = False,
        on_piece: Optional[OnPiece] = None,
        **sampling: Any,
    ) -> GenerateResult:
        """Generates after ``prompt`` (text, or token ids) on the calling thread and returns the
        whole result. ``on_piece(text, token_id)`` is called per piece; returning True stops
        generation (StopReason.CALLBACK) and an exception it raises is re-raised here.
        Sampling keywords: temperature (0 = greedy), top_k, top_p, min_p, repetition_penalty,
        presence_penalty, frequency_penalty, penalty_last_n."""
        pieces: List[str] = []

        def collect(text: str, token_id: int) -> bool:
            pieces.append(text)
            return bool(on_piece(text, token_id)) if on_piece is not None else False

        guard = GuardedCallback(collect)
        options = c.kiln_generate_options()
        check(c.kiln_generate_options_default(options))
        sampling_opts = sampling_options(**sampling)  # kept alive: options points at it
        options.sampling = sampling_opts
        options.max_tokens = max_tokens
        options.ignore_eos = int(ignore_eos)
        options.tokenize_flags = (c.KILN_TOKENIZE_ADD_SPECIAL if add_special else 0) | (
            c.KILN_TOKENIZE_PARSE_SPECIAL if parse_special else 0)
        stops = c.kiln_py_strings(list(stop)) if stop else None
        c.kiln_py_generate_options_set_stop_strings(options, stops)
        out_ids = array.array("i", bytes(4 * max(max_tokens, 0)))
        c.kiln_py_generate_options_set_output_ids(options, out_ids if max_tokens > 0 else None)
        c.kiln_py_generate_options_set_token_callback(options, guard)
        result = c.kiln_generate_result()
        if isinstance(prompt, (str, bytes)):
            status = c.kiln_generate(self.handle, prompt, options, result)
        else:
            status = c.kiln_generate_ids(self.handle, ids_array(prompt), options, result)
        guard.reraise()
        check(status)
        n_stored = min(result.n_generated, len(out_ids))
        self.last_result = GenerateResult(
            "".join(pieces), list(out_ids[:n_stored]), StopReason(result.stop_reason),
            result.n_prompt_tokens, result.n_generated, result.prefill_seconds,
            result.decode_seconds, result.prefill_tokens_per_second,
            result.decode_tokens_per_second)
        return self.last_result

    def generate(self, prompt: Prompt, **kwargs: Any) -> Generator[str, None, GenerateResult]:
        """Streams the generated text piece by piece::

            for piece in session.generate("Hello", max_tokens=32, temperature=0):
                print(piece, end="")

        Takes complete()'s keywords (but on_piece). kiln runs on a worker thread (it releases the
        GIL) while this generator yields; leaving the loop early stops generation at the next
        token, and the session stays usable. The GenerateResult is the generator's return value
        and ``session.last_result``."""
        if "on_piece" in kwargs:
            raise TypeError("generate() streams the pieces itself; use complete(on_piece=...)")
        pieces: "queue.SimpleQueue[Tuple[str, Any]]" = queue.SimpleQueue()
        stop = threading.Event()

        def on_piece(text: str, token_id: int) -> bool:
            if text:
                pieces.put(("piece", text))
            return stop.is_set()

        def work() -> None:
            try:
                pieces.put(("done", self.complete(prompt, on_piece=on_piece, **kwargs)))
            except BaseException as e:  # noqa: BLE001 - handed to the consuming thread
                pieces.put(("error", e))

        worker = threading.Thread(target=work, name="kiln-generate", daemon=True)
        worker.start()
        try:
            while True:
                kind, value = pieces.get()
                if kind == "piece":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return value
        finally:
            stop.set()
            worker.join()

    def close(self) -> None:
        """Frees the session (idempotent)."""
        if self._handle is not None:
            c.kiln_session_free(self._handle)
            self._handle = None

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
