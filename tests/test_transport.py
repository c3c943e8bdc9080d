"""The WebSocket settings shared by worker and client (section 2)."""

from __future__ import annotations

import inspect
import json
import os
import platform
import subprocess
import sys

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


# -- the process's allocator: payload-sized buffers stay in the heap, unless the environment chose

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

# Allocates and frees a 4 MiB buffer (above glibc's default thresholds) 20 times, touching every page,
# and prints what keep_payload_buffers returned and the page faults of the loop.
_PROBE = """
import json, resource
from fedproto import transport
kept = transport.keep_payload_buffers()
again = transport.keep_payload_buffers()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    buffer = bytearray(4 << 20)
    del buffer
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"kept": kept, "again": again, "faults": faults}))
"""


def _probe(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout))


@glibc_only
def test_a_freed_payload_buffer_is_reused_without_page_faults() -> None:
    result = _probe()
    assert result["kept"] is True and result["again"] is True
    pages = (4 << 20) // 4096
    assert isinstance(result["faults"], int) and result["faults"] < 2 * pages  # the first round only


@glibc_only
def test_the_environment_s_malloc_settings_win() -> None:
    result = _probe(MALLOC_MMAP_THRESHOLD_="131072")
    assert result["kept"] is False
    pages = (4 << 20) // 4096
    # mapped and unmapped each time
    assert isinstance(result["faults"], int) and result["faults"] > 10 * pages


def test_the_thresholds_are_glibc_s_own_ceiling() -> None:
    assert transport.MMAP_THRESHOLD_BYTES == 32 << 20
    assert transport.TRIM_THRESHOLD_BYTES == 2 * transport.MMAP_THRESHOLD_BYTES
