"""The worker under test, in its own process: ``python -m benchmarks.worker_server --port P``.

A plain :class:`fedproto.Worker` with limits large enough for the biggest benchmark tensor (the default
chunk size is kept: it is what users get), an ``echo`` method as a user would write it (a plain
function, marked ``inline`` as the docs advise for methods that return at once), and the datasets
given with ``--dataset KEY=FILE.npz``. Prints ``READY <port>`` once it
listens and stops gracefully on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

import fedproto

LIMITS = fedproto.Limits(max_object_bytes=8 << 30, max_frame_bytes=64 << 20)


def build_worker(worker_id: str, datasets: list[str]) -> fedproto.Worker:
    worker = fedproto.Worker(worker_id, limits=LIMITS, shutdown_grace=1.0)

    @worker.method(inline=True)
    def echo(data: bytes) -> bytes:
        """Return the argument."""
        return data

    for spec in datasets:
        key, _, path = spec.partition("=")
        worker.add_dataset(Path(path), key=key)
    return worker


async def _serve(args: argparse.Namespace) -> None:
    worker = build_worker(args.id, args.dataset)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.start(args.host, args.port)
    print(f"READY {worker.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await worker.stop(grace=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--id", default="bench")
    parser.add_argument("--dataset", action="append", default=[], metavar="KEY=FILE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the worker warns about running without tokens
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
