"""The hub's side of edits, deletes, reactions and history pages: which
log a frame names, the rules (:mod:`trio_chat._message_ops`), and who hears
of the change.

An edit, a delete or a reaction goes to every connection of the log (a
room's members, or both users of a conversation), the sender's with its
``ref``; a second delete of a deleted message answers only the sender.  Its
operation for the store follows from :meth:`History.replace`.  Pure and
synchronous, like the hub state it works on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ._conversations import direct_view, no_conversation
from ._log import History
from ._message_events import HistoryPage, MessageDeleted, MessageEdited, ReactionChanged
from ._message_frames import Delete, Edit, MessageFrame, React, ReadHistory
from ._message_ops import (
    Target,
    delete_message,
    edit_message,
    history_page,
    toggle_reaction,
)
from ._protocol import ChatMessage, ProtocolError, System
from ._room_core import Delivery, Key, Reply

if TYPE_CHECKING:
    from ._hub_state import HubState

__all__ = [
    "apply_message_frame",
    "change_message",
    "find_target",
    "moderator_delete",
    "moderator_notice",
]


def find_target(
    state: HubState, user_id: str, room: str | None, with_: str | None, ref: str | None
) -> Target:
    """The log a frame of *user_id* names: *room* (which must exist) or the
    conversation *with_* (404 if there is none)."""
    if room is not None:
        entry = state.room(room)
        if entry is None:
            raise ProtocolError(404, f"room {room!r} does not exist", ref)
        return Target(entry.log, room=room)
    assert with_ is not None
    log = state.conversations.get(user_id, with_)
    if log is None:
        raise no_conversation(with_, ref)
    return Target(log, with_=with_)


def _members(state: HubState, target: Target) -> list[Key]:
    """The connections in *target*'s room."""
    entry = state.room(target.room) if target.room is not None else None
    return list(entry.conns) if entry is not None else []


def announce(
    state: HubState,
    target: Target,
    event: MessageEdited | MessageDeleted | ReactionChanged,
    reply_to: Key | Reply | None,
    ref: str | None,
    *,
    actor: str,
) -> list[Delivery]:
    """*event* to every connection of *target*'s log; *reply_to* (the
    sender) gets it with *ref*.  In a conversation each user's connections
    get it with ``with`` naming the other one (*actor*, for the other side)."""
    if target.with_ is None:
        audience = [k for k in _members(state, target) if k != reply_to]
        deliveries = [Delivery(event, tuple(audience))]
    else:
        mine = tuple(k for k in state.connections_of(actor) if k != reply_to)
        theirs = tuple(state.connections_of(target.with_))
        deliveries = [Delivery(event, mine), Delivery(attrs.evolve(event, with_=actor), theirs)]
    return deliveries + state.answer(reply_to, attrs.evolve(event, ref=ref))


def change_message(
    history: History,
    target: Target,
    user_id: str,
    event: Edit | Delete | React,
    *,
    now: float,
    window: float,
    reactions: tuple[str, ...],
    any_author: bool = False,
) -> tuple[MessageEdited | MessageDeleted | ReactionChanged, ChatMessage, bool]:
    """Apply an ``edit``, ``delete`` or ``react`` of *user_id* to *target*'s
    log (the rules: :mod:`trio_chat._message_ops`; a delete of anyone's
    message with *any_author*, a moderator's): the event it causes
    (without a ``ref``), the message as it is now, and whether it changed
    (a second delete changes nothing).  Raises
    :class:`~trio_chat.ProtocolError` before anything changes."""
    room, with_, ref = target.room, target.with_, event.ref
    if isinstance(event, Edit):
        message = edit_message(
            history,
            target,
            user_id,
            event.id,
            content=event.content,
            now=now,
            window=window,
            ref=ref,
        )
        assert message.edited is not None
        edited = MessageEdited(
            room, with_, message.id, user_id, message.content, message.edited, message.mentions
        )
        return edited, message, True
    if isinstance(event, Delete):
        message, changed = delete_message(
            history, target, event.id, user_id, any_author=any_author, ref=ref
        )
        return MessageDeleted(room, with_, message.id, message.user_id, user_id), message, changed
    message, on, count = toggle_reaction(
        history, target, user_id, event.id, emoji=event.emoji, allowed=reactions, ref=ref
    )
    reaction = ReactionChanged(room, with_, message.id, event.emoji, user_id, on, count)
    return reaction, message, True


def apply_message_frame(
    state: HubState,
    key: Key | Reply | None,
    user_id: str,
    event: MessageFrame,
    *,
    target: Target,
    now: float,
) -> list[Delivery]:
    """Apply an ``edit``, ``delete``, ``react`` or ``history`` of *user_id*
    (from *key*) to *target*'s log."""
    ref = event.ref
    if isinstance(event, ReadHistory):
        messages, truncated = history_page(target.log, event.since, event.before)
        if target.with_ is not None:
            messages = [direct_view(payload) for payload in messages]
        return state.answer(key, HistoryPage(target.room, target.with_, messages, truncated, ref))
    if not isinstance(event, Edit | Delete | React):
        raise TypeError(f"not a message frame: {event!r}")
    changed_event, _, changed = change_message(
        state.history,
        target,
        user_id,
        event,
        now=now,
        window=state.edit_window,
        reactions=state.reactions,
    )
    if not changed:
        return state.answer(key, attrs.evolve(changed_event, ref=ref))
    return announce(state, target, changed_event, key, ref, actor=user_id)


def moderator_delete(
    state: HubState, target: Target, id_: int, by: str, *, text: str, reply_to: Reply | None
) -> list[Delivery]:
    """Delete any message of *target*'s room, as moderator *by*: members get
    the ``delete`` event and a ``system`` ``delete`` with *text*; *reply_to*
    the tombstone."""
    message, changed = delete_message(state.history, target, id_, by, any_author=True)
    if not changed:
        return state.answer(reply_to, message)
    deleted = MessageDeleted(target.room, target.with_, message.id, message.user_id, by)
    audience = tuple(_members(state, target))
    deliveries = [Delivery(deleted, audience)]
    if target.room is not None:
        deliveries.append(Delivery(moderator_notice(target.room, message, text), audience))
    return deliveries + state.answer(reply_to, message)


def moderator_notice(room: str, message: ChatMessage, text: str) -> System:
    """The ``system`` ``delete`` members get when a moderator deleted
    *message* (named by its author), with *text*."""
    return System("delete", room, message.user_id, text)
