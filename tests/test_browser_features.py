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
    WIRE_SPY_JS,
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
    """Wait until the sidebar entry of *conv* shows *count* unread."""
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


def wait_text(page: ChatPage, selector: str, text: str) -> None:
    """Wait until the element *selector* shows exactly *text*."""
    page.page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.textContent === text",
        arg=[selector, text],
    )


def badge_hidden(page: ChatPage, conv: str) -> bool:
    return page.page.locator(f"li[data-conv='{conv}'] .badge").is_hidden()


def divider_before(page: ChatPage, conv: str) -> str:
    """The text of the message right under the "New messages" divider of *conv*."""
    return page.page.evaluate(
        """(conv) => document.querySelector(`.log[data-conv="${conv}"] .new-divider`)
               .nextElementSibling.querySelector('.text').textContent""",
        conv,
    )


def reactions(page: ChatPage, conv: str, text: str) -> dict[str, str]:
    """The reactions under a message as the page shows them: emoji -> count."""
    return message(page, conv, text).evaluate(
        """el => Object.fromEntries([...el.querySelectorAll('.reactions .reaction')].map(
               (b) => [b.dataset.emoji, b.querySelector('.reaction-count').textContent]))"""
    )


def open_menu(page: ChatPage, conv: str, text: str, action: str) -> None:
    """Hover a message and press one of its controls (react, edit, delete)."""
    said = message(page, conv, text)
    said.hover()
    said.locator(f".msg-actions [data-action='{action}']").click()


# ------------------------------------------------ edits, deletes, reactions


async def test_edits_deletes_and_reactions_are_seen_live_and_after_a_reload(chat_server):
    await in_browser(edits_deletes_reactions, chat_server.base_url)


def edits_deletes_reactions(server_url: str) -> None:
    room, conv = "lobby", "room:lobby"
    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice")
        bob = ChatPage(browser, server_url, viewport=LAPTOP, name="bob")
        try:
            alice.sign_in("alice", room)
            alice.wait_state("online")
            bob.sign_in("bob", room)
            bob.wait_state("online")
            alice.wait_notice(room, "bob joined #lobby")
            for text in ("helo everyone", "a typo to take back", "the plan is ready"):
                alice.send(text)
                bob.wait_message(room, text)

            # Alice edits in place (✎): bob sees the new text, marked edited.
            open_menu(alice, conv, "helo everyone", "edit")
            alice.page.fill(f".log[data-conv='{conv}'] .msg-edit-input", "hello everyone")
            alice.page.press(f".log[data-conv='{conv}'] .msg-edit-input", "Enter")
            bob.wait_message(room, "hello everyone")
            edited = message(bob, conv, "hello everyone")
            assert edited.locator(".edited-mark").inner_text() == "(edited)"
            assert message(bob, conv, "helo everyone").count() == 0
            # /edit TEXT edits her last message.
            alice.send("/edit the plan is ready: see the wiki")
            bob.wait_message(room, "the plan is ready: see the wiki")
            # Bob may react to alice's message, not edit or delete it.
            theirs = message(bob, conv, "hello everyone")
            theirs.hover()
            assert theirs.locator(".msg-actions [data-action='edit']").count() == 0
            assert theirs.locator(".msg-actions [data-action='delete']").count() == 0

            # Reactions: bob's 🎉 shows on alice's page; alice adds hers, then takes it off.
            open_menu(bob, conv, "hello everyone", "react")
            bob.page.click(f".log[data-conv='{conv}'] .reaction-picker .pick[data-emoji='🎉']")
            reacted = message(alice, conv, "hello everyone").locator(".reaction[data-emoji='🎉']")
            reacted.wait_for()
            assert reactions(alice, conv, "hello everyone") == {"🎉": "1"}
            assert reacted.get_attribute("aria-pressed") == "false"
            assert reacted.get_attribute("title") == "bob reacted with 🎉"
            reacted.click()
            bob.page.wait_for_function(
                """() => document.querySelector(".reaction[data-emoji='🎉'] .reaction-count")
                       ?.textContent === '2'"""
            )
            mine = message(alice, conv, "hello everyone").locator(
                ".reaction--mine[data-emoji='🎉']"
            )
            mine.wait_for()
            assert mine.get_attribute("aria-pressed") == "true"
            assert mine.locator(".reaction-count").inner_text() == "2"
            open_menu(bob, conv, "the plan is ready: see the wiki", "react")
            bob.page.click(f".log[data-conv='{conv}'] .reaction-picker .pick[data-emoji='👍']")
            alice.page.locator(".reaction[data-emoji='👍']").wait_for()
            reacted.click()  # off again
            bob.page.wait_for_function(
                """() => document.querySelector(".reaction[data-emoji='🎉'] .reaction-count")
                       ?.textContent === '1'"""
            )

            # Alice deletes a message (🗑, then confirm): bob sees a tombstone.
            open_menu(alice, conv, "a typo to take back", "delete")
            alice.page.click(f".log[data-conv='{conv}'] [data-action='confirm-delete']")
            gone = bob.page.locator(f".log[data-conv='{conv}'] .msg--deleted")
            gone.wait_for()
            assert gone.locator(".text").inner_text() == "message deleted"
            assert gone.get_attribute("data-author") == "alice"
            assert message(bob, conv, "a typo to take back").count() == 0
            assert alice.page.locator(f".log[data-conv='{conv}'] .msg--deleted").count() == 1

            # A reload shows the same: the edited text, the tombstone, the reactions.
            bob.page.reload()
            bob.wait_state("online")
            bob.wait_message(room, "hello everyone")
            assert [m["text"] for m in bob.messages(room)] == [
                "hello everyone",
                "message deleted",
                "the plan is ready: see the wiki",
            ]
            assert message(bob, conv, "hello everyone").locator(".edited-mark").count() == 1
            assert reactions(bob, conv, "hello everyone") == {"🎉": "1"}
            assert reactions(bob, conv, "the plan is ready") == {"👍": "1"}
            assert bob.page.locator(".reaction--mine[data-emoji='🎉']").count() == 1
            no_page_errors(alice, bob)
        finally:
            alice.screenshot("browser-edits-reactions.png")
            alice.close()
            bob.close()


# ---------------------------------------------------- unread, read markers


async def test_unread_counts_and_the_divider_come_from_the_servers_read_markers(chat_server):
    await in_browser(read_markers, chat_server.base_url)


def read_markers(server_url: str) -> None:
    room, conv = "lobby", "room:lobby"
    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice")
        bob = ChatPage(browser, server_url, viewport=LAPTOP, name="bob", init_script=WIRE_SPY_JS)
        tab = None
        try:
            alice.sign_in("alice", room)
            alice.wait_state("online")
            bob.sign_in("bob", "design")
            bob.wait_state("online")
            bob.join_room(room)
            alice.wait_notice(room, "bob joined #lobby")

            # Bob reads the first five while he looks at #lobby.
            for n in range(1, 6):
                alice.send(f"read {n}")
            bob.wait_message(room, "read 5")
            bob.page.wait_for_function(
                """() => window.received.some((f) => f.type === 'read'
                       && f.payload.room === 'lobby' && f.payload.id === 5)"""
            )
            # ... then looks at #design while two more come, one mentioning him.
            bob.page.click("#room-list li[data-conv='room:design'] button")
            alice.send("unread 6")
            alice.send("unread 7 for @bob")
            wait_badge(bob, conv, "2")
            live = bob.page.locator(f"li[data-conv='{conv}'] .badge")
            assert "badge--mention" in live.get_attribute("class")
            assert live.get_attribute("title") == "2 unread, 1 mentioning you"

            # Another tab of bob's, and a reload: the server says two unread, one a mention.
            tab = bob.new_tab("bob-tab")
            tab.wait_state("online")
            wait_badge(tab, conv, "2")
            bob.page.reload()
            bob.wait_state("online")
            wait_badge(bob, conv, "2")
            for page in (bob, tab):
                badge = page.page.locator(f"li[data-conv='{conv}'] .badge")
                assert "badge--mention" in badge.get_attribute("class")
                assert badge.get_attribute("title") == "2 unread, 1 mentioning you"
                assert page.page.title() == "(2) trio chat"
                assert page.page.inner_text("#conv-title") == "#design"

            # Bob opens #lobby: the divider is above the first unread; his other tab agrees.
            bob.page.click(f"#room-list li[data-conv='{conv}'] button")
            assert divider_before(bob, conv) == "unread 6"
            assert bob.page.locator(f".log[data-conv='{conv}'] .new-divider").text_content() == (
                "New messages"
            )
            assert badge_hidden(bob, conv)
            tab.page.locator(f"li[data-conv='{conv}'] .badge").wait_for(state="hidden")
            assert tab.page.title() == "trio chat"

            # Read on one tab, read everywhere: a reload of the other shows nothing unread.
            tab.page.reload()
            tab.wait_state("online")
            tab.wait_message(room, "unread 7 for @bob")
            assert badge_hidden(tab, conv)
            tab.page.click(f"#room-list li[data-conv='{conv}'] button")
            assert tab.page.locator(f".log[data-conv='{conv}'] .new-divider").count() == 0
            no_page_errors(alice, bob, tab)
        finally:
            bob.screenshot("browser-unread.png")
            alice.close()
            bob.close()


# ----------------------------------------------------------------- topics


async def test_a_topic_set_on_one_page_shows_in_the_others_header(chat_server):
    await in_browser(topics, chat_server.base_url)


def topics(server_url: str) -> None:
    room = "lobby"
    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice")
        bob = ChatPage(browser, server_url, viewport=LAPTOP, name="bob")
        try:
            alice.sign_in("alice", room)
            alice.wait_state("online")
            bob.sign_in("bob", room)
            bob.wait_state("online")
            alice.wait_notice(room, "bob joined #lobby")
            assert bob.page.is_hidden("#conv-topic")
            bob.send("/topic")
            bob.wait_notice(room, "#lobby has no topic: /topic TEXT sets one")

            alice.send("/topic Launch on Friday")
            wait_text(bob, "#conv-topic", "Launch on Friday")
            bob.wait_notice(room, "alice set the topic: Launch on Friday")
            alice.wait_notice(room, "alice set the topic: Launch on Friday")
            assert alice.page.inner_text("#conv-topic") == "Launch on Friday"
            bob.send("/topic")
            bob.wait_notice(room, "The topic of #lobby: Launch on Friday")

            # It stays with the room: a reload shows it.
            bob.page.reload()
            bob.wait_state("online")
            wait_text(bob, "#conv-topic", "Launch on Friday")

            # The header's ✎ sets it too; an empty one clears it.
            bob.page.click("#edit-topic")
            assert bob.page.input_value("#topic-input") == "Launch on Friday"
            bob.page.fill("#topic-input", "Launch moved to Monday")
            bob.page.press("#topic-input", "Enter")
            wait_text(alice, "#conv-topic", "Launch moved to Monday")
            alice.wait_notice(room, "bob set the topic: Launch moved to Monday")
            assert bob.page.is_hidden("#topic-form")
            alice.page.click("#edit-topic")
            alice.page.fill("#topic-input", "")
            alice.page.click("#topic-form button[type='submit']")
            bob.wait_notice(room, "alice cleared the topic")
            bob.page.locator("#conv-topic").wait_for(state="hidden")
            # A topic is one room's: #design has none.
            bob.join_room("design")
            bob.wait_notice("design", "You joined #design")
            assert bob.page.is_hidden("#conv-topic")
            no_page_errors(alice, bob)
        finally:
            alice.close()
            bob.close()


# -------------------------------------------------------- room discovery


async def test_rooms_dialog_lists_searches_and_joins_rooms(chat_server):
    await in_browser(room_discovery, chat_server.base_url)


def found(page: ChatPage) -> list[dict]:
    """The rooms the dialog lists, in order: {room, members, topic, button}."""
    return page.page.eval_on_selector_all(
        "#rooms-found li",
        """els => els.map(el => ({
            room: el.dataset.room,
            members: el.querySelector('.found-meta').textContent,
            topic: el.querySelector('.found-topic')?.textContent ?? null,
            button: el.querySelector('button').textContent,
        }))""",
    )


def wait_found(page: ChatPage, rooms: list[str]) -> None:
    page.page.wait_for_function(
        """(rooms) => JSON.stringify([...document.querySelectorAll('#rooms-found li')]
               .map((el) => el.dataset.room)) === JSON.stringify(rooms)
               && document.querySelector('#rooms-status').textContent !== 'Looking…'""",
        arg=rooms,
    )


def room_discovery(server_url: str) -> None:
    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice")
        bob = ChatPage(browser, server_url, viewport=LAPTOP, name="bob")
        try:
            alice.sign_in("alice", "lobby")
            alice.wait_state("online")
            alice.send("/topic Say hello here")
            alice.wait_notice("lobby", "alice set the topic: Say hello here")
            alice.join_room("design")
            alice.wait_notice("design", "You joined #design")
            alice.send("/topic Mockups and colours")
            alice.wait_notice("design", "alice set the topic: Mockups and colours")
            # A room nobody is in, with a topic: it is kept, and listed.
            alice.join_room("archive")
            alice.wait_notice("archive", "You joined #archive")
            alice.send("/topic Old mockups, read only")
            alice.wait_notice("archive", "alice set the topic: Old mockups, read only")
            alice.page.click("#leave-room")
            alice.page.wait_for_selector(
                "#room-list li[data-conv='room:archive']", state="detached"
            )
            bob.sign_in("bob", "lobby")
            bob.wait_state("online")
            alice.wait_notice("lobby", "bob joined #lobby")

            # /rooms: most members first, then by name; member counts and topics.
            bob.send("/rooms")
            bob.page.locator("#rooms-dialog[open]").wait_for()
            wait_found(bob, ["lobby", "design", "archive"])
            assert found(bob) == [
                {
                    "room": "lobby",
                    "members": "2 members",
                    "topic": "Say hello here",
                    "button": "Open",
                },
                {
                    "room": "design",
                    "members": "1 member",
                    "topic": "Mockups and colours",
                    "button": "Join",
                },
                {
                    "room": "archive",
                    "members": "0 members",
                    "topic": "Old mockups, read only",
                    "button": "Join",
                },
            ]
            assert bob.page.inner_text("#rooms-status") == ""

            # Search by topic (ignoring case), by name, and for nothing.
            bob.page.fill("#rooms-search", "MOCKUPS")
            wait_found(bob, ["design", "archive"])
            bob.page.fill("#rooms-search", "lob")
            wait_found(bob, ["lobby"])
            bob.page.fill("#rooms-search", "nothing like it")
            wait_found(bob, [])
            assert bob.page.inner_text("#rooms-status") == "No room matches “nothing like it”."

            # Join from the dialog: it closes, and bob is in #design with its topic.
            bob.page.fill("#rooms-search", "colours")
            wait_found(bob, ["design"])
            bob.page.click("#rooms-found li[data-room='design'] button")
            bob.page.locator("#rooms-dialog").wait_for(state="hidden")
            bob.wait_notice("design", "You joined #design")
            assert bob.page.inner_text("#conv-title") == "#design"
            wait_text(bob, "#conv-topic", "Mockups and colours")
            assert bob.rooms() == ["design", "lobby"]
            alice.wait_notice("design", "bob joined #design")

            # The sidebar's button opens it too; a joined room is opened, not joined again.
            bob.page.click("#browse-rooms")
            wait_found(bob, ["design", "lobby", "archive"])
            assert [r["button"] for r in found(bob)] == ["Open", "Open", "Join"]
            assert [r["members"] for r in found(bob)] == ["2 members", "2 members", "0 members"]
            bob.page.click("#rooms-found li[data-room='lobby'] button")
            bob.page.locator("#rooms-dialog").wait_for(state="hidden")
            assert bob.page.inner_text("#conv-title") == "#lobby"
            assert bob.notices("lobby").count("You joined #lobby") == 1
            no_page_errors(alice, bob)
        finally:
            bob.screenshot("browser-rooms.png")
            alice.close()
            bob.close()


# ---------------------------------------------------- direct conversations


def dm_texts(page: ChatPage, peer: str) -> list[str]:
    return page.page.eval_on_selector_all(
        f".log[data-conv='dm:{peer}'] .stream .msg .text", "els => els.map(el => el.textContent)"
    )


def wait_dm(page: ChatPage, peer: str, text: str) -> None:
    page.page.locator(f".log[data-conv='dm:{peer}'] .stream .msg .text", has_text=text).wait_for(
        state="attached"
    )


async def test_direct_conversations_reach_a_user_who_was_offline_and_outlive_a_reload(
    chat_server,
):
    await in_browser(stored_conversations, chat_server.base_url)


def stored_conversations(server_url: str) -> None:
    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice")
        carol = ChatPage(browser, server_url, viewport=LAPTOP, name="carol")
        try:
            alice.sign_in("alice", "lobby")
            alice.wait_state("online")
            # Carol has never been here: the message waits for her.
            alice.send("/dm carol hello carol, see you on Monday")
            alice.page.locator(".log[data-conv='dm:carol'] .msg--own[data-id='1']").wait_for()
            assert alice.page.inner_text("#conv-title") == "carol"

            carol.sign_in("carol", "lobby")
            carol.wait_state("online")
            wait_badge(carol, "dm:alice", "1")
            assert carol.page.title() == "(1) trio chat"
            carol.page.click("#dm-list li[data-conv='dm:alice'] button")
            wait_dm(carol, "alice", "hello carol, see you on Monday")
            assert badge_hidden(carol, "dm:alice")
            carol.send("back now, thanks")
            carol.send("Monday works")
            wait_dm(alice, "carol", "Monday works")
            # Alice has seen both: her marker for the second waits for its
            # second (one a second), and a reload sends it.
            alice.page.reload()
            alice.wait_state("online")
            alice.page.locator("#dm-list li[data-conv='dm:carol']").wait_for()
            assert badge_hidden(alice, "dm:carol")

            # Both reload: the conversation is still in the sidebar, with its messages.
            for page, peer in ((carol, "alice"), (alice, "carol")):
                page.page.reload()
                page.wait_state("online")
                page.page.locator(f"#dm-list li[data-conv='dm:{peer}']").wait_for()
                assert badge_hidden(page, f"dm:{peer}")
                assert page.page.title() == "trio chat"
                page.page.click(f"#dm-list li[data-conv='dm:{peer}'] button")
                wait_dm(page, peer, "Monday works")
                assert dm_texts(page, peer) == [
                    "hello carol, see you on Monday",
                    "back now, thanks",
                    "Monday works",
                ]
            no_page_errors(alice, carol)
        finally:
            alice.close()
            carol.close()
