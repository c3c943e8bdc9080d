"""The fedproto conformance suite: checks any server, by URL, against docs/protocol.md.

Run it with ``fedproto conformance URL``, or ``python -m fedproto_conformance URL`` where fedproto is
installed (``pip install 'fedproto[conformance]'``) and ``python -m conformance URL`` in the repository;
from Python, build :class:`Settings`, pick cases with :func:`select` over :func:`all_cases`, and run them
with :class:`Runner`.

The package is the folder ``conformance/`` of the repository and is installed as ``fedproto_conformance``
(a name no other distribution takes); its modules import each other relatively, so both names work.
"""

from .checks import CaseFailure, CaseSkipped
from .context import Context, ServerProfile, Settings
from .registry import GROUPS, Case, Level, all_cases, case
from .runner import (
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
