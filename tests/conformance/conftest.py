from __future__ import annotations

from collections.abc import Iterator

import pytest
from conformance_servers import TOKENS, BackgroundLoop, reference_worker


@pytest.fixture(scope="session")
def background() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture(scope="module")
def upstream(background: BackgroundLoop) -> Iterator[str]:
    """An anonymous reference worker that faulty proxies sit in front of."""
    with reference_worker(background) as worker:
        yield worker.url


@pytest.fixture(scope="module")
def upstream_tokens(background: BackgroundLoop) -> Iterator[str]:
    """A reference worker that requires the tokens of TOKENS."""
    with reference_worker(background, tokens=TOKENS) as worker:
        yield worker.url
