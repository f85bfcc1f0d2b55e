"""Moderation shared through Redis: kicks, bans and mutes for every process.

With the Redis store a server's moderation record is
:class:`SharedModeration`:

* bans and mutes are kept in Redis, in the hashes ``<prefix>bans`` (field
  ``user <id>`` or ``ip <address>``) and ``<prefix>mutes`` (field
  ``<user> <room>``), each value a JSON object whose ``until`` is a
  wall-clock time; at most ``max_bans`` and ``max_mutes`` entries (when one
  is full its expired entries are dropped first, then a new one is refused);
* every kick, ban, unban, mute and unmute is written, numbered
  (``<prefix>modver`` counts them) and published on the channel
  ``<prefix>mod`` by one script, atomically; every process (the one asked as
  well) applies the news in that order to its own connections and to its
  in-memory copy of the tables; for a kick or a ban each answers the
  process asked (on ``<prefix>modack:<node>``) with the connections it
  closed, so that a kick returns how many closed everywhere;
* on every (re)connection a process subscribes first, then reads the tables
  and their number and replaces its copy, so a process started later, or
  cut off from Redis for a while, catches up; news numbered at or below what
  it read is already in the copy and skipped.

The handshake's ban check and the chat's mute check read the in-memory copy
(:class:`~trio_chat._moderation.Bans`, :class:`~trio_chat._moderation.Mutes`):
no round trip to Redis per connection or per message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._backplane import redis_client
from ._moderation import Ban
from ._protocol import ProtocolError

__all__ = ["SharedModeration"]

log = logging.getLogger("trio_chat.moderation")

#: Writes one entry (``set``), removes one (``del``) or only announces
#: (``say``, a kick), then numbers and publishes the news; answers its
#: number (0 when there was nothing to remove, -1 when the table is full)
#: and how many processes heard it.
_WRITE = """
local op = ARGV[2]
if op == 'set' then
  local now, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
  if redis.call('HEXISTS', KEYS[1], ARGV[5]) == 0 and redis.call('HLEN', KEYS[1]) >= limit then
    local all = redis.call('HGETALL', KEYS[1])
    for i = 1, #all, 2 do
      local ok, item = pcall(cjson.decode, all[i + 1])
      local ends = ok and type(item) == 'table' and tonumber(item['until']) or nil
      if ends == nil or ends <= now then
        redis.call('HDEL', KEYS[1], all[i])
      end
    end
    if redis.call('HLEN', KEYS[1]) >= limit then
      return {-1, 0}
    end
  end
  redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
elseif op == 'del' then
  if redis.call('HDEL', KEYS[1], ARGV[5]) == 0 then
    return {0, 0}
  end
end
local version = redis.call('INCR', KEYS[2])
return {version, redis.call('PUBLISH', ARGV[1], version .. ' ' .. ARGV[7])}
"""

#: The tables and the number of the last news, read at once.
_READ = """
return {redis.call('GET', KEYS[3]) or '0', redis.call('HVALS', KEYS[1]),
        redis.call('HVALS', KEYS[2])}
"""

#: Own results kept for the callers waiting for their news at most.
_MAX_RESULTS = 1024

#: What a process applies: the news (a JSON object) -> connections closed.
Apply = Callable[[dict[str, Any]], Awaitable[int]]
#: What a process does with the tables read: (bans, mutes as (user, room,
#: until on the wall clock)).
Replace = Callable[[list[Ban], list[tuple[str, str, float]]], Awaitable[None]]


class _Tally:
    """The other processes' answers to one piece of news from here."""

    __slots__ = ("answers", "closed", "done", "expected")

    def __init__(self) -> None:
        self.answers = 0
        self.closed = 0
        self.expected: int | None = None
        self.done = trio.Event()


class SharedModeration:
    """One process's side of the moderation tables kept in Redis.

    Args:
        url: the coredis URL (without trio_chat's own options).
        prefix: the key prefix.
        node: this process's id in the cluster.
        timeout: seconds a Redis round trip may take.
        apply: applies one piece of news here (see the module docs).
        replace: replaces the in-memory copy with the tables read.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        node: str,
        timeout: float,
        apply: Apply,
        replace: Replace,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.node = node
        self.timeout = timeout
        self.channel = prefix + "mod"
        #: Where the other processes answer news from here with what they closed.
        self.answers = f"{prefix}modack:{node}"
        self._apply = apply
        self._replace = replace
        #: Set once the tables were read for the first time.
        self.ready = trio.Event()
        self._client: Any = None
        self._shas: dict[str, str] = {}
        #: The number of the last news applied here (or read with the tables).
        self._applied = 0
        self._waiting: dict[int, trio.Event] = {}
        self._results: dict[int, int] = {}
        self._tallies: dict[int, _Tally] = {}
        #: The number of the last news heard on a subscription.
        self._heard = 0
        #: News applied here by their caller already (they came back late).
        self._skip: set[int] = set()

    # ------------------------------------------------------------ writes

    async def write(
        self,
        news: dict[str, Any],
        *,
        op: str = "say",
        table: str = "bans",
        field: str = "",
        value: str = "",
        limit: int = 0,
        wait: bool = True,
        tally: bool = False,
    ) -> int | None:
        """Write and publish *news*; return what applying it here gave (the
        connections closed), once it was, or None if ``del`` found nothing.
        With *tally*, add what the other processes closed, once each has
        answered (or the timeout passed).

        Raises :class:`ProtocolError` 503 when Redis cannot be reached, 507
        when *table* holds *limit* entries in force.  Without *wait*, return
        0 once Redis took it.
        """
        client = self._client
        if client is None:
            raise ProtocolError(503, "moderation is unavailable: Redis cannot be reached")
        keys = [self.prefix + table, self.prefix + "modver"]
        if tally:
            news = {**news, "tally": True}
        body = f"{self.node} {json.dumps(news, separators=(',', ':'))}"
        args = [self.channel, op, time.time(), limit, field, value, body]
        try:
            with trio.fail_after(self.timeout):
                answer = await client.evalsha(self._shas["write"], keys=keys, args=args)
        except Exception as exc:  # noqa: BLE001 - any failure: the change is in doubt
            log.warning("moderation: Redis did not take the change: %s", exc)
            raise ProtocolError(503, "moderation is unavailable: Redis did not answer") from None
        version, heard = int(answer[0]), int(answer[1])
        if version == -1:
            raise ProtocolError(507, f"at most {limit} {table} may be in force")
        if version == 0:
            return None
        if not wait:
            return 0
        others = heard - 1
        if version > self._applied:
            event = self._waiting.setdefault(version, trio.Event())
            with trio.move_on_after(self.timeout):
                await event.wait()
            self._waiting.pop(version, None)
            if version <= self._applied:
                closed = self._results.pop(version, 0)
            else:
                # The news did not come back in time (the subscription is
                # broken): apply it here now, and not again if it comes.
                self._skip.add(version)
                others = heard
                closed = await self._apply(news)
        else:
            closed = self._results.pop(version, 0)
        if tally and others > 0:
            closed += await self._tally(version, others)
        return closed

    async def _tally(self, version: int, others: int) -> int:
        """What *others* processes closed for news *version*, as they answer
        within the timeout."""
        tally = self._tallies.setdefault(version, _Tally())
        tally.expected = others
        if tally.answers >= others:
            tally.done.set()
        with trio.move_on_after(self.timeout):
            await tally.done.wait()
        self._tallies.pop(version, None)
        if tally.answers < others:
            log.info("moderation: %d of %d processes answered in time", tally.answers, others)
        return tally.closed

    def _answer(self, data: str) -> None:
        """Another process's answer to news from here: "<number> <closed>"."""
        try:
            version, closed = (int(part) for part in data.split(" "))
        except ValueError:
            log.warning("moderation: not an answer: %.200r", data)
            return
        tally = self._tallies.setdefault(version, _Tally())
        tally.answers += 1
        tally.closed += closed
        if tally.expected is not None and tally.answers >= tally.expected:
            tally.done.set()
        while len(self._tallies) > _MAX_RESULTS:
            del self._tallies[next(iter(self._tallies))]

    # ------------------------------------------------------------ the task

    async def run(self) -> None:
        """Stay subscribed and current until cancelled, reconnecting after
        any failure."""
        delay = 0.05
        while True:
            started = trio.current_time()
            try:
                await self._connection()
            except BaseExceptionGroup as group:
                # coredis may fail to clean up a subscription cancelled from
                # outside; the cancellation is what matters then.
                cancelled, rest = group.split(trio.Cancelled)
                if cancelled is not None:
                    raise cancelled from None
                log.info("moderation: Redis connection lost: %r", rest)
            except Exception as exc:  # noqa: BLE001 - every failure means: retry
                log.info("moderation: Redis connection lost: %s", exc)
            self._client = None
            if trio.current_time() - started > 10:
                delay = 0.05
            await trio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _connection(self) -> None:
        client = redis_client(self.url, self.timeout, f"trio_chat:{self.node}:moderation")
        with trio.CancelScope(deadline=trio.current_time() + 2 * self.timeout) as scope:
            async with client:
                self._shas = {
                    "write": await client.script_load(_WRITE),
                    "read": await client.script_load(_READ),
                }
                pubsub = client.pubsub(
                    channels=[self.channel, self.answers],
                    retry_policy=None,
                    ignore_subscribe_messages=True,
                    subscription_timeout=self.timeout,
                )
                async with pubsub:
                    await self._read(client)
                    scope.deadline = float("inf")
                    self._client = client
                    self.ready.set()
                    async for message in pubsub:
                        if message["channel"] == self.answers:
                            self._answer(str(message["data"]))
                        else:
                            await self._news(client, str(message["data"]))
        if scope.cancelled_caught:
            raise TimeoutError("Redis did not answer in time")
        raise ConnectionError("the subscription ended")

    async def _read(self, client: Any) -> None:
        """Read the tables and replace the copy here."""
        keys = [self.prefix + "bans", self.prefix + "mutes", self.prefix + "modver"]
        with trio.fail_after(self.timeout):
            version, bans, mutes = await client.evalsha(self._shas["read"], keys=keys, args=[])
        now = time.time()
        kept_bans, kept_mutes = [], []
        for raw in bans:
            try:
                ban = Ban.from_json(json.loads(raw))
            except (ValueError, KeyError, TypeError):
                log.warning("moderation: not a ban in Redis: %.200r", raw)
                continue
            if ban.until > now:
                kept_bans.append(ban)
        for raw in mutes:
            try:
                item = json.loads(raw)
                mute = (str(item["user_id"]), str(item["room"]), float(item["until"]))
            except (ValueError, KeyError, TypeError):
                log.warning("moderation: not a mute in Redis: %.200r", raw)
                continue
            if mute[2] > now:
                kept_mutes.append(mute)
        await self._replace(kept_bans, kept_mutes)
        self._applied = int(version)
        self._caught_up()

    async def _news(self, client: Any, data: str) -> None:
        number, _, rest = data.partition(" ")
        node, _, body = rest.partition(" ")
        try:
            version = int(number)
            news = json.loads(body)
            kick = news["action"] == "kick"
        except (ValueError, KeyError, TypeError):
            log.warning("moderation: not news: %.200r", data)
            return
        heard, self._heard = self._heard, max(self._heard, version)
        if version <= self._applied:
            # Published after this subscription began but before the tables
            # were read: in them already, but for a kick.
            if kick and version > heard:
                await self._run(version, node, news)
            return
        if version > self._applied + 1:
            # Some news went missing (this should not happen on one
            # subscription): read the tables again.
            log.warning("moderation: news %d came after %d: reading again", version, self._applied)
            await self._read(client)
            if version > self._applied:
                log.warning("moderation: news %d is beyond the tables read: ignored", version)
                return
            if kick:
                await self._run(version, node, news)
            return
        await self._run(version, node, news)
        self._applied = version
        self._caught_up()

    async def _run(self, version: int, node: str, news: dict[str, Any]) -> None:
        """Apply news *version* here (unless its caller did already)."""
        closed = 0
        if version in self._skip:
            self._skip.discard(version)
        else:
            try:
                closed = await self._apply(news)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("moderation: cannot apply %.200r: %s", news, exc)
        log.debug("moderation: news %d from %s applied: %.200r", version, node, news)
        if node == self.node:
            self._results[version] = closed
            while len(self._results) > _MAX_RESULTS:
                del self._results[next(iter(self._results))]
        elif news.get("tally") and self._client is not None:
            try:
                with trio.fail_after(self.timeout):
                    await self._client.publish(f"{self.prefix}modack:{node}", f"{version} {closed}")
            except Exception as exc:  # noqa: BLE001 - the asker stops waiting in time
                log.info("moderation: cannot answer news %d: %s", version, exc)

    def _caught_up(self) -> None:
        for version, event in list(self._waiting.items()):
            if version <= self._applied:
                event.set()
        self._skip = {v for v in self._skip if v > self._heard}
