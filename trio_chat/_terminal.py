"""``trio-chat connect``: chat from a terminal, or from a script through a pipe.

Each line read from stdin is sent as a chat message to the current room;
lines starting with ``/`` are commands (``/help`` lists them).  Incoming
events are printed as one readable line each::

    [lobby] 12:01 alice: hi
    * bob joined lobby
    (dm) alice: psst
    ! error 429: rate limit exceeded: retry in 2000 ms

At ``/quit`` or the end of stdin the client waits for the acks of the messages
it sent (so ``printf 'hi\\n' | trio-chat connect ...`` delivers "hi"), then
exits: 0 when every message was acknowledged, 1 otherwise or when the server
cannot be reached.  Connection drops are handled by :mod:`trio_chat.client`:
it reconnects, resumes and re-sends by itself.
"""

from __future__ import annotations

import datetime
import functools
import os
import stat
import sys
from typing import IO, Any

import trio

from .client import (
    ChatClient,
    ChatMessage,
    ClientError,
    ConnectError,
    ConnectionState,
    DirectMessage,
    ErrorEvent,
    Joined,
    PendingMessage,
    PresenceUpdate,
    StateChanged,
    System,
    open_chat_client,
)

__all__ = ["run_terminal"]

#: Seconds to wait for outstanding acks after /quit or end of input.
ACK_WAIT = 30.0
#: Longest input line kept (longer ones are cut; the server's limit is lower).
MAX_LINE_BYTES = 1 << 20

HELP = """\
commands:
  TEXT               send TEXT to the current room (//TEXT sends /TEXT)
  /join ROOM         join ROOM and make it the current room
  /leave [ROOM]      leave ROOM (default: the current room)
  /room ROOM         make ROOM (already joined) the current room
  /dm USER TEXT      direct message to USER
  /status STATUS [TEXT]  set your presence: online, away, busy, ...
  /who               members of the current room
  /help              this list
  /quit              wait for the server to acknowledge what you sent, then exit"""


def run_terminal(
    url: str,
    *,
    rooms: list[str],
    user: str | None = None,
    token: str | None = None,
    stdin: IO[Any] | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Run the terminal client until /quit or end of input; return the exit code."""
    source = stdin if stdin is not None else sys.stdin
    out = stdout if stdout is not None else sys.stdout
    try:
        return trio.run(
            functools.partial(
                _main, url, rooms=list(rooms), user=user, token=token, source=source, out=out
            )
        )
    except KeyboardInterrupt:
        return 130


async def _main(
    url: str,
    *,
    rooms: list[str],
    user: str | None,
    token: str | None,
    source: IO[Any],
    out: IO[str],
) -> int:
    lines = LineReader(source)
    try:
        # The printer outlives the client's block: leaving the block ends the
        # event stream, and the printer prints what is left before it stops.
        async with trio.open_nursery() as printing:
            try:
                async with open_chat_client(url, user=user, token=token) as client:
                    session = Session(client, out)
                    printing.start_soon(session.print_events)
                    return await session.run(rooms, lines)
            except ConnectError as exc:
                _write(out, f"! {exc}")
                return 1
    finally:
        await lines.aclose()


class LineReader:
    """Lines from a file object, read without blocking trio.

    A pipe or socket is read through :class:`trio.lowlevel.FdStream` on a
    duplicate of its fd (non-blocking I/O, cancellable).  A terminal or a
    regular file, which non-blocking I/O does not suit, is read by a worker
    thread, one line at a time.
    """

    def __init__(self, source: IO[Any]) -> None:
        self._source = source
        self._stream: trio.lowlevel.FdStream | None = None
        self._buffer = b""
        self._eof = False
        try:
            mode = os.fstat(source.fileno()).st_mode
        except (AttributeError, OSError, ValueError):
            mode = 0
        if hasattr(trio.lowlevel, "FdStream") and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            self._stream = trio.lowlevel.FdStream(os.dup(source.fileno()))

    async def readline(self) -> str | None:
        """The next line without its newline, or None at end of input."""
        if self._stream is None:
            read = getattr(self._source, "buffer", self._source).readline
            data = await trio.to_thread.run_sync(read, abandon_on_cancel=True)
            if not data:
                return None
            return _decode(data).rstrip("\r\n")
        while b"\n" not in self._buffer and not self._eof:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                self._eof = True
            else:
                self._buffer += chunk
                if len(self._buffer) > MAX_LINE_BYTES and b"\n" not in self._buffer:
                    self._buffer = self._buffer[:MAX_LINE_BYTES] + b"\n"
        if not self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return _decode(line).rstrip("\r")

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()


def _decode(data: bytes | str) -> str:
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data


def _write(out: IO[str], line: str) -> None:
    try:
        out.write(line + "\n")
        out.flush()
    except (BrokenPipeError, ValueError):
        pass  # nobody is reading our output any more


def _clean(text: str) -> str:
    """Text safe to print: control characters (escape sequences) made visible."""
    cleaned = []
    for char in text:
        if char == "\n":
            cleaned.append("\n    ")
        elif char == "\t" or char.isprintable():
            cleaned.append(char)
        else:
            cleaned.append("\N{REPLACEMENT CHARACTER}")
    return "".join(cleaned)


def _clock(stamp: str) -> str:
    """``HH:MM`` in local time for an RFC 3339 UTC time."""
    try:
        when = datetime.datetime.fromisoformat(stamp)
    except (ValueError, AttributeError):
        return "--:--"
    return when.astimezone().strftime("%H:%M")


def format_event(event: object) -> str | None:
    """One line for an event of the client's stream (None: not shown)."""
    if isinstance(event, ChatMessage):
        return (
            f"[{event.room}] {_clock(event.time)} {_clean(event.user_id)}: {_clean(event.content)}"
        )
    if isinstance(event, System):
        verb = {"join": "joined", "leave": "left"}.get(event.event, event.event)
        return f"* {_clean(event.user_id)} {_clean(verb)} {event.room}"
    if isinstance(event, PresenceUpdate):
        line = f"* {_clean(event.user_id)} is {_clean(event.status)}"
        return line + (f": {_clean(event.text)}" if event.text else "")
    if isinstance(event, DirectMessage):
        return f"(dm) {_clean(event.from_)}: {_clean(event.content)}"
    if isinstance(event, ErrorEvent):
        return f"! error {event.code}: {_clean(event.message)}"
    return None


class Session:
    """One terminal session: reads commands, prints events."""

    def __init__(self, client: ChatClient, out: IO[str]) -> None:
        self.client = client
        self.out = out
        self.current: str | None = None
        self.failed = 0
        self.unacknowledged = 0
        #: Chats and directs sent and not acknowledged yet.
        self.pending: set[PendingMessage] = set()
        #: Rooms whose first ``joined`` was printed (re-joins stay quiet).
        self.announced: set[str] = set()
        self.exit_code: int | None = None
        #: Cancelled when the client stops for good: no more input is useful.
        self.input_scope = trio.CancelScope()

    def say(self, line: str) -> None:
        _write(self.out, line)

    async def run(self, rooms: list[str], lines: LineReader) -> int:
        """Join *rooms*, then act on each input line until /quit or the end."""
        client = self.client
        self.say(f"* connected to {client.url} as {client.user_id} (/help for commands)")
        with self.input_scope:
            for room in rooms:
                await self._join(room)
            if self.current is None:
                self.say("* no room joined yet: /join ROOM")
            async with trio.open_nursery() as acks:
                while True:
                    line = await lines.readline()
                    if line is None or not await self._handle(line, acks):
                        break
                acks.cancel_scope.deadline = trio.current_time() + ACK_WAIT
            if self.unacknowledged:
                self.say(f"! {self.unacknowledged} message(s) not acknowledged by the server")
        if self.exit_code is not None:
            return self.exit_code
        return 1 if self.failed or self.unacknowledged else 0

    # ------------------------------------------------------------ output

    async def print_events(self) -> None:
        """Print the client's events until its stream ends."""
        online_count = 0
        try:
            async for event in self.client:
                if isinstance(event, StateChanged):
                    if event.state is ConnectionState.ONLINE:
                        online_count += 1
                        if online_count > 1:
                            self.say("* reconnected")
                    elif event.state is ConnectionState.RECONNECTING:
                        self.say(
                            f"* connection lost ({event.reason}); "
                            f"reconnecting in {event.delay or 0:.1f} s"
                        )
                    continue
                if isinstance(event, Joined):
                    if event.room not in self.announced:
                        self.announced.add(event.room)
                        members = ", ".join(_clean(m) for m in event.members)
                        note = " (older messages are no longer kept)" if event.truncated else ""
                        self.say(f"* joined {event.room}: {members}{note}")
                    continue
                line = format_event(event)
                if line is not None:
                    self.say(line)
        except ConnectError as exc:
            self.say(f"! disconnected for good: {exc}")
            self.exit_code = 1
            self.input_scope.cancel()

    # ------------------------------------------------------------ input

    async def _handle(self, line: str, acks: trio.Nursery) -> bool:
        """Act on one input line; False to stop."""
        if not line.strip():
            return True
        if line.startswith("//"):
            return self._chat(line[1:], acks)
        if not line.startswith("/"):
            return self._chat(line, acks)
        command, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        command = command.lower()
        if command in ("quit", "exit", "q"):
            return False
        if command == "help":
            self.say(HELP)
        elif command == "join" and rest:
            await self._join(rest.split()[0])
        elif command == "leave":
            await self._leave(rest.split()[0] if rest else self.current)
        elif command == "room" and rest:
            room = rest.split()[0]
            if room in self.client.rooms:
                self.current = room
                self.say(f"* now talking in {room}")
            else:
                self.say(f"! not in {room}: /join {room}")
        elif command in ("dm", "msg") and len(rest.split(maxsplit=1)) == 2:
            to, text = rest.split(maxsplit=1)
            self._post(acks, lambda: self.client.post_direct(to, text), f"(dm to {to})")
        elif command in ("status", "away"):
            parts = rest.split(maxsplit=1) if command == "status" else ["away", rest]
            if not parts or not parts[0]:
                self.say("! usage: /status STATUS [TEXT]")
            else:
                status_text = parts[1] if len(parts) > 1 and parts[1] else None
                try:
                    await self.client.set_presence(parts[0], status_text)  # echoed as presence
                except ClientError as exc:
                    self.say(f"! error {exc.code}: {exc.message}")
        elif command == "who":
            if self.current is None:
                self.say("* no current room")
            else:
                members = ", ".join(self.client.members(self.current)) or "(unknown)"
                self.say(f"* in {self.current}: {members}")
        else:
            self.say(f"! unknown command or missing argument: /{command} (try /help)")
        return True

    def _chat(self, text: str, acks: trio.Nursery) -> bool:
        room = self.current
        if room is None:
            self.say("! join a room first: /join ROOM")
            return True
        self._post(acks, lambda: self.client.post(room, text), None)
        return True

    def _post(self, acks: trio.Nursery, make: Any, label: str | None) -> None:
        try:
            pending: PendingMessage = make()
        except ClientError as exc:
            self.failed += 1
            self.say(f"! error {exc.code}: {exc.message}")
            return
        self.unacknowledged += 1
        self.pending.add(pending)
        acks.start_soon(self._wait_ack, pending, label)

    async def _wait_ack(self, pending: PendingMessage, label: str | None) -> None:
        try:
            await pending.wait()
        except ClientError as exc:
            self.unacknowledged -= 1
            self.failed += 1
            self.say(f"! error {exc.code}: {exc.message}")
            return
        finally:
            self.pending.discard(pending)
        self.unacknowledged -= 1
        if label is not None:  # chats show up in the event stream
            self.say(f"{label} {self.client.user_id}: {_clean(pending.content)}")

    async def _join(self, room: str) -> None:
        already = room in self.client.rooms
        try:
            await self.client.join(room)
        except ClientError as exc:
            self.say(f"! cannot join {room}: error {exc.code}: {exc.message}")
            return
        if already and self.current != room:
            self.say(f"* now talking in {room}")
        self.current = room

    async def _leave(self, room: str | None) -> None:
        if room is None or room not in self.client.rooms:
            self.say(f"! not in {room}" if room else "! no current room")
            return
        # What was typed for the room before /leave goes out first.
        with trio.move_on_after(ACK_WAIT):
            for pending in [p for p in self.pending if p.target == room]:
                try:
                    await pending.wait()
                except ClientError:
                    pass  # reported by its own waiter
        await self.client.leave(room)
        self.announced.discard(room)
        self.say(f"* left {room}")
        if self.current == room:
            others = self.client.rooms
            self.current = others[-1] if others else None
            if self.current is not None:
                self.say(f"* now talking in {self.current}")
