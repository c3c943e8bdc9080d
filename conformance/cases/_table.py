"""Table-driven cases: a row names its case and lists the requests to send with the outcomes allowed.

Many rules read "a request like X MUST be answered with CODE". Such a case is a :class:`Row`: its id
(``group/section/name``, so the row cites its section), its level, the quoted rule, and its probes, each a
request with the set of outcomes the rule allows (error codes, or the request's success reply of section
19.1, or either). :func:`register` turns every row into a registered case that opens one connection, sends
the probes in order and checks each terminal reply, so the checking and its failure message are written
once, here, and the case modules keep only what differs: the requests.

Probes that depend on the server (fresh object ids, its limits, a capability) or need a setup first come
from a function of the context and the connection, which may also skip the case.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message

from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import codes_text, fail
from ..context import Context
from ..registry import Level, case
from ..spec import REQUESTS
from ..wire import Connection, Reply

__all__ = ["Probe", "Probes", "Row", "Then", "accept", "register"]

#: What a probe checks after an allowed reply (given the connection and the reply): the reply's fields, or
#: the state the rule leaves behind. None: nothing more.
Then = Callable[[Connection, Reply], Awaitable[None]] | None


@dataclass(frozen=True, slots=True)
class Probe:
    """One request a row sends and the outcomes its terminal reply may be.

    ``codes`` are the error codes allowed (INVALID_ARGUMENT, the commonest rule, unless given); ``ok`` also
    allows the request's success reply (section 19.1).
    ``then`` runs after a reply that was allowed, for what the rule says about the reply's fields or the
    state afterwards (a refused request stores nothing, changes no weights).
    """

    what: str
    kind: str
    message: Message | None = None
    codes: tuple[int, ...] = (ErrorCode.ERROR_CODE_INVALID_ARGUMENT,)
    ok: bool = False
    deadline_ms: int = 0
    then: Then = field(default=None, repr=False)  # a closure's repr would only add noise to examples

    @property
    def expected(self) -> str:
        """The allowed outcomes as a failure message names them: ``pong or Error{DEADLINE_EXCEEDED}``."""
        outcomes = [REQUESTS[self.kind].reply] if self.ok else []
        if self.codes:
            outcomes.append(f"Error{{{codes_text(self.codes)}}}")
        return " or ".join(outcomes)

    async def send(self, conn: Connection) -> Reply:
        """Send the request; fail unless its terminal reply is one of the allowed outcomes."""
        reply = await conn.call(self.kind, self.message, deadline_ms=self.deadline_ms)
        await self.check(conn, reply)
        return reply

    async def check(self, conn: Connection, reply: Reply) -> None:
        """Fail unless ``reply`` (to this request, however sent) is an allowed outcome; run ``then``."""
        error = reply.error
        if error is not None:
            allowed = error.code in self.codes
        else:
            allowed = self.ok and reply.kind == REQUESTS[self.kind].reply
        if not allowed:
            fail(f"{self.what} was answered with {reply.describe()}, expected {self.expected}")
        if self.then is not None:
            await self.then(conn, reply)


def accept(what: str, kind: str, message: Message | None = None, *, deadline_ms: int = 0) -> Probe:
    """A probe whose only allowed outcome is the request's success reply."""
    return Probe(what, kind, message, codes=(), ok=True, deadline_ms=deadline_ms)


#: A row's probes: a fixed list, or a function of the context and the row's connection (sync or async)
#: that builds them, after any setup the rule needs.
Probes = (
    Sequence[Probe]
    | Callable[[Context, Connection], Sequence[Probe]]
    | Callable[[Context, Connection], Awaitable[Sequence[Probe]]]
)


@dataclass(frozen=True, slots=True)
class Row:
    """One table-driven case: the id citing its section, the quoted rule, its level and its probes."""

    id: str
    rule: str
    probes: Probes
    level: Level = Level.MUST
    needs: tuple[str, ...] = ()
    tokens: int = 0


def register(*rows: Row, needs: tuple[str, ...] = ()) -> None:
    """Register each row as a case, in the order given; ``needs`` applies to rows that name none."""
    for row in rows:
        needed = row.needs or needs
        case(row.id, rule=row.rule, level=row.level, needs=needed, tokens=row.tokens)(_runner(row))


def _runner(row: Row) -> Callable[[Context], Awaitable[None]]:
    async def run(ctx: Context) -> None:
        conn = await ctx.connect()
        probes = row.probes(ctx, conn) if callable(row.probes) else row.probes
        if inspect.isawaitable(probes):
            probes = await probes
        for probe in probes:
            await probe.send(conn)

    return run
