"""The training handlers (section 12): config, fit with progress, evaluate, weights, models."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from fedproto import codec
from fedproto.datasets import as_dataset
from fedproto.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnimplementedError,
)
from fedproto.server.services import WorkerServices
from fedproto.session import MODEL_OBJECT, ProgressReceived
from fedproto.training.torchscript import quiet_torchscript, save_torchscript
from fedproto_pb.v1 import training_pb2

from .support import FakeConnection, handle, one

MODEL = "linear"


@pytest.fixture
def trainable(services: WorkerServices) -> WorkerServices:
    torch.manual_seed(0)
    features = torch.randn(16, 4)
    services.datasets["data"] = as_dataset((features, features.sum(dim=1, keepdim=True)))
    services.models.register(MODEL, lambda: nn.Linear(4, 1))
    return services


def config(epochs: int = 2) -> training_pb2.SetTrainConfigRequest:
    return training_pb2.SetTrainConfigRequest(
        config=training_pb2.TrainConfig(
            registered_model=MODEL, loss_name="mse", optimizer="SGD", batch_size=4, epochs=epochs
        )
    )


async def test_training_needs_a_config_and_a_dataset(services: WorkerServices) -> None:
    conn = FakeConnection()
    with pytest.raises(FailedPreconditionError, match="set_train_config"):
        await handle(services, conn, get_weights=training_pb2.GetWeightsRequest())
    with pytest.raises(NotFoundError) as info:
        await handle(services, conn, fit=training_pb2.FitRequest(dataset_key="nope"))
    assert info.value.details == {"dataset_key": "nope"}


async def test_a_fit_sends_progress_then_replies(trainable: WorkerServices) -> None:
    conn = FakeConnection()
    summary = one(await handle(trainable, conn, set_train_config=config()))
    assert summary.parameter_count == 5 and list(summary.state_names) == ["weight", "bias"]
    assert conn.identity in trainable.training
    fit = training_pb2.FitRequest(dataset_key="data", progress_every=1)
    result = one(await handle(trainable, conn, fit=fit))
    assert (result.epochs, result.batches, result.samples) == (2, 8, 32)
    progress = [e for e in conn.client_events() if isinstance(e, ProgressReceived)]
    assert len(progress) == 2 * 4, "one event per batch: 16 samples in batches of 4, two epochs"
    assert not trainable.threads.training_busy


async def test_weights_go_out_and_come_back(trainable: WorkerServices) -> None:
    conn = FakeConnection()
    await handle(trainable, conn, set_train_config=config())
    weights = codec.named_tensors_from_proto(
        one(await handle(trainable, conn, get_weights=training_pb2.GetWeightsRequest())).weights
    )
    assert set(weights) == {"weight", "bias"}
    zeros = {name: torch.zeros_like(value) for name, value in weights.items()}
    request = training_pb2.SetWeightsRequest(weights=codec.named_tensors_to_proto(zeros), strict=True)
    assert one(await handle(trainable, conn, set_weights=request)).updated == 2
    evaluate = training_pb2.EvaluateRequest(dataset_key="data", return_loss=True)
    result = one(await handle(trainable, conn, evaluate=evaluate))
    assert result.loss > 0, "a zero model misses every nonzero target"


async def test_evaluate_says_what_it_measured(trainable: WorkerServices) -> None:
    conn = FakeConnection()
    await handle(trainable, conn, set_train_config=config())
    # the dataset's targets are floats: a regression, with errors and no classes (section 12.5.11)
    asked = training_pb2.EvaluateRequest(dataset_key="data", return_raw_accuracy=True, return_histograms=True)
    values = one(await handle(trainable, conn, evaluate=asked))
    assert values.kind == training_pb2.EVALUATE_KIND_REGRESSION
    assert values.HasField("mean_squared_error") and values.HasField("mean_absolute_error")
    assert values.correct == 0 and not values.prediction_histogram and not values.target_histogram
    # asked for as classes, the same targets are rounded to classes
    asked.kind = training_pb2.EVALUATE_KIND_CLASSIFICATION
    classes = one(await handle(trainable, conn, evaluate=asked))
    assert classes.kind == training_pb2.EVALUATE_KIND_CLASSIFICATION
    assert not classes.HasField("mean_squared_error") and sum(classes.prediction_histogram) == 16
    asked.kind = 7  # type: ignore[assignment]
    with pytest.raises(InvalidArgumentError, match="unknown evaluate kind 7"):
        await handle(trainable, conn, evaluate=asked)


async def test_each_identity_trains_its_own_model(trainable: WorkerServices) -> None:
    await handle(trainable, FakeConnection("alice"), set_train_config=config())
    with pytest.raises(FailedPreconditionError):
        await handle(trainable, FakeConnection("bob"), get_weights=training_pb2.GetWeightsRequest())


async def test_models_are_listed_with_the_weights_only_mode(services: WorkerServices) -> None:
    services.models.register("b", lambda: nn.Linear(1, 1))
    services.models.register("a", lambda: nn.Linear(1, 1))
    services.weights_only = True
    listed = one(await handle(services, FakeConnection(), list_models=training_pb2.ListModelsRequest()))
    assert list(listed.names) == ["a", "b"] and listed.weights_only


# -- model archives in the object store (section 12.9) ---------------------------------------------

#: A connection whose session advertises model-object, as the worker's do.
MODEL_OBJECT_CAPS = ("training", "objects", "chunked", MODEL_OBJECT)


def _archive() -> bytes:
    with quiet_torchscript():
        scripted = torch.jit.script(nn.Linear(4, 2))
    return save_torchscript(scripted, "model")


#: The archive of a small model, saved once for the module.
ARCHIVE = _archive()


def _store(services: WorkerServices, object_id: str, tensor: torch.Tensor, identity: str = "alice") -> None:
    info, view = codec.tensor_payload(tensor)
    services.objects.put(identity, object_id=object_id, tags=(), description="", tensor=info, payload=view)


def _object_config(object_id: str) -> training_pb2.SetTrainConfigRequest:
    return training_pb2.SetTrainConfigRequest(
        config=training_pb2.TrainConfig(
            model_object=object_id, loss_name="mse", optimizer="SGD", batch_size=4, epochs=1
        )
    )


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


async def test_a_model_object_is_loaded_from_the_store_and_stays_there(trainable: WorkerServices) -> None:
    conn = FakeConnection(capabilities=MODEL_OBJECT_CAPS)
    archive = _archive()
    _store(trainable, "model", _bytes_tensor(archive))
    summary = one(await handle(trainable, conn, set_train_config=_object_config("model")))
    assert summary.parameter_count == 4 * 2 + 2 and list(summary.state_names) == ["weight", "bias"]
    assert trainable.training["alice"].spec.model_object == "model"
    # the object is the client's (12.9.5): still stored, byte for byte, and deleting it changes no model
    assert bytes(trainable.objects.get("alice", "model").payload) == archive
    trainable.objects.delete("alice", "model")
    assert one(await handle(trainable, conn, get_weights=training_pb2.GetWeightsRequest())).weights


@pytest.mark.parametrize(
    ("stored", "object_id", "error", "match"),
    [
        (None, "missing", NotFoundError, "no object 'missing'"),
        (None, "", InvalidArgumentError, "model_object: object ids are 1 to 256 bytes"),
        (None, "x" * 257, InvalidArgumentError, "model_object: object ids are 1 to 256 bytes"),
        # the archive itself as int8, or in two dimensions: only the tensor's type makes it wrong
        (_bytes_tensor(ARCHIVE).view(torch.int8), "model", InvalidArgumentError, "dtype int8 and shape"),
        (_bytes_tensor(ARCHIVE).view(1, -1), "model", InvalidArgumentError, r"uint8 and shape \[1, \d+\]"),
        (torch.zeros(8), "model", InvalidArgumentError, "dtype float32 and shape \\[8\\], not the 1-D uint8"),
        (torch.zeros((), dtype=torch.uint8), "model", InvalidArgumentError, "uint8 and shape \\[\\]"),
        (
            _bytes_tensor(b"PK\x03\x04 not an archive"),
            "model",
            InvalidArgumentError,
            "model_object is not a loadable",
        ),
    ],
)
async def test_a_model_object_that_is_no_archive_is_refused_and_changes_nothing(
    trainable: WorkerServices, stored: torch.Tensor | None, object_id: str, error: type[Exception], match: str
) -> None:
    conn = FakeConnection(capabilities=MODEL_OBJECT_CAPS)
    one(await handle(trainable, conn, set_train_config=config()))
    before = trainable.training["alice"]
    if stored is not None:
        _store(trainable, "model", stored)
    listed = trainable.objects.list("alice")
    with pytest.raises(error, match=match):
        await handle(trainable, conn, set_train_config=_object_config(object_id))
    assert trainable.training["alice"] is before, "a failed config leaves the earlier state (12.1.14)"
    assert trainable.objects.list("alice") == listed, "the store is as it was (12.9.5)"


async def test_a_model_object_of_another_identity_is_not_found(trainable: WorkerServices) -> None:
    _store(trainable, "model", _bytes_tensor(_archive()), identity="bob")
    with pytest.raises(NotFoundError) as info:
        await handle(
            trainable,
            FakeConnection(capabilities=MODEL_OBJECT_CAPS),
            set_train_config=_object_config("model"),
        )
    assert info.value.details == {"id": "model"}


async def test_a_weights_only_worker_refuses_a_model_object_before_looking_for_it(
    trainable: WorkerServices,
) -> None:
    trainable.weights_only = True
    conn = FakeConnection(capabilities=MODEL_OBJECT_CAPS)
    for object_id in ("missing", "model"):  # absent or present: PERMISSION_DENIED either way (12.9.3)
        with pytest.raises(PermissionDeniedError) as info:
            await handle(trainable, conn, set_train_config=_object_config(object_id))
        assert info.value.details == {"field": "model_object"}
        if object_id == "missing":
            _store(trainable, "model", _bytes_tensor(_archive()))


async def test_a_model_object_larger_than_max_model_bytes_is_refused(trainable: WorkerServices) -> None:
    archive = _archive()
    _store(trainable, "model", _bytes_tensor(archive))
    trainable.limits = dataclasses.replace(trainable.limits, max_model_bytes=len(archive) - 1)
    with pytest.raises(ResourceExhaustedError) as info:
        await handle(
            trainable,
            FakeConnection(capabilities=MODEL_OBJECT_CAPS),
            set_train_config=_object_config("model"),
        )
    assert info.value.details["field"] == "model_object"
    assert info.value.details["requested"] == str(len(archive))
    trainable.limits = dataclasses.replace(trainable.limits, max_model_bytes=len(archive))
    await handle(
        trainable, FakeConnection(capabilities=MODEL_OBJECT_CAPS), set_train_config=_object_config("model")
    )


async def test_a_model_object_without_the_capability_is_unimplemented(trainable: WorkerServices) -> None:
    _store(trainable, "model", _bytes_tensor(_archive()))
    with pytest.raises(UnimplementedError, match="model-object"):
        await handle(trainable, FakeConnection(), set_train_config=_object_config("model"))
