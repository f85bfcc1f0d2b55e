"""The server's events on the wire: what the server sends, and reading it back.

Every server event is a small frozen class whose :meth:`~ServerEvent.to_json`
gives exactly the frame the protocol specifies; :func:`parse_server_frame`
reads those frames back (for clients and tests).  Pure: no I/O, no trio.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import attrs

__all__ = [
    "ACK_PREFIX",
    "CHAT_PREFIX",
    "DIRECT_PREFIX",
    "ChatAck",
    "ChatMessage",
    "CommandResult",
    "ConversationList",
    "DirectAck",
    "DirectMessage",
    "ErrorEvent",
    "Joined",
    "Left",
    "PresenceUpdate",
    "ServerEvent",
    "System",
    "TypingNotice",
    "TypingWith",
    "Welcome",
    "ack_suffix",
    "chat_suffix",
    "direct_ack_suffix",
    "direct_suffix",
    "parse_server_frame",
]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


#: A JSON string literal for a str, exactly as ``_dumps`` writes it.
_string = json.encoder.encode_basestring


# --------------------------------------------------------------------------
# Server -> client events


@attrs.frozen
class ServerEvent:
    """Base class of the events the server sends.

    :meth:`payload` gives the protocol's payload object and :meth:`to_json`
    the whole frame as compact JSON text.
    """

    type: ClassVar[str]

    def payload(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in attrs.fields(type(self))}

    def frame(self) -> dict[str, Any]:
        return {"type": self.type, "payload": self.payload()}

    def to_json(self) -> str:
        return _dumps(self.frame())


class _WithRef(ServerEvent):
    """Events that echo the ``ref`` of the frame they answer."""

    #: Declared by each subclass (an attrs field); named here for the checker.
    ref: str | None

    def payload(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in attrs.fields(type(self)) if f.name != "ref"}

    def frame(self) -> dict[str, Any]:
        frame = super().frame()
        ref = self.ref
        if ref is not None:
            frame["ref"] = ref
        return frame


@attrs.frozen
class Welcome(ServerEvent):
    type: ClassVar[str] = "welcome"
    session_id: str
    user_id: str
    limits: dict[str, Any]


@attrs.frozen
class Joined(_WithRef):
    """``epoch`` names the room's numbering: the same value as last time
    means its ids continued; a new one, that they started over at 1."""

    type: ClassVar[str] = "joined"
    room: str
    members: list[str]
    history: list[dict[str, Any]]
    truncated: bool
    ref: str | None = None
    epoch: str | None = None
    #: The user's read marker in the room, and how many retained messages
    #: after it are from others (and of those, mention the user); None from
    #: a store without read markers.
    read: int | None = None
    unread: int | None = None
    mentions: int | None = None
    topic: str | None = None

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "room": self.room,
            "members": self.members,
            "history": self.history,
            "truncated": self.truncated,
        }
        if self.epoch is not None:
            payload["epoch"] = self.epoch
        if self.read is not None:
            payload.update(read=self.read, unread=self.unread, mentions=self.mentions)
        if self.topic is not None:
            payload["topic"] = self.topic
        return payload


@attrs.frozen
class Left(_WithRef):
    type: ClassVar[str] = "left"
    room: str
    ref: str | None = None


@attrs.frozen
class System(_WithRef):
    """Something that happened to *user_id* in *room*: ``join``, ``leave``,
    a moderator's ``kick``, ``ban``, ``mute``, ``unmute`` (with ``text``
    saying so in words), or ``topic`` (``text``: the new topic); the copy
    for the connection whose frame caused it carries that frame's ``ref``."""

    type: ClassVar[str] = "system"
    event: str
    room: str
    user_id: str
    text: str | None = None
    ref: str | None = None

    def payload(self) -> dict[str, Any]:
        payload = {"event": self.event, "room": self.room, "user_id": self.user_id}
        if self.text is not None:
            payload["text"] = self.text
        return payload


@attrs.frozen
class ChatMessage(ServerEvent):
    """A chat message as delivered and as kept in history.

    Beside the text, a message may carry (each absent from its JSON when
    unset): ``edited``, the time of its last edit; ``deleted``, true for a
    tombstone (``content`` is then ``""``); ``reactions``, each emoji with
    the users who have it on, in the order they reacted (None when there is
    none); ``mentions``, the user ids its content mentions
    (:func:`~trio_chat._mentions.find_mentions`).
    """

    type: ClassVar[str] = "chat"
    id: int
    room: str
    user_id: str
    content: str
    time: str
    edited: str | None = None
    deleted: bool = False
    reactions: dict[str, tuple[str, ...]] | None = attrs.field(default=None, hash=False)
    mentions: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": self.id,
            "room": self.room,
            "user_id": self.user_id,
            "content": self.content,
            "time": self.time,
        }
        if self.edited is not None:
            payload["edited"] = self.edited
        if self.deleted:
            payload["deleted"] = True
        if self.reactions:
            payload["reactions"] = {emoji: list(users) for emoji, users in self.reactions.items()}
        if self.mentions:
            payload["mentions"] = list(self.mentions)
        return payload

    def to_json(self) -> str:
        # The hot path: one per broadcast.  Same text as the generic
        # ``_dumps(self.frame())``, which the tests check.
        if self.edited is None and self.reactions is None and not self.deleted:
            return (
                CHAT_PREFIX
                + str(int(self.id))
                + chat_suffix(self.room, self.user_id, self.content, self.time, self.mentions)
            )
        return _dumps(self.frame())


#: A chat frame's text before its id, and :func:`chat_suffix` the rest: a
#: store that assigns ids itself (Redis, in a script) joins the three.
CHAT_PREFIX = '{"type":"chat","payload":{"id":'
#: The same for a chat message's ack (:func:`ack_suffix`).
ACK_PREFIX = '{"type":"ack","payload":{"id":'


def chat_suffix(
    room: str, user_id: str, content: str, time: str, mentions: tuple[str, ...] = ()
) -> str:
    """A chat frame after its id: ``CHAT_PREFIX + str(id) + chat_suffix(...)``
    is ``ChatMessage(id, room, user_id, content, time, mentions=mentions).to_json()``."""
    end = "}}" if not mentions else ',"mentions":' + _dumps(list(mentions)) + "}}"
    return (
        f',"room":{_string(room)},"user_id":{_string(user_id)},'
        f'"content":{_string(content)},"time":{_string(time)}{end}'
    )


def ack_suffix(room: str, time: str, ref: str | None) -> str:
    """An ack frame after its id: ``ACK_PREFIX + str(id) + ack_suffix(...)``
    is ``ChatAck(id, room, time, ref).to_json()``."""
    tail = "" if ref is None else f',"ref":{_string(ref)}'
    return f',"room":{_string(room)},"time":{_string(time)}}}{tail}}}'


#: The same for a ``direct`` frame (:func:`direct_suffix`) and its ack
#: (:func:`direct_ack_suffix`).
DIRECT_PREFIX = '{"type":"direct","payload":{"id":'


def direct_suffix(
    from_: str, to: str, content: str, time: str, mentions: tuple[str, ...] = ()
) -> str:
    """A ``direct`` frame after its id: ``DIRECT_PREFIX + str(id) +
    direct_suffix(...)`` is the frame of a new message of the conversation
    (:meth:`DirectMessage.stored`)."""
    end = "}}" if not mentions else ',"mentions":' + _dumps(list(mentions)) + "}}"
    return (
        f',"from":{_string(from_)},"to":{_string(to)},'
        f'"content":{_string(content)},"time":{_string(time)}{end}'
    )


def direct_ack_suffix(to: str, time: str, ref: str | None) -> str:
    """A direct message's ack after its id: ``ACK_PREFIX + str(id) +
    direct_ack_suffix(...)`` is ``DirectAck(to, time, ref, id).to_json()``."""
    tail = "" if ref is None else f',"ref":{_string(ref)}'
    return f',"to":{_string(to)},"time":{_string(time)}}}{tail}}}'


@attrs.frozen
class ChatAck(_WithRef):
    type: ClassVar[str] = "ack"
    id: int
    room: str
    time: str
    ref: str | None = None

    def to_json(self) -> str:
        # One per chat message; same text as the generic serialization.
        return ACK_PREFIX + str(int(self.id)) + ack_suffix(self.room, self.time, self.ref)


@attrs.frozen
class DirectAck(_WithRef):
    """A direct message's ack; ``id`` numbers it in the conversation (the
    Redis store sends none)."""

    type: ClassVar[str] = "ack"
    to: str
    time: str
    ref: str | None = None
    id: int | None = None

    def payload(self) -> dict[str, Any]:
        if self.id is None:
            return {"to": self.to, "time": self.time}
        return {"id": self.id, "to": self.to, "time": self.time}


@attrs.frozen
class PresenceUpdate(ServerEvent):
    type: ClassVar[str] = "presence"
    user_id: str
    status: str
    text: str | None = None

    def payload(self) -> dict[str, Any]:
        payload = {"user_id": self.user_id, "status": self.status}
        if self.text is not None:
            payload["text"] = self.text
        return payload


@attrs.frozen
class DirectMessage(ServerEvent):
    """A direct message: ``id`` numbers it in the conversation of ``from_``
    and ``to``; *extra* holds the other fields of its payload (``edited``,
    ``reactions``, ...).  The Redis store sends neither id nor ``to``."""

    type: ClassVar[str] = "direct"
    from_: str
    content: str
    time: str
    id: int | None = None
    to: str | None = None
    extra: dict[str, Any] | None = attrs.field(default=None, hash=False)

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {} if self.id is None else {"id": self.id}
        payload["from"] = self.from_
        if self.to is not None:
            payload["to"] = self.to
        payload["content"] = self.content
        payload["time"] = self.time
        if self.extra:
            payload.update(self.extra)
        return payload

    @classmethod
    def stored(cls, message: ChatMessage, to: str) -> DirectMessage:
        """The direct event for *message*, kept in its conversation's log,
        sent by ``message.user_id`` to *to*."""
        payload = message.payload()
        for name in _CHAT_FIELDS:
            payload.pop(name, None)
        return cls(message.user_id, message.content, message.time, message.id, to, payload or None)


#: The fields of a chat payload that a direct payload names otherwise.
_CHAT_FIELDS = ("id", "room", "user_id", "content", "time")
_DIRECT_FIELDS = ("id", "from", "to", "content", "time")


@attrs.frozen
class TypingNotice(ServerEvent):
    type: ClassVar[str] = "typing"
    room: str
    user_id: str


@attrs.frozen
class TypingWith(ServerEvent):
    """*user_id* is typing to the recipient; *with_* is the typing user
    (the conversation, from the recipient's side)."""

    type: ClassVar[str] = "typing"
    with_: str
    user_id: str

    def payload(self) -> dict[str, Any]:
        return {"with": self.with_, "user_id": self.user_id}


@attrs.frozen
class ConversationList(_WithRef):
    """The answer to ``conversations``: the user's conversations, most
    recent first."""

    type: ClassVar[str] = "conversations"
    conversations: list[dict[str, Any]]
    truncated: bool
    ref: str | None = None


@attrs.frozen
class CommandResult(_WithRef):
    """What a command returned (any JSON value), answering its ``ref``."""

    type: ClassVar[str] = "result"
    name: str
    result: Any
    ref: str | None = None


@attrs.frozen
class ErrorEvent(_WithRef):
    type: ClassVar[str] = "error"
    code: int
    message: str
    ref: str | None = None
    retry_after_ms: int | None = None

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after_ms is not None:
            payload["retry_after_ms"] = self.retry_after_ms
        return payload


# --------------------------------------------------------------------------
# Parsing server frames (for clients and tests)


def _chat_message(p: dict[str, Any]) -> ChatMessage:
    reactions = p.get("reactions")
    return ChatMessage(
        p["id"],
        p["room"],
        p["user_id"],
        p["content"],
        p["time"],
        p.get("edited"),
        p.get("deleted", False) is True,
        {e: tuple(u) for e, u in reactions.items()} if reactions else None,
        tuple(p.get("mentions", ())),
    )


def parse_server_frame(text: str | bytes) -> ServerEvent:
    """Parse a frame the server sent into its :class:`ServerEvent`.

    Raises ``ValueError`` for anything that is not a server event.
    """
    frame = json.loads(text)
    if not isinstance(frame, dict) or not isinstance(frame.get("payload"), dict):
        raise ValueError("not a server frame")
    kind, p, ref = frame.get("type"), frame["payload"], frame.get("ref")
    try:
        if kind == "chat":
            return _chat_message(p)
        if kind == "ack":
            if "to" in p:
                return DirectAck(p["to"], p["time"], ref, p.get("id"))
            return ChatAck(p["id"], p["room"], p["time"], ref)
        if kind == "welcome":
            return Welcome(p["session_id"], p["user_id"], p["limits"])
        if kind == "joined":
            return Joined(
                p["room"],
                p["members"],
                p["history"],
                p["truncated"],
                ref,
                p.get("epoch"),
                p.get("read"),
                p.get("unread"),
                p.get("mentions"),
                p.get("topic"),
            )
        if kind == "left":
            return Left(p["room"], ref)
        if kind == "system":
            return System(p["event"], p["room"], p["user_id"], p.get("text"), ref)
        if kind == "presence":
            return PresenceUpdate(p["user_id"], p["status"], p.get("text"))
        if kind == "direct":
            extra = {k: v for k, v in p.items() if k not in _DIRECT_FIELDS}
            return DirectMessage(
                p["from"], p["content"], p["time"], p.get("id"), p.get("to"), extra or None
            )
        if kind == "typing":
            if "with" in p:
                return TypingWith(p["with"], p["user_id"])
            return TypingNotice(p["room"], p["user_id"])
        if kind == "conversations":
            return ConversationList(p["conversations"], p["truncated"], ref)
        if kind == "result":
            return CommandResult(p["name"], p["result"], ref)
        if kind == "error":
            return ErrorEvent(p["code"], p["message"], ref, p.get("retry_after_ms"))
        from ._message_events import parse_message_event
        from ._room_frames import parse_room_event

        event = parse_message_event(kind, p, ref) or parse_room_event(kind, p, ref)
        if event is not None:
            return event
    except KeyError as exc:
        raise ValueError(f"{kind} frame without payload.{exc.args[0]}") from None
    raise ValueError(f"unknown server frame type {kind!r}")
