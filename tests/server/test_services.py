"""WorkerServices: the worker as its handlers see it."""

from __future__ import annotations

import pytest
import torch

import fedproto
from fedproto.errors import FailedPreconditionError, NotFoundError
from fedproto.server.services import WorkerServices


def test_a_worker_shares_its_state_with_its_services() -> None:
    worker = fedproto.Worker("services-test", weights_only=True)
    services = worker.services
    assert isinstance(services, WorkerServices)
    assert services.objects is worker.objects and services.methods is worker.methods
    worker.add_dataset((torch.zeros(2, 1), torch.zeros(2)), key="d")
    assert services.dataset("d") is worker.dataset("d")
    assert services.weights_only
    worker.weights_only = False
    worker.limits = fedproto.Limits(max_call_args_bytes=7)
    assert not services.weights_only and services.limits.max_call_args_bytes == 7


def test_missing_datasets_and_training_states_are_typed_errors() -> None:
    services = fedproto.Worker("services-test").services
    with pytest.raises(NotFoundError) as info:
        services.dataset("nope")
    assert info.value.details == {"dataset_key": "nope"}
    with pytest.raises(FailedPreconditionError, match="set_train_config"):
        services.training_state("alice")
