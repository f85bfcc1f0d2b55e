"""The Python client's calls: :class:`ChatClient`.

Each call checks what it can, hands the request to the client's
:class:`~trio_chat._client_state.ClientState`, wakes the writer, and waits
for the answer the state settles it with (:mod:`trio_chat._client_pending`).
The connections are :class:`~trio_chat._client_link.ClientLink`'s.
"""

from __future__ import annotations

import itertools
import json
import random
import secrets
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from ._client_calls import Call
from ._client_link import ClientLink, Token
from ._client_messages import Conversations, MessagePage, conversation_list, message_page
from ._client_pending import PendingMessage, settled
from ._client_rooms import RoomListing, room_listing
from ._client_state import ClientState, Request
from ._client_types import Backoff, ClientError, ConnectionState
from ._message_events import HistoryPage, MessageDeleted, MessageEdited, ReactionChanged
from ._message_frames import Delete, Edit, React, ReadHistory
from ._protocol import (
    COMMAND_PATTERN,
    ChatAck,
    CommandResult,
    ConversationList,
    DirectAck,
    Joined,
    ListConversations,
    ServerEvent,
    System,
    is_valid_command,
)
from ._room_frames import ListRooms, MarkRead, ReadMarker, RoomList, SetTopic

__all__ = ["DEFAULT_BACKOFF", "ChatClient"]

_Answer = TypeVar("_Answer", bound=ServerEvent)

#: Reconnect policy by default: base 0.5 s, cap 30 s, reset after 10 s online.
DEFAULT_BACKOFF = Backoff()


class ChatClient:
    """A chat connection that survives drops.  Make one with :func:`open_chat_client`.

    Iterate over it (``async for event in client``) for what arrives, as the
    typed events of the protocol: :class:`ChatMessage` (every room message
    once, in id order per room, including your own once acknowledged and a
    joined room's history), :class:`Joined` (after its history; its
    ``history`` is emptied), :class:`Left`, :class:`System`,
    :class:`PresenceUpdate`, :class:`DirectMessage`, :class:`TypingNotice`
    and :class:`TypingWith`, :class:`MessageEdited`, :class:`MessageDeleted`
    and :class:`ReactionChanged` (your own too, once the server answered),
    :class:`ReadMarker` (the user's read marker moved, here or on another
    connection; your own once the server answered), a topic's
    :class:`System` event, :class:`ErrorEvent` (errors no call is waiting
    for, and 429s the client retries by itself), and :class:`StateChanged`
    for the connection.
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
        self._state = ClientState(
            max_send_attempts=max_send_attempts,
            retry_rate_limited=retry_rate_limited,
            pace=pace,
        )
        self._link = ClientLink(
            url,
            state=self._state,
            token=token,
            user=user,
            key=key,
            backoff=backoff,
            connect_timeout=connect_timeout,
            close_timeout=close_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_buffered_events=max_buffered_events,
            ssl_context=ssl_context,
            random=random,
        )
        self._call_refs = (f"cmd-{secrets.token_hex(4)}-{n}" for n in itertools.count(1))

    @property
    def events_dropped(self) -> int:
        """Events dropped because nobody read them and the buffer was full."""
        return self._link.events_dropped

    # ------------------------------------------------------------ status

    @property
    def state(self) -> ConnectionState:
        return self._link.connection_state

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

    def topic(self, room: str) -> str | None:
        """The topic of *room* as last told (``joined``, ``system`` topic)."""
        state = self._state.rooms.get(room)
        info = state.info if state is not None and state.wanted else None
        return info.topic if info is not None else None

    def read_marker(self, room: str | None, *, with_: str | None = None) -> int:
        """The user's read marker in *room* (or the conversation *with_*) as
        the server last told it (``joined``, ``read``, or posting there); 0
        when it told none."""
        return self._state.reads.read(room, with_)

    def last_id(self, room: str) -> int:
        """The highest message id delivered from *room* (0: none)."""
        state = self._state.rooms.get(room)
        return state.last_id if state is not None else 0

    @property
    def pending(self) -> list[PendingMessage]:
        """Messages not acknowledged yet, in the order they were posted."""
        return [PendingMessage(self._link, entry) for entry in self._state.outbox]

    # ------------------------------------------------------------ actions

    async def join(self, room: str) -> Joined:
        """Join *room* (idempotent) and return the server's ``joined``: its
        members, your read marker (``read``) and the messages after it from
        others (``unread``, of which ``mentions`` mention you), its ``topic``.

        The client re-joins it after every reconnect until :meth:`leave`.
        Waits across reconnects; raises :class:`ClientError` if the server
        refuses (403: the token does not allow the room).
        """
        self._link.check_open()
        result: list[Joined | ClientError] = []
        done = trio.Event()

        def settle(outcome: Joined | ClientError) -> None:
            result.append(outcome)
            done.set()

        joined = self._state.join(room, settle)
        self._link.notify()
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
        self._link.check_open()
        done = trio.Event()
        if self._state.leave(room, done.set):
            self._link.notify()
            await done.wait()
        else:
            await trio.lowlevel.checkpoint()

    def post(self, room: str, content: str) -> PendingMessage:
        """Queue a chat message without waiting; ``await .wait()`` for the ack.

        Messages go out in the order they were posted.  Raises
        :class:`ClientError` at once for what the server would refuse
        anyway (room not joined, empty or too long content).
        """
        self._link.check_open()
        pending = PendingMessage(self._link, self._state.submit("chat", room, content))
        self._link.notify()
        return pending

    def post_direct(self, user: str, content: str) -> PendingMessage:
        """Queue a direct message to *user* without waiting (see :meth:`post`)."""
        self._link.check_open()
        pending = PendingMessage(self._link, self._state.submit("direct", user, content))
        self._link.notify()
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
        """Send a direct message to *user*; return the ack.

        The server keeps it in your conversation with *user* (the ack's
        ``id`` numbers it there) and delivers it to *user*'s connections
        and your other ones, whether or not *user* is connected.  Raises
        :class:`ClientError` 400 for a message to yourself and 403 past the
        server's bound on conversations.
        """
        return await self._deliver(self.post_direct(user, content))  # type: ignore[return-value]

    async def set_presence(self, status: str, text: str | None = None) -> None:
        """Set this user's presence (``online``, ``away``, ``busy``, ...).

        Remembered and sent again after every reconnect.
        """
        self._link.check_open()
        self._state.set_presence(status, text)
        self._link.notify()
        await trio.lowlevel.checkpoint()

    async def typing(self, room: str) -> None:
        """Tell *room*'s other members this user is typing (dropped if offline)."""
        self._link.check_open()
        self._state.typing(room)
        self._link.notify()
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
        self._link.check_open()
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
        result = await self._answer(self._state.calls.submit(ref, text), CommandResult)
        return result.result

    async def edit(
        self, room: str | None, id: int, content: str, *, with_: str | None = None
    ) -> MessageEdited:
        """Replace the text of your message *id* in *room*, or in the direct
        conversation with the user *with_* (*room* None); return the
        server's ``edit`` event, which every connection concerned gets too.

        Raises :class:`ClientError`: at once 400 (both or neither of *room*
        and *with_*, a bad name or id, empty content), 403 (*room* not
        joined), 413 (content over the server's limit); from the server 403
        (someone else's message, or past its ``edit_window``), 404 (not
        retained, or deleted), 429 (only with ``retry_rate_limited`` off),
        503 (retry); 0 when the connection was lost before the answer.
        """
        return await self._request(Edit(room, with_, id, content), MessageEdited)

    async def delete(
        self, room: str | None, id: int, *, with_: str | None = None
    ) -> MessageDeleted:
        """Delete your message *id* (see :meth:`edit` for *room*, *with_* and
        the errors); return the server's ``delete`` event.  Deleting a
        deleted message is answered like the first delete."""
        return await self._request(Delete(room, with_, id), MessageDeleted)

    async def react(
        self, room: str | None, id: int, emoji: str, *, with_: str | None = None
    ) -> ReactionChanged:
        """Toggle your *emoji* reaction on message *id* (see :meth:`edit`);
        return the server's ``reaction`` event (``on``, ``count``).

        *emoji* must be one of ``limits["reactions"]`` (400 at once); a
        deleted message takes none (404).  Written once: a reaction cut off
        by a drop fails with code 0 rather than be toggled twice.
        """
        return await self._request(React(room, with_, id, emoji), ReactionChanged)

    async def history(
        self,
        room: str | None = None,
        *,
        with_: str | None = None,
        before: int | None = None,
        since: int | None = None,
    ) -> MessagePage:
        """Retained messages of *room* (joined), or of the direct
        conversation with *with_*: with *before*, the newest with smaller
        ids (``before=page.before`` pages back); otherwise those after
        *since* (0: from the oldest).  At most 64 KiB of them, oldest first;
        ``truncated`` when older ones were left out.  Nothing is emitted
        for them.  Errors as for :meth:`edit` (404: no such conversation).
        """
        return message_page(
            await self._request(ReadHistory(room, with_, since, before), HistoryPage)
        )

    async def conversations(self) -> Conversations:
        """Your direct conversations, most recent first (at most 100), each
        with its newest message.  Raises :class:`ClientError` 403 when the
        token does not allow direct messages."""
        return conversation_list(await self._request(ListConversations(), ConversationList))

    async def mark_read(self, room: str | None, id: int, *, with_: str | None = None) -> ReadMarker:
        """Record that you have read *room* (joined), or the direct
        conversation with *with_*, up to message *id*; return the server's
        ``read`` event with the marker, which your other connections get too.

        A marker never moves back: an *id* at or below the marker the server
        last told is answered at once with that marker, and nothing is sent.
        At most one ``read`` of a room or conversation goes out every second;
        the calls made meanwhile share it, and it asks for the furthest of
        their ids.  Raises :class:`ClientError`: at once 400 (both or neither
        of *room* and *with_*, a bad name or id), 403 (*room* not joined);
        from the server 404 (no such conversation), 501 (a Redis-backed
        server); 0 when given up after ``max_send_attempts`` drops.
        """
        self._link.check_open()
        outcome = self._state.mark_read(MarkRead(room, with_, id))
        if isinstance(outcome, ReadMarker):
            await trio.lowlevel.checkpoint()
            return outcome
        return await self._answer(outcome, ReadMarker)

    async def find_rooms(self, query: str | None = None) -> RoomListing:
        """The rooms you may join (at most 100), most members first, with
        their member counts and topics; with *query*, those whose name or
        topic contains it, ignoring case.  Raises :class:`ClientError` 400
        at once for a *query* over 64 characters."""
        return room_listing(await self._request(ListRooms(query), RoomList))

    async def set_topic(self, room: str, topic: str) -> System:
        """Set the topic of *room* (joined; ``""`` clears it); return the
        server's ``system`` event (``event`` ``"topic"``, ``text`` the new
        topic), which every member gets.  Raises :class:`ClientError`: at
        once 400 (a bad name, a topic over 256 characters), 403 (*room* not
        joined)."""
        return await self._request(SetTopic(room, topic), System)

    async def typing_to(self, user: str) -> None:
        """Tell *user* you are typing to them (dropped if offline)."""
        self._link.check_open()
        self._state.typing_to(user)
        self._link.notify()
        await trio.lowlevel.checkpoint()

    async def _request(self, event: Request, kind: type[_Answer]) -> _Answer:
        self._link.check_open()
        return await self._answer(self._state.request(event), kind)

    async def _answer(self, call: Call, kind: type[_Answer]) -> _Answer:
        """Wake the writer for *call*; wait for its answer, of type *kind*."""
        self._link.notify()
        try:
            await settled(call.callbacks, call.done)
        except trio.Cancelled:
            self._state.calls.withdraw(call)
            raise
        if call.error is not None:
            raise call.error
        if not isinstance(call.answer, kind):
            raise ClientError(0, f"the server answered with {call.answer!r}", ref=call.ref)
        return call.answer

    async def _deliver(self, pending: PendingMessage) -> ChatAck | DirectAck:
        try:
            return await pending.wait()
        except trio.Cancelled:
            pending.cancel()
            raise

    # ------------------------------------------------------------ events

    def __aiter__(self) -> ChatClient:
        return self

    async def __anext__(self) -> Any:
        return await self._link.next_event()

    async def receive(self) -> Any:
        """The next event (see the class docs); like one step of ``async for``."""
        return await self.__anext__()

    @property
    def closing(self) -> bool:
        """:meth:`aclose` was called (or the block is being left)."""
        return self._link.closing
