"""Federated averaging in one call: combine the weights several clients trained into one set.

:func:`average_weights` computes FedAvg's aggregate (McMahan et al., 2017) from updates held in a list:
a mean of each tensor weighted by how many samples the client holds (``FitReply.dataset_size``).
:class:`~fedproto.federated.FedAvg` computes the same mean update by update instead
(:class:`~fedproto.federated.aggregation.StreamingMean`), without holding them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["average_weights"]


def _averages(tensor: Tensor) -> bool:
    return tensor.dtype.is_floating_point or tensor.dtype.is_complex


def average_weights(updates: Sequence[tuple[Mapping[str, Tensor], int]]) -> dict[str, Tensor]:
    """Average state dicts weighted by sample counts: ``sum(n_i * w_i) / sum(n_i)`` per tensor.

    ``updates`` holds one ``(weights, sample_count)`` pair per worker; every ``weights`` must have the
    same names, shapes and dtypes. Floating-point and complex tensors are averaged in float64 (complex128)
    and cast back to their dtype. Other tensors (integers and bools, such as BatchNorm's
    ``num_batches_tracked``) cannot be averaged meaningfully: they are copied from the update with the
    most samples (the first of those on a tie). Updates with 0 samples contribute nothing.
    The result follows the first update's name order and shares no memory with the inputs.

    Raises ``ValueError`` for no updates, a negative or non-integer count, a total of 0 samples, or
    weights whose names, shapes or dtypes differ.
    """
    if not updates:
        raise ValueError("cannot average no updates")
    for position, (weights, count) in enumerate(updates):
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"update {position} has sample count {count!r}; expected an integer >= 0")
        if not isinstance(weights, Mapping):
            raise ValueError(f"update {position} has weights of type {type(weights).__name__}, not a mapping")
    total = sum(count for _, count in updates)
    if total == 0:
        raise ValueError("cannot average updates with 0 samples in total")
    first = updates[0][0]
    names = list(first)
    for position, (weights, _) in enumerate(updates[1:], start=1):
        if set(weights) != set(names):
            extra = sorted(set(weights) - set(names))
            missing = sorted(set(names) - set(weights))
            raise ValueError(
                f"update {position} has other names than update 0: extra {extra}, missing {missing}"
            )
        for name in names:
            reference, tensor = first[name], weights[name]
            if tensor.shape != reference.shape or tensor.dtype != reference.dtype:
                raise ValueError(
                    f"update {position} has {name!r} as {tuple(tensor.shape)} {tensor.dtype}, update 0 as "
                    f"{tuple(reference.shape)} {reference.dtype}"
                )
    largest = max(range(len(updates)), key=lambda position: updates[position][1])
    averaged: dict[str, Tensor] = {}
    for name in names:
        reference = first[name]
        if not _averages(reference):
            averaged[name] = updates[largest][0][name].detach().clone()
            continue
        wide = torch.complex128 if reference.dtype.is_complex else torch.float64
        accumulator = torch.zeros(reference.shape, dtype=wide)
        for weights, count in updates:
            if count:
                accumulator += weights[name].detach().to(device="cpu", dtype=wide) * count
        averaged[name] = (accumulator / total).to(reference.dtype)
    return averaged
