"""The WebSocket settings shared by worker and client (section 2)."""

from __future__ import annotations

import inspect

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from fedproto import transport


def test_options_are_keyword_arguments_websockets_knows() -> None:
    server_params = inspect.signature(serve).parameters
    client_params = inspect.signature(connect).parameters
    assert set(transport.server_options(1024)) <= set(server_params)
    assert set(transport.client_options(1024)) <= set(client_params)


def test_both_sides_share_the_connection_options() -> None:
    shared = transport.connection_options(1024)
    server, client = transport.server_options(1024), transport.client_options(1024)
    assert {k: server[k] for k in shared} == {k: client[k] for k in shared} == shared  # type: ignore[literal-required]
    assert shared["compression"] is None and shared["max_size"] == 1024
    assert server["subprotocols"] == client["subprotocols"] == ["fedproto.v1"]
    assert server["server_header"] is None and client["user_agent_header"] is None


def test_a_zero_frame_limit_means_no_limit() -> None:
    assert transport.max_message_size(0) is None
    assert transport.max_message_size(5) == 5
    with pytest.raises(ValueError, match=">= 0"):
        transport.max_message_size(-1)


def test_the_subprotocol_is_chosen_when_offered_and_never_required() -> None:
    assert transport.select_subprotocol(None, ["chat", "fedproto.v1"]) == "fedproto.v1"
    assert transport.select_subprotocol(None, ["chat"]) is None
    assert transport.select_subprotocol(None, []) is None
