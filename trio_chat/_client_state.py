"""The Python client's bookkeeping, sans I/O.

:class:`ClientState` decides everything the reconnecting client does and
touches neither the network nor trio: which frames to write next (and when,
to stay within the server's rate limit), which rooms to re-join and from which
message id, which unacknowledged messages to re-send with their original
``ref``, which received messages are new, and which call an answer
settles.  The pacing is :mod:`trio_chat._client_pacing`'s, the calls are
:mod:`trio_chat._client_calls`'s, the messages on their way
:mod:`trio_chat._client_outbox`'s, the read markers
:mod:`trio_chat._client_rooms`'s.  The trio layer in
:mod:`trio_chat._client_link` feeds it server events and connection changes,
writes the frames it hands out and delivers the events it returns.

Rules it keeps:

* Every room remembers the highest message id delivered (``last_id``).  After
  a reconnect the room is joined with ``since=last_id``; the server then sends
  exactly the messages missed.  A message is delivered only if its id is above
  ``last_id``, so nothing is delivered twice and each room's messages come out
  in id order, whether they arrive live, in a ``joined`` history or as the ack
  of our own message.
* A server that lost its state (restarted without persistence) starts ids at 1
  again.  It says so with a new ``joined.epoch`` (the name of the room's
  numbering); the room's position is then reset instead of dropping the new
  room's messages.  The same epoch means the ids continued (a restart with
  the SQLite store): nothing is reset.  From a server that sends no epoch, a
  ``joined`` history holding ids at or below the ``since`` we sent, or a live
  message at or below it, is taken as the sign instead.
* Chats and directs get a ``ref`` (uuid4 hex) when submitted and keep it.  One
  that was not acknowledged when its connection dropped is sent again, with
  the same ``ref``, once its room is joined on the next connection; the server
  answers a repeated ``ref`` with the original ack and publishes nothing.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from ._client_calls import Call, CallBook
from ._client_messages import message_frame
from ._client_outbox import Outbox, left_before_ack
from ._client_pacing import Pacer
from ._client_records import JoinWaiter, Outgoing, Presence, RoomState, new_ref
from ._client_rooms import ReadMarkers, room_frame
from ._client_types import ClientError
from ._message_events import MessageDeleted, MessageEdited, ReactionChanged
from ._message_frames import Delete, Edit, React, ReadHistory
from ._protocol import (
    ChatAck,
    ChatMessage,
    DirectAck,
    DirectMessage,
    ErrorEvent,
    Join,
    Joined,
    Leave,
    Left,
    ListConversations,
    PresenceUpdate,
    ServerEvent,
    System,
    TypingNotice,
    TypingWith,
    Welcome,
    encode_client_event,
    is_valid_room,
    is_valid_user_id,
)
from ._room_frames import ListRooms, MarkRead, ReadMarker, SetTopic

__all__ = ["ClientState", "Emitted"]

Emitted = Any  # a ServerEvent or a StateChanged

#: Changes to messages already delivered, to read markers and to topics:
#: events for the stream, also when they answer one of this client's calls.
_NEWS = (MessageEdited, MessageDeleted, ReactionChanged, ReadMarker, System)
#: Events delivered as they come.
_PASSED_ON = (PresenceUpdate, DirectMessage, TypingNotice, TypingWith, *_NEWS)

#: The calls :meth:`ClientState.request` takes.
Request = Edit | Delete | React | ReadHistory | ListConversations | ListRooms | SetTopic


@attrs.define
class ClientState:
    """Everything the reconnecting client knows and decides, without I/O.

    Connections are numbered (``serial``); :meth:`connection_made` and
    :meth:`connection_lost` bracket each one.  :meth:`next_frame` hands out the
    next frame to write, :meth:`receive` takes each server event and returns
    the events to deliver to the user.  Times are passed in (seconds, any
    monotonic clock).
    """

    #: Connections a message may be lost on before it is given up (None: never).
    max_send_attempts: int | None = 5
    #: On 429, keep the message and send it again after ``retry_after_ms``.
    retry_rate_limited: bool = True
    #: Keep chat, direct, presence and message-call frames within the
    #: announced rate.
    pace: bool = True

    serial: int = 0
    online: bool = False
    user_id: str | None = None
    session_id: str | None = None
    limits: dict[str, Any] = attrs.Factory(dict)
    rooms: dict[str, RoomState] = attrs.Factory(dict)
    outbox: Outbox = attrs.Factory(Outbox)
    #: Frames for the current connection that go out first (join, leave, typing).
    control: deque[str] = attrs.Factory(deque)
    presence: Presence = attrs.Factory(Presence)
    pacer: Pacer = attrs.Factory(Pacer)
    #: Command, message, room and read calls not answered yet.
    calls: CallBook = attrs.Factory(CallBook)
    reads: ReadMarkers = attrs.Factory(ReadMarkers)
    #: ``ref`` of each join frame in flight -> room.
    join_refs: dict[str, str] = attrs.Factory(dict)

    # ------------------------------------------------------------ connections

    def connection_made(self, welcome: Welcome) -> None:
        """A new connection said ``welcome``: queue the joins and presence."""
        self.serial += 1
        self.online = True
        self.user_id = welcome.user_id
        self.session_id = welcome.session_id
        self.limits = dict(welcome.limits) if isinstance(welcome.limits, dict) else {}
        self.control.clear()
        self.join_refs.clear()
        self.presence.sent_on = None
        for room in self.rooms.values():
            if room.wanted:
                self._queue_join(room)

    def connection_lost(self) -> None:
        """The current connection ended: forget what was in flight on it."""
        if not self.online:
            return
        self.online = False
        self.control.clear()
        self.join_refs.clear()
        self.calls.connection_lost(self.max_send_attempts)
        for room in self.rooms.values():
            room.joined_on = None
            room.join_sent_on = None
            if not room.wanted:
                room.settle_leave()  # gone with the connection
        self.outbox.connection_lost(self.serial, self._wanted, self.max_send_attempts)

    def close(self, reason: str) -> None:
        """The client stopped for good: settle everything still waiting."""
        self.connection_lost()
        self.calls.close(f"the client is closed: {reason}")
        self.outbox.close(reason)
        for room in self.rooms.values():
            room.settle_join(ClientError(0, f"the client is closed: {reason}"))
            room.settle_leave()

    # ------------------------------------------------------------ user actions

    def join(self, name: str, waiter: JoinWaiter) -> Joined | None:
        """Want to be in room *name*.  Returns the room's ``joined`` if the
        current connection is in it already; else *waiter* is called later
        with the ``joined`` answer or a :class:`ClientError`."""
        if not is_valid_room(name):
            raise ClientError(400, f"not a valid room name: {name!r}")
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = RoomState(name)
        elif room.wanted and self.online and room.joined_on == self.serial:
            return room.info
        room.wanted = True
        room.join_waiters.append(waiter)
        if self.online and room.join_sent_on != self.serial:
            self._queue_join(room)
        return None

    def forget_join_waiter(self, name: str, waiter: JoinWaiter) -> None:
        """*waiter* stopped waiting (the room stays wanted)."""
        room = self.rooms.get(name)
        if room is not None and waiter in room.join_waiters:
            room.join_waiters.remove(waiter)

    def leave(self, name: str, waiter: Callable[[], None]) -> bool:
        """Stop being in room *name*; its queued chats are given up.

        Returns True when a ``leave`` frame went out and *waiter* will be
        called with the answer (or when the connection drops).
        """
        room = self.rooms.get(name)
        if room is None or not room.wanted:
            return False
        room.wanted = False
        gone = ClientError(0, f"left room {name!r}")
        room.settle_join(gone)
        self.calls.fail_room(name, 0, f"left room {name!r}")
        # Messages already written on this connection are answered before
        # the server's ``left``; the others are given up.
        self.outbox.fail_room(name, left_before_ack, keep=self.serial if self.online else None)
        in_room = self.serial in (room.joined_on, room.join_sent_on)
        room.joined_on = None
        room.join_sent_on = None
        room.members.clear()
        if not (self.online and in_room):
            return False
        room.leave_waiters.append(waiter)
        self.control.append(encode_client_event(Leave(name, new_ref())))
        return True

    def submit(self, kind: str, target: str, content: str) -> Outgoing:
        """Queue a chat (*target*: room) or direct (*target*: user)."""
        return self.outbox.submit(kind, target, content, self.limits, self._wanted)

    def withdraw(self, entry: Outgoing) -> None:
        """Give up on *entry* (its sender stopped waiting)."""
        self.outbox.withdraw(entry)

    def set_presence(self, status: str, text: str | None) -> None:
        self.presence.set(status, text)

    def typing(self, name: str) -> None:
        if self._joined_now(name):
            self.control.append(json.dumps({"type": "typing", "payload": {"room": name}}))

    def typing_to(self, user: str) -> None:
        if not is_valid_user_id(user):
            raise ClientError(400, f"not a valid user id: {user!r}")
        if self.online:
            self.control.append(json.dumps({"type": "typing", "payload": {"with": user}}))

    def request(self, event: Request) -> Call:
        """Queue a message or room call, checked first (:func:`message_frame`,
        :func:`room_frame`): it goes out paced, once its room (if it names
        one) is joined, and but for a reaction again after a drop, like a
        chat."""
        ref = new_ref()
        event = attrs.evolve(event, ref=ref)
        if isinstance(event, ListConversations):
            frame, room = encode_client_event(event), None
        elif isinstance(event, ListRooms):
            frame, room = room_frame(event, self.limits, False), None
        elif isinstance(event, SetTopic):
            frame, room = room_frame(event, self.limits, self._wanted(event.room)), event.room
        else:
            wanted = {name: r.wanted for name, r in self.rooms.items()}
            frame, room = message_frame(event, self.limits, wanted), event.room
        # A reaction toggles: written twice, it could be undone.
        resend = not isinstance(event, React)
        return self.calls.submit(ref, frame, room=room, paced=True, resend=resend)

    def mark_read(self, event: MarkRead) -> Call | ReadMarker:
        """Queue a ``read``, or answer at once when it would not move the
        marker (:meth:`ReadMarkers.request`)."""
        event = attrs.evolve(event, ref=new_ref())
        return self.reads.request(event, self.calls, self.limits, self._wanted)

    def _wanted(self, name: str) -> bool:
        room = self.rooms.get(name)
        return room is not None and room.wanted

    def _joined_now(self, name: str) -> bool:
        room = self.rooms.get(name)
        return self.online and room is not None and room.joined_on == self.serial

    # ------------------------------------------------------------ writing

    def next_frame(self, now: float) -> str | float | None:
        """The next frame to write now, or seconds to wait, or None (idle).

        Commands and control frames go first; ``read`` frames are spaced
        per room (:class:`~trio_chat._client_rooms.ReadMarkers`); presence,
        chats and directs, then message and room calls are paced to the
        rate announced in ``welcome``.  All but commands and control frames
        are held after a 429.  Messages keep their submission order, and a
        message call comes after the messages posted before it (an edit
        after the message it edits); a chat, or a call about a room, waits
        until its room is joined on this connection.
        """
        if not self.online:
            return None
        command = self.calls.next_unpaced()
        if command is not None:
            return command
        if self.control:
            return self.control.popleft()
        if self.pacer.paused_until > now:
            return self.pacer.paused_until - now
        read = self.reads.next_frame(now, self._joined_now)
        if isinstance(read, str):
            return read
        paced = self._next_paced(now)
        if isinstance(paced, str) or read is None:
            return paced
        return read if paced is None else min(paced, read)

    def _next_paced(self, now: float) -> str | float | None:
        if self.presence.due(self.serial):
            wait = self._pace_delay(now)
            if wait > 0:
                return wait
            self._record_sent(now)
            return self.presence.frame(self.serial)
        for entry in self.outbox:
            if entry.sent_on == self.serial:
                continue  # in flight on this connection
            if entry.kind == "chat":
                room = self.rooms.get(entry.target)
                if room is None or room.joined_on != self.serial:
                    continue
            problem = entry.problem(self.limits)
            if problem is not None:
                self.outbox.fail(entry, problem)
                continue
            wait = self._pace_delay(now)
            if wait > 0:
                return wait  # nothing overtakes a paced message
            self._record_sent(now)
            entry.sent_on = self.serial
            if entry.first_sent_on is None:
                entry.first_sent_on = self.serial
            return entry.frame()
        for call in self.calls.ready(self._joined_now):
            wait = self._pace_delay(now)
            if wait > 0:
                return wait
            self._record_sent(now)
            call.written = True
            return call.frame
        return None

    def _pace_delay(self, now: float) -> float:
        return self.pacer.delay(now, self.limits.get("rate") if self.pace else None)

    def _record_sent(self, now: float) -> None:
        self.pacer.record(now, self.limits.get("rate"))

    def _queue_join(self, room: RoomState) -> None:
        ref = new_ref()
        since = room.last_id if room.anchored else None
        room.floor = since or 0
        room.join_sent_on = self.serial
        self.join_refs[ref] = room.name
        self.control.append(encode_client_event(Join(room.name, since, ref)))

    # ------------------------------------------------------------ reading

    def receive(self, event: ServerEvent, now: float) -> list[Emitted]:
        """Take one server event; return the events to deliver, in order."""
        self._note(event)
        call = self.calls.answered(event)
        if call is not None:
            return self._on_answer(call, event, now)
        if isinstance(event, ChatMessage):
            room = self.rooms.get(event.room)
            if room is None or not room.wanted:
                return []
            if room.accept(event.id, live=True):
                return [event]
            return []
        if isinstance(event, ChatAck):
            return self._on_chat_ack(event)
        if isinstance(event, DirectAck):
            if self.outbox.acknowledge(event) is not None:
                self.reads.moved(None, event.to, event.id)
            return []
        if isinstance(event, Joined):
            return self._on_joined(event)
        if isinstance(event, Left):
            return self._on_left(event)
        if isinstance(event, ErrorEvent):
            return self._on_error(event, now)
        if isinstance(event, _PASSED_ON):
            return [event]
        return []  # a second welcome, or something newer: nothing to do

    def _note(self, event: ServerEvent) -> None:
        """What *event* changes, whether or not it answers a call: a room's
        members or topic, a read marker."""
        if isinstance(event, ReadMarker):
            self.reads.told(event, self.calls)
        elif isinstance(event, System):
            room = self.rooms.get(event.room)
            if room is not None and room.wanted:
                room.take_system(event)

    def _on_chat_ack(self, ack: ChatAck) -> list[Emitted]:
        entry = self.outbox.acknowledge(ack)
        if entry is None:
            return []  # given up on, or not ours
        self.reads.moved(entry.target, None, ack.id)
        room = self.rooms.get(entry.target)
        if room is None or not room.wanted or self.user_id is None:
            return []
        live = entry.first_sent_on == self.serial
        if room.accept(ack.id, live=live):
            return [ChatMessage(ack.id, entry.target, self.user_id, entry.content, ack.time)]
        return []

    def _on_joined(self, joined: Joined) -> list[Emitted]:
        if joined.ref is not None:
            self.join_refs.pop(joined.ref, None)
        room = self.rooms.get(joined.room)
        if room is None or not room.wanted:
            # Left while the join was in flight: leave again.
            if self.online:
                self.control.append(encode_client_event(Leave(joined.room, new_ref())))
            return []
        self.reads.joined(joined.room, joined.read)
        emitted: list[Emitted] = list(room.take_joined(joined, self.serial))
        assert room.info is not None
        emitted.append(room.info)
        room.settle_join(room.info)
        return emitted

    def _on_left(self, left: Left) -> list[Emitted]:
        room = self.rooms.get(left.room)
        if room is None:
            return [left]
        room.settle_leave()
        if room.wanted:
            return []  # joined again meanwhile; its joined follows
        return [left]

    def _on_error(self, error: ErrorEvent, now: float) -> list[Emitted]:
        ref = error.ref
        entry = self.outbox.find(ref)
        if entry is not None:
            if self._hold(error, now):
                entry.sent_on = None
                return [error]
            self.outbox.fail(
                entry,
                ClientError(
                    error.code, error.message, ref=ref, retry_after_ms=error.retry_after_ms
                ),
            )
            return []
        if ref is not None and ref == self.presence.ref:
            if self._hold(error, now):
                self.presence.sent_on = None
            return [error]
        if ref is not None and ref in self.join_refs:
            name = self.join_refs.pop(ref)
            room = self.rooms.get(name)
            if room is not None and room.wanted and room.joined_on != self.serial:
                room.wanted = False
                room.join_sent_on = None
                failure = ClientError(error.code, error.message, ref=ref)
                had_waiters = bool(room.join_waiters)
                room.settle_join(failure)
                self.calls.fail_room(
                    name, error.code, f"cannot join room {name!r}: {error.message}"
                )
                self.outbox.fail_room(
                    name,
                    lambda queued: ClientError(
                        error.code,
                        f"cannot join room {name!r}: {error.message}",
                        ref=queued.ref,
                    ),
                )
                return [] if had_waiters else [error]
        return [error]

    def _hold(self, error: ErrorEvent, now: float) -> bool:
        """Whether to send again what *error* refused: a 429, when
        ``retry_rate_limited``; if so, paced frames wait ``retry_after_ms``."""
        if error.code != 429 or not self.retry_rate_limited:
            return False
        self.pacer.pause(now + (error.retry_after_ms or 1000) / 1000)
        return True

    def _on_answer(self, call: Call, event: ServerEvent, now: float) -> list[Emitted]:
        if isinstance(event, ErrorEvent) and (call.paced or call.marker) and self._hold(event, now):
            call.written = False  # the server dropped the frame: write it again
            return [event]
        self.calls.settle(call, event)
        # An edit, delete, reaction, marker or topic is news for the event
        # stream too.
        return [event] if isinstance(event, _NEWS) else []
