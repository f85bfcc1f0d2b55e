"""The Python client's outbox: chats and directs on their way, sans I/O.

:class:`Outbox` keeps the :class:`~trio_chat._client_records.Outgoing`
messages not settled yet, in the order they were posted: it checks a new
one the way the server would, finds the one an ack or an error names by its
``ref``, and settles them, one by one or all those of a room at once.  What
goes out when is :class:`~trio_chat._client_state.ClientState`'s decision.
Pure: no I/O, no trio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from ._client_records import Outgoing
from ._client_types import ClientError
from ._protocol import ChatAck, DirectAck, is_valid_room, is_valid_user_id

__all__ = ["Outbox"]


def left_before_ack(entry: Outgoing) -> ClientError:
    """The error of a chat given up because its room was left."""
    return ClientError(
        0, f"left room {entry.target!r} before the message was acknowledged", ref=entry.ref
    )


@attrs.define
class Outbox:
    """The chats and directs not settled yet, in the order they were posted."""

    entries: list[Outgoing] = attrs.Factory(list)

    def __iter__(self) -> Iterator[Outgoing]:
        return iter(list(self.entries))

    def __len__(self) -> int:
        return len(self.entries)

    def submit(
        self,
        kind: str,
        target: str,
        content: str,
        limits: Mapping[str, Any],
        wanted: Callable[[str], bool],
    ) -> Outgoing:
        """Queue a chat (*target*: a room *wanted* says the user is in) or a
        direct (*target*: a user), checked first against the server's
        *limits*; raises :class:`ClientError` (400, 403, 413)."""
        if kind == "chat":
            if not is_valid_room(target):
                raise ClientError(400, f"not a valid room name: {target!r}")
            if not wanted(target):
                raise ClientError(403, f"join room {target!r} before sending to it")
        elif kind == "direct":
            if not is_valid_user_id(target):
                raise ClientError(400, f"not a valid user id: {target!r}")
        else:
            raise ValueError(f"unknown message kind {kind!r}")
        if not isinstance(content, str) or not content:
            raise ClientError(400, "content must be a non-empty string")
        entry = Outgoing(kind, target, content)
        problem = entry.problem(limits)
        if problem is not None:
            raise problem
        self.entries.append(entry)
        return entry

    def withdraw(self, entry: Outgoing) -> None:
        """Forget *entry* (settled, or its sender stopped waiting)."""
        if entry in self.entries:
            self.entries.remove(entry)

    def find(self, ref: str | None) -> Outgoing | None:
        """The message whose ``ref`` is *ref*, if it is still on its way."""
        if ref is None:
            return None
        for entry in self.entries:
            if entry.ref == ref:
                return entry
        return None

    def acknowledge(self, ack: ChatAck | DirectAck) -> Outgoing | None:
        """*ack* settles the message it names (returned), if it is ours."""
        entry = self.find(ack.ref)
        if entry is not None:
            self.withdraw(entry)
            entry.settle(ack, None)
        return entry

    def fail(self, entry: Outgoing, error: ClientError) -> None:
        """Give *entry* up with *error*."""
        self.withdraw(entry)
        entry.settle(None, error)

    def fail_room(
        self, room: str, error: Callable[[Outgoing], ClientError], *, keep: int | None = None
    ) -> None:
        """Give up the chats to *room* with *error*, but those written on
        connection *keep* (their acks come before the server's ``left``)."""
        for entry in self:
            if entry.kind != "chat" or entry.target != room:
                continue
            if keep is None or entry.sent_on != keep:
                self.fail(entry, error(entry))

    def connection_lost(
        self, serial: int, wanted: Callable[[str], bool], max_attempts: int | None
    ) -> None:
        """Connection *serial* ended: chats to rooms no longer *wanted* are
        given up, messages written on it are queued again (or given up, on
        *max_attempts* connections)."""
        for entry in self:
            if entry.kind == "chat" and not wanted(entry.target):
                self.fail(entry, left_before_ack(entry))
            elif entry.sent_on == serial:
                given_up = entry.dropped(max_attempts)
                if given_up is not None:
                    self.fail(entry, given_up)

    def close(self, reason: str) -> None:
        """The client stopped for good: every message fails with code 0."""
        for entry in self:
            self.fail(entry, ClientError(0, f"the client is closed: {reason}", ref=entry.ref))
