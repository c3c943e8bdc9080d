"""The network fuzzer (stress/netfuzz.py), short: 3,000 frames (make stress: 1,000,000)."""

from __future__ import annotations

from stress.netfuzz import CLASSES, run_fuzz
from stress.worker_process import WorkerProcess, token_of


async def test_fuzzed_frames_never_crash_hang_or_break_the_worker() -> None:
    with WorkerProcess(identities=1) as worker:
        result = await run_fuzz(worker, 3000, connections=4, per_connection=300, batch=50, token=token_of(0))
        assert worker.alive()
        # the time budget bounds a run: past it, no connection opens and the run says it fell short
        late = await run_fuzz(worker, 3000, connections=2, token=token_of(0), max_seconds=0.0)
    assert late.frames == 0 and late.failures == ["out of time: 0 of 3000 frames sent in 0 s"]
    assert not result.crashed
    assert result.hangs == 0
    assert not result.failures, result.failures[:5]
    assert result.healthy_at_end
    # connections that a fuzzed goodbye or pre-handshake garbage ended early give their frames back
    assert result.frames == 3000
    assert result.connections > 3000 // 300
    assert set(result.sent) >= set(CLASSES) - {"text"}
    assert sum(result.errors["random"].values()) > 0  # garbage is answered (MALFORMED), not ignored
