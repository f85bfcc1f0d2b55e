"""The embedding API's observing and acting half: publishing, direct
messages, stats, the open connections, event streams, bots, commands.

:class:`EmbeddingApi` is a base of :class:`~trio_chat.ChatServer`; it keeps
these calls and their state (the hub's observers, the open bots) apart from
the server's listening and connection code.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ._app import check_message
from ._bots import Bot
from ._commands import CommandHandler, Commands
from ._events import EventStream, Observers
from ._protocol import ChatAck, DirectAck, ProtocolError, is_valid_user_id
from ._stats import ConnectionInfo, ServerStats

if TYPE_CHECKING:
    from ._accept import Front
    from ._config import Config
    from ._connection import Connection
    from ._hub import Hub
    from ._hub_state import HubStats
    from ._metrics import Metrics

__all__ = ["EmbeddingApi"]


class EmbeddingApi:
    """Publishing, stats, the open connections, event streams
    (:meth:`subscribe`), bots (:meth:`open_bot`) and commands."""

    config: Config
    hub: Hub
    metrics: Metrics
    _connections: set[Connection]
    _front: Front
    _upgrading: int

    def _init_embedding(self) -> None:
        self._observers = Observers(self.hub)
        self._bots: set[Bot] = set()
        config = self.config
        #: The commands clients may call (:meth:`add_command`).
        self.commands = Commands(
            config.command_timeout, config.command_concurrency, config.max_message_bytes
        )

    async def publish(
        self, room: str, content: str, *, user_id: str = "server", ref: str | None = None
    ) -> ChatAck:
        """Publish *content* into *room* as *user_id*, like a client's chat.

        The message gets the room's next id, enters its history and reaches
        every member.  Raises :class:`ProtocolError` for a bad room or content.
        """
        check_message(self.config, room=room, content=content, user_id=user_id)
        return await self.hub.publish(room, content, user_id=user_id, ref=ref)

    async def send_direct(
        self, to: str, content: str, *, user_id: str = "server", ref: str | None = None
    ) -> DirectAck:
        """Send a direct message to *to* as *user_id*: stored in their
        conversation (the ack's ``id`` numbers it there), to every connection
        of both, whether or not *to* is connected.

        Raises :class:`ProtocolError`: 400 for a message to *user_id*
        itself, 403 past the bound on conversations.
        """
        check_message(self.config, content=content, user_id=user_id)
        if not is_valid_user_id(to):
            raise ProtocolError(400, "to: not a valid user id")
        return await self.hub.direct(to, content, user_id=user_id, ref=ref)

    def stats(self) -> ServerStats:
        """Counts of connections, rooms, messages and drops, right now."""
        hub: HubStats = self.hub.stats()
        counters = self.hub.counters
        return ServerStats(
            connections=len(self._connections),
            users=hub.users,
            rooms=hub.rooms,
            messages=hub.messages,
            history=hub.history,
            frames_received=counters.frames_received,
            frames_delivered=counters.frames_delivered,
            slow_consumer_drops=counters.slow_consumers,
            ephemeral_dropped=counters.ephemeral_dropped,
            rate_limited=self.metrics.rate_limited,
            tcp_connections=self._front.open,
            idle_http_connections=len(self._front.idle),
            handshakes=self._upgrading,
            connections_refused=dict(self._front.refused),
        )

    def connections(self, user_id: str | None = None) -> list[ConnectionInfo]:
        """The open WebSocket connections (of *user_id* only, if given)."""
        now = time.monotonic()
        return [
            ConnectionInfo(
                conn.session_id,
                conn.user_id,
                conn.peer,
                now - conn.started,
                queued_frames=conn.outlet.queue.frames,
                queued_bytes=conn.outlet.queue.bytes,
                writing=conn.stream.busy,
            )
            for conn in self._connections
            if user_id is None or conn.user_id == user_id
        ]

    def close_connection(
        self, session_id: str, code: int | None = 1000, reason: str = "", *, drain: bool = False
    ) -> bool:
        """Close one connection by its session id; False if it is not open.

        With a *code*, what is queued for it is dropped and it gets a close
        frame with *code* and *reason*; with ``code=None`` its transport is
        aborted (no close frame); with *drain*, what is queued is written
        first, then it is closed with *code* (1001 by default).
        """
        for conn in self._connections:
            if conn.session_id == session_id:
                if drain:
                    conn.drain(1001 if code is None else code, reason or "closed by the server")
                else:
                    conn.close(code, reason or "closed by the server")
                return True
        return False

    def add_command(self, name: str, handler: CommandHandler) -> None:
        """Let clients call *handler* as command *name* (see ``_commands``).

        *handler* is an async function taking a :class:`CommandCall` and
        returning the result (any JSON value); raising
        :class:`ProtocolError` answers with that error instead.  Raises
        ValueError for a name that does not match ``COMMAND_PATTERN``; a
        name registered again gets the new handler.
        """
        self.commands.add(name, handler)

    def remove_command(self, name: str) -> bool:
        """Stop offering command *name*; False if there was none."""
        return self.commands.remove(name)

    @asynccontextmanager
    async def subscribe(
        self,
        rooms: Iterable[str] | None = None,
        users: Iterable[str] | None = None,
        *,
        typing: bool = False,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> AsyncIterator[EventStream]:
        """Stream the events of *rooms* and *users* for the block.

        ``async for event in stream`` yields :class:`ChatMessage`,
        :class:`System`, :class:`PresenceUpdate`, :class:`DirectMessage` (and
        with *typing* :class:`TypingNotice`) events in the order the hub
        sends them, from the moment this returns.  At most *max_events*
        events and *max_bytes* bytes (default: the ``stream_max_events`` and
        ``stream_max_bytes`` settings) wait unread; beyond that the stream
        is dropped: the queued events are still read, then
        :class:`StreamOverflow` is raised.
        """
        stream = EventStream(
            rooms,
            users,
            typing=typing,
            max_events=self.config.stream_max_events if max_events is None else max_events,
            max_bytes=self.config.stream_max_bytes if max_bytes is None else max_bytes,
        )
        self._observers.add(stream)
        try:
            yield stream
        finally:
            self._observers.remove(stream)

    @asynccontextmanager
    async def open_bot(self, user_id: str) -> AsyncIterator[Bot]:
        """Connect a :class:`Bot` as *user_id* for the block (see ``_bots``).

        Raises :class:`ProtocolError` (400) for a name that is not a valid
        user id.  On exit it leaves its rooms, as a client disconnecting.
        """
        if not is_valid_user_id(user_id):
            raise ProtocolError(400, f"user_id: not a valid user id: {user_id[:70]!r}")
        bot = Bot(self.hub, self.config, user_id)
        self._bots.add(bot)
        try:
            await self.hub.connect(bot.outlet, user_id, "bot:" + user_id)
            yield bot
        finally:
            self._bots.discard(bot)
            bot.outlet.kill(1000, "bot closed")
            bot.close("")
            self.hub.depart(bot.outlet)

    def bots(self, user_id: str | None = None) -> list[Bot]:
        """The open bots (of *user_id* only, if given)."""
        return [b for b in self._bots if user_id is None or b.user_id == user_id]

    def _close_embedding(self, reason: str) -> None:
        """The server is stopping: end every stream and bot."""
        self._observers.close_all()
        for bot in list(self._bots):
            bot.outlet.kill(1001, reason)
