"""Where the SQLite store keeps moderators' bans and mutes: ``bans.json``
beside its database, a JSON file written whole, atomically (version 1 held
bans only).  Each entry's end is a wall-clock time, so that it runs on
until then after a restart.  (The Redis store keeps them in Redis:
:mod:`trio_chat._moderation_redis`.)
"""

from __future__ import annotations

import json
import os

from ._moderation import Ban
from ._sqlite_store import StoreError

__all__ = ["BANS_FILE", "BanFile", "SavedMute"]

#: The bans' file in the SQLite store's directory.
BANS_FILE = "bans.json"

#: A mute as kept in the file: (user, room, until, in seconds since the epoch).
SavedMute = tuple[str, str, float]


class BanFile:
    """The bans and mutes of one data directory."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, BANS_FILE)

    def load(self, now: float) -> tuple[list[Ban], list[SavedMute]]:
        """The bans and mutes still in force at *now* (wall clock)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            bans = [Ban.from_json(item) for item in data["bans"] if item["until"] > now]
            mutes = [
                (str(m["user_id"]), str(m["room"]), float(m["until"]))
                for m in data.get("mutes", [])
                if m["until"] > now
            ]
        except FileNotFoundError:
            return [], []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"cannot read the bans in {self.path}: {exc}") from None
        return bans, mutes

    def write(self, bans: list[Ban], mutes: list[SavedMute]) -> None:
        """Replace the file (blocking: run in a thread)."""
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "version": 2,
                    "bans": [b.to_json() for b in bans],
                    "mutes": [{"user_id": u, "room": r, "until": t} for u, r, t in mutes],
                },
                f,
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
