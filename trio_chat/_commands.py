"""Custom commands (RPC): a client calls, the embedder's handler answers.

A client sends ``{"type": "command", "payload": {"name": N, "args": A},
"ref": R}``; the server runs the async handler registered as ``N`` (with
``server.add_command(N, handler)``) with a :class:`CommandCall`, and sends
back ``{"type": "result", "payload": {"name": N, "result": ...}, "ref": R}``,
or an ``error`` with ``ref`` R:

* 404: no command of that name;
* 429: the connection already has ``command_concurrency`` commands running
  (or the rate limit: a command counts as a chat does);
* the handler's own :class:`~trio_chat.ProtocolError` code and message;
* 504: the handler did not finish within ``command_timeout`` (it is
  cancelled);
* 500: the handler raised anything else, or returned what is not JSON or
  encodes to more than ``max_message_bytes`` (logged with the traceback).

Bounds: the arguments arrive in one frame (``max_message_bytes``); each
call is a task in the connection's nursery, so it ends with the connection,
at most ``command_concurrency`` per connection, each within
``command_timeout``.  The reader does not wait for a handler: the
connection's other frames go on meanwhile, and results come back in the
order the handlers finish.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._frames import text_frame
from ._policy import Sender
from ._protocol import COMMAND_PATTERN, Command, CommandResult, ProtocolError, is_valid_command

if TYPE_CHECKING:
    from ._handlers import ChatHandler

__all__ = ["CommandCall", "CommandHandler", "Commands"]

log = logging.getLogger("trio_chat.commands")


@attrs.frozen
class CommandCall:
    """One call of a command: its name, the client's ``args`` (any JSON
    value, None when absent) and the connection it came from."""

    name: str
    args: Any
    sender: Sender


CommandHandler = Callable[[CommandCall], Awaitable[Any]]


class Commands:
    """The server's registered commands, and the running of their calls."""

    def __init__(self, timeout: float, concurrency: int, max_result_bytes: int) -> None:
        self.timeout = timeout
        self.concurrency = concurrency
        self.max_result_bytes = max_result_bytes
        self.handlers: dict[str, CommandHandler] = {}
        #: Calls by outcome: ok, error (the handler's), timeout, fault, unknown, busy.
        self.outcomes: dict[str, int] = {}

    def add(self, name: str, handler: CommandHandler) -> None:
        if not is_valid_command(name):
            raise ValueError(f"name: a command name must match {COMMAND_PATTERN}, got {name!r}")
        self.handlers[name] = handler

    def remove(self, name: str) -> bool:
        return self.handlers.pop(name, None) is not None

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def start(self, reader: ChatHandler, event: Command) -> None:
        """Start *event*'s call in its connection's nursery, or refuse it."""
        handler = self.handlers.get(event.name)
        if handler is None:
            self._count("unknown")
            reader._refuse(ProtocolError(404, f"no command named {event.name!r}", event.ref))
            return
        if reader.commands_running >= self.concurrency:
            self._count("busy")
            reader._refuse(
                ProtocolError(
                    429,
                    f"at most {self.concurrency} commands may run at once per connection",
                    event.ref,
                )
            )
            return
        if reader.conn.start_task(self._run, reader, handler, event):
            reader.commands_running += 1

    async def _run(self, reader: ChatHandler, handler: CommandHandler, event: Command) -> None:
        sender = reader.sender
        try:
            with trio.move_on_after(self.timeout) as scope:
                result = await handler(CommandCall(event.name, event.args, sender))
            if scope.cancelled_caught:
                self._count("timeout")
                log.warning(
                    "command %s from %s did not finish within %g s",
                    event.name,
                    sender.user_id,
                    self.timeout,
                )
                raise ProtocolError(
                    504, f"command did not finish within {self.timeout:g} s", event.ref
                )
            text = _encode(CommandResult(event.name, result, event.ref))
            if len(text.encode("utf-8")) > self.max_result_bytes:
                raise ValueError(f"result of {len(text.encode())} bytes: over max_message_bytes")
        except ProtocolError as err:
            if err.code != 504:
                self._count("error")
            reader._refuse(attrs.evolve(err, ref=event.ref))
            return
        except Exception:
            self._count("fault")
            log.exception("command %s from %s failed", event.name, sender.user_id)
            reader._refuse(ProtocolError(500, "internal server error", event.ref))
            return
        finally:
            reader.commands_running -= 1
        self._count("ok")
        reader.conn.outlet.push(text_frame(text))


def _encode(result: CommandResult) -> str:
    """The frame's JSON; ValueError/TypeError for what JSON cannot hold
    (NaN and infinities included)."""
    return json.dumps(result.frame(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
