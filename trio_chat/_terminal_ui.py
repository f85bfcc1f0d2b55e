"""The interactive terminal UI of ``trio-chat connect``, on prompt_toolkit.

prompt_toolkit runs on asyncio; the chat client runs on trio as a *guest* of
that loop (:func:`trio.lowlevel.start_guest_run`), both in the main thread.
prompt_toolkit owns the terminal: it reads keys (the terminal is in raw mode
while the prompt is shown, so nothing is echoed twice), draws the prompt
(``lobby> ``) and a status line below it, and prints the session's output
above the prompt through a :class:`~prompt_toolkit.patch_stdout.StdoutProxy`,
redrawing the line being typed after each output.  A line is erased once it
is entered: what was sent shows once, when the server acknowledges it.

The two loops meet in three places only: each entered line goes to the trio
side through an unbounded memory channel (lines a person types), handed over
with :meth:`trio.lowlevel.TrioToken.run_sync_soon`; the session's output goes
through the proxy; and the session calls ``invalidate`` to redraw the status
line.  Ctrl-C (the key, or SIGINT) cancels the trio side, which closes the
connection, and the process exits with 130; Ctrl-D at an empty prompt is the
end of input, like ``/quit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from typing import TYPE_CHECKING, Any

import outcome
import trio
from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.patch_stdout import StdoutProxy

from ._terminal import Interrupt, run_session
from .client import ConnectionState

if TYPE_CHECKING:
    from ._terminal_session import Session

__all__ = ["run_interactive"]

#: Seconds between redraws of the status line (its reconnect countdown).
REFRESH_INTERVAL = 0.5
#: Longest reason for a lost connection shown in the status line.
MAX_REASON_CHARS = 60


def run_interactive(url: str, *, rooms: list[str], user: str | None, token: str | None) -> int:
    """Run the interactive UI until /quit, Ctrl-D or Ctrl-C; return the exit code."""
    return asyncio.run(_Ui(url, rooms, user, token).run())


class ChannelLines:
    """Input lines from the prompt, as :class:`trio_chat._terminal_session.Lines`."""

    def __init__(self, receive: trio.MemoryReceiveChannel[str]) -> None:
        self._receive = receive

    async def readline(self) -> str | None:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            return None


class _Ui:
    def __init__(self, url: str, rooms: list[str], user: str | None, token: str | None) -> None:
        self.url = url
        self.rooms = rooms
        self.user = user
        self.token = token
        self.session: Session | None = None
        self.prompt: PromptSession[str] | None = None
        self.trio_token: trio.lowlevel.TrioToken | None = None
        self.stop = Interrupt()
        self.lines_in, self.lines_out = trio.open_memory_channel[str](math.inf)
        self.ready = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[outcome.Outcome[int]] = loop.create_future()
        # Before the guest run starts, so trio leaves SIGINT to us.  Until
        # then (the token is not there yet) Ctrl-C cannot come.
        loop.add_signal_handler(signal.SIGINT, self.interrupt)
        with (
            # Raw: the session's lines keep the marks of mentions; what others
            # wrote is cleaned of control characters before it gets there.
            StdoutProxy(sleep_between_writes=0.05, raw=True) as out,
            # Anything else printed (a warning) goes above the prompt too.
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
        ):
            self.prompt = PromptSession(erase_when_done=True)
            trio.lowlevel.start_guest_run(
                self._trio_main,
                out,
                run_sync_soon_threadsafe=loop.call_soon_threadsafe,
                run_sync_soon_not_threadsafe=loop.call_soon,
                done_callback=done.set_result,
                host_uses_signal_set_wakeup_fd=True,
            )
            self.trio_token = trio.lowlevel.current_trio_token()
            ready = asyncio.ensure_future(self.ready.wait())
            first: list[asyncio.Future[Any]] = [ready, done]
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            reading = asyncio.ensure_future(self._read_lines()) if self.ready.is_set() else None
            result = await done
            if reading is not None:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
        loop.remove_signal_handler(signal.SIGINT)
        return result.unwrap()

    async def _trio_main(self, out: StdoutProxy) -> int:
        return await run_session(
            self.url,
            rooms=self.rooms,
            user=self.user,
            token=self.token,
            lines=ChannelLines(self.lines_out),
            out=out,
            stop=self.stop,
            on_session=self._attach,
            highlight=True,
        )

    def _attach(self, session: Session) -> None:
        self.session = session
        session.on_change = self._redraw
        self.ready.set()

    def _redraw(self) -> None:
        if self.prompt is not None:
            self.prompt.app.invalidate()

    def interrupt(self) -> None:
        """Ctrl-C: stop the trio side (it closes the connection), exit 130."""
        self._to_trio(self.stop)

    def _to_trio(self, action: object) -> None:
        assert self.trio_token is not None
        with contextlib.suppress(trio.RunFinishedError):
            self.trio_token.run_sync_soon(action)  # type: ignore[arg-type]

    async def _read_lines(self) -> None:
        assert self.prompt is not None
        while True:
            try:
                line = await self.prompt.prompt_async(
                    self._prompt_text,
                    bottom_toolbar=self._status_line,
                    refresh_interval=REFRESH_INTERVAL,
                    handle_sigint=False,
                )
            except KeyboardInterrupt:
                self.interrupt()
                return
            except EOFError:
                self._to_trio(self.lines_in.close)
                return
            self._to_trio(lambda line=line: self.lines_in.send_nowait(line))

    def _prompt_text(self) -> FormattedText:
        session = self.session
        room = session.current if session is not None else None
        return FormattedText([("bold", room or "(no room)"), ("", "> ")])

    def _status_line(self) -> str:
        session = self.session
        if session is None:
            return " connecting"
        parts = [f" {session.client.user_id}"]
        if session.state is ConnectionState.ONLINE:
            parts.append("online")
        elif session.retry is not None:
            wait = session.retry_at - time.monotonic()
            when = f"next try in {wait:.0f} s" if wait >= 0.5 else "trying now"
            reason = session.retry.reason or "connection lost"
            if len(reason) > MAX_REASON_CHARS:
                reason = reason[: MAX_REASON_CHARS - 1] + "…"
            parts.append(f"reconnecting ({reason}; {when}, attempt {session.retry.attempt})")
        elif session.state is ConnectionState.CLOSED:
            parts.append("disconnected")
        else:
            parts.append(session.state.value)
        if session.current is not None:
            count = len(session.client.members(session.current))
            parts.append(f"{session.current}: {count} member{'s' if count != 1 else ''}")
        if session.unacknowledged:
            parts.append(f"{session.unacknowledged} not acknowledged yet")
        parts.append("/help for commands")
        return " · ".join(parts)
