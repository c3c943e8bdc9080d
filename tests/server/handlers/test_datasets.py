"""The dataset listing (section 10)."""

from __future__ import annotations

import torch

from fedproto.datasets import as_dataset
from fedproto.server.services import WorkerServices
from fedproto_pb.v1 import datasets_pb2

from .support import FakeConnection, handle, one


async def test_datasets_are_listed_by_key(services: WorkerServices) -> None:
    services.datasets["b"] = as_dataset((torch.zeros(3, 2), torch.zeros(3)), "second")
    services.datasets["a"] = as_dataset((torch.zeros(5, 2), torch.zeros(5)), "first")
    listed = one(await handle(services, FakeConnection(), list_datasets=datasets_pb2.ListDatasetsRequest()))
    assert [(d.key, d.description) for d in listed.datasets] == [("a", "first"), ("b", "second")]
