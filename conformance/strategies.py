"""Hypothesis strategies for everything a client can send: valid and invalid, structured and raw.

Messages are built with the generated classes; raw strategies encode protobuf by hand where the
generated classes cannot express the input (unknown fields, wrong wire types, broken encodings).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, TypeVar

from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message
from hypothesis import strategies as st
from hypothesis.vendor import pretty

from fedproto_pb.v1 import (
    calls_pb2,
    datasets_pb2,
    envelope_pb2,
    objects_pb2,
    session_pb2,
    tensor_pb2,
    training_pb2,
    value_pb2,
)

from .spec import DTYPE_WIDTHS, REQUESTS, SERVER_ONLY_BODIES, dtype_name, sha256
from .values import element_count, make_tensor, value_list, value_map

__all__ = [
    "ENVELOPE_FIELDS",
    "dtypes",
    "envelope_bytes",
    "field_bytes",
    "garbage",
    "invalid_tensors",
    "mutated",
    "object_ids",
    "parses",
    "read_varint",
    "request_bodies",
    "retyped",
    "server_only_bodies",
    "shapes",
    "split_fields",
    "tensors",
    "unknown_envelope_fields",
    "unknown_fields",
    "values",
    "varint",
    "with_unknown",
]

M = TypeVar("M", bound=Message)


# -- how generated messages read in shrunk examples --------------------------------------------------


def _short_bytes(data: bytes) -> str:
    return repr(data) if len(data) <= 24 else f"{data[:16]!r}... ({len(data)} bytes)"


def _message_text(message: Message) -> str:
    if isinstance(message, tensor_pb2.Tensor):
        shape, data = list(message.shape), _short_bytes(message.data)
        return f"Tensor({dtype_name(message.dtype)}, shape={shape}, data={data})"
    body = text_format.MessageToString(message, as_one_line=True)
    return f"{type(message).__name__}({body if len(body) <= 200 else body[:200] + '...'})"


def _register_printers() -> None:
    """One-line reprs of protobuf messages in hypothesis' reports (instead of multi-line text format)."""

    def printer(obj: Message, p: Any, cycle: bool) -> None:
        p.text(_message_text(obj))

    for module in (
        calls_pb2,
        datasets_pb2,
        envelope_pb2,
        objects_pb2,
        session_pb2,
        tensor_pb2,
        training_pb2,
        value_pb2,
    ):
        for name in module.DESCRIPTOR.message_types_by_name:
            cls = getattr(module, name)
            pretty.for_type_by_name(cls.__module__, cls.__name__, printer)


_register_printers()

#: Field numbers the Envelope uses (envelope.proto): an unknown body must use another one.
ENVELOPE_FIELDS = frozenset(f.number for f in envelope_pb2.Envelope.DESCRIPTOR.fields)

# -- raw protobuf encoding ---------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """A protobuf base-128 varint (negative numbers as their 64-bit two's complement)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, wire_type: int, payload: bytes | int) -> bytes:
    """One encoded field: wire type 0 takes an int, 1/2/5 take bytes (2 gets its length prefix)."""
    tag = varint((number << 3) | wire_type)
    if wire_type == 0:
        assert isinstance(payload, int)
        return tag + varint(payload)
    assert isinstance(payload, bytes)
    if wire_type == 2:
        return tag + varint(len(payload)) + payload
    return tag + payload


def parses(data: bytes, message: type[Message] = envelope_pb2.Envelope) -> bool:
    """Whether ``data`` decodes as ``message``."""
    try:
        message().ParseFromString(data)
    except DecodeError:
        return False
    return True


def unknown_fields(
    exclude: frozenset[int], *, min_size: int = 1, max_size: int = 3
) -> st.SearchStrategy[bytes]:
    """Encoded fields whose numbers are not in ``exclude`` (every wire type but the group ones)."""
    numbers = st.one_of(st.integers(1, 200), st.integers(1, (1 << 29) - 1)).filter(
        lambda n: n not in exclude and not 19000 <= n <= 19999
    )

    def one(number: int, wire_type: int, draw_int: int, blob: bytes) -> bytes:
        if wire_type == 0:
            return field_bytes(number, 0, draw_int)
        if wire_type == 1:
            return field_bytes(number, 1, (blob + bytes(8))[:8])
        if wire_type == 5:
            return field_bytes(number, 5, (blob + bytes(4))[:4])
        return field_bytes(number, 2, blob)

    field = st.builds(
        one,
        numbers,
        st.sampled_from([0, 1, 2, 5]),
        st.integers(0, (1 << 64) - 1),
        st.binary(max_size=16),
    )
    return st.lists(field, min_size=min_size, max_size=max_size).map(b"".join)


def unknown_envelope_fields() -> st.SearchStrategy[bytes]:
    """Fields an Envelope of this version does not know: what a newer body kind looks like."""
    return unknown_fields(ENVELOPE_FIELDS, max_size=2)


# -- tensors -------------------------------------------------------------------------------------

dtypes = st.sampled_from(sorted(DTYPE_WIDTHS))


def shapes(max_elements: int = 48) -> st.SearchStrategy[list[int]]:
    """Shapes of 0 to 3 dimensions (scalars and empty tensors included)."""
    return st.lists(st.integers(0, 5), max_size=3).filter(lambda s: element_count(s) <= max_elements)


def _data(dtype: int, count: int) -> st.SearchStrategy[bytes]:
    size = count * DTYPE_WIDTHS[dtype]
    if dtype == tensor_pb2.DTYPE_BOOL:
        return st.lists(st.sampled_from([0, 1]), min_size=size, max_size=size).map(bytes)
    return st.binary(min_size=size, max_size=size)


@st.composite
def tensors(draw: st.DrawFn, max_elements: int = 48) -> tensor_pb2.Tensor:
    """Valid tensors of every dtype; float bytes are arbitrary, so NaN payloads and -0.0 occur."""
    dtype = draw(dtypes)
    shape = draw(shapes(max_elements))
    return make_tensor(dtype, shape, draw(_data(dtype, element_count(shape))))


@st.composite
def invalid_tensors(draw: st.DrawFn) -> tuple[tensor_pb2.Tensor, str]:
    """Tensors that break section 7.2, with what they break."""
    how = draw(
        st.sampled_from(["negative", "length", "unspecified", "unknown-dtype", "bool-byte", "overflow"])
    )
    dtype = draw(dtypes)
    shape = draw(shapes(16))
    count = element_count(shape)
    width = DTYPE_WIDTHS[dtype]
    if how == "negative":
        bad = list(shape) or [1]
        bad[draw(st.integers(0, len(bad) - 1))] = draw(st.integers(-(1 << 63), -1))
        return make_tensor(dtype, bad, draw(st.binary(max_size=16))), "a negative shape entry (7.2.3)"
    if how == "length":
        delta = draw(st.integers(1, 9)) * draw(st.sampled_from([-1, 1]))
        size = max(count * width + delta, 0)
        if size == count * width:
            size += 1
        return make_tensor(dtype, shape, bytes(size)), "data length not product(shape) x width (7.2.6)"
    if how == "unspecified":
        return make_tensor(0, shape, bytes(count * 4)), "DTYPE_UNSPECIFIED (7.2.7)"
    if how == "unknown-dtype":
        code = draw(
            st.one_of(st.integers(13, 1000), st.integers(13, (1 << 31) - 1), st.integers(-(1 << 31), -1))
        )
        return make_tensor(code, shape, bytes(count * 4)), f"unknown dtype value {code} (7.2.7)"
    if how == "bool-byte":
        n = max(count, 1)
        data = bytearray(draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n)))
        data[draw(st.integers(0, n - 1))] = draw(st.integers(2, 255))
        return (
            make_tensor(tensor_pb2.DTYPE_BOOL, shape if count else [n], bytes(data)),
            "a bool byte other than 0 or 1 (7.2.7)",
        )
    big = draw(st.sampled_from([[1 << 32, 1 << 32], [1 << 62, 4], [1 << 61, 1 << 3], [(1 << 63) - 1, 2]]))
    return make_tensor(dtype, big, b""), "a shape whose element count overflows 64 bits (7.2.6)"


# -- values ------------------------------------------------------------------------------------------


def _double(bits: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


_scalars = st.one_of(
    st.just(value_pb2.NULL_VALUE).map(lambda n: value_pb2.Value(null_value=n)),
    st.booleans().map(lambda b: value_pb2.Value(bool_value=b)),
    st.integers(-(1 << 63), (1 << 63) - 1).map(lambda i: value_pb2.Value(int_value=i)),
    st.one_of(st.floats(), st.integers(0, (1 << 64) - 1).map(_double)).map(
        lambda d: value_pb2.Value(double_value=d)
    ),
    st.text(max_size=12).map(lambda s: value_pb2.Value(string_value=s)),
    st.binary(max_size=12).map(lambda b: value_pb2.Value(bytes_value=b)),
    tensors(12).map(lambda t: value_pb2.Value(tensor_value=t)),
)


def values(max_leaves: int = 12) -> st.SearchStrategy[value_pb2.Value]:
    """Valid Values of every kind, nested lists and maps with unique keys in random order."""

    def extend(children: st.SearchStrategy[value_pb2.Value]) -> st.SearchStrategy[value_pb2.Value]:
        lists = st.lists(children, max_size=4).map(value_list)
        maps = st.lists(st.tuples(st.text(max_size=6), children), max_size=4, unique_by=lambda e: e[0]).map(
            value_map
        )
        return st.one_of(lists, maps)

    return st.recursive(_scalars, extend, max_leaves=max_leaves)


# -- objects -------------------------------------------------------------------------------------

object_ids = st.text(min_size=1, max_size=24).filter(lambda s: len(s.encode()) <= 256)


# -- whole requests --------------------------------------------------------------------------------

_named = st.builds(
    lambda name, t: tensor_pb2.NamedTensor(name=name, tensor=t),
    st.sampled_from(["weight", "bias", "", "other"]),
    st.one_of(tensors(16), invalid_tensors().map(lambda p: p[0])),
)


def _train_config() -> st.SearchStrategy[training_pb2.TrainConfig]:
    @st.composite
    def build(draw: st.DrawFn) -> training_pb2.TrainConfig:
        config = training_pb2.TrainConfig(
            optimizer=draw(st.sampled_from(["SGD", "Adam", "NotAnOptimizer", ""])),
            batch_size=draw(st.integers(0, 80)),
            epochs=draw(st.integers(0, 2)),
            shuffle=draw(st.booleans()),
            max_nr_batches=draw(st.integers(-2, 4)),
        )
        model = draw(st.sampled_from(["registered", "unknown", "torchscript", "object", "unset"]))
        if model == "registered":
            config.registered_model = "conformance-linear"
        elif model == "unknown":
            config.registered_model = draw(st.text(max_size=10))
        elif model == "torchscript":
            config.model_torchscript = draw(st.binary(max_size=32))
        elif model == "object":  # an id of no object, or of one that holds no archive (section 12.9)
            config.model_object = draw(st.text(max_size=10))
        loss = draw(st.sampled_from(["cross_entropy", "mse", "bogus", "unset"]))
        if loss != "unset":
            config.loss_name = loss
        for key, value in draw(
            st.lists(st.tuples(st.sampled_from(["lr", "momentum", "bogus"]), _scalars), max_size=2)
        ):
            config.optimizer_args.add(key=key).value.CopyFrom(value)
        if draw(st.booleans()):
            config.seed = draw(st.integers(0, (1 << 64) - 1))
        config.initial_weights.extend(draw(st.lists(_named, max_size=2)))
        return config

    return build()


def request_bodies(
    *, methods: Sequence[str] = ("echo", "whoami", "fail"), dataset: str = "conformance"
) -> st.SearchStrategy[tuple[str, Message]]:
    """(kind, message) for every request kind, valid and invalid, that ends promptly.

    ``fit`` and the ``sleep`` hook are left out because they may legitimately take long; chunked
    uploads are either empty or invalid, so none waits for chunks.
    """
    ids = st.one_of(object_ids, st.just(""), st.just("x" * 300), st.sampled_from(["a", "b", "c"]))
    tags = st.lists(st.sampled_from(["a", "b", "B", "c d"]), max_size=3)

    @st.composite
    def send(draw: st.DrawFn) -> objects_pb2.SendObjectRequest:
        request = objects_pb2.SendObjectRequest(
            id=draw(ids),
            tags=draw(tags),
            description=draw(st.text(max_size=8)),
            overwrite=draw(st.booleans()),
        )
        payload = draw(st.sampled_from(["tensor", "invalid", "unset", "chunked-empty", "chunked-bad"]))
        if payload == "tensor":
            request.tensor.CopyFrom(draw(tensors(16)))
        elif payload == "invalid":
            request.tensor.CopyFrom(draw(invalid_tensors())[0])
        elif payload == "chunked-empty":
            request.chunked.CopyFrom(
                tensor_pb2.TensorInfo(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[0], nbytes=0, sha256=sha256(b""))
            )
        elif payload == "chunked-bad":
            request.chunked.CopyFrom(
                tensor_pb2.TensorInfo(
                    dtype=tensor_pb2.DTYPE_FLOAT32,
                    shape=[2],
                    nbytes=draw(st.sampled_from([7, 9, 0])),
                    sha256=draw(st.binary(max_size=31)),
                )
            )
        return request

    @st.composite
    def call(draw: st.DrawFn) -> calls_pb2.CallRequest:
        request = calls_pb2.CallRequest(
            method=draw(st.one_of(st.sampled_from(list(methods)), st.text(max_size=10))),
            args=draw(st.lists(values(6), max_size=3)),
        )
        for key, value in draw(
            st.lists(st.tuples(st.sampled_from(["code", "message", "x", ""]), values(4)), max_size=2)
        ):
            request.kwargs.add(key=key).value.CopyFrom(value)
        return request

    bodies: list[st.SearchStrategy[tuple[str, Message]]] = [
        st.binary(max_size=64).map(lambda p: ("ping", session_pb2.Ping(payload=p))),
        send().map(lambda m: ("send_object", m)),
        ids.map(lambda i: ("get_object", objects_pb2.GetObjectRequest(id=i))),
        ids.map(lambda i: ("delete_object", objects_pb2.DeleteObjectRequest(id=i))),
        st.just(("list_objects", objects_pb2.ListObjectsRequest())),
        st.just(("count_objects", objects_pb2.CountObjectsRequest())),
        st.just(("clear_objects", objects_pb2.ClearObjectsRequest())),
        tags.map(lambda t: ("search_objects", objects_pb2.SearchObjectsRequest(tags=t))),
        st.just(("list_datasets", datasets_pb2.ListDatasetsRequest())),
        call().map(lambda m: ("call", m)),
        st.just(("list_methods", calls_pb2.ListMethodsRequest())),
        _train_config().map(lambda c: ("set_train_config", training_pb2.SetTrainConfigRequest(config=c))),
        st.builds(
            training_pb2.EvaluateRequest,
            dataset_key=st.sampled_from([dataset, "", "no-such-dataset"]),
            return_histograms=st.booleans(),
            nr_bins=st.integers(0, 5),
            return_loss=st.booleans(),
            return_raw_accuracy=st.booleans(),
            batch_size=st.integers(0, 100),
        ).map(lambda m: ("evaluate", m)),
        st.just(("get_weights", training_pb2.GetWeightsRequest())),
        st.builds(
            training_pb2.SetWeightsRequest, weights=st.lists(_named, max_size=3), strict=st.booleans()
        ).map(lambda m: ("set_weights", m)),
        st.just(("list_models", training_pb2.ListModelsRequest())),
    ]
    assert {k for k in REQUESTS if k != "fit"} == {
        "ping", "send_object", "get_object", "delete_object", "list_objects", "count_objects",
        "clear_objects", "search_objects", "list_datasets", "call", "list_methods", "set_train_config",
        "evaluate", "get_weights", "set_weights", "list_models",
    }  # fmt: skip
    return st.one_of(bodies)


def server_only_bodies() -> st.SearchStrategy[str]:
    """The body kinds only servers send (section 3.7)."""
    return st.sampled_from(list(SERVER_ONLY_BODIES))


# -- bytes -------------------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, templates: st.SearchStrategy[bytes]) -> bytes:
    """A template with one to four byte-level mutations: flips, overwrites, cuts, insertions."""
    data = bytearray(draw(templates))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate", "duplicate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 4))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        elif op == "truncate":
            del data[pos:]
        elif op == "duplicate" and data:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode the varint at ``pos``: (value, position after it)."""
    value, shift = 0, 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def split_fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """The top-level fields of well-formed protobuf bytes: (number, wire type, payload)."""
    fields, pos = [], 0
    while pos < len(data):
        tag, pos = read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            start = pos
            _, pos = read_varint(data, pos)
            fields.append((number, 0, data[start:pos]))
        elif wire_type == 2:
            size, pos = read_varint(data, pos)
            fields.append((number, 2, data[pos : pos + size]))
            pos += size
        else:
            width = 8 if wire_type == 1 else 4
            fields.append((number, wire_type, data[pos : pos + width]))
            pos += width
    return fields


def _retype(number: int, payload: bytes, wire_type: int) -> bytes:
    if wire_type == 0:
        return field_bytes(number, 0, int.from_bytes(payload[:8], "little"))
    if wire_type == 1:
        return field_bytes(number, 1, (payload + bytes(8))[:8])
    if wire_type == 5:
        return field_bytes(number, 5, (payload + bytes(4))[:4])
    return field_bytes(number, 2, payload)


@st.composite
def retyped(draw: st.DrawFn, templates: st.SearchStrategy[bytes]) -> bytes:
    """A template with one known field sent with the wrong wire type, at the top or inside the body.

    Decoders read such a field as an unknown one (so a known field reads as unset), or reject the message.
    """
    fields = split_fields(draw(templates))
    index = draw(st.integers(0, len(fields) - 1))
    number, wire_type, payload = fields[index]
    if wire_type == 2 and number >= 10 and payload and draw(st.booleans()):
        inner = split_fields(payload)
        if inner:
            at = draw(st.integers(0, len(inner) - 1))
            n, w, p = inner[at]
            new_type = draw(st.sampled_from([t for t in (0, 1, 2, 5) if t != w]))
            body = b"".join(
                _retype(n, p, new_type) if i == at else _retype(fn, fp, fw)
                for i, (fn, fw, fp) in enumerate(inner)
            )
            fields[index] = (number, 2, body)
            return b"".join(_retype(fn, fp, fw) for fn, fw, fp in fields)
    new_type = draw(st.sampled_from([t for t in (0, 1, 2, 5) if t != wire_type]))
    return b"".join(
        _retype(fn, fp, new_type) if i == index else _retype(fn, fp, fw)
        for i, (fn, fw, fp) in enumerate(fields)
    )


def _broken(prefix: bytes, kind: str, number: int) -> bytes:
    if kind == "bad-wire-type":
        return prefix + varint((number << 3) | 7)
    if kind == "field-zero":
        return prefix + b"\x00\x01"
    if kind == "truncated-varint":
        return prefix + varint(number << 3) + b"\xff\xff"
    if kind == "overlong-length":
        return prefix + varint((number << 3) | 2) + varint(1000) + b"abc"
    if kind == "end-group":
        return prefix + varint((number << 3) | 4)
    # a string that is not UTF-8: Hello.client_name inside a hello body
    inner = field_bytes(2, 2, b"\xff\xfe\xc3(")
    return prefix + field_bytes(10, 2, inner)


def garbage(templates: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[bytes]:
    """Binary messages that do not parse as an Envelope (sections 3.3.1 and 3.3.4)."""
    prefix = st.sampled_from([b"", varint(1 << 3) + varint(7)])
    kinds = st.sampled_from(
        ["bad-wire-type", "field-zero", "truncated-varint", "overlong-length", "end-group", "bad-utf8"]
    )
    built = st.builds(_broken, prefix, kinds, st.integers(1, 100))
    options = [built, st.binary(min_size=1, max_size=48)]
    if templates is not None:
        options.append(mutated(templates))
    return st.one_of(options).filter(lambda b: not parses(b))


def envelope_bytes(kind: str, message: Message, request_id: int) -> bytes:
    """Serialize an Envelope carrying ``message`` as body ``kind``."""
    envelope = envelope_pb2.Envelope(request_id=request_id)
    body = getattr(envelope, kind)
    body.SetInParent()
    body.CopyFrom(message)
    return envelope.SerializeToString()


def with_unknown(message: M, extra: bytes) -> M:
    """A copy of ``message`` that carries the encoded fields ``extra`` as unknown fields."""
    copy = type(message)()
    copy.ParseFromString(message.SerializeToString() + extra)
    return copy
