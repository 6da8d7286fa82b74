"""kiln.Trainer: trains a model one optimizer step at a time on its own float32 copy of the weights.

    import kiln
    with kiln.Runtime(kiln.Backend.CPU) as rt:
        model = kiln.Model.create(rt, config_dict, tokenizer="models/kjv-tiny")
        with kiln.Trainer(model, learning_rate=1e-3) as trainer:
            result = trainer.step(inputs, targets)      # [B, T] lists or numpy arrays
            print(result.step, result.loss)
            trainer.save("run.ckpt")

The batch rules (targets of -1, masks, weights and how the loss is normalised) are kiln.h's
("Training"). A trainer is used by one thread at a time; ``cancel()`` works from any thread.
"""

from __future__ import annotations

import array
import enum
import itertools
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Sequence, Tuple, Union

from ._callbacks import GuardedCallback
from ._errors import Error, check, check_out
from ._model import Model, fill
from ._native import c

if TYPE_CHECKING:
    from ._runtime import Runtime

try:  # numpy is optional: batches given as numpy arrays are passed to kiln in place
    import numpy as _np
except ImportError:  # pragma: no cover - depends on the environment
    _np = None

MAX_MTP_HEADS: int = c.KILN_MAX_MTP_HEADS

PathLike = Union[str, "os.PathLike[str]"]
Progress = Callable[[float, str], Any]


class Optimizer(enum.IntEnum):
    ADAMW = c.KILN_OPTIMIZER_ADAMW
    MUON = c.KILN_OPTIMIZER_MUON  # nanochat's recipe: Muon on block matrices, AdamW on the rest


class LrSchedule(enum.IntEnum):
    CONSTANT = c.KILN_LR_CONSTANT
    WARMUP_COSINE = c.KILN_LR_WARMUP_COSINE
    WARMUP_LINEAR = c.KILN_LR_WARMUP_LINEAR
    WARMUP_STABLE_DECAY = c.KILN_LR_WARMUP_STABLE_DECAY


class TrainerOutput(enum.IntEnum):
    LOGITS = c.KILN_TRAINER_OUTPUT_LOGITS
    HIDDEN = c.KILN_TRAINER_OUTPUT_HIDDEN


class ParamRole(enum.IntEnum):
    """The kinds of trainable tensor a ParamGroup applies to (kiln.h's kiln_param_role)."""

    MATRIX = c.KILN_PARAM_MATRIX  # 2-D weights inside blocks (attention, MLP)
    EMBEDDING = c.KILN_PARAM_EMBEDDING  # the token embedding (also the head when tied)
    POSITION = c.KILN_PARAM_POSITION  # learned positions (GPT-2)
    HEAD = c.KILN_PARAM_HEAD  # an untied lm_head
    NORM = c.KILN_PARAM_NORM  # norm weights
    BIAS = c.KILN_PARAM_BIAS  # biases


@dataclass(frozen=True)
class ParamGroup:
    """A parameter group, as torch's: the AdamW-updated tensors of ``role`` (a ParamRole or its
    name, "matrix", "embedding", ...) get their own ``learning_rate`` (None = the trainer's; 0
    freezes them) and/or ``weight_decay`` (None = the role's default). A later group for the same
    role replaces an earlier one; in Muon mode matrices follow the muon_* options instead."""

    role: Union[ParamRole, str]
    learning_rate: Optional[float] = None
    weight_decay: Optional[float] = None

    def __post_init__(self) -> None:
        try:
            role = ParamRole(_enum(ParamRole, self.role))
        except (KeyError, ValueError):
            raise ValueError(f"ParamGroup.role is {self.role!r}; expected a ParamRole or one of "
                             f"{[r.name.lower() for r in ParamRole]}") from None
        object.__setattr__(self, "role", role)
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            if value is not None and not value >= 0:  # kiln reads a negative number as "not set"
                raise ValueError(f"ParamGroup.{name} is {value}; expected a number >= 0 or None")


@dataclass(frozen=True)
class TrainResult:
    """What one train step (or evaluation) measured."""

    loss: float  # the main (next-token) head's loss
    objective: float  # loss + sum of mtp weight * head loss: what was minimised
    mtp_losses: Tuple[float, ...]  # one per MTP head
    n_tokens: int  # counted positions of the main head
    weight_sum: float
    grad_norm: float  # before clipping; 0 for evaluation
    learning_rate: float
    tokens_per_second: float
    step: int  # optimizer steps taken so far (this one included)


@dataclass(frozen=True)
class TrainerInfo:
    step: int
    n_parameters: int
    n_mtp_heads: int
    architecture: str


def create_model(runtime: "Runtime", config: Union[Mapping[str, Any], str, bytes, "os.PathLike[str]"], *,
                 seed: Optional[int] = None, tokenizer: Optional[PathLike] = None) -> Model:
    """A fresh model (weights initialised from ``seed``) from a Hugging Face style config: a dict,
    JSON text (str or bytes), or the path of a config.json file. ``tokenizer`` is a tokenizer.json
    file or a directory holding one (None: the model has no tokenizer and works on ids only)."""
    if isinstance(config, Mapping):
        text: Union[str, bytes] = json.dumps(dict(config))
    elif isinstance(config, (str, bytes)):
        text = config
    else:
        with open(os.fspath(config), "rb") as f:
            text = f.read()
    options = c.kiln_model_create_options()
    check(c.kiln_model_create_options_default(options))
    if seed is not None:
        options.seed = seed
    if tokenizer is not None:
        options.tokenizer_path = os.fspath(tokenizer)
    handle = check_out(c.kiln_model_create(runtime.handle, text, options))
    return Model._adopt_handle(runtime, handle)


_KINDS = {  # kind: (array.array typecode, numpy dtype name)
    "ids": ("i", "int32"),
    "mask": ("B", "uint8"),
    "weights": ("f", "float32"),
}


def as_matrix(values: Any, kind: str, what: str) -> Tuple[Any, int, int]:
    """A [B, T] batch array as (contiguous buffer, B, T). A numpy array of the right dtype (bool for
    masks) that is already C-contiguous is used in place; other numpy arrays are converted once; a
    2-D memoryview is used in place; nested sequences are copied into an array.array."""
    typecode, dtype = _KINDS[kind]
    if _np is not None and isinstance(values, _np.ndarray):
        if values.ndim != 2:
            raise ValueError(f"{what}: expected a 2-D [batch, seq] array, got shape {values.shape}")
        if kind == "mask" and values.dtype == _np.bool_:
            arr = _np.ascontiguousarray(values).view(_np.uint8)
        else:
            arr = _np.ascontiguousarray(values, dtype=dtype)
        return arr, int(arr.shape[0]), int(arr.shape[1])
    if isinstance(values, memoryview) and values.ndim == 2:
        if not values.c_contiguous:
            raise ValueError(f"{what}: the memoryview must be C-contiguous")
        return values, int(values.shape[0]), int(values.shape[1])
    rows = [list(row) for row in values]
    if not rows or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError(f"{what}: expected {len(rows)} rows of equal, non-zero length, got lengths "
                         f"{[len(row) for row in rows]}")
    return array.array(typecode, itertools.chain.from_iterable(rows)), len(rows), len(rows[0])


def batch_tuple(inputs: Any, targets: Any, mask: Any = None, weights: Any = None) -> tuple:
    """The raw layer's kiln_batch tuple; every array must have the inputs' [B, T] shape."""
    ids, rows, cols = as_matrix(inputs, "ids", "inputs")
    parts = [rows, cols, ids]
    for values, kind, what in ((targets, "ids", "targets"), (mask, "mask", "mask"),
                               (weights, "weights", "weights")):
        if values is None:
            parts.append(None)
            continue
        buf, r, t = as_matrix(values, kind, what)
        if (r, t) != (rows, cols):
            raise ValueError(f"{what} has shape [{r}, {t}] but inputs has [{rows}, {cols}]")
        parts.append(buf)
    return tuple(parts)


def _enum(cls: Any, value: Any) -> int:
    return int(cls[value.upper()] if isinstance(value, str) else cls(value))


class Trainer:
    """Trains ``model``: a float32 copy of its weights, gradients and optimizer state (the model may
    be closed afterwards). Keyword options are kiln_trainer_options' fields (None = kiln's default):
    optimizer ("adamw" | "muon"), learning_rate, beta1, beta2, epsilon, weight_decay,
    muon_learning_rate, muon_momentum, muon_ns_steps, param_groups (ParamGroup or
    (role, learning_rate, weight_decay) items), schedule ("constant" | "warmup_cosine" |
    "warmup_linear" | "warmup_stable_decay"), warmup_steps, total_steps, min_lr_ratio,
    decay_fraction, grad_accum_steps, max_grad_norm, seed, n_mtp_heads, mtp_loss_weights,
    residual_dropout (GPT-2-style dropout in [0, 1) on the embedding and each sub-layer output,
    train steps only; 0 = off).

    ``progress(fraction, stage)`` is called during every step: stage "forward" before each
    micro-batch's forward + backward pass (fraction = the share of micro-batches done), then
    "optimizer" before the update (fraction 1); returning True cancels the step
    (kiln.CancelledError, nothing changed) and an exception it raises cancels the step and is
    re-raised by it.

    Use as a context manager or call close(); closing the runtime closes its trainers first."""

    _close_order = 0

    def __init__(
        self,
        model: Model,
        *,
        optimizer: Union[Optimizer, str, None] = None,
        learning_rate: Optional[float] = None,
        beta1: Optional[float] = None,
        beta2: Optional[float] = None,
        epsilon: Optional[float] = None,
        weight_decay: Optional[float] = None,
        muon_learning_rate: Optional[float] = None,
        muon_momentum: Optional[float] = None,
        muon_ns_steps: Optional[int] = None,
        param_groups: Iterable[Union[ParamGroup, Tuple[Any, ...]]] = (),
        schedule: Union[LrSchedule, str, None] = None,
        warmup_steps: Optional[int] = None,
        total_steps: Optional[int] = None,
        min_lr_ratio: Optional[float] = None,
        decay_fraction: Optional[float] = None,
        grad_accum_steps: Optional[int] = None,
        max_grad_norm: Optional[float] = None,
        seed: Optional[int] = None,
        n_mtp_heads: Optional[int] = None,
        mtp_loss_weights: Optional[Sequence[float]] = None,
        residual_dropout: Optional[float] = None,
        progress: Optional[Progress] = None,
    ) -> None:
        self._handle = None
        self._progress: Optional[GuardedCallback] = None
        options = c.kiln_trainer_options()
        check(c.kiln_trainer_options_default(options))
        scalars = dict(learning_rate=learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
                       weight_decay=weight_decay, muon_learning_rate=muon_learning_rate,
                       muon_momentum=muon_momentum, muon_ns_steps=muon_ns_steps,
                       warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio,
                       decay_fraction=decay_fraction, grad_accum_steps=grad_accum_steps,
                       max_grad_norm=max_grad_norm, seed=seed, n_mtp_heads=n_mtp_heads,
                       residual_dropout=residual_dropout)
        for name, value in scalars.items():
            if value is not None:
                setattr(options, name, value)
        if optimizer is not None:
            options.optimizer = _enum(Optimizer, optimizer)
        if schedule is not None:
            options.schedule = _enum(LrSchedule, schedule)
        if mtp_loss_weights is not None:
            c.kiln_py_trainer_options_set_mtp_loss_weights(options, list(mtp_loss_weights))
        groups = [g if isinstance(g, ParamGroup) else ParamGroup(*g) for g in param_groups]
        # kiln copies the groups in kiln_trainer_create: this owned array only has to outlive it.
        group_array = c.kiln_py_param_groups(
            [(int(g.role), -1.0 if g.learning_rate is None else g.learning_rate,
              -1.0 if g.weight_decay is None else g.weight_decay) for g in groups])
        c.kiln_py_trainer_options_set_param_groups(options, group_array if groups else None)
        guard = GuardedCallback(progress) if progress is not None else None
        c.kiln_py_trainer_options_set_progress_callback(options, guard)
        handle = check_out(c.kiln_trainer_create(model.handle, options))
        self._init(model.runtime, handle, guard)

    def _init(self, runtime: "Runtime", handle: Any, progress: Optional[GuardedCallback]) -> None:
        # kiln keeps the progress callable's pointer for the trainer's life: so does this object.
        self._handle = handle
        self._runtime = runtime
        self._progress = progress
        info = self.info
        self._n_mtp_heads = info.n_mtp_heads
        runtime._adopt(self)

    @classmethod
    def load(cls, runtime: "Runtime", path: PathLike) -> "Trainer":
        """Recreates a trainer from a checkpoint written by save(), ready to continue exactly where
        it was (same options and data state; the progress callback is not saved)."""
        trainer = cls.__new__(cls)
        trainer._handle = None
        trainer._progress = None
        trainer._init(runtime, check_out(c.kiln_checkpoint_load(runtime.handle, os.fspath(path))), None)
        return trainer

    @property
    def handle(self) -> Any:
        """The raw kiln_trainer* (SWIG pointer); raises kiln.Error once closed."""
        if self._handle is None:
            raise Error(c.KILN_ERR_INVALID_ARGUMENT, "the kiln.Trainer is closed")
        return self._handle

    @property
    def runtime(self) -> "Runtime":
        return self._runtime

    @property
    def info(self) -> TrainerInfo:
        i = c.kiln_trainer_info()
        check(c.kiln_trainer_get_info(self.handle, i))
        return TrainerInfo(i.step, i.n_parameters, i.n_mtp_heads, i.architecture)

    def _finish(self, status: int) -> None:
        """Re-raises the progress callback's exception, then kiln's error."""
        if self._progress is not None:
            self._progress.reraise()
        check(status)

    def _result(self, r: Any) -> TrainResult:
        mtp = c.kiln_py_train_result_mtp_losses(r)[: self._n_mtp_heads]
        return TrainResult(r.loss, r.objective, tuple(mtp), r.n_tokens, r.weight_sum, r.grad_norm,
                           r.learning_rate, r.tokens_per_second, r.step)

    def step(self, inputs: Any, targets: Any, mask: Any = None, weights: Any = None) -> TrainResult:
        """One optimizer step on a [B, T] batch: ``inputs`` and ``targets`` are int token ids
        (target -1 = none), ``mask`` optional 0/1 (or bool), ``weights`` optional float >= 0, each a
        [B, T] nested list or numpy array (numpy arrays of the right dtype are used in place). On
        any error the weights and optimizer state are unchanged."""
        batch = batch_tuple(inputs, targets, mask, weights)
        result = c.kiln_train_result()
        self._finish(c.kiln_train_step(self.handle, batch, result))
        return self._result(result)

    def eval_loss(self, inputs: Any, targets: Any, mask: Any = None, weights: Any = None) -> TrainResult:
        """The loss on a batch (arguments as in step()) without updating anything."""
        batch = batch_tuple(inputs, targets, mask, weights)
        result = c.kiln_train_result()
        self._finish(c.kiln_eval_loss(self.handle, batch, result))
        return self._result(result)

    def forward(self, inputs: Any, what: Union[TrainerOutput, str] = TrainerOutput.LOGITS) -> Any:
        """Runs the current weights on [B, T] ``inputs``. ``what="logits"`` gives float32 logits
        shaped (1 + n_mtp_heads, B, T, vocab), the main head first; ``what="hidden"`` the trunk's
        output shaped (B, T, hidden). A numpy array when numpy is importable, else a memoryview."""
        kind = TrainerOutput(_enum(TrainerOutput, what))
        ids, rows, cols = as_matrix(inputs, "ids", "inputs")
        args = (ids, rows, cols)
        result = c.kiln_trainer_forward(self.handle, args, int(kind), None)
        if result[0] != c.KILN_ERR_BUFFER_TOO_SMALL:
            check(result[0])
        out = array.array("f", bytes(4 * result[1]))
        check(c.kiln_trainer_forward(self.handle, args, int(kind), out)[0])
        positions = rows * cols
        if kind == TrainerOutput.LOGITS:
            heads = 1 + self._n_mtp_heads
            shape: Tuple[int, ...] = (heads, rows, cols, len(out) // (heads * positions))
        else:
            shape = (rows, cols, len(out) // positions)
        if _np is not None:
            return _np.frombuffer(out, dtype=_np.float32).reshape(shape)
        return memoryview(out).cast("B").cast("f", shape)

    def snapshot(self) -> Model:
        """The current weights as a new Model for generation (MTP heads are not part of it)."""
        return Model._adopt_handle(self._runtime, check_out(c.kiln_trainer_snapshot(self.handle)))

    @property
    def data_state(self) -> bytes:
        """Opaque bytes (at most 1 MiB) saved with checkpoints for your data loader."""
        handle = self.handle
        return bytes(fill(lambda buf: c.kiln_trainer_get_data_state(handle, buf), bytearray))

    @data_state.setter
    def data_state(self, value: Union[bytes, bytearray, memoryview]) -> None:
        check(c.kiln_trainer_set_data_state(self.handle, bytes(value)))

    @property
    def progress(self) -> Optional[Progress]:
        """The step progress callback (see the class docstring); assign None to remove it."""
        return self._progress._fn if self._progress is not None else None

    @progress.setter
    def progress(self, fn: Optional[Progress]) -> None:
        guard = GuardedCallback(fn) if fn is not None else None
        check(c.kiln_trainer_set_progress(self.handle, guard))
        self._progress = guard  # the old callable is released only once kiln dropped it

    def cancel(self) -> None:
        """Stops the running step (it raises kiln.CancelledError, nothing changed); safe from any
        thread. When no step runs, the next one is cancelled."""
        check(c.kiln_trainer_cancel(self.handle))

    def save(self, path: PathLike) -> None:
        """Writes a checkpoint (weights, optimizer state, step, options, RNG, data state, config,
        tokenizer) atomically: a crash leaves the previous file intact."""
        check(c.kiln_checkpoint_save(self.handle, os.fspath(path)))

    def export_hf(self, directory: PathLike) -> None:
        """Writes the current weights as a Hugging Face model directory (model.safetensors in
        float32, config.json, tokenizer files) that transformers and kiln.Runtime.load_model load."""
        check(c.kiln_trainer_export_hf(self.handle, os.fspath(directory)))

    def join_data_parallel(self, world_size: int, rank: int, nccl_id: bytes,
                           shard_optimizer_state: bool = False) -> None:
        """Joins a data-parallel group (``kiln_trainer_join_data_parallel``; kiln.h has the
        semantics): every rank calls it with the same ``nccl_id`` (from ``Runtime.nccl_id`` on one
        rank) and ``world_size`` and its own ``rank``; blocks until all have joined.
        ``shard_optimizer_state``: ZeRO-1, each rank keeps (and checkpoints) its slice of the AdamW
        state; every rank then calls ``save_checkpoint`` together."""
        if len(nccl_id) != c.KILN_NCCL_ID_BYTES:
            raise ValueError(f"nccl_id holds {len(nccl_id)} bytes, expected {c.KILN_NCCL_ID_BYTES}")
        o = c.kiln_data_parallel_options()
        check(c.kiln_data_parallel_options_default(o))
        o.world_size, o.rank = world_size, rank
        o.shard_optimizer_state = 1 if shard_optimizer_state else 0
        for k, b in enumerate(nccl_id):
            c.kiln_bind_nccl_id_set_byte(o.id, k, b)  # o.id is a view into o
        check(c.kiln_trainer_join_data_parallel(self.handle, o))

    def close(self) -> None:
        """Frees the trainer (idempotent)."""
        if self._handle is not None:
            c.kiln_trainer_free(self._handle)
            self._handle = None
            self._progress = None

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_handle", None) is not None:
            self.close()
