"""Pytest fixtures of the conformance tests, loaded by the test modules as a plugin (pytest_plugins).

This directory has no conftest.py: the conftest module of tests/ must stay importable by that name for
the other test packages.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conformance_servers import TOKENS, BackgroundLoop, reference_worker


@pytest.fixture(scope="module")
def conformance_loop() -> Iterator[BackgroundLoop]:
    """A loop in a conformance_loop thread for the servers of one test module."""
    loop = BackgroundLoop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture(scope="module")
def reference_url(conformance_loop: BackgroundLoop) -> Iterator[str]:
    """An anonymous reference worker that faulty proxies sit in front of."""
    with reference_worker(conformance_loop) as worker:
        yield worker.url


@pytest.fixture(scope="module")
def reference_url_tokens(conformance_loop: BackgroundLoop) -> Iterator[str]:
    """A reference worker that requires the tokens of TOKENS."""
    with reference_worker(conformance_loop, tokens=TOKENS) as worker:
        yield worker.url
