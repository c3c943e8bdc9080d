"""The one place where Python values and protocol messages meet.

Every conversion between the generated protobuf classes (imported with a ``Proto`` prefix so they never
shadow domain classes) and Python lives here, as symmetric ``x_to_proto`` / ``x_from_proto`` pairs:
tensors (torch and numpy), ``Value`` unions, errors, metadata and training records (the frozen
dataclasses of :mod:`fedproto.types`), the body of every request and reply, and whole envelopes. Decoding
hostile input raises only :class:`~fedproto.errors.MalformedError` (for bytes that are not an envelope)
or :class:`~fedproto.errors.InvalidArgumentError` (for an envelope whose content breaks a rule).
The codec knows records, never the code that produces them: it imports no training engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError, Message

from fedproto.datasets import DatasetDescription
from fedproto.errors import (
    ErrorCode,
    InvalidArgumentError,
    MalformedError,
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
    ServerInfo,
    TensorInfo,
    TrainSpec,
    WeightsEntry,
    WeightsManifest,
)
from fedproto_pb.v1 import tensor_pb2
from fedproto_pb.v1.calls_pb2 import CallReply as ProtoCallReply
from fedproto_pb.v1.calls_pb2 import CallRequest as ProtoCallRequest
from fedproto_pb.v1.calls_pb2 import ListMethodsReply as ProtoListMethodsReply
from fedproto_pb.v1.calls_pb2 import ListMethodsRequest as ProtoListMethodsRequest
from fedproto_pb.v1.calls_pb2 import MethodInfo as ProtoMethodInfo
from fedproto_pb.v1.calls_pb2 import ParameterInfo as ProtoParameterInfo
from fedproto_pb.v1.datasets_pb2 import DatasetInfo as ProtoDatasetInfo
from fedproto_pb.v1.datasets_pb2 import ListDatasetsReply as ProtoListDatasetsReply
from fedproto_pb.v1.datasets_pb2 import ListDatasetsRequest as ProtoListDatasetsRequest
from fedproto_pb.v1.envelope_pb2 import Envelope as ProtoEnvelope
from fedproto_pb.v1.errors_pb2 import Error as ProtoError
from fedproto_pb.v1.objects_pb2 import ClearObjectsReply as ProtoClearObjectsReply
from fedproto_pb.v1.objects_pb2 import ClearObjectsRequest as ProtoClearObjectsRequest
from fedproto_pb.v1.objects_pb2 import CountObjectsReply as ProtoCountObjectsReply
from fedproto_pb.v1.objects_pb2 import CountObjectsRequest as ProtoCountObjectsRequest
from fedproto_pb.v1.objects_pb2 import DeleteObjectReply as ProtoDeleteObjectReply
from fedproto_pb.v1.objects_pb2 import DeleteObjectRequest as ProtoDeleteObjectRequest
from fedproto_pb.v1.objects_pb2 import GetObjectReply as ProtoGetObjectReply
from fedproto_pb.v1.objects_pb2 import GetObjectRequest as ProtoGetObjectRequest
from fedproto_pb.v1.objects_pb2 import ListObjectsReply as ProtoListObjectsReply
from fedproto_pb.v1.objects_pb2 import ListObjectsRequest as ProtoListObjectsRequest
from fedproto_pb.v1.objects_pb2 import ObjectInfo as ProtoObjectInfo
from fedproto_pb.v1.objects_pb2 import SearchObjectsReply as ProtoSearchObjectsReply
from fedproto_pb.v1.objects_pb2 import SearchObjectsRequest as ProtoSearchObjectsRequest
from fedproto_pb.v1.objects_pb2 import SendObjectReply as ProtoSendObjectReply
from fedproto_pb.v1.objects_pb2 import SendObjectRequest as ProtoSendObjectRequest
from fedproto_pb.v1.session_pb2 import Limits as ProtoLimits
from fedproto_pb.v1.session_pb2 import Ping as ProtoPing
from fedproto_pb.v1.session_pb2 import Welcome as ProtoWelcome
from fedproto_pb.v1.tensor_pb2 import NamedTensor as ProtoNamedTensor
from fedproto_pb.v1.tensor_pb2 import Tensor as ProtoTensor
from fedproto_pb.v1.tensor_pb2 import TensorInfo as ProtoTensorInfo
from fedproto_pb.v1.training_pb2 import (
    EVALUATE_KIND_CLASSIFICATION,
    EVALUATE_KIND_REGRESSION,
    EVALUATE_KIND_UNSPECIFIED,
)
from fedproto_pb.v1.training_pb2 import EvaluateKind as ProtoEvaluateKind
from fedproto_pb.v1.training_pb2 import EvaluateReply as ProtoEvaluateReply
from fedproto_pb.v1.training_pb2 import EvaluateRequest as ProtoEvaluateRequest
from fedproto_pb.v1.training_pb2 import FitProgress as ProtoFitProgress
from fedproto_pb.v1.training_pb2 import FitReply as ProtoFitReply
from fedproto_pb.v1.training_pb2 import FitRequest as ProtoFitRequest
from fedproto_pb.v1.training_pb2 import GetWeightsReply as ProtoGetWeightsReply
from fedproto_pb.v1.training_pb2 import GetWeightsRequest as ProtoGetWeightsRequest
from fedproto_pb.v1.training_pb2 import ListModelsReply as ProtoListModelsReply
from fedproto_pb.v1.training_pb2 import ListModelsRequest as ProtoListModelsRequest
from fedproto_pb.v1.training_pb2 import SetTrainConfigReply as ProtoSetTrainConfigReply
from fedproto_pb.v1.training_pb2 import SetTrainConfigRequest as ProtoSetTrainConfigRequest
from fedproto_pb.v1.training_pb2 import SetWeightsReply as ProtoSetWeightsReply
from fedproto_pb.v1.training_pb2 import SetWeightsRequest as ProtoSetWeightsRequest
from fedproto_pb.v1.training_pb2 import TrainConfig as ProtoTrainConfig
from fedproto_pb.v1.training_pb2 import WeightsEntry as ProtoWeightsEntry
from fedproto_pb.v1.training_pb2 import WeightsManifest as ProtoWeightsManifest
from fedproto_pb.v1.value_pb2 import NULL_VALUE
from fedproto_pb.v1.value_pb2 import MapEntry as ProtoMapEntry
from fedproto_pb.v1.value_pb2 import Value as ProtoValue

__all__ = [
    "MAX_SEND_DEPTH",
    "MAX_VALUE_DEPTH",
    "ValueTooDeepError",
    "array_from_proto",
    "call_args_size",
    "call_reply_from_proto",
    "call_reply_to_proto",
    "call_request_from_proto",
    "call_request_to_proto",
    "check_tensor",
    "count_reply_from_proto",
    "count_reply_to_proto",
    "dataset_info_from_proto",
    "dataset_info_to_proto",
    "datasets_reply_from_proto",
    "datasets_reply_to_proto",
    "decode_chunk_frame",
    "decode_envelope",
    "dtype_from_proto",
    "dtype_to_proto",
    "dtype_width",
    "empty_request",
    "encode_chunk_frame",
    "encode_chunk_pieces",
    "encode_envelope",
    "encode_with_payload",
    "error_from_proto",
    "error_to_proto",
    "evaluate_kind_from_proto",
    "evaluate_kind_to_proto",
    "evaluate_request_from_proto",
    "evaluate_request_to_proto",
    "evaluate_result_from_proto",
    "evaluate_result_to_proto",
    "fit_progress_from_proto",
    "fit_progress_to_proto",
    "fit_request_from_proto",
    "fit_request_to_proto",
    "fit_result_from_proto",
    "fit_result_to_proto",
    "flat_tensor_view",
    "get_object_reply_from_proto",
    "get_object_reply_to_proto",
    "get_weights_request_from_proto",
    "get_weights_request_to_proto",
    "has_unknown_body",
    "inline_tensor_header",
    "limits_from_proto",
    "limits_to_proto",
    "method_info_from_proto",
    "method_info_to_proto",
    "methods_reply_from_proto",
    "methods_reply_to_proto",
    "model_catalog_from_proto",
    "model_catalog_to_proto",
    "model_summary_from_proto",
    "model_summary_to_proto",
    "named_tensors_from_proto",
    "named_tensors_to_proto",
    "object_id_request_from_proto",
    "object_id_request_to_proto",
    "object_info_from_proto",
    "object_info_to_proto",
    "object_list_reply_from_proto",
    "object_list_reply_to_proto",
    "payload_buffer",
    "ping_from_proto",
    "ping_to_proto",
    "search_request_from_proto",
    "search_request_to_proto",
    "send_object_reply_from_proto",
    "send_object_reply_to_proto",
    "send_object_request_from_proto",
    "send_object_request_to_proto",
    "server_info_from_welcome",
    "set_train_config_request_from_proto",
    "set_train_config_request_to_proto",
    "set_weights_chunked_request_to_proto",
    "set_weights_request_from_proto",
    "set_weights_request_payload",
    "set_weights_request_to_proto",
    "sha256",
    "tensor_from_bytes",
    "tensor_from_proto",
    "tensor_info_from_proto",
    "tensor_info_to_proto",
    "tensor_payload",
    "tensor_proto_from_payload",
    "tensor_to_proto",
    "train_spec_from_proto",
    "train_spec_to_proto",
    "value_from_proto",
    "value_to_proto",
    "values_from_entries",
    "values_to_entries",
    "weights_from_payload",
    "weights_manifest_from_proto",
    "weights_manifest_of",
    "weights_manifest_to_proto",
    "weights_reply_from_proto",
    "weights_reply_to_proto",
]

#: Nesting deeper than this in a received Value is refused (docs/protocol.md section 8.3.2).
MAX_VALUE_DEPTH = 64
#: The deepest Value this side sends: every receiver must accept 32 levels (section 8.3.5), and
#: protobuf's own parser stops near 33 levels of maps, so deeper values fail here, clearly, instead
#: (a server MUST NOT send deeper ones, section 8.3.6; a client SHOULD NOT, section 8.3.8).
MAX_SEND_DEPTH = 32


class ValueTooDeepError(InvalidArgumentError):
    """A Value nests deeper than this side receives (section 8.3.2) or sends (section 8.3.6).

    An ``INVALID_ARGUMENT`` with ``details["limit"]``, the depth allowed. It is a class of its own so that
    a worker can tell a result too deep to send, which it answers ``INVALID_ARGUMENT`` (section 8.3.7),
    from a result that is no Value at all, which is its method's fault (``INTERNAL``, section 11.4.4).
    """


def _too_deep(limit: int) -> ValueTooDeepError:
    return ValueTooDeepError(
        f"value nests deeper than {limit} levels (docs/protocol.md section 8.3)",
        details={"limit": str(limit)},
    )


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# --------------------------------------------------------------------------------------------------
# dtypes

_TORCH_BY_CODE: dict[int, torch.dtype] = {
    tensor_pb2.DTYPE_FLOAT16: torch.float16,
    tensor_pb2.DTYPE_FLOAT32: torch.float32,
    tensor_pb2.DTYPE_FLOAT64: torch.float64,
    tensor_pb2.DTYPE_BFLOAT16: torch.bfloat16,
    tensor_pb2.DTYPE_INT8: torch.int8,
    tensor_pb2.DTYPE_INT16: torch.int16,
    tensor_pb2.DTYPE_INT32: torch.int32,
    tensor_pb2.DTYPE_INT64: torch.int64,
    tensor_pb2.DTYPE_UINT8: torch.uint8,
    tensor_pb2.DTYPE_BOOL: torch.bool,
    tensor_pb2.DTYPE_COMPLEX64: torch.complex64,
    tensor_pb2.DTYPE_COMPLEX128: torch.complex128,
}
_CODE_BY_TORCH: dict[torch.dtype, Any] = {v: k for k, v in _TORCH_BY_CODE.items()}
_NUMPY_BY_CODE: dict[int, np.dtype[Any]] = {
    code: np.dtype(str(dt).removeprefix("torch.")).newbyteorder("<")
    for code, dt in _TORCH_BY_CODE.items()
    if dt is not torch.bfloat16
}
_WIDTH_BY_CODE: dict[int, int] = {
    code: torch.empty((), dtype=dt).element_size() for code, dt in _TORCH_BY_CODE.items()
}


def dtype_to_proto(dtype: torch.dtype | np.dtype[Any]) -> Any:
    """Return the wire ``DType`` code of a torch or numpy dtype."""
    if isinstance(dtype, torch.dtype):
        code = _CODE_BY_TORCH.get(dtype)
    else:
        torch_dtype = _torch_dtype_of_numpy(np.dtype(dtype))
        code = _CODE_BY_TORCH.get(torch_dtype) if torch_dtype is not None else None
    if code is None:
        raise InvalidArgumentError(f"dtype {dtype} has no wire representation")
    return code


def dtype_from_proto(code: int) -> torch.dtype:
    """Return the torch dtype of a wire ``DType`` code (INVALID_ARGUMENT for unknown codes)."""
    try:
        return _TORCH_BY_CODE[code]
    except KeyError:
        raise InvalidArgumentError(f"unknown or unspecified dtype code {code}") from None


def dtype_width(code: int) -> int:
    """Return the byte width of one element of a wire ``DType`` code."""
    try:
        return _WIDTH_BY_CODE[code]
    except KeyError:
        raise InvalidArgumentError(f"unknown or unspecified dtype code {code}") from None


def _torch_dtype_of_numpy(dtype: np.dtype[Any]) -> torch.dtype | None:
    try:
        return torch.from_numpy(np.empty(0, dtype=dtype.newbyteorder("="))).dtype
    except TypeError:
        return None


# --------------------------------------------------------------------------------------------------
# tensors


def tensor_payload(value: torch.Tensor | np.ndarray[Any, Any]) -> tuple[TensorInfo, memoryview]:
    """Return a tensor's metadata and a read-only little-endian byte view of its elements.

    The view aliases the tensor's memory when it is already contiguous, on the CPU and little-endian,
    so chunked uploads of large tensors never copy the whole payload. ``sha256`` is left empty: callers
    that need it (chunked transfers) compute it once with :func:`sha256`.
    """
    array = _as_le_array(value)
    shape = tuple(int(d) for d in value.shape)
    dtype = value.dtype if isinstance(value, torch.Tensor) else _torch_dtype_of_numpy(array.dtype)
    if dtype is None or dtype not in _CODE_BY_TORCH:
        raise InvalidArgumentError(f"dtype {value.dtype} has no wire representation")
    view = memoryview(array.reshape(-1)).cast("B") if array.size else memoryview(b"")  # type: ignore[arg-type]
    return TensorInfo(dtype=dtype, shape=shape, nbytes=view.nbytes), view


def _as_le_array(value: torch.Tensor | np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A contiguous little-endian numpy view (or copy, only when needed) of a tensor's elements."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.is_conj():
            tensor = tensor.resolve_conj()
        if tensor.is_neg():
            tensor = tensor.resolve_neg()
        tensor = tensor.contiguous()
        if tensor.dtype not in _CODE_BY_TORCH:
            raise InvalidArgumentError(f"dtype {tensor.dtype} has no wire representation")
        if tensor.dtype is torch.bfloat16:
            # numpy has no bfloat16; the bit pattern travels unchanged as 16-bit integers.
            tensor = tensor.view(torch.int16)
        array = tensor.numpy()
        if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
            array = array.astype(array.dtype.newbyteorder("<"))
        return array
    if isinstance(value, np.ndarray):
        array = value
        if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder != "little"):
            array = array.astype(array.dtype.newbyteorder("<"))
        # not np.ascontiguousarray: it turns 0-d arrays into 1-d ones
        return array if array.flags.c_contiguous else array.copy(order="C")
    raise InvalidArgumentError(f"expected a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    """Return the SHA-256 digest of a payload (the integrity check of chunked transfers)."""
    return hashlib.sha256(data).digest()


def tensor_to_proto(value: torch.Tensor | np.ndarray[Any, Any]) -> ProtoTensor:
    """Encode a torch tensor or numpy array (any supported dtype, any shape, any strides)."""
    info, view = tensor_payload(value)
    return ProtoTensor(dtype=_CODE_BY_TORCH[info.dtype], shape=info.shape, data=view.tobytes())


def tensor_proto_from_payload(info: TensorInfo, view: memoryview) -> ProtoTensor:
    """Build a wire ``Tensor`` from metadata and a payload view (as returned by :func:`tensor_payload`)."""
    message = inline_tensor_header(info)
    message.data = view.tobytes()
    return message


def inline_tensor_header(info: TensorInfo) -> ProtoTensor:
    """The wire ``Tensor`` of an inline tensor without its elements: dtype and shape (section 7.2).

    Senders put it in their message and hand the elements to :func:`encode_with_payload` at the path
    ending in ``"tensor", "data"``, so a big inline tensor is copied once, straight into the frame.
    """
    return ProtoTensor(dtype=dtype_to_proto(info.dtype), shape=info.shape)


def _check_layout(code: Any, shape: Sequence[int], nbytes: int) -> tuple[torch.dtype, tuple[int, ...]]:
    dtype = dtype_from_proto(code)
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise InvalidArgumentError(f"negative dimension in shape {list(dims)}")
    expected = math.prod(dims) * _WIDTH_BY_CODE[code]
    if expected != nbytes:
        raise InvalidArgumentError(
            f"tensor payload is {nbytes} bytes but dtype {dtype} and shape {list(dims)} need {expected}"
        )
    return dtype, dims


def payload_buffer(nbytes: int) -> memoryview:
    """A writable buffer of ``nbytes`` for a payload about to arrive, left uninitialized.

    A chunked transfer writes every byte of it exactly once, so zeroing it first (as ``bytearray(n)``
    does) is a wasted pass over memory: for 256 MiB that pass took 0.14 s here, against 0.03 s to fill
    numpy's uninitialized, huge-page backed allocation. :func:`tensor_from_bytes` wraps it without a copy.
    """
    return np.empty(nbytes, dtype=np.uint8).data.cast("B")


def tensor_from_bytes(
    code: Any, shape: Sequence[int], buffer: bytes | bytearray | memoryview
) -> torch.Tensor:
    """Build a tensor from a dtype code, a shape and its little-endian payload.

    A writable buffer (a ``bytearray``, or a writable ``memoryview`` such as :func:`payload_buffer`'s) is
    wrapped without copying (``torch.frombuffer``): the caller hands it over. A read-only one is copied
    once so that the caller gets a tensor it may modify in place.
    """
    view = memoryview(buffer)
    nbytes = view.nbytes
    dtype, dims = _check_layout(code, shape, nbytes)
    if nbytes == 0:
        return torch.empty(dims, dtype=dtype)
    writable: bytearray | memoryview
    if isinstance(buffer, bytearray):
        writable = buffer
    elif not view.readonly and view.contiguous:
        writable = view.cast("B")
    else:
        writable = bytearray(buffer)
    if dtype is torch.bool and np.frombuffer(writable, dtype=np.uint8).max() > 1:
        raise InvalidArgumentError("bool tensor holds bytes other than 0 and 1")
    if dtype is torch.bfloat16:
        flat = torch.frombuffer(writable, dtype=torch.int16).view(torch.bfloat16)
    else:
        flat = torch.frombuffer(writable, dtype=dtype)
    return flat.reshape(dims)


def flat_tensor_view(dtype: torch.dtype, data: bytes | bytearray | memoryview) -> torch.Tensor:
    """A flat tensor of ``dtype`` over little-endian ``data`` without copying it, read-only in spirit.

    The tensor aliases ``data`` (a received frame, say), so it must not be written to nor outlive it.
    ``data`` holds whole elements.
    """
    view = memoryview(data).cast("B")
    if view.nbytes == 0:
        return torch.empty(0, dtype=dtype)
    # numpy reads a read-only buffer without complaint; torch would warn about writes it cannot forbid
    array = np.frombuffer(
        view, dtype=np.int16 if dtype is torch.bfloat16 else _NUMPY_BY_CODE[_CODE_BY_TORCH[dtype]]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if dtype is torch.bfloat16 else tensor


def tensor_from_proto(message: ProtoTensor) -> torch.Tensor:
    """Decode a wire ``Tensor`` into a torch tensor (INVALID_ARGUMENT when it breaks section 7.2)."""
    return tensor_from_bytes(message.dtype, message.shape, message.data)


def array_from_proto(message: ProtoTensor) -> np.ndarray[Any, Any]:
    """Decode a wire ``Tensor`` into a numpy array (bfloat16 has no numpy type: INVALID_ARGUMENT)."""
    if message.dtype == tensor_pb2.DTYPE_BFLOAT16:
        raise InvalidArgumentError("bfloat16 tensors have no numpy representation; decode to torch")
    tensor = tensor_from_proto(message)
    return tensor.numpy()


def check_tensor(message: ProtoTensor) -> TensorInfo:
    """Validate a wire ``Tensor`` without building it (section 7.2); returns its metadata."""
    dtype, dims = _check_layout(message.dtype, message.shape, len(message.data))
    if dtype is torch.bool and message.data and max(message.data) > 1:
        raise InvalidArgumentError("bool tensor holds bytes other than 0 and 1")
    return TensorInfo(dtype=dtype, shape=dims, nbytes=len(message.data))


def tensor_info_to_proto(info: TensorInfo) -> ProtoTensorInfo:
    """Encode tensor metadata."""
    return ProtoTensorInfo(
        dtype=dtype_to_proto(info.dtype),
        shape=info.shape,
        nbytes=info.nbytes,
        sha256=info.sha256,
        digest=info.digest,
    )


def tensor_info_from_proto(message: ProtoTensorInfo) -> TensorInfo:
    """Decode tensor metadata, checking that nbytes fits the dtype and shape."""
    dtype, dims = _check_layout(message.dtype, message.shape, message.nbytes)
    return TensorInfo(
        dtype=dtype, shape=dims, nbytes=message.nbytes, sha256=message.sha256, digest=message.digest
    )


def named_tensors_to_proto(weights: Mapping[str, torch.Tensor]) -> list[ProtoNamedTensor]:
    """Encode a state dict (name -> tensor), keeping its order."""
    return [ProtoNamedTensor(name=name, tensor=tensor_to_proto(t)) for name, t in weights.items()]


def named_tensors_from_proto(messages: Sequence[ProtoNamedTensor]) -> dict[str, torch.Tensor]:
    """Decode named tensors into an ordered dict; duplicate names are INVALID_ARGUMENT."""
    out: dict[str, torch.Tensor] = {}
    for item in messages:
        if item.name in out:
            raise InvalidArgumentError(f"duplicate tensor name {item.name!r}")
        out[item.name] = tensor_from_proto(item.tensor)
    return out


# --------------------------------------------------------------------------------------------------
# values


def value_to_proto(obj: Any, *, _depth: int = 0) -> ProtoValue:
    """Encode a Python value as a wire ``Value`` (section 8).

    None, bool, int (64-bit), float, str, bytes-likes, torch tensors, numpy arrays and scalars, lists and
    tuples, and dicts with string keys. Anything else is INVALID_ARGUMENT: nothing is ever pickled.
    """
    if _depth >= MAX_SEND_DEPTH:  # _depth counts from 0: this value is at level _depth + 1
        raise _too_deep(MAX_SEND_DEPTH)
    if obj is None:
        return ProtoValue(null_value=NULL_VALUE)
    if isinstance(obj, (bool, np.bool_)):
        return ProtoValue(bool_value=bool(obj))
    if isinstance(obj, (int, np.integer)):
        number = int(obj)
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise InvalidArgumentError(f"integer {number} does not fit in 64 bits")
        return ProtoValue(int_value=number)
    if isinstance(obj, (float, np.floating)):
        return ProtoValue(double_value=float(obj))
    if isinstance(obj, str):
        return ProtoValue(string_value=obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return ProtoValue(bytes_value=bytes(obj))
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return ProtoValue(tensor_value=tensor_to_proto(obj))
    if isinstance(obj, (list, tuple)):
        message = ProtoValue()
        items = message.list_value.items
        for item in obj:
            items.append(value_to_proto(item, _depth=_depth + 1))
        if not obj:
            message.list_value.SetInParent()
        return message
    if isinstance(obj, Mapping):
        message = ProtoValue()
        message.map_value.SetInParent()
        message.map_value.entries.extend(values_to_entries(obj, _depth=_depth + 1))
        return message
    raise InvalidArgumentError(f"cannot encode a {type(obj).__name__} as a protocol Value")


def values_to_entries(mapping: Mapping[Any, Any], *, _depth: int = 0) -> list[ProtoMapEntry]:
    """Encode a str-keyed mapping as ordered ``MapEntry`` items (keyword arguments, map values)."""
    entries = []
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise InvalidArgumentError(f"map keys must be strings, got {type(key).__name__}")
        entries.append(ProtoMapEntry(key=key, value=value_to_proto(item, _depth=_depth)))
    return entries


def value_from_proto(message: ProtoValue, *, _depth: int = 0) -> Any:
    """Decode a wire ``Value`` into a Python value (tensors become torch tensors)."""
    if _depth >= MAX_VALUE_DEPTH:  # _depth counts from 0: this value is at level _depth + 1
        raise _too_deep(MAX_VALUE_DEPTH)
    kind = message.WhichOneof("kind")
    if kind == "null_value":
        return None
    if kind == "bool_value":
        return message.bool_value
    if kind == "int_value":
        return message.int_value
    if kind == "double_value":
        return message.double_value
    if kind == "string_value":
        return message.string_value
    if kind == "bytes_value":
        return message.bytes_value
    if kind == "tensor_value":
        return tensor_from_proto(message.tensor_value)
    if kind == "list_value":
        return [value_from_proto(item, _depth=_depth + 1) for item in message.list_value.items]
    if kind == "map_value":
        return values_from_entries(message.map_value.entries, _depth=_depth + 1)
    raise InvalidArgumentError("a Value has no kind set")


def values_from_entries(entries: Sequence[ProtoMapEntry], *, _depth: int = 0) -> dict[str, Any]:
    """Decode ordered ``MapEntry`` items; duplicate keys are INVALID_ARGUMENT."""
    out: dict[str, Any] = {}
    for entry in entries:
        if entry.key in out:
            raise InvalidArgumentError(f"duplicate map key {entry.key!r}")
        out[entry.key] = value_from_proto(entry.value, _depth=_depth)
    return out


# --------------------------------------------------------------------------------------------------
# errors


def error_to_proto(error: ProtocolError) -> ProtoError:
    """Encode a protocol exception as a wire ``Error``."""
    return ProtoError(code=error.code.value, message=error.message, details=error.details)


def error_from_proto(message: ProtoError) -> ProtocolError:
    """Decode a wire ``Error`` into the exception class of its code, marked as remote."""
    cls = error_class_for(message.code)
    error = cls(message.message, details=dict(message.details), remote=True)
    if cls.code != message.code and message.code != ErrorCode.UNSPECIFIED:
        error.details.setdefault("code", str(message.code))
    return error


# --------------------------------------------------------------------------------------------------
# metadata records


def object_info_to_proto(info: ObjectInfo) -> ProtoObjectInfo:
    """Encode an object's metadata."""
    return ProtoObjectInfo(
        id=info.id, tags=info.tags, description=info.description, tensor=tensor_info_to_proto(info.tensor)
    )


def object_info_from_proto(message: ProtoObjectInfo) -> ObjectInfo:
    """Decode an object's metadata."""
    return ObjectInfo(
        id=message.id,
        tags=tuple(message.tags),
        description=message.description,
        tensor=tensor_info_from_proto(message.tensor),
    )


def dataset_info_to_proto(info: DatasetDescription) -> ProtoDatasetInfo:
    """Encode a dataset's description (never its samples)."""
    return ProtoDatasetInfo(
        key=info.key,
        sample_count=info.sample_count,
        feature_shape=info.feature_shape,
        target_shape=info.target_shape,
        feature_dtype=dtype_to_proto(info.feature_dtype),
        target_dtype=dtype_to_proto(info.target_dtype),
        description=info.description,
    )


def dataset_info_from_proto(message: ProtoDatasetInfo) -> DatasetDescription:
    """Decode a dataset's description."""
    return DatasetDescription(
        key=message.key,
        sample_count=message.sample_count,
        feature_shape=tuple(message.feature_shape),
        target_shape=tuple(message.target_shape),
        feature_dtype=dtype_from_proto(message.feature_dtype),
        target_dtype=dtype_from_proto(message.target_dtype),
        description=message.description,
    )


def method_info_to_proto(info: MethodInfo) -> ProtoMethodInfo:
    """Encode an exposed method's description."""
    return ProtoMethodInfo(
        name=info.name,
        description=info.description,
        returns=info.returns,
        parameters=[
            ProtoParameterInfo(name=p.name, type=p.type, required=p.required, kind=p.kind)
            for p in info.parameters
        ],
    )


def method_info_from_proto(message: ProtoMethodInfo) -> MethodInfo:
    """Decode an exposed method's description."""
    return MethodInfo(
        name=message.name,
        description=message.description,
        returns=message.returns,
        parameters=tuple(
            ParameterInfo(name=p.name, type=p.type, required=p.required, kind=p.kind)
            for p in message.parameters
        ),
    )


def _same_named(source: Any, record: type[Any]) -> dict[str, Any]:
    """The values of ``source``'s attributes named like the fields of the dataclass ``record``."""
    return {f.name: getattr(source, f.name) for f in dataclasses.fields(record)}


def limits_to_proto(limits: Limits) -> ProtoLimits:
    """Encode a server's limits (the dataclass mirrors the message field for field)."""
    return ProtoLimits(**_same_named(limits, Limits))


def limits_from_proto(message: ProtoLimits) -> Limits:
    """Decode a server's limits."""
    return Limits(**_same_named(message, Limits))


def server_info_from_welcome(message: ProtoWelcome) -> ServerInfo:
    """Decode a Welcome into what the client keeps about the server."""
    return ServerInfo(
        version=message.version,
        server_id=message.server_id,
        server_name=message.server_name,
        capabilities=frozenset(message.capabilities),
        limits=limits_from_proto(message.limits),
        identity=message.identity,
        digest=message.digest or "sha256",  # an empty choice is SHA-256 (section 7.5.4)
    )


# --------------------------------------------------------------------------------------------------
# training


def train_spec_to_proto(spec: TrainSpec) -> ProtoTrainConfig:
    """Encode a train config (section 12.1)."""
    message = ProtoTrainConfig(
        optimizer=spec.optimizer,
        optimizer_args=values_to_entries(spec.optimizer_args),
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        shuffle=spec.shuffle,
        max_nr_batches=spec.max_nr_batches,
        initial_weights=named_tensors_to_proto(spec.initial_weights),
        proximal_mu=spec.proximal_mu,
        reset_optimizer=spec.reset_optimizer,
    )
    if spec.model_torchscript is not None:
        message.model_torchscript = spec.model_torchscript
    elif spec.registered_model is not None:
        message.registered_model = spec.registered_model
    elif spec.model_object is not None:
        message.model_object = spec.model_object
    if spec.loss_torchscript is not None:
        message.loss_torchscript = spec.loss_torchscript
    elif spec.loss_name is not None:
        message.loss_name = spec.loss_name
    if spec.seed is not None:
        message.seed = spec.seed
    return message


def train_spec_from_proto(message: ProtoTrainConfig) -> TrainSpec:
    """Decode a train config; what it means is checked by the training engine, not here."""
    model = message.WhichOneof("model")
    loss = message.WhichOneof("loss")
    return TrainSpec(
        model_torchscript=message.model_torchscript if model == "model_torchscript" else None,
        registered_model=message.registered_model if model == "registered_model" else None,
        model_object=message.model_object if model == "model_object" else None,
        loss_torchscript=message.loss_torchscript if loss == "loss_torchscript" else None,
        loss_name=message.loss_name if loss == "loss_name" else None,
        optimizer=message.optimizer,
        optimizer_args=values_from_entries(message.optimizer_args),
        batch_size=message.batch_size,
        epochs=message.epochs,
        shuffle=message.shuffle,
        max_nr_batches=message.max_nr_batches,
        seed=message.seed if message.HasField("seed") else None,
        initial_weights=named_tensors_from_proto(message.initial_weights),
        proximal_mu=message.proximal_mu,
        reset_optimizer=message.reset_optimizer,
    )


def model_summary_to_proto(summary: ModelSummary) -> ProtoSetTrainConfigReply:
    """Encode what a worker built from a train config (``SetTrainConfigReply``)."""
    return ProtoSetTrainConfigReply(parameter_count=summary.parameter_count, state_names=summary.state_names)


def model_summary_from_proto(message: ProtoSetTrainConfigReply) -> ModelSummary:
    """Decode what a worker built from a train config."""
    return ModelSummary(parameter_count=message.parameter_count, state_names=tuple(message.state_names))


def model_catalog_to_proto(catalog: ModelCatalog) -> ProtoListModelsReply:
    """Encode the architectures a worker registered (``ListModelsReply``).

    Names keep the order given: section 12.7.1 wants them sorted, as ``ModelRegistry.names()`` are.
    """
    return ProtoListModelsReply(names=catalog.names, weights_only=catalog.weights_only)


def model_catalog_from_proto(message: ProtoListModelsReply) -> ModelCatalog:
    """Decode the architectures a worker registered."""
    return ModelCatalog(names=tuple(message.names), weights_only=message.weights_only)


def fit_progress_to_proto(event: FitProgressEvent) -> ProtoFitProgress:
    """Encode a fit progress event (the dataclass mirrors the message field for field)."""
    return ProtoFitProgress(**_same_named(event, FitProgressEvent))


def fit_progress_from_proto(message: ProtoFitProgress) -> FitProgressEvent:
    """Decode a fit progress event."""
    return FitProgressEvent(**_same_named(message, FitProgressEvent))


def fit_result_to_proto(result: FitResult) -> ProtoFitReply:
    """Encode a fit's outcome (with the weights when they were asked for)."""
    return ProtoFitReply(
        final_loss=result.final_loss,
        mean_loss=result.mean_loss,
        samples=result.samples,
        batches=result.batches,
        epochs=result.epochs,
        seconds=result.seconds,
        dataset_size=result.dataset_size,
        weights=named_tensors_to_proto(result.weights or {}),
    )


def fit_result_from_proto(message: ProtoFitReply) -> FitResult:
    """Decode a fit's outcome (``weights`` is None when none were sent)."""
    return FitResult(
        final_loss=message.final_loss,
        mean_loss=message.mean_loss,
        samples=message.samples,
        batches=message.batches,
        epochs=message.epochs,
        seconds=message.seconds,
        dataset_size=message.dataset_size,
        weights=named_tensors_from_proto(message.weights) if message.weights else None,
    )


_EVALUATE_KINDS: dict[EvaluateKind, ProtoEvaluateKind] = {
    EvaluateKind.CLASSIFICATION: EVALUATE_KIND_CLASSIFICATION,
    EvaluateKind.REGRESSION: EVALUATE_KIND_REGRESSION,
}
_EVALUATE_KINDS_BY_CODE: dict[int, EvaluateKind] = {code: kind for kind, code in _EVALUATE_KINDS.items()}


def evaluate_kind_to_proto(kind: EvaluateKind | None) -> ProtoEvaluateKind:
    """Encode an evaluation kind (``EvaluateKind``); None is ``EVALUATE_KIND_UNSPECIFIED``."""
    return EVALUATE_KIND_UNSPECIFIED if kind is None else _EVALUATE_KINDS[kind]


def evaluate_kind_from_proto(code: int) -> EvaluateKind | None:
    """Decode an evaluation kind: None for unspecified, InvalidArgumentError for a value the protocol
    does not define (proto3 enums keep unknown numbers; section 12.5.11)."""
    if code == EVALUATE_KIND_UNSPECIFIED:
        return None
    try:
        return _EVALUATE_KINDS_BY_CODE[code]
    except KeyError:
        raise InvalidArgumentError(f"unknown evaluate kind {code}", details={"field": "kind"}) from None


def evaluate_result_to_proto(result: EvaluateResult) -> ProtoEvaluateReply:
    """Encode an evaluation's outcome."""
    message = ProtoEvaluateReply(
        correct=result.correct,
        total=result.total,
        prediction_histogram=result.prediction_histogram,
        target_histogram=result.target_histogram,
        kind=evaluate_kind_to_proto(result.kind),
    )
    if result.loss is not None:
        message.loss = result.loss
    if result.mean_squared_error is not None:
        message.mean_squared_error = result.mean_squared_error
    if result.mean_absolute_error is not None:
        message.mean_absolute_error = result.mean_absolute_error
    return message


def evaluate_result_from_proto(message: ProtoEvaluateReply) -> EvaluateResult:
    """Decode an evaluation's outcome; a reply without a kind (a server that predates it) is a
    classification (section 12.5.16)."""
    return EvaluateResult(
        loss=message.loss if message.HasField("loss") else None,
        correct=message.correct,
        total=message.total,
        prediction_histogram=list(message.prediction_histogram),
        target_histogram=list(message.target_histogram),
        kind=evaluate_kind_from_proto(message.kind) or EvaluateKind.CLASSIFICATION,
        mean_squared_error=message.mean_squared_error if message.HasField("mean_squared_error") else None,
        mean_absolute_error=(
            message.mean_absolute_error if message.HasField("mean_absolute_error") else None
        ),
    )


# --------------------------------------------------------------------------------------------------
# requests and replies
#
# The bodies a client sends and a worker answers, built from and read into the Python values above, so
# that neither side touches generated classes. Bodies that share a shape (an object id, a single count,
# a list of objects, no field at all) share one pair, told apart by the envelope's body kind.

_EMPTY_REQUESTS: dict[str, type[Message]] = {
    "list_objects": ProtoListObjectsRequest,
    "count_objects": ProtoCountObjectsRequest,
    "clear_objects": ProtoClearObjectsRequest,
    "list_datasets": ProtoListDatasetsRequest,
    "list_methods": ProtoListMethodsRequest,
    "list_models": ProtoListModelsRequest,
}
_OBJECT_ID_REQUESTS: dict[str, type[ProtoGetObjectRequest | ProtoDeleteObjectRequest]] = {
    "get_object": ProtoGetObjectRequest,
    "delete_object": ProtoDeleteObjectRequest,
}
_COUNT_REPLIES: dict[str, tuple[type[Message], str]] = {
    "delete_object": (ProtoDeleteObjectReply, "freed_bytes"),
    "count_objects": (ProtoCountObjectsReply, "count"),
    "clear_objects": (ProtoClearObjectsReply, "removed"),
    "set_weights": (ProtoSetWeightsReply, "updated"),
}
_COUNT_FIELDS = {message.DESCRIPTOR.name: name for message, name in _COUNT_REPLIES.values()}
_OBJECT_LIST_REPLIES: dict[str, type[ProtoListObjectsReply | ProtoSearchObjectsReply]] = {
    "list_objects": ProtoListObjectsReply,
    "search_objects": ProtoSearchObjectsReply,
}


def _kind(table: Mapping[str, Any], kind: str) -> Any:
    try:
        return table[kind]
    except KeyError:
        raise InvalidArgumentError(f"{kind!r} is not one of {', '.join(sorted(table))}") from None


def empty_request(kind: str) -> Message:
    """The body of a request that has no fields, by body kind (``"list_objects"``, ``"get_weights"``...)."""
    return _kind(_EMPTY_REQUESTS, kind)()


def ping_to_proto(payload: bytes = b"") -> ProtoPing:
    """Encode a Ping carrying ``payload`` (the server echoes it back)."""
    return ProtoPing(payload=payload)


def ping_from_proto(message: ProtoPing) -> bytes:
    """Decode a Ping's payload."""
    return message.payload


def object_id_request_to_proto(kind: str, object_id: str) -> ProtoGetObjectRequest | ProtoDeleteObjectRequest:
    """Encode a request that names one object: ``kind`` is ``"get_object"`` or ``"delete_object"``."""
    return _kind(_OBJECT_ID_REQUESTS, kind)(id=object_id)


def object_id_request_from_proto(message: ProtoGetObjectRequest | ProtoDeleteObjectRequest) -> str:
    """Decode the object id a get or delete request names."""
    return message.id


def search_request_to_proto(tags: Iterable[str]) -> ProtoSearchObjectsRequest:
    """Encode a search for the objects carrying every one of ``tags``."""
    return ProtoSearchObjectsRequest(tags=list(tags))


def search_request_from_proto(message: ProtoSearchObjectsRequest) -> tuple[str, ...]:
    """Decode a search's tags."""
    return tuple(message.tags)


def call_request_to_proto(method: str, args: Iterable[Any], kwargs: Mapping[str, Any]) -> ProtoCallRequest:
    """Encode a call of an exposed method with Value arguments (section 11)."""
    return ProtoCallRequest(
        method=method, args=[value_to_proto(a) for a in args], kwargs=values_to_entries(kwargs)
    )


def call_request_from_proto(message: ProtoCallRequest) -> tuple[str, list[Any], dict[str, Any]]:
    """Decode a call: the method's name, its positional and its keyword arguments."""
    args = [value_from_proto(a) for a in message.args]
    return message.method, args, values_from_entries(message.kwargs)


def call_reply_to_proto(result: Any) -> ProtoCallReply:
    """Encode what an exposed method returned."""
    return ProtoCallReply(result=value_to_proto(result))


def call_reply_from_proto(message: ProtoCallReply) -> Any:
    """Decode what an exposed method returned."""
    return value_from_proto(message.result)


def count_reply_to_proto(kind: str, count: int) -> Message:
    """Encode a reply that is one count, by body kind.

    The kinds are ``delete_object`` (bytes freed), ``count_objects``, ``clear_objects`` (objects removed)
    and ``set_weights`` (tensors replaced).
    """
    message_class, field_name = _kind(_COUNT_REPLIES, kind)
    return message_class(**{field_name: count})


def count_reply_from_proto(message: Message) -> int:
    """Decode the count of a reply that is one count."""
    field_name = _kind(_COUNT_FIELDS, message.DESCRIPTOR.name)
    return int(getattr(message, field_name))


def object_list_reply_to_proto(
    kind: str, infos: Iterable[ObjectInfo]
) -> ProtoListObjectsReply | ProtoSearchObjectsReply:
    """Encode objects' metadata as the reply of ``list_objects`` or ``search_objects``."""
    return _kind(_OBJECT_LIST_REPLIES, kind)(objects=[object_info_to_proto(info) for info in infos])


def object_list_reply_from_proto(
    message: ProtoListObjectsReply | ProtoSearchObjectsReply,
) -> list[ObjectInfo]:
    """Decode the objects' metadata of a ``list_objects`` or ``search_objects`` reply."""
    return [object_info_from_proto(info) for info in message.objects]


def send_object_request_to_proto(
    info: ObjectInfo, *, overwrite: bool, chunked: bool
) -> ProtoSendObjectRequest:
    """Encode the head of an upload: the object's id, tags, description and tensor metadata.

    The elements never go in here: a ``chunked`` upload names its tensor's metadata and sends the bytes
    in Chunk envelopes (section 7.3), an inline one carries an :func:`inline_tensor_header` whose
    ``data`` the caller fills with :func:`encode_with_payload`. An empty ``id`` lets the worker choose.
    """
    request = ProtoSendObjectRequest(
        id=info.id, tags=info.tags, description=info.description, overwrite=overwrite
    )
    if chunked:
        request.chunked.CopyFrom(tensor_info_to_proto(info.tensor))
    else:
        request.tensor.CopyFrom(inline_tensor_header(info.tensor))
    return request


def send_object_request_from_proto(message: ProtoSendObjectRequest) -> tuple[ObjectInfo, bool]:
    """Decode an upload's head: what is to be stored, and whether it may overwrite that id.

    An inline tensor is checked against section 7.2 (so its ``data`` must be there by now).
    """
    kind = message.WhichOneof("payload")
    if kind is None:
        raise InvalidArgumentError("SendObjectRequest carries no tensor")
    tensor = tensor_info_from_proto(message.chunked) if kind == "chunked" else check_tensor(message.tensor)
    info = ObjectInfo(id=message.id, tags=tuple(message.tags), description=message.description, tensor=tensor)
    return info, message.overwrite


def send_object_reply_to_proto(info: ObjectInfo) -> ProtoSendObjectReply:
    """Encode what a worker stored."""
    return ProtoSendObjectReply(info=object_info_to_proto(info))


def send_object_reply_from_proto(message: ProtoSendObjectReply) -> ObjectInfo:
    """Decode what a worker stored."""
    return object_info_from_proto(message.info)


def get_object_reply_to_proto(info: ObjectInfo, tensor: torch.Tensor | None) -> ProtoGetObjectReply:
    """Encode a fetched object: inline with its ``tensor``, or its metadata only (``tensor`` None).

    Without the tensor, its bytes went ahead in Chunk envelopes (section 7.3).
    """
    message = ProtoGetObjectReply(info=object_info_to_proto(info))
    if tensor is not None:
        message.tensor.CopyFrom(tensor_to_proto(tensor))
    return message


def get_object_reply_from_proto(
    message: ProtoGetObjectReply, payload: bytes | bytearray | memoryview | None = None
) -> torch.Tensor:
    """Decode a fetched object's tensor: inline, or from the ``payload`` its chunks assembled."""
    if payload is not None:
        info = message.info.tensor
        return tensor_from_bytes(info.dtype, info.shape, payload)
    return tensor_from_proto(message.tensor)


def datasets_reply_to_proto(descriptions: Iterable[DatasetDescription]) -> ProtoListDatasetsReply:
    """Encode the datasets a worker offers."""
    return ProtoListDatasetsReply(datasets=[dataset_info_to_proto(d) for d in descriptions])


def datasets_reply_from_proto(message: ProtoListDatasetsReply) -> list[DatasetDescription]:
    """Decode the datasets a worker offers."""
    return [dataset_info_from_proto(d) for d in message.datasets]


def methods_reply_to_proto(infos: Iterable[MethodInfo]) -> ProtoListMethodsReply:
    """Encode the methods a worker exposes."""
    return ProtoListMethodsReply(methods=[method_info_to_proto(m) for m in infos])


def methods_reply_from_proto(message: ProtoListMethodsReply) -> list[MethodInfo]:
    """Decode the methods a worker exposes."""
    return [method_info_from_proto(m) for m in message.methods]


def set_train_config_request_to_proto(spec: TrainSpec) -> ProtoSetTrainConfigRequest:
    """Encode a request to set a train config."""
    return ProtoSetTrainConfigRequest(config=train_spec_to_proto(spec))


def set_train_config_request_from_proto(message: ProtoSetTrainConfigRequest) -> TrainSpec:
    """Decode the train config a client sent."""
    return train_spec_from_proto(message.config)


def fit_request_to_proto(options: FitOptions) -> ProtoFitRequest:
    """Encode a fit request (the dataclass mirrors the message field for field)."""
    return ProtoFitRequest(**_same_named(options, FitOptions))


def fit_request_from_proto(message: ProtoFitRequest) -> FitOptions:
    """Decode a fit request."""
    return FitOptions(**_same_named(message, FitOptions))


def evaluate_request_to_proto(options: EvaluateOptions) -> ProtoEvaluateRequest:
    """Encode an evaluate request (the dataclass mirrors the message field for field; ``kind`` is an enum)."""
    fields = _same_named(options, EvaluateOptions)
    fields["kind"] = evaluate_kind_to_proto(options.kind)
    return ProtoEvaluateRequest(**fields)


def evaluate_request_from_proto(message: ProtoEvaluateRequest) -> EvaluateOptions:
    """Decode an evaluate request; InvalidArgumentError for a kind the protocol does not define."""
    fields = _same_named(message, EvaluateOptions)
    fields["kind"] = evaluate_kind_from_proto(message.kind)
    return EvaluateOptions(**fields)


def weights_reply_to_proto(weights: Mapping[str, torch.Tensor]) -> ProtoGetWeightsReply:
    """Encode a model's state dict as the reply of ``get_weights``."""
    return ProtoGetWeightsReply(weights=named_tensors_to_proto(weights))


def weights_reply_from_proto(message: ProtoGetWeightsReply) -> dict[str, torch.Tensor]:
    """Decode the state dict of a ``get_weights`` reply."""
    return named_tensors_from_proto(message.weights)


def set_weights_request_to_proto(
    weights: Mapping[str, torch.Tensor], *, strict: bool
) -> ProtoSetWeightsRequest:
    """Encode new model weights; ``strict`` asks that every entry of the state dict be given."""
    return ProtoSetWeightsRequest(weights=named_tensors_to_proto(weights), strict=strict)


def set_weights_request_payload(weights: Mapping[str, torch.Tensor], *, strict: bool) -> memoryview:
    """The whole encoding of a ``SetWeightsRequest``, every tensor's elements copied once, straight into it.

    It is the payload of :func:`encode_with_payload` at ``("set_weights",)``, around an empty request
    (``set_weights_request_to_proto({}, strict=False)``).

    Building the message and its envelope would copy a model three times more (into the message, into
    the envelope, into the frame), which for a federated coordinator sending the global weights is three
    models' worth of memory held at once. The encoding is the one protobuf gives the message
    :func:`set_weights_request_to_proto` builds, byte for byte.
    """
    pieces: list[bytes | memoryview] = []
    for name, tensor in weights.items():
        info, view = tensor_payload(tensor)
        head = inline_tensor_header(info).SerializeToString()
        if view.nbytes:  # proto3 leaves an empty bytes field out
            head += _key(_TENSOR_DATA, _LEN) + _varint(view.nbytes)
        tensor_size = len(head) + view.nbytes
        entry = ProtoNamedTensor(name=name).SerializeToString()
        entry += _key(_NAMED_TENSOR, _LEN) + _varint(tensor_size)
        entry_size = len(entry) + tensor_size
        pieces += [_key(_SET_WEIGHTS_WEIGHTS, _LEN) + _varint(entry_size) + entry + head, view]
    if strict:
        pieces.append(ProtoSetWeightsRequest(strict=True).SerializeToString())
    return memoryview(b"".join(pieces))


def set_weights_request_from_proto(message: ProtoSetWeightsRequest) -> tuple[dict[str, torch.Tensor], bool]:
    """Decode new model weights and whether the load is strict."""
    return named_tensors_from_proto(message.weights), message.strict


def get_weights_request_to_proto(*, chunked: bool) -> ProtoGetWeightsRequest:
    """Encode a ``get_weights`` request; ``chunked`` asks for the chunked form (section 12.8)."""
    return ProtoGetWeightsRequest(chunked=chunked)


def get_weights_request_from_proto(message: ProtoGetWeightsRequest) -> bool:
    """Whether a ``get_weights`` request asks for the chunked form (section 12.8)."""
    return message.chunked


def weights_manifest_of(
    weights: Mapping[str, torch.Tensor],
) -> tuple[WeightsManifest, list[memoryview]]:
    """The manifest of a state dict laid end to end, and each tensor's bytes (section 12.8).

    The views alias the tensors' own memory when they are contiguous CPU tensors (as a model's are), so
    a chunked transfer sends a model without any whole-payload copy.
    """
    entries: list[WeightsEntry] = []
    views: list[memoryview] = []
    offset = 0
    for name, tensor in weights.items():
        info, view = tensor_payload(tensor)
        entries.append(
            WeightsEntry(name=name, dtype=info.dtype, shape=info.shape, offset=offset, nbytes=info.nbytes)
        )
        views.append(view)
        offset += info.nbytes
    return WeightsManifest(entries=tuple(entries), total_bytes=offset), views


def weights_manifest_to_proto(manifest: WeightsManifest) -> ProtoWeightsManifest:
    """Encode a weights manifest."""
    return ProtoWeightsManifest(
        entries=[
            ProtoWeightsEntry(
                name=entry.name,
                dtype=dtype_to_proto(entry.dtype),
                shape=entry.shape,
                offset=entry.offset,
                nbytes=entry.nbytes,
            )
            for entry in manifest.entries
        ],
        total_bytes=manifest.total_bytes,
        sha256=manifest.sha256,
        digest=manifest.digest,
    )


def weights_manifest_from_proto(message: ProtoWeightsManifest) -> WeightsManifest:
    """Decode a weights manifest, checking it (section 12.8.3): INVALID_ARGUMENT when it is inconsistent.

    Every name non-empty and unique, every layout valid (section 7.2), the entries end to end from 0
    without gaps, and ``total_bytes`` their sum.
    """
    entries: list[WeightsEntry] = []
    seen: set[str] = set()
    offset = 0
    for index, item in enumerate(message.entries):
        if not item.name:
            raise InvalidArgumentError(f"manifest entry {index} has an empty name")
        if item.name in seen:
            raise InvalidArgumentError(f"manifest names {item.name!r} twice")
        seen.add(item.name)
        dtype, dims = _check_layout(item.dtype, item.shape, item.nbytes)
        if item.offset != offset:
            raise InvalidArgumentError(
                f"manifest entry {item.name!r} starts at byte {item.offset}, expected {offset} "
                "(entries lie end to end, section 12.8.3)"
            )
        entries.append(
            WeightsEntry(name=item.name, dtype=dtype, shape=dims, offset=offset, nbytes=item.nbytes)
        )
        offset += item.nbytes
    if message.total_bytes != offset:
        raise InvalidArgumentError(
            f"manifest says total_bytes={message.total_bytes}, but its entries add up to {offset}"
        )
    return WeightsManifest(
        entries=tuple(entries), total_bytes=offset, sha256=message.sha256, digest=message.digest
    )


def set_weights_chunked_request_to_proto(
    manifest: WeightsManifest, *, strict: bool
) -> ProtoSetWeightsRequest:
    """Encode a chunked ``set_weights`` request: the manifest, the payload to follow as chunks."""
    return ProtoSetWeightsRequest(strict=strict, chunked=weights_manifest_to_proto(manifest))


def weights_from_payload(
    manifest: WeightsManifest, payload: bytearray | memoryview
) -> dict[str, torch.Tensor]:
    """The tensors of a checked manifest as views of its assembled payload (no copies), in order.

    A bool tensor whose bytes are not all 0 or 1 is INVALID_ARGUMENT (section 7.2.7).
    """
    view = memoryview(payload).cast("B")
    if view.nbytes != manifest.total_bytes:
        raise InvalidArgumentError(f"payload of {view.nbytes} bytes for a manifest of {manifest.total_bytes}")
    return {
        entry.name: tensor_from_bytes(
            dtype_to_proto(entry.dtype), entry.shape, view[entry.offset : entry.offset + entry.nbytes]
        )
        for entry in manifest.entries
    }


# --------------------------------------------------------------------------------------------------
# envelopes


def encode_envelope(envelope: ProtoEnvelope) -> bytes:
    """Serialize an envelope into the payload of one binary frame."""
    return envelope.SerializeToString()


def call_args_size(request: ProtoCallRequest) -> int:
    """The bytes a CallRequest's arguments take: its encoding without the method field (section 11.3.1).

    Fields encode independently, so that is the whole size less the method's key, length and name,
    computed without encoding anything again.
    """
    name = len(request.method.encode())
    method_field = len(_key(_CALL_METHOD, _LEN)) + len(_varint(name)) + name if name else 0
    return request.ByteSize() - method_field


def decode_envelope(data: bytes | bytearray | memoryview) -> ProtoEnvelope:
    """Parse one binary frame; anything that is not an envelope raises :class:`MalformedError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedError(f"expected a binary frame, got {type(data).__name__}")
    try:
        return ProtoEnvelope.FromString(bytes(data) if not isinstance(data, bytes) else data)
    except DecodeError as exc:
        raise MalformedError(f"frame is not a valid Envelope: {exc}") from None
    except Exception as exc:  # the parser is C code; no hostile input may escape as anything else
        raise MalformedError(f"frame is not a valid Envelope: {type(exc).__name__}") from None


# Chunk frames carry nearly all the bytes of a big transfer, so they get a hand-written encoder and a
# fast-path decoder that avoid protobuf's copies of the payload (the generated classes only take and give
# ``bytes``). Both follow the ordinary protobuf encoding of ``Envelope{request_id, chunk: Chunk{offset,
# data, total_bytes}}``; the decoder recognizes only that shape and returns None for anything else, which
# then goes through the generic parser, so no valid envelope is ever read differently.

_CALL_METHOD = ProtoCallRequest.DESCRIPTOR.fields_by_name["method"].number
_TENSOR_DATA = ProtoTensor.DESCRIPTOR.fields_by_name["data"].number
_NAMED_TENSOR = ProtoNamedTensor.DESCRIPTOR.fields_by_name["tensor"].number
_SET_WEIGHTS_WEIGHTS = ProtoSetWeightsRequest.DESCRIPTOR.fields_by_name["weights"].number
_ENVELOPE_REQUEST_ID = 1
_ENVELOPE_DEADLINE = 2
_ENVELOPE_CHUNK = ProtoEnvelope.DESCRIPTOR.fields_by_name["chunk"].number
_CHUNK_OFFSET, _CHUNK_DATA, _CHUNK_TOTAL, _CHUNK_SHA256, _CHUNK_DIGEST = 1, 2, 3, 4, 5
_VARINT, _LEN = 0, 2
_CHUNK_KEY = bytes([(_ENVELOPE_CHUNK << 3 | _LEN) & 0x7F | 0x80, (_ENVELOPE_CHUNK << 3 | _LEN) >> 7])


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:  # most keys and lengths: one byte, built once
        return _ONE_BYTE_VARINTS[value]
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_ONE_BYTE_VARINTS = [bytes((value,)) for value in range(0x80)]


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def encode_chunk_frame(
    request_id: int,
    offset: int,
    data: memoryview,
    total_bytes: int,
    sha256: bytes = b"",
    *,
    digest: bytes = b"",
) -> bytes:
    """Serialize ``Envelope{request_id, chunk: Chunk{offset, data, total_bytes, sha256, digest}}``.

    The chunk's data is copied once, straight into the frame. ``sha256`` is the trailing digest an
    upload's last chunk may carry (section 7.3.26); ``digest`` is that trailer under a negotiated
    algorithm other than SHA-256 (section 7.5.8).
    """
    return b"".join(encode_chunk_pieces(request_id, offset, data, total_bytes, sha256, digest=digest))


def encode_chunk_pieces(
    request_id: int,
    offset: int,
    data: memoryview,
    total_bytes: int,
    sha256: bytes = b"",
    *,
    digest: bytes = b"",
) -> tuple[bytes, memoryview, bytes]:
    """:func:`encode_chunk_frame` as ``(head, data, tail)``, whose concatenation is that frame.

    Nothing of the payload is copied: the data field is written last but for the small fields after it
    (``total_bytes`` and a trailing digest), so ``data`` itself is the middle piece, and a frame writer
    can put the pieces on the wire without joining them first (:mod:`fedproto.wsframes`).
    """
    head = bytearray()
    if request_id:
        head += _key(_ENVELOPE_REQUEST_ID, _VARINT) + _varint(request_id)
    body = bytearray()
    if offset:
        body += _key(_CHUNK_OFFSET, _VARINT) + _varint(offset)
    body += _key(_CHUNK_DATA, _LEN) + _varint(data.nbytes)
    tail = _key(_CHUNK_TOTAL, _VARINT) + _varint(total_bytes) if total_bytes else b""
    if sha256:
        tail += _key(_CHUNK_SHA256, _LEN) + _varint(len(sha256)) + sha256
    if digest:
        tail += _key(_CHUNK_DIGEST, _LEN) + _varint(len(digest)) + digest
    head += _key(_ENVELOPE_CHUNK, _LEN) + _varint(len(body) + data.nbytes + len(tail))
    return bytes(head + body), data, tail


def encode_with_payload(message: Message, path: Sequence[str], payload: memoryview) -> bytes:
    """Serialize ``message`` with ``payload`` as the bytes field at ``path``, copying the payload once.

    ``path`` names fields from ``message`` down to a bytes field, e.g. ``("send_object", "tensor",
    "data")``; that field must be empty in ``message``. Each level is written as its other fields followed
    by the child field, which protobuf parsers accept in any order, so the result decodes to the same
    message as if the payload had been assigned (an inline tensor costs one copy instead of five).
    """
    heads: list[tuple[bytes, int]] = []
    current = message
    for depth, name in enumerate(path):
        number = current.DESCRIPTOR.fields_by_name[name].number
        outer = type(current)()
        outer.CopyFrom(current)
        outer.ClearField(name)
        heads.append((outer.SerializeToString(), number))
        if depth < len(path) - 1:
            current = getattr(current, name)
    pieces: list[bytes | memoryview] = [payload]
    length = payload.nbytes
    for head, number in reversed(heads):
        prefix = head + _key(number, _LEN) + _varint(length)
        pieces.insert(0, prefix)
        length += len(prefix)
    return b"".join(pieces)


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 64:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise ValueError("bad varint")


def decode_chunk_frame(data: bytes | bytearray | memoryview) -> tuple[int, int, memoryview, int] | None:
    """Read a chunk envelope without copying its payload: ``(request_id, offset, data, total_bytes)``.

    Returns None when the frame is anything but a plain chunk envelope (including a deadline, a trailing
    digest, unknown fields or repeated fields): the caller then decodes it with :func:`decode_envelope`.
    """
    if isinstance(data, (bytes, bytearray)) and data.find(_CHUNK_KEY, 0, 13) < 0:
        return None  # quick refusal of every other frame: the chunk key follows at most a request id
    buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
    try:
        pos, end = 0, buf.nbytes
        request_id = 0
        body: tuple[int, int] | None = None
        seen: set[int] = set()
        while pos < end:
            key, pos = _read_varint(buf, pos, end)
            field, wire = key >> 3, key & 7
            if field in seen:
                return None
            seen.add(field)
            if field == _ENVELOPE_REQUEST_ID and wire == _VARINT:
                request_id, pos = _read_varint(buf, pos, end)
            elif field == _ENVELOPE_CHUNK and wire == _LEN:
                size, pos = _read_varint(buf, pos, end)
                if pos + size > end:
                    return None
                body = (pos, pos + size)
                pos += size
            else:
                return None
        if body is None or request_id >= 1 << 64:
            return None
        pos, end = body
        offset = total = 0
        payload = buf[0:0]
        seen.clear()
        while pos < end:
            key, pos = _read_varint(buf, pos, end)
            field, wire = key >> 3, key & 7
            if field in seen:
                return None
            seen.add(field)
            if field == _CHUNK_OFFSET and wire == _VARINT:
                offset, pos = _read_varint(buf, pos, end)
            elif field == _CHUNK_TOTAL and wire == _VARINT:
                total, pos = _read_varint(buf, pos, end)
            elif field == _CHUNK_DATA and wire == _LEN:
                size, pos = _read_varint(buf, pos, end)
                if pos + size > end:
                    return None
                payload = buf[pos : pos + size]
                pos += size
            else:
                return None
        if offset >= 1 << 64 or total >= 1 << 64:
            return None
        return request_id, offset, payload, total
    except (ValueError, IndexError):
        return None


def has_unknown_body(message: Message) -> bool:
    """Whether an envelope with no body set carries unknown fields (a body kind from a newer version)."""
    try:
        return len(unknown_fields.UnknownFieldSet(message)) > 0
    except Exception:
        return False
