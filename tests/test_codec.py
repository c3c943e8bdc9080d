"""Round trips of every conversion in fedproto.codec, and a decoder that survives hostile bytes."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedproto import codec
from fedproto.datasets import DatasetDescription
from fedproto.errors import (
    ErrorCode,
    InvalidArgumentError,
    MalformedError,
    NotFoundError,
    ProtocolError,
    error_class_for,
)
from fedproto.types import (
    EvaluateKind,
    EvaluateOptions,
    EvaluateResult,
    FitOptions,
    FitProgressEvent,
    FitResult,
    Limits,
    MethodInfo,
    ModelCatalog,
    ModelSummary,
    ObjectInfo,
    ParameterInfo,
    TensorInfo,
    TrainSpec,
)
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

ALL_DTYPES = [
    torch.float16,
    torch.float32,
    torch.float64,
    torch.bfloat16,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.complex128,
]

shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)


def _random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype is torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point or dtype.is_complex:
        return (torch.randn(shape, generator=g, dtype=torch.float64) * 100).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(
        max(info.min, -(2**62)), min(info.max, 2**62), shape, generator=g, dtype=torch.int64
    ).to(dtype)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaNs included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype is torch.bfloat16:
        a, b = a.view(torch.int16), b.view(torch.int16)
    return a.contiguous().numpy().tobytes() == b.contiguous().numpy().tobytes()


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@given(shape=shapes, seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_tensor_round_trip_every_dtype_and_shape(
    dtype: torch.dtype, shape: tuple[int, ...], seed: int
) -> None:
    tensor = _random_tensor(dtype, shape, seed)
    back = codec.tensor_from_proto(
        tensor_pb2.Tensor.FromString(codec.tensor_to_proto(tensor).SerializeToString())
    )
    assert _same(tensor, back)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_non_contiguous_and_zero_dim(dtype: torch.dtype) -> None:
    base = _random_tensor(dtype, (6, 8), 1)
    for view in (base.t(), base[:, ::3], base[1:4, 2:7], base[2, 3]):
        assert not view.is_contiguous() or view.dim() == 0
        assert _same(view.contiguous(), codec.tensor_from_proto(codec.tensor_to_proto(view)))


def test_conj_and_neg_views_are_resolved() -> None:
    z = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    assert torch.equal(codec.tensor_from_proto(codec.tensor_to_proto(z.conj())), z.conj().resolve_conj())


@given(
    array=hnp.arrays(
        dtype=st.sampled_from(["<f4", ">f4", ">f8", ">i2", ">i4", ">i8", "<u1", "|b1", ">c8", ">c16", "<f2"]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    )
)
@settings(max_examples=60, deadline=None)
def test_numpy_round_trip_including_big_endian(array: np.ndarray) -> None:
    message = codec.tensor_to_proto(array)
    back = codec.array_from_proto(message)
    assert back.shape == array.shape
    assert back.dtype == array.dtype.newbyteorder("=")
    assert back.tobytes() == array.astype(array.dtype.newbyteorder("<")).tobytes()
    # and the wire bytes are little-endian whatever the input's byte order was
    assert message.data == array.astype(array.dtype.newbyteorder("<")).tobytes()


def test_numpy_non_contiguous() -> None:
    array = np.arange(24, dtype=">i4").reshape(4, 6)[:, ::2].T
    assert np.array_equal(codec.array_from_proto(codec.tensor_to_proto(array)), array)


def test_decoded_tensor_is_writable_and_independent() -> None:
    message = codec.tensor_to_proto(torch.arange(4.0))
    t = codec.tensor_from_proto(message)
    t += 1
    assert torch.equal(codec.tensor_from_proto(message), torch.arange(4.0))


def test_chunk_buffer_is_wrapped_without_copy() -> None:
    buffer = bytearray(torch.arange(4, dtype=torch.float32).numpy().tobytes())
    t = codec.tensor_from_bytes(tensor_pb2.DTYPE_FLOAT32, [4], buffer)
    buffer[0:4] = torch.tensor([9.0]).numpy().tobytes()
    assert t[0].item() == 9.0


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[2], data=b"\x00" * 7), "need 8"),
        (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[-1], data=b""), "negative"),
        (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_UNSPECIFIED, shape=[], data=b""), "dtype"),
        (tensor_pb2.Tensor(dtype=99, shape=[], data=b"\x00"), "dtype"),
        (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_BOOL, shape=[2], data=b"\x00\x02"), "bool"),
    ],
)
def test_invalid_tensors_are_invalid_argument(message: tensor_pb2.Tensor, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment):
        codec.tensor_from_proto(message)
    with pytest.raises(InvalidArgumentError):
        codec.check_tensor(message)


def test_bfloat16_has_no_numpy_form() -> None:
    with pytest.raises(InvalidArgumentError):
        codec.array_from_proto(codec.tensor_to_proto(torch.ones(2, dtype=torch.bfloat16)))


def test_unsupported_dtype_is_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        codec.tensor_to_proto(torch.ones(2, dtype=torch.uint16))


# -- values -----------------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=64)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(values)
@settings(max_examples=300, deadline=None)
def test_value_round_trip(value: object) -> None:
    wire = value_pb2.Value.FromString(codec.value_to_proto(value).SerializeToString())
    assert codec.value_from_proto(wire) == value


def test_value_special_cases() -> None:
    nan = codec.value_from_proto(codec.value_to_proto(float("nan")))
    assert math.isnan(nan)
    assert codec.value_from_proto(codec.value_to_proto((1, 2))) == [1, 2]
    assert codec.value_from_proto(codec.value_to_proto(np.int32(3))) == 3
    assert codec.value_from_proto(codec.value_to_proto(np.float32(0.5))) == 0.5
    assert codec.value_from_proto(codec.value_to_proto(np.bool_(True))) is True
    t = codec.value_from_proto(codec.value_to_proto({"w": torch.ones(2, 2)}))["w"]
    assert torch.equal(t, torch.ones(2, 2))
    ordered = codec.value_from_proto(codec.value_to_proto({"b": 1, "a": 2}))
    assert list(ordered) == ["b", "a"]


@pytest.mark.parametrize("bad", [object(), {1: "x"}, 2**63, -(2**63) - 1, {"a": {1, 2}}])
def test_unencodable_values_are_invalid_argument(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        codec.value_to_proto(bad)


def test_value_depth_limits() -> None:
    deep: object = 1
    for _ in range(codec.MAX_SEND_DEPTH - 1):
        deep = [deep]
    assert codec.value_from_proto(codec.value_to_proto(deep)) == deep
    with pytest.raises(InvalidArgumentError, match="deeper"):
        codec.value_to_proto([deep])
    # protobuf's parser refuses such depth itself, so the receiver's own guard is checked directly
    nested = codec.value_to_proto([[1]])
    with pytest.raises(InvalidArgumentError):
        codec.value_from_proto(nested, _depth=codec.MAX_VALUE_DEPTH)


def _wire_list(depth: int) -> value_pb2.Value:
    """A list Value ``depth`` levels deep, built in place from the top (the encoder stops at 32, and
    protobuf copies a nested message by parsing it, which stops near 50 levels)."""
    top = value_pb2.Value()
    current = top
    for _ in range(depth - 1):
        current = current.list_value.items.add()
    current.int_value = 1
    return top


def test_received_depth_limit_is_exactly_64_levels() -> None:
    """Section 8.3.2: 64 levels are accepted, 65 refused with INVALID_ARGUMENT naming the limit."""
    decoded = codec.value_from_proto(_wire_list(codec.MAX_VALUE_DEPTH))
    for _ in range(codec.MAX_VALUE_DEPTH - 1):
        decoded = decoded[0]
    assert decoded == 1
    with pytest.raises(codec.ValueTooDeepError) as caught:
        codec.value_from_proto(_wire_list(codec.MAX_VALUE_DEPTH + 1))
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert caught.value.details == {"limit": "64"}


def test_sent_depth_limit_is_a_typed_error_even_for_cycles() -> None:
    """Section 8.3.6: 32 levels are sent, 33 refused (INVALID_ARGUMENT, limit 32), a cycle too."""
    deep: object = 1
    for _ in range(codec.MAX_SEND_DEPTH - 1):
        deep = {"k": deep}
    assert codec.value_from_proto(codec.value_to_proto(deep)) == deep
    with pytest.raises(codec.ValueTooDeepError) as caught:
        codec.call_reply_to_proto([deep])
    assert caught.value.details == {"limit": "32"}
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(codec.ValueTooDeepError):
        codec.value_to_proto(cycle)


@pytest.mark.parametrize("levels", [50, 200, 5000])
def test_envelopes_nested_beyond_the_decoder_are_malformed(levels: int) -> None:
    """Sections 3.3.4 and 8.3.4: protobuf's own nesting limit (a DecodeError) reaches callers as
    MALFORMED, whatever the depth, never as a parser exception or a RecursionError."""
    value = value_pb2.Value(int_value=1).SerializeToString()
    for _ in range(levels):
        items = b"\x0a" + codec._varint(len(value)) + value  # ListValue.items
        value = b"\x42" + codec._varint(len(items)) + items  # Value.list_value
    call = b"\x0a\x04echo\x12" + codec._varint(len(value)) + value  # CallRequest{method, args}
    frame = b"\x08\x07" + codec._varint(50 << 3 | 2) + codec._varint(len(call)) + call
    with pytest.raises(MalformedError):
        codec.decode_envelope(frame)


def test_invalid_wire_values() -> None:
    with pytest.raises(InvalidArgumentError, match="no kind"):
        codec.value_from_proto(value_pb2.Value())
    dup = value_pb2.Value()
    dup.map_value.entries.add(key="a").value.int_value = 1
    dup.map_value.entries.add(key="a").value.int_value = 2
    with pytest.raises(InvalidArgumentError, match="duplicate"):
        codec.value_from_proto(dup)


# -- errors and records -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(ErrorCode)[1:], ids=lambda c: c.name)
def test_error_round_trip_every_code(code: ErrorCode) -> None:
    cls = error_class_for(code)
    assert cls.code == code
    error = cls("it broke", details={"k": "v"})
    back = codec.error_from_proto(codec.error_to_proto(error))
    assert type(back) is cls and back.message == "it broke" and back.details == {"k": "v"} and back.remote


def test_unknown_error_code_becomes_internal() -> None:
    from fedproto_pb.v1 import errors_pb2

    back = codec.error_from_proto(errors_pb2.Error(code=999, message="x"))
    assert back.code is ErrorCode.INTERNAL and back.details["code"] == "999"


def test_records_round_trip() -> None:
    info = ObjectInfo(
        id="w",
        tags=("#a", "#b"),
        description="d",
        tensor=TensorInfo(dtype=torch.float32, shape=(2, 3), nbytes=24),
    )
    assert codec.object_info_from_proto(codec.object_info_to_proto(info)) == info
    method = MethodInfo(
        name="m",
        description="x",
        returns="int",
        parameters=(ParameterInfo(name="a", type="int", required=False),),
    )
    assert codec.method_info_from_proto(codec.method_info_to_proto(method)) == method
    limits = Limits(max_frame_bytes=10, max_in_flight=2, chunk_bytes=3, idle_timeout_seconds=1.5)
    assert codec.limits_from_proto(codec.limits_to_proto(limits)) == limits
    weights = {"a": torch.ones(2), "b": torch.zeros(1, dtype=torch.int64)}
    back = codec.named_tensors_from_proto(codec.named_tensors_to_proto(weights))
    assert list(back) == ["a", "b"] and all(torch.equal(back[k], weights[k]) for k in weights)


# -- envelopes --------------------------------------------------------------------------------------

HAND_WRITTEN_REQUESTS = {
    "hello": session_pb2.Hello(versions=[1], client_name="c", token="t", max_frame_bytes=10),
    "ping": session_pb2.Ping(payload=b"p"),
    "cancel": session_pb2.Cancel(reason="r"),
    "goodbye": session_pb2.Goodbye(reason="bye"),
    "chunk": tensor_pb2.Chunk(offset=4, data=b"abcd", total_bytes=8),
    "send_object": objects_pb2.SendObjectRequest(
        id="x", tags=["#t"], description="d", tensor=codec.tensor_to_proto(torch.ones(2)), overwrite=True
    ),
    "get_object": objects_pb2.GetObjectRequest(id="x"),
    "delete_object": objects_pb2.DeleteObjectRequest(id="x"),
    "list_objects": objects_pb2.ListObjectsRequest(),
    "count_objects": objects_pb2.CountObjectsRequest(),
    "clear_objects": objects_pb2.ClearObjectsRequest(),
    "search_objects": objects_pb2.SearchObjectsRequest(tags=["#a", "#b"]),
    "list_datasets": datasets_pb2.ListDatasetsRequest(),
    "call": calls_pb2.CallRequest(
        method="m", args=[codec.value_to_proto(1)], kwargs=codec.values_to_entries({"k": [1, "x"]})
    ),
    "list_methods": calls_pb2.ListMethodsRequest(),
    "set_train_config": training_pb2.SetTrainConfigRequest(
        config=training_pb2.TrainConfig(
            registered_model="m", loss_name="mse", optimizer="SGD", batch_size=2, epochs=1, seed=3
        )
    ),
    "fit": training_pb2.FitRequest(dataset_key="xor", return_weights=True, progress_every=2),
    "evaluate": training_pb2.EvaluateRequest(dataset_key="xor", return_histograms=True, nr_bins=2),
    "get_weights": training_pb2.GetWeightsRequest(),
    "set_weights": training_pb2.SetWeightsRequest(
        weights=codec.named_tensors_to_proto({"w": torch.ones(1)}), strict=True
    ),
    "list_models": training_pb2.ListModelsRequest(),
}


def test_every_client_body_is_covered() -> None:
    from fedproto.session import CLIENT_CONTROL_KINDS, REQUEST_KINDS

    assert set(HAND_WRITTEN_REQUESTS) == REQUEST_KINDS | CLIENT_CONTROL_KINDS


@pytest.mark.parametrize("kind", sorted(HAND_WRITTEN_REQUESTS))
def test_envelope_round_trip_for_each_request(kind: str) -> None:
    envelope = envelope_pb2.Envelope(request_id=7, deadline_ms=250, **{kind: HAND_WRITTEN_REQUESTS[kind]})
    back = codec.decode_envelope(codec.encode_envelope(envelope))
    assert back == envelope
    assert back.WhichOneof("body") == kind


def test_empty_frame_is_an_envelope_without_body() -> None:
    assert codec.decode_envelope(b"").WhichOneof("body") is None


def test_unknown_body_is_detected() -> None:
    envelope = codec.decode_envelope(b"\x08\x05\xfa\x07\x00")  # request_id 5, unknown field 127
    assert envelope.request_id == 5 and envelope.WhichOneof("body") is None
    assert codec.has_unknown_body(envelope)
    assert not codec.has_unknown_body(codec.decode_envelope(b"\x08\x05"))


def test_decode_rejects_text_and_garbage() -> None:
    with pytest.raises(MalformedError):
        codec.decode_envelope("hello")  # type: ignore[arg-type]
    with pytest.raises(MalformedError):
        codec.decode_envelope(b"\xff\xff\xff")


def _exercise(envelope: envelope_pb2.Envelope) -> None:
    """Run every decoder a server or client would run on the body; only ProtocolError may escape."""
    kind = envelope.WhichOneof("body")
    if kind is None:
        codec.has_unknown_body(envelope)
        return
    body = getattr(envelope, kind)
    for field, value in body.ListFields():
        if isinstance(value, tensor_pb2.Tensor):
            codec.tensor_from_proto(value)
        elif isinstance(value, value_pb2.Value):
            codec.value_from_proto(value)
        elif isinstance(value, tensor_pb2.TensorInfo):
            codec.tensor_info_from_proto(value)
        elif field.name in ("args",):
            for item in value:
                codec.value_from_proto(item)
        elif field.name in ("kwargs", "optimizer_args"):
            codec.values_from_entries(value)
        elif field.name == "weights":
            codec.named_tensors_from_proto(value)
        elif isinstance(value, training_pb2.TrainConfig):
            codec.train_spec_from_proto(value)


def test_decoder_survives_100k_random_and_mutated_frames() -> None:
    rng = random.Random(20261124)
    seeds = [
        codec.encode_envelope(envelope_pb2.Envelope(request_id=i + 1, **{k: v}))
        for i, (k, v) in enumerate(sorted(HAND_WRITTEN_REQUESTS.items()))
    ]
    unexpected = []
    for n in range(100_000):
        if n % 2:
            frame = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 48)))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                op = rng.randint(0, 2)
                if op == 0 and data:
                    data[rng.randrange(len(data))] = rng.getrandbits(8)
                elif op == 1 and data:
                    del data[rng.randrange(len(data)) :]
                else:
                    data.insert(rng.randint(0, len(data)), rng.getrandbits(8))
            frame = bytes(data)
        try:
            _exercise(codec.decode_envelope(frame))
        except ProtocolError:
            pass
        except Exception as exc:  # pragma: no cover - this is the failure being looked for
            unexpected.append((frame, repr(exc)))
    assert not unexpected, unexpected[:5]


@given(st.binary(max_size=256))
@settings(max_examples=500, deadline=None)
def test_random_bytes_only_raise_protocol_errors(frame: bytes) -> None:
    try:
        _exercise(codec.decode_envelope(frame))
    except ProtocolError:
        pass


def test_error_classes_are_protocol_errors() -> None:
    assert issubclass(NotFoundError, ProtocolError)


# -- chunk frames: hand-written encoder and fast-path decoder -----------------------------------------

u64 = st.integers(0, 2**64 - 1)


@given(rid=u64, offset=u64, data=st.binary(max_size=300), total=u64, digest=st.sampled_from([b"", bytes(32)]))
@settings(max_examples=300, deadline=None)
def test_chunk_frame_matches_protobuf(rid: int, offset: int, data: bytes, total: int, digest: bytes) -> None:
    frame = codec.encode_chunk_frame(rid, offset, memoryview(data), total, digest)
    expected = envelope_pb2.Envelope(
        request_id=rid, chunk=tensor_pb2.Chunk(offset=offset, data=data, total_bytes=total, sha256=digest)
    )
    assert envelope_pb2.Envelope.FromString(frame) == expected
    for encoded in (frame, expected.SerializeToString()):
        fast = codec.decode_chunk_frame(encoded)
        if digest:  # the rare last chunk with a trailing digest takes the generic decoder
            assert fast is None
            continue
        assert fast is not None
        assert (fast[0], fast[1], bytes(fast[2]), fast[3]) == (rid, offset, data, total)


def test_fast_chunk_decoder_declines_everything_else() -> None:
    others = [
        codec.encode_envelope(envelope_pb2.Envelope(request_id=3, ping=session_pb2.Ping())),
        codec.encode_envelope(
            envelope_pb2.Envelope(request_id=3, deadline_ms=5, chunk=tensor_pb2.Chunk(data=b"x"))
        ),
        codec.encode_envelope(envelope_pb2.Envelope(request_id=3)),
        b"\x08\x05\xfa\x07\x00",
        b"",
    ]
    for frame in others:
        assert codec.decode_chunk_frame(frame) is None


def test_fast_chunk_decoder_agrees_with_protobuf_on_mutations() -> None:
    rng = random.Random(7)
    seed = codec.encode_chunk_frame(77, 1024, memoryview(bytes(range(40))), 4096)
    for _ in range(20_000):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 3)):
            if data and rng.random() < 0.7:
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            else:
                del data[rng.randrange(len(data) + 1) :]
        fast = codec.decode_chunk_frame(bytes(data))
        if fast is None:
            continue
        generic = codec.decode_envelope(bytes(data))  # must parse, and to the same values
        assert generic.WhichOneof("body") == "chunk"
        assert (generic.request_id, generic.chunk.offset, generic.chunk.data, generic.chunk.total_bytes) == (
            fast[0],
            fast[1],
            bytes(fast[2]),
            fast[3],
        )


@given(
    rid=u64,
    object_id=st.text(max_size=20),
    tags=st.lists(st.text(max_size=5), max_size=3),
    data=st.binary(max_size=2000),
    deadline=u64,
)
@settings(max_examples=200, deadline=None)
def test_encode_with_payload_equals_assigning_the_field(rid, object_id, tags, data, deadline) -> None:
    envelope = envelope_pb2.Envelope(request_id=rid, deadline_ms=deadline)
    envelope.send_object.id = object_id
    envelope.send_object.tags.extend(tags)
    envelope.send_object.tensor.dtype = tensor_pb2.DTYPE_UINT8
    envelope.send_object.tensor.shape.append(len(data))
    frame = codec.encode_with_payload(envelope, ("send_object", "tensor", "data"), memoryview(data))
    envelope.send_object.tensor.data = data
    assert codec.decode_envelope(frame) == envelope


@given(method=st.text(max_size=300), args=st.lists(st.binary(max_size=200), max_size=4))
def test_call_args_size_is_the_request_without_its_method(method: str, args: list[bytes]) -> None:
    request = calls_pb2.CallRequest(method=method, args=[value_pb2.Value(bytes_value=a) for a in args])
    without_method = calls_pb2.CallRequest(args=request.args).SerializeToString()
    assert codec.call_args_size(request) == len(without_method)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("path", [("send_object", "tensor", "data"), ("get_object_reply", "tensor", "data")])
@given(shape=shapes, seed=st.integers(0, 2**16))
@settings(max_examples=10, deadline=None)
def test_inline_tensor_header_round_trip(dtype: torch.dtype, path: tuple[str, ...], shape, seed: int) -> None:
    tensor = _random_tensor(dtype, shape, seed)
    info, view = codec.tensor_payload(tensor)
    envelope = envelope_pb2.Envelope(request_id=3)
    getattr(envelope, path[0]).tensor.CopyFrom(codec.inline_tensor_header(info))
    received = getattr(codec.decode_envelope(codec.encode_with_payload(envelope, path, view)), path[0]).tensor
    assert codec.check_tensor(received) == info
    assert _same(tensor.contiguous(), codec.tensor_from_proto(received))
    assert codec.tensor_proto_from_payload(info, view) == received


@given(
    entries=st.lists(
        st.tuples(st.text(max_size=12), st.sampled_from(ALL_DTYPES), shapes, st.integers(0, 2**16)),
        max_size=5,
        unique_by=lambda entry: entry[0],
    ),
    strict=st.booleans(),
    rid=st.integers(1, 2**40),
    deadline=st.integers(0, 2**40),
    transposed=st.booleans(),
)
@settings(max_examples=100, deadline=None)
def test_set_weights_payload_is_the_encoding_of_the_message(
    entries, strict, rid, deadline, transposed
) -> None:
    weights = {name: _random_tensor(dtype, shape, seed) for name, dtype, shape, seed in entries}
    if transposed:  # strided tensors travel in logical order, as the message would carry them
        weights = {name: t.t() if t.dim() == 2 else t for name, t in weights.items()}
    request = codec.set_weights_request_to_proto(weights, strict=strict)
    assembled = envelope_pb2.Envelope(request_id=rid, deadline_ms=deadline, set_weights=request)
    payload = codec.set_weights_request_payload(weights, strict=strict)
    empty = codec.set_weights_request_to_proto({}, strict=False)
    envelope = envelope_pb2.Envelope(request_id=rid, deadline_ms=deadline, set_weights=empty)
    frame = codec.encode_with_payload(envelope, ("set_weights",), payload)
    assert frame == codec.encode_envelope(assembled)  # byte for byte
    decoded, decoded_strict = codec.set_weights_request_from_proto(codec.decode_envelope(frame).set_weights)
    assert decoded_strict == strict and list(decoded) == list(weights)
    assert all(_same(decoded[name], tensor.contiguous()) for name, tensor in weights.items())


# -- training records -------------------------------------------------------------------------------

names = st.text(max_size=12)
counts = st.integers(0, 2**32 - 1)  # every count field holds at least 32 bits
u32 = st.integers(0, 2**32 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def state_dicts(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    keys = draw(st.lists(names, unique=True, max_size=3))
    return {
        key: _random_tensor(draw(st.sampled_from(ALL_DTYPES)), draw(shapes), draw(st.integers(0, 99)))
        for key in keys
    }


def _same_weights(a: dict[str, torch.Tensor] | None, b: dict[str, torch.Tensor] | None) -> bool:
    if a is None or b is None:
        return a is b
    return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)


optimizer_args = st.dictionaries(
    st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
    st.booleans() | st.integers(-(2**31), 2**31) | finite | st.lists(finite, max_size=3),
    max_size=3,
)


@given(
    model=st.one_of(
        st.tuples(st.binary(max_size=64), st.none(), st.none()),
        st.tuples(st.none(), names, st.none()),
        st.tuples(st.none(), st.none(), names),  # model_object, section 12.9
    ),
    loss=st.one_of(st.tuples(st.binary(max_size=64), st.none()), st.tuples(st.none(), names)),
    optimizer=names,
    args=optimizer_args,
    batch_size=u32,
    epochs=u32,
    shuffle=st.booleans(),
    max_nr_batches=st.integers(-(2**31), 2**31),
    seed=st.none() | st.integers(0, 2**64 - 1),
    weights=state_dicts(),
)
@settings(max_examples=60, deadline=None)
def test_train_spec_round_trip(
    model, loss, optimizer, args, batch_size, epochs, shuffle, max_nr_batches, seed, weights
):
    spec = TrainSpec(
        model_torchscript=model[0],
        registered_model=model[1],
        model_object=model[2],
        loss_torchscript=loss[0],
        loss_name=loss[1],
        optimizer=optimizer,
        optimizer_args=args,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=shuffle,
        max_nr_batches=max_nr_batches,
        seed=seed,
        initial_weights=weights,
    )
    request = codec.set_train_config_request_to_proto(spec)
    back = codec.set_train_config_request_from_proto(_wire(request))
    assert dataclasses.replace(back, initial_weights={}) == dataclasses.replace(spec, initial_weights={})
    assert _same_weights(back.initial_weights, weights)


def _wire(message):
    """``message`` after a trip through its bytes, as the other side parses it."""
    return type(message).FromString(message.SerializeToString())


@given(epoch=counts, batch=counts, per_epoch=counts, loss=st.floats(), running=st.floats(), samples=counts)
@settings(max_examples=50, deadline=None)
def test_fit_progress_round_trip(epoch, batch, per_epoch, loss, running, samples) -> None:
    event = FitProgressEvent(
        epoch=epoch,
        batch=batch,
        batches_per_epoch=per_epoch,
        loss=loss,
        running_loss=running,
        samples=samples,
    )
    back = codec.fit_progress_from_proto(_wire(codec.fit_progress_to_proto(event)))
    assert _same_floats(dataclasses.astuple(back), dataclasses.astuple(event))


def _same_floats(a: tuple, b: tuple) -> bool:
    """Equality that counts NaN equal to NaN (a loss may be NaN)."""
    return len(a) == len(b) and all(
        x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
        for x, y in zip(a, b, strict=True)
    )


@given(
    losses=st.tuples(finite, finite),
    numbers=st.tuples(counts, counts, counts, counts),
    seconds=st.floats(0, 1e6),
    weights=st.none() | state_dicts().filter(bool),
)
@settings(max_examples=50, deadline=None)
def test_fit_result_round_trip(losses, numbers, seconds, weights) -> None:
    result = FitResult(
        final_loss=losses[0],
        mean_loss=losses[1],
        samples=numbers[0],
        batches=numbers[1],
        epochs=numbers[2],
        seconds=seconds,
        dataset_size=numbers[3],
        weights=weights,
    )
    back = codec.fit_result_from_proto(_wire(codec.fit_result_to_proto(result)))
    assert dataclasses.replace(back, weights=None) == dataclasses.replace(result, weights=None)
    assert _same_weights(back.weights, weights)


@given(
    loss=st.none() | finite,
    correct=counts,
    total=counts,
    histograms=st.tuples(st.lists(counts, max_size=5), st.lists(counts, max_size=5)),
    kind=st.sampled_from(EvaluateKind),
    errors=st.tuples(st.none() | finite, st.none() | finite),
)
@settings(max_examples=50, deadline=None)
def test_evaluate_result_round_trip(loss, correct, total, histograms, kind, errors) -> None:
    result = EvaluateResult(
        loss=loss,
        correct=correct,
        total=total,
        prediction_histogram=histograms[0],
        target_histogram=histograms[1],
        kind=kind,
        mean_squared_error=errors[0],
        mean_absolute_error=errors[1],
    )
    assert codec.evaluate_result_from_proto(_wire(codec.evaluate_result_to_proto(result))) == result


def test_evaluate_reply_of_an_older_server_is_a_classification() -> None:
    # a reply without the kind and the errors, as a server that predates them sends (section 12.5.16)
    old = training_pb2.EvaluateReply(loss=0.5, correct=3, total=4)
    assert old.kind == training_pb2.EVALUATE_KIND_UNSPECIFIED
    result = codec.evaluate_result_from_proto(_wire(old))
    assert result.kind is EvaluateKind.CLASSIFICATION
    assert (result.correct, result.mean_squared_error, result.mean_absolute_error) == (3, None, None)


def test_evaluate_kinds_the_protocol_does_not_define_are_refused() -> None:
    assert codec.evaluate_kind_from_proto(training_pb2.EVALUATE_KIND_UNSPECIFIED) is None
    with pytest.raises(InvalidArgumentError, match="unknown evaluate kind 9") as caught:
        codec.evaluate_request_from_proto(training_pb2.EvaluateRequest(dataset_key="d", kind=9))  # type: ignore[arg-type]
    assert caught.value.details == {"field": "kind"}
    with pytest.raises(InvalidArgumentError, match="unknown evaluate kind 3"):
        codec.evaluate_result_from_proto(training_pb2.EvaluateReply(kind=3))  # type: ignore[arg-type]


@given(count=counts, state=st.lists(names, max_size=4).map(tuple), weights_only=st.booleans())
def test_model_summary_and_catalog_round_trip(count: int, state: tuple[str, ...], weights_only: bool) -> None:
    summary = ModelSummary(parameter_count=count, state_names=state)
    assert codec.model_summary_from_proto(_wire(codec.model_summary_to_proto(summary))) == summary
    catalog = ModelCatalog(names=state, weights_only=weights_only)
    assert codec.model_catalog_from_proto(_wire(codec.model_catalog_to_proto(catalog))) == catalog


# -- requests and replies ---------------------------------------------------------------------------


@given(
    key=names,
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    n=u32,
    kind=st.none() | st.sampled_from(EvaluateKind),
)
def test_fit_and_evaluate_requests_round_trip(
    key: str, flags: tuple[bool, ...], n: int, kind: EvaluateKind | None
) -> None:
    fit = FitOptions(dataset_key=key, return_weights=flags[0], progress_every=n)
    assert codec.fit_request_from_proto(_wire(codec.fit_request_to_proto(fit))) == fit
    evaluate = EvaluateOptions(
        dataset_key=key,
        return_histograms=flags[1],
        nr_bins=n,
        return_loss=flags[2],
        return_raw_accuracy=flags[3],
        batch_size=n,
        kind=kind,
    )
    assert codec.evaluate_request_from_proto(_wire(codec.evaluate_request_to_proto(evaluate))) == evaluate


def test_request_options_mirror_their_messages() -> None:
    # _same_named copies fields by name: a field added to the message must be added to the record too
    for record, message in [
        (FitOptions, training_pb2.FitRequest),
        (EvaluateOptions, training_pb2.EvaluateRequest),
        (FitProgressEvent, training_pb2.FitProgress),
    ]:
        assert [f.name for f in dataclasses.fields(record)] == [f.name for f in message.DESCRIPTOR.fields]


@given(method=names, args=st.lists(values, max_size=3), kwargs=st.dictionaries(names, values, max_size=3))
@settings(max_examples=100, deadline=None)
def test_call_request_and_reply_round_trip(
    method: str, args: list[object], kwargs: dict[str, object]
) -> None:
    request = codec.call_request_to_proto(method, args, kwargs)
    assert codec.call_request_from_proto(_wire(request)) == (method, args, kwargs)
    assert codec.call_reply_from_proto(_wire(codec.call_reply_to_proto(kwargs))) == kwargs


@pytest.mark.parametrize("kind", ["delete_object", "count_objects", "clear_objects", "set_weights"])
@given(count=st.integers(0, 2**64 - 1))
def test_count_replies_round_trip(kind: str, count: int) -> None:
    reply = codec.count_reply_to_proto(kind, count)
    assert codec.count_reply_from_proto(_wire(reply)) == count
    assert envelope_pb2.Envelope(**{f"{kind}_reply": reply}).WhichOneof("body") == f"{kind}_reply"


@pytest.mark.parametrize("kind", ["get_object", "delete_object"])
@given(object_id=names)
def test_object_id_requests_round_trip(kind: str, object_id: str) -> None:
    request = codec.object_id_request_to_proto(kind, object_id)
    assert codec.object_id_request_from_proto(_wire(request)) == object_id
    assert envelope_pb2.Envelope(**{kind: request}).WhichOneof("body") == kind


def test_empty_requests_fit_their_envelope_field() -> None:
    kinds = ["list_objects", "count_objects", "clear_objects", "list_datasets", "list_methods"]
    for kind in [*kinds, "list_models"]:
        request = codec.empty_request(kind)
        assert not request.DESCRIPTOR.fields
        assert envelope_pb2.Envelope(**{kind: request}).WhichOneof("body") == kind


def test_shared_shapes_refuse_other_kinds() -> None:
    with pytest.raises(InvalidArgumentError, match="not one of"):
        codec.empty_request("fit")
    with pytest.raises(InvalidArgumentError, match="not one of"):
        codec.count_reply_to_proto("fit", 1)
    with pytest.raises(InvalidArgumentError, match="not one of"):
        codec.count_reply_from_proto(training_pb2.FitReply())
    with pytest.raises(InvalidArgumentError, match="not one of"):
        codec.object_id_request_to_proto("list_objects", "x")
    with pytest.raises(InvalidArgumentError, match="carries no tensor"):
        codec.send_object_request_from_proto(objects_pb2.SendObjectRequest(id="x"))


object_infos = st.builds(
    lambda object_id, tags, description, shape, dtype: ObjectInfo(
        id=object_id,
        tags=tuple(tags),
        description=description,
        tensor=TensorInfo(dtype=dtype, shape=shape, nbytes=math.prod(shape) * dtype.itemsize),
    ),
    names,
    st.lists(names, max_size=3),
    names,
    shapes,
    st.sampled_from(ALL_DTYPES),
)


@given(infos=st.lists(object_infos, max_size=3), kind=st.sampled_from(["list_objects", "search_objects"]))
@settings(max_examples=50, deadline=None)
def test_object_replies_round_trip(infos: list[ObjectInfo], kind: str) -> None:
    assert codec.object_list_reply_from_proto(_wire(codec.object_list_reply_to_proto(kind, infos))) == infos
    for info in infos:
        assert codec.send_object_reply_from_proto(_wire(codec.send_object_reply_to_proto(info))) == info
    tags = [tag for info in infos for tag in info.tags]
    assert codec.search_request_from_proto(_wire(codec.search_request_to_proto(tags))) == tuple(tags)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@given(info=object_infos, overwrite=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=10, deadline=None)
def test_send_object_request_and_get_object_reply_round_trip(
    dtype: torch.dtype, info: ObjectInfo, overwrite: bool, seed: int
) -> None:
    tensor = _random_tensor(dtype, info.shape, seed)
    tensor_info, view = codec.tensor_payload(tensor)
    info = dataclasses.replace(info, tensor=tensor_info)
    chunked = codec.send_object_request_to_proto(info, overwrite=overwrite, chunked=True)
    assert codec.send_object_request_from_proto(_wire(chunked)) == (info, overwrite)
    inline = codec.send_object_request_to_proto(info, overwrite=overwrite, chunked=False)
    frame = codec.encode_with_payload(
        envelope_pb2.Envelope(request_id=1, send_object=inline), ("send_object", "tensor", "data"), view
    )
    assert codec.send_object_request_from_proto(codec.decode_envelope(frame).send_object) == (info, overwrite)

    inline_reply = _wire(codec.get_object_reply_to_proto(info, tensor))
    assert _same(codec.get_object_reply_from_proto(inline_reply), tensor.contiguous())
    chunked_reply = _wire(codec.get_object_reply_to_proto(info, None))
    assert not chunked_reply.HasField("tensor")
    assert _same(codec.get_object_reply_from_proto(chunked_reply, bytearray(view)), tensor.contiguous())


@given(weights=state_dicts(), strict=st.booleans())
@settings(max_examples=50, deadline=None)
def test_weights_request_and_reply_round_trip(weights: dict[str, torch.Tensor], strict: bool) -> None:
    back, back_strict = codec.set_weights_request_from_proto(
        _wire(codec.set_weights_request_to_proto(weights, strict=strict))
    )
    assert _same_weights(back, weights) and back_strict is strict
    assert _same_weights(
        codec.weights_reply_from_proto(_wire(codec.weights_reply_to_proto(weights))), weights
    )


def test_listings_and_ping_round_trip() -> None:
    datasets = [
        DatasetDescription(
            key="xor",
            sample_count=4,
            feature_shape=(2,),
            target_shape=(),
            feature_dtype=torch.float32,
            target_dtype=torch.int64,
            description="d",
        )
    ]
    assert codec.datasets_reply_from_proto(_wire(codec.datasets_reply_to_proto(datasets))) == datasets
    methods = [MethodInfo(name="m", parameters=(ParameterInfo(name="a", type="int"),))]
    assert codec.methods_reply_from_proto(_wire(codec.methods_reply_to_proto(methods))) == methods
    assert codec.ping_from_proto(_wire(codec.ping_to_proto(b"\x00p"))) == b"\x00p"


def test_codec_imports_no_training_code() -> None:
    # the codec converts records; the training engine (and torch.optim and losses with it) stays apart
    tree = ast.parse(inspect.getsource(codec))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert not {name for name in imported if name.startswith(("fedproto.training", "fedproto.federated"))}


def test_a_payload_buffer_becomes_the_tensor_without_a_copy() -> None:
    buffer = codec.payload_buffer(12)
    assert buffer.nbytes == 12 and not buffer.readonly
    buffer[:] = np.arange(3, dtype="<f4").tobytes()
    tensor = codec.tensor_from_bytes(codec.dtype_to_proto(torch.float32), (3,), buffer)
    assert tensor.tolist() == [0.0, 1.0, 2.0]
    buffer[0:4] = np.float32(7).tobytes()  # the same memory: received into its final place
    assert tensor[0].item() == 7.0
    read_only = memoryview(bytes(buffer))
    copied = codec.tensor_from_bytes(codec.dtype_to_proto(torch.float32), (3,), read_only)
    copied[0] = 1.0  # a read-only buffer is copied, so the tensor may still be changed


def test_weights_manifest_round_trips_and_views_its_payload() -> None:
    weights = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "steps": torch.tensor(3, dtype=torch.int64),
        "none": torch.zeros(0, 4),
        "flag": torch.tensor([True, False]),
    }
    manifest, parts = codec.weights_manifest_of(weights)
    assert [(e.offset, e.nbytes) for e in manifest.entries] == [(0, 24), (24, 8), (32, 0), (32, 2)]
    assert manifest.total_bytes == 34
    assert codec.weights_manifest_from_proto(codec.weights_manifest_to_proto(manifest)) == manifest
    payload = bytearray(b"".join(bytes(part) for part in parts))
    loaded = codec.weights_from_payload(manifest, payload)
    assert all(torch.equal(loaded[name], tensor) for name, tensor in weights.items())
    assert codec.get_weights_request_from_proto(codec.get_weights_request_to_proto(chunked=True))


def test_a_weights_manifest_that_does_not_add_up_is_invalid() -> None:
    manifest, _ = codec.weights_manifest_of({"a": torch.ones(2), "b": torch.ones(3)})
    message = codec.weights_manifest_to_proto(manifest)
    message.total_bytes += 1
    with pytest.raises(InvalidArgumentError, match="add up"):
        codec.weights_manifest_from_proto(message)
    message = codec.weights_manifest_to_proto(manifest)
    message.entries[1].offset = 4
    with pytest.raises(InvalidArgumentError, match="starts at byte 4, expected 8"):
        codec.weights_manifest_from_proto(message)
    message = codec.weights_manifest_to_proto(manifest)
    message.entries[1].name = ""
    with pytest.raises(InvalidArgumentError, match="empty name"):
        codec.weights_manifest_from_proto(message)
    with pytest.raises(InvalidArgumentError, match="holds bytes other than 0 and 1"):
        flag, _ = codec.weights_manifest_of({"flag": torch.tensor([True])})
        codec.weights_from_payload(flag, bytearray(b"\x02"))
