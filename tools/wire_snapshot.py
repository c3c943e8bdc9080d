"""The wire-compatibility guard of protocol v1 (docs/protocol.md section 17).

``python tools/wire_snapshot.py --write`` (``make snapshot``) records every message field's number,
type, label and oneof, every enum value and every reserved number into ``proto/wire_snapshot_v1.json``.
``compare(snapshot, current)`` lists every change that would break peers built from the snapshot: a
field whose number now means something else, a removed field whose number was not reserved, a reserved
number used again. ``tests/test_wire_snapshot.py`` fails on any of them, and on schema additions that
were not recorded yet (so every addition is reviewed once).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "proto" / "wire_snapshot_v1.json"

Snapshot = dict[str, Any]


def _files() -> list[FileDescriptor]:
    from fedproto_pb.v1 import envelope_pb2  # imports every other schema file

    seen: dict[str, FileDescriptor] = {}
    todo = [envelope_pb2.DESCRIPTOR]
    while todo:
        file = todo.pop()
        if file.name in seen or not file.package.startswith("fedproto."):
            continue
        seen[file.name] = file
        todo.extend(file.dependencies)
    return [seen[name] for name in sorted(seen)]


def _message(desc: Descriptor, out: Snapshot) -> None:
    fields = {}
    for f in desc.fields:
        oneof = (
            f.containing_oneof.name
            if f.containing_oneof and not f.containing_oneof.name.startswith("_")
            else ""
        )
        fields[str(f.number)] = {
            "name": f.name,
            "type": f.type,
            "repeated": f.is_repeated if hasattr(f, "is_repeated") else f.label == f.LABEL_REPEATED,
            "type_name": (
                f.message_type.full_name if f.message_type else f.enum_type.full_name if f.enum_type else ""
            ),
            "oneof": oneof,
        }
    reserved = sorted(n for start, end in _reserved_ranges(desc) for n in range(start, end))
    out["messages"][desc.full_name] = {"fields": fields, "reserved": reserved}
    for nested in desc.nested_types:
        if not nested.GetOptions().map_entry:
            _message(nested, out)
    for enum in desc.enum_types:
        _enum(enum, out)


def _reserved_ranges(desc: Descriptor) -> list[tuple[int, int]]:
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.DescriptorProto()
    desc.CopyToProto(proto)
    return [(r.start, r.end) for r in proto.reserved_range]


def _enum(desc: EnumDescriptor, out: Snapshot) -> None:
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.EnumDescriptorProto()
    desc.CopyToProto(proto)
    reserved = sorted(n for r in proto.reserved_range for n in range(r.start, r.end + 1))
    out["enums"][desc.full_name] = {
        "values": {str(v.number): v.name for v in desc.values},
        "reserved": reserved,
    }


def current() -> Snapshot:
    """The schema as compiled into ``generated/`` now."""
    out: Snapshot = {"messages": {}, "enums": {}}
    for file in _files():
        for message in file.message_types_by_name.values():
            _message(message, out)
        for enum in file.enum_types_by_name.values():
            _enum(enum, out)
    return out


def compare(old: Snapshot, new: Snapshot) -> tuple[list[str], list[str]]:
    """Return (breaking changes, unrecorded additions) from ``old`` to ``new``."""
    breaking: list[str] = []
    additions: list[str] = []
    for name, before in old["messages"].items():
        after = new["messages"].get(name)
        if after is None:
            breaking.append(f"message {name} was removed")
            continue
        for number, field in before["fields"].items():
            now = after["fields"].get(number)
            if now is None:
                if int(number) not in after["reserved"]:
                    breaking.append(f"{name} field {number} ({field['name']}) was removed without `reserved`")
                continue
            for key in ("type", "repeated", "type_name", "oneof"):
                if now[key] != field[key]:
                    change = f"{field[key]!r} -> {now[key]!r}"
                    breaking.append(f"{name} field {number} ({field['name']}) changed {key}: {change}")
        for number in after["fields"]:
            if int(number) in before["reserved"]:
                breaking.append(f"{name} field {number} reuses a reserved number")
            elif number not in before["fields"]:
                additions.append(f"{name} field {number} ({after['fields'][number]['name']}) is new")
    for name in new["messages"]:
        if name not in old["messages"]:
            additions.append(f"message {name} is new")
    for name, before in old["enums"].items():
        after = new["enums"].get(name)
        if after is None:
            breaking.append(f"enum {name} was removed")
            continue
        for number, value in before["values"].items():
            now = after["values"].get(number)
            if now is None and int(number) not in after["reserved"]:
                breaking.append(f"{name} value {number} ({value}) was removed without `reserved`")
            elif now is not None and now != value:
                breaking.append(f"{name} value {number} was renamed {value} -> {now}")
        for number in after["values"]:
            if int(number) in before["reserved"]:
                breaking.append(f"{name} value {number} reuses a reserved number")
            elif number not in before["values"]:
                additions.append(f"{name} value {number} ({after['values'][number]}) is new")
    for name in new["enums"]:
        if name not in old["enums"]:
            additions.append(f"enum {name} is new")
    return breaking, additions


def load() -> Snapshot:
    """The committed snapshot."""
    data: Snapshot = json.loads(SNAPSHOT.read_text())
    return data


def main(argv: list[str]) -> int:
    """``--write`` records the current schema (refusing breaking changes); no flag only checks."""
    now = current()
    if SNAPSHOT.exists():
        breaking, additions = compare(load(), now)
        for line in breaking:
            print(f"BREAKING: {line}", file=sys.stderr)
        if breaking:
            return 1
        for line in additions:
            print(f"added: {line}")
    if "--write" in argv:
        if SNAPSHOT.exists():
            # Keep numbers that were ever used, so a later removal must still reserve them.
            now = _merge_history(load(), now)
        SNAPSHOT.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"wrote {SNAPSHOT.relative_to(ROOT)}")
    return 0


def _merge_history(old: Snapshot, new: Snapshot) -> Snapshot:
    for name, before in old["messages"].items():
        after = new["messages"].setdefault(name, {"fields": {}, "reserved": []})
        after["reserved"] = sorted(set(after["reserved"]) | set(before["reserved"]))
    for name, before in old["enums"].items():
        after = new["enums"].setdefault(name, {"values": {}, "reserved": []})
        after["reserved"] = sorted(set(after["reserved"]) | set(before["reserved"]))
    return new


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
