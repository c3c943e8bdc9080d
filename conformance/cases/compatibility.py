"""Section 17: what a peer of a newer minor revision may send, and how a server must tolerate it."""

from __future__ import annotations

from google.protobuf.message import Message
from hypothesis import example, given
from hypothesis import strategies as st

from fedproto_pb.v1 import calls_pb2, objects_pb2, session_pb2, tensor_pb2, value_pb2
from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import check, fail
from ..context import Context
from ..registry import case
from ..strategies import ENVELOPE_FIELDS, field_bytes, unknown_fields, with_unknown
from ..values import make_tensor, value_diff
from ..wire import make_envelope
from ._common import call_request, float_tensor, send_tensor

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []


def _numbers(message: type[Message]) -> frozenset[int]:
    return frozenset(f.number for f in message.DESCRIPTOR.fields)


_WHERE = st.sampled_from(["envelope", "body", "nested"])


@case(
    "compatibility/17.1.1/unknown-fields-ignored",
    rule="Receivers MUST ignore unknown fields in known messages.",
)
def _case_unknown_fields(ctx: Context) -> None:
    kinds = ["ping", "hello"]
    if ctx.has("calls"):
        kinds.append("call")
    if ctx.has("objects"):
        kinds.append("send_object")

    @given(
        kind=st.sampled_from(kinds),
        where=_WHERE,
        extra=st.data(),
    )
    @example(kind="ping", where="body", extra=None)
    def check_unknown(kind: str, where: str, extra: st.DataObject | None) -> None:
        if extra is None:
            blob = field_bytes(99, 2, b"future")
        else:
            exclude = {
                "envelope": ENVELOPE_FIELDS,
                "body": _numbers(_BODY_TYPES[kind]),
                "nested": _numbers(_NESTED_TYPES[kind]),
            }[where]
            blob = extra.draw(unknown_fields(frozenset(exclude)), label="unknown fields")
        ctx.run(_unknown_fields(ctx, kind, where, blob))

    ctx.hypothesis(check_unknown)


_BODY_TYPES: dict[str, type[Message]] = {
    "ping": session_pb2.Ping,
    "hello": session_pb2.Hello,
    "call": calls_pb2.CallRequest,
    "send_object": objects_pb2.SendObjectRequest,
}
_NESTED_TYPES: dict[str, type[Message]] = {
    "ping": session_pb2.Ping,
    "hello": session_pb2.Hello,
    "call": value_pb2.Value,
    "send_object": tensor_pb2.Tensor,
}


async def _unknown_fields(ctx: Context, kind: str, where: str, blob: bytes) -> None:
    body: Message
    if kind == "ping":
        body = session_pb2.Ping(payload=b"with unknown fields")
    elif kind == "hello":
        body = session_pb2.Hello(versions=[1], token=ctx.settings.token)
    elif kind == "call":
        body = call_request("echo", 1, "a")
        if where == "nested":
            body.args[1].CopyFrom(with_unknown(body.args[1], blob))
    else:
        tensor = float_tensor([1.5, 2.5])
        if where == "nested":
            tensor = with_unknown(tensor, blob)
        body = objects_pb2.SendObjectRequest(id=ctx.unique("unk"), tensor=tensor)
    if where == "body":
        body = with_unknown(body, blob)
    rid = 3
    data = make_envelope(rid, kind, body).SerializeToString()
    if where == "envelope":
        data += blob
    conn = await (ctx.open() if kind == "hello" else ctx.connect())
    async with conn:
        await conn.send_raw(data)
        reply = await conn.reply(rid)
        if kind == "ping":
            pong = reply.expect("pong")
            check(
                pong.payload == b"with unknown fields",
                "the Pong of a Ping with unknown fields lost its payload",
            )
        elif kind == "hello":
            reply.expect("welcome")
        elif kind == "call":
            result = reply.expect("call_reply").result
            args = result.map_value.entries[0].value if result.map_value.entries else value_pb2.Value()
            expected = call_request("echo", 1, "a")
            diff = value_diff(
                value_pb2.Value(list_value=value_pb2.ListValue(items=expected.args)), args, "args"
            )
            if diff:
                fail(f"echo with unknown fields ({where}) returned other arguments: {diff}")
        else:
            info = reply.expect("send_object_reply").info
            check(list(info.tensor.shape) == [2], f"a tensor with unknown fields was stored as {info.tensor}")


@case(
    "compatibility/17.1.4/unknown-dtype-invalid",
    rule="An unknown DType value in a tensor is invalid (§7.2.7: INVALID_ARGUMENT).",
    needs=("objects",),
)
async def _case_unknown_dtype(ctx: Context) -> None:
    conn = await ctx.connect()
    for dtype in (13, 14, 100, (1 << 31) - 1, -1):
        reply = await send_tensor(conn, ctx.unique("dtype"), make_tensor(dtype, [2], bytes(8)))
        if reply.kind != "error" or reply.envelope.error.code != ErrorCode.ERROR_CODE_INVALID_ARGUMENT:
            fail(
                f"a tensor with dtype {dtype} was answered with {reply.describe()}, expected INVALID_ARGUMENT"
            )


@case(
    "compatibility/17.1.2/future-body-then-known-body",
    rule="An unknown Envelope.body member is handled as in §3.6.1 (UNIMPLEMENTED), and the session goes on.",
)
async def _case_future_body(ctx: Context) -> None:
    conn = await ctx.connect()
    for number in (19, 34, 74, 200, 100000):
        rid = 500 + number
        await conn.send_raw(field_bytes(1, 0, rid) + field_bytes(number, 2, b"\x08\x01"))
        (await conn.reply(rid)).expect_error(ErrorCode.ERROR_CODE_UNIMPLEMENTED)
        await conn.ping()
