"""``trio-chat serve --workers N``: N server processes sharing one port.

The parent process reserves the port with a bound (not listening)
``SO_REUSEPORT`` socket, so that ``--port 0`` picks one port for everyone and
the port stays this server's while a worker restarts.  Each worker
(``python -m trio_chat._workers``) opens its own listening socket on that
port with ``SO_REUSEPORT``: the kernel spreads new connections across the
workers.  The workers share rooms through the Redis backplane, which is
therefore required.

The parent prints the listening line once every worker is ready, restarts a
worker that dies (with a growing delay if it keeps dying), forwards SIGINT and
SIGTERM to every worker (each drains gracefully: close 1001 after what is
queued) and exits once all have exited: 0 if every worker drained cleanly.

A worker receives its settings as one JSON line on stdin (so that the secret
never appears on a command line) and takes the end of stdin, which means the
parent is gone, like SIGTERM.  Workers run in their own session: a terminal's
Ctrl-C reaches only the parent, which forwards it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import attrs
import trio

from ._config import Config

__all__ = ["run_workers", "worker_main"]

log = logging.getLogger("trio_chat.workers")

#: Seconds a worker may take to report ready before it counts as failed.
START_TIMEOUT = 30.0
#: Seconds between restarts of a worker that keeps dying, at first and at most.
RESTART_DELAY = (0.5, 10.0)
#: A worker that lived this long is considered healthy again.
HEALTHY_AFTER = 10.0


def _address(host: str, port: int) -> tuple[int, Any]:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, address = infos[0]
    return family, address


def _reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to *host*:*port* with ``SO_REUSEPORT`` set."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("--workers needs SO_REUSEPORT, which this platform lacks")
    family, address = _address(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(config: Config, port: int) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{'wss' if config.tls else 'ws'}://{host}:{port}/ws"


# --------------------------------------------------------------------------
# The parent


def run_workers(config: Config, argv: Sequence[str] = ()) -> int:
    """Run ``config.workers`` worker processes on one port; return the exit code.

    *argv* is the command line the parent was started with (unused: workers
    get the merged settings instead).
    """
    from ._logging import configure_logging

    configure_logging(config.log_level, config.log_format)
    if not config.redis_url:
        print(
            "trio-chat: error: workers: more than one worker needs --redis-url, "
            "so that the processes share rooms",
            file=sys.stderr,
        )
        return 2
    from ._backplane import check_redis_url
    from ._config import ConfigError

    try:
        check_redis_url(config.redis_url)
    except ConfigError as exc:
        print(f"trio-chat: error: {exc}", file=sys.stderr)
        return 2
    try:
        reservation = _reuseport_socket(config.host, config.port)
    except OSError as exc:
        print(f"trio-chat: error: {exc}", file=sys.stderr)
        return 1
    try:
        port = reservation.getsockname()[1]
        worker_config = attrs.evolve(config, port=port, workers=1)
        supervisor = Supervisor(worker_config, config.workers)
        return trio.run(supervisor.run)
    finally:
        reservation.close()


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, config: Config, count: int, command: Sequence[str] | None = None) -> None:
        self.config = config
        self.count = count
        self.command = list(command or [sys.executable, "-m", "trio_chat._workers"])
        self.payload = json.dumps(attrs.asdict(config)).encode() + b"\n"
        self.procs: list[trio.Process | None] = [None] * count
        self.codes: list[int | None] = [None] * count
        self.restarts = 0
        self.stopping = False
        #: Set once a stop is asked for: wakes the restart back-off.
        self._stop_asked = trio.Event()
        self._failed = False

    async def run(self) -> int:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                ready = trio.Event()
                nursery.start_soon(self._start_all, nursery, ready)
                stop = trio.Event()
                nursery.start_soon(self._wait_signal, signals, stop)
                async with trio.open_nursery() as first:
                    first.start_soon(_set_then_cancel, ready, first.cancel_scope)
                    first.start_soon(_set_then_cancel, stop, first.cancel_scope)
                if ready.is_set() and not stop.is_set():
                    from ._cli import listening_line

                    line = listening_line(_url(self.config, self.config.port))
                    print(f"{line}, {self.count} workers", flush=True)
                    await stop.wait()
                await self._stop_all()
                nursery.cancel_scope.cancel()
        if self._failed:
            return 1
        return 0 if all(code == 0 for code in self.codes) else 1

    async def _wait_signal(self, signals: Any, stop: trio.Event) -> None:
        async for signum in signals:
            log.info("received %s: stopping %d workers", signal.Signals(signum).name, self.count)
            stop.set()
            # A second signal stops the workers at once.
            async for _ in signals:
                for proc in self.procs:
                    if proc is not None and proc.returncode is None:
                        proc.kill()

    async def _start_all(self, nursery: trio.Nursery, ready: trio.Event) -> None:
        try:
            async with trio.open_nursery() as starting:
                for index in range(self.count):
                    starting.start_soon(nursery.start, self._keep, index)
        except BaseExceptionGroup as group:
            failed, rest = group.split(WorkerFailed)
            if rest is not None or failed is None:
                raise
            for exc in failed.exceptions:
                log.error("%s", exc)
            self._failed = True
            await self._stop_all()
            nursery.cancel_scope.cancel()
            return
        ready.set()

    def _stopped(self) -> bool:
        """Whether a stop was asked for (read again after every await)."""
        return self.stopping

    async def _keep(
        self, index: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run worker *index*, restarting it whenever it dies, until stopping."""
        delay = RESTART_DELAY[0]
        started_once = False
        while not self.stopping:
            began = trio.current_time()
            proc = await trio.lowlevel.open_process(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
            self.procs[index] = proc
            stdin, stdout = _pipes(proc)
            try:
                await stdin.send_all(self.payload)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            ready = await _read_ready(proc)
            if ready:
                log.info("worker %d (pid %d) ready", index, proc.pid)
                if not started_once:
                    started_once = True
                    task_status.started()
            code = await _wait_draining(proc)
            self.procs[index] = None
            self.codes[index] = code
            await stdin.aclose()
            await stdout.aclose()
            if self._stopped():
                return
            if not started_once:
                raise WorkerFailed(f"worker {index} exited ({code}) before it was ready")
            log.warning("worker %d (pid %d) exited with code %s: restarting", index, proc.pid, code)
            self.restarts += 1
            if trio.current_time() - began > HEALTHY_AFTER:
                delay = RESTART_DELAY[0]
            with trio.move_on_after(delay):
                await self._stop_asked.wait()
            delay = min(delay * 2, RESTART_DELAY[1])

    async def _stop_all(self) -> None:
        """SIGTERM every worker; SIGKILL what is left after the grace period."""
        self.stopping = True
        self._stop_asked.set()
        running = [p for p in self.procs if p is not None and p.returncode is None]
        for worker in running:
            worker.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.config.shutdown_grace + 10):
            async with trio.open_nursery() as nursery:
                for worker in running:
                    nursery.start_soon(worker.wait)
        for index, proc in enumerate(self.procs):
            if proc is not None and proc.returncode is not None:
                # Recorded here too: the caller cancels the watchers next.
                self.codes[index] = proc.returncode
            elif proc is not None:
                log.error("worker %d (pid %d) did not stop in time: killing it", index, proc.pid)
                proc.kill()
                self.codes[index] = -signal.SIGKILL


class WorkerFailed(RuntimeError):
    """A worker could not start."""


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _pipes(proc: trio.Process) -> tuple[trio.abc.SendStream, trio.abc.ReceiveStream]:
    """A worker's stdin and stdout (always pipes: see ``_keep``)."""
    if proc.stdin is None or proc.stdout is None:
        raise RuntimeError("worker started without pipes")
    return proc.stdin, proc.stdout


async def _read_ready(proc: trio.Process) -> bool:
    """Wait for the worker's ``ready`` line; False if it exits or is too slow."""
    data = b""
    with trio.move_on_after(START_TIMEOUT):
        while b"\n" not in data:
            chunk = await _pipes(proc)[1].receive_some(4096)
            if not chunk:
                return False
            data += chunk
        return data.startswith(b"ready")
    proc.kill()
    return False


async def _wait_draining(proc: trio.Process) -> int:
    """Wait for *proc* to exit, reading (and dropping) whatever it prints."""
    async with trio.open_nursery() as nursery:

        async def drain() -> None:
            try:
                while await _pipes(proc)[1].receive_some(4096):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await trio.sleep_forever()

        nursery.start_soon(drain)
        code = await proc.wait()
        nursery.cancel_scope.cancel()
    return code


# --------------------------------------------------------------------------
# A worker


def _read_config() -> Config:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(0, 65536)
        if not chunk:
            raise SystemExit("trio-chat worker: no settings on stdin")
        data += chunk
    return Config(**json.loads(data))


def worker_main() -> int:
    """Entry point of one worker process (``python -m trio_chat._workers``)."""
    from ._logging import configure_logging

    config = _read_config()
    configure_logging(config.log_level, config.log_format)
    try:
        return trio.run(_serve_worker, config)
    except OSError as exc:
        print(f"trio-chat worker: error: {exc}", file=sys.stderr)
        return 1


async def _serve_worker(config: Config) -> int:
    from ._server import build_server

    sock = _reuseport_socket(config.host, config.port)
    sock.listen(4096)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    server = build_server(config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(server.serve, listeners=[listener]))
            os.write(1, b"ready\n")
            async with trio.open_nursery() as waiting:
                waiting.start_soon(_until_signal, signals, waiting.cancel_scope)
                waiting.start_soon(_until_stdin_closes, waiting.cancel_scope)
            await server.shutdown()
    return 0


async def _until_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for _ in signals:
        break
    scope.cancel()


async def _until_stdin_closes(scope: trio.CancelScope) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(0))
    try:
        while await stdin.receive_some(4096):
            pass
    finally:
        await stdin.aclose()
    log.warning("the parent process is gone: stopping")
    scope.cancel()


if __name__ == "__main__":
    sys.exit(worker_main())
