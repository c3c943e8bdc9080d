"""Section 13: the Error message, its request ids and codes, and what errors leave behind."""

from __future__ import annotations

from google.protobuf.message import Message
from hypothesis import example, given
from hypothesis import strategies as st

from fedproto_pb.v1 import objects_pb2, session_pb2, tensor_pb2
from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import check, fail, skip
from ..context import Context
from ..registry import case
from ..spec import code_name
from ..values import make_tensor
from ..wire import Connection, make_envelope
from ._common import call_request, float_tensor, send_tensor, store_listing

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []

Failing = tuple[str, str, Message, int]


def _failing(ctx: Context) -> list[Failing]:
    """(what, kind, message, expected code) of requests that fail, one per capability the server has."""
    out: list[Failing] = []
    if ctx.has("objects"):
        out.append(
            (
                "get_object of a missing id",
                "get_object",
                objects_pb2.GetObjectRequest(id="missing"),
                ErrorCode.ERROR_CODE_NOT_FOUND,
            )
        )
        bad = objects_pb2.SendObjectRequest(id="x", tensor=make_tensor(0, [1], b"\x00"))
        out.append(
            ("send_object of an invalid tensor", "send_object", bad, ErrorCode.ERROR_CODE_INVALID_ARGUMENT)
        )
    if ctx.has("calls"):
        out.append(
            (
                "a call of an unknown method",
                "call",
                call_request("no such method"),
                ErrorCode.ERROR_CODE_METHOD_NOT_FOUND,
            )
        )
        out.append(
            ("fail(9)", "call", call_request("fail", 9, "x"), ErrorCode.ERROR_CODE_FAILED_PRECONDITION)
        )
    return out


@case(
    "errors/13.1.1/error-carries-request-id",
    rule="A failed request ends with an envelope whose body is error and whose request_id is the request's.",
)
def _case_error_id(ctx: Context) -> None:
    failing = _failing(ctx)
    if not failing:
        skip("the server advertises neither objects nor calls")

    @given(rid=st.integers(1, (1 << 64) - 1), which=st.integers(0, len(failing) - 1))
    @example(rid=(1 << 64) - 1, which=0)
    @example(rid=1 << 63, which=0)
    def check_id(rid: int, which: int) -> None:
        ctx.run(_error_id(ctx, rid, failing[which]))

    ctx.hypothesis(check_id)


async def _error_id(ctx: Context, rid: int, failing: Failing) -> None:
    what, kind, message, code = failing
    async with await ctx.connect() as conn:
        await conn.send(make_envelope(rid, kind, message))
        reply = await conn.reply(rid)
        if reply.kind != "error" or reply.envelope.error.code != code:
            fail(
                f"{what} with request_id {rid} was answered with {reply.describe()}, expected "
                f"Error{{{code_name(code)}}}"
            )


async def _error_codes_seen(ctx: Context, conn: Connection) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []

    async def expect_some(what: str, rid: int) -> None:
        reply = await conn.reply(rid)
        check(reply.kind == "error", f"{what} was answered with {reply.describe()}, expected an Error")
        seen.append((what, reply.envelope.error.code))

    for what, kind, message, _ in _failing(ctx):
        await expect_some(what, await conn.request(kind, message))
    await expect_some("an envelope without a body", await conn.request(None))
    await expect_some("a second hello", await conn.request("hello", session_pb2.Hello(versions=[1])))
    await expect_some("a pong body", await conn.request("pong", session_pb2.Pong()))
    await conn.send_raw(b"\xff\xff")
    error = await conn.connection_error()
    seen.append(("an undecodable message", error.code))
    await conn.send(make_envelope(0, "ping", session_pb2.Ping()))
    error = await conn.connection_error()
    seen.append(("a request with id 0", error.code))
    if ctx.has("calls"):
        for code in range(1, 17):
            await expect_some(f"fail({code})", await conn.request("call", call_request("fail", code)))
    return seen


@case(
    "errors/13.1.5/never-unspecified",
    rule="A server MUST NOT send ERROR_CODE_UNSPECIFIED (every code it sends is one of section 13.2).",
)
async def _case_never_unspecified(ctx: Context) -> None:
    conn = await ctx.connect()
    for what, code in await _error_codes_seen(ctx, conn):
        check(1 <= code <= 16, f"{what} was answered with error code {code} ({code_name(code)})")


@case(
    "errors/13.1.6/error-shortened-to-client-frame-limit",
    rule="When an Error envelope would be larger than the client's non-zero Hello.max_frame_bytes (a long "
    "message or many details), the server MUST shorten message and drop details until it fits (§3.4.4); the "
    "code and request_id stay, and the keys this document requires (§13.1.3) are kept when they fit.",
    needs=("calls",),
)
async def _case_error_shortened(ctx: Context) -> None:
    limit = 1024
    conn = await ctx.connect(max_frame_bytes=limit)
    message = "the start of a long message " + "x" * 4000
    rid = await conn.request("call", call_request("fail", int(ErrorCode.ERROR_CODE_NOT_FOUND), message))
    reply = await conn.reply(rid)
    error = reply.expect_error(ErrorCode.ERROR_CODE_NOT_FOUND)
    size = len(conn.frames_with_id(rid)[-1].data)
    check(size <= limit, f"with Hello.max_frame_bytes={limit} the Error of fail() took {size} bytes")
    check(
        message.startswith(error.message),
        f"the shortened message {error.message[:40]!r}... is not the start of the one given to fail()",
    )
    await conn.ping(b"after a shortened error")


@case(
    "errors/13.3.2/errors-keep-connection",
    rule="An Error never ends the connection, except where §3.2, §3.4, §4.1.4, §4.2.5, §4.4.2 and §15 say "
    "the server closes it.",
)
async def _case_errors_keep_open(ctx: Context) -> None:
    conn = await ctx.connect()
    await _error_codes_seen(ctx, conn)
    await conn.ping(b"after errors")
    check(not conn.closed, "the connection closed after errors that must not close it")


@case(
    "errors/13.3.1/failed-requests-change-nothing",
    rule="Unless a section says otherwise, a request that ends with an Error has no effect on stored "
    "objects or training state (§9.10.1: a failed request of §9 leaves the store exactly as it was).",
    needs=("objects",),
)
async def _case_no_effect(ctx: Context) -> None:
    conn = await ctx.connect()
    object_id = ctx.unique()
    (await send_tensor(conn, object_id, float_tensor([1.0]), tags=["t"], description="d")).expect(
        "send_object_reply"
    )
    before = [o.SerializeToString(deterministic=True) for o in await store_listing(conn)]
    attempts = [
        objects_pb2.SendObjectRequest(id=object_id, tensor=float_tensor([2.0]), tags=["u"]),  # exists
        objects_pb2.SendObjectRequest(
            id=object_id, tensor=make_tensor(tensor_pb2.DTYPE_BOOL, [1], b"\x05"), overwrite=True
        ),
        objects_pb2.SendObjectRequest(id="x" * 300, tensor=float_tensor([2.0])),
        objects_pb2.SendObjectRequest(id=object_id, overwrite=True),  # no payload
    ]
    for request in attempts:
        reply = await conn.call("send_object", request)
        check(reply.kind == "error", f"a send_object that must fail was answered with {reply.describe()}")
    await conn.expect_error(
        "delete_object", objects_pb2.DeleteObjectRequest(id=""), ErrorCode.ERROR_CODE_INVALID_ARGUMENT
    )
    after = [o.SerializeToString(deterministic=True) for o in await store_listing(conn)]
    check(before == after, "failed send_object or delete_object requests changed list_objects")
