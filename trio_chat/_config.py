"""Server settings: one frozen, validated record, loadable from every source.

:class:`Config` holds every setting with its default.  :meth:`Config.load`
merges, from lowest to highest precedence, the defaults, a TOML file, the
``TRIO_CHAT_<SETTING>`` environment variables and explicit overrides (the
command-line flags).  A bad value raises :class:`ConfigError` naming the
setting.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any

import attrs

from ._message_frames import MAX_EMOJI_CHARS
from ._message_ops import DEFAULT_REACTIONS

__all__ = ["SETTINGS", "Config", "ConfigError"]


class ConfigError(ValueError):
    """A setting has a value it cannot take; the message names the setting."""


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value <= 0:
        raise ConfigError(f"{attribute.name}: must be greater than 0, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value < 0:
        raise ConfigError(f"{attribute.name}: must not be negative, got {value!r}")


def _port(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"port: must be between 0 and 65535, got {value!r}")


#: Shortest HS256 secret accepted, in bytes (RFC 7518 section 3.2: a key of
#: at least the hash's size).
MIN_SECRET_BYTES = 32


def _secret(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and len(value.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"secret: must be at least {MIN_SECRET_BYTES} bytes, got {len(value.encode())} "
            "(make one with: python3 -c 'import secrets; print(secrets.token_hex(32))')"
        )


class _Choice:
    """A validator that also tells the command line which values exist."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def __call__(self, instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in self.choices:
            raise ConfigError(
                f"{attribute.name}: must be one of {', '.join(self.choices)}, got {value!r}"
            )


def _setting(
    default: Any,
    help: str,
    validator: Any = None,
    *,
    metavar: str | None = None,
    shown_default: str | None = None,
    **kw: Any,
) -> Any:
    """A Config field; *help*, *metavar* and *shown_default* feed the CLI."""
    metadata: dict[str, Any] = {"help": help}
    if metavar is not None:
        metadata["metavar"] = metavar
    if shown_default is not None:
        metadata["shown_default"] = shown_default
    if isinstance(validator, _Choice):
        metadata["choices"] = validator.choices
    return attrs.field(default=default, validator=validator, metadata=metadata, **kw)


def _optional_dir(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return str(value)


def _origins(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    return tuple(v.strip() for v in value if v.strip())


def _reactions(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return tuple(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))


def _reactions_valid(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value or any(len(emoji) > MAX_EMOJI_CHARS for emoji in value):
        raise ConfigError(
            f"reactions: one or more emoji of at most {MAX_EMOJI_CHARS} characters, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class Config:
    """Every setting of a trio_chat server, with the protocol's defaults.

    Times are in seconds.  Build one directly (``Config(port=0)``), derive one
    with ``attrs.evolve``, or merge all sources with :meth:`load`.
    """

    host: str = _setting("127.0.0.1", "address to listen on", metavar="ADDRESS")
    port: int = _setting(8080, "TCP port to listen on (0 picks a free one)", _port)
    ping_interval: float = _setting(54.0, "seconds between server pings", _positive)
    pong_timeout: float = _setting(60.0, "seconds to wait for a pong", _positive)
    write_timeout: float = _setting(10.0, "seconds allowed for one write", _positive)
    handshake_timeout: float = _setting(
        10.0, "seconds allowed for the HTTP/WebSocket handshake", _positive
    )
    shutdown_grace: float = _setting(
        5.0, "seconds the graceful shutdown waits for closes", _non_negative
    )
    max_message_bytes: int = _setting(
        65536, "largest inbound frame in bytes (larger: close 1009)", _positive
    )
    max_content_chars: int = _setting(
        4000, "longest chat or direct content in characters", _positive
    )
    queue_size: int = _setting(
        256,
        "outbound frames queued per connection before it is a slow consumer",
        _positive,
    )
    history_size: int = _setting(100, "messages kept per room", _non_negative)
    max_connections: int = _setting(
        10000, "open connections allowed server-wide (more: HTTP 503)", _positive
    )
    max_connections_per_ip: int = _setting(
        50, "open connections allowed per client IP (more: HTTP 429)", _positive
    )
    max_handshakes_per_ip: int = _setting(
        100,
        "handshakes allowed per client IP per 10 seconds (more: HTTP 429)",
        _positive,
    )
    rate_messages: int = _setting(
        30, "chat/direct/presence frames allowed per connection per window", _positive
    )
    rate_seconds: float = _setting(10.0, "length of the rate-limit window", _positive)
    max_rooms: int = _setting(10000, "rooms kept in memory at once", _positive)
    max_rooms_per_connection: int = _setting(
        100, "rooms one connection may be in at once", _positive
    )
    # outbound and room budgets
    queue_bytes: int = _setting(
        1 << 20,
        "outbound bytes queued or being written per connection before it is a slow consumer"
        " (close 1013); a joined carries at most half of it in history",
        _positive,
    )
    queue_bytes_total: int = _setting(
        256 << 20,
        "outbound bytes queued for all connections together; at the bound the largest"
        " backlogs are closed as slow consumers (1013)",
        _positive,
    )
    max_rooms_created_per_connection: int = _setting(
        100, "rooms one connection may have created that still exist (more: error 403)", _positive
    )
    max_rooms_created_per_client: int = _setting(
        500,
        "rooms one client (an IP, or a user when tokens are required) may have created that"
        " still exist (more: error 403)",
        _positive,
    )
    history_bytes_per_room: int = _setting(
        1 << 20, "bytes of history kept per room (the oldest messages go first)", _positive
    )
    history_bytes_total: int = _setting(
        128 << 20, "bytes of history kept over all rooms (the oldest go first)", _positive
    )
    history_max_age: float = _setting(
        604800.0, "seconds a message is kept in history (0: no age limit)", _non_negative
    )
    edit_window: float = _setting(
        3600.0, "seconds after its time a message may be edited by its author", _non_negative
    )
    reactions: tuple[str, ...] = _setting(
        DEFAULT_REACTIONS,
        "the emoji a reaction may be, separated by spaces or commas",
        _reactions_valid,
        converter=_reactions,
        metavar="EMOJI",
        shown_default=" ".join(DEFAULT_REACTIONS),
    )
    max_conversations: int = _setting(
        10000,
        "direct conversations kept at once (the least recently used is forgotten first)",
        _positive,
    )
    max_conversations_per_user: int = _setting(
        200, "direct conversations one user may be in (more: error 403)", _positive
    )
    read_markers_per_user: int = _setting(
        1000,
        "read markers kept per user (the least recently moved is forgotten first)",
        _positive,
    )
    max_read_markers: int = _setting(
        100_000,
        "read markers kept in all (of at most 10,000 users)",
        _positive,
    )
    secret: str | None = _setting(
        None,
        f"HS256 secret of at least {MIN_SECRET_BYTES} bytes: require JWT tokens",
        _secret,
        metavar="SECRET",
        shown_default="none, anonymous mode",
        repr=False,
    )
    allowed_origins: tuple[str, ...] = _setting(
        (), "allowed browser Origins (default: same host)", converter=_origins
    )
    certfile: str | None = _setting(
        None, "TLS certificate chain (PEM): serve wss://", metavar="FILE"
    )
    keyfile: str | None = _setting(None, "TLS private key (PEM)", metavar="FILE")
    redis_url: str | None = _setting(
        None, "share rooms across processes through Redis", metavar="redis://HOST:PORT/DB"
    )
    workers: int = _setting(1, "server processes sharing the port", _positive)
    # storage
    store: str = _setting(
        "auto",
        "where rooms, history and refs are kept: sqlite (in data_dir, kept across "
        "restarts), memory (lost at exit) or auto (sqlite when data_dir is set)",
        _Choice("auto", "memory", "sqlite"),
    )
    data_dir: str | None = _setting(
        None,
        "directory of the SQLite store, created if missing (trio-chat serve: "
        "./trio-chat-data; none: keep nothing)",
        converter=_optional_dir,
        metavar="DIR",
        shown_default="none; trio-chat serve: ./trio-chat-data",
    )
    log_level: str = _setting("info", "log level", _Choice("debug", "info", "warning", "error"))
    log_format: str = _setting("text", "log format", _Choice("text", "json"))
    # connection layer
    permessage_deflate: str = _setting(
        "on",
        "negotiate permessage-deflate compression with clients that offer it",
        _Choice("on", "off"),
    )
    slow_consumer_grace: float = _setting(
        1.0,
        "seconds a slow consumer gets for its write in flight and its 1013 close frame"
        " (then: abort)",
        _positive,
    )
    # HTTP front
    http_idle_timeout: float = _setting(
        5.0, "seconds a keep-alive HTTP connection may wait for its next request", _positive
    )
    public_names: tuple[str, ...] = _setting(
        (),
        "host names clients use for this server besides its address (same-host Origin rule)",
        converter=_origins,
    )
    max_token_lifetime: float = _setting(
        30 * 86400.0, "longest a token may still be valid, in seconds from now", _positive
    )
    anonymous_names: int = _setting(
        10_000,
        "without a secret: names held for the browser key that used them first (at the"
        " bound the least recently used is forgotten)",
        _positive,
    )
    anonymous_name_hold: float = _setting(
        7 * 86400.0,
        "without a secret: seconds a name stays held for its browser key after its last handshake",
        _positive,
    )
    log_interval: float = _setting(
        10.0, "seconds between summary lines of repeated refusals and load shedding", _positive
    )
    # embedding
    hook_timeout: float = _setting(
        2.0,
        "seconds an embedder's asynchronous message policy may take over one event"
        " (then: error 500 for that event)",
        _positive,
    )
    stream_max_events: int = _setting(
        1000,
        "events an embedder's event stream or bot may leave unread (more: it is dropped)",
        _positive,
    )
    stream_max_bytes: int = _setting(
        1 << 20,
        "bytes of events an embedder's event stream or bot may leave unread (more: dropped)",
        _positive,
    )
    command_timeout: float = _setting(
        10.0,
        "seconds an embedder's command handler may take over one call (then: error 504)",
        _positive,
    )
    command_concurrency: int = _setting(
        4, "commands one connection may have running at once (more: error 429)", _positive
    )
    max_bans: int = _setting(
        10000, "bans (of users and addresses) in force at once (more: refused)", _positive
    )
    max_mutes: int = _setting(10000, "mutes in force at once (more: refused)", _positive)
    healthz_node: bool = _setting(False, "/healthz names the host and process (node id)")
    healthz_version: bool = _setting(True, "/healthz reports the trio_chat version")

    def __attrs_post_init__(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("certfile/keyfile: give both or neither")
        if self.store == "sqlite" and self.data_dir is None:
            raise ConfigError("store: sqlite needs a data_dir")
        if self.workers > 1 and not self.redis_url:
            raise ConfigError(
                "workers: more than one worker needs --redis-url, so that the processes share rooms"
            )

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def sqlite_dir(self) -> str | None:
        """The SQLite store's directory, or None for the memory store.

        With the Redis backplane, Redis holds rooms and history instead.
        """
        if self.store == "memory" or self.redis_url:
            return None
        return self.data_dir

    @classmethod
    def load(
        cls,
        *,
        file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> Config:
        """Merge defaults < *defaults* < TOML *file* < *environ* < *overrides*.

        *defaults* replace the class defaults for one command (``trio-chat
        serve`` keeps its data in ``./trio-chat-data``).

        Environment variables are ``TRIO_CHAT_<SETTING>``, e.g.
        ``TRIO_CHAT_PING_INTERVAL``; list settings take a comma-separated list.
        """
        values: dict[str, Any] = {
            _field_name(key, "defaults"): value for key, value in (defaults or {}).items()
        }
        if file is not None:
            try:
                with open(file, "rb") as f:
                    table = tomllib.load(f)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"config: cannot read {os.fspath(file)}: {exc}") from None
            table = table.get("trio_chat", table)
            for key, value in table.items():
                name = _field_name(key, "config file")
                values[name] = _coerce(name, value)
        environ = os.environ if environ is None else environ
        for name in SETTINGS:
            raw = environ.get("TRIO_CHAT_" + name.upper())
            if raw is not None:
                values[name] = _coerce(name, raw)
        for key, value in (overrides or {}).items():
            if value is not None:
                name = _field_name(key, "option")
                values[name] = _coerce(name, value)
        try:
            return cls(**values)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None


#: Setting name -> its attrs field.
SETTINGS: dict[str, attrs.Attribute[Any]] = {f.name: f for f in attrs.fields(Config)}


def _field_name(key: str, where: str) -> str:
    name = key.replace("-", "_")
    if name not in SETTINGS:
        raise ConfigError(f"{key}: unknown setting in {where}")
    return name


def _coerce(key: str, value: Any) -> Any:
    """Convert *value* (often a string) to the type of setting *key*."""
    name = key.replace("-", "_")
    kind: object = SETTINGS[name].type
    # Annotations are postponed (strings) in this module.
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if kind_name == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind_name == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind_name == "bool":
            if isinstance(value, bool):
                return value
            words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
            return words[str(value).strip().lower()]
        if kind_name.startswith("tuple"):
            return _origins(value)
        if kind_name.startswith("str"):
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError, KeyError):
        expected = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(
            kind_name, "a string"
        )
        raise ConfigError(f"{name}: must be {expected}, got {value!r}") from None
    return value  # pragma: no cover
