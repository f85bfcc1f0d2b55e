"""What a kick, ban, mute or unmute does on one process: the ``system``
events to the members of the rooms concerned, the connections closed, the
tables changed.

:class:`ModerationEffects` is a base of
:class:`~trio_chat._moderator.ModerationApi`: the memory and SQLite stores
apply an action where it is taken; with the Redis store every process
applies what any process published
(:mod:`trio_chat._moderation_redis`), each to its own connections, so each
member of a room sees one ``system`` event wherever it is connected.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import trio

from ._hub_state import Delivery
from ._moderation import Ban, Bans, ModerationFull, Mutes
from ._protocol import ProtocolError, System

if TYPE_CHECKING:
    from ._ban_file import SavedMute
    from ._bots import Bot
    from ._connection import Connection
    from ._hub import Hub, Outlet
    from ._moderation_redis import SharedModeration

__all__ = ["BANNED", "KICKED", "ModerationEffects", "canonical_ip", "with_reason"]

log = logging.getLogger("trio_chat.moderation")

#: Close code of a kicked connection.
KICKED = 4001
#: Close code of a connection whose user or address was banned.
BANNED = 4003
#: Address bans' announcements remembered (so that each is made once).
_MAX_TOLD = 1024


def canonical_ip(text: str) -> str:
    """*text* as an address in its canonical form (IPv4-mapped IPv6 as
    IPv4); ValueError if it is not an address."""
    address = ipaddress.ip_address(text.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def with_reason(reason: str) -> str:
    return f": {reason}" if reason else ""


class ModerationEffects:
    """The effects of moderation on this process's connections."""

    hub: Hub
    _connections: set[Connection]
    _bots: set[Bot]
    _bans: Bans
    _mutes: Mutes
    _shared: SharedModeration | None
    #: Users an address ban was announced for here: (address, until, user).
    _told: dict[tuple[str, float, str], None]

    async def _ban_here(self, ban: Ban) -> int:
        """Close what is connected here under *ban*, after the ``system``
        ``ban`` event."""
        closing = "banned" + with_reason(ban.reason)
        text = f"{ban.target} was banned" + with_reason(ban.reason)
        if ban.kind == "user":
            await self._announce("ban", ban.target, text)
            return self._close_user(ban.target, BANNED, closing)
        closed = 0
        told: set[str] = set()
        for conn in list(self._connections):
            if _same_ip(conn.peer, ban.target):
                if conn.user_id not in told:
                    told.add(conn.user_id)
                    await self._tell_ban(ban.target, ban.until, conn.user_id, text)
                conn.close(BANNED, closing)
                closed += 1
        return closed

    async def _tell_ban(self, address: str, until: float, user_id: str, text: str) -> None:
        """Announce that *user_id*, connected from a banned *address*, is
        banned, once per ban; with the Redis store, on every process too
        (the others do not know whence the user connected)."""
        key = (address, until, user_id)
        if key in self._told:
            return
        self._told[key] = None
        while len(self._told) > _MAX_TOLD:
            del self._told[next(iter(self._told))]
        await self._announce("ban", user_id, text)
        if self._shared is not None:
            news = {
                "action": "banned",
                "user_id": user_id,
                "target": address,
                "until": until,
                "text": text,
            }
            try:
                await self._shared.write(news, wait=False)
            except ProtocolError as exc:
                log.warning("moderation: other processes not told of a ban: %s", exc.message)

    async def _mute_here(self, user_id: str, room: str, duration: float, reason: str) -> None:
        text = f"{user_id} was muted for {math.ceil(duration)} s" + with_reason(reason)
        await self._announce("mute", user_id, text, rooms=[room])

    async def _unmute_here(self, user_id: str, room: str) -> None:
        await self._announce("unmute", user_id, f"{user_id} may speak again", rooms=[room])

    # ------------------------------------------------------------ news

    async def _apply_news(self, news: dict[str, Any]) -> int:
        """Apply a kick, ban, unban, mute or unmute here (with the Redis
        store, every process applies what any process published); return
        the connections it closed."""
        action = news["action"]
        if action == "kick":
            user_id, reason = str(news["user_id"]), str(news["reason"])
            text = f"{user_id} was kicked" + with_reason(reason)
            await self._announce("kick", user_id, text)
            return self._close_user(user_id, KICKED, "kicked" + with_reason(reason))
        if action == "ban":
            ban = Ban.from_json(news)
            if ban.until <= time.time():
                return 0
            try:
                self._bans.add(ban, time.time())
            except ModerationFull as exc:
                log.warning("moderation: a ban is not kept here: %s", exc)
            return await self._ban_here(ban)
        if action == "banned":
            address, until = str(news["target"]), float(news["until"])
            await self._tell_ban(address, until, str(news["user_id"]), str(news["text"]))
            return 0
        if action == "unban":
            self._bans.remove(str(news["kind"]), str(news["target"]))
            return 0
        user_id, room = str(news["user_id"]), str(news["room"])
        if action == "mute":
            left = float(news["until"]) - time.time()
            if left > 0:
                now = trio.current_time()
                try:
                    self._mutes.add(user_id, room, now + left, now)
                except ModerationFull as exc:
                    log.warning("moderation: a mute is not kept here: %s", exc)
                await self._mute_here(user_id, room, float(news["seconds"]), str(news["reason"]))
            return 0
        if action == "unmute":
            self._mutes.remove(user_id, room)
            await self._unmute_here(user_id, room)
            return 0
        raise ValueError(f"not a moderation action: {action!r}")

    async def _replace_tables(self, bans: list[Ban], mutes: list[SavedMute]) -> None:
        """Hold the bans and mutes read from Redis instead (after a
        (re)connection); close what is connected here under a ban new here."""
        wall, now = time.time(), trio.current_time()
        known = {(b.kind, b.target) for b in self._bans.all(wall)}
        if self._bans.replace(bans, wall) or self._mutes.replace(
            [(u, r, now + (until - wall)) for u, r, until in mutes], now
        ):
            log.warning("moderation: more bans or mutes in Redis than kept here")
        for ban in bans:
            if (ban.kind, ban.target) not in known:
                await self._ban_here(ban)

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
        """Send ``system`` *event* to the members here of *rooms* (default:
        every room *user_id* is in: with the Redis store, on any process),
        inside the hub; return the rooms."""
        outlets = self._outlets_of(user_id) if rooms is None else []

        def announce(state: Any, now: float) -> tuple[list[str], list[Delivery]]:
            chosen = rooms
            if chosen is None and hasattr(state, "member_rooms"):
                chosen = state.member_rooms(user_id)
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


def _same_ip(peer: str, address: str) -> bool:
    try:
        return canonical_ip(peer) == address
    except ValueError:
        return False
