"""Section 14 (with 5.5, 9.2.7, 11.3 and 12.1.6): advertised limits, enforced at and beyond their values."""

from __future__ import annotations

from fedproto_pb.v1 import calls_pb2, objects_pb2, session_pb2, tensor_pb2, training_pb2
from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import check, fail, skip
from ..context import Context
from ..registry import Level, case
from ..spec import sha256
from ..values import to_value
from ..wire import Connection, make_envelope
from ._common import (
    call_request,
    clear_store,
    float_tensor,
    send_chunks,
    send_tensor,
    start_upload,
)

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []

MAX_TESTED_IN_FLIGHT = 512


@case(
    "limits/14.1.1/required-limits-nonzero",
    rule='A value of 0 means "no limit" except for max_frame_bytes, max_in_flight and chunk_bytes, which '
    "MUST NOT be 0.",
)
async def _case_nonzero(ctx: Context) -> None:
    limits = ctx.limits
    zero = [n for n in ("max_frame_bytes", "max_in_flight", "chunk_bytes") if getattr(limits, n) == 0]
    check(not zero, f"the Welcome advertises 0 for {zero}")


@case(
    "limits/7.3.25/chunk-fits-frame",
    rule="A server MUST advertise chunk_bytes and max_frame_bytes such that chunk_bytes + 64 <= "
    "max_frame_bytes.",
)
async def _case_chunk_fits(ctx: Context) -> None:
    cb, mf = ctx.limits.chunk_bytes, ctx.limits.max_frame_bytes
    check(cb + 64 <= mf, f"chunk_bytes={cb} and max_frame_bytes={mf}: a full chunk envelope may not fit")


async def _sleeps(conn: Connection, count: int, seconds: float) -> list[int]:
    return [await conn.request("call", call_request("sleep", seconds)) for _ in range(count)]


def _in_flight_limit(ctx: Context) -> int:
    limit = ctx.limits.max_in_flight
    if limit > MAX_TESTED_IN_FLIGHT:
        skip(f"max_in_flight={limit} is above the {MAX_TESTED_IN_FLIGHT} this suite fills")
    return limit


@case(
    "limits/5.5.1/in-flight-limit",
    rule="When a request arrives while the connection already has limits.max_in_flight requests in flight, "
    "the server MUST answer it with an Error with code RESOURCE_EXHAUSTED and the request's own request_id, "
    "and MUST NOT run it (§5.5.2: requests already in flight are unaffected).",
    needs=("calls",),
)
async def _case_in_flight(ctx: Context) -> None:
    limit = _in_flight_limit(ctx)
    conn = await ctx.connect()
    sleeps = await _sleeps(conn, limit, 0.6)
    extra = await conn.request("call", call_request("sleep", 0.0))
    (await conn.reply(extra)).expect_error(ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED)
    for n, rid in enumerate(sleeps, start=1):
        reply = await conn.reply(rid, timeout=max(ctx.settings.timeout, 10))
        if reply.kind != "call_reply":
            fail(f"sleep request {n} of {limit} (the limit) got {reply.describe()}, expected its call_reply")
    await conn.ping()


@case(
    "limits/5.5.5/rejected-request-not-counted",
    rule="A request rejected under §5.5.1 does not itself count as in flight (and a finished request frees "
    "its place, §5.5.3).",
    needs=("calls",),
)
async def _case_rejected_not_counted(ctx: Context) -> None:
    limit = _in_flight_limit(ctx)
    conn = await ctx.connect()
    sleeps = await _sleeps(conn, limit - 1, 0.6)
    for _ in range(3):
        rid = await conn.request("ping", session_pb2.Ping(payload=b"fits"))
        (await conn.reply(rid)).expect("pong")
    last = await conn.request("call", call_request("sleep", 0.6))
    over = [await conn.request("ping", session_pb2.Ping()) for _ in range(3)]
    for rid in over:
        (await conn.reply(rid)).expect_error(ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED)
    for rid in [*sleeps, last]:
        (await conn.reply(rid, timeout=max(ctx.settings.timeout, 10))).expect("call_reply")
    await conn.ping(b"room again")


@case(
    "limits/5.5.6/in-flight-limit-detail",
    rule='The Error SHOULD carry details {"limit": "<max_in_flight in decimal>"}.',
    level=Level.SHOULD,
    needs=("calls",),
)
async def _case_in_flight_detail(ctx: Context) -> None:
    limit = _in_flight_limit(ctx)
    conn = await ctx.connect()
    await _sleeps(conn, limit, 0.3)
    error = (await conn.reply(await conn.request("ping", session_pb2.Ping()))).expect_error(
        ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED
    )
    check(
        error.details.get("limit") == str(limit), f"the RESOURCE_EXHAUSTED details are {dict(error.details)}"
    )


@case(
    "limits/5.5.4/upload-counts-once",
    rule="A chunked upload counts as one request, in flight from its SendObjectRequest until its reply; its "
    "Chunk envelopes do not count.",
    needs=("calls", "chunked", "objects"),
)
async def _case_upload_counts_once(ctx: Context) -> None:
    limit = _in_flight_limit(ctx)
    cb = ctx.limits.chunk_bytes
    conn = await ctx.connect()
    sleeps = await _sleeps(conn, limit - 1, 1.0)
    data = bytes(range(256)) * (3 * cb // 256 + 1)
    data = data[: 3 * cb]
    object_id = ctx.unique("count")
    rid = await start_upload(
        conn,
        object_id,
        dtype=tensor_pb2.DTYPE_UINT8,
        shape=[len(data)],
        nbytes=len(data),
        digest=sha256(data),
    )
    await send_chunks(conn, rid, data[: 2 * cb], [cb, cb], total=len(data))
    ping = await conn.request("ping", session_pb2.Ping())
    (await conn.reply(ping)).expect_error(ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED)
    early = conn.frames_with_id(rid)
    if early:
        fail(f"chunks of an upload in progress were answered with {early[0].describe()}")
    chunk = tensor_pb2.Chunk(offset=2 * cb, data=data[2 * cb :], total_bytes=len(data))
    await conn.send(make_envelope(rid, "chunk", chunk))
    (await conn.reply(rid)).expect("send_object_reply")
    for sleep in sleeps:
        (await conn.reply(sleep, timeout=max(ctx.settings.timeout, 10))).expect("call_reply")


@case(
    "limits/14.2.4/reply-above-client-frame-limit",
    rule="When a terminal reply other than a chunked GetObjectReply would exceed the client's non-zero "
    "Hello.max_frame_bytes, the server MUST send an Error with code RESOURCE_EXHAUSTED instead (§3.4.4).",
)
async def _case_reply_too_large(ctx: Context) -> None:
    limit = 1024
    conn = await ctx.connect(max_frame_bytes=limit)
    rid = await conn.request("ping", session_pb2.Ping(payload=b"p" * 2000))
    (await conn.reply(rid)).expect_error(ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED)
    if ctx.has("objects"):
        await clear_store(conn)
        for n in range(12):
            reply = await send_tensor(conn, f"{ctx.unique()}-{n}", float_tensor([1.0]), description="d" * 100)
            reply.expect("send_object_reply")
        (await conn.call("list_objects", objects_pb2.ListObjectsRequest())).expect_error(
            ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED
        )
        await clear_store(conn)
    big = [f for f in conn.frames if len(f.data) > limit]
    if big:
        fail(
            f"with Hello.max_frame_bytes={limit} the server sent {big[0].describe()} of "
            f"{len(big[0].data)} bytes"
        )


@case(
    "limits/9.2.7/object-quota",
    rule="When storing the tensor would make the identity's stored tensor bytes (minus the object being "
    "replaced, plus the new nbytes) exceed limits.max_object_bytes, the server MUST answer "
    "RESOURCE_EXHAUSTED and store nothing (§14.2.2: a value exactly at a limit is within it).",
    needs=("objects", "chunked"),
)
async def _case_quota(ctx: Context) -> None:
    quota = ctx.limits.max_object_bytes
    if not quota:
        skip("the server advertises no max_object_bytes")
    conn = await ctx.connect()
    await clear_store(conn)
    kept = ctx.unique("kept")
    (
        await send_tensor(
            conn, kept, tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_UINT8, shape=[1000], data=bytes(1000))
        )
    ).expect("send_object_reply")
    u8 = tensor_pb2.DTYPE_UINT8

    async def announce(object_id: str, nbytes: int, overwrite: bool = False) -> int:
        return await start_upload(
            conn, object_id, dtype=u8, shape=[nbytes], nbytes=nbytes, digest=sha256(b"x"), overwrite=overwrite
        )

    over = ctx.unique("over")
    (await conn.reply(await announce(over, quota - 1000 + 1))).expect_error(
        ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED
    )
    for object_id, nbytes, overwrite in ((ctx.unique("at"), quota - 1000, False), (kept, quota, True)):
        rid = await announce(object_id, nbytes, overwrite)
        await conn.ping()
        early = conn.frames_with_id(rid)
        if early:
            fail(
                f"an upload of {nbytes} bytes, exactly at the quota, was answered with {early[0].describe()}"
            )
        await conn.request("cancel", None, request_id=rid)
        (await conn.reply(rid)).expect_error(ErrorCode.ERROR_CODE_CANCELLED)
    reply = await conn.call("get_object", objects_pb2.GetObjectRequest(id=over))
    reply.expect_error(ErrorCode.ERROR_CODE_NOT_FOUND)
    await clear_store(conn)


def _args_size(n: int) -> int:
    return calls_pb2.CallRequest(args=[to_value(b"x" * n)]).ByteSize()


@case(
    "limits/11.3.2/call-args-limit",
    rule="When that size exceeds limits.max_call_args_bytes (when non-zero), the server MUST answer "
    "RESOURCE_EXHAUSTED without running the method (§11.3.1: the size of a call's arguments is the "
    "encoded size of its CallRequest with method cleared; §14.2.2: exactly at the limit is within "
    "it).",
    needs=("calls",),
)
async def _case_call_args(ctx: Context) -> None:
    limit = ctx.limits.max_call_args_bytes
    if not limit:
        skip("the server advertises no max_call_args_bytes")
    if limit + 1024 > ctx.limits.max_frame_bytes:
        skip("max_call_args_bytes is too close to max_frame_bytes to send a call at the limit")
    n = limit - 8
    while _args_size(n) < limit:
        n += 1
    while _args_size(n) > limit:
        n -= 1
    conn = await ctx.connect()
    if _args_size(n) == limit:
        result = (await conn.call("call", call_request("echo", b"x" * n))).expect("call_reply").result
        got = (
            result.map_value.entries[0].value.list_value.items[0].bytes_value
            if result.map_value.entries
            else b""
        )
        check(len(got) == n, f"echo of {limit} bytes of arguments returned {len(got)} bytes")
    m = n + 1
    while _args_size(m) <= limit:
        m += 1
    (await conn.call("call", call_request("echo", b"x" * m))).expect_error(
        ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED
    )
    if ctx.has("notifications"):
        request = call_request("notify", "too-big", b"x" * m)
        (await conn.call("call", request)).expect_error(ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED)
        await conn.ping()
        check(
            not [f for f in conn.frames if f.kind == "notification"],
            "notify ran although its arguments were too large",
        )


@case(
    "limits/12.1.6/model-size-limit",
    rule="A model_torchscript or loss_torchscript larger than limits.max_model_bytes (when non-zero) MUST "
    "be answered with RESOURCE_EXHAUSTED.",
    needs=("training",),
)
async def _case_model_size(ctx: Context) -> None:
    limit = ctx.limits.max_model_bytes
    if not limit:
        skip("the server advertises no max_model_bytes")
    if limit + 4096 > ctx.limits.max_frame_bytes:
        skip("max_model_bytes is too close to max_frame_bytes to send a larger model in one frame")
    conn = await ctx.connect()
    weights_only = (await conn.expect("list_models", training_pb2.ListModelsRequest())).weights_only
    config = training_pb2.TrainConfig(
        model_torchscript=b"\x00" * (limit + 1), loss_name="mse", optimizer="SGD"
    )
    config.batch_size, config.epochs = 1, 1
    reply = await conn.call("set_train_config", training_pb2.SetTrainConfigRequest(config=config))
    allowed = (
        {ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED, ErrorCode.ERROR_CODE_PERMISSION_DENIED}
        if weights_only
        else {ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED}
    )
    reply.expect_error(*allowed)
