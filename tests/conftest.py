"""Shared test settings: Hypothesis profiles, and fixtures every module may use.

``ci`` (the default) is derandomized, so every run of the test command tries
the same examples and a failure reproduces; ``dev`` explores new examples
each run (``HYPOTHESIS_PROFILE=dev pytest``).  Neither has a deadline: the
machine is shared, and no test asserts on speed.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

# A real redis-server on a spare port, for the backplane and workers tests.
from redis_helpers import durable_redis_server, redis_server

from trio_chat import Config

__all__ = ["durable_redis_server", "redis_server", "stored"]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def stored(request, tmp_path):
    """Config(**settings) for the memory store, the SQLite store (the default
    of ``trio-chat serve``) in a temporary data directory, then the Redis
    backplane on a fresh ``redis-server``."""
    redis = request.getfixturevalue("redis_server") if request.param == "redis" else None

    def config(**settings) -> Config:
        if request.param == "sqlite":
            settings["data_dir"] = str(tmp_path / "data")
        if redis is not None:
            settings["redis_url"] = redis.url
        return Config(**settings)

    return config


settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=100,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
