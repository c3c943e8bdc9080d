from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from fedproto.errors import ErrorCode, InvalidArgumentError, TrainConfigError, TrainConfigTypeError
from fedproto.training.config import TrainConfig
from fedproto.training.engine import ModelRegistry, TrainingState
from fedproto.types import TrainSpec


@pytest.fixture(autouse=True)
def _quiet_jit() -> Iterator[None]:
    # The tests script and load TorchScript themselves too; torch marks torch.jit as deprecated.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.hidden(x)))


class VarArgs(nn.Module):
    """TorchScript cannot compile *args, so this one needs tracing."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.linear(inputs[0])


def squared_error(output: Tensor, target: Tensor) -> Tensor:
    return ((output - target) ** 2).sum(dim=1).mean()


class ScaledL1(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return self.scale * (output - target).abs().mean()


def _load(data: bytes | None) -> torch.jit.ScriptModule:
    assert data is not None
    module: torch.jit.ScriptModule = torch.jit.load(io.BytesIO(data))
    return module


# -- local validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"batch_size": 0}, "batch_size", "batch_size must be at least 1, got 0"),
        ({"batch_size": 2.0}, "batch_size", "batch_size must be an integer, got 2.0"),
        ({"batch_size": True}, "batch_size", "batch_size must be an integer, got True"),
        ({"epochs": -1}, "epochs", "epochs must be at least 1, got -1"),
        ({"optimizer": "Sgd"}, "optimizer", "unknown optimizer 'Sgd'; torch.optim has .*SGD"),
        ({"optimizer": "Optimizer"}, "optimizer", "unknown optimizer 'Optimizer'"),
        ({"optimizer": "lr_scheduler"}, "optimizer", "unknown optimizer 'lr_scheduler'"),
        (
            {"optimizer_args": {"lr": 0.1, "bogus": 1}},
            "optimizer_args",
            r"cannot create SGD with optimizer_args \{'lr': 0.1, 'bogus': 1\}: .*bogus",
        ),
        ({"optimizer_args": {"lr": -1.0}}, "optimizer_args", "cannot create SGD with .*learning rate"),
        ({"optimizer_args": {"lr": {"nested": 1}}}, "optimizer_args", r"optimizer_args\['lr'\] is a dict"),
        ({"optimizer_args": {"lr": [0.1, "x"]}}, "optimizer_args", r"optimizer_args\['lr'\] is a list"),
        ({"optimizer_args": {"foreach": None}}, "optimizer_args", r"\['foreach'\] is a NoneType"),
        (
            {"optimizer": "LBFGS", "optimizer_args": {"line_search_fn": "strong_wolfe"}},
            "optimizer_args",
            "is a str",
        ),
        (
            {"loss_fn": "mean_squared"},
            "loss_name",
            "unknown loss name 'mean_squared'; built-in losses are mse",
        ),
        ({"model": ""}, "model", "empty name"),
        ({"seed": -1}, "seed", r"seed -1 is outside \[0, 2\*\*64\)"),
        ({"seed": 2**64}, "seed", "seed 18446744073709551616 is outside"),
        ({"seed": "7"}, "seed", "seed must be None or an integer, got '7'"),
        ({"max_nr_batches": 1.5}, "max_nr_batches", "max_nr_batches must be an integer"),
        ({"proximal_mu": -0.5}, "proximal_mu", "proximal_mu must be a finite number >= 0"),
    ],
)
def test_invalid_values_raise_a_typed_error_that_is_still_a_value_error(
    changes: dict[str, Any], field: str, message: str
) -> None:
    arguments: dict[str, Any] = {"model": "mlp", "loss_fn": "mse", **changes}
    with pytest.raises(TrainConfigError, match=message) as caught:
        TrainConfig(**arguments)
    error = caught.value
    # the worker's code and field, and still what callers caught before the error was typed
    assert isinstance(error, InvalidArgumentError) and isinstance(error, ValueError)
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert error.details == {"field": field}
    assert not error.remote


@pytest.mark.parametrize(
    "changes",
    [
        {"batch_size": 0},
        {"epochs": 0},
        {"seed": 2**64},
        {"proximal_mu": float("inf")},
        {"optimizer": "Sgd"},
        {"optimizer_args": {"lr": "fast"}},
        {"optimizer_args": {"lr": 0.1, "bogus": 1}},
        {"optimizer": "Adam", "optimizer_args": {"betas": [0.9]}},
        {"loss_fn": "mean_squared"},
    ],
)
def test_the_worker_words_a_mistake_as_the_config_does(changes: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"model": "linear", "loss_fn": "mse", "optimizer_args": {"lr": 0.1}}
    arguments.update(changes)
    with pytest.raises(TrainConfigError) as local:
        TrainConfig(**arguments)
    # the same values as they reach a worker, unchecked (a client in another language, an old client)
    spec = TrainConfig(model="linear", loss_fn="mse").to_spec()
    fields = {"loss_name" if key == "loss_fn" else key: value for key, value in changes.items()}
    models = ModelRegistry()
    models.register("linear", lambda: nn.Linear(3, 2))
    with pytest.raises(InvalidArgumentError) as remote:
        TrainingState.configure(
            dataclasses.replace(spec, **fields), registry=models, weights_only=False, max_model_bytes=0
        )
    assert str(remote.value) == str(local.value)
    assert remote.value.details == local.value.details


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": 3}, "model must be an nn.Module"),
        ({"model": squared_error}, "model must be an nn.Module"),
        ({"loss_fn": 3}, "loss_fn must be a loss name or callable"),
        ({"example_input": [1.0]}, "example_input must be a tensor"),
        ({"initial_weights": {"w": [1.0]}}, "initial_weights must map"),
    ],
)
def test_values_of_the_wrong_kind_raise_a_typed_error_that_is_still_a_type_error(
    changes: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"model": "mlp", "loss_fn": "mse", **changes}
    with pytest.raises(TrainConfigTypeError, match=message) as caught:
        TrainConfig(**arguments)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, InvalidArgumentError)


@settings(max_examples=40, deadline=None)
@given(
    batch_size=st.integers(min_value=1, max_value=10**6),
    epochs=st.integers(min_value=1, max_value=1000),
    shuffle=st.booleans(),
    max_nr_batches=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    seed=st.none() | st.integers(min_value=0, max_value=2**64 - 1),
    optimizer=st.sampled_from(["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]),
    lr=st.floats(min_value=0.0, max_value=10.0),
)
def test_registered_model_and_builtin_loss_become_names_in_the_spec(
    batch_size: int,
    epochs: int,
    shuffle: bool,
    max_nr_batches: int,
    seed: int | None,
    optimizer: str,
    lr: float,
) -> None:
    config = TrainConfig(
        model="mlp",
        loss_fn="cross_entropy",
        optimizer=optimizer,
        optimizer_args={"lr": lr},
        batch_size=batch_size,
        epochs=epochs,
        shuffle=shuffle,
        max_nr_batches=max_nr_batches,
        seed=seed,
    )
    assert config.model_bytes() is None
    assert config.loss_bytes() is None
    assert config.to_spec() == TrainSpec(
        registered_model="mlp",
        loss_name="cross_entropy",
        optimizer=optimizer,
        optimizer_args={"lr": lr},
        batch_size=batch_size,
        epochs=epochs,
        shuffle=shuffle,
        max_nr_batches=max_nr_batches,
        seed=seed,
    )


def test_defaults() -> None:
    config = TrainConfig(model="mlp", loss_fn="mse")
    assert (config.optimizer, config.optimizer_args, config.batch_size, config.epochs) == ("SGD", {}, 32, 1)
    assert (config.shuffle, config.max_nr_batches, config.seed) == (True, -1, None)
    assert config.example_input is None and config.initial_weights is None
    assert config.optimizer_args is not TrainConfig(model="mlp", loss_fn="mse").optimizer_args


def test_spec_carries_lists_and_detached_initial_weights() -> None:
    weight = torch.ones(2, 2, requires_grad=True)
    config = TrainConfig(
        model="mlp",
        loss_fn="mse",
        optimizer="Adam",
        optimizer_args={"lr": 0.01, "betas": (0.8, 0.9), "amsgrad": True},
        initial_weights={"hidden.weight": weight.t()},
    )
    spec = config.to_spec()
    assert spec.optimizer_args == {"lr": 0.01, "betas": [0.8, 0.9], "amsgrad": True}
    sent = spec.initial_weights["hidden.weight"]
    assert not sent.requires_grad
    assert sent.is_contiguous()
    torch.testing.assert_close(sent, weight.detach().t())


# -- TorchScript ---------------------------------------------------------------------------------------


def test_model_round_trips_as_torchscript() -> None:
    model = MLP()
    loaded = _load(TrainConfig(model=model, loss_fn="mse").model_bytes())
    x = torch.randn(4, 3)
    torch.testing.assert_close(loaded(x), model(x))
    assert list(loaded.state_dict()) == list(model.state_dict())


def test_script_module_is_sent_as_is() -> None:
    scripted = torch.jit.script(MLP())
    loaded = _load(TrainConfig(model=scripted, loss_fn="mse").model_bytes())
    x = torch.randn(2, 3)
    torch.testing.assert_close(loaded(x), scripted(x))


def test_unscriptable_model_needs_example_input() -> None:
    with pytest.raises(TrainConfigTypeError, match=r"cannot be scripted.*pass example_input"):
        TrainConfig(model=VarArgs(), loss_fn="mse").model_bytes()


def test_unscriptable_model_is_traced_with_example_input() -> None:
    model = VarArgs()
    config = TrainConfig(model=model, loss_fn="mse", example_input=torch.zeros(1, 3))
    loaded = _load(config.model_bytes())
    x = torch.randn(5, 3)
    torch.testing.assert_close(loaded(x), model(x))


def test_untraceable_model_raises_type_error() -> None:
    config = TrainConfig(model=VarArgs(), loss_fn="mse", example_input=torch.zeros(1, 4))
    with pytest.raises(TrainConfigTypeError, match="neither scripted nor traced"):
        config.model_bytes()


@pytest.mark.parametrize("kind", ["function", "script-function", "module", "script-module"])
def test_loss_round_trips_as_torchscript(kind: str) -> None:
    loss_fn: Any = {
        "function": lambda: squared_error,
        "script-function": lambda: torch.jit.script(squared_error),
        "module": lambda: ScaledL1(2.5),
        "script-module": lambda: torch.jit.script(ScaledL1(2.5)),
    }[kind]()
    config = TrainConfig(model="mlp", loss_fn=loss_fn)
    loaded = _load(config.loss_bytes())
    output, target = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(loaded(output, target), loss_fn(output, target))
    assert config.to_spec().loss_torchscript is not None
    assert config.to_spec().loss_name is None


def test_unscriptable_loss_raises_type_error() -> None:
    with pytest.raises(TrainConfigTypeError, match="the loss <lambda> cannot be scripted"):
        TrainConfig(model="mlp", loss_fn=lambda output, target: (output - target).mean()).loss_bytes()


def test_send_hands_the_config_to_the_client() -> None:
    class Client:
        def __init__(self) -> None:
            self.received: list[TrainConfig] = []

        def set_train_config(self, config: TrainConfig, /) -> str:
            self.received.append(config)
            return "reply"

    client = Client()
    config = TrainConfig(model="mlp", loss_fn="mse")
    assert config.send(client) == "reply"
    assert client.received == [config]
