"""A data owner's worker that exposes a custom method, as in the PySyft 0.2 ``get_colonyId`` story.

    python examples/colony_worker.py --port 8777
    fedproto serve --worker examples/colony_worker.py:make_worker --port 8777     # the same worker

PySyft 0.2 made *every* server method callable by name; here only what is marked ``@rpc`` is.
"""

from __future__ import annotations

import argparse

import torch

import fedproto


class ColonyWorker(fedproto.Worker):
    """A worker that knows which colony it belongs to."""

    def __init__(self, id: str, colony: int, **kwargs: object) -> None:
        super().__init__(id, **kwargs)  # type: ignore[arg-type]
        self.colony = colony

    @fedproto.rpc
    def get_colony_id(self) -> int:
        """This worker's colony id."""
        return self.colony

    @fedproto.rpc(description="Scale a tensor the coordinator sends; any arguments, any result.")
    def scale(self, values: torch.Tensor, factor: float = 2.0) -> dict[str, object]:
        return {"scaled": values * factor, "colony": self.colony}

    @fedproto.rpc
    async def announce(self, ctx: fedproto.CallContext, message: str) -> None:
        """Push a notification back to the caller: data can flow from the data owner, too."""
        await ctx.notify("colony", {"colony": self.colony, "message": message})


def make_worker(colony: int = 7, tokens: dict[str, str] | None = None) -> ColonyWorker:
    """The worker with its XOR dataset, as the seed's data owner sets it up.

    ``fedproto serve --worker examples/colony_worker.py:make_worker`` calls it with no arguments.
    """
    worker = ColonyWorker("alice", colony=colony, tokens=tokens)
    data = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    target = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    worker.add_dataset((data, target), key="xor", description="the XOR truth table")
    return worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8777)
    parser.add_argument("--colony", type=int, default=7)
    args = parser.parse_args()
    make_worker(args.colony).run(args.host, args.port)


if __name__ == "__main__":
    main()
