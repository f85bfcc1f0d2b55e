"""trio_chat with a no-op message policy registered (benchmarks/policy.py).

Takes ``trio-chat serve``'s own arguments.  ``--async-policy`` (first)
registers a coroutine ``check`` instead of a plain method: each checked
frame then also pays for a coroutine and the ``hook_timeout`` cancel scope.
"""

from __future__ import annotations

import signal
import sys

import trio

from trio_chat import ACCEPT, ChatServer, Checked, Sender, Verdict
from trio_chat._cli import SERVE_DEFAULTS, build_parser, listening_line, load_config
from trio_chat._config import SETTINGS
from trio_chat._logging import configure_logging


class NoOp:
    def check(self, sender: Sender, event: Checked) -> Verdict:
        return ACCEPT


class AsyncNoOp:
    async def check(self, sender: Sender, event: Checked) -> Verdict:
        return ACCEPT


def main() -> None:
    argv = sys.argv[1:]
    policy = AsyncNoOp() if argv[:1] == ["--async-policy"] else NoOp()
    if isinstance(policy, AsyncNoOp):
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    config = load_config(args, list(SETTINGS), SERVE_DEFAULTS)
    configure_logging(config.log_level, config.log_format)
    server = ChatServer(config, policy=policy)

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                print(listening_line(server.url), flush=True)
                async for _ in signals:
                    break
                await server.shutdown()

    trio.run(run)


if __name__ == "__main__":
    main()
