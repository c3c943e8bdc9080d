"""The engine's federated options (protocol 12.1.16-12.1.17): FedProx's proximal term and reset_optimizer.

Each is checked against the same steps written out in NumPy.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from fedproto.datasets import Dataset
from fedproto.errors import InvalidArgumentError
from fedproto.training import ModelRegistry, TrainConfig, TrainingState


@pytest.fixture(autouse=True)
def _quiet_jit() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


def _linear(weight: list[float]) -> nn.Linear:
    model = nn.Linear(len(weight), 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weight]))
    return model


def _state(config: TrainConfig) -> TrainingState:
    return TrainingState.configure(
        config.to_spec(), registry=ModelRegistry(), weights_only=False, max_model_bytes=0
    )


def _data(seed: int = 0, samples: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 3)).astype(np.float32)
    y = rng.normal(size=(samples, 1)).astype(np.float32)
    return x, y


def _numpy_fit(
    w0: np.ndarray, x: np.ndarray, y: np.ndarray, *, lr: float, mu: float, batch: int, momentum: float = 0.0
) -> np.ndarray:
    """SGD on MSE of x @ w with the proximal term mu/2 ||w - w0||^2, batches in order, float64."""
    w = w0.astype(np.float64).copy()
    start = w.copy()
    velocity = np.zeros_like(w)
    for first in range(0, len(x), batch):
        xb, yb = x[first : first + batch].astype(np.float64), y[first : first + batch, 0].astype(np.float64)
        residual = xb @ w - yb
        gradient = 2 * xb.T @ residual / len(xb) + mu * (w - start)
        velocity = momentum * velocity + gradient if momentum else gradient
        w = w - lr * velocity
    return w


@pytest.mark.parametrize("mu", [0.0, 0.5, 3.0])
def test_proximal_term_matches_numpy(mu: float) -> None:
    x, y = _data()
    w0 = np.array([0.3, -0.2, 0.1], dtype=np.float32)
    model = _linear(w0.tolist())
    config = TrainConfig(
        model=model,
        loss_fn="mse",
        optimizer_args={"lr": 0.1},
        batch_size=2,
        shuffle=False,
        proximal_mu=mu,
    )
    state = _state(config)
    result = state.fit(Dataset(torch.from_numpy(x), torch.from_numpy(y)))
    expected = _numpy_fit(w0, x, y, lr=0.1, mu=mu, batch=2)
    got = state.state_dict()["weight"].double().numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The reported loss is the plain loss of the last batch, without the proximal term.
    w_before_last = _numpy_fit(w0, x[:4], y[:4], lr=0.1, mu=mu, batch=2)
    plain = np.mean((x[4:].astype(np.float64) @ w_before_last - y[4:, 0]) ** 2)
    assert result.final_loss == pytest.approx(plain, rel=1e-5)


def test_proximal_term_pulls_towards_the_start_of_each_fit() -> None:
    x, y = _data(seed=1)
    dataset = Dataset(torch.from_numpy(x), torch.from_numpy(y))
    w0 = np.zeros(3, dtype=np.float32)
    settings = {"loss_fn": "mse", "optimizer_args": {"lr": 0.01}, "batch_size": 2, "shuffle": False}
    plain = _state(TrainConfig(model=_linear(w0.tolist()), **settings))
    prox = _state(TrainConfig(model=_linear(w0.tolist()), proximal_mu=10.0, **settings))
    plain.fit(dataset)
    prox.fit(dataset)
    moved_plain = float(plain.state_dict()["weight"].norm())
    moved_prox = float(prox.state_dict()["weight"].norm())
    assert 0 < moved_prox < moved_plain
    # A second fit anchors at the weights it starts from, not at the first fit's start.
    start = prox.state_dict()["weight"].double().numpy()[0]
    prox.fit(dataset)
    expected = _numpy_fit(start.astype(np.float32), x, y, lr=0.01, mu=10.0, batch=2)
    np.testing.assert_allclose(
        prox.state_dict()["weight"].double().numpy()[0], expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("reset", [False, True])
def test_reset_optimizer_clears_momentum_between_fits(reset: bool) -> None:
    x, y = _data(seed=2)
    dataset = Dataset(torch.from_numpy(x), torch.from_numpy(y))
    w0 = np.array([0.5, 0.5, -0.5], dtype=np.float32)
    config = TrainConfig(
        model=_linear(w0.tolist()),
        loss_fn="mse",
        optimizer_args={"lr": 0.05, "momentum": 0.9},
        batch_size=3,
        shuffle=False,
        reset_optimizer=reset,
    )
    state = _state(config)
    state.fit(dataset)
    state.load_weights({"weight": torch.from_numpy(w0).reshape(1, 3)}, strict=True)
    state.fit(dataset)
    got = state.state_dict()["weight"].double().numpy()[0]
    fresh = _numpy_fit(w0, x, y, lr=0.05, mu=0.0, batch=3, momentum=0.9)
    if reset:
        np.testing.assert_allclose(got, fresh, rtol=1e-5, atol=1e-6)
    else:
        assert not np.allclose(got, fresh, rtol=1e-5, atol=1e-6)  # the first fit's momentum carried over


@pytest.mark.parametrize("mu", [-0.1, float("nan"), float("inf")])
def test_bad_proximal_mu_is_refused(mu: float) -> None:
    model = _linear([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="proximal_mu"):
        TrainConfig(model=model, loss_fn="mse", proximal_mu=mu)
    spec = TrainConfig(model=model, loss_fn="mse").to_spec()
    bad = type(spec)(**{**{f: getattr(spec, f) for f in spec.__dataclass_fields__}, "proximal_mu": mu})
    with pytest.raises(InvalidArgumentError, match="proximal_mu") as caught:
        TrainingState.configure(bad, registry=ModelRegistry(), weights_only=False, max_model_bytes=0)
    assert caught.value.details == {"field": "proximal_mu"}


def test_lbfgs_reports_the_plain_loss_with_a_proximal_term() -> None:
    x, y = _data(seed=3)
    config = TrainConfig(
        model=_linear([0.1, 0.1, 0.1]),
        loss_fn="mse",
        optimizer="LBFGS",
        optimizer_args={"lr": 0.5, "max_iter": 3},
        batch_size=6,
        shuffle=False,
        proximal_mu=1.0,
    )
    result = _state(config).fit(Dataset(torch.from_numpy(x), torch.from_numpy(y)))
    plain = float(np.mean((x.astype(np.float64) @ np.full(3, 0.1) - y[:, 0]) ** 2))
    assert result.final_loss == pytest.approx(plain, rel=1e-5)  # at the start of the step: no term yet
