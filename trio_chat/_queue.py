"""A bounded frame queue between the hub and one connection's writer.

The hub puts pre-encoded frames in with :meth:`FrameQueue.put_nowait` (never
blocks); the writer takes *everything* waiting in one call
(:meth:`FrameQueue.take_nowait`, or :meth:`FrameQueue.take_all` to wait),
joined into one bytes object for one write.  It replaces a memory channel here
because there are thousands of these: it holds one list and at most one
parked task, a fraction of a channel's memory, and hands over a whole backlog
in one step.  Its ``wake`` hook lets the owner run a writer task only while
there is a backlog.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

__all__ = ["FrameQueue"]


class FrameQueue:
    """FIFO of frame chunks with one consumer task.

    ``frames`` counts the frames put in and not yet confirmed written (see
    :meth:`written`), which is what the owner bounds.
    """

    __slots__ = ("_chunks", "_closed", "_frames_waiting", "_waiter", "frames", "wake")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._frames_waiting = 0
        #: Frames queued or being written.
        self.frames = 0
        self._waiter: trio.lowlevel.Task | None = None
        self._closed = False
        #: Called when data arrives (or the queue closes) and no task is
        #: waiting in :meth:`take_all`: the owner starts a consumer then.
        self.wake: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, data: bytes, frames: int) -> None:
        """Append *data* (holding *frames* whole frames; 0 for a wake-up)."""
        if self._closed:
            raise trio.ClosedResourceError("queue is closed")
        self._chunks.append(data)
        self._frames_waiting += frames
        self.frames += frames
        self._notify()

    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)
        elif self.wake is not None:
            self.wake()

    def close(self, *, drop: bool = False) -> None:
        """No more puts; :meth:`take_all` drains what is left, then ends.

        With *drop*, what is waiting is discarded first (a write already
        taken by the writer is not affected).
        """
        self._closed = True
        if drop:
            self._chunks.clear()
            self.frames -= self._frames_waiting
            self._frames_waiting = 0
        self._notify()

    async def take_all(self) -> tuple[bytes, int]:
        """Wait for data; return all of it joined, and its frame count.

        Raises :class:`trio.EndOfChannel` once closed and empty.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._chunks:
            if self._closed:
                raise trio.EndOfChannel
            if self._waiter is not None:
                raise trio.BusyResourceError("another task is already taking")
            self._waiter = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                self._waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
            if not self._chunks:
                raise trio.EndOfChannel
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        chunks, self._chunks = self._chunks, []
        frames, self._frames_waiting = self._frames_waiting, 0
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), frames

    def take_nowait(self) -> tuple[bytes, int] | None:
        """Everything waiting, joined, and its frame count; None if empty."""
        if not self._chunks:
            return None
        chunks, self._chunks = self._chunks, []
        frames, self._frames_waiting = self._frames_waiting, 0
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), frames

    def written(self, frames: int) -> None:
        """The writer confirms *frames* frames reached the transport."""
        self.frames -= frames
