"""Selecting cases, running them one by one, and turning outcomes into verdicts.

The runner first learns about the server (one handshake with the suite's token, one without a token),
then runs each selected case on an event loop of its own with a time limit. Expected failures are
checked both ways: a listed case that fails is an expected failure, a listed case that passes is an
unexpected pass and fails the run, like an unexpected failure does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .checks import CaseFailure, CaseSkipped
from .context import Context, ServerProfile, Settings
from .registry import Case
from .wire import open_connection

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup
from fedproto_pb.v1 import errors_pb2

__all__ = [
    "PROFILES",
    "CaseResult",
    "RunResult",
    "Runner",
    "ServerUnusable",
    "Verdict",
    "load_expected_failures",
    "probe",
    "select",
]

#: ``--profile`` values: ``core`` runs without training, ``training`` only the training cases.
PROFILES = ("core", "training", "all")


class Verdict(str, Enum):
    """The outcome of one case."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    XFAIL = "expected failure"
    XPASS = "unexpected pass"


@dataclass(slots=True)
class CaseResult:
    """One case's verdict, what the server did (``detail``) and the falsifying example, if any."""

    case: Case
    verdict: Verdict
    detail: str = ""
    seconds: float = 0.0
    example: str = ""

    @property
    def counts_as_failure(self) -> bool:
        """Whether this result fails the run."""
        return self.verdict in (Verdict.FAILED, Verdict.XPASS)


@dataclass(slots=True)
class RunResult:
    """Everything one run produced."""

    settings: Settings
    server: ServerProfile | None
    results: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0
    unused_expected: list[str] = field(default_factory=list)

    def count(self, verdict: Verdict) -> int:
        """How many cases got ``verdict``."""
        return sum(1 for r in self.results if r.verdict is verdict)

    @property
    def passed(self) -> int:
        """Cases that passed (and were not listed as expected failures)."""
        return self.count(Verdict.PASSED)

    @property
    def failed(self) -> int:
        """Cases that fail the run: unexpected failures and unexpected passes."""
        return self.count(Verdict.FAILED) + self.count(Verdict.XPASS)

    @property
    def skipped(self) -> int:
        """Cases that did not apply to the server."""
        return self.count(Verdict.SKIPPED)

    @property
    def ok(self) -> bool:
        """True when nothing failed unexpectedly."""
        return self.failed == 0

    def summary_line(self) -> str:
        """``N passed, N failed, N skipped``."""
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"

    def extra_line(self) -> str:
        """The other counts: expected failures and unexpected passes (which count as failed)."""
        return (
            f"{self.count(Verdict.XFAIL)} expected failures, "
            f"{self.count(Verdict.XPASS)} unexpected passes (counted as failed), "
            f"{len(self.results)} cases in {self.seconds:.1f} s"
        )


class ServerUnusable(Exception):
    """The suite cannot run at all: no connection, or no successful handshake."""


def select(cases: Iterable[Case], profile: str = "all", patterns: Sequence[str] = ()) -> list[Case]:
    """The cases of ``profile`` whose ids match any of ``patterns`` (globs, or id prefixes)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    chosen = [c for c in cases if profile == "all" or c.profile == profile]
    if patterns:
        chosen = [c for c in chosen if any(_matches(c.id, p) for p in patterns)]
    return chosen


def _matches(case_id: str, pattern: str) -> bool:
    pattern = pattern.strip()
    if not pattern:
        return False
    if fnmatch.fnmatchcase(case_id, pattern):
        return True
    prefix = pattern.rstrip("/")
    return case_id.startswith((prefix + "/", prefix + "."))


def load_expected_failures(path: str | Path) -> list[str]:
    """Case ids or globs, one per line; ``#`` starts a comment."""
    patterns = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            patterns.append(line)
    return patterns


async def _probe(settings: Settings) -> ServerProfile:
    try:
        conn = await open_connection(settings.url, timeout=settings.timeout)
    except CaseFailure as exc:
        raise ServerUnusable(str(exc)) from None
    try:
        reply = await conn.hello(token=settings.token)
        if reply.kind != "welcome":
            raise ServerUnusable(
                f"the server did not welcome the suite: {reply.describe()}"
                + ("" if settings.token else " (does it need a token? pass --token)")
            )
        welcome = reply.envelope.welcome
    except CaseFailure as exc:
        raise ServerUnusable(f"the handshake failed: {exc}") from None
    finally:
        await conn.close()
    tokens_required = False
    if settings.token:
        conn = await open_connection(settings.url, timeout=settings.timeout)
        try:
            reply = await conn.hello(token="")
            tokens_required = reply.kind == "error" and reply.envelope.error.code == (
                errors_pb2.ERROR_CODE_UNAUTHENTICATED
            )
        except CaseFailure:
            tokens_required = False
        finally:
            await conn.close()
    return ServerProfile(welcome=welcome, tokens_required=tokens_required)


def probe(settings: Settings) -> ServerProfile:
    """Learn the server's Welcome and whether it requires tokens; raise ServerUnusable if it cannot."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_probe(settings))
    finally:
        loop.close()


class Runner:
    """Runs cases against one server and reports each result as it is known."""

    def __init__(
        self,
        settings: Settings,
        cases: Sequence[Case],
        *,
        expected_failures: Sequence[str] = (),
        on_start: Callable[[Case], None] | None = None,
        on_result: Callable[[CaseResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.cases = list(cases)
        self.expected = list(expected_failures)
        self.on_start = on_start
        self.on_result = on_result

    def run(self, server: ServerProfile | None = None) -> RunResult:
        """Run every case; ``server`` is probed first when not given."""
        started = time.perf_counter()
        server = server or probe(self.settings)
        result = RunResult(self.settings, server)
        used: set[str] = set()
        for case in self.cases:
            if self.on_start is not None:
                self.on_start(case)
            outcome = self.run_case(case, server)
            listed = [p for p in self.expected if _matches(case.id, p)]
            used.update(listed)
            if listed and outcome.verdict is Verdict.FAILED:
                outcome.verdict = Verdict.XFAIL
            elif listed and outcome.verdict is Verdict.PASSED:
                outcome.verdict = Verdict.XPASS
                outcome.detail = "listed as an expected failure, but the case passed: remove it from the list"
            result.results.append(outcome)
            if self.on_result is not None:
                self.on_result(outcome)
        result.unused_expected = [p for p in self.expected if p not in used]
        result.seconds = time.perf_counter() - started
        return result

    def run_case(self, case: Case, server: ServerProfile) -> CaseResult:
        """Run one case on a fresh event loop and return its (not yet expectation-adjusted) result."""
        reason = self._inapplicable(case, server)
        if reason:
            return CaseResult(case, Verdict.SKIPPED, reason)
        loop = asyncio.new_event_loop()
        ctx = Context(self.settings, server, loop, case)
        started = time.perf_counter()
        verdict, detail = Verdict.PASSED, ""
        try:
            if case.is_async:
                loop.run_until_complete(asyncio.wait_for(case.func(ctx), case.timeout))
            else:
                case.func(ctx)
        except CaseSkipped as exc:
            verdict, detail = Verdict.SKIPPED, str(exc)
        except CaseFailure as exc:
            verdict, detail = Verdict.FAILED, str(exc)
            ctx.report.extend(n for n in getattr(exc, "__notes__", ()) if n not in ctx.report)
        except TimeoutError:
            verdict, detail = Verdict.FAILED, f"the case did not finish within {case.timeout:g} s"
        except BaseExceptionGroup as group:  # hypothesis' FlakyFailure and friends
            verdict, detail = Verdict.FAILED, _from_group(group)
            ctx.report.extend(_notes(group))
        except Exception as exc:
            verdict = Verdict.FAILED
            detail = f"the check could not complete: {type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.wait_for(ctx.aclose(), 5.0))
            _close_loop(loop)
        example = "\n".join(ctx.report) if verdict is Verdict.FAILED else ""
        return CaseResult(case, verdict, detail, time.perf_counter() - started, example)

    def _inapplicable(self, case: Case, server: ServerProfile) -> str:
        missing = [n for n in case.needs if n not in server.capabilities]
        if missing:
            return f"the server does not advertise {', '.join(repr(m) for m in missing)}"
        if case.tokens and not server.tokens_required:
            return "needs a server that requires tokens (run with --token against one)"
        if case.tokens >= 2 and not self.settings.token2:
            return "needs a second token of a different identity (--token2)"
        if case.anonymous and server.tokens_required:
            return "applies to servers configured without tokens"
        return ""


def _from_group(group: BaseExceptionGroup) -> str:
    for exc in group.exceptions:
        if isinstance(exc, CaseFailure):
            return f"{exc} (the failure did not reproduce every time)"
        if isinstance(exc, BaseExceptionGroup):
            return _from_group(exc)
    first = group.exceptions[0] if group.exceptions else group
    return f"the check could not complete: {type(first).__name__}: {first}"


def _notes(exc: BaseException) -> list[str]:
    notes = list(getattr(exc, "__notes__", ()))
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            notes.extend(_notes(inner))
    return notes


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
