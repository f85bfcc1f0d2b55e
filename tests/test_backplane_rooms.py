"""Topics and the room directory with the Redis store: the pure state, and
two processes sharing one real ``redis-server``.

The pure :class:`ClusterState` is given Redis's answers and pub/sub
messages by hand.  Two servers in this trio run, each with its own hub and backplane, and
clients on each: what one process's client or embedder does reaches the
members on the other, and what joins afterwards on either sees it.  An
absence is shown by sequence: a frame that was not sent is followed by one
sent after it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from support import bound_all
from test_backplane import _up, _wait_for, open_cluster

from trio_chat import ProtocolError, make_token
from trio_chat._backplane_ops import LoadOp, LoadResult, MembersOp
from trio_chat._backplane_state import ClusterState
from trio_chat._protocol import Join
from trio_chat.testing import TestClient, open_test_client

bound_all(globals(), 40)

SECRET = "redis-rooms-secret-0123456789abcdef"


async def _system(client: TestClient, event: str) -> dict[str, Any]:
    """The next ``system`` *event* frame (others skipped)."""
    while True:
        frame = await client.expect("system")
        if frame["payload"]["event"] == event:
            return frame


async def _chat_seen(client: TestClient, id_: int) -> None:
    """Skip frames until chat *id_* arrives."""
    while (await client.expect("chat"))["payload"]["id"] != id_:
        pass


def _topic(user: str, text: str, room: str = "lobby") -> dict[str, Any]:
    return {"event": "topic", "room": room, "user_id": user, "text": text}


def _frames(deliveries, key) -> list[dict[str, Any]]:
    return [json.loads(d.event.to_json()) for d in deliveries if key in d.to]


def test_a_topic_told_while_the_room_loads_follows_the_joined():
    state = ClusterState("n1")
    _up(state)
    state.connect(1, "ann")
    state.handle(1, Join("r"), 0.0)
    [load] = [op for op in state.take_ops() if isinstance(op, LoadOp)]
    # Pub/sub overtakes the load's answer, which read the room before it
    # (membership version 3); the change took version 5: one was lost.
    news = [("trio_chat:ch:r:r", "o 5 n2:1 bob new topic")]
    assert state.on_messages(news) == []
    result = LoadResult(0, [], ["bob"], 3, {}, topic="old topic")
    [joined, topic] = _frames(state.on_result(load, result), 1)
    assert joined["payload"]["topic"] == "old topic"
    assert topic["payload"] == _topic("bob", "new topic", "r")
    assert [type(op) for op in state.take_ops()] == [MembersOp]
    # A stale copy changes nothing; a snapshot brings what was lost.
    assert state.on_messages([("trio_chat:ch:r:r", "o 4 n2:1 bob stale")]) == []
    state.on_result(MembersOp("r"), (5, ["bob"], "new topic"))
    assert _frames(state.handle(1, Join("r", ref="again"), 0.0), 1)[0]["payload"]["topic"] == (
        "new topic"
    )


def test_a_close_told_while_the_room_loads_follows_the_joined_unless_older():
    for loaded_version, closed in [(3, True), (5, False)]:
        state = ClusterState("n1")
        _up(state)
        state.connect(1, "ann")
        state.handle(1, Join("r"), 0.0)
        [load] = [op for op in state.take_ops() if isinstance(op, LoadOp)]
        news = [("trio_chat:ch:r:r", "c 5 n2 server the room was closed")]
        assert state.on_messages(news) == []
        frames = _frames(state.on_result(load, LoadResult(0, [], [], loaded_version, {})), 1)
        if closed:  # the load read the room before the close
            assert [f["type"] for f in frames] == ["joined", "system", "left"]
            assert frames[1]["payload"]["event"] == "close"
            assert state.rooms_of(1) == [] and state.room_names() == []
            # Its registration, if Redis applied it after the close, goes.
            assert [(op.room, op.joined) for op in state.take_ops()] == [("r", False)]
        else:  # the load read the room made again after the close
            assert [f["type"] for f in frames] == ["joined"]
            assert state.rooms_of(1) == ["r"]


async def test_a_topic_reaches_every_process_and_later_joins(redis_server):
    async with open_cluster(redis_server) as (one, two):
        async with (
            open_test_client(one, user="ann") as ann,
            open_test_client(two, user="bob") as bob,
        ):
            assert "topic" not in (await ann.join("lobby"))["payload"]
            await bob.join("lobby")
            await ann.send("topic", {"room": "lobby", "topic": "trio talk"}, ref="t1")
            answer = await _system(ann, "topic")
            assert (answer["ref"], answer["payload"]) == ("t1", _topic("ann", "trio talk"))
            seen = await _system(bob, "topic")
            assert "ref" not in seen and seen["payload"] == _topic("ann", "trio talk")
            # Later joins see it on either process, the sending one at once.
            async with (
                open_test_client(one, user="cy") as cy,
                open_test_client(two, user="dan") as dan,
            ):
                assert (await cy.join("lobby"))["payload"]["topic"] == "trio talk"
                assert (await dan.join("lobby"))["payload"]["topic"] == "trio talk"
            # A process that stops serving the room reads it from Redis again.
            await bob.send("leave", {"room": "lobby"})
            await bob.expect("left")
            assert (await bob.join("lobby"))["payload"]["topic"] == "trio talk"
            # Cleared: the system event carries "", joined no topic.
            await bob.send("topic", {"room": "lobby", "topic": ""}, ref="t2")
            assert (await _system(bob, "topic"))["ref"] == "t2"
            assert (await _system(ann, "topic"))["payload"] == _topic("bob", "")
            async with open_test_client(one, user="eve") as eve:
                assert "topic" not in (await eve.join("lobby"))["payload"]
            # Only in a room joined; the length is the protocol's.
            await ann.send("topic", {"room": "elsewhere", "topic": "x"}, ref="t3")
            refused = await ann.expect("error")
            assert (refused["ref"], refused["payload"]["code"]) == ("t3", 403)
            await ann.send("topic", {"room": "lobby", "topic": "x" * 257}, ref="t4")
            assert (await ann.expect("error"))["payload"]["code"] == 400


async def test_an_empty_room_keeps_its_topic(redis_server):
    async with open_cluster(redis_server) as (one, two):
        async with open_test_client(one, user="ann") as ann:
            await ann.join("quiet")
            await ann.send("topic", {"room": "quiet", "topic": "kept"}, ref="t")
            await _system(ann, "topic")
        async with open_test_client(two, user="bob") as bob:
            assert (await bob.join("quiet"))["payload"]["topic"] == "kept"


async def test_a_moderator_sets_a_topic_on_another_process(redis_server):
    async with open_cluster(redis_server) as (one, two):
        async with (
            open_test_client(one, user="ann") as ann,
            open_test_client(one, user="bob") as bob,
        ):
            await ann.join("lobby")
            await bob.join("lobby")
            # Process two serves no member of the room: Redis has it.
            await two.set_topic("lobby", "Be kind")
            for client in (ann, bob):
                assert (await _system(client, "topic"))["payload"] == _topic("server", "Be kind")
            async with open_test_client(two, user="cy") as cy:
                assert (await cy.join("lobby"))["payload"]["topic"] == "Be kind"
            for room, topic, code in [("nowhere", "x", 404), ("lobby", "t" * 257, 400)]:
                with pytest.raises(ProtocolError) as info:
                    await two.set_topic(room, topic)
                assert info.value.code == code


async def _rooms(client: TestClient, query: str | None = None) -> dict[str, Any]:
    await client.send("rooms", {} if query is None else {"query": query}, ref="q")
    frame = await client.expect("rooms")
    assert frame["ref"] == "q"
    return frame["payload"]


def _listed(*rooms: tuple[str, int, str | None]) -> list[dict[str, Any]]:
    return [{"room": r, "members": n, "topic": t} for r, n, t in rooms]


async def test_the_directory_counts_members_across_processes(redis_server):
    async with open_cluster(redis_server) as (one, two):
        async with (
            open_test_client(one, user="ann") as ann,
            open_test_client(two, user="bob") as bob,
            open_test_client(two, user="cy") as cy,
        ):
            for client, rooms in [(ann, ["trio-dev", "lobby"]), (bob, ["lobby", "team-a"])]:
                for room in rooms:
                    await client.join(room)
            await cy.join("lobby")
            await ann.send("topic", {"room": "trio-dev", "topic": "Structured concurrency"})
            await _system(ann, "topic")
            listing = await _rooms(bob)
            assert listing == {
                "rooms": _listed(
                    ("lobby", 3, None),
                    ("team-a", 1, None),
                    ("trio-dev", 1, "Structured concurrency"),
                ),
                "truncated": False,
            }
            assert await _rooms(ann) == listing  # the same from either process
            found = await _rooms(cy, "CONCURRENCY")  # in the topic, any case
            assert found["rooms"] == _listed(("trio-dev", 1, "Structured concurrency"))
            assert (await _rooms(cy, "nothing like it"))["rooms"] == []
            # Leaving: a room kept for its topic or history is listed
            # without members, one with neither is not.
            await ann.chat("lobby", "history")
            for client, room in [(ann, "trio-dev"), (bob, "team-a"), (ann, "lobby")]:
                await client.send("leave", {"room": room})
                await client.expect("left")
            await bob.send("leave", {"room": "lobby"})
            await bob.expect("left")
            assert (await _rooms(ann))["rooms"] == _listed(
                ("lobby", 1, None), ("trio-dev", 0, "Structured concurrency")
            )
            await cy.send("leave", {"room": "lobby"})
            await cy.expect("left")
            assert (await _rooms(ann))["rooms"] == _listed(
                ("lobby", 0, None), ("trio-dev", 0, "Structured concurrency")
            )


async def test_a_tokens_patterns_bound_the_directory(redis_server):
    async with open_cluster(redis_server, secret=SECRET) as (one, two):
        admin = make_token(SECRET, "ann")
        limited = make_token(SECRET, "bob", rooms=["team-*"])
        async with (
            open_test_client(one, token=admin) as ann,
            open_test_client(two, token=limited) as bob,
        ):
            for room in ["lobby", "team-a", "team-b"]:
                await ann.join(room)
            assert [r["room"] for r in (await _rooms(bob))["rooms"]] == ["team-a", "team-b"]
            assert [r["room"] for r in (await _rooms(ann, "TEAM"))["rooms"]] == ["team-a", "team-b"]


async def test_a_listing_looks_at_no_more_than_2000_rooms(redis_server):
    async with open_cluster(redis_server) as (one, _two):
        async with open_test_client(one, user="ann") as ann:
            await ann.join("target")
            # 1,999 busier rooms come first: the target is still looked at.
            busy = [arg for i in range(1999) for arg in ("-5", f"busy-{i:04}")]
            redis_server.command("ZADD", "trio_chat:dir", *busy)
            found = await _rooms(ann, "target")
            assert (found["rooms"], found["truncated"]) == (_listed(("target", 1, None)), False)
            # One more: the target is the 2,001st, not looked at.
            redis_server.command("ZADD", "trio_chat:dir", "-5", "busy-more")
            found = await _rooms(ann, "target")
            assert (found["rooms"], found["truncated"]) == ([], True)
            listing = await _rooms(ann)
            assert (len(listing["rooms"]), listing["truncated"]) == (100, True)


async def test_rooms_whose_keys_expired_leave_the_directory(redis_server):
    async with open_cluster(redis_server, history_max_age=3) as (one, _two):
        async with open_test_client(one, user="ann") as ann:
            await ann.join("brief")
            await ann.chat("brief", "soon gone")
            await ann.send("leave", {"room": "brief"})
            await ann.expect("left")
            assert (await _rooms(ann))["rooms"] == _listed(("brief", 0, None))

            async def forgotten() -> bool:
                return redis_server.command("ZSCORE", "trio_chat:dir", "brief").strip() == b""

            # The heartbeats forget it once its keys expired.
            await _wait_for(forgotten)
            assert redis_server.command("ZCARD", "trio_chat:dirx").strip() == b"0"
            assert (await _rooms(ann))["rooms"] == []


async def _moderated(client: TestClient, id_: int, reason: str = "") -> None:
    """*client* gets a moderator's delete of ann's message *id_*, then its
    ``system`` ``delete``."""
    deleted = await client.expect("delete")
    assert deleted["payload"] == {"room": "lobby", "id": id_, "user_id": "ann", "by": "server"}
    text = f"message {id_} was deleted by a moderator" + (f": {reason}" if reason else "")
    system = {"event": "delete", "room": "lobby", "user_id": "ann", "text": text}
    assert (await client.receive())["payload"] == system


async def test_a_moderator_deletes_anyones_message_on_every_process(redis_server):
    async with open_cluster(redis_server) as (one, two):
        async with (
            open_test_client(one, user="ann") as ann,
            open_test_client(two, user="bob") as bob,
        ):
            await ann.join("lobby")
            await bob.join("lobby")
            await ann.chat("lobby", "kept")
            await ann.chat("lobby", "something regrettable")
            await _chat_seen(bob, 2)
            tombstone = await one.delete_message("lobby", 2, "spam")
            assert (tombstone.id, tombstone.user_id, tombstone.deleted, tombstone.content) == (
                2,
                "ann",
                True,
                "",
            )
            for client in (ann, bob):
                await _moderated(client, 2, "spam")
            # From a process that does not serve the room: read from Redis.
            await bob.send("leave", {"room": "lobby"})
            await bob.expect("left")
            await ann.chat("lobby", "also regrettable")
            assert (await two.delete_message("lobby", 3)).deleted
            await _moderated(ann, 3)
            # Deleted already: the tombstone again, and nobody hears of it
            # (the next frame a member gets is the chat sent after).
            await bob.join("lobby")
            assert (await two.delete_message("lobby", 2)).deleted
            await ann.chat("lobby", "after")
            assert (await bob.receive())["payload"]["content"] == "after"
            async with open_test_client(two, user="cy") as cy:
                history = (await cy.join("lobby"))["payload"]["history"]
                assert [m.get("deleted", False) for m in history] == [False, True, True, False]
            for server, room, id_ in [(one, "lobby", 99), (two, "nowhere", 1)]:
                with pytest.raises(ProtocolError) as info:
                    await server.delete_message(room, id_)
                assert info.value.code == 404


async def test_closing_a_room_removes_its_members_on_every_process(redis_server):
    async with open_cluster(redis_server) as (one, two):
        async with (
            open_test_client(one, user="ann") as ann,
            open_test_client(one, user="bob") as bob,
            open_test_client(two, user="cy") as cy,
            two.open_bot("helper") as bot,
        ):
            for client in (ann, bob, cy):
                await client.join("lobby")
                await client.join("other")
            await bot.join("lobby")
            await ann.chat("lobby", "soon gone")
            old_epoch = (await ann.join("lobby"))["payload"]["epoch"]
            await ann.send("topic", {"room": "lobby", "topic": "doomed"})
            for client in (ann, bob, cy):
                await _system(client, "topic")
            # Two connections here, and two users on the other process.
            assert await two.close_room("lobby", "spam wave") == 4
            for client in (ann, bob, cy):
                system = await _system(client, "close")
                assert system["payload"] == {
                    "event": "close",
                    "room": "lobby",
                    "user_id": "server",
                    "text": "the room was closed: spam wave",
                }
                assert await client.receive() == {"type": "left", "payload": {"room": "lobby"}}
            received = [await bot.receive(), await bot.receive()]
            while received[0].type != "system" or received[0].event != "close":
                received = [received[1], await bot.receive()]
            assert [event.type for event in received] == ["system", "left"]
            # Nobody is in it any more; the other room is untouched.
            assert (await cy.chat("lobby", "still here?"))["payload"]["code"] == 403
            assert (await cy.chat("other", "fine"))["type"] == "ack"
            assert [r["room"] for r in (await _rooms(bob))["rooms"]] == ["other"]
            # It is gone with its history, ids, topic and members: a join
            # starts it afresh, on either process.
            joined = (await bob.join("lobby"))["payload"]
            assert (joined["members"], joined["history"], joined.get("topic")) == (
                ["bob"],
                [],
                None,
            )
            assert joined["epoch"] != old_epoch
            assert (await cy.join("lobby"))["payload"]["members"] == ["bob", "cy"]
            assert (await cy.chat("lobby", "a new start"))["payload"]["id"] == 1
            with pytest.raises(ProtocolError) as info:
                await one.close_room("nowhere")
            assert info.value.code == 404


async def test_max_rooms_bounds_what_each_process_serves(redis_server):
    async with open_cluster(redis_server, max_rooms=2) as (one, two):
        async with (
            open_test_client(one, user="ann") as ann,
            open_test_client(two, user="bob") as bob,
        ):
            for room in ("a", "b"):
                await ann.join(room)
            await ann.send("join", {"room": "c"}, ref="j")
            refused = await ann.expect("error")
            assert (refused["ref"], refused["payload"]) == (
                "j",
                {"code": 403, "message": "the server's room limit is reached"},
            )
            # The other process counts its own: it serves none of these yet.
            for room in ("c", "a"):
                assert (await bob.join(room))["payload"]["room"] == room
            # Leaving makes room on that process; the directory has all three.
            await ann.send("leave", {"room": "b"})
            await ann.expect("left")
            assert sorted((await ann.join("c"))["payload"]["members"]) == ["ann", "bob"]
            listed = [(r["room"], r["members"]) for r in (await _rooms(bob))["rooms"]]
            assert listed == [("a", 2), ("c", 2)]
