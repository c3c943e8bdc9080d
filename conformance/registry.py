"""Cases and their registry: every case has a stable id citing its section, a level and its rule.

A case id reads ``group/section/name``: ``objects/9.4.3/get-after-delete`` checks rule 9.4.3 of
docs/protocol.md and belongs to the ``objects`` group. A case is an ``async def`` taking a
:class:`~conformance.context.Context`, or a plain ``def`` when it drives hypothesis (which is
synchronous) and bridges to the wire with ``ctx.run``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .context import Context

__all__ = ["GROUPS", "Case", "Level", "all_cases", "case"]

F = TypeVar("F", bound=Callable[..., Any])

#: The groups, in the order they run and are reported.
GROUPS = (
    "framing",
    "handshake",
    "auth",
    "objects",
    "datasets",
    "calls",
    "training",
    "errors",
    "limits",
    "concurrency",
    "robustness",
    "compatibility",
)

_ID = re.compile(r"^(?P<group>[a-z]+)/(?P<section>\d+(?:\.\d+)*)/(?P<name>[a-z0-9][a-z0-9-]*)$")


class Level(str, Enum):
    """How strongly the spec requires the rule (RFC 2119, section 1.1)."""

    MUST = "MUST"
    SHOULD = "SHOULD"


@dataclass(frozen=True, slots=True)
class Case:
    """One check of one rule of docs/protocol.md."""

    id: str
    level: Level
    rule: str
    func: Callable[[Context], Any]
    needs: tuple[str, ...] = ()
    tokens: int = 0
    anonymous: bool = False
    timeout: float = 60.0

    @property
    def group(self) -> str:
        """The group, the id's first part (``objects``)."""
        return self.id.split("/", 1)[0]

    @property
    def section(self) -> str:
        """The cited section or rule (``9.4.3``)."""
        return self.id.split("/")[1]

    @property
    def profile(self) -> str:
        """``training`` for cases that need the training capability, ``core`` for the others."""
        return "training" if "training" in self.needs else "core"

    @property
    def is_async(self) -> bool:
        """Whether the case is a coroutine function (otherwise it bridges to asyncio itself)."""
        return inspect.iscoroutinefunction(self.func)


_REGISTRY: dict[str, Case] = {}


def case(
    id: str,
    *,
    rule: str,
    level: Level | str = Level.MUST,
    needs: tuple[str, ...] = (),
    tokens: int = 0,
    anonymous: bool = False,
    timeout: float = 60.0,
) -> Callable[[F], F]:
    """Register the decorated function as the case ``id`` checking ``rule``.

    ``needs`` lists the capabilities the server must advertise (the case is skipped otherwise);
    ``tokens`` is 1 for cases that need a server requiring tokens and 2 for those that also need a
    second identity; ``anonymous`` marks cases for servers configured without tokens.
    """
    match = _ID.match(id)
    if match is None or match["group"] not in GROUPS:
        raise ValueError(f"bad case id {id!r}: expected group/section/name with a known group")

    def register(func: F) -> F:
        if id in _REGISTRY:
            raise ValueError(f"case {id!r} is registered twice")
        _REGISTRY[id] = Case(
            id=id,
            level=Level(level),
            rule=" ".join(rule.split()),
            func=func,
            needs=tuple(needs),
            tokens=tokens,
            anonymous=anonymous,
            timeout=timeout,
        )
        return func

    return register


def all_cases() -> list[Case]:
    """Every registered case, grouped in :data:`GROUPS` order, each group in registration order."""
    from . import cases  # noqa: F401  (registers the cases)

    order = {g: i for i, g in enumerate(GROUPS)}
    return sorted(_REGISTRY.values(), key=lambda c: order[c.group])
