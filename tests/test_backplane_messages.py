"""Edits, deletes, reactions, history pages and typing to a user with the
Redis store.

Rules of this module (those of test_backplane.py):

* the pure :class:`ClusterState` is tested without any I/O: ops answered by
  hand, pub/sub messages made up;
* everything else runs against a real ``redis-server`` on a spare
  127.0.0.1 port, several servers in one trio run each with its own hub and
  backplane, as separate processes would;
* every I/O test runs under a time cap; nothing asserts on speed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis_helpers import RedisServer
from support import bounded
from test_backplane import _events, _joined, _logged, _redis_int, _up, open_cluster

from trio_chat import ChatServer, ProtocolError
from trio_chat._backplane_messages import MAX_ATTEMPTS
from trio_chat._backplane_ops import (
    LoadOp,
    LoadResult,
    PageOp,
    RawEvent,
    ReviseOp,
    RevisionsOp,
    TypingOp,
)
from trio_chat._backplane_state import ClusterState
from trio_chat._message_frames import Delete, Edit, React, ReadHistory
from trio_chat._message_ops import DEFAULT_REACTIONS
from trio_chat._protocol import ChatMessage, Join, TypingTo, format_time
from trio_chat.testing import TestClient, open_test_client

NOW = 1_790_000_000.0
TIME = format_time(NOW)
THUMBS, HEART = DEFAULT_REACTIONS[:2]

# ==========================================================================
# The pure state


def _frame(i: int, user: str = "alice", content: str | None = None) -> str:
    return ChatMessage(i, "r", user, content or f"m{i}", TIME).to_json()


def _room(state: ClusterState, *ids: int) -> None:
    """alice (connection 1) and bob (2) in room r, messages *ids* cached."""
    _up(state)
    _joined(state, 1, "alice")
    _joined(state, 2, "bob")
    for i in ids:
        state.on_messages([("trio_chat:ch:m", f"r {i} n2:1 {_frame(i)}")])


def _notice(op: ReviseOp, revision: int) -> tuple[str, str]:
    assert op.event is not None
    data = f"v {revision} {op.origin} {op.id} {op.event.to_json()}\n{op.frame}"
    return (f"trio_chat:ch:r:{op.room}", data)


def _history(state: ClusterState, key: int) -> list[dict[str, Any]]:
    state.connect(key, f"u{key}")
    [joined, *_] = _events(state.handle(key, Join("r"), NOW), key)
    return joined["payload"]["history"]


def test_an_edit_of_a_cached_message_asks_redis_to_replace_what_this_process_saw():
    state = ClusterState("n1")
    _room(state, 1)
    assert state.handle(1, Edit("r", None, 1, "hi @bob", "e"), NOW + 5) == []
    [op] = state.take_ops()
    assert isinstance(op, ReviseOp)
    assert (op.room, op.id, op.expected) == ("r", 1, _frame(1))
    message = json.loads(op.frame)["payload"]
    assert (message["content"], message["edited"], message["mentions"]) == (
        "hi @bob",
        format_time(NOW + 5),
        ["bob"],
    )
    # Redis's answer: the sender's copy, with its ref.
    [mine] = _events(state.on_result(op, ("ok", 1)), 1)
    assert mine == {**json.loads(op.event.to_json()), "ref": "e"}  # type: ignore[union-attr]
    # The notice: every other member here, and the cache.
    deliveries = state.on_messages([_notice(op, 1)])
    assert [(d.to, d.event) for d in deliveries] == [((2,), RawEvent(op.event.to_json()))]  # type: ignore[union-attr]
    assert _history(state, 3)[0]["content"] == "hi @bob"


def test_the_rules_answer_before_anything_goes_to_redis():
    state = ClusterState("n1", edit_window=60)
    _room(state, 1)
    for key, event, code in [
        (2, Edit("r", None, 1, "mine now"), 403),
        (1, React("r", None, 1, "nope"), 400),
        (2, Delete("r", None, 1), 403),
    ]:
        with pytest.raises(ProtocolError) as info:
            state.handle(key, event, NOW)
        assert info.value.code == code
    with pytest.raises(ProtocolError) as info:
        state.handle(1, Edit("r", None, 1, "late"), NOW + 61)
    assert info.value.message == "messages can be edited for 60 s"
    with pytest.raises(ProtocolError) as info:
        state.handle(1, Edit("elsewhere", None, 1, "x"), NOW)
    assert info.value.code == 403
    assert state.take_ops() == []


def test_a_message_changed_meanwhile_gets_the_rule_again_on_its_new_version():
    state = ClusterState("n1")
    _room(state, 1)
    state.handle(2, React("r", None, 1, THUMBS, "x"), NOW)
    [op] = state.take_ops()
    # Another process's reaction came first.
    theirs = ChatMessage(1, "r", "alice", "m1", TIME, reactions={THUMBS: ("cy",)}).to_json()
    assert state.on_result(op, ("stale", theirs)) == []
    [again] = state.take_ops()
    assert isinstance(again, ReviseOp) and again.expected == theirs
    assert json.loads(again.frame)["payload"]["reactions"] == {THUMBS: ["cy", "bob"]}
    [mine] = _events(state.on_result(again, ("ok", 2)), 2)
    assert mine["payload"]["count"] == 2 and mine["ref"] == "x"
    # A change that finds the message changed again at every try: 503.
    state.handle(1, React("r", None, 1, HEART, "h"), NOW)
    [op] = state.take_ops()
    for attempt in range(1, MAX_ATTEMPTS):
        assert state.on_result(op, ("stale", theirs.replace("cy", f"cy{attempt}"))) == []
        [op] = state.take_ops()
    [error] = _events(state.on_result(op, ("stale", theirs)), 1)
    assert error["payload"]["code"] == 503 and error["ref"] == "h"
    assert state.take_ops() == []


def test_a_process_sends_the_changes_of_one_message_one_at_a_time():
    state = ClusterState("n1")
    _room(state, 1)
    state.handle(1, React("r", None, 1, THUMBS, "a"), NOW)
    state.handle(2, React("r", None, 1, THUMBS, "b"), NOW)
    state.handle(2, Delete("r", None, 1, "not yours"), NOW)
    [first] = state.take_ops()
    # Once Redis took the first, the next is the rule on its result.
    deliveries = state.on_result(first, ("ok", 1))
    [second] = state.take_ops()
    assert second.expected == first.frame
    assert json.loads(second.frame)["payload"]["reactions"] == {THUMBS: ["alice", "bob"]}
    deliveries += state.on_result(second, ("ok", 2))
    [error] = [e for e in _events(deliveries, 2) if e["type"] == "error"]
    assert (error["payload"]["code"], error["ref"]) == (403, "not yours")
    assert state.take_ops() == []


def test_a_message_not_cached_here_is_read_first_and_a_gone_one_is_404():
    state = ClusterState("n1")
    _room(state)
    state.handle(1, Delete("r", None, 7, "d"), NOW)
    [read] = state.take_ops()
    assert isinstance(read, ReviseOp) and read.expected == "" and read.event is None
    state.on_result(read, ("stale", _frame(7)))
    [op] = state.take_ops()
    assert op.expected == _frame(7) and json.loads(op.frame)["payload"]["deleted"] is True
    state.handle(1, Delete("r", None, 9, "d9"), NOW)
    [read] = state.take_ops()
    [error] = _events(state.on_result(read, ("gone",)), 1)
    assert error["payload"] == {"code": 404, "message": "message 9 is not retained in room 'r'"}
    assert error["ref"] == "d9"


def test_a_delete_of_a_deleted_message_answers_its_sender_alone():
    state = ClusterState("n1")
    _room(state, 1)
    state.handle(1, Delete("r", None, 1), NOW)
    [op] = state.take_ops()
    state.on_result(op, ("ok", 1))
    state.on_messages([_notice(op, 1)])
    [again] = _events(state.handle(1, Delete("r", None, 1, "d2"), NOW), 1)
    assert again["type"] == "delete" and again["ref"] == "d2"
    assert state.take_ops() == []


def test_revisions_apply_in_order_and_a_gap_reads_them_again():
    state = ClusterState("n1")
    _room(state, 1, 2)
    state.handle(1, Edit("r", None, 1, "one"), NOW)
    [first] = state.take_ops()
    state.handle(1, Edit("r", None, 2, "two"), NOW)
    [second] = state.take_ops()
    assert state.on_messages([_notice(first, 1)])
    assert state.on_messages([_notice(first, 1)]) == []  # a duplicate
    assert state.take_ops() == []
    # Revision 2 was lost: 3 shows it, and the room's revisions are read.
    state.on_messages([_notice(second, 3)])
    [refresh] = state.take_ops()
    assert isinstance(refresh, RevisionsOp) and refresh.low == 1
    edited = ChatMessage(1, "r", "alice", "one, again", TIME, edited=TIME).to_json()
    state.on_result(refresh, (2, [(1, "-", edited)]))
    # What revision 3 set is newer than the snapshot of revision 2: kept.
    assert [m["content"] for m in _history(state, 3)] == ["one, again", "two"]


def test_revisions_told_while_a_room_loads_are_applied_once_it_has():
    state = ClusterState("n1")
    _room(state, 1)
    state.handle(1, Edit("r", None, 1, "new"), NOW)
    [op] = state.take_ops()
    other = ClusterState("n2")
    _up(other)
    other.connect(5, "cy")
    other.handle(5, Join("r"), NOW)
    [load] = [o for o in other.take_ops() if isinstance(o, LoadOp)]
    assert other.on_messages([_notice(op, 1)]) == []
    deliveries = other.on_result(load, LoadResult(1, [(1, "n1:1", _frame(1))], ["alice"], 1, {}))
    kinds = [e["type"] for e in _events(deliveries, 5)]
    assert kinds == ["joined", "edit"]


def test_a_history_page_is_read_from_redis_and_paged_by_the_rules():
    state = ClusterState("n1")
    _room(state, 1)
    state.handle(2, ReadHistory("r", None, None, 6, "h"), NOW)
    [op] = state.take_ops()
    assert isinstance(op, PageOp) and (op.low, op.high) == (1, 5)
    entries = [(i, "-", _frame(i)) for i in (5, 4, 3)]  # newest first
    [page] = _events(state.on_result(op, (5, entries, 5)), 2)
    assert page["ref"] == "h" and page["payload"]["truncated"] is True
    assert [m["id"] for m in page["payload"]["messages"]] == [3, 4, 5]
    state.handle(2, ReadHistory("r", None, 4), NOW)
    [op] = state.take_ops()
    assert (op.low, op.high) == (5, None)
    [page] = _events(state.on_result(op, (9, [], 9)), 2)
    assert (page["payload"]["messages"], page["payload"]["truncated"]) == ([], True)
    with pytest.raises(ProtocolError):
        state.handle(2, ReadHistory("other", None), NOW)


# ==========================================================================
# Against a real redis-server


async def _next(client: TestClient, kind: str) -> dict[str, Any]:
    return (await client.expect(kind, 5))["payload"]


@asynccontextmanager
async def alice_and_bob(
    redis: RedisServer, *texts: str
) -> AsyncIterator[tuple[list[ChatServer], TestClient, TestClient]]:
    """Two servers on *redis*, alice on the first and bob on the second,
    both in room ``r``, where alice said *texts* (ids 1, 2, ...)."""
    async with open_cluster(redis) as servers:
        async with (
            open_test_client(servers[0], user="alice") as alice,
            open_test_client(servers[1], user="bob") as bob,
        ):
            await alice.join("r")
            await bob.join("r")
            for text in texts:
                await alice.chat("r", text)
                await bob.expect("chat")
            yield servers, alice, bob


@bounded(30)
async def test_two_processes_see_each_others_edits_deletes_and_reactions(redis_server):
    async with alice_and_bob(redis_server, "frist", "secret text") as (servers, alice, bob):
        await alice.send("edit", {"room": "r", "id": 1, "content": "first @bob"}, "e")
        assert (await alice.expect("edit"))["ref"] == "e"
        edit = await _next(bob, "edit")
        assert (edit["content"], edit["mentions"]) == ("first @bob", ["bob"])
        await bob.send("react", {"room": "r", "id": 1, "emoji": THUMBS}, "x")
        reaction = await _next(alice, "reaction")
        assert (reaction["user_id"], reaction["on"], reaction["count"]) == ("bob", True, 1)
        await bob.expect("reaction")
        await alice.send("delete", {"room": "r", "id": 2}, "d")
        assert (await _next(bob, "delete"))["by"] == "alice"
        await alice.expect("delete")
        await bob.send("edit", {"room": "r", "id": 1, "content": "x"}, "bad")
        error = await bob.expect("error")
        assert (error["payload"]["code"], error["ref"]) == (403, "bad")
        # A process that loads the room afterwards has the new versions.
        await bob.send("leave", {"room": "r"})
        await bob.expect("left")
        async with open_test_client(servers[1], user="cy") as cy:
            history = (await cy.join("r"))["payload"]["history"]
            assert history[0]["content"] == "first @bob"
            assert history[0]["reactions"] == {THUMBS: ["bob"]}
            assert history[1] == {**history[1], "content": "", "deleted": True}
    # The deleted text is gone from Redis.
    dump = redis_server.command("XRANGE", "trio_chat:log:r", "-", "+")
    dump += redis_server.command("ZRANGE", "trio_chat:rev:r", "0", "-1")
    assert b"secret text" not in dump and b"first @bob" in dump


@bounded(30)
async def test_reactions_from_two_processes_at_once_are_all_counted(redis_server):
    async with alice_and_bob(redis_server, "react to this") as (_, alice, bob):
        emoji = DEFAULT_REACTIONS[:4]
        for i, e in enumerate(emoji):
            await alice.send("react", {"room": "r", "id": 1, "emoji": e}, f"a{i}")
            await bob.send("react", {"room": "r", "id": 1, "emoji": e}, f"b{i}")
        for client in (alice, bob):
            mine = 0
            while mine < len(emoji):
                frame = await client.expect("reaction")
                mine += frame.get("ref") is not None
        await alice.send("history", {"room": "r"}, "h")
        [message] = (await _next(alice, "history"))["messages"]
        assert sorted(message["reactions"]) == sorted(emoji)
        assert all(sorted(users) == ["alice", "bob"] for users in message["reactions"].values())


@bounded(30)
async def test_history_pages_reach_past_what_a_process_caches(redis_server):
    async with open_cluster(redis_server, count=1, history_size=3) as (s0,):
        async with open_test_client(s0, user="alice") as alice:
            await alice.join("r")
            for i in range(1, 11):
                await alice.chat("r", f"m{i}")
            await alice.send("delete", {"room": "r", "id": 4})
            await alice.expect("delete")
            await alice.send("history", {"room": "r", "before": 6}, "h")
            page = await _next(alice, "history")
            assert [(m["id"], m["content"]) for m in page["messages"]] == [
                (1, "m1"),
                (2, "m2"),
                (3, "m3"),
                (4, ""),
                (5, "m5"),
            ]
            assert page["truncated"] is False
            await alice.send("history", {"room": "r", "since": 8})
            page = await _next(alice, "history")
            assert [m["id"] for m in page["messages"]] == [9, 10]
            # An edit of a message this process no longer caches.
            await alice.send("edit", {"room": "r", "id": 2, "content": "two"})
            assert (await _next(alice, "edit"))["content"] == "two"
            await alice.send("edit", {"room": "r", "id": 4, "content": "x"})
            assert (await _next(alice, "error"))["code"] == 404
            # Ids no message has, however large.
            for kind, payload in [
                ("react", {"room": "r", "id": 2**70, "emoji": THUMBS}),
                ("delete", {"room": "r", "id": 2**53}),
            ]:
                await alice.send(kind, payload)
                assert (await _next(alice, "error"))["code"] == 404
            await alice.send("history", {"room": "r", "since": 2**70})
            assert (await _next(alice, "history"))["messages"] == []
            await alice.send("history", {"room": "r", "before": 2**70})
            assert len((await _next(alice, "history"))["messages"]) == 10


@bounded(30)
async def test_revised_messages_count_in_the_history_bytes_and_go_oldest_first(redis_server):
    content = "\u0001" * 1_640  # a frame of about 10 KB
    async with open_cluster(redis_server, count=1, history_bytes_per_room=50_000) as (s0,):
        async with open_test_client(s0, user="alice") as alice:
            await alice.join("r")
            for _ in range(4):
                await alice.chat("r", content)
            for id_ in (1, 2):
                await alice.send("react", {"room": "r", "id": id_, "emoji": THUMBS})
                await alice.expect("reaction")
            assert _logged(redis_server, "r") == [3, 4]
            assert _redis_int(redis_server, "ZCARD", "trio_chat:rev:r") == 2
            for _ in range(4):
                await alice.chat("r", content)
            # 1 and 2 (revised) went first, then 3.
            assert _logged(redis_server, "r") == [4, 5, 6, 7, 8]
            assert _redis_int(redis_server, "ZCARD", "trio_chat:rev:r") == 0
            size = _redis_int(redis_server, "HGET", "trio_chat:hsizes", "r")
            assert size == _redis_int(redis_server, "GET", "trio_chat:hbytes")
            assert 40_000 < size <= 50_000
            await alice.send("react", {"room": "r", "id": 4, "emoji": THUMBS})
            await alice.expect("reaction")
            grown = _redis_int(redis_server, "HGET", "trio_chat:hsizes", "r")
            assert grown == size + len(f',"reactions":{{"{THUMBS}":["alice"]}}'.encode())


def test_typing_to_a_user_reaches_their_connections_here_and_on_other_processes():
    state = ClusterState("n1")
    _up(state)
    for key, user in [(1, "ann"), (2, "bob"), (3, "bob"), (4, "cy")]:
        state.connect(key, user)
    state.take_ops()
    [notice] = state.handle(1, TypingTo("bob"), NOW)
    assert notice.to == (2, 3) and notice.ephemeral
    frame = notice.event.to_json()
    assert json.loads(frame) == {"type": "typing", "payload": {"with": "ann", "user_id": "ann"}}
    [op] = state.take_ops()
    assert isinstance(op, TypingOp) and (op.kind, op.to, op.frame) == ("u", "bob", frame)
    # From another process, on the user's channel; this process's own is ignored.
    [remote] = state.on_messages([("trio_chat:ch:u:cy", f"t 0 n2:5 dan {frame}")])
    assert remote.to == (4,) and remote.event == RawEvent(frame)
    assert state.on_messages([("trio_chat:ch:u:cy", f"t 0 {op.origin} ann {frame}")]) == []
    assert state.on_messages([("trio_chat:ch:u:nobody", f"t 0 n2:5 dan {frame}")]) == []


@bounded(30)
async def test_typing_to_a_user_on_another_process(redis_server):
    async with alice_and_bob(redis_server) as (_, alice, bob):
        await alice.send("typing", {"with": "bob"})
        assert await bob.receive() == {
            "type": "typing",
            "payload": {"with": "alice", "user_id": "alice"},
        }
