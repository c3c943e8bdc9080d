"""wss:// with a self-signed certificate for 127.0.0.1: trusted through ``ca_file``, refused without."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import WAIT, ThreadedWorker

import fedproto
from fedproto.cli import main as cli_main
from fedproto.server.profile import conformance_worker
from fedproto.server.tls import server_ssl_context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for the IP address 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
async def tls_worker(certificate: tuple[Path, Path]):  # type: ignore[no-untyped-def]
    cert, key = certificate
    w = conformance_worker(tokens={"alice": "tok-a"})
    await w.start("127.0.0.1", 0, tls_cert=cert, tls_key=key)
    try:
        yield w
    finally:
        await w.stop(grace=0)


async def test_wss_with_the_ca_file(tls_worker: fedproto.Worker, certificate: tuple[Path, Path]) -> None:
    assert tls_worker.url.startswith("wss://127.0.0.1:")
    cert, _ = certificate
    async with fedproto.AsyncClient.connect(tls_worker.url, token="tok-a", ca_file=cert) as c:
        assert c.server.identity == "alice"
        await c.ping()
        assert await c.call("whoami") == "alice"
        tensor = torch.arange(300_000, dtype=torch.int32)  # chunked both ways
        await c.send(tensor, "t")
        assert torch.equal(await c.get("t"), tensor)


async def test_wss_without_the_ca_file_is_refused(tls_worker: fedproto.Worker) -> None:
    client = fedproto.AsyncClient(tls_worker.url, token="tok-a", connect_timeout=WAIT)
    with pytest.raises(fedproto.ConnectionClosedError) as info:
        await client.open()
    assert "certificate" in str(info.value).lower()
    assert not client.connected
    await client.close()


async def test_plain_ws_to_a_tls_worker_fails_cleanly(tls_worker: fedproto.Worker) -> None:
    url = tls_worker.url.replace("wss://", "ws://")
    with pytest.raises(fedproto.ConnectionClosedError):
        await fedproto.AsyncClient.connect(url, token="tok-a", connect_timeout=2)


async def test_certificate_without_key_is_refused(certificate: tuple[Path, Path]) -> None:
    cert, _ = certificate
    w = fedproto.Worker("tls")
    with pytest.raises(ValueError):
        await w.start("127.0.0.1", 0, tls_cert=cert)
    await w.stop()


def test_cli_ping_over_wss(certificate: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = certificate
    threaded = ThreadedWorker(conformance_worker())
    try:
        threaded.run(threaded.worker.start("127.0.0.1", 0, tls_cert=cert, tls_key=key))
        assert cli_main(["ping", threaded.url, "--count", "1", "--ca-file", str(cert)]) == 0
        assert "pong" in capsys.readouterr().out
        assert cli_main(["ping", threaded.url, "--count", "1"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "certificate" in err.lower()
    finally:
        threaded.close()


def test_a_tls_context_needs_both_files_or_neither(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    assert server_ssl_context(None, None) is None
    assert server_ssl_context(cert, key) is not None
    for pair in ((cert, None), (None, key)):
        with pytest.raises(ValueError, match="both a certificate and a key"):
            server_ssl_context(*pair)
