"""Hostile and random input: every request kind fuzzed, mutated frames, bursts, control frames.

Verdicts here come from the spec's tables rather than from fixed expectations: a fuzzed request must end
with exactly one terminal reply, which is either its reply body (section 19.1) or an Error with one of
the codes that section 19.1 allows for it; a mutated frame gets what section 3 prescribes for whatever it
decodes to.
"""

from __future__ import annotations

import asyncio
import os

from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError, Message
from hypothesis import example, given
from hypothesis import strategies as st

from fedproto_pb.v1 import objects_pb2, session_pb2
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import check, fail
from ..context import Context
from ..registry import case
from ..spec import REQUESTS, SERVER_ONLY_BODIES, code_name
from ..strategies import envelope_bytes, mutated, request_bodies, retyped
from ..wire import Connection, Reply, make_envelope
from ._common import call_request

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []

#: Requests that may legitimately run long; when they do, the suite cancels them.
_MAY_RUN_LONG = {"call", "fit", "send_object"}


def _allowed(kind: str, message: Message) -> tuple[str, frozenset[int]]:
    spec = REQUESTS[kind]
    codes = spec.allowed_errors
    if kind == "call" and getattr(message, "method", "") in ("fail", "sleep"):
        codes = frozenset(range(1, 17))
    return spec.reply, codes


def _verdict(kind: str, message: Message, reply: Reply) -> None:
    expected, codes = _allowed(kind, message)
    for event in reply.events:
        body = event.WhichOneof("body")
        if body not in REQUESTS[kind].events:
            fail(f"{kind} request {reply.request_id} got {body} before its terminal reply (§5.3.2)")
    if reply.kind == expected:
        return
    error = reply.error
    if error is not None and error.code in codes:
        return
    names = ", ".join(sorted(code_name(c) for c in codes))
    fail(f"{kind} got {reply.describe()}; section 19.1 allows {expected} or an Error with one of: {names}")


async def _terminal(conn: Connection, rid: int, kind: str) -> Reply:
    """The terminal reply; requests that may run long are cancelled after a while."""
    if kind not in _MAY_RUN_LONG:
        return await conn.reply(rid)
    try:
        return await conn.reply(rid, timeout=1.5)
    except AssertionError:
        if conn.closed:
            raise
    await conn.send(make_envelope(rid, "cancel", None))
    return await conn.reply(rid)


@case(
    "robustness/19.1/request-fuzz",
    rule="Every request ends with exactly one terminal reply (§5.3.1): its reply body of §19.1 or an Error "
    "with one of the codes §19.1 allows for it; the connection stays open (§13.3.2).",
)
def _case_request_fuzz(ctx: Context) -> None:
    batches = st.lists(st.tuples(request_bodies(), st.integers(1, (1 << 64) - 1)), min_size=1, max_size=4,
                       unique_by=lambda t: t[1])  # fmt: skip

    @given(batch=batches)
    def check_batch(batch: list[tuple[tuple[str, Message], int]]) -> None:
        ctx.run(_request_fuzz(ctx, batch))

    ctx.hypothesis(check_batch, max_examples=2 * ctx.settings.max_examples)


async def _request_fuzz(ctx: Context, batch: list[tuple[tuple[str, Message], int]]) -> None:
    async with await ctx.connect() as conn:
        for (kind, message), rid in batch:
            await conn.send(make_envelope(rid, kind, message))
        for (kind, message), rid in batch:
            spec = REQUESTS[kind]
            if spec.capability and not ctx.has(spec.capability):
                (await _terminal(conn, rid, kind)).expect_error(ErrorCode.ERROR_CODE_UNIMPLEMENTED)
                continue
            _verdict(kind, message, await _terminal(conn, rid, kind))
        await conn.ping()
        ids = {rid for _, rid in batch}
        for frame in conn.pending_frames():
            if frame.kind == "notification":
                continue
            which = "one of the fuzzed requests" if frame.request_id in ids else "nothing"
            fail(f"after every terminal reply the server also sent {frame.describe()} (for {which})")


_TEMPLATES = st.sampled_from(
    [
        envelope_bytes("ping", session_pb2.Ping(payload=b"payload"), 1001),
        envelope_bytes("count_objects", objects_pb2.CountObjectsRequest(), 1002),
        envelope_bytes("get_object", objects_pb2.GetObjectRequest(id="mutant"), 1003),
        envelope_bytes("search_objects", objects_pb2.SearchObjectsRequest(tags=["a", "b"]), 1004),
        envelope_bytes("call", call_request("echo", 1, "two", [3.0], {"k": b"v"}), 1005),
        envelope_bytes("cancel", session_pb2.Cancel(reason="r"), 1006),
        envelope_bytes("pong", session_pb2.Pong(payload=b"p"), 1007),
    ]
)


def _decode(data: bytes) -> Envelope | None:
    envelope = Envelope()
    try:
        envelope.ParseFromString(data)
    except DecodeError:
        return None
    return envelope


@case(
    "robustness/3/mutated-frames",
    rule="Whatever a binary frame decodes to, the server answers as section 3 prescribes: MALFORMED with id "
    "0 when it does not parse (§3.3), MALFORMED or UNIMPLEMENTED without a body (§3.5, §3.6), "
    "INVALID_ARGUMENT for server-only bodies (§3.7), nothing for cancel and chunk, a terminal reply for "
    "requests.",
)
def _case_mutated(ctx: Context) -> None:
    @given(data=st.one_of(mutated(_TEMPLATES), retyped(_TEMPLATES).map(lambda d: (d, True))))
    def check_frame(data: bytes | tuple[bytes, bool]) -> None:
        raw, lenient = data if isinstance(data, tuple) else (data, False)
        ctx.run(_mutated(ctx, raw, lenient))

    ctx.hypothesis(check_frame, max_examples=2 * ctx.settings.max_examples)


async def _mutated(ctx: Context, data: bytes, lenient: bool) -> None:
    envelope = _decode(data)
    async with await ctx.connect() as conn:
        await conn.send_raw(data)
        if lenient and envelope is not None and envelope.WhichOneof("body") != "goodbye":
            # A field with the wrong wire type is an unknown field to most decoders; one that rejects the
            # message instead answers MALFORMED with id 0 (§3.3.4). Both are conformant.
            await conn.ping()
            rejected = [
                f
                for f in conn.pending_frames()
                if f.kind == "error" and f.envelope is not None and f.envelope.request_id == 0
                and f.envelope.error.code == ErrorCode.ERROR_CODE_MALFORMED
            ]  # fmt: skip
            if rejected:
                conn.consume(rejected[0])
                for frame in conn.pending_frames():
                    fail(
                        f"after rejecting the message with MALFORMED the server also sent {frame.describe()}"
                    )
                return
        if envelope is None:
            await conn.connection_error({ErrorCode.ERROR_CODE_MALFORMED})
        else:
            kind = envelope.WhichOneof("body")
            rid = envelope.request_id
            if kind is None:
                code = (
                    ErrorCode.ERROR_CODE_UNIMPLEMENTED
                    if len(unknown_fields.UnknownFieldSet(envelope))
                    else ErrorCode.ERROR_CODE_MALFORMED
                )
                (await conn.reply(rid)).expect_error(code)
            elif kind == "hello":
                (await conn.reply(rid)).expect_error(ErrorCode.ERROR_CODE_FAILED_PRECONDITION)
            elif kind in SERVER_ONLY_BODIES:
                (await conn.reply(rid)).expect_error(ErrorCode.ERROR_CODE_INVALID_ARGUMENT)
            elif kind == "goodbye":
                await conn.expect_close({1000})
                return
            elif kind in REQUESTS and rid == 0:
                await conn.connection_error({ErrorCode.ERROR_CODE_INVALID_ARGUMENT})
            elif kind in REQUESTS:
                message = getattr(envelope, kind)
                spec = REQUESTS[kind]
                reply = await _terminal(conn, rid, kind)
                if spec.capability and not ctx.has(spec.capability):
                    reply.expect_error(ErrorCode.ERROR_CODE_UNIMPLEMENTED)
                else:
                    _verdict(kind, message, reply)
        await conn.ping()
        for frame in conn.pending_frames():
            if frame.kind != "notification":
                fail(f"the server also sent {frame.describe()}")


@case(
    "robustness/3.3.2/garbage-burst",
    rule="After such a message the server MUST keep the connection open: one bad message never ends the "
    "session (here: two hundred in a row, each answered with MALFORMED).",
)
async def _case_burst(ctx: Context) -> None:
    conn = await ctx.connect()
    count = 200
    for n in range(count):
        await conn.send_raw(b"\xff" + os.urandom(n % 17) + b"\x07")
    for _ in range(count):
        await conn.connection_error({ErrorCode.ERROR_CODE_MALFORMED})
    await conn.ping(b"survived")


@case(
    "robustness/2.4.1/websocket-ping",
    rule="WebSocket-level pings and pongs (control frames) are allowed in both directions and are "
    "unrelated to the protocol's Ping/Pong messages (§6.1). They carry no envelope and are never "
    "answered with an envelope.",
)
async def _case_ws_ping(ctx: Context) -> None:
    conn = await ctx.connect()
    waiter = await conn.ws.ping(b"conformance")
    try:
        await asyncio.wait_for(waiter, ctx.settings.timeout)
    except TimeoutError:
        fail("the server did not answer a WebSocket ping control frame with a pong")
    await conn.ping()
    for frame in conn.pending_frames():
        fail(f"a WebSocket ping was answered with {frame.describe()}")


@case(
    "robustness/5.3.6/abandoned-connection",
    rule="When the connection closes, every request of that connection still in flight ends without a "
    "reply; the server MUST stop working on it as it would for a Cancel (and keeps serving other "
    "connections).",
    needs=("calls",),
)
async def _case_abandoned(ctx: Context) -> None:
    for _ in range(3):
        conn = await ctx.connect()
        await conn.request("call", call_request("sleep", 30.0))
        await conn.request("ping", session_pb2.Ping())
        conn.ws.transport.abort()
    other = await ctx.connect()
    await other.ping(b"still serving")


@case(
    "robustness/4.6.2/client-name-ignored",
    rule="Hello.client_name is a free-form name of the client program; servers MAY log it and MUST NOT "
    "change behaviour because of it.",
)
def _case_client_name(ctx: Context) -> None:
    expected = ctx.welcome.SerializeToString(deterministic=True)

    @given(name=st.one_of(st.text(max_size=40), st.just("x" * 10000), st.just("\u202e\x00 evil")))
    @example(name="")
    def check_name(name: str) -> None:
        ctx.run(_client_name(ctx, name, expected))

    ctx.hypothesis(check_name, max_examples=max(3, ctx.settings.max_examples // 3))


async def _client_name(ctx: Context, name: str, expected: bytes) -> None:
    async with await ctx.open() as conn:
        reply = await conn.hello(token=ctx.settings.token, client_name=name)
        welcome = reply.expect("welcome")
        check(
            welcome.SerializeToString(deterministic=True) == expected,
            f"client_name {name[:30]!r} changed the Welcome",
        )
        await conn.ping()
