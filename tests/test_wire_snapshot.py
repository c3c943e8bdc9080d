"""The schema stays wire-compatible with the committed v1 snapshot (docs/protocol.md section 17)."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def snap():
    spec = importlib.util.spec_from_file_location("wire_snapshot", ROOT / "tools" / "wire_snapshot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wire_snapshot"] = module
    spec.loader.exec_module(module)
    return module


def test_schema_matches_snapshot(snap) -> None:
    breaking, additions = snap.compare(snap.load(), snap.current())
    assert not breaking, "wire-incompatible schema change:\n" + "\n".join(breaking)
    assert not additions, "schema additions not recorded; review them and run `make snapshot`:\n" + "\n".join(
        additions
    )


def test_changed_field_type_is_caught(snap) -> None:
    old = snap.current()
    new = copy.deepcopy(old)
    new["messages"]["fedproto.v1.Tensor"]["fields"]["3"]["type"] = 9  # bytes -> string
    breaking, _ = snap.compare(old, new)
    assert any("fedproto.v1.Tensor field 3" in line and "type" in line for line in breaking)


def test_removed_field_must_be_reserved(snap) -> None:
    old = snap.current()
    new = copy.deepcopy(old)
    del new["messages"]["fedproto.v1.Hello"]["fields"]["3"]
    breaking, _ = snap.compare(old, new)
    assert any("Hello field 3" in line for line in breaking)
    new["messages"]["fedproto.v1.Hello"]["reserved"].append(3)
    assert snap.compare(old, new)[0] == []


def test_reusing_a_reserved_number_is_caught(snap) -> None:
    old = snap.current()
    old["messages"]["fedproto.v1.Ping"]["reserved"].append(2)
    new = copy.deepcopy(old)
    new["messages"]["fedproto.v1.Ping"]["reserved"].remove(2)
    new["messages"]["fedproto.v1.Ping"]["fields"]["2"] = {
        "name": "again",
        "type": 9,
        "repeated": False,
        "type_name": "",
        "oneof": "",
    }
    breaking, _ = snap.compare(old, new)
    assert any("reuses a reserved number" in line for line in breaking)


def test_renumbered_enum_value_is_caught(snap) -> None:
    old = snap.current()
    new = copy.deepcopy(old)
    values = new["enums"]["fedproto.v1.ErrorCode"]["values"]
    values["5"], values["6"] = values["6"], values["5"]
    breaking, _ = snap.compare(old, new)
    assert any("ErrorCode value 5" in line for line in breaking)


def test_moving_a_field_into_a_oneof_is_caught(snap) -> None:
    old = snap.current()
    new = copy.deepcopy(old)
    new["messages"]["fedproto.v1.Envelope"]["fields"]["2"]["oneof"] = "body"
    breaking, _ = snap.compare(old, new)
    assert any("Envelope field 2" in line and "oneof" in line for line in breaking)
