"""The rooms of ``fedproto`` and what each may import, as ``docs/architecture.md`` draws them.

The table below is the architecture: a room is a top-level module or subpackage of ``fedproto``, and it
may import only the rooms listed for it (and itself). Imports inside functions count too: a lazy import
still ties the two rooms together. A new room, or a new arrow, is a decision: add it here and to the
picture in ``docs/architecture.md`` in the same change.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from test_imports import Edge, import_edges, module_files

ROOT = Path(__file__).resolve().parents[1]

#: Leaves: they import no other room.
_BASE = frozenset({"errors", "hashing", "transport", "wsframes"})
#: Plain records and datasets: what the wire carries, in Python terms.
_RECORDS = _BASE | {"types", "datasets"}

#: room -> the rooms it may import. Rooms are named without the ``fedproto.`` prefix; ``""`` is the
#: package ``__init__`` (the public API, which re-exports).
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "hashing": frozenset(),
    "transport": frozenset(),
    "wsframes": frozenset(),
    "types": frozenset(),
    "datasets": frozenset(),
    "codec": _RECORDS,
    "session": _RECORDS | {"codec"},
    "training": _RECORDS,
    "server": _RECORDS | {"codec", "session", "training"},
    "client": _RECORDS | {"codec", "session", "training"},
    "federated": _RECORDS | {"client", "training"},
    "simulation": _RECORDS | {"client", "federated", "server", "training"},
    "demo": _RECORDS | {"client", "federated", "server", "training"},
    "cli": _RECORDS | {"client", "demo", "federated", "server", "simulation", "training"},
    "__main__": frozenset({"cli"}),
    "": _RECORDS | {"client", "federated", "server", "training"},
}

#: Third-party modules a room must not import: the session core has no I/O (STYLE.md section 1), and
#: the codec and the records know nothing of sockets either.
FORBIDDEN_LIBRARIES: dict[str, frozenset[str]] = {
    "session": frozenset({"websockets", "asyncio", "socket", "ssl"}),
    "codec": frozenset({"websockets", "asyncio", "socket", "ssl"}),
    "types": frozenset({"websockets", "asyncio"}),
    "training": frozenset({"websockets"}),
}


def room(module: str) -> str:
    """The room of a dotted module name: ``fedproto.server.handlers.calls`` -> ``server``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _crossings(edges: list[Edge]) -> list[str]:
    wrong = []
    for edge in edges:
        source, target = room(edge.importer), room(edge.imported)
        if source == target or target in ALLOWED.get(source, frozenset()):
            continue
        where = f"{edge.importer}:{edge.line} imports {edge.imported} ({edge.where})"
        wrong.append(f"{where}: {source!r} -> {target!r}")
    return wrong


def test_every_room_is_in_the_table() -> None:
    rooms = {room(name) for name in module_files()}
    assert rooms == set(ALLOWED), (
        f"rooms not in the table: {sorted(rooms - set(ALLOWED))}; "
        f"table rows with no room: {sorted(set(ALLOWED) - rooms)}"
    )


def test_rooms_import_only_what_the_table_allows() -> None:
    wrong = _crossings(import_edges())
    assert not wrong, "imports across rooms that the architecture does not allow:\n" + "\n".join(wrong)


def test_the_table_has_no_circle() -> None:
    """Rooms form layers: following the arrows never comes back to where it started."""
    seen: dict[str, int] = {}

    def depth(name: str, path: tuple[str, ...]) -> int:
        assert name not in path, f"circle in the table: {' -> '.join((*path, name))}"
        if name not in seen:
            seen[name] = 1 + max((depth(t, (*path, name)) for t in ALLOWED[name]), default=0)
        return seen[name]

    for name in ALLOWED:
        depth(name, ())


def test_the_check_catches_an_upward_import() -> None:
    edges = [Edge("fedproto.session.server", "fedproto.server.worker", "function", 3)]
    assert _crossings(edges) == [
        "fedproto.session.server:3 imports fedproto.server.worker (function): 'session' -> 'server'"
    ]


def _libraries(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_core_rooms_do_no_io() -> None:
    wrong = [
        f"{name} imports {sorted(_libraries(path) & FORBIDDEN_LIBRARIES[room(name)])}"
        for name, path in module_files().items()
        if room(name) in FORBIDDEN_LIBRARIES and _libraries(path) & FORBIDDEN_LIBRARIES[room(name)]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_document_names_every_room() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`fedproto/([a-z_]+)(?:/|\.py)`", text))
    missing = sorted(r for r in ALLOWED if r and r != "__main__" and r not in named)
    assert not missing, f"docs/architecture.md does not describe: {missing}"


#: The rooms that may import the generated package at run time: everything else speaks in records and
#: asks the codec to convert (STYLE.md section 3).
GENERATED_READERS = frozenset({"errors", "codec", "session"})


def test_only_the_codec_and_the_core_read_generated_code() -> None:
    wrong = sorted(
        name
        for name, path in module_files().items()
        if room(name) not in GENERATED_READERS and "fedproto_pb" in _libraries(path)
    )
    assert not wrong, f"modules that import fedproto_pb outside {sorted(GENERATED_READERS)}: {wrong}"
