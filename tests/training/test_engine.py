from __future__ import annotations

import copy
import dataclasses
import io
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from fedproto.datasets import Dataset
from fedproto.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RequestCancelledError,
    ResourceExhaustedError,
)
from fedproto.training import (
    EvaluateKind,
    EvaluateResult,
    FitProgressEvent,
    ModelRegistry,
    TrainConfig,
    TrainingState,
    TrainSpec,
    builtin_loss,
)

LIMIT = 1 << 20


@pytest.fixture(autouse=True)
def _quiet_jit() -> Iterator[None]:
    # The tests script TorchScript themselves too; torch marks torch.jit as deprecated.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


class MLP(nn.Module):
    def __init__(self, inputs: int = 4, classes: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(inputs, 8)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(8, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.dropout(torch.relu(self.hidden(x))))


class Normed(nn.Module):
    """A model with an integer buffer (BatchNorm's num_batches_tracked)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.norm = nn.BatchNorm1d(3)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.linear(x))


class OneArgumentLoss(nn.Module):
    def forward(self, output: Tensor) -> Tensor:
        return output.sum()


def doubled_mse(output: Tensor, target: Tensor) -> Tensor:
    return 2.0 * ((output - target) ** 2).mean()


def classification(count: int = 23, inputs: int = 4, classes: int = 3, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(count, inputs, generator=generator)
    targets = torch.randint(0, classes, (count,), generator=generator)
    return Dataset(features, targets)


def registry() -> ModelRegistry:
    models = ModelRegistry()
    models.register("mlp", MLP)
    models.register("normed", Normed)
    models.register("linear", lambda: nn.Linear(4, 3))
    return models


def configure(
    spec: TrainSpec,
    *,
    weights_only: bool = False,
    max_model_bytes: int = LIMIT,
    model_archive: bytes | memoryview | None = None,
) -> TrainingState:
    return TrainingState.configure(
        spec,
        registry=registry(),
        weights_only=weights_only,
        max_model_bytes=max_model_bytes,
        model_archive=model_archive,
    )


def registered_spec(**changes: Any) -> TrainSpec:
    arguments: dict[str, Any] = {
        "registered_model": "linear",
        "loss_name": "cross_entropy",
        "optimizer": "SGD",
        "optimizer_args": {"lr": 0.1},
        "batch_size": 4,
        "epochs": 1,
        "shuffle": False,
        **changes,
    }
    return TrainSpec(**arguments)


def local_fit(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    dataset: Dataset,
    *,
    batch_size: int,
    epochs: int,
    shuffle: bool,
    seed: int,
    max_nr_batches: int = -1,
) -> None:
    """The plain PyTorch loop TrainingState.fit documents."""
    x, y, n = dataset.features, dataset.targets, len(dataset)
    done = 0
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
            for start in range(0, n, batch_size):
                if 0 < max_nr_batches <= done:
                    return
                index = order[start : start + batch_size]
                optimizer.zero_grad()
                loss = loss_fn(model(x[index]), y[index])
                loss.backward()
                optimizer.step()
                done += 1


# -- ModelRegistry -------------------------------------------------------------------------------------


def test_registry() -> None:
    models = registry()
    assert models.names() == ["linear", "mlp", "normed"]
    assert "mlp" in models and "cnn" not in models
    assert len(models) == 3
    assert isinstance(models.create("mlp"), MLP)
    assert models.create("mlp") is not models.create("mlp")
    with pytest.raises(NotFoundError, match="no registered model named 'cnn'"):
        models.create("cnn")
    with pytest.raises(ValueError, match="already registered"):
        models.register("mlp", MLP)
    with pytest.raises(ValueError, match="non-empty name"):
        models.register("", MLP)
    models.register("broken", lambda: "not a module")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match=r"not an nn\.Module"):
        models.create("broken")


# -- configure -----------------------------------------------------------------------------------------


def test_configure_a_registered_model_with_initial_weights() -> None:
    weights = {"weight": torch.full((3, 4), 0.5), "bias": torch.zeros(3)}
    state = configure(registered_spec(initial_weights=weights))
    assert state.parameter_count == 15
    assert state.state_names == ["weight", "bias"]
    assert state.state_dict().keys() == weights.keys()
    torch.testing.assert_close(state.state_dict()["weight"], weights["weight"])


def test_registered_models_are_initialised_from_the_seed() -> None:
    before = torch.get_rng_state()
    first, second = (configure(registered_spec(registered_model="mlp", seed=11)) for _ in range(2))
    assert torch.equal(torch.get_rng_state(), before)
    other = configure(registered_spec(registered_model="mlp", seed=12))
    for name, tensor in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], tensor)
    assert not torch.equal(other.state_dict()["hidden.weight"], first.state_dict()["hidden.weight"])


def test_configure_a_torchscript_model_and_loss() -> None:
    model = MLP()
    spec = TrainConfig(model=model, loss_fn=doubled_mse).to_spec()
    state = configure(spec)
    assert state.parameter_count == sum(p.numel() for p in model.parameters())
    assert state.state_names == list(model.state_dict())
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(state.state_dict()[name], tensor)


def test_parameter_count_counts_only_trainable_parameters() -> None:
    model = MLP()
    model.hidden.requires_grad_(False)
    state = configure(TrainConfig(model=model, loss_fn="cross_entropy").to_spec())
    assert state.parameter_count == 8 * 3 + 3


def _garbage_archive() -> bytes:
    # A torch.save archive (pickle inside): must be refused, never unpickled.
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2)}, buffer)
    return buffer.getvalue()


def _one_argument_loss() -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(OneArgumentLoss()), buffer)
    return buffer.getvalue()


_CONFIGURE_ERRORS: list[tuple[dict[str, Any], dict[str, Any], type[ProtocolError], str]] = [
    ({"registered_model": None}, {}, InvalidArgumentError, "no model is set"),
    ({"model_torchscript": b"x"}, {}, InvalidArgumentError, "both model_torchscript and registered_model"),
    ({"model_object": "m"}, {}, InvalidArgumentError, "both registered_model and model_object"),
    ({"model_object": "m", "model_torchscript": b"x"}, {}, InvalidArgumentError,
     "model_torchscript and registered_model and model_object are set"),
    ({"registered_model": None, "model_object": "m"}, {}, NotFoundError, "no object 'm'"),
    ({"registered_model": None, "model_object": "m"}, {"weights_only": True}, PermissionDeniedError,
     "weights-only"),
    ({"registered_model": None, "model_object": "m"}, {"max_model_bytes": 10, "model_archive": bytes(11)},
     ResourceExhaustedError, "model_object is 11 bytes, more than the limit of 10"),
    ({"registered_model": None, "model_object": "m"}, {"model_archive": bytes(11)}, InvalidArgumentError,
     "model_object is not a loadable TorchScript archive"),
    ({"loss_name": None}, {}, InvalidArgumentError, "no loss is set"),
    ({"loss_torchscript": b"x"}, {}, InvalidArgumentError, "both loss_torchscript and loss_name"),
    ({"registered_model": None, "model_torchscript": b"x"}, {"weights_only": True}, PermissionDeniedError,
     "weights-only"),
    ({"registered_model": None, "model_torchscript": bytes(11)}, {"max_model_bytes": 10},
     ResourceExhaustedError, "model_torchscript is 11 bytes, more than the limit of 10"),
    ({"loss_name": None, "loss_torchscript": bytes(11)}, {"max_model_bytes": 10}, ResourceExhaustedError,
     "loss_torchscript is 11 bytes"),
    ({"batch_size": 0}, {}, InvalidArgumentError, "batch_size must be at least 1"),
    ({"epochs": 0}, {}, InvalidArgumentError, "epochs must be at least 1"),
    ({"seed": 2**64}, {}, InvalidArgumentError, "seed"),
    ({"optimizer": "Nope"}, {}, InvalidArgumentError, "unknown optimizer 'Nope'"),
    ({"optimizer": "Optimizer"}, {}, InvalidArgumentError, "unknown optimizer 'Optimizer'"),
    ({"optimizer_args": {"lr": object()}}, {}, InvalidArgumentError, r"optimizer_args\['lr'\] is a object"),
    ({"optimizer_args": {"lr": "0.1"}}, {}, InvalidArgumentError, r"optimizer_args\['lr'\] is a str"),
    ({"optimizer_args": {"foreach": None}}, {}, InvalidArgumentError, "is a NoneType"),
    ({"optimizer_args": {"lr": torch.tensor(0.1)}}, {}, InvalidArgumentError, "is a Tensor"),
    ({"registered_model": None, "model_torchscript": b"not torchscript"}, {}, InvalidArgumentError,
     "model_torchscript is not a loadable TorchScript archive"),
    ({"registered_model": None, "model_torchscript": b""}, {}, InvalidArgumentError,
     "model_torchscript is not a loadable TorchScript archive"),
    ({"registered_model": "cnn"}, {}, NotFoundError, "no registered model named 'cnn'"),
    ({"registered_model": ""}, {}, NotFoundError, "no registered model named ''"),
    ({"loss_name": "nope"}, {}, InvalidArgumentError, "unknown loss name 'nope'"),
    ({"loss_name": None, "loss_torchscript": b"\x00" * 8}, {}, InvalidArgumentError,
     "loss_torchscript is not a loadable TorchScript archive"),
    ({"initial_weights": {"weights": torch.zeros(3, 4)}}, {}, InvalidArgumentError,
     "'weights' is not in the model"),
    ({"initial_weights": {"weight": torch.zeros(4, 3)}}, {}, InvalidArgumentError, r"shape \(4, 3\)"),
    ({"initial_weights": {"bias": torch.zeros(3, dtype=torch.float64)}}, {}, InvalidArgumentError,
     "dtype torch.float64"),
    ({"optimizer_args": {"lr": 0.1, "bogus": 1}}, {}, InvalidArgumentError, "cannot create SGD.*bogus"),
    ({"optimizer_args": {"lr": -0.1}}, {}, InvalidArgumentError, "Invalid learning rate"),
    ({"optimizer": "Adam", "optimizer_args": {"betas": [0.9]}}, {}, InvalidArgumentError,
     "cannot create Adam"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "options", "error", "message"), _CONFIGURE_ERRORS)
def test_configure_errors(
    changes: dict[str, Any], options: dict[str, Any], error: type[ProtocolError], message: str
) -> None:
    with pytest.raises(error, match=message) as info:
        configure(registered_spec(**changes), **options)
    assert type(info.value) is error


def test_a_model_object_archive_builds_the_same_model_as_model_torchscript() -> None:
    archive = TrainConfig(model=MLP(), loss_fn="cross_entropy").to_spec().model_torchscript
    assert archive is not None
    spec = registered_spec(registered_model=None, model_object="m")
    from_store = configure(spec, model_archive=memoryview(bytearray(archive)))
    from_inline = configure(registered_spec(registered_model=None, model_torchscript=archive))
    assert from_store.summary == from_inline.summary
    inline_state = from_inline.state_dict()
    assert all(torch.equal(value, inline_state[name]) for name, value in from_store.state_dict().items())


def test_configure_refuses_a_torch_save_archive() -> None:
    spec = registered_spec(registered_model=None, model_torchscript=_garbage_archive())
    with pytest.raises(InvalidArgumentError, match="not a loadable TorchScript archive"):
        configure(spec)


def test_configure_refuses_a_loss_that_takes_one_argument() -> None:
    spec = registered_spec(loss_name=None, loss_torchscript=_one_argument_loss())
    with pytest.raises(InvalidArgumentError, match=r"must take \(output, target\), it takes \(output\)"):
        configure(spec)


def test_weights_only_accepts_registered_models() -> None:
    state = configure(registered_spec(), weights_only=True)
    assert state.state_names == ["weight", "bias"]


def test_no_limit_when_max_model_bytes_is_zero() -> None:
    spec = TrainConfig(model=MLP(), loss_fn="cross_entropy").to_spec()
    assert configure(spec, max_model_bytes=0).parameter_count > 0


def test_model_without_trainable_parameters_is_refused() -> None:
    model = MLP().requires_grad_(False)
    with pytest.raises(InvalidArgumentError, match="empty parameter list"):
        configure(TrainConfig(model=model, loss_fn="cross_entropy").to_spec())


# -- fit -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("optimizer", "optimizer_args", "shuffle", "dropout"),
    [
        ("SGD", {"lr": 0.1, "momentum": 0.9}, True, 0.0),
        ("Adam", {"lr": 0.01, "betas": (0.8, 0.95)}, True, 0.3),
        ("AdamW", {"lr": 0.01}, False, 0.0),
    ],
)
def test_fit_equals_the_local_loop(
    optimizer: str, optimizer_args: dict[str, Any], shuffle: bool, dropout: float
) -> None:
    dataset = classification(count=23)
    model = MLP(dropout=dropout)
    config = TrainConfig(
        model=model,
        loss_fn="cross_entropy",
        optimizer=optimizer,
        optimizer_args=optimizer_args,
        batch_size=5,
        epochs=3,
        shuffle=shuffle,
        seed=1234,
    )
    state = configure(config.to_spec())
    result = state.fit(dataset, return_weights=True)

    local = copy.deepcopy(model)
    local_optimizer = getattr(torch.optim, optimizer)(local.parameters(), **optimizer_args)
    local_fit(
        local,
        nn.CrossEntropyLoss(),
        local_optimizer,
        dataset,
        batch_size=5,
        epochs=3,
        shuffle=shuffle,
        seed=1234,
    )
    assert result.weights is not None
    assert list(result.weights) == list(local.state_dict())
    for name, tensor in local.state_dict().items():
        torch.testing.assert_close(result.weights[name], tensor)
        torch.testing.assert_close(state.state_dict()[name], tensor)
    assert (result.batches, result.samples, result.epochs, result.dataset_size) == (15, 69, 3, 23)
    assert result.seconds >= 0


def test_fit_with_a_custom_loss_equals_the_local_loop() -> None:
    dataset = Dataset(torch.randn(12, 4), torch.randn(12, 3))
    model = MLP()
    state = configure(TrainConfig(model=model, loss_fn=doubled_mse, batch_size=4, seed=7).to_spec())
    state.fit(dataset)
    local = copy.deepcopy(model)
    local_fit(
        local,
        doubled_mse,
        torch.optim.SGD(local.parameters()),
        dataset,
        batch_size=4,
        epochs=1,
        shuffle=True,
        seed=7,
    )
    for name, tensor in local.state_dict().items():
        torch.testing.assert_close(state.state_dict()[name], tensor)


def test_fit_is_repeatable_and_keeps_the_global_rng() -> None:
    dataset = classification()
    spec = registered_spec(registered_model="mlp", shuffle=True, seed=99, epochs=2)
    weights = {name: tensor for name, tensor in configure(spec).state_dict().items()}
    first, second = (configure(dataclasses.replace(spec, initial_weights=weights)) for _ in range(2))
    before = torch.get_rng_state()
    first.fit(dataset)
    assert torch.equal(torch.get_rng_state(), before)
    second.fit(dataset)
    for name, tensor in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], tensor)


def test_fit_integer_buffers_and_training_mode() -> None:
    state = configure(registered_spec(registered_model="normed", epochs=2))
    state.model.eval()
    result = state.fit(classification(count=10))
    assert state.model.training
    assert int(state.state_dict()["norm.num_batches_tracked"]) == result.batches == 6


def test_progress_events_in_order() -> None:
    events: list[FitProgressEvent] = []
    state = configure(registered_spec(batch_size=3, epochs=2))
    result = state.fit(classification(count=10), progress=events.append, progress_every=3)
    assert [(e.epoch, e.batch, e.batches_per_epoch, e.samples) for e in events] == [
        (1, 3, 4, 9),
        (1, 4, 4, 10),
        (2, 3, 4, 19),
        (2, 4, 4, 20),
    ]
    assert events[-1].loss == result.final_loss


def test_progress_losses_and_means() -> None:
    events: list[FitProgressEvent] = []
    state = configure(registered_spec(batch_size=2, epochs=3))
    result = state.fit(classification(count=7), progress=events.append, progress_every=1)
    assert len(events) == result.batches == 12
    for epoch in (1, 2, 3):
        losses = [e.loss for e in events if e.epoch == epoch]
        running = [e.running_loss for e in events if e.epoch == epoch]
        assert running == pytest.approx([sum(losses[:i]) / i for i in range(1, 5)])
    assert result.mean_loss == pytest.approx(sum(e.loss for e in events) / 12)
    assert result.final_loss == events[-1].loss


@settings(max_examples=30, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=30),
    batch_size=st.integers(min_value=1, max_value=8),
    epochs=st.integers(min_value=1, max_value=3),
    every=st.integers(min_value=0, max_value=5),
    cap=st.integers(min_value=-1, max_value=12),
)
def test_progress_and_cap_invariants(count: int, batch_size: int, epochs: int, every: int, cap: int) -> None:
    events: list[FitProgressEvent] = []
    state = configure(registered_spec(batch_size=batch_size, epochs=epochs, max_nr_batches=cap, shuffle=True))
    result = state.fit(classification(count=count), progress=events.append, progress_every=every)
    per_epoch = math.ceil(count / batch_size)
    expected_batches = min(per_epoch * epochs, cap) if cap > 0 else per_epoch * epochs
    assert result.batches == expected_batches
    assert result.epochs == math.ceil(expected_batches / per_epoch)
    full_epochs, rest = divmod(expected_batches, per_epoch)
    assert result.samples == full_epochs * count + min(rest * batch_size, count)
    assert [(e.epoch, e.batch) for e in events] == sorted((e.epoch, e.batch) for e in events)
    for epoch in range(1, result.epochs + 1):
        in_epoch = [e for e in events if e.epoch == epoch]
        assert in_epoch, f"epoch {epoch} was not reported"
        assert in_epoch[-1].batch == in_epoch[-1].batches_per_epoch
        assert len({e.batches_per_epoch for e in in_epoch}) == 1
        step = every or max(1, math.ceil(per_epoch / 10))
        assert all(e.batch % step == 0 or e is in_epoch[-1] for e in in_epoch)
    assert sum(e.batches_per_epoch for e in events if e.batch == e.batches_per_epoch) == result.batches
    assert events[-1].samples == result.samples


def test_max_nr_batches_ends_mid_epoch() -> None:
    events: list[FitProgressEvent] = []
    spec = registered_spec(
        registered_model="mlp", batch_size=3, epochs=5, max_nr_batches=6, seed=3, shuffle=True
    )
    state = configure(spec)
    initial = state.state_dict()
    result = state.fit(classification(count=10), progress=events.append, progress_every=1)
    assert (result.batches, result.epochs, result.samples) == (6, 2, 16)
    assert [(e.epoch, e.batch, e.batches_per_epoch) for e in events][-2:] == [(2, 1, 2), (2, 2, 2)]

    local = MLP()
    local.load_state_dict(initial)
    local_fit(
        local,
        nn.CrossEntropyLoss(),
        torch.optim.SGD(local.parameters(), lr=0.1),
        classification(count=10),
        batch_size=3,
        epochs=5,
        shuffle=True,
        seed=3,
        max_nr_batches=6,
    )
    for name, tensor in local.state_dict().items():
        torch.testing.assert_close(state.state_dict()[name], tensor)


def test_should_stop_cancels_between_batches() -> None:
    dataset = classification(count=20)
    spec = registered_spec(registered_model="mlp", batch_size=4, epochs=2, seed=5, shuffle=True)
    state = configure(spec)
    initial = state.state_dict()
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 7

    with pytest.raises(RequestCancelledError, match="fit cancelled") as info:
        state.fit(dataset, should_stop=should_stop)
    assert info.value.details == {"epoch": "2", "batch": "3"}

    local = MLP()
    local.load_state_dict(initial)
    local_fit(
        local,
        nn.CrossEntropyLoss(),
        torch.optim.SGD(local.parameters(), lr=0.1),
        dataset,
        batch_size=4,
        epochs=2,
        shuffle=True,
        seed=5,
        max_nr_batches=7,
    )
    for name, tensor in local.state_dict().items():
        torch.testing.assert_close(state.state_dict()[name], tensor)
    assert state.fit(dataset).batches == 10  # the state is usable again


def test_should_stop_before_the_first_batch_changes_nothing() -> None:
    state = configure(registered_spec())
    initial = state.state_dict()
    with pytest.raises(RequestCancelledError):
        state.fit(classification(), should_stop=lambda: True)
    for name, tensor in initial.items():
        assert torch.equal(state.state_dict()[name], tensor)


def test_model_errors_become_invalid_argument() -> None:
    state = configure(TrainConfig(model=MLP(inputs=4), loss_fn="cross_entropy").to_spec())
    with pytest.raises(
        InvalidArgumentError, match=r"training \(epoch 1, batch 1\) failed: .*cannot be multiplied"
    ):
        state.fit(classification(inputs=5))
    with pytest.raises(InvalidArgumentError, match=r"evaluation .* failed"):
        state.evaluate(classification(inputs=5))


def test_loss_errors_become_invalid_argument() -> None:
    state = configure(registered_spec(loss_name="bce"))
    with pytest.raises(InvalidArgumentError, match=r"training .* failed"):
        state.fit(classification())


def test_fit_and_evaluate_refuse_an_empty_dataset() -> None:
    state = configure(registered_spec())
    empty = Dataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(InvalidArgumentError, match="empty dataset"):
        state.fit(empty)
    with pytest.raises(InvalidArgumentError, match="empty dataset"):
        state.evaluate(empty)


def test_lbfgs_steps_with_a_closure() -> None:
    state = configure(registered_spec(optimizer="LBFGS", optimizer_args={"lr": 0.5, "max_iter": 3}))
    before = state.state_dict()["weight"]
    result = state.fit(classification())
    assert math.isfinite(result.final_loss)
    assert not torch.equal(state.state_dict()["weight"], before)


def test_one_operation_at_a_time() -> None:
    state = configure(registered_spec(batch_size=8))
    dataset = classification()
    refused: list[str] = []

    def progress(_: FitProgressEvent) -> None:
        for attempt in (
            lambda: state.fit(dataset),
            lambda: state.evaluate(dataset),
            lambda: state.state_dict(),
            lambda: state.load_weights({}, strict=False),
        ):
            with pytest.raises(FailedPreconditionError, match="already running"):
                attempt()
            refused.append("refused")

    state.fit(dataset, progress=progress, progress_every=1)
    assert len(refused) == 4 * 3
    assert state.evaluate(dataset).total == len(dataset)


# -- evaluate ------------------------------------------------------------------------------------------


def test_evaluate_matches_a_direct_computation() -> None:
    dataset = classification(count=29, classes=3)
    state = configure(registered_spec(registered_model="mlp", batch_size=8))
    result = state.evaluate(dataset, return_histograms=True, batch_size=7)
    model = MLP()
    model.load_state_dict(state.state_dict())
    with torch.no_grad():
        output = model.eval()(dataset.features)
    predicted = output.argmax(dim=1)
    assert result.loss == pytest.approx(float(nn.functional.cross_entropy(output, dataset.targets)), rel=1e-6)
    assert dataclasses.replace(result, loss=None) == EvaluateResult(
        loss=None,
        correct=int((predicted == dataset.targets).sum()),
        total=29,
        prediction_histogram=torch.bincount(predicted, minlength=3).tolist()[:3],
        target_histogram=torch.bincount(dataset.targets, minlength=3).tolist(),
    )


def test_evaluate_omits_what_was_not_asked() -> None:
    state = configure(registered_spec())
    result = state.evaluate(classification(count=5), return_loss=False, return_raw_accuracy=False)
    assert result == EvaluateResult(
        loss=None, correct=0, total=5, prediction_histogram=[], target_histogram=[]
    )
    assert result.kind is EvaluateKind.CLASSIFICATION


def test_evaluate_with_more_bins_and_one_hot_targets() -> None:
    dataset = classification(count=12, classes=3)
    one_hot = Dataset(dataset.features, nn.functional.one_hot(dataset.targets, 3).float())
    state = configure(registered_spec(loss_name="mse"))
    result = state.evaluate(one_hot, return_histograms=True, nr_bins=5, kind=EvaluateKind.CLASSIFICATION)
    assert result.kind is EvaluateKind.CLASSIFICATION
    with torch.no_grad():
        predicted = state.model(dataset.features).argmax(dim=1)
    assert result.correct == int((predicted == dataset.targets).sum())
    assert result.target_histogram == torch.bincount(dataset.targets, minlength=5).tolist()
    assert result.prediction_histogram == torch.bincount(predicted, minlength=5).tolist()


def test_evaluate_single_logit_thresholds_at_zero() -> None:
    features = torch.tensor([[2.0], [-1.0], [0.5], [-3.0], [1.0]])
    targets = torch.tensor([[1.0], [0.0], [0.0], [0.0], [1.0]])
    models = ModelRegistry()
    models.register("identity", lambda: nn.Linear(1, 1))
    spec = registered_spec(
        registered_model="identity",
        loss_name="bce_with_logits",
        initial_weights={"weight": torch.ones(1, 1), "bias": torch.zeros(1)},
    )
    state = TrainingState.configure(spec, registry=models, weights_only=False, max_model_bytes=0)
    result = state.evaluate(
        Dataset(features, targets), return_histograms=True, nr_bins=0, kind=EvaluateKind.CLASSIFICATION
    )
    assert result.correct == 4
    assert result.prediction_histogram == [2, 3]
    assert result.target_histogram == [3, 2]
    assert result.loss == pytest.approx(
        float(nn.functional.binary_cross_entropy_with_logits(features, targets))
    )


def test_integer_targets_are_a_classification() -> None:
    result = configure(registered_spec()).evaluate(classification(), return_histograms=True)
    assert result.kind is EvaluateKind.CLASSIFICATION
    assert result.mean_squared_error is None and result.mean_absolute_error is None
    assert sum(result.target_histogram) == result.total


def _regression(count: int = 64) -> tuple[Dataset, TrainingState]:
    """Float targets of a linear map, and a 4 -> 1 model that does not fit them exactly."""
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(count, 4, generator=generator)
    targets = features @ torch.tensor([[0.5], [-1.0], [2.0], [0.25]]) + 0.1
    models = ModelRegistry()
    models.register("line", lambda: nn.Linear(4, 1))
    spec = registered_spec(
        registered_model="line",
        loss_name="mse",
        initial_weights={"weight": torch.tensor([[0.4, -0.9, 1.5, 0.0]]), "bias": torch.tensor([0.3])},
        batch_size=10,
    )
    return Dataset(features, targets), TrainingState.configure(
        spec, registry=models, weights_only=False, max_model_bytes=0
    )


def test_float_targets_are_a_regression_with_errors_and_no_classes() -> None:
    dataset, state = _regression()
    result = state.evaluate(dataset, return_histograms=True, nr_bins=4)
    with torch.no_grad():
        output = state.model(dataset.features).double().numpy()
    target = dataset.targets.double().numpy()
    assert result.kind is EvaluateKind.REGRESSION
    assert result.mean_squared_error == pytest.approx(float(np.mean((output - target) ** 2)), rel=1e-9)
    assert result.mean_absolute_error == pytest.approx(float(np.mean(np.abs(output - target))), rel=1e-9)
    assert result.loss == pytest.approx(result.mean_squared_error, rel=1e-5)  # the config's loss is mse
    # no classes: nothing "correct", no histograms even though they were asked for
    assert (result.correct, result.prediction_histogram, result.target_histogram) == (0, [], [])
    assert result.total == 64


def test_regression_errors_only_when_asked() -> None:
    dataset, state = _regression(8)
    result = state.evaluate(dataset, return_raw_accuracy=False)
    assert result.kind is EvaluateKind.REGRESSION
    assert result.mean_squared_error is None and result.mean_absolute_error is None
    assert result.loss is not None


def test_integer_targets_can_be_evaluated_as_values() -> None:
    dataset = classification(count=10, classes=3)
    state = configure(registered_spec(registered_model="linear"))
    mismatch = r"12 values for 4 target values \(output \(4, 3\), targets \(4,\)\)"
    with pytest.raises(InvalidArgumentError, match=mismatch):
        state.evaluate(dataset, kind=EvaluateKind.REGRESSION, return_loss=False)
    models = ModelRegistry()
    models.register("one", lambda: nn.Linear(4, 1))
    zero = {"weight": torch.zeros(1, 4), "bias": torch.zeros(1)}
    spec = registered_spec(registered_model="one", loss_name="mse", initial_weights=zero)
    state = TrainingState.configure(spec, registry=models, weights_only=False, max_model_bytes=0)
    result = state.evaluate(dataset, kind=EvaluateKind.REGRESSION, return_loss=False)
    values = dataset.targets.double()
    assert result.mean_squared_error == pytest.approx(float((values**2).mean()))
    assert result.mean_absolute_error == pytest.approx(float(values.abs().mean()))


def test_evaluate_leaves_mode_and_gradients_alone() -> None:
    state = configure(registered_spec(registered_model="mlp"))
    state.model.train()
    state.evaluate(classification())
    assert state.model.training
    assert all(parameter.grad is None for parameter in state.model.parameters())


def test_evaluate_rejects_bad_arguments() -> None:
    state = configure(registered_spec())
    with pytest.raises(InvalidArgumentError, match="nr_bins"):
        state.evaluate(classification(), nr_bins=-1)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        state.evaluate(classification(), batch_size=-1)
    with pytest.raises(InvalidArgumentError, match="cannot compute classes from targets of shape"):
        state.evaluate(Dataset(torch.zeros(2, 4), torch.zeros(2, 3, 1, dtype=torch.int64)), return_loss=False)


# -- weights -------------------------------------------------------------------------------------------


def test_state_dict_is_a_detached_copy() -> None:
    state = configure(registered_spec())
    weights = state.state_dict()
    weights["weight"].add_(1.0)
    assert not torch.equal(state.state_dict()["weight"], weights["weight"])
    assert not any(tensor.requires_grad for tensor in weights.values())


def test_load_weights() -> None:
    state = configure(registered_spec(registered_model="normed"))
    assert state.load_weights({"linear.bias": torch.ones(3)}, strict=False) == 1
    assert state.state_dict()["linear.bias"].tolist() == [1.0, 1.0, 1.0]
    full = {name: tensor + 1 for name, tensor in state.state_dict().items()}
    assert state.load_weights(full, strict=True) == len(full)
    for name, tensor in full.items():
        assert torch.equal(state.state_dict()[name], tensor)


@pytest.mark.parametrize(
    ("bad", "strict", "message"),
    [
        ({"linear.gain": torch.ones(3)}, False, "'linear.gain' is not in the model"),
        ({"linear.weight": torch.ones(4, 3)}, False, r"shape \(4, 3\), the model's is \(3, 4\)"),
        ({"linear.weight": torch.ones(3, 4, dtype=torch.float64)}, False, "dtype torch.float64"),
        ({"norm.num_batches_tracked": torch.tensor(1.0)}, False, "dtype torch.float32"),
        ({"linear.weight": [[1.0]]}, False, "is a list, not a tensor"),
        (
            {},
            True,
            "strict load is missing 'linear.weight', 'norm.weight', 'norm.bias', "
            "'norm.running_mean', 'norm.running_var' and 1 more",
        ),
    ],
)
def test_load_weights_validates_before_changing_anything(
    bad: dict[str, Any], strict: bool, message: str
) -> None:
    state = configure(registered_spec(registered_model="normed"))
    before = state.state_dict()
    with pytest.raises(InvalidArgumentError, match=message):
        state.load_weights({"linear.bias": torch.full((3,), 7.0), **bad}, strict=strict)
    for name, tensor in before.items():
        assert torch.equal(state.state_dict()[name], tensor)


def test_builtin_losses_train() -> None:
    # targets a linear map of the features, so a linear model can only get closer; fixed data, so the
    # outcome does not depend on the draw (the loss compared is the whole dataset's, not one batch's)
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(8, 4, generator=generator)
    dataset = Dataset(features, features @ torch.randn(4, 3, generator=generator))
    state = configure(registered_spec(loss_name="mse", seed=1))
    assert isinstance(state.spec, TrainSpec)
    first = state.evaluate(dataset).loss
    for _ in range(20):
        state.fit(dataset)
    assert state.evaluate(dataset).loss < first / 2
    assert float(builtin_loss("mse")(torch.zeros(1), torch.zeros(1))) == 0.0
