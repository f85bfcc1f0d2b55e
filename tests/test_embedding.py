"""The embedding API's view of connections: list them, close one."""

from __future__ import annotations

import trio
import trio.testing
from trio_websocket import ConnectionClosed

from trio_chat import Config, ConnectionInfo
from trio_chat.testing import open_memory_client, open_memory_server


async def _close_code(client) -> int:
    with trio.fail_after(5):
        while True:
            try:
                await client.ws.get_message()
            except ConnectionClosed as closed:
                return closed.reason.code


async def test_connections_lists_each_open_connection(autojump_clock):
    async with open_memory_server(Config()) as server:
        assert server.connections() == []
        async with (
            open_memory_client(server, user="alice", key="alice-key") as a1,
            open_memory_client(server, user="alice", key="alice-key") as a2,
            open_memory_client(server, user="bob") as b,
        ):
            await trio.sleep(3)
            every = server.connections()
            assert sorted(c.user_id for c in every) == ["alice", "alice", "bob"]
            assert all(isinstance(c, ConnectionInfo) for c in every)
            assert all(c.peer == "memory" and c.age >= 0 for c in every)
            sessions = {c.session_id for c in server.connections("alice")}
            assert sessions == {
                a1.welcome["payload"]["session_id"],
                a2.welcome["payload"]["session_id"],
            }
            assert [c.session_id for c in server.connections("bob")] == [
                b.welcome["payload"]["session_id"]
            ]
            assert server.connections("nobody") == []


async def test_close_connection_closes_that_one_only(autojump_clock):
    async with open_memory_server(Config()) as server:
        async with (
            open_memory_client(server, user="alice") as alice,
            open_memory_client(server, user="bob") as bob,
        ):
            await bob.join("lobby")
            session = alice.welcome["payload"]["session_id"]
            assert server.close_connection(session, 4000, "go away")
            assert await _close_code(alice) == 4000
            await trio.testing.wait_all_tasks_blocked()  # the server is done with it
            assert server.connections("alice") == []
            assert server.close_connection(session, 4000, "again") is False
            # Bob is untouched.
            assert (await bob.chat("lobby", "still here"))["type"] == "ack"
            assert [c.user_id for c in server.connections()] == ["bob"]
