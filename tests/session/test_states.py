"""The transition table, read by the tests and checked against the real sessions.

Every state is reachable; the last states allow only their documented moves; every move the table
allows takes a real session where the table says; every move it does not allow is refused by a real
session with an error naming the role, the state and the event; and whole conversations walk the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from fedproto import codec
from fedproto.errors import ErrorCode, FailedPreconditionError, MalformedError
from fedproto.session import (
    ClientSession,
    ConnectionErrorReceived,
    SendFrame,
    ServerSession,
    SessionError,
    SessionState,
)
from fedproto.session.states import (
    INITIAL_STATE,
    TERMINAL_MOVES,
    TRANSITIONS,
    Machine,
    Role,
    Trigger,
    illegal_move,
    transition,
)
from fedproto.types import Limits, ObjectInfo, TensorInfo
from fedproto_pb.v1 import objects_pb2, session_pb2, tensor_pb2
from session.helpers import Pair, closes, frame, open_server, sent, server

T = Trigger


def states_of(role: Role) -> set[SessionState]:
    """The states a role's rows mention, as source or target."""
    return {s for (r, s, _), _ in TRANSITIONS.items() if r is role} | {
        n for (r, _, _), n in TRANSITIONS.items() if r is role
    }


def triggers_of(role: Role) -> set[Trigger]:
    """The triggers a role's rows mention: everything that can happen to that role."""
    return {t for (r, _, t) in TRANSITIONS if r is role}


def reachable(role: Role) -> set[SessionState]:
    seen = {INITIAL_STATE[role]}
    frontier = [INITIAL_STATE[role]]
    while frontier:
        state = frontier.pop()
        for (r, s, _), target in TRANSITIONS.items():
            if r is role and s is state and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


# -- the table on its own --------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_every_state_of_a_role_is_reachable(role: Role) -> None:
    assert reachable(role) == states_of(role)


def test_every_state_is_some_role_s() -> None:
    assert states_of(Role.SERVER) | states_of(Role.CLIENT) == set(SessionState)
    assert states_of(Role.SERVER) == {SessionState.AWAIT_HELLO, SessionState.OPEN, SessionState.CLOSING}


def test_terminal_states_allow_only_their_documented_moves() -> None:
    terminal = {
        (role, state)
        for role in Role
        for state in states_of(role)
        if all(n is state for (r, s, _), n in TRANSITIONS.items() if r is role and s is state)
    }
    assert (
        terminal
        == set(TERMINAL_MOVES)
        == {(Role.SERVER, SessionState.CLOSING), (Role.CLIENT, SessionState.CLOSED)}
    )
    for (role, state), documented in TERMINAL_MOVES.items():
        moves = {t: n for (r, s, t), n in TRANSITIONS.items() if r is role and s is state}
        assert set(moves) == documented
        assert set(moves.values()) == {state}


def test_no_role_receives_from_itself() -> None:
    # a server never receives a Welcome or a reply; a client never receives a Hello or a request
    assert not {T.RECEIVE_WELCOME, T.RECEIVE_REPLY, T.RECEIVE_NOTIFICATION} & triggers_of(Role.SERVER)
    assert not {T.RECEIVE_HELLO, T.RECEIVE_REQUEST, T.RECEIVE_CANCEL} & triggers_of(Role.CLIENT)


def test_illegal_moves_name_role_state_and_event() -> None:
    local = illegal_move(Role.CLIENT, SessionState.CLOSED, T.SEND_REQUEST)
    assert isinstance(local, SessionError)
    assert str(local) == "client cannot send request in state closed"
    remote = illegal_move(Role.SERVER, SessionState.AWAIT_HELLO, T.RECEIVE_REQUEST)
    assert isinstance(remote, FailedPreconditionError)
    assert remote.message.startswith("server cannot receive request in state await-hello: ")
    assert isinstance(illegal_move(Role.CLIENT, SessionState.AWAIT_WELCOME, T.RECEIVE_REPLY), MalformedError)
    with pytest.raises(SessionError, match="server cannot send reply in state await-hello"):
        transition(Role.SERVER, SessionState.AWAIT_HELLO, T.SEND_REPLY)


def test_a_refused_move_leaves_the_state_alone() -> None:
    machine = Machine(Role.CLIENT)
    with pytest.raises(SessionError):
        machine.move(T.SEND_REQUEST)
    assert machine.state is SessionState.AWAIT_WELCOME
    assert machine.move(T.RECEIVE_WELCOME) is SessionState.OPEN


# -- the table against the real sessions -----------------------------------------------------------

#: a request the setups leave in flight (server) or pending (client), so that moves about it can run
RID = 7
_BIG = ObjectInfo(id="x", tensor=TensorInfo(dtype=torch.uint8, shape=(30,), nbytes=30, sha256=bytes(32)))


@dataclass
class Case:
    """A real session brought into a state, with the ids the drivers need."""

    session: Any
    rid: int = RID
    hello_id: int = 0
    notes: list[object] = field(default_factory=list)


def _server_in(state: SessionState) -> Case:
    if state is SessionState.AWAIT_HELLO:
        return Case(server())
    s = open_server()
    s.receive_frame(frame(RID, count_objects=objects_pb2.CountObjectsRequest()))
    if state is SessionState.CLOSING:
        s.receive_frame(frame(0, goodbye=session_pb2.Goodbye()))
    assert s.state is state
    return Case(s)


def _client_in(state: SessionState) -> Case:
    if state is SessionState.AWAIT_WELCOME:
        c = ClientSession(token="good")
        hello_id = codec.decode_envelope(c.hello()).request_id
        return Case(c, rid=hello_id + 1, hello_id=hello_id)
    pair = Pair(chunk_bytes=8)
    rid, _ = pair.client.request(get_object=objects_pb2.GetObjectRequest(id="x"))
    if state is SessionState.CLOSING:
        pair.client.goodbye()
    elif state is SessionState.CLOSED:
        pair.client.receive_frame("text")
    assert pair.client.state is state
    return Case(pair.client, rid=rid)


def _welcome(case: Case) -> bytes:
    welcome = session_pb2.Welcome(version=1, limits=codec.limits_to_proto(Limits(chunk_bytes=8)))
    # before the handshake the Welcome answers the Hello; after it, one with request_id 0 is stray
    rid = case.hello_id if case.session.state is SessionState.AWAIT_WELCOME else 0
    return frame(rid, welcome=welcome)


_PING = session_pb2.Ping()
_ERROR = codec.error_to_proto(MalformedError("report"))
_NOTE = session_pb2.Notification(topic="t", payload=codec.value_to_proto(1))

#: How to make each trigger happen to a real session in a given case.
DRIVERS: dict[Role, dict[Trigger, Callable[[Case], object]]] = {
    Role.SERVER: {
        T.RECEIVE_HELLO: lambda c: c.session.receive_frame(
            frame(1, hello=session_pb2.Hello(versions=[1], token="good"))
        ),
        T.RECEIVE_REQUEST: lambda c: c.session.receive_frame(
            frame(9, count_objects=objects_pb2.CountObjectsRequest())
        ),
        T.RECEIVE_CHUNK: lambda c: c.session.receive_frame(
            frame(5, chunk=tensor_pb2.Chunk(offset=0, data=bytes(8), total_bytes=20))
        ),
        T.RECEIVE_CANCEL: lambda c: c.session.receive_frame(frame(c.rid, cancel=session_pb2.Cancel())),
        T.RECEIVE_GOODBYE: lambda c: c.session.receive_frame(frame(0, goodbye=session_pb2.Goodbye())),
        T.RECEIVE_UNDECODABLE: lambda c: c.session.receive_frame(b"\xff\xff"),
        T.RECEIVE_INVALID: lambda c: c.session.receive_frame(frame(3)),
        T.FAIL: lambda c: c.session.receive_frame("text"),
        T.SEND_REPLY: lambda c: c.session.reply(c.rid, count_objects_reply=objects_pb2.CountObjectsReply()),
        T.SEND_CHUNK: lambda c: list(c.session.download(c.rid, _BIG, memoryview(bytes(30)))),
        T.SEND_NOTIFICATION: lambda c: c.session.notification("t", 1),
        T.SEND_GOODBYE: lambda c: c.session.goodbye(),
    },
    Role.CLIENT: {
        T.SEND_HELLO: lambda c: c.session.hello(),
        T.SEND_REQUEST: lambda c: c.session.request(ping=_PING),
        T.SEND_CHUNK: lambda c: list(c.session.upload(c.rid, memoryview(bytes(20)), 8)),
        T.SEND_CANCEL: lambda c: c.session.cancel(c.rid),
        T.SEND_GOODBYE: lambda c: c.session.goodbye(),
        T.RECEIVE_WELCOME: lambda c: c.session.receive_frame(_welcome(c)),
        T.RECEIVE_REPLY: lambda c: c.session.receive_frame(frame(c.rid, pong=session_pb2.Pong())),
        T.RECEIVE_CHUNK: lambda c: c.session.receive_frame(
            frame(c.rid, chunk=tensor_pb2.Chunk(offset=0, data=bytes(8), total_bytes=30))
        ),
        T.RECEIVE_NOTIFICATION: lambda c: c.session.receive_frame(frame(0, notification=_NOTE)),
        T.RECEIVE_ERROR: lambda c: c.session.receive_frame(frame(0, error=_ERROR)),
        # a reply body with request_id 0 (an envelope with no body is ignored outside the table, 3.6.5)
        T.RECEIVE_INVALID: lambda c: c.session.receive_frame(frame(0, pong=session_pb2.Pong())),
        T.RECEIVE_GOODBYE: lambda c: c.session.receive_frame(frame(0, goodbye=session_pb2.Goodbye())),
        T.FAIL: lambda c: c.session.receive_frame("text"),
    },
}
SETUPS: dict[Role, Callable[[SessionState], Case]] = {Role.SERVER: _server_in, Role.CLIENT: _client_in}


def _every(legal: bool) -> list[tuple[Role, SessionState, Trigger]]:
    return [
        (role, state, trigger)
        for role in Role
        for state in sorted(states_of(role), key=lambda s: s.value)
        for trigger in sorted(triggers_of(role), key=lambda t: t.value)
        if ((role, state, trigger) in TRANSITIONS) == legal
    ]


def _id(value: object) -> str:
    return str(getattr(value, "value", value))


def test_drivers_cover_every_trigger() -> None:
    for role in Role:
        assert set(DRIVERS[role]) == triggers_of(role)


@pytest.mark.parametrize(("role", "state", "trigger"), _every(legal=True), ids=_id)
def test_the_real_sessions_move_as_the_table_says(role: Role, state: SessionState, trigger: Trigger) -> None:
    case = SETUPS[role](state)
    DRIVERS[role][trigger](case)
    assert case.session.state is TRANSITIONS[role, state, trigger]


def _named(text: str, role: Role, state: SessionState, trigger: Trigger) -> bool:
    return f"{role.value} cannot {trigger.value} in state {state.value}" in text


@pytest.mark.parametrize(("role", "state", "trigger"), _every(legal=False), ids=_id)
def test_the_real_sessions_refuse_what_the_table_lacks(
    role: Role, state: SessionState, trigger: Trigger
) -> None:
    case = SETUPS[role](state)
    session: ServerSession | ClientSession = case.session
    if trigger.local:  # this side's own mistake: SessionError, nothing sent, nothing moved
        with pytest.raises(SessionError) as refused:
            DRIVERS[role][trigger](case)
        assert _named(str(refused.value), role, state, trigger)
        assert session.state is state
        return
    events: Any = DRIVERS[role][trigger](case)
    if role is Role.SERVER and state is SessionState.CLOSING:  # sections 4.1.7 and 6.3.2: discarded
        assert events == [] and session.state is state
    elif role is Role.SERVER:
        (error,) = sent(events)
        assert error.error.code == ErrorCode.FAILED_PRECONDITION
        assert _named(error.error.message, role, state, trigger)
        if state is SessionState.AWAIT_HELLO:  # section 4.4.2: refused, then closed
            assert closes(events) == [1002] and session.state is SessionState.CLOSING
        else:  # section 4.4.4: the connection stays
            assert closes(events) == [] and session.state is state
    else:
        report = events[0]
        assert isinstance(report, ConnectionErrorReceived) and report.error.code is ErrorCode.MALFORMED
        assert _named(report.error.message, role, state, trigger)
        if state is SessionState.AWAIT_WELCOME:
            assert closes(events) == [1002] and session.state is SessionState.CLOSED
        else:
            assert len(events) == 1 and session.state is state


# -- whole conversations ----------------------------------------------------------------------------


class Link:
    """A client and a server session with a queue of frames each way, moved one step at a time."""

    def __init__(self, token: str = "good") -> None:
        self.server = server(chunk_bytes=8)
        self.client = ClientSession(token=token)
        self.to_server: list[bytes | str] = []
        self.to_client: list[bytes | str] = []
        self.rid = 0

    def session(self, role: Role) -> Any:
        return self.server if role is Role.SERVER else self.client

    def server_reads(self) -> None:
        for event in self.server.receive_frame(self.to_server.pop(0)):
            if isinstance(event, SendFrame):
                self.to_client.append(event.data)

    def client_reads(self) -> None:
        self.client.receive_frame(self.to_client.pop(0))

    def client_sends(self, data: bytes | str) -> None:
        self.to_server.append(data)

    def request(self, **body: Any) -> None:
        self.rid, data = self.client.request(**body)
        self.to_server.append(data)


Step = tuple[Role, Trigger, Callable[[Link], object]]
_S, _C = Role.SERVER, Role.CLIENT
_HANDSHAKE: list[Step] = [
    (_C, T.SEND_HELLO, lambda k: k.client_sends(k.client.hello())),
    (_S, T.RECEIVE_HELLO, Link.server_reads),
    (_C, T.RECEIVE_WELCOME, Link.client_reads),
]
_PING_ROUND: list[Step] = [
    (_C, T.SEND_REQUEST, lambda k: k.request(ping=session_pb2.Ping())),
    (_S, T.RECEIVE_REQUEST, Link.server_reads),  # answered by the session itself
    (_C, T.RECEIVE_REPLY, Link.client_reads),
]
WALKS: dict[str, list[Step]] = {
    "requests then the client's goodbye": [
        *_HANDSHAKE,
        *_PING_ROUND,
        (_C, T.SEND_REQUEST, lambda k: k.request(get_object=objects_pb2.GetObjectRequest(id="x"))),
        (_S, T.RECEIVE_REQUEST, Link.server_reads),
        (
            _S,
            T.SEND_CHUNK,
            lambda k: k.to_client.extend(k.server.download(k.rid, _BIG, memoryview(bytes(30)))),
        ),
        (_C, T.RECEIVE_CHUNK, Link.client_reads),
        (_C, T.SEND_CANCEL, lambda k: k.client_sends(k.client.cancel(k.rid) or b"")),
        (_S, T.RECEIVE_CANCEL, Link.server_reads),  # already answered: ignored (section 6.2.6)
        (_C, T.SEND_GOODBYE, lambda k: k.client_sends(k.client.goodbye())),
        (_S, T.RECEIVE_GOODBYE, Link.server_reads),
        (_C, T.RECEIVE_CHUNK, Link.client_reads),  # the rest of the download, still read while closing
    ],
    "the server shuts down": [
        *_HANDSHAKE,
        (_C, T.SEND_REQUEST, lambda k: k.request(count_objects=objects_pb2.CountObjectsRequest())),
        (_S, T.RECEIVE_REQUEST, Link.server_reads),
        (_S, T.SEND_NOTIFICATION, lambda k: k.to_client.append(k.server.notification("bye", 1))),
        (_S, T.SEND_GOODBYE, lambda k: k.to_client.append(k.server.goodbye("shutdown"))),
        (_C, T.RECEIVE_NOTIFICATION, Link.client_reads),
        (_C, T.RECEIVE_GOODBYE, Link.client_reads),
        (_S, T.SEND_REPLY, lambda k: k.to_client.append(k.server.fail(k.rid, FailedPreconditionError()))),
        (_C, T.RECEIVE_REPLY, Link.client_reads),
    ],
    "a refused handshake": [
        (_C, T.SEND_HELLO, lambda k: k.client_sends(k.client.hello())),
        (_S, T.FAIL, Link.server_reads),
        (_C, T.RECEIVE_ERROR, Link.client_reads),
    ],
    "garbage instead of a Hello, then a text frame": [
        (_C, T.SEND_HELLO, lambda k: (k.client.hello(), k.client_sends(b"\xff\xff"))),
        (_S, T.RECEIVE_UNDECODABLE, Link.server_reads),  # reported on request 0, connection kept
        (_C, T.RECEIVE_ERROR, Link.client_reads),  # to a client waiting for its Welcome: a refusal
        (_S, T.FAIL, lambda k: k.server.receive_frame("text")),
    ],
    "a text frame from the client": [
        *_HANDSHAKE,
        *_PING_ROUND,
        (_C, T.SEND_REQUEST, lambda k: k.request(count_objects=objects_pb2.CountObjectsRequest())),
        (_S, T.RECEIVE_REQUEST, Link.server_reads),
        (_S, T.FAIL, lambda k: k.server.receive_frame("text")),
        (_S, T.SEND_REPLY, lambda k: k.to_client.append(k.server.fail(k.rid, FailedPreconditionError()))),
    ],
    "a text frame from the server": [
        *_HANDSHAKE,
        (_C, T.SEND_REQUEST, lambda k: k.request(ping=session_pb2.Ping())),
        (_S, T.RECEIVE_REQUEST, Link.server_reads),
        (_C, T.FAIL, lambda k: k.client.receive_frame("text")),
        (_C, T.RECEIVE_REPLY, Link.client_reads),  # sent before the failure: still read
    ],
}


_OPEN, _CLOSING, _CLOSED = SessionState.OPEN, SessionState.CLOSING, SessionState.CLOSED
#: Where each conversation leaves (server, client), as sections 4 and 6.3 describe it.
ENDS: dict[str, tuple[SessionState, SessionState]] = {
    "requests then the client's goodbye": (_CLOSING, _CLOSING),
    "the server shuts down": (_OPEN, _CLOSING),  # the server closes the socket itself after its grace
    "a refused handshake": (_CLOSING, _CLOSED),
    "garbage instead of a Hello, then a text frame": (_CLOSING, _CLOSED),
    "a text frame from the client": (_CLOSING, _OPEN),
    "a text frame from the server": (_OPEN, _CLOSED),
}


@pytest.mark.parametrize("name", list(WALKS))
def test_conversations_walk_the_table(name: str) -> None:
    link = Link(token="bad" if name == "a refused handshake" else "good")
    for role, trigger, step in WALKS[name]:
        session = link.session(role)
        before = session.state
        step(link)
        assert (role, before, trigger) in TRANSITIONS, f"{name}: {role.value} {trigger.value} from {before}"
        assert session.state is TRANSITIONS[role, before, trigger], f"{name}: {role.value} {trigger.value}"
    assert (link.server.state, link.client.state) == ENDS[name]
