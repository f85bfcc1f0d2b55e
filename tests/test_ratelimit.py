"""Rate limits: the pure limiters, then per-connection limits over sockets."""

from __future__ import annotations

import copy
import json
import math

import pytest
import trio
import trio_websocket
from hypothesis import given, strategies as st

from trio_chat import Config
from trio_chat._ratelimit import IpLimiter, RateLimiter
from trio_chat._testing_server import (
    open_memory_client,
    open_memory_server,
    open_test_client,
    open_test_server,
)

# ---------------------------------------------------------------- RateLimiter


def test_rate_limiter_windows_and_retry_after():
    limiter = RateLimiter(3, 10.0)
    assert [limiter.check(100.0 + i) for i in range(3)] == [None, None, None]
    # Window opened at 100.0: the next frame may pass at 110.0.
    assert limiter.check(103.0) == 7000
    assert limiter.check(109.9995) == 1  # never 0: "retry now" would be a lie
    assert limiter.strikes == 2
    assert limiter.check(110.0) is None  # a new window
    assert limiter.strikes == 0


def test_rate_limiter_strikes_count_refusals_in_one_window():
    limiter = RateLimiter(1, 1.0)
    assert limiter.check(0.0) is None
    for strike in range(1, 6):
        assert limiter.check(0.5) == 500
        assert limiter.strikes == strike
    assert limiter.check(1.0) is None
    assert limiter.strikes == 0


@given(
    messages=st.integers(1, 20),
    seconds=st.floats(0.01, 100),
    gaps=st.lists(st.floats(0, 50), max_size=200),
)
def test_rate_limiter_never_lets_more_than_its_limit_through_a_window(messages, seconds, gaps):
    limiter = RateLimiter(messages, seconds)
    now = 0.0
    passed: list[float] = []
    for gap in gaps:
        now += gap
        before = copy.copy(limiter)
        retry = limiter.check(now)
        if retry is None:
            passed.append(now)
        else:
            assert 1 <= retry <= math.ceil(seconds * 1000)
            # Retrying when told to succeeds.
            assert before.check(now + retry / 1000) is None
    # In any span shorter than one window at most 2 * messages pass (two
    # adjacent fixed windows), and within one fixed window at most messages.
    for i, t in enumerate(passed):
        in_window = [u for u in passed[i:] if u - t < seconds]
        assert len(in_window) <= 2 * messages


def test_rate_limiter_retry_after_is_when_it_passes():
    limiter = RateLimiter(2, 5.0)
    limiter.check(0.0)
    limiter.check(1.0)
    retry = limiter.check(2.0)
    assert retry == 3000
    assert limiter.check(2.0 + retry / 1000 - 0.001) is not None
    assert limiter.check(2.0 + retry / 1000) is None


# ---------------------------------------------------------------- IpLimiter


def test_ip_limiter_counts_open_connections_per_ip():
    limits = IpLimiter(max_connections=2, max_handshakes=100)
    for _ in range(2):
        assert limits.connect("10.0.0.1") is None
    refusal = limits.connect("10.0.0.1")
    assert refusal is not None and refusal.status == 429
    assert limits.open_connections("10.0.0.1") == 2  # a refusal is not counted
    assert limits.connect("10.0.0.2") is None  # other IPs are not affected
    # Handshakes count only against the rate, not the open connections.
    assert limits.handshake("10.0.0.1", 0.0) is None
    limits.closed("10.0.0.1")
    assert limits.open_connections("10.0.0.1") == 1
    assert limits.connect("10.0.0.1") is None
    limits.closed("10.0.0.1")
    limits.closed("10.0.0.1")
    limits.closed("10.0.0.1")  # extra closes never go negative
    assert limits.open_connections("10.0.0.1") == 0


def test_ip_limiter_counts_handshakes_per_window():
    limits = IpLimiter(max_connections=50, max_handshakes=3, window=10.0)
    assert [limits.handshake("ip", t) for t in (0.0, 1.0, 2.0)] == [None] * 3
    refusal = limits.handshake("ip", 9.9)
    assert refusal is not None and refusal.status == 429
    assert "handshakes" in refusal.reason
    assert limits.handshake("ip", 10.0) is None  # a new window


def test_ip_limiter_forgets_old_windows():
    limits = IpLimiter(max_connections=50, max_handshakes=1, window=1.0)
    for i in range(5000):
        limits.handshake(f"10.0.{i // 256}.{i % 256}", float(i // 1000))
    assert limits.tracked <= 4097


# ---------------------------------------------------------------- over sockets

RATE = Config(port=0, rate_messages=3, rate_seconds=60.0)


async def _marker(server, room: str, client) -> None:
    """The next chat *client* gets is a marker published now: nothing else
    arrived in between."""
    ack = await server.publish(room, "marker")
    frame = await client.expect("chat")
    assert frame["payload"]["content"] == "marker"
    assert frame["payload"]["id"] == ack.id


async def test_over_the_limit_is_429_with_retry_after_and_not_delivered():
    async with open_test_server(RATE) as server:
        async with (
            open_test_client(server, user="alice") as alice,
            open_test_client(server, user="bob") as bob,
        ):
            await alice.join("lobby")
            await bob.join("lobby")
            await alice.expect("system")
            for i in range(3):
                assert (await alice.chat("lobby", f"m{i}"))["type"] == "ack"
            await alice.send("chat", {"room": "lobby", "content": "too many"}, ref="r4")
            error = await alice.expect("error")
            assert error["ref"] == "r4"
            assert error["payload"]["code"] == 429
            retry = error["payload"]["retry_after_ms"]
            assert isinstance(retry, int) and 0 < retry <= 60_000
            for i in range(3):
                assert (await bob.expect("chat"))["payload"]["content"] == f"m{i}"
            await _marker(server, "lobby", bob)
            assert server.stats().rate_limited == 1
        async with open_test_client(server, user="carol") as carol:
            history = (await carol.join("lobby"))["payload"]["history"]
            assert [m["content"] for m in history] == ["m0", "m1", "m2", "marker"]


async def test_direct_and_presence_count_typing_and_join_do_not():
    async with open_test_server(RATE) as server:
        async with (
            open_test_client(server, user="alice") as alice,
            open_test_client(server, user="bob") as bob,
        ):
            await bob.join("lobby")
            # Joins, leaves and typing: as many as the client likes.
            for i in range(10):
                await alice.join(f"room-{i}")
            await alice.join("lobby")
            for _ in range(20):
                await alice.send("typing", {"room": "lobby"})
            # One chat, one direct, one presence: the window's three.
            assert (await alice.chat("lobby", "hi"))["type"] == "ack"
            await alice.send("direct", {"to": "bob", "content": "psst"}, ref="d")
            assert (await alice.expect("ack"))["ref"] == "d"
            await alice.send("presence", {"status": "away"}, ref="p")
            await alice.send("presence", {"status": "busy"}, ref="p2")
            error = await alice.expect("error")
            assert error["ref"] == "p2" and error["payload"]["code"] == 429
            await alice.send("direct", {"to": "bob", "content": "again"}, ref="d2")
            error = await alice.expect("error")
            assert error["ref"] == "d2" and error["payload"]["code"] == 429
            # Bob saw the direct and the "away", neither refused frame.
            kinds = []
            with trio.fail_after(5):
                while True:
                    frame = await bob.receive()
                    if frame["type"] == "presence" and frame["payload"]["status"] == "away":
                        break
                    kinds.append((frame["type"], frame["payload"].get("content")))
            assert ("direct", "psst") in kinds
            await _marker(server, "lobby", bob)
            # Typing still passes after the limit.
            await alice.send("typing", {"room": "lobby"})
            assert (await bob.expect("typing"))["payload"]["user_id"] == "alice"


async def test_the_limit_is_per_connection():
    async with open_test_server(RATE) as server:
        async with (
            open_test_client(server, user="alice", key="alice-key") as one,
            open_test_client(server, user="alice", key="alice-key") as two,
        ):
            await one.join("lobby")
            await two.join("lobby")
            for i in range(3):
                assert (await one.chat("lobby", f"m{i}"))["type"] == "ack"
            assert (await one.chat("lobby", "no"))["payload"]["code"] == 429
            assert (await two.chat("lobby", "yes"))["type"] == "ack"


async def test_waiting_retry_after_ms_is_enough(autojump_clock):
    # On trio's virtual clock: the window is 60 s, waited in no time.
    async with open_memory_server(Config(rate_messages=2, rate_seconds=60)) as server:
        async with open_memory_client(server, user="alice") as alice:
            await alice.join("lobby")
            for _ in range(2):
                reply = await alice.chat("lobby", "a")
                assert reply["type"] == "ack"
                reply = await alice.chat("lobby", "b")
                assert reply["type"] == "ack"
                reply = await alice.chat("lobby", "c")
                assert reply["payload"]["code"] == 429
                assert reply["payload"]["retry_after_ms"] == 60_000
                await trio.sleep(reply["payload"]["retry_after_ms"] / 1000)


async def _close_code(ws) -> int:
    with trio.fail_after(10):
        while True:
            try:
                await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                return exc.reason.code


async def test_still_flooding_after_three_429s_is_closed_1008():
    async with open_test_server(RATE) as server:
        async with (
            open_test_client(server, user="flood") as flood,
            open_test_client(server, user="bob") as bob,
        ):
            await flood.join("lobby")
            await bob.join("lobby")
            codes = []
            # 3 pass, 3 are refused with 429, the 7th closes the connection.
            for i in range(7):
                await flood.send("chat", {"room": "lobby", "content": f"x{i}"}, ref=str(i))
            with trio.fail_after(10):
                while True:
                    try:
                        frame = await flood.receive()
                    except trio_websocket.ConnectionClosed as exc:
                        close = exc.reason.code
                        break
                    if frame["type"] in ("ack", "error"):
                        codes.append(frame["payload"].get("code", "ack"))
            assert codes == ["ack"] * 3 + [429] * 3
            assert close == 1008
            with trio.fail_after(10):
                while server.stats().connections != 1:
                    await trio.sleep(0.01)
            assert server.metrics.closed_by_code.get("1008") == 1
            assert server.stats().rate_limited == 4
            # Bob got the three accepted messages and nothing else.
            for i in range(3):
                assert (await bob.expect("chat"))["payload"]["content"] == f"x{i}"
            await _marker(server, "lobby", bob)


async def test_429s_spread_over_windows_do_not_close(autojump_clock):
    async with open_memory_server(Config(rate_messages=1, rate_seconds=30)) as server:
        async with open_memory_client(server, user="alice") as alice:
            await alice.join("lobby")
            for _ in range(2):
                assert (await alice.chat("lobby", "ok"))["type"] == "ack"
                for _ in range(3):
                    reply = await alice.chat("lobby", "no")
                    assert reply["payload"]["code"] == 429
                await trio.sleep(reply["payload"]["retry_after_ms"] / 1000)
            assert (await alice.chat("lobby", "still open"))["type"] == "ack"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "join", "payload": {"room": "x"}},
        {"type": "leave", "payload": {"room": "x"}},
        {"type": "typing", "payload": {"room": "x"}},
    ],
)
async def test_unrated_frames_never_close_for_flooding(frame):
    async with open_test_server(Config(port=0, rate_messages=1, rate_seconds=60)) as server:
        async with open_test_client(server, user="alice") as alice:
            for _ in range(50):
                await alice.ws.send_message(json.dumps(frame))
            assert (await alice.chat("x", "last"))["type"] in ("ack", "error")
            assert server.stats().connections == 1
            assert server.stats().rate_limited == 0


def test_ip_limiter_sweeps_rarely_while_many_ips_are_active():
    # 20,000 IPs in one window: none is stale, so a sweep per handshake
    # (each over the whole table) would make every handshake slower.
    limits = IpLimiter(max_connections=50, max_handshakes=1, window=10.0)
    for i in range(20_000):
        assert limits.handshake(f"2001:db8::{i:x}", 0.0) is None
    assert limits.sweeps <= 5
    assert limits.tracked == 20_000
    # Once they go quiet, the next sweep forgets them all: what is left is
    # exactly the new, distinct addresses.
    sweeps, count = limits.sweeps, limits.sweep_above + 1
    for i in range(count):
        limits.handshake(f"10.1.{i // 256}.{i % 256}", 20.0)
    assert limits.sweeps > sweeps
    assert limits.tracked == count


def test_per_ip_limits_count_an_ipv6_slash_64_as_one_client():
    from trio_chat._ratelimit import client_key

    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("memory") == "memory"
