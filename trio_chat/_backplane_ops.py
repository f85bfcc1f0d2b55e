"""What the Redis store's state asks of Redis, and what Redis answers.

:class:`~trio_chat._backplane_state.ClusterState` queues these records
(:meth:`~trio_chat._backplane_state.ClusterState.take_ops`); the backplane's
publisher (:mod:`trio_chat._backplane`) carries each out with one script or
command in a pipeline and hands the result back.  Pure records, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ._room_core import Key, Reply

if TYPE_CHECKING:
    from ._message_events import MessageDeleted, MessageEdited, ReactionChanged
    from ._message_frames import Delete, Edit, React
    from ._room_frames import ListRooms

__all__ = [
    "FILL_COUNT",
    "NOT_OFFERED",
    "UNAVAILABLE",
    "ChatOp",
    "CloseOp",
    "ConversationsOp",
    "DirectOp",
    "FillOp",
    "FloorOp",
    "LoadOp",
    "LoadResult",
    "MemberOp",
    "MembersOp",
    "OnlineOp",
    "Op",
    "PageOp",
    "PresenceOp",
    "RawEvent",
    "ReviseOp",
    "RevisionsOp",
    "RoomsOp",
    "SyncOp",
    "TopicOp",
    "TypingOp",
    "Unavailable",
]

#: The error a client gets instead of an ack while Redis cannot be reached.
UNAVAILABLE = "backplane unavailable, retry"
#: The error (501) for a frame the Redis store does not offer.
NOT_OFFERED = "not available with the Redis store"
#: Entries one :class:`FillOp` reads at most; a full page asks for the next.
FILL_COUNT = 500


class Unavailable(Exception):
    """An op could not be carried out because Redis is unreachable."""


@attrs.frozen
class RawEvent:
    """A server event already encoded: the JSON text of its whole frame."""

    text: str

    def to_json(self) -> str:
        return self.text


# --------------------------------------------------------------------------
# Ops: what must happen in Redis


@attrs.define(eq=False)
class Op:
    """Base class of the requests the state makes of Redis."""


@attrs.define(eq=False)
class ChatOp(Op):
    """Append a chat message to *room*'s log and publish it."""

    room: str
    user_id: str
    #: The message frame after its id (:func:`~trio_chat._protocol.chat_suffix`).
    suffix: str
    time: str
    ref: str | None
    #: ``node:serial`` of the sending connection (skipped on delivery) or ``-``.
    origin: str
    create: bool
    epoch: str
    reply_to: Key | Reply | None


@attrs.define(eq=False)
class DirectOp(Op):
    """Append a direct message to the conversation of *user_id* and *to*
    (its log *name*), and publish it to both users' inboxes.

    Answers ``("ok", id, sender's inbox id, addressee's inbox id)`` (0 for
    a user connected nowhere), ``("dup", ack)``, ``("self",)``,
    ``("full",)``, ``("tofull",)`` or ``("epoch",)``.
    """

    user_id: str
    to: str
    name: str
    #: The log's chat frame after its id
    #: (:func:`~trio_chat._protocol.chat_suffix`), the ``direct`` frame's
    #: and the ack's.
    suffix: str
    direct_suffix: str
    ack_suffix: str
    time: str
    ref: str | None
    origin: str
    epoch: str
    reply_to: Key | Reply | None


@attrs.define(eq=False)
class ConversationsOp(Op):
    """Read *user_id*'s conversations for a ``conversations`` (answers
    ``[(log name, last id, read marker, [(id, origin, frame)])]``, most
    recent first, the entries newest first)."""

    user_id: str
    ref: str | None
    reply_to: Key | Reply | None


@attrs.define(eq=False)
class MemberOp(Op):
    """This process's first (``joined``) or last connection of a user in a room."""

    room: str
    user_id: str
    joined: bool


@attrs.define(eq=False)
class OnlineOp(Op):
    """This process's first (``online``) or last connection of a user.

    Going online answers the user's inbox id at that moment (an int).
    """

    user_id: str
    online: bool


@attrs.define(eq=False)
class LoadOp(Op):
    """Read a room: its last id, recent history and cluster members.

    At most *count* messages of history, the newest whose frames add up to
    *max_bytes* at most.
    """

    room: str
    count: int
    max_bytes: int = 1 << 19


@attrs.frozen
class LoadResult:
    """The answer to a :class:`LoadOp`."""

    last_id: int
    #: ``(id, origin, frame)``, oldest first.
    entries: list[tuple[int, str, str]]
    members: list[str]
    members_version: int
    #: user -> presence frame, for members that have set a status.
    presence: dict[str, str]
    #: The name of the room's numbering (``joined.epoch``).
    epoch: str = ""
    #: The room's revision: how many times its messages were revised.
    revision: int = 0
    #: The room's topic ("": none).
    topic: str = ""


@attrs.define(eq=False)
class ReviseOp(Op):
    """Put the new version of message *id* of *room* (its *frame*) in place
    of the current one, which this process knows as *expected*, and publish
    *event* to every process; or, with *expected* ``""`` (not known here),
    only read the current one.

    Answers ``("ok", revision)``, ``("stale", current frame)`` (nothing
    changed), ``("gone",)`` (the message is not retained) or ``("nolog",)``
    (no such conversation).
    """

    room: str
    id: int
    expected: str
    frame: str
    event: MessageEdited | MessageDeleted | ReactionChanged | None
    #: The frame it comes from, and from whom, when, through which connection.
    request: Edit | Delete | React
    user_id: str
    now: float
    origin: str
    reply_to: Key | Reply | None
    #: Earlier tries that found the message changed meanwhile.
    attempt: int = 0
    #: The other user, for a conversation's message (*room* is its log name).
    with_: str | None = None
    #: A moderator's delete (of anyone's message): the text of the
    #: ``system`` ``delete`` that follows its event, and that event's frame.
    text: str | None = None
    notice: str = ""


@attrs.define(eq=False)
class PageOp(Op):
    """Read the newest messages of *room* with ids from *low* to *high*
    (None: its last id) whose frames add up to *budget* bytes, the one
    that crosses it included (answers ``(high, [(id, origin, frame)],
    last)``, newest first, *high* clipped to the room's last id *last*)."""

    room: str
    low: int
    high: int | None
    budget: int
    since: int | None
    before: int | None
    ref: str | None
    reply_to: Key | Reply | None
    #: The other user, for a conversation's page (*room* is its log name).
    with_: str | None = None


@attrs.define(eq=False)
class RevisionsOp(Op):
    """Read the revised messages of *room* with ids from *low* on, and its
    revision (answers ``(revision, [(id, origin, frame)])``)."""

    room: str
    low: int


@attrs.define(eq=False)
class PresenceOp(Op):
    """Store a user's presence and publish it to every process."""

    user_id: str
    frame: str


@attrs.define(eq=False)
class TypingOp(Op):
    """Publish a typing notice to the other processes: those serving room
    *to* (*kind* ``"r"``), or where user *to* is connected (``"u"``: a
    ``typing`` to that user)."""

    to: str
    user_id: str
    origin: str
    frame: str
    kind: str = "r"


@attrs.define(eq=False)
class FillOp(Op):
    """Read a log's entries after *after* (answers ``(id, origin, frame)`` list).

    *kind* is ``"r"`` for a room, ``"u"`` for a user's inbox.
    """

    kind: str
    name: str
    after: int


@attrs.define(eq=False)
class FloorOp(Op):
    """After Redis lost its data: make *room*'s next id greater than *floor*."""

    room: str
    floor: int
    #: The room's epoch as this process knows it (kept if Redis has none).
    epoch: str = ""


@attrs.define(eq=False)
class MembersOp(Op):
    """Read a room's cluster members and topic (answers ``(version,
    [users], topic)``, the topic ``""`` when there is none)."""

    room: str


@attrs.define(eq=False)
class CloseOp(Op):
    """Close *room* as *user_id*: remove its members on every process, drop
    its keys (history, ids, topic) and publish the close, with the room's
    next membership version, to every process serving it (answers
    ``("ok", version, memberships removed on other processes)``, or
    ``("noroom",)``)."""

    room: str
    user_id: str
    text: str
    reply_to: Key | Reply | None


@attrs.define(eq=False)
class RoomsOp(Op):
    """Read the first *count* rooms of the cluster's directory, for
    *request* (answers ``(more, [(room, members, topic)])``, most members
    first, then by name, the topic ``""`` when there is none, *more* when
    the directory holds more rooms than were read)."""

    request: ListRooms
    count: int
    reply_to: Key | Reply | None


@attrs.define(eq=False)
class TopicOp(Op):
    """Set *room*'s topic (``""`` clears it) as *user_id* and publish it to
    every process serving the room, with the room's next membership version
    (answers ``("ok", version)``, or ``("noroom",)`` when the room does not
    exist)."""

    room: str
    topic: str
    user_id: str
    #: ``node:serial`` of the sending connection (skipped on delivery) or ``-``.
    origin: str
    ref: str | None
    reply_to: Key | Reply | None


@attrs.define(eq=False)
class SyncOp(Op):
    """Make Redis hold exactly this process's memberships; answer the epoch.

    *entries* are ``"m ROOM USER"`` and ``"u USER"``; *inbox_users* are users
    whose inbox id is wanted.  Answers ``(epoch, {user: inbox id})``.
    """

    entries: list[str]
    inbox_users: list[str]
    #: The connection it was made for; an answer meant for an older one is
    #: ignored.
    generation: int = 0
