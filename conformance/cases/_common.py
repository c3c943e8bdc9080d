"""Helpers the case modules share: envelopes of exact sizes, objects, chunked transfers, calls, refusals,
timings, and running a case's hypothesis examples (table-driven cases are in :mod:`._table`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from hypothesis import example, given
from hypothesis import strategies as st

from fedproto_pb.v1 import calls_pb2, errors_pb2, objects_pb2, session_pb2, tensor_pb2, value_pb2
from fedproto_pb.v1.envelope_pb2 import Envelope

from ..checks import check, codes_text, fail
from ..context import Context
from ..spec import DTYPE_WIDTHS, sha256
from ..values import make_tensor, to_value
from ..wire import Connection, Reply, make_envelope

__all__ = [
    "Download",
    "Stopwatch",
    "announce",
    "call",
    "call_request",
    "check_examples",
    "chunk_list",
    "chunk_sizes",
    "clear_store",
    "download",
    "expect_absent",
    "expect_call",
    "float_tensor",
    "ping_of_size",
    "refused",
    "send_chunks",
    "send_tensor",
    "start_upload",
    "store",
    "store_listing",
    "uint8_header",
    "upload",
    "upload_header",
]


def refused(reply: Reply, what: str, *codes: int) -> errors_pb2.Error:
    """The reply's Error, whose code must be one of ``codes``; a failure names ``what`` was sent."""
    error = reply.error
    if error is None or error.code not in codes:
        fail(f"{what} was answered with {reply.describe()}, expected Error{{{codes_text(codes)}}}")
    return error


class Stopwatch:
    """Seconds on the running event loop's clock since the stopwatch was made."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return self._loop.time() - self._start


def check_examples(
    ctx: Context,
    body: Callable[..., Coroutine[Any, Any, None]],
    *,
    examples: Sequence[Mapping[str, Any]] = (),
    max_examples: int | None = None,
    **strategies: st.SearchStrategy[Any],
) -> None:
    """Run ``await body(ctx, **drawn)`` on the case's loop for each example hypothesis draws from
    ``strategies`` (the explicit ``examples`` first), within the suite's budget and seed.

    Hypothesis is synchronous, so each example bridges to the wire with :meth:`Context.run`.
    """

    def run(**drawn: Any) -> None:
        ctx.run(body(ctx, **drawn))

    # A shrunk failure reads "Falsifying example: check_chunked_roundtrip(size=..., ...)".
    run.__name__ = run.__qualname__ = "check_" + body.__name__.lstrip("_")
    test = given(**strategies)(run)
    for drawn in reversed(examples):
        test = example(**drawn)(test)
    ctx.hypothesis(test, max_examples=max_examples)


def ping_of_size(request_id: int, size: int) -> bytes:
    """An encoded Ping envelope of exactly ``size`` bytes.

    Where no payload length gives that size (varint lengths jump), a generous deadline (days, so it never
    expires) adds the missing bytes.
    """
    for deadline in (0, 10**9, 1 << 35, 1 << 42):
        payload = max(size - 16, 0)
        for _ in range(8):
            envelope = Envelope(
                request_id=request_id, deadline_ms=deadline, ping=session_pb2.Ping(payload=bytes(payload))
            )
            data = envelope.SerializeToString()
            if len(data) == size:
                return data
            payload = max(payload + size - len(data), 0)
    raise ValueError(f"no Ping envelope has exactly {size} bytes")


# -- objects -----------------------------------------------------------------------------------------


async def clear_store(conn: Connection) -> None:
    """Empty the connection's identity's store."""
    await conn.expect("clear_objects", objects_pb2.ClearObjectsRequest())


async def store_listing(conn: Connection) -> list[objects_pb2.ObjectInfo]:
    """The ObjectInfos of ``list_objects``."""
    reply = await conn.expect("list_objects", objects_pb2.ListObjectsRequest())
    return list(reply.objects)


async def expect_absent(conn: Connection, object_id: str, why: str) -> None:
    """``get_object(object_id)`` must answer NOT_FOUND; ``why`` says when (``after a refused upload``)."""
    reply = await conn.call("get_object", objects_pb2.GetObjectRequest(id=object_id))
    if reply.error is None or reply.error.code != errors_pb2.ERROR_CODE_NOT_FOUND:
        fail(f"{why}, get_object({object_id!r}) answered {reply.describe()}, expected Error{{NOT_FOUND}}")


def float_tensor(values: Sequence[float]) -> tensor_pb2.Tensor:
    """A 1-d float32 tensor."""
    import struct

    return make_tensor(tensor_pb2.DTYPE_FLOAT32, [len(values)], struct.pack(f"<{len(values)}f", *values))


async def send_tensor(
    conn: Connection,
    object_id: str,
    tensor: tensor_pb2.Tensor,
    *,
    tags: Sequence[str] = (),
    description: str = "",
    overwrite: bool = False,
) -> Reply:
    """Send an object inline and return the reply (not checked)."""
    request = objects_pb2.SendObjectRequest(
        id=object_id, tags=list(tags), description=description, tensor=tensor, overwrite=overwrite
    )
    return await conn.call("send_object", request)


async def store(
    conn: Connection,
    object_id: str,
    tensor: tensor_pb2.Tensor,
    *,
    tags: Sequence[str] = (),
    description: str = "",
    overwrite: bool = False,
) -> objects_pb2.ObjectInfo:
    """Send an object inline; it must be stored. Its ObjectInfo from the SendObjectReply."""
    reply = await send_tensor(
        conn, object_id, tensor, tags=tags, description=description, overwrite=overwrite
    )
    body: objects_pb2.SendObjectReply = reply.expect("send_object_reply")
    return body.info


def chunk_sizes(total: int, chunk_bytes: int) -> list[int]:
    """The chunk sizes of a valid upload: full chunks, then a shorter last one (section 7.3.5)."""
    sizes = [chunk_bytes] * (total // chunk_bytes)
    if total % chunk_bytes:
        sizes.append(total % chunk_bytes)
    return sizes


def upload_header(
    object_id: str, *, dtype: int, shape: Sequence[int], nbytes: int, digest: bytes, overwrite: bool = False
) -> objects_pb2.SendObjectRequest:
    """The SendObjectRequest announcing a chunked upload (section 7.3.2; no validation)."""
    info = tensor_pb2.TensorInfo(dtype=cast(Any, dtype), shape=list(shape), nbytes=nbytes, sha256=digest)
    return objects_pb2.SendObjectRequest(id=object_id, chunked=info, overwrite=overwrite)


async def start_upload(
    conn: Connection,
    object_id: str,
    *,
    dtype: int,
    shape: Sequence[int],
    nbytes: int,
    digest: bytes,
    overwrite: bool = False,
    deadline_ms: int = 0,
) -> int:
    """Announce a chunked upload and return its request id."""
    header = upload_header(
        object_id, dtype=dtype, shape=shape, nbytes=nbytes, digest=digest, overwrite=overwrite
    )
    return await conn.request("send_object", header, deadline_ms=deadline_ms)


def uint8_header(object_id: str, nbytes: int, digest: bytes) -> objects_pb2.SendObjectRequest:
    """The header of a 1-d uint8 upload of ``nbytes`` bytes (any length fits uint8)."""
    return upload_header(
        object_id, dtype=tensor_pb2.DTYPE_UINT8, shape=[nbytes], nbytes=nbytes, digest=digest
    )


async def announce(
    conn: Connection, object_id: str, data: bytes, *, digest: bytes | None = None, deadline_ms: int = 0
) -> int:
    """Announce a 1-d uint8 upload of ``data`` with ``digest`` (its SHA-256 by default); the request id."""
    header = uint8_header(object_id, len(data), sha256(data) if digest is None else digest)
    return await conn.request("send_object", header, deadline_ms=deadline_ms)


def chunk_list(
    data: bytes, sizes: Sequence[int], *, total: int | None = None, digests: Sequence[bytes] = ()
) -> list[tensor_pb2.Chunk]:
    """``data`` cut into Chunks of ``sizes`` (which need not be valid), offsets contiguous.

    ``digests[i]`` goes in chunk i's ``sha256`` field (section 7.3.26); missing entries leave it empty.
    """
    chunks = []
    offset = 0
    for index, size in enumerate(sizes):
        chunks.append(
            tensor_pb2.Chunk(
                offset=offset,
                data=data[offset : offset + size],
                total_bytes=len(data) if total is None else total,
                sha256=digests[index] if index < len(digests) else b"",
            )
        )
        offset += size
    return chunks


async def send_chunks(
    conn: Connection,
    rid: int,
    data: bytes,
    sizes: Sequence[int],
    *,
    total: int | None = None,
    digests: Sequence[bytes] = (),
) -> None:
    """Send ``data`` as the Chunk envelopes of :func:`chunk_list` with the upload's request id."""
    for chunk in chunk_list(data, sizes, total=total, digests=digests):
        await conn.send(make_envelope(rid, "chunk", chunk))


async def upload(
    conn: Connection,
    object_id: str,
    data: bytes,
    *,
    dtype: int = tensor_pb2.DTYPE_UINT8,
    chunk_bytes: int,
    sizes: Sequence[int] | None = None,
    trailing: bool = False,
) -> Reply:
    """A whole chunked upload of ``data`` (1-d, so any length fits uint8).

    With ``trailing`` the digest goes in the last chunk instead of the header (section 7.3.26).
    """
    width = DTYPE_WIDTHS[dtype]
    digest = sha256(data)
    rid = await start_upload(
        conn,
        object_id,
        dtype=dtype,
        shape=[len(data) // width],
        nbytes=len(data),
        digest=b"" if trailing else digest,
    )
    sizes = sizes if sizes is not None else chunk_sizes(len(data), chunk_bytes)
    digests = [b""] * (len(sizes) - 1) + [digest] if trailing and sizes else []
    await send_chunks(conn, rid, data, sizes, digests=digests)
    return await conn.reply(rid)


@dataclass(slots=True)
class Download:
    """A checked ``get_object`` answer: the bytes, the info, and whether it came in chunks."""

    info: objects_pb2.ObjectInfo
    data: bytes
    dtype: int
    shape: list[int]
    chunked: bool
    chunk_lengths: list[int]


async def download(
    conn: Connection, object_id: str, *, chunk_bytes: int | None = None, strict_sizes: bool = True
) -> Download:
    """``get_object`` with every rule of sections 7.3.15 to 7.3.19 checked on the way.

    Chunks may carry up to ``chunk_bytes``, by default the limit the server advertised to ``conn``.
    """
    if chunk_bytes is None:
        if conn.welcome is None:
            raise ValueError("download() before the handshake needs chunk_bytes")
        chunk_bytes = conn.welcome.limits.chunk_bytes
    rid = await conn.request("get_object", objects_pb2.GetObjectRequest(id=object_id))
    reply = await conn.reply(rid)
    body: objects_pb2.GetObjectReply = reply.expect("get_object_reply")
    if not reply.events:
        if not body.HasField("tensor"):
            fail(
                f"get_object_reply for request {rid} has no tensor and no chunks came before it (section "
                "7.3.15)"
            )
        t = body.tensor
        return Download(body.info, t.data, t.dtype, list(t.shape), False, [])
    if body.HasField("tensor"):
        fail(f"a chunked get_object_reply for request {rid} also carries an inline tensor (section 7.3.16)")
    received = bytearray()
    lengths = []
    total = body.info.tensor.nbytes
    for n, event in enumerate(reply.events):
        if event.WhichOneof("body") != "chunk":
            fail(f"request {rid} got {event.WhichOneof('body')} before its get_object_reply (section 5.3.2)")
        chunk = event.chunk
        size = len(chunk.data)
        if chunk.offset != len(received):
            fail(
                f"chunk {n} of request {rid} has offset {chunk.offset}, expected {len(received)}: "
                "chunks must be contiguous and in order (section 7.3.4)"
            )
        if not 1 <= size <= chunk_bytes:
            fail(
                f"chunk {n} of request {rid} carries {size} bytes, allowed 1 to {chunk_bytes} (section 7.3.5)"
            )
        if chunk.total_bytes != total:
            fail(
                f"chunk {n} of request {rid} says total_bytes={chunk.total_bytes}, "
                f"the reply's nbytes is {total} (section 7.3.16)"
            )
        if chunk.sha256:
            fail(
                f"chunk {n} of request {rid} carries a sha256: a download's digest belongs in the reply "
                "(section 7.3.29)"
            )
        received += chunk.data
        lengths.append(size)
    if strict_sizes and any(size != chunk_bytes for size in lengths[:-1]):
        fail(f"request {rid} got chunks of {lengths} bytes: only the last may be shorter (section 7.3.5)")
    if len(received) != total:
        fail(
            f"the chunks of request {rid} cover {len(received)} bytes, total_bytes is {total} (section 7.3.7)"
        )
    check(
        body.info.tensor.sha256 == sha256(bytes(received)),
        f"the SHA-256 in the get_object_reply of request {rid} does not match the chunks' bytes (section "
        "7.3.16)",
    )
    return Download(
        body.info, bytes(received), body.info.tensor.dtype, list(body.info.tensor.shape), True, lengths
    )


# -- calls -------------------------------------------------------------------------------------------


def call_request(method: str, *args: Any, **kwargs: Any) -> calls_pb2.CallRequest:
    """A CallRequest from Python values (see :func:`conformance.values.to_value`)."""
    request = calls_pb2.CallRequest(method=method, args=[to_value(a) for a in args])
    for key, value in kwargs.items():
        request.kwargs.add(key=key).value.CopyFrom(to_value(value))
    return request


async def call(conn: Connection, method: str, *args: Any, deadline_ms: int = 0, **kwargs: Any) -> Reply:
    """Call ``method`` and return the reply (not checked)."""
    return await conn.call("call", call_request(method, *args, **kwargs), deadline_ms=deadline_ms)


async def expect_call(conn: Connection, method: str, *args: Any, **kwargs: Any) -> value_pb2.Value:
    """Call ``method``; the reply must be a CallReply with ``result`` set (section 11.5.1)."""
    reply = await call(conn, method, *args, **kwargs)
    body: calls_pb2.CallReply = reply.expect("call_reply")
    if not body.HasField("result"):
        fail(f"the call_reply of {method}() for request {reply.request_id} has no result (section 11.5.1)")
    return body.result
