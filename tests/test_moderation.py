"""Moderation: kick, ban and mute from the embedding API, the admin HTTP API
and ``trio-chat admin``; bans surviving a restart with the SQLite store.

Mutes run on trio's virtual clock over in-memory streams; bans, the HTTP API
and the command line use real sockets on 127.0.0.1 (a handshake refusal is an
HTTP status, and bans are kept on the wall clock).
"""

from __future__ import annotations

import json
import logging
import sys

import pytest
import trio
import trio.testing
from http_support import http_request, ws_refusal
from trio_websocket import ConnectionClosed

from trio_chat import Config, ProtocolError, StreamClosed, System, make_token
from trio_chat._moderation import Ban, Bans
from trio_chat.testing import (
    open_memory_client,
    open_memory_server,
    open_test_client,
    open_test_server,
)

SECRET = "moderation-tests-secret-0123456789abcdef"


async def close_of(client) -> tuple[int, str]:
    with trio.fail_after(5):
        while True:
            try:
                await client.ws.get_message()
            except ConnectionClosed as closed:
                return closed.reason.code, closed.reason.reason


async def test_kick_closes_every_connection_and_members_see_it(caplog):
    caplog.set_level(logging.INFO, logger="trio_chat.moderation")
    async with open_test_server(Config()) as server:
        async with (
            open_test_client(server, user="alice", key="alice-key") as a1,
            open_test_client(server, user="alice", key="alice-key") as a2,
            open_test_client(server, user="bob") as bob,
            server.subscribe(rooms=["lobby"]) as events,
        ):
            await bob.join("lobby")
            await a1.join("lobby")
            await a2.join("lobby")
            assert (await bob.expect("system"))["payload"]["event"] == "join"
            assert await server.kick("alice", "flooding") == 2
            assert await bob.expect("system") == {
                "type": "system",
                "payload": {
                    "event": "kick",
                    "room": "lobby",
                    "user_id": "alice",
                    "text": "alice was kicked: flooding",
                },
            }
            for conn in (a1, a2):
                assert await close_of(conn) == (4001, "kicked: flooding")
            leave = await bob.expect("system")
            assert leave["payload"] == {"event": "leave", "room": "lobby", "user_id": "alice"}
            with trio.fail_after(5):
                got = [await events.receive() for _ in range(4)]
            assert got == [
                System("join", "lobby", "bob"),
                System("join", "lobby", "alice"),
                System("kick", "lobby", "alice", "alice was kicked: flooding"),
                System("leave", "lobby", "alice"),
            ]
            assert await server.kick("nobody") == 0
    assert server.moderation_actions["kick"] == 2
    assert any("moderation kick user=alice connections=2" in m for m in caplog.messages)


async def test_a_kicked_bot_is_closed(autojump_clock):
    async with open_memory_server(Config()) as server:
        async with server.open_bot("helper") as bot:
            await bot.join("lobby")
            assert await server.kick("helper", "misbehaving") == 1
            with trio.fail_after(5):
                assert (await bot.receive()).event == "kick"  # type: ignore[attr-defined]
                with pytest.raises(StreamClosed, match="kicked: misbehaving"):
                    await bot.receive()
            with pytest.raises(StreamClosed):
                await bot.send("lobby", "hello?")


async def test_mute_refuses_chats_in_that_room_with_the_time_left(autojump_clock):
    async with open_memory_server(Config()) as server:
        async with (
            open_memory_client(server, user="alice") as alice,
            open_memory_client(server, user="bob") as bob,
        ):
            await bob.join("lobby")
            await alice.join("lobby")
            await alice.join("other")
            await bob.expect("system")
            await server.mute("alice", "lobby", duration=30, reason="cool down")
            notice = await bob.expect("system")
            assert notice["payload"]["event"] == "mute"
            assert notice["payload"]["text"] == "alice was muted for 30 s: cool down"
            refused = await alice.chat("lobby", "but", ref="m1")
            assert refused == {
                "type": "error",
                "payload": {
                    "code": 403,
                    "message": "you are muted in room 'lobby' for 30 more seconds",
                    "retry_after_ms": 30000,
                },
                "ref": "m1",
            }
            assert (await alice.chat("other", "elsewhere is fine"))["type"] == "ack"
            assert (await bob.chat("lobby", "bob may"))["payload"]["id"] == 1
            await trio.sleep(10)
            refused = await alice.chat("lobby", "now?")
            assert "for 20 more seconds" in refused["payload"]["message"]
            assert [(u, r) for u, r, _ in server.mutes()] == [("alice", "lobby")]
            await trio.sleep(21)
            assert (await alice.chat("lobby", "back"))["payload"]["id"] == 2
            assert server.mutes() == []
            # unmute lifts one early
            await server.mute("alice", "lobby", duration=600)
            assert (await alice.chat("lobby", "x"))["type"] == "error"
            assert await server.unmute("alice", "lobby")
            assert not await server.unmute("alice", "lobby")
            assert (await alice.chat("lobby", "free"))["type"] == "ack"
        assert server.screen.active is False  # no policy, no mute: idle again


async def test_bad_moderation_arguments_are_refused(autojump_clock):
    async with open_memory_server(Config(max_mutes=1)) as server:
        for call in (
            server.mute("alice", "bad room!", duration=5),
            server.mute("alice", "r", duration=0),
            server.mute("not a user", "r", duration=5),
            server.ban(user_id="alice", ip="127.0.0.1", duration=5),
            server.ban(ip="not-an-address", duration=5),
            server.ban(user_id="alice", duration=float("inf")),
        ):
            with pytest.raises(ProtocolError) as refused:
                await call
            assert refused.value.code == 400
        await server.mute("alice", "r", duration=5)
        with pytest.raises(ProtocolError) as refused:
            await server.mute("bob", "r", duration=5)
        assert refused.value.code == 507


def test_bans_expire_and_stay_bounded():
    bans = Bans(limit=2)
    bans.add(Ban("user", "alice", 100.0, "a"), now=0)
    bans.add(Ban("ip", "10.0.0.1", 50.0, ""), now=0)
    assert bans.find("alice", None, now=10).reason == "a"
    assert bans.find("x", "10.0.0.1", now=10) is not None
    with pytest.raises(ValueError):
        bans.add(Ban("user", "carol", 100.0, ""), now=10)
    assert bans.find("x", "10.0.0.1", now=60) is None  # expired, and forgotten
    bans.add(Ban("user", "carol", 100.0, ""), now=60)  # room again
    assert len(bans) == 2


async def test_ban_refuses_the_handshake_and_closes_what_is_connected():
    async with open_test_server(Config()) as server:
        async with (
            open_test_client(server, user="alice", key="alice-key") as alice,
            open_test_client(server, user="bob", key="bob-own-key") as bob,
        ):
            await bob.join("lobby")
            await alice.join("lobby")
            await bob.expect("system")
            ban = await server.ban(user_id="alice", duration=3600, reason="spam")
            assert (ban.kind, ban.target, ban.reason) == ("user", "alice", "spam")
            notice = await bob.expect("system")
            assert notice["payload"]["event"] == "ban"
            assert notice["payload"]["text"] == "alice was banned: spam"
            assert await close_of(alice) == (4003, "banned: spam")
        refusal = await ws_refusal(server.port, "/ws?user=alice&key=alice-key")
        assert refusal.status == 403
        assert refusal.body.decode().startswith("banned for ")
        assert refusal.body.decode().rstrip().endswith("more seconds: spam")
        async with open_test_client(server, user="bob", key="bob-own-key"):
            pass  # others still get in
        assert [b.target for b in server.bans()] == ["alice"]
        assert await server.unban(user_id="alice")
        assert not await server.unban(user_id="alice")
        async with open_test_client(server, user="alice", key="alice-key") as alice:
            assert alice.user_id == "alice"


async def test_an_address_ban_refuses_everyone_from_it():
    async with open_test_server(Config()) as server:
        async with open_test_client(server, user="carol") as carol:
            await server.ban(ip="127.0.0.1", duration=60, reason="abuse")
            assert await close_of(carol) == (4003, "banned: abuse")
        refusal = await ws_refusal(server.port, "/ws?user=dave&key=dave-own-key")
        assert refusal.status == 403
        assert await server.unban(ip="::ffff:127.0.0.1")  # the same address
        async with open_test_client(server, user="dave", key="dave-own-key"):
            pass


async def test_bans_survive_a_restart_with_the_sqlite_store(tmp_path):
    config = Config(store="sqlite", data_dir=str(tmp_path))
    async with open_test_server(config) as server:
        await server.ban(user_id="mallory", duration=3600, reason="persistent")
        await server.ban(ip="192.0.2.9", duration=3600)
        await server.ban(user_id="brief", duration=3600)
        await server.unban(user_id="brief")
    on_disk = json.loads((tmp_path / "bans.json").read_text())
    assert {b["target"] for b in on_disk["bans"]} == {"mallory", "192.0.2.9"}
    async with open_test_server(config) as server:
        assert {(b.kind, b.target) for b in server.bans()} == {
            ("user", "mallory"),
            ("ip", "192.0.2.9"),
        }
        refusal = await ws_refusal(server.port, "/ws?user=mallory")
        assert (refusal.status, refusal.body.decode().rstrip()[-10:]) == (403, "persistent")
        async with open_test_client(server, user="brief"):
            pass


async def test_mutes_survive_a_restart_with_the_sqlite_store(tmp_path):
    config = Config(store="sqlite", data_dir=str(tmp_path))
    async with open_test_server(config) as server:
        await server.mute("mallory", "lobby", duration=3600, reason="kept")
        await server.mute("brief", "lobby", duration=3600)
        assert await server.unmute("brief", "lobby")
    on_disk = json.loads((tmp_path / "bans.json").read_text())
    assert [(m["user_id"], m["room"]) for m in on_disk["mutes"]] == [("mallory", "lobby")]
    async with open_test_server(config) as server:
        [(user, room, left)] = server.mutes()
        assert (user, room) == ("mallory", "lobby") and 3500 < left <= 3600
        async with open_test_client(server, user="mallory") as mallory:
            await mallory.join("lobby")
            refused = await mallory.chat("lobby", "am I still muted?")
            assert refused["payload"]["code"] == 403
            assert "more seconds" in refused["payload"]["message"]
        async with open_test_client(server, user="brief") as brief:
            await brief.join("lobby")
            assert (await brief.chat("lobby", "free"))["type"] == "ack"


async def test_the_memory_store_keeps_bans_in_memory_only(tmp_path):
    async with open_test_server(Config(store="memory")) as server:
        await server.ban(user_id="mallory", duration=3600)
    async with open_test_server(Config(store="memory")) as server:
        assert server.bans() == []


def _admin(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}"), ("content-type", "application/json")]


async def _post(port: int, action: str, body: dict, token: str):
    return await http_request(
        port, "POST", f"/api/admin/{action}", headers=_admin(token), body=json.dumps(body).encode()
    )


async def test_the_admin_http_api_kicks_bans_and_mutes():
    token = make_token(SECRET, "ops", ttl=600, admin=True)
    async with open_test_server(Config(secret=SECRET)) as server:
        port = server.port
        alice_token = make_token(SECRET, "alice", ttl=600)
        bob_token = make_token(SECRET, "bob", ttl=600)
        async with (
            open_test_client(server, token=alice_token) as alice,
            open_test_client(server, token=bob_token) as bob,
        ):
            await bob.join("lobby")
            await alice.join("lobby")
            await bob.expect("system")
            reply = await _post(
                port, "mute", {"user_id": "alice", "room": "lobby", "duration": 60}, token
            )
            assert reply.status == 201
            assert (await alice.chat("lobby", "hi"))["payload"]["code"] == 403
            assert (
                await http_request(port, "GET", "/api/admin/mutes", headers=_admin(token))
            ).json()["mutes"][0]["user_id"] == "alice"
            reply = await _post(port, "unmute", {"user_id": "alice", "room": "lobby"}, token)
            assert reply.json() == {"removed": True}
            reply = await _post(port, "kick", {"user_id": "alice", "reason": "bye"}, token)
            assert (reply.status, reply.json()) == (200, {"closed": 1})
            assert await close_of(alice) == (4001, "kicked: bye")
        reply = await _post(port, "ban", {"user_id": "alice", "duration": 60, "reason": "x"}, token)
        assert reply.status == 201 and reply.json()["target"] == "alice"
        assert (await ws_refusal(port, f"/ws?token={alice_token}")).status == 403
        listed = await http_request(port, "GET", "/api/admin/bans", headers=_admin(token))
        assert [b["target"] for b in listed.json()["bans"]] == ["alice"]
        reply = await _post(port, "unban", {"user_id": "alice"}, token)
        assert reply.json() == {"removed": True}
        reply = await _post(port, "ban", {"ip": "127.0.0.1", "duration": 60}, token)
        assert reply.status == 201 and reply.json()["kind"] == "ip"
        assert (await ws_refusal(port, f"/ws?token={bob_token}")).status == 403
        reply = await _post(port, "unban", {"ip": "127.0.0.1"}, token)
        assert reply.json() == {"removed": True}
        # Refusals: not admin, no token, bad bodies.
        assert (await _post(port, "kick", {"user_id": "bob"}, bob_token)).status == 403
        no_token = await http_request(
            port,
            "POST",
            "/api/admin/kick",
            headers=[("content-type", "application/json")],
            body=b"{}",
        )
        assert no_token.status == 401
        assert (await _post(port, "ban", {"user_id": "bob"}, token)).status == 400  # no duration
        assert (await _post(port, "kick", {}, token)).status == 400
        assert (await _post(port, "dance", {}, token)).status == 404
        metrics = (await http_request(port, "GET", "/metrics")).body.decode()
        for action, count in (("kick", 1), ("ban", 2), ("unban", 2), ("mute", 1), ("unmute", 1)):
            assert f'trio_chat_moderation_actions_total{{action="{action}"}} {count}.0' in metrics


async def _cli(*args: str) -> trio.Process:
    return await trio.run_process(
        [sys.executable, "-m", "trio_chat", "admin", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_the_admin_command_line_against_a_running_server():
    async with open_test_server(Config(secret=SECRET)) as server:
        url = f"http://127.0.0.1:{server.port}"
        alice_token = make_token(SECRET, "alice", ttl=600)
        async with open_test_client(server, token=alice_token) as alice:
            await alice.join("lobby")
            done = await _cli(
                "--url", url, "--secret", SECRET, "mute", "alice", "lobby", "--duration", "2m"
            )
            assert done.returncode == 0, done.stderr
            refused = await alice.chat("lobby", "hi")
            assert "for 120 more seconds" in refused["payload"]["message"]
            done = await _cli("--url", url, "--secret", SECRET, "mutes")
            assert [m["user_id"] for m in json.loads(done.stdout)["mutes"]] == ["alice"]
            done = await _cli("--url", url, "--secret", SECRET, "unmute", "alice", "lobby")
            assert json.loads(done.stdout) == {"removed": True}
            assert (await alice.chat("lobby", "hi again"))["type"] == "ack"
            done = await _cli("--url", url, "--secret", SECRET, "kick", "alice", "--reason", "cli")
            assert (done.returncode, json.loads(done.stdout)) == (0, {"closed": 1})
            assert await close_of(alice) == (4001, "kicked: cli")
        token = make_token(SECRET, "ops", ttl=600, admin=True)
        done = await _cli(
            "--url", url, "--token", token, "ban", "--user", "alice", "--duration", "1h"
        )
        assert done.returncode == 0, done.stderr
        assert (await ws_refusal(server.port, f"/ws?token={alice_token}")).status == 403
        done = await _cli("--url", url, "--token", token, "bans")
        assert [b["target"] for b in json.loads(done.stdout)["bans"]] == ["alice"]
        done = await _cli("--url", url, "--token", token, "unban", "--user", "alice")
        assert json.loads(done.stdout) == {"removed": True}
        # A refusal: exit 1 with the server's reason; a token that is not admin.
        user_token = make_token(SECRET, "bob", ttl=600)
        done = await _cli("--url", url, "--token", user_token, "kick", "alice")
        assert done.returncode == 1
        assert b"not an admin token" in done.stderr
        done = await _cli("--url", "http://127.0.0.1:1", "--token", token, "bans")
        assert done.returncode == 2
