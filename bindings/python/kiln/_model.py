"""kiln.Model: immutable weights, config and tokenizer; thread-safe, shared by sessions."""

from __future__ import annotations

import array
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ._callbacks import GuardedCallback
from ._errors import Error, check, check_out
from ._native import c

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._session import Session
    from ._tokenizer import Tokenizer


@dataclass(frozen=True)
class ModelInfo:
    architecture: str
    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int
    context_length: int
    n_parameters: int
    bos_token_id: int
    eos_token_id: int
    add_bos: bool


def ids_array(ids: Iterable[int]) -> "array.array[int]":
    """Token ids as a contiguous int32 buffer (what kiln.h's const int32_t* takes)."""
    if isinstance(ids, array.array) and ids.typecode == "i" and ids.itemsize == 4:
        return ids
    return array.array("i", ids)


def fill(call: Callable[[Any], list], make: Callable[[int], Any]) -> Any:  # type: ignore[type-arg]
    """kiln.h's buffer protocol: ask for the size with no buffer, then fill one of that size."""
    result = call(None)
    if result[0] != c.KILN_ERR_BUFFER_TOO_SMALL:
        check(result[0])
    buffer = make(result[1])
    check(call(buffer)[0])
    return buffer


def chat_message_tuple(message: Mapping[str, Any]) -> Tuple[str, Optional[str], Optional[str], Optional[str]]:
    """One message dict as kiln_chat_message's fields: ``role`` and ``content`` (None = no content)
    as they are, ``tool_calls`` as JSON, every other key merged into the message via extra_json."""
    if "role" not in message:
        raise Error(c.KILN_ERR_INVALID_ARGUMENT, f"chat message {dict(message)!r} has no 'role'")
    extra = {k: v for k, v in message.items() if k not in ("role", "content", "tool_calls")}
    tool_calls = message.get("tool_calls")
    return (
        message["role"],
        message.get("content"),
        None if tool_calls is None else json.dumps(tool_calls),
        json.dumps(extra) if extra else None,
    )


class Model:
    """A loaded model. Prefer ``Runtime.load_model``. Close it (or use ``with``) to free it;
    sessions made from it stay usable after it is closed (kiln keeps the weights for them)."""

    _close_order = 1

    def __init__(
        self,
        runtime: "Runtime",
        path: Union[str, "os.PathLike[str]"],
        *,
        progress: Optional[Callable[[float, str], Any]] = None,
        precision: int = c.KILN_PRECISION_DEFAULT,
    ) -> None:
        self._handle = None
        self._runtime = runtime
        options = c.kiln_model_load_options()
        check(c.kiln_model_load_options_default(options))
        options.precision = int(precision)
        guard = GuardedCallback(progress) if progress is not None else None
        if guard is not None:
            c.kiln_py_model_load_options_set_progress_callback(options, guard)
        result = c.kiln_model_load(runtime.handle, os.fspath(path), options)
        if guard is not None:
            guard.reraise()
        self._handle = check_out(result)
        runtime._adopt(self)

    @classmethod
    def create(cls, runtime: "Runtime", config: Union[Mapping[str, Any], str, bytes, "os.PathLike[str]"], *,
               seed: Optional[int] = None,
               tokenizer: Union[str, "os.PathLike[str]", None] = None) -> "Model":
        """A fresh model for training, its weights initialised from ``seed`` as the family's
        reference code does: ``config`` is a Hugging Face style config (a dict, JSON text, or the
        path of a config.json), ``tokenizer`` a tokenizer.json or a directory holding one."""
        from ._trainer import create_model

        return create_model(runtime, config, seed=seed, tokenizer=tokenizer)

    @classmethod
    def _adopt_handle(cls, runtime: "Runtime", handle: Any) -> "Model":
        """Wraps a kiln_model* that kiln made (kiln_model_create, kiln_trainer_snapshot)."""
        model = cls.__new__(cls)
        model._handle = handle
        model._runtime = runtime
        runtime._adopt(model)
        return model

    @property
    def handle(self) -> Any:
        """The raw kiln_model* (SWIG pointer); raises kiln.Error once closed."""
        if self._handle is None:
            raise Error(c.KILN_ERR_INVALID_ARGUMENT, "the kiln.Model is closed")
        return self._handle

    @property
    def runtime(self) -> "Runtime":
        return self._runtime

    @property
    def info(self) -> ModelInfo:
        i = c.kiln_model_info()
        check(c.kiln_model_get_info(self.handle, i))
        return ModelInfo(
            i.architecture, i.vocab_size, i.hidden_size, i.n_layers, i.n_heads, i.n_kv_heads,
            i.head_dim, i.intermediate_size, i.context_length, i.n_parameters, i.bos_token_id,
            i.eos_token_id, bool(i.add_bos),
        )

    @property
    def eos_ids(self) -> List[int]:
        """Every id that ends generation."""
        return list(fill(lambda buf: c.kiln_model_eos_ids(self.handle, buf),
                         lambda n: array.array("i", bytes(4 * n))))

    @property
    def tokenizer(self) -> "Tokenizer":
        """The model's tokenizer, borrowed: it keeps this Model alive and is unusable once the
        model is closed. Raises kiln.UnsupportedError for a model without one."""
        from ._tokenizer import Tokenizer

        return Tokenizer._borrow(self)

    def tokenize(self, text: Union[str, bytes], *, add_special: bool = True,
                 parse_special: bool = False) -> List[int]:
        """Text to ids. ``add_special`` adds BOS/EOS as the tokenizer config says;
        ``parse_special`` lets special-token text in ``text`` become the special token."""
        flags = (c.KILN_TOKENIZE_ADD_SPECIAL if add_special else 0) | (
            c.KILN_TOKENIZE_PARSE_SPECIAL if parse_special else 0)
        return list(fill(lambda buf: c.kiln_tokenize(self.handle, text, flags, buf),
                         lambda n: array.array("i", bytes(4 * n))))

    def detokenize(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Ids to text (invalid UTF-8 from partial tokens is replaced with U+FFFD)."""
        return self.detokenize_bytes(ids, skip_special=skip_special).decode("utf-8", "replace")

    def detokenize_bytes(self, ids: Iterable[int], *, skip_special: bool = False) -> bytes:
        """Ids to the exact bytes they stand for."""
        buf = ids_array(ids)
        flags = c.KILN_DETOKENIZE_SKIP_SPECIAL if skip_special else 0
        return bytes(fill(lambda out: c.kiln_detokenize(self.handle, buf, flags, out), bytearray))

    def token_to_piece(self, token_id: int) -> bytes:
        """The raw bytes of one token (may be part of a UTF-8 character)."""
        return bytes(fill(lambda out: c.kiln_token_to_piece(self.handle, token_id, out), bytearray))

    def _chat_options(self, add_generation_prompt: bool, tools: Optional[Sequence[Any]],
                      extra_context: Optional[Mapping[str, Any]], template: Optional[str],
                      template_name: Optional[str], now: int, max_steps: Optional[int],
                      max_output_bytes: Optional[int]) -> Any:
        options = c.kiln_chat_options()
        check(c.kiln_chat_options_default(options))
        options.add_generation_prompt = 1 if add_generation_prompt else 0
        if tools is not None:
            options.tools_json = json.dumps(list(tools))
        if extra_context:
            options.extra_context_json = json.dumps(dict(extra_context))
        options.template_override = template
        options.template_name = template_name
        options.now_unix_seconds = now
        if max_steps is not None:
            options.max_steps = max_steps
        if max_output_bytes is not None:
            options.max_output_bytes = max_output_bytes
        return options

    def chat_render(self, messages: Iterable[Mapping[str, Any]], *, add_generation_prompt: bool = True,
                    tools: Optional[Sequence[Any]] = None,
                    extra_context: Optional[Mapping[str, Any]] = None, template: Optional[str] = None,
                    template_name: Optional[str] = None, now: int = 0,
                    max_steps: Optional[int] = None, max_output_bytes: Optional[int] = None) -> str:
        """Renders ``messages`` (dicts with ``role``, ``content`` and optionally ``tool_calls`` and
        any other keys the template reads) with the model's chat template, as HF's
        ``apply_chat_template(tokenize=False)`` does. ``tools`` become the template's ``tools``,
        ``extra_context`` its extra variables (``enable_thinking``, ...); ``template`` replaces the
        model's template; ``now`` (Unix seconds, 0 = now) is strftime_now()'s clock."""
        msgs = [chat_message_tuple(m) for m in messages]
        options = self._chat_options(add_generation_prompt, tools, extra_context, template,
                                     template_name, now, max_steps, max_output_bytes)
        text = fill(lambda out: c.kiln_chat_render(self.handle, msgs, options, out), bytearray)
        return bytes(text).decode("utf-8")

    def chat_render_tokens(self, messages: Iterable[Mapping[str, Any]], *,
                           add_generation_prompt: bool = True, tools: Optional[Sequence[Any]] = None,
                           extra_context: Optional[Mapping[str, Any]] = None,
                           template: Optional[str] = None, template_name: Optional[str] = None,
                           now: int = 0, max_steps: Optional[int] = None,
                           max_output_bytes: Optional[int] = None) -> Tuple[List[int], List[int]]:
        """Renders and tokenizes for training: ``(ids, mask)`` of equal length, ``mask[i]`` 1 where
        the token belongs to an assistant reply as the template writes it, end-of-turn token
        included (kiln.h's kiln_chat_render_tokens). Arguments as in ``chat_render``."""
        msgs = [chat_message_tuple(m) for m in messages]
        options = self._chat_options(add_generation_prompt, tools, extra_context, template,
                                     template_name, now, max_steps, max_output_bytes)
        result = c.kiln_chat_render_tokens(self.handle, msgs, options, (None, None))
        if result[0] != c.KILN_ERR_BUFFER_TOO_SMALL:
            check(result[0])
        ids = array.array("i", bytes(4 * result[1]))
        mask = bytearray(result[1])
        result = c.kiln_chat_render_tokens(self.handle, msgs, options, (ids, mask))
        check(result[0])
        return list(ids[: result[1]]), list(mask[: result[1]])

    def session(self, *, context_length: int = 0, seed: Optional[int] = None) -> "Session":
        """A new session (KV cache + sampler). ``context_length`` 0 = the model's (capped at 4096)."""
        from ._session import Session

        return Session(self, context_length=context_length, seed=seed)

    def close(self) -> None:
        """Frees the model (idempotent)."""
        if self._handle is not None:
            c.kiln_model_free(self._handle)
            self._handle = None

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
