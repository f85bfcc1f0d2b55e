"""The terminal client's commands that call the server and print its answer:
``/edit``, ``/delete``, ``/react``, ``/history``, ``/dms``, ``/rooms`` and
``/topic``.

:class:`Calls` acts for a :class:`~trio_chat._terminal_session.Session`: it
reads the session's current room and what it has shown, and prints through
it.  An edit, a delete, a reaction or a topic is shown when its event comes
out of the client's stream, like everyone else's; a history page, the
conversations and the rooms are printed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._terminal_format import clean, format_event
from .client import ClientError

if TYPE_CHECKING:
    from ._terminal_session import Session

__all__ = ["COMMANDS", "Calls"]

#: Messages ``/history`` shows unless told how many.
HISTORY_LINES = 20
#: A ``before`` above every message id: the newest page of a log.
_NEWEST = 2**53
#: What ``/topic --clear`` is.
CLEAR = "--clear"

#: The message commands and their usage.
_MESSAGE_COMMANDS = {
    "edit": "/edit [@USER] ID TEXT",
    "delete": "/delete [@USER] ID",
    "react": "/react [@USER] ID EMOJI",
    "history": "/history [@USER] [N]",
}
#: Every command of this module.
COMMANDS = frozenset({*_MESSAGE_COMMANDS, "dms", "rooms", "topic"})


class _Usage(Exception):
    """A message command with arguments that do not fit its usage."""


def _number(text: str) -> int | None:
    """The integer *text* is (``7`` or ``#7``), or None."""
    text = text.removeprefix("#")
    return int(text) if text.isdigit() and text.isascii() else None


class Calls:
    """The commands of this module, for *session*."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def run(self, command: str, rest: str) -> None:
        """Act on ``/command rest`` (*command* is one of :data:`COMMANDS`)."""
        try:
            if command in _MESSAGE_COMMANDS:
                await self._message_command(command, rest)
            elif command == "dms":
                await self._conversations()
            elif command == "rooms":
                await self._rooms(rest)
            else:
                await self._topic(rest)
        except ClientError as exc:
            self.session.say(f"! error {exc.code}: {clean(exc.message)}")

    async def _message_command(self, command: str, rest: str) -> None:
        """``/edit``, ``/delete``, ``/react`` and ``/history``: on the
        current room, or with ``@USER`` first on the conversation with USER."""
        session, client = self.session, self.session.client
        usage = _MESSAGE_COMMANDS[command]
        peer = None
        if rest.startswith("@"):
            first, _, rest = rest.partition(" ")
            peer, rest = first[1:], rest.strip()
        # TEXT, the rest of an /edit, is kept as typed.
        args = rest.split(maxsplit=1) if command == "edit" else rest.split()
        room = session.current if peer is None else None
        if peer is None and room is None:
            session.say("! no current room: /join ROOM, or name a conversation with @USER")
            return
        try:
            if command == "history":
                count = _number(args[0]) if args else HISTORY_LINES
                if count is None or count < 1 or len(args) > 1:
                    raise _Usage
                await self._history(room, peer, count)
                return
            message_id = _number(args[0]) if args else None
            if message_id is None:
                raise _Usage
            # The answer is an event of the stream: it is shown from there.
            if command == "edit" and len(args) == 2:
                await client.edit(room, message_id, args[1], with_=peer)
            elif command == "delete" and len(args) == 1:
                await client.delete(room, message_id, with_=peer)
            elif command == "react" and len(args) == 2:
                await client.react(room, message_id, args[1], with_=peer)
            else:
                raise _Usage
        except _Usage:
            session.say(f"! usage: {usage}")

    async def _history(self, room: str | None, peer: str | None, count: int) -> None:
        """Show *count* messages before the oldest one shown, marked as history."""
        session = self.session
        key = room if room is not None else f"@{peer}"
        before = session.oldest.get(key, _NEWEST)
        page = await session.client.history(room, with_=peer, before=before)
        messages = page.messages[-count:]
        where = room if room is not None else f"the conversation with {clean(peer or '')}"
        if not messages:
            session.say(f"* no earlier messages in {where}")
            return
        session.say(f"* earlier in {where}:")
        for message in messages:
            session.print_message(message, history=True)
        if page.truncated or len(page.messages) > count:
            session.say("* (/history for more)")

    async def _conversations(self) -> None:
        session = self.session
        listing = await session.client.conversations()
        if not listing.conversations:
            session.say("* no direct conversations yet")
            return
        session.say("* direct conversations, most recent first:")
        me = session.client.user_id
        for conversation in listing:
            last = conversation.last
            shown = format_event(last, me=me) if last is not None else None
            session.say(f"*   @{clean(conversation.with_)}: {shown or f'#{conversation.last_id}'}")
        if listing.truncated:
            session.say("*   (more not shown)")

    async def _rooms(self, query: str) -> None:
        """``/rooms [QUERY]``: the rooms there are, with members and topics."""
        session = self.session
        listing = await session.client.find_rooms(query or None)
        if not listing.rooms:
            found = f" matching {clean(query)!r}" if query else ""
            session.say(f"* no rooms{found}")
            return
        session.say("* rooms, most members first:")
        for room in listing:
            members = f"{room.members} member{'' if room.members == 1 else 's'}"
            topic = f": {clean(room.topic)}" if room.topic else ""
            session.say(f"*   {room.room} ({members}){topic}")
        if listing.truncated:
            session.say("*   (more not shown)")

    async def _topic(self, text: str) -> None:
        """``/topic``: show the current room's topic; ``/topic TEXT``: set it
        (``/topic --clear``: clear it); the change is shown from the stream."""
        session = self.session
        room = session.current
        if room is None:
            session.say("! no current room: /join ROOM")
        elif not text:
            topic = session.client.topic(room)
            session.say(f"* topic of {room}: {clean(topic)}" if topic else f"* {room} has no topic")
        else:
            await session.client.set_topic(room, "" if text == CLEAR else text)
