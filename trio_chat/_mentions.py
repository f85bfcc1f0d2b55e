"""Mentions: which users a message's content names with ``@name``.

The rule (docs/protocol.md, *Mentions*): ``@name`` where ``name`` is the
longest match of the user-id pattern without a trailing ``.``, ``-`` or
``@``, and the ``@`` is at the start of the content or after a character
that is not a letter, digit, ``_``, ``.``, ``@`` or ``-``.  The server
computes the list once, when a message is published (and again when it is
edited), and keeps it with the message.  Pure: no I/O.
"""

from __future__ import annotations

import re

__all__ = ["MAX_MENTIONS", "find_mentions", "mention_spans"]

#: Mentions listed per message at most (the first ones, in order).
MAX_MENTIONS = 20

# ``\w`` (Unicode letters, digits and ``_``) before the ``@`` means it is part
# of a word, such as an e-mail address: not a mention.
_MENTION_RE = re.compile(r"(?<![\w.@-])@([A-Za-z0-9][A-Za-z0-9_.@-]{0,63})")


def find_mentions(content: str) -> tuple[str, ...]:
    """The distinct user ids *content* mentions, in order of appearance
    (at most :data:`MAX_MENTIONS`)."""
    if "@" not in content:
        return ()
    found: dict[str, None] = {}
    for match in _MENTION_RE.finditer(content):
        name = match.group(1).rstrip(".-@")
        if name and name not in found:
            found[name] = None
            if len(found) == MAX_MENTIONS:
                break
    return tuple(found)


def mention_spans(content: str) -> list[tuple[int, int, str]]:
    """Where *content* mentions users: ``(start, end, name)`` for each
    ``@name`` (the ``@`` included in the span), in order, repeats too."""
    spans = []
    for match in _MENTION_RE.finditer(content) if "@" in content else ():
        name = match.group(1).rstrip(".-@")
        if name:
            spans.append((match.start(), match.start() + 1 + len(name), name))
    return spans
