"""Which clients train in a round: sample sizes and seeded samplers.

A round first finds the *available* clients (those whose worker answers), then asks how many to train
(:func:`sample_size`: ``max(min_fit_clients, int(fraction_fit * available))``, at most all of them)
and lets a :class:`ClientSampler` choose which. :class:`SeededSampler` draws every round's sample from
its seed and the round number alone, so the same seed gives the same sequence of samples (for the same
available clients), and a resumed run draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedproto.federated.errors import FedAvgConfigError, ResumeError

__all__ = ["ClientSampler", "SeededSampler", "sample_size"]

#: The largest seed a sampler accepts (numpy's SeedSequence takes any non-negative integer; the JSON
#: checkpoint and the CLI keep it to 64 bits).
_MAX_SEED = 2**64 - 1


@runtime_checkable
class ClientSampler(Protocol):
    """Chooses the clients of a round.

    ``sample(round, available, size)`` returns ``size`` distinct ids taken from ``available`` (the
    available clients' ids, in the coordinator's client order). ``state_dict``/``load_state_dict``
    save and restore whatever the sampler keeps between rounds as JSON values, for checkpoints.
    """

    def sample(self, round: int, available: Sequence[str], size: int) -> list[str]:
        """``size`` distinct ids from ``available`` for round ``round`` (numbered from 1)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state as JSON values."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict`."""
        ...


class SeededSampler:
    """Uniform sampling without replacement, reproducible from a seed.

    Round ``r`` draws with ``numpy.random.default_rng([seed, r])`` (PCG64 seeded through a
    SeedSequence), ``size`` positions among the available clients without replacement; the chosen
    ids come back in the order of ``available``. Because a round's draw depends on nothing but the
    seed, the round and the available ids, two samplers with the same seed return the same samples,
    in any process, and a resumed run needs no more state than the seed.
    """

    def __init__(self, seed: int = 0) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _MAX_SEED:
            raise FedAvgConfigError(f"the sampler's seed must be an integer in [0, 2**64), got {seed!r}")
        self.seed = seed

    def sample(self, round: int, available: Sequence[str], size: int) -> list[str]:
        """``size`` distinct ids of ``available``, in their order, drawn from (seed, round)."""
        if not isinstance(round, int) or round < 1:
            raise ValueError(f"rounds are numbered from 1, got {round!r}")
        if not 0 <= size <= len(available):
            raise ValueError(f"cannot sample {size} clients out of {len(available)}")
        rng = np.random.default_rng([self.seed, round])
        chosen = rng.choice(len(available), size=size, replace=False)
        return [available[position] for position in sorted(int(p) for p in chosen)]

    def state_dict(self) -> dict[str, Any]:
        """``{"kind": "seeded", "seed": seed}``."""
        return {"kind": "seeded", "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take the seed of a saved state (it must be a seeded sampler's)."""
        if state.get("kind") != "seeded" or not isinstance(state.get("seed"), int):
            raise ResumeError(f"the saved sampler state {dict(state)!r} is not a SeededSampler's")
        self.seed = int(state["seed"])

    def __repr__(self) -> str:
        return f"SeededSampler(seed={self.seed})"


def sample_size(available: int, *, fraction_fit: float, min_fit_clients: int) -> int:
    """Clients to train among ``available``: ``max(min_fit_clients, int(fraction_fit * available))``,
    but never more than are available."""
    # The tiny epsilon keeps a product such as 0.29 * 100 = 28.999999999999996 from losing a client.
    return min(available, max(min_fit_clients, int(fraction_fit * available + 1e-9)))
