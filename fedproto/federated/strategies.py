"""Strategies: how a round's client updates become the next global weights.

Every strategy is a small class over one interface, :class:`Strategy`:

- :meth:`Strategy.configure_fit` gives the train config the round's clients train with (FedProx adds
  its proximal term there);
- :meth:`Strategy.aggregator` makes the round's :class:`~fedproto.federated.aggregation.Aggregator`,
  streaming (O(model) memory) or buffered (every update kept) as asked; a strategy whose statistic
  needs every update at once says so with ``needs_all_updates = True``, and asking it to stream is a
  :class:`~fedproto.federated.errors.FedAvgConfigError` before any training (:func:`resolve_streaming`);
- :meth:`Strategy.finalize` turns the aggregate into the next global weights (the server optimizers of
  FedAdam and FedYogi step there);
- :meth:`Strategy.settings` (hyperparameters, JSON) and :meth:`Strategy.state_dict` /
  :meth:`Strategy.load_state_dict` (tensors) go into checkpoints.

The strategies: :class:`FedAvgStrategy` (McMahan et al., 2017), :class:`FedProx` (Li et al., 2020),
:class:`FedAdam` and :class:`FedYogi` (Reddi et al., 2021, "Adaptive Federated Optimization"),
:class:`Median` and :class:`TrimmedMeanStrategy` (Yin et al., 2018). :func:`strategy_from_settings`
rebuilds one from its settings (the CLI and resumed runs use it).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from fedproto.federated.aggregation import (
    Aggregator,
    BufferedMean,
    CoordinateMedian,
    StreamingMean,
    TrimmedMean,
    averages,
)
from fedproto.federated.clients import FederatedClient
from fedproto.federated.errors import FedAvgConfigError, ResumeError
from fedproto.training import TrainConfig

__all__ = [
    "STRATEGIES",
    "FedAdam",
    "FedAvgStrategy",
    "FedProx",
    "FedYogi",
    "Median",
    "Strategy",
    "TrimmedMeanStrategy",
    "resolve_streaming",
    "strategy_from_settings",
]


def _number(
    value: object, name: str, *, low: float, high: float | None = None, low_open: bool = False
) -> float:
    """``value`` as a float when it is a number in range, else FedAvgConfigError naming ``name``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise FedAvgConfigError(f"{name} must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value >= high):
        bounds = f"{'(' if low_open else '['}{low:g}, {'inf' if high is None else f'{high:g}'})"
        raise FedAvgConfigError(f"{name} must be in {bounds}, got {value!r}")
    return float(value)


class Strategy(abc.ABC):
    """How one federated run turns client updates into global weights (see the module's text).

    ``name`` identifies the strategy in checkpoints and on the command line. ``needs_all_updates``
    is True for strategies whose aggregate needs every update at once (no streaming possible).
    """

    name: ClassVar[str]
    needs_all_updates: ClassVar[bool] = False

    def configure_fit(
        self, round: int, clients: Sequence[FederatedClient], config: TrainConfig
    ) -> TrainConfig:
        """The train config ``clients`` train with in round ``round``; by default ``config`` itself.

        Return the same object for the same input when nothing changes: a different config is sent
        to the workers again (which also resets their model and optimizer).
        """
        return config

    def aggregator(
        self, global_weights: Mapping[str, Tensor], *, streaming: bool, deltas: bool = False
    ) -> Aggregator:
        """A new aggregator for one round: the sample-weighted mean, streaming or buffered."""
        kind = StreamingMean if streaming else BufferedMean
        return kind(global_weights, deltas=deltas)

    def finalize(
        self, round: int, global_weights: Mapping[str, Tensor], aggregate: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """The next global weights from the round's aggregate; by default the aggregate."""
        return aggregate

    def settings(self) -> dict[str, Any]:
        """The strategy's name and hyperparameters as JSON values (``strategy_from_settings`` reads them)."""
        return {"name": self.name}

    def state_dict(self) -> dict[str, Tensor]:
        """What the strategy carries from round to round, as named tensors (empty when nothing)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore :meth:`state_dict`'s tensors (a checkpoint's)."""
        if state:
            raise ResumeError(
                f"the {self.name} strategy keeps no state, but the checkpoint has {sorted(state)}"
            )

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "name")
        return f"{type(self).__name__}({arguments})"


def resolve_streaming(strategy: Strategy, streaming: bool | None) -> bool:
    """Whether rounds stream: ``streaming`` when given, else whenever the strategy allows it.

    FedAvgConfigError when streaming is asked of a strategy that needs every update at once.
    """
    if streaming is None:
        return not strategy.needs_all_updates
    if not isinstance(streaming, bool):
        raise FedAvgConfigError(f"streaming must be True, False or None, got {streaming!r}")
    if streaming and strategy.needs_all_updates:
        raise FedAvgConfigError(
            f"the {strategy.name} strategy needs every update of a round at once, so it cannot stream; "
            "pass streaming=False (or leave it unset)"
        )
    return streaming


class FedAvgStrategy(Strategy):
    """Federated averaging: the next global weights are the sample-weighted mean of the updates."""

    name = "fedavg"


class FedProx(FedAvgStrategy):
    """FedAvg whose clients minimise ``loss + mu / 2 * ||w - w_global||^2`` (Li et al., 2020).

    The proximal term travels in the train config (``TrainConfig.proximal_mu``, protocol section 12);
    the worker's engine adds it to every batch's loss, with ``w_global`` the weights the fit started
    from. Aggregation is FedAvg's. ``mu >= 0``; 0 is plain FedAvg.
    """

    name = "fedprox"

    def __init__(self, mu: float = 0.01) -> None:
        self.mu = _number(mu, "mu", low=0.0)
        self._source: TrainConfig | None = None
        self._configured: TrainConfig | None = None

    def configure_fit(
        self, round: int, clients: Sequence[FederatedClient], config: TrainConfig
    ) -> TrainConfig:
        """``config`` with ``proximal_mu = mu`` (the same object every round for the same config)."""
        if config is not self._source or self._configured is None:
            self._source = config
            self._configured = dataclasses.replace(config, proximal_mu=self.mu)
        return self._configured

    def settings(self) -> dict[str, Any]:
        """``{"name": "fedprox", "mu": mu}``."""
        return {"name": self.name, "mu": self.mu}


class _ServerOptimizer(Strategy):
    """FedOpt (Reddi et al., 2021): a server optimizer stepping on the round's pseudo-gradient.

    With ``x`` the global weights and ``delta = aggregate - x`` (the weighted mean of the clients'
    changes), per averaged tensor and in float64:

        m = beta1 * m + (1 - beta1) * delta
        v = <the optimizer's second-moment update>
        x = x + eta * m / (sqrt(v) + tau)

    starting from ``m = 0`` and ``v = tau**2``, without bias correction (as in the paper's Algorithm 2).
    Integer and bool tensors take the aggregate's values. ``m`` and ``v`` are the strategy's state.
    """

    def __init__(
        self, *, eta: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        self.eta = _number(eta, "eta", low=0.0, low_open=True)
        self.beta1 = _number(beta1, "beta1", low=0.0, high=1.0)
        self.beta2 = _number(beta2, "beta2", low=0.0, high=1.0)
        self.tau = _number(tau, "tau", low=0.0, low_open=True)
        self._m: dict[str, Tensor] = {}
        self._v: dict[str, Tensor] = {}

    @abc.abstractmethod
    def _second_moment(self, v: Tensor, delta: Tensor) -> Tensor: ...

    def finalize(
        self, round: int, global_weights: Mapping[str, Tensor], aggregate: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """One server-optimizer step from ``global_weights`` along the pseudo-gradient."""
        result = {}
        for name, current in global_weights.items():
            if not averages(current) or current.dtype.is_complex:
                result[name] = aggregate[name]
                continue
            x = current.detach().to(device="cpu", dtype=torch.float64)
            delta = aggregate[name].to(device="cpu", dtype=torch.float64) - x
            m = self._m.get(name, torch.zeros_like(x))
            v = self._v.get(name, torch.full_like(x, self.tau**2))
            m = self.beta1 * m + (1 - self.beta1) * delta
            v = self._second_moment(v, delta)
            self._m[name], self._v[name] = m, v
            result[name] = (x + self.eta * m / (v.sqrt() + self.tau)).to(current.dtype)
        return result

    def settings(self) -> dict[str, Any]:
        """The name and ``eta``, ``beta1``, ``beta2``, ``tau``."""
        return {"name": self.name, "eta": self.eta, "beta1": self.beta1, "beta2": self.beta2, "tau": self.tau}

    def state_dict(self) -> dict[str, Tensor]:
        """``m.<name>`` and ``v.<name>`` for every averaged tensor seen so far (float64)."""
        state = {f"m.{name}": tensor.clone() for name, tensor in self._m.items()}
        state.update({f"v.{name}": tensor.clone() for name, tensor in self._v.items()})
        return state

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore ``m`` and ``v``."""
        m: dict[str, Tensor] = {}
        v: dict[str, Tensor] = {}
        for key, tensor in state.items():
            kind, _, name = key.partition(".")
            if kind not in ("m", "v") or not name:
                raise ResumeError(f"the {self.name} state has an unknown entry {key!r}")
            (m if kind == "m" else v)[name] = tensor.to(torch.float64).clone()
        if m.keys() != v.keys():
            raise ResumeError(f"the {self.name} state's m and v name different tensors")
        self._m, self._v = m, v


class FedAdam(_ServerOptimizer):
    """FedOpt with Adam's second moment: ``v = beta2 * v + (1 - beta2) * delta**2``."""

    name = "fedadam"

    def _second_moment(self, v: Tensor, delta: Tensor) -> Tensor:
        return self.beta2 * v + (1 - self.beta2) * delta**2


class FedYogi(_ServerOptimizer):
    """FedOpt with Yogi's second moment: ``v = v - (1 - beta2) * delta**2 * sign(v - delta**2)``."""

    name = "fedyogi"

    def _second_moment(self, v: Tensor, delta: Tensor) -> Tensor:
        squared = delta**2
        return v - (1 - self.beta2) * squared * torch.sign(v - squared)


class Median(Strategy):
    """The next global weights are the coordinate-wise median of the updates (unweighted).

    Robust to a minority of arbitrary updates; needs every update of the round at once.
    """

    name = "median"
    needs_all_updates = True

    def aggregator(
        self, global_weights: Mapping[str, Tensor], *, streaming: bool, deltas: bool = False
    ) -> Aggregator:
        """A :class:`~fedproto.federated.aggregation.CoordinateMedian` (``streaming`` must be False)."""
        resolve_streaming(self, streaming)
        return CoordinateMedian(global_weights, deltas=deltas)


class TrimmedMeanStrategy(Strategy):
    """The next global weights are the coordinate-wise ``beta``-trimmed mean of the updates.

    ``0 <= beta < 0.5`` of the values is dropped at each end of every coordinate (unweighted). Needs
    every update of the round at once.
    """

    name = "trimmed_mean"
    needs_all_updates = True

    def __init__(self, beta: float = 0.1) -> None:
        self.beta = _number(beta, "beta", low=0.0, high=0.5)

    def aggregator(
        self, global_weights: Mapping[str, Tensor], *, streaming: bool, deltas: bool = False
    ) -> Aggregator:
        """A :class:`~fedproto.federated.aggregation.TrimmedMean` (``streaming`` must be False)."""
        resolve_streaming(self, streaming)
        return TrimmedMean(global_weights, beta=self.beta, deltas=deltas)

    def settings(self) -> dict[str, Any]:
        """``{"name": "trimmed_mean", "beta": beta}``."""
        return {"name": self.name, "beta": self.beta}


#: Every strategy by name, for :func:`strategy_from_settings`.
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvgStrategy, FedProx, FedAdam, FedYogi, Median, TrimmedMeanStrategy)
}


def strategy_from_settings(settings: Mapping[str, Any]) -> Strategy:
    """Build a strategy from :meth:`Strategy.settings` (a name and its hyperparameters).

    FedAvgConfigError for an unknown name or hyperparameters the strategy does not take.
    """
    values = dict(settings)
    name = values.pop("name", None)
    cls = STRATEGIES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise FedAvgConfigError(f"unknown strategy {name!r}; strategies are {', '.join(STRATEGIES)}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise FedAvgConfigError(f"the {name} strategy does not take {sorted(values)}: {exc}") from None
