"""What the terminal client says and does, whichever way it reads and prints.

:class:`Session` acts on input lines (chat text and slash commands) and turns
the chat client's events into lines of text.  It writes to a file object and
reads from anything with an ``async readline()``: the plain line mode of
:mod:`trio_chat._terminal` feeds it stdin, the interactive UI of
:mod:`trio_chat._terminal_ui` the lines typed at its prompt.  It also keeps
what a status line shows (current room, connection state, messages not
acknowledged yet) and calls ``on_change`` when that changes.  The commands
that call the server and print its answer are
:mod:`trio_chat._terminal_calls`'s.

A joined room's history is shown with a ``— new messages —`` divider above
the first message after the user's read marker (from someone else), and the
joined line says how many are unread (``3 unread, 1 mentioning you``) and the
room's topic.  What is shown of the current room is marked read: the newest
message id printed from it.

Action messages (``/me waves``) are chats whose content starts with ``/me ``;
they are shown as ``* alice waves``.  The lines themselves are
:mod:`trio_chat._terminal_format`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import trio

from ._protocol import is_valid_room
from ._terminal_calls import COMMANDS, Calls
from ._terminal_format import (
    ACTION_PREFIX,
    NEW_MESSAGES,
    clean,
    emphasize,
    format_event,
    mentions_of,
    said,
)
from .client import (
    ChatClient,
    ChatMessage,
    ClientError,
    ConnectError,
    ConnectionState,
    DirectAck,
    DirectMessage,
    Joined,
    PendingMessage,
    StateChanged,
    System,
)

__all__ = ["HELP", "Lines", "Output", "Session"]

#: Seconds to wait for outstanding acks after /quit or end of input.
ACK_WAIT = 30.0
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130

HELP = """\
commands:
  TEXT               send TEXT to the current room (//TEXT sends /TEXT)
  /me ACTION         send an action: "/me waves" shows as "* NAME waves"
  /join ROOM         join ROOM and make it the current room
  /leave [ROOM]      leave ROOM (default: the current room)
  /room ROOM         make ROOM (already joined) the current room
  /dm USER TEXT      direct message to USER
  /dms               your direct conversations, most recent first
  /edit [@USER] ID TEXT   replace the text of your message ID
  /delete [@USER] ID      delete your message ID
  /react [@USER] ID EMOJI toggle your reaction (EMOJI: one of the server's)
  /history [@USER] [N]    show N (20) messages before the oldest one shown
  /rooms [QUERY]     the rooms there are, with members and topics
  /topic [TEXT]      show the current room's topic, or set it (--clear)
  /status STATUS [TEXT]  set your presence: online, away, busy, ...
  /who               members of the current room
  /help              this list
  /quit              wait for the server to acknowledge what you sent, then exit
Messages show their id (#7).  /edit, /delete, /react and /history act on the
current room, or with @USER on your direct conversation with USER.  What the
current room shows is marked read (your other devices see it).
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


class Session:
    """One terminal session: acts on input lines, prints events.

    The attributes ``current``, ``state``, ``retry`` and ``unacknowledged``
    are what a status line shows; ``on_change`` is called when they change.
    *highlight*: mark the mentions of the user in reverse video (for a
    terminal).
    """

    def __init__(
        self,
        client: ChatClient,
        out: Output,
        on_change: Callable[[], None] | None = None,
        *,
        highlight: bool = False,
    ) -> None:
        self.client = client
        self.out = out
        self.on_change = on_change or (lambda: None)
        self.highlight = highlight
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
        #: The history of each room not announced yet, shown with its joined.
        self.backlog: dict[str, list[ChatMessage]] = {}
        #: The oldest message id shown per room (``lobby``) or conversation
        #: (``@bob``): where ``/history`` goes on from.
        self.oldest: dict[str, int] = {}
        #: The newest message id shown per room: what is marked read.
        self.newest: dict[str, int] = {}
        #: Set when the current room, or what it shows, changed.
        self._shown = trio.Event()
        self.calls = Calls(self)
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
        """Print the client's events until its stream ends, and mark the
        current room read meanwhile."""
        async with trio.open_nursery() as marking:
            marking.start_soon(self._mark_read)
            try:
                async for event in self.client:
                    self._show(event)
            except ConnectError as exc:
                self.state = ConnectionState.CLOSED
                self.say(f"! disconnected for good: {exc}")
                self.exit_code = 1
                self.input_scope.cancel()
                self.on_change()
            marking.cancel_scope.cancel()

    async def _mark_read(self) -> None:
        """Move the read marker of the current room to the newest message
        shown from it, whenever that is further (the client spaces them)."""
        while True:
            await self._shown.wait()
            self._shown = trio.Event()
            room = self.current
            newest = self.newest.get(room, 0) if room is not None else 0
            if room is None or newest <= self.client.read_marker(room):
                continue
            try:
                await self.client.mark_read(room, newest)
            except ClientError as exc:
                if exc.code == 501:
                    return  # the server keeps no read markers

    def _show(self, event: object) -> None:
        if isinstance(event, StateChanged):
            self._state_changed(event)
            return
        if isinstance(event, Joined):
            if event.room not in self.announced:
                self._announce(event)
            return
        if isinstance(event, ChatMessage) and event.room not in self.announced:
            self.backlog.setdefault(event.room, []).append(event)
            return
        if isinstance(event, ChatMessage | DirectMessage):
            self.print_message(event)
            return
        line = format_event(event, me=self.client.user_id)
        if line is not None:
            self.say(self._marked(line, event))
        if isinstance(event, System):
            self.on_change()  # the member count changed

    def _announce(self, joined: Joined) -> None:
        """The first ``joined`` of a room: its history, with the divider
        after the read marker, then what the room is."""
        room, me = joined.room, self.client.user_id
        self.announced.add(room)
        history = self.backlog.pop(room, [])
        divided = joined.read is None or not joined.unread
        for message in history:
            unseen = message.id > (joined.read or 0) and message.user_id != me
            if not divided and unseen and not message.deleted:
                self.say(NEW_MESSAGES)
                divided = True
            self.print_message(message, history=True)
        members = ", ".join(clean(m) for m in joined.members)
        notes = []
        if history:
            count = len(history)
            notes.append(f"{count} earlier message{'s' if count > 1 else ''} above")
        if joined.truncated:
            notes.append("older messages are no longer kept")
        if joined.unread:
            mentioning = f", {joined.mentions} mentioning you" if joined.mentions else ""
            notes.append(f"{joined.unread} unread{mentioning}")
        note = f" ({'; '.join(notes)})" if notes else ""
        self.say(f"* joined {room}: {members}{note}")
        if joined.topic:
            self.say(f"* topic of {room}: {clean(joined.topic)}")
        self.on_change()

    def print_message(self, message: ChatMessage | DirectMessage, *, history: bool = False) -> None:
        """Print *message* (marked as *history*) and keep where it is."""
        line = format_event(message, history=history, me=self.client.user_id)
        if line is not None:
            self.say(self._marked(line, message))
        self._seen(message)

    def _seen(self, message: ChatMessage | DirectMessage) -> None:
        """Keep the oldest id shown of *message*'s room or conversation, and
        the newest of a room."""
        if isinstance(message, ChatMessage):
            key = message.room
            if message.id > self.newest.get(key, 0):
                self.newest[key] = message.id
                if key == self.current:
                    self._shown.set()
        else:
            me = self.client.user_id
            key = "@" + (message.to if message.from_ == me and message.to else message.from_)
        if message.id is not None and message.id < self.oldest.get(key, message.id + 1):
            self.oldest[key] = message.id

    def _marked(self, line: str, event: object) -> str:
        me = self.client.user_id
        if self.highlight and me is not None and me in mentions_of(event):
            return emphasize(line, me)
        return line

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
        elif command in COMMANDS:
            await self.calls.run(command, rest)
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
            ack = await pending.wait()
        except ClientError as exc:
            self.failed += 1
            self.say(f"! error {exc.code}: {clean(exc.message)}")
            return
        finally:
            self.unacknowledged -= 1
            self.pending.discard(pending)
            self.on_change()
        if label is not None:  # chats show up in the event stream
            if isinstance(ack, DirectAck) and ack.id is not None:
                label += f" #{ack.id}"
            self.say(f"{label} {said(self.client.user_id or '?', pending.content)}")

    def _switch(self, room: str | None) -> None:
        if room != self.current:
            self.current = room
            if room is not None:
                self.say(f"* now talking in {room}")
            self._shown.set()
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
            self._shown.set()
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
        self.newest.pop(room, None)
        self.say(f"* left {room}")
        if self.current == room:
            others = self.client.rooms
            self._switch(others[-1] if others else None)
