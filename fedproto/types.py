"""Small typed values that the client returns and the worker describes itself with.

They are plain frozen dataclasses with no wire knowledge: :mod:`fedproto.codec` converts them to and
from the generated protobuf classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = [
    "Limits",
    "MethodInfo",
    "ModelCatalog",
    "ModelSummary",
    "ObjectInfo",
    "ParameterInfo",
    "ServerInfo",
    "TensorInfo",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorInfo:
    """A tensor's element type, shape, payload size and (when known) SHA-256, without its elements."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    nbytes: int
    sha256: bytes = b""


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
    chunk_bytes: int = 1024 * 1024
    max_object_bytes: int = 4 * 1024 * 1024 * 1024
    max_call_args_bytes: int = 16 * 1024 * 1024
    idle_timeout_seconds: float = 300.0
    handshake_timeout_seconds: float = 10.0
    max_model_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """What a server said about itself in its Welcome."""

    version: int
    server_id: str
    server_name: str = ""
    capabilities: frozenset[str] = field(default_factory=frozenset)
    limits: Limits = field(default_factory=Limits)
    identity: str = ""


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
