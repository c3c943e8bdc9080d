"""The worker's request handlers, one per request kind, in one table: :data:`HANDLERS`.

Each handler takes the :class:`~fedproto.server.services.WorkerServices` it works with, the
:class:`~fedproto.server.dispatch.Connection` the request came on, and the request, and returns the
terminal reply's body (or None when it sent the reply itself, as a download does). Every request kind
of :data:`fedproto.session.REQUEST_KINDS` is either in :data:`HANDLERS` or in :data:`ANSWERED_BY_SESSION`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from fedproto.server.dispatch import Handler
from fedproto.server.handlers import calls, datasets, objects, training

__all__ = ["ANSWERED_BY_SESSION", "HANDLERS"]

#: Request kinds the session answers itself, so they never reach a handler: a ping's pong must not wait
#: behind any other work (section 5.4).
ANSWERED_BY_SESSION = frozenset({"ping"})

#: Request kind -> its handler (sections 9 to 12).
HANDLERS: Mapping[str, Handler] = MappingProxyType(
    {
        # objects (section 9)
        "send_object": objects.send_object,
        "get_object": objects.get_object,
        "delete_object": objects.delete_object,
        "list_objects": objects.list_objects,
        "count_objects": objects.count_objects,
        "clear_objects": objects.clear_objects,
        "search_objects": objects.search_objects,
        # datasets (section 10)
        "list_datasets": datasets.list_datasets,
        # custom calls (section 11)
        "list_methods": calls.list_methods,
        "call": calls.call,
        # training (section 12)
        "set_train_config": training.set_train_config,
        "fit": training.fit,
        "evaluate": training.evaluate,
        "get_weights": training.get_weights,
        "set_weights": training.set_weights,
        "list_models": training.list_models,
    }
)
