"""The ``trio-chat`` command: serve, echo, token, connect."""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from ._config import MIN_SECRET_BYTES, SETTINGS, Config, ConfigError
from ._sqlite_store import StoreError
from ._version import __version__

__all__ = ["build_parser", "load_config", "main"]

#: Settings that are not command-line flags of ``serve`` under their own name.
_NOT_FLAGS = {"allowed_origins"}
#: ``serve``'s own defaults: keep history in a data directory.
SERVE_DEFAULTS = {"data_dir": "./trio-chat-data"}


def _metavar(name: str, field: attrs.Attribute[Any]) -> str:
    """What a setting's flag takes, for ``--help``."""
    given = field.metadata.get("metavar")
    if given is not None:
        return str(given)
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    if "bytes" in name:
        return "BYTES"
    if kind.startswith("int"):
        return "N"
    if kind.startswith("float"):
        return "SECONDS"
    return name.rsplit("_", maxsplit=1)[-1].upper()


def _add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        field = SETTINGS[name]
        default = field.metadata.get("shown_default")
        if default is None:
            default = "none" if field.default is None else field.default
        choices = field.metadata.get("choices")
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            choices=choices,
            metavar=None if choices else _metavar(name, field),
            help=f"{field.metadata['help']} (default: {default}; env TRIO_CHAT_{name.upper()})",
        )


#: The settings ``trio-chat echo`` takes.
_ECHO_SETTINGS = (
    "host",
    "port",
    "max_message_bytes",
    "ping_interval",
    "pong_timeout",
    "write_timeout",
    "handshake_timeout",
    "shutdown_grace",
    "queue_size",
    "log_level",
    "log_format",
)

_SERVE_EPILOG = """Every setting is also an environment variable TRIO_CHAT_<SETTING> and a key
of the TOML file given with --config; flags beat the environment, which
beats the file, which beats the defaults.  A bad value is a one-line error
naming the setting (exit 2), and so is an address that cannot be listened on.
"""

_TOKEN_EPILOG = """The secret must be the server's (--secret, TRIO_CHAT_SECRET, or the TOML
file's `secret`), at least 32 bytes.  Example:
  trio-chat token alice --ttl 12h --rooms 'lobby,team-*'
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``trio-chat`` command line: its subcommands, flags and help."""
    from ._terminal import HELP as SLASH_COMMANDS

    parser = argparse.ArgumentParser(
        prog="trio-chat", description="A WebSocket chat server built on trio."
    )
    parser.add_argument("--version", action="version", version=f"trio-chat {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    serve = commands.add_parser(
        "serve",
        help="run the chat server",
        description="Run the chat server: the chat page on /, WebSocket clients on /ws, "
        "/healthz, /metrics and the HTTP API, all on one port.",
        epilog=_SERVE_EPILOG,
        formatter_class=raw,
    )
    serve.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file")
    _add_setting_flags(serve, [n for n in SETTINGS if n not in _NOT_FLAGS])
    serve.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="allowed browser Origin, repeatable (default: same host; env "
        "TRIO_CHAT_ALLOWED_ORIGINS, comma-separated)",
    )

    echo = commands.add_parser(
        "echo",
        help="run a plain WebSocket echo server on /ws",
        description="Run a WebSocket echo endpoint on /ws: every message goes back to its "
        "sender, over the chat server's own connection code (for conformance tests).",
    )
    echo.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file")
    _add_setting_flags(echo, _ECHO_SETTINGS)

    token = commands.add_parser(
        "token",
        help="print a signed token for a user",
        description="Print an HS256 JWT that lets USER connect to a server with a secret.",
        epilog=_TOKEN_EPILOG,
        formatter_class=raw,
    )
    token.add_argument("user", metavar="USER", help="the user id (the token's sub)")
    token.add_argument(
        "--ttl",
        default="1h",
        metavar="DURATION",
        help="lifetime: a number of seconds, or with a unit s, m, h or d: 90s, 30m, 12h, 7d "
        "(default 1h)",
    )
    token.add_argument(
        "--rooms", default=None, metavar="PATTERNS", help="allowed rooms, e.g. 'lobby,team-*'"
    )
    token.add_argument("--admin", action="store_true", help="allow the HTTP publish API")
    token.add_argument(
        "--secret",
        default=None,
        metavar="SECRET",
        help="the server's secret (env TRIO_CHAT_SECRET)",
    )
    token.add_argument("--config", metavar="FILE.toml", help="read the secret from a TOML file")

    connect = commands.add_parser(
        "connect",
        help="chat from the terminal",
        description="Chat from a terminal, or from a script through a pipe: each line is "
        "sent to the current room.",
        epilog=SLASH_COMMANDS,
        formatter_class=raw,
    )
    connect.add_argument(
        "url",
        metavar="URL",
        help="the server's WebSocket URL: ws://HOST:PORT/ws (the path defaults to /ws)",
    )
    connect.add_argument(
        "--room",
        action="append",
        default=None,
        metavar="ROOM",
        help="room to join (repeatable)",
    )
    who = connect.add_mutually_exclusive_group()
    who.add_argument("--user", default=None, metavar="NAME", help="user name (anonymous mode)")
    who.add_argument(
        "--token", default=None, metavar="TOKEN", help="token (when the server has a secret)"
    )
    connect.add_argument(
        "--key",
        default=None,
        metavar="KEY",
        help="anonymous mode: the key (8 to 64 of A-Z a-z 0-9 _ -) that holds your name: the"
        " server refuses it to anyone with another key or none; default: a random one for"
        " this run, so reconnects keep the name; give the same one to keep it across runs",
    )
    from ._admin_cli import add_admin_parser

    add_admin_parser(commands)
    return parser


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_ttl(text: str) -> float:
    try:
        if text[-1:] in _TTL_UNITS:
            value = float(text[:-1]) * _TTL_UNITS[text[-1]]
        else:
            value = float(text)
    except ValueError:
        raise ConfigError(
            f"ttl: not a duration: {text!r} (a number of seconds, or with a unit "
            "s, m, h or d: 90s, 30m, 12h, 7d)"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"ttl: must be a positive duration, got {text!r}")
    return value


def load_config(
    args: argparse.Namespace, names: Sequence[str], defaults: dict[str, str] | None = None
) -> Config:
    """The settings *names* from the flags in *args*, the environment, the
    ``--config`` file and *defaults*, in that order of precedence."""
    overrides = {name: getattr(args, name, None) for name in names}
    return Config.load(file=args.config, overrides=overrides, defaults=defaults)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            config = load_config(args, list(SETTINGS), SERVE_DEFAULTS)
            if config.workers > 1:
                from ._workers import run_workers

                return run_workers(config, sys.argv[1:] if argv is None else list(argv))
            return _serve(config, echo=False)
        if args.command == "echo":
            config = load_config(args, _ECHO_SETTINGS)
            if args.max_message_bytes is None and "TRIO_CHAT_MAX_MESSAGE_BYTES" not in os.environ:
                config = attrs.evolve(config, max_message_bytes=16 * 1024 * 1024)
            return _serve(config, echo=True)
        if args.command == "token":
            return _token(args)
        if args.command == "admin":
            from ._admin_cli import run_admin

            return run_admin(args)
        if args.command == "connect":
            from ._terminal import run_terminal

            url = args.url
            if args.key is not None:
                # Sent as ?key= with the name; every reconnect sends it again.
                parts = urllib.parse.urlsplit(url)
                query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
                query = [(k, v) for k, v in query if k != "key"] + [("key", args.key)]
                url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
            return run_terminal(url, rooms=args.room or [], user=args.user, token=args.token)
    except (ConfigError, StoreError) as exc:
        print(f"trio-chat: error: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover


def _token(args: argparse.Namespace) -> int:
    from ._auth import make_token

    secret = args.secret or os.environ.get("TRIO_CHAT_SECRET")
    if not secret and args.config:
        secret = Config.load(file=args.config, environ={}).secret
    if not secret:
        raise ConfigError("secret: give --secret or set TRIO_CHAT_SECRET")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"secret: must be at least {MIN_SECRET_BYTES} bytes, got {len(secret.encode())}"
        )
    ttl = _parse_ttl(args.ttl)
    rooms = None
    if args.rooms is not None:
        rooms = [r.strip() for r in args.rooms.split(",") if r.strip()]
    try:
        token = make_token(secret, args.user, ttl=ttl, rooms=rooms, admin=args.admin)
    except ValueError as exc:
        raise ConfigError(f"user: {exc}") from None
    print(token)
    return 0


def _serve(
    config: Config, *, echo: bool, listeners: list[trio.SocketListener] | None = None
) -> int:
    from ._logging import configure_logging
    from ._server import build_server

    configure_logging(config.log_level, config.log_format)
    server = build_server(config, echo=echo)

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: server.serve(listeners=listeners, task_status=task_status)
                )
                print(listening_line(server.url), flush=True)
                async for _ in signals:
                    break
                await server.shutdown()

    try:
        trio.run(run)
    except (OSError, BaseExceptionGroup) as exc:
        bind_error = _only_os_error(exc)
        if bind_error is None:
            raise
        print(f"trio-chat: error: {_describe_bind_error(config, bind_error)}", file=sys.stderr)
        return 2
    return 0


def listening_line(ws_url: str) -> str:
    """The line ``serve`` prints once it listens: the WebSocket and page URLs."""
    scheme, _, rest = ws_url.partition("://")
    page = ("https" if scheme == "wss" else "http") + "://" + rest.removesuffix("ws")
    return f"trio-chat listening on {ws_url} (chat page: {page})"


def _only_os_error(exc: BaseException) -> OSError | None:
    """The OSError behind *exc* if that is all it is (trio wraps it in groups)."""
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc if isinstance(exc, OSError) else None


def _describe_bind_error(config: Config, exc: OSError) -> str:
    where = f"{config.host}:{config.port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: the address is already in use"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: no such local address"
    reason = exc.strerror or str(exc)
    return f"cannot listen on {where}: {reason}"
