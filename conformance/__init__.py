"""The fedproto conformance suite: checks any server, by URL, against docs/protocol.md.

Run it with ``fedproto conformance URL`` or ``python -m conformance URL``; from Python, build
:class:`Settings`, pick cases with :func:`select` over :func:`all_cases`, and run them with
:class:`Runner`.
"""

from conformance.checks import CaseFailure, CaseSkipped
from conformance.context import Context, ServerProfile, Settings
from conformance.registry import GROUPS, Case, Level, all_cases, case
from conformance.runner import (
    PROFILES,
    CaseResult,
    Runner,
    RunResult,
    ServerUnusable,
    Verdict,
    load_expected_failures,
    probe,
    select,
)

__all__ = [
    "GROUPS",
    "PROFILES",
    "Case",
    "CaseFailure",
    "CaseResult",
    "CaseSkipped",
    "Context",
    "Level",
    "RunResult",
    "Runner",
    "ServerProfile",
    "ServerUnusable",
    "Settings",
    "Verdict",
    "all_cases",
    "case",
    "load_expected_failures",
    "probe",
    "select",
]
