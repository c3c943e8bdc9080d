"""Table-driven cases: a probe accepts exactly its outcome set, and a row registers a case like @case does."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from conformance.cases._common import chunk_list, refused
from conformance.cases._table import Probe, Row, accept, register
from conformance.checks import CaseFailure
from conformance.registry import Level, all_cases
from conformance.wire import Connection, Reply, make_envelope
from fedproto_pb.v1 import errors_pb2, session_pb2
from fedproto_pb.v1.errors_pb2 import ErrorCode

NOT_FOUND = ErrorCode.ERROR_CODE_NOT_FOUND
INVALID = ErrorCode.ERROR_CODE_INVALID_ARGUMENT
DEADLINE = ErrorCode.ERROR_CODE_DEADLINE_EXCEEDED
NO_CONN = cast(Connection, None)  # Probe.check only hands the connection to ``then``


def _error(code: int) -> Reply:
    return Reply(7, make_envelope(7, "error", errors_pb2.Error(code=cast(Any, code), message="m")))


def _pong() -> Reply:
    return Reply(7, make_envelope(7, "pong", session_pb2.Pong()))


def _check(probe: Probe, reply: Reply) -> None:
    asyncio.run(probe.check(NO_CONN, reply))


def test_a_refusal_accepts_its_codes_only() -> None:
    probe = Probe("get_object('x')", "get_object", None, (NOT_FOUND,))
    _check(probe, _error(NOT_FOUND))
    with pytest.raises(CaseFailure, match=r"get_object\('x'\) was answered with Error\{INVALID_ARGUMENT"):
        _check(probe, _error(INVALID))
    with pytest.raises(CaseFailure, match=r"expected Error\{NOT_FOUND\}$"):
        _check(probe, Reply(7, make_envelope(7, "get_object_reply")))


def test_the_default_outcome_is_invalid_argument() -> None:
    _check(Probe("ping", "ping"), _error(INVALID))
    with pytest.raises(CaseFailure):
        _check(Probe("ping", "ping"), _pong())


def test_accept_wants_the_success_reply_of_section_19_1() -> None:
    probe = accept("ping", "ping")
    _check(probe, _pong())
    with pytest.raises(CaseFailure, match=r"expected pong$"):
        _check(probe, _error(INVALID))
    with pytest.raises(CaseFailure, match=r"expected pong$"):
        _check(probe, Reply(7, make_envelope(7, "welcome")))


def test_an_outcome_set_allows_either() -> None:
    probe = Probe("ping with a 1 ms deadline", "ping", None, (DEADLINE,), ok=True)
    _check(probe, _pong())
    _check(probe, _error(DEADLINE))
    with pytest.raises(CaseFailure, match=r"expected pong or Error\{DEADLINE_EXCEEDED\}"):
        _check(probe, _error(INVALID))


def test_then_runs_after_an_allowed_reply_only() -> None:
    seen: list[Reply] = []

    async def then(conn: Connection, reply: Reply) -> None:
        seen.append(reply)

    probe = Probe("fail(5)", "call", None, (NOT_FOUND,), then=then)
    reply = _error(NOT_FOUND)
    _check(probe, reply)
    assert seen == [reply]
    with pytest.raises(CaseFailure):
        _check(probe, _error(INVALID))
    assert seen == [reply]
    assert "then" not in repr(probe)


def test_refused_names_what_was_sent() -> None:
    assert refused(_error(NOT_FOUND), "x", NOT_FOUND, INVALID).code == NOT_FOUND
    with pytest.raises(CaseFailure, match=r"an upload was answered with pong with request 7, expected"):
        refused(_pong(), "an upload", NOT_FOUND)


def test_chunk_list_cuts_contiguously() -> None:
    chunks = chunk_list(b"abcdefg", [3, 3, 1], digests=[b"", b"", b"d" * 32])
    assert [(c.offset, c.data, c.total_bytes) for c in chunks] == [
        (0, b"abc", 7),
        (3, b"def", 7),
        (6, b"g", 7),
    ]
    assert [c.sha256 for c in chunks] == [b"", b"", b"d" * 32]


def test_rows_register_like_cases() -> None:
    by_id = {c.id: c for c in all_cases()}
    row_case = by_id["calls/11.2.2/binding-errors"]  # a table row
    assert row_case.is_async and row_case.level is Level.MUST and row_case.needs == ("calls",)
    assert row_case.rule.startswith("The server MUST answer INVALID_ARGUMENT, without running the method")
    assert by_id["calls/11.2.2/binding-error-does-not-run"].needs == ("calls", "notifications")
    with pytest.raises(ValueError, match="registered twice"):
        register(Row("calls/11.2.2/binding-errors", rule="again", probes=[]))
