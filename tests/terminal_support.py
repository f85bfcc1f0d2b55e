"""The terminal client in a pseudo-terminal, its screen read by a terminal emulator.

:class:`PtyTerminal` runs ``python -m trio_chat connect ...`` under a pty
(pexpect) and feeds everything it prints into a pyte screen, a VT100
emulator: assertions are about what a person would see, after cursor moves
and erases, not about the raw escape sequences.  The emulator answers the
client's cursor position requests, as a real terminal does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import pexpect
import pyte
import trio

ROWS = 60
COLUMNS = 160


class _AnsweringScreen(pyte.Screen):
    """A screen that sends its replies (cursor position reports) back."""

    def __init__(self, columns: int, lines: int, child: pexpect.spawn) -> None:
        super().__init__(columns, lines)
        self._child = child

    def write_process_input(self, data: str) -> None:
        self._child.send(data)


class PtyTerminal:
    """``trio-chat connect ARGS`` on a pty; or any *command* given."""

    def __init__(self, *args: str, command: list[str] | None = None) -> None:
        if command is None:
            command = [sys.executable, "-m", "trio_chat", "connect", *args]
        env = {**os.environ, "TERM": "xterm", "COLUMNS": str(COLUMNS), "LINES": str(ROWS)}
        self.child = pexpect.spawn(
            command[0], command[1:], dimensions=(ROWS, COLUMNS), env=env, echo=True
        )
        self.screen = _AnsweringScreen(COLUMNS, ROWS, self.child)
        self.stream = pyte.ByteStream(self.screen)
        #: Every byte the process wrote to the terminal.
        self.raw = bytearray()
        self.eof = False

    async def _pump(self) -> None:
        """Read what the process wrote (waiting up to 0.2 s) into the screen."""

        def read() -> bytes | None:
            try:
                return self.child.read_nonblocking(65536, timeout=0.2)
            except pexpect.TIMEOUT:
                return b""
            except pexpect.EOF:
                return None

        data = await trio.to_thread.run_sync(read)
        if data is None:
            self.eof = True
        elif data:
            self.raw += data
            self.stream.feed(data)

    def lines(self) -> list[str]:
        """The screen's non-blank lines, top to bottom."""
        return [line.rstrip() for line in self.screen.display if line.strip()]

    def text(self) -> str:
        return "\n".join(self.lines())

    async def until(self, predicate: Callable[[list[str]], Any], timeout: float = 15) -> list[str]:
        """Wait until *predicate* holds for the screen's lines; return them."""
        with trio.fail_after(timeout):
            while not predicate(self.lines()):
                if self.eof:
                    raise AssertionError(f"the process exited; screen:\n{self.text()}")
                await self._pump()
        return self.lines()

    async def until_line(self, predicate: Callable[[str], Any], timeout: float = 15) -> str:
        """Wait for a screen line for which *predicate* holds; return it."""
        lines = await self.until(lambda lines: any(predicate(line) for line in lines), timeout)
        return next(line for line in lines if predicate(line))

    async def send(self, text: str) -> None:
        await trio.to_thread.run_sync(self.child.send, text)

    async def exit_status(self, timeout: float = 20) -> int | None:
        """Wait for the process to end; its exit code (None if a signal killed it)."""
        with trio.fail_after(timeout):
            while not self.eof:
                await self._pump()
            await trio.to_thread.run_sync(self.child.wait)
        status: int | None = self.child.exitstatus
        return status

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close(force=True)
