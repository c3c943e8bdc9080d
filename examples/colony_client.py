"""The coordinator's side of the seed scenario: ask a worker for its colony id, then move data.

    python examples/colony_client.py ws://127.0.0.1:8777

In PySyft 0.2 this needed a ``WebsocketClientWorker`` subclass calling ``_send_msg_and_deserialize``;
here any exposed method is one call away, with typed arguments and results.
"""

from __future__ import annotations

import argparse

import torch

import fedproto


def run(url: str, token: str = "") -> None:
    """Everything the seed did, and what it wanted to do next."""
    with fedproto.Client(url, token=token) as alice:
        print("connected to", alice.server.server_id, "capabilities:", sorted(alice.server.capabilities))
        print("methods:", [m.name for m in alice.methods()])
        print("datasets:", [(d.key, d.sample_count) for d in alice.datasets()])

        # alice.get_colonyId() in the seed; the attribute form reads the same
        colony = alice.remote.get_colony_id()
        print("colony id:", colony)

        # any arguments, any result
        result = alice.call("scale", torch.arange(3.0), factor=10)
        print("scaled:", result["scaled"].tolist(), "from colony", result["colony"])

        # send the worker data and get it back
        ref = alice.send(torch.randn(4, 4), id="weights", tags=["#weights", "#round-1"], description="demo")
        print("stored:", ref.id, ref.info.shape, "objects on worker:", alice.objects_count())
        print("search #weights:", [o.id for o in alice.search("#weights")])
        back = ref.get()
        print("round trip equal:", bool(torch.equal(back, alice.get("weights"))))

        # the worker can push data to the coordinator too
        alice.call("announce", "hello from the data owner")
        topic, payload = alice.next_notification(timeout=5)
        print("notification:", topic, payload)

        print("deleted:", repr(ref.delete()), "objects left:", alice.objects_count())  # 64 bytes freed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8777")
    parser.add_argument("--token", default="")
    args = parser.parse_args()
    run(args.url, args.token)


if __name__ == "__main__":
    main()
