"""Section 3: one envelope per binary message, and what a server does with frames that break that."""

from __future__ import annotations

import asyncio

from hypothesis import example, given
from hypothesis import strategies as st

from fedproto_pb.v1 import calls_pb2, objects_pb2, session_pb2, training_pb2
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import check, fail, skip
from ..context import Context
from ..registry import Level, case
from ..spec import REQUESTS
from ..strategies import (
    envelope_bytes,
    field_bytes,
    garbage,
    server_only_bodies,
    unknown_envelope_fields,
)
from ..wire import Connection, make_envelope
from ._common import call_request, ping_of_size

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []

#: Frames above this size are not sent: the cases that need one are skipped for larger limits.
MAX_TESTED_FRAME = 256 << 20


def frame_limit(ctx: Context) -> int:
    """The advertised max_frame_bytes, or skip the case when a frame that large is impractical to send."""
    limit = int(ctx.limits.max_frame_bytes)
    if limit > MAX_TESTED_FRAME:
        skip(f"max_frame_bytes={limit} is above the {MAX_TESTED_FRAME} bytes this suite sends in one frame")
    return limit


TEMPLATES = st.sampled_from(
    [
        envelope_bytes("ping", session_pb2.Ping(payload=b"abc"), 7),
        envelope_bytes("hello", session_pb2.Hello(versions=[1], client_name="x"), 3),
        envelope_bytes("count_objects", objects_pb2.CountObjectsRequest(), 1 << 40),
        envelope_bytes("get_object", objects_pb2.GetObjectRequest(id="some-id"), 9),
    ]
)


async def only_malformed_then_close(conn: Connection, codes: set[int]) -> None:
    """The connection closes with one of ``codes``, after at most an Error MALFORMED with id 0."""
    await conn.expect_close(codes)
    for frame in conn.pending_frames():
        env = frame.envelope
        if not (
            env is not None
            and frame.kind == "error"
            and env.request_id == 0
            and env.error.code == ErrorCode.ERROR_CODE_MALFORMED
        ):
            fail(
                f"before closing, the server sent {frame.describe()} (only Error{{MALFORMED}} with id 0 "
                "may come)"
            )


@case(
    "framing/3.2.1/text-frame-closes-1003",
    rule="A server receiving a text WebSocket message MUST close the connection with close code 1003 "
    "(Unsupported Data).",
)
async def _case_text_frame(ctx: Context) -> None:
    conn = await ctx.connect()
    await conn.send_text("hello")
    await only_malformed_then_close(conn, {1003})


@case(
    "framing/3.2.1/text-frame-before-hello",
    rule="A server receiving a text WebSocket message MUST close the connection with close code 1003 "
    "(Unsupported Data). (§4.4.3: before the handshake text frames are handled as in §3.)",
)
async def _case_text_frame_before_hello(ctx: Context) -> None:
    conn = await ctx.open()
    await conn.send_text('{"hello": {}}')
    await only_malformed_then_close(conn, {1003})


@case(
    "framing/3.3.1/undecodable-is-malformed",
    rule="When a binary message does not parse as an Envelope, the server MUST answer with an Error with "
    "code MALFORMED and request_id 0.",
)
def _case_undecodable(ctx: Context) -> None:
    @given(data=garbage(TEMPLATES))
    @example(data=b"\xff")
    @example(data=b"\x08")
    def check_frame(data: bytes) -> None:
        ctx.run(_undecodable(ctx, data))

    ctx.hypothesis(check_frame)


async def _undecodable(ctx: Context, data: bytes) -> None:
    async with await ctx.connect() as conn:
        await conn.send_raw(data)
        await conn.connection_error({ErrorCode.ERROR_CODE_MALFORMED})
        await conn.ping()
        for frame in conn.pending_frames():
            fail(f"after one undecodable message the server also sent {frame.describe()}")


@case(
    "framing/3.3.2/undecodable-keeps-connection",
    rule="After such a message the server MUST keep the connection open: WebSocket framing is intact, so "
    "one bad message never ends the session.",
)
async def _case_undecodable_keeps_open(ctx: Context) -> None:
    conn = await ctx.connect()
    for data in (b"\xff\xff\xff", b"\x0a\x05abc", b"\x00", bytes(range(256))):
        await conn.send_raw(data)
        await conn.connection_error({ErrorCode.ERROR_CODE_MALFORMED})
        await conn.ping(b"still here")


@case(
    "framing/3.3.3/undecodable-spares-inflight",
    rule="An undecodable message MUST NOT affect stored objects, training state or any other request, "
    "including requests in flight.",
    needs=("calls",),
)
async def _case_undecodable_spares_inflight(ctx: Context) -> None:
    conn = await ctx.connect()
    rid = await conn.request("call", _sleep_request(0.3))
    await conn.send_raw(b"\xff\xfe")
    await conn.connection_error({ErrorCode.ERROR_CODE_MALFORMED})
    reply = await conn.reply(rid)
    result = reply.expect("call_reply").result
    check(result.double_value == 0.3, f"sleep(0.3) returned {result} after an undecodable message")


def _sleep_request(seconds: float) -> calls_pb2.CallRequest:
    return call_request("sleep", seconds)


@case(
    "framing/3.3.4/invalid-utf8-is-malformed",
    rule="A message that is not valid protobuf, and a message that the receiver's protobuf decoder rejects "
    'for another reason (a string field that is not valid UTF-8, ...), are both "does not parse".',
)
async def _case_invalid_utf8(ctx: Context) -> None:
    conn = await ctx.connect()
    rid = 41
    # Envelope{request_id: 41, get_object: {id: <not UTF-8>}}
    data = field_bytes(1, 0, rid) + field_bytes(22, 2, field_bytes(1, 2, b"ab\xff\xfe"))
    await conn.send_raw(data)
    await conn.connection_error({ErrorCode.ERROR_CODE_MALFORMED})
    await conn.ping()
    stray = conn.frames_with_id(rid)
    if stray:
        fail(f"the undecodable request still got {stray[0].describe()}: its Error must carry request_id 0")


@case(
    "framing/3.3.5/undecodable-before-hello",
    rule="Before the handshake (§4.4) an undecodable message is also answered with MALFORMED and "
    "request_id 0, and the connection also stays open.",
)
async def _case_undecodable_before_hello(ctx: Context) -> None:
    conn = await ctx.open()
    await conn.send_raw(b"\xff\xff\xff\xff")
    await conn.connection_error({ErrorCode.ERROR_CODE_MALFORMED})
    await conn.handshake(token=ctx.settings.token)
    await conn.ping()


@case(
    "framing/3.4.1/oversized-closes-1009",
    rule="When a client sends a message larger than Welcome.limits.max_frame_bytes, the server MUST close "
    "the connection with close code 1009 (Message Too Big).",
)
async def _case_oversized(ctx: Context) -> None:
    conn = await ctx.connect()
    await conn.send_raw(ping_of_size(5, frame_limit(ctx) + 1))
    await conn.expect_close({1009}, timeout=max(ctx.settings.timeout, 10))
    stray = conn.frames_with_id(5)
    if stray:
        fail(f"the oversized Ping got {stray[0].describe()}")


@case(
    "framing/3.4.2/frame-at-limit-accepted",
    rule="A message of exactly max_frame_bytes bytes is within the limit and MUST be accepted.",
)
async def _case_frame_at_limit(ctx: Context) -> None:
    conn = await ctx.connect()
    data = ping_of_size(6, frame_limit(ctx))
    await conn.send_raw(data)
    reply = await conn.reply(6, timeout=max(ctx.settings.timeout, 10))
    pong = reply.expect("pong")
    sent = Envelope()
    sent.ParseFromString(data)
    check(pong.payload == sent.ping.payload, "the Pong of a max_frame_bytes Ping does not echo its payload")


@case(
    "framing/3.4.3/oversized-before-hello",
    rule="Before the Welcome is sent, the server's limit is the max_frame_bytes it will advertise (and a "
    "larger message closes the connection with 1009, §3.4.1).",
)
async def _case_oversized_before_hello(ctx: Context) -> None:
    conn = await ctx.open()
    await conn.send_raw(ping_of_size(5, frame_limit(ctx) + 1))
    await conn.expect_close({1009}, timeout=max(ctx.settings.timeout, 10))


@case(
    "framing/3.1.3/oversized-undecodable-closes-1009",
    rule="When a frame breaks more than one rule of this section, the server applies the first rule that "
    "matches, in the order §3.4, §3.2, §3.3, ... (oversized before undecodable: close with 1009).",
)
async def _case_oversized_undecodable(ctx: Context) -> None:
    conn = await ctx.connect()
    await conn.send_raw(b"\xff" * (frame_limit(ctx) + 1))
    await conn.expect_close({1009}, timeout=max(ctx.settings.timeout, 10))
    for frame in conn.pending_frames():
        fail(f"before closing for the oversized message the server sent {frame.describe()}")


@case(
    "framing/3.5.1/no-body-is-malformed",
    rule="When an envelope parses but has no body member set and carries no unknown fields, the server MUST "
    "answer with an Error with code MALFORMED and that envelope's request_id.",
)
async def _case_no_body(ctx: Context) -> None:
    conn = await ctx.connect()
    reply = await conn.call(None, request_id=77)
    reply.expect_error(ErrorCode.ERROR_CODE_MALFORMED)


@case(
    "framing/3.5.2/no-body-keeps-connection",
    rule="The connection stays open (after an envelope without a body).",
)
async def _case_no_body_open(ctx: Context) -> None:
    conn = await ctx.connect()
    await conn.send(Envelope(request_id=78, deadline_ms=5))
    await conn.reply(78)
    await conn.ping()


@case(
    "framing/3.6.1/unknown-body-unimplemented",
    rule="When a server finds body unset and unknown fields present, it MUST answer with an Error with code "
    "UNIMPLEMENTED and that envelope's request_id (not MALFORMED).",
)
def _case_unknown_body(ctx: Context) -> None:
    @given(extra=unknown_envelope_fields(), rid=st.integers(1, (1 << 64) - 1))
    @example(extra=field_bytes(99, 2, b"\x0a\x03new"), rid=12)
    def check_body(extra: bytes, rid: int) -> None:
        ctx.run(_unknown_body(ctx, extra, rid))

    ctx.hypothesis(check_body)


async def _unknown_body(ctx: Context, extra: bytes, rid: int) -> None:
    async with await ctx.connect() as conn:
        await conn.send_raw(field_bytes(1, 0, rid) + extra)
        reply = await conn.reply(rid)
        reply.expect_error(ErrorCode.ERROR_CODE_UNIMPLEMENTED)
        await conn.ping()


_NEEDS_PROBE = {
    "objects": ("count_objects", objects_pb2.CountObjectsRequest()),
    "datasets": ("list_datasets", None),
    "calls": ("list_methods", None),
    "training": ("list_models", training_pb2.ListModelsRequest()),
}


@case(
    "framing/3.6.3/capability-not-advertised",
    rule="A request whose kind needs a capability (§4.3, §19.1) that the server does not advertise MUST be "
    "answered with UNIMPLEMENTED.",
)
async def _case_capability_not_advertised(ctx: Context) -> None:
    missing = [cap for cap in _NEEDS_PROBE if not ctx.has(cap)]
    if not missing:
        skip("the server advertises every capability that gates requests")
    conn = await ctx.connect()
    for cap in missing:
        kinds = [k for k, r in REQUESTS.items() if r.capability == cap]
        for kind in kinds:
            reply = await conn.call(kind)
            reply.expect_error(ErrorCode.ERROR_CODE_UNIMPLEMENTED)


@case(
    "framing/3.7.1/server-only-body-rejected",
    rule="When a client sends an envelope whose body is one that only servers send, the server MUST answer "
    "with an Error with code INVALID_ARGUMENT and that envelope's request_id.",
)
def _case_server_only(ctx: Context) -> None:
    @given(kind=server_only_bodies(), rid=st.integers(1, (1 << 64) - 1))
    def check_kind(kind: str, rid: int) -> None:
        ctx.run(_server_only(ctx, kind, rid))

    ctx.hypothesis(check_kind)


async def _server_only(ctx: Context, kind: str, rid: int) -> None:
    async with await ctx.connect() as conn:
        reply = await conn.call(kind, request_id=rid)
        reply.expect_error(ErrorCode.ERROR_CODE_INVALID_ARGUMENT)
        await conn.ping()


@case(
    "framing/3.7.3/rejected-envelope-naming-inflight-id",
    rule="When the request_id of an envelope rejected under §3.5, §3.6.1 or §3.7 names a request that is in "
    "flight, the server MUST send the Error with request_id 0 instead, with details "
    '{"request_id": "<the id>"}.',
    needs=("calls",),
)
async def _case_rejected_inflight(ctx: Context) -> None:
    conn = await ctx.connect()
    rid = 1000
    await conn.request("call", _sleep_request(0.5), request_id=rid)
    await asyncio.sleep(0.05)
    probes = [
        (
            Envelope(request_id=rid).SerializeToString(),
            ErrorCode.ERROR_CODE_MALFORMED,
            "an envelope without a body",
        ),
        (
            field_bytes(1, 0, rid) + field_bytes(99, 2, b"x"),
            ErrorCode.ERROR_CODE_UNIMPLEMENTED,
            "an unknown body",
        ),
        (
            make_envelope(rid, "pong").SerializeToString(),
            ErrorCode.ERROR_CODE_INVALID_ARGUMENT,
            "a pong body",
        ),
    ]
    for data, code, what in probes:
        await conn.send_raw(data)
        error = await conn.connection_error({code})
        check(
            error.details.get("request_id") == str(rid),
            f"the Error for {what} naming in-flight request {rid} has details {dict(error.details)}, "
            f'expected {{"request_id": "{rid}"}}',
        )
    reply = await conn.reply(rid)
    reply.expect("call_reply")


@case(
    "framing/3.1.3/oversized-text-closes-1009",
    rule="When a frame breaks more than one rule of this section, the server applies the first rule that "
    "matches, in the order §3.4, §3.2, ... (an oversized text frame: close with 1009).",
    level=Level.MUST,
)
async def _case_oversized_text(ctx: Context) -> None:
    conn = await ctx.connect()
    await conn.send_text("x" * (frame_limit(ctx) + 1))
    await only_malformed_then_close(conn, {1009})
