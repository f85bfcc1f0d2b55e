"""The Python client's message calls: edit, delete, react, history pages,
conversations and typing to a user, in rooms and direct conversations.

Rules: real servers on 127.0.0.1 (port 0), every test bounded; each call is
checked by what the server answers and by what the other user's client
receives; each has an error case, refused at once by the client or by the
server; with a real ``redis-server``, the Redis store's rooms and
conversations offer them.  The bookkeeping behind the calls (``ClientState``) is also tested
without I/O: a room's call waits for the room's join on a new connection,
a 429 is written again after the pause, a reaction cut off by a drop is
never toggled twice.
"""

from __future__ import annotations

import json

import pytest
import trio
from support import bound_all

from trio_chat import Config
from trio_chat._client_state import ClientState
from trio_chat._message_frames import Edit, React, ReadHistory
from trio_chat._protocol import ErrorEvent, Joined, ListConversations, Welcome
from trio_chat.client import (
    Backoff,
    ChatMessage,
    ClientError,
    Conversations,
    DirectMessage,
    MessageDeleted,
    MessageEdited,
    MessagePage,
    ReactionChanged,
    TypingWith,
    open_chat_client,
)
from trio_chat.testing import open_test_server

bound_all(globals(), 20)

ROOM = "lobby"
THUMBS = "👍"
FAST = Backoff(base=0.02, cap=0.1)


async def next_of(client, kind, timeout: float = 5.0):
    """Skip events until one of type *kind* arrives."""
    with trio.fail_after(timeout):
        async for event in client:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"stream ended before a {kind.__name__}")


async def refused(call) -> ClientError:
    with pytest.raises(ClientError) as caught:
        await call
    return caught.value


# ---------------------------------------------------------------- rooms


async def test_edit_delete_and_react_in_a_room_reach_the_other_member():
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="ann") as ann,
            open_chat_client(server.url, user="bob") as bob,
        ):
            await ann.join(ROOM)
            await bob.join(ROOM)
            ack = await ann.send(ROOM, "helo")

            edited = await ann.edit(ROOM, ack.id, "hello @bob")
            assert isinstance(edited, MessageEdited)
            assert (edited.room, edited.with_, edited.id, edited.content) == (
                ROOM,
                None,
                ack.id,
                "hello @bob",
            )
            assert edited.user_id == "ann" and edited.mentions == ("bob",) and edited.edited
            seen = await next_of(bob, MessageEdited)
            assert (seen.id, seen.content, seen.ref) == (ack.id, "hello @bob", None)
            # The editor's own stream has it too (the server's answer).
            assert (await next_of(ann, MessageEdited)).content == "hello @bob"

            on = await bob.react(ROOM, ack.id, THUMBS)
            assert isinstance(on, ReactionChanged)
            assert (on.emoji, on.user_id, on.on, on.count) == (THUMBS, "bob", True, 1)
            assert (await next_of(ann, ReactionChanged)).on is True
            off = await bob.react(ROOM, ack.id, THUMBS)
            assert (off.on, off.count) == (False, 0)

            gone = await ann.delete(ROOM, ack.id)
            assert isinstance(gone, MessageDeleted)
            assert (gone.id, gone.user_id, gone.by) == (ack.id, "ann", "ann")
            assert (await next_of(bob, MessageDeleted)).by == "ann"
            [tombstone] = (await bob.history(ROOM)).messages
            assert isinstance(tombstone, ChatMessage)
            assert (tombstone.id, tombstone.deleted, tombstone.content) == (ack.id, True, "")
            # A later member's join brings the tombstone, as a typed message.
            async with open_chat_client(server.url, user="cy") as cy:
                await cy.join(ROOM)
                replayed = await next_of(cy, ChatMessage)
                assert (replayed.id, replayed.deleted, replayed.content) == (ack.id, True, "")


async def test_the_server_refuses_edits_and_deletes_of_someone_elses_message():
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="ann") as ann,
            open_chat_client(server.url, user="bob") as bob,
        ):
            await ann.join(ROOM)
            await bob.join(ROOM)
            ack = await ann.send(ROOM, "mine")
            error = await refused(bob.edit(ROOM, ack.id, "theirs"))
            assert error.code == 403 and "your own" in error.message
            assert (await refused(bob.delete(ROOM, ack.id))).code == 403
            error = await refused(ann.edit(ROOM, 99, "nothing there"))
            assert error.code == 404 and "99" in error.message
            await ann.delete(ROOM, ack.id)
            assert (await refused(bob.react(ROOM, ack.id, THUMBS))).code == 404
            # The client is still usable after the refusals.
            assert (await ann.send(ROOM, "still here")).id == ack.id + 1


async def test_what_the_server_would_refuse_is_refused_before_sending():
    config = Config(max_content_chars=10)
    async with open_test_server(config) as server:
        async with open_chat_client(server.url, user="ann") as ann:
            await ann.join(ROOM)
            ack = await ann.send(ROOM, "short")
            cases = [
                (ann.edit(None, ack.id, "x"), 400),  # neither room nor with_
                (ann.edit(ROOM, ack.id, "x", with_="bob"), 400),  # both
                (ann.edit(ROOM, -1, "x"), 400),
                (ann.edit(ROOM, ack.id, ""), 400),
                (ann.edit(ROOM, ack.id, "far too long"), 413),
                (ann.edit("elsewhere", ack.id, "x"), 403),  # not joined
                (ann.edit("bad room!", ack.id, "x"), 400),
                (ann.delete(None, ack.id, with_="not a user!"), 400),
                (ann.react(ROOM, ack.id, "🦀"), 400),  # not in limits.reactions
                (ann.history("elsewhere"), 403),
            ]
            for call, code in cases:
                assert (await refused(call)).code == code
            assert THUMBS in ann.limits["reactions"]
            assert (await ann.react(ROOM, ack.id, THUMBS)).count == 1


async def test_history_pages_back_with_before():
    # Messages of about 3 KB: 30 of them do not fit one 64 KiB page.
    async with open_test_server(Config(rate_messages=1000)) as server:
        async with open_chat_client(server.url, user="ann") as ann:
            await ann.join(ROOM)
            for n in range(1, 31):
                await ann.send(ROOM, f"{n:02} " + "x" * 3000)
            newest = await ann.history(ROOM)
            assert isinstance(newest, MessagePage) and newest.truncated
            ids = [m.id for m in newest.messages]
            assert ids == list(range(ids[0], 31)) and ids[0] > 1
            assert newest.before == ids[0]
            older = await ann.history(ROOM, before=newest.before)
            assert [m.id for m in older.messages] == list(range(1, ids[0]))
            assert not older.truncated and older.room == ROOM
            assert all(isinstance(m, ChatMessage) for m in older.messages)
            assert older.messages[0].content.startswith("01 ")
            since = await ann.history(ROOM, since=28)
            assert [m.id for m in since.messages] == [29, 30]
            assert (await ann.history(ROOM, before=1)).messages == ()


async def test_an_edit_across_a_drop_is_written_again_once_the_room_is_joined():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="ann", backoff=FAST) as ann:
            await ann.join(ROOM)
            ack = await ann.send(ROOM, "before the drop")
            for conn in server.connections("ann"):
                server.close_connection(conn.session_id, 1013, "test drop")
            edited = await ann.edit(ROOM, ack.id, "after the drop")
            assert edited.content == "after the drop"
            [message] = (await ann.history(ROOM)).messages
            assert message.content == "after the drop" and message.edited == edited.edited


# ---------------------------------------------------------------- conversations


async def test_direct_conversations_edits_reactions_history_and_listing():
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="ann") as ann,
            open_chat_client(server.url, user="bob") as bob,
        ):
            first = await ann.direct("bob", "hi bob")
            second = await ann.direct("bob", "lunch?")
            assert (first.id, second.id) == (1, 2)
            got = await next_of(bob, DirectMessage)
            assert (got.id, got.from_, got.to, got.content) == (1, "ann", "bob", "hi bob")

            edited = await ann.edit(None, 2, "lunch at 1?", with_="bob")
            assert (edited.with_, edited.room, edited.content) == ("bob", None, "lunch at 1?")
            theirs = await next_of(bob, MessageEdited)
            assert (theirs.with_, theirs.id) == ("ann", 2)  # named from bob's side
            reaction = await bob.react(None, 2, THUMBS, with_="ann")
            assert (reaction.with_, reaction.count) == ("ann", 1)
            assert (await next_of(ann, ReactionChanged)).with_ == "bob"

            page = await bob.history(with_="ann")
            assert page.with_ == "ann" and page.room is None
            assert all(isinstance(m, DirectMessage) for m in page.messages)
            assert [(m.id, m.from_, m.content) for m in page.messages] == [
                (1, "ann", "hi bob"),
                (2, "ann", "lunch at 1?"),
            ]
            extra = page.messages[1].extra or {}
            assert extra["reactions"] == {THUMBS: ["bob"]} and "edited" in extra

            listing = await bob.conversations()
            assert isinstance(listing, Conversations) and not listing.truncated
            [conversation] = listing
            assert (conversation.with_, conversation.last_id) == ("ann", 2)
            assert conversation.last is not None and conversation.last.content == "lunch at 1?"


async def test_conversation_refusals():
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="ann") as ann,
            open_chat_client(server.url, user="bob") as bob,
        ):
            await ann.direct("bob", "hi")
            assert (await refused(bob.delete(None, 1, with_="ann"))).code == 403
            assert (await refused(ann.history(with_="nobody"))).code == 404
            assert (await refused(ann.typing_to("not a user!"))).code == 400
            assert len(await ann.conversations()) == 1


async def test_typing_to_a_user_reaches_them():
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="ann") as ann,
            open_chat_client(server.url, user="bob") as bob,
        ):
            await ann.typing_to("bob")
            notice = await next_of(bob, TypingWith)
            assert (notice.with_, notice.user_id) == ("ann", "ann")


async def test_with_the_redis_store_rooms_and_conversations_have_them(redis_server):
    config = Config(redis_url=redis_server.url + "?timeout=0.5&heartbeat=0.2&node_ttl=2")
    async with open_test_server(config) as server:
        async with (
            open_chat_client(server.url, user="ann") as ann,
            open_chat_client(server.url, user="bob") as bob,
        ):
            await ann.join(ROOM)
            await bob.join(ROOM)
            ack = await ann.send(ROOM, "on redis")
            assert (await ann.edit(ROOM, ack.id, "on redis, edited")).content == "on redis, edited"
            assert (await bob.react(ROOM, ack.id, THUMBS)).count == 1
            [message] = (await bob.history(ROOM)).messages
            assert isinstance(message, ChatMessage)
            assert (message.content, message.reactions) == ("on redis, edited", {THUMBS: ("bob",)})
            assert (await next_of(bob, MessageEdited)).content == "on redis, edited"
            direct = await ann.direct("bob", "psst")
            assert direct.id == 1
            edited = await ann.edit(None, direct.id, "psst, edited", with_="bob")
            assert edited.with_ == "bob"
            [item] = await bob.conversations()
            assert (item.with_, item.last_id, item.unread) == ("ann", 1, 1)
            [message] = (await bob.history(with_="ann")).messages
            assert message.content == "psst, edited"


# ---------------------------------------------------------------- pure parts


def _welcome(rate=None) -> Welcome:
    limits = {
        "max_message_bytes": 65536,
        "max_content_chars": 4000,
        "rate": rate or {"messages": 30, "per_seconds": 10},
        "reactions": [THUMBS],
    }
    return Welcome("s1", "ann", limits)


def _joined_room(state: ClientState) -> None:
    frame = json.loads(state.next_frame(0.0))
    assert frame["type"] == "join"
    state.receive(Joined(ROOM, ["ann"], [], False, frame["ref"]), 0.0)


def test_a_room_call_waits_for_the_rooms_join_on_a_new_connection():
    state = ClientState()
    state.join(ROOM, lambda result: None)
    state.connection_made(_welcome())
    _joined_room(state)
    state.connection_lost()
    call = state.request(Edit(ROOM, None, 1, "new text"))
    assert state.next_frame(0.0) is None  # offline
    state.connection_made(_welcome())
    assert json.loads(state.next_frame(0.0))["type"] == "join"
    assert state.next_frame(0.0) is None  # the edit waits for the joined
    state.receive(Joined(ROOM, ["ann"], [], False, None), 0.0)
    frame = json.loads(state.next_frame(0.0))
    assert frame == {
        "type": "edit",
        "payload": {"room": ROOM, "id": 1, "content": "new text"},
        "ref": call.ref,
    }


def test_a_rate_limited_call_is_written_again_after_the_pause():
    state = ClientState()
    state.connection_made(_welcome())
    call = state.request(ListConversations())
    first = state.next_frame(0.0)
    emitted = state.receive(ErrorEvent(429, "slow down", call.ref, 2000), 0.0)
    assert [e.code for e in emitted] == [429] and not call.done
    wait = state.next_frame(1.0)
    assert isinstance(wait, float) and wait == pytest.approx(1.0)
    assert state.next_frame(2.0) == first


def test_a_reaction_cut_off_by_a_drop_fails_and_is_not_sent_again():
    state = ClientState()
    state.connection_made(_welcome())
    read = state.request(ReadHistory(None, "bob", before=5))
    react = state.request(React(None, "bob", 3, THUMBS))
    history = state.next_frame(0.0)
    assert json.loads(state.next_frame(0.0))["type"] == "react"
    state.connection_lost()
    assert react.error is not None and react.error.code == 0
    assert not read.done
    state.connection_made(_welcome())
    assert state.next_frame(0.0) == history  # a read is safe to repeat
    assert state.next_frame(0.0) is None


def test_leaving_a_room_fails_its_calls_not_written_yet():
    state = ClientState()
    state.join(ROOM, lambda result: None)
    call = state.request(Edit(ROOM, None, 1, "x"))
    state.leave(ROOM, lambda: None)
    assert call.error is not None and call.error.code == 0


def test_a_call_goes_out_after_the_messages_posted_before_it():
    state = ClientState()
    state.join(ROOM, lambda result: None)
    state.connection_made(_welcome())
    _joined_room(state)
    state.submit("chat", ROOM, "helo")
    state.request(Edit(ROOM, None, 1, "hello"))
    kinds = [json.loads(state.next_frame(0.0))["type"] for _ in range(2)]
    assert kinds == ["chat", "edit"]
