from fedproto_pb.v1 import tensor_pb2 as _tensor_pb2
from fedproto_pb.v1 import value_pb2 as _value_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluateKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVALUATE_KIND_UNSPECIFIED: _ClassVar[EvaluateKind]
    EVALUATE_KIND_CLASSIFICATION: _ClassVar[EvaluateKind]
    EVALUATE_KIND_REGRESSION: _ClassVar[EvaluateKind]
EVALUATE_KIND_UNSPECIFIED: EvaluateKind
EVALUATE_KIND_CLASSIFICATION: EvaluateKind
EVALUATE_KIND_REGRESSION: EvaluateKind

class TrainConfig(_message.Message):
    __slots__ = ("model_torchscript", "registered_model", "model_object", "loss_torchscript", "loss_name", "optimizer", "optimizer_args", "batch_size", "epochs", "shuffle", "max_nr_batches", "seed", "initial_weights", "proximal_mu", "reset_optimizer")
    MODEL_TORCHSCRIPT_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_OBJECT_FIELD_NUMBER: _ClassVar[int]
    LOSS_TORCHSCRIPT_FIELD_NUMBER: _ClassVar[int]
    LOSS_NAME_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_ARGS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    MAX_NR_BATCHES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INITIAL_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    PROXIMAL_MU_FIELD_NUMBER: _ClassVar[int]
    RESET_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    model_torchscript: bytes
    registered_model: str
    model_object: str
    loss_torchscript: bytes
    loss_name: str
    optimizer: str
    optimizer_args: _containers.RepeatedCompositeFieldContainer[_value_pb2.MapEntry]
    batch_size: int
    epochs: int
    shuffle: bool
    max_nr_batches: int
    seed: int
    initial_weights: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    proximal_mu: float
    reset_optimizer: bool
    def __init__(self, model_torchscript: _Optional[bytes] = ..., registered_model: _Optional[str] = ..., model_object: _Optional[str] = ..., loss_torchscript: _Optional[bytes] = ..., loss_name: _Optional[str] = ..., optimizer: _Optional[str] = ..., optimizer_args: _Optional[_Iterable[_Union[_value_pb2.MapEntry, _Mapping]]] = ..., batch_size: _Optional[int] = ..., epochs: _Optional[int] = ..., shuffle: _Optional[bool] = ..., max_nr_batches: _Optional[int] = ..., seed: _Optional[int] = ..., initial_weights: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ..., proximal_mu: _Optional[float] = ..., reset_optimizer: _Optional[bool] = ...) -> None: ...

class SetTrainConfigRequest(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: TrainConfig
    def __init__(self, config: _Optional[_Union[TrainConfig, _Mapping]] = ...) -> None: ...

class SetTrainConfigReply(_message.Message):
    __slots__ = ("parameter_count", "state_names")
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_NAMES_FIELD_NUMBER: _ClassVar[int]
    parameter_count: int
    state_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, parameter_count: _Optional[int] = ..., state_names: _Optional[_Iterable[str]] = ...) -> None: ...

class FitRequest(_message.Message):
    __slots__ = ("dataset_key", "return_weights", "progress_every")
    DATASET_KEY_FIELD_NUMBER: _ClassVar[int]
    RETURN_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_EVERY_FIELD_NUMBER: _ClassVar[int]
    dataset_key: str
    return_weights: bool
    progress_every: int
    def __init__(self, dataset_key: _Optional[str] = ..., return_weights: _Optional[bool] = ..., progress_every: _Optional[int] = ...) -> None: ...

class FitProgress(_message.Message):
    __slots__ = ("epoch", "batch", "batches_per_epoch", "loss", "running_loss", "samples")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    BATCHES_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_LOSS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    batch: int
    batches_per_epoch: int
    loss: float
    running_loss: float
    samples: int
    def __init__(self, epoch: _Optional[int] = ..., batch: _Optional[int] = ..., batches_per_epoch: _Optional[int] = ..., loss: _Optional[float] = ..., running_loss: _Optional[float] = ..., samples: _Optional[int] = ...) -> None: ...

class FitReply(_message.Message):
    __slots__ = ("final_loss", "mean_loss", "samples", "batches", "epochs", "seconds", "weights", "dataset_size")
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOSS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DATASET_SIZE_FIELD_NUMBER: _ClassVar[int]
    final_loss: float
    mean_loss: float
    samples: int
    batches: int
    epochs: int
    seconds: float
    weights: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    dataset_size: int
    def __init__(self, final_loss: _Optional[float] = ..., mean_loss: _Optional[float] = ..., samples: _Optional[int] = ..., batches: _Optional[int] = ..., epochs: _Optional[int] = ..., seconds: _Optional[float] = ..., weights: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ..., dataset_size: _Optional[int] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("dataset_key", "return_histograms", "nr_bins", "return_loss", "return_raw_accuracy", "batch_size", "kind")
    DATASET_KEY_FIELD_NUMBER: _ClassVar[int]
    RETURN_HISTOGRAMS_FIELD_NUMBER: _ClassVar[int]
    NR_BINS_FIELD_NUMBER: _ClassVar[int]
    RETURN_LOSS_FIELD_NUMBER: _ClassVar[int]
    RETURN_RAW_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    dataset_key: str
    return_histograms: bool
    nr_bins: int
    return_loss: bool
    return_raw_accuracy: bool
    batch_size: int
    kind: EvaluateKind
    def __init__(self, dataset_key: _Optional[str] = ..., return_histograms: _Optional[bool] = ..., nr_bins: _Optional[int] = ..., return_loss: _Optional[bool] = ..., return_raw_accuracy: _Optional[bool] = ..., batch_size: _Optional[int] = ..., kind: _Optional[_Union[EvaluateKind, str]] = ...) -> None: ...

class EvaluateReply(_message.Message):
    __slots__ = ("loss", "correct", "total", "prediction_histogram", "target_histogram", "kind", "mean_squared_error", "mean_absolute_error")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    TARGET_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MEAN_SQUARED_ERROR_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABSOLUTE_ERROR_FIELD_NUMBER: _ClassVar[int]
    loss: float
    correct: int
    total: int
    prediction_histogram: _containers.RepeatedScalarFieldContainer[int]
    target_histogram: _containers.RepeatedScalarFieldContainer[int]
    kind: EvaluateKind
    mean_squared_error: float
    mean_absolute_error: float
    def __init__(self, loss: _Optional[float] = ..., correct: _Optional[int] = ..., total: _Optional[int] = ..., prediction_histogram: _Optional[_Iterable[int]] = ..., target_histogram: _Optional[_Iterable[int]] = ..., kind: _Optional[_Union[EvaluateKind, str]] = ..., mean_squared_error: _Optional[float] = ..., mean_absolute_error: _Optional[float] = ...) -> None: ...

class GetWeightsRequest(_message.Message):
    __slots__ = ("chunked",)
    CHUNKED_FIELD_NUMBER: _ClassVar[int]
    chunked: bool
    def __init__(self, chunked: _Optional[bool] = ...) -> None: ...

class GetWeightsReply(_message.Message):
    __slots__ = ("weights", "sha256", "digest")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    sha256: bytes
    digest: bytes
    def __init__(self, weights: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ..., sha256: _Optional[bytes] = ..., digest: _Optional[bytes] = ...) -> None: ...

class WeightsEntry(_message.Message):
    __slots__ = ("name", "dtype", "shape", "offset", "nbytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: _tensor_pb2.DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    nbytes: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ..., nbytes: _Optional[int] = ...) -> None: ...

class WeightsManifest(_message.Message):
    __slots__ = ("entries", "total_bytes", "sha256", "digest")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[WeightsEntry]
    total_bytes: int
    sha256: bytes
    digest: bytes
    def __init__(self, entries: _Optional[_Iterable[_Union[WeightsEntry, _Mapping]]] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[bytes] = ..., digest: _Optional[bytes] = ...) -> None: ...

class SetWeightsRequest(_message.Message):
    __slots__ = ("weights", "strict", "chunked")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    CHUNKED_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    strict: bool
    chunked: WeightsManifest
    def __init__(self, weights: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ..., strict: _Optional[bool] = ..., chunked: _Optional[_Union[WeightsManifest, _Mapping]] = ...) -> None: ...

class SetWeightsReply(_message.Message):
    __slots__ = ("updated",)
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    updated: int
    def __init__(self, updated: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsReply(_message.Message):
    __slots__ = ("names", "weights_only")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_ONLY_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    weights_only: bool
    def __init__(self, names: _Optional[_Iterable[str]] = ..., weights_only: _Optional[bool] = ...) -> None: ...
