"""What docs/protocol.md says, as data: the message tables of section 19, dtypes and error codes.

The suite derives its expectations from these tables (which reply a request gets, which error codes it
may end with, which capability it needs), so a rule is written down once, next to its section number.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fedproto_pb.v1 import errors_pb2, tensor_pb2

__all__ = [
    "CAPABILITIES",
    "DTYPE_WIDTHS",
    "EMPTY_SHA256",
    "GENERAL_ERRORS",
    "PROTOCOL_VERSION",
    "REQUESTS",
    "SERVER_ONLY_BODIES",
    "SUBPROTOCOL",
    "RequestSpec",
    "code_name",
    "dtype_name",
    "sha256",
]

#: The protocol version this suite checks (section 4.2).
PROTOCOL_VERSION = 1
#: The WebSocket subprotocol (section 2.2).
SUBPROTOCOL = "fedproto.v1"

#: Capability strings defined by version 1 (section 4.3.1).
CAPABILITIES = (
    "objects",
    "chunked",
    "chunked-weights",
    "model-object",
    "datasets",
    "calls",
    "training",
    "notifications",
    "deadlines",
    "conformance",
)

E = errors_pb2.ErrorCode

#: Codes any request may end with (section 19.1), besides its specific ones. MALFORMED is never sent
#: with a request's own id, so it is not in this set.
GENERAL_ERRORS = frozenset(
    {
        E.ERROR_CODE_RESOURCE_EXHAUSTED,
        E.ERROR_CODE_CANCELLED,
        E.ERROR_CODE_DEADLINE_EXCEEDED,
        E.ERROR_CODE_UNAVAILABLE,
        E.ERROR_CODE_INTERNAL,
        E.ERROR_CODE_UNIMPLEMENTED,
    }
)


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One row of the request table (section 19.1)."""

    kind: str
    reply: str
    capability: str | None
    errors: frozenset[int]
    events: frozenset[str] = frozenset()

    @property
    def allowed_errors(self) -> frozenset[int]:
        """Every error code this request may end with: the general ones and its specific ones."""
        return GENERAL_ERRORS | self.errors


def _row(
    kind: str, reply: str, capability: str | None, *codes: int, events: tuple[str, ...] = ()
) -> RequestSpec:
    return RequestSpec(kind, reply, capability, frozenset(codes), frozenset(events))


#: Section 19.1, row by row.
REQUESTS: dict[str, RequestSpec] = {
    r.kind: r
    for r in (
        _row("ping", "pong", None),
        _row(
            "send_object",
            "send_object_reply",
            "objects",
            E.ERROR_CODE_INVALID_ARGUMENT,
            E.ERROR_CODE_ALREADY_EXISTS,
            E.ERROR_CODE_DATA_LOSS,
        ),
        _row(
            "get_object",
            "get_object_reply",
            "objects",
            E.ERROR_CODE_NOT_FOUND,
            E.ERROR_CODE_INVALID_ARGUMENT,
            events=("chunk",),
        ),
        _row(
            "delete_object",
            "delete_object_reply",
            "objects",
            E.ERROR_CODE_NOT_FOUND,
            E.ERROR_CODE_INVALID_ARGUMENT,
        ),
        _row("list_objects", "list_objects_reply", "objects"),
        _row("count_objects", "count_objects_reply", "objects"),
        _row("clear_objects", "clear_objects_reply", "objects"),
        _row("search_objects", "search_objects_reply", "objects"),
        _row("list_datasets", "list_datasets_reply", "datasets"),
        _row(
            "call",
            "call_reply",
            "calls",
            E.ERROR_CODE_METHOD_NOT_FOUND,
            E.ERROR_CODE_INVALID_ARGUMENT,
        ),
        _row("list_methods", "list_methods_reply", "calls"),
        _row(
            "set_train_config",
            "set_train_config_reply",
            "training",
            E.ERROR_CODE_INVALID_ARGUMENT,
            E.ERROR_CODE_PERMISSION_DENIED,
            E.ERROR_CODE_NOT_FOUND,
        ),
        _row(
            "fit",
            "fit_reply",
            "training",
            E.ERROR_CODE_NOT_FOUND,
            E.ERROR_CODE_FAILED_PRECONDITION,
            events=("fit_progress",),
        ),
        _row(
            "evaluate",
            "evaluate_reply",
            "training",
            E.ERROR_CODE_NOT_FOUND,
            E.ERROR_CODE_FAILED_PRECONDITION,
            E.ERROR_CODE_INVALID_ARGUMENT,
        ),
        _row(
            "get_weights",
            "get_weights_reply",
            "training",
            E.ERROR_CODE_FAILED_PRECONDITION,
            events=("weights_manifest", "chunk"),
        ),
        _row(
            "set_weights",
            "set_weights_reply",
            "training",
            E.ERROR_CODE_FAILED_PRECONDITION,
            E.ERROR_CODE_INVALID_ARGUMENT,
            E.ERROR_CODE_DATA_LOSS,
        ),
        _row("list_models", "list_models_reply", "training"),
    )
}

#: Bodies only a server sends (sections 3.7 and 19.3).
SERVER_ONLY_BODIES = (
    "welcome",
    "pong",
    "error",
    "notification",
    "fit_progress",
    "weights_manifest",
    *(r.reply for r in REQUESTS.values() if r.reply != "pong"),
)

#: Element width in bytes of every DType (section 7.1.1).
DTYPE_WIDTHS: dict[int, int] = {
    tensor_pb2.DTYPE_FLOAT16: 2,
    tensor_pb2.DTYPE_FLOAT32: 4,
    tensor_pb2.DTYPE_FLOAT64: 8,
    tensor_pb2.DTYPE_BFLOAT16: 2,
    tensor_pb2.DTYPE_INT8: 1,
    tensor_pb2.DTYPE_INT16: 2,
    tensor_pb2.DTYPE_INT32: 4,
    tensor_pb2.DTYPE_INT64: 8,
    tensor_pb2.DTYPE_UINT8: 1,
    tensor_pb2.DTYPE_BOOL: 1,
    tensor_pb2.DTYPE_COMPLEX64: 8,
    tensor_pb2.DTYPE_COMPLEX128: 16,
}

#: SHA-256 of the empty payload (section 7.3.11).
EMPTY_SHA256 = hashlib.sha256(b"").digest()


def sha256(data: bytes) -> bytes:
    """The raw 32-byte SHA-256 digest (section 1.3.3)."""
    return hashlib.sha256(data).digest()


def dtype_name(dtype: int) -> str:
    """``FLOAT32`` for 2; unknown values as ``dtype 99``."""
    try:
        return str(tensor_pb2.DType.Name(dtype)).removeprefix("DTYPE_")
    except ValueError:
        return f"dtype {dtype}"


def code_name(code: int) -> str:
    """``NOT_FOUND`` for 5; unknown values as ``code 99``."""
    try:
        return str(errors_pb2.ErrorCode.Name(code)).removeprefix("ERROR_CODE_")
    except ValueError:
        return f"code {code}"
