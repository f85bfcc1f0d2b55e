"""How the Redis store's ops become Redis commands, and their answers results.

:class:`Commands` turns a batch of :mod:`~trio_chat._backplane_ops` records
into one pipeline (one round trip): a Lua script (:mod:`trio_chat._backplane_lua`)
or a command each, consecutive chat messages sharing one script call, and
parses each answer into what
:meth:`~trio_chat._backplane_state.ClusterState.on_result` takes.  The
:class:`~trio_chat._backplane.Backplane`'s publisher task runs it.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, cast

import attrs

from ._backplane_ops import (
    FILL_COUNT,
    ChatOp,
    CloseOp,
    ConversationsOp,
    DirectOp,
    FillOp,
    FloorOp,
    LoadOp,
    LoadResult,
    MemberOp,
    MembersOp,
    OnlineOp,
    Op,
    PageOp,
    PresenceOp,
    ReviseOp,
    RevisionsOp,
    RoomsOp,
    SyncOp,
    TopicOp,
    TypingOp,
    Unavailable,
)
from ._conversations import conversation_users
from ._hub_directory import MAX_LISTED
from ._log import new_epoch
from ._protocol import ACK_PREFIX, CHAT_PREFIX, DIRECT_PREFIX, ack_suffix

__all__ = ["MIN_RETAIN", "Commands"]

log = logging.getLogger("trio_chat.backplane")

#: Messages kept in each room's stream at least, whatever the history size:
#: what a process that missed pub/sub messages can still read back.
MIN_RETAIN = 256
#: Messages one :class:`PageOp` reads at most (its byte budget comes first
#: but for the smallest messages).
PAGE_COUNT = 2048


@attrs.define
class Commands:
    """The Redis side of each op, for one process.

    Args:
        prefix: the key prefix.
        node: this process's id in the cluster.
        node_ttl: seconds before a silent process's memberships expire.
        ref_memory: accepted ``ref`` values remembered per user.
        retain: messages kept in each room's stream at least.
    """

    prefix: str
    node: str
    node_ttl: float
    ref_memory: int
    retain: int
    #: Script name -> its SHA1, once loaded (see :meth:`Backplane._connection`).
    shas: dict[str, str] = attrs.field(factory=dict)

    async def execute(self, client: Any, batch: list[Op]) -> list[tuple[Op, Any]]:
        from coredis.exceptions import NoScriptError, RedisError

        # Consecutive chat messages share one script call: coredis spends
        # tens of microseconds building each command, Redis much less.
        groups: list[list[Op]] = []
        for op in batch:
            last = groups[-1][0] if groups else None
            if type(op) is ChatOp and type(last) is ChatOp and op.epoch == last.epoch:
                groups[-1].append(op)
            else:
                groups.append([op])
        async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
            requests = [
                # A group of several ops is always of chats (built just above).
                self._chats(pipe, cast("list[ChatOp]", group))
                if type(group[0]) is ChatOp
                else self._command(pipe, group[0])
                for group in groups
            ]
        results: list[tuple[Op, Any]] = []
        for group, request in zip(groups, requests, strict=True):
            try:
                raw = await request
            except NoScriptError:
                raise
            except RedisError as exc:
                log.error("Redis refused %s: %s", type(group[0]).__name__, exc)
                results += [(op, Unavailable(str(exc))) for op in group]
                continue
            if type(group[0]) is ChatOp:
                results += [(op, tuple(answer)) for op, answer in zip(group, raw, strict=False)]
            else:
                results.append((group[0], self._parse(group[0], raw)))
        return results

    def _chats(self, pipe: Any, ops: list[ChatOp]) -> Any:
        args: list[Any] = [
            self.prefix,
            ops[0].epoch,
            self.ref_memory,
            self.retain,
            CHAT_PREFIX,
            ACK_PREFIX,
        ]
        for op in ops:
            args += [
                op.room,
                op.user_id,
                op.ref or "",
                "1" if op.create else "0",
                op.suffix,
                ack_suffix(op.room, op.time, op.ref),
                op.origin,
            ]
        return self._script(pipe, "chats", args)

    def _script(self, pipe: Any, name: str, args: list[Any], keys: list[str] | None = None) -> Any:
        return pipe.evalsha(self.shas[name], keys=keys or [], args=args)

    def _command(self, pipe: Any, op: Op) -> Any:
        p = self.prefix
        if isinstance(op, DirectOp):
            args = [p, op.epoch, self.ref_memory, self.retain, op.user_id, op.to, op.name]
            args += [op.ref or "", op.origin, CHAT_PREFIX, op.suffix, DIRECT_PREFIX]
            args += [op.direct_suffix, ACK_PREFIX, op.ack_suffix]
            return self._script(pipe, "direct", args)
        if isinstance(op, ConversationsOp):
            args = [p, op.user_id, MAX_LISTED + 1, self.retain]
            return self._script(pipe, "conversations", args)
        if isinstance(op, FillOp):
            name = op.name if op.kind == "r" else "@" + op.name
            return self._script(pipe, "fill", [p, name, op.after, FILL_COUNT])
        if isinstance(op, ReviseOp):
            event = _event_frames(op)
            args = [p, op.room, op.id, op.expected, op.frame, event, op.origin, self.retain]
            return self._script(pipe, "revise", args)
        if isinstance(op, PageOp):
            high = "" if op.high is None else op.high
            args = [p, op.room, op.low, high, op.budget, PAGE_COUNT]
            return self._script(pipe, "page", args)
        if isinstance(op, RevisionsOp):
            return self._script(pipe, "revisions", [p, op.room, op.low])
        if isinstance(op, MemberOp):
            return self._script(
                pipe, "member", [p, self.node, op.room, op.user_id, "1" if op.joined else "0"]
            )
        if isinstance(op, OnlineOp):
            return self._script(
                pipe, "online", [p, self.node, op.user_id, "1" if op.online else "0"]
            )
        if isinstance(op, LoadOp):
            return self._script(pipe, "load", [p, op.room, op.count, op.max_bytes, new_epoch()])
        if isinstance(op, TypingOp):
            channel = f"{p}ch:{op.kind}:{op.to}"
            return pipe.publish(channel, f"t 0 {op.origin} {op.user_id} {op.frame}")
        if isinstance(op, PresenceOp):
            return self._script(pipe, "presence", [p, self.node, op.user_id, op.frame])
        if isinstance(op, MembersOp):
            return self._script(pipe, "members", [p, op.room])
        if isinstance(op, TopicOp):
            return self._script(pipe, "topic", [p, op.room, op.topic, op.user_id, op.origin])
        if isinstance(op, RoomsOp):
            return self._script(pipe, "rooms", [p, op.count])
        if isinstance(op, CloseOp):
            return self._script(pipe, "close", [p, op.room, op.user_id, self.node, op.text])
        if isinstance(op, FloorOp):
            return self._script(pipe, "floor", [p, op.room, op.floor, op.epoch])
        if isinstance(op, SyncOp):
            candidate = secrets.token_hex(8)
            return self._script(
                pipe,
                "sync",
                [
                    p,
                    self.node,
                    int(self.node_ttl * 1000),
                    candidate,
                    len(op.entries),
                    *op.entries,
                    *op.inbox_users,
                ],
            )
        raise TypeError(f"not an op: {op!r}")  # pragma: no cover

    @staticmethod
    def _parse(op: Op, raw: Any) -> Any:
        if isinstance(op, DirectOp | TopicOp | CloseOp):
            return tuple(raw)
        if isinstance(op, FillOp):
            return _entries(raw)
        if isinstance(op, ReviseOp):
            return tuple(raw)
        if isinstance(op, PageOp):
            return int(raw[0]), _entries(raw[1]), int(raw[2])
        if isinstance(op, RevisionsOp):
            return int(raw[0]), _entries(raw[1])
        if isinstance(op, ConversationsOp):
            return [(name, int(last), int(read), _entries(e)) for name, last, read, e in raw]
        if isinstance(op, OnlineOp):
            return int(raw)
        if isinstance(op, LoadOp):
            last, entries, members, version, presence, epoch, revision, topic = raw
            return LoadResult(
                int(last),
                _entries(reversed(entries)),
                list(members),
                int(version),
                dict(zip(presence[::2], presence[1::2], strict=False)),
                epoch or "",
                int(revision),
                topic or "",
            )
        if isinstance(op, MembersOp):
            return int(raw[0]), list(raw[1]), raw[2] or ""
        if isinstance(op, RoomsOp):
            return bool(raw[0]), [(room, int(members), topic) for room, members, topic in raw[1]]
        if isinstance(op, SyncOp):
            epoch, ids = raw
            return epoch, {ids[i]: int(ids[i + 1]) for i in range(0, len(ids), 2)}
        return None


def _event_frames(op: ReviseOp) -> str:
    """The frame of *op*'s event (and, for a moderator's delete, of the
    ``system`` ``delete`` after it); for a conversation's message, one for
    each user (in its log name's order), a newline between them: ``with``
    names the other user."""
    event = op.event
    if event is None:
        return ""
    if op.with_ is None:
        return event.to_json() + ("\n" + op.notice if op.notice else "")
    frames = [
        (event if user == op.user_id else attrs.evolve(event, with_=op.user_id)).to_json()
        for user in conversation_users(op.room)
    ]
    return "\n".join(frames)


def _entries(raw: Any) -> list[tuple[int, str, str]]:
    """Log entries as the scripts answer them: ``(id, origin, frame)``."""
    return [(int(entry_id), origin, frame) for entry_id, origin, frame in raw]
