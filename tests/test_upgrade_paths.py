"""The two ways an upgrade's head is read, end to end: they answer alike.

An upgrade whose head arrives whole in the first read, in the strict form,
is parsed once without h11 (``_request_head``); a head split across reads,
or in any looser form h11 takes (bare LF line ends), goes through h11.
Each test sends the same request both ways and compares the answers byte
for byte.  Split heads use an in-memory stream, so that the server has
certainly read the first part (``wait_all_tasks_blocked``) before the rest
is sent.
"""

from __future__ import annotations

import json
import re

import pytest
import trio
import trio.testing
from http_support import client_frame, raw_exchange

from trio_chat import ChatServer, Config
from trio_chat._testing_server import open_memory_server, open_memory_stream, open_test_server

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(host: bytes, *extra: bytes, key: bytes = KEY, version: bytes = b"13") -> bytes:
    lines = [
        b"GET /ws?user=ann&key=abcdefgh HTTP/1.1",
        b"Host: " + host,
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + key,
        b"Sec-WebSocket-Version: " + version,
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def without_random(answer: bytes) -> bytes:
    """*answer* with the random session id and room epoch blanked."""
    return re.sub(rb'"(session_id|epoch)":"[^"]*"', rb'"\1":""', answer)


async def exchange_in_memory(server: ChatServer, parts: list[bytes]) -> bytes:
    """Send *parts*, each once the server has done all it can with the one
    before; return every byte the server sent until it closed."""
    stream = open_memory_stream(server)
    async with stream:
        for part in parts:
            await stream.send_all(part)
            await trio.testing.wait_all_tasks_blocked()
        received = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                received += chunk
        return received


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({"version": b"8"}, b"426"),
        ({"key": b"short"}, b"400"),
        ({"extra": (b"Origin: http://evil.example",)}, b"403"),
    ],
    ids=["version", "key", "origin"],
)
async def test_a_refused_upgrade_is_answered_alike_whole_or_split(
    extra: dict[str, object], status: bytes
) -> None:
    args = extra.pop("extra", ())
    request = upgrade(b"localhost", *args, **extra)  # type: ignore[arg-type]
    async with open_memory_server(Config()) as server:
        whole = await exchange_in_memory(server, [request])
        split = await exchange_in_memory(server, [request[:40], request[40:]])
    assert whole.startswith(b"HTTP/1.1 " + status + b" "), whole[:60]
    assert whole == split
    if status == b"426":
        assert b"\r\nsec-websocket-version: 13\r\n" in whole


async def test_an_accepted_upgrade_is_answered_alike_whole_or_split() -> None:
    join = client_frame(json.dumps({"type": "join", "payload": {"room": "lobby"}}).encode())
    close = client_frame(b"\x03\xe8", 0x8)
    request = upgrade(b"localhost")
    async with open_memory_server(Config()) as server:
        whole = await exchange_in_memory(server, [request, join, close])
        split = await exchange_in_memory(server, [request[:-3], request[-3:], join, close])
        # The client's first frame in the same read as the head: taken too.
        behind = await exchange_in_memory(server, [request + join, close])
    assert whole.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b'"type":"joined"' in whole and whole.endswith(b"\x88\x02\x03\xe8")
    assert without_random(whole) == without_random(split) == without_random(behind)


async def test_bare_lf_line_ends_still_upgrade_over_tcp() -> None:
    """A looser head h11 takes is still accepted, as before (over h11)."""
    async with open_test_server() as server:
        host = b"127.0.0.1:%d" % server.port
        strict = upgrade(host, version=b"99")
        loose = strict.replace(b"\r\n", b"\n")
        assert await raw_exchange(server.port, strict) == await raw_exchange(server.port, loose)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(upgrade(host).replace(b"\r\n", b"\n"))
            received = b""
            with trio.fail_after(10):
                while b'"welcome"' not in received:
                    received += await stream.receive_some(65536)
            assert received.startswith(b"HTTP/1.1 101 ")


async def test_an_upgrade_on_another_path_gets_what_h11_gave_it() -> None:
    request = upgrade(b"localhost").replace(b"GET /ws?", b"GET /nowhere?")
    async with open_memory_server(Config()) as server:
        whole = await exchange_in_memory(server, [request])
        split = await exchange_in_memory(server, [request[:20], request[20:]])
    assert whole.startswith(b"HTTP/1.1 404 ")
    assert whole == split
