"""A chat server with a helper bot, an audit log and a word filter.

Everything here uses only trio_chat's public API:

* a message policy (``WordFilter``) refuses chats and direct messages that
  contain a word of the word list (error 451, with a reason the sender
  sees) and turns ``http://`` links into ``https://`` ones;
* a bot, ``helper``, joins the rooms given with ``--room``; it answers
  ``/help`` with what it can do, ``/time`` with the server's clock, and
  ``/report USER`` by muting USER in that room for a minute;
* an audit log: an event stream over the same rooms writes one line per
  message, join, leave and moderation event to ``--audit`` (default: stdout).

Run it, then chat with the bot::

    .venv/bin/python examples/moderation_bot.py --port 8080 --room lobby --audit audit.log
    .venv/bin/trio-chat connect ws://127.0.0.1:8080/ws --room lobby
    > /help

Ctrl+C (or SIGTERM) shuts the server down gracefully and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

import trio

from trio_chat import (
    Bot,
    Chat,
    ChatMessage,
    ChatServer,
    Checked,
    Config,
    Direct,
    ProtocolError,
    Reject,
    Replace,
    Sender,
    StreamClosed,
    System,
    Verdict,
)

HELP = (
    "I am the helper bot. /help: this text. /time: the server's time."
    " /report USER: mute USER here for 60 s."
)
DEFAULT_WORDS = ("spam", "scam")


class WordFilter:
    """Refuse messages with a listed word; rewrite plain-HTTP links."""

    def __init__(self, words: list[str]) -> None:
        self.words = {w.lower() for w in words}

    def check(self, sender: Sender, event: Checked) -> Verdict:
        if isinstance(event, Chat | Direct):
            said = {w.strip(".,!?;:").lower() for w in event.content.split()}
            found = sorted(said & self.words)
            if found:
                return Reject(451, f"not allowed here: {', '.join(found)}")
            if "http://" in event.content:
                return Replace(event.content.replace("http://", "https://"))
        return None


async def helper(server: ChatServer, bot: Bot, rooms: list[str]) -> None:
    """Answer the slash commands said in the bot's rooms."""
    try:
        await _answer(server, bot, rooms)
    except StreamClosed:
        return  # the server closed the bot: it is shutting down


async def _answer(server: ChatServer, bot: Bot, rooms: list[str]) -> None:
    for room in rooms:
        await bot.join(room)
    async for event in bot:
        if not isinstance(event, ChatMessage) or not event.content.startswith("/"):
            continue
        word, _, rest = event.content.partition(" ")
        try:
            if word == "/help":
                await bot.send(event.room, HELP)
            elif word == "/time":
                await bot.send(event.room, time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
            elif word == "/report" and rest.strip():
                who = rest.strip()
                await server.mute(
                    who, event.room, duration=60, reason=f"reported by {event.user_id}", by="helper"
                )
                await bot.send(event.room, f"{who} is muted here for a minute.")
        except ProtocolError as err:
            await bot.send(event.room, f"cannot do that: {err.message}")


async def audit(server: ChatServer, rooms: list[str], out: Any) -> None:
    """One line per event of *rooms*, as they happen (*out*: a trio file)."""
    async with server.subscribe(rooms=rooms) as events:
        async for event in events:
            if isinstance(event, ChatMessage):
                line = f"{event.time} #{event.room} {event.id} <{event.user_id}> {event.content}"
            elif isinstance(event, System):
                what = event.text or f"{event.user_id} {event.event}"
                line = f"#{event.room} * {what}"
            else:
                continue
            await out.write(line + "\n")
            await out.flush()


async def main(args: argparse.Namespace) -> None:
    words = args.word or list(DEFAULT_WORDS)
    server = ChatServer(
        Config(host=args.host, port=args.port, data_dir=args.data_dir), policy=WordFilter(words)
    )
    if args.audit:
        out = await trio.open_file(args.audit, "a", encoding="utf-8")
    else:
        out = trio.wrap_file(sys.stdout)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                print(f"trio-chat listening on {server.url}", flush=True)
                async with server.open_bot("helper") as bot, trio.open_nursery() as own:
                    own.start_soon(audit, server, args.room, out)
                    own.start_soon(helper, server, bot, args.room)
                    async for _ in signals:
                        break
                    # Graceful: the audit log gets every event queued so far
                    # (its stream then ends), the bot is closed, clients get 1001.
                    await server.shutdown()
    finally:
        if args.audit:
            await out.aclose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--room", action="append", default=None, help="a room (repeatable)")
    parser.add_argument("--word", action="append", default=None, help="a word to refuse")
    parser.add_argument("--audit", default=None, help="append the audit log to this file")
    parser.add_argument("--data-dir", default=None, help="keep history and bans here (SQLite)")
    args = parser.parse_args(argv)
    args.room = args.room or ["lobby"]
    return args


if __name__ == "__main__":
    trio.run(main, parse_args())
