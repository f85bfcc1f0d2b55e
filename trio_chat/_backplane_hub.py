"""The hub actor of the Redis store: :class:`BackplaneHub`.

The same actor as for the other stores (:class:`~trio_chat._hub.Hub`), whose
state is a :class:`~trio_chat._backplane_state.ClusterState`, which runs the
:class:`~trio_chat._backplane.Backplane` tasks beside it and takes their news
(Redis's answers, pub/sub messages, the connection's state) through its
inbox; :func:`build_backplane_hub` makes one from a config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from ._backplane import (
    CONNECTED,
    DISCONNECTED,
    LOST,
    OVERFLOW,
    TICK,
    Backplane,
    Messages,
    Results,
    Signal,
    check_redis_url,
)
from ._backplane_lua import Retention
from ._backplane_ops import Unavailable
from ._backplane_state import ClusterState
from ._config import Config, ConfigError
from ._hub import Hub
from ._protocol import ErrorEvent

__all__ = ["BackplaneHub", "build_backplane_hub"]

log = logging.getLogger("trio_chat.backplane")


class BackplaneHub(Hub):
    """A :class:`~trio_chat._hub.Hub` whose rooms are shared through Redis.

    The actor is the same; client events, connections and departures go to a
    :class:`ClusterState`, the ops it queues go to the :class:`Backplane`, and
    what Redis answers comes back through the inbox.

    Args:
        state: the cluster state it owns.
        backplane: its Redis tasks (started by :meth:`run`).
        startup_wait: seconds :meth:`run` waits for Redis before reporting
            started anyway (chat then answers 503 until Redis is reachable).
    """

    def __init__(
        self,
        state: ClusterState,
        backplane: Backplane,
        *,
        inbox_size: int = 4096,
        startup_wait: float = 3.0,
    ) -> None:
        super().__init__(state, inbox_size=inbox_size)
        self.state: ClusterState = state
        self.backplane = backplane
        self.startup_wait = startup_wait
        #: Set once this process is registered in Redis for the first time.
        self.synced = trio.Event()

    async def notify(self, command: Any) -> None:
        """Put news from the backplane tasks in the hub's inbox."""
        await self._inbox_send.send(command)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the actor and the backplane until cancelled; then deregister."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(super().run)
                nursery.start_soon(self.backplane.run, self)
                with trio.move_on_after(self.startup_wait):
                    await self.synced.wait()
                if not self.synced.is_set():
                    log.warning(
                        "Redis backplane not reachable yet (%s): chat answers 503 until it is",
                        self.backplane.last_error or "no answer",
                    )
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self.backplane.deregister()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """For ``/healthz``: whether Redis is reachable, and this node's id."""
        up = self.state.up
        return up, {"backplane": "up" if up else "down", "node": self.backplane.node}

    def backplane_up(self) -> bool | None:
        return self.state.up

    # ----------------------------------------------------- the actor

    def _apply(self, command: Any, now: float) -> None:
        kind = type(command)
        if kind is Results:
            self.counters.commands += 1
            state = self.state
            lost = state.lost
            for op, result in command.items:
                self._guarded(state.on_result, op, result)
            if state.lost != lost:
                log.warning(
                    "%d messages were trimmed from Redis before this process could deliver them",
                    state.lost - lost,
                )
        elif kind is Messages:
            self.counters.commands += 1
            self._guarded(self.state.on_messages, command.items)
        elif kind is Signal:
            self.counters.commands += 1
            self._signal(command)
        else:
            super()._apply(command, now)

    def _signal(self, signal: Signal) -> None:
        state = self.state
        if signal is CONNECTED:
            state.on_connected()
        elif signal is DISCONNECTED:
            if state.up:
                log.warning("Redis backplane unavailable: chat and direct answer 503")
            state.on_disconnected()
        elif signal is TICK:
            state.on_tick()
        elif signal is OVERFLOW:
            state.on_overflow()
        elif signal is LOST:
            state.want_sync = True
            state.on_tick()

    def _guarded(self, fn: Callable[..., list[Any]], *args: Any) -> None:
        try:
            deliveries = fn(*args)
        except Exception:
            log.exception("unexpected error applying backplane news")
            return
        for delivery in deliveries:
            if type(delivery.event) is ErrorEvent:
                self.counters.error(delivery.event.code)
        self._deliver(deliveries)

    def _flush(self) -> None:
        state = self.state
        while True:
            ops = state.take_ops()
            if not ops:
                break
            for op in ops:
                if not self.backplane.submit(op):
                    self._guarded(state.on_result, op, Unavailable("backplane queue full"))
        if state.up and not self.synced.is_set():
            self.synced.set()
            log.info("Redis backplane ready (node %s, epoch %s)", self.backplane.node, state.epoch)
        super()._flush()


def build_backplane_hub(config: Config, **options: Any) -> BackplaneHub:
    """The hub for *config* when ``config.redis_url`` is set (see
    :func:`~trio_chat._store.build_hub`): rooms shared through Redis.

    *options* go to :class:`Backplane` (tests use them).  Raises
    :class:`ConfigError` for a URL that cannot work or when coredis is not
    installed.
    """
    url = config.redis_url
    if not url:
        raise ConfigError("redis_url: the Redis backplane needs a redis:// URL")
    check_redis_url(url)
    options.setdefault(
        "retention",
        Retention(
            per_room=config.history_bytes_per_room,
            total=config.history_bytes_total,
            rooms=config.max_rooms,
            max_age=config.history_max_age,
            conversations=config.max_conversations,
            per_user=config.max_conversations_per_user,
        ),
    )
    backplane = Backplane(url, history_size=config.history_size, **options)
    from ._store import core_settings

    state = ClusterState(
        backplane.node,
        prefix=backplane.prefix,
        max_conversations_per_user=config.max_conversations_per_user,
        **core_settings(config),
    )
    return BackplaneHub(state, backplane)
