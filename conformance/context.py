"""What a case gets to work with: the settings, the server's Welcome, connections and hypothesis.

Each case runs on an event loop of its own that the runner owns. Async cases are run on it directly;
hypothesis-driven cases are plain functions (hypothesis is synchronous) that run each example's
coroutine on that loop with :meth:`Context.run`, so loops are never nested.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, Verbosity, seed, settings
from hypothesis.reporting import with_reporter
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from fedproto_pb.v1 import session_pb2

from .checks import CaseFailure, skip
from .registry import Case
from .spec import SUBPROTOCOL
from .wire import Connection, open_connection

__all__ = ["Context", "ServerProfile", "Settings"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Settings:
    """How the suite runs: the server's URL, its tokens, timeouts and the hypothesis budget."""

    url: str
    token: str = ""
    token2: str = ""
    timeout: float = 5.0
    max_examples: int = 40
    seed: int | None = None
    shrink_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """What the suite learned about the server before the cases ran."""

    welcome: session_pb2.Welcome
    tokens_required: bool

    @property
    def capabilities(self) -> frozenset[str]:
        """The advertised capability strings."""
        return frozenset(self.welcome.capabilities)

    @property
    def limits(self) -> session_pb2.Limits:
        """The advertised limits."""
        return self.welcome.limits


class Context:
    """Everything one case needs; connections it opens are closed when the case ends."""

    def __init__(
        self, settings: Settings, server: ServerProfile, loop: asyncio.AbstractEventLoop, case: Case
    ):
        self.settings = settings
        self.server = server
        self.loop = loop
        self.case = case
        self.report: list[str] = []
        #: When a synchronous (hypothesis) case must stop: ``run`` refuses to start work after it.
        self.deadline = time.monotonic() + case.timeout * max(1.0, settings.max_examples / 10)
        self._connections: list[Connection] = []
        self._ids = itertools.count(1)
        self._tag = os.urandom(3).hex()

    # -- facts about the server -------------------------------------------------------------------

    @property
    def welcome(self) -> session_pb2.Welcome:
        """The Welcome the server sent to the suite's token."""
        return self.server.welcome

    @property
    def limits(self) -> session_pb2.Limits:
        """The limits the server advertises (section 14)."""
        return self.server.welcome.limits

    def has(self, capability: str) -> bool:
        """Whether the server advertises ``capability``."""
        return capability in self.server.capabilities

    def require(self, capability: str) -> None:
        """Skip the case unless the server advertises ``capability``."""
        if not self.has(capability):
            skip(f"the server does not advertise {capability!r}")

    def unique(self, prefix: str = "obj") -> str:
        """An object id no other case (or run) uses."""
        return f"cf-{prefix}-{self._tag}-{next(self._ids)}"

    # -- connections ------------------------------------------------------------------------------

    async def open(
        self, *, subprotocols: tuple[str, ...] | None = (SUBPROTOCOL,), compression: str | None = None
    ) -> Connection:
        """A new WebSocket connection, before any Hello."""
        conn = await open_connection(
            self.settings.url,
            timeout=self.settings.timeout,
            subprotocols=subprotocols,
            compression=compression,
        )
        self._connections.append(conn)
        return conn

    async def connect(
        self, *, token: str | None = None, max_frame_bytes: int = 0, digests: Sequence[str] = ()
    ) -> Connection:
        """A new connection after a successful handshake (with the suite's token by default)."""
        conn = await self.open()
        await conn.handshake(
            token=self.settings.token if token is None else token,
            max_frame_bytes=max_frame_bytes,
            digests=digests,
        )
        return conn

    async def connect_second(self) -> Connection:
        """A connection of the second identity (section 18.5.2)."""
        if not self.settings.token2:
            skip("needs a second token (--token2) of a different identity")
        return await self.connect(token=self.settings.token2)

    async def aclose(self) -> None:
        """Close every connection this case opened."""
        conns, self._connections = self._connections, []
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    # -- bridging hypothesis ----------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one coroutine to completion on the case's loop (from synchronous hypothesis code)."""
        if time.monotonic() > self.deadline:
            coro.close()
            raise CaseFailure(
                "the case ran out of its time budget: the server answers too slowly or stops answering"
            )
        return self.loop.run_until_complete(coro)

    def hypothesis_settings(self, max_examples: int | None = None, **overrides: Any) -> settings:
        """Settings for one hypothesis run: the suite's budget, no database, no deadline."""
        options: dict[str, Any] = {
            "max_examples": max(1, max_examples or self.settings.max_examples),
            "deadline": None,
            "database": None,
            "derandomize": False,
            "print_blob": False,
            "report_multiple_bugs": False,
            "suppress_health_check": list(HealthCheck),
            "phases": (Phase.explicit, Phase.generate, Phase.shrink),
            "verbosity": Verbosity.normal,
        }
        options.update(overrides)
        return settings(**options)

    def hypothesis(
        self, test: Callable[[], None], *, max_examples: int | None = None, **overrides: Any
    ) -> None:
        """Run a ``@given`` test with the suite's settings, seed and shrinking budget."""
        wrapped = self.hypothesis_settings(max_examples, **overrides)(test)
        if self.settings.seed is not None:
            wrapped = seed(self.settings.seed)(wrapped)
        with with_reporter(self._report), _shrink_budget(self.settings.shrink_seconds):
            wrapped()

    def state_machine(
        self, machine: type[RuleBasedStateMachine], *, max_examples: int | None = None, steps: int = 25
    ) -> None:
        """Run a state machine with the suite's settings, seed and shrinking budget."""
        options = self.hypothesis_settings(max_examples, stateful_step_count=steps)
        if self.settings.seed is not None:
            machine = seed(self.settings.seed)(machine)
        with with_reporter(self._report), _shrink_budget(self.settings.shrink_seconds):
            run_state_machine_as_test(machine, settings=options)

    def _report(self, value: object) -> None:
        text = str(value)
        if text.strip():
            self.report.append(text)


@contextlib.contextmanager
def _shrink_budget(seconds: float) -> Iterator[None]:
    """Bound the time hypothesis spends shrinking a failure (it is documented as monkeypatchable)."""
    from hypothesis.internal.conjecture import engine

    before = engine.MAX_SHRINKING_SECONDS
    engine.MAX_SHRINKING_SECONDS = max(1, int(seconds))
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = before
