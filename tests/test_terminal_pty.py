"""The interactive terminal client, in a pseudo-terminal, against real servers.

``python -m trio_chat connect`` runs under a pty (so stdin and stdout are a
terminal and it shows its prompt_toolkit UI); what it draws is fed into a
terminal emulator (pyte) and the tests read the screen.  The servers run in
the test process on 127.0.0.1; the other side of each conversation is a
Python client.  An absence ("appears once", "not joined") is proved by a
later marker: once the marker is on the screen, everything before it is too.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from support import bounded
from terminal_support import PtyTerminal

from trio_chat import ChatServer, Config, make_token
from trio_chat.client import ChatMessage, ConnectError, open_chat_client
from trio_chat.testing import open_test_server

ROOM = "lobby"
SECRET_A = "first-secret-for-tests-0123456789abcdef"
SECRET_B = "second-secret-for-tests-0123456789abcdef"
PROMPT = "lobby> "


@asynccontextmanager
async def pty_terminal(*args: str, command: list[str] | None = None) -> AsyncIterator[PtyTerminal]:
    term = PtyTerminal(*args, command=command)
    try:
        yield term
    finally:
        term.close()


def live(user: str, content: str) -> re.Pattern[str]:
    return re.compile(rf"^\[lobby\] #\d+ \d\d:\d\d {re.escape(user)}: {re.escape(content)}$")


async def next_chat(client) -> ChatMessage:
    with trio.fail_after(15):
        async for event in client:
            if isinstance(event, ChatMessage) and event.user_id != client.user_id:
                return event
    raise AssertionError("stream ended")


def prompt_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith(PROMPT.rstrip())]


async def ready(term: PtyTerminal) -> list[str]:
    """Wait for the prompt with the room and an online status line."""
    return await term.until(
        lambda lines: (
            prompt_lines(lines)
            and any("online" in line and "lobby: " in line for line in lines)
            and any(line.startswith("* joined lobby") for line in lines)
        )
    )


@bounded(60)
async def test_prompt_shows_the_room_and_a_typed_line_appears_once():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            async with pty_terminal(server.url, "--room", ROOM, "--user", "carol") as term:
                lines = await ready(term)
                assert prompt_lines(lines) == [PROMPT.rstrip()], term.text()
                status = next(line for line in lines if "online" in line)
                assert "carol" in status
                assert "lobby: 2 members" in status

                await term.send("hello-once\r")
                message = await next_chat(bob)
                assert (message.user_id, message.content) == ("carol", "hello-once")
                await bob.send(ROOM, "marker-1")
                # (Waiting for the prompt too: it is redrawn after each line.)
                lines = await term.until(
                    lambda ls: (
                        any(live("bob", "marker-1").match(x) for x in ls) and prompt_lines(ls)
                    )
                )
                # Everything up to the marker is on the screen: the typed line
                # is there once, as the formatted message, and no echo of it.
                mine = [line for line in lines if "hello-once" in line]
                assert len(mine) == 1, term.text()
                assert live("carol", "hello-once").match(mine[0]), term.text()
                assert lines.index(mine[0]) < next(
                    i for i, x in enumerate(lines) if live("bob", "marker-1").match(x)
                )
                assert prompt_lines(lines) == [PROMPT.rstrip()], term.text()

                await term.send("/quit\r")
                assert await term.exit_status() == 0


@bounded(60)
async def test_an_incoming_message_does_not_break_the_line_being_typed():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            async with pty_terminal(server.url, "--room", ROOM, "--user", "carol") as term:
                await ready(term)
                await term.send("half-typed")
                await term.until(lambda ls: PROMPT + "half-typed" in ls)
                await bob.send(ROOM, "incoming-1")
                # (Waiting for the prompt too: it is redrawn after each line.)
                lines = await term.until(
                    lambda ls: (
                        any(live("bob", "incoming-1").match(x) for x in ls) and prompt_lines(ls)
                    )
                )
                # The incoming line is a line of its own above the prompt, and
                # the prompt still holds exactly what was typed.
                assert prompt_lines(lines) == [PROMPT + "half-typed"], term.text()
                incoming = next(
                    i for i, x in enumerate(lines) if live("bob", "incoming-1").match(x)
                )
                assert incoming < lines.index(PROMPT + "half-typed")
                assert [line for line in lines if "half-typed" in line] == [PROMPT + "half-typed"]

                await term.send(" and finished\r")
                message = await next_chat(bob)
                assert message.content == "half-typed and finished"
                await term.send("/quit\r")
                assert await term.exit_status() == 0


@bounded(60)
async def test_ctrl_c_exits_130_without_a_traceback():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            async with pty_terminal(server.url, "--room", ROOM, "--user", "carol") as term:
                await ready(term)
                await term.send("not sent")
                await term.until(lambda ls: PROMPT + "not sent" in ls)
                await term.send("\x03")
                assert await term.exit_status() == 130
                raw = bytes(term.raw)
                for word in (b"Traceback", b"KeyboardInterrupt", b"Error", b"Exception"):
                    assert word not in raw, term.text()
            # Nothing typed before Ctrl-C was sent: bob's marker comes first.
            async with open_chat_client(server.url, user="dan") as dan:
                await dan.join(ROOM)
                await dan.send(ROOM, "marker-2")
            assert (await next_chat(bob)).content == "marker-2"


@bounded(60)
async def test_join_with_a_bad_room_name_is_refused_with_the_reason():
    async with open_test_server() as server:
        async with pty_terminal(server.url, "--room", ROOM, "--user", "carol") as term:
            await ready(term)
            await term.send("/join bad room!\r")
            refusal = await term.until_line(lambda line: line.startswith("! cannot join"))
            assert "'bad room!'" in refusal
            assert "letters, digits" in refusal
            # Not joined "bad" either (commands are handled in order).
            await term.send("/room bad\r")
            await term.until_line(lambda line: line == "! not in bad: /join bad")
            lines = await term.until(prompt_lines)
            assert prompt_lines(lines) == [PROMPT.rstrip()], term.text()
            await term.send("/quit\r")
            assert await term.exit_status() == 0


@asynccontextmanager
async def restartable_server() -> AsyncIterator[tuple[ChatServer, int, trio.Nursery]]:
    """A server with SECRET_A on a port of its own, and a nursery to restart in."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    config = Config(secret=SECRET_A, host="127.0.0.1", port=port, shutdown_grace=2)
    first = ChatServer(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(first.serve, listeners=listeners))
        yield first, port, nursery
        nursery.cancel_scope.cancel()


async def restart_with_another_secret(first: ChatServer, port: int, nursery: trio.Nursery) -> None:
    """Stop *first*; serve the same port with SECRET_B (old tokens: 401)."""
    await first.shutdown()
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    second = ChatServer(Config(secret=SECRET_B, host="127.0.0.1", port=port))
    await nursery.start(functools.partial(second.serve, listeners=listeners))


@bounded(90)
async def test_a_refused_reconnect_ends_cleanly_with_the_servers_reason():
    async with restartable_server() as (first, port, nursery):
        url = f"ws://127.0.0.1:{port}/ws"
        token = make_token(SECRET_A, "carol", ttl=600)
        async with pty_terminal(url, "--room", ROOM, "--token", token) as term:
            await ready(term)
            await first.shutdown()
            # While the server is away: one status line, updated in place.
            await term.until(lambda ls: any(re.search(r"attempt [3-9]", x) for x in ls), 30)
            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
            second = ChatServer(Config(secret=SECRET_B, host="127.0.0.1", port=port))
            await nursery.start(functools.partial(second.serve, listeners=listeners))
            assert await term.exit_status(30) == 1
            lines = term.lines()
            [gone] = [line for line in lines if line.startswith("! disconnected for good")]
            assert "HTTP 401: bad token signature" in gone, term.text()
            assert len([line for line in lines if "connection lost" in line]) == 1, term.text()
            assert lines.index(gone) > next(
                i for i, x in enumerate(lines) if "connection lost" in x
            )
            raw = bytes(term.raw)
            assert b"Fatal Python error" not in raw
            assert b"Traceback" not in raw


@bounded(90)
async def test_a_refused_reconnect_with_stdin_a_terminal_and_stdout_a_file(tmp_path):
    """Plain line mode reading a terminal: no stuck read of stdin at exit."""
    output = tmp_path / "out.txt"
    async with restartable_server() as (first, port, nursery):
        url = f"ws://127.0.0.1:{port}/ws"
        token = make_token(SECRET_A, "carol", ttl=600)
        async with open_chat_client(url, token=make_token(SECRET_A, "bob")) as bob:
            await bob.join(ROOM)
            script = f'exec "$0" -m trio_chat connect {url} --room {ROOM} --token {token} > "$1"'
            command = ["/bin/sh", "-c", script, sys.executable, str(output)]
            async with pty_terminal(command=command) as term:
                await term.send("from a terminal\r")
                message = await next_chat(bob)
                assert message.content == "from a terminal"
                await restart_with_another_secret(first, port, nursery)
                assert await term.exit_status(30) == 1
                raw = bytes(term.raw)  # the terminal shows stderr (and the echo)
                assert b"Fatal Python error" not in raw
                assert b"Traceback" not in raw
        out = output.read_text()
        assert "! disconnected for good" in out
        assert "HTTP 401: bad token signature" in out
        assert out.count("connection lost") == 1


@bounded(60)
async def test_ctrl_c_while_still_connecting_exits_130_without_a_traceback():
    # A port that accepts TCP connections (the kernel's backlog) and never
    # answers the WebSocket handshake: the client is still connecting.
    with trio.socket.socket() as silent:
        await silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        async with pty_terminal(f"ws://127.0.0.1:{port}", "--user", "carol") as term:
            # The terminal is ours once the UI has switched the cursor on.
            await term.until(lambda _lines: b"\x1b[?25h" in term.raw)
            await term.send("\x03")
            assert await term.exit_status() == 130
            raw = bytes(term.raw)
            for word in (b"Traceback", b"KeyboardInterrupt", b"Error", b"cannot connect"):
                assert word not in raw, raw


@bounded(60)
async def test_a_taken_name_is_refused_with_the_reason_and_its_own_reconnect_keeps_it():
    """No --key: the terminal client holds its name with a key of its own
    for the run; another client asking for the name is refused (409), and
    the terminal shows that reason when it is the one refused."""
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="dora") as dora:
            async with pty_terminal(server.url, "--room", ROOM, "--user", "dora") as term:
                line = await term.until_line(lambda x: "HTTP 409" in x)
                assert "the name 'dora' is taken: pick another one" in line, term.text()
                assert await term.exit_status() == 1
                raw = bytes(term.raw)
                assert b"Traceback" not in raw
            await dora.join(ROOM)
            async with pty_terminal(server.url, "--room", ROOM, "--user", "hal") as term:
                await ready(term)
                with pytest.raises(ConnectError) as refused:
                    async with open_chat_client(server.url, user="hal"):
                        pass
                assert refused.value.status == 409
                # Dropped by the server, the terminal comes back as hal.
                [conn] = server.connections("hal")
                server.close_connection(conn.session_id, 1013, "test drop")
                await term.until_line(lambda x: "connection lost" in x or "reconnecting" in x)
                await term.until(
                    lambda _: (
                        [c.session_id for c in server.connections("hal")]
                        not in ([], [conn.session_id])
                    )
                )
                await term.send("back again\r")
                message = await next_chat(dora)
                assert (message.user_id, message.content) == ("hal", "back again")
                await term.send("/quit\r")
                assert await term.exit_status() == 0
