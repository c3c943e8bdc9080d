"""The suite's machinery: case registry, selection, expected failures, reports, command line, seeds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conformance_servers import BackgroundLoop, run_suite
from faulty_servers import FlippedByte, MapsSorted, PongTruncated

from conformance import GROUPS, Level, Verdict, all_cases, select
from conformance.cli import main

SPEC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

pytest_plugins = ["conformance_fixtures"]


def _spec_text() -> str:
    text = SPEC.read_text(encoding="utf-8").replace("`", "")
    text = re.sub(r"\*\*(\d+(?:\.\d+)*)\*\*", r"\1", text)
    return " ".join(text.split())


def test_case_ids_are_unique_and_cite_existing_sections() -> None:
    spec = SPEC.read_text(encoding="utf-8")
    cases = all_cases()
    assert len({c.id for c in cases}) == len(cases)
    for case in cases:
        assert case.group in GROUPS
        section = case.section
        parts = section.split(".")
        if len(parts) == 3:
            assert f"**{section}**" in spec, f"{case.id} cites rule {section}, which docs/protocol.md lacks"
        elif len(parts) == 2:
            assert f"### {section} " in spec, (
                f"{case.id} cites subsection {section}, which docs/protocol.md lacks"
            )
        else:
            assert f"## {section}. " in spec, (
                f"{case.id} cites section {section}, which docs/protocol.md lacks"
            )


def test_quoted_rules_are_in_the_spec() -> None:
    """A case citing one rule quotes it: its opening words appear in the spec as written."""
    spec = _spec_text()
    missing = []
    for case in all_cases():
        if len(case.section.split(".")) != 3:
            continue  # cases citing a whole section or subsection summarize several rules
        quote = re.split(r" \(| \.\.\.|: |; ", case.rule)[0].rstrip(".")
        words = quote.split()[:8]
        if " ".join(words) not in spec:
            missing.append(f"{case.id}: {' '.join(words)!r}")
    assert not missing, "\n".join(missing)


def test_every_group_has_cases_and_levels_are_valid() -> None:
    cases = all_cases()
    for group in GROUPS:
        assert any(c.group == group for c in cases), group
    assert {c.level for c in cases} <= {Level.MUST, Level.SHOULD}
    assert sum(1 for c in cases if c.level is Level.MUST) > 100


def test_profiles_select_by_training() -> None:
    cases = all_cases()
    core = select(cases, "core")
    training = select(cases, "training")
    assert core and training
    assert all("training" not in c.needs for c in core)
    assert all("training" in c.needs for c in training)
    assert len(select(cases, "all")) == len(cases) == len(core) + len(training)
    assert [c.id for c in select(cases, "all", ["objects/9.4"])] == [
        "objects/9.4.2/delete-missing-not-found",
        "objects/9.4.3/get-after-delete",
        "objects/9.4.4/freed-bytes",
    ]
    assert all(c.id.startswith("framing/3.3.") for c in select(cases, "all", ["framing/3.3.*"]))
    with pytest.raises(ValueError, match="unknown profile"):
        select(cases, "everything")


def test_expected_failures_are_checked_both_ways(
    conformance_loop: BackgroundLoop, reference_url: str
) -> None:
    proxy = PongTruncated(reference_url)
    url = conformance_loop.run(proxy.start())
    try:
        run = run_suite(
            url,
            ["concurrency/6.1.2/pong-payload", "concurrency/5.1.4/id-reuse-after-reply"],
            expected=["concurrency/6.1.2/*", "concurrency/5.1.4/id-reuse-after-reply", "no/1/such-case"],
        )
    finally:
        conformance_loop.run(proxy.stop())
    verdicts = {r.case.id: r.verdict for r in run.results}
    assert verdicts == {
        "concurrency/6.1.2/pong-payload": Verdict.XFAIL,
        "concurrency/5.1.4/id-reuse-after-reply": Verdict.XPASS,
    }
    assert (run.passed, run.failed, run.skipped) == (0, 1, 0)
    assert not run.ok
    assert run.unused_expected == ["no/1/such-case"]


def test_command_line_reports(tmp_path: Path, reference_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    argv = [reference_url, "--cases", "handshake/4.1.3,datasets/18.1", "--seed", "5", "--max-examples", "3"]
    code = main([*argv, "--json", str(report), "--junit", str(junit), "--no-live"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 passed, 0 failed, 0 skipped" in out.splitlines()
    data = json.loads(report.read_text())
    assert data["summary"]["passed"] == 3 and data["summary"]["ok"] is True
    assert {c["id"] for c in data["cases"]} == {
        "handshake/4.1.3/welcome-answers-hello",
        "datasets/18.1.1/fixture-offered",
        "datasets/18.1.2/fixture-shape",
    }
    assert data["cases"][0]["level"] == "MUST" and data["cases"][0]["rule"]
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    assert sorted(s.get("name") for s in root) == ["datasets", "handshake"]
    assert sum(int(s.get("tests", 0)) for s in root) == 3

    listed = tmp_path / "expected.txt"
    listed.write_text("# passes now, so listing it fails the run\nhandshake/4.1.3/*\n")
    code = main(
        [reference_url, "--cases", "handshake/4.1.3", "--expected-failures", str(listed), "--no-live"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "0 passed, 1 failed, 0 skipped" in out.splitlines()
    assert "1 unexpected passes" in out


def test_command_line_failure_output(
    conformance_loop: BackgroundLoop, reference_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = FlippedByte(reference_url)
    url = conformance_loop.run(proxy.start())
    try:
        code = main([url, "--cases", "objects/9.3.3", "--seed", "2", "--max-examples", "10", "--no-live"])
    finally:
        conformance_loop.run(proxy.stop())
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL objects/9.3.3/get-returns-stored-bytes [MUST] §9.3.3" in out
    assert "rule:" in out and "server: get_object returned other bytes" in out
    assert "example:" in out and "roundtrip(" in out
    assert "0 passed, 1 failed, 0 skipped" in out.splitlines()


def test_seeded_runs_find_the_same_shrunk_example(
    conformance_loop: BackgroundLoop, reference_url: str
) -> None:
    proxy = MapsSorted(reference_url)
    url = conformance_loop.run(proxy.start())
    try:
        first = run_suite(url, ["calls/18.2.2"], seed=99, max_examples=30)
        second = run_suite(url, ["calls/18.2.2"], seed=99, max_examples=30)
    finally:
        conformance_loop.run(proxy.stop())
    result = first.results[0]
    assert result.verdict is Verdict.FAILED
    assert "check_echo(" in result.example and "kwargs=" in result.example
    assert "in this order" in result.detail
    assert result.example == second.results[0].example


def test_unreachable_server_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ws://127.0.0.1:9", "--timeout", "2"]) == 2
    assert "cannot check" in capsys.readouterr().out


def test_list_and_python_dash_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "--list", "--profile", "core"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    ids = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    assert "framing/3.2.1/text-frame-closes-1003" in ids
    assert not any(i.startswith("training/") for i in ids)


def test_every_module_declares_all() -> None:
    import importlib
    import pkgutil

    import conformance

    names = ["conformance"] + [
        info.name
        for info in pkgutil.walk_packages(conformance.__path__, "conformance.")
        if not info.name.endswith("__main__")
    ]
    for name in names:
        module = importlib.import_module(name)
        assert hasattr(module, "__all__"), f"{name} has no __all__"
        for symbol in module.__all__:
            assert hasattr(module, symbol), f"{name}.__all__ names missing {symbol}"
