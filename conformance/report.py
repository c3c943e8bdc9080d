"""Reports: a live console table of sections and verdicts, JSON, and JUnit XML."""

from __future__ import annotations

import json
import platform
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from google.protobuf.json_format import MessageToDict
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .registry import GROUPS, Case
from .runner import CaseResult, RunResult, Verdict

__all__ = ["ConsoleReport", "to_json", "write_json", "write_junit"]

_STYLE = {
    Verdict.PASSED: "green",
    Verdict.FAILED: "bold red",
    Verdict.SKIPPED: "yellow",
    Verdict.XFAIL: "magenta",
    Verdict.XPASS: "bold red",
}
_MARK = {
    Verdict.PASSED: "PASS",
    Verdict.FAILED: "FAIL",
    Verdict.SKIPPED: "SKIP",
    Verdict.XFAIL: "XFAIL",
    Verdict.XPASS: "XPASS",
}


class ConsoleReport:
    """A live table (one row per group) while the suite runs; failures are printed as they happen."""

    def __init__(self, cases: Sequence[Case], *, console: Console | None = None, live: bool = True):
        self.console = console or Console(highlight=False)
        self.cases = list(cases)
        self.totals = Counter(c.group for c in cases)
        self.counts: dict[str, Counter[Verdict]] = {g: Counter() for g in GROUPS}
        self.current: Case | None = None
        self._live: Live | None = (
            Live(console=self.console, refresh_per_second=8, get_renderable=self._render) if live else None
        )

    def __enter__(self) -> ConsoleReport:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.current = None
        if self._live is not None:
            self._live.stop()

    def header(self, url: str, welcome: Any) -> None:
        """Print what server is under test."""
        caps = ", ".join(welcome.capabilities) or "none"
        name = f"{welcome.server_name or '?'} (id {welcome.server_id or '?'})"
        self.console.print(Text(f"fedproto conformance: {url} — {name}"), soft_wrap=True)
        self.console.print(Text(f"identity {welcome.identity!r}; capabilities: {caps}"), soft_wrap=True)

    def started(self, case: Case) -> None:
        """A case starts."""
        self.current = case

    def finished(self, result: CaseResult) -> None:
        """A case has its verdict; failures are printed in full."""
        self.counts[result.case.group][result.verdict] += 1
        if result.verdict in (Verdict.FAILED, Verdict.XPASS):
            self.console.print(failure_text(result), soft_wrap=True)
        elif self._live is None:
            line = Text(f"{_MARK[result.verdict]:5} ", style=_STYLE[result.verdict])
            line.append(result.case.id)
            if result.verdict is not Verdict.PASSED and result.detail:
                line.append(f"  ({result.detail})", style="dim")
            self.console.print(line, soft_wrap=True)

    def _render(self) -> Group:
        table = Table(title=None, expand=False, show_edge=False)
        table.add_column("group", no_wrap=True, min_width=13)
        table.add_column("cases", justify="right")
        for verdict in Verdict:
            table.add_column(verdict.value, justify="right", style=_STYLE[verdict])
        for group in GROUPS:
            if not self.totals.get(group):
                continue
            counts = self.counts[group]
            done = sum(counts.values())
            table.add_row(
                group,
                f"{done}/{self.totals[group]}",
                *(str(counts[v]) if counts[v] else "" for v in Verdict),
            )
        status = Text(f"running {self.current.id}" if self.current else "", style="dim")
        return Group(table, status)

    def summary(self, run: RunResult) -> None:
        """The final table and the summary lines (the first is exactly ``N passed, N failed, N skipped``)."""
        if self._live is None:
            self.console.print(self._render())
        if run.unused_expected:
            self.console.print(
                Text("expected-failure entries matching no selected case: " + ", ".join(run.unused_expected))
            )
        self.console.print(Text(run.summary_line()), soft_wrap=True)
        self.console.print(Text(run.extra_line()), soft_wrap=True)


def failure_text(result: CaseResult) -> Text:
    """A failed case in full: id, level, rule, what the server did, and the shrunk example."""
    case = result.case
    text = Text()
    text.append(f"{_MARK[result.verdict]} ", style=_STYLE[result.verdict])
    text.append(f"{case.id} [{case.level.value}] §{case.section}\n", style="bold")
    text.append(f"  rule:   {case.rule}\n")
    text.append(f"  server: {result.detail}\n")
    if result.example:
        text.append("  example:\n", style="dim")
        for line in result.example.splitlines():
            text.append(f"    {line}\n", style="dim")
    return text


def to_json(run: RunResult) -> dict[str, Any]:
    """The run as a JSON-serializable dict."""
    server: dict[str, Any] | None = None
    if run.server is not None:
        server = MessageToDict(run.server.welcome, preserving_proto_field_name=True)
        server["tokens_required"] = run.server.tokens_required
    return {
        "suite": "fedproto-conformance",
        "protocol_version": 1,
        "url": run.settings.url,
        "settings": {
            "max_examples": run.settings.max_examples,
            "seed": run.settings.seed,
            "timeout": run.settings.timeout,
            "second_identity": bool(run.settings.token2),
        },
        "server": server,
        "summary": {
            "passed": run.passed,
            "failed": run.failed,
            "skipped": run.skipped,
            "expected_failures": run.count(Verdict.XFAIL),
            "unexpected_passes": run.count(Verdict.XPASS),
            "seconds": round(run.seconds, 3),
            "ok": run.ok,
        },
        "unused_expected_failures": run.unused_expected,
        "cases": [
            {
                "id": r.case.id,
                "group": r.case.group,
                "section": r.case.section,
                "level": r.case.level.value,
                "rule": r.case.rule,
                "verdict": r.verdict.value,
                "detail": r.detail,
                "example": r.example,
                "seconds": round(r.seconds, 3),
            }
            for r in run.results
        ],
    }


def write_json(run: RunResult, path: str | Path) -> None:
    """Write :func:`to_json` to ``path``."""
    Path(path).write_text(json.dumps(to_json(run), indent=2) + "\n", encoding="utf-8")


def write_junit(run: RunResult, path: str | Path) -> None:
    """Write JUnit XML: one testsuite per group, one testcase per case."""
    root = ET.Element("testsuites", name="fedproto-conformance", time=f"{run.seconds:.3f}")
    for group in GROUPS:
        results = [r for r in run.results if r.case.group == group]
        if not results:
            continue
        suite = ET.SubElement(
            root,
            "testsuite",
            name=group,
            tests=str(len(results)),
            failures=str(sum(1 for r in results if r.counts_as_failure)),
            errors="0",
            skipped=str(sum(1 for r in results if r.verdict in (Verdict.SKIPPED, Verdict.XFAIL))),
            time=f"{sum(r.seconds for r in results):.3f}",
            hostname=platform.node() or "localhost",
        )
        for r in results:
            element = ET.SubElement(
                suite,
                "testcase",
                classname=f"conformance.{group}",
                name=r.case.id,
                time=f"{r.seconds:.3f}",
            )
            props = ET.SubElement(element, "properties")
            ET.SubElement(props, "property", name="level", value=r.case.level.value)
            ET.SubElement(props, "property", name="section", value=r.case.section)
            ET.SubElement(props, "property", name="rule", value=r.case.rule)
            if r.counts_as_failure:
                failure = ET.SubElement(element, "failure", message=r.detail, type=r.verdict.value)
                failure.text = "\n".join(filter(None, [f"rule: {r.case.rule}", r.detail, r.example]))
            elif r.verdict is Verdict.SKIPPED:
                ET.SubElement(element, "skipped", message=r.detail)
            elif r.verdict is Verdict.XFAIL:
                ET.SubElement(element, "skipped", message=f"expected failure: {r.detail}")
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
