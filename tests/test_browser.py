"""The chat page and trio-chat.js in a real headless Chromium.

The server runs as a subprocess (`python -m trio_chat serve --port 0`). To cut
a page's connection the test puts a TCP proxy between that page and the
server and resets or closes what it carries, so the page has to notice and
recover by itself. Screenshots land in tests/artifacts/ on every run.
"""

from __future__ import annotations

import functools
import time

import pytest
import trio
from browser_support import (
    CONTRAST_JS,
    FAKE_SOCKET_JS,
    LAPTOP,
    PHONE,
    ChatPage,
    ChatServer,
    TcpProxy,
    chromium,
    require_chromium,
)

BROWSER_TEST_TIMEOUT = 180  # seconds, for a whole scenario


@pytest.fixture
async def chat_server(nursery, tmp_path):
    server = ChatServer(tmp_path / "server.log", "--data-dir", str(tmp_path / "data"))
    await server.start(nursery)
    try:
        yield server
    finally:
        await server.stop()
        print(f"--- server log ---\n{server.log()}")


async def in_browser(scenario, *args):
    """Run a sync playwright scenario in a worker thread."""
    require_chromium()  # a missing browser fails the test: CI installs it
    with trio.fail_after(BROWSER_TEST_TIMEOUT):
        return await trio.to_thread.run_sync(
            functools.partial(scenario, *args), abandon_on_cancel=True
        )


def in_trio(fn, *args, **kwargs):
    """From the browser thread: call a sync function in the test's trio thread."""
    return trio.from_thread.run_sync(functools.partial(fn, *args, **kwargs))


def barrier(sender, pages, room: str, expected: list[str]) -> None:
    """*sender* posts a marker; wait until every page shows it.

    Delivery is in the room's order, so anything that could still show up
    (a duplicate, a replay) would come before the marker: once every page
    shows it, what they show is final.  The marker joins *expected*.
    """
    marker = f"barrier {len(expected)}"
    sender.send(marker)
    expected.append(marker)
    for page in pages:
        page.wait_message(room, marker)


def assert_exactly_once_in_order(messages: list[dict], expected_texts: list[str], who: str) -> None:
    ids = [message["id"] for message in messages]
    texts = [message["text"] for message in messages]
    assert texts == expected_texts, f"{who} shows {texts}"
    assert ids == list(range(ids[0], ids[0] + len(ids))), (
        f"{who}: ids not contiguous and increasing: {ids}"
    )


def run_scenario(page, script: str, timeout_s: float = 30):
    """Evaluate an async JS function in the page, failing it if it hangs."""
    return page.evaluate(
        f"""() => Promise.race([
            ({script})(),
            new Promise((_, reject) => setTimeout(
                () => reject(new Error("in-page scenario timed out after {timeout_s} s")), {timeout_s * 1000})),
        ])"""
    )


def no_page_errors(*pages: ChatPage) -> None:
    problems = [
        problem
        for page in pages
        for problem in page.problems
        # Chromium reports each refused WebSocket handshake on the console
        # (expected while the proxy is down), and the page's question of why
        # it was refused (which fails too while the proxy is down: refused,
        # reset, or cut before it was sent).
        if "WebSocket connection to" not in problem
        and "the server responded with a status of" not in problem
        and "Failed to load resource: net::ERR_CONNECTION" not in problem
        and "Failed to load resource: net::ERR_SOCKET_NOT_CONNECTED" not in problem
    ]
    assert not problems, problems


# --------------------------------------------------------------- end to end


async def test_two_pages_chat_and_recover_from_dropped_connections(chat_server, nursery):
    proxy = TcpProxy(chat_server.port)
    await nursery.start(proxy.serve)
    await in_browser(chat_survives_drops, chat_server.base_url, proxy)


def chat_survives_drops(server_url: str, proxy: TcpProxy) -> None:
    room = "lobby"
    expected: list[str] = []

    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice")
        bob = ChatPage(
            browser, proxy.base_url, viewport=PHONE, name="bob"
        )  # bob's traffic can be cut
        try:
            # Two people meet in a room.
            alice.sign_in("alice", room)
            alice.wait_state("online")
            bob.sign_in("bob", room)
            bob.wait_state("online")
            alice.wait_member("bob", "online")
            alice.wait_notice(room, "bob joined #lobby")
            assert set(alice.members()) == {"alice", "bob"}

            # They chat both ways.
            for sender, receiver, text in [
                (alice, bob, "hi bob"),
                (bob, alice, "hey alice, how are you?"),
                (alice, bob, "fine, thanks"),
            ]:
                sender.send(text)
                expected.append(text)
                receiver.wait_message(room, text)
                sender.wait_message(room, text)  # the sender sees its own message, acknowledged

            # Presence travels.
            bob.set_status("away")
            alice.wait_member("bob", "away")

            # 1. The connection is reset while alice keeps talking.
            assert in_trio(proxy.drop, reset=True) >= 1
            for n in range(1, 11):
                text = f"while bob reconnects {n}"
                alice.send(text)
                expected.append(text)
                time.sleep(0.05)  # pacing: spread the sends over the reconnect
            bob.wait_state("online", timeout_ms=40_000)
            bob.wait_message(room, expected[-1], timeout_ms=30_000)
            alice.wait_message(room, expected[-1])
            barrier(alice, [alice, bob], room, expected)
            assert_exactly_once_in_order(bob.messages(room), expected, "bob")
            assert_exactly_once_in_order(alice.messages(room), expected, "alice")
            alice.wait_member("bob", "away")  # bob's status survives his reconnect

            # 2. A longer outage: bob's side stays down while alice talks and bob types.
            in_trio(proxy.block)
            in_trio(proxy.drop, reset=False)
            bob.wait_state("reconnecting")
            alice.wait_notice(room, "bob left #lobby")
            alice.wait_member("bob", present=False)
            for n in range(1, 6):
                text = f"while bob is away {n}"
                alice.send(text)
                expected.append(text)
            alice.wait_message(room, expected[-1])
            bob.send("typed while offline")
            assert bob.pending(room) == ["typed while offline"]
            bob.screenshot("browser-phone-offline.png")
            refused = in_trio(lambda: proxy.refused)
            trio.from_thread.run(proxy.wait_refused, refused + 2)  # two more failed attempts
            assert not any("while bob is away" in m["text"] for m in bob.messages(room))

            in_trio(proxy.unblock)
            expected.append("typed while offline")
            bob.wait_state("online", timeout_ms=40_000)
            alice.wait_message(room, "typed while offline", timeout_ms=20_000)
            bob.wait_message(room, "typed while offline")
            alice.wait_member("bob", "away")
            barrier(alice, [alice, bob], room, expected)
            assert bob.pending(room) == []
            assert_exactly_once_in_order(bob.messages(room), expected, "bob")
            assert_exactly_once_in_order(alice.messages(room), expected, "alice")
            assert alice.messages(room) == bob.messages(room)
            no_page_errors(alice, bob)
        finally:
            alice.screenshot("browser-laptop.png")
            bob.screenshot("browser-phone.png")
            alice.close()
            bob.close()


@pytest.mark.parametrize("store", ["sqlite", "memory"])
async def test_pages_reconnect_after_a_server_restart(store, nursery, tmp_path):
    """With the SQLite store (serve's default) ids continue after the restart
    and the page says nothing about it; in memory they start over, and the
    page says so."""
    durable = store == "sqlite"
    args = ["--data-dir", str(tmp_path / "data")] if durable else ["--store", "memory"]
    server = ChatServer(tmp_path / "server.log", *args)
    await server.start(nursery)
    try:
        await in_browser(server_restart, server, nursery, durable)
    finally:
        await server.stop()
        print(f"--- server log ---\n{server.log()}")


def server_restart(server: ChatServer, nursery: trio.Nursery, durable: bool) -> None:
    room = "lobby"
    with chromium() as browser:
        alice = ChatPage(browser, server.base_url, viewport=LAPTOP, name="alice")
        bob = ChatPage(browser, server.base_url, viewport=LAPTOP, name="bob")
        try:
            for page, name in [(alice, "alice"), (bob, "bob")]:
                page.sign_in(name, room)
                page.wait_state("online")
            alice.wait_member("bob")
            for text in ["before 1", "before 2"]:
                alice.send(text)
                bob.wait_message(room, text)

            # A graceful restart: both pages get close 1001, then find the new server by themselves.
            trio.from_thread.run(server.restart, nursery)
            for page in (alice, bob):
                page.wait_state("online", timeout_ms=40_000)
            alice.wait_member("bob")
            alice.send("after restart")
            bob.wait_message(room, "after restart")
            bob.send("welcome back")
            alice.wait_message(room, "welcome back")
            bob.send("barrier")  # both pages show it: nothing sent before it can still arrive
            for page in (alice, bob):
                page.wait_message(room, "barrier")
            after = [3, 4, 5] if durable else [1, 2, 3]
            expected = [(1, "before 1"), (2, "before 2")]
            expected += list(zip(after, ["after restart", "welcome back", "barrier"], strict=True))
            notice = (
                "The server restarted without keeping this room's history:"
                " the messages above are from before the restart."
            )
            for page in (alice, bob):
                assert [(m["id"], m["text"]) for m in page.messages(room)] == expected, page.name
                assert (notice in page.notices(room)) is not durable, page.notices(room)
            no_page_errors(alice, bob)
        finally:
            alice.screenshot("browser-after-restart.png")
            alice.close()
            bob.close()


async def test_page_escapes_text_and_shows_errors_in_place(chat_server):
    await in_browser(escapes_and_errors, chat_server.base_url)


def escapes_and_errors(server_url: str) -> None:
    hostile = '<img src=x onerror="window.__owned = 1"> <script>window.__owned = 2</script> & &amp;'
    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice")
        carol = ChatPage(browser, server_url, viewport=LAPTOP, name="carol")
        try:
            alice.sign_in("alice", "general")
            alice.wait_state("online")
            carol.sign_in("carol", "general")
            carol.wait_state("online")

            # Typing shows up on the other side.
            carol.page.fill("#composer-input", "hmm")
            alice.page.wait_for_function(
                "() => document.querySelector('#typing').textContent === 'carol is typing…'"
            )

            # User text is shown as text, never parsed as HTML.
            carol.send(hostile)
            alice.wait_message("general", hostile)
            assert alice.page.locator(".log img, .log script").count() == 0
            assert alice.page.evaluate("window.__owned") is None

            # A direct message to someone who is not connected is kept for
            # them: it is acknowledged with the conversation's first id.
            alice.send("/dm nobody-here are you there?")
            alice.page.locator(".log[data-conv='dm:nobody-here'] .msg--own[data-id='1']").wait_for()
            assert alice.page.locator(".log[data-conv='dm:nobody-here'] .msg--failed").count() == 0

            # A direct message between the two arrives in its own conversation.
            carol.send("/dm alice psst, a secret")
            alice.page.locator("#dm-list li[data-conv='dm:carol'] .badge").wait_for()
            alice.page.click("#dm-list li[data-conv='dm:carol'] button")
            alice.page.locator(
                ".log[data-conv='dm:carol'] .msg .text", has_text="psst, a secret"
            ).wait_for()
            carol.page.locator(
                ".log[data-conv='dm:alice'] .msg--own .text", has_text="psst, a secret"
            ).wait_for()
            alice.screenshot("browser-direct-message.png")

            # Rooms come and go from the sidebar.
            alice.join_room("random")
            alice.wait_notice("random", "You joined #random")
            assert alice.rooms() == ["general", "random"]
            assert alice.page.inner_text("#conv-title") == "#random"
            alice.send("anyone here?")
            alice.wait_message("random", "anyone here?")
            alice.page.click("#leave-room")
            alice.page.wait_for_selector(".log[data-conv='room:random']", state="detached")
            assert alice.rooms() == ["general"]
            assert alice.page.inner_text("#conv-title") == "#general"
            no_page_errors(alice, carol)
        finally:
            alice.close()
            carol.close()


async def test_page_works_without_storage_and_shows_bidi_controls_in_links(chat_server):
    await in_browser(no_storage_and_bidi, chat_server.base_url)


#: Storage blocked, as with cookies disabled: every access throws.
BLOCK_STORAGE = """
Object.defineProperty(window, "localStorage", {
  get() { throw new DOMException("The operation is insecure.", "SecurityError"); },
});
"""


def no_storage_and_bidi(server_url: str) -> None:
    with chromium() as browser:
        alice = ChatPage(
            browser, server_url, viewport=LAPTOP, name="alice", init_script=BLOCK_STORAGE
        )
        bob = ChatPage(browser, server_url, viewport=LAPTOP, name="bob")
        try:
            # The page says it will not remember anything, and works.
            assert alice.page.is_visible("#storage-notice")
            assert not bob.page.is_visible("#storage-notice")
            alice.sign_in("alice", "lobby")
            alice.wait_state("online")
            bob.sign_in("bob", "lobby")
            bob.wait_state("online")
            # A right-to-left override in a link is shown, not obeyed.
            bob.send("see https://example.com/\u202egnp.exe now")
            link = alice.page.locator(".log[data-conv='room:lobby'] .msg .text a").last
            link.wait_for()
            assert link.inner_text() == "https://example.com/[U+202E]gnp.exe"
            alice.send("fine without storage")
            bob.wait_message("lobby", "fine without storage")
            no_page_errors(alice, bob)
        finally:
            alice.close()
            bob.close()


async def test_page_stays_signed_in_and_a_name_belongs_to_one_browser(chat_server):
    await in_browser(sessions, chat_server.base_url)


def sessions(server_url: str) -> None:
    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice")
        other = ChatPage(browser, server_url, viewport=PHONE, name="other-alice")
        try:
            alice.sign_in("alice", "lobby")
            alice.wait_state("online")
            alice.join_room("design")
            alice.wait_notice("design", "You joined #design")

            # /status with a status of one's own: the selector follows.
            alice.send("/status sleeping")
            alice.wait_member("alice", "sleeping")
            assert alice.page.eval_on_selector("#me-status", "el => el.value") == "sleeping"
            assert (
                alice.page.eval_on_selector("#me-status", "el => el.selectedOptions[0].textContent")
                == "Sleeping"
            )
            alice.set_status("away")
            alice.wait_member("alice", "away")
            assert alice.page.locator("#me-status option[value='sleeping']").count() == 0

            # A reload keeps alice signed in, in her rooms.
            alice.page.reload()
            alice.wait_state("online")
            assert alice.page.is_hidden("#login")
            assert alice.page.inner_text("#me-name") == "alice"
            assert alice.rooms() == ["design", "lobby"]

            # Another tab of the same browser is alice too.
            tab = alice.context.new_page()
            tab.goto(server_url + "/")
            tab.wait_for_selector("body[data-connection='online']", state="attached")
            assert tab.inner_text("#me-name") == "alice"
            tab.close()

            # Another browser cannot be alice: refused with the server's reason.
            other.sign_in("alice", "lobby")
            other.page.wait_for_function(
                "() => document.querySelector('#login-error').textContent.includes('taken')"
            )
            assert other.page.inner_text("#login-error") == (
                "The server refused to sign you in: the name 'alice' is taken: pick another one"
            )
            assert other.page.is_hidden("#app")
            other.sign_in("alice2", "lobby")
            other.wait_state("online")
            alice.wait_member("alice2")
            assert set(alice.members()) == {"alice", "alice2"}

            # Signing out forgets the session: a reload shows the sign-in card.
            alice.page.click("#sign-out")
            alice.page.locator("#login").wait_for()
            alice.page.reload()
            alice.page.locator("#login-name").wait_for()
            assert alice.page.is_hidden("#app")
            assert alice.state() == "idle"
            # The name stays hers: the same browser signs in again.
            alice.sign_in("alice", "lobby")
            alice.wait_state("online")
            no_page_errors(alice, other)
        finally:
            alice.close()
            other.close()


async def test_the_rough_edges_of_the_page_are_gone(chat_server, nursery):
    proxy = TcpProxy(chat_server.port)
    await nursery.start(proxy.serve)
    await in_browser(rough_edges, chat_server.base_url, proxy)


def rough_edges(server_url: str, proxy: TcpProxy) -> None:
    room = "lobby"
    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice")
        bob = ChatPage(browser, proxy.base_url, viewport=PHONE, name="bob")  # can be cut off
        try:
            alice.sign_in("alice", room)
            alice.wait_state("online")
            # An empty room says so.
            empty = alice.page.locator(f".log[data-conv='room:{room}'] .empty")
            empty.wait_for()
            assert empty.inner_text() == "No messages in #lobby yet. Say hello!"
            bob.sign_in("bob", room)
            bob.wait_state("online")
            alice.wait_notice(room, "bob joined #lobby")

            # /me is an action.
            alice.send("/me waves")
            bob.page.locator(".msg--action .text", has_text="waves").wait_for()
            assert bob.page.inner_text(".msg--action .text") == "* alice waves"
            assert empty.is_hidden()
            alice.send("hello bob, see https://trio.readthedocs.io")
            bob.wait_message(room, "hello bob, see https://trio.readthedocs.io")
            bob.send("hi alice! reading it now")
            alice.wait_message(room, "hi alice! reading it now")
            bob.send("/me likes structured concurrency")
            alice.page.locator(".msg--action .text", has_text="structured").wait_for()
            alice.page.mouse.move(1, 1)
            alice.screenshot("browser-actions.png")

            # /help lists the commands.
            alice.send("/help")
            help_list = alice.page.locator(".notice--help dl")
            help_list.wait_for()
            for usage in ("/join ROOM", "/leave [ROOM]", "/dm USER TEXT", "/me ACTION", "/status"):
                assert usage in help_list.inner_text()

            # Too long: said so, nothing cut, nothing sent.
            too_long = "x" * 4001
            bob.page.fill("#composer-input", too_long)
            limit = bob.page.locator("#composer-limit")
            limit.wait_for()
            assert limit.inner_text() == (
                "Too long to send: 4,001 characters, the limit is 4,000."
                " Shorten it or send it in parts."
            )
            bob.page.press("#composer-input", "Enter")
            assert bob.page.input_value("#composer-input") == too_long
            assert bob.pending(room) == []
            bob.page.fill("#composer-input", "")
            bob.page.locator("#composer-limit").wait_for(state="hidden")

            # An empty direct conversation says so; a DM shows on the phone's menu button.
            alice.page.click("#member-list li[data-user='bob'] button")
            dm_empty = alice.page.locator(".log[data-conv='dm:bob'] .empty")
            dm_empty.wait_for()
            assert dm_empty.inner_text() == "This is the start of your conversation with bob."
            alice.send("psst")
            badge = bob.page.locator("#menu-badge")
            badge.wait_for()
            assert badge.inner_text() == "1"
            bob.page.click("#open-sidebar")
            bob.page.click("#dm-list li[data-conv='dm:alice'] button")
            badge.wait_for(state="hidden")
            # ... and can be closed.
            assert bob.page.inner_text("#leave-room") == "Close"
            bob.page.click("#leave-room")
            bob.page.wait_for_selector("#dm-list li[data-conv='dm:alice']", state="detached")
            assert bob.page.inner_text("#conv-title") == "#lobby"
            alice.page.click("#room-list li[data-conv='room:lobby'] button")

            # Offline: bob's member list does not pretend to know who is online.
            in_trio(proxy.block)
            in_trio(proxy.drop, reset=True)
            bob.wait_state("reconnecting")
            bob.page.locator("#members-stale").wait_for(state="attached")
            statuses = set(bob.members().values())
            assert statuses == {"unknown"}, statuses
            # Back within a minute: alice hears neither a leave nor a second join.
            in_trio(proxy.unblock)
            bob.wait_state("online", timeout_ms=40_000)
            bob.wait_member("alice", "online")
            expected: list[str] = []
            barrier(bob, [alice, bob], room, expected)
            notices = alice.notices(room)
            assert notices.count("bob joined #lobby") == 1, notices
            assert "bob left #lobby" not in notices, notices
            assert bob.page.is_hidden("#members-stale")

            # Messages that came while alice was elsewhere: a divider above them.
            alice.join_room("design")
            alice.wait_notice("design", "You joined #design")
            bob.send("unseen 1")
            bob.send("unseen 2")
            alice.page.wait_for_function(
                """() => document.querySelector("#room-list li[data-conv='room:lobby'] .badge")
                       .textContent === '2'"""
            )
            alice.page.click("#room-list li[data-conv='room:lobby'] button")
            after = alice.page.evaluate(
                """() => document.querySelector(".log[data-conv='room:lobby'] .new-divider")
                       .nextElementSibling.querySelector('.text').textContent"""
            )
            assert after == "unseen 1"
            # Scrolled up: a new message gets the jump-to-latest button.
            tall = "\n".join(f"line {n}" for n in range(40))
            bob.send(tall)
            alice.page.locator(
                ".log[data-conv='room:lobby'] .msg .text", has_text="line 39"
            ).wait_for()
            alice.page.click("#room-list li[data-conv='room:design'] button")
            alice.page.click("#room-list li[data-conv='room:lobby'] button")  # the old divider goes
            assert alice.page.locator(".new-divider").count() == 0
            alice.page.eval_on_selector("#messages", "el => { el.scrollTop = 0; }")
            alice.page.locator("#jump-latest").wait_for()
            bob.send("latest")
            alice.wait_message(room, "latest")
            assert (
                alice.page.evaluate(
                    """() => document.querySelector(".log[data-conv='room:lobby'] .new-divider")
                       .nextElementSibling.querySelector('.text').textContent"""
                )
                == "latest"
            )
            alice.page.click("#jump-latest")
            alice.page.locator("#jump-latest").wait_for(state="hidden")
            assert (
                alice.page.eval_on_selector(
                    "#messages", "el => el.scrollHeight - el.scrollTop - el.clientHeight"
                )
                < 5
            )

            # A reload: the history, and no "You joined #lobby" under it.
            alice.page.reload()
            alice.wait_state("online")
            alice.wait_message(room, "latest")
            assert "You joined #lobby" not in alice.notices(room)

            # No room at all: the pane says what to do.
            # Two rooms, and the conversation with bob (the server keeps it).
            for _ in range(3):
                alice.page.click("#leave-room")
            alice.page.locator("#no-conv").wait_for()
            assert alice.rooms() == []
            no_page_errors(alice, bob)
        finally:
            alice.close()
            bob.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_text_contrast_is_at_least_4_5_to_1(chat_server, scheme):
    await in_browser(contrast, chat_server.base_url, scheme)


def contrast(server_url: str, scheme: str) -> None:
    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice", color_scheme=scheme)
        bob = ChatPage(browser, server_url, viewport=LAPTOP, name="bob")
        try:
            low = alice.page.evaluate(CONTRAST_JS)
            assert low == [], low  # the sign-in card
            alice.sign_in("alice", "lobby")
            alice.wait_state("online")
            bob.sign_in("bob", "lobby")
            bob.wait_state("online")
            for text in ("mine", "mine again", "/me checks the colours"):
                alice.send(text)
            bob.send("theirs")
            bob.send("theirs again")
            alice.wait_message("lobby", "theirs again")
            bob.send("/dm alice a secret")
            alice.page.locator("#dm-list li[data-conv='dm:bob'] .badge").wait_for()
            alice.page.fill("#join-room", "")
            checks = {}
            # Own and others' messages, grouped ones hovered (their time shows).
            for selector in (".msg--own.msg--cont", ".msg--cont:not(.msg--own)"):
                alice.page.hover(f".log[data-conv='room:lobby'] {selector}")
                checks[selector] = alice.page.evaluate(CONTRAST_JS)
            alice.page.mouse.move(1, 1)
            checks["page"] = alice.page.evaluate(CONTRAST_JS)
            # Placeholders.
            checks["placeholders"] = alice.page.evaluate(
                CONTRAST_JS.replace("const PLACEHOLDERS = false", "const PLACEHOLDERS = true")
            )
            assert all(low == [] for low in checks.values()), checks
            no_page_errors(alice, bob)
        finally:
            alice.close()
            bob.close()


# ----------------------------------------------------------------- tokens

SECRET = "a-secret-for-the-browser-tests-only"


@pytest.fixture
async def secured_server(nursery, tmp_path):
    server = ChatServer(
        tmp_path / "server.log", "--secret", SECRET, "--data-dir", str(tmp_path / "data")
    )
    await server.start(nursery)
    try:
        yield server
    finally:
        await server.stop()
        print(f"--- server log ---\n{server.log()}")


def make_token(user: str, rooms: list[str] | None = None, ttl: float = 600) -> str:
    import jwt

    claims = {"sub": user, "exp": int(time.time() + ttl)}
    if rooms is not None:
        claims["rooms"] = rooms
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def test_sign_in_with_a_token(secured_server):
    await in_browser(token_sign_in, secured_server.base_url)


def token_sign_in(server_url: str) -> None:
    with chromium() as browser:
        erin = ChatPage(browser, server_url, viewport=LAPTOP, name="erin")
        mallory = ChatPage(browser, server_url, viewport=PHONE, name="mallory")
        try:
            erin.sign_in(room="team-chat", token=make_token("erin", rooms=["team-*"]))
            erin.wait_state("online")
            assert erin.page.inner_text("#me-name") == "erin"
            # The connection pill speaks of the connection, not of erin's presence.
            assert erin.page.inner_text("#conn-state") == "connected"
            assert erin.page.get_attribute("#me-dot", "data-status") == "online"
            # A reload keeps erin signed in (the token is kept for the tab).
            erin.page.reload()
            erin.wait_state("online")
            assert erin.page.inner_text("#me-name") == "erin"
            assert erin.page.is_hidden("#login")

            # A room the token does not allow: out of the sidebar, said so in
            # place, and the composer cannot post there.
            erin.join_room("secret")
            erin.page.locator(".log[data-conv='room:secret'] .notice--error").wait_for()
            assert erin.notices("secret")[0].startswith("Cannot join #secret")
            erin.page.wait_for_selector("#room-list li[data-conv='room:secret']", state="detached")
            assert erin.rooms() == ["team-chat"]
            assert erin.page.inner_text("#conv-subtitle").startswith("Cannot join: ")
            assert "joining" not in erin.page.inner_text("#conv-subtitle")
            assert erin.page.is_disabled("#composer-input")
            assert erin.page.is_disabled("#composer-send")
            # Going elsewhere forgets it.
            erin.page.click("#room-list li[data-conv='room:team-chat'] button")
            erin.page.wait_for_selector(".log[data-conv='room:secret']", state="detached")
            assert not erin.page.is_disabled("#composer-input")

            # A bad token never gets a session: back on the sign-in card with
            # the server's reason, no retrying, no green dot.
            mallory.sign_in(room="team-chat", token="not-a-token")
            error = mallory.page.locator("#login-error")
            error.wait_for()
            mallory.page.wait_for_function(
                "() => document.querySelector('#login-error').textContent.includes('malformed token')"
            )
            assert error.inner_text().startswith(
                "The server refused to sign you in: malformed token"
            )
            assert mallory.page.is_hidden("#app")
            assert mallory.state() == "idle"
            mallory.screenshot("browser-bad-token.png")
            no_page_errors(erin, mallory)
        finally:
            erin.close()
            mallory.close()


async def test_a_token_that_expires_during_a_session(nursery, tmp_path):
    server = ChatServer(
        tmp_path / "server.log", "--secret", SECRET, "--data-dir", str(tmp_path / "data")
    )
    await server.start(nursery)
    try:
        await in_browser(token_expires, server, nursery)
    finally:
        await server.stop()
        print(f"--- server log ---\n{server.log()}")


def token_expires(server: ChatServer, nursery: trio.Nursery) -> None:
    ttl = 8
    token = make_token("erin", ttl=ttl)
    expires = time.time() + ttl
    with chromium() as browser:
        erin = ChatPage(browser, server.base_url, viewport=LAPTOP, name="erin")
        try:
            erin.sign_in(room="lobby", token=token)
            erin.wait_state("online")
            erin.send("while the token is good")
            erin.wait_message("lobby", "while the token is good")

            # The server goes away; while the page waits to reconnect, the
            # token runs out and erin types something.
            trio.from_thread.run(server.stop)
            erin.wait_state("reconnecting")
            # The desktop sidebar header stays on one line, whatever the pill says.
            head = erin.page.evaluate(
                """() => ({
                  name: document.querySelector('.brand-name').getBoundingClientRect().height,
                  line: parseFloat(getComputedStyle(document.querySelector('.brand-name')).lineHeight),
                  logo: document.querySelector('.brand-logo').getBoundingClientRect().width,
                })"""
            )
            assert head["name"] < 1.5 * head["line"], head
            assert head["logo"] == 26, head
            while time.time() < expires + 1:  # the token's expiry, not a timing assertion
                time.sleep(0.2)
            erin.send("typed after the token expired")
            assert erin.pending("lobby") == ["typed after the token expired"]
            trio.from_thread.run(server.start_again, nursery)

            # The next attempt is refused: the page says why, stops, offers
            # to sign in again, and does not promise the queued message.
            erin.page.locator("#banner-signin").wait_for(timeout=40_000)
            assert erin.page.inner_text("#banner-text") == "Signed out: token expired."
            assert erin.state() == "offline"
            assert erin.page.inner_text("#conn-state") == "signed out"
            failed = erin.page.locator(".log[data-conv='room:lobby'] .msg--failed .msg-status")
            failed.wait_for()
            assert failed.inner_text() == "not sent: token expired"
            assert erin.page.is_disabled("#composer-input")
            assert erin.page.get_attribute("#me-dot", "data-status") == "offline"
            assert erin.page.is_disabled("#me-status")
            erin.screenshot("browser-token-expired.png")
            erin.page.click("#banner-signin")
            erin.page.locator("#login").wait_for()
            assert erin.page.inner_text("#login-error") == "Signed out: token expired"
            # A fresh token carries on.
            erin.sign_in(room="lobby", token=make_token("erin"))
            erin.wait_state("online")
            assert not erin.page.is_disabled("#me-status")
            erin.wait_message("lobby", "while the token is good")
            no_page_errors(erin)
        finally:
            erin.close()


# ------------------------------------------------- page against a scripted server


# A WebSocket replacement that plays a tiny server: it refuses the first try
# of every chat with 429, to show how the page reports it.
RATE_LIMITING_SERVER_JS = """
window.WebSocket = class {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.seenRefs = new Set();
    this.nextId = 1;
    setTimeout(() => {
      this.readyState = 1;
      this.reply("welcome", { session_id: "s1", user_id: new URL(url).searchParams.get("user"),
        limits: { max_message_bytes: 65536, max_content_chars: 4000,
                  rate: { messages: 100, per_seconds: 1 }, ping_interval_seconds: 54 } });
    }, 10);
  }
  reply(type, payload, ref) { this.onmessage?.({ data: JSON.stringify({ type, payload, ref }) }); }
  send(data) {
    const { type, payload, ref } = JSON.parse(data);
    if (type === "join") this.reply("joined", { room: payload.room, members: ["dora"], history: [], truncated: false }, ref);
    if (type === "chat" && !this.seenRefs.has(ref)) {
      this.seenRefs.add(ref);
      this.reply("error", { code: 429, message: "rate limit exceeded", retry_after_ms: 2500 }, ref);
    } else if (type === "chat") {
      this.reply("ack", { id: this.nextId++, room: payload.room, time: new Date().toISOString() }, ref);
    }
  }
  close() {}
};
"""


async def test_page_shows_rate_limit_and_resends(chat_server):
    await in_browser(rate_limited_page, chat_server.base_url)


def rate_limited_page(server_url: str) -> None:
    with chromium() as browser:
        dora = ChatPage(browser, server_url, viewport=PHONE, name="dora")
        try:
            dora.page.add_init_script(RATE_LIMITING_SERVER_JS)
            dora.page.reload()
            dora.sign_in("dora", "lobby")
            dora.wait_state("online")
            dora.send("too fast?")
            status = dora.page.locator(".outbox .msg--held .msg-status")
            status.wait_for()
            assert status.inner_text() == "slow down: retry in 3 s"
            dora.screenshot("browser-rate-limited.png")
            # The client waits as told and re-sends: the message goes through.
            dora.wait_message("lobby", "too fast?", timeout_ms=8000)
            assert dora.pending("lobby") == []
            assert [m["id"] for m in dora.messages("lobby")] == [1]
        finally:
            dora.close()


# ------------------------------------------------------ trio-chat.js on its own


async def test_client_backoff_policies(chat_server):
    await in_browser(client_backoff, chat_server.base_url)


def client_backoff(server_url: str) -> None:
    with chromium() as browser:
        page = ChatPage(browser, server_url, name="backoff").page
        page.evaluate(FAKE_SOCKET_JS)
        result = run_scenario(
            page,
            """async () => {
            const { TrioChatClient, backoffDelay } = await import("/trio-chat.js");
            const run = async (options, until_) => {
              FakeSocket.sockets = [];
              const states = [];
              const client = new TrioChatClient("ws://chat.invalid/ws", { WebSocket: FakeSocket, watchNetwork: false, ...options });
              client.addEventListener("state", (e) => states.push(e.detail));
              FakeSocket.onCreate = (socket) => socket.fail();
              client.connect();
              await until(() => until_(states), "states");
              client.close();
              FakeSocket.onCreate = null;
              return states;
            };

            // Fixed interval, at most 3 attempts, then offline.
            const fixed = await run({ backoff: "fixed", reconnectInterval: 20, maxReconnectAttempts: 3 },
                                    (s) => s.some((d) => d.state === "offline"));

            // Exponential with full jitter: the ceiling doubles up to the cap.
            const high = await run({ baseDelayMs: 10, maxDelayMs: 100, random: () => 0.999999 },
                                   (s) => s.filter((d) => d.state === "reconnecting").length >= 7);
            const low = await run({ baseDelayMs: 10, maxDelayMs: 100, random: () => 0 },
                                  (s) => s.filter((d) => d.state === "reconnecting").length >= 3);
            const jitter = Array.from({ length: 2000 }, (_, i) => backoffDelay(i % 8, { baseDelayMs: 500, maxDelayMs: 30000 }));

            // A connection that stays up resets the backoff; a short one does not.
            FakeSocket.sockets = [];
            const delays = [];
            const client = new TrioChatClient("ws://chat.invalid/ws", {
              WebSocket: FakeSocket, watchNetwork: false, baseDelayMs: 40, maxDelayMs: 10000,
              resetAfterMs: 150, random: () => 0.999999 });
            client.addEventListener("state", (e) => e.detail.state === "reconnecting" && delays.push(e.detail.delayMs));
            client.connect();
            for (let i = 0; i < 3; i++) {            // three failed attempts: 39, 79, 159 ms
              await until(() => FakeSocket.sockets.length === i + 1, "socket");
              FakeSocket.latest().fail();
            }
            await until(() => FakeSocket.sockets.length === 4, "socket 4");
            FakeSocket.latest().welcome();
            await sleep(20);
            FakeSocket.latest().fail();                // up 20 ms: no reset -> 319 ms
            await until(() => FakeSocket.sockets.length === 5, "socket 5", 2000);
            FakeSocket.latest().welcome();
            await sleep(300);
            FakeSocket.latest().fail();                // up 300 ms: reset -> 39 ms
            await until(() => delays.length === 5, "fifth delay");
            client.close();
            const urls = FakeSocket.sockets.map((s) => s.url);
            return { fixed, high, low, jitter, delays, urls, protocols: FakeSocket.sockets[0].protocols };
        }""",
        )

    fixed = result["fixed"]
    assert [d["state"] for d in fixed] == ["connecting", "reconnecting"] * 3 + [
        "connecting",
        "offline",
    ]
    assert {d["delayMs"] for d in fixed if d["state"] == "reconnecting"} == {20}
    assert fixed[-1]["gaveUp"] is True

    high = [d["delayMs"] for d in result["high"] if d["state"] == "reconnecting"]
    assert high[:7] == [9, 19, 39, 79, 99, 99, 99]
    low = [d["delayMs"] for d in result["low"] if d["state"] == "reconnecting"]
    assert low[:3] == [0, 0, 0]
    jitter = result["jitter"]
    for i, delay in enumerate(jitter):
        assert 0 <= delay < min(30_000, 500 * 2 ** (i % 8))
    assert len(set(jitter)) > 1000  # really random

    assert result["delays"] == [39, 79, 159, 319, 39]
    assert result["protocols"] == ["trio-chat.v1"]
    # Without a user name the server's guest id is pinned after the first welcome.
    assert "user=alice" in result["urls"][-1]


async def test_client_resumes_rooms_and_resends_without_duplicates(chat_server):
    await in_browser(client_resume, chat_server.base_url)


def client_resume(server_url: str) -> None:
    with chromium() as browser:
        page = ChatPage(browser, server_url, name="resume").page
        page.evaluate(FAKE_SOCKET_JS)
        result = run_scenario(
            page,
            """async () => {
            const { TrioChatClient } = await import("/trio-chat.js");
            FakeSocket.sockets = [];
            const messages = [], errors = [], sent = [], pending = [];
            const client = new TrioChatClient("ws://chat.invalid/ws", {
              user: "alice", WebSocket: FakeSocket, watchNetwork: false, baseDelayMs: 5, maxDelayMs: 5 });
            client.addEventListener("message", (e) => messages.push(e.detail));
            client.addEventListener("error", (e) => errors.push(e.detail));
            client.addEventListener("sent", (e) => sent.push(e.detail));
            client.addEventListener("pending", (e) => pending.push(e.detail));
            const chat = (id, user, content) => ({ id, room: "lobby", user_id: user, content, time: `2026-11-29T10:00:0${id % 10}.000Z` });
            const check = {};

            // First connection: join, history, live messages.
            const joining = client.join("lobby");
            client.connect();
            await until(() => FakeSocket.sockets.length === 1, "socket 1");
            let s = FakeSocket.latest();
            s.welcome();
            const join1 = s.sentOf("join")[0];
            check.firstJoin = join1.payload;
            s.frame("joined", { room: "lobby", members: ["alice", "bob"], history: [chat(1, "bob", "one"), chat(2, "bob", "two")], truncated: false }, join1.ref);
            await joining;
            s.frame("chat", chat(3, "bob", "three"));
            s.frame("chat", chat(3, "bob", "three"));          // a duplicate: dropped

            // A message is sent, published, but the connection drops before its ack.
            const mine = client.send("lobby", "mine");
            const chat1 = s.sentOf("chat")[0];
            client.setPresence("away");
            s.fail(1006);

            // Second connection: re-join with since, then the original ref again.
            await until(() => FakeSocket.sockets.length === 2, "socket 2");
            s = FakeSocket.latest();
            s.welcome();
            check.rejoin = s.sent[0];
            check.chatBeforeJoined = s.sentOf("chat").length;
            check.presenceAfterJoin = s.sent.map((f) => f.type);
            s.frame("joined", { room: "lobby", members: ["alice", "bob"],
                                history: [chat(3, "bob", "three"), chat(4, "alice", "mine"), chat(5, "bob", "five")],
                                truncated: false }, s.sent[0].ref);
            const resent = s.sentOf("chat");
            check.resent = resent.map((f) => [f.ref, f.payload.content]);
            check.originalRef = chat1.ref;
            s.frame("ack", { id: 4, room: "lobby", time: "2026-11-29T10:00:04.000Z" }, chat1.ref);   // the original ack
            check.mineAck = await mine;

            // Own messages come back as messages, from the ack.
            const second = client.send("lobby", "second");
            s.frame("chat", chat(6, "bob", "six"));
            s.frame("ack", { id: 7, room: "lobby", time: "2026-11-29T10:00:07.000Z" }, s.sentOf("chat").at(-1).ref);
            await second;

            // 429: kept, re-sent after retry_after_ms with the same ref.
            const third = client.send("lobby", "third");
            const ref3 = s.sentOf("chat").at(-1).ref;
            s.frame("error", { code: 429, message: "rate limit exceeded", retry_after_ms: 60 }, ref3);
            await sleep(20);
            check.resentTooEarly = s.sentOf("chat").filter((f) => f.ref === ref3).length;
            await until(() => s.sentOf("chat").filter((f) => f.ref === ref3).length === 2, "429 resend");
            s.frame("ack", { id: 8, room: "lobby", time: "2026-11-29T10:00:08.000Z" }, ref3);
            await third;

            // Sent while offline: queued, delivered once after the reconnect.
            s.fail(1001);
            const offline = client.send("lobby", "offline");
            check.stateWhenQueued = client.state;
            await until(() => FakeSocket.sockets.length === 3, "socket 3");
            s = FakeSocket.latest();
            s.welcome();
            check.rejoin3 = s.sent[0].payload;
            s.frame("joined", { room: "lobby", members: ["alice", "bob"], history: [], truncated: false }, s.sent[0].ref);
            check.offlineSends = s.sentOf("chat").map((f) => f.payload.content);
            s.frame("ack", { id: 9, room: "lobby", time: "2026-11-29T10:00:09.000Z" }, s.sentOf("chat")[0].ref);
            await offline;

            // A refusal that will not get better fails the message.
            const refused = client.direct("nobody", "hello?");
            s.frame("error", { code: 404, message: "nobody is not connected" }, s.sentOf("direct")[0].ref);
            check.refused = await refused.then(() => "resolved", (e) => [e.name, e.code]);
            check.pendingLeft = client.pending.length;
            check.lastId = client.lastId("lobby");

            // The server restarts without persistence: the room's ids start over at 1.
            const restarts = [];
            client.addEventListener("restart", (e) => restarts.push(e.detail.room));
            s.fail(1001);
            await until(() => FakeSocket.sockets.length === 4, "socket 4");
            s = FakeSocket.latest();
            s.welcome();
            check.rejoin4 = s.sent[0].payload;
            const later = (id) => ({ ...chat(id, "bob", `new ${id}`), time: `2026-11-29T11:00:0${id}.000Z` });
            s.frame("joined", { room: "lobby", members: ["alice", "bob"], history: [later(1)], truncated: false }, s.sent[0].ref);
            s.frame("chat", later(2));
            s.frame("chat", later(2));                    // a true duplicate: same id, same time
            check.restarts = restarts;
            check.lastIdAfterRestart = client.lastId("lobby");
            client.close();
            return { check, errors, sent: sent.map((d) => d.ref), pending: pending.length,
                     messages: messages.map((m) => [m.id, m.user_id, m.content, m.own, m.replayed]) };
        }""",
        )

    check = result["check"]
    assert check["firstJoin"] == {"room": "lobby"}
    assert check["rejoin"]["type"] == "join"
    assert check["rejoin"]["payload"] == {"room": "lobby", "since": 3}
    assert check["chatBeforeJoined"] == 0, "a chat was sent before its room was re-joined"
    assert check["presenceAfterJoin"] == ["join", "presence"]
    assert check["resent"] == [[check["originalRef"], "mine"]]
    assert len(check["originalRef"]) <= 64
    assert check["mineAck"]["id"] == 4 and check["mineAck"]["ref"] == check["originalRef"]
    assert check["resentTooEarly"] == 1
    assert check["stateWhenQueued"] == "reconnecting"
    assert check["rejoin3"] == {"room": "lobby", "since": 8}
    assert check["offlineSends"] == ["offline"]
    assert check["refused"] == ["ChatError", 404]
    assert check["pendingLeft"] == 0
    assert check["lastId"] == 9

    assert result["messages"] == [
        [1, "bob", "one", False, True],
        [2, "bob", "two", False, True],
        [3, "bob", "three", False, False],
        [4, "alice", "mine", True, True],  # arrived with the history, before the resent ack
        [5, "bob", "five", False, True],
        [6, "bob", "six", False, False],
        [7, "alice", "second", True, False],
        [8, "alice", "third", True, False],
        [9, "alice", "offline", True, False],
        [1, "bob", "new 1", False, True],  # after the server restarted
        [2, "bob", "new 2", False, False],
    ]
    assert check["rejoin4"] == {"room": "lobby", "since": 9}
    assert check["restarts"] == ["lobby"]
    assert check["lastIdAfterRestart"] == 2
    assert [e["code"] for e in result["errors"]] == [429, 404]
    assert result["errors"][0]["willRetry"] is True and result["errors"][0]["retryAfterMs"] == 60
    assert result["pending"] == 5
    assert len(result["sent"]) == 4


async def test_client_asks_why_an_attempt_failed_and_stops_when_refused(chat_server):
    await in_browser(client_refusals, chat_server.base_url)


def client_refusals(server_url: str) -> None:
    with chromium() as browser:
        page = ChatPage(browser, server_url, name="refusals").page
        page.evaluate(FAKE_SOCKET_JS)
        result = run_scenario(
            page,
            """async () => {
            const { TrioChatClient } = await import("/trio-chat.js");
            FakeSocket.sockets = [];
            // The "server" answers the plain GET the client makes after a failed attempt.
            const answers = [];
            const asked = [];
            const fetch = async (url) => {
              asked.push(url);
              const [status, body] = answers.shift();
              return { status, text: async () => body };
            };
            const states = [], errors = [];
            const client = new TrioChatClient("ws://chat.invalid/ws", {
              user: "alice", key: "browser-key-1", WebSocket: FakeSocket, fetch, watchNetwork: false,
              baseDelayMs: 5, maxDelayMs: 5 });
            client.addEventListener("state", (e) => states.push(e.detail));
            client.addEventListener("error", (e) => errors.push(e.detail));
            client.join("lobby").catch(() => {});
            const queued = client.send("lobby", "never sent").then(() => "sent", (e) => [e.code, e.message]);
            client.connect();
            // Too many handshakes: a passing refusal, retried, with its reason.
            answers.push([429, "too many handshakes from your address\\n"]);
            await until(() => FakeSocket.sockets.length === 1, "socket 1");
            FakeSocket.latest().fail();
            // The server would accept now (426): an ordinary failure, retried.
            answers.push([426, "this endpoint speaks WebSocket\\n"]);
            await until(() => FakeSocket.sockets.length === 2, "socket 2");
            FakeSocket.latest().fail();
            // The name is taken: refused for good.
            answers.push([409, "the name 'alice' is taken: pick another one\\n"]);
            await until(() => FakeSocket.sockets.length === 3, "socket 3");
            FakeSocket.latest().fail();
            await until(() => client.state === "offline", "offline");
            const out = {
              urls: FakeSocket.sockets.map((s) => s.url),
              asked,
              reconnecting: states.filter((d) => d.state === "reconnecting").map((d) => d.reason ?? null),
              last: states.at(-1),
              refused: client.refused,
              queued: await queued,
              pending: client.pending.length,
              sockets: FakeSocket.sockets.length,
            };
            // connect() tries again, forgetting the refusal.
            client.connect();
            await until(() => FakeSocket.sockets.length === 4, "socket 4");
            FakeSocket.latest().welcome();
            out.afterReconnect = [client.state, client.refused];
            client.close();
            return out;
        }""",
        )
    assert all("user=alice&key=browser-key-1" in url for url in result["urls"])
    assert result["asked"][0].startswith("http://chat.invalid/ws?user=alice&key=")
    assert result["reconnecting"] == ["too many handshakes from your address", None]
    assert result["last"]["state"] == "offline"
    assert result["last"]["refused"] == {
        "status": 409,
        "reason": "the name 'alice' is taken: pick another one",
    }
    assert result["refused"] == result["last"]["refused"]
    assert result["queued"] == [0, "the name 'alice' is taken: pick another one"]
    assert result["pending"] == 0
    assert result["sockets"] == 3  # no attempt after the refusal
    assert result["afterReconnect"] == ["online", None]


async def test_client_paces_sends_and_refuses_what_cannot_succeed(chat_server):
    await in_browser(client_limits, chat_server.base_url)


def client_limits(server_url: str) -> None:
    with chromium() as browser:
        page = ChatPage(browser, server_url, name="limits").page
        page.evaluate(FAKE_SOCKET_JS)
        result = run_scenario(
            page,
            """async () => {
            const { TrioChatClient, ChatError } = await import("/trio-chat.js");
            FakeSocket.sockets = [];
            const errors = [];
            const client = new TrioChatClient("ws://chat.invalid/ws", {
              user: "alice", WebSocket: FakeSocket, watchNetwork: false, baseDelayMs: 5, maxDelayMs: 5,
              maxSendAttempts: 2 });
            client.addEventListener("error", (e) => errors.push(e.detail));
            const out = {};
            client.join("lobby").catch(() => {});
            client.connect();
            await until(() => FakeSocket.sockets.length === 1, "socket");
            let s = FakeSocket.latest();
            s.welcome("alice", { rate: { messages: 3, per_seconds: 0.3 }, max_content_chars: 10, max_message_bytes: 160 });
            s.frame("joined", { room: "lobby", members: ["alice"], history: [], truncated: false }, s.sent[0].ref);

            // Pacing: 3 frames per 0.3 s (+ a small margin), the rest waits its turn, in order.
            const started = Date.now();
            const sends = ["a", "b", "c", "d", "e"].map((text) => client.send("lobby", text).catch(() => {}));
            out.sentAtOnce = s.sentOf("chat").map((f) => f.payload.content);
            await until(() => s.sentOf("chat").length === 5, "paced sends", 3000);
            out.pacedAfterMs = Date.now() - started;
            out.order = s.sentOf("chat").map((f) => f.payload.content);
            s.sentOf("chat").forEach((f, i) => s.frame("ack", { id: i + 1, room: "lobby", time: "2026-11-29T10:00:00.000Z" }, f.ref));
            await Promise.all(sends);

            // Too long (in code points, not UTF-16 units) or too many bytes: refused before sending.
            const refusal = (promise) => promise.then(() => "sent", (e) => (e instanceof ChatError ? e.code : String(e)));
            const before = s.sent.length;
            out.tooLong = await refusal(client.send("lobby", "x".repeat(11)));
            const astral = refusal(client.send("lobby", "😀".repeat(10)));     // 10 code points, 20 UTF-16 units
            await until(() => s.sentOf("chat").length === 6, "astral sent", 3000);
            s.frame("ack", { id: 6, room: "lobby", time: "2026-11-29T10:00:00.000Z" }, s.sentOf("chat")[5].ref);
            out.astral = await astral;
            out.tooBig = await refusal(client.direct("b".repeat(64), "\\u00e9".repeat(10)));  // 10 chars, 20 bytes
            out.notJoined = await refusal(client.send("elsewhere", "hi"));
            out.empty = await refusal(client.send("lobby", ""));
            out.framesSent = s.sent.length - before;

            // A message whose connection keeps dying before its ack is given up after maxSendAttempts.
            const doomed = refusal(client.send("lobby", "doomed"));
            for (let i = 0; i < 2; i++) {
              await until(() => FakeSocket.latest().sentOf("chat").some((f) => f.payload.content === "doomed"), "doomed sent");
              FakeSocket.latest().fail();
              await until(() => FakeSocket.sockets.length === i + 2, "reconnect");
              s = FakeSocket.latest();
              s.welcome("alice", { rate: { messages: 100, per_seconds: 1 } });
              s.frame("joined", { room: "lobby", members: ["alice"], history: [], truncated: false }, s.sent[0].ref);
            }
            out.doomed = await doomed;

            // Leaving a room gives up what is still queued for it.
            s.fail();
            const orphan = refusal(client.send("lobby", "orphan"));
            await client.leave("lobby");
            out.orphan = await orphan;
            out.rooms = client.rooms;
            client.close();
            out.errors = errors.map((e) => e.code);
            return out;
        }""",
        )

    assert result["sentAtOnce"] == ["a", "b", "c"]
    assert result["order"] == ["a", "b", "c", "d", "e"]
    assert result["pacedAfterMs"] >= 300
    assert result["tooLong"] == 413
    assert result["astral"] == "sent"  # resolved with its ack
    assert result["tooBig"] == 413  # the frame is over 160 bytes of UTF-8
    assert result["notJoined"] == 403
    assert result["empty"] == 400
    assert result["framesSent"] == 1  # only the astral one went out
    assert result["doomed"] == 0
    assert result["orphan"] == 0
    assert result["rooms"] == []
    assert result["errors"] == [413, 413, 403, 400, 0, 0]
