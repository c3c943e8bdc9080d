"""Small typed values that cross the wire: what the client returns and the worker describes itself with.

They are plain frozen dataclasses with no wire knowledge and no training code: :mod:`fedproto.codec`
converts them to and from the generated protobuf classes, the worker's training engine
(:mod:`fedproto.training.engine`) produces the training records, and the client returns them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "EvaluateKind",
    "EvaluateOptions",
    "EvaluateResult",
    "FitOptions",
    "FitProgressEvent",
    "FitResult",
    "FreedBytes",
    "Limits",
    "MethodInfo",
    "ModelCatalog",
    "ModelSummary",
    "ObjectInfo",
    "ParameterInfo",
    "ServerInfo",
    "TensorInfo",
    "TrainSpec",
    "WeightSlice",
    "WeightsEntry",
    "WeightsManifest",
]


class FreedBytes(int):
    """The payload bytes a delete freed on the worker: an ``int`` that says what it is when shown.

    It is a plain int in arithmetic, comparisons, ``str()``, f-strings and JSON (``ref.delete() == 36``,
    ``f"{freed}"`` is ``"36"``); only its ``repr``, what a REPL or a notebook shows, reads
    ``36 bytes freed``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)} byte{'' if self == 1 else 's'} freed"

    def __str__(self) -> str:  # int's str is its repr: keep the plain number
        return int.__repr__(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorInfo:
    """A tensor's element type, shape, payload size and (when known) digest, without its elements.

    ``sha256`` holds the digest when the connection uses SHA-256; ``digest`` holds it under any other
    negotiated algorithm (docs/protocol.md section 7.5.8), and then ``sha256`` is empty.
    """

    dtype: torch.dtype
    shape: tuple[int, ...]
    nbytes: int
    sha256: bytes = b""
    digest: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightsEntry:
    """One tensor of a chunked weights payload: its name, layout and where its bytes lie (section 12.8)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    #: byte offset of its first element in the payload
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        """How many elements the tensor has."""
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightsManifest:
    """What a chunked weights payload holds: tensors end to end, in state-dict order (section 12.8).

    ``sha256``/``digest`` carry an upload's announced digest as :class:`TensorInfo`'s do (section 7.5.8).
    """

    entries: tuple[WeightsEntry, ...]
    total_bytes: int
    sha256: bytes = b""
    digest: bytes = b""

    @property
    def names(self) -> tuple[str, ...]:
        """The tensors' names, in payload order."""
        return tuple(entry.name for entry in self.entries)


@dataclass(frozen=True, slots=True)
class WeightSlice:
    """Whole elements of one tensor of a streamed weights download: ``values`` starts at element ``start``.

    ``values`` is a flat, read-only tensor of the tensor's dtype that is valid only during the call that
    receives it (it aliases the received frame): copy what must outlive the call.
    """

    name: str
    start: int
    values: torch.Tensor


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectInfo:
    """What a worker keeps about one stored object (``list_objects``, ``search``, ``send``)."""

    id: str
    tags: tuple[str, ...] = ()
    description: str = ""
    tensor: TensorInfo

    @property
    def dtype(self) -> torch.dtype:
        """The stored tensor's element type."""
        return self.tensor.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The stored tensor's shape."""
        return self.tensor.shape

    @property
    def nbytes(self) -> int:
        """The stored tensor's payload size in bytes."""
        return self.tensor.nbytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ParameterInfo:
    """One parameter of an exposed method: its name, Value kind, whether required, and its kind."""

    name: str
    type: str = "any"
    required: bool = True
    kind: str = "positional_or_keyword"


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodInfo:
    """One method a worker exposes to custom calls."""

    name: str
    description: str = ""
    parameters: tuple[ParameterInfo, ...] = ()
    returns: str = "any"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Limits a server enforces on a connection (``Welcome.limits``); 0 means no limit."""

    max_frame_bytes: int = 64 * 1024 * 1024
    max_in_flight: int = 128
    # 256 KiB: the bulk benchmark moved 64-256 KiB WebSocket frames 1.2-2x faster than 1 MiB ones, and a
    # tensor above it travels in chunks of that size instead of one large message
    chunk_bytes: int = 256 * 1024
    max_object_bytes: int = 4 * 1024 * 1024 * 1024
    max_call_args_bytes: int = 16 * 1024 * 1024
    idle_timeout_seconds: float = 300.0
    handshake_timeout_seconds: float = 10.0
    max_model_bytes: int = 64 * 1024 * 1024
    max_objects: int = 65536
    max_object_metadata_bytes: int = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """What a server said about itself in its Welcome."""

    version: int
    server_id: str
    server_name: str = ""
    capabilities: frozenset[str] = field(default_factory=frozenset)
    limits: Limits = field(default_factory=Limits)
    identity: str = ""
    #: the payload digest algorithm in force on the connection (section 7.5.4)
    digest: str = "sha256"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSummary:
    """What a worker reports after accepting a train config: parameter count and state names."""

    parameter_count: int
    state_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCatalog:
    """The architectures a worker registered, and whether it accepts only those."""

    names: tuple[str, ...] = ()
    weights_only: bool = False


# --------------------------------------------------------------------------------------------------
# training records


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainSpec:
    """A train config as the wire carries it and the worker receives it.

    A client builds one from a :class:`~fedproto.training.TrainConfig` with
    :meth:`~fedproto.training.TrainConfig.to_spec`. Exactly one of ``model_torchscript``/
    ``registered_model``/``model_object`` and one of ``loss_torchscript``/``loss_name`` should be set
    (``model_object`` names a stored object holding the archive, protocol section 12.9); this class does not
    check (the codec must be able to represent what a client sent, and
    :meth:`~fedproto.training.engine.TrainingState.configure` answers with the right error).
    ``optimizer_args`` values are numbers, bools or lists of numbers.
    ``max_nr_batches`` <= 0 means no cap; ``seed`` None means nondeterministic. ``proximal_mu`` > 0
    adds FedProx's proximal term to the loss; ``reset_optimizer`` starts every fit with a new optimizer.
    """

    model_torchscript: bytes | None = None
    registered_model: str | None = None
    model_object: str | None = None
    loss_torchscript: bytes | None = None
    loss_name: str | None = None
    optimizer: str
    optimizer_args: dict[str, Any] = field(default_factory=dict)
    batch_size: int
    epochs: int
    shuffle: bool
    max_nr_batches: int = -1
    seed: int | None = None
    initial_weights: dict[str, Tensor] = field(default_factory=dict)
    proximal_mu: float = 0.0
    reset_optimizer: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FitOptions:
    """What a client asks of one fit (``FitRequest``); see ``AsyncClient.fit``."""

    dataset_key: str
    return_weights: bool = False
    progress_every: int = 0
    """A progress event every this many batches; 0 leaves the interval to the worker."""


class EvaluateKind(Enum):
    """What an evaluation measures (``EvaluateKind``, protocol section 12.5.11).

    By default the dataset's target element type decides: integer and bool targets are classes,
    floating-point and complex targets are values. A request may ask for either (binary classification
    with float 0/1 targets, as ``bce_with_logits`` needs, asks for ``CLASSIFICATION``).
    """

    CLASSIFICATION = "classification"
    """Correct predictions (accuracy) and per-class histograms."""
    REGRESSION = "regression"
    """Mean squared and mean absolute error; no classes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluateOptions:
    """What a client asks of one evaluation (``EvaluateRequest``); see ``AsyncClient.evaluate``."""

    dataset_key: str
    return_histograms: bool = False
    nr_bins: int = 0
    return_loss: bool = True
    return_raw_accuracy: bool = True
    batch_size: int = 0
    """Samples per batch; 0 uses the train config's."""
    kind: EvaluateKind | None = None
    """Evaluate as this kind; None: as the dataset's target element type says."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FitProgressEvent:
    """One progress report of a running fit (``FitProgress``)."""

    epoch: int
    """The epoch in progress, from 1."""
    batch: int
    """Batches done in this epoch, from 1."""
    batches_per_epoch: int
    """Batches in this epoch (fewer in the epoch where ``max_nr_batches`` ends the fit)."""
    loss: float
    """The loss of the latest batch."""
    running_loss: float
    """The mean loss over this epoch's batches so far."""
    samples: int
    """Samples processed so far in this fit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FitResult:
    """The outcome of a finished fit (``FitReply``)."""

    final_loss: float
    mean_loss: float
    samples: int
    batches: int
    epochs: int
    seconds: float
    dataset_size: int
    weights: dict[str, Tensor] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluateResult:
    """The outcome of an evaluation (``EvaluateReply``); unrequested parts are None, 0 or empty.

    ``kind`` says which metrics are meaningful: a classification counts ``correct`` predictions and fills
    the histograms when asked; a regression (float targets) reports ``mean_squared_error`` and
    ``mean_absolute_error`` instead, with ``correct`` 0 and no histograms. A worker that predates the
    kinds always answers a classification.
    """

    loss: float | None
    correct: int
    total: int
    prediction_histogram: list[int]
    target_histogram: list[int]
    kind: EvaluateKind = EvaluateKind.CLASSIFICATION
    mean_squared_error: float | None = None
    mean_absolute_error: float | None = None
