"""Train configs: :class:`TrainConfig` as the user writes it, a ``TrainSpec`` as it travels.

A client builds a :class:`TrainConfig` from live Python objects (an ``nn.Module``, a loss function) and
turns it into a :class:`~fedproto.types.TrainSpec` with :meth:`TrainConfig.to_spec`: models and losses become
TorchScript archives (the bytes ``torch.jit.save`` writes), everything else plain values. The codec
converts a ``TrainSpec`` to and from the protobuf ``TrainConfig``; the worker hands it to
:meth:`fedproto.training.engine.TrainingState.configure`, which validates it again, because a worker
trusts nothing a client sends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, TypeVar

import torch
from torch import Tensor, nn

from fedproto.errors import TrainConfigError, TrainConfigTypeError
from fedproto.training.losses import BUILTIN_LOSSES
from fedproto.training.torchscript import error_summary, quiet_torchscript, save_torchscript
from fedproto.types import TrainSpec

__all__ = ["TrainConfig"]

_R_co = TypeVar("_R_co", covariant=True)

#: The largest seed the wire carries (``optional uint64 seed``).
_MAX_SEED = 2**64 - 1


def _optimizer_class(name: object) -> type[torch.optim.Optimizer] | None:
    """The ``torch.optim`` optimizer class called ``name``, or None when there is none."""
    if not isinstance(name, str) or not name or name.startswith("_") or name == "Optimizer":
        return None
    candidate = getattr(torch.optim, name, None)
    if isinstance(candidate, type) and issubclass(candidate, torch.optim.Optimizer):
        return candidate
    return None


def _known_optimizers() -> str:
    """The optimizer class names in ``torch.optim``, comma-separated, for error messages."""
    return ", ".join(sorted(name for name in dir(torch.optim) if _optimizer_class(name) is not None))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optimizer_args_problem(args: object) -> str | None:
    """Why ``args`` cannot be optimizer keyword arguments, or None when they can.

    Values may be ints, floats, bools, or lists/tuples of numbers (protocol section 12.1.10).
    """
    if not isinstance(args, Mapping):
        return f"optimizer_args must be a mapping, not {type(args).__name__}"
    for key, value in args.items():
        if not isinstance(key, str) or not key.isidentifier():
            return f"optimizer_args key {key!r} is not a keyword argument name"
        if isinstance(value, bool) or _is_number(value):
            continue
        if isinstance(value, (list, tuple)) and all(_is_number(item) for item in value):
            continue
        return (
            f"optimizer_args[{key!r}] is a {type(value).__name__}; values must be numbers, bools "
            "or lists of numbers"
        )
    return None


def _optimizer_kwargs(args: Mapping[str, Any]) -> dict[str, Any]:
    """Optimizer keyword arguments as passed to the constructor: lists become tuples (``betas``)."""
    return {key: tuple(value) if isinstance(value, (list, tuple)) else value for key, value in args.items()}


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _settings_problem(
    *, batch_size: object, epochs: object, seed: object, proximal_mu: object
) -> tuple[str, str] | None:
    """``(field, message)`` for the first loop setting a worker refuses (sections 12.1.11, 12.1.16), or None.

    The one wording for both sides: :class:`TrainConfig` raises it before anything is sent, the worker's
    engine answers it as INVALID_ARGUMENT, so a user reads the same sentence wherever it was caught.
    """
    for name, value in (("batch_size", batch_size), ("epochs", epochs)):
        if not _is_int(value):
            return name, f"{name} must be an integer, got {value!r}"
        if value < 1:
            return name, f"{name} must be at least 1, got {value!r}"
    if seed is not None:
        if not _is_int(seed):
            return "seed", f"seed must be None or an integer, got {seed!r}"
        if not 0 <= seed <= _MAX_SEED:
            return "seed", f"seed {seed} is outside [0, 2**64)"
    if (
        not isinstance(proximal_mu, (int, float))
        or isinstance(proximal_mu, bool)
        or not math.isfinite(proximal_mu)
        or proximal_mu < 0
    ):
        return "proximal_mu", f"proximal_mu must be a finite number >= 0, got {proximal_mu!r}"
    return None


def _optimizer_problem(name: object, args: object) -> tuple[str, str] | None:
    """``(field, message)`` when ``name`` is no ``torch.optim`` optimizer or ``args`` are of the wrong
    kinds (sections 12.1.9, 12.1.10), or None; both sides word it the same way."""
    if _optimizer_class(name) is None:
        return "optimizer", f"unknown optimizer {name!r}; torch.optim has {_known_optimizers()}"
    problem = _optimizer_args_problem(args)
    return None if problem is None else ("optimizer_args", problem)


def _construction_problem(name: str, args: Mapping[str, Any], exc: Exception) -> str:
    """The message for an optimizer constructor that rejected ``args`` (section 12.1.9)."""
    return f"cannot create {name} with optimizer_args {dict(args)!r}: {error_summary(exc)}"


def _script_loss_function(function: Callable[..., Tensor]) -> torch.jit.ScriptModule:
    """Script a loss function (plain or already scripted) as a module whose forward calls it."""

    class LossFunction(nn.Module):
        def forward(self, output: Tensor, target: Tensor) -> Tensor:
            return function(output, target)

    with quiet_torchscript():
        scripted: torch.jit.ScriptModule = torch.jit.script(LossFunction())
    return scripted


class _ConfigReceiver(Protocol[_R_co]):
    def set_train_config(self, config: TrainConfig, /) -> _R_co: ...


@dataclass(kw_only=True)
class TrainConfig:
    """How a worker should train: model, loss, optimizer and loop settings.

    - ``model``: an ``nn.Module`` (sent as TorchScript: scripted, or traced with ``example_input`` when
      it cannot be scripted), a ``torch.jit.ScriptModule`` (sent as is), or the name of an architecture
      registered on the worker (``str``).
    - ``loss_fn``: a built-in loss name (see :data:`~fedproto.training.losses.BUILTIN_LOSSES`), or a
      module or function called as ``loss_fn(output, target)`` returning a scalar tensor; it is sent as
      TorchScript, so it must be scriptable (TorchScript functions and modules are sent as they are).
    - ``optimizer``/``optimizer_args``: a ``torch.optim`` class name and its keyword arguments (numbers,
      bools or lists of numbers; lists reach the constructor as tuples).
    - ``batch_size``, ``epochs``, ``shuffle``, ``max_nr_batches`` (<= 0: no cap), ``seed`` (None:
      nondeterministic): the training loop, see :meth:`~fedproto.training.engine.TrainingState.fit`.
    - ``initial_weights``: tensors to load into the model before training (mostly for registered models).
    - ``proximal_mu``: FedProx's proximal term; when > 0 every batch minimises
      ``loss + proximal_mu / 2 * ||w - w_start||^2`` over the trainable parameters, ``w_start`` being
      their values when the fit started (the reported losses stay the plain loss).
    - ``reset_optimizer``: start every fit with a new optimizer, so no optimizer state (momentum,
      Adam's moments) carries from one fit to the next; federated rounds want this.

    The constructor checks what it can locally and raises :class:`~fedproto.errors.TrainConfigError`
    (an ``InvalidArgumentError`` and a ``ValueError``, worded as the worker would answer) or, for values of
    the wrong kind, :class:`~fedproto.errors.TrainConfigTypeError` (also a ``TypeError``); the worker checks
    everything again.
    """

    model: nn.Module | str
    loss_fn: str | nn.Module | Callable[..., Tensor]
    optimizer: str = "SGD"
    optimizer_args: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    epochs: int = 1
    shuffle: bool = True
    max_nr_batches: int = -1
    seed: int | None = None
    example_input: Tensor | None = None
    initial_weights: dict[str, Tensor] | None = None
    proximal_mu: float = 0.0
    reset_optimizer: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.model, str):
            if not self.model:
                raise TrainConfigError("model must not be an empty name", details={"field": "model"})
        elif not isinstance(self.model, nn.Module):
            raise TrainConfigTypeError(
                f"model must be an nn.Module, a TorchScript module or a registered name, "
                f"not {type(self.model).__name__}",
                details={"field": "model"},
            )
        if isinstance(self.loss_fn, str):
            if self.loss_fn not in BUILTIN_LOSSES:
                # the worker's wording (fedproto.training.losses.builtin_loss)
                raise TrainConfigError(
                    f"unknown loss name {self.loss_fn!r}; built-in losses are {', '.join(BUILTIN_LOSSES)}",
                    details={"field": "loss_name"},
                )
        elif not callable(self.loss_fn):
            raise TrainConfigTypeError(
                f"loss_fn must be a loss name or callable, not {type(self.loss_fn).__name__}",
                details={"field": "loss"},
            )
        problem = _settings_problem(
            batch_size=self.batch_size, epochs=self.epochs, seed=self.seed, proximal_mu=self.proximal_mu
        )
        if problem is not None:
            raise TrainConfigError(problem[1], details={"field": problem[0]})
        if not _is_int(self.max_nr_batches):
            raise TrainConfigError(
                f"max_nr_batches must be an integer, got {self.max_nr_batches!r}",
                details={"field": "max_nr_batches"},
            )
        if self.example_input is not None and not isinstance(self.example_input, Tensor):
            raise TrainConfigTypeError(
                f"example_input must be a tensor, not {type(self.example_input).__name__}",
                details={"field": "example_input"},
            )
        if self.initial_weights is not None and not all(
            isinstance(key, str) and isinstance(value, Tensor) for key, value in self.initial_weights.items()
        ):
            raise TrainConfigTypeError(
                "initial_weights must map state-dict names (str) to tensors",
                details={"field": "initial_weights"},
            )
        if not isinstance(self.reset_optimizer, bool):
            raise TrainConfigTypeError(
                f"reset_optimizer must be a bool, not {type(self.reset_optimizer).__name__}",
                details={"field": "reset_optimizer"},
            )
        self._check_optimizer()

    def _check_optimizer(self) -> None:
        problem = _optimizer_problem(self.optimizer, self.optimizer_args)
        if problem is not None:
            raise TrainConfigError(problem[1], details={"field": problem[0]})
        optimizer_class = _optimizer_class(self.optimizer)
        assert optimizer_class is not None  # checked by _optimizer_problem
        try:
            optimizer_class([nn.Parameter(torch.zeros(1))], **_optimizer_kwargs(self.optimizer_args))
        except Exception as exc:  # TypeError, ValueError, IndexError (a short betas list)...
            raise TrainConfigError(
                _construction_problem(self.optimizer, self.optimizer_args, exc),
                details={"field": "optimizer_args"},
            ) from None

    def model_bytes(self) -> bytes | None:
        """The model as a TorchScript archive, or None when the model is a registered name.

        A ``torch.jit.ScriptModule`` is saved as is; any other module is scripted with
        ``torch.jit.script`` and, when that fails and ``example_input`` is set, traced with
        ``torch.jit.trace(model, example_input)`` instead (a trace records one path through the code:
        data-dependent branches and the train/eval mode at tracing time are frozen). Raises
        :class:`~fedproto.errors.TrainConfigTypeError` (a ``TypeError``) when the module can be neither
        scripted nor traced.
        """
        model = self.model
        if isinstance(model, str):
            return None
        if isinstance(model, torch.jit.ScriptModule):
            return save_torchscript(model, "model")
        try:
            with quiet_torchscript():
                scripted: torch.jit.ScriptModule = torch.jit.script(model)
        except Exception as exc:
            if self.example_input is None:
                raise TrainConfigTypeError(
                    f"the model {type(model).__name__} cannot be scripted with torch.jit.script "
                    f"({error_summary(exc)}); pass example_input=... to trace it instead",
                    details={"field": "model"},
                ) from exc
            try:
                with quiet_torchscript():
                    scripted = torch.jit.trace(model, self.example_input, check_trace=False)
            except Exception as trace_exc:
                raise TrainConfigTypeError(
                    f"the model {type(model).__name__} can be neither scripted nor traced with "
                    f"example_input: {error_summary(trace_exc)}",
                    details={"field": "model"},
                ) from trace_exc
        return save_torchscript(scripted, "model")

    def loss_bytes(self) -> bytes | None:
        """The loss as a TorchScript archive, or None when it is a built-in loss name.

        TorchScript modules are saved as they are, other modules are scripted, and functions (plain or
        ``torch.jit.script``-ed) are wrapped in a module whose ``forward(output, target)`` calls them.
        Raises :class:`~fedproto.errors.TrainConfigTypeError` (a ``TypeError``) when the loss cannot be
        scripted.
        """
        loss_fn = self.loss_fn
        if isinstance(loss_fn, str):
            return None
        if isinstance(loss_fn, torch.jit.ScriptModule):
            return save_torchscript(loss_fn, "loss")
        try:
            if isinstance(loss_fn, nn.Module):
                with quiet_torchscript():
                    scripted: torch.jit.ScriptModule = torch.jit.script(loss_fn)
            else:
                scripted = _script_loss_function(loss_fn)
        except Exception as exc:
            name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
            raise TrainConfigTypeError(
                f"the loss {name} cannot be scripted with torch.jit.script: {error_summary(exc)}",
                details={"field": "loss"},
            ) from exc
        return save_torchscript(scripted, "loss")

    def to_spec(self) -> TrainSpec:
        """This config as the wire carries it: TorchScript bytes for objects, plain values otherwise."""
        return TrainSpec(
            model_torchscript=self.model_bytes(),
            registered_model=self.model if isinstance(self.model, str) else None,
            loss_torchscript=self.loss_bytes(),
            loss_name=self.loss_fn if isinstance(self.loss_fn, str) else None,
            optimizer=self.optimizer,
            optimizer_args={
                key: list(value) if isinstance(value, (list, tuple)) else value
                for key, value in self.optimizer_args.items()
            },
            batch_size=self.batch_size,
            epochs=self.epochs,
            shuffle=self.shuffle,
            max_nr_batches=self.max_nr_batches,
            seed=self.seed,
            initial_weights={
                name: tensor.detach().cpu().contiguous()
                for name, tensor in (self.initial_weights or {}).items()
            },
            proximal_mu=float(self.proximal_mu),
            reset_optimizer=self.reset_optimizer,
        )

    def send(self, client: _ConfigReceiver[_R_co]) -> _R_co:
        """Send this config to a worker: ``client.set_train_config(self)``, returning its result.

        ``client`` is a connected client of :mod:`fedproto.client` (anything with a
        ``set_train_config`` method); its reply says how many parameters the model has.
        """
        return client.set_train_config(self)
