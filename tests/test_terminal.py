"""The terminal client (``trio-chat connect``), driven through pipes.

Each test runs ``python -m trio_chat connect`` as a real subprocess against a
real server on 127.0.0.1 (port 0), writes its stdin, reads its stdout, and
checks what another client sees.  Every test is bounded by fail_after.
"""

from __future__ import annotations

import functools
import re
import signal
import subprocess
import sys
from contextlib import asynccontextmanager

import trio
from support import bounded

from trio_chat import Config, make_token
from trio_chat._terminal import format_event
from trio_chat._terminal_format import emphasize
from trio_chat.client import (
    ChatMessage,
    DirectMessage,
    ErrorEvent,
    MessageDeleted,
    MessageEdited,
    PresenceUpdate,
    ReactionChanged,
    System,
    open_chat_client,
)
from trio_chat.testing import open_test_server

ROOM = "lobby"
LINE = re.compile(r"^\[lobby\] #\d+ \d\d:\d\d (\S+): (.*)$")


def connect_command(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "trio_chat", "connect", url, *args]


async def run_piped(url: str, stdin: bytes, *args: str) -> subprocess.CompletedProcess:
    return await trio.run_process(
        connect_command(url, *args),
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


@asynccontextmanager
async def terminal(url: str, *args: str):
    """The terminal client as a subprocess with piped stdin and stdout."""
    command = connect_command(url, *args)
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            functools.partial(
                trio.run_process,
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                check=False,
            )
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()


async def chats(client, count: int, timeout: float = 10) -> list[ChatMessage]:
    got = []
    with trio.fail_after(timeout):
        async for event in client:
            if isinstance(event, ChatMessage):
                got.append(event)
                if len(got) == count:
                    return got
    raise AssertionError("stream ended")


@bounded(30)
async def test_printf_hi_quit_sends_waits_for_the_ack_and_exits_0():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            result = await run_piped(server.url, b"hi\n/quit\n", "--room", ROOM, "--user", "carol")
            out = result.stdout.decode()
            assert result.returncode == 0, (out, result.stderr.decode())
            [message] = await chats(bob, 1)
            assert (message.user_id, message.content) == ("carol", "hi")
            # The sender printed its own message once acknowledged.
            assert any(
                LINE.match(line) and line.endswith("carol: hi") for line in out.splitlines()
            ), out
            assert "* joined lobby" in out


@bounded(30)
async def test_end_of_input_exits_after_pending_acks_with_commands():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            await bob.join("other")
            script = (
                "one\n"
                "two\n"
                "/dm bob psst\n"
                "/status away lunch\n"
                "/join other\n"
                "in other\n"
                "/leave other\n"
                "//slash\n"
            )
            result = await run_piped(server.url, script.encode(), "--room", ROOM, "--user", "carol")
            out = result.stdout.decode()
            assert result.returncode == 0, (out, result.stderr.decode())
            events = []
            with trio.fail_after(10):
                async for event in bob:
                    events.append(event)
                    if sum(isinstance(e, ChatMessage) for e in events) == 4:
                        break
            seen = [(e.room, e.content) for e in events if isinstance(e, ChatMessage)]
            assert seen == [(ROOM, "one"), (ROOM, "two"), ("other", "in other"), (ROOM, "/slash")]
            [dm] = [e for e in events if isinstance(e, DirectMessage)]
            assert (dm.from_, dm.content) == ("carol", "psst")
            assert any(
                isinstance(e, PresenceUpdate)
                and (e.user_id, e.status, e.text) == ("carol", "away", "lunch")
                for e in events
            )
            assert any(
                isinstance(e, System)
                and (e.event, e.room, e.user_id) == ("leave", "other", "carol")
                for e in events
            )
            assert "(dm to bob) #1 carol: psst" in out  # #1 in their conversation
            assert "* left other" in out


@bounded(30)
async def test_incoming_events_are_printed_as_lines():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            async with terminal(server.url, "--room", ROOM, "--user", "carol") as process:
                output = Lines(process.stdout)
                await output.until(lambda line: line.startswith("* joined lobby"))
                await bob.send(ROOM, "hello \x1b[31mcarol")
                line = await output.until(lambda line: "bob:" in line)
                match = LINE.match(line)
                assert match and match.group(1) == "bob"
                assert match.group(2) == "hello \N{REPLACEMENT CHARACTER}[31mcarol"
                await bob.direct("carol", "private")
                assert (
                    await output.until(lambda line: line.startswith("(dm)"))
                    == "(dm) #1 bob: private"
                )
                await bob.set_presence("busy")
                assert await output.until(lambda line: "busy" in line) == "* bob is busy"
                await process.stdin.send_all(b"/who\n")
                assert (
                    await output.until(lambda line: line.startswith("* in "))
                    == "* in lobby: bob, carol"
                )
                await process.stdin.send_all(b"/nonsense\n/quit\n")
                assert (await output.until(lambda line: line.startswith("!"))).startswith(
                    "! unknown command"
                )
                assert await process.wait() == 0


@bounded(30)
async def test_reconnects_by_itself_and_keeps_sending():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            async with terminal(server.url, "--room", ROOM, "--user", "carol") as process:
                output = Lines(process.stdout)
                await output.until(lambda line: line.startswith("* joined lobby"))
                await process.stdin.send_all(b"before\n")
                await output.until(lambda line: line.endswith("carol: before"))
                for conn in server.connections("carol"):
                    server.close_connection(conn.session_id, None)
                await output.until(lambda line: line.startswith("* connection lost"))
                await process.stdin.send_all(b"after\n")
                await output.until(lambda line: line == "* reconnected")
                await process.stdin.send_all(b"/quit\n")
                assert await process.wait() == 0
            got = await chats(bob, 2)
            assert [m.content for m in got] == ["before", "after"]


@bounded(30)
async def test_refused_messages_and_unreachable_servers_exit_1():
    async with open_test_server(Config(max_content_chars=5)) as server:
        result = await run_piped(server.url, b"much too long\n", "--room", ROOM, "--user", "dan")
        out = result.stdout.decode()
        assert result.returncode == 1
        assert "! error 413:" in out
        url = server.url
    result = await run_piped(url, b"hi\n", "--room", ROOM, "--user", "dan")
    assert result.returncode == 1
    assert result.stdout.decode().startswith("! cannot connect")


@bounded(30)
async def test_input_from_a_regular_file(tmp_path):
    script = tmp_path / "script.txt"
    script.write_text("from a file\n/quit\n")
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            with script.open("rb") as stdin:
                result = await trio.run_process(
                    connect_command(server.url, "--room", ROOM, "--user", "erin"),
                    stdin=stdin,
                    capture_stdout=True,
                    check=False,
                )
            assert result.returncode == 0, result.stdout.decode()
            [message] = await chats(bob, 1)
            assert (message.user_id, message.content) == ("erin", "from a file")


@bounded(30)
async def test_history_on_join_is_marked_and_actions_are_shown_as_actions():
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="bob") as bob:
            await bob.join(ROOM)
            await bob.send(ROOM, "old one")
            await bob.send(ROOM, "/me remembers")
            async with terminal(server.url, "--room", ROOM, "--user", "carol") as process:
                output = Lines(process.stdout)
                joined = await output.until(lambda line: line.startswith("* joined lobby"))
                assert joined == "* joined lobby: bob, carol (2 earlier messages above; 2 unread)"
                history = [line for line in output.seen if line.startswith("(history) ")]
                assert len(history) == 2, output.seen
                # carol has read nothing yet: the divider is above bob's first.
                assert output.seen[output.seen.index(history[0]) - 1] == "— new messages —"
                assert LINE.match(history[0].removeprefix("(history) "))
                assert history[0].endswith("bob: old one")
                assert re.match(
                    r"^\(history\) \[lobby\] #2 \d\d:\d\d \* bob remembers$", history[1]
                )
                await process.stdin.send_all(b"/me waves\n")
                *_, action = await chats(bob, 3)  # after bob's own two
                assert (action.user_id, action.content) == ("carol", "/me waves")
                mine = await output.until(lambda line: "carol" in line and "waves" in line)
                assert re.match(r"^\[lobby\] #3 \d\d:\d\d \* carol waves$", mine), mine
                await bob.send(ROOM, "live one")
                line = await output.until(lambda line: "live one" in line)
                assert LINE.match(line), line  # not marked: sent after we joined
                await process.stdin.send_all(b"/quit\n")
                assert await process.wait() == 0


@bounded(30)
async def test_refusals_show_the_servers_reason_and_a_wrong_path_says_so():
    secret = "s3cret-for-tests-only-0123456789abcdef"
    async with open_test_server(Config(secret=secret)) as server:
        result = await run_piped(server.url, b"hi\n", "--room", ROOM, "--token", "not-a-token")
        out = result.stdout.decode()
        assert result.returncode == 1
        assert re.match(
            r"^! cannot connect to \S+: handshake refused with HTTP 401: .*token", out
        ), out
        base = server.url.removesuffix("/ws")
        for path, status in (("/nope", 404), ("/healthz", 200)):
            token = make_token(secret, "dan")
            result = await run_piped(base + path, b"hi\n", "--room", ROOM, "--token", token)
            out = result.stdout.decode()
            assert result.returncode == 1
            assert f"HTTP {status}" in out, out
            assert "check the URL's path" in out and "/ws" in out, out
        # No path at all: /ws is meant.
        async with open_chat_client(server.url, token=make_token(secret, "bob")) as bob:
            await bob.join(ROOM)
            token = make_token(secret, "erin")
            result = await run_piped(base, b"no path\n/quit\n", "--room", ROOM, "--token", token)
            assert result.returncode == 0, result.stdout.decode()
            [message] = await chats(bob, 1)
            assert (message.user_id, message.content) == ("erin", "no path")


@bounded(30)
async def test_bad_room_names_are_refused_with_the_rule():
    async with open_test_server() as server:
        result = await run_piped(server.url, b"", "--room", "bad room!", "--user", "dan")
        assert result.returncode == 2
        assert "letters, digits" in result.stderr.decode()
        script = b"/join bad room!\n/room bad\n/quit\n"
        result = await run_piped(server.url, script, "--room", ROOM, "--user", "dan")
        out = result.stdout.decode().splitlines()
        assert result.returncode == 0, out
        [refusal] = [line for line in out if line.startswith("! cannot join")]
        assert refusal.startswith("! cannot join 'bad room!': a room name is"), refusal
        assert "! not in bad: /join bad" in out  # and "bad" was not joined


@bounded(30)
async def test_ctrl_c_in_line_mode_exits_130_quietly():
    async with open_test_server() as server:
        command = connect_command(server.url, "--room", ROOM, "--user", "carol")
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                functools.partial(
                    trio.run_process,
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    check=False,
                )
            )
            output = Lines(process.stdout)
            await output.until(lambda line: line.startswith("* joined lobby"))
            process.send_signal(signal.SIGINT)
            errors = b""
            while chunk := await process.stderr.receive_some(65536):
                errors += chunk
            assert await process.wait() == 130
            assert errors == b""


def test_format_event_lines():
    message = ChatMessage(3, ROOM, "alice", "hi\x07 there\nsecond line", "2026-11-29T04:31:24.123Z")
    line = format_event(message)
    assert LINE.match(line.splitlines()[0])
    assert line.endswith("alice: hi\N{REPLACEMENT CHARACTER} there\n    second line")
    assert format_event(System("join", ROOM, "bob")) == "* bob joined lobby"
    assert format_event(System("leave", ROOM, "bob")) == "* bob left lobby"
    assert format_event(DirectMessage("alice", "psst", "t")) == "(dm) alice: psst"
    assert format_event(ErrorEvent(429, "slow down", None, 2000)) == "! error 429: slow down"
    assert format_event(PresenceUpdate("bob", "away", "lunch")) == "* bob is away: lunch"
    assert format_event(PresenceUpdate("bob", "online")) == "* bob is online"
    action = ChatMessage(4, ROOM, "alice", "/me waves \x1b[2J", "2026-11-29T04:31:24.123Z")
    assert re.match(
        r"^\[lobby\] #4 \d\d:\d\d \* alice waves \N{REPLACEMENT CHARACTER}\[2J$",
        format_event(action),
    )
    assert format_event(message, history=True).startswith("(history) [lobby] ")
    assert format_event(DirectMessage("alice", "/me nods", "t")) == "(dm) * alice nods"
    # "/me" alone, or "/meh", is not an action.
    assert format_event(ChatMessage(5, ROOM, "alice", "/meh", "t")).endswith("alice: /meh")

    # Edits, deletes and reactions name the message by id; a conversation by
    # the other user.
    assert format_event(MessageEdited(ROOM, None, 5, "alice", "new", "t")) == (
        "[lobby] #5 alice edited: new"
    )
    assert format_event(MessageDeleted(None, "bob", 2, "alice", "alice")) == (
        "(dm with bob) #2 deleted by alice"
    )
    assert format_event(ReactionChanged(ROOM, None, 5, "👍", "bob", False, 0)) == (
        "[lobby] #5 bob took back 👍 (0)"
    )
    # A message from a history: edited, deleted, reacted to.
    old = ChatMessage(6, ROOM, "bob", "fixed", "t", edited="t2", reactions={"👍": ("a", "b")})
    assert (
        format_event(old, history=True) == "(history) [lobby] #6 --:-- bob: fixed (edited)  [👍 2]"
    )
    gone = ChatMessage(7, ROOM, "bob", "", "t", deleted=True)
    assert format_event(gone) == "[lobby] #7 --:-- bob: (deleted)"
    own = DirectMessage("carol", "yes", "t", 3, "bob")
    assert format_event(own, me="carol") == "(dm to bob) #3 carol: yes"
    assert format_event(own, me="bob") == "(dm) #3 carol: yes"
    # Marks for a terminal: only @carol, not @carolyn nor an e-mail address.
    line = "[lobby] #8 --:-- bob: @carol, carol@example.org, @carolyn @carol."
    assert emphasize(line, "carol") == (
        "[lobby] #8 --:-- bob: \x1b[7m@carol\x1b[27m, carol@example.org, @carolyn "
        "\x1b[7m@carol\x1b[27m."
    )


class Lines:
    """Lines from a subprocess's stdout stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.seen: list[str] = []

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                raise AssertionError(f"output ended; lines so far: {self.seen}")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        text = line.decode()
        self.seen.append(text)
        return text

    async def until(self, predicate, timeout: float = 10) -> str:
        with trio.fail_after(timeout):
            while True:
                line = await self.next()
                if predicate(line):
                    return line
