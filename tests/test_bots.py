"""A bot edits, deletes, reacts, reads history and conversations, marks as
read, finds rooms and sets a topic, as a client would.

A real server over in-memory streams on trio's virtual clock; each call's
answer is the event a client's frame would get, and members see its effect.
"""

from __future__ import annotations

import pytest

from trio_chat import (
    Config,
    HistoryPage,
    MessageDeleted,
    MessageEdited,
    ProtocolError,
    ReactionChanged,
    ReadMarker,
    RoomList,
    System,
)
from trio_chat._message_ops import DEFAULT_REACTIONS
from trio_chat.testing import open_memory_client, open_memory_server

THUMBS = DEFAULT_REACTIONS[0]


async def test_a_bot_changes_its_messages_and_members_see_it(autojump_clock):
    async with open_memory_server(Config()) as server:
        async with (
            server.open_bot("helper") as bot,
            open_memory_client(server, user="alice") as alice,
        ):
            await bot.join("lobby")
            await alice.join("lobby")
            ack = await bot.send("lobby", "helo")
            edited = await bot.edit("lobby", ack.id, "hello")
            assert isinstance(edited, MessageEdited) and edited.content == "hello"
            assert (await alice.expect("edit"))["payload"]["content"] == "hello"
            reaction = await bot.react("lobby", ack.id, THUMBS)
            assert isinstance(reaction, ReactionChanged) and (reaction.on, reaction.count) == (
                True,
                1,
            )
            assert (await alice.expect("reaction"))["payload"]["user_id"] == "helper"
            chat = await alice.chat("lobby", "mine")
            with pytest.raises(ProtocolError) as refused:
                await bot.delete("lobby", chat["payload"]["id"])
            assert refused.value.code == 403  # someone else's
            deleted = await bot.delete("lobby", ack.id)
            assert isinstance(deleted, MessageDeleted) and deleted.by == "helper"
            assert (await alice.expect("delete"))["payload"]["id"] == ack.id
            page = await bot.history("lobby")
            assert isinstance(page, HistoryPage)
            assert [(m["id"], m.get("deleted", False)) for m in page.messages] == [
                (1, True),
                (2, False),
            ]


async def test_a_bot_reads_marks_finds_rooms_and_sets_a_topic(autojump_clock):
    async with open_memory_server(Config()) as server:
        async with (
            server.open_bot("helper") as bot,
            open_memory_client(server, user="alice") as alice,
        ):
            await alice.join("lobby")
            await alice.chat("lobby", "hi")
            await alice.send("direct", {"to": "helper", "content": "psst"})
            await alice.expect("ack")
            await bot.join("lobby")
            marker = await bot.mark_read("lobby", 1)
            assert marker == ReadMarker("lobby", None, 1, marker.ref)
            [item] = (await bot.conversations()).conversations
            assert (item["with"], item["unread"]) == ("alice", 1)
            assert (await bot.history(with_="alice")).messages[0]["content"] == "psst"
            topic = await bot.set_topic("lobby", "Ask me")
            assert isinstance(topic, System) and (topic.event, topic.text) == ("topic", "Ask me")
            assert (await alice.expect("system"))["payload"]["event"] == "join"  # the bot's
            assert (await alice.expect("system"))["payload"]["text"] == "Ask me"
            listing = await bot.find_rooms("ask")
            assert isinstance(listing, RoomList)
            assert listing.rooms == [{"room": "lobby", "members": 2, "topic": "Ask me"}]
            with pytest.raises(ProtocolError) as refused:
                await bot.set_topic("elsewhere", "x")
            assert refused.value.code == 403
