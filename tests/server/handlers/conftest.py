"""Fixtures of the handler tests: fresh WorkerServices for each test, threads shared by the module."""

from __future__ import annotations

import pytest

from fedproto.server.methods import MethodRegistry
from fedproto.server.services import WorkerServices
from fedproto.server.store import ObjectStore
from fedproto.server.threads import WorkerThreads
from fedproto.training import ModelRegistry
from fedproto.types import Limits


@pytest.fixture(scope="package")
def threads() -> WorkerThreads:
    return WorkerThreads("handlers-test", max_threads=2)


@pytest.fixture
def services(threads: WorkerThreads) -> WorkerServices:
    return WorkerServices(
        limits=Limits(max_call_args_bytes=1024),
        objects=ObjectStore(),
        methods=MethodRegistry(),
        models=ModelRegistry(),
        threads=threads,
    )
