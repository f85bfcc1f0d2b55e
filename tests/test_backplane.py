"""The Redis backplane: several server processes sharing rooms through Redis.

Rules of this module:

* the pure :class:`ClusterState` is tested without any I/O (ops answered by
  hand, pub/sub messages made up), Hypothesis included;
* everything else runs against a real ``redis-server`` started by the test on
  a spare 127.0.0.1 port (``redis_helpers``); a missing ``redis-server`` is a
  failure, never a skip;
* several servers in one trio run each have their own hub and backplane, as
  separate processes would; the tests with ``start_chat_process`` use real
  processes;
* every I/O test runs under a time cap; nothing asserts on speed.
"""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from http_support import http_request
from hypothesis import given, strategies as st
from redis_helpers import RedisServer, start_chat_process
from support import bounded

from trio_chat import ChatServer, Config, ProtocolError
from trio_chat._backplane import split_url
from trio_chat._backplane_hub import BackplaneHub, build_backplane_hub
from trio_chat._backplane_ops import (
    ChatOp,
    FillOp,
    FloorOp,
    LoadOp,
    LoadResult,
    MemberOp,
    MembersOp,
    OnlineOp,
    RevisionsOp,
    SyncOp,
    Unavailable,
)
from trio_chat._backplane_state import ClusterState
from trio_chat._protocol import (
    ACK_PREFIX,
    CHAT_PREFIX,
    Chat,
    ChatAck,
    ChatMessage,
    Direct,
    Join,
    Leave,
    Presence,
    ack_suffix,
    chat_suffix,
    parse_server_frame,
)
from trio_chat.testing import TestClient, open_test_client, room_names, timestamps, user_ids

# ==========================================================================
# The pure state


def _frame(i: int, room: str = "r", user: str = "other") -> str:
    return json.dumps(
        {
            "type": "chat",
            "payload": {"id": i, "room": room, "user_id": user, "content": f"m{i}", "time": "t"},
        },
        separators=(",", ":"),
    )


def _entry(i: int, origin: str = "n2:1") -> tuple[int, str, str]:
    return (i, origin, _frame(i))


def _live(i: int, origin: str = "n2:1", room: str = "r") -> tuple[str, str]:
    return (f"trio_chat:ch:r:{room}", f"m {i} {origin} - {_frame(i, room)}")


def _ids(deliveries, key) -> list[int]:
    out = []
    for d in deliveries:
        if key in d.to:
            frame = json.loads(d.event.to_json())
            if frame["type"] == "chat":
                out.append(frame["payload"]["id"])
    return out


def _events(deliveries, key) -> list[dict[str, Any]]:
    return [json.loads(d.event.to_json()) for d in deliveries if key in d.to]


def _up(state: ClusterState, epoch: str = "e1", inbox: dict[str, int] | None = None) -> list:
    state.on_connected()
    [sync] = [op for op in state.take_ops() if isinstance(op, SyncOp)]
    state.on_result(sync, (epoch, inbox or {}))
    return state.take_ops()


def _joined(
    state: ClusterState,
    key: Any,
    user: str,
    room: str = "r",
    last_id: int = 0,
    members: list[str] | None = None,
) -> list:
    if not state.has_connection(key):
        state.connect(key, user)
    deliveries = state.handle(key, Join(room), 0.0)
    ops = state.take_ops()
    if deliveries:  # the room is served here already
        return deliveries
    [load] = [op for op in ops if isinstance(op, LoadOp)]
    deliveries = state.on_result(load, LoadResult(last_id, [], members or [], 0, {}))
    state.take_ops()
    return deliveries


def test_chat_and_unloaded_joins_answer_503_while_redis_is_down():
    state = ClusterState("n1")
    state.connect(1, "alice")
    with pytest.raises(ProtocolError) as err:
        state.handle(1, Join("r", ref="j"), 0.0)
    assert (err.value.code, err.value.ref) == (503, "j")
    _up(state)
    deliveries = _joined(state, 1, "alice", last_id=7)
    [joined] = _events(deliveries, 1)
    assert joined["type"] == "joined" and joined["payload"]["members"] == ["alice"]
    state.on_disconnected()
    for event in (Chat("r", "hi", "c1"), Direct("bob", "hi", "d1")):
        with pytest.raises(ProtocolError) as err:
            state.handle(1, event, 0.0)
        assert err.value.code == 503 and err.value.message == "backplane unavailable, retry"
    # A room already served here can still be joined from what is known.
    state.connect(2, "bob")
    [joined] = _events(state.handle(2, Join("r"), 0.0), 2)
    assert joined["type"] == "joined" and sorted(joined["payload"]["members"]) == ["alice", "bob"]
    assert state.take_ops() == []  # nothing is sent to Redis while it is down


def test_an_op_that_fails_answers_503_to_its_sender():
    state = ClusterState("n1")
    _up(state)
    _joined(state, 1, "alice", last_id=7)
    state.handle(1, Chat("r", "hi", "c1"), 0.0)
    [op] = state.take_ops()
    assert isinstance(op, ChatOp) and op.ref == "c1"
    [error] = _events(state.on_result(op, Unavailable("down")), 1)
    assert error == {
        "type": "error",
        "payload": {"code": 503, "message": "backplane unavailable, retry"},
        "ref": "c1",
    }
    state.handle(1, Chat("r", "hi", "c2"), 0.0)
    [op] = state.take_ops()
    [ack] = _events(state.on_result(op, ("ok", 8)), 1)
    assert ack["type"] == "ack" and ack["payload"]["id"] == 8 and ack["ref"] == "c2"
    state.handle(1, Chat("r", "hi", "c2"), 0.0)
    [op] = state.take_ops()
    remembered = ChatAck(8, "r", "2026-01-01T00:00:00.000Z", "c2").to_json()
    [ack] = _events(state.on_result(op, ("dup", remembered)), 1)
    assert ack == {
        "type": "ack",
        "payload": {"id": 8, "room": "r", "time": "2026-01-01T00:00:00.000Z"},
        "ref": "c2",
    }


def test_a_message_reaches_every_local_member_but_its_sending_connection():
    state = ClusterState("n1")
    _up(state)
    _joined(state, 1, "alice")
    _joined(state, 2, "alice")
    _joined(state, 3, "bob")
    state.handle(1, Chat("r", "hi"), 0.0)
    [op] = state.take_ops()
    origin = op.origin
    assert origin.startswith("n1:")
    deliveries = state.on_messages([_live(1, origin)])
    assert [sorted(d.to) for d in deliveries] == [[2, 3]]
    deliveries = state.on_messages([_live(2, "n2:9")])
    assert [sorted(d.to) for d in deliveries] == [[1, 2, 3]]


def test_the_senders_process_delivers_a_message_with_its_ack():
    state = ClusterState("n1")
    _up(state)
    _joined(state, 1, "alice", last_id=7)
    _joined(state, 2, "bob")
    state.handle(1, Chat("r", "hi", "c1"), 0.0)
    [op] = state.take_ops()
    deliveries = state.on_result(op, ("ok", 8))
    assert _ids(deliveries, 2) == [8] and _ids(deliveries, 1) == []
    [ack] = _events(deliveries, 1)
    assert ack["type"] == "ack" and ack["payload"]["id"] == 8
    assert state.on_messages([_live(8, op.origin)]) == []  # pub/sub's copy
    # Who has the ack finds the message in the history at once.
    state.connect(3, "alice")
    [joined, *_] = _events(state.handle(3, Join("r"), 0.0), 3)
    assert [m["id"] for m in joined["payload"]["history"]] == [8]
    assert state.take_ops() == []


def test_duplicates_are_ignored_and_a_gap_is_filled_from_the_stream():
    state = ClusterState("n1")
    _up(state)
    _joined(state, 1, "alice", last_id=3)
    assert _ids(state.on_messages([_live(4), _live(4), _live(3)]), 1) == [4]
    assert _ids(state.on_messages([_live(7)]), 1) == []  # 5 and 6 were lost
    [fill] = state.take_ops()
    assert isinstance(fill, FillOp) and (fill.kind, fill.name, fill.after) == ("r", "r", 4)
    assert _ids(state.on_messages([_live(8)]), 1) == []  # one fill at a time
    assert state.take_ops() == []
    # The fill ran before 8 was published: a second one is needed for 8.
    assert _ids(state.on_result(fill, [_entry(5), _entry(6), _entry(7)]), 1) == [5, 6, 7]
    [fill] = state.take_ops()
    assert fill.after == 7
    assert _ids(state.on_result(fill, [_entry(8)]), 1) == [8]
    assert state.take_ops() == []
    assert state.cursor("r", "r") == 8


def test_messages_published_while_a_room_loads_are_not_lost():
    state = ClusterState("n1")
    _up(state)
    state.connect(1, "alice")
    state.handle(1, Join("r"), 0.0)
    [load] = [op for op in state.take_ops() if isinstance(op, LoadOp)]
    # Pub/sub overtakes the load's answer: 11 and 12 come before it.
    assert state.on_messages([_live(11), _live(12)]) == []
    deliveries = state.on_result(load, LoadResult(10, [_entry(10)], [], 0, {}))
    [joined] = _events(deliveries, 1)
    assert [m["id"] for m in joined["payload"]["history"]] == [10]
    [fill] = state.take_ops()
    assert fill.after == 10
    assert _ids(state.on_result(fill, [_entry(11), _entry(12)]), 1) == [11, 12]


def test_joining_and_leaving_a_loading_room_reads_it_once():
    state = ClusterState("n1")
    _up(state)
    state.connect(1, "mallory")
    for _ in range(20):
        state.handle(1, Join("r"), 0.0)
        state.handle(1, Leave("r"), 0.0)
    loads = [op for op in state.take_ops() if isinstance(op, LoadOp)]
    assert len(loads) == 1 and loads[0].max_bytes == state.joined_bytes
    # Loaded with nobody waiting: nothing is kept.
    assert state.on_result(loads[0], LoadResult(1, [_entry(1)], [], 0, {})) == []
    assert state.room_names() == [] and state.history_bytes == 0


def test_joining_again_sends_no_history_again_and_history_is_cached_within_bounds():
    # Three frames of history, and what else a joined holds (200 + names).
    state = ClusterState("n1", joined_bytes=3 * len(_frame(10)) + 215)
    _up(state)
    joined = _events(_joined(state, 1, "alice", last_id=5), 1)
    state.on_messages([_live(i) for i in range(6, 12)])
    # No more than one joined carries is cached.
    assert 2 * len(_frame(10)) < state.history_bytes <= state.joined_bytes
    [again] = _events(state.handle(1, Join("r", 0), 0.0), 1)
    assert (again["payload"]["history"], again["payload"]["truncated"]) == ([], False)
    state.connect(2, "bob")
    [bob] = _events(state.handle(2, Join("r"), 0.0), 2)
    assert [m["id"] for m in bob["payload"]["history"]] == [9, 10, 11]
    assert bob["payload"]["truncated"] is True
    assert joined[0]["type"] == "joined"


def test_cached_history_is_bounded_in_all_least_recently_written_first():
    size = len(_frame(10))
    state = ClusterState("n1", history_bytes_total=4 * size)
    _up(state)
    for key, room in ((1, "r"), (2, "s")):
        _joined(state, key, f"u{key}", room=room, last_id=0)
    state.on_messages([_live(i, room="r") for i in range(1, 4)])
    state.on_messages([_live(i, room="s") for i in range(1, 4)])
    assert state.history_bytes <= 4 * size
    # r was written least recently: it lost its oldest two.
    state.connect(3, "carol")
    [r] = _events(state.handle(3, Join("r"), 0.0), 3)
    assert [m["id"] for m in r["payload"]["history"]] == [3]


def test_a_failed_load_refuses_the_waiting_joins():
    state = ClusterState("n1")
    _up(state)
    state.connect(1, "alice")
    state.handle(1, Join("r", ref="j1"), 0.0)
    ops = state.take_ops()
    [load] = [op for op in ops if isinstance(op, LoadOp)]
    assert any(isinstance(op, MemberOp) and op.joined for op in ops)
    [error] = _events(state.on_result(load, Unavailable()), 1)
    assert error["payload"]["code"] == 503 and error["ref"] == "j1"
    assert state.rooms_of(1) == [] and state.room_names() == []
    [leave] = state.take_ops()
    assert isinstance(leave, MemberOp) and not leave.joined


def test_system_events_follow_the_cluster_and_its_versions():
    state = ClusterState("n1")
    _up(state)
    _joined(state, 1, "alice", members=["alice"])
    join_bob = ("trio_chat:ch:r:r", "j 1 - bob -")
    [event] = _events(state.on_messages([join_bob]), 1)
    assert event["payload"] == {"event": "join", "room": "r", "user_id": "bob"}
    assert _events(state.on_messages([join_bob]), 1) == []  # same version: news already
    assert sorted(state.members("r")) == ["alice", "bob"]
    # A snapshot older than what is known changes nothing.
    state.on_result(MembersOp("r"), (0, ["alice"]))
    assert sorted(state.members("r")) == ["alice", "bob"]
    # A newer snapshot: bob left meanwhile, carol came.
    events = _events(state.on_result(MembersOp("r"), (5, ["alice", "carol"])), 1)
    assert [(e["payload"]["event"], e["payload"]["user_id"]) for e in events] == [
        ("leave", "bob"),
        ("join", "carol"),
    ]


def test_a_member_whose_news_was_lost_is_known_after_the_snapshot():
    # Redis loads the room (version 0, no members), then carol joins on
    # another process (version 1); that news comes before the load's answer
    # (another connection), so it is dropped.  The next news (version 2)
    # shows the gap: the snapshot asked for then, of version 2, brings carol.
    state = ClusterState("n1")
    _up(state)
    state.connect(1, "alice")
    state.handle(1, Join("r"), 0.0)
    [load] = [op for op in state.take_ops() if isinstance(op, LoadOp)]
    assert state.on_messages([("trio_chat:ch:r:r", "j 1 - carol -")]) == []
    state.on_result(load, LoadResult(0, [], [], 0, {}))
    state.take_ops()
    state.on_messages([("trio_chat:ch:r:r", "j 2 - dave -")])
    [members] = [op for op in state.take_ops() if isinstance(op, MembersOp)]
    assert "carol" not in state.members("r")
    events = _events(state.on_result(members, (2, ["alice", "carol", "dave"])), 1)
    assert [(e["payload"]["event"], e["payload"]["user_id"]) for e in events] == [("join", "carol")]
    assert sorted(state.members("r")) == ["alice", "carol", "dave"]


def test_redis_losing_its_data_keeps_ids_growing():
    state = ClusterState("n1")
    _up(state, "e1")
    _joined(state, 1, "alice", last_id=41)
    state.on_disconnected()
    ops = _up(state, "e2")
    floor = [op for op in ops if isinstance(op, FloorOp)]
    assert [(op.room, op.floor) for op in floor] == [("r", 41)]
    [fill] = [op for op in ops if isinstance(op, FillOp)]
    assert fill.after == 0  # everything in the new stream is new here
    assert _ids(state.on_result(fill, [_entry(42)]), 1) == [42]


def test_an_inbox_starts_at_the_id_redis_gives():
    state = ClusterState("n1")
    _up(state)
    state.connect(1, "bob")
    [online] = state.take_ops()
    assert isinstance(online, OnlineOp) and online.online
    assert state.on_messages([("trio_chat:ch:u:bob", 'm 6 n2:1 - {"type":"direct"}')]) == []
    state.on_result(online, 5)
    [fill] = state.take_ops()
    assert (fill.kind, fill.name, fill.after) == ("u", "bob", 5)
    deliveries = state.on_result(fill, [(6, "n2:1", '{"type":"direct"}')])
    assert [d.to for d in deliveries] == [(1,)]
    state.disconnect(1)
    [offline] = state.take_ops()
    assert isinstance(offline, OnlineOp) and not offline.online


def test_presence_reaches_local_members_at_once_and_remote_ones_through_redis():
    state = ClusterState("n1")
    _up(state)
    _joined(state, 1, "alice", members=["alice", "bob"])
    _joined(state, 2, "carol", members=["alice", "bob"])
    deliveries = state.handle(1, Presence("away"), 0.0)
    assert sorted(deliveries[0].to) == [1, 2] and deliveries[0].ephemeral
    assert any(op.__class__.__name__ == "PresenceOp" for op in state.take_ops())
    echo = ("trio_chat:ch:p", 'p 0 n1 alice {"type":"presence"}')
    assert state.on_messages([echo]) == []  # its own, already delivered
    remote = (
        "trio_chat:ch:p",
        'p 0 n2 bob {"type":"presence","payload":{"user_id":"bob","status":"busy"}}',
    )
    [delivery] = state.on_messages([remote])
    assert sorted(delivery.to) == [1, 2]
    stranger = ("trio_chat:ch:p", 'p 0 n2 zed {"type":"presence"}')
    assert state.on_messages([stranger]) == []
    # A later joiner learns bob's status.
    events = _events(_joined(state, 3, "dave", members=["alice", "bob"]), 3)
    assert [e["type"] for e in events] == ["joined", "presence", "presence"]


def test_a_sync_answered_after_its_connection_dropped_changes_nothing():
    state = ClusterState("n1")
    state.on_connected()
    [sync] = state.take_ops()
    state.on_disconnected()
    state.on_result(sync, ("e1", {}))
    assert not state.up and state.epoch is None
    state.on_connected()
    [sync] = state.take_ops()
    state.on_result(sync, ("e1", {}))
    assert state.up and state.epoch == "e1"


@given(
    room=room_names(),
    user=user_ids(),
    content=st.text(min_size=1),
    time=timestamps(),
    i=st.integers(1, 2**40),
)
def test_chat_frames_are_encoded_exactly_as_the_in_memory_hub_does(room, user, content, time, i):
    expected = ChatMessage(i, room, user, content, time).to_json()
    assert CHAT_PREFIX + str(i) + chat_suffix(room, user, content, time) == expected
    ack = ChatAck(i, room, time, user)
    assert ACK_PREFIX + str(i) + ack_suffix(room, time, user) == ack.to_json()
    assert parse_server_frame(ack.to_json()) == ack


def test_malformed_pubsub_messages_are_ignored():
    state = ClusterState("n1")
    _up(state)
    _joined(state, 1, "alice")
    junk = [
        ("trio_chat:ch:r:r", ""),
        ("trio_chat:ch:r:r", "m x y - z"),
        ("trio_chat:ch:r:r", "q 1 2 3 4"),
        ("x", "m 1 n2:1 - {}"),
        ("trio_chat:ch:r:zz", "m 1 - - {}"),
        ("trio_chat:ch:m", ""),
        ("trio_chat:ch:m", "r x n2:1 {}"),
    ]
    assert state.on_messages(junk) == []
    assert _ids(state.on_messages([_live(1)]), 1) == [1]


def test_one_pubsub_message_carries_a_script_calls_messages():
    state = ClusterState("n1")
    _up(state)
    _joined(state, 1, "alice", room="a")
    _joined(state, 1, "alice", room="b")
    lines = [
        f"{room} {i} n2:1 {_frame(i, room)}" for room, i in [("a", 1), ("x", 5), ("b", 1), ("a", 2)]
    ]
    deliveries = state.on_messages([("trio_chat:ch:m", "\n".join(lines))])
    got = [
        (json.loads(d.event.to_json())["payload"]["room"], i)
        for d in deliveries
        for i in _ids([d], 1)
    ]
    assert got == [("a", 1), ("b", 1), ("a", 2)]  # x is not served here


@given(
    st.lists(
        st.sampled_from(["publish", "deliver", "run", "disconnect", "connect", "overflow"]),
        max_size=60,
    )
)
def test_every_message_is_delivered_exactly_once_in_order(actions):
    """Whatever pub/sub loses and whenever fills and reconnections happen.

    Other processes publish into the room's stream; while connected, each
    message also goes out on pub/sub, which keeps order but loses what is in
    flight when the connection drops or the local queue overflows.  Ops run
    in order while connected and fail while not.
    """
    state = ClusterState("n1")
    stream: list[tuple[int, str, str]] = []
    wire: list[tuple[str, str]] = []  # pub/sub messages in flight, in order
    pending: list[Any] = []
    delivered: list[int] = []
    connected = True
    _up(state)
    delivered += _ids(_joined(state, 1, "alice"), 1)

    def run(op):
        if not connected:
            return state.on_result(op, Unavailable())
        if isinstance(op, FillOp):
            return state.on_result(op, [e for e in stream if e[0] > op.after][:500])
        if isinstance(op, SyncOp):
            return state.on_result(op, ("e1", {}))
        if isinstance(op, MembersOp | RevisionsOp):
            return state.on_result(op, (0, []))
        return state.on_result(op, None)

    for action in actions:
        if action == "publish":
            entry = _entry(len(stream) + 1)
            stream.append(entry)
            if connected:
                wire.append(_live(entry[0]))
        elif action == "deliver" and wire:
            delivered += _ids(state.on_messages([wire.pop(0)]), 1)
        elif action == "run" and pending:
            delivered += _ids(run(pending.pop(0)), 1)
        elif action == "disconnect" and connected:
            connected = False
            wire.clear()
            state.on_disconnected()
        elif action == "connect" and not connected:
            connected = True
            state.on_connected()
        elif action == "overflow" and connected:
            wire.clear()
            state.on_overflow()
        pending += state.take_ops()
    # Quiet again: connected, the last pub/sub messages arrive, every op runs.
    if not connected:
        connected = True
        state.on_connected()
    for message in wire:
        delivered += _ids(state.on_messages([message]), 1)
    pending += state.take_ops()
    while pending:
        delivered += _ids(run(pending.pop(0)), 1)
        pending += state.take_ops()
    assert delivered == list(range(1, len(stream) + 1))


def test_redis_url_options_are_separated_from_the_url():
    url, options = split_url("redis://127.0.0.1:7000/2?prefix=a:&node_ttl=1.5&heartbeat=0.2")
    assert url == "redis://127.0.0.1:7000/2"
    assert options == {"prefix": "a:", "node_ttl": 1.5, "heartbeat": 0.2}
    with pytest.raises(ValueError):
        split_url("http://example.com")
    with pytest.raises(ValueError):
        split_url("redis://h/0?node_ttl=soon")


# ==========================================================================
# Several servers against a real Redis

FAST = "?timeout=0.5&heartbeat=0.2&node_ttl=2"


@asynccontextmanager
async def open_cluster(
    redis: RedisServer, count: int = 2, **settings: Any
) -> AsyncIterator[list[ChatServer]]:
    """*count* servers in this trio run, each with its own hub and backplane."""
    settings.setdefault("rate_messages", 10_000)
    config = Config(
        host="127.0.0.1", port=0, redis_url=redis.url + FAST, shutdown_grace=2, **settings
    )
    servers = []
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            server = ChatServer(config)
            assert isinstance(server.hub, BackplaneHub)
            await nursery.start(server.serve)
            servers.append(server)
        try:
            yield servers
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(15):
                async with trio.open_nursery() as stopping:
                    for server in servers:
                        stopping.start_soon(server.shutdown)
            nursery.cancel_scope.cancel()


async def _expect_chat(client: TestClient, timeout: float = 5) -> dict[str, Any]:
    frame = await client.expect("chat", timeout)
    return frame["payload"]


async def _health(server: ChatServer) -> dict[str, Any]:
    return (await http_request(server.port, "GET", "/healthz")).json()


async def _wait_for(predicate, timeout: float = 10, interval: float = 0.05) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(interval)


@bounded(30)
async def test_ids_are_gap_free_across_processes_and_each_message_arrives_once(redis_server):
    async with open_cluster(redis_server) as (s0, s1), AsyncExitStack() as stack:
        users = [("alice", s0), ("bob", s1), ("carol", s1), ("dave", s0)]
        clients = [await stack.enter_async_context(open_test_client(s, user=u)) for u, s in users]
        for client in clients:
            await client.join("lobby")
        per_client = 15
        acks: dict[str, list[int]] = {}
        received: dict[str, list[dict[str, Any]]] = {}

        async def talk(client: TestClient) -> None:
            me = client.user_id
            for i in range(per_client):
                await client.send("chat", {"room": "lobby", "content": f"{me} {i}"}, f"{me}-{i}")
            acks[me], received[me] = [], []
            others = per_client * (len(clients) - 1)
            while len(acks[me]) < per_client or len(received[me]) < others:
                frame = await client.receive(10)
                if frame["type"] == "ack":
                    acks[me].append(frame["payload"]["id"])
                elif frame["type"] == "chat":
                    received[me].append(frame["payload"])
                else:
                    assert frame["type"] == "system", frame

        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(talk, client)
        everything = sorted(i for ids in acks.values() for i in ids)
        assert everything == list(range(1, per_client * len(clients) + 1))
        contents = {}
        for me, messages in received.items():
            ids = [m["id"] for m in messages]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)  # in order, once
            assert set(ids) == set(everything) - set(acks[me])  # all but its own
            assert all(m["user_id"] != me for m in messages)
            for m in messages:
                assert contents.setdefault(m["id"], m["content"]) == m["content"]
        # Each sender's messages kept their order.
        for me, ids in acks.items():
            mine = sorted((i, contents[i]) for i in ids)
            assert [c for _, c in mine] == [f"{me} {i}" for i in range(per_client)]


@bounded(30)
async def test_history_and_resume_work_on_any_process(redis_server):
    async with open_cluster(redis_server, history_size=3) as (s0, s1):
        async with open_test_client(s0, user="alice") as alice:
            await alice.join("lobby")
            for i in range(1, 6):
                assert (await alice.chat("lobby", f"m{i}"))["payload"]["id"] == i
            async with open_test_client(s1, user="bob") as bob:
                joined = (await bob.join("lobby", since=3))["payload"]
                assert [m["id"] for m in joined["history"]] == [4, 5]
                assert joined["truncated"] is False
                assert sorted(joined["members"]) == ["alice", "bob"]
                assert [m["content"] for m in joined["history"]] == ["m4", "m5"]
                # Joining again sends nothing bob has been sent already.
                joined = (await bob.join("lobby", since=0))["payload"]
                assert (joined["history"], joined["truncated"]) == ([], False)
                await bob.send("leave", {"room": "lobby"})
                await bob.expect("left")
                joined = (await bob.join("lobby", since=0))["payload"]
                assert [m["id"] for m in joined["history"]] == [3, 4, 5]
                assert joined["truncated"] is True
            # bob comes back on the other process with what he had seen.
            for i in range(6, 8):
                await alice.chat("lobby", f"m{i}")
            async with open_test_client(s0, user="bob") as bob:
                joined = (await bob.join("lobby", since=5))["payload"]
                assert [m["content"] for m in joined["history"]] == ["m6", "m7"]
                assert joined["truncated"] is False
            # A room this process does not serve yet is read from Redis.
            async with open_test_client(s1, user="carol") as carol:
                joined = (await carol.join("lobby"))["payload"]
                assert [m["id"] for m in joined["history"]] == [5, 6, 7]
                # Every process names the room's numbering alike.
                assert joined["epoch"] == (await alice.join("lobby"))["payload"]["epoch"]


@bounded(30)
async def test_system_events_and_presence_are_cluster_wide(redis_server):
    async with open_cluster(redis_server) as (s0, s1):
        async with open_test_client(s0, user="bob") as bob:
            await bob.join("lobby")
            async with open_test_client(s1, user="alice") as alice1:
                joined = (await alice1.join("lobby"))["payload"]
                assert sorted(joined["members"]) == ["alice", "bob"]
                event = await bob.expect("system")
                assert event["payload"] == {"event": "join", "room": "lobby", "user_id": "alice"}
                # alice's second connection, on the other process: not news.
                async with open_test_client(s0, user="alice") as alice0:
                    await alice0.join("lobby")
                    await alice1.send("presence", {"status": "away", "text": "lunch"})
                    for client in (bob, alice0, alice1):
                        update = await client.expect("presence")
                        assert update["payload"] == {
                            "user_id": "alice",
                            "status": "away",
                            "text": "lunch",
                        }
                    async with open_test_client(s1, user="carol") as carol:
                        await carol.join("lobby")
                        update = await carol.expect("presence")
                        assert update["payload"]["user_id"] == "alice"
                    for event in ("join", "leave"):
                        frame = await bob.expect("system")
                        assert frame["payload"] == {
                            "event": event,
                            "room": "lobby",
                            "user_id": "carol",
                        }
                    await alice0.send("leave", {"room": "lobby"})
                    await alice0.expect("left")
                    await alice1.chat("lobby", "marker")
                    # alice is still in the room through her other connection:
                    # bob sees no event between carol's leave and the marker.
                    frame = await bob.receive()
                    assert (frame["type"], frame["payload"]["content"]) == ("chat", "marker")
            event = await bob.expect("system")
            assert event["payload"] == {"event": "leave", "room": "lobby", "user_id": "alice"}
            assert (await _health(s0))["backplane"] == "up"


@bounded(30)
async def test_room_data_expires_a_week_after_its_last_member_leaves(redis_server):
    def ttl(key: str) -> int:
        return int(redis_server.command("TTL", f"trio_chat:{key}"))

    async with open_cluster(redis_server) as (s0, s1):
        async with open_test_client(s0, user="alice") as alice:
            await alice.join("lobby")
            await alice.chat("lobby", "hello")
            async with open_test_client(s1, user="bob") as bob:
                await bob.join("lobby")
            assert [ttl(k) for k in ("seq:lobby", "log:lobby", "mver:lobby")] == [-1, -1, -1]
            await alice.send("leave", {"room": "lobby"})
            await alice.expect("left")

            async def expiring() -> bool:
                return all(
                    0 < ttl(k) <= 7 * 86400 for k in ("seq:lobby", "log:lobby", "mver:lobby")
                )

            await _wait_for(expiring)
            # Back in the room: kept again, and ids go on.
            await alice.join("lobby")
            assert ttl("seq:lobby") == -1
            assert (await alice.chat("lobby", "again"))["payload"]["id"] == 2


def _redis_int(redis: RedisServer, *args: str) -> int:
    return int(redis.command(*args).strip() or b"0")


def _logged(redis: RedisServer, room: str) -> list[int]:
    """The ids in *room*'s Redis log, oldest first."""
    out = redis.command("XRANGE", f"trio_chat:log:{room}", "-", "+").decode().split()
    return [int(w.partition("-")[0]) for w in out if w.endswith("-0")]


@bounded(30)
async def test_redis_keeps_at_most_the_history_bytes_per_room(redis_server):
    content = "\u0001" * 1_640  # a frame of about 10 KB
    async with open_cluster(redis_server, count=1, history_bytes_per_room=50_000) as (s0,):
        for _ in range(12):
            await s0.publish("lobby", content)
        assert _logged(redis_server, "lobby") == [8, 9, 10, 11, 12]
        size = _redis_int(redis_server, "HGET", "trio_chat:hsizes", "lobby")
        assert 40_000 < size <= 50_000
        async with open_test_client(s0, user="carol") as carol:
            joined = (await carol.join("lobby"))["payload"]
            assert [m["id"] for m in joined["history"]] == [8, 9, 10, 11, 12]
            assert joined["truncated"] is True
            assert (await carol.chat("lobby", "next"))["payload"]["id"] == 13  # ids go on


def _inbox(redis: RedisServer, user: str) -> list[int]:
    """The ids in *user*'s Redis inbox of direct messages, oldest first."""
    out = redis.command("XRANGE", f"trio_chat:dm:{user}", "-", "+").decode().split()
    return [int(w.partition("-")[0]) for w in out if w.endswith("-0")]


@bounded(30)
async def test_a_redis_conversation_and_inbox_keep_at_most_the_history_bytes_per_room(
    redis_server,
):
    content = "\u0001" * 1_640  # a frame of about 10 KB
    settings = {"history_bytes_per_room": 50_000, "history_bytes_total": 120_000}
    async with (
        open_cluster(redis_server, count=1, **settings) as (s0,),
        open_test_client(s0, user="bob") as bob,
    ):
        await bob.join("lobby")  # answered once bob is registered as online
        for _ in range(12):
            await s0.send_direct("bob", content)
        # The conversation's log, and bob's inbox (which carries them to
        # his connections).
        assert _logged(redis_server, "bob server") == [8, 9, 10, 11, 12]
        assert _inbox(redis_server, "bob") == [8, 9, 10, 11, 12]
        for log in ("bob server", "@bob"):
            size = _redis_int(redis_server, "HGET", "trio_chat:hsizes", log)
            assert 40_000 < size <= 50_000
        # They count against the bytes kept in all, like rooms.
        for _ in range(4):
            await s0.publish("lobby", content)
        total = _redis_int(redis_server, "GET", "trio_chat:hbytes")
        assert 100_000 < total <= 120_000
        assert len(_logged(redis_server, "bob server")) < 5  # the least recently written log
        for _ in range(12):
            frame = await bob.expect("direct")
            assert frame["payload"]["content"] == content
        # Delivery continues with the next id.
        await s0.send_direct("bob", "next")
        assert (await bob.expect("direct"))["payload"]["id"] == 13
        assert _inbox(redis_server, "bob")[-1] == 13


@bounded(30)
async def test_redis_keeps_at_most_the_history_bytes_in_all_and_max_rooms_logs(redis_server):
    content = "\u0001" * 1_640
    settings = {"history_bytes_total": 100_000, "max_rooms": 4}
    async with open_cluster(redis_server, count=1, **settings) as (s0,):
        for room in ("a", "b", "c"):
            for _ in range(4):
                await s0.publish(room, content)
        # 120 KB were written: the least recently written room lost its oldest.
        total = _redis_int(redis_server, "GET", "trio_chat:hbytes")
        assert 80_000 < total <= 100_000
        assert len(_logged(redis_server, "a")) < 4
        assert _logged(redis_server, "c") == [1, 2, 3, 4]
        for room in ("d", "e"):
            await s0.publish(room, "z")
        # Five rooms logged, four kept: a's log went first.
        assert _redis_int(redis_server, "ZCARD", "trio_chat:hrooms") == 4
        assert _logged(redis_server, "a") == []
        assert _logged(redis_server, "e") == [1]


@bounded(30)
async def test_redis_drops_messages_older_than_the_history_max_age(redis_server):
    async with (
        open_cluster(redis_server, count=1, history_max_age=1.0) as (s0,),
        open_test_client(s0, user="alice") as alice,
    ):
        await alice.join("lobby")  # a member: the room's keys do not expire
        await alice.chat("lobby", "old")
        start = int(redis_server.command("TIME").split()[0])
        with trio.fail_after(5):  # wait for Redis's own clock to pass the age
            while int(redis_server.command("TIME").split()[0]) < start + 2:
                await trio.sleep(0.1)
        await alice.chat("lobby", "new")
        assert _logged(redis_server, "lobby") == [2]
        # Once nobody is in it, the room lives max_age after its last member.
        await alice.send("leave", {"room": "lobby"})
        await alice.expect("left")
        with trio.fail_after(5):
            while _redis_int(redis_server, "TTL", "trio_chat:seq:lobby") == -1:
                await trio.sleep(0.05)
        assert _redis_int(redis_server, "TTL", "trio_chat:seq:lobby") <= 1


@bounded(30)
async def test_a_resent_ref_is_acked_once_whichever_process_gets_it(redis_server):
    async with open_cluster(redis_server) as (s0, s1):
        async with open_test_client(s1, user="bob") as bob:
            await bob.join("lobby")
            async with open_test_client(s0, user="alice") as alice:
                await alice.join("lobby")
                first = await alice.chat("lobby", "only once", ref="r-1")
            async with open_test_client(s1, user="alice") as alice:
                await alice.join("lobby")
                again = await alice.chat("lobby", "only once", ref="r-1")
                assert again == first
                await alice.chat("lobby", "after")
            contents = [(await _expect_chat(bob))["content"] for _ in range(2)]
            assert contents == ["only once", "after"]


@bounded(30)
async def test_embedders_publish_through_the_backplane(redis_server):
    async with open_cluster(redis_server) as (s0, s1):
        async with open_test_client(s1, user="bob") as bob:
            await bob.join("news")
            ack = await s0.publish("news", "from the server")
            message = await _expect_chat(bob)
            assert (message["id"], message["user_id"], message["content"]) == (
                ack.id,
                "server",
                "from the server",
            )
            direct = await s0.send_direct("bob", "hello bob", user_id="ops")
            assert (direct.to, direct.id) == ("bob", 1)
            assert (await bob.expect("direct"))["payload"]["from"] == "ops"
            # To a user connected nowhere: stored in the conversation.
            assert (await s0.send_direct("nobody", "x")).id == 1
            assert s1.stats().rooms == 1 and s1.hub.state.members("news") == ["bob"]


# ==========================================================================
# Outages


async def _converse(clients: list[TestClient], room: str, outage, *, count: int = 40):
    """Each client sends *count* messages with refs while *outage* runs.

    A message answered 503 is sent again later with the same ref, as a
    client should.  Returns acks (ref -> ack payload), the 503 count and each
    client's received chats.
    """
    acks: dict[str, dict[str, Any]] = {}
    refused = 0
    received: dict[str, list[dict[str, Any]]] = {c.user_id: [] for c in clients}

    async def reader(client: TestClient, waiting: dict[str, str]):
        nonlocal refused
        while True:
            frame = await client.receive(30)
            if frame["type"] == "chat":
                received[client.user_id].append(frame["payload"])
            elif frame["type"] == "ack":
                acks[frame["ref"]] = frame["payload"]
                waiting.pop(frame["ref"], None)
            elif frame["type"] == "error":
                assert frame["payload"]["code"] == 503, frame
                assert frame["payload"]["message"] == "backplane unavailable, retry"
                refused += 1

    async def sender(client: TestClient, nursery: trio.Nursery):
        me = client.user_id
        waiting: dict[str, str] = {}
        nursery.start_soon(reader, client, waiting)
        for i in range(count):
            ref = f"{me}-{i}"
            waiting[ref] = f"{me} says {i}"
            await client.send("chat", {"room": room, "content": waiting[ref]}, ref)
            await trio.sleep(0.03)
        while waiting:  # resend what was refused (or not answered yet), same ref
            await trio.sleep(0.5)
            for ref, content in list(waiting.items()):
                await client.send("chat", {"room": room, "content": content}, ref)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(outage)
        async with trio.open_nursery() as senders:
            for client in clients:
                senders.start_soon(sender, client, nursery)
        # Every acked message should now be on its way to everyone.
        expected = {
            c.user_id: {p["id"] for r, p in acks.items() if not r.startswith(c.user_id + "-")}
            for c in clients
        }
        with trio.fail_after(15):
            while any(len(received[u]) < len(expected[u]) for u in received):
                await trio.sleep(0.05)
        # A barrier: one more message, sent after every resend has stopped.
        # Each member receives the room in id order, so once everyone has it
        # nothing sent before it (a duplicate included) is still on its way.
        first = clients[0]
        await first.send("chat", {"room": room, "content": "barrier"}, "barrier")

        def through(client: TestClient) -> bool:
            if client is first:
                return "barrier" in acks
            return any(m["content"] == "barrier" for m in received[client.user_id])

        with trio.fail_after(15):
            while not all(through(c) for c in clients):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    del acks["barrier"]
    for user, messages in received.items():
        received[user] = [m for m in messages if m["content"] != "barrier"]
    return acks, refused, received


def _check_exactly_once(acks, received, senders):
    assert len(acks) == 40 * len(senders)
    ids = sorted(p["id"] for p in acks.values())
    assert len(set(ids)) == len(ids)
    for user, messages in received.items():
        got = [m["id"] for m in messages]
        assert len(got) == len(set(got)), f"{user} got a message twice"
        assert got == sorted(got), f"{user} got messages out of order"
        expected = sorted(p["id"] for r, p in acks.items() if not r.startswith(user + "-"))
        assert got == expected, f"{user} missed acknowledged messages"
        by_id = {p["id"]: r for r, p in acks.items()}
        for m in messages:
            sender, _, i = by_id[m["id"]].rpartition("-")
            assert m["content"] == f"{sender} says {i}"


@bounded(60)
async def test_redis_paused_mid_conversation(redis_server):
    async with open_cluster(redis_server) as (s0, s1):
        async with (
            open_test_client(s0, user="alice") as alice,
            open_test_client(s1, user="bob") as bob,
        ):
            await alice.join("lobby")
            await bob.join("lobby")
            health = {}

            async def outage():
                await trio.sleep(0.4)
                redis_server.pause()
                try:

                    async def down() -> bool:
                        return (await _health(s0))["backplane"] == "down"

                    await _wait_for(down)
                    health["during"] = await _health(s0)
                    await trio.sleep(0.5)
                finally:
                    redis_server.resume()

                async def up() -> bool:
                    return all([(await _health(s))["backplane"] == "up" for s in (s0, s1)])

                await _wait_for(up)

            acks, refused, received = await _converse([alice, bob], "lobby", outage)
            assert health["during"]["status"] == "degraded"
            assert refused > 0
            _check_exactly_once(acks, received, ["alice", "bob"])
            metrics = (await http_request(s1.port, "GET", "/metrics")).body.decode()
            assert "trio_chat_backplane_up 1.0" in metrics


@bounded(60)
async def test_messages_published_while_subscriptions_are_down_are_replayed(redis_server):
    # Only the pub/sub connections drop: the other process goes on publishing
    # meanwhile, and what it publishes exists only in the streams.
    async with open_cluster(redis_server) as (s0, s1):
        async with (
            open_test_client(s0, user="alice") as alice,
            open_test_client(s1, user="bob") as bob,
        ):
            await alice.join("lobby")
            await bob.join("lobby")

            async def outage():
                for _ in range(4):
                    await trio.sleep(0.25)
                    redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")

            acks, _refused, received = await _converse([alice, bob], "lobby", outage)
            _check_exactly_once(acks, received, ["alice", "bob"])


@bounded(30)
async def test_what_was_published_while_a_process_resubscribed_is_replayed(redis_server):
    async with open_cluster(redis_server) as (s0, s1):
        async with (
            open_test_client(s0, user="alice") as alice,
            open_test_client(s1, user="bob") as bob,
        ):
            await alice.join("lobby")
            await bob.join("lobby")
            await alice.chat("lobby", "before")
            assert (await _expect_chat(bob))["content"] == "before"
            # Drop s1's subscription only, and publish at once from s0:
            # nothing comes after these, so only the replay can bring them.
            name = f"name=trio_chat:{s1.hub.backplane.node}"
            for line in (
                redis_server.command("CLIENT", "LIST", "TYPE", "pubsub").decode().splitlines()
            ):
                if name in line.split():
                    redis_server.command("CLIENT", "KILL", "ID", line.split()[0][3:])
            for i in range(5):
                await alice.send("chat", {"room": "lobby", "content": f"during {i}"})
            assert [(await _expect_chat(bob))["content"] for _ in range(5)] == [
                f"during {i}" for i in range(5)
            ]
            await alice.chat("lobby", "after")
            assert (await _expect_chat(bob))["content"] == "after"


@bounded(30)
async def test_a_hub_that_falls_behind_pubsub_catches_up_from_the_stream(redis_server):
    async with open_cluster(redis_server, count=1) as (s0,):
        # s1 takes a pub/sub message only while its pump is waiting for one.
        config = attrs.evolve(s0.config, port=0)
        hub = build_backplane_hub(config, events_size=0)
        s1 = ChatServer(config, hub=hub)
        async with trio.open_nursery() as nursery:
            await nursery.start(s1.serve)
            try:
                async with (
                    open_test_client(s0, user="alice") as alice,
                    open_test_client(s1, user="bob") as bob,
                ):
                    await alice.join("lobby")
                    await bob.join("lobby")
                    for i in range(100):
                        await alice.send("chat", {"room": "lobby", "content": f"m{i}"})
                        if i == 50:
                            # A burst of pub/sub messages (for a room nobody
                            # serves) that s1 cannot take as they come.
                            await trio.to_thread.run_sync(
                                redis_server.command,
                                "EVAL",
                                "for i = 1, 2000 do redis.call('PUBLISH', KEYS[1], ARGV[1]) end",
                                "1",
                                "trio_chat:ch:r:nowhere",
                                "t 0 x:1 zed {}",
                            )
                    ids = [(await _expect_chat(bob))["id"] for _ in range(100)]
                    assert ids == list(range(1, 101))
                assert hub.backplane.overflows > 0
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await s1.shutdown()
                nursery.cancel_scope.cancel()


@bounded(60)
async def test_redis_killed_and_restarted_mid_conversation(durable_redis_server):
    redis = durable_redis_server
    async with open_cluster(redis) as (s0, s1):
        async with (
            open_test_client(s0, user="alice") as alice,
            open_test_client(s1, user="bob") as bob,
        ):
            await alice.join("lobby")
            await bob.join("lobby")

            async def outage():
                await trio.sleep(0.4)
                redis.kill()
                await trio.sleep(1.0)
                assert (await _health(s1))["backplane"] == "down"
                redis.start()

            acks, refused, received = await _converse([alice, bob], "lobby", outage)
            assert refused > 0
            _check_exactly_once(acks, received, ["alice", "bob"])


@bounded(60)
async def test_redis_restarted_empty_keeps_rooms_working(redis_server):
    async with open_cluster(redis_server) as (s0, s1):
        async with (
            open_test_client(s0, user="alice") as alice,
            open_test_client(s1, user="bob") as bob,
        ):
            await alice.join("lobby")
            await bob.join("lobby")
            for i in range(1, 4):
                assert (await alice.chat("lobby", f"m{i}"))["payload"]["id"] == i
                assert (await _expect_chat(bob))["id"] == i
            redis_server.kill()
            answer = await alice.chat("lobby", "lost")
            assert answer["type"] == "error" and answer["payload"]["code"] == 503
            redis_server.start()  # empty: no persistence

            async def up() -> bool:
                return all([(await _health(s))["backplane"] == "up" for s in (s0, s1)])

            await _wait_for(up)
            # Ids go on from what the clients have seen; nothing is repeated.
            ack = await alice.chat("lobby", "m4")
            assert ack["type"] == "ack" and ack["payload"]["id"] > 3
            message = await _expect_chat(bob)
            assert (message["id"], message["content"]) == (ack["payload"]["id"], "m4")
            await bob.send("direct", {"to": "alice", "content": "still here"})
            assert (await alice.expect("direct"))["payload"]["content"] == "still here"
            async with open_test_client(s1, user="carol") as carol:
                joined = (await carol.join("lobby"))["payload"]
                assert sorted(joined["members"]) == ["alice", "bob", "carol"]


@bounded(30)
async def test_servers_start_while_redis_is_down_and_catch_up(redis_server):
    redis_server.kill()
    async with open_cluster(redis_server, count=1) as (s0,):
        async with open_test_client(s0, user="alice") as alice:
            assert (await _health(s0))["backplane"] == "down"
            await alice.send("join", {"room": "lobby"}, "j1")
            error = await alice.expect("error")
            assert error["payload"]["code"] == 503 and error["ref"] == "j1"
            redis_server.start()

            async def up() -> bool:
                return (await _health(s0))["backplane"] == "up"

            await _wait_for(up)
            await alice.join("lobby")
            assert (await alice.chat("lobby", "hello"))["payload"]["id"] == 1


# ==========================================================================
# Real processes


def _serve_args(redis: RedisServer, extra: str = "") -> list[str]:
    return [
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--redis-url",
        redis.url + FAST + extra,
        "--log-level",
        "warning",
        "--shutdown-grace",
        "2",
    ]


@bounded(60)
async def test_two_server_processes_share_rooms(redis_server, tmp_path):
    p0 = await start_chat_process(_serve_args(redis_server), tmp_path, "p0")
    p1 = await start_chat_process(_serve_args(redis_server), tmp_path, "p1")
    try:
        async with (
            open_test_client(p0.url, user="alice") as alice,
            open_test_client(p1.url, user="bob") as bob,
        ):
            await alice.join("lobby")
            joined = (await bob.join("lobby"))["payload"]
            assert sorted(joined["members"]) == ["alice", "bob"]
            assert (await alice.expect("system"))["payload"]["user_id"] == "bob"
            first = await alice.chat("lobby", "hi bob", ref="a1")
            assert first["payload"]["id"] == 1
            assert (await _expect_chat(bob))["content"] == "hi bob"
            assert (await bob.chat("lobby", "hi alice"))["payload"]["id"] == 2
            assert (await _expect_chat(alice))["id"] == 2
            assert await alice.chat("lobby", "hi bob", ref="a1") == first
            await bob.send("presence", {"status": "busy"})
            assert (await alice.expect("presence"))["payload"]["status"] == "busy"
            await bob.send("direct", {"to": "alice", "content": "psst"})
            assert (await alice.expect("direct"))["payload"]["from"] == "bob"
            async with open_test_client(p1.url, user="carol") as carol:
                joined = (await carol.join("lobby", since=1))["payload"]
                assert [m["content"] for m in joined["history"]] == ["hi alice"]
            # p1 dies without a word: its users leave the room once it expires.
            p1.signal(signal.SIGKILL)
            await p1.wait()
            with trio.fail_after(15):
                while True:
                    frame = await alice.receive(15)
                    if frame["type"] == "system" and frame["payload"] == {
                        "event": "leave",
                        "room": "lobby",
                        "user_id": "bob",
                    }:
                        break
            # Stored all the same, in the conversation's numbering.
            await alice.send("direct", {"to": "bob", "content": "gone?"}, "d9")
            assert (await alice.expect("ack"))["payload"]["id"] == 2
    finally:
        p0.signal(signal.SIGTERM)
        p1.stop()
        assert await p0.wait() == 0
