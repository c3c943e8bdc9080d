"""The seed's scenario in examples/ runs end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_seed_scenario_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "seed_scenario.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "colony id: 42" in result.stdout
    assert "round trip equal: True" in result.stdout
    assert "notification: colony" in result.stdout
