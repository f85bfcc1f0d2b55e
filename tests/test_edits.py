"""Edits, deletes, reactions and history pages.

* The pure hub state: who may edit or delete, the edit window (``now`` is
  passed in: a controllable clock), reactions toggled per user, the byte
  accounting after each change, history pages by ``since`` and ``before``
  within their byte bound.
* End to end over real sockets: two clients see edits, deletes and
  reactions live (the sender's copy with its ``ref``), and a replay after a
  reconnect (``join`` with ``since``) shows the edited text and the
  tombstone; the errors (400, 403, 404) leave the connection usable.
* The SQLite store: a restart keeps edits, tombstones and reactions (a real
  file), and a deleted message's text is gone from the file.
* The end-to-end test runs over each store (the Redis store's own cases:
  test_backplane_messages.py; a conversation's messages over each store:
  test_conversations.py).
"""

from __future__ import annotations

import json
import sqlite3

import attrs
import pytest
from support import bound_all

from trio_chat import (
    ChatMessage,
    Config,
    Delete,
    Edit,
    HistoryPage,
    MessageDeleted,
    MessageEdited,
    ProtocolError,
    React,
    ReactionChanged,
    ReadHistory,
)
from trio_chat._hub_state import Delivery, HubState, Reply
from trio_chat._message_ops import DEFAULT_REACTIONS, parse_time
from trio_chat._protocol import Chat, Join, format_time
from trio_chat._sizes import retained_bytes
from trio_chat._sqlite_store import DB_NAME
from trio_chat.testing import TestClient, open_test_client, open_test_server

bound_all(globals(), 30)

NOW = 1_790_000_000.0
THUMBS = DEFAULT_REACTIONS[0]
HEART = DEFAULT_REACTIONS[1]


def two_members(**kw: object) -> HubState:
    """ann (connection 1) and bob (2) in room r, ann's message 1 in it."""
    s = HubState(**kw)  # type: ignore[arg-type]
    s.connect(1, "ann")
    s.connect(2, "bob")
    s.handle(1, Join("r"), NOW)
    s.handle(2, Join("r"), NOW)
    s.handle(1, Chat("r", "hello @bob"), NOW)
    return s


def refused(s: HubState, key: int, event: object, now: float = NOW) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        s.handle(key, event, now)  # type: ignore[arg-type]
    return info.value


def consistent(s: HubState) -> None:
    """The byte accounting matches the retained messages, everywhere."""
    log = s.room_log("r")
    assert log is not None
    assert [size for _, size in log.entries] == [retained_bytes(m) for m, _ in log.entries]
    assert log.bytes == sum(size for _, size in log.entries)
    assert s.history.bytes == log.bytes


def test_an_edit_goes_to_every_member_the_senders_copy_with_its_ref():
    s = two_members()
    later = NOW + 5
    out = s.handle(1, Edit("r", None, 1, "hi @cy", "e1"), later)
    event = MessageEdited("r", None, 1, "ann", "hi @cy", format_time(later), ("cy",))
    assert out == [Delivery(event, (2,)), Delivery(attrs.evolve(event, ref="e1"), (1,))]
    message = s.room_log("r").get(1)  # type: ignore[union-attr]
    assert (message.content, message.edited, message.mentions) == (
        "hi @cy",
        format_time(later),
        ("cy",),
    )
    consistent(s)


def test_who_may_edit_and_until_when():
    s = two_members(edit_window=60)
    assert refused(s, 2, Edit("r", None, 1, "mine now")).code == 403
    assert refused(s, 1, Edit("r", None, 7, "x")).message == "message 7 is not retained in room 'r'"
    late = refused(s, 1, Edit("r", None, 1, "x"), NOW + 60.5)
    assert (late.code, late.message) == (403, "messages can be edited for 60 s")
    s.handle(1, Edit("r", None, 1, "in time"), NOW + 60)
    s.connect(3, "cy")
    assert refused(s, 3, Edit("r", None, 1, "x")).code == 403  # not a member
    assert refused(s, 1, Edit("nowhere", None, 1, "x")).code == 403
    s.handle(1, Delete("r", None, 1), NOW)
    assert refused(s, 1, Edit("r", None, 1, "x")).code == 404


def test_delete_leaves_a_tombstone_and_frees_the_text():
    s = two_members()
    before = s.history.bytes
    assert refused(s, 2, Delete("r", None, 1)).code == 403
    out = s.handle(1, Delete("r", None, 1, "d"), NOW)
    event = MessageDeleted("r", None, 1, "ann", "ann")
    assert out == [
        Delivery(event, (2,)),
        Delivery(MessageDeleted("r", None, 1, "ann", "ann", "d"), (1,)),
    ]
    tombstone = s.room_log("r").get(1)  # type: ignore[union-attr]
    assert tombstone == ChatMessage(1, "r", "ann", "", tombstone.time, deleted=True)
    assert s.history.bytes == before - len("hello @bob") - len("bob") - 3
    consistent(s)
    # Again: answered like the first, to the sender alone; nothing changes.
    again = s.handle(1, Delete("r", None, 1, "d2"), NOW)
    assert again == [Delivery(MessageDeleted("r", None, 1, "ann", "ann", "d2"), (1,))]
    assert refused(s, 2, React("r", None, 1, THUMBS)).code == 404


def test_reactions_toggle_per_user_and_count_distinct_users():
    s = two_members()
    base = s.history.bytes
    out = s.handle(2, React("r", None, 1, THUMBS, "x"), NOW)
    assert out[0] == Delivery(ReactionChanged("r", None, 1, THUMBS, "bob", True, 1), (1,))
    assert out[1].to == (2,) and out[1].event.ref == "x"  # type: ignore[union-attr]
    s.handle(1, React("r", None, 1, THUMBS), NOW)
    s.handle(1, React("r", None, 1, HEART), NOW)
    message = s.room_log("r").get(1)  # type: ignore[union-attr]
    assert message.reactions == {THUMBS: ("bob", "ann"), HEART: ("ann",)}
    assert s.history.bytes == base + 3 * 32 + len("bob") + 2 * len("ann")
    off = s.handle(2, React("r", None, 1, THUMBS), NOW)
    assert off[0].event == ReactionChanged("r", None, 1, THUMBS, "bob", False, 1)
    s.handle(1, React("r", None, 1, THUMBS), NOW)
    s.handle(1, React("r", None, 1, HEART), NOW)
    assert s.room_log("r").get(1).reactions is None  # type: ignore[union-attr]
    assert s.history.bytes == base
    consistent(s)
    bad = refused(s, 1, React("r", None, 1, "x"))
    assert bad.code == 400 and THUMBS in bad.message


def test_an_edit_that_grows_a_room_past_its_budget_trims_the_oldest():
    s = two_members(history_bytes_per_room=1000)
    s.handle(1, Chat("r", "second"), NOW)
    s.handle(1, Chat("r", "third"), NOW)
    assert s.room_log("r").first_id == 1  # type: ignore[union-attr]
    s.handle(1, Edit("r", None, 3, "x" * 200), NOW)
    log = s.room_log("r")
    assert log is not None and log.first_id == 2 and log.bytes <= 1000
    consistent(s)


def test_a_change_that_grows_the_history_past_its_total_trims_the_servers_oldest():
    # ann's message in r is the server's oldest, alone in its room; a
    # reaction takes the history past its total: it goes, as after a restart.
    s = two_members(history_bytes_total=2 * 320)
    s.handle(2, Join("s"), NOW)
    s.handle(2, Chat("s", "later"), NOW)
    assert s.history.bytes <= 2 * 320
    s.handle(2, React("r", None, 1, THUMBS), NOW)
    assert s.room_log("r").get(1) is None  # type: ignore[union-attr]
    assert s.room_log("s").get(1) is not None  # type: ignore[union-attr]
    assert s.history.bytes == s.room_log("s").bytes <= 2 * 320  # type: ignore[union-attr]


def test_history_pages_back_with_before_and_forward_with_since():
    s = two_members()
    for i in range(2, 11):
        s.handle(1, Chat("r", f"m{i}"), NOW)

    def page(**kw: int) -> tuple[list[int], bool]:
        out = s.handle(2, ReadHistory("r", None, kw.get("since"), kw.get("before"), "h"), NOW)
        assert len(out) == 1 and out[0].to == (2,)
        event = out[0].event
        assert isinstance(event, HistoryPage) and event.ref == "h"
        return [m["id"] for m in event.messages], event.truncated

    assert page() == (list(range(1, 11)), False)
    assert page(since=7) == ([8, 9, 10], False)
    assert page(before=4) == ([1, 2, 3], False)
    assert page(before=1) == ([], False)
    assert page(since=10) == ([], False)
    assert page(before=99) == (list(range(1, 11)), False)
    s2 = two_members(history_size=3)
    for i in range(2, 7):
        s2.handle(1, Chat("r", f"m{i}"), NOW)
    out = s2.handle(2, ReadHistory("r", None, None, 6), NOW)
    assert [m["id"] for m in out[0].event.messages] == [4, 5]  # type: ignore[union-attr]
    assert out[0].event.truncated  # type: ignore[union-attr]
    assert refused(s, 2, ReadHistory("elsewhere", None)).code == 403


def test_a_history_page_holds_at_most_64_kib():
    s = two_members(history_bytes_per_room=10 << 20)
    for _ in range(40):
        s.handle(1, Chat("r", "x" * 4000), NOW)
    event = s.handle(2, ReadHistory("r", None), NOW)[0].event
    assert isinstance(event, HistoryPage) and event.truncated
    size = len(json.dumps(event.messages))
    assert 60_000 < size <= 64 * 1024
    assert event.messages[-1]["id"] == 41


def test_parse_time_reads_format_time():
    for t in (0.0, NOW, NOW + 0.123, NOW + 59.999):
        assert abs(parse_time(format_time(t)) - t) < 0.001


def test_the_embedding_program_and_moderators_delete_any_message():
    s = two_members()
    reply = Reply()
    out = s.delete_any("r", 1, "mod", "removed by a moderator", reply)
    message = reply.value
    assert message.deleted
    assert [d.event.type for d in out] == ["delete", "system"]
    assert out[0].event == MessageDeleted("r", None, 1, "ann", "mod")
    assert all(d.to == (1, 2) for d in out)
    with pytest.raises(ProtocolError):
        s.delete_any("r", 9, "mod", "")


# ---------------------------------------------------------------- end to end


async def next_of(client: TestClient, kind: str) -> dict:
    return await client.expect(kind)


async def test_two_clients_see_edits_deletes_and_reactions_live_and_in_replays(stored):
    async with open_test_server(stored()) as server:
        async with (
            open_test_client(server, user="ann") as ann,
            open_test_client(server, user="bob", key="bob-key-123") as bob,
        ):
            await ann.join("r")
            await bob.join("r")
            first = (await ann.chat("r", "frist"))["payload"]["id"]
            second = (await ann.chat("r", "oops"))["payload"]["id"]
            await bob.expect("chat")
            await bob.expect("chat")

            await ann.send("edit", {"room": "r", "id": first, "content": "first @bob"}, "e")
            mine = await ann.expect("edit")
            theirs = await bob.expect("edit")
            assert mine["ref"] == "e" and "ref" not in theirs
            assert theirs["payload"]["content"] == "first @bob"
            assert theirs["payload"]["mentions"] == ["bob"]
            assert mine["payload"] == theirs["payload"]

            await bob.send("react", {"room": "r", "id": first, "emoji": THUMBS}, "x")
            reaction = (await ann.expect("reaction"))["payload"]
            assert (reaction["user_id"], reaction["on"], reaction["count"]) == ("bob", True, 1)
            assert (await bob.expect("reaction"))["ref"] == "x"

            await ann.send("delete", {"room": "r", "id": second}, "d")
            assert (await bob.expect("delete"))["payload"] == {
                "room": "r",
                "id": second,
                "user_id": "ann",
                "by": "ann",
            }
            assert (await ann.expect("delete"))["ref"] == "d"

            # errors answer with the frame's ref, and the connection goes on
            for payload, code in [
                ({"room": "r", "id": first, "content": "x"}, 403),
                ({"room": "r", "id": 99, "content": "x"}, 404),
                ({"room": "r", "with": "ann", "id": first, "content": "x"}, 400),
                ({"id": first, "content": "x"}, 400),
                ({"room": "r", "id": -1, "content": "x"}, 400),
                ({"room": "r", "id": first, "content": ""}, 400),
                ({"room": "other", "id": first, "content": "x"}, 403),
            ]:
                await bob.send("edit", payload, "bad")
                error = await bob.expect("error")
                assert (error["payload"]["code"], error["ref"]) == (code, "bad"), payload
            await bob.send("react", {"room": "r", "id": second, "emoji": THUMBS}, "gone")
            assert (await bob.expect("error"))["payload"]["code"] == 404

            await bob.send("history", {"room": "r", "before": second}, "h")
            page = await bob.expect("history")
            assert page["ref"] == "h" and not page["payload"]["truncated"]
            assert [m["content"] for m in page["payload"]["messages"]] == ["first @bob"]

        # a replay after a reconnect shows the edit and the tombstone
        async with open_test_client(server, user="bob", key="bob-key-123") as bob:
            history = (await bob.join("r", since=0))["payload"]["history"]
            assert [
                (m["content"], m.get("deleted"), m.get("edited") is not None) for m in history
            ] == [
                ("first @bob", None, True),
                ("", True, False),
            ]
            assert history[0]["reactions"] == {THUMBS: ["bob"]}


async def test_welcome_lists_the_reactions_and_the_setting_changes_them():
    async with open_test_server(Config(reactions=("a", "b"))) as server:
        async with open_test_client(server, user="ann") as ann:
            assert ann.welcome["payload"]["limits"]["reactions"] == ["a", "b"]
            await ann.join("r")
            await ann.chat("r", "m")
            await ann.send("react", {"room": "r", "id": 1, "emoji": THUMBS})
            assert (await ann.expect("error"))["payload"]["code"] == 400
            await ann.send("react", {"room": "r", "id": 1, "emoji": "b"})
            assert (await ann.expect("reaction"))["payload"]["count"] == 1


async def test_the_sqlite_store_keeps_edits_tombstones_and_reactions(tmp_path):
    config = Config(data_dir=str(tmp_path))
    async with open_test_server(config) as server:
        async with open_test_client(server, user="ann") as ann:
            await ann.join("r")
            for text in ["one", "secret text", "three"]:
                await ann.chat("r", text)
            await ann.send("edit", {"room": "r", "id": 1, "content": "one, edited"})
            await ann.expect("edit")
            await ann.send("delete", {"room": "r", "id": 2})
            await ann.expect("delete")
            await ann.send("react", {"room": "r", "id": 3, "emoji": HEART})
            await ann.expect("reaction")
    db = sqlite3.connect(tmp_path / DB_NAME)
    try:
        contents = [row[0] for row in db.execute("SELECT content FROM messages ORDER BY id")]
    finally:
        db.close()
    assert contents == ["one, edited", "", "three"]
    async with open_test_server(config) as server:
        async with open_test_client(server, user="bob") as bob:
            history = (await bob.join("r"))["payload"]["history"]
            assert history[0]["content"] == "one, edited" and "edited" in history[0]
            assert history[1] == {**history[1], "content": "", "deleted": True}
            assert history[2]["reactions"] == {HEART: ["ann"]}
            stats = server.stats()
            assert stats.history == 3
            await bob.send("react", {"room": "r", "id": 3, "emoji": HEART})
            assert (await bob.expect("reaction"))["payload"]["count"] == 2
