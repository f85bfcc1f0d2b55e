"""The heartbeat: a ping every ``ping_interval`` to each connection, and an
abort when its pong is ``pong_timeout`` late.

One :class:`Heartbeats` task per server keeps the schedule of every
connection, not a task or a cancel scope per connection: a connection that
lives a millisecond costs one entry added and one removed.  The heartbeat is
also the read deadline: a pong cannot be parsed before the frame in front of
it is complete, so a client that stops in the middle of a frame (like one
whose host vanished, or a frozen process) is aborted within ``ping_interval +
pong_timeout`` (``tests/test_faults.py``).  A client pausing *between* the
fragments of a message can still answer pings; it holds at most
``max_message_bytes``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Protocol

import trio

__all__ = ["Heartbeats", "Pinged"]


class Pinged(Protocol):
    """What the heartbeat needs of a connection."""

    def ping(self) -> bool:
        """Send the heartbeat's ping now (or have it written); False when the
        connection is ending (no more pings)."""

    def pong_late(self) -> None:
        """The pong has not come within the timeout (if the ping's pong is
        still pending: abort the connection)."""


class Heartbeats:
    """The ping schedule of every connection of one server, and its task.

    A connection is added when it starts (its first ping is due
    ``interval`` seconds later) and discarded when it ends.  After each
    ping it waits for its pong for at most ``timeout`` seconds; the next
    ping is due ``interval`` seconds after the pong arrived
    (:meth:`ponged`).  All connections share the interval and the timeout,
    so each schedule is in the order its entries were added: the next due
    is always the first entry of one of the two.
    """

    __slots__ = ("_resting", "_scope", "_waiting", "interval", "timeout")

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        #: connection -> when its next ping is due (trio time), oldest first
        self._resting: OrderedDict[Pinged, float] = OrderedDict()
        #: connection -> when its pong is late, oldest first
        self._waiting: OrderedDict[Pinged, float] = OrderedDict()
        #: The task's current wait; its deadline is the next due.
        self._scope: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._resting) + len(self._waiting)

    def add(self, conn: Pinged) -> None:
        """Schedule *conn*'s first ping, ``interval`` seconds from now."""
        self._rest(conn, trio.current_time() + self.interval)

    def discard(self, conn: Pinged) -> None:
        """*conn* is ending: no more pings, no pong deadline."""
        self._resting.pop(conn, None)
        self._waiting.pop(conn, None)

    def ponged(self, conn: Pinged) -> None:
        """*conn*'s pong has come: its next ping is due ``interval`` from now."""
        if self._waiting.pop(conn, None) is not None:
            self._rest(conn, trio.current_time() + self.interval)

    def _rest(self, conn: Pinged, due: float) -> None:
        self._resting[conn] = due
        self._wake_by(due)

    def _wake_by(self, due: float) -> None:
        scope = self._scope
        if scope is not None and due < scope.deadline:
            scope.deadline = due

    async def run(self) -> None:
        """Ping each connection when due, tell it when its pong is late;
        until cancelled."""
        resting, waiting = self._resting, self._waiting
        while True:
            now = trio.current_time()
            while resting:
                conn, due = next(iter(resting.items()))
                if due > now:
                    break
                del resting[conn]
                if conn.ping():
                    late = now + self.timeout
                    waiting[conn] = late
            while waiting:
                conn, due = next(iter(waiting.items()))
                if due > now:
                    break
                del waiting[conn]
                conn.pong_late()
            due = math.inf
            if resting:
                due = next(iter(resting.values()))
            if waiting:
                due = min(due, next(iter(waiting.values())))
            with trio.CancelScope(deadline=due) as self._scope:
                await trio.sleep_forever()
            self._scope = None
