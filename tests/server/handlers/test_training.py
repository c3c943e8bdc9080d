"""The training handlers (section 12): config, fit with progress, evaluate, weights, models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedproto import codec
from fedproto.datasets import as_dataset
from fedproto.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from fedproto.server.services import WorkerServices
from fedproto.session import ProgressReceived
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
