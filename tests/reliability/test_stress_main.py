"""``python -m stress``'s verdict: every fuzz run, the Node worker's included, must meet every check."""

from __future__ import annotations

import pytest

from stress.__main__ import fuzz_passed
from stress.netfuzz import FuzzResult


def test_a_clean_run_with_a_healthy_worker_passes() -> None:
    assert fuzz_passed(FuzzResult(frames=10, healthy_at_end=True))


@pytest.mark.parametrize(
    "result",
    [
        FuzzResult(crashed=True, healthy_at_end=True),
        FuzzResult(hangs=1, healthy_at_end=True),
        FuzzResult(failures=["close code 1011 after bit-flip"], healthy_at_end=True),
        FuzzResult(healthy_at_end=False),
    ],
    ids=["crash", "hang", "failure", "unhealthy"],
)
def test_any_failed_verdict_fails_the_run(result: FuzzResult) -> None:
    assert not fuzz_passed(result)
