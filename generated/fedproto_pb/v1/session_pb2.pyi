from fedproto_pb.v1 import value_pb2 as _value_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hello(_message.Message):
    __slots__ = ("versions", "client_name", "token", "max_frame_bytes", "digests")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedScalarFieldContainer[int]
    client_name: str
    token: str
    max_frame_bytes: int
    digests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, versions: _Optional[_Iterable[int]] = ..., client_name: _Optional[str] = ..., token: _Optional[str] = ..., max_frame_bytes: _Optional[int] = ..., digests: _Optional[_Iterable[str]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_frame_bytes", "max_in_flight", "chunk_bytes", "max_object_bytes", "max_call_args_bytes", "idle_timeout_seconds", "handshake_timeout_seconds", "max_model_bytes", "max_objects", "max_object_metadata_bytes")
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_OBJECT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CALL_ARGS_BYTES_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HANDSHAKE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    MAX_OBJECT_METADATA_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_frame_bytes: int
    max_in_flight: int
    chunk_bytes: int
    max_object_bytes: int
    max_call_args_bytes: int
    idle_timeout_seconds: float
    handshake_timeout_seconds: float
    max_model_bytes: int
    max_objects: int
    max_object_metadata_bytes: int
    def __init__(self, max_frame_bytes: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., max_object_bytes: _Optional[int] = ..., max_call_args_bytes: _Optional[int] = ..., idle_timeout_seconds: _Optional[float] = ..., handshake_timeout_seconds: _Optional[float] = ..., max_model_bytes: _Optional[int] = ..., max_objects: _Optional[int] = ..., max_object_metadata_bytes: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("version", "server_id", "server_name", "capabilities", "limits", "identity", "digest")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    version: int
    server_id: str
    server_name: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    identity: str
    digest: str
    def __init__(self, version: _Optional[int] = ..., server_id: _Optional[str] = ..., server_name: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., identity: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Notification(_message.Message):
    __slots__ = ("topic", "payload")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    topic: str
    payload: _value_pb2.Value
    def __init__(self, topic: _Optional[str] = ..., payload: _Optional[_Union[_value_pb2.Value, _Mapping]] = ...) -> None: ...
