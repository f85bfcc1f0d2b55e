"""A chat or direct message on its way, as the Python client's caller sees
it: :class:`PendingMessage`, and :func:`settled`, which waits for a call or
a message to be settled.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ._client_link import ClientLink
from ._client_records import Outgoing
from ._protocol import ChatAck, DirectAck

__all__ = ["PendingMessage", "settled"]


async def settled(callbacks: list[Callable[[], None]], done: bool) -> None:
    """Wait until the item whose *callbacks* these are is settled (at once
    when *done*)."""
    if done:
        await trio.lowlevel.checkpoint()
        return
    event = trio.Event()
    callbacks.append(event.set)
    try:
        await event.wait()
    finally:
        if event.set in callbacks:
            callbacks.remove(event.set)


class PendingMessage:
    """A chat or direct message the client is delivering (see :meth:`ChatClient.post`).

    ``await message.wait()`` returns the server's ack once it arrives, across
    reconnects, or raises :class:`ClientError`.
    """

    def __init__(self, link: ClientLink, entry: Outgoing) -> None:
        self._link = link
        self._entry = entry

    @property
    def ref(self) -> str:
        return self._entry.ref

    @property
    def content(self) -> str:
        return self._entry.content

    @property
    def target(self) -> str:
        """The room (chat) or user (direct) it goes to."""
        return self._entry.target

    @property
    def done(self) -> bool:
        return self._entry.done

    async def wait(self) -> ChatAck | DirectAck:
        """The ack; raises :class:`ClientError` if the message was refused."""
        await settled(self._entry.callbacks, self._entry.done)
        if self._entry.error is not None:
            raise self._entry.error
        assert self._entry.ack is not None
        return self._entry.ack

    def cancel(self) -> None:
        """Stop delivering it (no re-send).  A copy already written may still
        be published by the server."""
        self._link.state.withdraw(self._entry)
        self._link.notify()
