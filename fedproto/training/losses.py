"""Built-in losses a train config can name instead of sending a TorchScript loss (``loss_name``).

Each name maps to a ``torch.nn`` loss module with default arguments and mean reduction, called as
``loss(output, target)``. The one exception is ``"kl_div"``, which uses ``reduction="batchmean"``: the
mathematically correct mean KL divergence per sample (``"mean"`` divides by the element count too, and
torch warns about it on every call).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fedproto.errors import InvalidArgumentError

__all__ = ["BUILTIN_LOSSES", "builtin_loss"]

_FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "mse": lambda: nn.MSELoss(reduction="mean"),
    "l1": lambda: nn.L1Loss(reduction="mean"),
    "smooth_l1": lambda: nn.SmoothL1Loss(reduction="mean"),
    "huber": lambda: nn.HuberLoss(reduction="mean"),
    "cross_entropy": lambda: nn.CrossEntropyLoss(reduction="mean"),
    "nll": lambda: nn.NLLLoss(reduction="mean"),
    "bce": lambda: nn.BCELoss(reduction="mean"),
    "bce_with_logits": lambda: nn.BCEWithLogitsLoss(reduction="mean"),
    "kl_div": lambda: nn.KLDivLoss(reduction="batchmean"),
}

#: The names :func:`builtin_loss` knows, in the order the protocol lists them.
BUILTIN_LOSSES: tuple[str, ...] = tuple(_FACTORIES)


def builtin_loss(name: str) -> nn.Module:
    """Return a new loss module for a built-in loss name; InvalidArgumentError for an unknown name."""
    try:
        factory = _FACTORIES[name]
    except (KeyError, TypeError):
        raise InvalidArgumentError(
            f"unknown loss name {name!r}; built-in losses are {', '.join(BUILTIN_LOSSES)}",
            details={"field": "loss_name"},
        ) from None
    return factory()
