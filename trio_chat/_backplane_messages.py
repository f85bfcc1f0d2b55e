"""Edits, deletes, reactions and history pages with the Redis store.

The rules are the other stores' (:func:`~trio_chat._hub_messages.change_message`
and :func:`~trio_chat._message_ops.history_page`); what differs is where the
messages are and who orders their changes:

* a process applies the rule to the current version of the message (from its
  cached history, else read from Redis first) and asks Redis to put the new
  version in place of that one (:class:`ReviseOp`).  The script does so only
  if the message is still what the process saw; otherwise it answers the
  current version and the rule is applied again to it.  Redis so orders
  every change of a message, and none is lost when two processes change it
  at once;
* each change takes the room's next *revision* and is published with its
  event: every process serving the room puts the new version in its cache
  and tells its members (the sender's connection gets its copy, with its
  ``ref``, from the script's answer).  A gap in the revisions means pub/sub
  lost something: the room's revised messages are read again
  (:class:`RevisionsOp`);
* a ``history`` page is read from Redis (:class:`PageOp`).

A conversation's messages (a frame with ``with``) are a log in Redis under
its log name and go the same way, but are not cached here; their events go
to both users' connections
(:meth:`~trio_chat._backplane_direct.ClusterConversations._conversation_revised`).

Pure and synchronous like the rest of the state: no I/O.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from ._backplane_logs import EARLY_REVISIONS, ServedRoom
from ._backplane_ops import UNAVAILABLE, PageOp, RawEvent, ReviseOp, RevisionsOp
from ._backplane_rooms import ClusterRooms
from ._conversations import conversation_name, direct_view, is_conversation, no_conversation
from ._hub_messages import change_message, moderator_notice
from ._log import History, RoomLog
from ._message_events import HistoryPage, MessageDeleted, MessageEdited, ReactionChanged
from ._message_frames import Delete, Edit, MessageFrame, React, ReadHistory
from ._message_ops import HISTORY_PAGE_BYTES, Target, history_page
from ._protocol import ChatMessage, ProtocolError, parse_server_frame
from ._room_core import Conn, Delivery, Key, Reply

__all__ = ["MAX_ATTEMPTS", "MAX_WAITING", "ClusterMessages", "window"]

#: Times a change is tried on a message that other processes keep changing
#: meanwhile, before it is answered 503.
MAX_ATTEMPTS = 8
#: Ids above this are no message's (and more than Redis's scripts take).
MAX_ID = 2**53
#: Changes of one message that may wait here behind the one Redis is
#: carrying out (a process sends one at a time); beyond, 503.
MAX_WAITING = 64


def _message(frame: str) -> ChatMessage:
    message = parse_server_frame(frame)
    if not isinstance(message, ChatMessage):
        raise ValueError(f"not a chat frame: {frame[:40]!r}")
    return message


def _window(room: str, last_id: int, frames: list[str]) -> RoomLog:
    """A log of *room* holding the messages of *frames* (oldest first,
    gap-free, the newest numbered *last_id*), for the rules to read."""
    entries = deque((_message(frame), 0) for frame in frames)
    return RoomLog(room, "", entries, last_id=last_id)


def window(room: str, last_id: int, entries: list[tuple[int, str, str]]) -> RoomLog:
    """A log of *room* whose newest message would be *last_id*, holding
    the messages of *entries* (``(id, origin, frame)`` as Redis answers
    them, newest first) down to the first gap."""
    frames: list[str] = []
    for entry_id, _origin, frame in entries:
        if entry_id != last_id - len(frames):
            break
        frames.append(frame)
    frames.reverse()
    return _window(room, last_id, frames)


@attrs.define
class ClusterMessages(ClusterRooms):
    """The rooms of :class:`~trio_chat._backplane_rooms.ClusterRooms`, with
    edits, deletes, reactions and history pages."""

    #: (room, id) -> the changes of that message waiting behind the one in
    #: flight (there is one in flight while the key is here).
    _changing: dict[tuple[str, int], deque[ReviseOp]] = attrs.field(init=False, factory=dict)

    def _message_frame(
        self, key: Key, conn: Conn, event: MessageFrame, now: float
    ) -> list[Delivery]:
        with_ = event.with_
        if event.room is not None:
            self._member(conn, event.room, "reading or changing messages in", event.ref)
            name = event.room
        else:
            assert with_ is not None
            name = conversation_name(conn.user_id, with_)
        if not self.up:
            raise ProtocolError(503, UNAVAILABLE, event.ref)
        if isinstance(event, ReadHistory):
            before, ref = event.before, event.ref
            low = 1 if before is not None else (event.since or 0) + 1
            high = None if before is None else before - 1
            page = PageOp(name, low, high, HISTORY_PAGE_BYTES, event.since, before, ref, key, with_)
            self._ops.append(page)
            return []
        if not isinstance(event, Edit | Delete | React):
            raise TypeError(f"not a message frame: {event!r}")
        op = ReviseOp(name, event.id, "", "", None, event, conn.user_id, now, conn.origin, key)
        op.with_ = with_
        return self._change(op)

    def delete_any(
        self, room: str, id_: int, by: str, text: str, reply_to: Reply | None = None
    ) -> list[Delivery]:
        """Delete message *id_* of *room*, whoever wrote it, as moderator
        *by*, on every process (a delete without the author check, whose
        event every member gets followed by a ``system`` ``delete`` with
        *text*): *reply_to* gets the tombstone."""
        if not self.up:
            raise ProtocolError(503, UNAVAILABLE)
        request = Delete(room, None, id_)
        op = ReviseOp(room, id_, "", "", None, request, by, 0.0, "-", reply_to, text=text)
        return self._change(op)

    def _change(self, op: ReviseOp) -> list[Delivery]:
        """Start *op* (behind the changes of its message in flight here)."""
        if op.id > MAX_ID:
            return self._revise(op, None)[1]  # raises the rule's 404: no such message
        message = (op.room, op.id)
        waiting = self._changing.get(message)
        if waiting is not None:
            if len(waiting) >= MAX_WAITING:
                raise ProtocolError(503, UNAVAILABLE, op.request.ref)
            waiting.append(op)
            return []
        # (A conversation's messages are not cached here, nor the rooms not
        # served here.)
        room = self._rooms.get(op.room) if op.with_ is None else None
        item = room.cached(op.id) if room is not None else None
        if item is None:
            self._changing[message] = deque()
            self._ops.append(op)  # reads the current version first
            return []
        sent, deliveries = self._revise(op, item[1])
        if sent:
            self._changing[message] = deque()
        return deliveries

    def _revise(self, op: ReviseOp, current: str | None) -> tuple[bool, list[Delivery]]:
        """Apply *op*'s rule to *current* (the message's frame; None: it is
        not retained), and ask Redis to put the result in its place: whether
        it did (not for a change that changes nothing), and the answers."""
        log = _window(op.room, op.id, [current] if current is not None else [])
        event, message, changed = change_message(
            History(),
            Target(log, room=op.room) if op.with_ is None else Target(log, with_=op.with_),
            op.user_id,
            op.request,
            now=op.now,
            window=self.edit_window,
            reactions=self.reactions,
            any_author=op.text is not None,
        )
        if not changed:
            return False, self._answer_change(op, event, message)
        assert current is not None
        op.expected, op.frame, op.event = current, message.to_json(), event
        if op.text is not None:
            op.notice = moderator_notice(op.room, message, op.text).to_json()
        self._ops.append(op)
        return True, []

    def _answer_change(
        self,
        op: ReviseOp,
        event: MessageEdited | MessageDeleted | ReactionChanged,
        message: ChatMessage,
    ) -> list[Delivery]:
        """Answer *op*, which made *message*: with its *event* (and the
        frame's ``ref``), a moderator's delete with the tombstone."""
        if op.text is not None:
            return self.answer(op.reply_to, message)
        return self.answer(op.reply_to, attrs.evolve(event, ref=op.request.ref))

    def _advance(
        self, op: ReviseOp | None, message: tuple[str, int], current: str | None, known: bool = True
    ) -> list[Delivery]:
        """Go on with the changes of *message* here: *op* (or else the next
        one waiting) on *current*, its frame as Redis last answered it
        (None: not retained; if not *known*, it is read first), until one
        is sent to Redis or none is left."""
        waiting = self._changing[message]
        deliveries: list[Delivery] = []
        while True:
            if op is None:
                if not waiting:
                    del self._changing[message]
                    return deliveries
                op = waiting.popleft()
            if not known:
                op.expected = ""
                self._ops.append(op)
                return deliveries
            try:
                sent, answers = self._revise(op, current)
            except ProtocolError as error:
                sent, answers = False, self.answer(op.reply_to, None, error)
            deliveries += answers
            if sent:
                return deliveries
            op = None

    def _conversation_revised(self, name: str, origin: str, data: str) -> list[Delivery]:
        """A message of conversation *name* was revised (see the subclass)."""
        return []

    def _failure(self, result: BaseException, ref: str | None) -> ProtocolError:
        if isinstance(result, ProtocolError):
            return result
        return ProtocolError(503, UNAVAILABLE, ref)

    # ------------------------------------------------------------ answers

    def _revise_result(self, op: ReviseOp, result: Any) -> list[Delivery]:
        ref, message = op.request.ref, (op.room, op.id)
        if isinstance(result, BaseException):
            answer = self.answer(op.reply_to, None, self._failure(result, ref))
            return answer + self._advance(None, message, None, known=False)
        if result[0] == "ok":
            assert op.event is not None
            answer = self._answer_change(op, op.event, _message(op.frame))
            return answer + self._advance(None, message, op.frame)
        if result[0] == "nolog":
            assert op.with_ is not None
            answer = self.answer(op.reply_to, None, no_conversation(op.with_, ref))
            return answer + self._advance(None, message, None, known=False)
        current = result[1] if result[0] == "stale" else None
        if op.attempt + 1 >= MAX_ATTEMPTS:
            answer = self.answer(op.reply_to, None, ProtocolError(503, UNAVAILABLE, ref))
            return answer + self._advance(None, message, current)
        return self._advance(attrs.evolve(op, attempt=op.attempt + 1), message, current)

    def _page_result(self, op: PageOp, result: Any) -> list[Delivery]:
        if isinstance(result, BaseException):
            return self.answer(op.reply_to, None, self._failure(result, op.ref))
        high, entries, last = result
        if op.with_ is None:
            messages, truncated = history_page(window(op.room, high, entries), op.since, op.before)
            page = HistoryPage(op.room, None, messages, truncated, op.ref)
            return self.answer(op.reply_to, page)
        if not last:
            return self.answer(op.reply_to, None, no_conversation(op.with_, op.ref))
        messages, truncated = history_page(window(op.room, high, entries), op.since, op.before)
        messages = [direct_view(payload) for payload in messages]
        return self.answer(op.reply_to, HistoryPage(None, op.with_, messages, truncated, op.ref))

    def _revisions_result(self, op: RevisionsOp, result: Any) -> list[Delivery]:
        room = self._rooms.get(op.room)
        if room is None or not room.log.ready or isinstance(result, BaseException):
            return []
        revision, entries = result
        for entry_id, _origin, frame in entries:
            self._recache(op.room, room, entry_id, frame, revision)
        room.revision = max(room.revision, revision)
        return []

    # ------------------------------------------------------------ news

    def _refresh(self, name: str, room: ServedRoom) -> None:
        """Read *room*'s revised messages again (some news was lost)."""
        low = room.history[0][0] if room.history else room.log.cursor + 1
        self._ops.append(RevisionsOp(name, low))

    def _revised(
        self, name: str, revision: int, origin: str, id_: int, data: str
    ) -> list[Delivery]:
        """Message *id_* of room *name* was revised: *data* is the event's
        frame (and, after a moderator's delete, the ``system`` ``delete``'s)
        and the message's new one, a newline between each."""
        if is_conversation(name):
            return self._conversation_revised(name, origin, data)
        room = self._rooms.get(name)
        if room is None:
            return []
        if not room.log.ready:
            if len(room.early) < EARLY_REVISIONS:
                room.early.append((revision, origin, id_, data))
            else:
                room.early_lost = True
            return []
        if revision <= room.revision:
            return []
        if revision > room.revision + 1:
            self._refresh(name, room)
        room.revision = revision
        *events, frame = data.split("\n")
        self._recache(name, room, id_, frame, revision)
        if id_ > room.log.cursor:
            return []  # not delivered here yet: it comes in its new version
        sender = self._origins.get(origin)
        to = tuple(k for k in room.conns if k is not sender)
        return [Delivery(RawEvent(event), to) for event in events] if to else []

    def _loaded_revisions(self, name: str, room: ServedRoom) -> list[Delivery]:
        """Apply the revisions told while *room* loaded, now that it has."""
        early, room.early = room.early, []
        if room.early_lost:
            room.early_lost = False
            self._refresh(name, room)
        deliveries: list[Delivery] = []
        for revision, origin, id_, data in early:
            deliveries += self._revised(name, revision, origin, id_, data)
        return deliveries
