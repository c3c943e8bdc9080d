"""The whole suite against the reference worker: every case passes."""

from __future__ import annotations

from conformance_servers import TOKENS, BackgroundLoop, reference_worker, run_suite

from conformance import Verdict

#: Cases that cannot apply to the reference worker in the conformance profile, and why.
NOT_APPLICABLE = {
    "framing/3.6.3/capability-not-advertised": "it advertises every capability",
    "calls/18.2.9/notify-needs-capability": "it advertises notifications",
    "training/12.2.5/weights-only-refuses-torchscript": "it is not weights-only",
    "training/12.9.3/weights-only-refuses-model-object": "it is not weights-only",
    "limits/12.1.6/model-size-limit": "max_model_bytes equals max_frame_bytes in the profile",
    "auth/18.5.3/anonymous-identity": "this run uses tokens (the anonymous run covers it)",
    "auth/15.2.2/tokens-ignored-without-tokens": "this run uses tokens (the anonymous run covers it)",
}

pytest_plugins = ["conformance_fixtures"]


def test_reference_worker_passes_every_case(conformance_loop: BackgroundLoop) -> None:
    with reference_worker(conformance_loop, tokens=TOKENS) as worker:
        run = run_suite(worker.url, token=TOKENS["alice"], token2=TOKENS["bob"], max_examples=5, seed=11)
    failures = [f"{r.case.id}: {r.detail}" for r in run.results if r.counts_as_failure]
    assert not failures, "\n".join(failures)
    skipped = {r.case.id: r.detail for r in run.results if r.verdict is Verdict.SKIPPED}
    assert set(skipped) <= set(NOT_APPLICABLE), skipped
    assert run.passed >= 150


def test_reference_worker_without_tokens(conformance_loop: BackgroundLoop) -> None:
    with reference_worker(conformance_loop) as worker:
        run = run_suite(worker.url, ["auth", "handshake", "objects/9.1"], max_examples=5, seed=12)
    failures = [f"{r.case.id}: {r.detail}" for r in run.results if r.counts_as_failure]
    assert not failures, "\n".join(failures)
    passed = {r.case.id for r in run.results if r.verdict is Verdict.PASSED}
    assert {"auth/18.5.3/anonymous-identity", "auth/15.2.2/tokens-ignored-without-tokens"} <= passed
