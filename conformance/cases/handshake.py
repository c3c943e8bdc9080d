"""Sections 2 and 4: transport, Hello and Welcome, versions, capabilities, and the handshake's edges."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from fedproto_pb.v1 import objects_pb2, session_pb2
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import check, fail
from ..context import Context
from ..registry import Level, case
from ..spec import CAPABILITIES, PROTOCOL_VERSION, REQUESTS, SERVER_ONLY_BODIES
from ..strategies import field_bytes, unknown_envelope_fields
from ..wire import make_envelope
from ._common import call_request, expect_call

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []


CALLS = ("calls",)


async def _supported_versions(ctx: Context) -> set[int]:
    """The versions the server speaks, from the ``supported`` detail of an UNSUPPORTED_VERSION error."""
    conn = await ctx.open()
    reply = await conn.hello(token=ctx.settings.token, versions=[])
    error = reply.expect_error(ErrorCode.ERROR_CODE_UNSUPPORTED_VERSION)
    supported = error.details.get("supported", "")
    if not re.fullmatch(r"\d+(,\d+)*", supported):
        fail(f'UNSUPPORTED_VERSION carries details supported={supported!r}, expected e.g. "1" or "1,2"')
    return {int(v) for v in supported.split(",")}


@case(
    "handshake/4.1.3/welcome-answers-hello",
    rule="On a successful handshake the server MUST answer with an envelope whose body is welcome and whose "
    "request_id is the Hello's.",
)
def _case_welcome(ctx: Context) -> None:
    @given(rid=st.integers(1, (1 << 64) - 1))
    @example(rid=1)
    @example(rid=(1 << 64) - 1)
    def check_id(rid: int) -> None:
        ctx.run(_welcome(ctx, rid))

    ctx.hypothesis(check_id, max_examples=max(3, ctx.settings.max_examples // 3))


async def _welcome(ctx: Context, rid: int) -> None:
    async with await ctx.open() as conn:
        reply = await conn.hello(token=ctx.settings.token, request_id=rid)
        reply.expect("welcome")


@case(
    "handshake/4.1.4/hello-id-zero",
    rule="A Hello with request_id 0 MUST be answered with an Error with code INVALID_ARGUMENT and "
    "request_id 0, after which the server MUST close the connection with code 1002.",
)
async def _case_hello_id_zero(ctx: Context) -> None:
    conn = await ctx.open()
    await conn.request("hello", session_pb2.Hello(versions=[1], token=ctx.settings.token), request_id=0)
    await conn.connection_error({ErrorCode.ERROR_CODE_INVALID_ARGUMENT})
    await conn.expect_close({1002})


@case(
    "handshake/4.1.7/requests-pipelined-after-hello",
    rule="Envelopes that arrive after a Hello but before the server has answered it MUST be treated as "
    "arriving after the handshake's outcome: processed normally after a Welcome.",
)
async def _case_pipelined_after_hello(ctx: Context) -> None:
    conn = await ctx.open()
    hello = session_pb2.Hello(versions=[1], token=ctx.settings.token)
    await conn.send(make_envelope(1, "hello", hello))
    await conn.send(make_envelope(2, "ping", session_pb2.Ping(payload=b"early")))
    (await conn.reply(1)).expect("welcome")
    pong = (await conn.reply(2)).expect("pong")
    check(pong.payload == b"early", "the Pong of a Ping sent right after the Hello lost its payload")


@case(
    "handshake/4.1.7/discarded-after-failed-handshake",
    rule="Envelopes that arrive after a Hello but before the server has answered it MUST be treated as "
    "arriving after the handshake's outcome: ... discarded after a failed handshake.",
)
async def _case_discarded_after_failed(ctx: Context) -> None:
    conn = await ctx.open()
    await conn.send(make_envelope(1, "hello", session_pb2.Hello(versions=[987654], token=ctx.settings.token)))
    await conn.send(make_envelope(2, "ping", session_pb2.Ping(payload=b"late")))
    (await conn.reply(1)).expect_error(ErrorCode.ERROR_CODE_UNSUPPORTED_VERSION)
    await conn.expect_close({1002})
    stray = conn.frames_with_id(2)
    if stray:
        fail(f"a Ping sent after a failed Hello got {stray[0].describe()}; it must be discarded")


@case(
    "handshake/4.2.2/highest-common-version",
    rule="The server MUST choose the highest version that appears in Hello.versions and that it also "
    "speaks, and MUST put it in Welcome.version.",
)
def _case_highest_version(ctx: Context) -> None:
    supported = ctx.run(_supported_versions(ctx))

    @given(
        versions=st.lists(st.integers(0, 9), max_size=5)
        .map(lambda v: [*v, PROTOCOL_VERSION])
        .flatmap(st.permutations)
    )
    @example(versions=[1])
    def check_versions(versions: list[int]) -> None:
        ctx.run(_highest(ctx, versions, supported))

    ctx.hypothesis(check_versions, max_examples=max(3, ctx.settings.max_examples // 2))


async def _highest(ctx: Context, versions: list[int], supported: set[int]) -> None:
    async with await ctx.open() as conn:
        reply = await conn.hello(token=ctx.settings.token, versions=versions)
        welcome = reply.expect("welcome")
        expected = max(set(versions) & supported)
        check(
            welcome.version == expected,
            f"offered versions {versions}, the server speaks {sorted(supported)}, it chose {welcome.version} "
            f"instead of {expected}",
        )


@case(
    "handshake/4.2.3/no-common-version",
    rule="When no version is in common (including when Hello.versions is empty), the server MUST answer "
    "with an Error with code UNSUPPORTED_VERSION and the Hello's request_id.",
)
async def _case_no_common_version(ctx: Context) -> None:
    supported = await _supported_versions(ctx)
    other = [v for v in (0, 7, 4000, 1 << 31) if v not in supported]
    conn = await ctx.open()
    reply = await conn.hello(token=ctx.settings.token, versions=other, request_id=31)
    reply.expect_error(ErrorCode.ERROR_CODE_UNSUPPORTED_VERSION)


@case(
    "handshake/4.2.4/supported-versions-detail",
    rule="That Error MUST carry the details key supported whose value is the comma-separated list of "
    "versions the server speaks, in decimal, without spaces.",
)
async def _case_supported_detail(ctx: Context) -> None:
    supported = await _supported_versions(ctx)
    check(
        PROTOCOL_VERSION in supported,
        f"the server says it supports {sorted(supported)}, but it spoke version 1",
    )


@case(
    "handshake/4.2.5/unsupported-version-closes-1002",
    rule="After an UNSUPPORTED_VERSION error the server MUST close the connection with code 1002.",
)
async def _case_unsupported_closes(ctx: Context) -> None:
    conn = await ctx.open()
    (await conn.hello(token=ctx.settings.token, versions=[])).expect_error(
        ErrorCode.ERROR_CODE_UNSUPPORTED_VERSION
    )
    await conn.expect_close({1002})


_BEFORE_HELLO = st.one_of(
    st.sampled_from(sorted(REQUESTS)).map(lambda k: make_envelope(9, k).SerializeToString()),
    st.sampled_from(["cancel", "goodbye", "chunk", *SERVER_ONLY_BODIES]).map(
        lambda k: make_envelope(9, k).SerializeToString()
    ),
    st.just(Envelope(request_id=9).SerializeToString()),
    unknown_envelope_fields().map(lambda extra: field_bytes(1, 0, 9) + extra),
)


@case(
    "handshake/4.4.1/request-before-hello",
    rule="Before a successful handshake, a server that receives an envelope whose body is not hello MUST "
    "answer with an Error with code FAILED_PRECONDITION and that envelope's request_id (§4.4.3: also for no "
    "body or an unknown body).",
)
def _case_before_hello(ctx: Context) -> None:
    @given(data=_BEFORE_HELLO)
    @example(data=make_envelope(9, "count_objects", objects_pb2.CountObjectsRequest()).SerializeToString())
    def check_frame(data: bytes) -> None:
        ctx.run(_before_hello(ctx, data))

    ctx.hypothesis(check_frame)


async def _before_hello(ctx: Context, data: bytes) -> None:
    async with await ctx.open() as conn:
        await conn.send_raw(data)
        (await conn.reply(9)).expect_error(ErrorCode.ERROR_CODE_FAILED_PRECONDITION)
        await conn.expect_close({1002})


@case(
    "handshake/4.4.2/request-before-hello-closes-1002",
    rule="After such an error (a request before Hello) the server MUST close the connection with code 1002.",
)
async def _case_before_hello_closes(ctx: Context) -> None:
    conn = await ctx.open()
    await conn.request("ping", session_pb2.Ping(), request_id=4)
    (await conn.reply(4)).expect_error(ErrorCode.ERROR_CODE_FAILED_PRECONDITION)
    await conn.expect_close({1002})


@case(
    "handshake/4.4.4/second-hello",
    rule="A second hello after a successful handshake MUST be answered with an Error with code "
    "FAILED_PRECONDITION and its request_id; the connection stays open and the first handshake's results "
    "remain in force.",
)
async def _case_second_hello(ctx: Context) -> None:
    conn = await ctx.connect()
    reply = await conn.hello(token=ctx.settings.token + "-other", versions=[1], max_frame_bytes=100)
    reply.expect_error(ErrorCode.ERROR_CODE_FAILED_PRECONDITION)
    await conn.ping(b"x" * 300)  # the second Hello's max_frame_bytes=100 is not in force
    if ctx.has("calls"):
        who = await expect_call(conn, "whoami")
        assert conn.welcome is not None
        check(
            who.string_value == conn.welcome.identity,
            f"after a second Hello whoami() says {who.string_value!r}, the Welcome said "
            f"{conn.welcome.identity!r}",
        )


@case(
    "handshake/4.4.5/second-hello-request-id-checks",
    rule="A second hello is checked like every request first (§5.7): with request_id 0 it is answered as "
    "§5.1.5 says (INVALID_ARGUMENT, request_id 0), and with the id of a request in flight as §5.2 says "
    "(INVALID_ARGUMENT, request_id 0, details request_id); only then does §4.4.4 apply. In every case the "
    "connection stays open.",
    needs=CALLS,
)
async def _case_second_hello_ids(ctx: Context) -> None:
    conn = await ctx.connect()
    again = session_pb2.Hello(versions=[PROTOCOL_VERSION], token=ctx.settings.token)
    await conn.send(make_envelope(0, "hello", again))
    await conn.connection_error({ErrorCode.ERROR_CODE_INVALID_ARGUMENT})
    rid = 77
    await conn.request("call", call_request("sleep", 0.3), request_id=rid)
    await conn.send(make_envelope(rid, "hello", again))
    error = await conn.connection_error({ErrorCode.ERROR_CODE_INVALID_ARGUMENT})
    check(
        error.details.get("request_id") == str(rid),
        f"the second Hello with an id in flight got details {dict(error.details)}, expected "
        f"{{'request_id': '{rid}'}}",
    )
    (await conn.reply(rid)).expect("call_reply")  # the request in flight is unaffected
    await conn.ping(b"still open")


@case(
    "handshake/4.6.3/small-client-frame-limit-counts-as-1024",
    rule="A server that receives a smaller non-zero value [than 1024 in Hello.max_frame_bytes] MUST treat it "
    "as 1024 wherever this document refers to Hello.max_frame_bytes.",
)
async def _case_small_client_frame_limit(ctx: Context) -> None:
    conn = await ctx.connect(max_frame_bytes=100)
    # a Pong of about 520 bytes fits 1024: it is sent, not replaced by RESOURCE_EXHAUSTED (§14.2.4)
    await conn.ping(b"p" * 500)
    rid = await conn.request("ping", session_pb2.Ping(payload=b"p" * 2000))
    (await conn.reply(rid)).expect_error(ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED)
    big = [f for f in conn.frames if len(f.data) > 1024]
    if big:
        size = len(big[0].data)
        fail(f"with Hello.max_frame_bytes=100 the server sent {big[0].describe()} of {size} bytes")


@case(
    "handshake/4.6.1/welcome-sets-limits",
    rule="The Welcome carries ... limits: the limits in force on this connection (§14). The server MUST set "
    "it.",
)
async def _case_welcome_limits(ctx: Context) -> None:
    conn = await ctx.open()
    welcome = (await conn.hello(token=ctx.settings.token)).expect("welcome")
    check(welcome.HasField("limits"), "the Welcome has no limits")
    check(
        welcome.version == PROTOCOL_VERSION,
        f"the Welcome says version {welcome.version} for a Hello offering [1]",
    )


@case(
    "handshake/4.3.4/capabilities-unique",
    rule="Capability strings are case-sensitive and appear at most once each.",
)
async def _case_capabilities_unique(ctx: Context) -> None:
    caps = list(ctx.welcome.capabilities)
    dupes = sorted({c for c in caps if caps.count(c) > 1})
    check(not dupes, f"the Welcome lists {dupes} more than once")
    for cap in caps:
        if cap.lower() in CAPABILITIES and cap not in CAPABILITIES:
            fail(f"the Welcome lists {cap!r}; capability strings are case-sensitive ({cap.lower()!r})")


@case(
    "handshake/18.0.1/conformance-capability",
    rule="A server in the conformance profile MUST include conformance in Welcome.capabilities.",
)
async def _case_conformance_capability(ctx: Context) -> None:
    check(ctx.has("conformance"), f"capabilities are {list(ctx.welcome.capabilities)}, without 'conformance'")


@case(
    "handshake/18.0.2/datasets-and-calls",
    rule="It MUST advertise datasets and calls, and SHOULD advertise every other capability of §4.3 it "
    "implements.",
)
async def _case_datasets_and_calls(ctx: Context) -> None:
    missing = [c for c in ("datasets", "calls") if not ctx.has(c)]
    check(not missing, f"the conformance profile does not advertise {missing}")


@case(
    "handshake/2.2.3/no-subprotocol-accepted",
    rule="A server MUST NOT refuse a client that offers no subprotocol.",
)
async def _case_no_subprotocol(ctx: Context) -> None:
    conn = await ctx.open(subprotocols=None)
    await conn.handshake(token=ctx.settings.token)


@case(
    "handshake/2.2.2/subprotocol-selected",
    rule="A server SHOULD select fedproto.v1 when the client offers it.",
    level=Level.SHOULD,
)
async def _case_subprotocol_selected(ctx: Context) -> None:
    conn = await ctx.open()
    check(conn.ws.subprotocol == "fedproto.v1", f"the server selected subprotocol {conn.ws.subprotocol!r}")


@case(
    "handshake/2.3.1/no-compression",
    rule="WebSocket compression (permessage-deflate, RFC 7692) SHOULD NOT be negotiated: ... servers SHOULD "
    "NOT accept it.",
    level=Level.SHOULD,
)
async def _case_no_compression(ctx: Context) -> None:
    conn = await ctx.open(compression="deflate")
    names = [type(e).__name__ for e in conn.ws.protocol.extensions]
    check(not names, f"the server accepted the offered compression extension ({', '.join(names)})")
    await conn.handshake(token=ctx.settings.token)
