"""Methods a data owner exposes on any worker, without writing a worker class.

    fedproto serve --methods examples/colony_methods.py --port 8777

``--methods`` exposes exactly the module-level functions defined here and marked ``@fedproto.rpc``;
``_helper`` (not marked) stays private.
"""

from __future__ import annotations

import fedproto

__all__ = ["colony_size", "greet"]


def _helper(name: str) -> str:
    return name.strip().title()


@fedproto.rpc
def greet(name: str) -> str:
    """Say hello from the colony."""
    return f"hello {_helper(name)}, from colony 7"


@fedproto.rpc(name="colony_size", description="How many members the colony has.")
async def colony_size() -> int:
    return 1200
