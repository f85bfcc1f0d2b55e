"""Read markers, room discovery and topics.

* The pure hub state: a marker moves forward only, clamped to the newest id,
  and every connection of its user hears of it; ``joined`` and
  ``conversations`` count unread messages and mentions after it; posting
  moves the sender's marker; markers are bounded per user and in all, and a
  room created again (a new epoch) starts them at 0.  ``rooms`` lists what
  a token allows, most members first, filtered by a query, within its
  bounds, and follows every change; ``topic`` reaches the room's members and
  keeps an empty room.
* The frames: Hypothesis round trips and refusals.
* The SQLite store (a real file): markers and topics survive a restart, and
  a version 2 database is migrated.
* End to end over real sockets: two devices of one user agree on a marker,
  a marker sent together with the close frame is kept, a token's patterns
  bound the listing, and the Redis store answers 501.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
import trio
from _raw_client import RawClient
from hypothesis import given, strategies as st
from support import bound_all
from wsproto.events import CloseConnection, Message

from trio_chat import (
    Config,
    Delete,
    ListRooms,
    MarkRead,
    ProtocolError,
    ReadMarker,
    RoomList,
    SetTopic,
    encode_client_event,
    parse_client_frame,
    parse_server_frame,
)
from trio_chat._auth import make_token
from trio_chat._hub_state import HubState
from trio_chat._log import History
from trio_chat._markers import ReadMarkers
from trio_chat._protocol import Chat, Direct, Join, Leave, ListConversations, System
from trio_chat._sqlite_store import DB_NAME, SCHEMA_VERSION
from trio_chat.testing import open_test_client, open_test_server, room_names, user_ids

bound_all(globals(), 30)

NOW = 1_790_000_000.0
SECRET = "read-markers-secret-0123456789abcdef"


def answers(deliveries, key):
    """The events delivered to connection *key*, in order."""
    return [d.event for d in deliveries if key in d.to]


def refused(s: HubState, key: int, event: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        s.handle(key, event, NOW)  # type: ignore[arg-type]
    return info.value


def room_with_messages(**kw: object) -> HubState:
    """ann (connections 1 and 3) and bob (2) in room r; bob wrote 1 to 4,
    the second and fourth mentioning ann."""
    s = HubState(**kw)  # type: ignore[arg-type]
    for key, user in [(1, "ann"), (2, "bob"), (3, "ann")]:
        s.connect(key, user)
        s.handle(key, Join("r"), NOW)
    for text in ["one", "hi @ann", "three", "@ann again"]:
        s.handle(2, Chat("r", text), NOW)
    return s


# ------------------------------------------------------------------ markers


def test_a_marker_moves_forward_only_clamped_and_every_device_of_the_user_hears():
    s = room_with_messages()
    out = s.handle(1, MarkRead("r", None, 2, "m1"), NOW)
    assert answers(out, 1) == [ReadMarker("r", None, 2, "m1")]
    assert answers(out, 3) == [ReadMarker("r", None, 2)]
    assert answers(out, 2) == []
    # Back, or to where it is: the sender alone hears where it is.
    for id_ in (1, 2):
        out = s.handle(3, MarkRead("r", None, id_, "back"), NOW)
        assert [(d.event, d.to) for d in out] == [(ReadMarker("r", None, 2, "back"), (3,))]
    # Past the newest id: clamped to it.
    out = s.handle(1, MarkRead("r", None, 99, "far"), NOW)
    assert answers(out, 1) == [ReadMarker("r", None, 4, "far")]
    assert s.markers.get("ann", s.room_log("r")) == 4


def test_joined_counts_what_others_wrote_after_the_marker_and_posting_moves_it():
    s = room_with_messages()
    s.handle(1, MarkRead("r", None, 1), NOW)
    s.connect(4, "ann")
    [joined] = [e for e in answers(s.handle(4, Join("r"), NOW), 4) if e.type == "joined"]
    assert (joined.read, joined.unread, joined.mentions) == (1, 3, 2)
    payload = joined.payload()
    assert (payload["read"], payload["unread"], payload["mentions"]) == (1, 3, 2)
    # ann posts: her marker moves to her message, nothing is unread.
    s.handle(1, Chat("r", "caught up"), NOW)
    s.connect(5, "ann")
    [joined] = [e for e in answers(s.handle(5, Join("r"), NOW), 5) if e.type == "joined"]
    assert (joined.read, joined.unread, joined.mentions) == (5, 0, 0)
    # A deleted message is not unread.
    s.handle(2, Delete("r", None, 1), NOW)
    s.connect(6, "cy")
    [joined] = [e for e in answers(s.handle(6, Join("r"), NOW), 6) if e.type == "joined"]
    assert joined.unread == 4


def test_conversations_carry_the_marker_and_the_unread_counts():
    s = HubState()
    s.connect(1, "ann")
    s.connect(2, "bob")
    for text in ["a", "@ann b", "c"]:
        s.handle(2, Direct("ann", text), NOW)
    s.handle(1, MarkRead(None, "bob", 1, "m"), NOW)
    [listing] = answers(s.handle(1, ListConversations("l"), NOW), 1)
    [item] = listing.conversations
    assert (item["with"], item["last_id"], item["read"], item["unread"], item["mentions"]) == (
        "bob",
        3,
        1,
        2,
        1,
    )
    [listing] = answers(s.handle(2, ListConversations("l"), NOW), 2)
    assert listing.conversations[0]["read"] == 3  # bob's own messages moved his


def test_marking_needs_the_room_joined_or_the_conversation_to_exist():
    s = room_with_messages()
    s.connect(9, "eve")
    assert refused(s, 9, MarkRead("r", None, 1, "x")).code == 403
    assert refused(s, 1, MarkRead(None, "nobody", 1, "x")).code == 404
    s.handle(1, Leave("r"), NOW)
    assert refused(s, 1, MarkRead("r", None, 1, "x")).code == 403


def test_markers_are_bounded_per_user_in_users_and_in_all():
    history = History()
    logs = [history.open(f"r{i}") for i in range(6)]
    for log in logs:
        history.append(log, "bob", "x", NOW, "t")
    recorded = []
    markers = ReadMarkers(per_user=3, users=2, total=4, record=recorded.append)
    for log in logs[:4]:
        markers.move("ann", log, 1)
    # ann keeps her 3 most recent.
    assert [markers.get("ann", log) for log in logs[:4]] == [0, 1, 1, 1]
    markers.move("bob", logs[0], 1)
    markers.move("bob", logs[1], 1)
    # 5 in all is over 4: ann's oldest goes.
    assert len(markers) == 4 and markers.get("ann", logs[1]) == 0
    markers.move("cy", logs[0], 1)
    # A third user is over 2: ann, the least recently active, goes entirely.
    assert [markers.get("ann", log) for log in logs] == [0] * 6
    assert markers.get("bob", logs[1]) == 1 and markers.get("cy", logs[0]) == 1
    assert len(markers) == 3
    # Every change was recorded for a store, forgetting included.
    kinds = [type(op).__name__ for op in recorded]
    assert kinds.count("MarkOp") == 7 and kinds.count("ForgetMarkOp") == 4


def test_a_marker_of_a_room_created_again_reads_0():
    s = room_with_messages()
    s.handle(1, MarkRead("r", None, 4), NOW)
    for key in (1, 2, 3):
        s.disconnect(key)
    s._drop("r")  # forgotten (as when the room table is full)
    s.connect(1, "ann")
    s.connect(2, "bob")
    s.handle(2, Join("r"), NOW)
    s.handle(2, Chat("r", "new one"), NOW)
    [joined] = [e for e in answers(s.handle(1, Join("r"), NOW), 1) if e.type == "joined"]
    assert (joined.read, joined.unread) == (0, 1)


# ------------------------------------------------------------------ rooms


def test_rooms_lists_most_members_first_then_by_name_and_follows_changes():
    s = HubState()
    for key, user, rooms in [(1, "ann", "abc"), (2, "bob", "bc"), (3, "cy", "c")]:
        s.connect(key, user)
        for room in rooms:
            s.handle(key, Join(room), NOW)
    s.connect(4, "ann")  # a second connection of ann: still one member
    s.handle(4, Join("a"), NOW)

    def listed(key=1, query=None, allowed=None):
        [answer] = answers(s.handle(key, ListRooms(query, "q", allowed=allowed), NOW), key)
        assert isinstance(answer, RoomList) and answer.ref == "q"
        return [(r["room"], r["members"], r["topic"]) for r in answer.rooms], answer.truncated

    assert listed() == ([("c", 3, None), ("b", 2, None), ("a", 1, None)], False)
    s.handle(1, SetTopic("a", "Apples and PEARS"), NOW)
    s.handle(2, Join("a"), NOW)
    s.handle(3, Leave("c"), NOW)
    assert listed() == ([("a", 2, "Apples and PEARS"), ("b", 2, None), ("c", 2, None)], False)
    # A query matches names and topics, ignoring case.
    assert listed(query="pears")[0] == [("a", 2, "Apples and PEARS")]
    assert listed(query="B")[0] == [("b", 2, None)]
    # A token's patterns.
    assert listed(allowed=("b", "c*"))[0] == [("b", 2, None), ("c", 2, None)]
    assert listed(allowed=())[0] == []
    # A room left empty without history is gone; with history it stays.
    s.handle(1, Chat("b", "kept"), NOW)
    for key in (1, 2):
        s.handle(key, Leave("b"), NOW)
        s.handle(key, Leave("c"), NOW)
    assert listed()[0] == [("a", 2, "Apples and PEARS"), ("b", 0, None)]


def test_rooms_holds_at_most_100_and_at_most_the_joined_budget():
    s = HubState(max_rooms=300, max_rooms_created_per_client=300)
    s.connect(1, "ann")
    for i in range(150):
        s.publish("ann", f"room-{i:03}", "x", NOW, create=True)
    [answer] = answers(s.handle(1, ListRooms(None, "q"), NOW), 1)
    assert len(answer.rooms) == 100 and answer.truncated
    assert answer.rooms[0]["room"] == "room-000"
    small = HubState(joined_bytes=2000)
    small.connect(1, "ann")
    for i in range(20):
        small.publish("ann", f"room-{i:03}", "x", NOW, create=True)
    [answer] = answers(small.handle(1, ListRooms(None, "q"), NOW), 1)
    assert 0 < len(answer.rooms) < 20 and answer.truncated
    assert len(answer.to_json().encode()) <= 2000


# ------------------------------------------------------------------ topics


def test_a_topic_reaches_every_member_and_comes_with_joined():
    s = room_with_messages()
    out = s.handle(2, SetTopic("r", "Plans for the week", "t"), NOW)
    assert answers(out, 2) == [System("topic", "r", "bob", "Plans for the week", "t")]
    for key in (1, 3):
        assert answers(out, key) == [System("topic", "r", "bob", "Plans for the week")]
    assert out[-1].event.to_json() == (
        '{"type":"system","payload":{"event":"topic","room":"r","user_id":"bob",'
        '"text":"Plans for the week"},"ref":"t"}'
    )
    s.connect(4, "cy")
    [joined] = [e for e in answers(s.handle(4, Join("r"), NOW), 4) if e.type == "joined"]
    assert joined.topic == "Plans for the week"
    s.handle(1, SetTopic("r", ""), NOW)
    assert s.topic("r") is None
    s.connect(5, "dee")
    [joined] = [e for e in answers(s.handle(5, Join("r"), NOW), 5) if e.type == "joined"]
    assert joined.topic is None and "topic" not in joined.payload()


def test_a_topic_needs_the_room_joined_and_keeps_an_empty_room():
    s = HubState()
    s.connect(1, "ann")
    assert refused(s, 1, SetTopic("new", "x", "t")).code == 403
    s.handle(1, Join("quiet"), NOW)
    s.handle(1, SetTopic("quiet", "nobody here yet"), NOW)
    s.handle(1, Leave("quiet"), NOW)
    assert s.topic("quiet") == "nobody here yet"
    assert s.empty_rooms() == ["quiet"]
    # Cleared, the next leave of an empty room without history forgets it.
    s.handle(1, Join("quiet"), NOW)
    s.handle(1, SetTopic("quiet", ""), NOW)
    s.handle(1, Leave("quiet"), NOW)
    assert s.room_log("quiet") is None


def test_the_embedding_program_sets_a_topic_without_being_a_member():
    s = room_with_messages()
    out = s.set_topic("r", "set from outside", by="moderator")
    assert {k for d in out for k in d.to} == {1, 2, 3}
    assert s.topic("r") == "set from outside"
    with pytest.raises(ProtocolError) as info:
        s.set_topic("nowhere", "x", by="moderator")
    assert info.value.code == 404


# ------------------------------------------------------------------ frames


@given(room_names() | st.none(), user_ids(), st.integers(0, 2**53), st.text(max_size=64))
def test_read_rooms_and_topic_frames_round_trip(room, with_, id_, text):
    events = [
        MarkRead(room, None if room is not None else with_, id_, "r"),
        ListRooms(text or None, "q"),
        SetTopic(room or "r", text * 4, "t"),
    ]
    for event in events:
        assert parse_client_frame(encode_client_event(event)) == event


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ('{"type":"read","payload":{"room":"r"}}', "payload.id"),
        ('{"type":"read","payload":{"room":"r","id":true}}', "payload.id"),
        ('{"type":"read","payload":{"room":"r","id":-1}}', "payload.id"),
        ('{"type":"read","payload":{"room":"r","with":"bob","id":1}}', "payload"),
        ('{"type":"read","payload":{"id":1}}', "payload"),
        ('{"type":"rooms","payload":{"query":7}}', "payload.query"),
        ('{"type":"rooms","payload":{"query":"' + "q" * 65 + '"}}', "payload.query"),
        ('{"type":"topic","payload":{"room":"r"}}', "payload.topic"),
        ('{"type":"topic","payload":{"room":"r","topic":"' + "t" * 257 + '"}}', "payload.topic"),
        ('{"type":"topic","payload":{"room":"bad room","topic":"x"}}', "payload.room"),
    ],
)
def test_bad_read_rooms_and_topic_frames_are_400_naming_the_field(frame, field):
    with pytest.raises(ProtocolError) as info:
        parse_client_frame(frame)
    assert info.value.code == 400 and info.value.message.startswith(field + ":")


def test_the_server_events_parse_back():
    for event in [
        ReadMarker("r", None, 3, "m"),
        ReadMarker(None, "bob", 1),
        RoomList([{"room": "r", "members": 2, "topic": None}], False, "q"),
        System("topic", "r", "ann", "hello", "t"),
    ]:
        assert parse_server_frame(event.to_json()) == event


# ------------------------------------------------------------------ SQLite


async def test_the_sqlite_store_keeps_markers_and_topics_across_a_restart(tmp_path):
    config = Config(data_dir=str(tmp_path))
    async with open_test_server(config) as server:
        async with (
            open_test_client(server, user="ann") as ann,
            open_test_client(server, user="bob") as bob,
        ):
            await ann.join("r")
            await bob.join("r")
            for text in ["one", "two @bob", "three"]:
                await ann.chat("r", text)
            await bob.send("read", {"room": "r", "id": 1}, ref="m")
            assert (await bob.expect("read"))["payload"] == {"room": "r", "id": 1}
            await bob.send("topic", {"room": "r", "topic": "kept"}, ref="t")
            assert (await bob.expect("system"))["ref"] == "t"
            await ann.send("direct", {"to": "bob", "content": "psst"})
            await ann.expect("ack")
    async with open_test_server(config) as server:
        async with open_test_client(server, user="bob") as bob:
            joined = (await bob.join("r"))["payload"]
            assert (joined["read"], joined["unread"], joined["mentions"]) == (1, 2, 1)
            assert joined["topic"] == "kept"
            await bob.send("conversations", {}, ref="c")
            [item] = (await bob.expect("conversations"))["payload"]["conversations"]
            assert (item["read"], item["unread"]) == (0, 1)
            await bob.send("rooms", {}, ref="q")
            rooms = (await bob.expect("rooms"))["payload"]["rooms"]
            assert rooms == [{"room": "r", "members": 1, "topic": "kept"}]


async def test_an_empty_room_with_only_a_topic_survives_a_restart(tmp_path):
    config = Config(data_dir=str(tmp_path))
    async with open_test_server(config) as server:
        async with open_test_client(server, user="ann") as ann:
            await ann.join("plans")
            await ann.send("topic", {"room": "plans", "topic": "soon"}, ref="t")
            await ann.expect("system")
    async with open_test_server(config) as server:
        async with open_test_client(server, user="bob") as bob:
            await bob.send("rooms", {"query": "SOON"}, ref="q")
            rooms = (await bob.expect("rooms"))["payload"]["rooms"]
            assert rooms == [{"room": "plans", "members": 0, "topic": "soon"}]


_SCHEMA_2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE rooms (name TEXT PRIMARY KEY, epoch TEXT NOT NULL, last_id INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE messages (seq INTEGER PRIMARY KEY, room TEXT NOT NULL, id INTEGER NOT NULL,
    user_id TEXT NOT NULL, content TEXT NOT NULL, time TEXT NOT NULL, at REAL NOT NULL,
    extra TEXT);
CREATE INDEX messages_by_room ON messages (room, id);
CREATE TABLE refs (seq INTEGER PRIMARY KEY, user_id TEXT NOT NULL, ref TEXT NOT NULL,
    ack TEXT NOT NULL);
INSERT INTO meta VALUES ('schema', '2');
INSERT INTO rooms VALUES ('r', 'abcdef012345', 1);
INSERT INTO messages VALUES (1, 'r', 1, 'ann', 'old', '2030-03-17T17:46:40.000Z',
    1900000000.0, NULL);
"""


async def test_a_version_2_database_is_migrated(tmp_path):
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(_SCHEMA_2)
    db.close()
    config = Config(data_dir=str(tmp_path), history_max_age=0)
    async with open_test_server(config) as server:
        async with open_test_client(server, user="bob") as bob:
            joined = (await bob.join("r"))["payload"]
            assert joined["epoch"] == "abcdef012345" and joined["unread"] == 1
            await bob.send("read", {"room": "r", "id": 1}, ref="m")
            await bob.expect("read")
            await bob.send("topic", {"room": "r", "topic": "migrated"}, ref="t")
            await bob.expect("system")
    db = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        assert db.execute("SELECT topic FROM rooms").fetchall() == [("migrated",)]
        assert db.execute("SELECT user_id, name, id FROM read_markers").fetchall() == [
            ("bob", "r", 1)
        ]
    finally:
        db.close()


# ------------------------------------------------------------------ end to end


async def test_two_devices_of_one_user_agree_on_a_marker():
    async with open_test_server(Config(secret=SECRET)) as server:
        ann = make_token(SECRET, "ann")
        async with (
            open_test_client(server, token=ann) as phone,
            open_test_client(server, token=ann) as laptop,
            open_test_client(server, token=make_token(SECRET, "bob")) as bob,
        ):
            for client in (phone, laptop, bob):
                await client.join("r")
            for text in ["a", "b"]:
                await bob.chat("r", text)
            await phone.send("read", {"room": "r", "id": 2}, ref="m")
            assert await phone.expect("read") == {
                "type": "read",
                "payload": {"room": "r", "id": 2},
                "ref": "m",
            }
            assert await laptop.expect("read") == {
                "type": "read",
                "payload": {"room": "r", "id": 2},
            }
            # bob heard nothing of it: his next answer comes first.
            await bob.send("rooms", {}, ref="after")
            assert (await bob.receive())["type"] == "rooms"


async def test_a_marker_sent_with_the_close_frame_is_kept():
    """A page sends the marker it held back as it unloads: the frame and the
    close come together, and the marker still moves."""
    async with open_test_server(Config(secret=SECRET)) as server:
        ann = make_token(SECRET, "ann")
        async with open_test_client(server, token=make_token(SECRET, "bob")) as bob:
            await bob.join("r")
            closing = RawClient(await trio.open_tcp_stream("127.0.0.1", server.port))
            await closing.handshake(target=f"/ws?token={ann}")
            assert (await closing.next_frame())["type"] == "welcome"
            await closing.send_frame("join", {"room": "r"})
            assert (await closing.next_frame())["type"] == "joined"
            for text in ["a", "b"]:
                await bob.chat("r", text)
            read = json.dumps({"type": "read", "payload": {"room": "r", "id": 2}})
            await closing.stream.send_all(
                closing.ws.send(Message(data=read)) + closing.ws.send(CloseConnection(1001))
            )
            await closing.drain()
            async with open_test_client(server, token=ann) as again:
                joined = await again.join("r")
        assert joined["payload"]["read"] == 2
        assert joined["payload"]["unread"] == 0


async def test_a_tokens_room_patterns_bound_the_listing():
    async with open_test_server(Config(secret=SECRET)) as server:
        admin = make_token(SECRET, "ann")
        limited = make_token(SECRET, "bob", rooms=["team-*"])
        async with (
            open_test_client(server, token=admin) as ann,
            open_test_client(server, token=limited) as bob,
        ):
            for room in ["lobby", "team-a", "team-b"]:
                await ann.join(room)
            await bob.send("rooms", {}, ref="q")
            listed = (await bob.expect("rooms"))["payload"]
            assert [r["room"] for r in listed["rooms"]] == ["lobby", "team-a", "team-b"][1:]
            await ann.send("rooms", {"query": "TEAM"}, ref="q")
            listed = (await ann.expect("rooms"))["payload"]
            assert [r["room"] for r in listed["rooms"]] == ["team-a", "team-b"]


async def test_the_redis_store_answers_501(redis_server):
    async with open_test_server(Config(redis_url=redis_server.url)) as server:
        async with open_test_client(server, user="ann") as ann:
            await ann.join("r")
            await ann.chat("r", "hi")
            for kind, payload in [
                ("read", {"room": "r", "id": 1}),
            ]:
                await ann.send(kind, payload, ref=kind)
                frame = await ann.expect("error")
                assert frame["ref"] == kind
                assert frame["payload"] == {
                    "code": 501,
                    "message": "not available with the Redis store",
                }


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["join", "leave", "topic", "post"]),
            st.integers(0, 3),
            st.sampled_from(["a", "b", "c", "d"]),
        ),
        max_size=40,
    )
)
def test_the_directory_order_follows_every_change(steps):
    """Kept as rooms change, the directory is what sorting would give."""
    s = HubState()
    for key in range(4):
        s.connect(key, f"user{key % 3}")
    for kind, key, room in steps:
        if kind == "join":
            s.handle(key, Join(room), NOW)
        elif kind == "leave":
            s.handle(key, Leave(room), NOW)
        elif kind == "post":
            s.publish("bot", room, "x", NOW, create=True)
        elif s.room_log(room) is not None:
            s.set_topic(room, f"topic of {room} at {key}", "bot")
    expected = sorted(
        ((name, len(set(s.members(name))), s.topic(name)) for name in s.room_names()),
        key=lambda entry: (-entry[1], entry[0]),
    )
    assert [(n, m, t) for n, m, t, _ in s.directory()] == expected


def test_rooms_looks_at_no_more_than_2000_rooms():
    s = HubState(max_rooms=2100, max_rooms_created_per_client=3000)
    s.connect(1, "ann")
    for i in range(2100):
        s.publish("ann", f"room-{i:04}", "x", NOW, create=True)
    [found] = answers(s.handle(1, ListRooms("room-0042", "q"), NOW), 1)
    assert [r["room"] for r in found.rooms] == ["room-0042"] and found.truncated
    [missed] = answers(s.handle(1, ListRooms("room-2050", "q"), NOW), 1)
    assert (missed.rooms, missed.truncated) == ([], True)
    # With a member, a room comes first: within what is looked at.
    s.handle(1, Join("room-2050"), NOW)
    [found] = answers(s.handle(1, ListRooms("room-2050", "q"), NOW), 1)
    assert [r["room"] for r in found.rooms] == ["room-2050"]
