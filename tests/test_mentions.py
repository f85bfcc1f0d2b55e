"""Mentions: the pure rule, the payload field live and in history, and the
SQLite store keeping it (a version 1 database file is migrated)."""

from __future__ import annotations

import re
import sqlite3

from hypothesis import given, strategies as st
from support import bound_all

from trio_chat import ChatMessage, Config
from trio_chat._log import History
from trio_chat._mentions import MAX_MENTIONS, find_mentions
from trio_chat._sqlite_store import DB_NAME, SCHEMA_VERSION
from trio_chat.testing import open_test_client, open_test_server, user_ids

bound_all(globals(), 20)

_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_WORD = re.compile(r"[\w.@-]")


def test_examples_of_the_rule():
    assert find_mentions("hi @bob and @carol.") == ("bob", "carol")
    assert find_mentions("@ann, @ann! @bob-") == ("ann", "bob")
    assert find_mentions("mail ann@example.com or @bob@example.com") == ("bob@example.com",)
    assert find_mentions("@@bob @ .@bob x@bob _@bob é@bob") == ()
    assert find_mentions("(@bob) [@carol] \n@dee") == ("bob", "carol", "dee")
    assert find_mentions("no mention @ here, @-x, @.y") == ()
    assert find_mentions("@" + "a" * 70) == ("a" * 64,)
    assert find_mentions("") == ()


@given(st.lists(user_ids(), max_size=30), st.sampled_from([" ", ", ", "\n", "(", " :) "]))
def test_names_separated_by_other_characters_are_all_found(names, separator):
    names = [n.rstrip(".-@") for n in names]
    content = separator.join("@" + n for n in names)
    assert find_mentions(content) == tuple(dict.fromkeys(names))[:MAX_MENTIONS]


@given(st.text(st.sampled_from("ab1_.@- é\n"), max_size=60) | st.text(max_size=60))
def test_every_mention_is_a_user_id_after_a_boundary(content):
    mentions = find_mentions(content)
    assert len(mentions) == len(set(mentions)) <= MAX_MENTIONS
    for name in mentions:
        assert _USER.fullmatch(name) and name[-1] not in ".-@"
        starts = [
            m.start()
            for m in re.finditer(re.escape("@" + name), content)
            if m.start() == 0 or not _WORD.match(content[m.start() - 1])
        ]
        assert starts, (content, name)


async def test_mentions_are_in_the_live_message_and_in_history():
    async with open_test_server(Config()) as server:
        async with (
            open_test_client(server, user="ann") as ann,
            open_test_client(server, user="bob") as bob,
        ):
            await ann.join("r")
            await bob.join("r")
            await ann.expect("system")
            await ann.chat("r", "hi @bob and @cy, and @bob again")
            live = await bob.expect("chat")
            assert live["payload"]["mentions"] == ["bob", "cy"]
            await ann.chat("r", "no one")
            plain = await bob.expect("chat")
            assert "mentions" not in plain["payload"]
        async with open_test_client(server, user="cy") as cy:
            history = (await cy.join("r"))["payload"]["history"]
            assert [m.get("mentions") for m in history] == [["bob", "cy"], None]


async def test_the_sqlite_store_keeps_mentions(tmp_path):
    config = Config(data_dir=str(tmp_path))
    async with open_test_server(config) as server:
        async with open_test_client(server, user="ann") as ann:
            await ann.join("r")
            await ann.chat("r", "@bob look")
    async with open_test_server(config) as server:
        async with open_test_client(server, user="bob") as bob:
            history = (await bob.join("r"))["payload"]["history"]
            assert history[0]["mentions"] == ["bob"]


_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE rooms (name TEXT PRIMARY KEY, epoch TEXT NOT NULL, last_id INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY, room TEXT NOT NULL, id INTEGER NOT NULL, user_id TEXT NOT NULL,
    content TEXT NOT NULL, time TEXT NOT NULL, at REAL NOT NULL
);
CREATE INDEX messages_by_room ON messages (room, id);
CREATE TABLE refs (seq INTEGER PRIMARY KEY, user_id TEXT NOT NULL, ref TEXT NOT NULL,
    ack TEXT NOT NULL);
INSERT INTO meta VALUES ('schema', '1');
INSERT INTO rooms VALUES ('r', 'abcdef012345', 2);
"""


async def test_a_version_1_database_is_migrated(tmp_path):
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(_SCHEMA_1)
    now = 1_900_000_000.0
    db.executemany(
        "INSERT INTO messages VALUES (?, 'r', ?, 'ann', ?, '2030-03-17T17:46:40.000Z', ?)",
        [(1, 1, "hello @bob", now), (2, 2, "plain", now)],
    )
    db.commit()
    db.close()
    async with open_test_server(Config(data_dir=str(tmp_path), history_max_age=0)) as server:
        async with open_test_client(server, user="bob") as bob:
            joined = (await bob.join("r"))["payload"]
            assert joined["epoch"] == "abcdef012345"
            assert [(m["content"], m.get("mentions")) for m in joined["history"]] == [
                ("hello @bob", ["bob"]),
                ("plain", None),
            ]
            assert (await bob.chat("r", "@ann new"))["payload"]["id"] == 3
    db = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        rows = db.execute("SELECT id, extra FROM messages ORDER BY id").fetchall()
    finally:
        db.close()
    assert rows == [(1, '{"mentions":["bob"]}'), (2, None), (3, '{"mentions":["ann"]}')]


def test_a_log_counts_unread_messages_and_mentions_of_a_user():
    history = History()
    log = history.open("r")
    for user, content in [("ann", "hi @bob"), ("bob", "@bob me"), ("cy", "yo"), ("ann", "@bob!")]:
        history.append(log, user, content, 0.0, "t")
    assert log.get(2) == ChatMessage(2, "r", "bob", "@bob me", "t", mentions=("bob",))
    assert log.get(0) is None and log.get(5) is None
    assert log.unread("bob", 0) == (3, 2)
    assert log.unread("bob", 1) == (2, 1)
    assert log.unread("ann", 0) == (2, 0)
    assert log.unread("bob", 4) == (0, 0)
