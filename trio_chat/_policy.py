"""Message policies: an embedder's say over what reaches the hub.

A *policy* is any object with a ``check(sender, event)`` method (the
:class:`Policy` protocol).  The server consults it for every ``chat``,
``direct``, ``join``, ``presence`` and ``edit`` a client sends (the :data:`Checked`
events; new kinds of event join that union), after the frame was parsed,
rate-limited and found allowed by the token, and before it reaches the hub.
``check`` returns a :data:`Verdict`:

* :data:`ACCEPT` (or ``None``): the event goes on as it came;
* :class:`Reject` ``(code, reason)``: the client gets an ``error`` frame with
  that code and reason and the event's ``ref``; nothing else happens;
* :class:`Replace` ``(content)``: the event goes on with new content (a
  ``chat``, ``direct`` or ``edit``'s ``content``, a ``presence``'s ``text``), checked
  against the same limits as a client's.

``check`` may be a plain method or a coroutine.  It runs in the sending
connection's reader task, never in the hub: while it runs, that connection's
later frames wait (so they stay in order) and nobody else does.  A coroutine
has ``hook_timeout`` seconds; one that raises, overruns, or returns anything
but a verdict refuses that one event with error 500 (and a logged
traceback), and the connection carries on.  A plain method cannot be timed
out: keep it quick.

With no policy and no mute in force, the reader does not call into this
module at all (one attribute test per frame).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol, TypeAlias, cast

import attrs
import trio

from ._message_frames import Edit
from ._protocol import (
    MAX_PRESENCE_TEXT_CHARS,
    Chat,
    ClientEvent,
    Direct,
    Join,
    Presence,
    ProtocolError,
    is_unicode,
)

if TYPE_CHECKING:
    from ._moderation import Mutes

__all__ = [
    "ACCEPT",
    "Accept",
    "Checked",
    "Pending",
    "Policy",
    "Reject",
    "Replace",
    "Screen",
    "Sender",
    "Verdict",
]

log = logging.getLogger("trio_chat.policy")

#: The client events a policy is asked about.
Checked: TypeAlias = Chat | Direct | Join | Presence | Edit
_CHECKED_TYPES = frozenset((Chat, Direct, Join, Presence, Edit))


@attrs.frozen
class Sender:
    """The connection an event comes from."""

    user_id: str
    #: The id its client saw in ``welcome``.
    session_id: str
    #: The client's address (``"memory"`` for in-memory streams).
    peer: str


@attrs.frozen
class Accept:
    """Let the event through unchanged."""


#: The one :class:`Accept` verdict.
ACCEPT = Accept()


@attrs.frozen
class Reject:
    """Refuse the event: the client gets ``error`` *code* with *reason*."""

    code: int
    reason: str

    def __attrs_post_init__(self) -> None:
        if not 400 <= self.code <= 599:
            raise ValueError(f"code: an error code is 400 to 599, got {self.code!r}")


@attrs.frozen
class Replace:
    """Let the event through with *content* instead of its own (a chat's or
    direct message's ``content``, a presence's ``text``)."""

    content: str


Verdict: TypeAlias = Accept | Reject | Replace | None


@attrs.frozen
class Pending:
    """An async check under way: the reader awaits :meth:`Screen.finish`."""

    verdict: Awaitable[Verdict]
    sender: Sender
    event: Checked


class Policy(Protocol):
    """What an embedder registers with ``ChatServer(policy=...)``."""

    def check(self, sender: Sender, event: Checked) -> Verdict | Awaitable[Verdict]:
        """Decide about *event* from *sender* (see the module docs)."""
        ...


class Screen:
    """The reader's gate in front of the hub: mutes, then the policy.

    ``active`` is what the reader tests for each frame: false while there is
    neither a policy nor a mute in force, and then nothing else here runs.
    """

    def __init__(
        self,
        policy: Policy | None,
        timeout: float,
        max_content_chars: int,
        mutes: Mutes | None = None,
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self.max_content_chars = max_content_chars
        self.mutes = mutes
        #: Events refused by the policy, and policy faults (raised, timed out).
        self.rejected = 0
        self.replaced = 0
        self.faults = 0
        self.active = policy is not None
        #: Some mute is in force (a plain attribute: read for every frame).
        self.muting = False

    def update(self) -> None:
        """Recompute :attr:`active` (the mutes changed)."""
        self.muting = bool(self.mutes)
        self.active = self.policy is not None or self.muting

    def check(self, sender: Sender, event: ClientEvent) -> ClientEvent | Pending:
        """*event*, possibly replaced, or a :class:`Pending` verdict for the
        reader to :meth:`finish`; raises :class:`ProtocolError` to refuse it.

        Synchronous, so that a plain ``check`` costs the reader no
        coroutine; only an awaitable verdict takes the async path.
        """
        kind = type(event)
        if kind not in _CHECKED_TYPES:
            return event
        if self.muting and isinstance(event, (Chat, Edit)) and event.room is not None:
            assert self.mutes is not None
            self.mutes.check(sender.user_id, event.room, event.ref, trio.current_time())
        policy = self.policy
        if policy is None:
            return event
        checked = cast("Checked", event)  # one of _CHECKED_TYPES
        try:
            verdict = policy.check(sender, checked)
            if verdict is None or verdict is ACCEPT:
                return event
            if inspect.isawaitable(verdict):
                return Pending(verdict, sender, checked)
            return self._apply(verdict, checked)
        except ProtocolError:
            raise
        except Exception:  # noqa: BLE001 - the policy's fault: _fault logs it
            raise self._fault(sender, event) from None

    async def finish(self, pending: Pending) -> ClientEvent:
        """Await an async check's verdict, within ``hook_timeout``."""
        sender, event = pending.sender, pending.event
        try:
            with trio.move_on_after(self.timeout) as scope:
                verdict = await pending.verdict
            if scope.cancelled_caught:
                self.faults += 1
                log.error(
                    "policy check of %s from %s did not finish within %g s: refused",
                    event.type,
                    sender.user_id,
                    self.timeout,
                )
                raise ProtocolError(500, "internal server error", event.ref)
            return self._apply(verdict, event)
        except ProtocolError:
            raise
        except Exception:  # noqa: BLE001 - the policy's fault: _fault logs it
            raise self._fault(sender, event) from None

    def _fault(self, sender: Sender, event: ClientEvent) -> ProtocolError:
        """Log the policy's exception (being handled); the error to answer."""
        self.faults += 1
        log.exception("policy check of %s from %s failed: refused", event.type, sender.user_id)
        return ProtocolError(500, "internal server error", getattr(event, "ref", None))

    def _apply(self, verdict: object, event: Checked) -> ClientEvent:
        if verdict is None or type(verdict) is Accept:
            return event
        if type(verdict) is Reject:
            self.rejected += 1
            raise ProtocolError(verdict.code, verdict.reason, event.ref)
        if type(verdict) is Replace:
            self.replaced += 1
            return self._replace(event, verdict.content)
        raise TypeError(f"a policy returned {verdict!r}, not a verdict")

    def _replace(self, event: Checked, content: object) -> ClientEvent:
        if not isinstance(content, str) or not is_unicode(content):
            raise TypeError(f"Replace: content must be a string of text, got {content!r}")
        if isinstance(event, Presence):
            if len(content) > MAX_PRESENCE_TEXT_CHARS:
                raise ValueError(f"Replace: text longer than {MAX_PRESENCE_TEXT_CHARS} characters")
            return attrs.evolve(event, text=content or None)
        if isinstance(event, Join):
            raise TypeError("Replace: a join has no content to replace")
        if not content:
            raise ValueError("Replace: content must not be empty")
        if len(content) > self.max_content_chars:
            raise ValueError(f"Replace: content longer than {self.max_content_chars} characters")
        return attrs.evolve(event, content=content)
