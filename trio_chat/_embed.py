"""The embedding API's observing and acting half: event streams, bots, commands.

:class:`EmbeddingApi` is a base of :class:`~trio_chat.ChatServer`; it keeps
its state (the hub's observers, the open bots) apart from the server's
listening and connection code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ._bots import Bot
from ._commands import CommandHandler, Commands
from ._events import EventStream, Observers
from ._protocol import ProtocolError, is_valid_user_id

if TYPE_CHECKING:
    from ._config import Config
    from ._hub import Hub

__all__ = ["EmbeddingApi"]


class EmbeddingApi:
    """Event streams (:meth:`subscribe`) and bots (:meth:`open_bot`)."""

    config: Config
    hub: Hub

    def _init_embedding(self) -> None:
        self._observers = Observers(self.hub)
        self._bots: set[Bot] = set()
        config = self.config
        #: The commands clients may call (:meth:`add_command`).
        self.commands = Commands(
            config.command_timeout, config.command_concurrency, config.max_message_bytes
        )

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
