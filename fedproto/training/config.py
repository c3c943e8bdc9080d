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
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

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

    The constructor checks what it can locally and raises ``ValueError`` (``TypeError`` for values of the
    wrong kind); the worker checks everything again.
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
                raise ValueError("model must not be an empty name")
        elif not isinstance(self.model, nn.Module):
            raise TypeError(
                f"model must be an nn.Module, a TorchScript module or a registered name, "
                f"not {type(self.model).__name__}"
            )
        if isinstance(self.loss_fn, str):
            if self.loss_fn not in BUILTIN_LOSSES:
                raise ValueError(
                    f"unknown loss name {self.loss_fn!r}; built-in losses are {', '.join(BUILTIN_LOSSES)}"
                )
        elif not callable(self.loss_fn):
            raise TypeError(f"loss_fn must be a loss name or callable, not {type(self.loss_fn).__name__}")
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.max_nr_batches, int) or isinstance(self.max_nr_batches, bool):
            raise ValueError(f"max_nr_batches must be an integer, got {self.max_nr_batches!r}")
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed <= _MAX_SEED
        ):
            raise ValueError(f"seed must be None or an integer in [0, 2**64), got {self.seed!r}")
        if self.example_input is not None and not isinstance(self.example_input, Tensor):
            raise TypeError(f"example_input must be a tensor, not {type(self.example_input).__name__}")
        if self.initial_weights is not None and not all(
            isinstance(key, str) and isinstance(value, Tensor) for key, value in self.initial_weights.items()
        ):
            raise TypeError("initial_weights must map state-dict names (str) to tensors")
        if (
            not isinstance(self.proximal_mu, (int, float))
            or isinstance(self.proximal_mu, bool)
            or not math.isfinite(self.proximal_mu)
            or self.proximal_mu < 0
        ):
            raise ValueError(f"proximal_mu must be a finite number >= 0, got {self.proximal_mu!r}")
        if not isinstance(self.reset_optimizer, bool):
            raise TypeError(f"reset_optimizer must be a bool, not {type(self.reset_optimizer).__name__}")
        self._check_optimizer()

    def _check_optimizer(self) -> None:
        optimizer_class = _optimizer_class(self.optimizer)
        if optimizer_class is None:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; torch.optim has {_known_optimizers()}")
        problem = _optimizer_args_problem(self.optimizer_args)
        if problem is not None:
            raise ValueError(problem)
        try:
            optimizer_class([nn.Parameter(torch.zeros(1))], **_optimizer_kwargs(self.optimizer_args))
        except Exception as exc:  # TypeError, ValueError, IndexError (a short betas list)...
            raise ValueError(
                f"{self.optimizer} does not accept optimizer_args: {error_summary(exc)}"
            ) from None

    def model_bytes(self) -> bytes | None:
        """The model as a TorchScript archive, or None when the model is a registered name.

        A ``torch.jit.ScriptModule`` is saved as is; any other module is scripted with
        ``torch.jit.script`` and, when that fails and ``example_input`` is set, traced with
        ``torch.jit.trace(model, example_input)`` instead (a trace records one path through the code:
        data-dependent branches and the train/eval mode at tracing time are frozen). Raises
        ``TypeError`` when the module can be neither scripted nor traced.
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
                raise TypeError(
                    f"the model {type(model).__name__} cannot be scripted with torch.jit.script "
                    f"({error_summary(exc)}); pass example_input=... to trace it instead"
                ) from exc
            try:
                with quiet_torchscript():
                    scripted = torch.jit.trace(model, self.example_input, check_trace=False)
            except Exception as trace_exc:
                raise TypeError(
                    f"the model {type(model).__name__} can be neither scripted nor traced with "
                    f"example_input: {error_summary(trace_exc)}"
                ) from trace_exc
        return save_torchscript(scripted, "model")

    def loss_bytes(self) -> bytes | None:
        """The loss as a TorchScript archive, or None when it is a built-in loss name.

        TorchScript modules are saved as they are, other modules are scripted, and functions (plain or
        ``torch.jit.script``-ed) are wrapped in a module whose ``forward(output, target)`` calls them.
        Raises ``TypeError`` when the loss cannot be scripted.
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
            raise TypeError(
                f"the loss {name} cannot be scripted with torch.jit.script: {error_summary(exc)}"
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
