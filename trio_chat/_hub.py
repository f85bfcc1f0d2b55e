"""The hub actor: one trio task that owns the hub's state (a
:class:`~trio_chat._room_core.RoomCore`: the memory and SQLite stores'
:class:`~trio_chat._hub_state.HubState`, or the Redis store's
:class:`~trio_chat._backplane_state.ClusterState`).

Connections send it commands over one bounded memory channel.  The hub applies
them to the pure state and delivers the resulting frames without ever awaiting
a connection:

* each server event is encoded once, to JSON and on to WebSocket frame bytes,
  and the same bytes object goes to every recipient; with permessage-deflate
  it is compressed at most once per window size in use
  (:class:`~trio_chat._frames.Encoded`), and recipients without deflate get
  the plain frame;
* the inbox is drained (``receive_nowait``) before the hub's next checkpoint,
  and each recipient's frames from one wake are joined into one write;
* an :class:`Outlet` with nothing queued is written to directly and without
  blocking; otherwise the frames go to its bounded queue with ``send_nowait``,
  for its writer task.  A full queue marks the connection a slow consumer, to
  be closed with 1013, and takes it out of its rooms at once (the others see
  its ``leave`` in the same wake); ephemeral events are dropped instead for a
  queue more than half full.

Outbound bytes are bounded twice, by one :class:`~trio_chat._queue.OutboundBudget`
per server: a connection's queue (waiting, being written, and the tail of a
direct write the kernel did not take) may hold ``queue_bytes``, and all queues
together ``queue_bytes_total``.  Past the first the connection is a slow
consumer; at the second the largest backlogs are dropped as slow consumers
(the one that would overflow it included) rather than the server growing.
The frames of one hub wake waiting for a connection (:attr:`Outlet.pending`)
are pushed early once they pass a quarter of ``queue_bytes``, so they are
bounded by the same budget.

With a durable store (:class:`Store`), each wake's log operations (appends,
trims, refs) are written by a committer task in a worker thread, and that
wake's deliveries wait until they are committed: an ``ack`` is only sent for
a message on disk, and nobody sees an id that a crash could hand out again.
The hub itself never waits: while one batch commits, the next wakes pile up
behind it and are committed together (group commit), in order.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import attrs
import trio

from ._frames import Encoded
from ._hub_state import Delivery, HubStats
from ._log import LogOp
from ._outlet import SLOW_CONSUMER, HubCounters, Outlet
from ._protocol import ChatAck, ClientEvent, DirectAck, ErrorEvent, ProtocolError, is_unicode
from ._room_core import Reply, RoomCore
from ._room_frames import MarkRead

__all__ = ["SLOW_CONSUMER", "Hub", "HubCounters", "Outlet", "Store"]

log = logging.getLogger("trio_chat.hub")


class Store(Protocol):
    """Where a durable hub writes its log operations."""

    def commit(self, ops: Sequence[LogOp]) -> None:
        """Write *ops* in one transaction; blocking (run in a thread)."""

    def close(self) -> None:
        """Release the store (the hub calls it when it stops)."""


def _check_unicode(ref: str | None, **texts: str) -> None:
    """Refuse text that could not be encoded on the way out, before it is
    stored: it would fail every later delivery of the room's history."""
    for name, text in texts.items():
        if not is_unicode(text):
            raise ProtocolError(400, f"{name}: must not contain lone surrogates", ref)


@attrs.frozen
class _Connect:
    outlet: Outlet
    user_id: str
    client: str | None = None


@attrs.frozen
class _Depart:
    outlet: Outlet


@attrs.define
class _Call:
    """A request from trio code (publish, direct): run *fn* and reply."""

    fn: Callable[[Any, float], tuple[Any, list[Delivery]]]
    done: trio.Event = attrs.Factory(trio.Event)
    result: Any = None
    error: BaseException | None = None


class Hub:
    """The hub actor.  Start it with ``await nursery.start(hub.run)``.

    Args:
        state: the pure hub state it owns (``durable`` when there is a store).
        inbox_size: commands that may wait for the hub before senders block.
        store: where the log operations are written; None keeps everything
            in memory only.  The hub closes it when it stops.

    A store that fails to commit (disk full, I/O error) stops the hub with
    that error, and with it the server: nothing it could not store is
    acknowledged.
    """

    def __init__(
        self, state: RoomCore[Any], *, inbox_size: int = 4096, store: Store | None = None
    ) -> None:
        self.state = state
        self.store = store
        self.counters = HubCounters()
        self._inbox_send, self._inbox = trio.open_memory_channel[Any](inbox_size)
        self._departed: list[Outlet] = []
        self._touched: list[Outlet] = []
        #: This wake's ephemeral frames, by id (the dict keeps them alive).
        self._ephemeral: dict[int, bytes] = {}
        #: Called with each client event before it is applied.  Tests set it
        #: to inject faults; an exception it raises is handled like a bug.
        self.fault_hook: Callable[[ClientEvent], None] | None = None
        #: With a store: this wake's deliveries and finished calls, then the
        #: wakes waiting for their commit, oldest first.
        self._batch: list[Delivery] = []
        self._calls: list[_Call] = []
        self._held: deque[tuple[list[LogOp], list[Delivery], list[_Call]]] = deque()
        self._committing = False
        self._work = trio.Event()
        self._emit: Callable[[list[Delivery]], None] = (
            self._deliver if store is None else self._batch.extend
        )
        #: Called in the hub task with every batch of deliveries as it goes
        #: out (after its commit, with a store): the event streams and bots
        #: of ``_events.py``.  None while nobody observes.
        self.observer: Callable[[list[Delivery]], None] | None = None

    # ----------------------------------------------------- connection side

    @property
    def inbox_depth(self) -> int:
        return self._inbox.statistics().current_buffer_used

    async def connect(self, outlet: Outlet, user_id: str, client: str | None = None) -> None:
        """Register a connection of *user_id*; *client* (an IP, or a user)
        is whose room-creation quota it uses."""
        outlet.user_id = user_id
        try:
            # With room in the inbox, no wait (a connection storm queues
            # thousands of these).
            self._inbox_send.send_nowait(_Connect(outlet, user_id, client))
        except trio.WouldBlock:
            await self._inbox_send.send(_Connect(outlet, user_id, client))

    async def submit(self, outlet: Outlet, event: ClientEvent) -> None:
        """Queue a client event from *outlet* (waits if the inbox is full).

        With room in the inbox this does not yield: the reader goes on with
        the frames it already has, and the hub takes them all in one wake.
        (The reader checkpoints on its next socket read anyway.)
        """
        try:
            self._inbox_send.send_nowait((outlet, event))
        except trio.WouldBlock:
            await self._inbox_send.send((outlet, event))

    def depart(self, outlet: Outlet) -> None:
        """Tell the hub a connection is gone.  Never blocks, never fails."""
        if not outlet.closed:
            outlet.closed = True
        try:
            self._inbox_send.send_nowait(_Depart(outlet))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self._departed.append(outlet)

    # ----------------------------------------------------- embedder side

    async def call(self, fn: Callable[[Any, float], tuple[Any, list[Delivery]]]) -> Any:
        """Run *fn(state, now)* inside the hub; deliver and return its result."""
        call = _Call(fn)
        await self._inbox_send.send(call)
        await call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    async def request(self, fn: Callable[[RoomCore[Any], float, Reply], list[Delivery]]) -> Any:
        """Run *fn(state, now, reply)* inside the hub and wait for *reply*
        (an ack: at once in memory, after its commit with SQLite, when Redis
        answered with the Redis store)."""
        done = trio.Event()
        reply = Reply(done.set)
        await self.call(lambda state, now: (None, fn(state, now, reply)))
        await done.wait()
        if reply.error is not None:
            raise reply.error
        return reply.value

    async def publish(
        self,
        room: str,
        content: str,
        *,
        user_id: str,
        ref: str | None = None,
        create: bool = True,
    ) -> ChatAck:
        """Publish into *room* as *user_id*: the same path as a client chat."""
        _check_unicode(ref, room=room, content=content, user_id=user_id)
        ack: ChatAck = await self.request(
            lambda state, now, reply: state.publish(
                user_id, room, content, now, ref=ref, reply_to=reply, create=create
            )
        )
        return ack

    async def direct(
        self, to: str, content: str, *, user_id: str, ref: str | None = None
    ) -> DirectAck:
        """Send a direct message to *to* as *user_id*."""
        _check_unicode(ref, to=to, content=content, user_id=user_id)
        ack: DirectAck = await self.request(
            lambda state, now, reply: state.direct(
                user_id, to, content, now, ref=ref, reply_to=reply
            )
        )
        return ack

    def stats(self) -> HubStats:
        return self.state.stats()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """For ``/healthz``: whether the hub can serve, and details to show
        (the Redis backplane's state; nothing for a local store)."""
        return True, {}

    def backplane_up(self) -> bool | None:
        """Whether the Redis backplane is reachable (None: there is none)."""
        return None

    # ----------------------------------------------------- the actor

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve commands until cancelled (then close the store, if any)."""
        if self.store is None:
            await self._serve(task_status)
            return
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._committer)
                await self._serve(task_status)
        finally:
            self.store.close()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        inbox = self._inbox
        apply = self._apply
        durable = self.store is not None
        task_status.started()
        while True:
            command = await inbox.receive()
            now = time.time()
            apply(command, now)
            while True:
                try:
                    command = inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                apply(command, now)
            if self._departed:
                departed, self._departed = self._departed, []
                for outlet in departed:
                    self._emit(self.state.disconnect(outlet))
            if durable:
                self._end_wake()
            self._flush()

    def _end_wake(self) -> None:
        """Deliver this wake's results now if nothing needs storing and
        nothing is waiting; else queue them behind their commit."""
        ops = self.state.take_ops()
        batch, calls = self._batch[:], self._calls
        self._batch.clear()
        self._calls = []
        if not ops and not self._held and not self._committing:
            self._deliver(batch)
            for call in calls:
                call.done.set()
            return
        self._held.append((ops, batch, calls))
        self._work.set()

    async def _committer(self) -> None:
        """Commit the waiting wakes, all of them in one transaction, then
        release their deliveries in order."""
        store = self.store
        assert store is not None
        limiter = trio.CapacityLimiter(1)
        while True:
            await self._work.wait()
            self._work = trio.Event()
            while self._held:
                held = list(self._held)
                self._held.clear()
                ops = [op for batch in held for op in batch[0]]
                self._committing = True
                try:
                    await trio.to_thread.run_sync(store.commit, ops, limiter=limiter)
                except Exception as exc:
                    # Nothing of these batches is acknowledged: stop serving.
                    log.critical("the store failed, stopping: %s", exc)
                    raise
                finally:
                    self._committing = False
                self.counters.commits += 1
                self.counters.committed_ops += len(ops)
                for _, deliveries, calls in held:
                    self._deliver(deliveries)
                    for call in calls:
                        call.done.set()
                self._flush()

    def _apply(self, command: Any, now: float) -> None:
        self.counters.commands += 1
        if type(command) is tuple:
            outlet, event = command
            # A closing connection's frames are not acted on, but for a read
            # marker that came before its close frame (a page sends the one
            # it held back as it unloads): the user's other connections and
            # next ones still get it.
            if outlet.closed and not (
                type(event) is MarkRead and self.state.has_connection(outlet)
            ):
                return
            try:
                if self.fault_hook is not None:
                    self.fault_hook(event)
                deliveries = self.state.handle(outlet, event, now)
            except ProtocolError as err:
                self.counters.error(err.code)
                deliveries = [Delivery(err.to_event(), (outlet,))]
            except Exception:
                log.exception("unexpected error handling %s from %s", event.type, outlet.user_id)
                self.counters.error(500)
                error = ErrorEvent(500, "internal server error", getattr(event, "ref", None))
                deliveries = [Delivery(error, (outlet,))]
            self._emit(deliveries)
        elif type(command) is _Depart:
            self._emit(self.state.disconnect(command.outlet))
        elif type(command) is _Connect:
            if not command.outlet.closed:
                self.state.connect(command.outlet, command.user_id, command.client)
        else:
            self._run_call(command, now)

    def _run_call(self, call: _Call, now: float) -> None:
        try:
            call.result, deliveries = call.fn(self.state, now)
        except Exception as exc:  # noqa: BLE001 - handed back to the caller, who raises it
            call.error = exc
        else:
            self._emit(deliveries)
        if self.store is None:
            call.done.set()
        else:
            self._calls.append(call)

    def _deliver(self, deliveries: list[Delivery]) -> None:
        if self.observer is not None:
            self.observer(deliveries)
        touched = self._touched
        for delivery in deliveries:
            encoded = Encoded.text(delivery.event.to_json())
            plain = encoded.plain
            to = cast("tuple[Outlet, ...]", delivery.to)
            self.counters.frames_delivered += len(to)
            if delivery.ephemeral:
                ephemeral = self._ephemeral
                for outlet in to:
                    if outlet.busy:
                        self.counters.ephemeral_dropped += 1
                        continue
                    frame = encoded.for_bits(outlet.deflate) if outlet.deflate else plain
                    ephemeral[id(frame)] = frame
                    pending = outlet.pending
                    if not pending:
                        touched.append(outlet)
                    pending.append(frame)
                    outlet.pending_bytes += len(frame)
            else:
                for outlet in to:
                    if outlet.closed:
                        continue
                    frame = encoded.for_bits(outlet.deflate) if outlet.deflate else plain
                    pending = outlet.pending
                    if not pending:
                        touched.append(outlet)
                    pending.append(frame)
                    outlet.pending_bytes += len(frame)
                    if 4 * outlet.pending_bytes > outlet.budget.per_connection:
                        # A batch this large goes out now rather than wait
                        # for the end of the wake (frames like ``joined``
                        # are one per recipient, not shared).
                        self._flush_outlet(outlet)

    def _flush(self) -> None:
        dropped = self.counters.dropped
        while True:
            for outlet in self._touched:
                self._flush_outlet(outlet)
            self._touched.clear()
            self._ephemeral.clear()
            if not dropped:
                return
            # Slow consumers leave their rooms now, not when their
            # connections end: the others see the leave in this same wake.
            gone = dropped[:]
            dropped.clear()
            for outlet in gone:
                self._deliver(self.state.disconnect(outlet))

    def _flush_outlet(self, outlet: Outlet) -> None:
        frames = outlet.pending
        if not frames:
            return
        outlet.pending = []
        outlet.pending_bytes = 0
        ephemeral = self._ephemeral
        if ephemeral:
            queue = outlet.queue
            size = sum(len(f) for f in frames) if len(frames) > 1 else len(frames[0])
            if (
                queue.frames + len(frames) > outlet.limit
                or queue.bytes + size > outlet.budget.per_connection
            ):
                # Ephemeral frames are never what overflows a queue: drop
                # them from a batch that would, then see if the rest fits.
                kept = [f for f in frames if id(f) not in ephemeral]
                self.counters.ephemeral_dropped += len(frames) - len(kept)
                frames = kept
                if not frames:
                    return
        if len(frames) == 1:
            outlet.push(frames[0])
        else:
            outlet.push(b"".join(frames), len(frames))
