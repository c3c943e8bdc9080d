"""The client library: :class:`AsyncClient` (the core) and :class:`Client` (its synchronous facade)."""

from fedproto.client.async_client import AsyncClient, ObjectRef, RemoteMethods, WeightsSink
from fedproto.client.sync_client import Client

__all__ = ["AsyncClient", "Client", "ObjectRef", "RemoteMethods", "WeightsSink"]
