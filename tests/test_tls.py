"""TLS: wss:// and https:// on one port, with certificates made by trustme."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import trio_websocket
import trustme
from http_support import http_request, open_http

from trio_chat import Config
from trio_chat._auth import make_token
from trio_chat._config import ConfigError
from trio_chat._testing_server import open_memory_server, open_memory_stream, open_test_server

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca, tmp_path) -> tuple[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile = tmp_path / "cert.pem"
    keyfile = tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(certfile, append=True)
    cert.private_key_pem.write_to_path(keyfile)
    return str(certfile), str(keyfile)


@pytest.fixture
def client_context(ca) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@asynccontextmanager
async def wss_client(url: str, context: ssl.SSLContext):
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(url, context) as ws:
            welcome = json.loads(await ws.get_message())
            assert welcome["type"] == "welcome"
            yield ws, welcome["payload"]["user_id"]


async def send(ws, type_: str, payload: dict) -> None:
    await ws.send_message(json.dumps({"type": type_, "payload": payload}))


async def expect(ws, type_: str) -> dict:
    with trio.fail_after(10):
        while True:
            frame = json.loads(await ws.get_message())
            if frame["type"] == type_:
                return frame


async def test_wss_chat_round_trip(tls_files, client_context):
    certfile, keyfile = tls_files
    async with open_test_server(Config(port=0, certfile=certfile, keyfile=keyfile)) as server:
        assert server.url.startswith("wss://")
        async with (
            wss_client(server.url + "?user=alice", client_context) as (alice, _),
            wss_client(server.url + "?user=bob", client_context) as (bob, _),
        ):
            await send(alice, "join", {"room": "lobby"})
            await expect(alice, "joined")
            await send(bob, "join", {"room": "lobby"})
            await expect(bob, "joined")
            for i in range(20):
                await send(alice, "chat", {"room": "lobby", "content": f"secret {i}"})
            for i in range(20):
                chat = await expect(bob, "chat")
                assert chat["payload"]["content"] == f"secret {i}"
                assert chat["payload"]["id"] == i + 1
            # A large message goes through the TLS write path too.
            await send(bob, "chat", {"room": "lobby", "content": "y" * 4000})
            assert (await expect(alice, "chat"))["payload"]["content"] == "y" * 4000


async def test_https_healthz_and_keep_alive_on_the_same_port(tls_files, client_context):
    certfile, keyfile = tls_files
    async with open_test_server(Config(port=0, certfile=certfile, keyfile=keyfile)) as server:
        reply = await http_request(server.port, "GET", "/healthz", ssl_context=client_context)
        assert reply.status == 200
        assert reply.json()["status"] == "ok"
        async with wss_client(server.url, client_context):
            with trio.fail_after(10):
                async with open_http(server.port, client_context) as client:
                    health = await client.request("GET", "/healthz")
                    metrics = await client.request("GET", "/metrics")
                    page = await client.request("GET", "/")
            assert health.json()["connections"] == 1
            assert b"trio_chat_connections_open 1.0" in metrics.body
            assert page.status == 200


async def test_tokens_over_wss(tls_files, client_context):
    certfile, keyfile = tls_files
    config = Config(port=0, certfile=certfile, keyfile=keyfile, secret=SECRET)
    async with open_test_server(config) as server:
        token = make_token(SECRET, "alice")
        async with wss_client(f"{server.url}?token={token}", client_context) as (_, user):
            assert user == "alice"
        with trio.fail_after(10), pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with trio_websocket.open_websocket_url(server.url, client_context):
                pass  # pragma: no cover
        assert info.value.status_code == 401


async def test_plain_and_untrusted_clients_are_turned_away(tls_files, client_context):
    certfile, keyfile = tls_files
    config = Config(port=0, certfile=certfile, keyfile=keyfile)
    async with open_test_server(config) as server:
        port = server.port
        # Plain HTTP on the TLS port: the TLS handshake fails, the socket closes.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            with trio.fail_after(10):
                try:
                    while await stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass
        # A client that does not trust the certificate.
        with pytest.raises((ssl.SSLError, trio.BrokenResourceError)):
            await http_request(port, "GET", "/healthz", ssl_context=ssl.create_default_context())
        # None of it hurt the server.
        reply = await http_request(port, "GET", "/healthz", ssl_context=client_context)
        assert reply.json() == {**reply.json(), "status": "ok", "connections": 0}


async def test_a_client_that_never_starts_tls_is_closed_at_the_handshake_timeout(
    tls_files, autojump_clock
):
    certfile, keyfile = tls_files
    config = Config(certfile=certfile, keyfile=keyfile, handshake_timeout=5)
    async with open_memory_server(config) as server:
        silent = open_memory_stream(server)
        async with silent:
            start = trio.current_time()
            assert await silent.receive_some(10) == b""
            assert trio.current_time() - start == pytest.approx(5, abs=1e-6)
        await trio.testing.wait_all_tasks_blocked()
        assert server.stats().tcp_connections == 0


def test_certfile_and_keyfile_go_together(tls_files):
    certfile, _ = tls_files
    with pytest.raises(ConfigError):
        Config(certfile=certfile)


async def test_cli_serves_wss(tls_files, client_context):
    certfile, keyfile = tls_files
    proc = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "trio_chat",
            "serve",
            "--port",
            "0",
            "--store",
            "memory",
            "--certfile",
            certfile,
            "--keyfile",
            keyfile,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    try:
        line = b""
        with trio.fail_after(20):
            while b"\n" not in line:
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, "the server exited"
                line += chunk
        url = line.decode().split()[3]
        assert url.startswith("wss://127.0.0.1:")
        assert "(chat page: https://127.0.0.1:" in line.decode()
        async with wss_client(url + "?user=cli", client_context) as (ws, user):
            assert user == "cli"
            await send(ws, "join", {"room": "lobby"})
            await expect(ws, "joined")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        reply = await http_request(port, "GET", "/healthz", ssl_context=client_context)
        assert reply.status == 200
    finally:
        proc.terminate()
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:  # pragma: no cover
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0


# ---------------------------------------------------------------- refusals at accept


async def _bytes_until_closed(stream: trio.abc.Stream) -> bytes:
    """Everything the server sends on *stream* until it closes it (a reset
    included)."""
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


async def test_a_refusal_at_accept_on_tls_is_a_bare_close_at_once(tls_files, autojump_clock):
    # Counted like any refusal, then closed at once: no wait for a request
    # (a plain listener waits up to REFUSAL_LINGER for the head it answers).
    certfile, keyfile = tls_files
    config = Config(certfile=certfile, keyfile=keyfile, max_connections_per_ip=1)
    async with open_memory_server(config) as server:
        held = open_memory_stream(server)
        async with held:
            await trio.testing.wait_all_tasks_blocked()
            assert server.stats().tcp_connections == 1
            refused = open_memory_stream(server)
            async with refused:
                start = trio.current_time()
                assert await _bytes_until_closed(refused) == b""
                assert trio.current_time() == start
            assert server.stats().connections_refused == {429: 1}


async def test_over_the_per_ip_limit_a_tls_client_is_closed_without_a_byte(
    tls_files, client_context
):
    certfile, keyfile = tls_files
    config = Config(port=0, certfile=certfile, keyfile=keyfile, max_connections_per_ip=1)
    async with open_test_server(config) as server:
        async with wss_client(server.url + "?user=alice", client_context):
            # A request in clear gets no plain 429 back on the TLS port ...
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
                with trio.fail_after(10):
                    assert await _bytes_until_closed(stream) == b""
            # ... and a TLS client's handshake just fails.
            tls = trio.SSLStream(
                await trio.open_tcp_stream("127.0.0.1", server.port),
                client_context,
                server_hostname="127.0.0.1",
            )
            with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):
                await tls.do_handshake()
            await tls.transport_stream.aclose()
            assert server.stats().connections_refused == {429: 2}
        with trio.fail_after(10):
            while server.stats().tcp_connections:
                await trio.sleep(0.01)
        # The address is welcome again once it is under the limit.
        reply = await http_request(server.port, "GET", "/healthz", ssl_context=client_context)
        assert reply.status == 200


#: Sets the child's descriptor limit, then runs the command line.
_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
from trio_chat._cli import main
sys.exit(main(sys.argv[1:]))
"""


async def test_out_of_descriptors_a_tls_listener_sheds_with_bare_closes(tls_files, client_context):
    # Every descriptor held by a TLS handshake not begun (nothing idle to
    # close): the clients waiting beyond them are closed one by one through
    # the reserve descriptor, without a byte (no plain 503), and the server
    # serves TLS again once descriptors are free.
    certfile, keyfile = tls_files
    limit, clients = 64, 100
    argv = [sys.executable, "-c", _LIMITED.format(limit=limit), "serve", "--port", "0"]
    argv += ["--store", "memory", "--certfile", certfile, "--keyfile", keyfile]
    argv += ["--max-connections-per-ip", "100000", "--max-handshakes-per-ip", "100000"]
    argv += ["--handshake-timeout", "60", "--log-format", "json"]
    proc = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        out = b""
        with trio.fail_after(20):
            while b"/ws" not in out:
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, "the server exited"
                out += chunk
        port = int(out.split(b"wss://127.0.0.1:")[1].split(b"/")[0])
        fds_at_start = len(os.listdir(f"/proc/{proc.pid}/fd"))
        closed: list[bytes] = []
        streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(clients)]
        async with trio.open_nursery() as nursery:

            async def watch(stream: trio.abc.Stream) -> None:
                closed.append(await _bytes_until_closed(stream))

            for stream in streams:
                nursery.start_soon(watch, stream)
            with trio.fail_after(10):
                while len(closed) < clients - limit:
                    await trio.sleep(0.01)
            assert set(closed) == {b""}
            nursery.cancel_scope.cancel()
        for stream in streams:
            await stream.aclose()
        with trio.fail_after(10):
            while len(os.listdir(f"/proc/{proc.pid}/fd")) > fds_at_start:
                await trio.sleep(0.01)
        # (The reserve's last accept may still take the next client to come,
        # whoever it is: that client sees a closed connection and tries again.)
        for attempt in range(5):
            try:
                reply = await http_request(port, "GET", "/metrics", ssl_context=client_context)
                break
            except trio.BrokenResourceError:
                assert attempt < 4
                await trio.sleep(0.2)
        assert 'trio_chat_load_shed_total{action="refused_503"}' in reply.body.decode()
        shed = [
            line
            for line in reply.body.decode().splitlines()
            if line.startswith('trio_chat_load_shed_total{action="refused_503"}')
        ]
        assert float(shed[0].split()[-1]) >= clients - limit
    finally:
        proc.terminate()
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:  # pragma: no cover
            proc.kill()
            await proc.wait()
    logged = [json.loads(line) for line in (await proc.stderr.receive_some(1 << 20)).splitlines()]
    assert any("out of file descriptors" in entry["message"] for entry in logged)
