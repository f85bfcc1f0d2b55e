"""What messages count for: against the history budgets, and encoded.

Pure helpers shared by the logs (:mod:`trio_chat._log`), the hub's states
and the history answers: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from ._protocol import ChatMessage

__all__ = [
    "MESSAGE_OVERHEAD",
    "REACTION_BYTES",
    "message_bytes",
    "newest_within",
    "payload_bound",
    "payload_bytes",
    "retained_bytes",
    "utf8_len",
]
T = TypeVar("T")

#: A JSON string literal, as the protocol's encoder writes it.
_string = json.encoder.encode_basestring
#: Bytes of a chat payload's JSON besides its strings: keys, quotes, the id.
_PAYLOAD_OVERHEAD = 80


#: Bytes a retained message is counted for beyond its content and user id
#: (the message object, its time stamp and the bookkeeping around it).
MESSAGE_OVERHEAD = 300


def message_bytes(user_id: str, content: str, mentions: tuple[str, ...] = ()) -> int:
    """What one retained message counts against the history byte budgets."""
    size = len(content) if content.isascii() else len(content.encode("utf-8", "surrogatepass"))
    for name in mentions:
        size += len(name) + 3
    return size + len(user_id) + MESSAGE_OVERHEAD


#: Bytes each reaction on a message counts for beyond its user id.
REACTION_BYTES = 32


def retained_bytes(message: ChatMessage) -> int:
    """What *message* counts against the history byte budgets: its text,
    user id and mentions (:func:`message_bytes`) and its reactions."""
    size = message_bytes(message.user_id, message.content, message.mentions)
    if message.reactions:
        for users in message.reactions.values():
            for user_id in users:
                size += len(user_id) + REACTION_BYTES
    return size


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def payload_bytes(payload: dict[str, Any]) -> int:
    """An upper bound, within a few bytes, of a chat payload's encoded size."""
    size = (
        utf8_len(_string(payload["content"]))
        + utf8_len(payload["user_id"])
        + len(payload["room"])
        + len(payload["time"])
        + _PAYLOAD_OVERHEAD
    )
    if len(payload) > 5:
        size += _extra_bytes(payload)
    return size


def _extra_bytes(payload: dict[str, Any]) -> int:
    # ``edited``, ``deleted``, ``reactions``, ``mentions``: their names, and
    # names, emoji and ids that are safe JSON (no escapes) but for emoji.
    size = 64
    for name in payload.get("mentions", ()):
        size += len(name) + 3
    for emoji, users in payload.get("reactions", {}).items():
        size += utf8_len(emoji) + 6 + sum(len(u) + 3 for u in users)
    return size


def payload_bound(payload: dict[str, Any]) -> int:
    # JSON escapes a character to at most 6 bytes (``\u0001``).
    bound = 6 * len(payload["content"]) + 2 * len(payload["user_id"]) + 2 * _PAYLOAD_OVERHEAD
    if len(payload) > 5:
        bound += 2 * _extra_bytes(payload)
    return bound


def newest_within(items: list[T], size: Callable[[T], int], budget: int) -> tuple[list[T], bool]:
    """The newest *items* (oldest first) whose sizes add up to *budget* at
    most, and whether older ones were left out."""
    total = 0
    for i in range(len(items) - 1, -1, -1):
        total += size(items[i])
        if total > budget:
            return items[i + 1 :], True
    return items, False
