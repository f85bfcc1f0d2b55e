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
:mod:`trio_chat._client_link` moves frames between it and the network, and
:class:`ChatClient` (:mod:`trio_chat._chat_client`) makes the calls.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from ._chat_client import DEFAULT_BACKOFF, ChatClient
from ._client_link import Token
from ._client_messages import Conversation, Conversations, MessagePage
from ._client_pending import PendingMessage
from ._client_rooms import RoomInfo, RoomListing
from ._client_types import Backoff, ClientError, ConnectError, ConnectionState, StateChanged
from ._message_events import MessageDeleted, MessageEdited, ReactionChanged
from ._protocol import (
    ChatAck,
    ChatMessage,
    DirectAck,
    DirectMessage,
    ErrorEvent,
    Joined,
    Left,
    PresenceUpdate,
    System,
    TypingNotice,
    TypingWith,
)
from ._room_frames import ReadMarker

__all__ = [
    "Backoff",
    "ChatAck",
    "ChatClient",
    "ChatMessage",
    "ClientError",
    "ConnectError",
    "ConnectionState",
    "Conversation",
    "Conversations",
    "DirectAck",
    "DirectMessage",
    "ErrorEvent",
    "Joined",
    "Left",
    "MessageDeleted",
    "MessageEdited",
    "MessagePage",
    "PendingMessage",
    "PresenceUpdate",
    "ReactionChanged",
    "ReadMarker",
    "RoomInfo",
    "RoomListing",
    "StateChanged",
    "System",
    "TypingNotice",
    "TypingWith",
    "open_chat_client",
]


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
            await nursery.start(client._link.run)
        except ConnectError as exc:
            error = exc
        else:
            try:
                yield client
            except BaseException as exc:  # noqa: BLE001 - re-raised below, outside the nursery
                error = exc
            finally:
                with trio.CancelScope(shield=True):
                    await client._link.aclose()
                nursery.cancel_scope.cancel()
    if error is not None:
        raise error
