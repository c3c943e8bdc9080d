"""The suite has teeth: every deliberately faulty server fails the case that names the rule it breaks."""

from __future__ import annotations

import pytest
from conformance_servers import TOKENS, BackgroundLoop, run_suite
from faulty_servers import FAULTS, Proxy

from conformance import Verdict

pytest_plugins = ["conformance_fixtures"]


def _run_behind(conformance_loop: BackgroundLoop, proxy: Proxy, patterns: list[str], tokens: bool):
    url = conformance_loop.run(proxy.start())
    try:
        credentials = {"token": TOKENS["alice"], "token2": TOKENS["bob"]} if tokens else {}
        return run_suite(url, patterns, **credentials)
    finally:
        conformance_loop.run(proxy.stop())


def test_there_are_enough_faults() -> None:
    assert len(FAULTS) >= 15
    assert len({f.name for f in FAULTS}) == len(FAULTS)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_fault_is_caught_by_its_case(
    fault: type[Proxy], conformance_loop: BackgroundLoop, reference_url: str, reference_url_tokens: str
) -> None:
    proxy = fault(reference_url_tokens if fault.tokens else reference_url)
    run = _run_behind(conformance_loop, proxy, [fault.catches], fault.tokens)
    results = {r.case.id: r for r in run.results}
    assert fault.catches in results, f"no case {fault.catches}"
    result = results[fault.catches]
    assert result.verdict is Verdict.FAILED, (
        f"{fault.name} ({fault.__doc__}) was not caught by {fault.catches}: {result.verdict.value} "
        f"{result.detail}"
    )
    assert result.detail
    assert not run.ok


@pytest.mark.parametrize("tokens", [False, True], ids=["anonymous", "tokens"])
def test_a_correct_proxy_passes_the_same_cases(
    tokens: bool, conformance_loop: BackgroundLoop, reference_url: str, reference_url_tokens: str
) -> None:
    """The proxy itself is transparent: without a fault every catching case passes."""
    patterns = sorted({f.catches for f in FAULTS if f.tokens == tokens})
    run = _run_behind(
        conformance_loop, Proxy(reference_url_tokens if tokens else reference_url), patterns, tokens
    )
    failures = [f"{r.case.id}: {r.detail}" for r in run.results if r.verdict is not Verdict.PASSED]
    assert not failures
