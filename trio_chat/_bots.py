"""Bots: users of the hub without a socket.

``async with server.open_bot("helper") as bot:`` connects a :class:`Bot` to
the hub as user ``helper``: it joins rooms, sends chats and direct messages,
sets its presence and receives what a client of that user would, as typed
server events, with no WebSocket in between.  To the hub it is one more
connection: an :class:`~trio_chat._hub.Outlet` whose frames, instead of
going to a socket, are read back into events (the hub writes the same
bytes it writes to clients; nothing in the hub knows about bots).

What it sends takes a client's path into the hub, checked exactly as a
client's frame is (room names, content limits) but not rate-limited and not
put to the message policy: the bot is the embedder's own code.  A request
that the server refuses raises :class:`~trio_chat.ProtocolError` with the
code a client would get.

What it receives waits in a queue bounded like an event stream's
(``stream_max_events``, ``stream_max_bytes``); a bot that falls further
behind is dropped as a slow consumer: it leaves its rooms, its queue is
read to the end and then :class:`StreamOverflow` is raised.
When the server closes it (a kick, a shutdown) the iteration ends the same
way with :class:`StreamClosed`.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, cast

import trio

from ._events import EventStream, StreamClosed
from ._hub import Outlet
from ._message_events import HistoryPage, MessageDeleted, MessageEdited, ReactionChanged
from ._message_frames import Delete, Edit, React, ReadHistory
from ._protocol import (
    Chat,
    ChatAck,
    ClientEvent,
    ConversationList,
    Direct,
    DirectAck,
    ErrorEvent,
    Join,
    Joined,
    Leave,
    ListConversations,
    Presence,
    ProtocolError,
    ServerEvent,
    System,
    Typing,
    encode_client_event,
    parse_client_frame,
    parse_server_frame,
)
from ._room_frames import ListRooms, MarkRead, ReadMarker, RoomList, SetTopic

if TYPE_CHECKING:
    from ._config import Config
    from ._hub import Hub
    from ._stream import WireStream

__all__ = ["Bot", "BotOutlet", "split_frames"]


def split_frames(data: bytes) -> list[str]:
    """The texts of the unmasked, final text frames joined in *data*."""
    texts = []
    i, end = 0, len(data)
    while i < end:
        length = data[i + 1] & 0x7F
        i += 2
        if length == 126:
            length = int.from_bytes(data[i : i + 2], "big")
            i += 2
        elif length == 127:
            length = int.from_bytes(data[i : i + 8], "big")
            i += 8
        texts.append(data[i : i + length].decode("utf-8"))
        i += length
    return texts


class BotOutlet(Outlet):
    """An outlet that hands its frames to a :class:`Bot` instead of a socket."""

    def __init__(self, bot: Bot, hub: Hub, queue_size: int) -> None:
        # No stream: push() below is the only writer, and it never writes.
        super().__init__(
            cast("WireStream", None), queue_size, bot._killed, hub.counters, bot.user_id
        )
        self.bot = bot

    def push(self, data: bytes, frames: int = 1) -> bool:
        if self.closed:
            return False
        bot = self.bot
        for text in split_frames(data):
            bot._arrived(parse_server_frame(text), len(text))
        if bot.inbox.ended:
            self.overflow("frames", bot.inbox.ended)
            return False
        return True


class Bot:
    """A user of the hub with no socket; see the module docs.

    Iterate it (``async for event in bot``) for what it receives besides the
    answers to its own requests: chats in its rooms, ``system`` events,
    presence, direct messages, typing notices.
    """

    def __init__(self, hub: Hub, config: Config, user_id: str) -> None:
        self.hub = hub
        self.user_id = user_id
        self._max_chars = config.max_content_chars
        self.inbox = EventStream(
            None,
            None,
            typing=True,
            max_events=config.stream_max_events,
            max_bytes=config.stream_max_bytes,
        )
        self.outlet = BotOutlet(self, hub, config.queue_size)
        #: Requests waiting for their answer, by ref.
        self._waiting: dict[str, tuple[trio.Event, list[ServerEvent]]] = {}
        # Refs name this bot's requests; the hub remembers chat refs per
        # user, so a new bot of the same user must not reuse them.
        self._refs = (f"bot-{secrets.token_hex(4)}-{n}" for n in itertools.count(1))

    # ------------------------------------------------------------ requests

    async def join(self, room: str, since: int | None = None) -> Joined:
        """Join *room*; the answer holds its members and history since *since*."""
        answer = await self._request(lambda ref: Join(room, since, ref))
        return cast("Joined", answer)

    async def leave(self, room: str) -> None:
        await self._request(lambda ref: Leave(room, ref))

    async def send(self, room: str, content: str) -> ChatAck:
        """Publish *content* in *room* (joined first, as for a client)."""
        answer = await self._request(lambda ref: Chat(room, content, ref))
        return cast("ChatAck", answer)

    async def direct(self, to: str, content: str) -> DirectAck:
        answer = await self._request(lambda ref: Direct(to, content, ref))
        return cast("DirectAck", answer)

    async def set_presence(self, status: str, text: str | None = None) -> None:
        """Set the bot's presence (no answer: members see a ``presence``)."""
        await self._submit(Presence(status, text))

    async def typing(self, room: str) -> None:
        await self._submit(Typing(room))

    # Messages already published: *room*, or with ``with_`` the direct
    # conversation with that user (then *room* is None), as in the protocol.

    async def edit(
        self, room: str | None, id: int, content: str, *, with_: str | None = None
    ) -> MessageEdited:
        """Replace the text of the bot's own message *id*."""
        answer = await self._request(lambda ref: Edit(room, with_, id, content, ref))
        return cast("MessageEdited", answer)

    async def delete(
        self, room: str | None, id: int, *, with_: str | None = None
    ) -> MessageDeleted:
        """Delete the bot's own message *id* (any message: the server's
        ``delete_message``)."""
        answer = await self._request(lambda ref: Delete(room, with_, id, ref))
        return cast("MessageDeleted", answer)

    async def react(
        self, room: str | None, id: int, emoji: str, *, with_: str | None = None
    ) -> ReactionChanged:
        """Toggle the bot's *emoji* reaction on message *id*."""
        answer = await self._request(lambda ref: React(room, with_, id, emoji, ref))
        return cast("ReactionChanged", answer)

    async def history(
        self,
        room: str | None = None,
        *,
        with_: str | None = None,
        since: int | None = None,
        before: int | None = None,
    ) -> HistoryPage:
        """Retained messages: the newest before *before*, or those after *since*."""
        answer = await self._request(lambda ref: ReadHistory(room, with_, since, before, ref))
        return cast("HistoryPage", answer)

    async def conversations(self) -> ConversationList:
        """The bot's direct conversations, most recent first."""
        answer = await self._request(ListConversations)
        return cast("ConversationList", answer)

    async def mark_read(self, room: str | None, id: int, *, with_: str | None = None) -> ReadMarker:
        """Move the bot's read marker; the answer is where it is."""
        answer = await self._request(lambda ref: MarkRead(room, with_, id, ref))
        return cast("ReadMarker", answer)

    async def find_rooms(self, query: str | None = None) -> RoomList:
        """The rooms there are (matching *query*), most members first."""
        answer = await self._request(lambda ref: ListRooms(query, ref))
        return cast("RoomList", answer)

    async def set_topic(self, room: str, topic: str) -> System:
        """Set the topic of a room the bot is in (``""`` clears it)."""
        answer = await self._request(lambda ref: SetTopic(room, topic, ref))
        return cast("System", answer)

    async def _submit(self, event: ClientEvent) -> None:
        if self.outlet.closed:
            raise StreamClosed(self.outlet.close_reason or "the bot is closed")
        # Exactly a client's checks, by way of the frame it would send.
        checked = parse_client_frame(encode_client_event(event), max_content_chars=self._max_chars)
        await self.hub.submit(self.outlet, checked)

    async def _request(self, make: Callable[[str], ClientEvent]) -> ServerEvent:
        ref = next(self._refs)
        event = make(ref)
        done = trio.Event()
        answer: list[ServerEvent] = []
        self._waiting[ref] = (done, answer)
        try:
            await self._submit(event)
            await done.wait()
        finally:
            self._waiting.pop(ref, None)
        if not answer:
            raise StreamClosed(self.outlet.close_reason or "the bot is closed")
        reply = answer[0]
        if isinstance(reply, ErrorEvent):
            raise ProtocolError(reply.code, reply.message, None, reply.retry_after_ms)
        return reply

    # ------------------------------------------------------------ receiving

    def __aiter__(self) -> AsyncIterator[ServerEvent]:
        return self.inbox

    async def receive(self) -> ServerEvent:
        """The next event received (one step of ``async for``)."""
        return await self.inbox.__anext__()

    def _arrived(self, event: ServerEvent, size: int) -> None:
        ref = getattr(event, "ref", None)
        if ref is not None:
            waiting = self._waiting.get(ref)
            if waiting is not None:
                waiting[1].append(event)
                waiting[0].set()
                return
        self.inbox.put(event, size)

    def _killed(self) -> None:
        """The server closed the bot (kicked, shut down): end everything."""
        self.close(self.outlet.close_reason or "closed by the server")

    def close(self, reason: str) -> None:
        for done, _ in self._waiting.values():
            done.set()
        if not self.inbox.ended:
            self.inbox.close(reason)
