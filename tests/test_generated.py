"""generated/ and node/src/gen/ must be exactly what ``make proto`` produces from proto/ (no stale, missing
or extra file)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _protogen():
    spec = importlib.util.spec_from_file_location("protogen", ROOT / "tools" / "protogen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["protogen"] = module
    spec.loader.exec_module(module)
    return module


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    assert _protogen().main(["--out", str(tmp_path), "--python-only"]) == 0
    fresh = _tree(tmp_path / "fedproto_pb")
    committed = _tree(ROOT / "generated" / "fedproto_pb")
    missing = sorted(set(fresh) - set(committed))
    extra = sorted(set(committed) - set(fresh))
    stale = sorted(name for name in set(fresh) & set(committed) if fresh[name] != committed[name])
    assert not (missing or extra or stale), (
        f"generated/ is out of date; run `make proto`. missing={missing} extra={extra} stale={stale}"
    )


def test_generated_typescript_is_fresh(tmp_path: Path) -> None:
    # Needs the pinned protoc-gen-es from `make node` (make test installs it first).
    assert _protogen().main(["--ts-out", str(tmp_path), "--ts-only"]) == 0
    fresh = _tree(tmp_path / "fedproto_pb")
    committed = _tree(ROOT / "node" / "src" / "gen" / "fedproto_pb")
    missing = sorted(set(fresh) - set(committed))
    extra = sorted(set(committed) - set(fresh))
    stale = sorted(name for name in set(fresh) & set(committed) if fresh[name] != committed[name])
    assert not (missing or extra or stale), (
        f"node/src/gen/ is out of date; run `make proto`. missing={missing} extra={extra} stale={stale}"
    )


def test_every_proto_file_has_a_typescript_module() -> None:
    protos = sorted(p.stem for p in (ROOT / "proto" / "fedproto_pb" / "v1").glob("*.proto"))
    gen_dir = ROOT / "node" / "src" / "gen" / "fedproto_pb" / "v1"
    modules = sorted(p.stem.removesuffix("_pb") for p in gen_dir.glob("*_pb.ts"))
    assert protos == modules


def test_every_proto_file_has_a_module() -> None:
    protos = sorted(p.stem for p in (ROOT / "proto" / "fedproto_pb" / "v1").glob("*.proto"))
    modules = sorted(
        p.stem.removesuffix("_pb2") for p in (ROOT / "generated" / "fedproto_pb" / "v1").glob("*_pb2.py")
    )
    assert protos == modules


def test_the_package_carries_its_schema() -> None:
    # each .proto travels beside its module (package data of the wheel), as it is in proto/
    for source in sorted((ROOT / "proto").rglob("*.proto")):
        relative = source.relative_to(ROOT / "proto")
        shipped = (ROOT / "generated" / relative).read_text()
        header, _, rest = shipped.partition("\n")
        assert header == f"// Copied from proto/{relative} by tools/protogen.py (make proto). DO NOT EDIT."
        assert rest == source.read_text(), relative
