"""Moderation with the Redis store: kicks, bans and mutes act on every
process sharing one real ``redis-server``.

Several servers in this trio run, each with its own hub, backplane and
moderation link, as separate processes would; clients on real sockets on
127.0.0.1.  Bans and mutes end on the wall clock (they are kept in Redis as
wall-clock times), so the times checked are whole seconds left.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from http_support import http_request, ws_refusal
from redis_helpers import RedisServer
from support import bound_all
from test_backplane import FAST, open_cluster
from test_moderation import SECRET, _admin, _cli, _post, close_of

from trio_chat import ChatMessage, ChatServer, Config, ProtocolError, System, make_token
from trio_chat.testing import TestClient, open_test_client

bound_all(globals(), 60)


async def _wait_for(predicate, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def _system(client: TestClient, event: str, user_id: str) -> dict[str, Any]:
    """The next ``system`` *event* about *user_id* (other frames skipped)."""
    while True:
        frame = await client.expect("system")
        if (frame["payload"]["event"], frame["payload"]["user_id"]) == (event, user_id):
            return frame["payload"]


async def _systems_until_chat(client: TestClient, content: str) -> list[tuple[str, str]]:
    """The ``system`` events *client* gets before the chat *content* (a barrier)."""
    seen = []
    while True:
        frame = await client.receive()
        if frame["type"] == "system":
            seen.append((frame["payload"]["event"], frame["payload"]["user_id"]))
        elif frame["type"] == "chat" and frame["payload"]["content"] == content:
            return seen


async def _bot_event(bot: Any, wanted: System) -> None:
    with trio.fail_after(5):
        async for event in bot:
            if event == wanted:
                return


async def _bot_events_until(bot: Any, content: str) -> list[System]:
    """The ``system`` events *bot* gets before the chat *content* (a barrier)."""
    seen = []
    with trio.fail_after(5):
        async for event in bot:
            if isinstance(event, System):
                seen.append(event)
            elif isinstance(event, ChatMessage) and event.content == content:
                return seen
    raise AssertionError("the bot was closed")


async def test_a_kick_closes_the_users_connections_on_every_process(redis_server):
    async with open_cluster(redis_server) as (one, two):
        async with (
            open_test_client(one, user="ann") as ann,
            open_test_client(two, user="bob") as bob,
            open_test_client(one, user="mal", key="mal-key-0") as mal_one,
            open_test_client(two, user="mal", key="mal-key-0") as mal_two,
        ):
            await ann.join("lobby")
            await bob.join("lobby")
            await mal_one.join("lobby")  # in the room through the first process only
            await _system(bob, "join", "mal")
            await _system(ann, "join", "mal")
            assert await one.kick("mal", "spam") == 2  # one on each process
            assert await close_of(mal_one) == (4001, "kicked: spam")
            assert await close_of(mal_two) == (4001, "kicked: spam")
            # Members on both processes see the kick, once each.
            kick = await _system(bob, "kick", "mal")
            assert kick["text"] == "mal was kicked: spam" and kick["room"] == "lobby"
            assert (await _system(ann, "kick", "mal"))["text"] == "mal was kicked: spam"
            await _system(ann, "leave", "mal")
            assert (await ann.chat("lobby", "barrier"))["type"] == "ack"
            assert sorted(await _systems_until_chat(bob, "barrier")) == [("leave", "mal")]
            assert one.moderation_actions["kick"] == 1 and two.moderation_actions["kick"] == 0


async def test_a_ban_holds_on_every_process_and_for_one_started_later(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="trio_chat.moderation")
    async with open_cluster(redis_server) as (one, two):
        async with (
            open_test_client(two, user="mal", key="mal-key-0") as mal,
            open_test_client(two, user="bob") as bob,
        ):
            await bob.join("lobby")
            await mal.join("lobby")
            await _system(bob, "join", "mal")
            ban = await one.ban(user_id="mal", duration=3600, reason="spam")
            assert abs(ban.until - (time.time() + 3600)) < 60
            assert (await _system(bob, "ban", "mal"))["text"] == "mal was banned: spam"
            assert await close_of(mal) == (4003, "banned: spam")
        # Logged where it was made, with the connections closed everywhere.
        assert "moderation ban user=mal seconds=3600 connections=1 by=server" in caplog.text
        refusal = await ws_refusal(two.port, "/ws?user=mal&key=mal-key-0")
        assert refusal.status == 403
        assert refusal.body.decode().startswith("banned for 3600 more seconds: spam")
        assert [b.target for b in two.bans()] == ["mal"]
        metrics = (await http_request(two.port, "GET", "/metrics")).body.decode()
        assert "trio_chat_bans 1.0" in metrics
        # Kept in Redis, its end on the wall clock.
        stored = json.loads(redis_server.command("HGET", "trio_chat:bans", "user mal"))
        assert stored == ban.to_json()
        # A process started afterwards refuses it too, and may lift it.
        async with open_cluster(redis_server, count=1) as (three,):
            assert (await ws_refusal(three.port, "/ws?user=mal&key=mal-key-0")).status == 403
            assert await three.unban(user_id="mal")
        await _wait_for(lambda: not one.bans() and not two.bans())
        async with open_test_client(one, user="mal", key="mal-key-0") as mal:
            assert mal.user_id == "mal"
        assert not await two.unban(user_id="mal")
        # An address ban closes what comes from it wherever it is connected,
        # and the members on every process see it once (bots have no address).
        async with (
            open_test_client(one, user="carol", key="carol-key-0") as carol,
            open_test_client(one, user="carol", key="carol-key-0") as carol_too,
            open_test_client(two, user="erin") as erin,
            two.open_bot("watcher") as watcher,
            one.open_bot("speaker") as speaker,
        ):
            await watcher.join("lobby")
            await speaker.join("lobby")
            await carol.join("lobby")
            await carol_too.join("lobby")
            await _bot_event(watcher, System("join", "lobby", "carol"))
            await one.ban(ip="127.0.0.1", duration=60, reason="abuse")
            for conn in (carol, carol_too, erin):
                assert await close_of(conn) == (4003, "banned: abuse")
            await _bot_event(speaker, System("leave", "lobby", "carol"))
            await speaker.send("lobby", "barrier")
            seen = await _bot_events_until(watcher, "barrier")
            assert [e for e in seen if e.user_id == "carol"] == [
                System("ban", "lobby", "carol", "127.0.0.1 was banned: abuse"),
                System("leave", "lobby", "carol"),
            ]
        assert (await ws_refusal(one.port, "/ws?user=dave")).status == 403
        assert await one.unban(ip="127.0.0.1")
        await _wait_for(lambda: not two.bans())


async def test_a_mute_refuses_chats_through_every_process(redis_server):
    async with open_cluster(redis_server) as (one, two):
        async with (
            open_test_client(two, user="ann") as ann,
            open_test_client(one, user="bob") as bob,
        ):
            await bob.join("lobby")
            await ann.join("lobby")
            await _system(bob, "join", "ann")
            await one.mute("ann", "lobby", duration=60, reason="calm down")
            for member in (ann, bob):
                mute = await _system(member, "mute", "ann")
                assert mute["text"] == "ann was muted for 60 s: calm down"
            refused = await ann.chat("lobby", "still talking")
            assert refused["payload"]["code"] == 403
            assert refused["payload"]["message"] == (
                "you are muted in room 'lobby' for 60 more seconds"
            )
            assert 59_000 < refused["payload"]["retry_after_ms"] <= 60_000
            [(user, room, left)] = two.mutes()
            assert (user, room) == ("ann", "lobby") and 59 < left <= 60
            stored = json.loads(redis_server.command("HGET", "trio_chat:mutes", "ann lobby"))
            assert abs(stored["until"] - (time.time() + 60)) < 30
            # Lifted through the other process.
            assert await two.unmute("ann", "lobby")
            assert not await one.unmute("ann", "lobby")
            for member in (ann, bob):
                assert (await _system(member, "unmute", "ann"))["text"] == "ann may speak again"
            assert (await ann.chat("lobby", "sorry"))["type"] == "ack"
            assert (await bob.expect("chat"))["payload"]["content"] == "sorry"
            # Each member saw each event once.
            assert (await bob.chat("lobby", "barrier"))["type"] == "ack"
            assert await _systems_until_chat(ann, "barrier") == []
            assert one.mutes() == two.mutes() == []


async def test_the_tables_are_bounded_across_processes(redis_server):
    async with open_cluster(redis_server, max_bans=2, max_mutes=1) as (one, two):
        await one.ban(user_id="a", duration=60)
        await two.ban(user_id="b", duration=60)
        with pytest.raises(ProtocolError) as refused:
            await one.ban(user_id="c", duration=60)
        assert refused.value.code == 507
        await two.ban(user_id="a", duration=120)  # renewing one is not a new one
        await two.mute("a", "lobby", duration=60)
        with pytest.raises(ProtocolError) as refused:
            await one.mute("b", "lobby", duration=60)
        assert refused.value.code == 507
        await _wait_for(lambda: len(one.bans()) == 2 and len(one.mutes()) == 1)
        assert redis_server.command("HLEN", "trio_chat:bans").strip() == b"2"


@asynccontextmanager
async def _servers(*urls: str, **settings: Any) -> AsyncIterator[list[ChatServer]]:
    servers = []
    async with trio.open_nursery() as nursery:
        for url in urls:
            config = Config(host="127.0.0.1", port=0, redis_url=url, shutdown_grace=2, **settings)
            server = ChatServer(config)
            await nursery.start(server.serve)
            servers.append(server)
        try:
            yield servers
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(15):
                for server in servers:
                    await server.shutdown()
            nursery.cancel_scope.cancel()


async def test_a_process_cut_off_from_redis_catches_up_when_it_is_back(
    redis_server: RedisServer,
):
    # The second process logs in as its own Redis user, which can be
    # switched off (its connections killed) and on again.
    redis_server.command("ACL", "SETUSER", "second", "on", ">secret2", "~*", "&*", "+@all")
    second_url = f"redis://second:secret2@127.0.0.1:{redis_server.port}/0" + FAST
    async with _servers(redis_server.url + FAST, second_url) as (one, two):
        async with open_test_client(two, user="mal", key="mal-key-0") as mal:
            redis_server.command("ACL", "SETUSER", "second", "off")
            redis_server.command("CLIENT", "KILL", "USER", "second")
            await _wait_for(lambda: two.hub.backplane_up() is False)
            with pytest.raises(ProtocolError) as refused:
                await two.ban(user_id="eve", duration=60)
            assert refused.value.code == 503
            await one.ban(user_id="mal", duration=600, reason="while you were away")
            await one.mute("ann", "lobby", duration=600)
            assert two.bans() == [] and two.mutes() == []
            redis_server.command("ACL", "SETUSER", "second", "on")
            # Back: the tables are read again, and what they ban is closed.
            assert await close_of(mal) == (4003, "banned: while you were away")
        assert [b.target for b in two.bans()] == ["mal"]
        assert [(u, r) for u, r, _ in two.mutes()] == [("ann", "lobby")]
        assert two.ban_refusal("mal", "127.0.0.1") == (
            "banned for 600 more seconds: while you were away"
        )


async def test_the_admin_api_and_command_line_act_on_every_process(redis_server):
    async with open_cluster(redis_server, secret=SECRET) as (one, two):
        admin = make_token(SECRET, "ops", ttl=600, admin=True)
        alice_token = make_token(SECRET, "alice", ttl=600)
        async with open_test_client(one, token=alice_token) as alice:
            await alice.join("lobby")
            reply = await _post(
                two.port, "mute", {"user_id": "alice", "room": "lobby", "duration": 60}, admin
            )
            assert reply.status == 201
            await _system(alice, "mute", "alice")
            assert (await alice.chat("lobby", "hi"))["payload"]["code"] == 403
            listed = await http_request(one.port, "GET", "/api/admin/mutes", headers=_admin(admin))
            assert [m["user_id"] for m in listed.json()["mutes"]] == ["alice"]
            done = await _cli(
                "--url",
                f"http://127.0.0.1:{one.port}",
                "--token",
                admin,
                "unmute",
                "alice",
                "lobby",
            )
            assert json.loads(done.stdout) == {"removed": True}
            assert (await alice.chat("lobby", "hi again"))["type"] == "ack"
            done = await _cli(
                "--url", f"http://127.0.0.1:{two.port}", "--token", admin, "kick", "alice"
            )
            assert (done.returncode, json.loads(done.stdout)) == (0, {"closed": 1})
            assert await close_of(alice) == (4001, "kicked")
        reply = await _post(one.port, "ban", {"user_id": "alice", "duration": 60}, admin)
        assert reply.status == 201
        await _wait_for(lambda: bool(two.bans()))
        assert (await ws_refusal(two.port, f"/ws?token={alice_token}")).status == 403
        done = await _cli("--url", f"http://127.0.0.1:{two.port}", "--token", admin, "bans")
        assert [b["target"] for b in json.loads(done.stdout)["bans"]] == ["alice"]
        done = await _cli(
            "--url", f"http://127.0.0.1:{two.port}", "--token", admin, "unban", "--user", "alice"
        )
        assert json.loads(done.stdout) == {"removed": True}
        await _wait_for(lambda: not one.bans())
        async with open_test_client(one, token=alice_token):
            pass
        metrics = (await http_request(two.port, "GET", "/metrics")).body.decode()
        for action, count in (("kick", 1), ("ban", 0), ("unban", 1), ("mute", 1)):
            assert f'trio_chat_moderation_actions_total{{action="{action}"}} {count}.0' in metrics


async def test_ended_entries_make_room_and_are_not_read_back(redis_server):
    async with open_cluster(redis_server, max_bans=1) as (one, two):
        await one.ban(user_id="brief", duration=0.2)
        await _wait_for(lambda: two.ban_refusal("brief", "127.0.0.1") is not None)
        # Once it has ended, on the wall clock, it is no ban and takes no room.
        await _wait_for(lambda: two.ban_refusal("brief", "127.0.0.1") is None)
        await two.ban(user_id="next", duration=60)
        assert redis_server.command("HKEYS", "trio_chat:bans").split() == [b"user", b"next"]
        async with open_cluster(redis_server, count=1) as (three,):
            assert [b.target for b in three.bans()] == ["next"]


async def test_news_that_make_no_sense_are_ignored(redis_server, caplog):
    async with open_cluster(redis_server) as (one, two):
        async with open_test_client(two, user="bob") as bob:
            for junk in ("nonsense", "12 node {not json", '1 node {"action": "dance"}'):
                redis_server.command("PUBLISH", "trio_chat:mod", junk)
            # A number far beyond the tables': not news from this cluster.
            redis_server.command(
                "PUBLISH", "trio_chat:mod", '999 node {"action":"kick","user_id":"bob","reason":""}'
            )
            await one.ban(user_id="mal", duration=60)
            await _wait_for(lambda: bool(two.bans()))
            await two.kick("nobody")
            assert (await bob.join("lobby"))["payload"]["room"] == "lobby"  # still connected
        assert "moderation: news 999 is beyond the tables read: ignored" in caplog.text
