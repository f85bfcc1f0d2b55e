"""Helpers shared by the test modules: time caps and waiting on a condition."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import trio

AsyncTest = TypeVar("AsyncTest", bound=Callable[..., Awaitable[None]])


def bounded(seconds: float) -> Callable[[AsyncTest], AsyncTest]:
    """Fail an async test that runs longer than *seconds* instead of hanging the suite.

    The cap is on trio's clock: virtual seconds under ``autojump_clock``.
    """

    def wrap(test: AsyncTest) -> AsyncTest:
        @functools.wraps(test)
        async def capped(*args: Any, **kwargs: Any) -> None:
            with trio.fail_after(seconds):
                await test(*args, **kwargs)

        return capped  # type: ignore[return-value]

    return wrap


def bound_all(namespace: MutableMapping[str, Any], seconds: float) -> None:
    """Cap every async ``test_*`` function of a module: ``bound_all(globals(), 20)``."""
    for name, test in list(namespace.items()):
        if name.startswith("test_") and inspect.iscoroutinefunction(test):
            namespace[name] = bounded(seconds)(test)
