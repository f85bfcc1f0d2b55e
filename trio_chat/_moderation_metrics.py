"""``/metrics`` families for moderation, the message policy and commands."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from ._moderator import ModerationApi

__all__ = ["ModerationMetrics"]


class ModerationMetrics:
    """``/metrics`` families for moderation, the policy and commands."""

    def __init__(self, server: ModerationApi) -> None:
        self.server = server

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        server = self.server
        actions = CounterMetricFamily(
            "trio_chat_moderation_actions",
            "Moderation actions taken (embedding API, admin API and CLI alike).",
            labels=["action"],
        )
        for action, count in server.moderation_actions.items():
            actions.add_metric([action], count)
        yield actions
        yield GaugeMetricFamily("trio_chat_bans", "Bans in force.", value=len(server.bans()))
        yield GaugeMetricFamily("trio_chat_mutes", "Mutes in force.", value=len(server._mutes))
        screen = server.screen
        policy = CounterMetricFamily(
            "trio_chat_policy_verdicts",
            "Client events the message policy rejected or replaced, and its faults"
            " (raised or timed out: error 500).",
            labels=["verdict"],
        )
        policy.add_metric(["reject"], screen.rejected)
        policy.add_metric(["replace"], screen.replaced)
        policy.add_metric(["fault"], screen.faults)
        yield policy
        commands = CounterMetricFamily(
            "trio_chat_commands", "Command calls by outcome.", labels=["outcome"]
        )
        for outcome in ("ok", "error", "timeout", "fault", "unknown", "busy"):
            commands.add_metric([outcome], server.commands.outcomes.get(outcome, 0))
        yield commands
