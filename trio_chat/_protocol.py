"""The wire protocol, sans I/O: parse client frames, serialize server events.

Nothing here touches the network or trio.  :func:`parse_client_frame` turns one
inbound text frame into a typed client event or raises :class:`ProtocolError`
carrying the error code the client must receive.  Every server event is a small
frozen class whose :meth:`~ServerEvent.to_json` gives exactly the frame the
protocol specifies; :func:`parse_server_frame` reads those frames back (for
clients and tests).
"""

from __future__ import annotations

import functools
import json
import re
import time as _time
from typing import Any, ClassVar

import attrs

from ._server_events import (
    ACK_PREFIX,
    CHAT_PREFIX,
    DIRECT_PREFIX,
    ChatAck,
    ChatMessage,
    CommandResult,
    ConversationList,
    DirectAck,
    DirectMessage,
    ErrorEvent,
    Joined,
    Left,
    PresenceUpdate,
    ServerEvent,
    System,
    TypingNotice,
    TypingWith,
    Welcome,
    ack_suffix,
    chat_suffix,
    direct_ack_suffix,
    direct_suffix,
    parse_server_frame,
)

__all__ = [
    "ACK_PREFIX",
    "CHAT_PREFIX",
    "COMMAND_PATTERN",
    "DIRECT_PREFIX",
    "MAX_PRESENCE_TEXT_CHARS",
    "MAX_REF_CHARS",
    "MAX_STATUS_CHARS",
    "ROOM_PATTERN",
    "USER_PATTERN",
    "Chat",
    "ChatAck",
    "ChatMessage",
    "ClientEvent",
    "Command",
    "CommandResult",
    "ConversationList",
    "Direct",
    "DirectAck",
    "DirectMessage",
    "ErrorEvent",
    "Join",
    "Joined",
    "Leave",
    "Left",
    "ListConversations",
    "Presence",
    "PresenceUpdate",
    "ProtocolError",
    "ServerEvent",
    "System",
    "Typing",
    "TypingNotice",
    "TypingTo",
    "TypingWith",
    "Welcome",
    "ack_suffix",
    "chat_suffix",
    "direct_ack_suffix",
    "direct_suffix",
    "format_time",
    "is_unicode",
    "is_valid_command",
    "is_valid_room",
    "is_valid_user_id",
    "parse_client_frame",
    "parse_server_frame",
]

ROOM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
USER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
_ROOM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
COMMAND_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_COMMAND_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

#: Longest ``ref`` a client may attach to a frame.
MAX_REF_CHARS = 64
#: Longest presence ``status``.
MAX_STATUS_CHARS = 32
#: Longest presence ``text`` (the protocol leaves it open; this is our limit).
MAX_PRESENCE_TEXT_CHARS = 256
#: Default longest chat or direct ``content``.
DEFAULT_MAX_CONTENT_CHARS = 4000


def is_valid_room(name: object) -> bool:
    """Whether *name* is a string matching :data:`ROOM_PATTERN`."""
    return isinstance(name, str) and _ROOM_RE.fullmatch(name) is not None


def is_valid_user_id(name: object) -> bool:
    """Whether *name* is a string matching :data:`USER_PATTERN`."""
    return isinstance(name, str) and _USER_RE.fullmatch(name) is not None


def is_valid_command(name: object) -> bool:
    """Whether *name* is a string matching :data:`COMMAND_PATTERN`."""
    return isinstance(name, str) and _COMMAND_RE.fullmatch(name) is not None


def format_time(seconds: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-29T04:31:24.123Z``."""
    millis = int(seconds * 1000)
    whole, ms = divmod(millis, 1000)
    return _format_second(whole) + f".{ms:03d}Z"


@functools.lru_cache(maxsize=4)
def _format_second(whole: int) -> str:
    # The hub stamps every message of a batch, and many batches a second,
    # with the same second.
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(whole))


def is_unicode(text: str) -> bool:
    """Whether *text* encodes as UTF-8, that is, holds no lone surrogate.

    JSON escapes (``"\\ud800"``) can carry lone surrogates inside perfectly
    valid UTF-8 frames; such a string cannot be sent on, so it is refused.
    """
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


#: A JSON string literal for a str, exactly as ``_dumps`` writes it.
_string = json.encoder.encode_basestring


# --------------------------------------------------------------------------
# Errors


@attrs.frozen
class ProtocolError(Exception):
    """A client frame the server refuses; the connection stays open.

    ``code`` is the protocol's error code (400, 403, 404, 413, 429, 500),
    ``message`` says what was wrong in words a person understands, and ``ref``
    is the offending frame's ``ref`` when it had a usable one.
    """

    code: int
    message: str
    ref: str | None = None
    retry_after_ms: int | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_event(self) -> ErrorEvent:
        return ErrorEvent(
            code=self.code,
            message=self.message,
            ref=self.ref,
            retry_after_ms=self.retry_after_ms,
        )


# --------------------------------------------------------------------------
# Client -> server events


@attrs.frozen
class ClientEvent:
    """Base class of the events a client sends."""

    type: ClassVar[str]


@attrs.frozen
class Join(ClientEvent):
    type: ClassVar[str] = "join"
    room: str
    since: int | None = None
    ref: str | None = None


@attrs.frozen
class Leave(ClientEvent):
    type: ClassVar[str] = "leave"
    room: str
    ref: str | None = None


@attrs.frozen
class Chat(ClientEvent):
    type: ClassVar[str] = "chat"
    room: str
    content: str
    ref: str | None = None


@attrs.frozen
class Presence(ClientEvent):
    type: ClassVar[str] = "presence"
    status: str
    text: str | None = None
    ref: str | None = None


@attrs.frozen
class Direct(ClientEvent):
    type: ClassVar[str] = "direct"
    to: str
    content: str
    ref: str | None = None


@attrs.frozen
class Typing(ClientEvent):
    type: ClassVar[str] = "typing"
    room: str
    ref: str | None = None


@attrs.frozen
class TypingTo(ClientEvent):
    """Typing to the user *with_*, in the direct conversation with them."""

    type: ClassVar[str] = "typing"
    with_: str
    ref: str | None = None


@attrs.frozen
class ListConversations(ClientEvent):
    """The user's direct conversations, most recent first."""

    type: ClassVar[str] = "conversations"
    ref: str | None = None


@attrs.frozen
class Command(ClientEvent):
    """A call of a command the embedding server registered (RPC): the
    answer is a ``result`` (or an ``error``) with the same ``ref``."""

    type: ClassVar[str] = "command"
    name: str
    args: Any = None
    ref: str | None = None


def _client_frame(event: ClientEvent) -> dict[str, Any]:
    payload = {
        f.name.rstrip("_"): getattr(event, f.name)
        for f in attrs.fields(type(event))
        if f.name != "ref" and getattr(event, f.name) is not None
    }
    frame: dict[str, Any] = {"type": event.type, "payload": payload}
    if event.ref is not None:  # type: ignore[attr-defined]
        frame["ref"] = event.ref  # type: ignore[attr-defined]
    return frame


def encode_client_event(event: ClientEvent) -> str:
    """The JSON text a client sends for *event* (used by clients and tests)."""
    return _dumps(_client_frame(event))


# --------------------------------------------------------------------------
# Parsing client frames


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _Fields:
    """Field checks for one payload, with messages naming the field."""

    def __init__(self, payload: dict[str, Any], ref: str | None) -> None:
        self.payload = payload
        self.ref = ref

    def fail(self, message: str, code: int = 400) -> ProtocolError:
        return ProtocolError(code, message, self.ref)

    def string(self, name: str, *, optional: bool = False) -> str | None:
        value = self.payload.get(name)
        if value is None:
            if optional:
                return None
            raise self.fail(f"payload.{name}: required")
        if not isinstance(value, str):
            raise self.fail(f"payload.{name}: must be a string")
        if not is_unicode(value):
            raise self.fail(f"payload.{name}: must not contain lone surrogates")
        return value

    def required(self, name: str) -> str:
        value = self.string(name)
        assert value is not None  # string() raises for a missing required field
        return value

    def room(self) -> str:
        room = self.required("room")
        if _ROOM_RE.fullmatch(room) is None:
            raise self.fail(f"payload.room: must match {ROOM_PATTERN}")
        return room

    def target(self) -> tuple[str | None, str | None]:
        """The log a frame names: its ``room`` or, for a direct conversation,
        ``with`` (the other user); exactly one of them."""
        has_room = self.payload.get("room") is not None
        if has_room == (self.payload.get("with") is not None):
            raise self.fail("payload: exactly one of room and with is required")
        if has_room:
            return self.room(), None
        return None, self.user("with")

    def user(self, name: str) -> str:
        user = self.required(name)
        if _USER_RE.fullmatch(user) is None:
            raise self.fail(f"payload.{name}: must match {USER_PATTERN}")
        return user

    def content(self, max_chars: int) -> str:
        content = self.required("content")
        if not content:
            raise self.fail("payload.content: must not be empty")
        if len(content) > max_chars:
            raise self.fail(f"payload.content: longer than {max_chars} characters", 413)
        return content


def parse_client_frame(
    text: str, *, max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS
) -> ClientEvent:
    """Parse one inbound text frame into a :class:`ClientEvent`.

    Raises :class:`ProtocolError` (code 400 or 413) for anything the protocol
    does not accept, and nothing else, whatever *text* holds.  Unknown extra
    fields are ignored.
    """
    try:
        frame = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ProtocolError(400, "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise ProtocolError(400, "frame must be a JSON object")

    ref = frame.get("ref")
    if ref is not None:
        if not isinstance(ref, str):
            raise ProtocolError(400, "ref: must be a string")
        if len(ref) > MAX_REF_CHARS:
            raise ProtocolError(400, f"ref: longer than {MAX_REF_CHARS} characters")
        if not is_unicode(ref):
            raise ProtocolError(400, "ref: must not contain lone surrogates")

    kind = frame.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(400, "type: required, must be a string", ref)
    payload = frame.get("payload")
    if not isinstance(payload, dict):
        raise ProtocolError(400, "payload: required, must be a JSON object", ref)

    fields = _Fields(payload, ref)
    if kind == "chat":
        return Chat(fields.room(), fields.content(max_content_chars), ref)
    if kind == "join":
        room = fields.room()
        since = payload.get("since")
        if since is not None and (
            type(since) is not int or since < 0  # bool is not an id
        ):
            raise fields.fail("payload.since: must be a non-negative integer")
        return Join(room, since, ref)
    if kind == "leave":
        return Leave(fields.room(), ref)
    if kind == "typing":
        _, with_ = fields.target()
        return TypingTo(with_, ref) if with_ is not None else Typing(fields.room(), ref)
    if kind == "direct":
        return Direct(fields.user("to"), fields.content(max_content_chars), ref)
    if kind == "presence":
        status = fields.required("status")
        if not status or len(status) > MAX_STATUS_CHARS:
            raise fields.fail(f"payload.status: must be 1 to {MAX_STATUS_CHARS} characters")
        text_ = fields.string("text", optional=True)
        if text_ is not None and len(text_) > MAX_PRESENCE_TEXT_CHARS:
            raise fields.fail(f"payload.text: longer than {MAX_PRESENCE_TEXT_CHARS} characters")
        return Presence(status, text_, ref)
    if kind == "command":
        if ref is None:
            raise fields.fail("ref: required for a command (its result carries it)")
        name = fields.required("name")
        if _COMMAND_RE.fullmatch(name) is None:
            raise fields.fail(f"payload.name: must match {COMMAND_PATTERN}")
        return Command(name, payload.get("args"), ref)
    if kind == "conversations":
        return ListConversations(ref)
    from ._message_frames import parse_message_frame
    from ._room_frames import parse_room_frame

    event = parse_message_frame(kind, fields, max_content_chars) or parse_room_frame(kind, fields)
    if event is not None:
        return event
    raise ProtocolError(
        400,
        f"type: unknown type {kind[:40]!r}; expected one of "
        "join, leave, chat, presence, direct, typing, command, edit, delete, react, history, "
        "conversations, read, rooms, topic",
        ref,
    )
