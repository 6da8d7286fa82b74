"""Shared fixtures for the kiln Python binding tests."""

from __future__ import annotations

import array
import ctypes
import json
import math
import os
import pathlib

SOURCE_DIR = pathlib.Path(os.environ.get("KILN_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[3]))
TINY_QWEN2 = SOURCE_DIR / "tests" / "fixtures" / "tiny-qwen2"


def tiny_reference() -> dict:
    """HF transformers' outputs for tiny-qwen2 (prompt ids, greedy continuation)."""
    return json.loads((TINY_QWEN2 / "hf_ref.json").read_text())


def tiny_logits() -> "array.array[float]":
    """HF float32 logits of every position of the reference prompt, row-major."""
    logits = array.array("f")
    logits.frombytes((TINY_QWEN2 / "hf_f32_logits.bin").read_bytes())
    return logits


def rel_l2(got, want) -> float:
    num = sum((float(g) - float(w)) ** 2 for g, w in zip(got, want))
    den = sum(float(w) ** 2 for w in want)
    return math.sqrt(num / den)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _MallInfo2


def malloc_in_use() -> int:
    """Bytes the C heap has handed out and not had back (glibc mallinfo2: arena + mmap chunks).
    Unlike RSS this counts memory never touched, such as a session's untouched KV cache."""
    info = _libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


CHAT_FIXTURES = SOURCE_DIR / "tests" / "fixtures" / "chat"


def qwen3_chat_template() -> str:
    """Qwen3's real chat template (tests/fixtures/chat/templates/SOURCES.md says where from)."""
    return (CHAT_FIXTURES / "templates" / "qwen3.jinja").read_text()


def hf_chat_render(template: str, conversation: str) -> str:
    """HF transformers' apply_chat_template(tokenize=False) text for a fixture conversation."""
    renders = json.loads((CHAT_FIXTURES / "expected" / "hf_renders.json").read_text())
    return renders["renders"][template][conversation]["text"]
