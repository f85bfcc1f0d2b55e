"""The Python client (trio_chat.client) against a real server on 127.0.0.1.

Rules: every server listens on port 0; every test is bounded by fail_after;
drops are made by the server (close with a code, or a TCP abort with no close
frame) the way real ones happen; reconnect delays are shortened through the
client's own ``Backoff`` option, never by patching.  The pure bookkeeping
(``ClientState``, ``Backoff``) is also tested without any I/O.
"""

from __future__ import annotations

import math
import ssl

import attrs
import pytest
import trio
import trustme
from hypothesis import HealthCheck, given, settings, strategies as st
from support import bounded

from trio_chat import Chat, ChatServer, Config, make_token
from trio_chat._client_records import RoomState
from trio_chat._client_state import ClientState
from trio_chat._protocol import Welcome
from trio_chat.client import (
    Backoff,
    ChatAck,
    ChatMessage,
    ClientError,
    ConnectError,
    ConnectionState,
    DirectAck,
    DirectMessage,
    ErrorEvent,
    Joined,
    PresenceUpdate,
    StateChanged,
    System,
    open_chat_client,
)
from trio_chat.testing import open_test_server

#: Reconnect quickly in tests (the policy is the real one, only faster).
FAST = Backoff(base=0.02, cap=0.1)
ROOM = "lobby"


def drop(server: ChatServer, user: str, how: int | str | None) -> int:
    """Make the server drop every connection of *user*.

    *how*: a close code (1013, ...), None for a TCP abort without a close
    frame, or "drain" for a graceful 1001 after flushing.
    """
    dropped = 0
    for conn in server.connections(user):
        if how == "drain":
            server.close_connection(conn.session_id, 1001, "test drain", drain=True)
        else:
            assert how is None or isinstance(how, int)
            server.close_connection(conn.session_id, how, "test drop")
        dropped += 1
    return dropped


async def next_of(client, kind, timeout: float = 5.0):
    """Skip events until one of type *kind* arrives."""
    with trio.fail_after(timeout):
        async for event in client:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"stream ended before a {kind.__name__}")


async def chats(client, count: int, timeout: float = 10.0) -> list[ChatMessage]:
    """The next *count* chat messages of *client*'s stream."""
    got: list[ChatMessage] = []
    with trio.fail_after(timeout):
        async for event in client:
            if isinstance(event, ChatMessage):
                got.append(event)
                if len(got) == count:
                    break
    return got


async def until_state(client, state: ConnectionState, timeout: float = 5.0) -> StateChanged:
    with trio.fail_after(timeout):
        async for event in client:
            if isinstance(event, StateChanged) and event.state is state:
                return event
    raise AssertionError("stream ended")


# ---------------------------------------------------------------- basics


@bounded(20)
async def test_two_clients_chat_both_ways():
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="alice") as alice,
            open_chat_client(server.url, user="bob") as bob,
        ):
            assert alice.user_id == "alice" and alice.state is ConnectionState.ONLINE
            joined = await alice.join(ROOM)
            assert isinstance(joined, Joined) and joined.members == ["alice"]
            assert joined.history == []  # history arrives as ChatMessage events
            await bob.join(ROOM)

            system = await next_of(alice, System)
            assert (system.event, system.room, system.user_id) == ("join", ROOM, "bob")
            assert alice.members(ROOM) == ["alice", "bob"]

            ack = await alice.send(ROOM, "hi bob")
            assert isinstance(ack, ChatAck) and ack.id == 1 and ack.room == ROOM
            [got] = await chats(bob, 1)
            assert (got.id, got.user_id, got.content, got.time) == (1, "alice", "hi bob", ack.time)

            ack2 = await bob.send(ROOM, "hi alice")
            assert ack2.id == 2
            # Alice's stream is the room's timeline: her own message (from
            # its ack), then bob's.
            mine, theirs = await chats(alice, 2)
            assert (mine.id, mine.user_id, mine.content) == (1, "alice", "hi bob")
            assert (theirs.id, theirs.user_id, theirs.content) == (2, "bob", "hi alice")
            assert alice.last_id(ROOM) == 2


@bounded(20)
async def test_history_on_join_and_typed_events():
    async with open_test_server() as server:
        await server.publish(ROOM, "before you came", user_id="carol")
        async with (
            open_chat_client(server.url, user="alice") as alice,
            open_chat_client(server.url, user="bob") as bob,
        ):
            joined = await alice.join(ROOM)
            assert joined.history == []
            [old] = await chats(alice, 1)
            assert (old.id, old.user_id, old.content) == (1, "carol", "before you came")
            assert isinstance(await next_of(alice, Joined), Joined)  # after its history

            await bob.join(ROOM)
            await bob.set_presence("away", "lunch")
            update = await next_of(alice, PresenceUpdate)
            assert (update.user_id, update.status, update.text) == ("bob", "away", "lunch")

            dack = await alice.direct("bob", "psst")
            assert isinstance(dack, DirectAck) and (dack.to, dack.id) == ("bob", 1)
            dm = await next_of(bob, DirectMessage)
            assert (dm.id, dm.from_, dm.to, dm.content) == (1, "alice", "bob", "psst")

            with pytest.raises(ClientError) as info:
                await alice.direct("alice", "hello?")
            assert info.value.code == 400

            await alice.leave(ROOM)
            assert alice.rooms == []
            system = await next_of(bob, System)
            assert (system.event, system.user_id) == ("leave", "alice")


@bounded(20)
async def test_refusals_raise_client_error():
    async with open_test_server(Config(max_content_chars=10)) as server:
        async with open_chat_client(server.url, user="alice") as alice:
            with pytest.raises(ClientError) as info:
                await alice.send(ROOM, "not joined")
            assert info.value.code == 403
            await alice.join(ROOM)
            with pytest.raises(ClientError) as info:
                await alice.send(ROOM, "x" * 11)
            assert info.value.code == 413
            with pytest.raises(ClientError) as info:
                await alice.send(ROOM, "")
            assert info.value.code == 400
            with pytest.raises(ClientError) as info:
                await alice.join("no spaces allowed")
            assert info.value.code == 400
            with pytest.raises(ClientError):
                await alice.set_presence("x" * 33)
            # Still usable after the refusals.
            assert (await alice.send(ROOM, "fine")).id == 1


@bounded(20)
async def test_tokens_rooms_and_refused_connections():
    secret = "s3cret-for-tests-only-0123456789abcdef"
    async with open_test_server(Config(secret=secret)) as server:
        token = make_token(secret, "dora", ttl=600, rooms=["team-*"])
        calls = []

        async def fresh_token() -> str:
            calls.append(1)
            return token

        async with open_chat_client(server.url, token=fresh_token, backoff=FAST) as dora:
            assert dora.user_id == "dora"
            await dora.join("team-a")
            with pytest.raises(ClientError) as info:
                await dora.join(ROOM)
            assert info.value.code == 403
            assert dora.rooms == ["team-a"]
            drop(server, "dora", None)
            await until_state(dora, ConnectionState.RECONNECTING)
            await until_state(dora, ConnectionState.ONLINE)
            assert len(calls) == 2  # asked again for the reconnect

        with pytest.raises(ConnectError) as refused:
            async with open_chat_client(server.url, token="not-a-token"):
                pass  # pragma: no cover
        assert refused.value.status == 401

    with pytest.raises(ConnectError) as nothing:
        async with open_chat_client(server.url, user="x", connect_timeout=2):
            pass  # pragma: no cover
    assert nothing.value.status is None


@bounded(20)
async def test_leaving_the_block_closes_cleanly():
    async with open_test_server() as server:
        before = trio.lowlevel.current_statistics().tasks_living
        async with open_chat_client(server.url, user="alice") as alice:
            await alice.join(ROOM)
            pending = alice.post(ROOM, "x")
            await pending.wait()
        # No task of the client is left, at once.
        names = task_names(trio.lowlevel.current_root_task())
        assert not [n for n in names if "client" in n.lower()], names
        # The server saw a normal close (its own tasks end on its own time).
        with trio.fail_after(5):
            while trio.lowlevel.current_statistics().tasks_living > before:
                await trio.sleep(0.01)
        assert server.metrics.closed_by_code.get("1000") == 1
        assert alice.state is ConnectionState.CLOSED
        with pytest.raises(ClientError):
            alice.post(ROOM, "after close")
        # The stream still holds what was delivered, then ends.
        rest = [event async for event in alice]
        assert isinstance(rest[-1], ChatMessage) and rest[-1].content == "x"


def task_names(task) -> list[str]:
    names = [task.name]
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            names += task_names(child)
    return names


@bounded(20)
async def test_body_errors_propagate_unwrapped():
    async with open_test_server() as server:
        with pytest.raises(KeyError):
            async with open_chat_client(server.url, user="alice", key="alice-key"):
                raise KeyError("mine")
        with trio.move_on_after(0.2) as scope:
            async with open_chat_client(server.url, user="alice", key="alice-key") as alice:
                await alice.join(ROOM)
                await trio.sleep_forever()
        assert scope.cancelled_caught


@bounded(20)
async def test_wss_with_a_custom_ssl_context(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    config = Config(certfile=str(certfile), keyfile=str(keyfile))
    async with open_test_server(config) as server:
        assert server.url.startswith("wss://")
        async with open_chat_client(server.url, user="tess", ssl_context=context) as tess:
            await tess.join(ROOM)
            assert (await tess.send(ROOM, "over tls")).id == 1
        with pytest.raises(ConnectError) as untrusted:  # not in the system's store
            async with open_chat_client(server.url, user="tess"):
                pass  # pragma: no cover
        assert "certificate verify failed" in str(untrusted.value)


# ---------------------------------------------------------------- rate limits


@bounded(30)
async def test_pacing_keeps_within_the_rate_limit():
    config = Config(rate_messages=3, rate_seconds=0.5)
    async with open_test_server(config) as server:
        async with open_chat_client(server.url, user="alice") as alice:
            await alice.join(ROOM)
            posted = [alice.post(ROOM, f"m{i}") for i in range(8)]
            acks = [await p.wait() for p in posted]
            assert [a.id for a in acks] == list(range(1, 9))
            assert server.metrics.rate_limited == 0
            assert server.stats().connections == 1


@bounded(30)
async def test_rate_limited_messages_are_retried_or_raised():
    config = Config(rate_messages=2, rate_seconds=0.5)
    async with open_test_server(config) as server:
        async with open_chat_client(server.url, user="alice", pace=False) as alice:
            await alice.join(ROOM)
            posted = [alice.post(ROOM, f"m{i}") for i in range(4)]
            acks = [await p.wait() for p in posted]
            assert sorted(a.id for a in acks) == [1, 2, 3, 4]
            assert server.metrics.rate_limited >= 1
            error = await next_of(alice, ErrorEvent)  # reported, and retried
            assert error.code == 429 and error.retry_after_ms > 0

        async with open_chat_client(
            server.url, user="bob", pace=False, retry_rate_limited=False
        ) as bob:
            await bob.join(ROOM)
            posted = [bob.post(ROOM, f"b{i}") for i in range(3)]
            results = []
            for p in posted:
                try:
                    results.append(await p.wait())
                except ClientError as exc:
                    results.append(exc)
            refused = [r for r in results if isinstance(r, ClientError)]
            assert refused and refused[0].code == 429 and refused[0].retry_after_ms > 0


# ---------------------------------------------------------------- reconnects


@bounded(20)
async def test_drop_between_send_and_ack_delivers_once():
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="alice", backoff=FAST) as alice,
            open_chat_client(server.url, user="bob") as bob,
        ):
            await bob.join(ROOM)
            await alice.join(ROOM)
            armed = [None]

            def hook(event):
                # Runs in the hub just before it applies the chat: the message
                # is published, but its ack goes to a connection already closed.
                if isinstance(event, Chat) and armed:
                    drop(server, "alice", armed.pop())

            server.hub.fault_hook = hook
            ack = await alice.send(ROOM, "once")
            assert not armed  # the drop did happen
            assert ack.id == 1
            ack2 = await alice.send(ROOM, "twice?")
            assert ack2.id == 2  # the re-sent ref was not published again
            got = await chats(bob, 2)
            assert [(m.id, m.content) for m in got] == [(1, "once"), (2, "twice?")]
            own = await chats(alice, 2)
            assert [(m.id, m.content) for m in own] == [(1, "once"), (2, "twice?")]


@bounded(20)
async def test_messages_sent_while_offline_go_out_in_order():
    slow = Backoff(base=0.4, cap=0.4)
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="alice", backoff=slow, random=lambda: 0.999) as alice,
            open_chat_client(server.url, user="bob") as bob,
        ):
            await bob.join(ROOM)
            await alice.join(ROOM)
            drop(server, "alice", 1013)
            state = await until_state(alice, ConnectionState.RECONNECTING)
            assert state.reason and "1013" in state.reason and state.delay > 0.3
            posted = [alice.post(ROOM, f"offline {i}") for i in range(5)]
            assert alice.state is ConnectionState.RECONNECTING
            assert [p.ref for p in alice.pending] == [p.ref for p in posted]
            acks = [await p.wait() for p in posted]
            assert [a.id for a in acks] == [1, 2, 3, 4, 5]
            got = await chats(bob, 5)
            assert [m.content for m in got] == [f"offline {i}" for i in range(5)]


@bounded(20)
async def test_reconnect_resumes_with_since():
    slow = Backoff(base=0.3, cap=0.3)
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="alice") as alice,
            open_chat_client(server.url, user="bob", backoff=slow, random=lambda: 0.999) as bob,
        ):
            await bob.join(ROOM)
            await alice.join(ROOM)
            await alice.send(ROOM, "m1")
            assert [m.content for m in await chats(bob, 1)] == ["m1"]
            drop(server, "bob", None)  # TCP abort, no close frame
            await until_state(bob, ConnectionState.RECONNECTING)
            for i in range(2, 6):
                await alice.send(ROOM, f"m{i}")
            got = await chats(bob, 4)
            assert [(m.id, m.content) for m in got] == [(i, f"m{i}") for i in range(2, 6)]
            joined = await next_of(bob, Joined)
            assert not joined.truncated
            await alice.send(ROOM, "m6")
            [live] = await chats(bob, 1)
            assert (live.id, live.content) == (6, "m6")


@bounded(20)
async def test_server_restart_resets_room_positions():
    config = Config(host="127.0.0.1", port=0, shutdown_grace=1)
    async with trio.open_nursery() as nursery:
        first = ChatServer(config)
        port = await nursery.start(first.serve)
        async with open_chat_client(first.url, user="bob", backoff=FAST) as bob:
            await bob.join(ROOM)
            for i in range(3):
                await first.publish(ROOM, f"old {i}")
            assert len(await chats(bob, 3)) == 3
            await first.shutdown()
            # Same port, empty memory: ids start at 1 again.
            second = ChatServer(attrs.evolve(config, port=port))
            await nursery.start(second.serve)
            await until_state(bob, ConnectionState.ONLINE)
            await next_of(bob, Joined)
            await second.publish(ROOM, "new 1")
            [message] = await chats(bob, 1)
            assert (message.id, message.content) == (1, "new 1")
            await second.shutdown()


@bounded(20)
async def test_refused_reconnect_stops_the_client():
    secret = "s3cret-for-tests-only-0123456789abcdef"
    async with open_test_server(Config(secret=secret)) as server:
        tokens = iter([make_token(secret, "eve", ttl=600), "expired-or-bad"])
        async with open_chat_client(server.url, token=lambda: next(tokens), backoff=FAST) as eve:
            await eve.join(ROOM)
            drop(server, "eve", 1013)
            with pytest.raises(ConnectError) as info:
                async for _ in eve:
                    pass
            assert info.value.status == 401
            assert eve.state is ConnectionState.CLOSED
            with pytest.raises(ClientError):
                await eve.send(ROOM, "too late")


@bounded(20)
async def test_gives_up_after_max_attempts_when_the_token_source_fails():
    secret = "s3cret-for-tests-only-0123456789abcdef"
    async with open_test_server(Config(secret=secret)) as server:
        token = make_token(secret, "fay", ttl=600)
        calls = []

        def flaky() -> str:
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError("token service down")
            return token

        limited = Backoff(base=0.01, cap=0.02, max_attempts=2)
        async with open_chat_client(server.url, token=flaky, backoff=limited) as fay:
            await fay.join(ROOM)
            pending = fay.post(ROOM, "stuck")
            drop(server, "fay", None)
            states = []
            with pytest.raises(ConnectError) as info:
                async for event in fay:
                    if isinstance(event, StateChanged):
                        states.append(event.state)
            assert "gave up after 2 attempts" in str(info.value)
            assert "token service down" in str(info.value)
            assert states.count(ConnectionState.RECONNECTING) == 2
            assert states[-1] is ConnectionState.CLOSED
            with pytest.raises(ClientError) as failed:
                await pending.wait()
            assert failed.value.code == 0


@bounded(20)
async def test_cancelled_send_is_not_resent_and_leave_fails_pending():
    slow = Backoff(base=0.5, cap=0.5)
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="alice", backoff=slow, random=lambda: 0.999) as alice,
            open_chat_client(server.url, user="bob") as bob,
        ):
            await bob.join(ROOM)
            await bob.join("other")
            await alice.join(ROOM)
            await alice.join("other")
            drop(server, "alice", None)
            await until_state(alice, ConnectionState.RECONNECTING)
            with trio.move_on_after(0.05):
                await alice.send(ROOM, "never mind")
            doomed = alice.post("other", "doomed")
            await alice.leave("other")
            with pytest.raises(ClientError) as info:
                await doomed.wait()
            assert info.value.code == 0
            assert alice.pending == []
            ack = await alice.send(ROOM, "kept")
            assert ack.id == 1
            [got] = await chats(bob, 1)
            assert got.content == "kept"


class FreezingProxy:
    """A TCP proxy in front of the server that can go silent.

    :meth:`freeze` makes every connection open so far a black hole: sockets
    stay open but nothing is forwarded any more, like a network that died
    without a FIN or RST.  Later connections are forwarded normally.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.generation = 0
        self.frozen_upto = -1

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def freeze(self) -> None:
        self.frozen_upto = self.generation

    async def _handle(self, downstream: trio.SocketStream) -> None:
        self.generation += 1
        generation = self.generation
        upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)

        async def pump(source, sink) -> None:
            while True:
                data = await source.receive_some(65536)
                if not data:
                    break
                if generation <= self.frozen_upto:
                    await trio.sleep_forever()
                await sink.send_all(data)
            nursery.cancel_scope.cancel()

        async with upstream, downstream, trio.open_nursery() as nursery:
            nursery.start_soon(pump, downstream, upstream)
            nursery.start_soon(pump, upstream, downstream)


@bounded(20)
async def test_heartbeat_detects_a_silent_network_and_loses_nothing():
    async with open_test_server() as server, trio.open_nursery() as nursery:
        proxy = FreezingProxy(server.port)
        await nursery.start(proxy.serve)
        async with open_chat_client(
            proxy.url, user="alice", backoff=FAST, ping_interval=0.2, ping_timeout=0.3
        ) as alice:
            await alice.join(ROOM)
            await server.publish(ROOM, "before")
            [before] = await chats(alice, 1)
            assert before.content == "before"
            proxy.freeze()
            await server.publish(ROOM, "while frozen")
            state = await until_state(alice, ConnectionState.RECONNECTING)
            assert state.reason == "no pong within 0.3 s"
            await until_state(alice, ConnectionState.ONLINE)
            ack = await alice.send(ROOM, "after")
            got = await chats(alice, 2)
            assert [(m.id, m.content) for m in got] == [(2, "while frozen"), (3, "after")]
            assert ack.id == 3
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- property test

steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(1, 3)),
        st.tuples(
            st.just("drop"),
            st.sampled_from(["alice", "bob"]),
            st.sampled_from([None, 1013, 1011, "drain"]),
        ),
        st.tuples(st.just("drop_on_publish"), st.sampled_from([None, 1013])),
        st.tuples(st.just("pause"), st.sampled_from([0, 0.002, 0.02])),
        st.tuples(st.just("settle")),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=steps)
async def test_exactly_once_in_order_under_drops(schedule):
    """Whatever the schedule of sends and server-side drops: every message is
    acknowledged, published once (ids 1..n), and the other client delivers
    each exactly once and in id order, with nothing else in between."""
    config = Config(rate_messages=100_000, history_size=1000)
    with trio.fail_after(10):
        async with open_test_server(config) as server:
            async with (
                open_chat_client(
                    server.url, user="alice", backoff=FAST, max_send_attempts=None
                ) as alice,
                open_chat_client(server.url, user="bob", backoff=FAST) as bob,
            ):
                await bob.join(ROOM)
                await alice.join(ROOM)
                armed: list[int | None] = []

                def hook(event):
                    if isinstance(event, Chat) and armed:
                        drop(server, "alice", armed.pop())

                server.hub.fault_hook = hook
                posted = []
                acks: dict[str, ChatAck] = {}

                async def wait_ack(pending) -> None:
                    acks[pending.content] = await pending.wait()

                async with trio.open_nursery() as waiting:
                    for step in schedule:
                        if step[0] == "send":
                            for _ in range(step[1]):
                                pending = alice.post(ROOM, f"m{len(posted)}")
                                posted.append(pending)
                                waiting.start_soon(wait_ack, pending)
                        elif step[0] == "drop":
                            drop(server, step[1], step[2])
                        elif step[0] == "drop_on_publish":
                            armed[:] = [step[1]]
                        elif step[0] == "pause":
                            await trio.sleep(step[1])
                        else:
                            for pending in posted:
                                await pending.wait()
                server.hub.fault_hook = None

                n = len(posted)
                assert sorted(a.id for a in acks.values()) == list(range(1, n + 1))
                await alice.send(ROOM, "end")
                delivered = []
                async for event in bob:
                    if isinstance(event, ChatMessage):
                        if event.content == "end":
                            break
                        delivered.append(event)
                expected = {content: ack.id for content, ack in acks.items()}
                assert [m.id for m in delivered] == list(range(1, n + 1))  # once, in order
                assert {m.content: m.id for m in delivered} == expected
                # The sender's own timeline too: history replays of its own
                # messages and the acks of re-sends never show one twice.
                own = []
                async for event in alice:
                    if isinstance(event, ChatMessage):
                        if event.content == "end":
                            break
                        own.append(event)
                assert [m.id for m in own] == list(range(1, n + 1))
                assert {m.content: m.id for m in own} == expected


# ---------------------------------------------------------------- pure parts


@given(
    attempt=st.integers(0, 200),
    base=st.floats(0.001, 10),
    cap=st.floats(0.001, 100),
    r=st.floats(0, 1, exclude_max=True),
)
def test_backoff_is_full_jitter_under_the_cap(attempt, base, cap, r):
    policy = Backoff(base=base, cap=cap)
    delay = policy.delay(attempt, lambda: r)
    ceiling = min(cap, base * 2.0**attempt)
    assert 0 <= delay <= ceiling
    assert math.isclose(delay, r * ceiling, rel_tol=1e-9)


@given(st.lists(st.integers(1, 50), max_size=60))
def test_room_positions_deliver_each_id_once_in_order(ids):
    room = RoomState("r")
    delivered = [i for i in ids if room.accept(i, live=False)]
    assert delivered == sorted(set(delivered))
    assert room.last_id == (max(ids) if ids else 0)


def _welcome(user="alice", rate=None):
    limits = {
        "max_message_bytes": 65536,
        "max_content_chars": 4000,
        "rate": rate or {"messages": 30, "per_seconds": 10},
        "ping_interval_seconds": 54,
    }
    return Welcome("s1", user, limits)


def test_state_rejoins_with_since_and_resends_with_the_same_ref():
    import json

    state = ClientState()
    state.join(ROOM, lambda result: None)
    state.connection_made(_welcome())
    join = json.loads(state.next_frame(0.0))
    assert join["type"] == "join" and "since" not in join["payload"]
    state.receive(
        Joined(
            ROOM,
            ["alice"],
            [{"id": 7, "room": ROOM, "user_id": "bob", "content": "x", "time": "t"}],
            False,
            join["ref"],
        ),
        0.0,
    )
    entry = state.submit("chat", ROOM, "hello")
    first = json.loads(state.next_frame(0.0))
    assert first["ref"] == entry.ref and state.next_frame(0.0) is None
    state.connection_lost()
    state.connection_made(_welcome())
    rejoin = json.loads(state.next_frame(0.0))
    assert rejoin["payload"] == {"room": ROOM, "since": 7}
    assert state.next_frame(0.0) is None  # the chat waits for the room
    state.receive(Joined(ROOM, ["alice"], [], False, rejoin["ref"]), 0.0)
    again = json.loads(state.next_frame(0.0))
    assert again == first
    emitted = state.receive(ChatAck(8, ROOM, "t", entry.ref), 0.0)
    assert [m.id for m in emitted] == [8] and entry.ack.id == 8


def test_state_paces_to_the_announced_rate():
    state = ClientState()
    state.connection_made(_welcome(rate={"messages": 2, "per_seconds": 1}))
    for i in range(3):
        state.submit("direct", "bob", f"d{i}")
    assert isinstance(state.next_frame(0.0), str)
    assert isinstance(state.next_frame(0.0), str)
    wait = state.next_frame(0.5)
    assert isinstance(wait, float) and 0.5 < wait <= 0.6 + 1e-9
    assert isinstance(state.next_frame(1.2), str)
