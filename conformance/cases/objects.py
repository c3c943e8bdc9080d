"""Sections 7 and 9: tensors kept on the server, their ids, listings, searches and chunked transfers."""

# ruff: noqa: RUF001  (rule quotes keep the spec's own multiplication and minus signs)

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

from google.protobuf.message import Message
from hypothesis import strategies as st

from fedproto_pb.v1 import objects_pb2, tensor_pb2
from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import check, fail, skip
from ..context import Context
from ..registry import Level, case
from ..spec import DTYPE_WIDTHS, EMPTY_SHA256, dtype_name, sha256
from ..stateful import store_machine
from ..strategies import invalid_tensors, tensors
from ..values import make_tensor, tensor_problem
from ..wire import Connection, Reply, make_envelope
from ._common import (
    Download,
    announce,
    check_examples,
    chunk_list,
    chunk_sizes,
    clear_store,
    download,
    expect_absent,
    float_tensor,
    refused,
    send_tensor,
    store,
    store_listing,
    uint8_header,
    upload,
    upload_header,
)
from ._table import Probe, Row, Then, register

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []

OBJ = ("objects",)
CHUNKED = ("objects", "chunked")


def _check_info(info: objects_pb2.ObjectInfo, object_id: str, tensor: tensor_pb2.Tensor, where: str) -> None:
    check(info.id == object_id, f"{where}: info.id is {info.id!r}, expected {object_id!r}")
    for field, got, sent in (
        ("dtype", dtype_name(info.tensor.dtype), dtype_name(tensor.dtype)),
        ("shape", list(info.tensor.shape), list(tensor.shape)),
        ("nbytes", info.tensor.nbytes, len(tensor.data)),
    ):
        check(got == sent, f"{where}: info.tensor.{field} is {got}, the tensor sent has {sent}")


# -- send and get ------------------------------------------------------------------------------------


@case(
    "objects/9.2.10/send-reply-describes-object",
    rule="The server MUST fill in info.tensor.nbytes and info.tensor.sha256 (the SHA-256 of the tensor's "
    "data) in SendObjectReply (§9.2.9: id, tags, description and tensor).",
    needs=OBJ,
)
async def _case_send_reply(ctx: Context) -> None:
    conn = await ctx.connect()
    tensor = float_tensor([1.0, -2.5, 3.25])
    object_id = ctx.unique()
    info = await store(conn, object_id, tensor, tags=["b", "a"], description="three floats")
    _check_info(info, object_id, tensor, "SendObjectReply")
    check(list(info.tags) == ["b", "a"], f"SendObjectReply: tags are {list(info.tags)}, sent ['b', 'a']")
    check(info.description == "three floats", f"SendObjectReply: description is {info.description!r}")
    check(info.tensor.sha256 == sha256(tensor.data), "SendObjectReply: info.tensor.sha256 is not the data's")


@case(
    "objects/9.3.3/get-returns-stored-bytes",
    rule="The returned tensor (inline, or assembled from chunks) MUST be byte-for-byte the data that was "
    "stored, with the same dtype and shape.",
    needs=OBJ,
)
def _case_roundtrip(ctx: Context) -> None:
    examples = [
        make_tensor(tensor_pb2.DTYPE_FLOAT32, [], struct.pack("<f", -0.0)),
        make_tensor(tensor_pb2.DTYPE_INT64, [0, 3], b""),
        make_tensor(tensor_pb2.DTYPE_INT32, [2, 2], struct.pack("<4i", 1, -2, 3, -4)),
    ]
    check_examples(ctx, _roundtrip, tensor=tensors(), examples=[{"tensor": t} for t in examples])


async def _roundtrip(ctx: Context, tensor: tensor_pb2.Tensor) -> None:
    async with await ctx.connect() as conn:
        object_id = ctx.unique()
        await store(conn, object_id, tensor)
        got = await download(conn, object_id)
        _check_info(got.info, object_id, tensor, "GetObjectReply")
        check(
            got.dtype == tensor.dtype,
            f"get_object returned dtype {dtype_name(got.dtype)}, stored {dtype_name(tensor.dtype)}",
        )
        check(
            got.shape == list(tensor.shape),
            f"get_object returned shape {got.shape}, stored {list(tensor.shape)}",
        )
        if got.data != tensor.data:
            at = next(
                (i for i, (a, b) in enumerate(zip(got.data, tensor.data, strict=False)) if a != b), None
            )
            where = (
                f"byte {at} differs"
                if at is not None
                else f"{len(got.data)} bytes, stored {len(tensor.data)}"
            )
            fail(f"get_object returned other bytes than were stored ({where})")
        problem = tensor_problem(make_tensor(got.dtype, got.shape, got.data))
        check(problem is None, f"the server sent an invalid tensor: {problem} (section 7.2.9)")


@case(
    "objects/7.1.3/float-bits-unchanged",
    rule="Floating-point elements MAY be any bit pattern of their format, including NaN, infinities and "
    "negative zero, and a receiver MUST keep the bits unchanged when it stores and returns them.",
    needs=OBJ,
)
async def _case_float_bits(ctx: Context) -> None:
    conn = await ctx.connect()
    patterns = {
        tensor_pb2.DTYPE_FLOAT16: struct.pack("<4H", 0x7E01, 0xFC00, 0x8000, 0x7D55),
        tensor_pb2.DTYPE_BFLOAT16: struct.pack("<4H", 0x7FC1, 0xFF80, 0x8000, 0x7F81),
        tensor_pb2.DTYPE_FLOAT32: struct.pack("<4I", 0x7FC00001, 0xFF800000, 0x80000000, 0x7F800001),
        tensor_pb2.DTYPE_FLOAT64: struct.pack(
            "<4Q", 0x7FF8000000000001, 0xFFF0000000000000, 1 << 63, 0x7FF0000000000001
        ),
        tensor_pb2.DTYPE_COMPLEX64: struct.pack("<4I", 0x7FC00001, 0x80000000, 0x7F800001, 0xFF800000),
    }
    for dtype, data in patterns.items():
        shape = [len(data) // DTYPE_WIDTHS[dtype]]
        object_id = ctx.unique("bits")
        await store(conn, object_id, make_tensor(dtype, shape, data))
        got = await download(conn, object_id)
        check(got.data == data, f"dtype {dtype}: NaN payloads, infinities or -0.0 came back changed")


# -- refusals and request sequences, as a table ---------------------------------------------------------

NOT_FOUND = (ErrorCode.ERROR_CODE_NOT_FOUND,)
EXISTS = (ErrorCode.ERROR_CODE_ALREADY_EXISTS,)
INVALID = (ErrorCode.ERROR_CODE_INVALID_ARGUMENT,)


def _probe(
    kind: str, message: Message, object_id: str, codes: tuple[int, ...], why: str, then: Then
) -> Probe:
    """A probe of one object request: the success reply when ``codes`` is empty, else one of ``codes``."""
    shown = repr(object_id) if len(object_id) <= 40 else f"an id of {len(object_id.encode())} bytes"
    what = f"{kind}({shown})" + (f" {why}" if why else "")
    return Probe(what, kind, message, codes, ok=not codes, then=then)


def _get(object_id: str, codes: tuple[int, ...] = (), *, why: str = "", then: Then = None) -> Probe:
    return _probe("get_object", objects_pb2.GetObjectRequest(id=object_id), object_id, codes, why, then)


def _delete(object_id: str, codes: tuple[int, ...] = (), *, why: str = "", then: Then = None) -> Probe:
    return _probe("delete_object", objects_pb2.DeleteObjectRequest(id=object_id), object_id, codes, why, then)


def _send(
    object_id: str,
    tensor: tensor_pb2.Tensor,
    codes: tuple[int, ...] = (),
    *,
    overwrite: bool = False,
    why: str = "",
    then: Then = None,
) -> Probe:
    request = objects_pb2.SendObjectRequest(id=object_id, tensor=tensor, overwrite=overwrite)
    return _probe("send_object", request, object_id, codes, why, then)


def _holds(object_id: str, data: bytes, message: str) -> Then:
    """A check that ``object_id`` reads back as ``data``."""

    async def then(conn: Connection, _: Reply) -> None:
        got = await download(conn, object_id)
        check(got.data == data, message)

    return then


def _absent(object_id: str, why: str) -> Then:
    """A check that ``object_id`` names no object (a refused request stored nothing, §9.10.1)."""

    async def then(conn: Connection, _: Reply) -> None:
        await expect_absent(conn, object_id, why)

    return then


def _payload_unset(ctx: Context, conn: Connection) -> list[Probe]:
    object_id = ctx.unique()
    after = _absent(object_id, "after a send_object without payload")
    request = objects_pb2.SendObjectRequest(id=object_id)
    return [Probe("a send_object without payload", "send_object", request, then=after)]


def _already_exists(ctx: Context, conn: Connection) -> list[Probe]:
    object_id, first = ctx.unique(), float_tensor([1.0])
    kept = "a send_object refused with ALREADY_EXISTS still changed the object (§9.10.1)"
    return [
        _send(object_id, first),
        _send(object_id, float_tensor([2.0, 3.0]), EXISTS, then=_holds(object_id, first.data, kept)),
    ]


def _get_after_delete(ctx: Context, conn: Connection) -> list[Probe]:
    object_id, again = ctx.unique(), float_tensor([3.0])
    reused = _holds(object_id, again.data, "an id used again after a delete returns other bytes")
    return [
        _send(object_id, float_tensor([1.0, 2.0])),
        _delete(object_id),
        _get(object_id, NOT_FOUND, why="after a successful delete_object"),
        _delete(object_id, NOT_FOUND, why="after a successful delete_object"),
        _send(object_id, again, then=reused),
    ]


def _id_length(ctx: Context, conn: Connection) -> list[Probe]:
    at_limit, too_long = "é" * 128, "é" * 128 + "x"  # 256 and 257 bytes of UTF-8
    return [
        _send(at_limit, float_tensor([1.0]), overwrite=True),
        _send(too_long, float_tensor([1.0]), INVALID),
        *(probe(object_id, INVALID) for object_id in ("", too_long) for probe in (_get, _delete)),
        _delete(at_limit),
    ]


register(
    Row(
        "objects/9.3.2/get-missing-not-found",
        rule="An id that names no object of the identity MUST be answered with NOT_FOUND.",
        probes=lambda ctx, conn: [_get(ctx.unique("missing"), NOT_FOUND, why="(an id never used)")],
    ),
    Row(
        "objects/9.2.2/payload-unset",
        rule="When payload is unset the server MUST answer INVALID_ARGUMENT.",
        probes=_payload_unset,
    ),
    Row(
        "objects/9.2.4/already-exists",
        rule="When an object with id exists and overwrite is false, the server MUST answer ALREADY_EXISTS.",
        probes=_already_exists,
    ),
    Row(
        "objects/9.4.2/delete-missing-not-found",
        rule="An id that names no object of the identity MUST be answered with NOT_FOUND.",
        probes=lambda ctx, conn: [_delete(ctx.unique("gone"), NOT_FOUND)],
    ),
    Row(
        "objects/9.4.3/get-after-delete",
        rule="After a successful delete, a get_object of that id MUST answer NOT_FOUND (until the id is used "
        "again).",
        probes=_get_after_delete,
    ),
    Row(
        "objects/9.9.2/id-length",
        rule="A send_object with a non-empty id longer than 256 bytes, and a get_object or delete_object "
        "with an empty id or one longer than 256 bytes, MUST be answered with INVALID_ARGUMENT.",
        probes=_id_length,
    ),
    needs=OBJ,
)


@case(
    "objects/9.3.4/inline-info-sha256",
    rule="GetObjectReply.info MUST describe the object as in §9.2.9; info.tensor.sha256 ... SHOULD be set "
    "in the inline form.",
    level=Level.SHOULD,
    needs=OBJ,
)
async def _case_inline_sha(ctx: Context) -> None:
    conn = await ctx.connect()
    object_id = ctx.unique()
    tensor = float_tensor([0.5, 1.5])
    await store(conn, object_id, tensor)
    got = await download(conn, object_id)
    if not got.chunked:
        check(
            got.info.tensor.sha256 == sha256(tensor.data),
            "the inline GetObjectReply lacks info.tensor.sha256",
        )


@case(
    "objects/9.2.3/empty-id-assigned",
    rule="When id is empty the server MUST choose an id that is unique in the identity's store, obeys §9.9, "
    "and is returned in the reply.",
    needs=OBJ,
)
async def _case_empty_id(ctx: Context) -> None:
    conn = await ctx.connect()
    tensor = float_tensor([7.0])
    ids = []
    for _ in range(3):
        info = await store(conn, "", tensor)
        check(info.id, "SendObjectReply has an empty id for a send_object without id")
        check(len(info.id.encode()) <= 256, f"the chosen id has {len(info.id.encode())} bytes (section 9.9)")
        ids.append(info.id)
    check(len(set(ids)) == 3, f"three sends without id got ids {ids}")
    for object_id in ids:
        got = await download(conn, object_id)
        check(got.data == tensor.data, f"object {object_id!r} with a chosen id returns other bytes")


@case(
    "objects/9.2.5/overwrite-keeps-position",
    rule="When an object with id exists and overwrite is true, the server replaces it; the replaced object "
    "keeps its position in insertion order (§9.5).",
    needs=OBJ,
)
async def _case_overwrite(ctx: Context) -> None:
    conn = await ctx.connect()
    await clear_store(conn)
    ids = [ctx.unique() for _ in range(3)]
    for object_id in ids:
        await store(conn, object_id, float_tensor([1.0]))
    replacement = float_tensor([4.0, 5.0])
    await store(conn, ids[0], replacement, tags=["new"], overwrite=True)
    listed = [o.id for o in await store_listing(conn)]
    check(listed == ids, f"after overwriting {ids[0]!r} list_objects gives {listed}, expected {ids}")
    got = await download(conn, ids[0])
    check(got.data == replacement.data and got.shape == [2], "overwrite=true did not replace the tensor")


@case(
    "objects/9.2.6/tags-and-description-stored",
    rule="The server MUST store tags (in the order given) and description with the tensor.",
    needs=OBJ,
)
async def _case_tags_stored(ctx: Context) -> None:
    conn = await ctx.connect()
    object_id = ctx.unique()
    tags = ["zeta", "Alpha", "mid dle", "ünï"]
    await store(conn, object_id, float_tensor([1.0]), tags=tags, description="déscription\n2")
    for where, info in [
        ("list_objects", next((o for o in await store_listing(conn) if o.id == object_id), None)),
        ("get_object", (await download(conn, object_id)).info),
    ]:
        if info is None:
            fail(f"{where} does not show object {object_id!r}")
        check(list(info.tags) == tags, f"{where}: tags are {list(info.tags)}, sent {tags}")
        check(info.description == "déscription\n2", f"{where}: description is {info.description!r}")


@case(
    "objects/9.2.8/invalid-tensor-rejected",
    rule="An invalid tensor (§7.2) MUST be answered with INVALID_ARGUMENT.",
    needs=OBJ,
)
def _case_invalid_tensor(ctx: Context) -> None:
    examples = [
        (make_tensor(tensor_pb2.DTYPE_INT32, [1 << 32, 1 << 32], b""), "overflowing shape"),
        (make_tensor(tensor_pb2.DTYPE_BOOL, [2], b"\x01\x02"), "bool byte 2"),
    ]
    check_examples(ctx, _invalid, bad=invalid_tensors(), examples=[{"bad": bad} for bad in examples])


async def _invalid(ctx: Context, bad: tuple[tensor_pb2.Tensor, str]) -> None:
    tensor, why = bad
    async with await ctx.connect() as conn:
        object_id = ctx.unique("bad")
        refused(await send_tensor(conn, object_id, tensor), f"a tensor with {why}", *INVALID)
        await expect_absent(conn, object_id, "after a rejected tensor")


# -- delete, list, count, clear, search ----------------------------------------------------------------


@case(
    "objects/9.4.4/freed-bytes",
    rule="DeleteObjectReply.freed_bytes MUST equal the deleted tensor's nbytes, which no longer count "
    "toward the quota.",
    needs=OBJ,
)
async def _case_freed_bytes(ctx: Context) -> None:
    conn = await ctx.connect()
    object_id = ctx.unique()
    tensor = make_tensor(tensor_pb2.DTYPE_FLOAT64, [3, 5], bytes(120))
    await store(conn, object_id, tensor)
    reply = await conn.expect("delete_object", objects_pb2.DeleteObjectRequest(id=object_id))
    check(reply.freed_bytes == 120, f"freed_bytes is {reply.freed_bytes} for a tensor of 120 bytes")


@case(
    "objects/9.5.2/list-insertion-order",
    rule="The objects MUST be in insertion order: the order in which they were first stored (a deleted and "
    "re-sent id counts as new).",
    needs=OBJ,
)
async def _case_list_order(ctx: Context) -> None:
    conn = await ctx.connect()
    await clear_store(conn)
    ids = [f"{ctx.unique()}-{name}" for name in ("m", "z", "a", "k")]
    for object_id in ids:
        await store(conn, object_id, float_tensor([1.0]))
    await conn.expect("delete_object", objects_pb2.DeleteObjectRequest(id=ids[1]))
    await store(conn, ids[1], float_tensor([2.0]))
    expected = [ids[0], ids[2], ids[3], ids[1]]
    listed = [o.id for o in await store_listing(conn)]
    check(listed == expected, f"list_objects gives {listed}, expected insertion order {expected}")


@case(
    "objects/9.6.1/count-equals-list",
    rule="count_objects returns CountObjectsReply.count, the number of objects of the identity; it MUST "
    "equal the length of a list_objects reply taken at the same moment.",
    needs=OBJ,
)
async def _case_count_equals_list(ctx: Context) -> None:
    conn = await ctx.connect()
    await clear_store(conn)
    for n in range(4):
        count = (await conn.expect("count_objects", objects_pb2.CountObjectsRequest())).count
        listed = await store_listing(conn)
        check(
            count == len(listed) == n,
            f"with {n} objects count_objects says {count}, list_objects {len(listed)}",
        )
        await store(conn, ctx.unique(), float_tensor([1.0]))


@case(
    "objects/9.7.2/clear-removed-count",
    rule="ClearObjectsReply.removed MUST equal the number of objects deleted (0 for an empty store); after "
    "a clear, count_objects returns 0 (§9.7.3).",
    needs=OBJ,
)
async def _case_clear_removed(ctx: Context) -> None:
    conn = await ctx.connect()
    await clear_store(conn)
    for _ in range(3):
        await store(conn, ctx.unique(), float_tensor([1.0]))
    removed = (await conn.expect("clear_objects", objects_pb2.ClearObjectsRequest())).removed
    check(removed == 3, f"clear_objects removed={removed} for 3 objects")
    count = (await conn.expect("count_objects", objects_pb2.CountObjectsRequest())).count
    check(count == 0, f"count_objects is {count} after clear_objects")
    again = (await conn.expect("clear_objects", objects_pb2.ClearObjectsRequest())).removed
    check(again == 0, f"clear_objects on an empty store says removed={again}")


_TAGS = ["a", "b", "A", "c d", "é"]


@case(
    "objects/9.8.1/search-all-tags",
    rule="search_objects returns SearchObjectsReply.objects: every object of the identity that carries ALL "
    "the tags in SearchObjectsRequest.tags (in insertion order, §9.8.4).",
    needs=OBJ,
)
def _case_search_all_tags(ctx: Context) -> None:
    tag_sets = st.lists(st.sampled_from(_TAGS), max_size=4, unique=True)
    check_examples(
        ctx,
        _search,
        objects=st.lists(tag_sets, min_size=1, max_size=6),
        queries=st.lists(tag_sets, min_size=1, max_size=4),
        examples=[{"objects": [["a", "b"], ["a"], ["b"]], "queries": [["a", "b"], ["b", "a"]]}],
    )


async def _search(ctx: Context, objects: list[list[str]], queries: list[list[str]]) -> None:
    async with await ctx.connect() as conn:
        await clear_store(conn)
        stored = []
        for tags in objects:
            object_id = ctx.unique("s")
            await store(conn, object_id, float_tensor([1.0]), tags=tags)
            stored.append((object_id, set(tags)))
        for query in queries:
            reply = await conn.expect("search_objects", objects_pb2.SearchObjectsRequest(tags=query))
            got = [o.id for o in reply.objects]
            expected = [oid for oid, tags in stored if set(query) <= tags]
            check(got == expected, f"search_objects(tags={query}) gives {got}, expected {expected}")


@case(
    "objects/9.8.2/search-empty-tags-matches-all",
    rule="An empty tags list matches every object.",
    needs=OBJ,
)
async def _case_search_empty(ctx: Context) -> None:
    conn = await ctx.connect()
    await clear_store(conn)
    ids = [ctx.unique() for _ in range(3)]
    for n, object_id in enumerate(ids):
        await store(conn, object_id, float_tensor([1.0]), tags=["x"] * (n % 2))
    got = [o.id for o in (await conn.expect("search_objects", objects_pb2.SearchObjectsRequest())).objects]
    check(got == ids, f"search_objects with no tags gives {got}, expected every object {ids}")


@case(
    "objects/9.8.3/search-case-sensitive",
    rule="Tags match by exact, case-sensitive string equality.",
    needs=OBJ,
)
async def _case_search_case(ctx: Context) -> None:
    conn = await ctx.connect()
    await clear_store(conn)
    lower, upper, spaced = ctx.unique(), ctx.unique(), ctx.unique()
    await store(conn, lower, float_tensor([1.0]), tags=["tag"])
    await store(conn, upper, float_tensor([1.0]), tags=["Tag"])
    await store(conn, spaced, float_tensor([1.0]), tags=["tag "])
    for query, expected in (("tag", [lower]), ("Tag", [upper]), ("TAG", []), ("tag ", [spaced])):
        reply = await conn.expect("search_objects", objects_pb2.SearchObjectsRequest(tags=[query]))
        got = [o.id for o in reply.objects]
        check(got == expected, f"search_objects(tags=[{query!r}]) gives {got}, expected {expected}")


@case(
    "objects/9.1.5/objects-outlive-connection",
    rule="A store belongs to its identity, not to a connection: objects survive the connection that sent "
    "them and are visible to every connection of the same identity.",
    needs=OBJ,
)
async def _case_outlive(ctx: Context) -> None:
    object_id = ctx.unique()
    tensor = float_tensor([9.0, 8.0])
    first = await ctx.connect()
    await store(first, object_id, tensor)
    other = await ctx.connect()
    await first.close()
    got = await download(other, object_id)
    check(got.data == tensor.data, "an object read from another connection returns other bytes")


@case(
    "objects/9.1.2/identities-isolated",
    rule="An identity MUST NOT see, get, delete, list, count, clear or search another identity's objects.",
    needs=OBJ,
    tokens=2,
)
async def _case_isolated(ctx: Context) -> None:
    mine = await ctx.connect()
    theirs = await ctx.connect_second()
    await clear_store(theirs)
    object_id = ctx.unique()
    await store(mine, object_id, float_tensor([1.0]), tags=["secret"])
    await expect_absent(theirs, object_id, "for an object of another identity")
    await _delete(object_id, NOT_FOUND, why="of another identity's object").send(theirs)
    listed = await store_listing(theirs)
    check(not listed, f"list_objects of the second identity shows {[o.id for o in listed]}")
    count = (await theirs.expect("count_objects", objects_pb2.CountObjectsRequest())).count
    check(count == 0, f"count_objects of the second identity is {count}")
    found = (await theirs.expect("search_objects", objects_pb2.SearchObjectsRequest(tags=["secret"]))).objects
    check(not found, "search_objects of the second identity finds the first identity's object")
    removed = (await theirs.expect("clear_objects", objects_pb2.ClearObjectsRequest())).removed
    check(removed == 0, f"clear_objects of the second identity removed {removed}")
    kept = (await download(mine, object_id)).data == float_tensor([1.0]).data
    check(kept, "another identity's clear_objects changed this identity's object")


@case(
    "objects/9.1.3/same-id-per-identity",
    rule="Ids are scoped per identity: two identities may each store an object under the same id.",
    needs=OBJ,
    tokens=2,
)
async def _case_same_id(ctx: Context) -> None:
    mine = await ctx.connect()
    theirs = await ctx.connect_second()
    object_id = ctx.unique()
    await store(mine, object_id, float_tensor([1.0]))
    await store(theirs, object_id, float_tensor([2.0, 2.0]))
    for conn, tensor, problem in (
        (mine, float_tensor([1.0]), "the first identity's object changed when another stored the same id"),
        (theirs, float_tensor([2.0, 2.0]), "the second identity reads the other identity's object"),
    ):
        check((await download(conn, object_id)).data == tensor.data, problem)


@case(
    "objects/9/store-state-machine",
    rule="Every request of §9 behaves like a simple ordered map per identity: sends, gets, deletes, "
    "listings (§9.5), counts (§9.6), clears (§9.7), searches (§9.8); a failed request leaves the store as "
    "it was (§9.10.1).",
    needs=OBJ,
)
def _case_state_machine(ctx: Context) -> None:
    ctx.state_machine(store_machine(ctx), max_examples=max(2, ctx.settings.max_examples // 2), steps=20)


# -- chunked transfers -------------------------------------------------------------------------------


def _payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def _refused_upload(
    ctx: Context,
    data: bytes,
    chunks: Sequence[tensor_pb2.Chunk],
    what: str,
    *,
    digest: bytes | None = None,
    code: int = ErrorCode.ERROR_CODE_INVALID_ARGUMENT,
) -> None:
    """An upload of ``data`` announced with ``digest`` (its SHA-256 by default) and sent as ``chunks`` must
    end with Error ``code``, store nothing (§7.3.8) and get nothing more for later chunks (§7.3.12)."""
    async with await ctx.connect() as conn:
        object_id = ctx.unique("refused")
        rid = await announce(conn, object_id, data, digest=digest)
        for chunk in chunks:
            await conn.send(make_envelope(rid, "chunk", chunk))
        refused(await conn.reply(rid), what, code)
        await conn.ping()
        late = conn.frames_with_id(rid)[1:]
        if late:
            fail(f"after ending {what} the server sent {late[0].describe()} for its later chunks")
        await expect_absent(conn, object_id, f"after {what} was refused")


async def _round_trip(
    ctx: Context,
    conn: Connection,
    data: bytes,
    what: str,
    *,
    reader: Connection | None = None,
    dtype: int = tensor_pb2.DTYPE_UINT8,
    sizes: Sequence[int] | None = None,
    trailing: bool = False,
) -> tuple[objects_pb2.ObjectInfo, Download]:
    """Upload ``data`` in chunks, which must be stored; read it back (on ``reader`` if given, with the
    chunk sizes unchecked there), compare, delete it. The SendObjectReply's info and the download."""
    cb = ctx.limits.chunk_bytes
    object_id = ctx.unique("up")
    reply = await upload(conn, object_id, data, dtype=dtype, chunk_bytes=cb, sizes=sizes, trailing=trailing)
    if reply.kind != "send_object_reply":
        fail(f"{what} was answered with {reply.describe()}")
    got = await download(reader or conn, object_id, chunk_bytes=cb, strict_sizes=reader is None)
    check(got.data == data, f"{what} came back different")
    await conn.expect("delete_object", objects_pb2.DeleteObjectRequest(id=object_id))
    return reply.envelope.send_object_reply.info, got


@case(
    "objects/7.3.10/chunked-upload-roundtrip",
    rule="When the last byte has arrived, the server MUST compute the SHA-256 of the assembled payload; if "
    "it equals the upload's digest (chunked.sha256, or the last chunk's sha256, §7.3.26) the server stores "
    "the tensor ... and answers SendObjectReply.",
    needs=CHUNKED,
)
def _case_chunked_roundtrip(ctx: Context) -> None:
    cb = ctx.limits.chunk_bytes
    top = min(3 * cb, 8 << 20)
    sizes = st.one_of(
        st.integers(1, top),
        st.sampled_from(sorted({1, cb - 1, cb, cb + 1, 2 * cb})).filter(lambda n: 0 < n <= top),
    )
    check_examples(
        ctx,
        _chunked_roundtrip,
        size=sizes,
        seed=st.integers(0, 1 << 32),
        float32=st.booleans(),
        trailing=st.booleans(),
        max_examples=max(3, ctx.settings.max_examples // 2),
    )


async def _chunked_roundtrip(ctx: Context, size: int, seed: int, float32: bool, trailing: bool) -> None:
    dtype = tensor_pb2.DTYPE_FLOAT32 if float32 and size % 4 == 0 else tensor_pb2.DTYPE_UINT8
    data = _payload(seed, size)
    what = f"an upload of {size} bytes with its digest in the {'last chunk' if trailing else 'header'}"
    async with await ctx.connect() as conn:
        info, got = await _round_trip(ctx, conn, data, what, dtype=dtype, trailing=trailing)
    check(info.tensor.nbytes == size, f"SendObjectReply says nbytes={info.tensor.nbytes} for {size} bytes")
    check(info.tensor.sha256 == sha256(data), "SendObjectReply's sha256 is not the payload's")
    check(got.dtype == dtype, f"an uploaded {dtype_name(dtype)} tensor came back as {dtype_name(got.dtype)}")


@case(
    "objects/7.3.4/out-of-order-chunks-rejected",
    rule="The first chunk MUST have offset 0, and each later chunk's offset MUST equal the previous chunk's "
    "offset plus the length of its data (§7.3.8: otherwise INVALID_ARGUMENT, partial data discarded).",
    needs=CHUNKED,
)
async def _case_out_of_order(ctx: Context) -> None:
    cb = ctx.limits.chunk_bytes
    data = _payload(4, 2 * cb + 17)
    first, second, third = chunk_list(data, [cb, cb, 17])
    what = f"an upload with its chunks sent at offsets {cb}, 0, {2 * cb}"
    await _refused_upload(ctx, data, [second, first, third], what)


@case(
    "objects/7.3.32/interleaved-uploads",
    rule="An upload's chunks MAY be interleaved with other envelopes of the connection: other requests, "
    "pings, cancels, and the chunks of other uploads. A server MUST assemble each upload from the chunks "
    "that carry its request_id.",
    needs=CHUNKED,
)
async def _case_interleaved_uploads(ctx: Context) -> None:
    cb = ctx.limits.chunk_bytes
    payloads = [_payload(32, 2 * cb + 5), _payload(33, 3 * cb + 1)]
    ids = [ctx.unique("mix"), ctx.unique("mix")]
    async with await ctx.connect() as conn:
        rids = [await announce(conn, object_id, data) for object_id, data in zip(ids, payloads, strict=True)]
        queues = [
            [make_envelope(rid, "chunk", c) for c in chunk_list(data, chunk_sizes(len(data), cb))]
            for rid, data in zip(rids, payloads, strict=True)
        ]
        # A0 B0, a ping, A1 B1, a listing, A2 B2, then B3: every kind of envelope between the chunks
        step = 0
        while any(queues):
            for queue in queues:
                if queue:
                    await conn.send(queue.pop(0))
            if step == 0:
                await conn.ping(b"between chunks")
            elif step == 1:
                await conn.expect("list_objects", objects_pb2.ListObjectsRequest())
            step += 1
        for object_id, rid, data in zip(ids, rids, payloads, strict=True):
            reply = await conn.reply(rid)
            if reply.kind != "send_object_reply":
                fail(
                    f"an upload of {len(data)} bytes interleaved with another was answered with "
                    f"{reply.describe()}"
                )
            got = await download(conn, object_id, chunk_bytes=cb)
            check(
                got.data == data,
                f"an upload of {len(data)} bytes interleaved with another came back "
                "different (its chunks were mixed with the other upload's)",
            )
            await conn.expect("delete_object", objects_pb2.DeleteObjectRequest(id=object_id))


@case(
    "objects/7.3.5/chunk-boundaries",
    rule="Each chunk's data MUST be at least 1 byte and at most limits.chunk_bytes bytes long; only the last "
    "chunk may be shorter than chunk_bytes (§7.3.8: a chunk that breaks this ends the upload with "
    "INVALID_ARGUMENT and the partial data is discarded).",
    needs=CHUNKED,
)
def _case_chunk_boundaries(ctx: Context) -> None:
    cb = ctx.limits.chunk_bytes
    if cb < 2 or cb > (4 << 20):
        skip(f"chunk_bytes={cb} is outside what this case splits (2 bytes to 4 MiB)")
    check_examples(
        ctx,
        _chunk_boundaries,
        sizes=st.lists(st.one_of(st.just(cb), st.integers(1, cb)), min_size=2, max_size=4),
        seed=st.integers(0, 1 << 16),
        examples=[{"sizes": [cb - 1, 11], "seed": 0}, {"sizes": [cb, cb, 5], "seed": 0}],
        max_examples=max(4, ctx.settings.max_examples // 2),
    )


async def _chunk_boundaries(ctx: Context, sizes: list[int], seed: int) -> None:
    cb = ctx.limits.chunk_bytes
    data = _payload(seed, sum(sizes))
    if all(size == cb for size in sizes[:-1]):
        async with await ctx.connect() as conn:
            await _round_trip(ctx, conn, data, f"an upload in chunks of {sizes} bytes", sizes=sizes)
        return
    what = f"an upload in chunks of {sizes} bytes (chunk_bytes {cb}; only the last may be shorter)"
    await _refused_upload(ctx, data, chunk_list(data, sizes), what)


_MUTATIONS = ["gap", "overlap", "wrong-total", "empty", "too-big", "past-end", "first-not-zero"]


@case(
    "objects/7.3.8/bad-chunk-ends-upload",
    rule="A chunk that breaks §7.3.4 to §7.3.7 MUST end the upload with an Error with code INVALID_ARGUMENT "
    "and the upload's request_id; the partial data is discarded (§7.3.12: later chunks are ignored).",
    needs=CHUNKED,
)
def _case_bad_chunk(ctx: Context) -> None:
    check_examples(
        ctx,
        _bad_chunk,
        how=st.sampled_from(_MUTATIONS),
        extra=st.integers(2, 300),
        seed=st.integers(0, 1 << 16),
        max_examples=max(len(_MUTATIONS), ctx.settings.max_examples),
    )


async def _bad_chunk(ctx: Context, how: str, extra: int, seed: int) -> None:
    cb = ctx.limits.chunk_bytes
    data = _payload(seed, cb + extra)
    chunks = [(0, data[:cb], len(data)), (cb, data[cb:], len(data))]
    if how == "gap":
        chunks[1] = (cb + 1, data[cb + 1 :], len(data))
    elif how == "overlap":
        chunks[1] = (cb - 1, data[cb - 1 :], len(data))
    elif how == "wrong-total":
        chunks[1] = (cb, data[cb:], len(data) + 1)
    elif how == "empty":
        chunks.insert(1, (cb, b"", len(data)))
    elif how == "too-big":
        chunks = [(0, data[: cb + 1], len(data)), (cb + 1, data[cb + 1 :], len(data))]
    elif how == "past-end":
        chunks[1] = (cb, data[cb:] + b"\x00", len(data))
    elif how == "first-not-zero":
        chunks = [(1, data[1 : cb + 1], len(data)), (cb + 1, data[cb + 1 :], len(data))]
    sent = [tensor_pb2.Chunk(offset=offset, data=piece, total_bytes=total) for offset, piece, total in chunks]
    await _refused_upload(ctx, data, sent, f"an upload with a {how} chunk")


@case(
    "objects/7.3.10/digest-mismatch-data-loss",
    rule="When the last byte has arrived, the server MUST compute the SHA-256 of the assembled payload; "
    "if it equals the upload's digest ... the server stores the tensor ...; otherwise it MUST answer with an "
    "Error with code DATA_LOSS and store nothing.",
    needs=CHUNKED,
)
async def _case_digest_mismatch(ctx: Context) -> None:
    data = _payload(6, ctx.limits.chunk_bytes + 5)
    wrong = bytearray(sha256(data))
    wrong[0] ^= 1
    chunks = chunk_list(data, chunk_sizes(len(data), ctx.limits.chunk_bytes))
    what = "an upload whose payload does not match its sha256"
    await _refused_upload(ctx, data, chunks, what, digest=bytes(wrong), code=ErrorCode.ERROR_CODE_DATA_LOSS)


@case(
    "objects/7.3.26/trailing-digest",
    rule="A client MAY leave chunked.sha256 empty and put the SHA-256 of the whole payload in the sha256 "
    "field of the upload's last chunk instead. Servers that advertise chunked MUST accept both forms and "
    "check the digest as §7.3.10 says.",
    needs=CHUNKED,
)
async def _case_trailing_digest(ctx: Context) -> None:
    cb = ctx.limits.chunk_bytes
    data = _payload(8, 2 * cb + 3)
    conn = await ctx.connect()
    info, _ = await _round_trip(ctx, conn, data, "an upload with its digest in the last chunk", trailing=True)
    wrong_sha = "the SendObjectReply of an upload with a trailing digest does not give the payload's SHA-256"
    check(info.tensor.sha256 == sha256(data), wrong_sha)
    wrong = bytearray(sha256(data))
    wrong[-1] ^= 0x80
    sizes = chunk_sizes(len(data), cb)
    chunks = chunk_list(data, sizes, digests=[b""] * (len(sizes) - 1) + [bytes(wrong)])
    what = "an upload whose last chunk carries a wrong digest"
    await _refused_upload(ctx, data, chunks, what, digest=b"", code=ErrorCode.ERROR_CODE_DATA_LOSS)


#: Misplaced digests: what each means, then where the digest goes in the header and in the two chunks
#: ("" nowhere, "full" the payload's SHA-256, "short" its first 31 bytes).
_MISPLACED = {
    "none": ("no digest in the header nor in the last chunk", "", ("", "")),
    "early": ("on the first chunk as well as the last", "", ("full", "full")),
    "twice": ("in the header and in the last chunk", "full", ("", "full")),
    "short": ("31 bytes in the last chunk", "", ("", "short")),
}


@case(
    "objects/7.3.27/misplaced-digest",
    rule="A chunk's sha256 MUST be empty except on the last chunk of an upload whose header left "
    "chunked.sha256 empty, where it MUST be 32 bytes. A chunk that breaks this ends the upload as §7.3.8 "
    "says: INVALID_ARGUMENT, partial data discarded.",
    needs=CHUNKED,
)
def _case_misplaced_digest(ctx: Context) -> None:
    check_examples(
        ctx,
        _misplaced_digest,
        how=st.sampled_from(sorted(_MISPLACED)),
        extra=st.integers(1, 300),
        seed=st.integers(0, 1 << 16),
        max_examples=max(len(_MISPLACED), ctx.settings.max_examples // 2),
    )


async def _misplaced_digest(ctx: Context, how: str, extra: int, seed: int) -> None:
    cb = ctx.limits.chunk_bytes
    data = _payload(seed, cb + extra)
    meaning, header, digests = _MISPLACED[how]
    digest = {"": b"", "full": sha256(data), "short": sha256(data)[:31]}
    chunks = chunk_list(data, [cb, extra], digests=[digest[d] for d in digests])
    await _refused_upload(
        ctx, data, chunks, f"an upload with its digest {how!r} ({meaning})", digest=digest[header]
    )


@case(
    "objects/7.3.28/empty-upload-without-digest",
    rule="An upload with nbytes 0 and an empty chunked.sha256 is completed at once (§7.3.11): there is no "
    "chunk to carry a digest, and nothing to check.",
    needs=CHUNKED,
)
async def _case_empty_without_digest(ctx: Context) -> None:
    await _empty_upload(ctx, tensor_pb2.DTYPE_UINT8, [0], b"", "an empty upload with no digest")


def _bad_info(ctx: Context, conn: Connection) -> list[Probe]:
    full = sha256(bytes(16))
    return [
        Probe(
            f"an upload of [4] float32 announced with {what}",
            "send_object",
            upload_header(
                ctx.unique("info"), dtype=tensor_pb2.DTYPE_FLOAT32, shape=[4], nbytes=nbytes, digest=digest
            ),
        )
        for what, nbytes, digest in (
            ("nbytes 15", 15, sha256(bytes(15))),
            ("a 31-byte sha256", 16, full[:31]),
            ("a 33-byte sha256", 16, full + b"\x00"),
        )
    ]


async def _refused_early(ctx: Context, conn: Connection) -> list[Probe]:
    object_id = ctx.unique("early")
    await store(conn, object_id, float_tensor([1.0]))
    probes = [
        Probe(
            "an upload announced for an existing id",
            "send_object",
            uint8_header(object_id, 10, sha256(bytes(10))),
            EXISTS,
        ),
        Probe(
            "an upload announced with an id of 257 bytes",
            "send_object",
            uint8_header("x" * 257, 10, sha256(bytes(10))),
        ),
    ]
    quota = ctx.limits.max_object_bytes
    if quota:
        header = uint8_header(ctx.unique("big"), quota + 1, sha256(b""))
        what = f"an upload announced with max_object_bytes + 1 = {quota + 1} bytes"
        probes.append(Probe(what, "send_object", header, (ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED,)))
    return probes


register(
    Row(
        "objects/7.3.2/bad-chunked-info",
        rule="chunked.nbytes MUST equal product(shape) × width(dtype), and chunked.sha256 MUST be 32 bytes "
        "or empty; otherwise the server MUST end the upload with an Error with code INVALID_ARGUMENT.",
        probes=_bad_info,
    ),
    Row(
        "objects/7.3.9/refused-before-chunks",
        rule="The server checks the object id (§9.9), overwrite (§9.2) and the quota (§9.2) when the upload "
        "is announced, and MUST answer ALREADY_EXISTS, INVALID_ARGUMENT or RESOURCE_EXHAUSTED before any "
        "chunk is needed when one of them fails.",
        probes=_refused_early,
    ),
    needs=CHUNKED,
)


@case(
    "objects/7.3.11/empty-upload",
    rule="An upload with nbytes 0 needs no chunks: the server completes it immediately on the send_object "
    "request.",
    needs=CHUNKED,
)
async def _case_empty_upload(ctx: Context) -> None:
    await _empty_upload(
        ctx, tensor_pb2.DTYPE_FLOAT32, [0, 4], EMPTY_SHA256, "an empty upload of shape [0, 4]"
    )


async def _empty_upload(ctx: Context, dtype: int, shape: list[int], digest: bytes, what: str) -> None:
    """An upload with nbytes 0 is stored on its header alone and reads back empty, with its shape."""
    async with await ctx.connect() as conn:
        object_id = ctx.unique("empty")
        reply = await conn.call(
            "send_object", upload_header(object_id, dtype=dtype, shape=shape, nbytes=0, digest=digest)
        )
        if reply.kind != "send_object_reply":
            fail(f"{what} was answered with {reply.describe()}")
        stored = list(reply.envelope.send_object_reply.info.tensor.shape)
        check(stored == shape, f"{what} was stored with shape {stored}")
        got = await download(conn, object_id)
        check(got.data == b"" and got.shape == shape, f"{what} reads back as something else")
        await conn.expect("delete_object", objects_pb2.DeleteObjectRequest(id=object_id))


@case(
    "objects/7.3.12/stray-chunks-ignored",
    rule="A server MUST ignore chunk envelopes whose request_id names no upload in progress.",
    needs=OBJ,
)
async def _case_stray_chunks(ctx: Context) -> None:
    conn = await ctx.connect()
    for rid in (5, 6, 1 << 50):
        chunk = tensor_pb2.Chunk(offset=0, data=b"abc", total_bytes=3)
        await conn.send(make_envelope(rid, "chunk", chunk))
    await conn.ping()
    for frame in conn.pending_frames():
        fail(f"chunks of no upload were answered with {frame.describe()}")


@case(
    "objects/7.3.16/chunked-download",
    rule="In the chunked form the server sends a sequence of chunk envelopes with the get_object request's "
    "request_id, following the offset, size and total_bytes rules of §7.3.4 to §7.3.7, and then the "
    "terminal GetObjectReply with tensor unset and info.tensor.sha256 set to the SHA-256 of the whole "
    "payload.",
    needs=CHUNKED,
)
async def _case_chunked_download(ctx: Context) -> None:
    data = _payload(7, 2 * ctx.limits.chunk_bytes + 1000)
    await _round_trip(ctx, await ctx.connect(), data, "a payload of 2 × chunk_bytes + 1000 bytes")


@case(
    "objects/7.3.18/chunked-above-chunk-bytes",
    rule="The server SHOULD use the chunked form whenever nbytes > chunk_bytes.",
    level=Level.SHOULD,
    needs=CHUNKED,
)
async def _case_chunked_when_large(ctx: Context) -> None:
    cb = ctx.limits.chunk_bytes
    _, got = await _round_trip(ctx, await ctx.connect(), _payload(8, cb + 1), "a payload of chunk_bytes + 1")
    check(got.chunked, f"an object of chunk_bytes + 1 = {cb + 1} bytes came inline")


@case(
    "objects/7.3.17/chunked-above-frame-limit",
    rule="The server MUST use the chunked form when the inline reply envelope would exceed the client's "
    "Hello.max_frame_bytes (when non-zero) or the server's own limits.max_frame_bytes.",
    needs=CHUNKED,
)
async def _case_chunked_above_frame(ctx: Context) -> None:
    size = ctx.limits.max_frame_bytes + 1
    quota = ctx.limits.max_object_bytes
    if size > (64 << 20) or (quota and size > quota):
        skip(f"an object above max_frame_bytes ({size} bytes) is too large to test here")
    what = "a payload of max_frame_bytes + 1"
    _, got = await _round_trip(ctx, await ctx.connect(), _payload(9, size), what)
    check(got.chunked, "an object larger than max_frame_bytes came inline")


@case(
    "objects/7.3.19/chunks-fit-client-frame-limit",
    rule="When the client's Hello.max_frame_bytes is non-zero, every chunk envelope MUST fit within it; the "
    "server sends smaller chunks when needed (§3.4.4: it MUST NOT send a larger message).",
    needs=CHUNKED,
)
async def _case_chunks_fit_client(ctx: Context) -> None:
    limit = 16384
    size = max(3 * limit, min(ctx.limits.chunk_bytes + 1, 1 << 20))
    sender, conn = await ctx.connect(), await ctx.connect(max_frame_bytes=limit)
    _, got = await _round_trip(ctx, sender, _payload(10, size), f"a payload of {size} bytes", reader=conn)
    big = [f for f in conn.frames if len(f.data) > limit]
    if big:
        fail(
            f"with Hello.max_frame_bytes={limit} the server sent a frame of {len(big[0].data)} bytes "
            f"({big[0].describe()})"
        )
    check(got.chunked, f"an object of {size} bytes came inline to a client accepting {limit}-byte frames")
