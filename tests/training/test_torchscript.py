"""TorchScript archives: saved and loaded in one place, client bytes refused with a typed error."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from fedproto.errors import InvalidArgumentError
from fedproto.training.torchscript import error_summary, load_torchscript, quiet_torchscript, save_torchscript


def test_save_then_load_gives_the_same_module() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    with quiet_torchscript():
        scripted = torch.jit.script(model)
    loaded = load_torchscript(save_torchscript(scripted, "model"), "model_torchscript")
    x = torch.randn(4, 3)
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("data", [b"", b"not a zip archive", b"PK\x03\x04" + bytes(40)])
def test_bytes_that_are_no_archive_are_the_clients_error(data: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="loss_torchscript is not a loadable") as caught:
        load_torchscript(data, "loss_torchscript")
    assert caught.value.details == {"field": "loss_torchscript"}


def test_torchscript_work_runs_one_thread_at_a_time() -> None:
    entered_twice: list[bool] = []

    def other() -> None:
        with quiet_torchscript():
            entered_twice.append(True)

    with quiet_torchscript():
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=0.2)
        assert entered_twice == []  # the other thread waits for the lock
    thread.join(timeout=5)
    assert entered_twice == [True]


def test_error_summary_is_one_line() -> None:
    assert error_summary(ValueError("first\nsecond")) == "ValueError: first"
    assert error_summary(RuntimeError("")) == "RuntimeError"
    interpreter = RuntimeError("The following operation failed in the TorchScript interpreter.\n  ...\nboom")
    assert error_summary(interpreter) == "RuntimeError: boom"
