"""What the terminal client says and does, whichever way it reads and prints.

:class:`Session` acts on input lines (chat text and slash commands) and turns
the chat client's events into lines of text.  It writes to a file object and
reads from anything with an ``async readline()``: the plain line mode of
:mod:`trio_chat._terminal` feeds it stdin, the interactive UI of
:mod:`trio_chat._terminal_ui` the lines typed at its prompt.  It also keeps
what a status line shows (current room, connection state, messages not
acknowledged yet) and calls ``on_change`` when that changes.

Action messages (``/me waves``) are chats whose content starts with ``/me ``;
they are shown as ``* alice waves``.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any, Protocol

import trio

from ._protocol import is_valid_room
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
)

__all__ = ["HELP", "Lines", "Output", "Session", "format_event"]

#: Seconds to wait for outstanding acks after /quit or end of input.
ACK_WAIT = 30.0
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: How an action message starts (``/me waves``).
ACTION_PREFIX = "/me "

HELP = """\
commands:
  TEXT               send TEXT to the current room (//TEXT sends /TEXT)
  /me ACTION         send an action: "/me waves" shows as "* NAME waves"
  /join ROOM         join ROOM and make it the current room
  /leave [ROOM]      leave ROOM (default: the current room)
  /room ROOM         make ROOM (already joined) the current room
  /dm USER TEXT      direct message to USER
  /status STATUS [TEXT]  set your presence: online, away, busy, ...
  /who               members of the current room
  /help              this list
  /quit              wait for the server to acknowledge what you sent, then exit
Room names are 1 to 64 letters, digits, '_', '.', ':' or '-', starting with a
letter or digit."""

#: Why a room name is refused, in words (the rule is ROOM_PATTERN).
ROOM_RULE = (
    "a room name is 1 to 64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
)


class Lines(Protocol):
    """A source of input lines."""

    async def readline(self) -> str | None:
        """The next line without its newline, or None at end of input."""
        ...


class Output(Protocol):
    """Where lines go: a text file, or prompt_toolkit's stdout proxy."""

    def write(self, data: str, /) -> int: ...

    def flush(self) -> None: ...


def write_line(out: Output, line: str) -> None:
    try:
        out.write(line + "\n")
        out.flush()
    except (BrokenPipeError, ValueError):
        pass  # nobody is reading our output any more


def clean(text: str) -> str:
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


def _said(user: str, content: str) -> str:
    """``alice: hi``, or ``* alice waves`` for an action."""
    if content.startswith(ACTION_PREFIX) and content[len(ACTION_PREFIX) :].strip():
        return f"* {clean(user)} {clean(content[len(ACTION_PREFIX) :].strip())}"
    return f"{clean(user)}: {clean(content)}"


def format_event(event: object, *, history: bool = False) -> str | None:
    """One line for an event of the client's stream (None: not shown).

    *history*: the message is from a joined room's history (sent before we
    joined), marked ``(history)``.
    """
    if isinstance(event, ChatMessage):
        line = f"[{event.room}] {_clock(event.time)} {_said(event.user_id, event.content)}"
        return f"(history) {line}" if history else line
    if isinstance(event, System):
        if event.text is not None and event.event not in ("join", "leave"):
            return f"* {clean(event.text)} ({event.room})"  # a moderator's action
        verb = {"join": "joined", "leave": "left"}.get(event.event, event.event)
        return f"* {clean(event.user_id)} {clean(verb)} {event.room}"
    if isinstance(event, PresenceUpdate):
        line = f"* {clean(event.user_id)} is {clean(event.status)}"
        return line + (f": {clean(event.text)}" if event.text else "")
    if isinstance(event, DirectMessage):
        return f"(dm) {_said(event.from_, event.content)}"
    if isinstance(event, ErrorEvent):
        return f"! error {event.code}: {clean(event.message)}"
    return None


class Session:
    """One terminal session: acts on input lines, prints events.

    The attributes ``current``, ``state``, ``retry`` and ``unacknowledged``
    are what a status line shows; ``on_change`` is called when they change.
    """

    def __init__(
        self, client: ChatClient, out: Output, on_change: Callable[[], None] | None = None
    ) -> None:
        self.client = client
        self.out = out
        self.on_change = on_change or (lambda: None)
        self.current: str | None = None
        self.failed = 0
        self.unacknowledged = 0
        #: The connection's state as last reported by the client.
        self.state = ConnectionState.ONLINE
        #: While reconnecting: the latest attempt's event, and when
        #: (``time.monotonic()``) the next attempt starts.
        self.retry: StateChanged | None = None
        self.retry_at = 0.0
        #: Chats and directs sent and not acknowledged yet.
        self.pending: set[PendingMessage] = set()
        #: Rooms whose first ``joined`` was printed (re-joins stay quiet);
        #: messages of a room not announced yet are its history.
        self.announced: set[str] = set()
        #: History messages printed per room not announced yet.
        self.history: dict[str, int] = {}
        self.exit_code: int | None = None
        #: Cancelled when the client stops for good: no more input is useful.
        self.input_scope = trio.CancelScope()

    def interrupt(self) -> None:
        """Ctrl-C: stop reading input and waiting for acks."""
        self.exit_code = INTERRUPTED
        self.input_scope.cancel()

    def say(self, line: str) -> None:
        write_line(self.out, line)

    async def run(self, rooms: list[str], lines: Lines) -> int:
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
                if self.unacknowledged:
                    self.say(
                        f"* waiting up to {ACK_WAIT:g} s for the server to acknowledge "
                        f"{self.unacknowledged} message(s)"
                    )
                acks.cancel_scope.deadline = trio.current_time() + ACK_WAIT
        if self.unacknowledged and self.exit_code is None:
            self.say(f"! {self.unacknowledged} message(s) not acknowledged by the server")
        if self.exit_code is not None:
            return self.exit_code
        return 1 if self.failed or self.unacknowledged else 0

    # ------------------------------------------------------------ output

    async def print_events(self) -> None:
        """Print the client's events until its stream ends."""
        try:
            async for event in self.client:
                self._show(event)
        except ConnectError as exc:
            self.state = ConnectionState.CLOSED
            self.say(f"! disconnected for good: {exc}")
            self.exit_code = 1
            self.input_scope.cancel()
            self.on_change()

    def _show(self, event: object) -> None:
        if isinstance(event, StateChanged):
            self._state_changed(event)
            return
        if isinstance(event, Joined):
            if event.room not in self.announced:
                self.announced.add(event.room)
                members = ", ".join(clean(m) for m in event.members)
                notes = []
                count = self.history.pop(event.room, 0)
                if count:
                    notes.append(f"{count} earlier message{'s' if count > 1 else ''} above")
                if event.truncated:
                    notes.append("older messages are no longer kept")
                note = f" ({'; '.join(notes)})" if notes else ""
                self.say(f"* joined {event.room}: {members}{note}")
                self.on_change()
            return
        history = False
        if isinstance(event, ChatMessage) and event.room not in self.announced:
            history = True
            self.history[event.room] = self.history.get(event.room, 0) + 1
        line = format_event(event, history=history)
        if line is not None:
            self.say(line)
        if isinstance(event, System):
            self.on_change()  # the member count changed

    def _state_changed(self, event: StateChanged) -> None:
        if event.state is ConnectionState.ONLINE:
            if self.retry is not None:
                self.say("* reconnected")
            self.retry = None
        elif event.state is ConnectionState.RECONNECTING:
            if self.retry is None:  # one line per outage, not one per attempt
                self.say(f"* connection lost ({event.reason}); reconnecting")
            self.retry = event
            self.retry_at = time.monotonic() + (event.delay or 0.0)
        elif event.state is ConnectionState.CONNECTING and self.retry is not None:
            self.retry_at = time.monotonic()
        self.state = event.state
        self.on_change()

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
        elif command == "me":
            if rest:
                return self._chat(ACTION_PREFIX + rest, acks)
            self.say("! usage: /me ACTION")
        elif command == "join" and rest:
            await self._join(rest)
        elif command == "leave":
            await self._leave(rest.split()[0] if rest else self.current)
        elif command == "room" and rest:
            room = rest.split()[0]
            if room in self.client.rooms:
                self._switch(room)
            else:
                self.say(f"! not in {clean(room)}: /join {clean(room)}")
        elif command in ("dm", "msg") and len(rest.split(maxsplit=1)) == 2:
            to, text = rest.split(maxsplit=1)
            self._post(acks, lambda: self.client.post_direct(to, text), f"(dm to {clean(to)})")
        elif command in ("status", "away"):
            parts = rest.split(maxsplit=1) if command == "status" else ["away", rest]
            if not parts or not parts[0]:
                self.say("! usage: /status STATUS [TEXT]")
            else:
                status_text = parts[1] if len(parts) > 1 and parts[1] else None
                try:
                    await self.client.set_presence(parts[0], status_text)  # echoed as presence
                except ClientError as exc:
                    self.say(f"! error {exc.code}: {clean(exc.message)}")
        elif command == "who":
            if self.current is None:
                self.say("* no current room")
            else:
                members = ", ".join(self.client.members(self.current)) or "(unknown)"
                self.say(f"* in {self.current}: {clean(members)}")
        else:
            self.say(f"! unknown command or missing argument: /{clean(command)} (try /help)")
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
            self.say(f"! error {exc.code}: {clean(exc.message)}")
            return
        self.unacknowledged += 1
        self.pending.add(pending)
        self.on_change()
        acks.start_soon(self._wait_ack, pending, label)

    async def _wait_ack(self, pending: PendingMessage, label: str | None) -> None:
        try:
            await pending.wait()
        except ClientError as exc:
            self.failed += 1
            self.say(f"! error {exc.code}: {clean(exc.message)}")
            return
        finally:
            self.unacknowledged -= 1
            self.pending.discard(pending)
            self.on_change()
        if label is not None:  # chats show up in the event stream
            self.say(f"{label} {_said(self.client.user_id or '?', pending.content)}")

    def _switch(self, room: str | None) -> None:
        if room != self.current:
            self.current = room
            if room is not None:
                self.say(f"* now talking in {room}")
            self.on_change()

    async def _join(self, room: str) -> None:
        if not is_valid_room(room):
            self.say(f"! cannot join {clean(room)!r}: {ROOM_RULE}")
            return
        already = room in self.client.rooms
        try:
            await self.client.join(room)
        except ClientError as exc:
            self.say(f"! cannot join {room}: error {exc.code}: {clean(exc.message)}")
            return
        if already:
            self._switch(room)
        else:
            self.current = room  # "* joined ROOM" says it
            self.on_change()

    async def _leave(self, room: str | None) -> None:
        if room is None or room not in self.client.rooms:
            self.say(f"! not in {clean(room)}" if room else "! no current room")
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
            self._switch(others[-1] if others else None)
