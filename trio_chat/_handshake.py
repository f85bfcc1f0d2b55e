"""The WebSocket opening handshake (RFC 6455 §4.2), checked strictly.

The HTTP front has already parsed the request with h11; :func:`check_upgrade`
decides from that parsed request alone (no second parse) whether it is a
valid upgrade, and :func:`response_bytes` writes the ``101 Switching
Protocols`` answer.  A refusal says which status to answer with and why:

* not HTTP/1.1, no ``Connection: upgrade``, not exactly one
  ``Sec-WebSocket-Key`` that is base64 for 16 bytes: **400**;
* ``Sec-WebSocket-Version`` other than exactly ``13``: **426** with
  ``Sec-WebSocket-Version: 13``.

The subprotocol rule: ``trio-chat.v1`` is selected when the client offers it,
otherwise none.  permessage-deflate is agreed when the server allows it and
the client offers parameters it can accept (:mod:`trio_chat._deflate`).

Pure: no I/O, no trio.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence

import attrs

from ._deflate import DeflateParams, negotiate

__all__ = ["SUBPROTOCOL", "Accepted", "Refused", "check_upgrade", "response_bytes"]

SUBPROTOCOL = "trio-chat.v1"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Headers = Sequence[tuple[bytes, bytes]]


@attrs.frozen
class Accepted:
    """A valid upgrade: what the 101 response says and the connection uses."""

    accept: str
    subprotocol: str | None = None
    deflate: DeflateParams | None = None


@attrs.frozen
class Refused:
    """An invalid upgrade: answer *status* with *reason* and *headers*."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def _index(headers: Headers) -> dict[bytes, list[bytes]]:
    """The header values by lowercased name, in order: one pass over them."""
    index: dict[bytes, list[bytes]] = {}
    for name, v in headers:
        key = name.lower()
        found = index.get(key)
        if found is None:
            index[key] = [v]
        else:
            found.append(v)
    return index


def _values(headers: dict[bytes, list[bytes]], name: bytes) -> list[str]:
    return [v.decode("latin-1") for v in headers.get(name, ())]


def _tokens(values: Iterable[str]) -> list[str]:
    return [t.strip() for value in values for t in value.split(",") if t.strip()]


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's key."""
    digest = hashlib.sha1(key.encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def check_upgrade(
    http_version: bytes, headers: Headers, *, deflate: bool = True
) -> Accepted | Refused:
    """Check a parsed upgrade request (h11's ``http_version`` and headers).

    The caller has already checked the method (GET) and the ``Upgrade``
    header.  *deflate* allows permessage-deflate to be agreed.
    """
    if http_version != b"1.1":
        return Refused(400, "WebSocket upgrades need HTTP/1.1")
    index = _index(headers)
    if "upgrade" not in (t.lower() for t in _tokens(_values(index, b"connection"))):
        return Refused(400, "a WebSocket upgrade needs 'Connection: upgrade'")
    versions = _values(index, b"sec-websocket-version")
    if versions != ["13"]:
        return Refused(
            426,
            "unsupported Sec-WebSocket-Version: this server speaks 13",
            (("sec-websocket-version", "13"),),
        )
    keys = _values(index, b"sec-websocket-key")
    if len(keys) != 1:
        return Refused(400, "a WebSocket upgrade needs exactly one Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        return Refused(400, "Sec-WebSocket-Key must be base64 for 16 bytes")
    offered = _tokens(_values(index, b"sec-websocket-protocol"))
    params = negotiate(_values(index, b"sec-websocket-extensions")) if deflate else None
    return Accepted(
        accept_key(key),
        SUBPROTOCOL if SUBPROTOCOL in offered else None,
        params,
    )


def response_bytes(accepted: Accepted) -> bytes:
    """The ``101 Switching Protocols`` response head for *accepted*."""
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + accepted.accept.encode("ascii"),
    ]
    if accepted.subprotocol is not None:
        lines.append(b"Sec-WebSocket-Protocol: " + accepted.subprotocol.encode("ascii"))
    if accepted.deflate is not None:
        lines.append(b"Sec-WebSocket-Extensions: " + accepted.deflate.response.encode("ascii"))
    return b"\r\n".join(lines) + b"\r\n\r\n"
