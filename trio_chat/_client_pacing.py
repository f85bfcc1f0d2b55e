"""Pacing: the client's frames within the rate the server announces.

The server allows ``limits.rate.messages`` rated frames per
``limits.rate.per_seconds`` window (from ``welcome``) and answers one more
with 429.  :class:`Pacer` remembers when the recent rated frames went out
and says how long the next one must wait, so that 429s do not happen in the
first place; after a 429 it holds every rated frame until the server's
``retry_after_ms`` has passed.  Pure: times are passed in.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import attrs

__all__ = ["PACE_MARGIN", "Pacer"]

#: Seconds added to the server's rate window when pacing sends, for jitter.
PACE_MARGIN = 0.1


@attrs.define
class Pacer:
    """When the next rated frame may go out."""

    #: No rated frame before this time (after a 429).
    paused_until: float = -math.inf
    #: When recent rated frames went out.
    sent_times: deque[float] = attrs.Factory(deque)

    def delay(self, now: float, rate: Any) -> float:
        """Seconds the next frame must wait at *now* (0: it may go), for
        *rate*, the ``welcome``'s ``limits.rate`` (anything else: no pacing)."""
        if not isinstance(rate, dict):
            return 0.0
        messages, seconds = rate.get("messages"), rate.get("per_seconds")
        if not isinstance(messages, int) or messages <= 0:
            return 0.0
        if not isinstance(seconds, (int, float)) or seconds <= 0:
            return 0.0
        window = seconds + PACE_MARGIN
        times = self.sent_times
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) < messages:
            return 0.0
        return times[len(times) - messages] + window - now

    def record(self, now: float, rate: Any) -> None:
        """A rated frame went out at *now*."""
        self.sent_times.append(now)
        keep = rate.get("messages") if isinstance(rate, dict) else None
        keep = keep if isinstance(keep, int) and keep > 0 else 1
        while len(self.sent_times) > keep:
            self.sent_times.popleft()

    def pause(self, until: float) -> None:
        """Hold every rated frame until *until* (the server said 429)."""
        self.paused_until = max(self.paused_until, until)
