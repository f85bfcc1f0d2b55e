"""A connection's heartbeat: a ping every ``ping_interval``, and an abort
when its pong is ``pong_timeout`` late.

The heartbeat is the connection nursery's body, not a task of its own
(see :class:`~trio_chat._connection.Connection`).  It is also the read
deadline: a pong cannot be parsed before the frame in front of it is
complete, so a client that stops in the middle of a frame (like one whose
host vanished, or a frozen process) is aborted within ``ping_interval +
pong_timeout`` (``tests/test_faults.py``).  A client pausing *between* the
fragments of a message can still answer pings; it holds at most
``max_message_bytes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["Heartbeat"]


class Heartbeat:
    """The ping schedule of one connection, and the wait between pings.

    Each wait runs in one cancel scope whose deadline times it (one scope,
    not a sleep's own scope nested in a stop scope: there are thousands).
    :meth:`wake` ends the current wait: the connection calls it to stop the
    heartbeat, and the reader (through :meth:`ponged`) when the pong
    arrives -- a reschedule, cheaper than cancelling the scope.
    """

    __slots__ = ("_awaiting_pong", "_pings", "_resting", "_scope", "_woken")

    def __init__(self) -> None:
        #: The current wait (a rest or a ping): its deadline times the
        #: heartbeat; cancelling it ends a ping's write.
        self._scope = trio.CancelScope()
        #: The heartbeat's task while it rests in :meth:`_rest`.
        self._resting: trio.lowlevel.Task | None = None
        #: Woken from its rest and not yet resting again (no scope to cancel).
        self._woken = False
        self._awaiting_pong = False
        self._pings = 0

    def wake(self) -> None:
        """End the heartbeat's current wait: at once if it rests (see
        :meth:`_rest`), else by cancelling its scope (a ping being written)."""
        task = self._resting
        if task is not None:
            self._resting = None
            self._woken = True
            trio.lowlevel.reschedule(task)
        elif not self._woken and not self._scope.cancel_called:
            self._scope.cancel()

    def ponged(self) -> None:
        """The pong has come: end the wait for it, if the heartbeat waits."""
        if self._awaiting_pong:
            self._awaiting_pong = False
            self.wake()

    async def _rest(self) -> None:
        """Wait until :meth:`wake`, or until the scope around ends the wait
        (its deadline)."""

        def abort(_: object) -> trio.lowlevel.Abort:
            self._resting = None
            return trio.lowlevel.Abort.SUCCEEDED

        self._resting = trio.lowlevel.current_task()
        self._woken = False
        await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self, conn: Connection) -> None:
        """Ping *conn* every ``ping_interval`` until it is stopping; abort it
        (its outlet killed) when a pong is ``pong_timeout`` late."""
        interval = conn.config.ping_interval
        timeout = conn.config.pong_timeout
        ws = conn.ws
        while not conn.is_stopping():
            with trio.CancelScope(deadline=trio.current_time() + interval) as scope:
                self._scope = scope
                await self._rest()
            if conn.is_stopping() or not ws.open:
                return
            self._pings += 1
            ws.send_ping(self._pings.to_bytes(4, "big"))
            with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
                self._scope = scope
                if await conn.write_engine():
                    return
                if ws.pong_pending:
                    self._awaiting_pong = True
                    await self._rest()
            self._awaiting_pong = False
            if conn.is_stopping():
                return
            if ws.pong_pending:
                conn.outlet.kill(None, f"no pong within {timeout:g} s")
                return
