"""Aggregators: a round's client updates folded into one set of weights.

An :class:`Aggregator` receives the updates of one round as they arrive (:meth:`Aggregator.add`) and
hands out the aggregate at the end (:meth:`Aggregator.result`). Two kinds:

- *streaming* (:class:`StreamingMean`): each update is folded into a running sum at once and then
  dropped, so the coordinator holds O(model) memory however many clients train. The sum is kept in
  float64 (complex128 for complex tensors), so the weighted mean of float32 updates is the exact mean
  rounded once to float32, the same number :func:`~fedproto.federated.averaging.average_weights` gives;
- *buffered* (:class:`BufferedMean`, :class:`CoordinateMedian`, :class:`TrimmedMean`): every update is
  kept until the end, O(clients x model), because the statistic (a median, a trimmed mean) needs them
  all at once. Such aggregators say so (``streaming = False``) and the strategies using them declare it.

Updates are folded either as the weights the clients trained (``deltas=False``) or as their
differences from the round's global weights (``deltas=True``, the clients' *pseudo-gradients* up to the
sign); the result is always weights. Tensors that are neither floating point nor complex (integers and
bools, such as BatchNorm's ``num_batches_tracked``) cannot be averaged: they are copied from the update
with the most samples (the first of those on a tie). Updates with 0 samples count for nothing.

Every update is checked against the reference weights (the round's global weights) before it is used:
the same names, shapes and dtypes, else :class:`UpdateMismatchError` (a ``ValueError``) and the
aggregator is unchanged.

:class:`StreamingMean` widens each update to float64 :data:`SLICE_ELEMENTS` elements at a time, so
folding one in takes no temporary copy of a whole tensor (in a model whose one big layer is nearly all
of it, a float64 copy of that layer would be about two models' worth); the result is the same, element
for element, as widening whole tensors.

:meth:`StreamingMean.fold` folds an update *while it arrives*: a :class:`Fold` is a
:class:`~fedproto.client.WeightsSink` that checks the update's manifest against the reference, then adds
each received slice of elements into the running sum (``AsyncClient.stream_model_weights(fold)``), so
no update is ever held whole. :meth:`Aggregator.result_into` writes the aggregate into given tensors
(the global model's own) instead of new ones.
"""

from __future__ import annotations

import abc
import math
import threading
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from fedproto.types import WeightSlice, WeightsManifest

__all__ = [
    "SLICE_ELEMENTS",
    "Aggregator",
    "BufferedAggregator",
    "BufferedMean",
    "CoordinateMedian",
    "Fold",
    "StreamingMean",
    "TrimmedMean",
    "UpdateMismatchError",
]


#: How many elements of a tensor a streaming fold widens to float64 at a time (512 KiB of temporaries).
SLICE_ELEMENTS = 1 << 16


class UpdateMismatchError(ValueError):
    """An update whose names, shapes or dtypes differ from the global weights', or a bad sample count."""


def averages(tensor: Tensor) -> bool:
    """Whether a tensor of this kind is averaged (floating point or complex) rather than copied."""
    return tensor.dtype.is_floating_point or tensor.dtype.is_complex


def wide_dtype(tensor: Tensor) -> torch.dtype:
    """The dtype aggregation computes in: complex128 for complex tensors, float64 otherwise."""
    return torch.complex128 if tensor.dtype.is_complex else torch.float64


class Aggregator(abc.ABC):
    """Folds one round's updates into weights; ``reference`` is the round's global weights.

    ``count`` updates were added so far, holding ``total_samples`` samples between them.
    """

    #: Whether this aggregator holds O(model) memory (True) or every update (False).
    streaming: ClassVar[bool]

    def __init__(self, reference: Mapping[str, Tensor], *, deltas: bool = False) -> None:
        self.reference = {name: tensor.detach() for name, tensor in reference.items()}
        self.deltas = deltas
        self.count = 0
        self.total_samples = 0
        # the non-averaged tensors (integers, bools) of the update with the most samples so far
        self._largest = -1
        self._copied: dict[str, Tensor] = {}

    def check(self, weights: Mapping[str, Tensor], num_samples: int) -> None:
        """Raise :class:`UpdateMismatchError` unless ``weights`` fit the reference and the count is valid."""
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 0:
            raise UpdateMismatchError(f"the sample count {num_samples!r} is not an integer >= 0")
        if not isinstance(weights, Mapping):
            raise UpdateMismatchError(f"the update is a {type(weights).__name__}, not a mapping of tensors")
        if weights.keys() != self.reference.keys():
            extra = sorted(set(weights) - set(self.reference))
            missing = sorted(set(self.reference) - set(weights))
            raise UpdateMismatchError(
                f"the update's names differ from the model's: extra {extra}, missing {missing}"
            )
        for name, reference in self.reference.items():
            tensor = weights[name]
            if not isinstance(tensor, Tensor):
                raise UpdateMismatchError(f"the update's {name!r} is a {type(tensor).__name__}, not a tensor")
            if tensor.shape != reference.shape or tensor.dtype != reference.dtype:
                raise UpdateMismatchError(
                    f"the update has {name!r} as {tuple(tensor.shape)} {tensor.dtype}, the model as "
                    f"{tuple(reference.shape)} {reference.dtype}"
                )

    def add(self, weights: Mapping[str, Tensor], num_samples: int) -> None:
        """Fold in one client's trained weights, weighted by ``num_samples`` (the samples it holds)."""
        self.check(weights, num_samples)
        if num_samples > self._largest:
            self._largest = num_samples
            self._copied = {
                name: weights[name].detach().clone()
                for name, reference in self.reference.items()
                if not averages(reference)
            }
        self._add(weights, num_samples)
        self.count += 1
        self.total_samples += num_samples

    def result(self) -> dict[str, Tensor]:
        """The aggregate weights, in the reference's name order and dtypes; ValueError when nothing
        with samples was added."""
        if self.count == 0 or self.total_samples == 0:
            raise ValueError(f"cannot aggregate {self.count} updates holding {self.total_samples} samples")
        floating = self._result()
        return {
            name: floating[name] if averages(reference) else self._copied[name]
            for name, reference in self.reference.items()
        }

    def result_into(self, target: Mapping[str, Tensor]) -> None:
        """Write the aggregate into ``target``'s tensors (the reference's names, shapes and dtypes).

        ``target`` may be the reference itself (the global model's tensors): no new set of weights is
        allocated beside the old one.
        """
        aggregate = self.result()
        with torch.no_grad():
            for name, tensor in target.items():
                tensor.copy_(aggregate[name])

    def _difference(self, name: str, tensor: Tensor) -> Tensor:
        """``tensor`` in the wide dtype, minus the reference when folding deltas."""
        wide = tensor.detach().to(device="cpu", dtype=wide_dtype(tensor))
        if self.deltas:
            wide -= self.reference[name].to(device="cpu", dtype=wide.dtype)
        return wide

    def _weights(self, name: str, wide: Tensor) -> Tensor:
        """A wide aggregate of ``name`` back as weights in the model's dtype."""
        reference = self.reference[name]
        if self.deltas:
            wide = wide + reference.to(device="cpu", dtype=wide.dtype)
        return wide.to(reference.dtype)

    @abc.abstractmethod
    def _add(self, weights: Mapping[str, Tensor], num_samples: int) -> None: ...

    @abc.abstractmethod
    def _result(self) -> dict[str, Tensor]:
        """The aggregate of every averaged (floating-point or complex) tensor."""


class StreamingMean(Aggregator):
    """The sample-weighted mean ``sum(n_i * w_i) / sum(n_i)``, folded update by update in float64.

    Memory: one float64 (complex128) accumulator per averaged tensor, whatever the number of updates.
    """

    streaming = True

    def __init__(self, reference: Mapping[str, Tensor], *, deltas: bool = False) -> None:
        super().__init__(reference, deltas=deltas)
        self._sums = {
            name: torch.zeros(tensor.shape, dtype=wide_dtype(tensor))
            for name, tensor in self.reference.items()
            if averages(tensor)
        }
        # folds may run on several client threads at once (a blocking Client's loop each)
        self._lock = threading.Lock()
        #: why the sum holds part of an update that then failed (it cannot be taken out exactly)
        self.broken: str | None = None

    def _add(self, weights: Mapping[str, Tensor], num_samples: int) -> None:
        if num_samples == 0:
            return
        for name in self._sums:
            update = weights[name].detach().to("cpu").reshape(-1)
            for start in range(0, update.numel(), SLICE_ELEMENTS):
                self._fold_slice(name, start, update[start : start + SLICE_ELEMENTS], num_samples)

    def _fold_slice(self, name: str, start: int, values: Tensor, num_samples: int) -> None:
        """Add ``num_samples`` times ``values`` (elements ``start`` on of ``name``) into the sum."""
        flat = self._sums[name].view(-1)
        part = slice(start, start + values.numel())
        wide = values.to(flat.dtype)
        if self.deltas:
            wide -= self.reference[name].detach().to("cpu").reshape(-1)[part].to(flat.dtype)
        with self._lock:
            # n * w is exact in float64 for float32 weights, so this adds with one rounding
            flat[part].add_(wide, alpha=num_samples)

    def fold(self, num_samples: int) -> Fold:
        """A :class:`Fold` that adds one update, weighted by ``num_samples``, slice by slice as it arrives.

        Once its manifest has been checked the update counts only after :meth:`Fold.commit`;
        :meth:`Fold.abort` after some of its elements were added leaves the aggregator :attr:`broken`.
        """
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 0:
            raise UpdateMismatchError(f"the sample count {num_samples!r} is not an integer >= 0")
        return Fold(self, num_samples)

    def result(self) -> dict[str, Tensor]:
        """As :meth:`Aggregator.result`; ValueError when a failed fold left part of an update in the sum."""
        if self.broken is not None:
            raise ValueError(self.broken)
        return super().result()

    def result_into(self, target: Mapping[str, Tensor]) -> None:
        """As :meth:`Aggregator.result_into`, slice by slice: no tensor is allocated whole."""
        if self.broken is not None:
            raise ValueError(self.broken)
        if self.count == 0 or self.total_samples == 0:
            raise ValueError(f"cannot aggregate {self.count} updates holding {self.total_samples} samples")
        with torch.no_grad():
            for name, tensor in target.items():
                if name in self._sums:
                    self._mean_into(name, tensor.view(-1))
                else:
                    tensor.copy_(self._copied[name])

    def _mean_into(self, name: str, out: Tensor) -> None:
        """The mean of ``name``, rounded once to ``out``'s dtype, slice by slice into ``out`` (flat).

        ``out`` may be the reference itself: each slice reads its reference elements before it writes.
        """
        flat = self._sums[name].view(-1)
        reference = self.reference[name].detach().to("cpu").reshape(-1)
        for start in range(0, flat.numel(), SLICE_ELEMENTS):
            part = slice(start, start + SLICE_ELEMENTS)
            mean = flat[part] / self.total_samples
            if self.deltas:
                mean += reference[part].to(mean.dtype)
            out[part] = mean

    def _result(self) -> dict[str, Tensor]:
        result = {}
        for name in self._sums:
            reference = self.reference[name]
            out = torch.empty(reference.shape, dtype=reference.dtype)
            # slice by slice, as the fold: the mean never needs a float64 copy of a whole tensor
            self._mean_into(name, out.view(-1))
            result[name] = out
        return result


class Fold:
    """One update being folded into a :class:`StreamingMean` as it arrives (a ``WeightsSink``).

    :meth:`begin` checks the update's layout against the reference (:class:`UpdateMismatchError`, the
    aggregator unchanged); :meth:`take` adds each slice of an averaged tensor into the running sum at
    once and keeps the (small) integer and bool tensors aside; :meth:`commit` counts the update when
    every element arrived. An update that fails after some of its elements were added cannot be taken
    out of the float64 sum exactly: :meth:`abort` then marks the aggregator :attr:`StreamingMean.broken`.
    """

    def __init__(self, aggregator: StreamingMean, num_samples: int) -> None:
        self.aggregator = aggregator
        self.num_samples = num_samples
        #: whether elements of this update are in the sum already
        self.started = False
        self._manifest: WeightsManifest | None = None
        self._copied: dict[str, Tensor] = {}
        self._received = 0
        self._done = False

    def begin(self, manifest: WeightsManifest) -> None:
        """Check the update's names, shapes and dtypes against the reference, before any element."""
        reference = self.aggregator.reference
        layout = {entry.name: entry for entry in manifest.entries}
        if layout.keys() != reference.keys():
            extra = sorted(set(layout) - set(reference))
            missing = sorted(set(reference) - set(layout))
            raise UpdateMismatchError(
                f"the update's names differ from the model's: extra {extra}, missing {missing}"
            )
        for name, tensor in reference.items():
            entry = layout[name]
            if entry.shape != tuple(tensor.shape) or entry.dtype != tensor.dtype:
                raise UpdateMismatchError(
                    f"the update has {name!r} as {entry.shape} {entry.dtype}, the model as "
                    f"{tuple(tensor.shape)} {tensor.dtype}"
                )
        self._manifest = manifest
        self._copied = {
            name: torch.empty(tensor.shape, dtype=tensor.dtype)
            for name, tensor in reference.items()
            if not averages(tensor)
        }

    def take(self, part: WeightSlice) -> None:
        """Fold one slice of elements in (or keep it aside, for a tensor that is copied, not averaged)."""
        if self._manifest is None or self._done:
            raise UpdateMismatchError("a slice of an update before its manifest, or after its end")
        kept = self._copied.get(part.name)
        if kept is not None:
            kept.view(-1)[part.start : part.start + part.values.numel()] = part.values
        elif self.num_samples:
            self.started = True
            self.aggregator._fold_slice(part.name, part.start, part.values, self.num_samples)
        self._received += part.values.numel() * part.values.element_size()

    def commit(self) -> None:
        """Count the update: every element of it arrived (UpdateMismatchError otherwise)."""
        if self._manifest is None or self._received != self._manifest.total_bytes:
            self.abort()
            raise UpdateMismatchError("the update ended before all its elements arrived")
        aggregator = self.aggregator
        if self.num_samples > aggregator._largest:
            aggregator._largest = self.num_samples
            aggregator._copied = self._copied
        aggregator.count += 1
        aggregator.total_samples += self.num_samples
        self._done = True

    def abort(self, reason: str = "its transfer failed") -> None:
        """Give the update up; when part of it is in the sum already, the aggregator is broken."""
        if self._done:
            return
        self._done = True
        if self.started and self.aggregator.broken is None:
            self.aggregator.broken = (
                f"an update failed after part of it was folded into the running sum ({reason}); "
                "the sum cannot take it back exactly"
            )


class BufferedAggregator(Aggregator):
    """Keeps every update with samples (O(clients x model)) and reduces them at the end.

    Subclasses implement :meth:`reduce`, from one tensor's stacked updates (wide dtype, the updates
    along dimension 0) and their sample counts to that tensor's aggregate.
    """

    streaming = False

    def __init__(self, reference: Mapping[str, Tensor], *, deltas: bool = False) -> None:
        super().__init__(reference, deltas=deltas)
        self._updates: list[tuple[dict[str, Tensor], int]] = []

    def _add(self, weights: Mapping[str, Tensor], num_samples: int) -> None:
        if num_samples:
            kept = {name: weights[name].detach() for name, ref in self.reference.items() if averages(ref)}
            self._updates.append((kept, num_samples))

    def _result(self) -> dict[str, Tensor]:
        counts = torch.tensor([count for _, count in self._updates], dtype=torch.float64)
        result = {}
        for name, reference in self.reference.items():
            if not averages(reference):
                continue
            stacked = torch.stack([self._difference(name, update[name]) for update, _ in self._updates])
            result[name] = self._weights(name, self.reduce(stacked, counts))
        return result

    @abc.abstractmethod
    def reduce(self, stacked: Tensor, counts: Tensor) -> Tensor:
        """One tensor's aggregate from its updates stacked along dimension 0 and their sample counts."""


class BufferedMean(BufferedAggregator):
    """The same weighted mean as :class:`StreamingMean`, computed from every update kept in memory.

    For comparisons (memory, results); strategies use :class:`StreamingMean` unless told otherwise.
    """

    def reduce(self, stacked: Tensor, counts: Tensor) -> Tensor:
        """``sum(n_i * w_i) / sum(n_i)`` in the wide dtype."""
        shape = (-1,) + (1,) * (stacked.dim() - 1)
        return (stacked * counts.reshape(shape).to(stacked.dtype)).sum(dim=0) / counts.sum()


class CoordinateMedian(BufferedAggregator):
    """The coordinate-wise median of the updates (Yin et al., 2018), unweighted.

    For an even number of updates, the mean of the two middle values (as ``numpy.median``).
    Complex tensors are not ordered: a median of them raises ValueError.
    """

    def reduce(self, stacked: Tensor, counts: Tensor) -> Tensor:
        """The median along dimension 0."""
        if stacked.dtype.is_complex:
            raise ValueError("a coordinate-wise median of complex tensors is undefined")
        ordered = stacked.sort(dim=0).values
        n = ordered.shape[0]
        if n % 2:
            return ordered[n // 2]
        return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


class TrimmedMean(BufferedAggregator):
    """The coordinate-wise trimmed mean (Yin et al., 2018), unweighted.

    In every coordinate the ``int(beta * n)`` smallest and as many largest of the ``n`` values are
    dropped and the rest averaged (as ``scipy.stats.trim_mean(values, beta)``). ValueError when
    nothing would be left. ``0 <= beta < 0.5``.
    """

    def __init__(self, reference: Mapping[str, Tensor], *, beta: float, deltas: bool = False) -> None:
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not 0 <= beta < 0.5:
            raise ValueError(f"the trimmed fraction beta must be in [0, 0.5), got {beta!r}")
        super().__init__(reference, deltas=deltas)
        self.beta = float(beta)

    def reduce(self, stacked: Tensor, counts: Tensor) -> Tensor:
        """The trimmed mean along dimension 0."""
        if stacked.dtype.is_complex:
            raise ValueError("a trimmed mean of complex tensors is undefined")
        n = stacked.shape[0]
        cut = math.floor(self.beta * n)
        if n - 2 * cut < 1:
            raise ValueError(f"trimming {cut} of {n} updates from each end leaves nothing")
        ordered = stacked.sort(dim=0).values
        return ordered[cut : n - cut].mean(dim=0)
