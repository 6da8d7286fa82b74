"""kiln.Tokenizer: a tokenizer.json on its own (no weights), or a model's own tokenizer."""

from __future__ import annotations

import array
import os
import struct
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Sequence, Union

from ._callbacks import GuardedCallback
from ._errors import Error, check, check_out
from ._model import fill, ids_array
from ._native import c

if TYPE_CHECKING:
    from ._model import Model

# array.array's typecode for size_t (kiln_tokenizer_encode_batch's offsets): pointer-sized.
_SIZE_T = "Q" if struct.calcsize("P") == 8 else "I"


class Tokenizer:
    """Text to ids and back. Immutable once loaded, so one Tokenizer may be used from many threads.

    ``Tokenizer.load(path)`` owns its handle: close it (or use ``with``) to free it.
    ``model.tokenizer`` borrows the model's: it keeps the Model object alive, frees nothing, and
    raises kiln.Error once the model is closed (kiln frees the handle with the model)."""

    def __init__(self, handle: Any, *, model: Optional["Model"] = None) -> None:
        self._handle = handle
        self._model = model

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "Tokenizer":
        """Loads a directory holding tokenizer.json (tokenizer_config.json is read too when
        present), or a tokenizer.json file itself."""
        return cls(check_out(c.kiln_tokenizer_load(os.fspath(path))))

    @classmethod
    def train(
        cls,
        files: Sequence[Union[str, "os.PathLike[str]"]],
        vocab_size: int = 32768,
        *,
        special_tokens: Sequence[str] = (),
        pattern: Optional[str] = None,
        n_threads: int = 0,
        min_frequency: int = 2,
        progress: Optional[Callable[[float, str], Any]] = None,
    ) -> "Tokenizer":
        """Trains a byte-level BPE tokenizer on UTF-8 text files (kiln_tokenizer_train).
        ``vocab_size`` counts the 256 byte tokens, the merges and the ``special_tokens`` (which get
        the last ids); ``pattern`` is the pre-tokenizer regex (None: Llama 3's).
        ``progress(fraction, stage)`` may return True (or raise) to cancel. Save the result with
        ``save(path)``."""
        options = c.kiln_tokenizer_train_options()
        check(c.kiln_tokenizer_train_options_default(options))
        options.vocab_size = vocab_size
        options.n_threads = n_threads
        options.min_frequency = min_frequency
        if pattern is not None:
            options.pattern = pattern
        specials = c.kiln_py_strings(list(special_tokens)) if special_tokens else None
        c.kiln_py_tokenizer_train_options_set_special_tokens(options, specials)
        guard = GuardedCallback(progress) if progress is not None else None
        if guard is not None:
            c.kiln_py_tokenizer_train_options_set_progress_callback(options, guard)
        paths = c.kiln_py_strings([os.fspath(f) for f in files])
        result = c.kiln_tokenizer_train(paths, options)
        if guard is not None:
            guard.reraise()
        return cls(check_out(result))

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes a trained tokenizer's tokenizer.json (atomically): to ``path`` when it ends in
        .json, else into the directory ``path`` (created when missing)."""
        check(c.kiln_tokenizer_save(self.handle, os.fspath(path)))

    @classmethod
    def _borrow(cls, model: "Model") -> "Tokenizer":
        return cls(check_out(c.kiln_model_tokenizer(model.handle)), model=model)

    @property
    def handle(self) -> Any:
        """The raw kiln_tokenizer* (SWIG pointer); raises kiln.Error once closed."""
        if self._model is not None and self._model.closed:
            raise Error(c.KILN_ERR_INVALID_ARGUMENT, "the kiln.Model this tokenizer belongs to is closed")
        if self._handle is None:
            raise Error(c.KILN_ERR_INVALID_ARGUMENT, "the kiln.Tokenizer is closed")
        return self._handle

    @property
    def owned(self) -> bool:
        """True for Tokenizer.load's (freed by close), False for a model's borrowed one."""
        return self._model is None

    @property
    def vocab_size(self) -> int:
        """Number of ids (max id + 1, added tokens included)."""
        return check_out(c.kiln_tokenizer_vocab_size(self.handle))

    def encode(self, text: Union[str, bytes], add_special: bool = False,
               parse_special: bool = False) -> List[int]:
        """Text to ids. ``add_special`` adds BOS/EOS as tokenizer_config.json says;
        ``parse_special`` lets special-token text in ``text`` become the special token."""
        flags = (c.KILN_TOKENIZE_ADD_SPECIAL if add_special else 0) | (
            c.KILN_TOKENIZE_PARSE_SPECIAL if parse_special else 0)
        handle = self.handle
        return list(fill(lambda buf: c.kiln_tokenizer_encode(handle, text, flags, buf),
                         lambda n: array.array("i", bytes(4 * n))))

    def encode_batch(self, texts: Sequence[Union[str, bytes]], add_special: bool = False,
                     parse_special: bool = False, n_threads: int = 0) -> List[List[int]]:
        """Many texts to ids on up to ``n_threads`` threads (0: one per core), each exactly as
        ``encode`` would (HF tokenizers' ``encode_batch``). The GIL is released meanwhile."""
        flags = (c.KILN_TOKENIZE_ADD_SPECIAL if add_special else 0) | (
            c.KILN_TOKENIZE_PARSE_SPECIAL if parse_special else 0)
        handle = self.handle
        texts = list(texts)
        offsets = array.array(_SIZE_T, bytes(array.array(_SIZE_T).itemsize * (len(texts) + 1)))
        # An id covers at least one byte, so this is enough for byte-level BPE: usually one call.
        guess = sum(len(t) for t in texts) + 4 * len(texts) + 16
        ids = array.array("i", bytes(4 * guess))
        status, n = c.kiln_tokenizer_encode_batch(handle, texts, flags, n_threads, ids, offsets)
        if status == c.KILN_ERR_BUFFER_TOO_SMALL:
            ids = array.array("i", bytes(4 * n))
            status, n = c.kiln_tokenizer_encode_batch(handle, texts, flags, n_threads, ids, offsets)
        check(status)
        return [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(texts))]

    def encode_threaded(self, text: Union[str, bytes], add_special: bool = False,
                        parse_special: bool = False, n_threads: int = 0) -> List[int]:
        """One long text to ids on up to ``n_threads`` threads (0: one per core); the ids are
        exactly ``encode``'s (kiln cuts only where the pieces cannot influence each other)."""
        flags = (c.KILN_TOKENIZE_ADD_SPECIAL if add_special else 0) | (
            c.KILN_TOKENIZE_PARSE_SPECIAL if parse_special else 0)
        handle = self.handle
        return list(fill(lambda buf: c.kiln_tokenizer_encode_threaded(handle, text, flags, n_threads, buf),
                         lambda n: array.array("i", bytes(4 * n))))

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Ids to text (invalid UTF-8 from partial tokens becomes U+FFFD)."""
        buf = ids_array(ids)
        flags = c.KILN_DETOKENIZE_SKIP_SPECIAL if skip_special else 0
        handle = self.handle
        text = fill(lambda out: c.kiln_tokenizer_decode(handle, buf, flags, out), bytearray)
        return bytes(text).decode("utf-8", "replace")

    def close(self) -> None:
        """Frees a loaded tokenizer (idempotent); a borrowed one is only detached."""
        if self._handle is not None and self._model is None:
            c.kiln_tokenizer_free(self._handle)
        self._handle = None

    @property
    def closed(self) -> bool:
        return self._handle is None or (self._model is not None and self._model.closed)

    def __enter__(self) -> "Tokenizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
