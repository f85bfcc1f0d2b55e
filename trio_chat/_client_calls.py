"""The Python client's calls: frames answered by one frame with their ``ref``.

A :class:`Call` is a ``command``, a message call (``edit``, ``delete``,
``react``, ``history``, ``conversations``), a room call (``rooms``,
``topic``) or a ``read``, on its way: queued until a connection takes it (a
call about a room, until the room is joined on that connection).
:class:`CallBook` hands out the frames to write and settles each call with
the answer that carries its ``ref``: a ``result``, the event the call
caused, or an ``error``.  A call written on a connection that ends
before its answer is written again on the next one if that is safe (an
edit, a delete, a read: doing it twice does it once); a command may not be
safe to run twice, nor a reaction, which toggles: they fail with code 0.
Pure: no I/O, no trio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs

from ._client_types import ClientError
from ._protocol import ErrorEvent, ServerEvent

__all__ = ["Call", "CallBook"]


@attrs.define(eq=False)
class Call:
    """One call: its ``ref`` and frame, and once settled its answer or error."""

    ref: str
    frame: str
    #: The room it is about: written only once the room is joined.
    room: str | None = None
    #: Counted against the rate limit: the client paces it (commands are not).
    paced: bool = False
    #: Written again on the next connection if this one drops first.
    resend: bool = False
    #: A ``read``: written when the read markers' spacing allows
    #: (:class:`~trio_chat._client_rooms.ReadMarkers`), not paced.
    marker: bool = False
    #: Written on the current connection (so it will not be written again).
    written: bool = False
    #: Connections that dropped while it was written and unanswered.
    drops: int = 0
    answer: ServerEvent | None = None
    error: ClientError | None = None
    #: Called once when settled.
    callbacks: list[Callable[[], None]] = attrs.Factory(list)

    @property
    def done(self) -> bool:
        return self.answer is not None or self.error is not None

    def settle(self, answer: ServerEvent | None, error: ClientError | None) -> None:
        if self.done:
            return
        self.answer, self.error = answer, error
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


@attrs.define
class CallBook:
    """The calls not settled yet, in the order they were made."""

    calls: dict[str, Call] = attrs.Factory(dict)

    def submit(
        self,
        ref: str,
        frame: str,
        *,
        room: str | None = None,
        paced: bool = False,
        resend: bool = False,
        marker: bool = False,
    ) -> Call:
        """Queue the call *frame*, whose ``ref`` is *ref*."""
        call = self.calls[ref] = Call(ref, frame, room, paced, resend, marker=marker)
        return call

    def withdraw(self, call: Call) -> None:
        """Forget *call* (its caller stopped waiting)."""
        if self.calls.get(call.ref) is call:
            del self.calls[call.ref]

    def next_unpaced(self) -> str | None:
        """The next command to write, or None (marked written)."""
        for call in self.calls.values():
            if not call.written and not call.paced and not call.marker:
                call.written = True
                return call.frame
        return None

    def ready(self, joined: Callable[[str], bool]) -> Iterator[Call]:
        """The paced calls that may be written now: not written yet, and
        about no room or about a room *joined* says is joined."""
        for call in list(self.calls.values()):
            if call.paced and not call.written and (call.room is None or joined(call.room)):
                yield call

    def answered(self, event: ServerEvent) -> Call | None:
        """The call *event* answers (it carries the call's ``ref``), if any."""
        ref = getattr(event, "ref", None)
        return self.calls.get(ref) if isinstance(ref, str) else None

    def settle(self, call: Call, event: ServerEvent) -> None:
        """*event* answers *call*: an error fails it, anything else is its answer."""
        self.withdraw(call)
        if isinstance(event, ErrorEvent):
            error = ClientError(
                event.code, event.message, ref=call.ref, retry_after_ms=event.retry_after_ms
            )
            call.settle(None, error)
        else:
            call.settle(event, None)

    def fail_room(self, room: str, code: int, message: str) -> None:
        """The calls about *room* not written yet will not be: the room was
        left, or cannot be joined."""
        self._fail(
            [c for c in self.calls.values() if c.room == room and not c.written], code, message
        )

    def connection_lost(self, max_attempts: int | None) -> None:
        """The connection ended: the calls written on it get no answer; those
        safe to write again are, unless on *max_attempts* connections now."""
        lost = []
        for call in self.calls.values():
            if call.written:
                call.written = False
                call.drops += 1
                if not call.resend or (max_attempts is not None and call.drops >= max_attempts):
                    lost.append(call)
        self._fail(lost, 0, "the connection was lost before the answer came")

    def close(self, message: str) -> None:
        """The client stopped: no call will be answered."""
        self._fail(list(self.calls.values()), 0, message)

    def _fail(self, calls: list[Call], code: int, message: str) -> None:
        for call in calls:
            self.withdraw(call)
            call.settle(None, ClientError(code, message, ref=call.ref))
