"""The interactive terminal client's message commands, in a pseudo-terminal.

``python -m trio_chat connect`` runs under a pty and its screen is read
through a terminal emulator (pyte), as in test_terminal_pty.py; the other
user is a Python client, and the server runs in the test process on
127.0.0.1.  Checked: message ids on every message line, /edit, /delete and
/react with what both sides see, the server's refusals, /history paging
back through a conversation, /dms, mentions of the user in reverse video,
and /help naming every command.  An absence is proved by a later marker.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from support import bound_all
from terminal_support import PtyTerminal

from trio_chat._terminal_session import HELP
from trio_chat.client import MessageDeleted, MessageEdited, ReactionChanged, open_chat_client
from trio_chat.testing import open_test_server

bound_all(globals(), 60)

ROOM = "lobby"
PROMPT = "lobby>"
THUMBS = "👍"


@asynccontextmanager
async def carol_in(url: str) -> AsyncIterator[PtyTerminal]:
    """carol's terminal in the lobby, once it is ready."""
    term = PtyTerminal(url, "--room", ROOM, "--user", "carol")
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


async def next_of(client, kind):
    with trio.fail_after(15):
        async for event in client:
            if isinstance(event, kind):
                return event
    raise AssertionError("stream ended")


def message_line(user: str, content: str, id_: int) -> re.Pattern[str]:
    return re.compile(rf"^\[lobby\] #{id_} \d\d:\d\d {re.escape(user)}: {re.escape(content)}$")


async def quit_cleanly(term: PtyTerminal) -> None:
    await term.send("/quit\r")
    assert await term.exit_status() == 0


async def test_edit_react_and_delete_by_id_as_both_sides_see_them():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            await bob.send(ROOM, "bob's own")
            async with carol_in(server.url) as term:
                await term.send("first try\r")
                await term.until_line(message_line("carol", "first try", 2).match)

                await term.send("/edit 2 second try\r")
                await term.until_line(lambda line: line == "[lobby] #2 carol edited: second try")
                edited = await next_of(bob, MessageEdited)
                assert (edited.id, edited.user_id, edited.content) == (2, "carol", "second try")

                await term.send(f"/react #2 {THUMBS}\r")
                await term.until_line(lambda line: line == f"[lobby] #2 carol reacted {THUMBS} (1)")
                await bob.react(ROOM, 2, THUMBS)
                await term.until_line(lambda line: line == f"[lobby] #2 bob reacted {THUMBS} (2)")
                assert (await next_of(bob, ReactionChanged)).user_id == "carol"

                await term.send("/delete 2\r")
                await term.until_line(lambda line: line == "[lobby] #2 deleted by carol")
                assert (await next_of(bob, MessageDeleted)).by == "carol"
                await bob.edit(ROOM, 1, "bob's, edited")
                await term.until_line(lambda line: line == "[lobby] #1 bob edited: bob's, edited")
                await quit_cleanly(term)


async def test_refusals_and_bad_arguments_are_one_line_each():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            await bob.send(ROOM, "not carol's")
            async with carol_in(server.url) as term:
                await term.send("/edit 1 mine now\r")
                refusal = await term.until_line(lambda line: line.startswith("! error 403"))
                assert "your own" in refusal
                await term.send("/delete 9\r")
                await term.until_line(lambda line: line.startswith("! error 404"))
                await term.send("/react 1 nonsense\r")
                await term.until_line(lambda line: line.startswith("! error 400: emoji must be"))
                await term.send("/edit one two\r")
                await term.until_line(lambda line: line == "! usage: /edit [@USER] ID TEXT")
                await term.send("/delete\r")
                await term.until_line(lambda line: line == "! usage: /delete [@USER] ID")
                await term.send("/history 0\r")
                await term.until_line(lambda line: line == "! usage: /history [@USER] [N]")
                await quit_cleanly(term)


async def test_history_pages_back_through_a_conversation_and_dms_lists_it():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            for n in range(1, 4):
                await bob.direct("carol", f"dm {n}")  # kept while carol is away
            async with carol_in(server.url) as term:
                await term.send("/history @bob 2\r")
                await term.until_line(lambda line: line == "* (/history for more)")
                lines = term.lines()
                start = lines.index("* earlier in the conversation with bob:")
                assert lines[start + 1 : start + 3] == [
                    "(history) (dm) #2 bob: dm 2",
                    "(history) (dm) #3 bob: dm 3",
                ]
                await term.send("/history @bob\r")
                await term.until_line(lambda line: line == "(history) (dm) #1 bob: dm 1")
                await term.send("/history @bob\r")
                await term.until_line(
                    lambda line: line == "* no earlier messages in the conversation with bob"
                )
                # The room's history came with the join: nothing earlier.
                await term.send("/history\r")
                await term.until_line(lambda line: line == "* no earlier messages in lobby")

                await term.send("/dm bob answer\r")
                await term.until_line(lambda line: line == "(dm to bob) #4 carol: answer")
                await term.send("/dms\r")
                await term.until_line(lambda line: line == "*   @bob: (dm to bob) #4 carol: answer")
                assert "* direct conversations, most recent first:" in term.lines()
                await term.send("/edit @bob 4 answered\r")
                await term.until_line(
                    lambda line: line == "(dm with bob) #4 carol edited: answered"
                )
                assert (await next_of(bob, MessageEdited)).with_ == "carol"
                await quit_cleanly(term)


def reverse_runs(term: PtyTerminal, row_text: str) -> list[str]:
    """The runs of reverse-video characters on the screen row showing *row_text*."""
    [row] = [y for y, line in enumerate(term.screen.display) if line.rstrip() == row_text]
    chars = term.screen.buffer[row]
    runs, run = [], ""
    for x in range(term.screen.columns):
        if chars[x].reverse:
            run += chars[x].data
        elif run:
            runs, run = [*runs, run], ""
    return runs + ([run] if run else [])


async def test_mentions_of_the_user_are_in_reverse_video():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            async with carol_in(server.url) as term:
                await bob.send(ROOM, "hi @carol and @bob, @carolyn is someone else")
                await bob.send(ROOM, "nothing for @dan")
                shown = await term.until_line(message_line("bob", "nothing for @dan", 2).match)
                first = next(line for line in term.lines() if "hi @carol" in line)
                assert message_line("bob", "hi @carol and @bob, @carolyn is someone else", 1).match(
                    first
                )
                assert reverse_runs(term, first) == ["@carol"]
                assert reverse_runs(term, shown) == []
                await quit_cleanly(term)


async def test_help_names_every_command():
    async with open_test_server() as server:
        async with carol_in(server.url) as term:
            await term.send("/help\r")
            await term.until_line(lambda line: line.startswith("  /quit"))
            shown = "\n".join(term.lines())
            for command in (
                "/me",
                "/join",
                "/leave",
                "/room",
                "/dm ",
                "/dms",
                "/edit",
                "/delete",
                "/react",
                "/history",
                "/rooms",
                "/topic",
                "/status",
                "/who",
                "/help",
                "/quit",
            ):
                assert f"  {command}" in shown and f"  {command}" in HELP, command
            await quit_cleanly(term)
