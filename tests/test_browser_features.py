"""The chat page's conversation features in a real headless Chromium, two
pages against a real server (a subprocess with an SQLite store): mentions
and desktop notifications, edits, deletes and reactions seen live, unread
counts and the "new messages" divider from the server's read markers, room
discovery and topics, direct conversations that outlive a reload and reach
a user who was offline.
"""

from __future__ import annotations

from browser_support import (
    LAPTOP,
    NOTIFICATION_SPY_JS,
    SET_HIDDEN_JS,
    ChatPage,
    chromium,
)
from test_browser import chat_server, in_browser, no_page_errors

__all__ = ["chat_server"]  # the fixture, shared with test_browser.py


def message(page: ChatPage, conv: str, text: str):
    """The locator of the message whose text is *text* in conversation *conv* (`room:x`, `dm:y`)."""
    return page.page.locator(f".log[data-conv='{conv}'] .stream .msg").filter(
        has=page.page.locator(".text", has_text=text)
    )


def wait_badge(page: ChatPage, conv: str, count: str) -> None:
    page.page.wait_for_function(
        """([conv, count]) => {
            const badge = document.querySelector(`li[data-conv="${conv}"] .badge`);
            return badge && !badge.hidden && badge.textContent === count;
        }""",
        arg=[conv, count],
    )


# ------------------------------------------------ mentions, notifications


async def test_mentions_are_highlighted_and_notify_when_the_tab_is_hidden(chat_server):
    await in_browser(mentions_and_notifications, chat_server.base_url)


def mentions_and_notifications(server_url: str) -> None:
    room = "lobby"
    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice")
        bob = ChatPage(
            browser,
            server_url,
            name="bob",
            init_script=NOTIFICATION_SPY_JS,
            permissions=["notifications"],
        )
        try:
            alice.sign_in("alice", room)
            bob.sign_in("bob", room)
            bob.wait_state("online")
            alice.wait_state("online")
            alice.wait_notice(room, "bob joined #lobby")
            # The browser allows notifications: the bell is on.
            bob.page.wait_for_selector("#notify-toggle[data-state='on']", state="attached")
            # (headless Chromium denies what was not granted)
            assert alice.page.get_attribute("#notify-toggle", "data-state") in ("default", "denied")

            # @bob is highlighted for bob (more strongly), @carol is a mention too.
            alice.send("hey @bob, ask @carol.")
            bob.wait_message(room, "hey @bob, ask @carol.")
            said = message(bob, f"room:{room}", "hey @bob")
            assert said.locator(".mention--me").inner_text() == "@bob"
            assert said.locator(".mention:not(.mention--me)").inner_text() == "@carol"
            assert "msg--mentions-me" in said.get_attribute("class")
            assert message(alice, f"room:{room}", "hey @bob").locator(".mention--me").count() == 0
            # Seen while the tab is shown: no notification.
            assert bob.page.evaluate("() => window.notes.length") == 0

            # Hidden: a mention and a direct message notify; a plain message does not.
            bob.page.evaluate(SET_HIDDEN_JS, True)
            alice.send("nothing for bob")
            alice.send("@bob look")
            bob.wait_message(room, "@bob look")
            alice.page.click("#member-list li[data-user='bob'] button")
            alice.send("psst")
            bob.page.wait_for_function("() => window.notes.length === 2")
            notes = bob.page.evaluate("() => window.notes")
            assert notes == [
                {
                    "title": "alice mentioned you in #lobby",
                    "body": "@bob look",
                    "tag": "room:lobby",
                },
                {"title": "alice sent you a message", "body": "psst", "tag": "dm:alice"},
            ]

            # The bell turns them off (and on again).
            bob.page.evaluate(SET_HIDDEN_JS, False)
            bob.page.click("#notify-toggle")
            bob.page.wait_for_selector("#notify-toggle[data-state='off']", state="attached")
            bob.page.evaluate(SET_HIDDEN_JS, True)
            alice.send("psst again")
            bob.page.locator(
                ".log[data-conv='dm:alice'] .msg .text", has_text="psst again"
            ).wait_for(state="attached")
            bob.page.evaluate(SET_HIDDEN_JS, False)
            bob.page.click("#notify-toggle")
            bob.page.wait_for_selector("#notify-toggle[data-state='on']", state="attached")
            bob.page.evaluate(SET_HIDDEN_JS, True)
            alice.send("third")
            bob.page.wait_for_function("() => window.notes.length === 3")
            assert bob.page.evaluate("() => window.notes.map((n) => n.body)") == [
                "@bob look",
                "psst",
                "third",
            ]

            # /help lists the slash commands, the new ones too.
            bob.page.evaluate(SET_HIDDEN_JS, False)
            bob.page.click("#room-list li[data-conv='room:lobby'] button")
            bob.send("/help")
            help_list = bob.page.locator(".notice--help dl")
            help_list.wait_for()
            for usage in ("/rooms [QUERY]", "/topic TEXT", "/edit [TEXT]", "/dm USER TEXT"):
                assert usage in help_list.inner_text()
            no_page_errors(alice, bob)
        finally:
            alice.close()
            bob.close()
