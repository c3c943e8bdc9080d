"""The interop script, Python side: ``python tests/interop/script.py URL`` prints one JSON line.

It runs the same steps, with the same data and the same checks, as the Node client's
``node node/dist/interop.js URL`` (``node/src/interop.ts``), against a server in the conformance
profile (docs/protocol.md §18): handshake, a custom call with nested values (``echo``), a 1 KiB and a
64 MiB float32 tensor round trip (digests compared), list/search/delete of objects, typed errors
(``fail``), cancel and deadline of a slow call (``sleep``), a notification (``notify``), and 100
pipelined calls. The output is ``{"client": ..., "server": {...}, "steps": {NAME: STEP}, "ok": bool}``
where each step is ``{"ok", "seconds", "checks": {NAME: bool}, "info": {...}, "error"}``; docs/interop.md
describes every check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import torch

import fedproto
from fedproto import hashing

MIB = 1 << 20
#: Elements of the big tensor: 64 MiB of float32, more than the conformance frame limit (4 MiB), so
#: it travels in chunks both ways.
BIG_ELEMENTS = 16 * MIB
#: The cancel step's bound, from §18.2.7 ("promptly (within 1 second)").
CANCEL_BOUND = 1.0
PIPELINED = 100


def pattern(count: int) -> np.ndarray:
    """The test tensor of both scripts: element i is float32((i mod 65521) * 0.25), exact in binary32."""
    return ((np.arange(count, dtype=np.int64) % 65521).astype(np.float32) * np.float32(0.25)).astype("<f4")


def echo_args() -> tuple[list[Any], dict[str, Any]]:
    """The echo step's arguments; the Node script sends the same kinds (ints as bigint there)."""
    small = torch.tensor([[1.5, -2.0], [0.0, 3.25]], dtype=torch.float32)
    args: list[Any] = [
        1,
        2.5,
        3.0,
        -(2**63),
        2**62,
        "zwölf ✓",
        True,
        None,
        b"\x00\xff\x10",
        [1, [2, "y", []]],
        {"k": [3], "empty": {}},
        math.inf,
    ]
    kwargs: dict[str, Any] = {"zeta": {"nested": [1, 2, {"deep": None}]}, "alpha": "b", "tensor": small}
    return args, kwargs


def same(a: Any, b: Any) -> bool:
    """Equal values of the same kinds (an int stays an int, a double a double, §8.4.3), maps in order."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and tuple(a.shape) == tuple(b.shape)
            and raw(a) == raw(b)
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def raw(tensor: torch.Tensor) -> bytes:
    """A tensor's elements as row-major bytes."""
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


class Recorder:
    """Runs the steps and keeps their records; an exception ends its step (recorded), not the script."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, Any]] = {}

    @contextlib.asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[dict[str, Any]]:
        record: dict[str, Any] = {"ok": False, "seconds": 0.0, "checks": {}, "info": {}, "error": None}
        self.steps[name] = record
        started = time.perf_counter()
        try:
            yield record
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            record["seconds"] = round(time.perf_counter() - started, 4)
            checks = record["checks"]
            record["ok"] = record["error"] is None and bool(checks) and all(checks.values())


async def round_trip(client: fedproto.AsyncClient, array: np.ndarray, object_id: str) -> dict[str, Any]:
    """Send ``array``, get it back, delete it: checks and timings.

    The digests are the connection's (§7.5): in ``sha256`` under SHA-256, in ``digest`` otherwise; the
    check names keep their first names, as the Node script's do.
    """
    algorithm = client.digest
    digest = hashing.digest(algorithm, array.tobytes())
    t0 = time.perf_counter()
    ref = await client.send(array, object_id, tags=["#interop"])
    t1 = time.perf_counter()
    got = await client.get(object_id)
    t2 = time.perf_counter()
    got_digest = hashing.digest(algorithm, raw(got))
    freed = await ref.delete()
    nbytes = array.nbytes
    carried = ref.info.tensor.sha256 if algorithm == hashing.SHA256 else ref.info.tensor.digest
    return {
        "checks": {
            "reply_nbytes": ref.info.nbytes == nbytes,
            "reply_sha256": carried == digest,
            "dtype_float32": got.dtype == torch.float32,
            "shape": tuple(got.shape) == array.shape,
            "sha256_intact": got_digest == digest,
            "delete_freed_nbytes": freed == nbytes,
        },
        "info": {
            "bytes": nbytes,
            "send_s": round(t1 - t0, 4),
            "get_s": round(t2 - t1, 4),
            "round_trip_mb_s": round(2 * nbytes / (t2 - t0) / 1e6, 1),
        },
    }


async def run(url: str) -> dict[str, Any]:
    """Every step against ``url``; the result as a JSON-ready dict."""
    rec = Recorder()
    out: dict[str, Any] = {"client": "python", "url": url, "server": {}, "steps": rec.steps}
    client: fedproto.AsyncClient | None = None
    async with rec.step("handshake") as step:
        client = await fedproto.AsyncClient.connect(url)
        server = client.server
        out["server"] = {"name": server.server_name, "id": server.server_id, "identity": server.identity}
        caps = set(server.capabilities)
        await client.ping()
        step["checks"] = {
            "version_1": server.version == 1,
            "identity_anonymous": server.identity == "anonymous",
            "conformance_profile": {"conformance", "calls", "datasets"} <= caps,
            "objects_and_chunked": {"objects", "chunked"} <= caps,
            "limits_set": server.limits.max_in_flight > 0 and server.limits.chunk_bytes > 0,
            "ping": True,
        }
        step["info"] = {
            "capabilities": sorted(caps),
            "max_in_flight": server.limits.max_in_flight,
            "digest": server.digest,  # the payload digest negotiated (§7.5)
        }
    if client is None:
        out["ok"] = False
        return out
    try:
        await steps(client, rec)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 10)
    out["ok"] = all(s["ok"] for s in rec.steps.values())
    return out


async def steps(client: fedproto.AsyncClient, rec: Recorder) -> None:
    """The steps after the handshake, in order."""
    async with rec.step("echo") as step:
        args, kwargs = echo_args()
        result = await client.call("echo", *args, **kwargs)
        step["checks"] = {
            "map_of_args_and_kwargs": isinstance(result, dict) and list(result) == ["args", "kwargs"],
            "args_unchanged": same(result["args"], args),
            "kwargs_order_kept": list(result["kwargs"]) == ["zeta", "alpha", "tensor"],
            "kwargs_unchanged": same(result["kwargs"], kwargs),
        }
        datasets = await client.datasets()
        methods = await client.methods()
        step["checks"]["fixture_dataset_listed"] = any(d.key == "conformance" for d in datasets)
        step["checks"]["hooks_listed"] = {"echo", "fail", "sleep", "notify", "whoami"} <= {
            m.name for m in methods
        }

    await client.clear_objects()  # the quota of the conformance profile is 64 MiB: start empty
    async with rec.step("tensor_1k") as step:
        step.update(await round_trip(client, pattern(256), "interop-1k"))
    async with rec.step("tensor_64m") as step:
        step.update(await round_trip(client, pattern(BIG_ELEMENTS), "interop-64m"))

    async with rec.step("objects") as step:
        for object_id, tags in (("interop-a", ["#x", "#y"]), ("interop-b", ["#x"]), ("interop-c", ["#y"])):
            await client.send(pattern(4), object_id, tags=tags, description=object_id)
        listed = [o.id for o in await client.list_objects()]
        count = await client.objects_count()
        by_x = [o.id for o in await client.search("#x")]
        by_xy = [o.id for o in await client.search("#x", "#y")]
        freed = await client.delete("interop-b")
        try:
            await client.get("interop-b")
            gone = False
        except fedproto.NotFoundError:
            gone = True
        after = [o.id for o in await client.list_objects()]
        removed = await client.clear_objects()
        step["checks"] = {
            "list_in_insertion_order": listed == ["interop-a", "interop-b", "interop-c"],
            "count": count == 3,
            "search_one_tag": by_x == ["interop-a", "interop-b"],
            "search_all_tags": by_xy == ["interop-a"],
            "delete_freed_bytes": freed == 16,
            "get_deleted_not_found": gone,
            "list_after_delete": after == ["interop-a", "interop-c"],
            "clear_removed": removed == 2,
        }

    async with rec.step("typed_errors") as step:
        checks: dict[str, bool] = {}
        for code in range(1, 17):
            name = fedproto.ErrorCode(code).name
            try:
                await client.call("fail", code, f"interop {name}")
                checks[name] = False
            except fedproto.ProtocolError as exc:
                expected = type(exc).__name__ != "ProtocolError" and int(exc.code) == code
                message = exc.args[0] if exc.args else ""  # str() adds the code name
                checks[name] = expected and message == f"interop {name}"
        try:
            await client.call("no-such-method")
            checks["method_not_found"] = False
        except fedproto.MethodNotFoundError:
            checks["method_not_found"] = True
        try:
            await client.call("fail", 99)
            checks["fail_out_of_range_invalid_argument"] = False
        except fedproto.InvalidArgumentError:
            checks["fail_out_of_range_invalid_argument"] = True
        step["checks"] = checks

    async with rec.step("cancel") as step:
        task = asyncio.ensure_future(client.call("sleep", 30.0))
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        task.cancel()
        cancelled = False
        try:
            await asyncio.wait_for(task, 5)
        except asyncio.CancelledError:
            cancelled = True
        cancel_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            await client.call_with("sleep", [30.0], timeout=0.3)
            deadline = False
        except fedproto.DeadlineExceededError:
            deadline = True
        deadline_s = time.perf_counter() - t1
        step["checks"] = {
            "cancelled": cancelled,
            "cancel_within_1s": cancel_s < CANCEL_BOUND,
            "deadline_exceeded_typed": deadline,
            "deadline_within_bound": deadline_s < 0.3 + CANCEL_BOUND,
            "connection_still_serves": await client.call("sleep", 0.0) == 0.0,
        }
        step["info"] = {"cancel_s": round(cancel_s, 4), "deadline_s": round(deadline_s, 4)}

    async with rec.step("notification") as step:
        seen: list[tuple[str, Any]] = []
        client.on_notification(lambda topic, payload: seen.append((topic, payload)))
        payload = {"n": 1, "list": [1, "two"]}
        reply = await client.call("notify", "interop", payload)
        step["checks"] = {
            "call_returns_null": reply is None,
            "delivered_before_reply": any(t == "interop" and same(p, payload) for t, p in seen),
        }

    async with rec.step("pipelined") as step:
        # All at once: the client holds back what is over the Welcome's max_in_flight (§5.5.7).
        t0 = time.perf_counter()
        results = await asyncio.gather(*(client.call("echo", i, tag=f"r{i}") for i in range(PIPELINED)))
        seconds = time.perf_counter() - t0
        step["checks"] = {
            "all_replied": len(results) == PIPELINED,
            "each_reply_its_own": all(
                same(r, {"args": [i], "kwargs": {"tag": f"r{i}"}}) for i, r in enumerate(results)
            ),
            "distinct": len({json.dumps(r) for r in results}) == PIPELINED,
        }
        step["info"] = {"calls_per_s": round(PIPELINED / seconds, 1)}


def main(argv: list[str]) -> int:
    """Run against ``argv[0]`` and print the result as one JSON line; exit 0 when every step passed."""
    if len(argv) != 1:
        print("usage: script.py URL", file=sys.stderr)
        return 2
    result = asyncio.run(run(argv[0]))
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
