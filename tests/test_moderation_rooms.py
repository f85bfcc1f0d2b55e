"""Moderating rooms: delete any message, set a room's topic, close a room,
from the embedding API, the admin HTTP API and ``trio-chat admin``.

Real sockets on 127.0.0.1: members see each action live (a ``system`` event
with its text, and the ``delete`` event or ``left`` it causes), what joins
afterwards sees its effect, each action is logged and counted on
``/metrics``; an admin token covering other rooms is refused (403); with
the Redis store, the admin API and command line of one process act on the
members of another (tests/test_backplane_rooms.py has the embedding API's
side).
"""

from __future__ import annotations

import json
import logging

import pytest
from http_support import http_request
from support import bound_all
from test_backplane import open_cluster
from test_moderation import _cli

from trio_chat import Config, ProtocolError, make_token
from trio_chat.testing import TestClient, open_test_client, open_test_server

bound_all(globals(), 30)

SECRET = "moderating-rooms-secret-0123456789abcdef"


async def next_of(client: TestClient, kind: str) -> dict:
    return await client.expect(kind)


async def test_a_moderator_deletes_anyones_message_and_members_see_it(caplog):
    caplog.set_level(logging.INFO, logger="trio_chat.moderation")
    async with open_test_server() as server:
        async with (
            open_test_client(server, user="ann") as ann,
            open_test_client(server, user="bob") as bob,
        ):
            await ann.join("lobby")
            await bob.join("lobby")
            ack = await ann.chat("lobby", "something regrettable")
            message_id = ack["payload"]["id"]
            tombstone = await server.delete_message("lobby", message_id, "off topic")
            assert (tombstone.user_id, tombstone.deleted, tombstone.content) == ("ann", True, "")
            for client in (ann, bob):
                deleted = await next_of(client, "delete")
                assert deleted["payload"] == {
                    "room": "lobby",
                    "id": message_id,
                    "user_id": "ann",
                    "by": "server",
                }
                system = await next_of(client, "system")
                assert system["payload"] == {
                    "event": "delete",
                    "room": "lobby",
                    "user_id": "ann",
                    "text": f"message {message_id} was deleted by a moderator: off topic",
                }
            async with open_test_client(server, user="cy") as cy:
                history = (await cy.join("lobby"))["payload"]["history"]
                assert history[-1]["deleted"] is True and history[-1]["content"] == ""
            for bad, code in [((message_id + 5,), 404), ((-1,), 400), ((True,), 400)]:
                with pytest.raises(ProtocolError) as info:
                    await server.delete_message("lobby", *bad)  # type: ignore[arg-type]
                assert info.value.code == code
            with pytest.raises(ProtocolError) as info:
                await server.delete_message("nowhere", 1)
            assert info.value.code == 404
    assert any(
        "moderation delete room=lobby id=1 author=ann by=server reason=off topic" in r.message
        for r in caplog.records
    )


async def test_a_moderator_sets_a_topic_without_being_a_member():
    async with open_test_server() as server:
        async with open_test_client(server, user="ann") as ann:
            await ann.join("lobby")
            await server.set_topic("lobby", "Be kind")
            system = await next_of(ann, "system")
            assert system["payload"] == {
                "event": "topic",
                "room": "lobby",
                "user_id": "server",
                "text": "Be kind",
            }
            async with open_test_client(server, user="bob") as bob:
                assert (await bob.join("lobby"))["payload"]["topic"] == "Be kind"
            for room, topic, code in [("nowhere", "x", 404), ("lobby", "t" * 257, 400)]:
                with pytest.raises(ProtocolError) as info:
                    await server.set_topic(room, topic)
                assert info.value.code == code


async def test_closing_a_room_removes_everyone_and_forgets_it():
    async with open_test_server() as server:
        async with (
            open_test_client(server, user="ann") as ann,
            open_test_client(server, user="bob") as bob,
        ):
            for client in (ann, bob):
                await client.join("lobby")
                await client.join("other")
            await ann.chat("lobby", "soon gone")
            old_epoch = (await bob.join("lobby"))["payload"]["epoch"]
            async with server.open_bot("helper") as bot:
                await bot.join("lobby")
                assert await server.close_room("lobby", "spam wave") == 3
                for client in (ann, bob):
                    system = await next_of(client, "system")
                    while system["payload"]["event"] != "close":  # the bot's join first
                        system = await next_of(client, "system")
                    assert system["payload"] == {
                        "event": "close",
                        "room": "lobby",
                        "user_id": "server",
                        "text": "the room was closed: spam wave",
                    }
                    assert await client.receive() == {"type": "left", "payload": {"room": "lobby"}}
                received = [await bot.receive(), await bot.receive()]
                assert [event.type for event in received] == ["system", "left"]
            # A chat there is refused: nobody is in it any more.
            assert (await ann.chat("lobby", "still here?"))["payload"]["code"] == 403
            # The other room is untouched, the closed one is gone: a join
            # starts it afresh.
            assert (await ann.chat("other", "fine"))["type"] == "ack"
            await ann.send("rooms", {}, ref="q")
            listed = (await ann.expect("rooms"))["payload"]["rooms"]
            assert [r["room"] for r in listed] == ["other"]
            joined = (await ann.join("lobby"))["payload"]
            assert joined["history"] == [] and joined["epoch"] != old_epoch
        with pytest.raises(ProtocolError) as info:
            await server.close_room("nowhere")
        assert info.value.code == 404


async def _post(port: int, action: str, body: dict, token: str):
    return await http_request(
        port,
        "POST",
        f"/api/admin/{action}",
        headers=[("authorization", f"Bearer {token}"), ("content-type", "application/json")],
        body=json.dumps(body).encode(),
    )


async def test_the_admin_http_api_deletes_sets_topics_and_closes_rooms():
    admin = make_token(SECRET, "ops", ttl=600, admin=True)
    elsewhere = make_token(SECRET, "ops2", ttl=600, admin=True, rooms=["team-*"])
    async with open_test_server(Config(secret=SECRET)) as server:
        port = server.port
        async with open_test_client(server, token=make_token(SECRET, "ann", ttl=600)) as ann:
            await ann.join("lobby")
            ack = await ann.chat("lobby", "to be removed")
            message_id = ack["payload"]["id"]
            reply = await _post(port, "delete", {"room": "lobby", "id": message_id}, admin)
            assert (reply.status, reply.json()) == (
                200,
                {"room": "lobby", "id": message_id, "user_id": "ann"},
            )
            assert (await ann.expect("delete"))["payload"]["by"] == "ops"
            reply = await _post(port, "topic", {"room": "lobby", "topic": "News"}, admin)
            assert (reply.status, reply.json()) == (200, {"room": "lobby", "topic": "News"})
            system = await ann.expect("system")
            while system["payload"]["event"] != "topic":
                system = await ann.expect("system")
            assert system["payload"]["user_id"] == "ops" and system["payload"]["text"] == "News"
            # Refusals: a room the token does not cover, unknown rooms and
            # messages, bad bodies.
            for action, body in [
                ("delete", {"room": "lobby", "id": 1}),
                ("topic", {"room": "lobby", "topic": "x"}),
                ("close", {"room": "lobby"}),
            ]:
                assert (await _post(port, action, body, elsewhere)).status == 403
            assert (await _post(port, "delete", {"room": "lobby", "id": 99}, admin)).status == 404
            assert (await _post(port, "close", {"room": "nowhere"}, admin)).status == 404
            assert (await _post(port, "delete", {"room": "lobby", "id": "1"}, admin)).status == 400
            assert (await _post(port, "topic", {"room": "lobby"}, admin)).status == 400
            reply = await _post(port, "close", {"room": "lobby", "reason": "maintenance"}, admin)
            assert (reply.status, reply.json()) == (200, {"closed": 1})
            system = await ann.expect("system")
            assert system["payload"]["text"] == "the room was closed: maintenance"
            assert (await ann.receive())["type"] == "left"
        metrics = (await http_request(port, "GET", "/metrics")).body.decode()
        for action in ("delete", "topic", "close"):
            assert f'trio_chat_moderation_actions_total{{action="{action}"}} 1.0' in metrics


async def test_the_admin_command_line_deletes_sets_topics_and_closes_rooms():
    async with open_test_server(Config(secret=SECRET)) as server:
        cli = ("--url", f"http://127.0.0.1:{server.port}", "--secret", SECRET)
        async with open_test_client(server, token=make_token(SECRET, "ann", ttl=600)) as ann:
            await ann.join("lobby")
            await ann.chat("lobby", "one")
            done = await _cli(*cli, "delete", "lobby", "1", "--reason", "cli")
            assert (done.returncode, json.loads(done.stdout)) == (
                0,
                {"room": "lobby", "id": 1, "user_id": "ann"},
            )
            assert (await ann.expect("delete"))["payload"]["id"] == 1
            done = await _cli(*cli, "topic", "lobby", "From the shell")
            assert done.returncode == 0, done.stderr
            async with open_test_client(server, token=make_token(SECRET, "bob", ttl=600)) as bob:
                assert (await bob.join("lobby"))["payload"]["topic"] == "From the shell"
                done = await _cli(*cli, "close", "lobby")
                assert (done.returncode, json.loads(done.stdout)) == (0, {"closed": 2})
                assert (await bob.expect("left"))["payload"] == {"room": "lobby"}
            done = await _cli(*cli, "close", "lobby")
            assert done.returncode == 1
            assert b"close refused (HTTP 404): room 'lobby' does not exist" in done.stderr


async def _system(client: TestClient, event: str) -> dict:
    while (frame := await client.expect("system"))["payload"]["event"] != event:
        pass
    return frame["payload"]


async def test_with_the_redis_store_the_admin_api_and_cli_act_on_every_process(redis_server):
    admin = make_token(SECRET, "ops", ttl=600, admin=True)
    async with open_cluster(redis_server, secret=SECRET) as (one, two):
        port = one.port
        cli = ("--url", f"http://127.0.0.1:{port}", "--secret", SECRET)
        # ann is on the other process: the one asked serves no member.
        async with open_test_client(two, token=make_token(SECRET, "ann", ttl=600)) as ann:
            await ann.join("lobby")
            message_id = (await ann.chat("lobby", "to be removed"))["payload"]["id"]
            reply = await _post(port, "delete", {"room": "lobby", "id": message_id}, admin)
            assert (reply.status, reply.json()) == (
                200,
                {"room": "lobby", "id": message_id, "user_id": "ann"},
            )
            assert (await ann.expect("delete"))["payload"]["by"] == "ops"
            assert (await _system(ann, "delete"))["user_id"] == "ann"
            reply = await _post(port, "topic", {"room": "lobby", "topic": "News"}, admin)
            assert (reply.status, reply.json()) == (200, {"room": "lobby", "topic": "News"})
            assert (await _system(ann, "topic"))["text"] == "News"
            done = await _cli(*cli, "topic", "lobby", "From the shell")
            assert done.returncode == 0, done.stderr
            assert (await _system(ann, "topic"))["text"] == "From the shell"
            assert (await _post(port, "delete", {"room": "lobby", "id": 99}, admin)).status == 404
            done = await _cli(*cli, "close", "lobby", "--reason", "maintenance")
            assert (done.returncode, json.loads(done.stdout)) == (0, {"closed": 1})
            assert (await _system(ann, "close"))["text"] == "the room was closed: maintenance"
            assert (await ann.receive())["type"] == "left"
            done = await _cli(*cli, "close", "lobby")
            assert done.returncode == 1
            assert b"close refused (HTTP 404): room 'lobby' does not exist" in done.stderr
        metrics = (await http_request(port, "GET", "/metrics")).body.decode()
        for action, count in [("delete", 1), ("topic", 2), ("close", 1)]:
            assert f'trio_chat_moderation_actions_total{{action="{action}"}} {count}.0' in metrics
