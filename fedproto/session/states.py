"""The session's states and every legal move between them, in one table.

A session (either role) changes state only through :meth:`Machine.move`, which looks the move up in
:data:`TRANSITIONS`. A move that is not in the table raises an error naming the role, the state and the
event: :class:`SessionError` when it is this side's own move (a programming error here), or the protocol
error the peer has earned when the peer made it (the session turns that into the answer the protocol
asks for). Modelled on h11's ``_state.py``.

The table also says what each role may still do once it can no longer go anywhere else (see
:data:`TERMINAL_MOVES`): a server that has heard or said the last word still ends the requests it is
running; a client whose connection failed still reads what the server had already sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType

from fedproto.errors import FailedPreconditionError, FedprotoError, MalformedError, ProtocolError

__all__ = [
    "INITIAL_STATE",
    "TERMINAL_MOVES",
    "TRANSITIONS",
    "Machine",
    "Role",
    "SessionError",
    "SessionState",
    "Trigger",
    "illegal_move",
    "transition",
]


class Role(Enum):
    """Which end of the connection a session plays."""

    CLIENT = "client"
    SERVER = "server"


class SessionState(Enum):
    """Where a session is in its life (section 4)."""

    AWAIT_HELLO = "await-hello"
    AWAIT_WELCOME = "await-welcome"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"

    # Members are singletons compared by identity, so identity hashing is exact; it spares the Python
    # level ``Enum.__hash__`` on every frame, which looks states and triggers up in the table.
    __hash__ = object.__hash__


class Trigger(Enum):
    """What happens to a session: a message it sends, a message it receives, or a fatal violation.

    ``SEND_*`` are this side's own moves; ``RECEIVE_*`` are the peer's. A reply covers everything the
    server sends with a request's id except download chunks: the terminal reply, the terminal Error and
    progress events.
    """

    SEND_HELLO = "send hello"
    SEND_REQUEST = "send request"
    SEND_CHUNK = "send chunk"
    SEND_CANCEL = "send cancel"
    SEND_REPLY = "send reply"
    SEND_NOTIFICATION = "send notification"
    SEND_GOODBYE = "send goodbye"
    RECEIVE_HELLO = "receive hello"
    RECEIVE_WELCOME = "receive welcome"
    RECEIVE_REQUEST = "receive request"
    RECEIVE_CHUNK = "receive chunk"
    RECEIVE_CANCEL = "receive cancel"
    RECEIVE_REPLY = "receive reply"
    RECEIVE_NOTIFICATION = "receive notification"
    #: an Error tied to no request (request_id 0), or the refusal of a client's Hello
    RECEIVE_ERROR = "receive error"
    RECEIVE_GOODBYE = "receive goodbye"
    #: a binary frame that is not an envelope (section 3.3): the server reports it and carries on
    RECEIVE_UNDECODABLE = "receive undecodable frame"
    #: an envelope with no body, an unknown body, or a body the receiver never takes (sections 3.5-3.7);
    #: a client ignores a body newer than itself before the table is asked (section 3.6.5)
    RECEIVE_INVALID = "receive invalid body"
    #: a violation that ends the connection: a text frame, a refused handshake, a client's bad frame
    FAIL = "fail"

    __hash__ = object.__hash__  # as for SessionState

    @property
    def local(self) -> bool:
        """Whether this is the session's own move (as opposed to something the peer sent)."""
        return self.name.startswith("SEND_")


class SessionError(FedprotoError):
    """This side tried something the protocol forbids (a programming error, never the peer's fault)."""


_SERVER, _CLIENT = Role.SERVER, Role.CLIENT
_AWAIT_HELLO, _AWAIT_WELCOME = SessionState.AWAIT_HELLO, SessionState.AWAIT_WELCOME
_OPEN, _CLOSING, _CLOSED = SessionState.OPEN, SessionState.CLOSING, SessionState.CLOSED
_T = Trigger

#: The state each role starts in.
INITIAL_STATE: Mapping[Role, SessionState] = MappingProxyType(
    {_SERVER: _AWAIT_HELLO, _CLIENT: _AWAIT_WELCOME}
)

#: Every legal move: ``(role, state, trigger) -> next state``. Anything else is refused.
TRANSITIONS: Mapping[tuple[Role, SessionState, Trigger], SessionState] = MappingProxyType(
    {
        # -- server, before the handshake (section 4): Hello or nothing -----------------------------
        (_SERVER, _AWAIT_HELLO, _T.RECEIVE_HELLO): _OPEN,
        (_SERVER, _AWAIT_HELLO, _T.RECEIVE_UNDECODABLE): _AWAIT_HELLO,  # reported, kept (4.4.3)
        (_SERVER, _AWAIT_HELLO, _T.FAIL): _CLOSING,
        # -- server, open (sections 3, 5, 6, 7.3) -------------------------------------------------
        (_SERVER, _OPEN, _T.RECEIVE_REQUEST): _OPEN,
        (_SERVER, _OPEN, _T.RECEIVE_CHUNK): _OPEN,
        (_SERVER, _OPEN, _T.RECEIVE_CANCEL): _OPEN,
        (_SERVER, _OPEN, _T.RECEIVE_UNDECODABLE): _OPEN,
        (_SERVER, _OPEN, _T.RECEIVE_INVALID): _OPEN,
        (_SERVER, _OPEN, _T.SEND_REPLY): _OPEN,
        (_SERVER, _OPEN, _T.SEND_CHUNK): _OPEN,
        (_SERVER, _OPEN, _T.SEND_NOTIFICATION): _OPEN,
        (_SERVER, _OPEN, _T.SEND_GOODBYE): _OPEN,  # the client may still finish its uploads (6.3.4)
        (_SERVER, _OPEN, _T.RECEIVE_GOODBYE): _CLOSING,
        (_SERVER, _OPEN, _T.FAIL): _CLOSING,
        # -- server, closing: frames received are discarded (4.1.7, 6.3.2); running requests end --
        (_SERVER, _CLOSING, _T.SEND_REPLY): _CLOSING,
        (_SERVER, _CLOSING, _T.SEND_CHUNK): _CLOSING,
        (_SERVER, _CLOSING, _T.SEND_NOTIFICATION): _CLOSING,
        (_SERVER, _CLOSING, _T.SEND_GOODBYE): _CLOSING,
        # -- client, waiting for the Welcome (section 4.1) ----------------------------------------
        (_CLIENT, _AWAIT_WELCOME, _T.SEND_HELLO): _AWAIT_WELCOME,
        (_CLIENT, _AWAIT_WELCOME, _T.RECEIVE_WELCOME): _OPEN,
        (_CLIENT, _AWAIT_WELCOME, _T.RECEIVE_ERROR): _CLOSED,  # the Hello was refused
        (_CLIENT, _AWAIT_WELCOME, _T.FAIL): _CLOSED,
        # -- client, open ---------------------------------------------------------------------------
        (_CLIENT, _OPEN, _T.SEND_REQUEST): _OPEN,
        (_CLIENT, _OPEN, _T.SEND_CHUNK): _OPEN,
        (_CLIENT, _OPEN, _T.SEND_CANCEL): _OPEN,
        (_CLIENT, _OPEN, _T.RECEIVE_REPLY): _OPEN,
        (_CLIENT, _OPEN, _T.RECEIVE_CHUNK): _OPEN,
        (_CLIENT, _OPEN, _T.RECEIVE_NOTIFICATION): _OPEN,
        (_CLIENT, _OPEN, _T.RECEIVE_ERROR): _OPEN,
        (_CLIENT, _OPEN, _T.RECEIVE_INVALID): _OPEN,  # e.g. a reply body with id 0: ignored
        (_CLIENT, _OPEN, _T.SEND_GOODBYE): _CLOSING,
        (_CLIENT, _OPEN, _T.RECEIVE_GOODBYE): _CLOSING,
        (_CLIENT, _OPEN, _T.FAIL): _CLOSED,
        # -- client, closing: no new requests (6.3.7), the ones in flight still end ----------------
        (_CLIENT, _CLOSING, _T.SEND_CHUNK): _CLOSING,  # an upload may finish in the grace period
        (_CLIENT, _CLOSING, _T.SEND_CANCEL): _CLOSING,
        (_CLIENT, _CLOSING, _T.SEND_GOODBYE): _CLOSING,
        (_CLIENT, _CLOSING, _T.RECEIVE_REPLY): _CLOSING,
        (_CLIENT, _CLOSING, _T.RECEIVE_CHUNK): _CLOSING,
        (_CLIENT, _CLOSING, _T.RECEIVE_NOTIFICATION): _CLOSING,
        (_CLIENT, _CLOSING, _T.RECEIVE_ERROR): _CLOSING,
        (_CLIENT, _CLOSING, _T.RECEIVE_INVALID): _CLOSING,
        (_CLIENT, _CLOSING, _T.RECEIVE_GOODBYE): _CLOSING,
        (_CLIENT, _CLOSING, _T.FAIL): _CLOSED,
        # -- client, closed: see TERMINAL_MOVES ---------------------------------------------------
        (_CLIENT, _CLOSED, _T.SEND_CHUNK): _CLOSED,
        (_CLIENT, _CLOSED, _T.SEND_CANCEL): _CLOSED,
        (_CLIENT, _CLOSED, _T.RECEIVE_REPLY): _CLOSED,
        (_CLIENT, _CLOSED, _T.RECEIVE_CHUNK): _CLOSED,
        (_CLIENT, _CLOSED, _T.RECEIVE_NOTIFICATION): _CLOSED,
        (_CLIENT, _CLOSED, _T.RECEIVE_ERROR): _CLOSED,
        (_CLIENT, _CLOSED, _T.RECEIVE_INVALID): _CLOSED,
        (_CLIENT, _CLOSED, _T.RECEIVE_GOODBYE): _CLOSED,
        (_CLIENT, _CLOSED, _T.FAIL): _CLOSED,
    }
)

#: The moves a role may still make in its last state, and why; each leaves the state as it is.
TERMINAL_MOVES: Mapping[tuple[Role, SessionState], frozenset[Trigger]] = MappingProxyType(
    {
        # The client said goodbye or the connection failed: the requests already running still end
        # with their terminal reply (6.3.2), and a worker shutting down still says goodbye and may push
        # notifications until the socket closes. Nothing received is read any more.
        (_SERVER, _CLOSING): frozenset({_T.SEND_REPLY, _T.SEND_CHUNK, _T.SEND_NOTIFICATION, _T.SEND_GOODBYE}),
        # The server broke the protocol. Frames it sent before are still read, so requests they answer
        # end normally; a request started before the failure may still build its chunks and its Cancel,
        # which the I/O layer finds it cannot send; a second failure is reported again.
        (_CLIENT, _CLOSED): frozenset(
            {
                _T.SEND_CHUNK,
                _T.SEND_CANCEL,
                _T.RECEIVE_REPLY,
                _T.RECEIVE_CHUNK,
                _T.RECEIVE_NOTIFICATION,
                _T.RECEIVE_ERROR,
                _T.RECEIVE_INVALID,
                _T.RECEIVE_GOODBYE,
                _T.FAIL,
            }
        ),
    }
)

#: Why the peer's move is refused in a state, and the error it earns (sections 4.1.3, 4.4.1 and 4.4.4).
_REFUSALS: Mapping[tuple[Role, SessionState], tuple[type[ProtocolError], str]] = MappingProxyType(
    {
        (_SERVER, _AWAIT_HELLO): (FailedPreconditionError, "the first message must be Hello (section 4.4.1)"),
        (_SERVER, _OPEN): (FailedPreconditionError, "the handshake is already done (section 4.4.4)"),
        (_SERVER, _CLOSING): (FailedPreconditionError, "the connection is closing (section 6.3)"),
        (_CLIENT, _AWAIT_WELCOME): (MalformedError, "Hello must be answered with Welcome (section 4.1.3)"),
        (_CLIENT, _OPEN): (MalformedError, "the handshake is already done (section 4.1.6)"),
        (_CLIENT, _CLOSING): (MalformedError, "the handshake is already done (section 4.1.6)"),
        (_CLIENT, _CLOSED): (MalformedError, "the handshake is already done (section 4.1.6)"),
    }
)


def illegal_move(role: Role, state: SessionState, trigger: Trigger) -> FedprotoError:
    """The error for a move that is not in :data:`TRANSITIONS`, naming the role, the state and the event.

    A :class:`SessionError` for this side's own move; for the peer's, the protocol error it earns.
    """
    text = f"{role.value} cannot {trigger.value} in state {state.value}"
    if trigger.local:
        return SessionError(text)
    error_class, why = _REFUSALS[role, state]
    return error_class(f"{text}: {why}")


def transition(role: Role, state: SessionState, trigger: Trigger) -> SessionState:
    """The state after ``trigger``; raises :func:`illegal_move`'s error when the table has no such move."""
    try:
        return TRANSITIONS[role, state, trigger]
    except KeyError:
        raise illegal_move(role, state, trigger) from None


def _rows() -> dict[Role, dict[SessionState, dict[Trigger, SessionState]]]:
    """:data:`TRANSITIONS` by role and state, so that a :class:`Machine` moves with one small lookup."""
    rows: dict[Role, dict[SessionState, dict[Trigger, SessionState]]] = {
        role: {state: {} for state in SessionState} for role in Role
    }
    for (role, state, trigger), target in TRANSITIONS.items():
        rows[role][state][trigger] = target
    return rows


_ROWS = _rows()


class Machine:
    """One session's role and state; :meth:`move` is the only thing that changes the state."""

    __slots__ = ("_rows", "_state", "role")

    def __init__(self, role: Role) -> None:
        self.role = role
        self._rows = _ROWS[role]
        self._state = INITIAL_STATE[role]

    @property
    def state(self) -> SessionState:
        """The current state."""
        return self._state

    def check(self, trigger: Trigger) -> None:
        """Raise the error of an illegal move without moving (for checks before a move's other work)."""
        if trigger not in self._rows[self._state]:
            raise illegal_move(self.role, self._state, trigger)

    def move(self, trigger: Trigger) -> SessionState:
        """Apply ``trigger`` and return the new state (or raise, leaving the state as it was)."""
        target = self._rows[self._state].get(trigger)
        if target is None:
            raise illegal_move(self.role, self._state, trigger)
        self._state = target
        return target
