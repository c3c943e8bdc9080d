"""The errors of federated training on the coordinator.

:class:`FedAvgError` is the base: a round that cannot count (too few clients available, too few
finished) raises it with that round's :class:`~fedproto.federated.records.RoundRecord` attached.
:class:`FedAvgConfigError` (also a ``ValueError``) is a setting that cannot work, raised before any
training starts; :class:`ResumeError` is a run directory that cannot be resumed with this model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedproto.errors import FedprotoError

if TYPE_CHECKING:
    from fedproto.federated.records import RoundRecord

__all__ = ["FedAvgConfigError", "FedAvgError", "ResumeError"]


class FedAvgError(FedprotoError):
    """Federated training cannot go on; ``record`` is the round that failed (None before round 1)."""

    def __init__(self, message: str, *, record: RoundRecord | None = None) -> None:
        super().__init__(message)
        self.record = record


class FedAvgConfigError(FedAvgError, ValueError):
    """A federated setting that cannot work (a fraction outside (0, 1], more clients required than
    exist, a strategy that needs every update with streaming on...), found before any training."""


class ResumeError(FedAvgConfigError):
    """A run directory that cannot be resumed: no complete round, damaged files, or another model
    (other parameter names, shapes or dtypes) or strategy than the one given."""
