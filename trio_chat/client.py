"""A reconnecting chat client for trio.

::

    from trio_chat.client import open_chat_client

    async with open_chat_client("ws://127.0.0.1:8080/ws", user="alice") as client:
        await client.join("lobby")
        ack = await client.send("lobby", "hello")      # waits for the server's ack
        async for event in client:                      # ChatMessage, System, ...
            print(event)

The client keeps one WebSocket open and opens a new one whenever it drops,
with exponential backoff and full jitter.  After reconnecting it re-joins its
rooms with ``since`` = the last message id it delivered from each, so missed
messages arrive once and in order, and it re-sends every message that was not
acknowledged yet with its original ``ref``, so the server publishes each one
exactly once.  Leaving the ``async with`` block closes the connection and
stops every task the client started.

The decisions live in the pure :class:`trio_chat._client_state.ClientState`;
this module only moves frames between it and the network.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import secrets
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

from ._client_state import (
    Backoff,
    ClientError,
    ClientState,
    ConnectionState,
    Outgoing,
    StateChanged,
)
from ._protocol import (
    COMMAND_PATTERN,
    ChatAck,
    ChatMessage,
    CommandResult,
    DirectAck,
    DirectMessage,
    ErrorEvent,
    Joined,
    Left,
    PresenceUpdate,
    System,
    TypingNotice,
    Welcome,
    is_valid_command,
    parse_server_frame,
)

__all__ = [
    "Backoff",
    "ChatAck",
    "ChatClient",
    "ChatMessage",
    "ClientError",
    "ConnectError",
    "ConnectionState",
    "DirectAck",
    "DirectMessage",
    "ErrorEvent",
    "Joined",
    "Left",
    "PendingMessage",
    "PresenceUpdate",
    "StateChanged",
    "System",
    "TypingNotice",
    "open_chat_client",
]

log = logging.getLogger("trio_chat.client")

#: The subprotocol offered in the handshake.
SUBPROTOCOL = "trio-chat.v1"
#: HTTP statuses that will not get better by retrying the handshake.
_PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 409, 410})
#: Reconnect policy by default: base 0.5 s, cap 30 s, reset after 10 s online.
DEFAULT_BACKOFF = Backoff()
#: Largest frame accepted from the server (a ``joined`` carries history).
_MAX_FRAME = 16 * 1024 * 1024

Token = str | Callable[[], "str | Awaitable[str]"]


class ConnectError(Exception):
    """The client could not connect (first attempt), or was refused for good.

    ``status`` is the HTTP status when the server refused the handshake
    (401: missing or bad token, 403: origin or room rules, 429: too many
    connections or handshakes, 503: full), else None (network error,
    timeout).  ``reason`` is the server's own explanation from the refusal's
    body (``"token expired"``), when it gave one; the message includes it.
    """

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class PendingMessage:
    """A chat or direct message the client is delivering (see :meth:`ChatClient.post`).

    ``await message.wait()`` returns the server's ack once it arrives, across
    reconnects, or raises :class:`ClientError`.
    """

    def __init__(self, client: ChatClient, entry: Outgoing) -> None:
        self._client = client
        self._entry = entry

    @property
    def ref(self) -> str:
        return self._entry.ref

    @property
    def content(self) -> str:
        return self._entry.content

    @property
    def target(self) -> str:
        """The room (chat) or user (direct) it goes to."""
        return self._entry.target

    @property
    def done(self) -> bool:
        return self._entry.done

    async def wait(self) -> ChatAck | DirectAck:
        """The ack; raises :class:`ClientError` if the message was refused."""
        entry = self._entry
        if not entry.done:
            settled = trio.Event()
            entry.callbacks.append(settled.set)
            try:
                await settled.wait()
            finally:
                if settled.set in entry.callbacks:
                    entry.callbacks.remove(settled.set)
        else:
            await trio.lowlevel.checkpoint()
        if self._entry.error is not None:
            raise self._entry.error
        assert self._entry.ack is not None
        return self._entry.ack

    def cancel(self) -> None:
        """Stop delivering it (no re-send).  A copy already written may still
        be published by the server."""
        self._client._state.withdraw(self._entry)
        self._client._notify()


@attrs.frozen
class _Ended:
    """Why a connection ended."""

    reason: str
    #: HTTP status of a refused handshake.
    status: int | None = None
    #: The server's reason for refusing it (from the response body).
    refusal: str | None = None
    #: The connection got as far as ``welcome``.
    online: bool = False
    #: Seconds it stayed online.
    uptime: float = 0.0


class ChatClient:
    """A chat connection that survives drops.  Make one with :func:`open_chat_client`.

    Iterate over it (``async for event in client``) for what arrives, as the
    typed events of the protocol: :class:`ChatMessage` (every room message
    once, in id order per room, including your own once acknowledged and a
    joined room's history), :class:`Joined` (after its history; its
    ``history`` is emptied), :class:`Left`, :class:`System`,
    :class:`PresenceUpdate`, :class:`DirectMessage`, :class:`TypingNotice`,
    :class:`ErrorEvent` (errors no call is waiting for, and 429s the client
    retries by itself), and :class:`StateChanged` for the connection.
    Iteration ends when the client closes; it raises :class:`ConnectError`
    if the client stopped because reconnecting failed for good.
    """

    def __init__(
        self,
        url: str,
        *,
        token: Token | None = None,
        user: str | None = None,
        key: str | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        connect_timeout: float = 10.0,
        close_timeout: float = 2.0,
        ping_interval: float | None = 30.0,
        ping_timeout: float = 30.0,
        max_send_attempts: int | None = 5,
        retry_rate_limited: bool = True,
        pace: bool = True,
        max_buffered_events: int = 10_000,
        ssl_context: ssl.SSLContext | None = None,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
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
        self._state = ClientState(
            max_send_attempts=max_send_attempts,
            retry_rate_limited=retry_rate_limited,
            pace=pace,
        )
        self._events_in, self._events_out = trio.open_memory_channel[Any](max_buffered_events)
        self._changed = trio.Event()
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._closing = False
        self._attempt_scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._failure: ConnectError | None = None
        self._connection_state = ConnectionState.CONNECTING
        #: Events dropped because nobody read them and the buffer was full.
        self.events_dropped = 0
        #: Command calls: (ref, frame) not written yet; refs written and
        #: waiting for their result; each waiter's event and outcome.
        self._call_frames: list[tuple[str, str]] = []
        self._calls_sent: set[str] = set()
        self._calls: dict[str, tuple[trio.Event, list[Any]]] = {}
        self._call_refs = (f"cmd-{secrets.token_hex(4)}-{n}" for n in itertools.count(1))

    # ------------------------------------------------------------ status

    @property
    def state(self) -> ConnectionState:
        return self._connection_state

    @property
    def user_id(self) -> str | None:
        """The user id the server gave this client."""
        return self._state.user_id

    @property
    def session_id(self) -> str | None:
        """The current connection's session id (new on every reconnect)."""
        return self._state.session_id

    @property
    def limits(self) -> dict[str, Any]:
        """The server's limits from ``welcome``."""
        return dict(self._state.limits)

    @property
    def rooms(self) -> list[str]:
        """The rooms this client is in, or is about to (re-)join."""
        return [name for name, room in self._state.rooms.items() if room.wanted]

    def members(self, room: str) -> list[str]:
        """The room's members as last reported by the server, sorted."""
        state = self._state.rooms.get(room)
        return sorted(state.members) if state is not None and state.wanted else []

    def last_id(self, room: str) -> int:
        """The highest message id delivered from *room* (0: none)."""
        state = self._state.rooms.get(room)
        return state.last_id if state is not None else 0

    @property
    def pending(self) -> list[PendingMessage]:
        """Messages not acknowledged yet, in the order they were posted."""
        return [PendingMessage(self, entry) for entry in self._state.outbox]

    # ------------------------------------------------------------ actions

    async def join(self, room: str) -> Joined:
        """Join *room* (idempotent) and return the server's ``joined``.

        The client re-joins it after every reconnect until :meth:`leave`.
        Waits across reconnects; raises :class:`ClientError` if the server
        refuses (403: the token does not allow the room).
        """
        self._check_open()
        result: list[Joined | ClientError] = []
        done = trio.Event()

        def settle(outcome: Joined | ClientError) -> None:
            result.append(outcome)
            done.set()

        joined = self._state.join(room, settle)
        self._notify()
        if joined is not None:
            await trio.lowlevel.checkpoint()
            return joined
        try:
            await done.wait()
        except trio.Cancelled:
            self._state.forget_join_waiter(room, settle)
            raise
        if isinstance(result[0], ClientError):
            raise result[0]
        return result[0]

    async def leave(self, room: str) -> None:
        """Leave *room*.

        Its messages already written to the server are acknowledged as
        usual; those still queued (not written yet, e.g. while offline) fail
        with :class:`ClientError` code 0.
        """
        self._check_open()
        done = trio.Event()
        if self._state.leave(room, done.set):
            self._notify()
            await done.wait()
        else:
            await trio.lowlevel.checkpoint()

    def post(self, room: str, content: str) -> PendingMessage:
        """Queue a chat message without waiting; ``await .wait()`` for the ack.

        Messages go out in the order they were posted.  Raises
        :class:`ClientError` at once for what the server would refuse
        anyway (room not joined, empty or too long content).
        """
        self._check_open()
        pending = PendingMessage(self, self._state.submit("chat", room, content))
        self._notify()
        return pending

    def post_direct(self, user: str, content: str) -> PendingMessage:
        """Queue a direct message to *user* without waiting (see :meth:`post`)."""
        self._check_open()
        pending = PendingMessage(self, self._state.submit("direct", user, content))
        self._notify()
        return pending

    async def send(self, room: str, content: str) -> ChatAck:
        """Send a chat message to *room* and return the server's ack.

        Waits across reconnects until the server acknowledges it; a message
        cut off by a drop is sent again with the same ``ref``, which the
        server publishes only once.  Raises :class:`ClientError` when the
        server refuses it (403, 413, 429 when ``retry_rate_limited`` is off,
        ...).  Cancelling the call stops re-sending it.
        """
        return await self._deliver(self.post(room, content))  # type: ignore[return-value]

    async def direct(self, user: str, content: str) -> DirectAck:
        """Send a direct message to every connection of *user*; return the ack.

        Raises :class:`ClientError` (404) when *user* is not connected.
        """
        return await self._deliver(self.post_direct(user, content))  # type: ignore[return-value]

    async def set_presence(self, status: str, text: str | None = None) -> None:
        """Set this user's presence (``online``, ``away``, ``busy``, ...).

        Remembered and sent again after every reconnect.
        """
        self._check_open()
        self._state.set_presence(status, text)
        self._notify()
        await trio.lowlevel.checkpoint()

    async def typing(self, room: str) -> None:
        """Tell *room*'s other members this user is typing (dropped if offline)."""
        self._check_open()
        self._state.typing(room)
        self._notify()
        await trio.lowlevel.checkpoint()

    async def command(self, name: str, args: Any = None) -> Any:
        """Call the server's command *name* with *args* (any JSON value);
        return its result.

        Waits for a connection if there is none; the call is written once
        and never sent again (a command may not be safe to run twice).
        Raises :class:`ClientError` with the server's code when it answers
        with an error (404: no such command; 429: too many running or the
        rate limit; 504: the handler ran out of time; or the handler's own),
        400 at once for a bad name or arguments that are not JSON, and code
        0 when the connection was lost after the call was written and
        before its result came (it may or may not have run).
        """
        self._check_open()
        if not is_valid_command(name):
            raise ClientError(400, f"name: must match {COMMAND_PATTERN}")
        ref = next(self._call_refs)
        frame: dict[str, Any] = {"type": "command", "payload": {"name": name}, "ref": ref}
        if args is not None:
            frame["payload"]["args"] = args
        try:
            text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ClientError(400, f"args: not JSON: {exc}") from None
        done = trio.Event()
        outcome: list[Any] = []
        self._calls[ref] = (done, outcome)
        self._call_frames.append((ref, text))
        self._notify()
        try:
            await done.wait()
        finally:
            self._calls.pop(ref, None)
            self._calls_sent.discard(ref)
            self._call_frames = [(r, t) for r, t in self._call_frames if r != ref]
        answer = outcome[0]
        if isinstance(answer, ClientError):
            raise answer
        if isinstance(answer, ErrorEvent):
            raise ClientError(
                answer.code, answer.message, ref=ref, retry_after_ms=answer.retry_after_ms
            )
        return answer.result

    def _settle_call(self, ref: str, answer: Any) -> None:
        waiting = self._calls.get(ref)
        if waiting is not None and not waiting[1]:
            waiting[1].append(answer)
            waiting[0].set()

    def _calls_lost(self, message: str, *, all_calls: bool = False) -> None:
        """The connection ended: calls written on it get no result."""
        lost = list(self._calls) if all_calls else list(self._calls_sent)
        for ref in lost:
            self._settle_call(ref, ClientError(0, message, ref=ref))
        self._calls_sent.clear()

    async def _deliver(self, pending: PendingMessage) -> ChatAck | DirectAck:
        try:
            return await pending.wait()
        except trio.Cancelled:
            pending.cancel()
            raise

    def _check_open(self) -> None:
        if self._failure is not None:
            raise ClientError(0, f"the client is closed: {self._failure}")
        if self._closing:
            raise ClientError(0, "the client is closed")

    # ------------------------------------------------------------ events

    def __aiter__(self) -> ChatClient:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._events_out.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._failure is not None:
                raise self._failure from None
            raise StopAsyncIteration from None

    async def receive(self) -> Any:
        """The next event (see the class docs); like one step of ``async for``."""
        return await self.__anext__()

    def _emit(self, events: list[Any]) -> None:
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
        self._connection_state = state
        self._emit([StateChanged(state, **details)])

    def _notify(self) -> None:
        """Wake the writer: something to send may have changed."""
        self._changed.set()
        self._changed = trio.Event()

    @property
    def closing(self) -> bool:
        """:meth:`aclose` was called (or the block is being left)."""
        return self._closing

    # ------------------------------------------------------------ running

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
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
            if self._failure is None and not first:
                self._state.close("closed")
                self._connection_state = ConnectionState.CLOSED
            self._events_in.close()
            self._stopped.set()

    def _stop(self, failure: ConnectError) -> None:
        log.warning("chat client stopped: %s", failure)
        self._failure = failure
        self._state.close(str(failure))
        self._calls_lost(f"the client stopped: {failure}", all_calls=True)
        self._set_state(ConnectionState.CLOSED, reason=str(failure))

    async def _connection(self, task_status: trio.TaskStatus[None] | None) -> _Ended:
        """One connection attempt, from TCP connect to its end.

        trio-websocket runs its reader in ``ws_nursery``; our reader, writer
        and heartbeat run inside ``_attempt_scope``, which :meth:`_aclose`
        cancels, so the closing handshake still has a reader to complete it.
        """
        ended = _Ended("closed")
        try:
            async with trio.open_nursery() as ws_nursery:
                ws: trio_websocket.WebSocketConnection | None = None
                online = False
                try:
                    with trio.CancelScope() as self._attempt_scope:
                        if self._closing:
                            self._attempt_scope.cancel()
                        try:
                            with trio.fail_after(self._connect_timeout):
                                ws = await self._open_websocket(ws_nursery)
                                welcome = await self._read_welcome(ws)
                        except _CONNECT_ERRORS as exc:
                            ended = _ended_by(exc)
                        else:
                            online = True
                            ended = _Ended("closed", online=True)
                            self._ws = ws
                            self._state.connection_made(welcome)
                            if self._user is None and self._token is None:
                                # Keep a guest id: refs are de-duplicated per user.
                                self._user = welcome.user_id
                            online_at = trio.current_time()
                            self._set_state(ConnectionState.ONLINE)
                            self._notify()
                            if task_status is not None:
                                task_status.started()
                            reason = await self._serve(ws)
                            ended = _Ended(
                                reason, online=True, uptime=trio.current_time() - online_at
                            )
                finally:
                    self._attempt_scope = None
                    if online:
                        self._ws = None
                        self._state.connection_lost()
                        self._calls_lost("the connection was lost before the command's result")
                    if ws is not None:
                        # A closing handshake only when we close by choice: a
                        # dead connection (no pong) would only time out, and
                        # when cancelled from outside trio-websocket's reader
                        # is cancelled too, so no handshake could finish.
                        graceful = self._closing and trio.current_effective_deadline() != -math.inf
                        with trio.CancelScope(shield=True):
                            with trio.move_on_after(self._close_timeout if graceful else 0):
                                await ws.aclose()
                    ws_nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # trio-websocket raises a refused handshake from its reader task.
            matched, rest = group.split(_CONNECT_ERRORS)
            if rest is not None or matched is None:
                raise
            ended = _ended_by(_first_leaf(matched))
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
                return _describe(exc)
            try:
                event = parse_server_frame(text)
            except (ValueError, TypeError):
                log.debug("ignoring a frame that is not a server event: %.200r", text)
                continue
            ref = getattr(event, "ref", None)
            if (
                ref is not None
                and ref in self._calls
                and isinstance(event, CommandResult | ErrorEvent)
            ):
                self._settle_call(ref, event)
                continue
            try:
                events = self._state.receive(event, trio.current_time())
            except (TypeError, ValueError, KeyError, AttributeError):
                log.warning("ignoring a malformed %s frame: %.200r", event.type, text)
                continue
            self._emit(events)
            self._notify()

    async def _writer(self, ws: trio_websocket.WebSocketConnection) -> str:
        while True:
            changed = self._changed
            if self._call_frames:
                ref, text = self._call_frames.pop(0)
                self._calls_sent.add(ref)
                try:
                    await ws.send_message(text)
                except ConnectionClosed as exc:
                    return _describe(exc)
                continue
            item = self._state.next_frame(trio.current_time())
            if item is None:
                await changed.wait()
            elif isinstance(item, float):
                with trio.move_on_after(item):
                    await changed.wait()
            else:
                try:
                    await ws.send_message(item)
                except ConnectionClosed as exc:
                    return _describe(exc)

    async def _heartbeat(self, ws: trio_websocket.WebSocketConnection) -> str:
        assert self._ping_interval is not None
        while True:
            await trio.sleep(self._ping_interval)
            with trio.move_on_after(self._ping_timeout):
                try:
                    await ws.ping()
                except ConnectionClosed as exc:
                    return _describe(exc)
                continue
            return f"no pong within {self._ping_timeout:g} s"

    async def _open_websocket(self, nursery: trio.Nursery) -> trio_websocket.WebSocketConnection:
        """TCP, then TLS for ``wss://``, then the WebSocket handshake.

        TCP and TLS are set up here rather than by trio-websocket so that a
        failed TLS handshake raises at once (trio-websocket would wait for an
        opening handshake that can no longer come).
        """
        parts = urllib.parse.urlsplit(await self._build_url())
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL: {self.url!r}")
        secure = parts.scheme == "wss"
        host = parts.hostname
        port = parts.port or (443 if secure else 80)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = f"[{host}]" if ":" in host else host
        if port != (443 if secure else 80):
            host_header += f":{port}"
        headers = await self._headers()
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
        stream = await trio.open_tcp_stream(host, port)
        if secure:
            context = self._ssl_context or ssl.create_default_context()
            stream = trio.SSLStream(stream, context, server_hostname=host, https_compatible=True)
            try:
                await stream.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return await trio_websocket.wrap_client_stream(
            nursery,
            stream,
            host_header,
            resource,
            subprotocols=[SUBPROTOCOL],
            extra_headers=headers,
            max_message_size=_MAX_FRAME,
        )

    async def _read_welcome(self, ws: trio_websocket.WebSocketConnection) -> Welcome:
        event = parse_server_frame(await ws.get_message())
        if not isinstance(event, Welcome):
            raise ValueError(f"expected welcome, got {event.type}")
        return event

    async def _current_token(self) -> str | None:
        token = self._token
        if token is None or isinstance(token, str):
            return token
        try:
            value = token()
            if not isinstance(value, str):
                value = await value
        except Exception as exc:
            raise _AttemptFailed(f"could not get a token: {exc!r}") from exc
        if not isinstance(value, str):
            raise _AttemptFailed(f"the token function returned {type(value).__name__}, not str")
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

    async def _aclose(self) -> None:
        """Stop reconnecting, close the connection (1000), wait for the end."""
        self._closing = True
        self._calls_lost("the client is closed", all_calls=True)
        if self._attempt_scope is not None:
            self._attempt_scope.cancel()
        with trio.move_on_after(self._close_timeout + 1):
            await self._stopped.wait()


class _AttemptFailed(Exception):
    """A connection attempt that failed before reaching the network."""


_CONNECT_ERRORS = (
    _AttemptFailed,
    OSError,
    HandshakeError,
    ConnectionClosed,
    trio.TooSlowError,
    trio.BrokenResourceError,
    ValueError,
)


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _ended_by(exc: BaseException) -> _Ended:
    if isinstance(exc, ConnectionRejected):
        refusal = _refusal_reason(exc)
        text = f"handshake refused with HTTP {exc.status_code}"
        if refusal:
            text += f": {refusal}"
        if exc.status_code < 400 or exc.status_code in (404, 405, 426):
            # Something answered, but not a WebSocket endpoint (e.g. the page at "/").
            text += " (not a chat WebSocket endpoint: check the URL's path; trio-chat serves /ws)"
        return _Ended(text, exc.status_code, refusal)
    return _Ended(_describe(exc))


#: Longest refusal reason kept from a response body.
_MAX_REASON_CHARS = 300


def _refusal_reason(exc: ConnectionRejected) -> str | None:
    """The server's reason from a refused handshake's body, if it gave one.

    A plain-text body is the reason itself (its first line); a JSON object
    gives its ``reason``, ``message`` or ``error`` string.  Anything else (an
    HTML page) gives None.  Control characters are dropped and the text is
    cut to a few hundred characters: it comes from the network.
    """
    body = exc.body
    if not body:
        return None
    content_type = ""
    for name, value in exc.headers:
        if name.lower() == b"content-type":
            content_type = value.decode("latin-1").split(";")[0].strip().lower()
    text = body[: 16 * 1024].decode("utf-8", errors="replace")
    reason: object = None
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            document = json.loads(text)
        except ValueError:
            return None
        if isinstance(document, dict):
            reason = next(
                (
                    document[k]
                    for k in ("reason", "message", "error")
                    if isinstance(document.get(k), str)
                ),
                None,
            )
    elif content_type in ("", "text/plain"):
        reason = next((line for line in text.splitlines() if line.strip()), None)
    if not isinstance(reason, str):
        return None
    reason = "".join(c for c in reason if c.isprintable()).strip()
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[: _MAX_REASON_CHARS - 1] + "…"
    return reason or None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        reason = exc.reason
        if reason is None:
            return "connection closed"
        if reason.code == 1006:
            return "connection lost"
        text = f"closed with {reason.code}"
        if reason.reason:
            text += f" ({reason.reason})"
        return text
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__  # e.g. the TLS error behind a failed handshake
    return str(exc) or type(exc).__name__


@asynccontextmanager
async def open_chat_client(
    url: str,
    *,
    token: Token | None = None,
    user: str | None = None,
    key: str | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    connect_timeout: float = 10.0,
    close_timeout: float = 2.0,
    ping_interval: float | None = 30.0,
    ping_timeout: float = 30.0,
    max_send_attempts: int | None = 5,
    retry_rate_limited: bool = True,
    pace: bool = True,
    max_buffered_events: int = 10_000,
    ssl_context: ssl.SSLContext | None = None,
    random: Callable[[], float] = random.random,
) -> AsyncIterator[ChatClient]:
    """Connect to a trio_chat server for the duration of the block.

    Args:
      url: the WebSocket endpoint, ``ws://HOST:PORT/ws`` (or ``wss://``).
      token: a token (sent as ``Authorization: Bearer``) or a function,
        sync or async, returning a fresh one before each connection.
      user: anonymous mode: the user id to connect as.  Without *user* and
        *token* the server assigns a ``guest-...`` id, which the client keeps
        for its reconnects.
      key: anonymous mode: the key sent as ``?key=`` (8 to 64 of
        ``A-Z a-z 0-9 _ -``); by default one of the client's own, random, so
        its reconnects keep its name (a key in *url* is kept).  The server
        holds a name (or the ``guest-...`` id it assigned) for the key that
        used it first and refuses it (409) to any other key, or to a client
        without one.  Pass the same key to several clients for one user with
        several connections.
      backoff: reconnect delays (:class:`Backoff`: base 0.5 s, cap 30 s,
        full jitter, reset after 10 s online, no attempt limit).
      connect_timeout: seconds allowed for one attempt, up to ``welcome``.
      close_timeout: seconds allowed for the closing handshake on exit.
      ping_interval, ping_timeout: the client pings the server this often
        and treats a missing pong as a dead connection (None: no pings).
      max_send_attempts: a message lost with this many connections is
        given up (ClientError code 0); None: keep trying.
      retry_rate_limited: re-send a message answered with 429 after
        ``retry_after_ms`` instead of raising.
      pace: keep chats, directs and presence within the rate the server
        announces, so 429s do not happen in the first place.
      max_buffered_events: events kept for ``async for``; beyond that, with
        nobody reading, new events are dropped (counted in
        ``events_dropped``).

    Raises:
      ConnectError: the first connection failed (refused handshake with its
        HTTP ``status``, network error, timeout).  Later drops are not
        errors: the client reconnects.

    Leaving the block closes the WebSocket (code 1000) and cancels every task
    the client runs; messages still unacknowledged then fail with code 0.
    """
    client = ChatClient(
        url,
        token=token,
        user=user,
        key=key,
        backoff=backoff,
        connect_timeout=connect_timeout,
        close_timeout=close_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        max_send_attempts=max_send_attempts,
        retry_rate_limited=retry_rate_limited,
        pace=pace,
        max_buffered_events=max_buffered_events,
        ssl_context=ssl_context,
        random=random,
    )
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(client._run)
        except ConnectError as exc:
            error = exc
        else:
            try:
                yield client
            except BaseException as exc:  # noqa: BLE001 - re-raised below, outside the nursery
                error = exc
            finally:
                with trio.CancelScope(shield=True):
                    await client._aclose()
                nursery.cancel_scope.cancel()
    if error is not None:
        raise error
