"""The Redis backplane: many server processes sharing rooms through Redis.

With ``redis_url`` set, the hub a server builds from its config is a
:class:`BackplaneHub`: the same actor as for the other stores
(:class:`~trio_chat._hub.Hub`: one task, never awaits a client, frames
encoded once, the same ``publish``/``direct`` path), whose state is a
:class:`~trio_chat._backplane_state.ClusterState` and which also takes the
backplane tasks' news.
The state asks for Redis work by queuing ops; the :class:`Backplane` tasks do
that work with coredis, natively under trio:

* the **publisher** takes ops from a bounded channel and runs every op
  waiting in one pipeline (one round trip), a Lua script or command each,
  consecutive chat messages sharing one script call
  (:class:`~trio_chat._backplane_commands.Commands`); then it hands the
  results back to the hub's inbox;
* the **subscriber** holds one pattern subscription (``<prefix>ch:*``) and
  hands each message on with ``send_nowait`` into a bounded channel (coredis
  buffers without bound inside, so its loop stays this cheap); if that channel
  is full the messages are dropped and every log is filled from Redis instead;
* the **pump** moves those messages to the hub's inbox in batches;
* the **heartbeat** keeps this process registered (its memberships expire
  with it if it dies) and removes processes that died without cleaning up.

If Redis cannot be reached, the hub is told, ``chat`` and ``direct`` are
answered with error 503 and the connection is retried with backoff; once it is
back the subscription is renewed, this process's memberships are registered
again and every log it serves is read from its stream after the last id
delivered here: nothing acknowledged is missed, nothing is delivered twice.

Redis keys (``<prefix>`` defaults to ``trio_chat:``): ``seq:<room>`` (last id),
``log:<room>`` (stream), ``rev:<room>`` and ``rver:<room>`` (its messages
revised since they were appended, and how many times: see
:mod:`trio_chat._backplane_messages`), ``repoch:<room>`` (its numbering's
name, for ``joined.epoch``), ``topic:<room>`` (its topic),
``members:<room>`` and ``mver:<room>`` (kept while the room has members
anywhere and a week after; ``mver`` also orders topic changes), a direct
conversation's ``seq:``, ``log:``, ``rev:`` and ``rver:`` under its log
name (the two user ids, sorted, a space between them), ``convs`` and
``convs:<user>`` (the conversations, and each user's), ``dmseq:<user>``
and ``dm:<user>`` (the user's inbox, which carries direct messages to their
processes), ``online``, ``presence``, ``refs:<user>``
and ``refq:<user>`` (remembered ``ref``\\s, a day), ``procs`` and
``proc:<node>`` (live processes and what each registered), ``dir`` and
``dirx`` (the room directory, see :mod:`trio_chat._backplane_lua_rooms`),
``epoch`` (changes when Redis loses its data); moderation keeps ``bans``,
``mutes`` and ``modver`` and publishes on ``mod`` and ``modack:<node>``
(:mod:`trio_chat._moderation_redis`).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import trio
import trio.lowlevel

from ._backplane_commands import MIN_RETAIN, Commands
from ._backplane_lua import Retention, render_scripts
from ._backplane_ops import Op, Unavailable
from ._config import ConfigError

if TYPE_CHECKING:
    from ._backplane_hub import BackplaneHub

__all__ = [
    "CONNECTED",
    "DISCONNECTED",
    "LOST",
    "OVERFLOW",
    "TICK",
    "Backplane",
    "Messages",
    "Results",
    "Signal",
    "check_redis_url",
    "redis_client",
    "split_url",
]

log = logging.getLogger("trio_chat.backplane")

#: Pub/sub messages handed to the hub at once at most.
PUMP_BATCH = 1024
#: Scheduling rounds without a new pub/sub message that end a batch.
PUMP_QUIET_ROUNDS = 3

_URL_OPTIONS = {"prefix": str, "node_ttl": float, "heartbeat": float, "timeout": float}


def split_url(url: str) -> tuple[str, dict[str, Any]]:
    """Separate trio_chat's own options from a ``redis://`` URL's query string.

    ``prefix`` (key prefix), ``node_ttl`` (seconds before a silent process's
    memberships expire), ``heartbeat`` (seconds between refreshes) and
    ``timeout`` (seconds a Redis round trip may take) are ours; anything else
    stays for coredis.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"redis_url: expected redis://HOST:PORT/DB, got {url!r}")
    ours: dict[str, Any] = {}
    rest = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        kind = _URL_OPTIONS.get(name)
        if kind is None:
            rest.append((name, value))
            continue
        try:
            ours[name] = kind(value)
        except ValueError:
            raise ValueError(f"redis_url: {name} must be a number, got {value!r}") from None
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


def check_redis_url(url: str) -> None:
    """Raise :class:`ConfigError` if *url* cannot work (or coredis is missing)."""
    try:
        split_url(url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        import coredis  # noqa: F401
    except ImportError:
        raise ConfigError(
            "redis_url: the Redis backplane needs coredis: pip install 'trio-chat[redis]'"
        ) from None


def _node_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:32] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def redis_client(url: str, timeout: float, name: str | None = None) -> Any:
    """A coredis client of *url* as trio_chat uses one: text answers, no
    retries of its own (a failure is handled by the caller), *timeout* to
    connect, and *name* for ``CLIENT LIST``."""
    import coredis
    from coredis.retry import NoRetryPolicy

    return coredis.Redis.from_url(
        url,
        decode_responses=True,
        retry_policy=NoRetryPolicy(),
        connect_timeout=timeout,
        client_name=name,
    )


class Signal:
    """A news item for the hub from the backplane tasks."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


CONNECTED = Signal("connected")
DISCONNECTED = Signal("disconnected")
TICK = Signal("tick")
OVERFLOW = Signal("overflow")
LOST = Signal("lost")


class Results:
    __slots__ = ("items",)

    def __init__(self, items: list[tuple[Op, Any]]) -> None:
        self.items = items


class Messages:
    __slots__ = ("items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items


class Backplane:
    """The tasks that talk to Redis for one :class:`BackplaneHub`.

    Args:
        url: ``redis://HOST:PORT/DB``, optionally with ``prefix``,
            ``node_ttl``, ``heartbeat`` and ``timeout`` in its query string.
        history_size: messages each room's ``joined`` carries.
        retention: what Redis keeps of room history (bytes per room and in
            all, rooms, age; see :class:`~trio_chat._backplane_lua.Retention`).
        ref_memory: accepted ``ref`` values remembered per user.
        max_batch: ops sent in one pipeline at most.
        queue_size: ops that may wait for Redis; beyond, chat and direct are
            answered 503.
    """

    def __init__(
        self,
        url: str,
        *,
        history_size: int = 100,
        ref_memory: int = 1000,
        node: str | None = None,
        prefix: str = "trio_chat:",
        node_ttl: float = 10.0,
        heartbeat: float = 1.0,
        timeout: float = 2.0,
        max_batch: int = 256,
        queue_size: int = 8192,
        events_size: int = 16384,
        retention: Retention | None = None,
    ) -> None:
        self.url, options = split_url(url)
        self.prefix: str = options.get("prefix", prefix)
        self.node_ttl: float = options.get("node_ttl", node_ttl)
        self.heartbeat: float = options.get("heartbeat", heartbeat)
        self.timeout: float = options.get("timeout", timeout)
        self.node = node or _node_id()
        self.history_size = history_size
        self.max_batch = max_batch
        self.connected = False
        self.last_error = ""
        #: Times pub/sub messages were dropped because the hub was behind.
        self.overflows = 0
        self._overflowed = False
        self._client: Any = None
        self._scope: trio.CancelScope | None = None
        self.commands = Commands(
            self.prefix, self.node, self.node_ttl, ref_memory, max(history_size, MIN_RETAIN)
        )
        self.retention = retention or Retention()
        self._scripts = render_scripts(self.retention)
        self._deregister = self._scripts.pop("deregister")
        self._ops_send, self._ops = trio.open_memory_channel[Op](queue_size)
        self._events_send, self._events = trio.open_memory_channel[tuple[str, str]](events_size)

    # ------------------------------------------------------------ hub side

    def submit(self, op: Op) -> bool:
        """Queue *op* for Redis without blocking; False if the queue is full."""
        try:
            self._ops_send.send_nowait(op)
        except trio.WouldBlock:
            return False
        return True

    def lost(self, reason: str) -> None:
        """Drop the current Redis connection (it is retried at once)."""
        self.last_error = reason
        if self._scope is not None:
            self._scope.cancel()

    # ------------------------------------------------------------ tasks

    async def run(self, hub: BackplaneHub) -> None:
        """Connect, serve, and reconnect after any failure, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, hub)
            nursery.start_soon(self._publisher, hub)
            delay = 0.05
            reported = -float("inf")
            while True:
                started = trio.current_time()
                try:
                    await self._connection(hub)
                except BaseExceptionGroup as group:
                    # coredis may fail to clean up a subscription cancelled
                    # from outside; the cancellation is what matters then.
                    cancelled, rest = group.split(trio.Cancelled)
                    if cancelled is not None:
                        raise cancelled from None
                    self.last_error = _describe(rest) if rest is not None else "?"
                except Exception as exc:  # noqa: BLE001 - every failure means: retry
                    self.last_error = _describe(exc)
                if self.connected:
                    log.warning("Redis backplane connection lost: %s", self.last_error)
                    reported = trio.current_time()
                elif trio.current_time() - reported > 30:
                    log.warning("Redis backplane unreachable: %s", self.last_error)
                    reported = trio.current_time()
                self.connected = False
                self._client = None
                self._scope = None
                await hub.notify(DISCONNECTED)
                if trio.current_time() - started > 10:
                    delay = 0.05
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _connection(self, hub: BackplaneHub) -> None:
        client = redis_client(self.url, self.timeout, f"trio_chat:{self.node}")
        # Setting up must finish in time; serving then lasts until a failure.
        with trio.CancelScope(deadline=trio.current_time() + 2 * self.timeout) as scope:
            self._scope = scope
            async with client:
                for name, lua in self._scripts.items():
                    self.commands.shas[name] = await client.script_load(lua)
                pubsub = client.pubsub(
                    patterns=[self.prefix + "ch:*"],
                    retry_policy=None,
                    ignore_subscribe_messages=True,
                    subscription_timeout=self.timeout,
                )
                async with pubsub, trio.open_nursery() as nursery:
                    nursery.start_soon(self._subscriber, pubsub)
                    scope.deadline = float("inf")
                    self._client = client
                    self.connected = True
                    log.info("Redis backplane connected (node %s)", self.node)
                    await hub.notify(CONNECTED)
                    nursery.start_soon(self._heartbeat, client, hub)
        if scope.cancelled_caught and not self.connected:
            raise TimeoutError("Redis did not answer in time")

    async def _subscriber(self, pubsub: Any) -> None:
        send = self._events_send.send_nowait
        async for message in pubsub:
            try:
                send((message["channel"], message["data"]))
            except trio.WouldBlock:
                self._overflowed = True
        raise ConnectionError("the subscription ended")

    async def _pump(self, hub: BackplaneHub) -> None:
        # coredis hands over one pub/sub message per scheduling round, so a
        # burst read from the socket arrives over several rounds: keep
        # collecting while it does, so that the hub delivers it as one batch
        # (one write per connection for many messages, not one per message).
        receive = self._events
        while True:
            batch = [await receive.receive()]
            quiet = 0
            while len(batch) < PUMP_BATCH and quiet < PUMP_QUIET_ROUNDS:
                await trio.lowlevel.checkpoint()
                before = len(batch)
                while len(batch) < PUMP_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                quiet = quiet + 1 if len(batch) == before else 0
            await hub.notify(Messages(batch))
            if self._overflowed:
                self._overflowed = False
                self.overflows += 1
                await hub.notify(OVERFLOW)

    async def _heartbeat(self, client: Any, hub: BackplaneHub) -> None:
        ttl = int(self.node_ttl * 1000)
        while True:
            await trio.sleep(self.heartbeat)
            await hub.notify(TICK)
            state = hub.state
            if not state.up:
                continue
            with trio.fail_after(self.timeout):
                answer = await client.evalsha(
                    self.commands.shas["heartbeat"],
                    keys=[],
                    args=[self.prefix, self.node, ttl, state.epoch or ""],
                )
            if answer == "lost":
                log.warning("this process's registration was lost: registering again")
                await hub.notify(LOST)

    async def _publisher(self, hub: BackplaneHub) -> None:
        receive = self._ops
        while True:
            batch = [await receive.receive()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            client = self._client
            if client is None:
                results: list[tuple[Op, Any]] = [(op, Unavailable()) for op in batch]
            else:
                try:
                    with trio.fail_after(self.timeout):
                        results = await self.commands.execute(client, batch)
                except Exception as exc:  # noqa: BLE001 - any failure: Redis is in doubt
                    reason = _describe(exc)
                    results = [(op, Unavailable(reason)) for op in batch]
                    self.lost(reason)
            await hub.notify(Results(results))

    async def deregister(self, timeout: float = 1.0) -> None:  # noqa: ASYNC109 - also the connect timeout
        """Remove this process's memberships from Redis (at shutdown)."""
        with trio.move_on_after(timeout):
            try:
                client = redis_client(self.url, timeout)
                async with client:
                    await client.eval(self._deregister, keys=[], args=[self.prefix, self.node])
            except Exception as exc:  # noqa: BLE001 - best effort: expiry does it later
                log.info("could not deregister from Redis: %s", _describe(exc))
