"""kiln — an embeddable LLM runtime. Python bindings over the C ABI (capi/kiln.h).

    import kiln
    with kiln.Runtime(kiln.Backend.CPU) as rt, rt.load_model("models/kjv-tiny") as model:
        with model.session() as s:
            for piece in s.generate("In the beginning", max_tokens=32, temperature=0):
                print(piece, end="", flush=True)

The raw SWIG module (one function per kiln.h function) is ``kiln.raw``.
"""

from ._errors import (BackendError, BufferTooSmallError, BusyError, CancelledError,
                      ContextFullError, Error, FormatError, InternalError, InvalidArgumentError,
                      IOError_, NotFoundError, OutOfMemoryError, OutOfRangeError, UnsupportedError,
                      VersionMismatchError)
from ._model import Model, ModelInfo
from ._native import c as raw
from ._runtime import (Backend, LogLevel, Precision, QuantizeType, Runtime, RuntimeInfo,
                       set_log_callback, version)
from ._session import GenerateResult, LogitsMode, Session, StopReason
from ._tokenizer import Tokenizer
from ._trainer import (MAX_MTP_HEADS, LrSchedule, Optimizer, ParamGroup, ParamRole, Trainer,
                       TrainerInfo, TrainerOutput, TrainResult)

ABI_VERSION: int = raw.KILN_ABI_VERSION

__all__ = [
    "ABI_VERSION", "Backend", "BackendError", "BufferTooSmallError", "BusyError", "CancelledError",
    "ContextFullError", "Error", "FormatError", "GenerateResult", "IOError_", "InternalError",
    "InvalidArgumentError", "LogLevel", "LogitsMode", "Model", "ModelInfo", "NotFoundError",
    "OutOfMemoryError", "OutOfRangeError", "Precision", "QuantizeType", "Runtime", "RuntimeInfo", "Session",
    "StopReason", "Tokenizer", "UnsupportedError", "VersionMismatchError", "raw", "set_log_callback",
    "version",
    # training
    "LrSchedule", "MAX_MTP_HEADS", "Optimizer", "ParamGroup", "ParamRole", "TrainResult", "Trainer",
    "TrainerInfo", "TrainerOutput",
]
