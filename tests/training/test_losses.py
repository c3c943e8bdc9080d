from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from fedproto.errors import InvalidArgumentError
from fedproto.training.losses import BUILTIN_LOSSES, builtin_loss

# (output, target) pairs each built-in loss accepts.
_LOGITS = torch.tensor([[1.0, -1.0, 0.5], [0.2, 0.3, -2.0]])
_CLASSES = torch.tensor([0, 2])
_VALUES = torch.tensor([[0.5, 1.0], [2.0, -1.0]])
_OTHER_VALUES = torch.tensor([[0.0, 1.5], [2.5, 3.0]])
_PROBABILITIES = torch.tensor([[0.2, 0.9], [0.6, 0.4]])
_LABELS = torch.tensor([[0.0, 1.0], [1.0, 0.0]])

_INPUTS: dict[str, tuple[Tensor, Tensor]] = {
    "mse": (_VALUES, _OTHER_VALUES),
    "l1": (_VALUES, _OTHER_VALUES),
    "smooth_l1": (_VALUES, _OTHER_VALUES),
    "huber": (_VALUES, _OTHER_VALUES),
    "cross_entropy": (_LOGITS, _CLASSES),
    "nll": (torch.log_softmax(_LOGITS, dim=1), _CLASSES),
    "bce": (_PROBABILITIES, _LABELS),
    "bce_with_logits": (_VALUES, _LABELS),
    "kl_div": (torch.log_softmax(_LOGITS, dim=1), torch.softmax(_LOGITS.flip(1), dim=1)),
}

_REFERENCES = {
    "mse": lambda o, t: ((o - t) ** 2).mean(),
    "l1": lambda o, t: (o - t).abs().mean(),
    "smooth_l1": lambda o, t: nn.functional.smooth_l1_loss(o, t, reduction="sum") / o.numel(),
    "huber": lambda o, t: nn.functional.huber_loss(o, t, reduction="sum") / o.numel(),
    "cross_entropy": lambda o, t: -torch.log_softmax(o, dim=1)[torch.arange(len(t)), t].mean(),
    "nll": lambda o, t: -o[torch.arange(len(t)), t].mean(),
    "bce": lambda o, t: -(t * o.log() + (1 - t) * (1 - o).log()).mean(),
    "bce_with_logits": lambda o, t: nn.functional.binary_cross_entropy(torch.sigmoid(o), t),
    "kl_div": lambda o, t: (t * (t.log() - o)).sum() / len(o),
}


def test_the_protocol_names_are_all_there() -> None:
    assert set(BUILTIN_LOSSES) == {
        "mse", "l1", "smooth_l1", "huber", "cross_entropy", "nll", "bce", "bce_with_logits", "kl_div",
    }  # fmt: skip
    assert set(_INPUTS) == set(BUILTIN_LOSSES)


@pytest.mark.parametrize("name", BUILTIN_LOSSES)
def test_builtin_loss_averages_per_sample(name: str) -> None:
    loss = builtin_loss(name)
    assert isinstance(loss, nn.Module)
    output, target = _INPUTS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = loss(output, target)
    assert value.shape == ()
    torch.testing.assert_close(value, _REFERENCES[name](output, target))


def test_builtin_loss_returns_a_new_module_each_time() -> None:
    assert builtin_loss("mse") is not builtin_loss("mse")


@pytest.mark.parametrize("name", ["MSE", "mean_squared", "", "cross-entropy"])
def test_unknown_names_list_the_known_ones(name: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        builtin_loss(name)
    for known in BUILTIN_LOSSES:
        assert known in info.value.message
    assert info.value.details == {"field": "loss_name"}
