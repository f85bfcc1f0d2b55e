"""Direct conversations end to end, over real sockets on 127.0.0.1.

Stored messages with ids per conversation, the ``conversations`` listing,
edits, reactions and history with ``with`` (over each store), typing to a
user, what a token forbids, and a restart of the SQLite store (a real file)
keeping every conversation (two processes of the Redis store:
test_backplane_direct.py).
"""

from __future__ import annotations

import pytest

from trio_chat import Config
from trio_chat._auth import make_token
from trio_chat.testing import TestClient, open_test_client, open_test_server

SECRET = "conversations-secret-0123456789abcdef"


async def listing(client: TestClient, ref: str = "c") -> dict:
    await client.send("conversations", {}, ref=ref)
    frame = await client.expect("conversations")
    assert frame["ref"] == ref
    return frame["payload"]


async def test_conversations_list_most_recent_first_with_their_last_message(stored):
    async with open_test_server(stored()) as server:
        async with (
            open_test_client(server, user="ann") as ann,
            open_test_client(server, user="bob") as bob,
        ):
            for to, content in [("bob", "b1"), ("cy", "c1"), ("bob", "b2")]:
                await ann.send("direct", {"to": to, "content": content})
                await ann.expect("ack")
            got = await listing(ann)
            assert got["truncated"] is False
            assert [
                (c["with"], c["last_id"], c["last"]["content"]) for c in got["conversations"]
            ] == [
                ("bob", 2, "b2"),
                ("cy", 1, "c1"),
            ]
            # The other side sees it from theirs.
            [item] = (await listing(bob))["conversations"]
            assert item["with"] == "ann" and item["last"]["to"] == "bob"


async def test_typing_to_a_user_reaches_their_connections_only():
    async with open_test_server() as server:
        async with (
            open_test_client(server, user="ann") as ann,
            open_test_client(server, user="bob") as bob,
            open_test_client(server, user="cy") as cy,
        ):
            await ann.send("typing", {"with": "bob"})
            assert await bob.receive() == {
                "type": "typing",
                "payload": {"with": "ann", "user_id": "ann"},
            }
            # A later frame's answer proves cy got nothing before it.
            await cy.send("conversations", {}, ref="after")
            assert (await cy.receive())["type"] == "conversations"


@pytest.mark.parametrize("claims", [{"direct": False}, {"rooms": []}])
async def test_a_token_without_direct_messages_may_not_use_conversations(claims):
    async with open_test_server(Config(secret=SECRET)) as server:
        token = make_token(SECRET, "ann", **claims)
        async with open_test_client(server, token=token) as ann:
            for kind, payload in [
                ("direct", {"to": "bob", "content": "x"}),
                ("conversations", {}),
                ("typing", {"with": "bob"}),
            ]:
                await ann.send(kind, payload, ref=kind)
                frame = await ann.receive()
                assert frame["type"] == "error" and frame["ref"] == kind
                assert frame["payload"]["code"] == 403


async def test_the_sqlite_store_keeps_conversations_across_a_restart(tmp_path):
    config = Config(data_dir=str(tmp_path / "data"))
    async with open_test_server(config) as server:
        async with open_test_client(server, user="ann") as ann:
            await ann.send("direct", {"to": "bob", "content": "while you were away"}, ref="d1")
            first = await ann.expect("ack")
            await ann.send("direct", {"to": "bob", "content": "second"})
            await ann.expect("ack")
    async with open_test_server(config) as server:
        assert server.stats().history == 2 and server.stats().rooms == 0
        async with open_test_client(server, user="bob") as bob:
            [item] = (await listing(bob))["conversations"]
            assert (item["with"], item["last_id"], item["last"]["content"]) == ("ann", 2, "second")
            await bob.send("direct", {"to": "ann", "content": "back"})
            assert (await bob.expect("ack"))["payload"]["id"] == 3  # ids go on
        async with open_test_client(server, user="ann") as ann:
            # A ref accepted before the restart: its original ack.
            await ann.send("direct", {"to": "bob", "content": "while you were away"}, ref="d1")
            assert await ann.expect("ack") == first


async def test_edits_reactions_and_history_in_a_conversation_name_the_other_side(stored):
    async with open_test_server(stored()) as server:
        async with (
            open_test_client(server, user="ann") as ann,
            open_test_client(server, user="bob") as bob,
        ):
            await listing(bob)  # (with Redis: once bob is known to be connected)
            await ann.send("direct", {"to": "bob", "content": "hi @bob"}, ref="d1")
            ack = await ann.expect("ack")
            assert ack["payload"]["id"] == 1
            assert (await bob.expect("direct"))["payload"]["mentions"] == ["bob"]

            # bob reacts from his side; ann hears of it from hers.
            await bob.send("react", {"with": "ann", "id": 1, "emoji": "👍"}, ref="r1")
            mine = await bob.expect("reaction")
            assert mine["ref"] == "r1" and mine["payload"]["with"] == "ann"
            theirs = await ann.expect("reaction")
            assert theirs["payload"]["with"] == "bob"
            assert (theirs["payload"]["user_id"], theirs["payload"]["count"]) == ("bob", 1)

            # Only the author edits; each side is told with the other's name.
            await bob.send("edit", {"with": "ann", "id": 1, "content": "no"}, ref="e0")
            assert (await bob.expect("error"))["payload"]["code"] == 403
            await ann.send("edit", {"with": "bob", "id": 1, "content": "hello"}, ref="e1")
            assert (await ann.expect("edit"))["payload"]["with"] == "bob"
            edited = await bob.expect("edit")
            assert (edited["payload"]["with"], edited["payload"]["content"]) == ("ann", "hello")

            # The history is direct payloads with the edit and the reaction.
            await bob.send("history", {"with": "ann"}, ref="h1")
            page = (await bob.expect("history"))["payload"]
            [message] = page["messages"]
            assert (message["from"], message["to"], message["content"]) == ("ann", "bob", "hello")
            assert "room" not in message and "user_id" not in message
            assert message["reactions"] == {"👍": ["bob"]} and "edited" in message

            await ann.send("delete", {"with": "bob", "id": 1}, ref="x1")
            assert (await ann.expect("delete"))["payload"]["by"] == "ann"
            assert (await bob.expect("delete"))["payload"]["with"] == "ann"
