"""Authentication: JWT tokens, anonymous names, embedders' authenticators.

Every refusal is checked over a real socket: the HTTP status the client sees
before any upgrade, and the reason the server logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jwt
import pytest
import trio
import trio_websocket
from http_support import LogCapture, http_request, rejected_status

from trio_chat import Config
from trio_chat._auth import (
    AnonymousAuthenticator,
    HandshakeRequest,
    Identity,
    Rejection,
    TokenAuthenticator,
    make_token,
    room_allowed,
)
from trio_chat._testing_server import open_test_client, open_test_server
from trio_chat.client import (
    Backoff,
    ChatClient,
    ConnectError,
    ConnectionState,
    StateChanged,
    open_chat_client,
)

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256"
#: Reconnect quickly in tests (the policy is the real one, only faster).
FAST = Backoff(base=0.02, cap=0.1)


def secret_config(**kw) -> Config:
    return Config(port=0, secret=SECRET, **kw)


# ---------------------------------------------------------------- accepted


async def test_token_in_query_string_is_accepted():
    token = make_token(SECRET, "alice")
    async with open_test_server(secret_config()) as server:
        async with open_test_client(server, token=token) as client:
            assert client.welcome["type"] == "welcome"
            assert client.user_id == "alice"
            joined = await client.join("lobby")
            assert joined["payload"]["members"] == ["alice"]


async def test_token_in_authorization_header_is_accepted():
    token = make_token(SECRET, "bob")
    async with open_test_server(secret_config()) as server:
        with trio.fail_after(10):
            async with trio_websocket.open_websocket_url(
                server.url, extra_headers=[(b"authorization", f"Bearer {token}".encode())]
            ) as ws:
                welcome = json.loads(await ws.get_message())
                assert welcome["type"] == "welcome"
                assert welcome["payload"]["user_id"] == "bob"


async def test_user_parameter_is_ignored_when_tokens_are_required():
    token = make_token(SECRET, "carol")
    async with open_test_server(secret_config()) as server:
        async with open_test_client(server, token=token, user="mallory") as client:
            assert client.user_id == "carol"


# ---------------------------------------------------------------- 401 x 4


def _forged(secret: str = SECRET, **claims) -> str:
    base = {"sub": "alice", "exp": int(time.time()) + 3600}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing token"),
        ("not-a-jwt", "malformed token"),
        ("a.b.c", "malformed token"),
        (_forged(OTHER_SECRET), "bad token signature"),
        (make_token(SECRET, "alice", ttl=-30), "token expired"),
        (_forged(exp=None), "token lacks claim 'exp'"),
        (_forged(sub=None), "token lacks claim 'sub'"),
        (_forged(sub="bad name!"), "token sub must match"),
        (_forged(rooms="lobby"), "token rooms must be a list"),
    ],
    ids=[
        "missing",
        "malformed",
        "malformed-3-parts",
        "bad-signature",
        "expired",
        "no-exp",
        "no-sub",
        "bad-sub",
        "bad-rooms",
    ],
)
async def test_bad_tokens_are_refused_with_401_and_the_reason_logged(token, reason):
    async with open_test_server(secret_config()) as server:
        url = server.url if token is None else f"{server.url}?token={token}"
        with LogCapture() as logs:
            assert await rejected_status(url) == 401
        refused = logs.find("handshake refused", "status=401")
        assert refused, logs.messages
        assert reason in refused[0]
        if token:
            assert not any(token in m for m in logs.messages)  # never logged
        assert server.stats().connections == 0
        # The refusal is counted by status.
        assert server.metrics.handshakes_refused == {401: 1}


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Bearer", "missing token"),
        ("Basic YWxpY2U6cHc=", "missing token"),
        ("Bearer garbage", "malformed token"),
        (f"Bearer {make_token(OTHER_SECRET, 'alice')}", "bad token signature"),
        (f"Bearer {make_token(SECRET, 'alice', ttl=-1)}", "token expired"),
    ],
)
async def test_bad_authorization_headers_are_refused_with_401(header, reason):
    async with open_test_server(secret_config()) as server:
        with LogCapture() as logs:
            status = await rejected_status(server.url, headers=[("authorization", header)])
        assert status == 401
        assert any(reason in m for m in logs.find("handshake refused", "status=401"))


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_tokens_signed_with_another_algorithm_are_refused():
    # "none" (unsigned) and HS512 with the right secret: only HS256 is accepted.
    claims = {"sub": "alice", "exp": int(time.time()) + 60}
    unsigned = jwt.encode(claims, None, algorithm="none")
    hs512 = jwt.encode(claims, SECRET, algorithm="HS512")
    async with open_test_server(secret_config()) as server:
        for token in (unsigned, hs512):
            assert await rejected_status(f"{server.url}?token={token}") == 401


def test_verify_checks_expiry_at_each_call():
    auth = TokenAuthenticator(SECRET)
    assert auth.verify(make_token(SECRET, "alice", ttl=5)).user_id == "alice"
    for token in (
        make_token(SECRET, "alice", ttl=-1),
        make_token(SECRET, "alice", ttl=60, now=time.time() - 3600),
    ):
        with pytest.raises(Rejection) as info:
            auth.verify(token)
        assert info.value.status == 401
        assert info.value.reason == "token expired"


# ---------------------------------------------------------------- rooms


def test_room_patterns():
    patterns = ("lobby", "team-*")
    assert room_allowed("lobby", patterns)
    assert room_allowed("team-a", patterns)
    assert room_allowed("team-", patterns)
    assert not room_allowed("lobby2", patterns)
    assert not room_allowed("team", patterns)
    assert not room_allowed("other", patterns)
    assert room_allowed("anything", None)
    assert not room_allowed("anything", ())
    assert room_allowed("anything", ("*",))


async def test_token_rooms_are_enforced_on_join():
    token = make_token(SECRET, "alice", rooms=["lobby", "team-*"])
    async with open_test_server(secret_config()) as server:
        async with open_test_client(server, token=token) as client:
            assert (await client.join("lobby"))["payload"]["room"] == "lobby"
            assert (await client.join("team-red"))["payload"]["room"] == "team-red"
            await client.send("join", {"room": "secret-room"}, ref="j1")
            error = await client.expect("error")
            assert error["payload"]["code"] == 403
            assert error["ref"] == "j1"
            # Not joined: chatting there is refused too, and the connection lives on.
            reply = await client.chat("secret-room", "hello?")
            assert reply["type"] == "error" and reply["payload"]["code"] == 403
            assert (await client.chat("team-red", "still here"))["type"] == "ack"
            assert server.hub.state.members("secret-room") == []
            assert server.hub.counters.errors.get(403) == 2


async def test_an_empty_rooms_list_allows_no_room():
    token = make_token(SECRET, "alice", rooms=[])
    async with open_test_server(secret_config()) as server:
        async with open_test_client(server, token=token) as client:
            await client.send("join", {"room": "lobby"})
            assert (await client.expect("error"))["payload"]["code"] == 403


# ---------------------------------------------------------------- anonymous


async def test_anonymous_mode_names():
    async with open_test_server() as server:
        async with open_test_client(server, user="dora") as client:
            assert client.user_id == "dora"
        async with open_test_client(server) as client:
            assert client.user_id.startswith("guest-")
            assert len(client.user_id) > len("guest-")
        with LogCapture() as logs:
            assert await rejected_status(server.url + "?user=not%20valid!") == 400
        assert logs.find("handshake refused", "status=400")


async def test_anonymous_mode_ignores_tokens():
    async with open_test_server() as server:
        async with open_test_client(server, user="eve", token="anything") as client:
            assert client.user_id == "eve"


async def test_an_anonymous_name_belongs_to_the_browser_that_used_it_first():
    """Over real sockets with the Python client: the same key is the same
    user (tabs, reconnects); another key, or none, is refused with 409 and
    the server's reason, never merged into the first user."""
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="alice", key="browser-one") as first:
            assert first.user_id == "alice"
            # A second tab of the same browser: the same user.
            async with open_chat_client(server.url, user="alice", key="browser-one") as tab:
                await first.join("lobby")
                joined = await tab.join("lobby")
                assert joined.members == ["alice"]
            for other in ({"key": "browser-two"}, {}):
                with pytest.raises(ConnectError) as refused:
                    async with open_chat_client(server.url, user="alice", **other):
                        pass
                assert refused.value.status == 409
                assert refused.value.reason == "the name 'alice' is taken: pick another one"
            # Another name is free for the other browser.
            async with open_chat_client(server.url, user="alicia", key="browser-two") as other:
                assert other.user_id == "alicia"
        # Still held after the first browser left: its name waits for it.
        with pytest.raises(ConnectError) as refused:
            async with open_chat_client(server.url, user="alice", key="browser-two"):
                pass
        assert refused.value.status == 409
        async with open_chat_client(server.url, user="alice", key="browser-one") as back:
            assert back.user_id == "alice"
        # A bad key is refused outright.
        assert await rejected_status(server.url + "?user=bob&key=short") == 400
        assert await rejected_status(server.url + "?user=bob&key=" + "k" * 65) == 400


async def test_a_name_is_never_shared_by_two_clients_without_a_key():
    """Over real sockets: a Python client without ``key=`` holds its name with
    a random key of its own, so a second one is refused (409, with the
    reason) while the first keeps its name across its own reconnects."""
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="dora", backoff=FAST) as dora:
            await dora.join("lobby")
            with pytest.raises(ConnectError) as refused:
                async with open_chat_client(server.url, user="dora"):
                    pass
            assert refused.value.status == 409
            assert refused.value.reason == "the name 'dora' is taken: pick another one"
            # The server drops dora; the same client instance comes back as dora.
            [conn] = server.connections("dora")
            server.close_connection(conn.session_id, 1013, "test drop")
            await until_state(dora, ConnectionState.RECONNECTING)
            await until_state(dora, ConnectionState.ONLINE)
            assert dora.user_id == "dora"
            assert [c.session_id for c in server.connections("dora")] != [conn.session_id]
            assert len(server.connections("dora")) == 1
            ack = await dora.send("lobby", "still me")
            assert ack.id == 1
        # Several connections of one user: the same key, given explicitly.
        async with (
            open_chat_client(server.url, user="gus", key="gus-own-key") as one,
            open_chat_client(server.url, user="gus", key="gus-own-key") as two,
        ):
            assert one.user_id == two.user_id == "gus"
            assert len(server.connections("gus")) == 2


async def test_a_handshake_without_a_key_holds_a_name_for_nobody():
    """A raw client that sends no key gets a free name, and then nobody gets
    it while it is held: not another keyless client, not a key, not the same
    client coming back.  A guest id is held the same way."""
    async with open_test_server() as server:
        async with open_test_client(server, user="zed") as zed:
            assert zed.welcome["payload"]["user_id"] == "zed"
            assert await rejected_status(server.url + "?user=zed") == 409
            assert await rejected_status(server.url + "?user=zed&key=zed-would-be") == 409
            assert len(server.connections("zed")) == 1
        assert await rejected_status(server.url + "?user=zed") == 409
        # A name held by a key is refused to a handshake without one.
        async with open_chat_client(server.url, user="kim", key="kim-own-key"):
            assert await rejected_status(server.url + "?user=kim") == 409
        async with open_test_client(server) as guest:
            name = guest.welcome["payload"]["user_id"]
            assert name.startswith("guest-")
            assert await rejected_status(server.url + "?user=" + name) == 409
        # A guest with a key keeps its id across the client's reconnects.
        async with open_chat_client(server.url, backoff=FAST) as anon:
            name = anon.user_id
            assert name.startswith("guest-")
            [conn] = server.connections(name)
            server.close_connection(conn.session_id, 1013, "test drop")
            await until_state(anon, ConnectionState.RECONNECTING)
            await until_state(anon, ConnectionState.ONLINE)
            assert anon.user_id == name
            assert await rejected_status(server.url + "?user=" + name) == 409


async def until_state(client: ChatClient, state: ConnectionState) -> None:
    with trio.fail_after(10):
        async for event in client:
            if isinstance(event, StateChanged) and event.state is state:
                return
    raise AssertionError("stream ended")


async def test_the_terminal_client_holds_a_name_with_its_key():
    async def connect(url: str, key: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
        command = [sys.executable, "-m", "trio_chat", "connect", url, "--user", "fred"]
        return await trio.run_process(
            [*command, "--key", key],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )

    async with open_test_server() as server:
        async with open_chat_client(server.url, user="fred", key="the-first-key"):
            refused = await connect(server.url, "a-terminal-key", b"")
        output = refused.stdout.decode() + refused.stderr.decode()
        assert refused.returncode != 0
        assert "HTTP 409: the name 'fred' is taken: pick another one" in output
        held = await connect(server.url, "the-first-key", b"/quit\n")
        assert held.returncode == 0, held.stdout.decode() + held.stderr.decode()
        assert "as fred" in held.stdout.decode()


async def test_a_plain_get_of_the_endpoint_answers_the_handshakes_refusal():
    """What a browser does to learn why its WebSocket was refused."""
    async with open_test_server() as server:
        async with open_chat_client(server.url, user="erin", key="browser-one"):
            pass
        port = server.port
        assert port is not None
        taken = await http_request(port, "GET", "/ws?user=erin&key=browser-two")
        assert (taken.status, taken.body) == (409, b"the name 'erin' is taken: pick another one\n")
        free = await http_request(port, "GET", "/ws?user=erin&key=browser-one")
        assert free.status == 426
        bad = await http_request(port, "GET", "/ws?user=not%20valid")
        assert bad.status == 400
    async with open_test_server(secret_config()) as server:
        port = server.port
        assert port is not None
        expired = make_token(SECRET, "alice", ttl=-10)
        answer = await http_request(port, "GET", f"/ws?token={expired}")
        assert (answer.status, answer.body) == (401, b"token expired\n")
        good = await http_request(port, "GET", f"/ws?token={make_token(SECRET, 'alice')}")
        assert good.status == 426


def test_anonymous_names_are_bounded_in_count_and_time():
    now = [0.0]
    auth = AnonymousAuthenticator(max_names=3, hold=100.0, clock=lambda: now[0])

    def connect(name: str, key: str | None) -> int:
        query = {"user": name} if key is None else {"user": name, "key": key}
        try:
            auth(HandshakeRequest("/ws", query, {}, "127.0.0.1"))
        except Rejection as rejection:
            return rejection.status
        return 200

    assert connect("a", "key-aaaa") == 200
    assert connect("a", "key-bbbb") == 409
    assert connect("a", None) == 409
    now[0] = 60.0
    assert connect("b", "key-bbbb") == 200
    assert connect("c", "key-cccc") == 200
    now[0] = 80.0
    assert connect("a", "key-aaaa") == 200  # seen again: held until 180
    assert len(auth) == 3
    now[0] = 149.0
    assert connect("a", "key-zzzz") == 409
    # Past the count bound the least recently used name is forgotten: b.
    assert connect("d", "key-dddd") == 200
    assert len(auth) == 3
    assert connect("a", "key-zzzz") == 409
    assert connect("b", "key-zzzz") == 200
    # Past the hold every name is free again, and forgotten.
    now[0] = 400.0
    assert connect("a", "key-zzzz") == 200
    assert len(auth) == 1
    with pytest.raises(ValueError):
        AnonymousAuthenticator(max_names=0)


def test_a_name_taken_without_a_key_is_held_for_the_hold_and_counted():
    now = [0.0]
    auth = AnonymousAuthenticator(max_names=2, hold=100.0, clock=lambda: now[0])

    def connect(name: str | None, key: str | None) -> str | int:
        query = {} if name is None else {"user": name}
        if key is not None:
            query["key"] = key
        try:
            return auth(HandshakeRequest("/ws", query, {}, "127.0.0.1")).user_id
        except Rejection as rejection:
            return rejection.status

    assert connect("n", None) == "n"
    now[0] = 99.0
    assert connect("n", None) == 409  # refused: not seen again, held until 100
    assert connect("n", "key-nnnn") == 409
    now[0] = 100.0
    assert connect("n", "key-nnnn") == "n"
    assert connect("n", None) == 409
    # Generated guest ids take a place in the table too, for their key or none.
    guest = connect(None, "key-gggg")
    assert isinstance(guest, str) and guest.startswith("guest-")
    assert connect(guest, "key-gggg") == guest
    assert connect(guest, "key-hhhh") == 409
    assert len(auth) == 2
    other = connect(None, None)
    assert isinstance(other, str) and other.startswith("guest-")
    assert connect(other, None) == 409
    assert len(auth) == 2  # n, the least recently used, was forgotten
    assert connect("n", None) == "n"


async def test_the_anonymous_name_settings_reach_the_authenticator():
    config = Config(port=0, anonymous_names=7, anonymous_name_hold=60.0)
    async with open_test_server(config) as server:
        auth = server.authenticator
        assert isinstance(auth, AnonymousAuthenticator)
        assert (auth.max_names, auth.hold) == (7, 60.0)


# ---------------------------------------------------------------- embedders


async def test_an_embedders_authenticator_decides():
    seen: list[HandshakeRequest] = []

    def authenticate(request: HandshakeRequest) -> Identity:
        seen.append(request)
        key = request.headers.get("x-api-key")
        if key is None:
            raise Rejection(401, "no api key")
        if key == "banned":
            raise Rejection(403, "banned key")
        return Identity("key-" + key, rooms=("support",))

    async with open_test_server(authenticator=authenticate) as server:
        with LogCapture() as logs:
            assert await rejected_status(server.url) == 401
            assert await rejected_status(server.url, headers=[("x-api-key", "banned")]) == 403
        assert any("no api key" in m for m in logs.find("status=401"))
        assert any("banned key" in m for m in logs.find("status=403"))
        with trio.fail_after(10):
            async with trio_websocket.open_websocket_url(
                server.url + "?x=1", extra_headers=[(b"x-api-key", b"k1")]
            ) as ws:
                welcome = json.loads(await ws.get_message())
                assert welcome["payload"]["user_id"] == "key-k1"
                await ws.send_message(json.dumps({"type": "join", "payload": {"room": "lobby"}}))
                error = json.loads(await ws.get_message())
                assert error["type"] == "error" and error["payload"]["code"] == 403
        last = seen[-1]
        assert last.path == "/ws"
        assert last.query == {"x": "1"}
        assert last.headers["x-api-key"] == "k1"
        assert last.peer == "127.0.0.1"


# ---------------------------------------------------------------- the CLI


async def _start_cli_server(*args: str, env: dict[str, str] | None = None):
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_chat", "serve", "--port", "0", "--data-dir", "none", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    buffer = b""
    with trio.fail_after(20):
        while b"\n" not in buffer:
            chunk = await proc.stdout.receive_some(4096)
            if not chunk:
                err = await proc.stderr.receive_some(65536)
                raise AssertionError(f"server exited: {err.decode(errors='replace')}")
            buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode()
    assert line.startswith("trio-chat listening on ws://"), line
    return proc, line.split()[3]


async def _stop(proc) -> None:
    proc.terminate()
    with trio.move_on_after(10):
        await proc.wait()
    if proc.returncode is None:  # pragma: no cover - stuck
        proc.kill()
        await proc.wait()


def _cli_token(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trio_chat", "token", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None},
    )


async def test_cli_token_is_accepted_by_a_cli_server():
    minted = await trio.to_thread.run_sync(
        lambda: _cli_token("alice", "--secret", SECRET, "--ttl", "10m", "--rooms", "lobby,team-*")
    )
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["rooms"] == ["lobby", "team-*"]
    assert 590 <= claims["exp"] - time.time() <= 601
    assert "admin" not in claims

    proc, url = await _start_cli_server("--secret", SECRET)
    try:
        async with open_test_client(url, token=token) as client:
            assert client.user_id == "alice"
            await client.join("team-blue")
            await client.send("join", {"room": "elsewhere"})
            assert (await client.expect("error"))["payload"]["code"] == 403
        # Without a token, or with one signed by another secret: 401.
        assert await rejected_status(url) == 401
        assert await rejected_status(url + "?token=" + make_token(OTHER_SECRET, "alice")) == 401
    finally:
        await _stop(proc)
    stderr = (await proc.stderr.receive_some(1 << 20)).decode(errors="replace")
    assert "status=401" in stderr and "missing token" in stderr


async def test_cli_token_reads_the_secret_from_the_environment():
    minted = await trio.to_thread.run_sync(
        lambda: _cli_token(
            "ops",
            "--admin",
            "--ttl",
            "90s",
            env={"TRIO_CHAT_SECRET": "an-environment-secret-long-enough-for-hs256"},
        )
    )
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(
        minted.stdout.strip(), "an-environment-secret-long-enough-for-hs256", algorithms=["HS256"]
    )
    assert claims["sub"] == "ops" and claims["admin"] is True
    assert 85 <= claims["exp"] - time.time() <= 91


def test_cli_token_errors():
    no_secret = _cli_token("alice", env={"TRIO_CHAT_SECRET": ""})
    assert no_secret.returncode == 2
    assert "secret" in no_secret.stderr
    bad_user = _cli_token("not valid!", "--secret", SECRET)
    assert bad_user.returncode == 2
    assert "user" in bad_user.stderr
    bad_ttl = _cli_token("alice", "--secret", SECRET, "--ttl", "soon")
    assert bad_ttl.returncode == 2
    assert "ttl" in bad_ttl.stderr
