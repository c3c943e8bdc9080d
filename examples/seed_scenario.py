"""The seed scenario end to end in one process: a worker exposing ``get_colony_id`` and a client.

    python examples/seed_scenario.py [--port 0]

Starts the worker on a background thread (on loopback), runs the client against it, stops the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import colony_client
import colony_worker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()

    worker = colony_worker.make_worker(colony=42, tokens={"coordinator": "s3cret"})
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(worker.start("127.0.0.1", args.port))
        started.set()
        loop.run_until_complete(worker.wait_closed())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    if not started.wait(30):
        print("worker did not start", file=sys.stderr)
        return 1
    try:
        colony_client.run(worker.url, token="s3cret")
    finally:
        asyncio.run_coroutine_threadsafe(worker.stop(), loop).result(30)
        thread.join(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
