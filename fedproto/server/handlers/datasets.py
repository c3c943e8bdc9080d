"""Handler of the dataset listing (docs/protocol.md section 10)."""

from __future__ import annotations

from fedproto import codec
from fedproto.datasets import describe
from fedproto.server.dispatch import Connection, Reply
from fedproto.server.services import WorkerServices
from fedproto.session import RequestReceived

__all__ = ["list_datasets"]


async def list_datasets(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Describe every dataset the worker offers, by key order."""
    datasets = services.datasets
    descriptions = [describe(key, datasets[key]) for key in sorted(datasets)]
    return {"list_datasets_reply": codec.datasets_reply_to_proto(descriptions)}
