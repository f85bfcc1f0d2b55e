"""Event streams and bots: what an embedding program sees of the rooms.

A real server over in-memory streams on trio's virtual clock.  Absences are
proven by the next event a stream yields, never by a sleep.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_chat import (
    ChatAck,
    ChatMessage,
    Config,
    DirectAck,
    DirectMessage,
    Joined,
    PresenceUpdate,
    ProtocolError,
    StreamClosed,
    StreamOverflow,
    System,
    TypingNotice,
)
from trio_chat.testing import open_memory_client, open_memory_server


def _chat(event: object) -> tuple[str, str, str]:
    assert isinstance(event, ChatMessage), event
    return (event.room, event.user_id, event.content)


async def test_a_room_stream_yields_its_events_in_order(autojump_clock):
    async with open_memory_server(Config()) as server:
        async with server.subscribe(rooms=["lobby"]) as events:
            async with open_memory_client(server, user="alice") as alice:
                await alice.join("lobby")  # into an empty room: no member sees it
                async with open_memory_client(server, user="bob") as bob:
                    await bob.join("lobby")
                    await bob.join("elsewhere")
                    await alice.chat("lobby", "hi bob")
                    await bob.chat("elsewhere", "not in the stream")
                    await bob.send("presence", {"status": "away"})
                    await bob.send("typing", {"room": "lobby"})  # typing=False
                    await bob.send("leave", {"room": "lobby"})
                    await bob.expect("left")
                # alice leaves an empty room last: no member sees that either
            got = [await events.receive() for _ in range(6)]
        assert got[0] == System("join", "lobby", "alice")
        assert got[1] == System("join", "lobby", "bob")
        assert _chat(got[2]) == ("lobby", "alice", "hi bob")
        assert isinstance(got[2], ChatMessage) and got[2].id == 1
        assert got[3] == PresenceUpdate("bob", "away")
        assert got[4] == System("leave", "lobby", "bob")
        assert got[5] == System("leave", "lobby", "alice")


async def test_a_user_stream_follows_that_user_everywhere(autojump_clock):
    async with open_memory_server(Config()) as server:
        async with (
            server.subscribe(users=["alice"], typing=True) as events,
            open_memory_client(server, user="alice") as alice,
            open_memory_client(server, user="bob") as bob,
        ):
            await bob.join("a")
            await alice.join("a")
            await alice.join("b")
            await bob.chat("a", "bob's")
            await alice.chat("b", "in b")
            await alice.send("typing", {"room": "a"})
            await alice.send("direct", {"to": "bob", "content": "psst"})
            await bob.expect("direct")
            await bob.send("direct", {"to": "alice", "content": "back"})  # from bob: not kept
            await alice.expect("direct")
            await alice.chat("a", "last")
            got = [await events.receive() for _ in range(6)]
        assert got[0] == System("join", "a", "alice")
        assert got[1] == System("join", "b", "alice")
        assert _chat(got[2]) == ("b", "alice", "in b")
        assert got[3] == TypingNotice("a", "alice")
        assert isinstance(got[4], DirectMessage)
        assert (got[4].from_, got[4].content) == ("alice", "psst")
        assert _chat(got[5]) == ("a", "alice", "last")


async def test_publish_from_the_embedder_is_in_the_stream(autojump_clock):
    async with open_memory_server(Config()) as server:
        async with server.subscribe() as events:
            ack = await server.publish("news", "extra", user_id="press")
            event = await events.receive()
        assert _chat(event) == ("news", "press", "extra")
        assert isinstance(event, ChatMessage) and event.id == ack.id


@pytest.mark.parametrize("bound", ["events", "bytes"])
async def test_a_stream_that_falls_behind_is_dropped_after_what_it_had(autojump_clock, bound):
    limits = {"max_events": 3} if bound == "events" else {"max_bytes": 400}
    async with open_memory_server(Config()) as server:
        async with server.subscribe(rooms=["r"], **limits) as events:
            for n in range(6):
                await server.publish("r", f"message {n} " + "x" * 60, user_id="p")
            got = []
            with pytest.raises(StreamOverflow, match="overflowed"):
                async for event in events:
                    got.append(event)
            # What was queued came whole and in order, from the first.
            assert [e.id for e in got] == list(range(1, len(got) + 1))
            assert 1 <= len(got) < 6
            assert server.hub.observer is not None  # still registered until the block ends
        assert server.hub.observer is None  # the last stream gone: nothing observes


async def test_a_stream_ends_when_the_server_shuts_down(autojump_clock):
    async with open_memory_server(Config()) as server:
        async with server.subscribe() as events:
            async with trio.open_nursery() as nursery:
                seen = []

                async def read() -> None:
                    async for event in events:
                        seen.append(event)

                nursery.start_soon(read)
                await server.publish("r", "one", user_id="p")
                await trio.testing.wait_all_tasks_blocked()
                await server.shutdown()
        assert [_chat(e) for e in seen] == [("r", "p", "one")]


async def test_a_bot_joins_sends_and_receives_like_a_client(autojump_clock):
    async with open_memory_server(Config()) as server:
        async with (
            server.open_bot("helper") as bot,
            open_memory_client(server, user="alice") as alice,
        ):
            joined = await bot.join("lobby")
            assert isinstance(joined, Joined) and joined.members == ["helper"]
            await alice.join("lobby")
            assert await bot.receive() == System("join", "lobby", "alice")
            await alice.chat("lobby", "hello bot")
            assert _chat(await bot.receive()) == ("lobby", "alice", "hello bot")
            ack = await bot.send("lobby", "hello alice")
            assert isinstance(ack, ChatAck) and ack.id == 2
            chat = await alice.expect("chat")
            assert chat["payload"] | {"time": ""} == {
                "id": 2,
                "room": "lobby",
                "user_id": "helper",
                "content": "hello alice",
                "time": "",
            }
            assert isinstance(await bot.direct("alice", "a secret"), DirectAck)
            direct = await alice.expect("direct")
            assert (direct["payload"]["from"], direct["payload"]["content"]) == (
                "helper",
                "a secret",
            )
            await alice.send("direct", {"to": "helper", "content": "thanks"})
            event = await bot.receive()
            assert isinstance(event, DirectMessage) and event.from_ == "alice"
            await bot.set_presence("busy", "answering")
            update = await alice.expect("presence")
            assert update["payload"] == {"user_id": "helper", "status": "busy", "text": "answering"}
            assert [b.user_id for b in server.bots()] == ["helper"]
        # Gone: the hub forgot the bot's connection.
        await trio.testing.wait_all_tasks_blocked()
        assert server.stats().users == 0
        assert server.bots() == []


async def test_a_bot_gets_a_clients_refusals(autojump_clock):
    async with open_memory_server(Config(max_content_chars=10)) as server:
        async with server.open_bot("helper") as bot:
            with pytest.raises(ProtocolError) as refused:
                await bot.send("lobby", "not joined")
            assert refused.value.code == 403
            with pytest.raises(ProtocolError) as refused:
                await bot.direct("helper", "hello")  # to itself
            assert refused.value.code == 400
            with pytest.raises(ProtocolError) as refused:
                await bot.join("bad room!")
            assert refused.value.code == 400
            await bot.join("lobby")
            with pytest.raises(ProtocolError) as refused:
                await bot.send("lobby", "far too long for this server")
            assert refused.value.code == 413
            assert (await bot.send("lobby", "fits")).id == 1
        with pytest.raises(ProtocolError):
            async with server.open_bot("not a name"):
                pass


async def test_a_bot_leaving_is_seen_and_a_new_one_does_not_replay_its_refs(autojump_clock):
    async with open_memory_server(Config()) as server:
        async with open_memory_client(server, user="alice") as alice:
            await alice.join("lobby")
            async with server.open_bot("helper") as bot:
                await bot.join("lobby")
                assert (await bot.send("lobby", "one")).id == 1
            assert (await alice.expect("system"))["payload"]["event"] == "join"
            assert (await alice.expect("system"))["payload"] == {
                "event": "leave",
                "room": "lobby",
                "user_id": "helper",
            }
            async with server.open_bot("helper") as bot:
                await bot.join("lobby")
                # A fresh bot's first request is a new message, not a replay.
                assert (await bot.send("lobby", "two")).id == 2


async def test_a_bot_that_does_not_read_is_dropped_as_a_slow_consumer(autojump_clock):
    config = Config(stream_max_events=5)
    async with open_memory_server(config) as server:
        async with (
            server.open_bot("helper") as bot,
            open_memory_client(server, user="alice") as alice,
        ):
            await bot.join("lobby")
            await alice.join("lobby")  # 1 event waiting: alice's join
            for n in range(10):
                await alice.send("chat", {"room": "lobby", "content": f"m{n}"})
            leave = await alice.expect("system")
            assert leave["payload"] == {"event": "leave", "room": "lobby", "user_id": "helper"}
            assert server.hub.counters.slow_consumers == 1
            got = []
            with pytest.raises(StreamOverflow):
                async for event in bot:
                    got.append(event)
            assert got[0] == System("join", "lobby", "alice")
            assert [_chat(e)[2] for e in got[1:]] == ["m0", "m1", "m2", "m3"]
            with pytest.raises(StreamClosed):
                await bot.send("lobby", "too late")
