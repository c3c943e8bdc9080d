"""Sections 5 and 6: request ids, pipelining, exactly one terminal reply, ping, cancel, deadlines, goodbye."""

from __future__ import annotations

import asyncio

from google.protobuf.message import Message
from hypothesis import strategies as st

from fedproto_pb.v1 import datasets_pb2, objects_pb2, session_pb2, tensor_pb2
from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import check, fail
from ..context import Context
from ..registry import Level, case
from ..spec import REQUESTS
from ..values import to_value, value_diff
from ..wire import EVENT_BODIES, Connection, Reply, make_envelope
from ._common import (
    Stopwatch,
    announce,
    call_request,
    check_examples,
    expect_absent,
    float_tensor,
    send_chunks,
)
from ._table import Probe, Row, accept, register

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []

CALLS = ("calls",)
NOT_FOUND = ErrorCode.ERROR_CODE_NOT_FOUND
DEADLINE = ErrorCode.ERROR_CODE_DEADLINE_EXCEEDED


# -- pipelining --------------------------------------------------------------------------------------


def _pong_of(payload: bytes) -> Probe:
    """A Ping whose Pong must echo ``payload``."""

    async def same(conn: Connection, reply: Reply) -> None:
        pong = reply.envelope.pong.payload
        check(pong == payload, f"the Pong for request {reply.request_id} has another payload")

    return Probe(
        f"ping({len(payload)} bytes)", "ping", session_pb2.Ping(payload=payload), (), ok=True, then=same
    )


def _echo_of(n: int) -> Probe:
    """echo(n), whose reply must carry n (not the arguments of another request)."""

    async def mine(conn: Connection, reply: Reply) -> None:
        entries = reply.envelope.call_reply.result.map_value.entries
        diff = value_diff(to_value([n]), entries[0].value, "echo()['args']") if entries else "no args"
        if diff:
            fail(f"request {reply.request_id}: {diff} (a reply of another request?)")

    return Probe(f"echo({n})", "call", call_request("echo", n), (), ok=True, then=mine)


def _ops(ctx: Context) -> st.SearchStrategy[Probe]:
    options: list[st.SearchStrategy[Probe]] = [st.binary(max_size=16).map(_pong_of)]
    if ctx.has("objects"):
        missing = objects_pb2.GetObjectRequest(id="no-such-object")
        options += [
            st.just(accept("count_objects", "count_objects", objects_pb2.CountObjectsRequest())),
            st.just(Probe("get_object('no-such-object')", "get_object", missing, (NOT_FOUND,))),
        ]
    if ctx.has("datasets"):
        options.append(st.just(accept("list_datasets", "list_datasets", datasets_pb2.ListDatasetsRequest())))
    if ctx.has("calls"):
        options += [
            st.integers(-(1 << 63), (1 << 63) - 1).map(_echo_of),
            st.integers(1, 16).map(lambda c: Probe(f"fail({c})", "call", call_request("fail", c), (c,))),
            st.sampled_from([0.0, 0.01, 0.03]).map(
                lambda s: accept(f"sleep({s})", "call", call_request("sleep", s))
            ),
        ]
    return st.one_of(options)


_NOISE = st.sampled_from(["none", "none", "cancel-unknown", "stray-chunk"])


@case(
    "concurrency/5.3.1/pipelined-one-reply-each",
    rule="For every request it accepts the server MUST send exactly one terminal reply with the request's "
    "request_id (§5.3.3: nothing more with that id after it; §5.4.3: in any order).",
)
def _case_pipelined(ctx: Context) -> None:
    limit = min(ctx.limits.max_in_flight, 12)
    pings = [(_pong_of(b""), (1 << 64) - 1 - n, "none") for n in range(min(limit, 6))]
    check_examples(
        ctx,
        _pipelined,
        batch=st.lists(
            st.tuples(_ops(ctx), st.integers(1, (1 << 64) - 1), _NOISE),
            min_size=2,
            max_size=limit,
            unique_by=lambda t: t[1],
        ),
        examples=[{"batch": pings}],
    )


async def _pipelined(ctx: Context, batch: list[tuple[Probe, int, str]]) -> None:
    async with await ctx.connect() as conn:
        used = {rid for _, rid, _ in batch}
        start = len(conn.frames)
        for op, rid, noise in batch:
            await conn.send(make_envelope(rid, op.kind, op.message))
            if noise == "cancel-unknown":
                await conn.send(make_envelope(_unused_id(used), "cancel", None))
            elif noise == "stray-chunk":
                chunk = tensor_pb2.Chunk(offset=0, data=b"x", total_bytes=1)
                await conn.send(make_envelope(_unused_id(used), "chunk", chunk))

        def anomaly() -> str | None:
            terminal: dict[int, int] = {}
            for frame in conn.frames[start:]:
                rid = frame.request_id
                if frame.envelope is None or rid == 0 or frame.kind in EVENT_BODIES:
                    continue
                if rid not in used:
                    return f"{frame.describe()}, an id no request used"
                terminal[rid] = terminal.get(rid, 0) + 1
                if terminal[rid] > 1:
                    return f"a second terminal reply for request {rid}: {frame.describe()}"
            return None

        for op, rid, _ in batch:

            def find(rid: int = rid) -> Reply | str | None:
                return anomaly() or conn.find_terminal(rid)

            got: Reply | str = await conn.wait_for(
                find, f"a terminal reply for request {rid} ({op.kind})", 2.0
            )
            if isinstance(got, str):
                fail(f"with {len(batch)} requests pipelined the server sent {got}")
            if got.events:
                body = got.events[0].WhichOneof("body")
                fail(f"{op.kind} request {rid} got {body} before its terminal reply (§5.3.2)")
            await op.check(conn, got)
        await conn.settle(0.05)
        await conn.ping()
        for frame in conn.pending_frames():
            if frame.request_id in used:
                fail(f"after its terminal reply, request {frame.request_id} got {frame.describe()} as well")
            fail(f"the server also sent {frame.describe()}")


def _unused_id(used: set[int]) -> int:
    rid = 7_000_001
    while rid in used:
        rid += 1
    return rid


@case(
    "concurrency/5.1.5/request-id-zero",
    rule="When an envelope with a request body (§19.1) has request_id 0, the server MUST answer with an "
    "Error with code INVALID_ARGUMENT and request_id 0, and MUST NOT run the request.",
)
def _case_id_zero(ctx: Context) -> None:
    kinds = sorted(k for k, r in REQUESTS.items() if r.capability is None or ctx.has(r.capability))
    max_examples = max(len(kinds), ctx.settings.max_examples)
    examples = [{"kind": "send_object"}]
    check_examples(ctx, _id_zero, kind=st.sampled_from(kinds), examples=examples, max_examples=max_examples)


async def _id_zero(ctx: Context, kind: str) -> None:
    async with await ctx.connect() as conn:
        message: Message | None = None
        object_id = ctx.unique("zero")
        if kind == "send_object":
            message = objects_pb2.SendObjectRequest(id=object_id, tensor=float_tensor([1.0]))
        await conn.send(make_envelope(0, kind, message))
        await conn.connection_error({ErrorCode.ERROR_CODE_INVALID_ARGUMENT})
        await conn.ping()
        for frame in conn.pending_frames():
            fail(f"a {kind} with request_id 0 was answered with {frame.describe()} as well")
        if kind == "send_object":
            reply = await conn.call("get_object", objects_pb2.GetObjectRequest(id=object_id))
            if reply.kind != "error":
                fail("a send_object with request_id 0 was run: its object exists")


@case(
    "concurrency/5.2.1/duplicate-in-flight-id",
    rule="When a request arrives whose request_id equals that of a request of the same connection still in "
    "flight, the server MUST answer with an Error with code INVALID_ARGUMENT, request_id 0 and details "
    '{"request_id": '
    '"<the id in decimal>"} (§5.2.2: not run; §5.2.3: the original continues unaffected).',
    needs=CALLS,
)
async def _case_duplicate(ctx: Context) -> None:
    conn = await ctx.connect()
    rid = (1 << 64) - 2
    await conn.request("call", call_request("sleep", 0.4), request_id=rid)
    await conn.request("ping", session_pb2.Ping(payload=b"dup"), request_id=rid)
    error = await conn.connection_error({ErrorCode.ERROR_CODE_INVALID_ARGUMENT})
    check(
        error.details.get("request_id") == str(rid),
        f"the duplicate-id Error has details {dict(error.details)}, expected {{'request_id': '{rid}'}}",
    )
    if ctx.has("objects"):
        object_id = ctx.unique("dup")
        request = objects_pb2.SendObjectRequest(id=object_id, tensor=float_tensor([1.0]))
        await conn.request("send_object", request, request_id=rid)
        await conn.connection_error({ErrorCode.ERROR_CODE_INVALID_ARGUMENT})
    reply = await conn.reply(rid)
    result = reply.expect("call_reply").result
    check(result.double_value == 0.4, f"the original sleep(0.4) returned {result}")
    await conn.ping()
    extra = conn.frames_with_id(rid)
    if len(extra) > 1:
        fail(f"request {rid} got more than one reply: {[f.describe() for f in extra]}")
    if ctx.has("objects"):
        get = await conn.call("get_object", objects_pb2.GetObjectRequest(id=object_id))
        check(get.kind == "error", "a send_object with a duplicate in-flight id was run: its object exists")


@case(
    "concurrency/5.1.4/id-reuse-after-reply",
    rule="A client MAY reuse an id after the terminal reply of the request that used it has arrived.",
)
async def _case_reuse(ctx: Context) -> None:
    conn = await ctx.connect()
    for payload in (b"first", b"second", b"third"):
        pong = (await conn.call("ping", session_pb2.Ping(payload=payload), request_id=5)).expect("pong")
        check(pong.payload == payload, f"a Ping reusing id 5 got the Pong of another Ping ({pong.payload!r})")


@case(
    "concurrency/5.1.6/ids-per-connection",
    rule="Request ids are scoped to one connection; two connections may use the same ids independently.",
    needs=CALLS,
)
async def _case_ids_per_connection(ctx: Context) -> None:
    a, b = await ctx.connect(), await ctx.connect()
    await a.request("call", call_request("sleep", 0.2), request_id=1)
    await b.request("call", call_request("echo", "b"), request_id=1)
    (await b.reply(1)).expect("call_reply")
    (await a.reply(1)).expect("call_reply")


@case(
    "concurrency/5.4.2/concurrent-processing",
    rule="A server MUST process a connection's requests concurrently, up to limits.max_in_flight of them.",
    needs=CALLS,
)
async def _case_concurrent(ctx: Context) -> None:
    count = max(1, min(8, ctx.limits.max_in_flight))
    conn = await ctx.connect()
    watch = Stopwatch()
    rids = [await conn.request("call", call_request("sleep", 0.5)) for _ in range(count)]
    for rid in rids:
        (await conn.reply(rid)).expect("call_reply")
    took = f"{count} pipelined sleep(0.5) calls took {watch.elapsed:.2f} s"
    check(watch.elapsed < 0.5 + 1.5, f"{took}: they were not concurrent")


@case(
    "concurrency/5.4.4/ping-not-delayed",
    rule="A slow request (a long custom call or a fit) MUST NOT delay the reply to a ping or to any other "
    "request of the same connection (§6.1.3).",
    needs=CALLS,
)
async def _case_ping_not_delayed(ctx: Context) -> None:
    conn = await ctx.connect()
    slow = await conn.request("call", call_request("sleep", 3.0))
    watch = Stopwatch()
    await conn.ping(b"quick")
    check(watch.elapsed < 0.5, f"a Ping took {watch.elapsed:.2f} s behind a sleep(3) call")
    check(not conn.frames_with_id(slow), "the sleep(3) call was answered before the Ping")
    await conn.request("cancel", None, request_id=slow)
    await conn.reply(slow)


@case(
    "concurrency/6.1.2/pong-payload",
    rule="Pong.payload MUST equal Ping.payload byte for byte.",
)
def _case_pong(ctx: Context) -> None:
    top = min(ctx.limits.max_frame_bytes - 64, 1 << 17)
    large = st.integers(0, top).map(lambda n: bytes(range(256)) * (n // 256))
    examples = [{"payload": b""}, {"payload": b"\x00\xff" * 40000}]
    check_examples(ctx, _pong, payload=st.one_of(st.binary(max_size=64), large), examples=examples)


async def _pong(ctx: Context, payload: bytes) -> None:
    async with await ctx.connect() as conn:
        await conn.ping(payload)


@case(
    "concurrency/6.2.3/cancel-stops-request",
    rule="If the named request is still in flight, the server MUST stop it as soon as it can and end it "
    "with an Error with code CANCELLED and the request's id (§18.2.7: sleep promptly, within 1 second).",
    needs=CALLS,
)
async def _case_cancel(ctx: Context) -> None:
    conn = await ctx.connect()
    rid = await conn.request("call", call_request("sleep", 30.0))
    await asyncio.sleep(0.1)
    watch = Stopwatch()
    await conn.request("cancel", session_pb2.Cancel(reason="conformance"), request_id=rid)
    reply = await conn.reply(rid, timeout=3.0, what=f"Error{{CANCELLED}} ending sleep(30) request {rid}")
    reply.expect_error(ErrorCode.ERROR_CODE_CANCELLED)
    check(watch.elapsed <= 1.0, f"the cancelled sleep(30) ended {watch.elapsed:.2f} s after the Cancel")


@case(
    "concurrency/6.2.5/cancel-after-finish",
    rule="If the named request already finished, the server MUST NOT send anything more for it; the "
    "request's normal terminal reply stands (§6.2.6: a cancel naming no request in flight MUST be ignored).",
)
async def _case_cancel_after(ctx: Context) -> None:
    conn = await ctx.connect()
    rid = await conn.request("ping", session_pb2.Ping())
    (await conn.reply(rid)).expect("pong")
    for target in (rid, 0, 987654321, (1 << 64) - 1):
        await conn.send(make_envelope(target, "cancel", session_pb2.Cancel(reason="late")))
    await conn.ping()
    for frame in conn.pending_frames():
        fail(f"a Cancel of a finished or unknown request was answered with {frame.describe()}")


@case(
    "concurrency/6.2.7/cancel-upload-discards",
    rule="Cancelling a chunked upload MUST discard the partial data; nothing is stored.",
    needs=("objects", "chunked"),
)
async def _case_cancel_upload(ctx: Context) -> None:
    cb = ctx.limits.chunk_bytes
    data = bytes(3 * cb)
    conn = await ctx.connect()
    object_id = ctx.unique("cancel")
    rid = await announce(conn, object_id, data)
    await send_chunks(conn, rid, data[:cb], [cb], total=len(data))
    await conn.request("cancel", None, request_id=rid)
    (await conn.reply(rid)).expect_error(ErrorCode.ERROR_CODE_CANCELLED)
    await send_chunks(conn, rid, data, [cb, cb, cb])
    await conn.ping()
    late = conn.frames_with_id(rid)[1:]
    if late:
        fail(f"chunks sent after the upload was cancelled were answered with {late[0].describe()}")
    await expect_absent(conn, object_id, "after a cancelled upload")


@case(
    "concurrency/5.6.2/deadline-exceeded",
    rule="When a server that advertises deadlines receives a request with a non-zero deadline_ms, and that "
    "many milliseconds pass without the terminal reply having been sent, the server MUST stop the work and "
    "answer with an Error with code DEADLINE_EXCEEDED.",
    needs=("deadlines", "calls"),
)
async def _case_deadline(ctx: Context) -> None:
    conn = await ctx.connect()
    watch = Stopwatch()
    reply = await conn.call("call", call_request("sleep", 10.0), deadline_ms=300, timeout=4.0)
    elapsed = watch.elapsed
    reply.expect_error(ErrorCode.ERROR_CODE_DEADLINE_EXCEEDED)
    check(0.25 <= elapsed <= 1.3, f"a sleep(10) with a 300 ms deadline ended after {elapsed:.2f} s")


_DEADLINE_MET = [
    accept("sleep(0.05) with a 5 s deadline", "call", call_request("sleep", 0.05), deadline_ms=5000),
    # a 1 ms deadline may pass before the Pong is sent: either outcome is allowed
    Probe("ping with a 1 ms deadline", "ping", session_pb2.Ping(), (DEADLINE,), ok=True, deadline_ms=1),
]

register(
    Row(
        "concurrency/5.6.1/deadline-not-reached",
        rule="Envelope.deadline_ms on a request gives the number of milliseconds the client is willing to "
        "wait; 0 means no deadline (a request that finishes in time gets its reply).",
        probes=_DEADLINE_MET,
        needs=("deadlines", "calls"),
    ),
)


@case(
    "concurrency/5.6.3/upload-deadline",
    rule="The deadline of a chunked upload covers the whole upload, from the SendObjectRequest to its "
    "reply; on expiry the partial data is discarded.",
    needs=("deadlines", "objects", "chunked"),
)
async def _case_upload_deadline(ctx: Context) -> None:
    cb = ctx.limits.chunk_bytes
    data = bytes(2 * cb)
    conn = await ctx.connect()
    object_id = ctx.unique("late")
    rid = await announce(conn, object_id, data, deadline_ms=300)
    await send_chunks(conn, rid, data[:cb], [cb], total=len(data))
    (await conn.reply(rid, timeout=3.0)).expect_error(ErrorCode.ERROR_CODE_DEADLINE_EXCEEDED)
    await expect_absent(conn, object_id, "after an upload ran out of its deadline")


@case(
    "concurrency/6.3.2/goodbye-cancels-and-closes",
    rule="On a client's goodbye the server MUST cancel the connection's requests in flight, sending Error "
    "CANCELLED for those still able to receive one, and MUST then close the connection with code 1000.",
    needs=CALLS,
)
async def _case_goodbye(ctx: Context) -> None:
    conn = await ctx.connect()
    rid = await conn.request("call", call_request("sleep", 30.0))
    await asyncio.sleep(0.05)
    await conn.send(make_envelope(4242, "goodbye", session_pb2.Goodbye(reason="done")))
    await conn.expect_close({1000}, timeout=3.0)
    for frame in conn.frames_with_id(rid):
        env = frame.envelope
        if env is None or frame.kind != "error" or env.error.code != ErrorCode.ERROR_CODE_CANCELLED:
            fail(
                f"after goodbye the sleep call got {frame.describe()}, expected Error{{CANCELLED}} or nothing"
            )
    stray = conn.frames_with_id(4242)
    if stray:
        fail(f"the goodbye was answered with {stray[0].describe()}; it gets no reply (§6.3.1)")


@case(
    "concurrency/6.3.9/goodbye-sends-cancelled-before-close",
    rule='"Still able to receive one" in §6.3.2 means: the server SHOULD send each request\'s CANCELLED '
    "Error before its close frame, and a client MUST accept either those Errors or the close alone. No "
    "request in flight at the goodbye gets any other terminal reply.",
    level=Level.SHOULD,
    needs=CALLS,
)
async def _case_goodbye_cancelled(ctx: Context) -> None:
    conn = await ctx.connect()
    settled = await conn.request("call", call_request("sleep", 30.0))
    await asyncio.sleep(0.05)
    # the last request right behind the goodbye: the server may not have started it yet
    rids = [settled, await conn.request("call", call_request("sleep", 30.0))]
    await conn.send(make_envelope(0, "goodbye", session_pb2.Goodbye(reason="done")))
    await conn.expect_close({1000}, timeout=3.0)
    for rid in rids:
        frames = conn.frames_with_id(rid)
        env = frames[0].envelope if frames else None
        if env is None or frames[0].kind != "error" or env.error.code != ErrorCode.ERROR_CODE_CANCELLED:
            got = frames[0].describe() if frames else "nothing"
            fail(f"request {rid}, in flight at the goodbye, got {got} before the close, expected CANCELLED")
