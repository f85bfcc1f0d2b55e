"""``trio-chat connect``: chat from a terminal, or from a script through a pipe.

Each input line is sent as a chat message to the current room; lines
starting with ``/`` are commands (``/help`` lists them).  Incoming events are
printed as one readable line each::

    [lobby] #7 12:01 alice: hi
    [lobby] #8 12:02 * bob waves
    [lobby] #7 alice edited: hi all
    * bob joined lobby
    (dm) #3 alice: psst
    ! error 429: rate limit exceeded: retry in 2000 ms

When stdin and stdout are both a terminal it runs an interactive UI
(:mod:`trio_chat._terminal_ui`, prompt_toolkit): a prompt naming the current
room, incoming lines printed above it without breaking what is being typed,
and a status line.  Otherwise (a pipe, a file) it reads lines and prints
lines, nothing more.

At ``/quit`` or the end of input (Ctrl-D) the client waits for the acks of the
messages it sent (so ``printf 'hi\\n' | trio-chat connect ...`` delivers "hi"),
then exits: 0 when every message was acknowledged, 1 otherwise or when the
server cannot be reached or refuses to let it reconnect, 2 for a bad
argument (a room name), 130 on Ctrl-C.  Connection drops are handled by
:mod:`trio_chat.client`: it reconnects, resumes and re-sends by itself.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import stat
import sys
import threading
import urllib.parse
from collections.abc import Callable
from typing import IO, Any

import trio

from ._protocol import is_valid_room
from ._terminal_format import format_event
from ._terminal_session import (
    HELP,
    INTERRUPTED,
    ROOM_RULE,
    Lines,
    Output,
    Session,
    write_line,
)
from .client import ConnectError, open_chat_client

__all__ = ["HELP", "format_event", "normalize_url", "run_terminal"]

#: Longest input line kept (longer ones are cut; the server's limit is lower).
MAX_LINE_BYTES = 1 << 20


def normalize_url(url: str) -> str:
    """The WebSocket URL for what was typed: ``ws://`` and ``/ws`` by default.

    ``127.0.0.1:8080`` and ``ws://127.0.0.1:8080`` mean
    ``ws://127.0.0.1:8080/ws`` (the path trio_chat serves WebSockets on);
    ``http://`` and ``https://`` mean ``ws://`` and ``wss://``.
    """
    if "://" not in url:
        url = "ws://" + url
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urllib.parse.urlunsplit(parts._replace(scheme=scheme, path=path))


def run_terminal(
    url: str,
    *,
    rooms: list[str],
    user: str | None = None,
    token: str | None = None,
    stdin: IO[Any] | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Run the terminal client until /quit or end of input; return the exit code.

    The interactive UI runs when *stdin* and *stdout* are not given and the
    process's own are a terminal (and ``TERM`` is not ``dumb``).
    """
    for room in rooms:
        if not is_valid_room(room):
            print(f"trio-chat: error: --room {room!r}: {ROOM_RULE}", file=sys.stderr)
            return 2
    url = normalize_url(url)
    _quiet_client_log()
    if stdin is None and stdout is None and _is_interactive():
        from ._terminal_ui import run_interactive

        return run_interactive(url, rooms=list(rooms), user=user, token=token)
    source = stdin if stdin is not None else sys.stdin
    out = stdout if stdout is not None else sys.stdout
    main = functools.partial(_plain, url, rooms=list(rooms), user=user, token=token)
    try:
        return trio.run(main, source, out)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BaseExceptionGroup as group:
        if group.split(KeyboardInterrupt)[1] is None:
            return INTERRUPTED  # Ctrl-C before the handler was in place
        raise


def _is_interactive() -> bool:
    try:
        return sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _quiet_client_log() -> None:
    """Keep the client's log warnings off the screen: the session prints them.

    Without any logging configuration Python prints warnings to stderr; a
    NullHandler on the client's logger stops that (an application's own
    logging setup, if any, still applies).
    """
    if not logging.getLogger().handlers:
        logging.getLogger("trio_chat.client").addHandler(logging.NullHandler())


async def _plain(
    url: str,
    source: IO[Any],
    out: IO[str],
    *,
    rooms: list[str],
    user: str | None,
    token: str | None,
) -> int:
    lines = LineReader(source)
    stop = Interrupt()
    try:
        if threading.current_thread() is not threading.main_thread():
            return await run_session(url, rooms=rooms, user=user, token=token, lines=lines, out=out)
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def on_signals() -> None:
                    async for _ in signals:
                        stop()

                nursery.start_soon(on_signals)
                code = await run_session(
                    url, rooms=rooms, user=user, token=token, lines=lines, out=out, stop=stop
                )
                nursery.cancel_scope.cancel()
        return code
    finally:
        await lines.aclose()


class Interrupt:
    """Ctrl-C for :func:`run_session`: call it from trio (in its thread).

    The first call ends the session without waiting for acks and leaves the
    connection with a normal close (1000); a second one, or one before the
    session started, cancels everything at once.  Either way
    :func:`run_session` returns 130.
    """

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.session: Session | None = None
        self.interrupted = False

    def __call__(self) -> None:
        if self.interrupted or self.session is None:
            self.scope.cancel()
        else:
            self.session.interrupt()
        self.interrupted = True


async def run_session(
    url: str,
    *,
    rooms: list[str],
    user: str | None,
    token: str | None,
    lines: Lines,
    out: Output,
    stop: Interrupt | None = None,
    on_session: Callable[[Session], None] | None = None,
    highlight: bool = False,
) -> int:
    """Connect, run a :class:`Session` on *lines*, return the exit code.

    *stop* is how Ctrl-C reaches it; *on_session* is called with the session
    once connected; *highlight*: *out* is a terminal, where the user's
    mentions are marked.
    """
    stop = stop if stop is not None else Interrupt()
    code = INTERRUPTED
    with stop.scope:
        # The printer outlives the client's block: leaving the block ends the
        # event stream, and the printer prints what is left before it stops.
        async with trio.open_nursery() as printing:
            try:
                async with open_chat_client(url, user=user, token=token) as client:
                    session = Session(client, out, highlight=highlight)
                    stop.session = session
                    if on_session is not None:
                        on_session(session)
                    printing.start_soon(session.print_events)
                    code = await session.run(rooms, lines)
            except ConnectError as exc:
                write_line(out, f"! {exc}")
                code = 1
    return INTERRUPTED if stop.interrupted else code


class LineReader:
    """Lines from a file object, read without blocking trio.

    A pipe or socket is read through :class:`trio.lowlevel.FdStream` on a
    duplicate of its fd (non-blocking I/O, cancellable).  A terminal or a
    regular file, which non-blocking I/O does not suit, is read by worker
    threads with :func:`os.read` on its fd: no lock of ``sys.stdin`` is ever
    held, so a read left blocked in a terminal when the client stops cannot
    stall the interpreter's exit.  A file object without an fd is read with
    its own ``readline`` in a thread.
    """

    def __init__(self, source: IO[Any]) -> None:
        self._source = source
        self._stream: trio.lowlevel.FdStream | None = None
        self._fd: int | None = None
        self._buffer = b""
        self._eof = False
        try:
            self._fd = source.fileno()
            mode = os.fstat(self._fd).st_mode
        except (AttributeError, OSError, ValueError):
            self._fd = None
            mode = 0
        if hasattr(trio.lowlevel, "FdStream") and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            assert self._fd is not None
            self._stream = trio.lowlevel.FdStream(os.dup(self._fd))

    async def _read(self) -> bytes:
        if self._stream is not None:
            return await self._stream.receive_some(65536)
        if self._fd is not None:
            return await trio.to_thread.run_sync(os.read, self._fd, 65536, abandon_on_cancel=True)
        read = getattr(self._source, "buffer", self._source).readline
        data = await trio.to_thread.run_sync(read, abandon_on_cancel=True)
        return data.encode() if isinstance(data, str) else bytes(data)

    async def readline(self) -> str | None:
        """The next line without its newline, or None at end of input."""
        while b"\n" not in self._buffer and not self._eof:
            chunk = await self._read()
            if not chunk:
                self._eof = True
            else:
                self._buffer += chunk
                if len(self._buffer) > MAX_LINE_BYTES and b"\n" not in self._buffer:
                    self._buffer = self._buffer[:MAX_LINE_BYTES] + b"\n"
        if not self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", errors="replace").rstrip("\r")

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
