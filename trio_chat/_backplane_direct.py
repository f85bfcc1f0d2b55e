"""Direct conversations with the Redis store.

A conversation's messages are a log in Redis like a room's, under the same
log name as with the other stores (the two user ids, sorted, a space
between them: :func:`~trio_chat._conversations.conversation_name`), so that
its ids, history pages, edits, deletes and reactions are a room's (see
:mod:`trio_chat._backplane_messages`).  What differs is who hears of it:

* a ``direct`` is one script (:class:`DirectOp`): it starts the
  conversation within its bounds, takes its next id, appends it to its log,
  and for each of the two users connected somewhere appends the ``direct``
  frame to their *inbox* and publishes it there.  Each process delivers a
  user's inbox to that user's connections here (but the sending one), with
  a cursor like a room's, so that every connection of both users gets it
  once, whichever process it is on; the sending process delivers it with
  the ack;
* a ``conversations`` reads the user's conversations, markers and newest
  messages from Redis (:class:`ConversationsOp`) and lists them with the
  other stores' function
  (:func:`~trio_chat._hub_directory.list_conversations`).

Pure and synchronous like the rest of the state: no I/O.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._backplane_directory import ClusterDirectory
from ._backplane_messages import window
from ._backplane_ops import UNAVAILABLE, ConversationsOp, DirectOp, RawEvent
from ._conversations import conversation_name, conversation_refused, conversation_users, to_oneself
from ._hub_directory import list_conversations
from ._mentions import find_mentions
from ._protocol import (
    DIRECT_PREFIX,
    ClientEvent,
    DirectAck,
    ListConversations,
    ProtocolError,
    chat_suffix,
    direct_ack_suffix,
    direct_suffix,
    format_time,
    parse_server_frame,
)
from ._room_core import Conn, Delivery, Key, Post

__all__ = ["ClusterConversations"]


@attrs.define
class ClusterConversations(ClusterDirectory):
    """The rooms, messages and topics of
    :class:`~trio_chat._backplane_directory.ClusterDirectory`, with direct
    conversations.

    Args:
        max_conversations_per_user: conversations one user may be in (a new
            one beyond it: 403, for its sender and its addressee); Redis
            keeps ``max_conversations`` in all (see
            :class:`~trio_chat._backplane_lua.Retention`).
    """

    max_conversations_per_user: int = 200

    def _direct(self, post: Post) -> list[Delivery]:
        """Ask Redis to store a direct message and deliver it to both users."""
        if not self.up:
            raise ProtocolError(503, UNAVAILABLE, post.ref)
        user, to, content = post.user_id, post.to, post.content
        time = format_time(post.now)
        name = conversation_name(user, to)
        mentions = find_mentions(content)
        op = DirectOp(
            user,
            to,
            name,
            chat_suffix(name, user, content, time, mentions),
            direct_suffix(user, to, content, time, mentions),
            direct_ack_suffix(to, time, post.ref),
            time,
            post.ref,
            self._origin(post.reply_to),
            self.epoch or "",
            post.reply_to,
        )
        self._ops.append(op)
        return []

    def _direct_result(self, op: DirectOp, result: Any) -> list[Delivery]:
        if isinstance(result, BaseException):
            return self.answer(op.reply_to, None, self._failure(result, op.ref))
        status = result[0]
        if status == "ok":
            id_ = int(result[1])
            # Delivered here now (pub/sub's copy is then a duplicate).
            frame = DIRECT_PREFIX + str(id_) + op.direct_suffix
            deliveries: list[Delivery] = []
            for user, inbox in ((op.user_id, result[2]), (op.to, result[3])):
                if int(inbox):
                    deliveries += self._ingest("u", user, [(int(inbox), op.origin, frame)], True)
            ack = DirectAck(op.to, op.time, op.ref, id_)
            return deliveries + self.answer(op.reply_to, ack, None)
        if status == "dup":
            return self._remembered(op.reply_to, result[1], op.ref)
        if status == "self":  # (after the ref's check, as with the other stores)
            return self.answer(op.reply_to, None, to_oneself(op.ref))
        if status in {"full", "tofull"}:
            to = op.to if status == "tofull" else None
            error = conversation_refused(self.max_conversations_per_user, to, op.ref)
            return self.answer(op.reply_to, None, error)
        self.want_sync = True
        return self.answer(op.reply_to, None, ProtocolError(503, UNAVAILABLE, op.ref))

    def _remembered(self, reply_to: Any, ack: str, ref: str | None) -> list[Delivery]:
        """Answer a resent ``ref`` with the ack Redis remembered for it (its
        frame, as the other stores keep it too)."""
        try:
            event = parse_server_frame(ack)
        except ValueError:  # not one this version wrote: ask for a retry later
            return self.answer(reply_to, None, ProtocolError(503, UNAVAILABLE, ref))
        return self.answer(reply_to, event, None)

    def _extended(self, key: Key, conn: Conn, event: ClientEvent, now: float) -> list[Delivery]:
        if isinstance(event, ListConversations):
            if not self.up:
                raise ProtocolError(503, UNAVAILABLE, event.ref)
            self._ops.append(ConversationsOp(conn.user_id, event.ref, key))
            return []
        return super()._extended(key, conn, event, now)

    def _conversations_result(self, op: ConversationsOp, result: Any) -> list[Delivery]:
        if isinstance(result, BaseException):
            return self.answer(op.reply_to, None, self._failure(result, op.ref))
        user = op.user_id
        items = []
        for name, last, read, entries in result:
            a, b = conversation_users(name)
            items.append((b if a == user else a, window(name, last, entries), read))
        listing = list_conversations(items, user, self.joined_bytes, op.ref)
        return self.answer(op.reply_to, listing, None)

    def _conversation_revised(self, name: str, origin: str, data: str) -> list[Delivery]:
        """A message of conversation *name* was revised: *data* is the
        event's frame for each of its users (in the log name's order) and
        the message's new frame, a newline between each."""
        sender = self._origins.get(origin)
        deliveries: list[Delivery] = []
        for user, frame in zip(conversation_users(name), data.split("\n")[:2], strict=True):
            served = self._users.get(user)
            to = tuple(k for k in served.conns if k is not sender) if served is not None else ()
            if to:
                deliveries.append(Delivery(RawEvent(frame), to))
        return deliveries
