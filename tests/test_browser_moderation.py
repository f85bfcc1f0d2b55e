"""A moderator's actions as the chat page shows them, in a real headless
Chromium against a real server (a subprocess with a secret and an SQLite
store): the admin HTTP API deletes a message (a tombstone and a notice on
every page), sets a topic (the header) and closes a room (a notice, the room
gone from the sidebar, not joined again after a reconnect or a reload, and
joined afresh when asked).
"""

from __future__ import annotations

import json
import time
import urllib.request

import jwt
from browser_support import LAPTOP, ChatPage, TcpProxy, chromium
from test_browser import SECRET, in_browser, in_trio, make_token, no_page_errors, secured_server

__all__ = ["secured_server"]  # the fixture, shared with test_browser.py


def admin(base_url: str, action: str, body: dict) -> dict:
    """POST /api/admin/ACTION with a moderator's admin token; the JSON answer."""
    token = jwt.encode(
        {"sub": "moderator", "exp": int(time.time() + 600), "admin": True},
        SECRET,
        algorithm="HS256",
    )
    request = urllib.request.Request(
        f"{base_url}/api/admin/{action}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


async def test_a_moderators_delete_topic_and_close_show_on_the_page(secured_server, nursery):
    proxy = TcpProxy(secured_server.port)
    await nursery.start(proxy.serve)
    await in_browser(moderation, secured_server.base_url, proxy)


def moderation(server_url: str, proxy: TcpProxy) -> None:
    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice")
        bob = ChatPage(browser, proxy.base_url, viewport=LAPTOP, name="bob")  # can be cut off
        try:
            alice.sign_in(token=make_token("alice"), room="lobby")
            alice.wait_state("online")
            bob.sign_in(token=make_token("bob"), room="flood")
            bob.wait_state("online")
            bob.join_room("lobby")
            alice.wait_notice("lobby", "bob joined #lobby")
            alice.join_room("flood")
            bob.wait_notice("flood", "alice joined #flood")

            # A moderator deletes bob's message: a tombstone and a notice on both pages.
            bob.send("buy cheap watches at example.com")
            alice.wait_message("lobby", "buy cheap watches at example.com")
            bob.send("sorry, wrong window")
            alice.wait_message("lobby", "sorry, wrong window")
            deleted = admin(server_url, "delete", {"room": "lobby", "id": 1, "reason": "spam"})
            assert deleted == {"room": "lobby", "id": 1, "user_id": "bob"}
            for page in (alice, bob):
                page.wait_notice("lobby", "message 1 was deleted by a moderator: spam")
                tombstone = page.page.locator(".log[data-conv='room:lobby'] .msg--deleted")
                tombstone.wait_for(state="attached")
                assert tombstone.get_attribute("data-id") == "1"
                assert tombstone.locator(".text").text_content() == "message deleted"
                assert [m["text"] for m in page.messages("lobby")] == [
                    "message deleted",
                    "sorry, wrong window",
                ]

            # ... sets the topic of a room it is not in: the header says it.
            bob.page.click("#room-list li[data-conv='room:flood'] button")
            admin(server_url, "topic", {"room": "flood", "topic": "Closing soon"})
            bob.wait_notice("flood", "moderator set the topic: Closing soon")
            assert bob.page.inner_text("#conv-topic") == "Closing soon"

            # ... and closes #flood: the notice stays in the open pane, the room
            # leaves the sidebar, nothing can be posted there.
            assert admin(server_url, "close", {"room": "flood", "reason": "spam wave"}) == {
                "closed": 2
            }
            bob.wait_notice("flood", "the room was closed: spam wave")
            bob.page.wait_for_selector("#room-list li[data-conv='room:flood']", state="detached")
            assert bob.rooms() == ["lobby"]
            assert bob.page.inner_text("#conv-title") == "#flood"
            assert bob.page.is_disabled("#composer-input")
            assert bob.page.inner_text("#conv-subtitle") == "Closed by a moderator"
            assert bob.page.get_attribute("#composer-input", "placeholder") == (
                "You cannot post in #flood"
            )
            bob.screenshot("browser-room-closed.png")
            alice.page.wait_for_selector("#room-list li[data-conv='room:flood']", state="detached")
            assert alice.rooms() == ["lobby"]
            # Moving on drops the closed pane.
            bob.page.click("#room-list li[data-conv='room:lobby'] button")
            assert bob.page.locator(".log[data-conv='room:flood']").count() == 0
            # Joining it again from the closed pane: a new room, empty, without the old topic.
            alice.join_room("flood")
            alice.wait_notice("flood", "You joined #flood")
            assert alice.rooms() == ["flood", "lobby"]
            assert alice.notices("flood") == ["You joined #flood"]
            assert alice.messages("flood") == []
            assert alice.page.is_enabled("#composer-input")
            assert alice.page.inner_text("#conv-subtitle") == "1 member"
            assert alice.page.is_hidden("#conv-topic")

            # A reconnect does not join bob to it again.
            in_trio(proxy.drop, reset=True)
            bob.wait_state("reconnecting")
            bob.wait_state("online", timeout_ms=40_000)
            bob.send("back after the drop")
            alice.wait_message("lobby", "back after the drop")
            assert bob.rooms() == ["lobby"]
            alice.send("/rooms")
            alice.page.wait_for_function(
                """() => document.querySelectorAll('#rooms-found li').length === 2"""
            )
            assert alice.page.eval_on_selector_all(
                "#rooms-found li",
                "els => els.map((el) => [el.dataset.room, el.querySelector('.found-meta').textContent])",
            ) == [["lobby", "2 members"], ["flood", "1 member"]]
            alice.page.click("#rooms-close")
            # Nor does a reload.
            bob.page.reload()
            bob.wait_state("online")
            bob.wait_message("lobby", "back after the drop")
            assert bob.rooms() == ["lobby"]
            no_page_errors(alice, bob)
        finally:
            alice.close()
            bob.close()
