"""Section 7.5: the payload digest a connection negotiates, and the checks made with it.

The negotiation cases hold for every server (`sha256` is mandatory, an unknown name never fails the
handshake). The transfer cases run under every algorithm the suite computes that the server also picks
when offered alone with `sha256` behind it; an algorithm the server does not implement is skipped there
(the server then answers `sha256`, which the last of them checks anyway).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import blake3
import xxhash

from fedproto_pb.v1 import objects_pb2, tensor_pb2
from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import check, fail, skip
from ..context import Context
from ..registry import case
from ..wire import Connection, make_envelope
from ._common import chunk_sizes, expect_absent, refused

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []

CHUNKED = ("objects", "chunked")


def _xxh3_128(data: bytes) -> bytes:
    return xxhash.xxh3_128_digest(data)


#: The algorithms of section 7.5.1 this suite computes: name -> (digest function, digest length).
ALGORITHMS: dict[str, tuple[Any, int]] = {
    "sha256": (lambda data: hashlib.sha256(data).digest(), 32),
    "blake3": (lambda data: blake3.blake3(data).digest(), 32),
    "xxh3-128": (_xxh3_128, 16),
}

#: Names no implementation defines: offered to see that they are skipped, never refused.
_UNKNOWN = ("x-unknown-digest", "md5")


def _chosen(welcome: Any) -> str:
    return welcome.digest or "sha256"


@case(
    "handshake/7.5.3/no-digest-offered",
    rule="Hello.digests lists the algorithms the client accepts, in order of preference. An empty list "
    "means sha256 alone.",
)
async def _case_none_offered(ctx: Context) -> None:
    conn = await ctx.connect()
    assert conn.welcome is not None
    check(
        conn.welcome.digest in ("", "sha256"),
        f"a Hello that offers no digest was welcomed with digest {conn.welcome.digest!r}, not sha256 "
        "(section 7.5.3)",
    )


@case(
    "handshake/7.5.4/unknown-digest-offered",
    rule="The server MUST choose the first name in Hello.digests that it implements, skipping names it "
    "does not know, and sha256 when none is left. An unknown or unimplemented name never fails the "
    "handshake.",
)
async def _case_unknown_offered(ctx: Context) -> None:
    conn = await ctx.open()
    reply = await conn.hello(token=ctx.settings.token, digests=_UNKNOWN)
    if reply.kind != "welcome":
        offered = list(_UNKNOWN)
        fail(f"a Hello offering only unknown digests {offered} was answered {reply.describe()}, no Welcome")
    welcome = reply.expect("welcome")
    check(
        welcome.digest in ("", "sha256"),
        f"offered only unknown digests, the server chose {welcome.digest!r} instead of sha256",
    )
    await conn.ping()


@case(
    "handshake/7.5.4/first-known-digest",
    rule="The server MUST choose the first name in Hello.digests that it implements, skipping names it "
    "does not know, and sha256 when none is left.",
)
async def _case_first_known(ctx: Context) -> None:
    for name in ALGORITHMS:
        conn = await ctx.open()
        offered = [_UNKNOWN[0], name, "sha256"]
        reply = await conn.hello(token=ctx.settings.token, digests=offered)
        welcome = reply.expect("welcome")
        check(
            _chosen(welcome) in (name, "sha256"),
            f"offered {offered}, the server chose {welcome.digest!r}: only {name!r} (the first it may know) "
            "or sha256 (when it does not implement that) are right",
        )
        await conn.close()


async def _connect_under(ctx: Context, name: str) -> Connection:
    """A connection that negotiated ``name``, or the case is skipped when the server does not compute it."""
    conn = await ctx.connect(digests=[name, "sha256"])
    assert conn.welcome is not None
    if _chosen(conn.welcome) != name:
        await conn.close()
        skip(f"the server does not implement the digest {name!r}")
    return conn


def _header(object_id: str, nbytes: int, field: str, digest: bytes) -> objects_pb2.SendObjectRequest:
    info = tensor_pb2.TensorInfo(dtype=tensor_pb2.DTYPE_UINT8, shape=[nbytes], nbytes=nbytes)
    setattr(info, field, digest)
    return objects_pb2.SendObjectRequest(id=object_id, chunked=info)


def _field(name: str) -> str:
    return "sha256" if name == "sha256" else "digest"


async def _upload(
    conn: Connection, object_id: str, data: bytes, chunk_bytes: int, field: str, header: bytes, trailer: bytes
) -> Any:
    rid = await conn.request("send_object", _header(object_id, len(data), field, header))
    sizes = chunk_sizes(len(data), chunk_bytes)
    offset = 0
    for index, size in enumerate(sizes):
        chunk = tensor_pb2.Chunk(offset=offset, data=data[offset : offset + size], total_bytes=len(data))
        if index == len(sizes) - 1 and trailer:
            setattr(chunk, field, trailer)
        await conn.send(make_envelope(rid, "chunk", chunk))
        offset += size
    return await conn.reply(rid)


async def _digest_round_trip(ctx: Context, name: str) -> None:
    digest_of, size = ALGORITHMS[name]
    conn = await _connect_under(ctx, name)
    cb = ctx.limits.chunk_bytes
    data = random.Random(len(name)).randbytes(2 * cb + 5)
    field = _field(name)
    good = digest_of(data)
    wrong = bytes([good[0] ^ 0x01]) + good[1:]
    # a header digest and a trailing digest that do not match: DATA_LOSS, nothing stored (7.3.10, 7.5.8)
    for where, header, trailer in (("header", wrong, b""), ("last chunk", b"", wrong)):
        object_id = ctx.unique("digest")
        reply = await _upload(conn, object_id, data, cb, field, header, trailer)
        refused(
            reply,
            f"an upload under {name} whose {where} carries a {field} that does not match",
            ErrorCode.ERROR_CODE_DATA_LOSS,
        )
        await expect_absent(conn, object_id, f"after a {name} upload with a wrong digest was refused")
    # the right digest: stored, and the reply and a download carry it in the algorithm's field
    object_id = ctx.unique("digest")
    reply = await _upload(conn, object_id, data, cb, field, b"", good)
    info = reply.expect("send_object_reply").info.tensor
    got = getattr(info, field)
    check(got == good, f"the SendObjectReply under {name} carries {field}={got.hex()!r}, not the payload's")
    if name != "sha256":
        check(not info.sha256, f"the SendObjectReply under {name} also carries a sha256 (section 7.5.8)")
    rid = await conn.request("get_object", objects_pb2.GetObjectRequest(id=object_id))
    answer = await conn.reply(rid)
    body = answer.expect("get_object_reply")
    received = b"".join(e.chunk.data for e in answer.events) if answer.events else body.tensor.data
    check(received == data, f"the object stored under {name} came back different")
    carried = getattr(body.info.tensor, field)
    check(
        carried == good,
        f"the GetObjectReply under {name} carries {field}={carried.hex()!r}, not the {size}-byte digest "
        "of the payload (section 7.5.8)",
    )
    await conn.close()


def _register_mismatch(name: str) -> None:
    slug = name.replace("-", "")

    @case(
        f"objects/7.5.8/digest-mismatch-{slug}",
        rule="Under another algorithm, every rule that puts or checks a SHA-256 applies instead to the "
        "digest field of the same message; a payload whose digest does not match is DATA_LOSS.",
        needs=CHUNKED,
    )
    async def _case(ctx: Context) -> None:
        await _digest_round_trip(ctx, name)


for _name in ALGORITHMS:
    _register_mismatch(_name)


@case(
    "objects/7.5.8/sha256-field-under-other-digest",
    rule="The sha256 fields MUST then be empty. A server that receives a non-empty chunked.sha256 or "
    "Chunk.sha256, or a digest of the wrong length, ends the upload with INVALID_ARGUMENT.",
    needs=CHUNKED,
)
async def _case_sha256_under_other(ctx: Context) -> None:
    names = [n for n in ALGORITHMS if n != "sha256"]
    conn = await ctx.connect(digests=[*names, "sha256"])
    assert conn.welcome is not None
    name = _chosen(conn.welcome)
    if name == "sha256":
        skip("the server implements no digest but sha256")
    cb = ctx.limits.chunk_bytes
    data = random.Random(7).randbytes(cb + 9)
    right = ALGORITHMS[name][0](data)
    for what, field, header, trailer in (
        ("its SHA-256 in chunked.sha256", "sha256", hashlib.sha256(data).digest(), b""),
        ("its SHA-256 in the last Chunk.sha256", "sha256", b"", hashlib.sha256(data).digest()),
        ("a digest one byte short", "digest", right[:-1], b""),
    ):
        object_id = ctx.unique("digest")
        reply = await _upload(conn, object_id, data, cb, field, header, trailer)
        refused(reply, f"an upload under {name} with {what}", ErrorCode.ERROR_CODE_INVALID_ARGUMENT)
        await expect_absent(conn, object_id, f"after an upload under {name} with {what} was refused")
