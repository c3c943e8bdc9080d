"""Strategies against their formulas written out in NumPy, and the checks made before training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from fedproto.federated.aggregation import BufferedMean, CoordinateMedian, StreamingMean, TrimmedMean
from fedproto.federated.errors import FedAvgConfigError, ResumeError
from fedproto.federated.strategies import (
    STRATEGIES,
    FedAdam,
    FedAvgStrategy,
    FedProx,
    FedYogi,
    Median,
    Strategy,
    TrimmedMeanStrategy,
    resolve_streaming,
    strategy_from_settings,
)
from fedproto.training import TrainConfig


def _round(strategy: Strategy, number: int, global_weights: dict[str, Tensor], updates: list) -> dict:
    aggregator = strategy.aggregator(global_weights, streaming=not strategy.needs_all_updates)
    for weights, n in updates:
        aggregator.add(weights, n)
    return strategy.finalize(number, global_weights, aggregator.result())


def _numpy_fedopt(
    kind: str, rounds: list[tuple[np.ndarray, list[tuple[np.ndarray, int]]]], **h: float
) -> list:
    """Reddi et al. (2021) Algorithm 2 in float64: m0 = 0, v0 = tau^2, no bias correction."""
    eta, b1, b2, tau = h["eta"], h["beta1"], h["beta2"], h["tau"]
    x = rounds[0][0].astype(np.float64)
    m = np.zeros_like(x)
    v = np.full_like(x, tau**2)
    out = []
    for _, updates in rounds:
        total = sum(n for _, n in updates)
        mean = sum(u.astype(np.float64) * n for u, n in updates) / total
        delta = mean.astype(np.float32).astype(np.float64) - x  # the aggregate is rounded to float32 once
        m = b1 * m + (1 - b1) * delta
        if kind == "adam":
            v = b2 * v + (1 - b2) * delta**2
        else:
            v = v - (1 - b2) * delta**2 * np.sign(v - delta**2)
        x = (x + eta * m / (np.sqrt(v) + tau)).astype(np.float32).astype(np.float64)
        out.append(x.astype(np.float32))
    return out


@pytest.mark.parametrize(("cls", "kind"), [(FedAdam, "adam"), (FedYogi, "yogi")])
def test_server_optimizers_match_numpy_over_rounds(cls: type, kind: str) -> None:
    hyper = {"eta": 0.05, "beta1": 0.8, "beta2": 0.95, "tau": 1e-2}
    strategy = cls(**hyper)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    steps = torch.tensor(7)
    global_weights = {"w": torch.from_numpy(x.copy()), "steps": steps}
    plan = []
    for number in range(1, 6):
        updates = [
            (x + rng.normal(scale=0.1 * number, size=x.shape).astype(np.float32), int(rng.integers(1, 50)))
            for _ in range(4)
        ]
        plan.append((x, updates))
        result = _round(
            strategy,
            number,
            global_weights,
            [({"w": torch.from_numpy(u), "steps": torch.tensor(number)}, n) for u, n in updates],
        )
        assert result["w"].dtype == torch.float32
        global_weights = result
        x = result["w"].numpy().copy()
    expected = _numpy_fedopt(kind, plan, **hyper)
    np.testing.assert_allclose(global_weights["w"].numpy(), expected[-1], rtol=1e-6, atol=1e-7)
    assert int(global_weights["steps"]) == 5  # integer tensors take the aggregate's value
    state = strategy.state_dict()
    assert set(state) == {"m.w", "v.w"} and state["m.w"].dtype == torch.float64
    # The state survives a checkpoint: a restored strategy takes the same next step.
    restored = cls(**hyper)
    restored.load_state_dict(state)
    updates = [({"w": torch.from_numpy(x + 0.3), "steps": torch.tensor(9)}, 3)]
    a = _round(strategy, 6, global_weights, updates)
    b = _round(restored, 6, global_weights, updates)
    assert torch.equal(a["w"], b["w"])


def test_yogi_and_adam_differ_when_the_second_moment_shrinks() -> None:
    start = {"w": torch.zeros(3)}
    adam, yogi = FedAdam(), FedYogi()
    big = [({"w": torch.full((3,), 1.0)}, 1)]
    small = [({"w": torch.full((3,), 1.001)}, 1)]
    for strategy in (adam, yogi):
        after = _round(strategy, 1, start, big)
        _round(strategy, 2, after, small)
    assert not torch.equal(adam.state_dict()["v.w"], yogi.state_dict()["v.w"])


def test_fedavg_and_fedprox_aggregate_by_the_weighted_mean() -> None:
    global_weights = {"w": torch.zeros(2)}
    updates = [({"w": torch.tensor([1.0, 2.0])}, 1), ({"w": torch.tensor([3.0, 6.0])}, 3)]
    for strategy in (FedAvgStrategy(), FedProx(mu=0.1)):
        assert _round(strategy, 1, global_weights, updates)["w"].tolist() == [2.5, 5.0]
        assert isinstance(strategy.aggregator(global_weights, streaming=True), StreamingMean)
        assert isinstance(strategy.aggregator(global_weights, streaming=False), BufferedMean)
        assert strategy.state_dict() == {}


def test_fedprox_sends_mu_in_the_train_config_once() -> None:
    model = nn.Linear(2, 1)
    config = TrainConfig(model=model, loss_fn="mse")
    strategy = FedProx(mu=0.25)
    first = strategy.configure_fit(1, [], config)
    assert first.proximal_mu == 0.25 and config.proximal_mu == 0.0
    assert first.to_spec().proximal_mu == 0.25
    assert strategy.configure_fit(2, [], config) is first  # the same object: workers are not configured again
    other = TrainConfig(model=model, loss_fn="l1")
    assert strategy.configure_fit(3, [], other).loss_fn == "l1"
    assert FedAvgStrategy().configure_fit(1, [], config) is config


def test_buffered_strategies_declare_it_and_refuse_streaming() -> None:
    reference = {"w": torch.zeros(1)}
    assert isinstance(Median().aggregator(reference, streaming=False), CoordinateMedian)
    trimmed = TrimmedMeanStrategy(beta=0.2).aggregator(reference, streaming=False)
    assert isinstance(trimmed, TrimmedMean) and trimmed.beta == 0.2
    for strategy in (Median(), TrimmedMeanStrategy()):
        assert strategy.needs_all_updates
        assert resolve_streaming(strategy, None) is False
        assert resolve_streaming(strategy, False) is False
        with pytest.raises(FedAvgConfigError, match="cannot stream; pass streaming=False"):
            resolve_streaming(strategy, True)
        with pytest.raises(FedAvgConfigError, match="cannot stream"):
            strategy.aggregator(reference, streaming=True)
    for strategy in (FedAvgStrategy(), FedProx(), FedAdam(), FedYogi()):
        assert not strategy.needs_all_updates
        assert resolve_streaming(strategy, None) is True


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: FedProx(mu=-1), "mu must be in"),
        (lambda: FedProx(mu=float("nan")), "mu must be a number"),
        (lambda: FedAdam(eta=0), "eta must be in"),
        (lambda: FedAdam(beta1=1.0), "beta1 must be in"),
        (lambda: FedYogi(beta2=-0.1), "beta2 must be in"),
        (lambda: FedYogi(tau=0), "tau must be in"),
        (lambda: TrimmedMeanStrategy(beta=0.5), "beta must be in"),
        (lambda: TrimmedMeanStrategy(beta="0.1"), "beta must be a number"),
    ],
)
def test_bad_hyperparameters(factory: object, message: str) -> None:
    with pytest.raises(FedAvgConfigError, match=message):
        factory()  # type: ignore[operator]


def test_settings_rebuild_every_strategy() -> None:
    assert set(STRATEGIES) == {"fedavg", "fedprox", "fedadam", "fedyogi", "median", "trimmed_mean"}
    for strategy in (
        FedAvgStrategy(),
        FedProx(0.3),
        FedAdam(eta=0.2),
        FedYogi(tau=0.1),
        Median(),
        TrimmedMeanStrategy(0.3),
    ):
        rebuilt = strategy_from_settings(strategy.settings())
        assert type(rebuilt) is type(strategy) and rebuilt.settings() == strategy.settings()
    assert repr(FedProx(0.5)) == "FedProx(mu=0.5)"
    with pytest.raises(FedAvgConfigError, match="unknown strategy 'sgd'"):
        strategy_from_settings({"name": "sgd"})
    with pytest.raises(FedAvgConfigError, match="does not take"):
        strategy_from_settings({"name": "median", "beta": 0.1})
    with pytest.raises(ResumeError, match="keeps no state"):
        FedAvgStrategy().load_state_dict({"m.w": torch.zeros(1)})
    with pytest.raises(ResumeError, match="unknown entry"):
        FedAdam().load_state_dict({"q.w": torch.zeros(1)})
