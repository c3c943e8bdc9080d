"""What request handlers may use of a worker: :class:`WorkerServices`.

The handlers in :mod:`fedproto.server.handlers` see the worker only through this object, never through
the :class:`~fedproto.server.worker.Worker` itself, so they can be driven in tests without a worker,
a socket or an event loop running a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedproto.datasets import Dataset
from fedproto.errors import FailedPreconditionError, NotFoundError
from fedproto.server.methods import MethodRegistry
from fedproto.server.store import ObjectStore
from fedproto.server.threads import WorkerThreads
from fedproto.training import ModelRegistry, TrainingState
from fedproto.types import Limits

__all__ = ["WorkerServices"]


@dataclass(slots=True, kw_only=True)
class WorkerServices:
    """A worker's state and resources, as its request handlers use them.

    ``datasets`` and ``training`` are the worker's own mappings (datasets by key, training states by
    client identity), not copies: what the worker adds, the handlers see. ``limits`` and
    ``weights_only`` are read at each request, so changing them on the worker applies from the next one.
    """

    limits: Limits
    objects: ObjectStore
    methods: MethodRegistry
    models: ModelRegistry
    threads: WorkerThreads
    datasets: dict[str, Dataset] = field(default_factory=dict)
    training: dict[str, TrainingState] = field(default_factory=dict)
    weights_only: bool = False

    def dataset(self, key: str) -> Dataset:
        """The dataset called ``key`` (NOT_FOUND otherwise)."""
        try:
            return self.datasets[key]
        except KeyError:
            raise NotFoundError(f"no dataset {key!r}", details={"dataset_key": key}) from None

    def training_state(self, identity: str) -> TrainingState:
        """The training state of ``identity`` (FAILED_PRECONDITION before its first train config)."""
        state = self.training.get(identity)
        if state is None:
            raise FailedPreconditionError("no train config: send one first (set_train_config)")
        return state
