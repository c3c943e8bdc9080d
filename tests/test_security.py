"""Security properties that docs/security.md promises, each held by a test.

- No code path of the package can unpickle: ``pickle.load(s)``, ``torch.load`` without
  ``weights_only=True``, ``eval`` and ``exec`` appear nowhere in ``fedproto/`` (read with ``ast``, so
  neither comments nor strings count and no aliasing trick hides a call).
- Tokens never reach the logs, whatever the outcome of the handshake.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

import fedproto
from tests.conftest import TOKENS, client_of

PACKAGE = Path(__file__).resolve().parent.parent / "fedproto"


def _forbidden_calls(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names]
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if any(n.split(".")[0] in {"pickle", "cPickle", "dill", "marshal", "shelve"} for n in names) or (
                module and module.split(".")[0] in {"pickle", "dill", "marshal", "shelve"}
            ):
                found.append((node.lineno, "imports a pickle-like module"))
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        if name in {"eval", "exec"} and (isinstance(func, ast.Name) or owner == "builtins"):
            found.append((node.lineno, f"{name}()"))
        if name in {"load", "loads"} and owner in {"pickle", "marshal", "dill"}:
            found.append((node.lineno, f"{owner}.{name}()"))
        if name == "load" and owner == "torch":
            safe = any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                found.append((node.lineno, "torch.load() without weights_only=True"))
    return found


def test_no_unpickling_anywhere_in_the_package() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, what in _forbidden_calls(ast.parse(path.read_text(), str(path))):
            problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {what}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "import pickle\npickle.loads(b'')",
        "from pickle import loads",
        "import torch\ntorch.load('m.pt')",
        "import torch\ntorch.load('m.pt', weights_only=False)",
        "eval('1')",
        "exec('x = 1')",
        "import builtins\nbuiltins.eval('1')",
    ],
)
def test_the_scan_catches_each_form(source: str) -> None:
    assert _forbidden_calls(ast.parse(source))


def test_the_scan_allows_safe_loading() -> None:
    assert not _forbidden_calls(ast.parse("import torch\ntorch.load('m.pt', weights_only=True)"))


async def test_tokens_never_reach_the_logs(worker: fedproto.Worker, caplog: pytest.LogCaptureFixture) -> None:
    """Section 15.1.5: good tokens, wrong tokens and near misses leave no trace of themselves in the logs."""
    # fedproto's own loggers at their most verbose; websockets at INFO, as its DEBUG level prints whole
    # frames (the Hello's token included), which docs/security.md says never to enable on a worker
    caplog.set_level(logging.DEBUG, logger="fedproto")
    caplog.set_level(logging.INFO, logger="websockets")
    wrong = "wrong-token-XYZZY"
    near = TOKENS["alice"] + "x"
    async with client_of(worker, TOKENS["alice"]) as client:
        await client.ping()
        await client.call("echo", 1)
    for bad in (wrong, near, ""):
        with pytest.raises(fedproto.UnauthenticatedError):
            await fedproto.AsyncClient.connect(worker.url, token=bad, reconnect=False)
    text = "\n".join(record.getMessage() + str(record.args) for record in caplog.records) + caplog.text
    assert "handshake" in text  # the handshake was logged: the check below looks at real log lines
    for secret in (*TOKENS.values(), wrong, near):
        assert secret not in text
