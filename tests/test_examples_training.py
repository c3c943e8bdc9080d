"""The XOR training loop ported from the seed (examples/xor_seed.py) runs end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_xor_seed_trains_and_prints_its_losses() -> None:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "xor_seed.py"), "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, stderr[-2000:]
    losses = [float(x) for x in re.findall(r"Iteration \d+: alice's loss: ([0-9.]+)", stdout)]
    assert len(losses) == 10
    assert losses[-1] < losses[0]
    final = re.search(r"Final loss: ([0-9.]+)", stdout)
    assert final is not None, stdout
    assert "Prediction: [" in stdout
