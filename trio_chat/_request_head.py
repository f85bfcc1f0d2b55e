"""The one cheap parse of a WebSocket upgrade's request head.

:func:`parse_upgrade_head` parses a complete request head in the strict
form WebSocket clients send: ``GET <target> HTTP/1.1``, CRLF line ends,
header lines by RFC 7230's grammar, exactly one ``Host``, no body framing
(no ``Content-Length``, no ``Transfer-Encoding``) and an ``Upgrade`` header
that names ``websocket``.  It returns the target and the headers, or None
for anything else; the HTTP front then parses the same bytes with h11, as
it does every other request, so whatever this parser declines is answered
exactly as before.  What it accepts, h11 accepts too, with the same
method, target, version, headers and trailing bytes
(``tests/test_request_head.py`` checks both with Hypothesis).

Pure: no I/O, no trio.
"""

from __future__ import annotations

import re

__all__ = ["HEAD_END", "UpgradeHead", "parse_upgrade_head"]

#: The blank line that ends a request head in the strict form.
HEAD_END = b"\r\n\r\n"

# RFC 7230's grammar, as h11 reads it: a token, then visible characters (or
# obs-text) with single spaces or tabs between them; optional whitespace
# around a header value is not part of it.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_FIELD_VCHAR = rb"[^\x00\s]"
_FIELD_VALUE = rb"(?:" + _FIELD_VCHAR + rb"+(?:[ \t]+" + _FIELD_VCHAR + rb"+)*)?"
_HEADER = re.compile(b"(" + _TOKEN + rb"):[ \t]*(" + _FIELD_VALUE + rb")[ \t]*")
_REQUEST_LINE = re.compile(rb"GET ([\x21-\x7e]+) HTTP/1\.1")
#: Headers that would make the request carry a body: h11 frames it.
_BODY_FRAMING = (b"content-length", b"transfer-encoding")


class UpgradeHead:
    """A parsed upgrade head: its target and its headers, in order, each
    name lowercased (as h11 gives them)."""

    __slots__ = ("headers", "target")

    def __init__(self, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.target = target
        self.headers = headers


def parse_upgrade_head(head: bytes | bytearray) -> UpgradeHead | None:
    """Parse *head*, which ends with its first :data:`HEAD_END`; None when
    it is not a WebSocket upgrade in the strict form (see the module doc)."""
    lines = bytes(head[: -len(HEAD_END)]).split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        return None
    headers: list[tuple[bytes, bytes]] = []
    hosts = 0
    upgrade = b""
    match = _HEADER.fullmatch
    for text in lines[1:]:
        field = match(text)
        if field is None:
            return None
        name = field[1].lower()
        value = field[2]
        if name == b"host":
            hosts += 1
        elif name == b"upgrade":
            upgrade = value  # the last one counts, as in HttpRequest.headers
        elif name in _BODY_FRAMING:
            return None
        headers.append((name, value))
    if hosts != 1 or b"websocket" not in upgrade.lower():
        return None
    return UpgradeHead(line[1], headers)
