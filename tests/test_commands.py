"""Custom commands (RPC): the wire protocol, the bounds, the Python client.

Wire-level tests run over in-memory streams on trio's virtual clock; the
Python client's round trips use a real server on 127.0.0.1.
"""

from __future__ import annotations

import logging

import pytest
import trio

from trio_chat import (
    CommandCall,
    CommandResult,
    Config,
    ProtocolError,
    encode_client_event,
    parse_client_frame,
    parse_server_frame,
)
from trio_chat._protocol import Command
from trio_chat.client import ClientError, open_chat_client
from trio_chat.testing import open_memory_client, open_memory_server, open_test_server


async def echo(call: CommandCall) -> object:
    return {"you": call.sender.user_id, "args": call.args}


async def refuse(call: CommandCall) -> object:
    raise ProtocolError(422, "cannot do that")


async def broken(call: CommandCall) -> object:
    raise RuntimeError("the handler's bug")


async def not_json(call: CommandCall) -> object:
    return {"x": float("nan")}


def test_command_frames_round_trip():
    frame = encode_client_event(Command("roll", {"sides": 6}, "r1"))
    assert parse_client_frame(frame) == Command("roll", {"sides": 6}, "r1")
    assert parse_client_frame('{"type":"command","payload":{"name":"x"},"ref":"a"}') == Command(
        "x", None, "a"
    )
    result = CommandResult("roll", [4, "x"], "r1")
    assert parse_server_frame(result.to_json()) == result


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"command","payload":{"name":"x"}}',  # no ref
        '{"type":"command","payload":{},"ref":"a"}',  # no name
        '{"type":"command","payload":{"name":"bad name"},"ref":"a"}',
        '{"type":"command","payload":{"name":7},"ref":"a"}',
    ],
)
def test_bad_command_frames_are_400(frame):
    with pytest.raises(ProtocolError) as refused:
        parse_client_frame(frame)
    assert refused.value.code == 400


async def test_a_command_round_trip_and_its_errors(autojump_clock, caplog):
    caplog.set_level(logging.ERROR, logger="trio_chat.commands")
    async with open_memory_server(Config()) as server:
        server.add_command("echo", echo)
        server.add_command("refuse", refuse)
        server.add_command("broken", broken)
        server.add_command("nan", not_json)
        async with open_memory_client(server, user="alice") as alice:
            await alice.send("command", {"name": "echo", "args": [1, {"a": None}]}, "c1")
            assert await alice.receive() == {
                "type": "result",
                "payload": {"name": "echo", "result": {"you": "alice", "args": [1, {"a": None}]}},
                "ref": "c1",
            }
            await alice.send("command", {"name": "nobody"}, "c2")
            assert await alice.receive() == {
                "type": "error",
                "payload": {"code": 404, "message": "no command named 'nobody'"},
                "ref": "c2",
            }
            await alice.send("command", {"name": "refuse"}, "c3")
            assert await alice.receive() == {
                "type": "error",
                "payload": {"code": 422, "message": "cannot do that"},
                "ref": "c3",
            }
            for ref, name in (("c4", "broken"), ("c5", "nan")):
                await alice.send("command", {"name": name}, ref)
                assert await alice.receive() == {
                    "type": "error",
                    "payload": {"code": 500, "message": "internal server error"},
                    "ref": ref,
                }
            # The connection carries on.
            await alice.send("command", {"name": "echo"}, "c6")
            assert (await alice.receive())["payload"]["result"] == {"you": "alice", "args": None}
        assert server.remove_command("echo") and not server.remove_command("echo")
    assert [r.exc_info is not None for r in caplog.records] == [True, True]
    assert server.commands.outcomes == {"ok": 2, "unknown": 1, "error": 1, "fault": 2}


async def test_a_slow_command_times_out_with_504_and_others_go_on(autojump_clock):
    release = trio.Event()

    async def slow(call: CommandCall) -> object:
        if call.args == "forever":
            await trio.sleep_forever()
        await release.wait()
        return "done"

    async with open_memory_server(Config(command_timeout=5)) as server:
        server.add_command("slow", slow)
        server.add_command("echo", echo)
        async with open_memory_client(server, user="alice") as alice:
            await alice.send("command", {"name": "slow", "args": "forever"}, "f")
            await alice.send("command", {"name": "slow"}, "w")
            # The reader does not wait for handlers: a chat goes through now.
            await alice.join("lobby")
            await alice.send("command", {"name": "echo"}, "e")
            assert (await alice.receive())["ref"] == "e"
            release.set()
            assert await alice.receive() == {
                "type": "result",
                "payload": {"name": "slow", "result": "done"},
                "ref": "w",
            }
            timed_out = await alice.receive(timeout=10)
            assert timed_out == {
                "type": "error",
                "payload": {"code": 504, "message": "command did not finish within 5 s"},
                "ref": "f",
            }
            assert (await alice.chat("lobby", "still here"))["type"] == "ack"


async def test_commands_running_at_once_per_connection_are_bounded(autojump_clock):
    release = trio.Event()

    async def wait(call: CommandCall) -> object:
        await release.wait()
        return call.args

    async with open_memory_server(Config(command_concurrency=2)) as server:
        server.add_command("wait", wait)
        async with (
            open_memory_client(server, user="alice") as alice,
            open_memory_client(server, user="bob") as bob,
        ):
            for n in range(3):
                await alice.send("command", {"name": "wait", "args": n}, f"a{n}")
            busy = await alice.receive()
            assert (busy["payload"]["code"], busy["ref"]) == (429, "a2")
            # Per connection: bob has his own two.
            await bob.send("command", {"name": "wait", "args": "b"}, "b0")
            release.set()
            assert {(await alice.receive())["ref"] for _ in range(2)} == {"a0", "a1"}
            assert (await bob.receive())["payload"]["result"] == "b"
            # Finished calls free their places.
            await alice.send("command", {"name": "wait", "args": 9}, "a9")
            assert (await alice.receive())["payload"]["result"] == 9


async def test_a_result_over_the_message_limit_is_a_fault(autojump_clock):
    async def big(call: CommandCall) -> object:
        return "x" * 70000

    async with open_memory_server(Config()) as server:
        server.add_command("big", big)
        async with open_memory_client(server, user="alice") as alice:
            await alice.send("command", {"name": "big"}, "b")
            assert (await alice.receive())["payload"]["code"] == 500


def test_command_names_are_checked_when_registered():
    server_config = Config()
    from trio_chat import ChatServer

    server = ChatServer(server_config)
    with pytest.raises(ValueError, match="command name"):
        server.add_command("bad name", echo)


async def test_the_python_client_calls_commands():
    async def add(call: CommandCall) -> object:
        a, b = call.args
        return a + b

    async with open_test_server() as server:
        server.add_command("add", add)
        server.add_command("refuse", refuse)
        async with open_chat_client(server.url, user="alice") as alice:
            assert await alice.command("add", [2, 3]) == 5
            with pytest.raises(ClientError) as refused:
                await alice.command("refuse")
            assert (refused.value.code, refused.value.message) == (422, "cannot do that")
            with pytest.raises(ClientError) as refused:
                await alice.command("missing")
            assert refused.value.code == 404
            with pytest.raises(ClientError) as refused:
                await alice.command("add", {1, 2})  # a set is not JSON
            assert refused.value.code == 400
            # Chats and commands side by side.
            await alice.join("lobby")
            assert (await alice.send("lobby", "hi")).id == 1
            async with trio.open_nursery() as nursery:
                results: dict[int, object] = {}

                async def call(n: int) -> None:
                    results[n] = await alice.command("add", [n, n])

                for n in range(3):
                    nursery.start_soon(call, n)
            assert results == {0: 0, 1: 2, 2: 4}


async def test_a_call_cut_off_by_a_drop_fails_with_code_0():
    entered = trio.Event()

    async def hang(call: CommandCall) -> object:
        entered.set()
        await trio.sleep_forever()

    async with open_test_server() as server:
        server.add_command("hang", hang)
        async with open_chat_client(server.url, user="alice") as alice:
            async with trio.open_nursery() as nursery:
                outcome: list[BaseException] = []

                async def call() -> None:
                    try:
                        await alice.command("hang")
                    except ClientError as exc:
                        outcome.append(exc)

                nursery.start_soon(call)
                await entered.wait()
                (conn,) = server.connections("alice")
                server.close_connection(conn.session_id, 1012, "restart")
            assert [e.code for e in outcome] == [0]  # type: ignore[attr-defined]
            # The client reconnects; the next call works.
            server.add_command("echo", echo)
            assert (await alice.command("echo"))["you"] == "alice"
