"""Direct conversations with the Redis store: two server processes (two
:class:`ChatServer`\\ s in this trio run) on one real ``redis-server``.

A direct message is stored in its conversation whether or not the addressee
is connected, with gap-free ids whichever process takes it; it reaches every
connection of both users on either process but the sending one; the
conversation's history, edits, deletes and reactions (``with``) are the
same on both processes; ``conversations`` lists it; the bounds on
conversations hold cluster-wide.  Where a test shows that a frame was *not*
delivered, it sends a later frame on the same path and checks that the
later one comes next.
"""

from __future__ import annotations

from typing import Any

from support import bounded
from test_backplane import open_cluster

from trio_chat._testing_server import TestClient
from trio_chat.testing import open_test_client


async def _direct(client: TestClient, to: str, content: str, ref: str | None = None) -> dict:
    await client.send("direct", {"to": to, "content": content}, ref)
    while True:
        frame = await client.receive()
        if frame["type"] in ("ack", "error"):
            return frame


async def _listing(client: TestClient) -> list[dict[str, Any]]:
    """The user's conversations (answered once the user is registered in
    Redis: the listing's read follows the registration)."""
    await client.send("conversations", {}, ref="c")
    frame = await client.expect("conversations")
    conversations: list[dict[str, Any]] = frame["payload"]["conversations"]
    return conversations


async def _history(client: TestClient, other: str, **fields: Any) -> dict[str, Any]:
    await client.send("history", {"with": other, **fields}, ref="h")
    while True:
        frame = await client.receive()
        if frame["type"] in ("history", "error"):
            return frame


@bounded(30)
async def test_a_conversation_is_stored_and_reaches_both_users_on_every_process(redis_server):
    async with open_cluster(redis_server) as (s0, s1):
        async with (
            open_test_client(s0, user="ann") as ann0,
            open_test_client(s1, user="ann") as ann1,
        ):
            await _listing(ann0)
            await _listing(ann1)
            # bob is connected nowhere: stored all the same.
            first = await _direct(ann0, "bob", "are you there?", "d1")
            assert first["type"] == "ack" and first["ref"] == "d1"
            assert first["payload"]["id"] == 1 and first["payload"]["to"] == "bob"
            copy = await ann1.expect("direct")  # the sender's other connection
            assert copy["payload"] == {
                "id": 1,
                "from": "ann",
                "to": "bob",
                "content": "are you there?",
                "time": first["payload"]["time"],
            }
            async with open_test_client(s1, user="bob") as bob:
                [item] = await _listing(bob)
                assert (item["with"], item["last_id"], item["last"]["content"]) == (
                    "ann",
                    1,
                    "are you there?",
                )
                assert (item["read"], item["unread"], item["mentions"]) == (0, 1, 0)
                page = await _history(bob, "ann")
                assert [m["content"] for m in page["payload"]["messages"]] == ["are you there?"]
                assert page["payload"]["with"] == "ann"
                # Live now, on either process, ids going on.
                reply = await _direct(bob, "ann", "yes @ann", "d2")
                assert reply["payload"]["id"] == 2
                for ann in (ann0, ann1):
                    got = (await ann.expect("direct"))["payload"]
                    assert (got["id"], got["from"], got["mentions"]) == (2, "bob", ["ann"])
                again = await _direct(ann1, "bob", "good")
                assert again["payload"]["id"] == 3
                assert (await bob.expect("direct"))["payload"]["id"] == 3
                assert (await ann0.expect("direct"))["payload"]["id"] == 3
                # The sending connection had no copy: its next frame is the
                # answer to what it asks next.
                assert (await _history(ann1, "bob", since=1))["payload"]["messages"][0]["id"] == 2
                # A ref resent on the other process: the first ack, nothing stored.
                assert await _direct(ann1, "bob", "are you there?", "d1") == first
                assert [c["last_id"] for c in await _listing(ann0)] == [3]


@bounded(30)
async def test_edits_reactions_and_deletes_with_with_are_seen_on_both_processes(redis_server):
    async with open_cluster(redis_server) as (s0, s1):
        async with open_test_client(s0, user="ann") as ann, open_test_client(s1, user="bob") as bob:
            await _listing(ann)
            await _listing(bob)
            ack = await _direct(ann, "bob", "helo")
            await bob.expect("direct")
            await ann.send(
                "edit", {"with": "bob", "id": ack["payload"]["id"], "content": "hello"}, "e"
            )
            mine = await ann.expect("edit")
            assert mine["ref"] == "e" and mine["payload"]["with"] == "bob"
            theirs = await bob.expect("edit")
            assert theirs["payload"]["with"] == "ann" and theirs["payload"]["content"] == "hello"
            await bob.send("react", {"with": "ann", "id": 1, "emoji": "👍"}, "r")
            reaction = await bob.expect("reaction")
            assert reaction["ref"] == "r" and reaction["payload"]["with"] == "ann"
            seen = (await ann.expect("reaction"))["payload"]
            assert (seen["with"], seen["user_id"], seen["on"], seen["count"]) == (
                "bob",
                "bob",
                True,
                1,
            )
            [message] = (await _history(bob, "ann"))["payload"]["messages"]
            assert message["content"] == "hello" and message["reactions"] == {"👍": ["bob"]}
            assert message["from"] == "ann" and message["to"] == "bob"
            # Someone else's message: the rules are the other stores'.
            await bob.send("delete", {"with": "ann", "id": 1}, "x")
            refused = await bob.expect("error")
            assert refused["payload"]["code"] == 403 and refused["ref"] == "x"
            await ann.send("delete", {"with": "bob", "id": 1}, "d")
            assert (await ann.expect("delete"))["payload"]["by"] == "ann"
            assert (await bob.expect("delete"))["payload"]["with"] == "ann"
            [gone] = (await _history(ann, "bob"))["payload"]["messages"]
            assert gone["deleted"] is True and gone["content"] == ""
            # No such conversation, or no such message.
            for frame in (
                ("history", {"with": "cy"}),
                ("edit", {"with": "cy", "id": 1, "content": "x"}),
                ("react", {"with": "bob", "id": 9, "emoji": "👍"}),
            ):
                await ann.send(*frame, ref="n")
                error = await ann.expect("error")
                assert error["payload"]["code"] == 404 and error["ref"] == "n"
                assert "cy" in error["payload"]["message"] or "9" in error["payload"]["message"]


@bounded(30)
async def test_the_bounds_on_conversations_hold_across_processes(redis_server):
    settings = {"max_conversations_per_user": 2, "max_conversations": 3}
    async with open_cluster(redis_server, **settings) as (s0, s1):
        async with open_test_client(s0, user="ann") as ann, open_test_client(s1, user="bob") as bob:
            assert (await _direct(ann, "u1", "x"))["type"] == "ack"
            assert (await _direct(ann, "u2", "x"))["type"] == "ack"
            refused = await _direct(ann, "u3", "x", "f")
            assert refused["payload"] == {
                "code": 403,
                "message": "a user may be in at most 2 conversations",
            }
            assert (await _direct(ann, "u1", "again"))["payload"]["id"] == 2
            # The addressee's bound, checked on the other process.
            refused = await _direct(bob, "ann", "x")
            assert refused["payload"]["message"] == "'ann' cannot take new conversations now"
            # Three in all: a fourth forgets the least recently written
            # (ann's with u2), its ids too.
            assert (await _direct(bob, "u4", "x"))["type"] == "ack"
            assert (await _direct(bob, "u5", "x"))["type"] == "ack"
            assert [c["with"] for c in await _listing(ann)] == ["u1"]
            assert (await _history(ann, "u2"))["payload"]["code"] == 404
            # Started again, its ids from 1: the least recently written
            # (ann's with u1) goes now.
            assert (await _direct(ann, "u2", "new"))["payload"]["id"] == 1
            assert [c["with"] for c in await _listing(ann)] == ["u2"]
