"""Read a few gauges from trio_chat's Prometheus endpoint (``GET /metrics``)."""

from __future__ import annotations

import urllib.request

GAUGES = ("trio_chat_tasks", "trio_chat_connections_open")


def scrape(port: int, names=GAUGES, timeout: float = 3.0) -> dict[str, float | None]:
    """Return {name: value}; a gauge that is missing (or no endpoint) is None."""
    values: dict[str, float | None] = dict.fromkeys(names)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return values
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        name = name.split("{", 1)[0]
        if name in values and values[name] is None:
            try:
                values[name] = float(rest.split()[0])
            except (ValueError, IndexError):
                pass
    return values
