"""The Python client's read markers, room listings and topics.

Rules: real servers on 127.0.0.1 (port 0), every test bounded; each call is
checked by what the server answers and by what another connection (the
user's own, or another member's) receives; errors are refused at once by the
client or by the server; with a real ``redis-server``, markers are 501
(tests/test_backplane_rooms.py has topics and listings there).  Absence is shown by sequence: a marker that was not sent is followed
by one that was, and the other connection sees only the second.  The
bookkeeping (``ClientState``: a marker never moves back, one ``read`` per
room a second shared by the calls made meanwhile) is also tested without
I/O.
"""

from __future__ import annotations

import json

import pytest
import trio
from support import bound_all

from trio_chat import Config
from trio_chat._client_rooms import READ_EVERY
from trio_chat._client_state import ClientState
from trio_chat._protocol import ErrorEvent, Joined, Welcome
from trio_chat._room_frames import MarkRead
from trio_chat.client import (
    ClientError,
    ReadMarker,
    RoomInfo,
    RoomListing,
    System,
    open_chat_client,
)
from trio_chat.testing import open_test_server

bound_all(globals(), 20)

ROOM = "lobby"


async def next_of(client, kind, timeout: float = 5.0):
    """Skip events until one of type *kind* arrives."""
    with trio.fail_after(timeout):
        async for event in client:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"stream ended before a {kind.__name__}")


async def next_topic(client) -> System:
    """Skip events until a topic's ``system`` event arrives."""
    while (event := await next_of(client, System)).event != "topic":
        pass
    return event


async def refused(call) -> ClientError:
    with pytest.raises(ClientError) as caught:
        await call
    return caught.value


# ---------------------------------------------------------------- read markers


async def test_joined_counts_unread_and_a_marker_reaches_the_users_other_connection():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="ann") as ann:
            await ann.join(ROOM)
            for text in ("one", "two @bob", "three"):
                await ann.send(ROOM, text)
            async with (
                open_chat_client(server.url, user="bob", key="bob-phone") as phone,
                open_chat_client(server.url, user="bob", key="bob-phone") as laptop,
            ):
                joined = await phone.join(ROOM)
                assert (joined.read, joined.unread, joined.mentions) == (0, 3, 1)
                await laptop.join(ROOM)

                marker = await phone.mark_read(ROOM, 2)
                assert isinstance(marker, ReadMarker)
                assert (marker.room, marker.with_, marker.id) == (ROOM, None, 2)
                assert phone.read_marker(ROOM) == 2
                told = await next_of(laptop, ReadMarker)
                assert (told.room, told.id, told.ref) == (ROOM, 2, None)
                assert laptop.read_marker(ROOM) == 2
                # The phone's own stream has it too (the server's answer).
                assert (await next_of(phone, ReadMarker)).id == 2

                # Not forward: answered at once with the marker, never sent;
                # the laptop's next marker is the one that moved.
                assert (await phone.mark_read(ROOM, 1)).id == 2
                assert (await phone.mark_read(ROOM, 3)).id == 3
                assert (await next_of(laptop, ReadMarker)).id == 3

            async with open_chat_client(server.url, user="bob", key="bob-phone") as later:
                joined = await later.join(ROOM)
                assert (joined.read, joined.unread, joined.mentions) == (3, 0, 0)
                await later.send(ROOM, "me too")  # posting moves the marker
                assert later.read_marker(ROOM) == 4
                assert (await later.mark_read(ROOM, 4)).id == 4


async def test_marks_in_a_second_share_one_read_with_the_furthest_id():
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="ann") as ann,
            open_chat_client(server.url, user="bob", key="bob-phone") as phone,
            open_chat_client(server.url, user="bob", key="bob-phone") as laptop,
        ):
            await ann.join(ROOM)
            for n in range(5):
                await ann.send(ROOM, f"message {n}")
            await phone.join(ROOM)
            await laptop.join(ROOM)
            assert (await phone.mark_read(ROOM, 1)).id == 1
            results: list[int] = []
            async with trio.open_nursery() as nursery:
                for id_ in (2, 4, 3):
                    nursery.start_soon(_mark, results, phone, id_)
            assert results == [4, 4, 4]  # one read, a second after the first
            assert [(await next_of(laptop, ReadMarker)).id for _ in range(2)] == [1, 4]


async def _mark(results: list[int], client, id_: int) -> None:
    results.append((await client.mark_read(ROOM, id_)).id)


async def test_read_marker_refusals():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="ann") as ann:
            await ann.join(ROOM)
            cases = [
                (ann.mark_read("elsewhere", 1), 403),  # not joined
                (ann.mark_read(None, 1), 400),  # neither room nor with_
                (ann.mark_read(ROOM, 1, with_="bob"), 400),  # both
                (ann.mark_read(ROOM, -1), 400),
                (ann.mark_read("bad room!", 1), 400),
                (ann.mark_read(None, 1, with_="nobody"), 404),  # from the server
            ]
            for call, code in cases:
                assert (await refused(call)).code == code


async def test_conversations_carry_markers_and_unread_counts():
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="ann") as ann,
            open_chat_client(server.url, user="bob") as bob,
        ):
            await ann.direct("bob", "hi")
            await ann.direct("bob", "are you there @bob?")
            [entry] = await bob.conversations()
            assert (entry.with_, entry.read, entry.unread, entry.mentions) == ("ann", 0, 2, 1)
            [own] = await ann.conversations()
            assert (own.read, own.unread) == (2, 0)  # posting moved ann's marker
            marker = await bob.mark_read(None, 1, with_="ann")
            assert (marker.room, marker.with_, marker.id) == (None, "ann", 1)
            [entry] = await bob.conversations()
            assert (entry.read, entry.unread, entry.mentions) == (1, 1, 1)


# ---------------------------------------------------------------- rooms and topics


async def test_topics_reach_the_members_and_later_joiners():
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="ann") as ann,
            open_chat_client(server.url, user="bob") as bob,
        ):
            await ann.join(ROOM)
            await bob.join(ROOM)
            event = await ann.set_topic(ROOM, "all things trio")
            assert isinstance(event, System)
            assert (event.event, event.room, event.user_id, event.text) == (
                "topic",
                ROOM,
                "ann",
                "all things trio",
            )
            seen = await next_topic(bob)
            assert (seen.text, seen.ref) == ("all things trio", None)
            assert bob.topic(ROOM) == ann.topic(ROOM) == "all things trio"
            assert (await next_topic(ann)).ref == event.ref  # the answer, in the stream

            async with open_chat_client(server.url, user="cy") as cy:
                assert (await cy.join(ROOM)).topic == "all things trio"
                assert cy.topic(ROOM) == "all things trio"
                await ann.set_topic(ROOM, "")  # cleared
                assert (await next_topic(cy)).text == ""
                assert cy.topic(ROOM) is None and ann.topic(ROOM) is None

            assert (await refused(ann.set_topic("elsewhere", "x"))).code == 403
            assert (await refused(ann.set_topic(ROOM, "x" * 257))).code == 400
            assert (await refused(ann.set_topic("bad room!", "x"))).code == 400


async def test_find_rooms_lists_member_counts_and_topics():
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="ann") as ann,
            open_chat_client(server.url, user="bob") as bob,
        ):
            for room in ("trio-dev", "lobby"):
                await ann.join(room)
            await bob.join("lobby")
            await ann.set_topic("trio-dev", "structured concurrency")
            listing = await bob.find_rooms()
            assert isinstance(listing, RoomListing) and not listing.truncated
            assert list(listing) == [
                RoomInfo("lobby", 2, None),
                RoomInfo("trio-dev", 1, "structured concurrency"),
            ]
            found = await bob.find_rooms("CONCURRENCY")  # in the topic, any case
            assert [room.room for room in found] == ["trio-dev"]
            assert len(await bob.find_rooms("nothing like it")) == 0
            assert (await refused(bob.find_rooms("q" * 65))).code == 400


async def test_with_the_redis_store_markers_are_501_and_rooms_and_topics_work(redis_server):
    config = Config(redis_url=redis_server.url + "?timeout=0.5&heartbeat=0.2&node_ttl=2")
    async with open_test_server(config) as server:
        async with (
            open_chat_client(server.url, user="ann") as ann,
            open_chat_client(server.url, user="bob") as bob,
        ):
            joined = await ann.join(ROOM)
            assert (joined.read, joined.unread, joined.topic) == (None, None, None)
            await bob.join(ROOM)
            await ann.send(ROOM, "on redis")
            error = await refused(bob.mark_read(ROOM, 1))
            assert (error.code, error.message) == (501, "not available with the Redis store")
            assert (await bob.set_topic(ROOM, "on redis too")).text == "on redis too"
            assert (await next_topic(ann)).text == "on redis too"
            [listed] = await ann.find_rooms()
            assert (listed.room, listed.members, listed.topic) == (ROOM, 2, "on redis too")


# ---------------------------------------------------------------- pure parts


def _online(state: ClientState) -> None:
    limits = {"max_message_bytes": 65536, "rate": {"messages": 30, "per_seconds": 10}}
    state.join(ROOM, lambda result: None)
    state.connection_made(Welcome("s1", "ann", limits))
    frame = json.loads(state.next_frame(0.0))
    assert frame["type"] == "join"
    state.receive(Joined(ROOM, ["ann"], [], False, frame["ref"], read=3), 0.0)


def test_a_marker_that_would_not_move_is_answered_without_a_frame():
    state = ClientState()
    _online(state)
    answer = state.mark_read(MarkRead(ROOM, None, 3))
    assert answer == ReadMarker(ROOM, None, 3)
    assert state.next_frame(0.0) is None


def test_reads_of_a_room_are_a_second_apart_and_share_the_queued_one():
    state = ClientState()
    _online(state)
    first = state.mark_read(MarkRead(ROOM, None, 4))
    frame = json.loads(state.next_frame(0.0))
    assert frame == {"type": "read", "payload": {"room": ROOM, "id": 4}, "ref": first.ref}
    second = state.mark_read(MarkRead(ROOM, None, 5))
    third = state.mark_read(MarkRead(ROOM, None, 7))
    assert third is second and second is not first
    assert state.next_frame(0.25) == pytest.approx(READ_EVERY - 0.25)
    frame = json.loads(state.next_frame(READ_EVERY))
    assert (frame["payload"]["id"], frame["ref"]) == (7, second.ref)
    # An answer that is in flight already asks as far: the call is shared.
    assert state.mark_read(MarkRead(ROOM, None, 6)) is second


def test_a_marker_told_by_another_connection_answers_the_queued_read():
    state = ClientState()
    _online(state)
    state.mark_read(MarkRead(ROOM, None, 4))
    state.next_frame(0.0)
    queued = state.mark_read(MarkRead(ROOM, None, 6))
    emitted = state.receive(ReadMarker(ROOM, None, 8), 0.1)
    assert emitted == [ReadMarker(ROOM, None, 8)]
    assert queued.answer == ReadMarker(ROOM, None, 8)
    assert state.next_frame(READ_EVERY) is None


def test_a_rate_limited_read_is_written_again_after_the_pause():
    state = ClientState()
    _online(state)
    call = state.mark_read(MarkRead(ROOM, None, 4))
    first = state.next_frame(0.0)
    emitted = state.receive(ErrorEvent(429, "slow down", call.ref, 2000), 0.0)
    assert [e.code for e in emitted] == [429] and not call.done
    assert state.next_frame(1.0) == pytest.approx(1.0)
    assert state.next_frame(2.0) == first


def test_a_read_cut_off_by_a_drop_is_written_again_once_the_room_is_joined():
    state = ClientState()
    _online(state)
    call = state.mark_read(MarkRead(ROOM, None, 4))
    first = state.next_frame(0.0)
    state.connection_lost()
    assert not call.done
    _online(state)
    assert state.next_frame(READ_EVERY) == first
