"""Exceptions of fedproto: one class per protocol error code, under one base.

Every :class:`ProtocolError` carries the wire ``code`` (an ``ErrorCode`` value from
``errors.proto``), a human ``message`` and string ``details``. A server raises them to answer a request
with an ``Error``; a client raises them when a request ends with an ``Error``. ``remote`` tells whose
fault it was seen from here: ``True`` when the peer reported it, ``False`` when it was detected locally
(h11's ``RemoteProtocolError``/``LocalProtocolError`` split, folded into one attribute so that one
``except NotFoundError`` catches both).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

from fedproto_pb.v1 import errors_pb2

__all__ = [
    "AlreadyExistsError",
    "ConnectionClosedError",
    "DataLossError",
    "DeadlineExceededError",
    "DigestConfigError",
    "ErrorCode",
    "EventLoopRunningError",
    "FailedPreconditionError",
    "FedprotoError",
    "InternalError",
    "InvalidArgumentError",
    "MalformedError",
    "MethodNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RequestCancelledError",
    "ResourceExhaustedError",
    "TrainConfigError",
    "TrainConfigTypeError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnsupportedVersionError",
    "WorkerLoadError",
    "error_class_for",
]


class ErrorCode(IntEnum):
    """The protocol's error codes; values equal ``fedproto.v1.ErrorCode`` in ``errors.proto``."""

    UNSPECIFIED = errors_pb2.ERROR_CODE_UNSPECIFIED
    MALFORMED = errors_pb2.ERROR_CODE_MALFORMED
    UNSUPPORTED_VERSION = errors_pb2.ERROR_CODE_UNSUPPORTED_VERSION
    UNAUTHENTICATED = errors_pb2.ERROR_CODE_UNAUTHENTICATED
    PERMISSION_DENIED = errors_pb2.ERROR_CODE_PERMISSION_DENIED
    NOT_FOUND = errors_pb2.ERROR_CODE_NOT_FOUND
    METHOD_NOT_FOUND = errors_pb2.ERROR_CODE_METHOD_NOT_FOUND
    INVALID_ARGUMENT = errors_pb2.ERROR_CODE_INVALID_ARGUMENT
    ALREADY_EXISTS = errors_pb2.ERROR_CODE_ALREADY_EXISTS
    FAILED_PRECONDITION = errors_pb2.ERROR_CODE_FAILED_PRECONDITION
    RESOURCE_EXHAUSTED = errors_pb2.ERROR_CODE_RESOURCE_EXHAUSTED
    CANCELLED = errors_pb2.ERROR_CODE_CANCELLED
    DEADLINE_EXCEEDED = errors_pb2.ERROR_CODE_DEADLINE_EXCEEDED
    INTERNAL = errors_pb2.ERROR_CODE_INTERNAL
    UNAVAILABLE = errors_pb2.ERROR_CODE_UNAVAILABLE
    UNIMPLEMENTED = errors_pb2.ERROR_CODE_UNIMPLEMENTED
    DATA_LOSS = errors_pb2.ERROR_CODE_DATA_LOSS


class FedprotoError(Exception):
    """Base of every exception fedproto raises on purpose."""


class EventLoopRunningError(FedprotoError, RuntimeError):
    """A blocking entry point (``Worker.run``) was called where an event loop already runs.

    Blocking there would stall that loop (a notebook's, or asyncio code's) for as long as the worker
    serves; the message says what to call instead.
    """


class WorkerLoadError(FedprotoError, ValueError):
    """A worker or its methods could not be loaded from ``MODULE:ATTRIBUTE`` (``fedproto serve``).

    The message is one line naming what was asked for and what went wrong: a module that does not
    import, an attribute it lacks, a factory that fails or returns something that is not a worker.
    """


class DigestConfigError(FedprotoError, ValueError):
    """A client's ``digests`` option is not an offer a Hello may carry (docs/protocol.md section 7.5.3).

    It names an algorithm not implemented here, names one twice, or is a single string instead of a
    sequence of names; the message lists what is known. Raised when the client is built, before any
    connection is opened.
    """


class ProtocolError(FedprotoError):
    """A request failed with a protocol error code (sent or received as an ``Error`` message)."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str = "",
        *,
        details: Mapping[str, str] | None = None,
        remote: bool = False,
    ) -> None:
        super().__init__(message or self.code.name.lower().replace("_", " "))
        self.message = message
        self.details: dict[str, str] = dict(details or {})
        self.remote = remote

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}" if self.message else self.code.name
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, details={self.details!r}, remote={self.remote})"


class MalformedError(ProtocolError):
    """A frame or message could not be decoded or is structurally invalid."""

    code = ErrorCode.MALFORMED


class UnsupportedVersionError(ProtocolError):
    """The peers share no protocol version."""

    code = ErrorCode.UNSUPPORTED_VERSION


class UnauthenticatedError(ProtocolError):
    """The handshake carried no token or an unknown one."""

    code = ErrorCode.UNAUTHENTICATED


class PermissionDeniedError(ProtocolError):
    """The identity may not do this (for example: TorchScript models on a weights-only worker)."""

    code = ErrorCode.PERMISSION_DENIED


class NotFoundError(ProtocolError):
    """An object, dataset or transfer does not exist for this identity."""

    code = ErrorCode.NOT_FOUND


class MethodNotFoundError(ProtocolError):
    """A custom call named a method the worker does not expose."""

    code = ErrorCode.METHOD_NOT_FOUND


class InvalidArgumentError(ProtocolError):
    """A field or argument has a wrong type, is missing, or is out of range."""

    code = ErrorCode.INVALID_ARGUMENT


class TrainConfigError(InvalidArgumentError, ValueError):
    """A :class:`~fedproto.TrainConfig` holds a value a worker would refuse, found before sending it.

    It is the ``INVALID_ARGUMENT`` the worker would answer, with the worker's wording and the offending
    field in ``details["field"]``, so ``except InvalidArgumentError`` catches a mistake whether it was
    found here or by the worker. It is also a ``ValueError``, which is what ``TrainConfig`` raised before
    it was typed and what callers (the ``fedproto`` command among them) catch.
    """


class TrainConfigTypeError(TrainConfigError, TypeError):
    """A :class:`~fedproto.TrainConfig` value of the wrong kind (a model that is not a module, a loss
    that cannot be scripted...); also a ``TypeError``, as such mistakes were before they were typed."""


class AlreadyExistsError(ProtocolError):
    """An object with that id already exists."""

    code = ErrorCode.ALREADY_EXISTS


class FailedPreconditionError(ProtocolError):
    """The session is not in a state to run the request (for example: fit before a train config)."""

    code = ErrorCode.FAILED_PRECONDITION


class ResourceExhaustedError(ProtocolError):
    """A limit was hit: in-flight requests, stored bytes, argument size or model size."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class RequestCancelledError(ProtocolError):
    """The request was cancelled. Named so it never shadows ``asyncio.CancelledError``."""

    code = ErrorCode.CANCELLED


class DeadlineExceededError(ProtocolError):
    """The request's deadline passed before it finished."""

    code = ErrorCode.DEADLINE_EXCEEDED


class InternalError(ProtocolError):
    """The server failed in a way that is not the client's fault."""

    code = ErrorCode.INTERNAL


class UnavailableError(ProtocolError):
    """The server is shutting down or cannot serve right now."""

    code = ErrorCode.UNAVAILABLE


class ConnectionClosedError(UnavailableError):
    """The connection closed (or could not be opened) before a request got its reply.

    An ``UNAVAILABLE`` error raised by the client itself (docs/protocol.md section 5.3.8): whether the
    request took effect on the worker is unknown. ``close_code`` and ``reason`` are the WebSocket close's.
    """

    def __init__(self, message: str, *, close_code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.close_code = close_code
        self.reason = reason


class UnimplementedError(ProtocolError):
    """The server does not implement this kind of request."""

    code = ErrorCode.UNIMPLEMENTED


class DataLossError(ProtocolError):
    """A chunked payload did not match its SHA-256 or its announced size."""

    code = ErrorCode.DATA_LOSS


_BY_CODE: dict[ErrorCode, type[ProtocolError]] = {
    cls.code: cls
    for cls in (
        MalformedError,
        UnsupportedVersionError,
        UnauthenticatedError,
        PermissionDeniedError,
        NotFoundError,
        MethodNotFoundError,
        InvalidArgumentError,
        AlreadyExistsError,
        FailedPreconditionError,
        ResourceExhaustedError,
        RequestCancelledError,
        DeadlineExceededError,
        InternalError,
        UnavailableError,
        UnimplementedError,
        DataLossError,
    )
}


def error_class_for(code: int) -> type[ProtocolError]:
    """Return the exception class for a wire error code (unknown and unspecified map to internal)."""
    try:
        return _BY_CODE[ErrorCode(code)]
    except (ValueError, KeyError):
        return InternalError
