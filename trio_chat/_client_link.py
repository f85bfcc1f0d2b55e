"""The Python client's connection loop: connect, serve, reconnect.

:class:`ClientLink` keeps one WebSocket open and opens a new one whenever
it drops, with the :class:`~trio_chat._client_types.Backoff` policy.  While
a connection lasts it runs a reader (server frames into the
:class:`~trio_chat._client_state.ClientState`, the events it returns into
the event buffer), a writer (the frames the state hands out onto the
socket) and a heartbeat (pings).  It decides nothing about rooms or
messages: the state does.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio_websocket
from trio_websocket import ConnectionClosed

from ._client_state import ClientState, Emitted
from ._client_transport import (
    CONNECT_ERRORS,
    AttemptFailed,
    Ended,
    describe,
    ended_by,
    first_leaf,
    open_websocket,
    read_welcome,
)
from ._client_types import Backoff, ClientError, ConnectError, ConnectionState, StateChanged
from ._protocol import parse_server_frame

__all__ = ["ClientLink", "Token"]

log = logging.getLogger("trio_chat.client")

#: HTTP statuses that will not get better by retrying the handshake.
_PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 409, 410})

Token = str | Callable[[], "str | Awaitable[str]"]


class ClientLink:
    """One client's connections, one after the other, and its event buffer.

    :meth:`run` connects and reconnects until :meth:`aclose`, or until
    reconnecting fails for good (then :attr:`failure` says why).  Whoever
    changes :attr:`state` in a way that may give the writer a frame calls
    :meth:`notify`.
    """

    def __init__(
        self,
        url: str,
        *,
        state: ClientState,
        token: Token | None,
        user: str | None,
        key: str | None,
        backoff: Backoff,
        connect_timeout: float,
        close_timeout: float,
        ping_interval: float | None,
        ping_timeout: float,
        max_buffered_events: int,
        ssl_context: ssl.SSLContext | None,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
        self.state = state
        self._token = token
        self._user = user
        # Anonymous mode: a key of this client's own unless given, so that its
        # reconnects keep its name and nobody else's handshake gets it.
        self._key = key if key is not None else secrets.token_urlsafe(24)
        self._explicit_key = key is not None
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._ssl_context = ssl_context
        self._random = random
        self._events_in, self._events_out = trio.open_memory_channel[Any](max_buffered_events)
        self._changed = trio.Event()
        self._attempt_scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._closing = False
        #: Why the client stopped, when reconnecting failed for good.
        self.failure: ConnectError | None = None
        self.connection_state = ConnectionState.CONNECTING
        #: Events dropped because nobody read them and the buffer was full.
        self.events_dropped = 0

    @property
    def closing(self) -> bool:
        """:meth:`aclose` was called."""
        return self._closing

    def check_open(self) -> None:
        """Raise :class:`ClientError` (code 0) once the client is closed."""
        if self.failure is not None:
            raise ClientError(0, f"the client is closed: {self.failure}")
        if self.closing:
            raise ClientError(0, "the client is closed")

    def notify(self) -> None:
        """Wake the writer: something to send may have changed."""
        self._changed.set()
        self._changed = trio.Event()

    async def next_event(self) -> Any:
        """The next event from the buffer; ``StopAsyncIteration`` at the
        end, or :attr:`failure` if the client stopped for good."""
        try:
            return await self._events_out.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.failure is not None:
                raise self.failure from None
            raise StopAsyncIteration from None

    def emit(self, events: list[Emitted]) -> None:
        """Put *events* in the buffer (dropped and counted when it is full)."""
        for event in events:
            try:
                self._events_in.send_nowait(event)
            except trio.WouldBlock:
                if self.events_dropped == 0 or self.events_dropped % 1000 == 0:
                    log.warning("event buffer full (nobody reading?): dropping events")
                self.events_dropped += 1
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return

    def _set_state(self, state: ConnectionState, **details: Any) -> None:
        self.connection_state = state
        self.emit([StateChanged(state, **details)])

    # ------------------------------------------------------------ running

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect; until closed or refused for good.

        The first attempt's failure is raised (as :class:`ConnectError`)
        before ``task_status.started()``: there is no block to run yet.
        """
        attempt = 0
        first = True
        try:
            while not self._closing:
                self._set_state(ConnectionState.CONNECTING, attempt=attempt)
                ended = await self._connection(task_status if first else None)
                if ended.online:
                    first = False
                if self.closing:  # closed while this attempt ran
                    return
                if first:
                    raise ConnectError(
                        f"cannot connect to {self.url}: {ended.reason}",
                        ended.status,
                        ended.refusal,
                    )
                if ended.status in _PERMANENT_STATUSES:
                    self._stop(
                        ConnectError(
                            f"the server refused to reconnect: {ended.reason}",
                            ended.status,
                            ended.refusal,
                        )
                    )
                    return
                if ended.online and ended.uptime >= self._backoff.reset_after:
                    attempt = 0
                limit = self._backoff.max_attempts
                if limit is not None and attempt >= limit:
                    self._stop(
                        ConnectError(
                            f"gave up after {attempt} attempts: {ended.reason}",
                            ended.status,
                            ended.refusal,
                        )
                    )
                    return
                delay = self._backoff.delay(attempt, self._random)
                attempt += 1
                self._set_state(
                    ConnectionState.RECONNECTING,
                    attempt=attempt,
                    delay=delay,
                    reason=ended.reason,
                )
                with trio.CancelScope() as self._attempt_scope:
                    await trio.sleep(delay)
                self._attempt_scope = None
        finally:
            if self.failure is None and not first:
                self.state.close("closed")
                self.connection_state = ConnectionState.CLOSED
            self._events_in.close()
            self._stopped.set()

    def _stop(self, failure: ConnectError) -> None:
        log.warning("chat client stopped: %s", failure)
        self.failure = failure
        self.state.calls.close(f"the client stopped: {failure}")
        self.state.close(str(failure))
        self._set_state(ConnectionState.CLOSED, reason=str(failure))

    async def _connection(self, task_status: trio.TaskStatus[None] | None) -> Ended:
        """One connection attempt, from TCP connect to its end.

        trio-websocket runs its reader in ``ws_nursery``; our reader, writer
        and heartbeat run inside ``_attempt_scope``, which :meth:`aclose`
        cancels, so the closing handshake still has a reader to complete it.
        """
        ended = Ended("closed")
        try:
            async with trio.open_nursery() as ws_nursery:
                ws: trio_websocket.WebSocketConnection | None = None
                online = False
                try:
                    with trio.CancelScope() as self._attempt_scope:
                        if self.closing:
                            self._attempt_scope.cancel()
                        try:
                            with trio.fail_after(self._connect_timeout):
                                url = await self._build_url()
                                headers = await self._headers()
                                ws = await open_websocket(
                                    ws_nursery, url, headers, self._ssl_context
                                )
                                welcome = await read_welcome(ws)
                        except CONNECT_ERRORS as exc:
                            ended = ended_by(exc)
                        else:
                            online = True
                            ended = Ended("closed", online=True)
                            self.state.connection_made(welcome)
                            if self._user is None and self._token is None:
                                # Keep a guest id: refs are de-duplicated per user.
                                self._user = welcome.user_id
                            online_at = trio.current_time()
                            self._set_state(ConnectionState.ONLINE)
                            self.notify()
                            if task_status is not None:
                                task_status.started()
                            reason = await self._serve(ws)
                            ended = Ended(
                                reason, online=True, uptime=trio.current_time() - online_at
                            )
                finally:
                    self._attempt_scope = None
                    if online:
                        self.state.connection_lost()
                    if ws is not None:
                        # A closing handshake only when we close by choice: a
                        # dead connection (no pong) would only time out, and
                        # when cancelled from outside trio-websocket's reader
                        # is cancelled too, so no handshake could finish.
                        graceful = self.closing and trio.current_effective_deadline() != -math.inf
                        with trio.CancelScope(shield=True):
                            with trio.move_on_after(self._close_timeout if graceful else 0):
                                await ws.aclose()
                    ws_nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # trio-websocket raises a refused handshake from its reader task.
            matched, rest = group.split(CONNECT_ERRORS)
            if rest is not None or matched is None:
                raise
            ended = ended_by(first_leaf(matched))
        return ended

    async def _serve(self, ws: trio_websocket.WebSocketConnection) -> str:
        """Run the reader, writer and heartbeat; return why the connection ended."""
        reasons: list[str] = []

        async def guard(task: Callable[..., Awaitable[str]], nursery: trio.Nursery) -> None:
            reasons.append(await task(ws))
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as tasks:
            tasks.start_soon(guard, self._reader, tasks)
            tasks.start_soon(guard, self._writer, tasks)
            if self._ping_interval is not None:
                tasks.start_soon(guard, self._heartbeat, tasks)
        return reasons[0] if reasons else "closed"

    async def _reader(self, ws: trio_websocket.WebSocketConnection) -> str:
        while True:
            try:
                text = await ws.get_message()
            except ConnectionClosed as exc:
                return describe(exc)
            try:
                event = parse_server_frame(text)
            except (ValueError, TypeError):
                log.debug("ignoring a frame that is not a server event: %.200r", text)
                continue
            try:
                events = self.state.receive(event, trio.current_time())
            except (TypeError, ValueError, KeyError, AttributeError):
                log.warning("ignoring a malformed %s frame: %.200r", event.type, text)
                continue
            self.emit(events)
            self.notify()

    async def _writer(self, ws: trio_websocket.WebSocketConnection) -> str:
        while True:
            changed = self._changed
            item = self.state.next_frame(trio.current_time())
            if item is None:
                await changed.wait()
            elif isinstance(item, float):
                with trio.move_on_after(item):
                    await changed.wait()
            else:
                try:
                    await ws.send_message(item)
                except ConnectionClosed as exc:
                    return describe(exc)

    async def _heartbeat(self, ws: trio_websocket.WebSocketConnection) -> str:
        assert self._ping_interval is not None
        while True:
            await trio.sleep(self._ping_interval)
            with trio.move_on_after(self._ping_timeout):
                try:
                    await ws.ping()
                except ConnectionClosed as exc:
                    return describe(exc)
                continue
            return f"no pong within {self._ping_timeout:g} s"

    async def _current_token(self) -> str | None:
        token = self._token
        if token is None or isinstance(token, str):
            return token
        try:
            value = token()
            if not isinstance(value, str):
                value = await value
        except Exception as exc:
            raise AttemptFailed(f"could not get a token: {exc!r}") from exc
        if not isinstance(value, str):
            raise AttemptFailed(f"the token function returned {type(value).__name__}, not str")
        return value

    async def _build_url(self) -> str:
        if self._token is not None:
            return self.url
        parts = urllib.parse.urlsplit(self.url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if self._user is not None:
            query = [(k, v) for k, v in query if k != "user"] + [("user", self._user)]
        if self._explicit_key or all(k != "key" for k, _ in query):
            query = [(k, v) for k, v in query if k != "key"] + [("key", self._key)]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    async def _headers(self) -> list[tuple[bytes, bytes]]:
        token = await self._current_token()
        if token is None:
            return []
        return [(b"authorization", b"Bearer " + token.encode())]

    async def aclose(self) -> None:
        """Stop reconnecting, close the connection (1000), wait for the end."""
        self._closing = True
        self.state.calls.close("the client is closed")
        if self._attempt_scope is not None:
            self._attempt_scope.cancel()
        with trio.move_on_after(self._close_timeout + 1):
            await self._stopped.wait()
