"""fedproto: remote federated training with PyTorch over a language-neutral protocol.

A data owner runs a :class:`Worker` holding named datasets; a coordinator connects with a
:class:`Client` (or :class:`AsyncClient`), sends a :class:`TrainConfig`, fits and evaluates on the
worker's data, moves tensors, and calls the methods the owner chose to expose. :class:`FedAvg` trains
many workers together.
"""

from fedproto.client import AsyncClient, Client, ObjectRef
from fedproto.datasets import Dataset, DatasetDescription
from fedproto.errors import (
    AlreadyExistsError,
    ConnectionClosedError,
    DataLossError,
    DeadlineExceededError,
    ErrorCode,
    EventLoopRunningError,
    FailedPreconditionError,
    FedprotoError,
    InternalError,
    InvalidArgumentError,
    MalformedError,
    MethodNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RequestCancelledError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnsupportedVersionError,
    WorkerLoadError,
)
from fedproto.federated import (
    ClientRound,
    FedAvg,
    FedAvgConfigError,
    FedAvgError,
    FederatedClient,
    ResumeError,
    RoundRecord,
    SeededSampler,
    Strategy,
    WorkerRound,
    average_weights,
)
from fedproto.server import CallContext, Worker, rpc
from fedproto.training import TrainConfig
from fedproto.types import (
    EvaluateResult,
    FitProgressEvent,
    FitResult,
    Limits,
    MethodInfo,
    ModelCatalog,
    ModelSummary,
    ObjectInfo,
    ServerInfo,
    TensorInfo,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "AsyncClient",
    "CallContext",
    "Client",
    "ClientRound",
    "ConnectionClosedError",
    "DataLossError",
    "Dataset",
    "DatasetDescription",
    "DeadlineExceededError",
    "ErrorCode",
    "EventLoopRunningError",
    "EvaluateResult",
    "FailedPreconditionError",
    "FedAvg",
    "FedAvgConfigError",
    "FedAvgError",
    "FederatedClient",
    "FedprotoError",
    "FitProgressEvent",
    "FitResult",
    "InternalError",
    "InvalidArgumentError",
    "Limits",
    "MalformedError",
    "MethodInfo",
    "MethodNotFoundError",
    "ModelCatalog",
    "ModelSummary",
    "NotFoundError",
    "ObjectInfo",
    "ObjectRef",
    "PermissionDeniedError",
    "ProtocolError",
    "RequestCancelledError",
    "ResourceExhaustedError",
    "ResumeError",
    "RoundRecord",
    "SeededSampler",
    "ServerInfo",
    "Strategy",
    "TensorInfo",
    "TrainConfig",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnsupportedVersionError",
    "Worker",
    "WorkerLoadError",
    "WorkerRound",
    "__version__",
    "average_weights",
    "rpc",
]
