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
  are (the Redis store answers 501 to a delete or a close).

Members of the rooms concerned see a ``system`` event (``kick``, ``ban``,
``mute``, ``unmute``, ``delete``, ``topic``, ``close``) with a ``text``
saying what happened, before the connections close.  Each action is logged
(logger ``trio_chat.moderation``) and counted on ``/metrics``.

Bans and mutes are kept with the store: with the SQLite store in
``bans.json`` beside its database (written atomically, off the trio thread,
before the call returns), so they survive a restart; with the memory store
(and per process with the Redis store), in memory.
At most ``max_bans`` bans and ``max_mutes`` mutes are in force at once.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ._hub_state import Delivery
from ._moderation import Ban, Bans, Mutes
from ._protocol import (
    ChatMessage,
    ProtocolError,
    System,
    is_unicode,
    is_valid_room,
    is_valid_user_id,
)
from ._room_frames import MAX_TOPIC_CHARS
from ._sqlite_store import StoreError

if TYPE_CHECKING:
    from ._bots import Bot
    from ._commands import Commands
    from ._config import Config
    from ._connection import Connection
    from ._hub import Hub, Outlet
    from ._metrics import Metrics
    from ._policy import Screen

__all__ = ["BANNED", "BANS_FILE", "KICKED", "ModerationApi", "canonical_ip"]

log = logging.getLogger("trio_chat.moderation")

#: Close code of a kicked connection.
KICKED = 4001
#: Close code of a connection whose user or address was banned.
BANNED = 4003
#: The bans' file in the SQLite store's directory.
BANS_FILE = "bans.json"
#: Longest reason kept (the close frame's reason is cut to 120 bytes).
MAX_REASON_CHARS = 200

ACTIONS = ("kick", "ban", "unban", "mute", "unmute", "delete", "topic", "close")


def canonical_ip(text: str) -> str:
    """*text* as an address in its canonical form (IPv4-mapped IPv6 as
    IPv4); ValueError if it is not an address."""
    address = ipaddress.ip_address(text.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


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


#: A mute as kept in the file: (user, room, until, in seconds since the epoch).
SavedMute = tuple[str, str, float]


class _BanFile:
    """Where bans and mutes are kept: a JSON file written whole, atomically
    (version 1 held bans only)."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, BANS_FILE)

    def load(self, now: float) -> tuple[list[Ban], list[SavedMute]]:
        """The bans and mutes still in force at *now* (wall clock)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            bans = [Ban.from_json(item) for item in data["bans"] if item["until"] > now]
            mutes = [
                (str(m["user_id"]), str(m["room"]), float(m["until"]))
                for m in data.get("mutes", [])
                if m["until"] > now
            ]
        except FileNotFoundError:
            return [], []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"cannot read the bans in {self.path}: {exc}") from None
        return bans, mutes

    def write(self, bans: list[Ban], mutes: list[SavedMute]) -> None:
        """Replace the file (blocking: run in a thread)."""
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "version": 2,
                    "bans": [b.to_json() for b in bans],
                    "mutes": [{"user_id": u, "room": r, "until": t} for u, r, t in mutes],
                },
                f,
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class ModerationApi:
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
        self._ban_file = None if config.sqlite_dir is None else _BanFile(config.sqlite_dir)
        #: Mutes read back from the file, put in force when the server starts.
        self._saved_mutes: list[SavedMute] = []
        if self._ban_file is not None:
            bans, self._saved_mutes = self._ban_file.load(time.time())
            for ban in bans:
                self._bans.add(ban, time.time())
        self._ban_lock = trio.Lock()
        self.moderation_actions: dict[str, int] = dict.fromkeys(ACTIONS, 0)
        self.metrics.registry.register(_ModerationMetrics(self))

    # ------------------------------------------------------------ kick

    async def kick(self, user_id: str, reason: str = "", *, by: str = "server") -> int:
        """Close every connection and bot of *user_id* (close code 4001,
        "kicked: *reason*"); return how many.  Members of their rooms see a
        ``system`` ``kick`` first."""
        reason = _reason(reason)
        self._check_user(user_id)
        text = f"{user_id} was kicked" + (f": {reason}" if reason else "")
        rooms = await self._announce("kick", user_id, text)
        closed = self._close_user(user_id, KICKED, "kicked" + (f": {reason}" if reason else ""))
        self._done("kick", f"user={user_id} connections={closed} rooms={len(rooms)}", by, reason)
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

        Stored before this returns (with the SQLite store: in ``bans.json``).
        Raises :class:`ProtocolError` 400 for a bad name, address or
        duration, 507 when ``max_bans`` bans are in force already.
        """
        reason, duration = _reason(reason), _duration(duration)
        kind, target = self._target(user_id, ip)
        now = time.time()
        ban = Ban(kind, target, now + duration, reason)
        async with self._ban_lock:
            try:
                self._bans.add(ban, now)
            except ValueError as exc:
                raise ProtocolError(507, str(exc)) from None
            await self._save_bans()
        closing = "banned" + (f": {reason}" if reason else "")
        text = f"{target} was banned" + (f": {reason}" if reason else "")
        if kind == "user":
            await self._announce("ban", target, text)
            closed = self._close_user(target, BANNED, closing)
        else:
            closed = 0
            for conn in list(self._connections):
                if _same_ip(conn.peer, target):
                    await self._announce("ban", conn.user_id, text)
                    conn.close(BANNED, closing)
                    closed += 1
        self._done("ban", f"{kind}={target} seconds={duration:g} connections={closed}", by, reason)
        return ban

    async def unban(
        self, *, user_id: str | None = None, ip: str | None = None, by: str = "server"
    ) -> bool:
        """Lift a ban; False if there was none."""
        kind, target = self._target(user_id, ip)
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
        return f"banned for {left} more seconds" + (f": {ban.reason}" if ban.reason else "")

    async def _save_bans(self) -> None:
        """Write the bans and the mutes in force (hold ``_ban_lock``)."""
        if self._ban_file is not None:
            wall = time.time()
            bans = self._bans.all(wall)
            mutes = [(u, r, wall + left) for u, r, left in self._mutes.all(trio.current_time())]
            await trio.to_thread.run_sync(self._ban_file.write, bans, mutes)

    def _restore_mutes(self) -> None:
        """Put the mutes read back from the file in force, on trio's clock
        (call once, in the server's trio run)."""
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
        restart)."""
        reason, duration = _reason(reason), _duration(duration)
        self._check_user(user_id)
        self._check_room(room)
        now = trio.current_time()
        async with self._ban_lock:
            try:
                self._mutes.add(user_id, room, now + duration, now)
            except ValueError as exc:
                raise ProtocolError(507, str(exc)) from None
            await self._save_bans()
        text = f"{user_id} was muted for {math.ceil(duration)} s" + (
            f": {reason}" if reason else ""
        )
        await self._announce("mute", user_id, text, rooms=[room])
        self._done("mute", f"user={user_id} room={room} seconds={duration:g}", by, reason)

    async def unmute(self, user_id: str, room: str, *, by: str = "server") -> bool:
        """Lift a mute; False if there was none."""
        async with self._ban_lock:
            found = self._mutes.remove(user_id, room)
            if found:
                await self._save_bans()
        if found:
            await self._announce("unmute", user_id, f"{user_id} may speak again", rooms=[room])
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
        message: ChatMessage = await self.hub.call(
            lambda state, now: state.delete_any(room, id, actor, text)
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
        closed: int = await self.hub.call(lambda state, now: state.close_room(room, text, actor))
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

    def _outlets_of(self, user_id: str) -> list[Outlet]:
        outlets = [c.outlet for c in self._connections if c.user_id == user_id]
        return outlets + [b.outlet for b in self._bots if b.user_id == user_id]

    def _close_user(self, user_id: str, code: int, reason: str) -> int:
        closed = 0
        for conn in list(self._connections):
            if conn.user_id == user_id:
                conn.close(code, reason)
                closed += 1
        for bot in list(self._bots):
            if bot.user_id == user_id:
                bot.outlet.kill(code, reason)
                closed += 1
        return closed

    async def _announce(
        self, event: str, user_id: str, text: str, rooms: list[str] | None = None
    ) -> list[str]:
        """Send ``system`` *event* to the members of *rooms* (default: every
        room *user_id* is in), inside the hub; return the rooms."""
        outlets = self._outlets_of(user_id) if rooms is None else []

        def announce(state: Any, now: float) -> tuple[list[str], list[Delivery]]:
            chosen = rooms
            if chosen is None:
                seen: dict[str, None] = {}
                for outlet in outlets:
                    try:
                        seen.update(dict.fromkeys(state.rooms_of(outlet)))
                    except KeyError:
                        continue  # not (or no longer) connected to the hub
                chosen = list(seen)
            deliveries = [
                Delivery(System(event, room, user_id, text), tuple(state.connections_in(room)))
                for room in chosen
            ]
            return chosen, deliveries

        announced: list[str] = await self.hub.call(announce)
        return announced

    def _done(self, action: str, what: str, by: str, reason: str) -> None:
        self.moderation_actions[action] += 1
        log.info("moderation %s %s by=%s reason=%s", action, what, by, reason or "-")


def _actor(by: str) -> str:
    """Who a moderator's ``system`` event names: the user of *by*
    (``admin@203.0.113.7`` for the admin API), or ``server``."""
    user = by.partition("@")[0]
    return user if is_valid_user_id(user) else "server"


def _same_ip(peer: str, address: str) -> bool:
    try:
        return canonical_ip(peer) == address
    except ValueError:
        return False


class _ModerationMetrics:
    """``/metrics`` families for moderation, the policy and commands."""

    def __init__(self, server: ModerationApi) -> None:
        self.server = server

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        server = self.server
        actions = CounterMetricFamily(
            "trio_chat_moderation_actions",
            "Moderation actions taken (embedding API, admin API and CLI alike).",
            labels=["action"],
        )
        for action, count in server.moderation_actions.items():
            actions.add_metric([action], count)
        yield actions
        yield GaugeMetricFamily("trio_chat_bans", "Bans in force.", value=len(server.bans()))
        yield GaugeMetricFamily("trio_chat_mutes", "Mutes in force.", value=len(server._mutes))
        screen = server.screen
        policy = CounterMetricFamily(
            "trio_chat_policy_verdicts",
            "Client events the message policy rejected or replaced, and its faults"
            " (raised or timed out: error 500).",
            labels=["verdict"],
        )
        policy.add_metric(["reject"], screen.rejected)
        policy.add_metric(["replace"], screen.replaced)
        policy.add_metric(["fault"], screen.faults)
        yield policy
        commands = CounterMetricFamily(
            "trio_chat_commands", "Command calls by outcome.", labels=["outcome"]
        )
        for outcome in ("ok", "error", "timeout", "fault", "unknown", "busy"):
            commands.add_metric([outcome], server.commands.outcomes.get(outcome, 0))
        yield commands
