"""The hub's handle on one connection (:class:`Outlet`) and its counters.

An :class:`Outlet` is where the hub actor (:mod:`trio_chat._hub`) puts a
connection's frames without ever waiting: written straight to the socket
when nothing is queued, else into its bounded queue for the connection's
writer task; past ``queue_size`` frames or ``queue_bytes`` bytes (or the
server-wide ``queue_bytes_total``) the connection is a slow consumer, closed
with 1013.  :class:`HubCounters` are the running totals ``/metrics`` reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio

from ._queue import FrameQueue, OutboundBudget
from ._stream import WireStream

__all__ = ["SLOW_CONSUMER", "HubCounters", "Outlet"]

#: Close code for a connection whose outbound queue overflowed.
SLOW_CONSUMER = 1013


@attrs.define
class HubCounters:
    """Running totals, read by the metrics endpoint (plain ints: cheap)."""

    commands: int = 0
    frames_received: int = 0
    frames_delivered: int = 0
    ephemeral_dropped: int = 0
    slow_consumers: int = 0
    #: Slow consumers by the bound they hit: ``frames`` (``queue_size``),
    #: ``bytes`` (``queue_bytes``), ``server`` (``queue_bytes_total``).
    slow_consumer_reasons: dict[str, int] = attrs.Factory(dict)
    #: Store transactions committed and the log operations they held.
    commits: int = 0
    committed_ops: int = 0
    errors: dict[int, int] = attrs.Factory(dict)
    #: The outbound byte budget every outlet made with these counters shares.
    outbound: OutboundBudget = attrs.Factory(OutboundBudget)
    #: Slow consumers marked since the hub last looked: it takes them out of
    #: their rooms before the end of its wake.
    dropped: list[Any] = attrs.Factory(list)

    def error(self, code: int) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def slow_consumer(self, reason: str) -> None:
        self.slow_consumers += 1
        self.slow_consumer_reasons[reason] = self.slow_consumer_reasons.get(reason, 0) + 1


class Outlet:
    """The hub's handle on one connection: where its frames go.

    ``queue`` holds the frames waiting for the writer (its ``frames`` count,
    frames queued or being written, is what ``limit`` bounds; its ``bytes``
    what ``counters.outbound`` bounds); ``pending`` collects the frames of
    the hub's current batch (``pending_bytes`` long).
    ``kill(code, reason)`` marks the connection closed and asks its owner to
    close it (``code`` None: abort without a close frame).
    """

    __slots__ = (
        "_on_kill",
        "budget",
        "close_code",
        "close_reason",
        "closed",
        "counters",
        "deflate",
        "half",
        "limit",
        "pending",
        "pending_bytes",
        "queue",
        "stream",
        "user_id",
    )

    def __init__(
        self,
        stream: WireStream,
        queue_size: int,
        on_kill: Callable[[], None],
        counters: HubCounters,
        user_id: str = "",
    ) -> None:
        self.stream = stream
        self.limit = queue_size
        self.half = queue_size // 2
        self.budget = counters.outbound
        self.queue = FrameQueue(self.budget, self)
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.user_id = user_id
        self._on_kill = on_kill
        self.counters = counters
        #: The permessage-deflate window agreed with this client (0: none):
        #: which variant of each frame it gets.
        self.deflate = 0

    def __repr__(self) -> str:
        return (
            f"<Outlet {self.user_id} queued={self.queue.frames}/{self.queue.bytes}B"
            f" closed={self.closed}>"
        )

    @property
    def queued(self) -> int:
        """Frames queued for, or being written by, the writer."""
        return self.queue.frames

    @property
    def busy(self) -> bool:
        """More than half of a budget is used: ephemeral events are skipped."""
        return (
            self.queue.frames + len(self.pending) > self.half
            or 2 * (self.queue.bytes + self.pending_bytes) > self.budget.per_connection
        )

    def push(self, data: bytes, frames: int = 1) -> bool:
        """Deliver *data* (*frames* whole frames) without blocking.

        Writes straight to the socket when nothing is queued or in flight;
        otherwise queues.  Returns False if the connection is closed or has
        just been marked a slow consumer.
        """
        if self.closed:
            return False
        queue = self.queue
        if not queue.frames:
            stream = self.stream
            if not stream.writable:
                # Closing (a close frame is out) or broken: whoever ends the
                # connection records why; this frame just has nowhere to go.
                return False
            budget = self.budget
            if budget.held + len(data) > budget.total and not self.reserve(len(data)):
                return False  # what the kernel does not take could not be held
            try:
                if stream.write_nowait(data):
                    if stream.has_tail:
                        # What the kernel did not take stays in memory: it
                        # counts (as all of *data*, an upper bound) until
                        # the writer has written it.
                        queue.put_nowait(b"", 0, len(data))
                    return True
            except trio.BrokenResourceError:
                self.kill(None, "write failed")
                return False
        if queue.frames + frames > self.limit:
            self.overflow("frames", "slow consumer: outbound queue overflowed")
            return False
        if not self.reserve(len(data)):
            return False
        queue.put_nowait(data, frames)
        return True

    def reserve(self, n: int) -> bool:
        """Whether *n* more bytes may be queued; if not, this is a slow consumer.

        At the server-wide bound, the largest backlogs are dropped first
        until *n* fits; if this connection's is (or nothing else frees
        enough), it is the one dropped.
        """
        budget = self.budget
        if self.queue.bytes + n > budget.per_connection:
            self.overflow("bytes", f"slow consumer: more than {budget.per_connection} bytes queued")
            return False
        need = budget.held + n - budget.total
        if need > 0:
            mine = self.queue.bytes + n
            for queue in budget.largest():
                outlet = queue.owner
                if outlet is self or not isinstance(outlet, Outlet):
                    continue
                if queue.bytes < mine:
                    break  # this connection's backlog would be the largest left
                need -= queue.bytes
                outlet.shed()
                if need <= 0:
                    break
            if need > 0:
                self.shed()
                return False
        return True

    def shed(self) -> None:
        """Drop this slow consumer for the server-wide budget.

        With a write in flight (stuck: the client does not read), the
        connection is aborted, so that the memory goes at once (its writer
        is cancelled: its bytes stop counting now); otherwise it takes the
        slow-consumer path (1013).
        """
        if self.closed:
            return
        message = "slow consumer: server outbound budget reached"
        if self.queue.in_flight:
            self.counters.slow_consumer("server")
            self.counters.dropped.append(self)
            self.queue.close(drop=True)
            self.kill(None, message)
            self.release()
        else:
            self.overflow("server", message)

    def overflow(self, reason: str, message: str) -> None:
        """Mark a slow consumer: drop what is queued, close with 1013."""
        if self.closed:
            return
        self.counters.slow_consumer(reason)
        self.counters.dropped.append(self)
        self.pending = []
        self.pending_bytes = 0
        self.finish(SLOW_CONSUMER, message, drop=True)

    def release(self) -> None:
        """The connection is over: its queue's bytes no longer count."""
        self.pending = []
        self.pending_bytes = 0
        self.queue.release()

    def kill(self, code: int | None, reason: str) -> None:
        """Mark the connection closed (once) and ask its owner to close it."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self.close_reason = reason
        self._on_kill()

    def finish(self, code: int, reason: str, *, drop: bool = False) -> None:
        """Stop taking frames, but let the writer flush what is queued.

        With *drop* (a slow consumer), what is queued is discarded; only a
        write already in flight is finished (within the write timeout), so
        that the close frame can follow it rather than cut a frame in half.
        """
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self.close_reason = reason
        self.queue.close(drop=drop)
