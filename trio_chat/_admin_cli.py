"""``trio-chat admin``: moderate a running server through its admin API.

    trio-chat admin --url http://127.0.0.1:8080 --secret "$SECRET" kick alice --reason spam
    trio-chat admin ban --user alice --duration 1d --reason "spam, again"
    trio-chat admin ban --ip 203.0.113.7 --duration 12h
    trio-chat admin mute alice lobby --duration 10m
    trio-chat admin bans

It calls the server's ``/api/admin/*`` routes with an admin token: given
with ``--token`` (or ``TRIO_CHAT_ADMIN_TOKEN``), or signed for one minute
with the server's secret (``--secret``, ``TRIO_CHAT_SECRET`` or the
``--config`` file's).  The answer is printed as JSON; exit 0 when the server
did it, 1 when it refused (its reason on stderr), 2 for a usage error or an
unreachable server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

__all__ = ["add_admin_parser", "run_admin"]

_EPILOG = """actions:
  kick USER [--reason R]                 close every connection of USER (close 4001)
  ban (--user USER | --ip IP) --duration D [--reason R]
                                         refuse at the handshake for D (90s, 30m, 12h, 7d)
  unban (--user USER | --ip IP)
  bans                                   list the bans in force
  mute USER ROOM --duration D [--reason R]
                                         refuse USER's chats in ROOM (error 403) for D
  unmute USER ROOM
  mutes                                  list the mutes in force
  delete ROOM ID [--reason R]            delete message ID of ROOM, whoever wrote it
  topic ROOM TEXT                        set ROOM's topic ('' clears it)
  close ROOM [--reason R]                remove everyone from ROOM and forget it
"""


def add_admin_parser(commands: Any) -> None:
    """Add ``admin`` to the ``trio-chat`` subcommands."""
    admin = commands.add_parser(
        "admin",
        help="kick, ban, mute, delete, set a topic or close a room on a running server",
        description="Moderate a running server through its admin HTTP API.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    admin.add_argument(
        "--url",
        default=os.environ.get("TRIO_CHAT_URL", "http://127.0.0.1:8080"),
        help="the server's HTTP address (default http://127.0.0.1:8080; env TRIO_CHAT_URL)",
    )
    who = admin.add_mutually_exclusive_group()
    who.add_argument("--token", default=None, help="an admin token (env TRIO_CHAT_ADMIN_TOKEN)")
    who.add_argument(
        "--secret", default=None, help="the server's secret, to sign a token (env TRIO_CHAT_SECRET)"
    )
    admin.add_argument("--config", metavar="FILE.toml", help="read the secret from a TOML file")
    actions = admin.add_subparsers(dest="action", required=True, metavar="ACTION")
    kick = actions.add_parser("kick", help="close every connection of a user")
    kick.add_argument("user")
    kick.add_argument("--reason", default="")
    for name in ("ban", "unban"):
        sub = actions.add_parser(name, help=f"{name} a user or an address")
        target = sub.add_mutually_exclusive_group(required=True)
        target.add_argument("--user", default=None)
        target.add_argument("--ip", default=None)
        if name == "ban":
            sub.add_argument("--duration", required=True, help="90s, 30m, 12h, 7d or seconds")
            sub.add_argument("--reason", default="")
    for name in ("mute", "unmute"):
        sub = actions.add_parser(name, help=f"{name} a user in a room")
        sub.add_argument("user")
        sub.add_argument("room")
        if name == "mute":
            sub.add_argument("--duration", required=True, help="90s, 30m, 12h, 7d or seconds")
            sub.add_argument("--reason", default="")
    delete = actions.add_parser("delete", help="delete any message of a room")
    delete.add_argument("room")
    delete.add_argument("id", type=int)
    delete.add_argument("--reason", default="")
    topic = actions.add_parser("topic", help="set a room's topic ('' clears it)")
    topic.add_argument("room")
    topic.add_argument("topic")
    close = actions.add_parser("close", help="remove everyone from a room and forget it")
    close.add_argument("room")
    close.add_argument("--reason", default="")
    actions.add_parser("bans", help="list the bans in force")
    actions.add_parser("mutes", help="list the mutes in force")


def _token(args: argparse.Namespace) -> str:
    from ._auth import make_token
    from ._config import Config, ConfigError

    token = args.token or os.environ.get("TRIO_CHAT_ADMIN_TOKEN")
    if token:
        return str(token)
    secret = args.secret or os.environ.get("TRIO_CHAT_SECRET")
    if not secret and args.config:
        secret = Config.load(file=args.config, environ={}).secret
    if not secret:
        raise ConfigError("give --token (or TRIO_CHAT_ADMIN_TOKEN) or --secret (TRIO_CHAT_SECRET)")
    return make_token(secret, "admin-cli", ttl=60, admin=True)


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    from ._cli import _parse_ttl

    action = args.action
    if action in ("bans", "mutes"):
        return "GET", action, None
    body: dict[str, Any] = {}
    if action == "kick":
        body = {"user_id": args.user, "reason": args.reason}
    elif action in ("ban", "unban"):
        body = {"user_id": args.user} if args.user is not None else {"ip": args.ip}
    elif action == "delete":
        body = {"room": args.room, "id": args.id, "reason": args.reason}
    elif action == "topic":
        body = {"room": args.room, "topic": args.topic}
    elif action == "close":
        body = {"room": args.room, "reason": args.reason}
    else:
        body = {"user_id": args.user, "room": args.room}
    if action in ("ban", "mute"):
        body["duration"] = _parse_ttl(args.duration)
        body["reason"] = args.reason
    return "POST", action, body


def run_admin(args: argparse.Namespace) -> int:
    """Run ``trio-chat admin``; raises ConfigError for usage errors."""
    method, action, body = _request(args)
    url = args.url.rstrip("/") + "/api/admin/" + action
    headers = {"Authorization": f"Bearer {_token(args)}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            reason = json.loads(text).get("error", text)
        except (ValueError, AttributeError):
            reason = text.strip()
        print(f"trio-chat: {action} refused (HTTP {exc.code}): {reason}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"trio-chat: error: cannot reach {url}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer, ensure_ascii=False))
    return 0
