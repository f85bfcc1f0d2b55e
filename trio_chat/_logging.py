"""Logging to stderr, as text or as one JSON object per line.

Log lines carry strings that clients chose (close reasons, user names,
paths, origins).  :class:`EscapeFilter`, attached to each of trio_chat's
loggers when this module is imported, escapes every control character of
a record's message (newlines included) as ``\\n``, ``\\x1b``,
``\\u202e``... before any handler sees it, so that whatever handler and
formatter print it -- ours, or an embedder's own -- a client cannot forge a
line or hide text.  :class:`SampledLog` keeps floods of one kind of event
(refused handshakes, shed connections) to one full line per interval plus a
count.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

import attrs

__all__ = ["LOGGERS", "EscapeFilter", "SampledLog", "TextFormatter", "configure_logging", "escape"]

#: Every logger trio_chat logs to (``tests/test_abuse_http.py`` checks that
#: each module's logger is one of them).
LOGGERS = (
    "trio_chat.backplane",
    "trio_chat.client",
    "trio_chat.commands",
    "trio_chat.connection",
    "trio_chat.hub",
    "trio_chat.moderation",
    "trio_chat.policy",
    "trio_chat.server",
    "trio_chat.websocket",
    "trio_chat.workers",
)

#: C0 and C1 controls, DEL, the line and paragraph separators and the bidi
#: controls (embeddings, overrides, isolates, marks): everything that can end
#: a line or change how the rest of it displays.  The backslash too, so an
#: escape in the log always means the server wrote it.
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """*text* with every control character written as a visible escape."""
    return _UNSAFE.sub(_escape_char, text)


def clip(text: str, limit: int = 80) -> str:
    """At most *limit* characters of *text*, saying how long it was when cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} chars)"


class EscapeFilter(logging.Filter):
    """Escapes a record's message (see :func:`escape`) for every handler.

    A message with nothing to escape is left as it is (its arguments
    too); one with something to escape becomes the escaped text, without
    arguments.  A traceback is left alone: it is the server's, not a
    client's (clients' strings inside it appear as ``repr``).  A record whose
    arguments do not fit its message is left for the handler to report.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - the handler's format() reports it
            return True
        escaped = escape(message)
        if escaped != message:
            record.msg = escaped
            record.args = None
        return True


_ESCAPE = EscapeFilter()
for _name in LOGGERS:
    logging.getLogger(_name).addFilter(_ESCAPE)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message`` (the message already escaped by
    :class:`EscapeFilter`); a traceback follows on its own lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send trio_chat's logs to stderr at *level*, as ``text`` or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("trio_chat")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


@attrs.define
class SampledLog:
    """One full line per kind of event per *interval* seconds; the rest counted.

    :meth:`hit` says whether an event should be logged in full: the first of
    its kind in a window is, later ones in that window are only counted.
    :meth:`due` hands back, once a window has ended, how many were counted
    (for one summary line each).  Keys are a few fixed kinds (e.g. an HTTP
    status), never client data, so the table stays small.  Pure: the caller
    passes the time.
    """

    interval: float
    #: kind -> [window start, events counted but not logged]
    _windows: dict[str, list[float]] = attrs.field(init=False, factory=dict)
    #: counts of windows that ended before due() was asked
    _ended: dict[str, int] = attrs.field(init=False, factory=dict)

    def hit(self, kind: str, now: float) -> bool:
        """Count one event of *kind*; True if it should be logged in full."""
        window = self._windows.get(kind)
        if window is not None and now - window[0] < self.interval:
            window[1] += 1
            return False
        if window is not None and window[1]:
            self._ended[kind] = self._ended.get(kind, 0) + int(window[1])
        self._windows[kind] = [now, 0]
        return True

    def due(self, now: float, *, every: bool = False) -> list[tuple[str, int]]:
        """Counts of events not logged in full, for each kind whose window
        has ended (every kind with *every*); those windows are forgotten."""
        counts = self._ended
        self._ended = {}
        for kind, (start, count) in list(self._windows.items()):
            if every or now - start >= self.interval:
                del self._windows[kind]
                if count:
                    counts[kind] = counts.get(kind, 0) + int(count)
        return sorted(counts.items())
