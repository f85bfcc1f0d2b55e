"""The Python client's calls: frames answered by one frame with their ``ref``.

A :class:`Call` is a ``command`` on its way: queued until a connection
takes it, then written once and never again (a command may not be safe to
run twice).  :class:`CallBook` hands out the frames to write and settles
each call with the answer that carries its ``ref``: a ``result`` or an
``error``.  A call written on a connection that ends gets no answer: it
fails with code 0.  Pure: no I/O, no trio.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ._client_types import ClientError
from ._protocol import CommandResult, ErrorEvent, ServerEvent

__all__ = ["Call", "CallBook"]


@attrs.define(eq=False)
class Call:
    """One call: its ``ref`` and frame, and once settled its answer or error."""

    ref: str
    frame: str
    #: Written on the current connection (so it will not be written again).
    written: bool = False
    answer: CommandResult | None = None
    error: ClientError | None = None
    #: Called once when settled.
    callbacks: list[Callable[[], None]] = attrs.Factory(list)

    @property
    def done(self) -> bool:
        return self.answer is not None or self.error is not None

    def settle(self, answer: CommandResult | None, error: ClientError | None) -> None:
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

    def submit(self, ref: str, frame: str) -> Call:
        """Queue the call *frame*, whose ``ref`` is *ref*."""
        call = self.calls[ref] = Call(ref, frame)
        return call

    def withdraw(self, call: Call) -> None:
        """Forget *call* (its caller stopped waiting)."""
        if self.calls.get(call.ref) is call:
            del self.calls[call.ref]

    def next_frame(self) -> str | None:
        """The next call to write, or None."""
        for call in self.calls.values():
            if not call.written:
                call.written = True
                return call.frame
        return None

    def receive(self, event: ServerEvent) -> bool:
        """Settle the call *event* answers; False if it answers none."""
        if not isinstance(event, CommandResult | ErrorEvent) or event.ref is None:
            return False
        call = self.calls.pop(event.ref, None)
        if call is None:
            return False
        if isinstance(event, ErrorEvent):
            error = ClientError(
                event.code, event.message, ref=call.ref, retry_after_ms=event.retry_after_ms
            )
            call.settle(None, error)
        else:
            call.settle(event, None)
        return True

    def connection_lost(self, message: str) -> None:
        """The connection ended: the calls written on it get no answer."""
        self._fail([call for call in self.calls.values() if call.written], message)

    def close(self, message: str) -> None:
        """The client stopped: no call will be answered."""
        self._fail(list(self.calls.values()), message)

    def _fail(self, calls: list[Call], message: str) -> None:
        for call in calls:
            self.withdraw(call)
            call.settle(None, ClientError(0, message, ref=call.ref))
