from fedproto_pb.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DatasetInfo(_message.Message):
    __slots__ = ("key", "sample_count", "feature_shape", "target_shape", "feature_dtype", "target_dtype", "description")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_SHAPE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_DTYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    key: str
    sample_count: int
    feature_shape: _containers.RepeatedScalarFieldContainer[int]
    target_shape: _containers.RepeatedScalarFieldContainer[int]
    feature_dtype: _tensor_pb2.DType
    target_dtype: _tensor_pb2.DType
    description: str
    def __init__(self, key: _Optional[str] = ..., sample_count: _Optional[int] = ..., feature_shape: _Optional[_Iterable[int]] = ..., target_shape: _Optional[_Iterable[int]] = ..., feature_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., target_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., description: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDatasetsReply(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ...) -> None: ...
