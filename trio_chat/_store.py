"""Building the hub and its store from a :class:`~trio_chat.Config`.

``config.redis_url`` means the Redis backplane (rooms shared with every
process using the same Redis, see :mod:`trio_chat._backplane`); otherwise
``config.sqlite_dir`` picks the store: a directory means the SQLite store
there (rooms, history, next ids and refs come back from it before the server
serves), None the memory store (nothing is kept across a restart).
"""

from __future__ import annotations

from typing import Any

from ._config import Config
from ._hub import Hub
from ._hub_state import HubState
from ._sqlite_store import SqliteStore, StoreError

__all__ = ["StoreError", "build_hub", "core_settings", "hub_state"]


def core_settings(config: Config) -> dict[str, Any]:
    """The settings every hub state takes from *config* (its rooms' limits,
    what one ``joined`` and the history hold, and the rules of edits and
    reactions), whatever the store."""
    return {
        "history_size": config.history_size,
        "max_rooms": config.max_rooms,
        "max_rooms_per_connection": config.max_rooms_per_connection,
        "max_rooms_created_per_connection": config.max_rooms_created_per_connection,
        "max_rooms_created_per_client": config.max_rooms_created_per_client,
        "joined_bytes": config.queue_bytes // 2,
        "history_bytes_total": config.history_bytes_total,
        "edit_window": config.edit_window,
        "reactions": config.reactions,
    }


def hub_state(config: Config, *, durable: bool = False) -> HubState:
    """A new, empty hub state with *config*'s limits and budgets."""
    return HubState(
        **core_settings(config),
        history_bytes_per_room=config.history_bytes_per_room,
        history_max_age=config.history_max_age,
        max_conversations=config.max_conversations,
        max_conversations_per_user=config.max_conversations_per_user,
        read_markers_per_user=config.read_markers_per_user,
        max_read_markers=config.max_read_markers,
        durable=durable,
    )


def build_hub(config: Config) -> Hub:
    """The hub *config* asks for, with its store opened and loaded.

    Raises:
        StoreError: the SQLite store cannot be opened or read (the message is
            one line, naming the file and the cause).
        ConfigError: ``redis_url`` cannot work (or coredis is missing).
    """
    if config.redis_url:
        from ._backplane_hub import build_backplane_hub

        return build_backplane_hub(config)
    data_dir = config.sqlite_dir
    if data_dir is None:
        return Hub(hub_state(config))
    state = hub_state(config, durable=True)
    store = SqliteStore(data_dir, max_refs=state.max_refs)
    try:
        snapshot = store.load()
        try:
            state.restore(snapshot)
        except (ValueError, TypeError) as exc:
            raise StoreError(f"database {store.path}: unreadable contents ({exc})") from None
        store.commit(state.take_ops())  # trims to today's budgets
    except BaseException:
        store.close()
        raise
    return Hub(state, store=store)
