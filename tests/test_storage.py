"""Durable history: what comes back after a restart, a crash, or a bad file.

* In process: a server on a data directory is stopped and started again; ids
  continue, ``join`` with ``since`` replays across the restart, a resent ref
  gets its original ack, and ``joined.epoch`` stays the same (with the memory
  store it changes, and ids start over).
* As a process: ``trio-chat serve`` is killed with SIGKILL in the middle of
  a chat burst from several clients; after a restart every message a client
  saw acknowledged is in the history with its acknowledged id, the ids are
  gap-free, and each message is there once, also after the clients resend
  what was not acknowledged.
* A damaged or locked database stops ``serve`` at startup with one line on
  stderr and exit status 2.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from trio_chat import Config
from trio_chat._hub_state import HubState
from trio_chat._sqlite_store import DB_NAME, SqliteStore
from trio_chat.testing import open_test_client, open_test_server

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (ws://\S+/ws)")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRIO_CHAT_")}


def serve_argv(data_dir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trio_chat",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        *args,
    ]


# ---------------------------------------------------------------- in process


async def test_history_ids_refs_and_epoch_survive_a_restart(tmp_path):
    config = Config(data_dir=str(tmp_path / "data"))
    async with open_test_server(config) as server:
        async with open_test_client(server, user="ann") as ann:
            first = await ann.join("lobby")
            epoch = first["payload"]["epoch"]
            acks = [await ann.chat("lobby", f"m{i}", ref=f"r{i}") for i in range(1, 4)]
            assert [a["payload"]["id"] for a in acks] == [1, 2, 3]
        await server.publish("news", "extra", user_id="system")
    async with open_test_server(config) as server:
        assert server.stats().history == 4 and server.stats().rooms == 2
        async with open_test_client(server, user="ann") as ann:
            joined = (await ann.join("lobby", since=1))["payload"]
            assert [m["content"] for m in joined["history"]] == ["m2", "m3"]
            assert joined["epoch"] == epoch and not joined["truncated"]
            # the ref of a message sent before the restart: its original ack
            again = await ann.chat("lobby", "m3", ref="r3")
            assert again == acks[2]
            assert (await ann.chat("lobby", "m4", ref="r4"))["payload"]["id"] == 4
            news = (await ann.join("news"))["payload"]["history"]
            assert [(m["id"], m["content"]) for m in news] == [(1, "extra")]


async def test_memory_store_starts_afresh_with_a_new_epoch():
    async with open_test_server(Config()) as server:
        async with open_test_client(server, user="ann") as ann:
            epoch = (await ann.join("lobby"))["payload"]["epoch"]
            await ann.chat("lobby", "m1", ref="r1")
    async with open_test_server(Config()) as server:
        async with open_test_client(server, user="ann") as ann:
            joined = (await ann.join("lobby", since=1))["payload"]
            assert joined["history"] == [] and joined["epoch"] != epoch
            assert (await ann.chat("lobby", "m1", ref="r1"))["payload"]["id"] == 1


async def test_history_budgets_apply_to_what_comes_back(tmp_path):
    """Smaller budgets at the next start trim what the store kept, on disk too."""
    data = str(tmp_path / "data")
    async with open_test_server(Config(data_dir=data)) as server:
        async with open_test_client(server, user="ann") as ann:
            await ann.join("r")
            for i in range(10):
                await ann.chat("r", f"m{i}")
    async with open_test_server(Config(data_dir=data, history_size=3)) as server:
        assert server.stats().history == 3
    store = SqliteStore(data)
    try:
        snapshot = store.load()
    finally:
        store.close()
    assert [m[2] for m in snapshot.messages] == [8, 9, 10]
    assert snapshot.rooms[0][2] == 10


async def test_an_online_backup_while_serving_holds_every_acknowledged_message(tmp_path):
    data = tmp_path / "data"
    async with open_test_server(Config(data_dir=str(data))) as server:
        async with open_test_client(server, user="ann") as ann:
            await ann.join("r")
            acks = [await ann.chat("r", f"m{i}") for i in range(5)]
            # SQLite's online backup API, as docs/storage.md shows it
            source = sqlite3.connect(data / DB_NAME)
            target = sqlite3.connect(tmp_path / "backup.sqlite3")
            source.backup(target)
            target.close()
            source.close()
            assert (await ann.chat("r", "after"))["payload"]["id"] == 6
    (tmp_path / "restored").mkdir()
    (tmp_path / "backup.sqlite3").rename(tmp_path / "restored" / DB_NAME)
    async with open_test_server(Config(data_dir=str(tmp_path / "restored"))) as server:
        async with open_test_client(server, user="ann") as ann:
            history = (await ann.join("r"))["payload"]["history"]
    assert [(m["id"], m["content"]) for m in history] == [
        (a["payload"]["id"], f"m{i}") for i, a in enumerate(acks)
    ]


# ---------------------------------------------------------------- a real crash


@asynccontextmanager
async def serving(argv: list[str]) -> AsyncIterator[tuple[trio.Process, str]]:
    process = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
        cwd=ROOT,
    )
    try:
        seen = b""
        with trio.fail_after(20):
            while (match := LISTENING.search(seen.decode(errors="replace"))) is None:
                chunk = await process.stdout.receive_some()
                assert chunk, f"the server did not start: {seen!r}"
                seen += chunk
        yield process, match.group(1)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


USERS = ["ann", "bob", "cy"]
ROOM = "burst"
#: Messages each client has in flight at once.
WINDOW = 16


#: Acks seen before the server is killed.
KILL_AFTER = 600


async def burst(
    url: str, user: str, acked: dict[str, int], sent: list[str], enough: trio.Event
) -> None:
    """Send chats as fast as the server acks them, until the connection dies;
    set *enough* once KILL_AFTER acks came in all."""
    try:
        async with open_test_client(url, user=user) as client:
            await client.join(ROOM)
            window = trio.Semaphore(WINDOW)

            async def read() -> None:
                while True:
                    frame = await client.receive(timeout=30)
                    if frame["type"] == "ack":
                        acked[frame["ref"]] = frame["payload"]["id"]
                        if len(acked) >= KILL_AFTER:
                            enough.set()
                        window.release()
                    else:
                        assert frame["type"] in ("chat", "system", "joined"), frame

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                for i in range(100_000):
                    await window.acquire()
                    ref = f"{user}-{i}"
                    sent.append(ref)
                    await client.send("chat", {"room": ROOM, "content": ref}, ref)
    except* (ConnectionClosed, HandshakeError, trio.BrokenResourceError, OSError):
        pass


async def history_of(url: str) -> list[dict]:
    async with open_test_client(url, user="auditor", key="auditor-key") as auditor:
        return (await auditor.join(ROOM))["payload"]["history"]


async def test_sigkill_in_a_chat_burst_loses_nothing_acknowledged(tmp_path):
    data = tmp_path / "data"
    flags = ("--rate-messages", "1000000", "--history-size", "100000", "--queue-size", "4096")
    acked: dict[str, int] = {}
    sent: dict[str, list[str]] = {user: [] for user in USERS}
    enough = trio.Event()
    async with serving(serve_argv(data, *flags)) as (process, url):
        async with trio.open_nursery() as nursery:
            for user in USERS:
                nursery.start_soon(burst, url, user, acked, sent[user], enough)
            with trio.fail_after(60):
                await enough.wait()
            process.kill()  # SIGKILL, with every client still sending
            await process.wait()
    assert process.returncode == -9
    in_flight = sum(len(s) for s in sent.values()) - len(acked)
    assert in_flight > 0, "the kill came after the burst: nothing was in flight"

    async with serving(serve_argv(data, *flags)) as (_, url):
        history = await history_of(url)
        ids = [m["id"] for m in history]
        assert ids == list(range(1, len(ids) + 1)), "ids are not gap-free from 1"
        by_ref = {m["content"]: m["id"] for m in history}
        assert len(by_ref) == len(history), "a message is in the history twice"
        for ref, id_ in acked.items():
            assert by_ref.get(ref) == id_, f"acknowledged {ref} (id {id_}) is not kept as such"
        # Each client resends what it saw no ack for, with the same refs: the
        # ones the server had committed get their original id, the others are
        # published now; nothing is in the history twice.
        for user in USERS:
            async with open_test_client(url, user=user) as client:
                await client.join(ROOM)
                for ref in sent[user]:
                    if ref not in acked:
                        ack = await client.chat(ROOM, ref, ref=ref)
                        assert ack["type"] == "ack", ack
                        if ref in by_ref:
                            assert ack["payload"]["id"] == by_ref[ref]
        history = await history_of(url)
    ids = [m["id"] for m in history]
    assert ids == list(range(1, len(ids) + 1))
    contents = [m["content"] for m in history]
    assert sorted(contents) == sorted(ref for refs in sent.values() for ref in refs)
    for user in USERS:  # each user's messages in the order they were sent
        mine = [c for c in contents if c.startswith(user + "-")]
        assert mine == sent[user]


# ---------------------------------------------------------------- bad files


async def run_serve(data_dir: Path) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            serve_argv(data_dir),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=clean_env(),
            cwd=ROOT,
        )


def one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("trio-chat: error: database "), lines
    assert result.stdout == b""
    return lines[0]


def damage_database(data: Path, *, torn: bool) -> None:
    """Garbage where the database should be, or a real one (about 600 KB)
    with 4 KB of garbage written over its middle, as a torn write leaves it."""
    path = data / DB_NAME
    if not torn:
        data.mkdir()
        path.write_bytes(os.urandom(8192))
        return
    store = SqliteStore(str(data))
    state = HubState(durable=True)
    state.publish("ann", "r", "x" * 3000, 0.0, create=True)
    for _ in range(200):
        state.publish("ann", "r", "x" * 3000, 0.0)
    store.commit(state.take_ops())
    store.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(4096))


@pytest.mark.parametrize("damage", ["garbage", "torn"])
async def test_a_damaged_database_is_one_line_and_exit_2(tmp_path, damage):
    data = tmp_path / "data"
    damage_database(data, torn=damage == "torn")
    line = one_error_line(await run_serve(data))
    assert "damaged" in line, line


async def test_a_locked_database_is_one_line_and_exit_2(tmp_path):
    data = tmp_path / "data"
    SqliteStore(str(data)).close()
    holder = sqlite3.connect(data / DB_NAME, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        line = one_error_line(await run_serve(data))
        assert "locked" in line and "another trio-chat server" in line, line
    finally:
        holder.close()


async def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path):
    data = tmp_path / "data"
    async with serving(serve_argv(data)):
        line = one_error_line(await run_serve(data))
        assert "locked" in line, line
