"""End to end over 127.0.0.1 (port 0) with real WebSocket clients.

Each test starts a real server with :func:`trio_chat.testing.open_test_server`
and talks to it the way any client does: JSON text frames over TCP.
"""

from __future__ import annotations

import json
import re

import pytest
import trio
import trio_websocket
from _raw_client import RawClient, collect_logs, open_small_socket
from support import bound_all
from trio_websocket import ConnectionClosed, ConnectionRejected

from trio_chat import ChatAck, ChatServer, Config, DirectAck, Identity, ProtocolError
from trio_chat.testing import TestClient, open_test_client, open_test_server

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def expect_closed(client: TestClient) -> int:
    """Read until the server closes the connection; return the close code."""
    with trio.fail_after(5):
        while True:
            try:
                await client.ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code


async def wait_until(predicate, timeout: float = 5.0) -> None:
    """Wait (bounded) for a condition the server reaches on its own time."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def nothing_more(client: TestClient, marker_room: str, server: ChatServer) -> None:
    """Assert *client* gets no frame before a marker the server publishes now."""
    ack = await server.publish(marker_room, "marker")
    frame = await client.receive()
    assert frame["type"] == "chat" and frame["payload"]["content"] == "marker", frame
    assert frame["payload"]["id"] == ack.id


# ---------------------------------------------------------------- handshake


async def test_welcome_is_first_and_carries_the_limits():
    config = Config(
        max_message_bytes=2048,
        max_content_chars=500,
        rate_messages=7,
        rate_seconds=3.0,
        ping_interval=30.0,
    )
    async with open_test_server(config) as server:
        async with open_test_client(server, user="alice", key="alice-key") as alice:
            welcome = alice.welcome
            assert welcome["type"] == "welcome"
            assert set(welcome) == {"type", "payload"}
            payload = welcome["payload"]
            assert payload["user_id"] == "alice"
            assert isinstance(payload["session_id"], str) and payload["session_id"]
            assert payload["limits"] == {
                "max_message_bytes": 2048,
                "max_content_chars": 500,
                "rate": {"messages": 7, "per_seconds": 3.0},
                "ping_interval_seconds": 30.0,
                "reactions": list(Config().reactions),
            }
            async with open_test_client(server, user="alice", key="alice-key") as again:
                assert again.welcome["payload"]["session_id"] != payload["session_id"]


@pytest.mark.parametrize(
    ("offered", "selected"),
    [
        (["trio-chat.v1"], "trio-chat.v1"),
        (["other.v2", "trio-chat.v1"], "trio-chat.v1"),
        (["other.v2"], None),
        (None, None),
    ],
)
async def test_subprotocol_selected_when_offered(offered, selected):
    async with open_test_server() as server:
        async with open_test_client(server, user="alice", subprotocols=offered) as alice:
            assert alice.ws.subprotocol == selected
            assert alice.welcome["type"] == "welcome"


async def test_guest_ids_when_no_user_is_given():
    async with open_test_server() as server:
        async with open_test_client(server) as one, open_test_client(server) as two:
            ids = {one.user_id, two.user_id}
            assert len(ids) == 2
            for user_id in ids:
                assert re.fullmatch(r"guest-[0-9a-f]{8}", user_id), user_id
            # A guest is a user like any other.
            await one.join("lobby")
            joined = await two.join("lobby")
            assert joined["payload"]["members"] == [one.user_id, two.user_id]


@pytest.mark.parametrize("name", ["-dash-first", "has space", "x" * 65, "semi;colon", "ünï"])
async def test_invalid_user_name_is_refused_with_http_400(name):
    async with open_test_server() as server:
        with pytest.raises(ConnectionRejected) as info:
            async with open_test_client(server, user=name):
                pass  # pragma: no cover - must not connect
        assert info.value.status_code == 400
        assert server.stats().connections == 0
        # The server is unharmed.
        async with open_test_client(server, user="fine") as client:
            assert client.user_id == "fine"


# ---------------------------------------------------------------- rooms


async def test_join_gives_members_and_history(stored):
    config = stored()
    # The Redis store keeps no read markers: its joined has no counts.
    counts = {"read": 0, "unread": 0, "mentions": 0} if config.redis_url is None else {}
    async with open_test_server(config) as server:
        async with open_test_client(server, user="alice") as alice:
            joined = await alice.join("lobby")
            assert re.fullmatch("[0-9a-f]{12}", joined["payload"].pop("epoch"))
            assert joined["payload"] == {
                "room": "lobby",
                "members": ["alice"],
                "history": [],
                "truncated": False,
                **counts,
            }
            acks = [await alice.chat("lobby", f"m{i}") for i in range(1, 4)]
            assert [a["payload"]["id"] for a in acks] == [1, 2, 3]
            async with open_test_client(server, user="bob") as bob:
                joined = await bob.join("lobby")
                payload = joined["payload"]
                # (In no promised order: with Redis, the order this process
                # learnt the members in, which the news of alice's own join
                # may reach after bob's.)
                assert sorted(payload["members"]) == ["alice", "bob"]
                assert payload["truncated"] is False
                history = payload["history"]
                assert [m["id"] for m in history] == [1, 2, 3]
                assert [m["content"] for m in history] == ["m1", "m2", "m3"]
                for message, ack in zip(history, acks, strict=True):
                    assert message == {
                        "id": ack["payload"]["id"],
                        "room": "lobby",
                        "user_id": "alice",
                        "content": message["content"],
                        "time": ack["payload"]["time"],
                    }
                # alice hears that bob joined; joining again is idempotent.
                system = await alice.receive()
                assert system == {
                    "type": "system",
                    "payload": {"event": "join", "room": "lobby", "user_id": "bob"},
                }
                # bob has been sent everything since: no history again.
                again = await bob.join("lobby", since=2)
                assert sorted(again["payload"]["members"]) == ["alice", "bob"]
                assert again["payload"]["history"] == []
                await nothing_more(alice, "lobby", server)


async def test_join_since_and_truncated_history(stored):
    async with open_test_server(stored(history_size=3)) as server:
        async with open_test_client(server, user="alice") as alice:
            await alice.join("r")
            for i in range(1, 6):
                await alice.chat("r", f"m{i}")
            cases = {
                None: ([3, 4, 5], True),  # most recent, 1 and 2 are gone
                0: ([3, 4, 5], True),
                1: ([3, 4, 5], True),  # 2 is gone
                2: ([3, 4, 5], False),  # everything after 2 is retained
                3: ([4, 5], False),
                5: ([], False),
            }
            async with open_test_client(server, user="bob") as bob:
                for since, (ids, truncated) in cases.items():
                    joined = await bob.join("r", since=since)
                    assert [m["id"] for m in joined["payload"]["history"]] == ids, since
                    assert joined["payload"]["truncated"] is truncated, since
                    await bob.send("leave", {"room": "r"})
                    await bob.expect("left")


async def test_leave_and_system_events():
    async with open_test_server() as server:
        async with (
            open_test_client(server, user="alice") as alice,
            open_test_client(server, user="bob") as bob,
        ):
            await alice.join("lobby")
            await bob.join("lobby")
            assert (await alice.receive())["payload"] == {
                "event": "join",
                "room": "lobby",
                "user_id": "bob",
            }
            await bob.send("leave", {"room": "lobby"}, ref="l1")
            assert await bob.receive() == {
                "type": "left",
                "payload": {"room": "lobby"},
                "ref": "l1",
            }
            assert (await alice.receive())["payload"] == {
                "event": "leave",
                "room": "lobby",
                "user_id": "bob",
            }
            # bob no longer gets the room's messages.
            await alice.chat("lobby", "after")
            await bob.join("elsewhere")
            await nothing_more(bob, "elsewhere", server)


# ---------------------------------------------------------------- chat


async def test_chat_reaches_others_and_the_senders_other_connections(stored):
    async with open_test_server(stored()) as server:
        async with (
            open_test_client(server, user="alice", key="alice-key") as a1,
            open_test_client(server, user="alice", key="alice-key") as a2,
            open_test_client(server, user="bob") as bob,
        ):
            for client in (a1, a2, bob):
                await client.join("lobby")
            # a2's own join is no "system" event for a1: same user.
            assert (await a1.receive())["payload"]["user_id"] == "bob"
            assert (await a2.receive())["payload"]["user_id"] == "bob"

            ack = await a1.chat("lobby", "hello", ref="r-1")
            assert ack["type"] == "ack"
            assert ack["ref"] == "r-1"
            assert ack["payload"]["id"] == 1
            assert ack["payload"]["room"] == "lobby"
            assert TIME.match(ack["payload"]["time"])
            expected = {
                "type": "chat",
                "payload": {
                    "id": 1,
                    "room": "lobby",
                    "user_id": "alice",
                    "content": "hello",
                    "time": ack["payload"]["time"],
                },
            }
            assert await bob.receive() == expected
            assert await a2.receive() == expected

            ack2 = await bob.chat("lobby", "hi alice")
            assert ack2["payload"]["id"] == 2 and "ref" not in ack2
            # a1 gets bob's message next: its own was never sent back to it.
            frame = await a1.receive()
            assert frame["type"] == "chat" and frame["payload"]["id"] == 2
            assert frame["payload"]["user_id"] == "bob"
            assert (await a2.receive())["payload"]["id"] == 2
            await nothing_more(bob, "lobby", server)


async def test_ids_are_per_room_and_consecutive(stored):
    async with open_test_server(stored()) as server:
        async with open_test_client(server, user="alice") as alice:
            await alice.join("a")
            await alice.join("b")
            ids = []
            for i in range(10):
                room = "a" if i % 3 else "b"
                ack = await alice.chat(room, str(i))
                ids.append((room, ack["payload"]["id"]))
            assert [i for r, i in ids if r == "a"] == list(range(1, 7))
            assert [i for r, i in ids if r == "b"] == list(range(1, 5))


async def test_ref_deduplication_across_a_reconnect(stored):
    async with open_test_server(stored()) as server:
        async with open_test_client(server, user="bob") as bob:
            await bob.join("lobby")
            async with open_test_client(server, user="alice", key="alice-key") as alice:
                await alice.join("lobby")
                first = await alice.chat("lobby", "only once", ref="m-1")
            assert first["payload"]["id"] == 1
            assert (await bob.expect("chat"))["payload"]["content"] == "only once"

            # Same user, new connection: the resent frame is acked, not published.
            async with open_test_client(server, user="alice", key="alice-key") as alice:
                joined = await alice.join("lobby")
                assert [m["content"] for m in joined["payload"]["history"]] == ["only once"]
                again = await alice.chat("lobby", "only once", ref="m-1")
                assert again == first
                fresh = await alice.chat("lobby", "new", ref="m-2")
                assert fresh["payload"]["id"] == 2

            frame = await bob.expect("chat")
            assert frame["payload"]["id"] == 2 and frame["payload"]["content"] == "new"

            # Another user may use the same ref.
            async with open_test_client(server, user="carol") as carol:
                await carol.join("lobby")
                other = await carol.chat("lobby", "mine", ref="m-1")
                assert other["payload"]["id"] == 3


async def test_direct_ref_deduplication(stored):
    async with open_test_server(stored()) as server:
        async with (
            open_test_client(server, user="bob") as bob,
            open_test_client(server, user="alice") as alice,
        ):
            await alice.send("direct", {"to": "bob", "content": "psst"}, ref="d-1")
            ack = await alice.receive()
            await alice.send("direct", {"to": "bob", "content": "psst"}, ref="d-1")
            assert await alice.receive() == ack
            assert (await bob.receive())["payload"]["content"] == "psst"
            await bob.join("x")
            await nothing_more(bob, "x", server)


# ---------------------------------------------------------------- presence, direct


async def test_presence_reaches_room_members_and_newcomers():
    async with open_test_server() as server:
        async with (
            open_test_client(server, user="alice") as alice,
            open_test_client(server, user="bob") as bob,
            open_test_client(server, user="loner") as loner,
        ):
            await alice.join("lobby")
            await bob.join("lobby")
            await alice.expect("system")
            await loner.join("elsewhere")

            await alice.send("presence", {"status": "away", "text": "lunch"}, ref="p1")
            expected = {
                "type": "presence",
                "payload": {"user_id": "alice", "status": "away", "text": "lunch"},
            }
            assert await bob.receive() == expected
            assert await alice.receive() == expected  # never acked, no ref
            await nothing_more(loner, "elsewhere", server)

            async with open_test_client(server, user="carol") as carol:
                joined = await carol.join("lobby")
                assert joined["payload"]["members"] == ["alice", "bob", "carol"]
                assert await carol.receive() == expected
            await alice.send("presence", {"status": "busy"})
            frame = await bob.expect("presence")
            assert frame["payload"] == {"user_id": "alice", "status": "busy"}


async def test_direct_reaches_the_addressee_and_the_senders_other_connections():
    async with open_test_server() as server:
        async with (
            open_test_client(server, user="bob", key="bob-own-key") as b1,
            open_test_client(server, user="bob", key="bob-own-key") as b2,
            open_test_client(server, user="alice", key="alice-key") as alice,
            open_test_client(server, user="alice", key="alice-key") as alice2,
            open_test_client(server, user="carol") as carol,
        ):
            await alice.send("direct", {"to": "bob", "content": "secret"}, ref="d7")
            ack = await alice.receive()
            assert ack["type"] == "ack" and ack["ref"] == "d7"
            assert ack["payload"]["to"] == "bob" and TIME.match(ack["payload"]["time"])
            assert ack["payload"]["id"] == 1
            expected = {
                "type": "direct",
                "payload": {
                    "id": 1,
                    "from": "alice",
                    "to": "bob",
                    "content": "secret",
                    "time": ack["payload"]["time"],
                },
            }
            assert await b1.receive() == expected
            assert await b2.receive() == expected
            assert await alice2.receive() == expected  # the sender's other tab
            await b1.send("direct", {"to": "alice", "content": "ok"})
            answer = await alice.expect("direct")
            assert answer["payload"]["id"] == 2 and answer["payload"]["from"] == "bob"
            # Nobody else.
            await carol.join("x")
            await nothing_more(carol, "x", server)


# ---------------------------------------------------------------- errors


BAD_FRAMES = [
    ("not json", "{nope", None),
    ("not an object", "[1, 2]", None),
    ("a number", "42", None),
    ("no type", json.dumps({"payload": {}, "ref": "e1"}), "e1"),
    ("unknown type", json.dumps({"type": "dance", "payload": {}, "ref": "e2"}), "e2"),
    ("no payload", json.dumps({"type": "join", "ref": "e3"}), "e3"),
    ("payload not an object", json.dumps({"type": "join", "payload": [], "ref": "e4"}), "e4"),
    ("missing room", json.dumps({"type": "join", "payload": {}, "ref": "e5"}), "e5"),
    ("room not a string", json.dumps({"type": "join", "payload": {"room": 5}, "ref": "e6"}), "e6"),
    (
        "bad room name",
        json.dumps({"type": "join", "payload": {"room": "no spaces"}, "ref": "e7"}),
        "e7",
    ),
    (
        "bad since",
        json.dumps({"type": "join", "payload": {"room": "r", "since": -1}, "ref": "e8"}),
        "e8",
    ),
    (
        "empty content",
        json.dumps({"type": "chat", "payload": {"room": "r", "content": ""}, "ref": "e9"}),
        "e9",
    ),
    (
        "content not a string",
        json.dumps({"type": "chat", "payload": {"room": "r", "content": 1}}),
        None,
    ),
    (
        "bad addressee",
        json.dumps({"type": "direct", "payload": {"to": "", "content": "x"}, "ref": "e10"}),
        "e10",
    ),
    ("ref too long", json.dumps({"type": "join", "payload": {"room": "r"}, "ref": "x" * 65}), None),
]


async def test_every_kind_of_bad_frame_gets_400_and_the_connection_stays():
    async with open_test_server() as server:
        async with open_test_client(server, user="alice") as alice:
            for label, text, ref in BAD_FRAMES:
                await alice.ws.send_message(text)
                frame = await alice.receive()
                assert frame["type"] == "error", label
                assert frame["payload"]["code"] == 400, label
                assert isinstance(frame["payload"]["message"], str), label
                assert frame["payload"]["message"], label
                assert frame.get("ref") == ref, label
            await alice.ws.send_message(b'{"type": "join", "payload": {"room": "r"}}')
            frame = await alice.receive()
            assert frame["type"] == "error" and frame["payload"]["code"] == 400
            assert "binary" in frame["payload"]["message"]
            # Still open and working.
            joined = await alice.join("r")
            assert joined["payload"]["members"] == ["alice"]
            assert server.hub.counters.errors[400] == len(BAD_FRAMES) + 1


async def test_chat_without_join_is_403():
    async with open_test_server() as server:
        async with open_test_client(server, user="alice") as alice:
            await alice.send("chat", {"room": "lobby", "content": "hi"}, ref="c1")
            frame = await alice.receive()
            assert frame["type"] == "error" and frame["ref"] == "c1"
            assert frame["payload"]["code"] == 403
            await alice.send("typing", {"room": "lobby"}, ref="t1")
            frame = await alice.receive()
            assert frame["payload"]["code"] == 403 and frame["ref"] == "t1"
            await alice.join("lobby")
            assert (await alice.chat("lobby", "now"))["payload"]["id"] == 1


async def test_joining_a_room_the_identity_does_not_allow_is_403():
    def authenticate(request):
        return Identity(request.query["user"], rooms=("team-*", "lobby"))

    async with open_test_server(authenticator=authenticate) as server:
        async with open_test_client(server, user="alice") as alice:
            await alice.send("join", {"room": "secret"}, ref="j1")
            frame = await alice.receive()
            assert frame["type"] == "error" and frame["ref"] == "j1"
            assert frame["payload"]["code"] == 403
            assert (await alice.join("team-red"))["payload"]["room"] == "team-red"
            assert (await alice.join("lobby"))["payload"]["room"] == "lobby"


async def test_direct_to_an_absent_user_is_kept_for_them():
    async with open_test_server() as server:
        async with open_test_client(server, user="alice") as alice:
            await alice.send("direct", {"to": "nobody", "content": "hello?"}, ref="d1")
            ack = await alice.receive()
            assert ack["type"] == "ack" and ack["payload"]["id"] == 1
        async with open_test_client(server, user="nobody") as nobody:
            await nobody.send("conversations", {}, ref="c1")
            listing = await nobody.receive()
            assert listing["type"] == "conversations" and listing["ref"] == "c1"
            assert listing["payload"]["truncated"] is False
            [item] = listing["payload"]["conversations"]
            assert (item["with"], item["last_id"]) == ("alice", 1)
            assert item["last"] == {
                "id": 1,
                "from": "alice",
                "to": "nobody",
                "content": "hello?",
                "time": ack["payload"]["time"],
            }
            await nobody.send("direct", {"to": "nobody", "content": "me?"}, ref="d2")
            assert (await nobody.receive())["payload"]["code"] == 400


async def test_content_over_the_limit_is_413():
    async with open_test_server(Config(max_content_chars=10)) as server:
        async with open_test_client(server, user="alice") as alice:
            await alice.join("r")
            frame = await alice.chat("r", "x" * 11, ref="big")
            assert frame["type"] == "error" and frame["ref"] == "big"
            assert frame["payload"]["code"] == 413
            await alice.send("direct", {"to": "alice", "content": "é" * 11})
            assert (await alice.receive())["payload"]["code"] == 413
            assert (await alice.chat("r", "é" * 10))["type"] == "ack"


async def test_rate_limit_is_429_with_retry_after_and_nothing_delivered():
    async with open_test_server(Config(rate_messages=3, rate_seconds=60)) as server:
        async with (
            open_test_client(server, user="alice") as alice,
            open_test_client(server, user="bob") as bob,
        ):
            await alice.join("r")
            await bob.join("r")
            await alice.expect("system")
            for i in range(3):
                assert (await alice.chat("r", f"ok{i}"))["type"] == "ack"
            frame = await alice.chat("r", "too many", ref="x")
            assert frame["type"] == "error" and frame["ref"] == "x"
            assert frame["payload"]["code"] == 429
            retry = frame["payload"]["retry_after_ms"]
            assert isinstance(retry, int) and 0 < retry <= 60_000
            # presence and direct count too
            await alice.send("presence", {"status": "away"})
            assert (await alice.receive())["payload"]["code"] == 429
            # joining does not
            assert (await alice.join("other"))["type"] == "joined"

            assert [(await bob.receive())["payload"]["content"] for _ in range(3)] == [
                "ok0",
                "ok1",
                "ok2",
            ]
            await nothing_more(bob, "r", server)  # the refused one never came
            assert server.stats().rate_limited == 2


async def test_still_flooding_after_rate_limit_errors_is_closed_1008():
    async with open_test_server(Config(rate_messages=2, rate_seconds=60)) as server:
        async with open_test_client(server, user="alice") as alice:
            await alice.join("r")
            for i in range(2):
                await alice.chat("r", str(i))
            for _ in range(3):
                assert (await alice.chat("r", "flood"))["payload"]["code"] == 429
            await alice.send("chat", {"room": "r", "content": "flood"})
            assert await expect_closed(alice) == 1008


async def test_server_fault_is_500_and_the_connection_stays():
    async with open_test_server() as server:

        def fault(event):
            if getattr(event, "content", None) == "boom":
                raise RuntimeError("injected fault")

        server.hub.fault_hook = fault
        async with open_test_client(server, user="alice") as alice:
            await alice.join("r")
            frame = await alice.chat("r", "boom", ref="b1")
            assert frame["type"] == "error" and frame["ref"] == "b1"
            assert frame["payload"]["code"] == 500
            # Nothing was published; the next message gets id 1.
            assert (await alice.chat("r", "fine"))["payload"]["id"] == 1
            assert server.hub.counters.errors[500] == 1


# ---------------------------------------------------------------- closes


async def test_oversized_frame_is_closed_1009():
    async with open_test_server(Config(max_message_bytes=1024)) as server:
        async with (
            open_test_client(server, user="alice") as alice,
            open_test_client(server, user="bob") as bob,
        ):
            await alice.ws.send_message("x" * 2000)
            assert await expect_closed(alice) == 1009
            # Multi-byte characters count in bytes: 600 × 3 bytes > 1024.
            async with open_test_client(server, user="carol") as carol:
                await carol.ws.send_message("€" * 600)
                assert await expect_closed(carol) == 1009
            # Just under the limit is fine, and others are unaffected.
            await bob.join("r")
            frame = json.dumps({"type": "chat", "payload": {"room": "r", "content": "y" * 900}})
            assert len(frame.encode()) <= 1024
            await bob.ws.send_message(frame)
            assert (await bob.receive())["type"] == "ack"


async def test_twenty_invalid_frames_among_the_last_64_close_1008():
    async with open_test_server() as server:
        async with open_test_client(server, user="alice") as alice:
            for _ in range(19):
                await alice.ws.send_message("junk")
                assert (await alice.receive())["payload"]["code"] == 400
            # A valid frame does not reset the count: the rule is a ratio.
            await alice.join("r")
            await alice.ws.send_message("junk")
            assert await expect_closed(alice) == 1008
        assert server.hub.counters.errors[400] == 20


# ---------------------------------------------------------------- nothing left behind


def count_tasks() -> int:
    def walk(task) -> int:
        return 1 + sum(
            walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    return walk(trio.lowlevel.current_root_task())


async def test_every_way_a_connection_ends_leaves_no_task_behind(stored):
    config = stored(max_message_bytes=1024)
    async with open_test_server(config) as server:
        baseline = count_tasks()
        # A normal close, from a member of a room.
        async with open_test_client(server, user="a") as a:
            await a.join("r")
            await a.chat("r", "hi")
        # 1009 and 1008.
        async with open_test_client(server, user="b") as b:
            await b.ws.send_message("x" * 2000)
            assert await expect_closed(b) == 1009
        async with open_test_client(server, user="c") as c:
            for _ in range(20):
                await c.ws.send_message("junk")
            assert await expect_closed(c) == 1008
        # An abort: the TCP connection just goes away.
        raw = RawClient(await trio.open_tcp_stream("127.0.0.1", server.port))
        await raw.handshake(target="/ws?user=d")
        await raw.send_frame("join", {"room": "r"})
        await raw.stream.aclose()
        # A refused handshake, a plain request, half a request.
        with pytest.raises(ConnectionRejected):
            async with open_test_client(server, user="-bad"):
                pass  # pragma: no cover
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while await stream.receive_some():
            pass
        await stream.aclose()
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        await stream.aclose()

        await wait_until(lambda: count_tasks() == baseline)
        await wait_until(lambda: server.stats().users == 0)
        stats = server.stats()
        assert stats.connections == 0
        assert server.hub.state.members("r") == []
        assert stats.handshakes == 0
        assert stats.tcp_connections == 0


# ---------------------------------------------------------------- slow consumers


async def connect_stalled(server: ChatServer, user: str, room: str) -> RawClient:
    """A client with a small socket buffer, in *room*, that then stops reading."""
    client = RawClient(await open_small_socket(server.port))
    await client.handshake(target=f"/ws?user={user}")
    assert (await client.next_frame())["type"] == "welcome"
    await client.send_frame("join", {"room": room})
    assert (await client.next_frame())["type"] == "joined"
    return client


def queued_for(server: ChatServer, user: str) -> int:
    """Frames queued for *user*'s one connection."""
    (conn,) = server.connections(user)
    return conn.queued_frames


async def test_slow_consumer_is_closed_1013_while_the_room_keeps_receiving(stored):
    with collect_logs("disconnect ") as disconnects:
        async with open_test_server(stored(queue_size=8, rate_messages=100_000)) as server:
            async with (
                open_test_client(server, user="bob") as bob,
                open_test_client(server, user="carol") as carol,
            ):
                await bob.join("r")
                await carol.join("r")
                slow = await connect_stalled(server, "slow", "r")
                big = "x" * 2000
                sent = 0
                # Publish until the stalled client's queue overflows.
                while not server.stats().slow_consumer_drops:
                    assert sent < 5000, "the stalled client never overflowed"
                    ack = await carol.chat("r", big)
                    sent += 1
                    assert ack["payload"]["id"] == sent
                    assert (await bob.expect("chat"))["payload"]["id"] == sent
                # The others go on, and miss nothing.
                for _ in range(50):
                    await carol.chat("r", "after")
                    sent += 1
                    frame = await bob.expect("chat")
                    assert frame["payload"]["id"] == sent
                # The slow client, reading again, gets whole frames, in order
                # and without gaps, then the 1013 close.
                events = await slow.until_close()
                assert events[-1].code == 1013
                assert await slow.drain() == []
                text = "".join(e.data for e in events[:-1])
                # (With Redis, a ``system`` join may come in too: the room's
                # membership news arrives through Redis.)
                frames = [json.loads(line) for line in text.replace("}}{", "}}\n{").splitlines()]
                ids = [f["payload"]["id"] for f in frames if f["type"] == "chat"]
                assert ids == list(range(1, len(ids) + 1))
                assert len(ids) < sent
                await wait_until(lambda: server.stats().connections == 2)
                assert server.stats().slow_consumer_drops == 1
    (line,) = [d for d in disconnects if "user=slow" in d]
    assert "code=1013" in line and "reason=slow consumer" in line


async def test_stopped_reader_is_cut_off_and_nobody_waits_for_it():
    config = Config(queue_size=8, write_timeout=0.5)
    with collect_logs("disconnect ") as disconnects:
        async with open_test_server(config) as server:
            async with open_test_client(server, user="bob") as bob:
                await bob.join("r")
                slow = await connect_stalled(server, "stuck", "r")
                sent = 0
                while not server.stats().slow_consumer_drops:
                    assert sent < 5000
                    ack = await server.publish("r", "y" * 2000)
                    sent += 1
                    assert ack.id == sent
                    assert (await bob.expect("chat"))["payload"]["id"] == sent
                # It left the room at once; its write in flight never ends,
                # so after slow_consumer_grace it is aborted (exactly then:
                # test_abuse_wire, on trio's virtual clock).
                await wait_until(lambda: server.stats().connections == 1, 30)
                assert server.stats().slow_consumer_drops == 1
                await slow.stream.aclose()
    (line,) = [d for d in disconnects if "user=stuck" in d]
    assert "code=abort" in line and "reason=slow consumer" in line


async def test_ephemeral_events_are_dropped_not_queued_for_a_backed_up_client():
    async with open_test_server(Config(queue_size=8, rate_messages=100_000)) as server:
        async with open_test_client(server, user="bob") as bob:
            await bob.join("r")
            slow = await connect_stalled(server, "slow", "r")
            await bob.expect("system")
            sent = 0
            while queued_for(server, "slow") <= server.config.queue_size // 2:
                await server.publish("r", "z" * 2000)
                sent += 1
                assert sent < 5000
            queued = queued_for(server, "slow")
            (info,) = server.connections("slow")
            # Each queued chat frame holds its 2,000 characters.
            assert queued * 2000 < info.queued_bytes <= server.config.queue_bytes
            assert info.writing  # its socket is full: a write waits
            dropped = server.stats().ephemeral_dropped
            for _ in range(100):
                await bob.send("typing", {"room": "r"})
                await bob.send("presence", {"status": f"s{_ % 3}"})
            # bob's own presence echoes mark the end of his frames.
            for _ in range(100):
                await bob.expect("presence")
            assert server.stats().ephemeral_dropped >= dropped + 200
            assert queued_for(server, "slow") == queued
            assert server.stats().slow_consumer_drops == 0
            # Reading again, it gets every chat message and is still connected.
            ids = []
            while len(ids) < sent:
                frame = await slow.next_frame()
                assert frame["type"] == "chat", frame
                ids.append(frame["payload"]["id"])
            assert ids == list(range(1, sent + 1))
            await slow.send_frame("chat", {"room": "r", "content": "back"}, ref="b")
            frame = await slow.next_frame()
            assert frame["type"] == "ack" and frame["ref"] == "b"
            await slow.stream.aclose()


# ---------------------------------------------------------------- embedding API


async def test_publish_and_send_direct_take_the_client_path(stored):
    async with open_test_server(stored()) as server:
        async with (
            open_test_client(server, user="alice", key="alice-key") as alice,
            open_test_client(server, user="alice", key="alice-key") as alice2,
        ):
            await alice.join("news")
            first = await alice.chat("news", "from a client")
            ack = await server.publish("news", "from the server", user_id="bot", ref="s-1")
            assert isinstance(ack, ChatAck)
            assert ack.id == first["payload"]["id"] + 1 == 2
            assert ack.room == "news" and TIME.match(ack.time)
            assert await alice.receive() == {
                "type": "chat",
                "payload": {
                    "id": 2,
                    "room": "news",
                    "user_id": "bot",
                    "content": "from the server",
                    "time": ack.time,
                },
            }
            # The same ref again: the same ack, nothing published.
            assert await server.publish("news", "from the server", user_id="bot", ref="s-1") == ack
            # A room with no members yet is created; history keeps it.
            await server.publish("fresh", "first words")

            direct = await server.send_direct("alice", "psst", user_id="bot")
            assert isinstance(direct, DirectAck) and direct.to == "alice"
            assert direct.id == 1  # stored in the conversation
            payload = {"id": 1, "from": "bot", "to": "alice", "content": "psst"}
            payload["time"] = direct.time
            for client in (alice, alice2):
                assert await client.receive() == {"type": "direct", "payload": payload}

            async with open_test_client(server, user="bob") as bob:
                history = (await bob.join("news"))["payload"]["history"]
                assert [(m["id"], m["user_id"]) for m in history] == [(1, "alice"), (2, "bot")]
                history = (await bob.join("fresh"))["payload"]["history"]
                assert [m["content"] for m in history] == ["first words"]

            # bob's connection is gone once the server has seen its close.
            await wait_until(lambda: server.stats().connections == 2 and server.stats().users == 1)
            stats = server.stats()
            assert stats.messages == 3
            # The rooms kept here: with Redis, only those with members here.
            assert stats.rooms == (1 if server.config.redis_url else 2)


async def test_publish_and_send_direct_refuse_what_a_client_could_not_send():
    async with open_test_server(Config(max_content_chars=5)) as server:
        with pytest.raises(ProtocolError) as info:
            await server.publish("bad room", "x")
        assert info.value.code == 400
        with pytest.raises(ProtocolError) as info:
            await server.publish("r", "")
        assert info.value.code == 400
        with pytest.raises(ProtocolError) as info:
            await server.publish("r", "toolong")
        assert info.value.code == 413
        with pytest.raises(ProtocolError) as info:
            await server.send_direct("nobody", "hi", user_id="nobody")
        assert info.value.code == 400  # to oneself
        with pytest.raises(ProtocolError) as info:
            await server.send_direct("not valid!", "hi")
        assert info.value.code == 400
        assert server.stats().messages == 0


async def test_plain_http_on_the_same_port():
    async with open_test_server() as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert json.loads(body)["status"] == "ok"
        await stream.aclose()
        # The WebSocket endpoint still works over the same listener.
        async with trio_websocket.open_websocket_url(server.url) as ws:
            assert json.loads(await ws.get_message())["type"] == "welcome"


bound_all(globals(), 20)
