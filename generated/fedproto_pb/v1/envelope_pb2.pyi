from fedproto_pb.v1 import calls_pb2 as _calls_pb2
from fedproto_pb.v1 import datasets_pb2 as _datasets_pb2
from fedproto_pb.v1 import errors_pb2 as _errors_pb2
from fedproto_pb.v1 import objects_pb2 as _objects_pb2
from fedproto_pb.v1 import session_pb2 as _session_pb2
from fedproto_pb.v1 import tensor_pb2 as _tensor_pb2
from fedproto_pb.v1 import training_pb2 as _training_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("request_id", "deadline_ms", "hello", "welcome", "ping", "pong", "cancel", "goodbye", "notification", "error", "chunk", "send_object", "send_object_reply", "get_object", "get_object_reply", "delete_object", "delete_object_reply", "list_objects", "list_objects_reply", "count_objects", "count_objects_reply", "clear_objects", "clear_objects_reply", "search_objects", "search_objects_reply", "list_datasets", "list_datasets_reply", "call", "call_reply", "list_methods", "list_methods_reply", "set_train_config", "set_train_config_reply", "fit", "fit_progress", "fit_reply", "evaluate", "evaluate_reply", "get_weights", "get_weights_reply", "set_weights", "set_weights_reply", "list_models", "list_models_reply", "weights_manifest")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SEND_OBJECT_FIELD_NUMBER: _ClassVar[int]
    SEND_OBJECT_REPLY_FIELD_NUMBER: _ClassVar[int]
    GET_OBJECT_FIELD_NUMBER: _ClassVar[int]
    GET_OBJECT_REPLY_FIELD_NUMBER: _ClassVar[int]
    DELETE_OBJECT_FIELD_NUMBER: _ClassVar[int]
    DELETE_OBJECT_REPLY_FIELD_NUMBER: _ClassVar[int]
    LIST_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    LIST_OBJECTS_REPLY_FIELD_NUMBER: _ClassVar[int]
    COUNT_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    COUNT_OBJECTS_REPLY_FIELD_NUMBER: _ClassVar[int]
    CLEAR_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    CLEAR_OBJECTS_REPLY_FIELD_NUMBER: _ClassVar[int]
    SEARCH_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_OBJECTS_REPLY_FIELD_NUMBER: _ClassVar[int]
    LIST_DATASETS_FIELD_NUMBER: _ClassVar[int]
    LIST_DATASETS_REPLY_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    CALL_REPLY_FIELD_NUMBER: _ClassVar[int]
    LIST_METHODS_FIELD_NUMBER: _ClassVar[int]
    LIST_METHODS_REPLY_FIELD_NUMBER: _ClassVar[int]
    SET_TRAIN_CONFIG_FIELD_NUMBER: _ClassVar[int]
    SET_TRAIN_CONFIG_REPLY_FIELD_NUMBER: _ClassVar[int]
    FIT_FIELD_NUMBER: _ClassVar[int]
    FIT_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FIT_REPLY_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_REPLY_FIELD_NUMBER: _ClassVar[int]
    GET_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    GET_WEIGHTS_REPLY_FIELD_NUMBER: _ClassVar[int]
    SET_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SET_WEIGHTS_REPLY_FIELD_NUMBER: _ClassVar[int]
    LIST_MODELS_FIELD_NUMBER: _ClassVar[int]
    LIST_MODELS_REPLY_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_MANIFEST_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    deadline_ms: int
    hello: _session_pb2.Hello
    welcome: _session_pb2.Welcome
    ping: _session_pb2.Ping
    pong: _session_pb2.Pong
    cancel: _session_pb2.Cancel
    goodbye: _session_pb2.Goodbye
    notification: _session_pb2.Notification
    error: _errors_pb2.Error
    chunk: _tensor_pb2.Chunk
    send_object: _objects_pb2.SendObjectRequest
    send_object_reply: _objects_pb2.SendObjectReply
    get_object: _objects_pb2.GetObjectRequest
    get_object_reply: _objects_pb2.GetObjectReply
    delete_object: _objects_pb2.DeleteObjectRequest
    delete_object_reply: _objects_pb2.DeleteObjectReply
    list_objects: _objects_pb2.ListObjectsRequest
    list_objects_reply: _objects_pb2.ListObjectsReply
    count_objects: _objects_pb2.CountObjectsRequest
    count_objects_reply: _objects_pb2.CountObjectsReply
    clear_objects: _objects_pb2.ClearObjectsRequest
    clear_objects_reply: _objects_pb2.ClearObjectsReply
    search_objects: _objects_pb2.SearchObjectsRequest
    search_objects_reply: _objects_pb2.SearchObjectsReply
    list_datasets: _datasets_pb2.ListDatasetsRequest
    list_datasets_reply: _datasets_pb2.ListDatasetsReply
    call: _calls_pb2.CallRequest
    call_reply: _calls_pb2.CallReply
    list_methods: _calls_pb2.ListMethodsRequest
    list_methods_reply: _calls_pb2.ListMethodsReply
    set_train_config: _training_pb2.SetTrainConfigRequest
    set_train_config_reply: _training_pb2.SetTrainConfigReply
    fit: _training_pb2.FitRequest
    fit_progress: _training_pb2.FitProgress
    fit_reply: _training_pb2.FitReply
    evaluate: _training_pb2.EvaluateRequest
    evaluate_reply: _training_pb2.EvaluateReply
    get_weights: _training_pb2.GetWeightsRequest
    get_weights_reply: _training_pb2.GetWeightsReply
    set_weights: _training_pb2.SetWeightsRequest
    set_weights_reply: _training_pb2.SetWeightsReply
    list_models: _training_pb2.ListModelsRequest
    list_models_reply: _training_pb2.ListModelsReply
    weights_manifest: _training_pb2.WeightsManifest
    def __init__(self, request_id: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., hello: _Optional[_Union[_session_pb2.Hello, _Mapping]] = ..., welcome: _Optional[_Union[_session_pb2.Welcome, _Mapping]] = ..., ping: _Optional[_Union[_session_pb2.Ping, _Mapping]] = ..., pong: _Optional[_Union[_session_pb2.Pong, _Mapping]] = ..., cancel: _Optional[_Union[_session_pb2.Cancel, _Mapping]] = ..., goodbye: _Optional[_Union[_session_pb2.Goodbye, _Mapping]] = ..., notification: _Optional[_Union[_session_pb2.Notification, _Mapping]] = ..., error: _Optional[_Union[_errors_pb2.Error, _Mapping]] = ..., chunk: _Optional[_Union[_tensor_pb2.Chunk, _Mapping]] = ..., send_object: _Optional[_Union[_objects_pb2.SendObjectRequest, _Mapping]] = ..., send_object_reply: _Optional[_Union[_objects_pb2.SendObjectReply, _Mapping]] = ..., get_object: _Optional[_Union[_objects_pb2.GetObjectRequest, _Mapping]] = ..., get_object_reply: _Optional[_Union[_objects_pb2.GetObjectReply, _Mapping]] = ..., delete_object: _Optional[_Union[_objects_pb2.DeleteObjectRequest, _Mapping]] = ..., delete_object_reply: _Optional[_Union[_objects_pb2.DeleteObjectReply, _Mapping]] = ..., list_objects: _Optional[_Union[_objects_pb2.ListObjectsRequest, _Mapping]] = ..., list_objects_reply: _Optional[_Union[_objects_pb2.ListObjectsReply, _Mapping]] = ..., count_objects: _Optional[_Union[_objects_pb2.CountObjectsRequest, _Mapping]] = ..., count_objects_reply: _Optional[_Union[_objects_pb2.CountObjectsReply, _Mapping]] = ..., clear_objects: _Optional[_Union[_objects_pb2.ClearObjectsRequest, _Mapping]] = ..., clear_objects_reply: _Optional[_Union[_objects_pb2.ClearObjectsReply, _Mapping]] = ..., search_objects: _Optional[_Union[_objects_pb2.SearchObjectsRequest, _Mapping]] = ..., search_objects_reply: _Optional[_Union[_objects_pb2.SearchObjectsReply, _Mapping]] = ..., list_datasets: _Optional[_Union[_datasets_pb2.ListDatasetsRequest, _Mapping]] = ..., list_datasets_reply: _Optional[_Union[_datasets_pb2.ListDatasetsReply, _Mapping]] = ..., call: _Optional[_Union[_calls_pb2.CallRequest, _Mapping]] = ..., call_reply: _Optional[_Union[_calls_pb2.CallReply, _Mapping]] = ..., list_methods: _Optional[_Union[_calls_pb2.ListMethodsRequest, _Mapping]] = ..., list_methods_reply: _Optional[_Union[_calls_pb2.ListMethodsReply, _Mapping]] = ..., set_train_config: _Optional[_Union[_training_pb2.SetTrainConfigRequest, _Mapping]] = ..., set_train_config_reply: _Optional[_Union[_training_pb2.SetTrainConfigReply, _Mapping]] = ..., fit: _Optional[_Union[_training_pb2.FitRequest, _Mapping]] = ..., fit_progress: _Optional[_Union[_training_pb2.FitProgress, _Mapping]] = ..., fit_reply: _Optional[_Union[_training_pb2.FitReply, _Mapping]] = ..., evaluate: _Optional[_Union[_training_pb2.EvaluateRequest, _Mapping]] = ..., evaluate_reply: _Optional[_Union[_training_pb2.EvaluateReply, _Mapping]] = ..., get_weights: _Optional[_Union[_training_pb2.GetWeightsRequest, _Mapping]] = ..., get_weights_reply: _Optional[_Union[_training_pb2.GetWeightsReply, _Mapping]] = ..., set_weights: _Optional[_Union[_training_pb2.SetWeightsRequest, _Mapping]] = ..., set_weights_reply: _Optional[_Union[_training_pb2.SetWeightsReply, _Mapping]] = ..., list_models: _Optional[_Union[_training_pb2.ListModelsRequest, _Mapping]] = ..., list_models_reply: _Optional[_Union[_training_pb2.ListModelsReply, _Mapping]] = ..., weights_manifest: _Optional[_Union[_training_pb2.WeightsManifest, _Mapping]] = ...) -> None: ...
