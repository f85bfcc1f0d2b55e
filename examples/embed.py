"""Embed a trio_chat server in a trio program of your own.

The chat server runs beside two ordinary trio tasks:

* a clock that publishes ``tick N`` into the room ``clock`` every few seconds
  with ``server.publish`` -- the same path as a client's chat message, so each
  tick gets the room's next id, enters its history and reaches every member;
* a reporter that prints ``server.stats()`` every few seconds.

Run it, then watch the ticks from a terminal or a browser::

    .venv/bin/python examples/embed.py --port 8080     # the venv of the README
    .venv/bin/trio-chat connect ws://127.0.0.1:8080/ws --room clock
    # or open http://127.0.0.1:8080/ and join "clock"

Ctrl+C (or SIGTERM) stops the clock and the reporter, then shuts the server
down gracefully: every client gets close 1001, and the program exits 0.
"""

from __future__ import annotations

import argparse
import signal

import trio

from trio_chat import ChatServer, Config


async def clock(server: ChatServer, room: str, interval: float) -> None:
    """Publish ``tick N`` into *room* every *interval* seconds."""
    n = 0
    while True:
        await trio.sleep(interval)
        n += 1
        ack = await server.publish(room, f"tick {n}", user_id="clock")
        print(f"published tick {n} as message {ack.id} in {ack.room}", flush=True)


async def reporter(server: ChatServer, interval: float) -> None:
    """Print the server's statistics every *interval* seconds."""
    while True:
        await trio.sleep(interval)
        stats = server.stats()
        print(
            f"stats: {stats.connections} connections, {stats.users} users, "
            f"{stats.rooms} rooms, {stats.messages} messages, "
            f"{stats.slow_consumer_drops} slow consumers closed",
            flush=True,
        )


async def main(args: argparse.Namespace) -> None:
    server = ChatServer(Config(host=args.host, port=args.port))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            # serve() returns (through nursery.start) once it is listening.
            await nursery.start(server.serve)
            print(f"trio-chat listening on {server.url}", flush=True)
            async with trio.open_nursery() as own_tasks:
                own_tasks.start_soon(clock, server, args.room, args.interval)
                own_tasks.start_soon(reporter, server, args.stats_interval)
                async for signum in signals:
                    print(f"got {signal.Signals(signum).name}, shutting down", flush=True)
                    break
                own_tasks.cancel_scope.cancel()
            # Graceful: flush what is queued, close 1001, at most shutdown_grace.
            await server.shutdown()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--room", default="clock", help="where the ticks go")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between ticks")
    parser.add_argument(
        "--stats-interval", type=float, default=10.0, help="seconds between statistics lines"
    )
    return parser.parse_args()


if __name__ == "__main__":
    trio.run(main, parse_args())
