"""The worker's training engine: one :class:`TrainingState` per client identity.

:meth:`TrainingState.configure` turns a :class:`~fedproto.types.TrainSpec` into a model, a
loss and an optimizer, checking everything a client could get wrong and raising the protocol's
exceptions; :meth:`TrainingState.fit`, :meth:`TrainingState.evaluate`, :meth:`TrainingState.state_dict`
and :meth:`TrainingState.load_weights` serve ``Fit``, ``Evaluate``, ``GetWeights`` and ``SetWeights``.
Nothing here does I/O or knows about asyncio: the worker runs a fit in a thread and passes callbacks for
progress and cancellation.

Client bytes are only ever read with ``torch.jit.load`` (TorchScript's own format and interpreter),
never with ``pickle`` or ``torch.load``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
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
from fedproto.training.config import (
    _construction_problem,
    _optimizer_class,
    _optimizer_kwargs,
    _optimizer_problem,
    _settings_problem,
)
from fedproto.training.losses import builtin_loss
from fedproto.training.torchscript import error_summary, load_torchscript
from fedproto.types import EvaluateKind, EvaluateResult, FitProgressEvent, FitResult, ModelSummary, TrainSpec

__all__ = ["ModelRegistry", "TrainingState"]

#: Progress events per epoch when the request leaves the interval to the server (``progress_every`` 0).
DEFAULT_PROGRESS_EVENTS_PER_EPOCH = 10


class ModelRegistry:
    """Architectures the data owner offers by name (``registered_model``), each built by a factory.

    Factories take no arguments and return a new ``nn.Module`` with freshly initialised weights.
    """

    def __init__(self) -> None:
        self._factories: dict[str, Callable[[], nn.Module]] = {}

    def register(self, name: str, factory: Callable[[], nn.Module]) -> None:
        """Offer an architecture under ``name``; ValueError when the name is empty or taken."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a registered model needs a non-empty name, got {name!r}")
        if name in self._factories:
            raise ValueError(f"a model named {name!r} is already registered")
        if not callable(factory):
            raise TypeError(f"the factory for {name!r} is not callable")
        self._factories[name] = factory

    def names(self) -> list[str]:
        """The registered names, sorted (``ListModelsReply.names``)."""
        return sorted(self._factories)

    def create(self, name: str) -> nn.Module:
        """Build a new module of the architecture ``name``; NotFoundError for an unknown name."""
        try:
            factory = self._factories[name]
        except (KeyError, TypeError):
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(
                f"no registered model named {name!r} (registered: {known})",
                details={"field": "registered_model"},
            ) from None
        module = factory()
        if not isinstance(module, nn.Module):
            raise TypeError(f"the factory for {name!r} returned {type(module).__name__}, not an nn.Module")
        return module

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __len__(self) -> int:
        return len(self._factories)


def _check_loss_signature(loss: torch.jit.ScriptModule) -> None:
    """Refuse a TorchScript loss whose forward cannot be called as ``forward(output, target)``."""
    try:
        forward: Any = loss.forward
        arguments = list(forward.schema.arguments)[1:]  # without self
    except Exception:
        raise InvalidArgumentError(
            "loss_torchscript has no forward method", details={"field": "loss_torchscript"}
        ) from None
    required = [argument for argument in arguments if not argument.has_default_value()]
    if len(arguments) < 2 or len(required) > 2:
        raise InvalidArgumentError(
            f"the loss's forward must take (output, target), it takes "
            f"({', '.join(argument.name for argument in arguments)})",
            details={"field": "loss_torchscript"},
        )


def _failure(exc: Exception, where: str, details: Mapping[str, str]) -> ProtocolError:
    """The protocol error for an exception raised by the client's model or loss (or the optimizer)."""
    if isinstance(exc, MemoryError):
        return ResourceExhaustedError(f"out of memory {where}", details=details)
    return InvalidArgumentError(f"{where} failed: {error_summary(exc)}", details=details)


def _scalar_loss(value: object) -> Tensor:
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise InvalidArgumentError(f"the loss must return a scalar tensor, it returned {shape}")
    return value


def _predicted_classes(output: Tensor) -> Tensor:
    """Class per sample: argmax over dim 1 for ``(N, C>1)``; ``output > 0`` for one value per sample."""
    if output.dim() == 2 and output.shape[1] > 1:
        return output.argmax(dim=1)
    if output.dim() == 1 or (output.dim() == 2 and output.shape[1] == 1):
        return (output.reshape(-1) > 0).long()
    raise InvalidArgumentError(
        f"cannot compute classes from a model output of shape {tuple(output.shape)}: "
        "expected (N, classes) or one value per sample"
    )


def _target_classes(target: Tensor) -> Tensor:
    """Class per sample: integer targets as they are, float targets rounded, ``(N, C>1)`` by argmax."""
    if target.dim() == 2 and target.shape[1] > 1:
        return target.argmax(dim=1)
    if target.dim() == 1 or (target.dim() == 2 and target.shape[1] == 1):
        flat = target.reshape(-1)
        if flat.dtype.is_floating_point:
            flat = flat.round()
        return flat.long()
    raise InvalidArgumentError(
        f"cannot compute classes from targets of shape {tuple(target.shape)}: "
        "expected class indices, one value per sample, or (N, classes)"
    )


def _classes(output: object, target: Tensor) -> tuple[Tensor, Tensor]:
    """Predicted and true class per sample of one batch."""
    if not isinstance(output, Tensor):
        raise InvalidArgumentError(f"the model returned a {type(output).__name__}, not a tensor")
    predicted, truth = _predicted_classes(output), _target_classes(target)
    if predicted.shape != truth.shape:
        raise InvalidArgumentError(
            f"the model predicts {predicted.numel()} classes for {truth.numel()} targets"
        )
    return predicted, truth


def _errors(output: object, target: Tensor) -> tuple[float, float]:
    """Sums of squared and of absolute errors over one batch's target elements (a regression)."""
    if not isinstance(output, Tensor):
        raise InvalidArgumentError(f"the model returned a {type(output).__name__}, not a tensor")
    if output.numel() != target.numel():
        raise InvalidArgumentError(
            f"the model gives {output.numel()} values for {target.numel()} target values "
            f"(output {tuple(output.shape)}, targets {tuple(target.shape)}); a regression compares "
            "them element by element"
        )
    # in double precision, so that sums over a large dataset stay exact enough; complex stays complex
    wide = torch.complex128 if output.is_complex() or target.is_complex() else torch.float64
    distance = (output.reshape(target.shape).to(wide) - target.to(wide)).abs()
    return float((distance**2).sum()), float(distance.sum())


def _mean(total: float, count: int) -> float:
    """``total / count``; NaN for no elements, whose mean is undefined."""
    return total / count if count else math.nan


def _default_kind(targets: Tensor) -> EvaluateKind:
    """Classes for integer and bool targets, values for floating-point and complex ones (12.5.11)."""
    if targets.dtype.is_floating_point or targets.dtype.is_complex:
        return EvaluateKind.REGRESSION
    return EvaluateKind.CLASSIFICATION


def _histogram(classes: Tensor, bins: int) -> list[int]:
    inside = classes[(classes >= 0) & (classes < bins)]
    return [int(count) for count in torch.bincount(inside, minlength=bins)[:bins]]


class TrainingState:
    """A client identity's model, loss and optimizer on a worker, built by :meth:`configure`.

    Only one of :meth:`fit`, :meth:`evaluate`, :meth:`state_dict` and :meth:`load_weights` runs at a time
    on one state: entering any of them while another runs (typically a fit in the worker's training
    thread) raises FailedPreconditionError instead of waiting. The optimizer keeps its state (momentum,
    Adam's moments) across fits and weight loads; a new :meth:`configure` starts afresh.
    """

    def __init__(
        self,
        *,
        spec: TrainSpec,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        optimizer: torch.optim.Optimizer,
        optimizer_factory: Callable[[], torch.optim.Optimizer] | None = None,
    ) -> None:
        self._spec = spec
        self._model = model
        self._loss_fn = loss_fn
        self._optimizer = optimizer
        # builds a new optimizer on the same parameters, for specs with reset_optimizer
        self._optimizer_factory = optimizer_factory
        self._needs_closure = isinstance(optimizer, torch.optim.LBFGS)
        self._busy = threading.Lock()
        # (parameter, its value when the fit started) pairs of a fit with a proximal term
        self._anchors: list[tuple[Tensor, Tensor]] = []

    @staticmethod
    def check_sources(spec: TrainSpec, *, weights_only: bool) -> None:
        """The first checks of :meth:`configure` (its steps 1 and 2), for a caller that must run them
        before it reads the archive ``spec.model_object`` names (protocol section 12.9.3)."""
        models = [
            name
            for name in ("model_torchscript", "registered_model", "model_object")
            if getattr(spec, name) is not None
        ]
        if len(models) != 1:
            state = "no model is" if not models else f"{' and '.join(models)} are"
            if len(models) == 2:
                state = f"both {state}"
            raise InvalidArgumentError(f"{state} set; set exactly one", details={"field": "model"})
        if (spec.loss_torchscript is not None) == (spec.loss_name is not None):
            state = "both loss_torchscript and loss_name are" if spec.loss_name is not None else "no loss is"
            raise InvalidArgumentError(f"{state} set; set exactly one", details={"field": "loss"})
        if models[0] != "registered_model" and weights_only:
            raise PermissionDeniedError(
                "this worker is weights-only: it accepts registered models, not TorchScript models",
                details={"field": models[0]},
            )

    @classmethod
    def configure(
        cls,
        spec: TrainSpec,
        *,
        registry: ModelRegistry,
        weights_only: bool,
        max_model_bytes: int,
        model_archive: bytes | bytearray | memoryview | None = None,
    ) -> TrainingState:
        """Build a training state from a train config, checking it in this order.

        1. Exactly one of model_torchscript/registered_model/model_object, and exactly one of
           loss_torchscript/loss_name, is set: else InvalidArgumentError.
        2. A TorchScript model (model_torchscript or model_object) on a weights-only worker:
           PermissionDeniedError.
        3. A model or loss archive larger than ``max_model_bytes`` (0: no limit): ResourceExhaustedError.
        4. batch_size or epochs below 1, a seed outside [0, 2**64), a proximal_mu that is negative or
           not finite, an optimizer that is no optimizer class of ``torch.optim``, optimizer_args of
           the wrong kinds: InvalidArgumentError.
        5. The model: bytes that ``torch.jit.load`` cannot load: InvalidArgumentError; an unknown
           registered name: NotFoundError. A registered model is built by its factory, under
           ``torch.manual_seed(seed)`` when a seed is set (without disturbing the global RNG).
        6. The loss: bytes that do not load, or a forward that cannot take (output, target), or an
           unknown built-in name: InvalidArgumentError.
        7. initial_weights with unknown names or a shape or dtype unlike the model's:
           InvalidArgumentError.
        8. The optimizer is constructed on the model's trainable parameters with optimizer_args; any
           exception (unknown argument, bad value, no trainable parameters) becomes InvalidArgumentError.

        ``model_archive`` is the archive of a ``model_object`` spec: the bytes of the stored object it
        names, read by the caller (this engine has no object store; a missing object or one that is no 1-D
        uint8 tensor is the caller's NotFoundError or InvalidArgumentError, between steps 2 and 3). A
        ``model_object`` spec without it names nothing the caller found: NotFoundError after step 2.
        """
        cls.check_sources(spec, weights_only=weights_only)
        if spec.model_object is not None and model_archive is None:
            raise NotFoundError(f"no object {spec.model_object!r}", details={"id": spec.model_object})
        script_model: tuple[str, bytes | bytearray | memoryview] | None = None
        if spec.model_torchscript is not None:
            script_model = ("model_torchscript", spec.model_torchscript)
        elif spec.model_object is not None and model_archive is not None:
            script_model = ("model_object", model_archive)
        archives = [script_model] if script_model is not None else []
        if spec.loss_torchscript is not None:
            archives.append(("loss_torchscript", spec.loss_torchscript))
        for field_name, data in archives:
            size = memoryview(data).nbytes
            if max_model_bytes > 0 and size > max_model_bytes:
                raise ResourceExhaustedError(
                    f"{field_name} is {size} bytes, more than the limit of {max_model_bytes}",
                    details={"field": field_name, "limit": str(max_model_bytes), "requested": str(size)},
                )
        optimizer_class = _check_scalars(spec)

        model: nn.Module
        if script_model is not None:
            model = load_torchscript(script_model[1], script_model[0])
        elif spec.seed is None:
            model = registry.create(spec.registered_model or "")
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.seed)  # the architecture's initialisation
                model = registry.create(spec.registered_model or "")

        loss_fn: Callable[[Tensor, Tensor], Tensor]
        if spec.loss_torchscript is not None:
            loss_module = load_torchscript(spec.loss_torchscript, "loss_torchscript")
            _check_loss_signature(loss_module)
            loss_fn = loss_module
        else:
            loss_fn = builtin_loss(spec.loss_name or "")

        if spec.initial_weights:
            _load_into(model, spec.initial_weights, strict=False, field="initial_weights")

        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        kwargs = _optimizer_kwargs(spec.optimizer_args)
        try:
            optimizer = optimizer_class(trainable, **kwargs)
        except Exception as exc:  # the constructor checks client values: TypeError, ValueError, IndexError...
            raise InvalidArgumentError(
                _construction_problem(spec.optimizer, spec.optimizer_args, exc),
                details={"field": "optimizer_args"},
            ) from None
        return cls(
            spec=spec,
            model=model,
            loss_fn=loss_fn,
            optimizer=optimizer,
            optimizer_factory=lambda: optimizer_class(trainable, **kwargs),
        )

    @property
    def spec(self) -> TrainSpec:
        """The train config this state was built from."""
        return self._spec

    @property
    def model(self) -> nn.Module:
        """The model being trained (do not use it while a fit runs)."""
        return self._model

    @property
    def parameter_count(self) -> int:
        """Number of trainable parameter elements (``SetTrainConfigReply.parameter_count``)."""
        return sum(parameter.numel() for parameter in self._model.parameters() if parameter.requires_grad)

    @property
    def state_names(self) -> list[str]:
        """The names in the model's state dict, in order (``SetTrainConfigReply.state_names``)."""
        return list(self._model.state_dict().keys())

    @property
    def summary(self) -> ModelSummary:
        """What the client learns about the model it configured (``SetTrainConfigReply``)."""
        return ModelSummary(parameter_count=self.parameter_count, state_names=tuple(self.state_names))

    @property
    def busy(self) -> bool:
        """Whether a fit or an evaluation is running on this state right now."""
        return self._busy.locked()

    def check_idle(self, action: str) -> None:
        """Raise FAILED_PRECONDITION at once when a fit or an evaluation runs on this state."""
        if self._busy.locked():
            raise FailedPreconditionError(
                f"cannot {action}: a fit or evaluation is already running on this training state"
            )

    @contextmanager
    def _exclusive(self, action: str) -> Iterator[None]:
        if not self._busy.acquire(blocking=False):
            raise FailedPreconditionError(
                f"cannot {action}: a fit or evaluation is already running on this training state"
            )
        try:
            yield
        finally:
            self._busy.release()

    def fit(
        self,
        dataset: Dataset,
        *,
        progress: Callable[[FitProgressEvent], None] | None = None,
        progress_every: int = 0,
        should_stop: Callable[[], bool] = lambda: False,
        return_weights: bool = False,
    ) -> FitResult:
        """Train the model on ``dataset`` and return what happened.

        The loop is exactly this plain PyTorch loop (``n = len(dataset)``; ``x``/``y`` its features and
        targets; ``B`` batch_size), so a local run with the same seed and initial weights ends with the
        same weights::

            with torch.random.fork_rng(devices=[]):      # only when a seed is set
                torch.manual_seed(seed)                  # randomness inside the model (dropout)
                g = torch.Generator().manual_seed(seed)  # the shuffle order
                for epoch in range(epochs):
                    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
                    for start in range(0, n, B):         # the last batch may be smaller
                        index = order[start:start + B]
                        optimizer.zero_grad()
                        loss = loss_fn(model(x[index]), y[index])
                        loss.backward()
                        optimizer.step()

        with ``model.train()`` first. Both generators are seeded afresh at the start of every fit, and
        the global RNG state is restored afterwards. Without a seed the shuffle generator is seeded from
        the OS, and the model draws from torch's global RNG as usual. Model randomness is reproducible
        only when nothing else uses torch's global RNG during the fit (so not with two fits of dropout
        models running in parallel threads). ``LBFGS`` steps with a closure doing the zero_grad, forward
        and backward (its reported loss is the closure's first).

        ``max_nr_batches > 0`` caps the batches of the whole fit; the fit then ends early, mid-epoch if
        need be. ``progress`` is called after every ``progress_every``-th batch of an epoch (0: about ten
        times per epoch) and always after the last batch of each epoch. ``should_stop`` is called before
        every batch; when it returns True the fit raises RequestCancelledError, and the model keeps the
        weights of the batches done so far. Failures of the model, loss or optimizer (a shape that does
        not fit the dataset, say) raise InvalidArgumentError. The dataset must not be empty.
        """
        if progress_every < 0:
            raise InvalidArgumentError(f"progress_every must be >= 0, got {progress_every}")
        with self._exclusive("fit"):
            size = len(dataset)
            if size == 0:
                raise InvalidArgumentError("cannot fit on an empty dataset", details={"field": "dataset_key"})
            seed = self._spec.seed
            started = time.perf_counter()
            if seed is None:
                generator = torch.Generator()
                generator.seed()
                totals = self._fit_loop(dataset, generator, progress, progress_every, should_stop)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    generator = torch.Generator().manual_seed(seed)
                    totals = self._fit_loop(dataset, generator, progress, progress_every, should_stop)
            seconds = time.perf_counter() - started
            batches, samples, epochs, final_loss, loss_sum = totals
            return FitResult(
                final_loss=final_loss,
                mean_loss=loss_sum / batches,
                samples=samples,
                batches=batches,
                epochs=epochs,
                seconds=seconds,
                dataset_size=size,
                weights=self._state_dict() if return_weights else None,
            )

    def _fit_loop(
        self,
        dataset: Dataset,
        generator: torch.Generator,
        progress: Callable[[FitProgressEvent], None] | None,
        progress_every: int,
        should_stop: Callable[[], bool],
    ) -> tuple[int, int, int, float, float]:
        """Run the training loop; returns (batches, samples, epochs, final loss, sum of batch losses)."""
        spec = self._spec
        features, targets = dataset.features, dataset.targets
        size = len(dataset)
        full_epoch = math.ceil(size / spec.batch_size)
        remaining = spec.max_nr_batches if spec.max_nr_batches > 0 else spec.epochs * full_epoch
        every = progress_every or max(1, math.ceil(full_epoch / DEFAULT_PROGRESS_EVENTS_PER_EPOCH))
        batches = samples = epochs = 0
        final_loss = loss_sum = 0.0
        if spec.reset_optimizer and self._optimizer_factory is not None:
            self._optimizer = self._optimizer_factory()
        # FedProx: the proximal term pulls towards the weights this fit starts from
        self._anchors = (
            [(p, p.detach().clone()) for p in self._model.parameters() if p.requires_grad]
            if spec.proximal_mu > 0
            else []
        )
        self._model.train()
        for epoch in range(1, spec.epochs + 1):
            if remaining <= 0:
                break
            order = torch.randperm(size, generator=generator) if spec.shuffle else torch.arange(size)
            this_epoch = min(full_epoch, remaining)
            epoch_loss = 0.0
            epochs = epoch
            for batch in range(1, this_epoch + 1):
                if should_stop():
                    raise RequestCancelledError(
                        "fit cancelled", details={"epoch": str(epoch), "batch": str(batch)}
                    )
                start = (batch - 1) * spec.batch_size
                index = order[start : start + spec.batch_size]
                try:
                    loss = self._step(features[index], targets[index])
                except ProtocolError:
                    raise
                except Exception as exc:
                    where = f"training (epoch {epoch}, batch {batch})"
                    raise _failure(exc, where, {"epoch": str(epoch), "batch": str(batch)}) from exc
                batches += 1
                samples += int(index.numel())
                remaining -= 1
                final_loss = loss
                loss_sum += loss
                epoch_loss += loss
                if progress is not None and (batch % every == 0 or batch == this_epoch):
                    progress(
                        FitProgressEvent(
                            epoch=epoch,
                            batch=batch,
                            batches_per_epoch=this_epoch,
                            loss=loss,
                            running_loss=epoch_loss / batch,
                            samples=samples,
                        )
                    )
        return batches, samples, epochs, final_loss, loss_sum

    def _objective(self, loss: Tensor) -> Tensor:
        """What the optimizer minimises: the loss plus, with ``proximal_mu``, FedProx's proximal term."""
        if not self._anchors:
            return loss
        proximal = sum(((p - start) ** 2).sum() for p, start in self._anchors)
        return loss + self._spec.proximal_mu / 2 * proximal

    def _step(self, x: Tensor, y: Tensor) -> float:
        """One optimizer step on one batch; returns the batch's loss (without a proximal term)."""
        model, loss_fn, optimizer = self._model, self._loss_fn, self._optimizer
        if self._needs_closure:
            first: list[float] = []

            def closure() -> Any:  # a Tensor; torch's stubs want float
                optimizer.zero_grad()
                loss = _scalar_loss(loss_fn(model(x), y))
                objective = self._objective(loss)
                objective.backward()
                if not first:
                    first.append(float(loss.detach()))
                return objective.detach()

            optimizer.step(closure)
            return first[0]
        optimizer.zero_grad()
        loss = _scalar_loss(loss_fn(model(x), y))
        self._objective(loss).backward()
        optimizer.step()
        return float(loss.detach())

    def evaluate(
        self,
        dataset: Dataset,
        *,
        return_loss: bool = True,
        return_raw_accuracy: bool = True,
        return_histograms: bool = False,
        nr_bins: int = 0,
        batch_size: int = 0,
        kind: EvaluateKind | None = None,
    ) -> EvaluateResult:
        """Evaluate the model on ``dataset`` in eval mode without gradients, in order, batch by batch.

        - ``kind``: a classification or a regression; None decides by the targets' element type
          (integer and bool: classification; floating-point and complex: regression).
        - ``loss``: the sum of each batch's loss times its sample count, divided by the sample count:
          the mean per sample for losses that average over the batch (all built-in ones do).
        - A regression, with ``return_raw_accuracy``: ``mean_squared_error`` and ``mean_absolute_error``
          are the means over all target elements of ``|output - target|**2`` and ``|output - target|``,
          the output reshaped to the target's shape (it must have as many elements; NaN when the
          targets have none). ``correct`` is 0 and there are no histograms.
        - Classes, for accuracy and histograms of a classification: an output of shape ``(N, C)`` with
          ``C > 1`` predicts ``argmax(dim=1)``; an output with one value per sample (``(N,)`` or
          ``(N, 1)``) is taken as a logit and predicts class 1 when above 0, else 0. Integer targets
          are class indices; float targets (asked for as classes) with one value per sample are rounded
          to the nearest integer; targets of shape ``(N, C)`` with ``C > 1`` (one-hot, probabilities)
          use their argmax.
        - ``correct``: samples whose predicted class equals the target class; ``total``: samples.
        - Histograms: counts per class in ``range(nr_bins)``; when ``nr_bins`` is 0 it is the largest
          predicted or target class plus one. Classes outside the range are not counted.

        ``batch_size`` 0 uses the train config's. The model's train/eval mode is restored afterwards.
        """
        if nr_bins < 0:
            raise InvalidArgumentError(f"nr_bins must be >= 0, got {nr_bins}", details={"field": "nr_bins"})
        if batch_size < 0:
            raise InvalidArgumentError(
                f"batch_size must be >= 0, got {batch_size}", details={"field": "batch_size"}
            )
        with self._exclusive("evaluate"):
            size = len(dataset)
            if size == 0:
                raise InvalidArgumentError(
                    "cannot evaluate on an empty dataset", details={"field": "dataset_key"}
                )
            step = batch_size or self._spec.batch_size
            kind = kind or _default_kind(dataset.targets)
            regression = kind is EvaluateKind.REGRESSION
            want_classes = not regression and (return_raw_accuracy or return_histograms)
            want_errors = regression and return_raw_accuracy
            loss_total = squared_total = absolute_total = 0.0
            correct = 0
            predictions: list[Tensor] = []
            truths: list[Tensor] = []
            was_training = self._model.training
            self._model.eval()
            try:
                with torch.no_grad():
                    for start in range(0, size, step):
                        x = dataset.features[start : start + step]
                        y = dataset.targets[start : start + step]
                        try:
                            output = self._model(x)
                            if return_loss:
                                loss_total += float(_scalar_loss(self._loss_fn(output, y))) * len(x)
                            if want_errors:
                                squared, absolute = _errors(output, y)
                                squared_total += squared
                                absolute_total += absolute
                            if want_classes:
                                predicted, truth = _classes(output, y)
                                correct += int((predicted == truth).sum())
                                predictions.append(predicted)
                                truths.append(truth)
                        except ProtocolError:
                            raise
                        except Exception as exc:
                            where = f"evaluation (samples {start} to {start + len(x) - 1})"
                            raise _failure(exc, where, {"sample": str(start)}) from exc
            finally:
                self._model.train(was_training)
            prediction_histogram: list[int] = []
            target_histogram: list[int] = []
            elements = dataset.targets.numel()
            if return_histograms and not regression:
                predicted_all, truth_all = torch.cat(predictions), torch.cat(truths)
                bins = nr_bins or max(int(predicted_all.max()), int(truth_all.max()), -1) + 1
                prediction_histogram = _histogram(predicted_all, bins)
                target_histogram = _histogram(truth_all, bins)
            return EvaluateResult(
                loss=loss_total / size if return_loss else None,
                correct=correct if return_raw_accuracy else 0,
                total=size,
                prediction_histogram=prediction_histogram,
                target_histogram=target_histogram,
                kind=kind,
                mean_squared_error=_mean(squared_total, elements) if want_errors else None,
                mean_absolute_error=_mean(absolute_total, elements) if want_errors else None,
            )

    def _state_dict(self) -> dict[str, Tensor]:
        return {name: tensor.detach().clone() for name, tensor in self._model.state_dict().items()}

    def state_dict(self) -> dict[str, Tensor]:
        """The model's state dict (parameters and buffers) as detached copies, in order."""
        with self._exclusive("read the weights"):
            return self._state_dict()

    def check_weights(
        self, layout: Mapping[str, tuple[torch.dtype, tuple[int, ...]]], *, strict: bool
    ) -> None:
        """Raise what :meth:`load_weights` would for tensors of this ``name -> (dtype, shape)`` layout.

        Checks a chunked ``set_weights`` before its payload arrives (docs section 12.8.13), with no
        tensor of that size in memory: the checks run on meta tensors.
        """
        weights = {
            name: torch.empty(shape, dtype=dtype, device="meta") for name, (dtype, shape) in layout.items()
        }
        _check_fit(self._model.state_dict(), weights, strict=strict, field="weights")

    def load_weights(self, weights: Mapping[str, Tensor], *, strict: bool) -> int:
        """Replace model weights by name; returns how many tensors were replaced.

        Every name must be in the model's state dict with the same shape and dtype, and with ``strict``
        every entry of the state dict must be given; otherwise InvalidArgumentError, and no weight is
        changed. The optimizer's state is kept.
        """
        with self._exclusive("load weights"):
            return _load_into(self._model, weights, strict=strict, field="weights")


def _check_scalars(spec: TrainSpec) -> type[torch.optim.Optimizer]:
    """Check batch_size, epochs, seed and the optimizer's name and arguments; the optimizer class.

    The checks and their wording are :class:`~fedproto.training.config.TrainConfig`'s own, so a client
    that checked locally and a worker that checks again say the same thing.
    """
    problem = _settings_problem(
        batch_size=spec.batch_size, epochs=spec.epochs, seed=spec.seed, proximal_mu=spec.proximal_mu
    ) or _optimizer_problem(spec.optimizer, spec.optimizer_args)
    if problem is not None:
        raise InvalidArgumentError(problem[1], details={"field": problem[0]})
    optimizer_class = _optimizer_class(spec.optimizer)
    assert optimizer_class is not None  # checked by _optimizer_problem
    return optimizer_class


def _load_into(model: nn.Module, weights: Mapping[str, Any], *, strict: bool, field: str) -> int:
    """Check then copy ``weights`` into ``model``'s state; nothing changes when a check fails."""
    state = model.state_dict()
    _check_fit(state, weights, strict=strict, field=field)
    with torch.no_grad():
        for name, value in weights.items():
            state[name].copy_(value)
    return len(weights)


def _check_fit(state: Mapping[str, Tensor], weights: Mapping[str, Any], *, strict: bool, field: str) -> None:
    """INVALID_ARGUMENT unless every tensor of ``weights`` is in ``state`` with its shape and dtype."""
    problems: list[str] = []
    for name, value in weights.items():
        target = state.get(name)
        if target is None:
            problems.append(f"{name!r} is not in the model")
        elif not isinstance(value, Tensor):
            problems.append(f"{name!r} is a {type(value).__name__}, not a tensor")
        elif value.shape != target.shape:
            problems.append(f"{name!r} has shape {tuple(value.shape)}, the model's is {tuple(target.shape)}")
        elif value.dtype != target.dtype:
            problems.append(f"{name!r} has dtype {value.dtype}, the model's is {target.dtype}")
    if strict:
        missing = [name for name in state if name not in weights]
        if missing:
            shown = ", ".join(repr(name) for name in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            problems.append(f"strict load is missing {shown}{more}")
    if problems:
        shown_problems = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more problems)" if len(problems) > 5 else ""
        raise InvalidArgumentError(
            f"{field} do not fit the model: {shown_problems}{more}", details={"field": field}
        )
