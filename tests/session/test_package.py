"""The session package: the names it has always exported, and no I/O anywhere inside it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fedproto.server.worker
import fedproto.session

PACKAGE_DIR = Path(fedproto.session.__file__).parent
#: The core never does I/O (docs/protocol.md is implemented over it by thin asyncio shells), and never
#: reaches up into the layers built on it.
FORBIDDEN = ("websockets", "asyncio", "fedproto.server", "fedproto.client")

#: Every name ``from fedproto.session import X`` offered before the package was split.
PUBLIC_BEFORE_THE_SPLIT = [
    "CLIENT_CONTROL_KINDS",
    "PROTOCOL_VERSIONS",
    "REPLY_KIND",
    "REQUEST_KINDS",
    "SERVER_ONLY_KINDS",
    "ClientSession",
    "CloseCode",
    "CloseConnection",
    "Connected",
    "ConnectionErrorReceived",
    "ErrorReceived",
    "Event",
    "GoodbyeReceived",
    "HandshakeCompleted",
    "NotificationReceived",
    "ProgressReceived",
    "ReplyReceived",
    "RequestCancelled",
    "RequestReceived",
    "SendFrame",
    "ServerSession",
    "SessionError",
    "SessionState",
    "TransferProgress",
    "UploadStarted",
    "check_digest_offer",
    "chunk_frames",
    "with_digest",
]


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_io_and_no_upper_layers(path: Path) -> None:
    bad = {n for n in _imported(path) for f in FORBIDDEN if n == f or n.startswith(f + ".")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_check_sees_imports() -> None:
    assert {"asyncio", "websockets.asyncio.server"} <= _imported(Path(fedproto.server.worker.__file__))


def test_every_name_public_before_is_still_exported() -> None:
    assert set(PUBLIC_BEFORE_THE_SPLIT) <= set(fedproto.session.__all__)
    for name in PUBLIC_BEFORE_THE_SPLIT:
        assert getattr(fedproto.session, name) is not None
