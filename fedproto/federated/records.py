"""What a federated round did: one :class:`ClientRound` per client, one :class:`RoundRecord` per round.

Records are frozen values; they go to JSON and back (:meth:`RoundRecord.to_json`,
:meth:`RoundRecord.from_json`) for the run directory's ``rounds.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EVAL_STATUSES", "STATUSES", "ClientRound", "RoundCallback", "RoundRecord", "WorkerRound"]

#: A client's part in a round: its update went into the aggregate ("ok"), it failed ("failed": an
#: error, a closed connection), its result came after the round's deadline and was discarded
#: ("late"), or its worker did not answer when the round began, so it was not sampled ("unavailable").
STATUSES = ("ok", "failed", "late", "unavailable")
#: How a client's evaluation of the round's new weights went: its result counts ("ok"), it failed
#: ("failed"), or it was not done by the round's deadline and was discarded ("late").
EVAL_STATUSES = ("ok", "failed", "late")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRound:
    """What one client did in one round.

    ``client`` is the client's id, ``worker`` its worker's, ``dataset_key`` the dataset it trained on;
    ``status`` is one of :data:`STATUSES` and ``error`` says why when it is not "ok". ``loss`` is the
    fit's mean batch loss and ``final_loss`` its last batch's; ``samples`` the samples trained on
    (repeats across local epochs included) and ``dataset_size`` the samples held (the averaging
    weight). ``seconds`` is the wall-clock time of the client's training step as the coordinator saw
    it (sending weights, fitting, receiving weights), ``fit_seconds`` the time of the training loop on
    the worker. The ``eval_*`` fields hold the evaluation of the round's new global weights on the
    client's evaluation dataset, all None when it was not evaluated: ``eval_status`` is one of
    :data:`EVAL_STATUSES` and ``eval_error`` says why when it is not "ok"; ``eval_kind`` is what was
    measured ("classification" or "regression", ``EvaluateKind``): ``eval_correct`` counts right
    classes of a classification, ``eval_mean_squared_error`` and ``eval_mean_absolute_error`` are a
    regression's; ``eval_total`` counts the samples evaluated and ``eval_loss`` is their mean loss.
    """

    worker: str
    client: str = ""
    dataset_key: str = ""
    status: str = "ok"
    error: str | None = None
    loss: float | None = None
    final_loss: float | None = None
    samples: int = 0
    dataset_size: int = 0
    seconds: float = 0.0
    fit_seconds: float = 0.0
    eval_loss: float | None = None
    eval_correct: int | None = None
    eval_total: int | None = None
    eval_error: str | None = None
    eval_status: str | None = None
    eval_kind: str | None = None
    eval_mean_squared_error: float | None = None
    eval_mean_absolute_error: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.eval_status is not None and self.eval_status not in EVAL_STATUSES:
            raise ValueError(f"eval_status must be None or one of {EVAL_STATUSES}, got {self.eval_status!r}")
        if not self.client:
            object.__setattr__(self, "client", self.worker)

    @property
    def ok(self) -> bool:
        """Whether the client's update went into the round's aggregate."""
        return self.status == "ok"


#: The name this record had when every worker was one client.
WorkerRound = ClientRound


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundRecord:
    """One federated round: every considered client's part and the global metrics.

    ``clients`` holds the sampled clients (in client order) followed by the unavailable ones.
    ``available`` counts the clients whose worker answered when the round began and ``sampled`` those
    chosen to train. The metrics evaluate the new global weights over every client that evaluated them
    in time, each None when nothing of its kind was evaluated: ``loss`` (the sample-weighted mean),
    ``accuracy`` (pooled over the classifications) and ``mean_squared_error`` and
    ``mean_absolute_error`` (sample-weighted over the regressions: float targets have no accuracy);
    :attr:`metric` names the one to show. ``seconds`` is the round's wall-clock time.
    """

    round: int
    clients: tuple[ClientRound, ...]
    loss: float | None
    accuracy: float | None
    seconds: float
    available: int = -1
    sampled: int = -1
    mean_squared_error: float | None = None
    mean_absolute_error: float | None = None

    def __post_init__(self) -> None:
        if self.sampled < 0:
            object.__setattr__(self, "sampled", sum(c.status != "unavailable" for c in self.clients))
        if self.available < 0:
            object.__setattr__(self, "available", self.sampled)

    @property
    def workers(self) -> tuple[ClientRound, ...]:
        """The clients' parts (the name from when every worker was one client)."""
        return self.clients

    @property
    def succeeded(self) -> tuple[ClientRound, ...]:
        """The clients whose updates went into this round's aggregate."""
        return tuple(c for c in self.clients if c.ok)

    @property
    def failed(self) -> tuple[ClientRound, ...]:
        """The clients that took no part in the aggregate: failed, late or unavailable."""
        return tuple(c for c in self.clients if not c.ok)

    @property
    def finished(self) -> int:
        """How many sampled clients finished in time (their updates were aggregated)."""
        return len(self.succeeded)

    @property
    def dropped(self) -> int:
        """How many sampled clients failed (errors, lost connections)."""
        return sum(c.status == "failed" for c in self.clients)

    @property
    def late(self) -> int:
        """How many sampled clients missed the round's deadline (their results were discarded)."""
        return sum(c.status == "late" for c in self.clients)

    @property
    def eval_late(self) -> int:
        """How many evaluations missed the round's deadline (their results were discarded)."""
        return sum(c.eval_status == "late" for c in self.clients)

    @property
    def eval_failed(self) -> int:
        """How many evaluations failed (errors, lost connections)."""
        return sum(c.eval_status == "failed" for c in self.clients)

    @property
    def metric(self) -> tuple[str, float] | None:
        """The round's headline metric as (name, value): ("accuracy", a) when classifications were
        evaluated, else ("mse", e) when regressions were (their mean squared error), else None."""
        if self.accuracy is not None:
            return "accuracy", self.accuracy
        if self.mean_squared_error is not None:
            return "mse", self.mean_squared_error
        return None

    def to_json(self) -> dict[str, Any]:
        """This record as JSON values."""
        data = dataclasses.asdict(self)
        data["clients"] = [dataclasses.asdict(c) for c in self.clients]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundRecord:
        """A record from :meth:`to_json`'s values (ValueError or TypeError when they do not fit)."""
        values = dict(data)
        values["clients"] = tuple(ClientRound(**c) for c in values.get("clients", ()))
        return cls(**values)


#: Called with each round's record as soon as the round ends.
RoundCallback = Callable[[RoundRecord], None]
