"""The ``trio-chat`` command: serve, echo, token, connect."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

import attrs
import trio

from ._config import SETTINGS, Config, ConfigError

__all__ = ["main"]

#: Settings that are not command-line flags of ``serve`` under their own name.
_NOT_FLAGS = {"allowed_origins"}


def _add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        field = SETTINGS[name]
        default = field.default
        shown = "none" if default is None else default
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=name.split("_")[-1].upper(),
            help=f"{field.metadata['help']} (default: {shown}; env TRIO_CHAT_{name.upper()})",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-chat", description="A WebSocket chat server built on trio."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the chat server")
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

    echo = commands.add_parser("echo", help="run a plain WebSocket echo server on /ws")
    echo.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file")
    _add_setting_flags(
        echo,
        [
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
        ],
    )

    token = commands.add_parser("token", help="print a signed token for a user")
    token.add_argument("user", help="the user id (the token's sub)")
    token.add_argument("--ttl", default="1h", help="lifetime: 90s, 30m, 12h, 7d (default 1h)")
    token.add_argument("--rooms", default=None, help="allowed rooms, e.g. 'lobby,team-*'")
    token.add_argument("--admin", action="store_true", help="allow the HTTP publish API")
    token.add_argument("--secret", default=None, help="the server's secret (env TRIO_CHAT_SECRET)")
    token.add_argument("--config", metavar="FILE.toml", help="read the secret from a TOML file")

    connect = commands.add_parser("connect", help="chat from the terminal")
    connect.add_argument("url", help="ws://HOST:PORT/ws")
    connect.add_argument("--room", action="append", default=None, help="room to join (repeatable)")
    who = connect.add_mutually_exclusive_group()
    who.add_argument("--user", default=None, help="user name (anonymous mode)")
    who.add_argument("--token", default=None, help="token (when the server has a secret)")
    return parser


def _parse_ttl(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise ConfigError(f"ttl: not a duration: {text!r}") from None


def _load(args: argparse.Namespace, names: Sequence[str]) -> Config:
    overrides = {name: getattr(args, name, None) for name in names}
    return Config.load(file=args.config, overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            config = _load(args, list(SETTINGS))
            if config.workers > 1:
                from ._workers import run_workers

                return run_workers(config, sys.argv[1:] if argv is None else list(argv))
            return _serve(config, echo=False)
        if args.command == "echo":
            config = _load(
                args,
                [
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
                ],
            )
            if args.max_message_bytes is None and "TRIO_CHAT_MAX_MESSAGE_BYTES" not in os.environ:
                config = attrs.evolve(config, max_message_bytes=16 * 1024 * 1024)
            return _serve(config, echo=True)
        if args.command == "token":
            return _token(args)
        if args.command == "connect":
            from ._terminal import run_terminal

            return run_terminal(args.url, rooms=args.room or [], user=args.user, token=args.token)
    except ConfigError as exc:
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
    rooms = None
    if args.rooms is not None:
        rooms = [r.strip() for r in args.rooms.split(",") if r.strip()]
    try:
        token = make_token(
            secret, args.user, ttl=_parse_ttl(args.ttl), rooms=rooms, admin=args.admin
        )
    except ValueError as exc:
        raise ConfigError(f"user: {exc}") from None
    print(token)
    return 0


def _serve(config: Config, *, echo: bool, listeners: list | None = None) -> int:
    from ._logging import configure_logging
    from ._server import ChatServer

    configure_logging(config.log_level, config.log_format)
    server = ChatServer(config, echo=echo)
    if config.redis_url and not echo:
        from ._backplane import attach_backplane

        attach_backplane(server)

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: server.serve(listeners=listeners, task_status=task_status)
                )
                print(f"trio-chat listening on {server.url}", flush=True)
                async for _ in signals:
                    break
                await server.shutdown()

    try:
        trio.run(run)
    except OSError as exc:
        print(f"trio-chat: error: {exc}", file=sys.stderr)
        return 1
    return 0
