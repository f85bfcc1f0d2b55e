"""The embedding API with the Redis store: event streams, bots and
moderation across two processes sharing one real ``redis-server``.

Two servers in this trio run, each with its own hub and backplane; a
client on each.  What one process's embedder sees and does reaches the
members on the other.
"""

from __future__ import annotations

import trio
from support import bound_all
from test_backplane import open_cluster
from test_moderation import close_of

from trio_chat import ChatMessage
from trio_chat.testing import open_test_client

bound_all(globals(), 40)


async def _event(stream, kind: type, timeout: float = 5):
    """The next event of *kind* from *stream* (others skipped)."""
    with trio.fail_after(timeout):
        async for event in stream:
            if isinstance(event, kind):
                return event
    raise AssertionError("the stream ended")


async def test_a_stream_sees_the_rooms_messages_from_every_process(redis_server):
    async with open_cluster(redis_server) as (one, two):
        async with (
            one.subscribe(rooms=["lobby"]) as events,
            open_test_client(one, user="ann") as ann,
            open_test_client(two, user="bob") as bob,
        ):
            await ann.join("lobby")
            await bob.join("lobby")
            await bob.chat("lobby", "from the other process")
            message = await _event(events, ChatMessage)
            assert (message.user_id, message.content) == ("bob", "from the other process")
            await ann.chat("lobby", "from this one")
            message = await _event(events, ChatMessage)
            assert (message.user_id, message.content) == ("ann", "from this one")


async def test_a_bot_talks_with_a_client_on_another_process(redis_server):
    async with open_cluster(redis_server) as (one, two):
        async with one.open_bot("helper") as bot, open_test_client(two, user="bob") as bob:
            await bot.join("lobby")
            await bob.join("lobby")
            await bob.chat("lobby", "hello bot")
            with trio.fail_after(5):
                async for event in bot:
                    if isinstance(event, ChatMessage):
                        assert (event.user_id, event.content) == ("bob", "hello bot")
                        break
            ack = await bot.send("lobby", "hello bob")
            chat = await bob.expect("chat")
            assert (chat["payload"]["user_id"], chat["payload"]["id"]) == ("helper", ack.id)


async def test_moderation_acts_on_the_process_where_the_user_is(redis_server):
    async with open_cluster(redis_server) as (one, two):
        async with (
            open_test_client(one, user="ann") as ann,
            open_test_client(two, user="bob") as bob,
        ):
            await ann.join("lobby")
            await bob.join("lobby")
            await one.mute("ann", "lobby", duration=60, reason="calm down")
            refused = await ann.chat("lobby", "still talking")
            assert refused["payload"]["code"] == 403
            assert await one.unmute("ann", "lobby")
            assert (await ann.chat("lobby", "sorry"))["type"] == "ack"
            assert (await bob.expect("chat"))["payload"]["content"] == "sorry"
            # A kick closes the user's connections on the process asked.
            assert await one.kick("ann", "enough") == 1
            assert await close_of(ann) == (4001, "kicked: enough")
            left = await bob.expect("system")
            while left["payload"]["event"] != "leave":
                left = await bob.expect("system")
            assert left["payload"]["user_id"] == "ann"
