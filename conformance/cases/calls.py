"""Sections 8, 11 and 18.2: values, custom calls, argument binding and the conformance hooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from fedproto_pb.v1 import calls_pb2, tensor_pb2, value_pb2
from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import check, fail, skip
from ..context import Context
from ..registry import case
from ..spec import code_name
from ..strategies import field_bytes, invalid_tensors, values
from ..values import make_tensor, to_value, value_diff, value_list, value_map
from ..wire import EVENT_BODIES, Connection, Frame, Reply
from ._common import Stopwatch, call, call_request, check_examples, expect_call, refused
from ._table import Probe, Row, Then, register

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []

CALLS = ("calls",)
PROFILE_METHODS = {
    "echo": ([("args", "any", False, "var_positional"), ("kwargs", "any", False, "var_keyword")], "map"),
    "fail": (
        [
            ("code", "int", True, "positional_or_keyword"),
            ("message", "string", False, "positional_or_keyword"),
        ],
        "null",
    ),
    "sleep": ([("seconds", "double", True, "positional_or_keyword")], "double"),
    "notify": (
        [
            ("topic", "string", True, "positional_or_keyword"),
            ("payload", "any", True, "positional_or_keyword"),
        ],
        "null",
    ),
    "whoami": ([], "string"),
}


async def _methods(ctx: Context) -> list[calls_pb2.MethodInfo]:
    conn = await ctx.connect()
    return list((await conn.expect("list_methods", calls_pb2.ListMethodsRequest())).methods)


def _echo_of(*args: value_pb2.Value) -> calls_pb2.CallRequest:
    return calls_pb2.CallRequest(method="echo", args=args)


async def _echoes(
    conn: Connection, args: Sequence[value_pb2.Value], kwargs: Sequence[tuple[str, value_pb2.Value]] = ()
) -> None:
    """echo(*args, **kwargs) must return a map of exactly ``args`` and ``kwargs``, unchanged (§18.2.2)."""
    request = _echo_of(*args)
    for key, value in kwargs:
        request.kwargs.add(key=key).value.CopyFrom(value)
    result = (await conn.call("call", request)).expect("call_reply").result
    if result.WhichOneof("kind") != "map_value":
        fail(f"echo() returned a {result.WhichOneof('kind')}, expected a map")
    entries = {e.key: e.value for e in result.map_value.entries}
    keys = [e.key for e in result.map_value.entries]
    if sorted(keys) != ["args", "kwargs"]:
        fail(f"echo() returned a map with keys {keys}, expected exactly 'args' and 'kwargs'")
    diff = value_diff(value_list(args), entries["args"], "echo()['args']") or value_diff(
        value_map(kwargs), entries["kwargs"], "echo()['kwargs']"
    )
    if diff:
        fail(diff)


@case(
    "calls/11.6.1/methods-sorted",
    rule="list_methods returns ListMethodsReply.methods, a MethodInfo for every exposed method, sorted by "
    "name (byte-wise).",
    needs=CALLS,
)
async def _case_methods_sorted(ctx: Context) -> None:
    names = [m.name for m in await _methods(ctx)]
    check(
        names == sorted(names, key=lambda n: n.encode()), f"list_methods gives the names in the order {names}"
    )
    check(len(set(names)) == len(names), f"list_methods lists a name twice: {names}")


@case(
    "calls/18.2.1/profile-methods-listed",
    rule="The server MUST expose these methods, as listed by list_methods: echo, fail, sleep, notify, "
    "whoami (with the parameters, kinds and return types of the table).",
    needs=CALLS,
)
async def _case_profile_methods(ctx: Context) -> None:
    listed = {m.name: m for m in await _methods(ctx)}
    for name, (params, returns) in PROFILE_METHODS.items():
        method = listed.get(name)
        if method is None:
            fail(f"list_methods does not list {name!r}")
        got = [(p.name, p.type, p.required, p.kind) for p in method.parameters]
        check(got == params, f"{name}: parameters (name, type, required, kind) are {got}, expected {params}")
        check(method.returns == returns, f"{name}: returns {method.returns!r}, expected {returns!r}")


_KWARG_KEYS = st.text(max_size=8).filter(lambda k: k not in ("args", "kwargs"))


@case(
    "calls/18.2.2/echo-returns-arguments",
    rule="echo(*args, **kwargs) MUST return a map with exactly two entries, args (a list of the positional "
    "arguments) and kwargs (a map of the keyword arguments, in the order given), with every value "
    "unchanged.",
    needs=CALLS,
)
def _case_echo(ctx: Context) -> None:
    extremes = [to_value(2**63 - 1), to_value(-(2**63)), to_value(float("nan"))]
    check_examples(
        ctx,
        _echo,
        args=st.lists(values(), max_size=4),
        kwargs=st.lists(st.tuples(_KWARG_KEYS, values(8)), max_size=3, unique_by=lambda e: e[0]),
        examples=[{"args": extremes, "kwargs": [("z", to_value(1))]}],
    )


async def _echo(ctx: Context, args: list[value_pb2.Value], kwargs: list[tuple[str, value_pb2.Value]]) -> None:
    async with await ctx.connect() as conn:
        await _echoes(conn, args, kwargs)


@case(
    "calls/8.1.3/map-order-kept",
    rule="A MapValue preserves the order of its entries; receivers MUST keep that order when they convert a "
    "map to a native type and back.",
    needs=CALLS,
)
async def _case_map_order(ctx: Context) -> None:
    inner = to_value({"zebra": 1, "apple": 2, "mango": 3, "Apple": 4})
    await _echoes(await ctx.connect(), [inner], [("z", to_value(1)), ("a", to_value(2)), ("m", inner)])


@case(
    "calls/8.4.3/kinds-not-converted",
    rule="A receiver MUST NOT convert between kinds on its own (an int_value stays an integer, a "
    "double_value with an integral value stays a double).",
    needs=CALLS,
)
async def _case_kinds(ctx: Context) -> None:
    plain: list[Any] = [1, 1.0, True, 0, 0.0, False, "1", b"1", None, 2.0**53, -0.0, [], {}]
    await _echoes(await ctx.connect(), [to_value(x) for x in plain])


#: Names that look like a way into the server but name no exposed method.
_NOT_METHODS = [
    "",
    "__init__",
    "__class__",
    "echo.__globals__",
    "os.system",
    "eval",
    "ECHO",
    "echo ",
    "_private",
]


@case(
    "calls/11.1.3/unknown-method",
    rule="A call whose method names no exposed method MUST be answered with an Error with code "
    "METHOD_NOT_FOUND (§11.1.2: nothing else on the server is reachable by name).",
    needs=CALLS,
)
def _case_unknown_method(ctx: Context) -> None:
    listed = {m.name for m in ctx.run(_methods(ctx))}
    names = st.one_of(st.sampled_from(_NOT_METHODS), st.text(max_size=20)).filter(lambda n: n not in listed)
    check_examples(ctx, _unknown, name=names)


async def _unknown(ctx: Context, name: str) -> None:
    async with await ctx.connect() as conn:
        (await call(conn, name)).expect_error(ErrorCode.ERROR_CODE_METHOD_NOT_FOUND)


_BINDING_ERRORS: list[tuple[str, calls_pb2.CallRequest]] = [
    ("fail() without its required code", call_request("fail")),
    ("fail(1, 'm', 3): too many positional arguments", call_request("fail", 1, "m", 3)),
    ("fail(1, bogus=2): a keyword naming no parameter", call_request("fail", 1, bogus=2)),
    ("fail(1, code=1): a parameter given by position and keyword", call_request("fail", 1, code=1)),
    ("whoami(1): too many positional arguments", call_request("whoami", 1)),
    ("sleep(): a required parameter missing", call_request("sleep")),
    ("sleep(seconds=0, seconds=0): a keyword given twice", call_request("sleep", seconds=0)),
]
_BINDING_ERRORS[-1][1].kwargs.add(key="seconds").value.CopyFrom(to_value(0))


_WRONG_KINDS = [
    ("fail('1')", call_request("fail", "1")),
    ("fail(1.0)", call_request("fail", 1.0)),
    ("fail(True)", call_request("fail", True)),
    ("fail(1, message=5)", call_request("fail", 1, message=5)),
    ("sleep('0')", call_request("sleep", "0")),
    ("sleep(None)", call_request("sleep", None)),
    ("sleep(False)", call_request("sleep", False)),
    ("sleep([0])", call_request("sleep", [0])),
]


# -- calls that must be refused (or answered), as a table ------------------------------------------------

INVALID = ErrorCode.ERROR_CODE_INVALID_ARGUMENT
NOT_FOUND = ErrorCode.ERROR_CODE_NOT_FOUND


def _call(
    what: str, method: str, *args: Any, codes: tuple[int, ...] = (INVALID,), then: Then = None, **kwargs: Any
) -> Probe:
    """A call of ``method``: answered with one of ``codes``, or with its CallReply when ``codes`` is empty."""
    return Probe(what, "call", call_request(method, *args, **kwargs), codes, ok=not codes, then=then)


def _result(reply: Reply) -> value_pb2.Value:
    """The CallReply's result, which must be set (§11.5.1)."""
    body = reply.envelope.call_reply
    if not body.HasField("result"):
        fail(f"the call_reply for request {reply.request_id} has no result (section 11.5.1)")
    return body.result


def _message(expected: str) -> Then:
    """A check that the call's Error carries ``expected`` as its message."""

    async def then(conn: Connection, reply: Reply) -> None:
        message = reply.envelope.error.message
        check(message == expected, f"the call ended with message {message!r}, expected {expected!r}")

    return then


async def _nothing_pushed(conn: Connection, reply: Reply) -> None:
    await conn.ping()
    if any(f.kind == "notification" for f in conn.frames):
        fail("notify('topic-x', 1, 2) was refused but still pushed a notification: the method ran")


async def _returns_zero(conn: Connection, reply: Reply) -> None:
    result = _result(reply)
    check(
        result.WhichOneof("kind") == "double_value" and result.double_value == 0.0,
        f"sleep(0) with an int returned {result}, expected the double 0.0",
    )


async def _is_identity(conn: Connection, reply: Reply) -> None:
    result = _result(reply)
    identity = conn.welcome.identity if conn.welcome is not None else ""
    check(
        result.WhichOneof("kind") == "string_value" and result.string_value == identity,
        f"whoami() returned {result}, the Welcome's identity is {identity!r}",
    )


_FAIL_EVERY_CODE = [
    _call(f"fail({code}, {message!r})", "fail", code, message, codes=(code,), then=_message(message))
    for code, message in ((c, f"failing with {code_name(c)} — ünïcode") for c in range(1, 17))
]

_SLEEP_OUT_OF_RANGE = [
    Probe(f"sleep({seconds})", "call", call_request("sleep", seconds), deadline_ms=3000)
    for seconds in (-0.001, -5.0, 60.001, 1e9, float("inf"))
]


register(
    Row(
        "calls/11.2.2/binding-errors",
        rule="The server MUST answer INVALID_ARGUMENT, without running the method, when: there are too many "
        "or too few positional arguments; a required parameter is not given; a keyword names no parameter; a "
        "keyword is given twice in kwargs; a parameter is given both by position and by keyword.",
        probes=[Probe(what, "call", request) for what, request in _BINDING_ERRORS],
    ),
    Row(
        "calls/11.2.2/binding-error-does-not-run",
        rule="The server MUST answer INVALID_ARGUMENT, without running the method, when ... there are too "
        "many positional arguments.",
        probes=[_call("notify('topic-x', 1, 2)", "notify", "topic-x", 1, 2, then=_nothing_pushed)],
        needs=(*CALLS, "notifications"),
    ),
    Row(
        "calls/11.2.3/kind-mismatch",
        rule="The server MUST answer INVALID_ARGUMENT when a value's kind does not match the declared type "
        "of the parameter it binds to.",
        probes=[Probe(what, "call", request) for what, request in _WRONG_KINDS],
    ),
    Row(
        "calls/11.2.5/int-accepted-for-double",
        rule="A parameter of type double MUST also accept an int_value (converted to the nearest double).",
        probes=[_call("sleep(0) with an int", "sleep", 0, codes=(), then=_returns_zero)],
    ),
    Row(
        "calls/11.2.6/default-used",
        rule="A parameter's default is used when the parameter is not given.",
        probes=[_call("fail(5)", "fail", NOT_FOUND, codes=(NOT_FOUND,), then=_message(""))],
    ),
    Row(
        "calls/18.2.3/fail-every-code",
        rule="fail(code, message) MUST end the call with an Error whose code is code and whose message is "
        "message, for every ErrorCode value from 1 to 16.",
        probes=_FAIL_EVERY_CODE,
    ),
    Row(
        "calls/18.2.4/fail-code-out-of-range",
        rule="fail with a code outside 1..16 MUST be answered with INVALID_ARGUMENT.",
        probes=[_call(f"fail({code})", "fail", code) for code in (0, 17, -1, 1 << 40, -(1 << 63))],
    ),
    Row(
        "calls/18.2.6/sleep-out-of-range",
        rule="sleep with seconds below 0 or above 60 MUST be answered with INVALID_ARGUMENT.",
        probes=_SLEEP_OUT_OF_RANGE,
    ),
    needs=CALLS,
)


@case(
    "calls/18.2.5/sleep-waits-and-returns",
    rule="sleep(seconds) MUST wait seconds seconds and then return seconds as a double.",
    needs=CALLS,
)
async def _case_sleep(ctx: Context) -> None:
    conn = await ctx.connect()
    watch = Stopwatch()
    result = await expect_call(conn, "sleep", 0.25)
    elapsed = watch.elapsed
    check(result.WhichOneof("kind") == "double_value", f"sleep(0.25) returned {result}, expected a double")
    check(result.double_value == 0.25, f"sleep(0.25) returned {result.double_value}")
    check(elapsed >= 0.24, f"sleep(0.25) returned after {elapsed:.3f} s")


@case(
    "calls/18.2.8/notify-before-reply",
    rule="notify(topic, payload) MUST push Notification{topic, payload} (request_id 0) to the calling "
    "connection and then return null; the notification MUST be sent before the CallReply.",
    needs=(*CALLS, "notifications"),
)
def _case_notify(ctx: Context) -> None:
    check_examples(
        ctx,
        _notify,
        topic=st.text(max_size=12),
        payload=values(8),
        examples=[{"topic": "conformance/topic", "payload": to_value({"n": [1, 2.5, None], "t": "ü"})}],
        max_examples=max(3, ctx.settings.max_examples // 2),
    )


async def _notify(ctx: Context, topic: str, payload: value_pb2.Value) -> None:
    async with await ctx.connect() as conn:
        request = calls_pb2.CallRequest(method="notify", args=[to_value(topic), payload])
        rid = await conn.request("call", request)
        result = (await conn.reply(rid)).expect("call_reply").result
        check(
            result.WhichOneof("kind") == "null_value", f"notify() returned {result}, expected null (§11.5.2)"
        )
        reply_index = next(f.index for f in conn.frames if f.request_id == rid and f.kind == "call_reply")
        notes = [f for f in conn.frames if f.kind == "notification"]
        if not notes:
            fail("notify() returned without pushing a notification")
        note = notes[0]
        if note.index > reply_index:
            fail("the notification arrived after the CallReply of notify()")
        assert note.envelope is not None
        check(
            note.envelope.request_id == 0, f"the notification carries request_id {note.envelope.request_id}"
        )
        got = note.envelope.notification
        check(got.topic == topic, f"the notification's topic is {got.topic!r}, expected {topic!r}")
        diff = value_diff(payload, got.payload, "the notification's payload")
        if diff:
            fail(diff)


@case(
    "calls/18.2.12/notify-above-client-frame-limit",
    rule="When the notification would be larger than the calling client's non-zero Hello.max_frame_bytes, "
    "notify MUST send nothing and end with RESOURCE_EXHAUSTED (§6.4.8: a server MUST NOT send a notification "
    "larger than the client's non-zero Hello.max_frame_bytes; it drops it instead).",
    needs=(*CALLS, "notifications"),
)
async def _case_notify_too_large(ctx: Context) -> None:
    limit = 1024
    conn = await ctx.connect(max_frame_bytes=limit)
    rid = await conn.request("call", call_request("notify", "big", "x" * 2000))
    (await conn.reply(rid)).expect_error(ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED)
    await conn.ping(b"after a dropped notification")
    notes = [f for f in conn.frames if f.kind == "notification"]
    if notes:
        fail(f"notify() with a 2000-byte payload pushed {notes[0].describe()} of {len(notes[0].data)} bytes")
    (await conn.call("call", call_request("notify", "small", "x" * 100))).expect("call_reply")
    check(
        any(f.kind == "notification" for f in conn.frames),
        "after a dropped notification, notify() with a payload that fits pushed nothing",
    )


def _notify_unimplemented(ctx: Context, conn: Connection) -> list[Probe]:
    if ctx.has("notifications"):
        skip("the server advertises 'notifications'")
    return [_call("notify('t', 1)", "notify", "t", 1, codes=(ErrorCode.ERROR_CODE_UNIMPLEMENTED,))]


def _unset_values() -> list[Probe]:
    unset = value_pb2.Value()
    entry = _echo_of(to_value({}))
    entry.args[0].map_value.entries.add(key="no-value")
    kwarg = calls_pb2.CallRequest(method="echo")
    kwarg.kwargs.add(key="k")
    return [
        Probe(f"echo with {what}", "call", request)
        for what, request in (
            ("an argument with no kind", _echo_of(unset)),
            ("a list item with no kind", _echo_of(value_list([to_value(1), unset]))),
            ("a map entry value with no kind", _echo_of(value_map([("k", unset)]))),
            ("a MapEntry without value", entry),
            ("a keyword argument without value", kwarg),
        )
    ]


_DUP = value_map([("k", to_value(1)), ("j", to_value(2)), ("k", to_value(3))])
_DUPLICATE_KEYS = [
    Probe(f"echo with a map holding key 'k' twice{where}", "call", request)
    for where, request in (("", _echo_of(_DUP)), (" in a list", _echo_of(value_list([_DUP]))))
]


register(
    Row(
        "calls/18.2.9/notify-needs-capability",
        rule="notify requires the notifications capability; a server that does not advertise it MUST answer "
        "notify with UNIMPLEMENTED.",
        probes=_notify_unimplemented,
    ),
    Row(
        "calls/18.2.10/whoami-identity",
        rule="whoami() MUST return the caller's identity string, equal to Welcome.identity.",
        probes=[_call("whoami()", "whoami", codes=(), then=_is_identity)],
    ),
    Row(
        "calls/8.2.1/kind-unset-rejected",
        rule="A receiver MUST reject a Value whose kind is unset (at any depth) with an Error with code "
        "INVALID_ARGUMENT (§8.1.4: MapEntry.value MUST be set).",
        probes=_unset_values(),
    ),
    Row(
        "calls/8.2.2/duplicate-map-keys",
        rule="A receiver MUST reject a MapValue with two entries of the same key with INVALID_ARGUMENT.",
        probes=_DUPLICATE_KEYS,
    ),
    needs=CALLS,
)


@case(
    "calls/8.2.3/invalid-tensor-value",
    rule="A receiver MUST reject a tensor_value that breaks §7.2 with INVALID_ARGUMENT.",
    needs=CALLS,
)
def _case_invalid_tensor(ctx: Context) -> None:
    bool_7 = (make_tensor(tensor_pb2.DTYPE_BOOL, [1], b"\x07"), "bool byte 7")
    examples = [{"bad": bool_7, "nested": False}]
    check_examples(ctx, _invalid_tensor, bad=invalid_tensors(), nested=st.booleans(), examples=examples)


async def _invalid_tensor(ctx: Context, bad: tuple[tensor_pb2.Tensor, str], nested: bool) -> None:
    tensor, why = bad
    value = value_pb2.Value(tensor_value=tensor)
    if nested:
        value = value_map([("t", value_list([value]))])
    async with await ctx.connect() as conn:
        refused(await conn.call("call", _echo_of(value)), f"echo with a tensor_value with {why}", INVALID)


def _nested_list(depth: int) -> value_pb2.Value:
    value = to_value(1)
    for _ in range(depth - 1):
        value = value_list([value])
    return value


def _deep_call_bytes(request_id: int, depth: int) -> bytes:
    """An encoded call of echo with a list Value ``depth`` levels deep (built by hand: protobuf libraries
    refuse to build messages this deep)."""
    value = field_bytes(3, 0, 2)  # Value{int_value: 1} (zigzag)
    for _ in range(depth - 1):
        value = field_bytes(8, 2, field_bytes(1, 2, value))  # Value{list_value: {items: [value]}}
    request = field_bytes(1, 2, b"echo") + field_bytes(2, 2, value)
    return field_bytes(1, 0, request_id) + field_bytes(50, 2, request)


@case(
    "calls/8.3.2/too-deep-rejected",
    rule="A receiver MUST reject a Value deeper than 64 levels: INVALID_ARGUMENT when the envelope decodes "
    "(§8.3.3), MALFORMED with request_id 0 when its decoder refuses the nesting (§8.3.4).",
    needs=CALLS,
)
async def _case_too_deep(ctx: Context) -> None:
    conn = await ctx.connect()
    rid = conn.next_id()
    await conn.send_raw(_deep_call_bytes(rid, 65))

    def find() -> Frame | None:
        for frame in conn.pending_frames():
            if frame.request_id == rid and frame.kind not in EVENT_BODIES:
                return frame
            env = frame.envelope
            if (
                env is not None
                and env.request_id == 0
                and frame.kind == "error"
                and env.error.code == ErrorCode.ERROR_CODE_MALFORMED
            ):
                return frame
        return None

    frame = await conn.wait_for(
        find, f"Error{{INVALID_ARGUMENT}} for request {rid} or Error{{MALFORMED}} with id 0"
    )
    if frame.request_id == rid:
        env = frame.envelope
        assert env is not None
        if frame.kind != "error" or env.error.code != ErrorCode.ERROR_CODE_INVALID_ARGUMENT:
            fail(f"a 65-level Value was answered with {frame.describe()}, expected Error{{INVALID_ARGUMENT}}")
        return
    await conn.ping()
    stray = conn.frames_with_id(rid)
    if stray:
        fail(f"a request reported MALFORMED (not decoded) still got {stray[0].describe()}")


@case(
    "calls/8.3.7/too-deep-reply-refused",
    rule="When a terminal reply would carry a Value deeper than 32 levels, the server MUST send instead an "
    "Error with code INVALID_ARGUMENT for that request, never INTERNAL and never the reply itself; a "
    "notification that deep is not sent and the notify that asked for it ends the same way (§8.3.6: a server "
    "MUST NOT send a Value deeper than 32 levels).",
    needs=CALLS,
)
async def _case_too_deep_reply(ctx: Context) -> None:
    conn = await ctx.connect()
    # echo adds two levels (a map of args holding a list): 31 levels in, 33 would come back
    refused(await conn.call("call", _echo_of(_nested_list(31))), "echo of a 31-level value", INVALID)
    # 45 levels in: within the 64 a receiver accepts (and the 100 levels of message nesting), 47 out
    rid = conn.next_id()
    await conn.send_raw(_deep_call_bytes(rid, 45))
    frame = await conn.wait_for(
        lambda: next((f for f in conn.pending_frames() if f.request_id == rid), None),
        f"the terminal reply of request {rid} (echo of a 45-level value)",
    )
    env = frame.envelope
    if frame.kind != "error" or env is None or env.error.code != INVALID:
        fail(f"echo of 45 levels was answered with {frame.describe()}, expected Error{{INVALID_ARGUMENT}}")
    if ctx.has("notifications"):
        request = calls_pb2.CallRequest(method="notify", args=[to_value("deep"), _nested_list(33)])
        refused(await conn.call("call", request), "notify('deep', <33-level value>)", INVALID)
        notes = [f for f in conn.frames if f.kind == "notification"]
        check(not notes, "notify('deep', <33-level value>) pushed a notification deeper than 32 levels")
    await _echoes(conn, [_nested_list(30)])  # the connection goes on


@case(
    "calls/8.3.5/depth-32-accepted",
    rule="A receiver MUST accept values up to 32 levels deep; senders SHOULD NOT send deeper values (echo "
    "of a 30-level value answers with a 32-level map; notify pushes a 32-level payload as it is).",
    needs=CALLS,
)
async def _case_depth_32(ctx: Context) -> None:
    conn = await ctx.connect()
    deep = _nested_list(30)
    await _echoes(conn, [deep])
    if ctx.has("notifications"):
        deepest = _nested_list(32)
        request = calls_pb2.CallRequest(method="notify", args=[to_value("deep"), deepest])
        (await conn.call("call", request)).expect("call_reply")
        notes = [f for f in conn.frames if f.kind == "notification"]
        check(notes, "notify('deep', <32-level value>) pushed no notification")
        assert notes[0].envelope is not None
        diff = value_diff(deepest, notes[0].envelope.notification.payload, "the 32-level payload")
        if diff:
            fail(diff)
