"""One accepted WebSocket: a reader, a writer (when needed) and a heartbeat.

* The **reader** (:meth:`Connection.read`) reads the socket, feeds the bytes
  to the connection's :class:`~trio_chat._ws.WebSocket` (the frame engine)
  and calls the endpoint's handler with each complete message, in the same
  task (chat: parse, rate-limit, pass to the hub; echo: send it back).  It
  also writes what the engine answers by itself -- pongs, the close reply, a
  close frame for a protocol error -- and it alone decides that the closing
  handshake is over.
* The **writer** is the only task that writes queued data frames: it takes
  everything waiting in the connection's bounded queue and writes it in one
  go, within ``write_timeout``, else the connection is aborted.  It runs only
  while there is a backlog: a client that keeps up is written to directly by
  the hub (see :class:`~trio_chat._hub.Outlet`), and an idle connection holds
  no writer task.
* The **heartbeat** (the connection nursery's body, not a task of its own)
  pings every ``ping_interval`` and aborts the connection when no pong comes
  within ``pong_timeout``.  It is also the read deadline: a pong
  cannot be parsed before the frame in front of it is complete, so a client
  that stops in the middle of a frame (like one whose host vanished, or a
  frozen process) is aborted within ``ping_interval + pong_timeout``
  (``tests/test_faults.py``).  A client pausing *between* the fragments of a
  message can still answer pings; it holds at most ``max_message_bytes``.

When the reader or the heartbeat ends, or the writer fails, the others are
stopped, the hub is told, and the WebSocket is closed (or aborted) under a
deadline.  (A writer that has written its backlog just ends.)  A slow
consumer (its queue overflowed) gets ``slow_consumer_grace`` seconds for the
write in flight and its 1013 close frame, else it is aborted.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ._frames import Encoded, text_frame
from ._http import linger
from ._hub import SLOW_CONSUMER, Hub, HubCounters, Outlet
from ._message_frames import MessageFrame
from ._policy import Pending, Sender
from ._protocol import (
    Chat,
    Command,
    Direct,
    Join,
    ListConversations,
    Presence,
    ProtocolError,
    Welcome,
    parse_client_frame,
)
from ._ratelimit import RateLimiter
from ._stream import WireStream
from ._ws import WebSocket

if TYPE_CHECKING:
    from ._auth import Identity
    from ._commands import Commands
    from ._config import Config
    from ._deflate import DeflateParams
    from ._metrics import Metrics
    from ._policy import Screen

__all__ = ["ChatHandler", "Connection", "EchoHandler"]

log = logging.getLogger("trio_chat.connection")

#: Invalid frames among the last INVALID_WINDOW frames that close a
#: connection with 1008 (a ratio, so that a valid frame now and then does not
#: reset the count).
MAX_INVALID = 20
INVALID_WINDOW = 64
_WINDOW_MASK = (1 << INVALID_WINDOW) - 1
#: Rate-limit errors in one window after which a connection is closed (1008).
MAX_RATE_STRIKES = 3
#: Seconds allowed for the closing handshake.
CLOSE_TIMEOUT = 2.0
#: Bytes asked of the socket per read.
RECEIVE_SIZE = 65536
#: Bytes read and thrown away, at most, after the server closed a connection
#: that was still sending (see :meth:`Connection._linger`).
LINGER_BYTES = 1 << 20

_RATED = (Chat, Direct, Presence, Command, MessageFrame, ListConversations)
#: Frames about direct conversations besides those naming one (``with``).
_CONVERSING = (Direct, ListConversations)
#: join/leave/typing frames a window allows: this many times the rated
#: frames, and at least CONTROL_RATE_FLOOR.  Pings get the same allowance.
CONTROL_RATE_FACTOR = 4
CONTROL_RATE_FLOOR = 100

Handler = Callable[[str | bytes], Awaitable[None]]


#: Random bytes per session id (12 characters of URL-safe base64), and how
#: many ids' worth are drawn from the OS at once.
SESSION_ID_BYTES = 9
_SESSION_IDS_PER_DRAW = 256
_session_pool = bytearray()


def _session_id() -> str:
    """A new session id: as ``secrets.token_urlsafe(9)``, from a pool of the
    same OS randomness drawn for many ids at once (one system call less per
    connection).  A forked child starts with an empty pool."""
    if not _session_pool:
        _session_pool.extend(secrets.token_bytes(SESSION_ID_BYTES * _SESSION_IDS_PER_DRAW))
    raw = bytes(_session_pool[-SESSION_ID_BYTES:])
    del _session_pool[-SESSION_ID_BYTES:]
    return base64.urlsafe_b64encode(raw).decode("ascii")


os.register_at_fork(after_in_child=_session_pool.clear)


def control_rate(config: Config) -> int:
    """join/leave/typing frames, and pings, allowed per ``rate_seconds``."""
    return max(config.rate_messages * CONTROL_RATE_FACTOR, CONTROL_RATE_FLOOR)


class Connection:
    """An accepted WebSocket and the tasks that serve it.

    One nursery per connection holds the reader (started by :meth:`run`),
    the heartbeat (:meth:`run` itself, in the nursery's body) and, while
    frames are queued, the writer (started when the queue wakes its owner).
    When the connection ends, they all stop and the WebSocket is closed
    under a deadline.

    Args:
        stream: the transport, wrapped for serialized writes.
        deflate: the agreed permessage-deflate parameters, if any.
        prefix: bytes the HTTP front read after the request head (the
            client's first frames, if it did not wait for the 101).
    """

    __slots__ = (
        "_awaiting_pong",
        "_finished",
        "_grace",
        "_handler",
        "_handling",
        "_heartbeat_scope",
        "_nursery",
        "_pings",
        "_prefix",
        "_reader_exit",
        "_reader_running",
        "_resting",
        "_running",
        "_stopping",
        "_woken",
        "_writer_exit",
        "_writer_scope",
        "config",
        "counters",
        "deflate_bits",
        "handshake_scope",
        "outlet",
        "peer",
        "session_id",
        "started",
        "stream",
        "user_id",
        "ws",
    )

    def __init__(
        self,
        stream: WireStream,
        config: Config,
        counters: HubCounters,
        *,
        user_id: str = "",
        peer: str = "",
        deflate: DeflateParams | None = None,
        prefix: bytes = b"",
    ) -> None:
        self.stream = stream
        self.config = config
        self.counters = counters
        self.user_id = user_id
        self.peer = peer
        self.ws = WebSocket(
            max_message_bytes=config.max_message_bytes,
            deflate=deflate is not None,
            max_pings=control_rate(config),
            ping_seconds=config.rate_seconds,
            now=trio.current_time,
        )
        #: The window the hub compresses this client's frames with (0: none).
        self.deflate_bits = 0 if deflate is None else deflate.server_bits
        self._prefix = prefix
        self.session_id = _session_id()
        self.started = time.monotonic()
        self._handler: Handler | None = None
        self._handling = False
        self._running = False
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        #: The heartbeat's current wait (a rest or a ping): its deadline
        #: times the heartbeat; cancelling it ends a ping's write.
        self._heartbeat_scope = trio.CancelScope()
        #: The heartbeat's task while it rests in :meth:`_rest`.
        self._resting: trio.lowlevel.Task | None = None
        #: Woken from its rest and not yet resting again (no scope to cancel).
        self._woken = False
        self._awaiting_pong = False
        self._pings = 0
        #: Set while a writer task runs (there is a backlog).
        self._writer_scope: trio.CancelScope | None = None
        self._writer_exit: trio.Event | None = None
        self._reader_running = False
        self._reader_exit: trio.Event | None = None
        #: The engine is done (closing handshake over, or failed): close the
        #: transport, read no more.
        self._finished = False
        #: When a slow consumer's grace ends (trio time), once it is one.
        self._grace: float | None = None
        #: Cancelled if the connection dies during the opening handshake.
        self.handshake_scope: trio.CancelScope | None = None
        self.outlet = Outlet(stream, config.queue_size, self._on_kill, counters, user_id)
        self.outlet.deflate = self.deflate_bits

    # ------------------------------------------------------------ control

    def is_stopping(self) -> bool:
        """The connection is ending: the heartbeat and writer stop.

        (A method: it changes while the heartbeat awaits.)"""
        return self._stopping

    def _on_kill(self) -> None:
        if self._running:
            self._stopping = True
            self._handling = False
            # (cancel() costs even when repeated: it describes the caller
            # first; a connection's end calls this several times.)
            writer = self._writer_scope
            if writer is not None and not writer.cancel_called:
                writer.cancel()
            self._wake_heartbeat()
        elif self.handshake_scope is not None:
            self.handshake_scope.cancel()

    def _wake_heartbeat(self) -> None:
        """End the heartbeat's current wait: at once if it rests (see
        :meth:`_rest`), else by cancelling its scope (a ping being written)."""
        task = self._resting
        if task is not None:
            self._resting = None
            self._woken = True
            trio.lowlevel.reschedule(task)
        elif not self._woken and not self._heartbeat_scope.cancel_called:
            self._heartbeat_scope.cancel()

    async def _rest(self) -> None:
        """Wait until :meth:`_wake_heartbeat`, or until the scope around
        ends the wait (its deadline)."""

        def abort(_: object) -> trio.lowlevel.Abort:
            self._resting = None
            return trio.lowlevel.Abort.SUCCEEDED

        self._resting = trio.lowlevel.current_task()
        self._woken = False
        await trio.lowlevel.wait_task_rescheduled(abort)

    def close(self, code: int | None, reason: str) -> None:
        """Close now, dropping what is queued (None: abort, no close frame)."""
        self._handling = False
        self.outlet.kill(code, reason)

    def drain(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop handling messages, flush what is queued, then close with *code*."""
        self._handling = False
        self.outlet.finish(code, reason)
        if not self._running:
            self._on_kill()

    def send(self, frame: bytes) -> None:
        """Queue one pre-encoded frame for this connection."""
        self.outlet.push(frame)

    def send_message(self, message: str | bytes) -> None:
        """Queue one message, compressed if this client agreed to deflate."""
        if isinstance(message, str):
            encoded = Encoded(message.encode("utf-8"))
        else:
            encoded = Encoded(message, binary=True)
        self.outlet.push(encoded.for_bits(self.deflate_bits))

    def send_error(self, err: ProtocolError) -> None:
        self.outlet.push(text_frame(err.to_event().to_json()))

    def start_task(self, fn: Callable[..., Awaitable[None]], *args: object) -> bool:
        """Run *fn(*args)* in the connection's nursery, so that it ends with
        the connection; False (not started) once the connection is ending."""
        if self._nursery is None or self._stopping:
            return False
        self._nursery.start_soon(fn, *args)
        return True

    # ------------------------------------------------------------ reading

    async def read(self) -> None:
        """The reader task: every byte from the client, until the end.

        Messages go to the handler in this task (no hand-off); whatever the
        engine answers by itself is written here too.  When it ends the
        connection is over: the outlet learns why.
        """
        ws = self.ws
        receive = self.stream.receive_some
        data: bytes | bytearray = self._prefix
        self._prefix = b""
        self._reader_running = True
        try:
            if not data:
                data = await receive(RECEIVE_SIZE)
            while True:
                messages = ws.receive(data)
                if ws.wants_write and ws.open:
                    # Pongs first: their pings came before the end of the
                    # messages (a ping between the fragments of a message).
                    await self._write_engine()
                for message in messages:
                    if self._handling:
                        await self._handle(message)
                if ws.ponged and self._awaiting_pong:
                    self._awaiting_pong = False
                    self._wake_heartbeat()
                if ws.wants_write or not ws.open:
                    await self._write_engine()
                if self._finished:
                    return
                data = await receive(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.outlet.kill(None, "connection lost")
        finally:
            self._reader_running = False
            if self._reader_exit is not None:
                self._reader_exit.set()
            # However it ended, the connection is over.
            if not self.outlet.closed:
                self.outlet.kill(None, "connection lost")
            self._on_kill()

    async def _handle(self, message: str | bytes) -> None:
        self.counters.frames_received += 1
        assert self._handler is not None
        try:
            await self._handler(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise
        except Exception:
            # Handlers answer their own faults (error 500); this is the last
            # line that keeps one connection's bug from reaching the server.
            log.exception("unexpected error handling a message")

    async def _write_engine(self) -> bool:
        """Write the engine's own frames; True once the transport must close.

        When the engine has left the OPEN state (the client's close frame,
        a protocol error, a budget, EOF) the outlet is closed first, with
        what the engine sent or received, so that no data frame follows.
        """
        ws = self.ws
        writes = ws.data_to_send()
        if not ws.open and not self.outlet.closed:
            self._handling = False
            first = ws.first_close
            if first is None:
                self.outlet.kill(None, "connection lost")
            else:
                reason = first.reason or ("closed by client" if first.by_client else "closed")
                # Drop what is queued, but let a write in flight finish so
                # that the close frame follows whole frames.
                self.outlet.finish(first.code, reason, drop=True)
        stream = self.stream
        timeout = self.config.write_timeout
        for data in writes:
            if not data:
                self._finished = True  # the closing handshake is over
                break
            try:
                await stream.send_all(data, limit=timeout)
            except trio.TooSlowError:
                self.outlet.kill(None, f"write not finished within {timeout:g} s")
                self._finished = True
                break
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.outlet.kill(None, "connection lost while writing")
                self._finished = True
                break
        return self._finished

    # ------------------------------------------------------------ running

    async def run(self, handler: Handler, nursery: trio.Nursery) -> None:
        """Serve the connection until it ends, then close it under a deadline.

        Call it in the body of the connection's *nursery*: it starts the
        reader, which hands messages to *handler*, and runs the heartbeat
        itself, so the nursery's body is the heartbeat task; the writer task
        is started in *nursery* whenever frames are waiting.
        """
        self._handler = handler
        self._handling = not self.outlet.closed
        self._nursery = nursery
        self._running = True
        queue = self.outlet.queue
        queue.wake = self._queue_woke
        nursery.start_soon(self.read)
        if self.outlet.closed:  # killed or drained before we started
            self._on_kill()
        elif len(queue):
            self._start_writer()
        try:
            try:
                await self._heartbeat()
            except Exception:
                log.exception("unexpected error in the heartbeat of %s", self.user_id)
                self.outlet.kill(1011, "internal error")
            # However it ended (killed, finished, no pong), the writer stops
            # too; once it has, close.
            self._on_kill()
            if self._writer_scope is not None:
                self._writer_exit = trio.Event()
                await self._writer_exit.wait()
        finally:
            self._running = False
            self._nursery = None
            self._handling = False
            queue.wake = None
            await self._close()

    def _queue_woke(self) -> None:
        """Frames are waiting (or the queue closed): make sure a writer runs.

        A slow consumer's queue closes with what it held dropped: from then
        on the write in flight and the 1013 close frame have
        ``slow_consumer_grace`` seconds in all.
        """
        outlet = self.outlet
        if outlet.closed and outlet.close_code == SLOW_CONSUMER and self._grace is None:
            self._grace = trio.current_time() + self.config.slow_consumer_grace
            if self._writer_scope is not None:
                self._writer_scope.deadline = min(self._writer_scope.deadline, self._grace)
        if (
            outlet.queue.closed
            and self._writer_scope is None
            and not len(outlet.queue)
            and not self.stream.has_tail
        ):
            # Closed with nothing left to write (the usual end): no writer
            # task to start just to find that out.
            if self._nursery is not None:
                self._on_kill()
            return
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer_scope is None and self._nursery is not None:
            self._writer_scope = trio.CancelScope(deadline=self._grace or math.inf)
            self._nursery.start_soon(self._writer_task)

    async def _writer_task(self) -> None:
        idle = False
        try:
            assert self._writer_scope is not None
            with self._writer_scope:
                idle = await self._writer()
        except Exception:
            log.exception("unexpected error in the writer of %s", self.user_id)
            self.outlet.kill(1011, "internal error")
        finally:
            self._writer_scope = None
            if self._writer_exit is not None:
                self._writer_exit.set()
            if not idle:
                # Drained, failed or cancelled: the connection is over.
                self._on_kill()

    async def _writer(self) -> bool:
        """Write everything waiting, in one write per wake, until none is left.

        Runs only while there is a backlog.  Returns True when the backlog
        is written and the connection goes on; False when the connection is
        over: the queue was closed (a drain, or a slow consumer) and is now
        empty, or a write failed or took longer than ``write_timeout``.
        """
        queue = self.outlet.queue
        stream = self.stream
        outlet = self.outlet
        timeout = self.config.write_timeout
        while True:
            batch = queue.take_nowait()
            if batch is None:
                return not queue.closed
            data, frames = batch
            try:
                with trio.fail_after(timeout):
                    await stream.send_frames(data)
            except trio.TooSlowError:
                outlet.kill(None, f"write not finished within {timeout:g} s")
                return False
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                outlet.kill(None, "connection lost while writing")
                return False
            queue.written(frames)

    async def _heartbeat(self) -> None:
        """Ping every ``ping_interval``; abort when a pong is ``pong_timeout`` late.

        Each wait runs in one cancel scope whose deadline times it (one
        scope, not a sleep's own scope nested in a stop scope: there are
        thousands); :meth:`_on_kill` wakes the heartbeat to stop it, and the
        reader wakes it when the pong arrives (:meth:`_wake_heartbeat`: a
        reschedule, cheaper than cancelling the scope).
        """
        interval = self.config.ping_interval
        timeout = self.config.pong_timeout
        ws = self.ws
        while not self.is_stopping():
            with trio.CancelScope(deadline=trio.current_time() + interval) as scope:
                self._heartbeat_scope = scope
                await self._rest()
            if self.is_stopping() or not ws.open:
                return
            self._pings += 1
            ws.send_ping(self._pings.to_bytes(4, "big"))
            with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
                self._heartbeat_scope = scope
                if await self._write_engine():
                    return
                if ws.pong_pending:
                    self._awaiting_pong = True
                    await self._rest()
            self._awaiting_pong = False
            if self.is_stopping():
                return
            if ws.pong_pending:
                self.outlet.kill(None, f"no pong within {timeout:g} s")
                return

    async def _close(self) -> None:
        """Close the WebSocket as the outlet's fate says, under a deadline.

        A close frame goes out only if the connection can still take whole
        frames; then the reader is given the rest of the deadline to see the
        client's close reply.  Otherwise (an abort, a broken stream) the
        transport is just closed.
        """
        outlet = self.outlet
        ws = self.ws
        if not outlet.closed:
            outlet.closed = True
            outlet.close_code = 1011
            outlet.close_reason = "internal error"
        code = outlet.close_code
        deadline = trio.current_time() + CLOSE_TIMEOUT
        if self._grace is not None:
            deadline = min(deadline, self._grace)
        send = code is not None and ws.open and self.stream.writable
        if send or (code is not None and self._reader_running) or self._must_linger():
            # (Usually the closing handshake is already over: nothing to wait for.)
            with trio.CancelScope(deadline=deadline):
                if send:
                    assert code is not None
                    reason = outlet.close_reason.encode("utf-8")[:120].decode("utf-8", "ignore")
                    ws.send_close(code, reason)
                    await self._write_engine()
                if code is not None and self._reader_running and not self._finished:
                    self._reader_exit = trio.Event()
                    await self._reader_exit.wait()
                if self._must_linger():
                    await self._linger()
        await self.stream.aclose()

    def _must_linger(self) -> bool:
        """Whether the client may still be sending when its reader stopped.

        That is the case when the server ended the closing handshake on its
        own (a protocol error, a budget, a flood): the client's close frame
        never came, and the reader no longer reads.
        """
        ws = self.ws
        sent = ws.close_sent()
        return (
            sent is not None
            and not self._reader_running
            and not self.stream.broken
            and not any(close.by_client for close in ws.closes)
        )

    async def _linger(self) -> None:
        """Half-close, then read and discard until the client's EOF.

        The client's bytes left unread would make the kernel answer the
        close with a reset, which can destroy the close frame in the
        client's own buffer before the client reads it: the client would
        see a lost connection instead of the close code.  At most
        :data:`LINGER_BYTES`, within the rest of the close deadline.
        """
        await linger(self.stream.transport, LINGER_BYTES)


def welcome_frame(session_id: str, user_id: str, config: Config) -> bytes:
    head, middle, tail = _welcome_template(
        config.max_message_bytes,
        config.max_content_chars,
        config.rate_messages,
        config.rate_seconds,
        config.ping_interval,
        reactions=config.reactions,
    )
    return text_frame(head + _json_string(session_id) + middle + _json_string(user_id) + tail)


#: A JSON string literal, exactly as the protocol's compact JSON writes it.
_json_string = json.encoder.encode_basestring
_SESSION_MARK = "\x00session"
_USER_MARK = "\x00user"


@functools.lru_cache(maxsize=8)
def _welcome_template(
    max_message_bytes: int,
    max_content_chars: int,
    rate_messages: int,
    rate_seconds: float,
    ping_interval: float,
    *,
    reactions: tuple[str, ...],
) -> tuple[str, str, str]:
    """The ``welcome`` frame's text around its two strings: the same for
    every connection of a server but those (encoded once, not per connection)."""
    limits = {
        "max_message_bytes": max_message_bytes,
        "max_content_chars": max_content_chars,
        "rate": {"messages": rate_messages, "per_seconds": rate_seconds},
        "ping_interval_seconds": ping_interval,
        "reactions": list(reactions),
    }
    text = Welcome(_SESSION_MARK, _USER_MARK, limits).to_json()
    head, _, rest = text.partition(_json_string(_SESSION_MARK))
    middle, _, tail = rest.partition(_json_string(_USER_MARK))
    return head, middle, tail


class ChatHandler:
    """The chat endpoint's reader logic for one connection."""

    def __init__(
        self,
        conn: Connection,
        hub: Hub,
        identity: Identity,
        metrics: Metrics | None = None,
        *,
        screen: Screen | None = None,
        commands: Commands | None = None,
    ) -> None:
        self.conn = conn
        self.hub = hub
        self.identity = identity
        self.metrics = metrics
        #: Mutes and the embedder's policy (``_policy.py``), when any.
        self.screen = screen
        self._sender: Sender | None = None
        #: The embedder's commands (``_commands.py``), and this connection's
        #: calls of them still running.
        self.commands = commands
        self.commands_running = 0
        config = conn.config
        self.max_bytes = config.max_message_bytes
        self.max_chars = config.max_content_chars
        self.limiter = RateLimiter(config.rate_messages, config.rate_seconds)
        #: join, leave and typing are outside the protocol's rate, but each
        #: can make the server write to a whole room: a much wider window
        #: keeps a flood of them from amplifying without bound.
        self.control_limiter = RateLimiter(control_rate(config), config.rate_seconds)
        #: One bit per recent frame, 1 for invalid (the last INVALID_WINDOW).
        self.recent_invalid = 0

    async def __call__(self, message: str | bytes) -> None:
        conn = self.conn
        try:
            if isinstance(message, bytes):
                raise ProtocolError(400, "binary frames are not accepted; send JSON text")
            if len(message) * 4 > self.max_bytes and len(message.encode()) > self.max_bytes:
                conn.close(1009, f"frame larger than {self.max_bytes} bytes")
                return
            event = parse_client_frame(message, max_content_chars=self.max_chars)
        except ProtocolError as err:
            self._refuse(err)
            recent = self.recent_invalid = ((self.recent_invalid << 1) | 1) & _WINDOW_MASK
            if recent.bit_count() >= MAX_INVALID:
                conn.close(1008, f"{MAX_INVALID} invalid frames among the last {INVALID_WINDOW}")
            return
        except Exception:
            log.exception("unexpected error reading a frame from %s", conn.user_id)
            self._refuse(ProtocolError(500, "internal server error"))
            return
        self.recent_invalid = (self.recent_invalid << 1) & _WINDOW_MASK
        limiter = self.limiter if isinstance(event, _RATED) else self.control_limiter
        retry = limiter.check(trio.current_time())
        if retry is not None:
            if self.metrics is not None:
                self.metrics.rate_limited += 1
            if limiter.strikes > MAX_RATE_STRIKES:
                conn.close(1008, "still flooding after rate-limit errors")
                return
            self._refuse(
                ProtocolError(
                    429,
                    f"rate limit exceeded: retry in {retry} ms",
                    getattr(event, "ref", None),  # typing notices carry no ref
                    retry,
                )
            )
            return
        if isinstance(event, Join) and not self.identity.may_join(event.room):
            self._refuse(ProtocolError(403, f"not allowed to join room {event.room!r}", event.ref))
            return
        if (
            isinstance(event, _CONVERSING) or getattr(event, "with_", None) is not None
        ) and not self.identity.may_direct():
            # Refused whoever the recipient: no probing who is connected.
            doing = "send direct messages" if isinstance(event, Direct) else "use conversations"
            self._refuse(ProtocolError(403, f"not allowed to {doing}", getattr(event, "ref", None)))
            return
        if isinstance(event, Command):
            if self.commands is None:
                self._refuse(ProtocolError(404, f"no command named {event.name!r}", event.ref))
            else:
                self.commands.start(self, event)
            return
        screen = self.screen
        if screen is not None and screen.active:
            try:
                checked = screen.check(self.sender, event)
                event = await screen.finish(checked) if isinstance(checked, Pending) else checked
            except ProtocolError as err:
                self._refuse(err)
                return
        await self.hub.submit(conn.outlet, event)

    @property
    def sender(self) -> Sender:
        """Who this connection is, for the embedder's policy and commands."""
        if self._sender is None:
            conn = self.conn
            self._sender = Sender(conn.user_id, conn.session_id, conn.peer)
        return self._sender

    def _refuse(self, err: ProtocolError) -> None:
        self.hub.counters.error(err.code)
        self.conn.send_error(err)


class EchoHandler:
    """The echo endpoint: every message goes back to its sender as it came."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def __call__(self, message: str | bytes) -> None:
        self.conn.send_message(message)
