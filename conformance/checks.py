"""Verdict exceptions and the wording of what a server did, shared by every case."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn

from fedproto_pb.v1.envelope_pb2 import Envelope

from .spec import code_name

__all__ = [
    "CaseFailure",
    "CaseSkipped",
    "check",
    "codes_text",
    "describe_envelope",
    "fail",
    "skip",
]


class CaseFailure(AssertionError):
    """The server did something the rule forbids; the message says what it did instead."""


class CaseSkipped(Exception):
    """The case does not apply to this server (a capability or a token is missing)."""


def fail(message: str) -> NoReturn:
    """End the case as failed with ``message``."""
    raise CaseFailure(message)


def skip(reason: str) -> NoReturn:
    """End the case as skipped with ``reason``."""
    raise CaseSkipped(reason)


def check(condition: object, message: str) -> None:
    """Fail with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CaseFailure(message)


def codes_text(codes: Iterable[int]) -> str:
    """``NOT_FOUND or INVALID_ARGUMENT``."""
    return " or ".join(code_name(c) for c in sorted(set(codes)))


def describe_envelope(envelope: Envelope) -> str:
    """How an envelope reads in a failure message: ``Error{NOT_FOUND 'no object'} for request 7``."""
    kind = envelope.WhichOneof("body")
    rid = envelope.request_id
    target = f"request {rid}" if rid else "request_id 0"
    if kind == "error":
        error = envelope.error
        text = f"Error{{{code_name(error.code)}"
        if error.message:
            message = error.message if len(error.message) <= 80 else error.message[:77] + "..."
            text += f" {message!r}"
        if error.details:
            text += f" details={dict(error.details)}"
        return text + f"}} with {target}"
    if kind is None:
        return f"an envelope without a body with {target}"
    return f"{kind} with {target}"
