"""The cases, one module per group; importing this package registers them in group order."""

from . import (
    auth,
    calls,
    compatibility,
    concurrency,
    datasets,
    digests,
    errors,
    framing,
    handshake,
    limits,
    objects,
    robustness,
    training,
)

__all__ = [
    "auth",
    "calls",
    "compatibility",
    "concurrency",
    "datasets",
    "digests",
    "errors",
    "framing",
    "handshake",
    "limits",
    "objects",
    "robustness",
    "training",
]
