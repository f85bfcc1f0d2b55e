"""The README's picture of the chat page, and the page checked by axe-core,
in a real headless Chromium against a real server (a subprocess with an
SQLite store).

The picture is rendered on every run (tests/artifacts/screenshot.png) and
must come out at the desktop size; docs/screenshot.png is rewritten only
with ``TRIO_CHAT_UPDATE_SCREENSHOT=1``, so that a run leaves the tree as it
was. axe-core comes with the ``axe-playwright-python`` test dependency
(pyproject.toml), nothing is fetched at run time.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from browser_support import LAPTOP, REPO, ChatPage, chromium
from test_browser import chat_server, in_browser, no_page_errors
from test_browser_features import message, open_menu, wait_badge, wait_text

__all__ = ["chat_server"]  # the fixture, shared with test_browser.py

README_SCREENSHOT = REPO / "docs" / "screenshot.png"


def axe_violations(page: ChatPage) -> list[str]:
    """What axe-core finds wrong with the page as it is now: one line per rule broken."""
    found = Axe().run(page.page).response["violations"]
    return [
        f"{rule['id']} ({rule['impact']}): {rule['help']}: "
        + ", ".join(" ".join(node["target"]) for node in rule["nodes"])
        for rule in found
    ]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is no PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


async def test_the_readme_screenshot_shows_two_users_a_topic_reactions_and_unread(chat_server):
    await in_browser(readme_screenshot, chat_server.base_url)


def readme_screenshot(server_url: str) -> None:
    room, conv = "lobby", "room:lobby"
    with chromium() as browser:
        alice = ChatPage(browser, server_url, viewport=LAPTOP, name="alice")
        bob = ChatPage(browser, server_url, viewport=LAPTOP, name="bob")
        try:
            alice.sign_in("alice", "design")
            alice.wait_state("online")
            bob.sign_in("bob", "design")
            bob.wait_state("online")
            for page in (alice, bob):
                page.join_room(room)
            alice.wait_notice(room, "bob joined #lobby")
            bob.send("/topic Release day: notes, changelog and cake")
            wait_text(alice, "#conv-topic", "Release day: notes, changelog and cake")

            bob.send("Morning! The release notes are up: https://trio.readthedocs.io")
            alice.wait_message(
                room, "Morning! The release notes are up: https://trio.readthedocs.io"
            )
            alice.send("Great, reading them now")
            bob.wait_message(room, "Great, reading them now")
            bob.send("@alice could you look over the changelog before noon?")
            alice.wait_message(room, "@alice could you look over the changelog before noon?")
            alice.send("/me is on it")
            bob.page.locator(".msg--action .text", has_text="is on it").wait_for()
            for page, text, emoji in (
                (alice, "Morning!", "🎉"),
                (bob, "Morning!", "🎉"),
                (bob, "Great, reading", "👍"),
            ):
                open_menu(page, conv, text, "react")
                page.page.click(
                    f".log[data-conv='{conv}'] .reaction-picker .pick[data-emoji='{emoji}']"
                )
            alice.page.wait_for_function(
                """() => document.querySelector(".reaction[data-emoji='🎉'] .reaction-count")
                       ?.textContent === '2'"""
            )
            message(alice, conv, "Great, reading").locator(".reaction[data-emoji='👍']").wait_for()
            # Something new in #design, while alice looks at #lobby.
            bob.page.click("#room-list li[data-conv='room:design'] button")
            bob.send("The new mockups are in")
            bob.send("Colours next")
            wait_badge(alice, "room:design", "2")

            alice.page.mouse.move(1, 1)  # no message menu under the pointer
            shot = alice.screenshot("screenshot.png")
            assert png_size(shot) == (LAPTOP["width"], LAPTOP["height"])
            if os.environ.get("TRIO_CHAT_UPDATE_SCREENSHOT"):
                shutil.copyfile(shot, README_SCREENSHOT)
            assert png_size(README_SCREENSHOT) == (LAPTOP["width"], LAPTOP["height"])
            # axe-core: nothing wrong with the chat, the rooms dialog, the sign-in card.
            problems = {"chat": axe_violations(alice)}
            alice.page.click("#browse-rooms")
            alice.page.locator("#rooms-found li[data-room='design']").wait_for()
            problems["rooms dialog"] = axe_violations(alice)
            alice.page.click("#rooms-close")
            bob.page.click("#sign-out")
            bob.page.locator("#login").wait_for()
            problems["sign-in card"] = axe_violations(bob)
            assert problems == {"chat": [], "rooms dialog": [], "sign-in card": []}
            no_page_errors(alice, bob)
        finally:
            alice.close()
            bob.close()
