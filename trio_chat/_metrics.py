"""Prometheus metrics, in the server's own registry.

The hot paths only bump plain ints (in :class:`Metrics` and the hub's
:class:`~trio_chat._hub.HubCounters`); a custom collector turns them into
metric families when ``/metrics`` is scraped.  What only the hub's state
knows (rooms, history, room refusals) is read inside the hub actor, as a
:class:`HubFigures` snapshot, by :meth:`Metrics.scrape`.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import trio
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ._version import __version__

if TYPE_CHECKING:
    from ._hub import Hub
    from ._hub_state import Delivery, HubState, HubStats

__all__ = ["CONTENT_TYPE", "Metrics", "count_tasks"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds a scrape waits for the hub's figures; a hub that is busier (or
#: stuck) than that gets the last figures it gave, so that /metrics still
#: answers and its inbox depth shows why.
FIGURES_WAIT = 1.0


def count_tasks() -> int:
    """Every trio task alive in this run (the root task's whole tree)."""
    root = trio.lowlevel.current_root_task()
    if root is None:
        raise RuntimeError("must be called from inside trio")
    stack = [root]
    count = 0
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


@attrs.frozen
class HubFigures:
    """What ``/metrics`` shows of the hub's state, read inside the actor."""

    stats: HubStats
    max_rooms: int
    #: Rooms without members (None: the state keeps none).
    empty_rooms: int | None
    #: History cached from Redis, in bytes (None: not a backplane).
    cached_history_bytes: int | None
    rooms_refused: dict[str, int]

    @classmethod
    def of(cls, state: Any) -> HubFigures:
        """The figures of *state* (a hub's, or a backplane's cluster state)."""
        empty = getattr(state, "empty_room_count", None)
        cached = getattr(state, "history_bytes", None)
        return cls(
            stats=state.stats(),
            max_rooms=state.max_rooms,
            empty_rooms=None if empty is None else empty(),
            cached_history_bytes=cached if isinstance(cached, int) else None,
            rooms_refused=dict(getattr(state, "rooms_refused", {})),
        )


class Metrics:
    """Server-level counters and the registry that exposes them.

    :meth:`scrape` renders them with the hub's figures as its actor sees
    them now; :meth:`render` with those of the last scrape (or of the hub
    as it was built).
    """

    def __init__(self, hub: Hub, open_connections: Callable[[], int]) -> None:
        self.hub = hub
        self.open_connections = open_connections
        #: Read before the hub runs (or inside it, by :meth:`scrape`).
        self.figures = HubFigures.of(hub.state)
        self.closed_by_code: dict[str, int] = {}
        #: (code, "server" | "client" | "none") -> closed connections.
        self.closed_by: dict[tuple[str, str], int] = {}
        self.handshakes_refused: dict[int, int] = {}
        self.rate_limited = 0
        self.handshakes_accepted = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        # The usual process (CPU, memory, descriptors), Python platform and
        # garbage collector metrics, in this server's registry.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def connection_closed(self, code: int | None, by: str | None = None) -> None:
        """Count a closed connection: the code of the close frame that began
        the closing handshake and who sent it (None, None: aborted, no close
        frame either way)."""
        # Dropped without a closing handshake (by either side): 1006, as
        # RFC 6455 names an abnormal closure.  A client may close with any
        # of some 2,000 application codes (3000-4999): counted together as
        # "other", so clients cannot multiply the label set.
        if code is None:
            key = "1006"
        elif 1000 <= code <= 1015:
            key = str(code)
        else:
            key = "other"
        self.closed_by_code[key] = self.closed_by_code.get(key, 0) + 1
        side = (key, by or "none")
        self.closed_by[side] = self.closed_by.get(side, 0) + 1

    def handshake_refused(self, status: int) -> None:
        self.handshakes_refused[status] = self.handshakes_refused.get(status, 0) + 1

    async def scrape(self) -> bytes:
        """The metrics, with the hub's figures taken inside the hub actor
        (those of the last scrape if it does not answer within
        :data:`FIGURES_WAIT`)."""

        def figures(state: HubState, now: float) -> tuple[HubFigures, list[Delivery]]:
            return HubFigures.of(state), []

        with trio.move_on_after(FIGURES_WAIT):
            self.figures = await self.hub.call(figures)
        return self.render()

    def render(self) -> bytes:
        """The metrics, with the hub's figures of the last :meth:`scrape`."""
        return generate_latest(self.registry)

    def describe(self) -> list[Metric]:
        return []

    def _budgets(self) -> Iterator[Metric]:
        """The outbound and room budgets: how much is used, and the bounds."""
        counters = self.hub.counters
        budget = counters.outbound
        causes = CounterMetricFamily(
            "trio_chat_slow_consumer_overflows",
            "Slow consumers by the bound they hit: frames (queue_size), bytes"
            " (queue_bytes) or server (queue_bytes_total).",
            labels=["bound"],
        )
        for bound in ("frames", "bytes", "server"):
            causes.add_metric([bound], counters.slow_consumer_reasons.get(bound, 0))
        yield causes
        yield GaugeMetricFamily(
            "trio_chat_outbound_queued_bytes",
            "Outbound bytes queued or being written, all connections together.",
            value=budget.held,
        )
        yield GaugeMetricFamily(
            "trio_chat_outbound_queued_bytes_max",
            "Outbound bytes queued or being written for the connection holding the most.",
            value=budget.largest_bytes,
        )
        limits = GaugeMetricFamily(
            "trio_chat_outbound_queued_bytes_limit",
            "The outbound byte budgets: per connection (queue_bytes) and in all"
            " (queue_bytes_total).",
            labels=["scope"],
        )
        limits.add_metric(["connection"], budget.per_connection)
        limits.add_metric(["server"], budget.total)
        yield limits
        figures = self.figures
        yield GaugeMetricFamily(
            "trio_chat_rooms_limit",
            "Rooms that may be kept at once (max_rooms).",
            figures.max_rooms,
        )
        if figures.empty_rooms is not None:
            yield GaugeMetricFamily(
                "trio_chat_rooms_empty",
                "Rooms without members (kept for their history; reclaimed first).",
                value=figures.empty_rooms,
            )
        if figures.cached_history_bytes is not None:
            yield GaugeMetricFamily(
                "trio_chat_history_cached_bytes",
                "Bytes of room history this process caches from Redis"
                " (bounded by history_bytes_total).",
                value=figures.cached_history_bytes,
            )
        refused = CounterMetricFamily(
            "trio_chat_rooms_refused",
            "New rooms refused, by the bound: connection or client"
            " (max_rooms_created_per_*) or server (max_rooms).",
            labels=["bound"],
        )
        for bound in ("connection", "client", "server"):
            refused.add_metric([bound], figures.rooms_refused.get(bound, 0))
        yield refused

    def collect(self) -> Iterator[Metric]:
        counters = self.hub.counters
        stats = self.figures.stats
        build = GaugeMetricFamily(
            "trio_chat_build_info",
            "The running trio_chat: always 1, with the version as labels.",
            labels=["version", "python"],
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield build

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield gauge(
            "trio_chat_connections_open", "Open WebSocket connections.", self.open_connections()
        )
        closed = CounterMetricFamily(
            "trio_chat_connections_closed", "Closed connections, by close code.", labels=["code"]
        )
        for code, n in sorted(self.closed_by_code.items()):
            closed.add_metric([code], n)
        yield closed
        closed_by = CounterMetricFamily(
            "trio_chat_connections_closed_by",
            "Closed connections, by the close code that began the closing handshake and"
            " who sent it (server, client; none: aborted).",
            labels=["code", "by"],
        )
        for (code, by), n in sorted(self.closed_by.items()):
            closed_by.add_metric([code, by], n)
        yield closed_by
        yield counter(
            "trio_chat_handshakes_accepted",
            "WebSocket handshakes accepted.",
            self.handshakes_accepted,
        )
        refused = CounterMetricFamily(
            "trio_chat_handshakes_refused", "Handshakes refused, by HTTP status.", labels=["status"]
        )
        for status, n in sorted(self.handshakes_refused.items()):
            refused.add_metric([str(status)], n)
        yield refused
        yield counter(
            "trio_chat_frames_received", "Frames received from clients.", counters.frames_received
        )
        yield counter(
            "trio_chat_frames_delivered",
            "Frames handed to client queues.",
            counters.frames_delivered,
        )
        errors = CounterMetricFamily(
            "trio_chat_errors_sent", "Error frames sent, by code.", labels=["code"]
        )
        for error_code, n in sorted(counters.errors.items()):
            errors.add_metric([str(error_code)], n)
        yield errors
        yield counter(
            "trio_chat_slow_consumer_drops",
            "Connections closed as slow consumers.",
            counters.slow_consumers,
        )
        yield from self._budgets()
        yield counter(
            "trio_chat_ephemeral_dropped",
            "Typing/presence events dropped for busy connections.",
            counters.ephemeral_dropped,
        )
        yield counter(
            "trio_chat_rate_limit_rejections", "Frames refused with 429.", self.rate_limited
        )
        yield gauge(
            "trio_chat_hub_inbox_depth", "Commands waiting for the hub.", self.hub.inbox_depth
        )
        yield gauge(
            "trio_chat_history_messages", "Messages retained in room history.", stats.history
        )
        yield gauge(
            "trio_chat_history_bytes",
            "Bytes of room history retained, as the history byte budgets count them.",
            stats.history_bytes,
        )
        yield gauge("trio_chat_rooms", "Rooms known to the hub.", stats.rooms)
        yield counter("trio_chat_messages", "Chat messages published.", stats.messages)
        try:
            yield gauge("trio_chat_tasks", "Trio tasks alive.", count_tasks())
        except RuntimeError:  # scraped outside trio (tests)
            pass
        up = self.hub.backplane_up()
        if up is not None:
            yield gauge("trio_chat_backplane_up", "1 if the Redis backplane is reachable.", int(up))
