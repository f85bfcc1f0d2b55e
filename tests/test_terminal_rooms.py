"""The interactive terminal client's read markers, room listing and topics,
in a pseudo-terminal.

``python -m trio_chat connect`` runs under a pty and its screen is read
through a terminal emulator (pyte), as in test_terminal_messages.py; the
other users are Python clients, and the server runs in the test process on
127.0.0.1.  Checked: the unread counts and the topic on join, the
``— new messages —`` divider after the read marker, the read marker moved to
what the current room shows (seen by the user's other connection), topic
changes shown live, /topic showing, setting and clearing it, /rooms with
member counts, topics and a query; topics and /rooms with the memory store
and with the Redis store on a real ``redis-server``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from support import bound_all
from terminal_support import PtyTerminal

from trio_chat import Config
from trio_chat._terminal_format import format_event
from trio_chat.client import ReadMarker, System, open_chat_client
from trio_chat.testing import open_test_server

bound_all(globals(), 60)

ROOM = "lobby"
PROMPT = "lobby>"
KEY = "carol-own-key"


@asynccontextmanager
async def carol_in(url: str) -> AsyncIterator[PtyTerminal]:
    """carol's terminal in the lobby (with the key of her other
    connections), once it is ready."""
    term = PtyTerminal(url, "--room", ROOM, "--user", "carol", "--key", KEY)
    try:
        await term.until(
            lambda lines: (
                any(line.startswith(PROMPT) for line in lines)
                and any(line.startswith("* joined lobby") for line in lines)
            )
        )
        yield term
    finally:
        term.close()


async def next_of(client, kind, test=lambda event: True):
    """Skip events until one of type *kind* for which *test* holds."""
    with trio.fail_after(15):
        async for event in client:
            if isinstance(event, kind) and test(event):
                return event
    raise AssertionError("stream ended")


@pytest.fixture(params=["memory", "redis"])
def store(request) -> Config:
    """The server's config: the memory store, then the Redis store on a
    fresh ``redis-server`` (topics and the room directory kept there)."""
    if request.param == "memory":
        return Config()
    redis = request.getfixturevalue("redis_server")
    return Config(redis_url=redis.url + "?timeout=0.5&heartbeat=0.2&node_ttl=2")


async def quit_cleanly(term: PtyTerminal) -> None:
    await term.send("/quit\r")
    assert await term.exit_status() == 0


async def test_join_shows_unread_counts_the_divider_and_the_topic_and_marks_what_it_shows():
    async with open_test_server() as server:
        async with (
            open_chat_client(server.url, user="bob") as bob,
            open_chat_client(server.url, user="carol", key=KEY) as phone,
        ):
            await bob.join(ROOM)
            await bob.send(ROOM, "one")
            await phone.join(ROOM)
            await phone.mark_read(ROOM, 1)  # carol read "one" on her phone
            assert (await next_of(phone, ReadMarker)).id == 1  # its own answer
            await bob.send(ROOM, "two for @carol")
            await bob.send(ROOM, "three")
            await bob.set_topic(ROOM, "trio talk")

            async with carol_in(server.url) as term:
                lines = await term.until(lambda lines: "* topic of lobby: trio talk" in lines)
                joined = next(line for line in lines if line.startswith("* joined lobby"))
                assert joined == (
                    "* joined lobby: bob, carol "
                    "(3 earlier messages above; 2 unread, 1 mentioning you)"
                )
                history = [line for line in lines if line.startswith("(history)")]
                assert [line.split(": ", 1)[1] for line in history] == [
                    "one",
                    "two for @carol",
                    "three",
                ]
                divider = lines.index("— new messages —")
                assert lines[divider - 1] == history[0] and lines[divider + 1] == history[1]

                # The terminal showed #3: her phone is told she read it.
                assert (await next_of(phone, ReadMarker)).id == 3
                await bob.send(ROOM, "four")
                await term.until_line(lambda line: line.endswith("bob: four"))
                assert (await next_of(phone, ReadMarker)).id == 4
            async with open_chat_client(server.url, user="carol", key=KEY) as later:
                joined_again = await later.join(ROOM)
                assert (joined_again.read, joined_again.unread) == (4, 0)


async def test_topics_are_shown_live_and_set_shown_and_cleared_with_slash_topic(store):
    async with open_test_server(store) as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            async with carol_in(server.url) as term:
                await term.send("/topic\r")
                await term.until_line(lambda line: line == "* lobby has no topic")

                await bob.set_topic(ROOM, "bob's topic")
                await term.until_line(
                    lambda line: line == "* bob set the topic of lobby: bob's topic"
                )
                await term.send("/topic\r")
                await term.until_line(lambda line: line == "* topic of lobby: bob's topic")

                await term.send("/topic carol's now\r")
                await term.until_line(
                    lambda line: line == "* carol set the topic of lobby: carol's now"
                )
                seen = await next_of(
                    bob, System, lambda event: (event.event, event.user_id) == ("topic", "carol")
                )
                assert seen.text == "carol's now"

                await term.send("/topic --clear\r")
                await term.until_line(lambda line: line == "* carol cleared the topic of lobby")
                await term.send("/topic\r")
                await term.until(lambda lines: lines.count("* lobby has no topic") == 2)
                await term.send("/topic " + "x" * 300 + "\r")
                await term.until_line(lambda line: line.startswith("! error 400: topic must be"))
                await quit_cleanly(term)


async def test_rooms_lists_member_counts_and_topics_and_takes_a_query(store):
    async with open_test_server(store) as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            await bob.join("trio-dev")
            await bob.set_topic("trio-dev", "nurseries all the way down")
            async with carol_in(server.url) as term:
                await term.send("/rooms\r")
                lines = await term.until(lambda lines: any("trio-dev" in line for line in lines))
                start = lines.index("* rooms, most members first:")
                assert lines[start + 1 : start + 3] == [
                    "*   lobby (2 members)",
                    "*   trio-dev (1 member): nurseries all the way down",
                ]
                await term.send("/rooms NURSERIES\r")  # in the topic, any case
                await term.until(lambda lines: _listed_last(lines) == ["trio-dev"])
                await term.send("/rooms nothing-like-it\r")
                await term.until_line(lambda line: line == "* no rooms matching 'nothing-like-it'")
                await quit_cleanly(term)


def _listed_last(lines: list[str]) -> list[str]:
    """The rooms of the last /rooms listing on the screen."""
    header = "* rooms, most members first:"
    if header not in lines:
        return []
    start = len(lines) - lines[::-1].index(header)
    listed = []
    for line in lines[start:]:
        if not line.startswith("*   "):
            break
        listed.append(line.split()[1])
    return listed


def test_topic_lines():
    set_it = System("topic", ROOM, "bob", "all things trio")
    assert format_event(set_it) == "* bob set the topic of lobby: all things trio"
    cleared = System("topic", ROOM, "bob", "")
    assert format_event(cleared) == "* bob cleared the topic of lobby"
    sneaky = System("topic", ROOM, "bob", "\x1b[2Jgone")
    assert format_event(sneaky) == "* bob set the topic of lobby: \N{REPLACEMENT CHARACTER}[2Jgone"
