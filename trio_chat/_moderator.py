"""Moderation in the embedding API: kick, ban and mute; delete any message,
set a room's topic, close a room; logged and counted.

:class:`ModerationApi` is a base of :class:`~trio_chat.ChatServer`:

* :meth:`~ModerationApi.kick` closes every connection (and bot) of a user
  with close code :data:`KICKED` (4001) and the reason;
* :meth:`~ModerationApi.ban` refuses a user, or an address, at the
  handshake (HTTP 403 with the reason) for a duration, and kicks what is
  connected (close code :data:`BANNED`, 4003);
* :meth:`~ModerationApi.mute` refuses a user's chats in one room with error
  403 and the time left, for a duration;
* :meth:`~ModerationApi.delete_message`, :meth:`~ModerationApi.set_topic`
  and :meth:`~ModerationApi.close_room` act on a room whoever its members
  are (with the Redis store, on every process).

Members of the rooms concerned see a ``system`` event (``kick``, ``ban``,
``mute``, ``unmute``, ``delete``, ``topic``, ``close``) with a ``text``
saying what happened, before the connections close.  Each action is logged
(logger ``trio_chat.moderation``) and counted on ``/metrics``.

Bans and mutes are kept with the store: with the SQLite store in
``bans.json`` beside its database (written atomically, off the trio thread,
before the call returns), so they survive a restart; with the memory store,
in memory; with the Redis store, in Redis, and every kick, ban, unban, mute
and unmute acts on every process sharing it
(:mod:`trio_chat._moderation_redis`).
At most ``max_bans`` bans and ``max_mutes`` mutes are in force at once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import trio

from ._ban_file import BANS_FILE, BanFile, SavedMute
from ._moderation import Ban, Bans, Mutes
from ._moderation_metrics import ModerationMetrics
from ._moderator_effects import BANNED, KICKED, ModerationEffects, canonical_ip, with_reason
from ._protocol import (
    ChatMessage,
    ProtocolError,
    is_unicode,
    is_valid_room,
    is_valid_user_id,
)
from ._room_frames import MAX_TOPIC_CHARS

if TYPE_CHECKING:
    from ._bots import Bot
    from ._commands import Commands
    from ._config import Config
    from ._connection import Connection
    from ._hub import Hub
    from ._metrics import Metrics
    from ._moderation_redis import SharedModeration
    from ._policy import Screen

__all__ = ["BANNED", "BANS_FILE", "KICKED", "ModerationApi", "canonical_ip"]

log = logging.getLogger("trio_chat.moderation")

#: Longest reason kept (the close frame's reason is cut to 120 bytes).
MAX_REASON_CHARS = 200

ACTIONS = ("kick", "ban", "unban", "mute", "unmute", "delete", "topic", "close")


def _reason(reason: object) -> str:
    if not isinstance(reason, str):
        raise ProtocolError(400, "reason: must be a string")
    return reason.strip()[:MAX_REASON_CHARS]


def _duration(seconds: object) -> float:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise ProtocolError(400, "duration: must be a positive number of seconds")
    return float(seconds)


def _json(item: dict[str, Any]) -> str:
    return json.dumps(item, separators=(",", ":"))


class ModerationApi(ModerationEffects):
    """Kick, ban and mute (see the module docs)."""

    config: Config
    hub: Hub
    metrics: Metrics
    screen: Screen
    commands: Commands
    _connections: set[Connection]
    _bots: set[Bot]

    def _init_moderation(self) -> None:
        config = self.config
        self._bans = Bans(config.max_bans)
        self.screen.mutes = self._mutes = Mutes(config.max_mutes, self.screen.update)
        self._ban_file = None if config.sqlite_dir is None else BanFile(config.sqlite_dir)
        #: Mutes read back from the file, put in force when the server starts.
        self._saved_mutes: list[SavedMute] = []
        if self._ban_file is not None:
            bans, self._saved_mutes = self._ban_file.load(time.time())
            for ban in bans:
                self._bans.add(ban, time.time())
        self._ban_lock = trio.Lock()
        self._shared: SharedModeration | None = None
        self._told: dict[tuple[str, float, str], None] = {}
        backplane = getattr(self.hub, "backplane", None)
        if backplane is not None:
            from ._moderation_redis import SharedModeration

            self._shared = SharedModeration(
                backplane.url,
                prefix=backplane.prefix,
                node=backplane.node,
                timeout=backplane.timeout,
                apply=self._apply_news,
                replace=self._replace_tables,
            )
        self.moderation_actions: dict[str, int] = dict.fromkeys(ACTIONS, 0)
        self.metrics.registry.register(ModerationMetrics(self))

    async def _start_moderation(self, nursery: trio.Nursery) -> None:
        """Put the saved mutes in force; with the Redis store, follow the
        shared tables, waiting for their first reading while Redis answers
        (call once, in the server's trio run, before it listens)."""
        self._restore_mutes()
        if self._shared is None:
            return
        nursery.start_soon(self._shared.run)
        if self.hub.backplane_up():
            with trio.move_on_after(getattr(self.hub, "startup_wait", 3.0)):
                await self._shared.ready.wait()
        if not self._shared.ready.is_set():
            log.warning("moderation: Redis not reachable yet: its bans apply once it is")

    # ------------------------------------------------------------ kick

    async def kick(self, user_id: str, reason: str = "", *, by: str = "server") -> int:
        """Close every connection and bot of *user_id* (close code 4001,
        "kicked: *reason*"); return how many (with the Redis store: on every
        process, as each answers within the Redis timeout).  Members of their
        rooms see a ``system`` ``kick`` first."""
        reason = _reason(reason)
        self._check_user(user_id)
        news = {"action": "kick", "user_id": user_id, "reason": reason}
        if self._shared is not None:
            closed = await self._shared.write(news, tally=True) or 0
        else:
            closed = await self._apply_news(news)
        self._done("kick", f"user={user_id} connections={closed}", by, reason)
        return closed

    # ------------------------------------------------------------ bans

    async def ban(
        self,
        *,
        user_id: str | None = None,
        ip: str | None = None,
        duration: float,
        reason: str = "",
        by: str = "server",
    ) -> Ban:
        """Refuse *user_id* (or the address *ip*) at the handshake for
        *duration* seconds, and close what is connected (4003).

        Stored before this returns (with the SQLite store: in ``bans.json``;
        with the Redis store: in Redis, and every process refuses it).
        Raises :class:`ProtocolError` 400 for a bad name, address or
        duration, 507 when ``max_bans`` bans are in force already (503 when
        the Redis store cannot be reached).
        """
        reason, duration = _reason(reason), _duration(duration)
        kind, target = self._target(user_id, ip)
        now = time.time()
        ban = Ban(kind, target, now + duration, reason)
        news = {"action": "ban", **ban.to_json()}
        if self._shared is not None:
            value = _json(ban.to_json())
            limit = self.config.max_bans
            closed = await self._shared.write(
                news, op="set", field=f"{kind} {target}", value=value, limit=limit, tally=True
            )
        else:
            async with self._ban_lock:
                try:
                    self._bans.add(ban, now)
                except ValueError as exc:
                    raise ProtocolError(507, str(exc)) from None
                await self._save_bans()
            closed = await self._ban_here(ban)
        self._done("ban", f"{kind}={target} seconds={duration:g} connections={closed}", by, reason)
        return ban

    async def unban(
        self, *, user_id: str | None = None, ip: str | None = None, by: str = "server"
    ) -> bool:
        """Lift a ban; False if there was none."""
        kind, target = self._target(user_id, ip)
        if self._shared is not None:
            news = {"action": "unban", "kind": kind, "target": target}
            found = await self._shared.write(news, op="del", field=f"{kind} {target}") is not None
        else:
            async with self._ban_lock:
                found = self._bans.remove(kind, target)
                if found:
                    await self._save_bans()
        if found:
            self._done("unban", f"{kind}={target}", by, "")
        return found

    def bans(self) -> list[Ban]:
        """The bans in force."""
        return self._bans.all(time.time())

    def ban_refusal(self, user_id: str, peer: str) -> str | None:
        """Why a handshake of *user_id* from *peer* is refused, if banned."""
        if not len(self._bans):
            return None
        try:
            address: str | None = canonical_ip(peer)
        except ValueError:
            address = None
        ban = self._bans.find(user_id, address, time.time())
        if ban is None:
            return None
        left = max(1, math.ceil(ban.until - time.time()))
        return f"banned for {left} more seconds" + with_reason(ban.reason)

    async def _save_bans(self) -> None:
        """Write the bans and the mutes in force (hold ``_ban_lock``)."""
        if self._ban_file is not None:
            wall = time.time()
            bans = self._bans.all(wall)
            mutes = [(u, r, wall + left) for u, r, left in self._mutes.all(trio.current_time())]
            await trio.to_thread.run_sync(self._ban_file.write, bans, mutes)

    def _restore_mutes(self) -> None:
        """Put the mutes read back from the file in force, on trio's clock."""
        wall, now = time.time(), trio.current_time()
        for user_id, room, until in self._saved_mutes:
            if until > wall:
                self._mutes.add(user_id, room, now + (until - wall), now)
        self._saved_mutes = []

    # ------------------------------------------------------------ mutes

    async def mute(
        self, user_id: str, room: str, *, duration: float, reason: str = "", by: str = "server"
    ) -> None:
        """Refuse *user_id*'s chats in *room* (error 403 with the time left)
        for *duration* seconds; members see a ``system`` ``mute``.  Mutes
        are kept with the bans (with the SQLite store they survive a
        restart; with the Redis store every process refuses the chats)."""
        reason, duration = _reason(reason), _duration(duration)
        self._check_user(user_id)
        self._check_room(room)
        if self._shared is not None:
            until = time.time() + duration
            news = {
                "action": "mute",
                "user_id": user_id,
                "room": room,
                "until": until,
                "seconds": duration,
                "reason": reason,
            }
            value = _json({"user_id": user_id, "room": room, "until": until})
            limit = self.config.max_mutes
            await self._shared.write(
                news, op="set", table="mutes", field=f"{user_id} {room}", value=value, limit=limit
            )
        else:
            now = trio.current_time()
            async with self._ban_lock:
                try:
                    self._mutes.add(user_id, room, now + duration, now)
                except ValueError as exc:
                    raise ProtocolError(507, str(exc)) from None
                await self._save_bans()
            await self._mute_here(user_id, room, duration, reason)
        self._done("mute", f"user={user_id} room={room} seconds={duration:g}", by, reason)

    async def unmute(self, user_id: str, room: str, *, by: str = "server") -> bool:
        """Lift a mute; False if there was none."""
        if self._shared is not None:
            news = {"action": "unmute", "user_id": user_id, "room": room}
            field = f"{user_id} {room}"
            found = await self._shared.write(news, op="del", table="mutes", field=field) is not None
        else:
            async with self._ban_lock:
                found = self._mutes.remove(user_id, room)
                if found:
                    await self._save_bans()
            if found:
                await self._unmute_here(user_id, room)
        if found:
            self._done("unmute", f"user={user_id} room={room}", by, "")
        return found

    def mutes(self) -> list[tuple[str, str, float]]:
        """The mutes in force: (user, room, seconds left)."""
        return self._mutes.all(trio.current_time())

    # ------------------------------------------------------------ rooms

    async def delete_message(
        self, room: str, id: int, reason: str = "", *, by: str = "server"
    ) -> ChatMessage:
        """Delete message *id* of *room*, whoever wrote it: members get the
        ``delete`` event (``by`` the moderator) and a ``system`` ``delete``
        with the reason; return the tombstone.  404 if the message is not
        retained."""
        reason = _reason(reason)
        self._check_room(room)
        if isinstance(id, bool) or not isinstance(id, int) or id < 0:
            raise ProtocolError(400, "id: must be a non-negative integer")
        text = f"message {id} was deleted by a moderator" + (f": {reason}" if reason else "")
        actor = _actor(by)
        message: ChatMessage = await self.hub.request(
            lambda state, now, reply: state.delete_any(room, id, actor, text, reply)
        )
        self._done("delete", f"room={room} id={id} author={message.user_id}", by, reason)
        return message

    async def set_topic(self, room: str, topic: str, *, by: str = "server") -> None:
        """Set *room*'s topic (``""`` clears it), whether or not *by* is a
        member: members get ``system`` ``topic``.  404 if there is no such
        room."""
        self._check_room(room)
        if not isinstance(topic, str) or not is_unicode(topic) or len(topic) > MAX_TOPIC_CHARS:
            raise ProtocolError(
                400, f"topic: must be a string of at most {MAX_TOPIC_CHARS} characters"
            )
        actor = _actor(by)
        await self.hub.request(lambda state, now, reply: state.set_topic(room, topic, actor, reply))
        self._done("topic", f"room={room} topic={topic!r}", by, "")

    async def close_room(self, room: str, reason: str = "", *, by: str = "server") -> int:
        """Close *room*: its members get ``system`` ``close`` with the reason,
        then ``left``, and the room is forgotten with its history, ids and
        topic (a later ``join`` starts a new one); return how many
        connections it removed.  404 if there is no such room."""
        reason = _reason(reason)
        self._check_room(room)
        text = "the room was closed" + (f": {reason}" if reason else "")
        actor = _actor(by)
        closed: int = await self.hub.request(
            lambda state, now, reply: state.close_room(room, text, actor, reply)
        )
        self._done("close", f"room={room} connections={closed}", by, reason)
        return closed

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _check_room(room: object) -> None:
        if not is_valid_room(room):
            raise ProtocolError(400, "room: not a valid room name")

    @staticmethod
    def _check_user(user_id: object) -> None:
        if not is_valid_user_id(user_id):
            raise ProtocolError(400, "user_id: not a valid user id")

    def _target(self, user_id: str | None, ip: str | None) -> tuple[str, str]:
        if (user_id is None) == (ip is None):
            raise ProtocolError(400, "give a user_id or an ip, not both")
        if user_id is not None:
            self._check_user(user_id)
            return "user", user_id
        try:
            return "ip", canonical_ip(str(ip))
        except ValueError:
            raise ProtocolError(400, "ip: not an IP address") from None

    def _done(self, action: str, what: str, by: str, reason: str) -> None:
        self.moderation_actions[action] += 1
        log.info("moderation %s %s by=%s reason=%s", action, what, by, reason or "-")


def _actor(by: str) -> str:
    """Who a moderator's ``system`` event names: the user of *by*
    (``admin@203.0.113.7`` for the admin API), or ``server``."""
    user = by.partition("@")[0]
    return user if is_valid_user_id(user) else "server"
