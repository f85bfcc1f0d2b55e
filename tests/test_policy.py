"""Message policies: accept, reject, replace; async checks, deadlines, faults.

Every test runs a real server over in-memory streams on trio's virtual clock
(``autojump_clock``): a policy's deadline takes no real time.  Absences are
proven with a later frame (the next one a member receives), never a sleep.
"""

from __future__ import annotations

import logging

import attrs
import pytest
import trio

from trio_chat import (
    ACCEPT,
    Chat,
    Checked,
    Config,
    Direct,
    Join,
    Presence,
    Reject,
    Replace,
    Sender,
    Verdict,
)
from trio_chat.testing import open_memory_client, open_memory_server


@attrs.define
class Recording:
    """Accepts everything; records what it was asked."""

    seen: list[tuple[Sender, Checked]] = attrs.Factory(list)

    def check(self, sender: Sender, event: Checked) -> Verdict:
        self.seen.append((sender, event))
        return ACCEPT


class Rules:
    """Rejects chats containing "spam", rewrites "http:" links, refuses the
    room "closed"."""

    def check(self, sender: Sender, event: Checked) -> Verdict:
        if isinstance(event, Chat | Direct):
            if "spam" in event.content:
                return Reject(451, "no spam here")
            if "http:" in event.content:
                return Replace(event.content.replace("http:", "https:"))
        if isinstance(event, Join) and event.room == "closed":
            return Reject(403, "that room is closed")
        if isinstance(event, Presence) and event.text:
            return Replace(event.text.upper())
        return None


async def test_accepting_policy_sees_each_checked_event_with_its_sender(autojump_clock):
    policy = Recording()
    async with open_memory_server(Config(), policy=policy) as server:
        async with (
            open_memory_client(server, user="alice") as alice,
            open_memory_client(server, user="bob") as bob,
        ):
            await bob.join("lobby")
            await alice.join("lobby")
            ack = await alice.chat("lobby", "hello", ref="c1")
            assert ack["type"] == "ack"
            assert (await bob.expect("chat"))["payload"]["content"] == "hello"
            await alice.send("direct", {"to": "bob", "content": "psst"}, "d1")
            assert (await bob.expect("direct"))["payload"]["content"] == "psst"
            await alice.send("presence", {"status": "away", "text": "lunch"})
            assert (await bob.expect("presence"))["payload"]["text"] == "lunch"
            await alice.send("typing", {"room": "lobby"})  # not a checked event
            await alice.send("leave", {"room": "lobby"})  # nor this
            await alice.expect("left")
    events = [event for sender, event in policy.seen if sender.user_id == "alice"]
    assert events == [
        Join("lobby"),
        Chat("lobby", "hello", "c1"),
        Direct("bob", "psst", "d1"),
        Presence("away", "lunch"),
    ]
    session = alice.welcome["payload"]["session_id"]
    assert {s for s, _ in policy.seen if s.user_id == "alice"} == {
        Sender("alice", session, "memory")
    }


async def test_reject_answers_the_sender_with_its_code_reason_and_ref(autojump_clock):
    async with open_memory_server(Config(), policy=Rules()) as server:
        async with (
            open_memory_client(server, user="alice") as alice,
            open_memory_client(server, user="bob") as bob,
        ):
            await bob.join("lobby")
            await alice.join("lobby")
            assert (await bob.receive())["type"] == "system"  # alice joined
            refused = await alice.chat("lobby", "buy spam", ref="s1")
            assert refused == {
                "type": "error",
                "payload": {"code": 451, "message": "no spam here"},
                "ref": "s1",
            }
            await alice.send("direct", {"to": "bob", "content": "spam"}, "d1")
            error = await alice.expect("error")
            assert (error["payload"]["code"], error["ref"]) == (451, "d1")
            await alice.send("join", {"room": "closed"}, "j1")
            error = await alice.expect("error")
            assert error == {
                "type": "error",
                "payload": {"code": 403, "message": "that room is closed"},
                "ref": "j1",
            }
            # None of it reached the hub: bob's next frame is the next good
            # chat, with the room's first id, and alice is in one room.
            assert (await alice.chat("lobby", "fine"))["payload"]["id"] == 1
            chat = await bob.receive()
            assert (chat["type"], chat["payload"]["content"]) == ("chat", "fine")
            assert server.hub.state.members("closed") == []


async def test_replace_changes_what_members_and_history_get(autojump_clock):
    async with open_memory_server(Config(), policy=Rules()) as server:
        async with (
            open_memory_client(server, user="alice") as alice,
            open_memory_client(server, user="bob") as bob,
        ):
            await bob.join("lobby")
            await alice.join("lobby")
            assert (await alice.chat("lobby", "see http://x"))["type"] == "ack"
            assert (await bob.expect("chat"))["payload"]["content"] == "see https://x"
            await alice.send("direct", {"to": "bob", "content": "http://y"})
            assert (await bob.expect("direct"))["payload"]["content"] == "https://y"
            await alice.send("presence", {"status": "away", "text": "lunch"})
            assert (await bob.expect("presence"))["payload"]["text"] == "LUNCH"
        async with open_memory_client(server, user="carol") as carol:
            joined = await carol.join("lobby")
            assert [m["content"] for m in joined["payload"]["history"]] == ["see https://x"]


async def test_async_policy_is_awaited_and_keeps_a_connections_order(autojump_clock):
    class Slow:
        async def check(self, sender: Sender, event: Checked) -> Verdict:
            if isinstance(event, Chat) and event.content == "first":
                await trio.sleep(1)  # within the 2 s hook_timeout
            return None

    async with open_memory_server(Config(), policy=Slow()) as server:
        async with (
            open_memory_client(server, user="alice") as alice,
            open_memory_client(server, user="bob") as bob,
        ):
            await bob.join("lobby")
            await alice.join("lobby")
            await alice.send("chat", {"room": "lobby", "content": "first"})
            await alice.send("chat", {"room": "lobby", "content": "second"})
            got = [(await bob.expect("chat"))["payload"] for _ in range(2)]
            assert [(m["id"], m["content"]) for m in got] == [(1, "first"), (2, "second")]


async def test_a_slow_check_holds_only_its_own_connection(autojump_clock):
    release = trio.Event()

    class HoldAlice:
        async def check(self, sender: Sender, event: Checked) -> Verdict:
            if sender.user_id == "alice" and isinstance(event, Chat):
                await release.wait()
            return None

    async with open_memory_server(Config(hook_timeout=1000), policy=HoldAlice()) as server:
        async with (
            open_memory_client(server, user="alice") as alice,
            open_memory_client(server, user="bob") as bob,
            open_memory_client(server, user="carol") as carol,
        ):
            for client in (alice, bob, carol):
                await client.join("lobby")
            await alice.send("chat", {"room": "lobby", "content": "held"})
            # Bob's chat goes through while alice's check is still waiting.
            assert (await bob.chat("lobby", "not held"))["payload"]["id"] == 1
            assert (await carol.expect("chat"))["payload"]["content"] == "not held"
            release.set()
            chat = await carol.expect("chat")
            assert (chat["payload"]["id"], chat["payload"]["content"]) == (2, "held")


@pytest.mark.parametrize("fault", ["raises", "times out", "bad verdict", "bad replace"])
async def test_a_faulty_check_refuses_that_event_with_500_and_logs_it(
    autojump_clock, caplog: pytest.LogCaptureFixture, fault: str
):
    caplog.set_level(logging.ERROR, logger="trio_chat.policy")

    class Faulty:
        async def check(self, sender: Sender, event: Checked) -> Verdict:
            if isinstance(event, Chat) and event.content == "boom":
                if fault == "raises":
                    raise RuntimeError("the policy's bug")
                if fault == "times out":
                    await trio.sleep_forever()
                if fault == "bad verdict":
                    return "yes"  # type: ignore[return-value]  # the fault under test
                return Replace("x" * 5000)  # over max_content_chars
            return None

    async with open_memory_server(Config(hook_timeout=3), policy=Faulty()) as server:
        async with (
            open_memory_client(server, user="alice") as alice,
            open_memory_client(server, user="bob") as bob,
        ):
            await bob.join("lobby")
            await alice.join("lobby")
            assert (await bob.receive())["type"] == "system"  # alice joined
            start = trio.current_time()
            refused = await alice.chat("lobby", "boom", ref="b1")
            assert refused == {
                "type": "error",
                "payload": {"code": 500, "message": "internal server error"},
                "ref": "b1",
            }
            if fault == "times out":
                assert trio.current_time() - start == pytest.approx(3, abs=0.1)
            # The connection, and everyone else, carry on.
            assert (await alice.chat("lobby", "after"))["payload"]["id"] == 1
            chat = await bob.receive()
            assert (chat["type"], chat["payload"]["content"]) == ("chat", "after")
            assert server.screen.faults == 1
    (record,) = [r for r in caplog.records if r.name == "trio_chat.policy"]
    assert "from alice" in record.getMessage()
    if fault == "times out":
        assert "did not finish within 3 s" in record.getMessage()
    else:
        assert record.exc_info is not None  # the traceback is logged


async def test_replace_of_a_join_is_a_fault(autojump_clock):
    class ReplaceJoin:
        def check(self, sender: Sender, event: Checked) -> Verdict:
            return Replace("x") if isinstance(event, Join) else None

    async with open_memory_server(Config(), policy=ReplaceJoin()) as server:
        async with open_memory_client(server, user="alice") as alice:
            await alice.send("join", {"room": "lobby"}, "j")
            error = await alice.expect("error")
            assert (error["payload"]["code"], error["ref"]) == (500, "j")


def test_reject_takes_only_error_codes():
    with pytest.raises(ValueError):
        Reject(200, "ok")


async def test_without_a_policy_the_screen_is_idle(autojump_clock):
    async with open_memory_server(Config()) as server:
        assert server.screen.active is False
        async with open_memory_client(server, user="alice") as alice:
            await alice.join("lobby")
            assert (await alice.chat("lobby", "hi"))["type"] == "ack"
        assert (server.screen.rejected, server.screen.faults) == (0, 0)
