"""``fedproto conformance URL``, ``python -m fedproto_conformance URL``: check a server against the spec."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from .context import Settings
from .registry import all_cases
from .report import ConsoleReport, write_json, write_junit
from .runner import PROFILES, Runner, ServerUnusable, load_expected_failures, probe, select

__all__ = ["build_parser", "main"]

EPILOG = """\
The server must run the conformance profile of docs/protocol.md section 18 (the reference worker:
`fedproto serve --conformance`). Exit status: 0 when nothing failed unexpectedly, 1 when a case failed
(or a case listed in --expected-failures passed), 2 when the suite could not run.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line of the conformance suite."""
    parser = argparse.ArgumentParser(
        prog="fedproto conformance",
        description="Check a fedproto server, by URL, against every rule of the protocol specification.",
        epilog=EPILOG,
    )
    parser.add_argument("url", nargs="?", help="the server's ws:// or wss:// URL")
    parser.add_argument("--token", default="", help="bearer token for the Hello (if the server needs one)")
    parser.add_argument(
        "--token2", default="", help="a token of a second identity, for the identity-scoping cases"
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="all",
        help="core: everything but training; training: only the training cases; all (default)",
    )
    parser.add_argument(
        "--cases",
        action="append",
        default=[],
        metavar="GLOB",
        help="run only cases whose id matches (glob or id prefix; repeatable, comma-separated)",
    )
    parser.add_argument(
        "--expected-failures",
        metavar="FILE",
        help="case ids or globs expected to fail, one per line (# comments); checked both ways",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--junit", metavar="FILE", help="write the results as JUnit XML")
    parser.add_argument(
        "--max-examples", type=int, default=40, metavar="N", help="hypothesis examples per case (default 40)"
    )
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="seed for a reproducible run")
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for each expected message (default 5)",
    )
    parser.add_argument(
        "--shrink-seconds",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="time hypothesis may spend shrinking one failure (default 10)",
    )
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    parser.add_argument("--no-live", action="store_true", help="print one line per case, no live table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    patterns = [p for item in args.cases for p in item.split(",") if p.strip()]
    try:
        cases = select(all_cases(), args.profile, patterns)
    except ValueError as exc:
        parser.error(str(exc))
    if args.list:
        for case in cases:
            console.print(f"{case.id:55} {case.level.value:6} {escape(case.rule)}", soft_wrap=True)
        return 0
    if not args.url:
        parser.error("the server's URL is required")
    if not cases:
        console.print("no case matches the selection")
        return 2
    expected: list[str] = []
    if args.expected_failures:
        try:
            expected = load_expected_failures(args.expected_failures)
        except OSError as exc:
            parser.error(f"cannot read {args.expected_failures}: {exc}")
    settings = Settings(
        url=args.url,
        token=args.token,
        token2=args.token2,
        timeout=args.timeout,
        max_examples=args.max_examples,
        seed=args.seed,
        shrink_seconds=args.shrink_seconds,
    )
    try:
        server = probe(settings)
    except ServerUnusable as exc:
        console.print(f"cannot check {args.url}: {exc}", markup=False)
        return 2
    report = ConsoleReport(cases, console=console, live=not args.no_live and console.is_terminal)
    report.header(args.url, server.welcome)
    runner = Runner(
        settings, cases, expected_failures=expected, on_start=report.started, on_result=report.finished
    )
    with report:
        run = runner.run(server)
    report.summary(run)
    if args.json:
        write_json(run, args.json)
    if args.junit:
        write_junit(run, args.junit)
    return 0 if run.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
