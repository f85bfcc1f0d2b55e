"""Config: defaults, validation, and the merge flags > environment > file > defaults."""

from __future__ import annotations

import attrs
import pytest

from trio_chat import Config, ConfigError
from trio_chat._cli import build_parser
from trio_chat._config import SETTINGS

#: A valid, non-default value for every setting a test may set alone.
SAMPLES = {
    "host": "0.0.0.0",
    "port": 9999,
    "ping_interval": 12.5,
    "pong_timeout": 13.5,
    "write_timeout": 3.0,
    "handshake_timeout": 4.0,
    "shutdown_grace": 0.0,
    "max_message_bytes": 1234,
    "max_content_chars": 99,
    "queue_size": 17,
    "history_size": 0,
    "max_connections": 5,
    "max_connections_per_ip": 6,
    "max_handshakes_per_ip": 7,
    "rate_messages": 8,
    "rate_seconds": 9.5,
    "max_rooms": 10,
    "max_rooms_per_connection": 11,
    # outbound and room budgets
    "queue_bytes": 4096,
    "queue_bytes_total": 65536,
    "max_rooms_created_per_connection": 12,
    "max_rooms_created_per_client": 13,
    "history_bytes_per_room": 5000,
    "history_bytes_total": 50000,
    "history_max_age": 60.0,
    "edit_window": 120.0,
    "reactions": ("a", "\U0001f44d"),
    "max_conversations": 14,
    "max_conversations_per_user": 15,
    "read_markers_per_user": 16,
    "max_read_markers": 17,
    "secret": "s3cret-long-enough-for-hs256-0123456789",
    "allowed_origins": ("https://a.example", "https://b.example"),
    "redis_url": "redis://127.0.0.1:6379/0",
    "log_level": "debug",
    "log_format": "json",
    "permessage_deflate": "off",
    "slow_consumer_grace": 0.25,
    "http_idle_timeout": 2.5,
    "public_names": ("chat.example", "a.example"),
    "max_token_lifetime": 3600.0,
    "anonymous_names": 500,
    "anonymous_name_hold": 60.0,
    "log_interval": 30.0,
    "healthz_node": True,
    "healthz_version": False,
    "hook_timeout": 0.5,
    "stream_max_events": 50,
    "stream_max_bytes": 65536,
    "command_timeout": 3.0,
    "command_concurrency": 2,
    "max_bans": 20,
    "max_mutes": 30,
    "store": "memory",
    "data_dir": "/var/lib/trio-chat",
}
#: Settings that only make sense together with others.
PAIRED = {"certfile", "keyfile", "workers"}


def as_text(value) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def test_every_setting_is_covered_here():
    assert set(SAMPLES) | PAIRED == set(SETTINGS)


def test_defaults_are_the_protocols():
    config = Config.load(environ={})
    assert config == Config()
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert config.ping_interval == 54 and config.pong_timeout == 60
    assert config.write_timeout == 10 and config.handshake_timeout == 10
    assert config.shutdown_grace == 5
    assert config.max_message_bytes == 65536 and config.max_content_chars == 4000
    assert config.queue_size == 256 and config.history_size == 100
    assert config.secret is None and config.allowed_origins == ()
    assert config.log_level == "info" and config.log_format == "text"


def test_config_is_frozen():
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Config().port = 1  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_setting_from_each_source(name, tmp_path):
    value = SAMPLES[name]
    # environment
    config = Config.load(environ={f"TRIO_CHAT_{name.upper()}": as_text(value)})
    assert getattr(config, name) == value
    # file (TOML types), top level and in a [trio_chat] table
    toml_value = list(value) if isinstance(value, tuple) else value
    literal = repr(toml_value).replace("'", '"')
    if isinstance(value, bool):
        literal = literal.lower()
    for text in (f"{name} = {literal}\n", f"[trio_chat]\n{name} = {literal}\n"):
        path = tmp_path / "c.toml"
        path.write_text(text)
        assert getattr(Config.load(file=path, environ={}), name) == value
    # flags: the command line gives strings
    config = Config.load(environ={}, overrides={name: as_text(value)})
    assert getattr(config, name) == value


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path):
    path = tmp_path / "trio-chat.toml"
    path.write_text(
        "ping_interval = 11\nrate_messages = 5\nmax_content_chars = 100\nqueue_size = 64\n"
    )
    environ = {
        "TRIO_CHAT_PING_INTERVAL": "22",
        "TRIO_CHAT_RATE_MESSAGES": "6",
        "TRIO_CHAT_QUEUE_SIZE": "65",
    }
    overrides = {"ping_interval": "33", "queue_size": None, "port": None}
    config = Config.load(file=path, environ=environ, overrides=overrides)
    assert config.ping_interval == 33  # flag
    assert config.rate_messages == 6  # environment
    assert config.queue_size == 65  # environment (flag not given)
    assert config.max_content_chars == 100  # file
    assert config.history_size == 100  # default
    assert config.port == 8080  # default (flag not given)


def test_file_keys_may_use_dashes(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('ping-interval = 7\nlog-format = "json"\n')
    config = Config.load(file=path, environ={})
    assert config.ping_interval == 7 and config.log_format == "json"


def test_integral_floats_are_integers_but_fractions_are_not():
    assert Config.load(environ={}, overrides={"queue_size": 2.0}).queue_size == 2
    with pytest.raises(ConfigError, match="queue_size"):
        Config.load(environ={}, overrides={"queue_size": 2.5})
    with pytest.raises(ConfigError, match="queue_size"):
        Config.load(environ={"TRIO_CHAT_QUEUE_SIZE": "2.5"})


BAD = [
    ("ping_interval", "abc"),
    ("ping_interval", "0"),
    ("ping_interval", "-1"),
    ("pong_timeout", "nan?"),
    ("write_timeout", "0"),
    ("handshake_timeout", "-3"),
    ("shutdown_grace", "-0.5"),
    ("port", "70000"),
    ("port", "-1"),
    ("port", "http"),
    ("max_message_bytes", "0"),
    ("max_content_chars", "lots"),
    ("queue_size", "0"),
    ("history_size", "-1"),
    ("max_connections", "0"),
    ("rate_messages", "1e3x"),
    ("rate_seconds", "0"),
    ("workers", "0"),
    ("log_level", "loud"),
    ("log_format", "xml"),
    ("edit_window", "-1"),
    ("reactions", " , "),
    ("reactions", "x" * 17),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_bad_values_name_the_setting(name, value):
    for kwargs in (
        {"environ": {f"TRIO_CHAT_{name.upper()}": value}},
        {"environ": {}, "overrides": {name: value}},
    ):
        with pytest.raises(ConfigError) as info:
            Config.load(**kwargs)
        message = str(info.value)
        assert message.startswith(f"{name}:"), message
        assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('max_content_chars = "lots"\n', "max_content_chars"),
        ("queue_size = true\n", "queue_size"),
        ("queue_size = 1.5\n", "queue_size"),
        ("ping_interval = -2\n", "ping_interval"),
        ("host = 5\n", "host"),
        ("pingg_interval = 3\n", "pingg_interval"),
        ("this is not toml\n", "config"),
    ],
)
def test_bad_file_values_name_the_setting(tmp_path, text, named):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Config.load(file=path, environ={})
    assert str(info.value).startswith(f"{named}:"), str(info.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^config: cannot read"):
        Config.load(file=tmp_path / "absent.toml", environ={})


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match=r"^colour"):
        Config.load(environ={}, overrides={"colour": "blue"})


def test_settings_that_go_together():
    with pytest.raises(ConfigError, match="certfile"):
        Config(certfile="cert.pem")
    with pytest.raises(ConfigError, match="workers"):
        Config(workers=2)
    assert Config(workers=2, redis_url="redis://localhost").workers == 2


def test_direct_construction_validates_too():
    with pytest.raises(ConfigError, match=r"^queue_size"):
        Config(queue_size=0)
    with pytest.raises(ConfigError, match=r"^port"):
        Config(port=65536)
    assert Config(allowed_origins="https://a, https://b").allowed_origins == (
        "https://a",
        "https://b",
    )


def test_every_setting_is_a_serve_flag_and_documented(capsys: pytest.CaptureFixture[str]):
    parser = build_parser()
    for name, field in SETTINGS.items():
        assert field.metadata["help"], name
        if name == "allowed_origins":
            args = parser.parse_args(
                ["serve", "--allowed-origin", "https://x", "--allowed-origin", "https://y"]
            )
            assert args.allowed_origins == ["https://x", "https://y"]
            continue
        value = "1" if name not in SAMPLES else as_text(SAMPLES[name])
        args = parser.parse_args(["serve", "--" + name.replace("_", "-"), value])
        assert getattr(args, name) == value
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--help"])
    help_text = capsys.readouterr().out
    for flag in (
        "--ping-interval",
        "--pong-timeout",
        "--write-timeout",
        "--handshake-timeout",
        "--shutdown-grace",
        "--max-message-bytes",
        "--max-content-chars",
        "--queue-size",
        "--history-size",
        "--max-connections",
        "--rate-messages",
        "--rate-seconds",
        "--config",
        "--host",
        "--port",
        "--log-level",
        "--log-format",
        "TRIO_CHAT_PING_INTERVAL",
    ):
        assert flag in help_text, flag


def test_storage_settings():
    # embedding: memory, unless a data directory is given
    assert Config().sqlite_dir is None
    assert Config(data_dir="d").sqlite_dir == "d"
    assert Config(data_dir="d", store="memory").sqlite_dir is None
    assert Config(data_dir="none").data_dir is None
    with pytest.raises(ConfigError, match="store: sqlite needs a data_dir"):
        Config(store="sqlite")
    with pytest.raises(ConfigError, match="store: must be one of"):
        Config(store="disk")
    # serve's own default keeps history in ./trio-chat-data; "none" turns it off
    defaults = {"data_dir": "./trio-chat-data"}
    assert Config.load(environ={}, defaults=defaults).sqlite_dir == "./trio-chat-data"
    off = Config.load(environ={}, defaults=defaults, overrides={"data_dir": "none"})
    assert off.sqlite_dir is None
    env = {"TRIO_CHAT_STORE": "memory"}
    assert Config.load(environ=env, defaults=defaults).sqlite_dir is None
    # with the Redis backplane, Redis keeps the history
    assert Config(data_dir="d", redis_url="redis://127.0.0.1:1/0").sqlite_dir is None
