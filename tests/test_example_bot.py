"""``examples/moderation_bot.py`` as a real process: the helper bot answers
``/help`` and ``/report``, the word filter refuses and rewrites, and the
audit log records what happened, in order."""

from __future__ import annotations

import signal
import sys

import trio
from test_cli import ROOT, close_code, run

from trio_chat.testing import open_test_client


async def test_the_moderation_bot_example(tmp_path):
    audit = tmp_path / "audit.log"
    argv = [
        sys.executable,
        str(ROOT / "examples" / "moderation_bot.py"),
        "--port",
        "0",
        "--room",
        "lobby",
        "--word",
        "lemons",
        "--audit",
        str(audit),
    ]
    async with run(argv) as example:
        async with (
            open_test_client(example.url, user="alice") as alice,
            open_test_client(example.url, user="bob") as bob,
        ):
            joined = await alice.join("lobby")
            assert "helper" in joined["payload"]["members"]
            await bob.join("lobby")
            assert (await alice.chat("lobby", "/help"))["type"] == "ack"
            while True:
                answer = await alice.expect("chat")
                if answer["payload"]["user_id"] == "helper":
                    break
            assert answer["payload"]["content"].startswith("I am the helper bot. /help")
            refused = await alice.chat("lobby", "I like LEMONS!", ref="w1")
            assert refused["payload"] == {"code": 451, "message": "not allowed here: lemons"}
            assert refused["ref"] == "w1"
            assert (await alice.chat("lobby", "see http://example.org"))["type"] == "ack"
            await bob.chat("lobby", "/report alice")
            notice = await alice.expect("system")
            while notice["payload"]["event"] != "mute":
                notice = await alice.expect("system")
            assert notice["payload"]["text"] == "alice was muted for 60 s: reported by bob"
            # The helper's word on it, before the server is stopped (else the
            # audit log may end before the helper has said it).
            said_by_helper = await alice.expect("chat")
            while said_by_helper["payload"]["user_id"] != "helper":
                said_by_helper = await alice.expect("chat")
            assert said_by_helper["payload"]["content"] == "alice is muted here for a minute."
            muted = await alice.chat("lobby", "hey")
            assert muted["payload"]["code"] == 403
            example.process.send_signal(signal.SIGINT)
            assert await close_code(alice.ws) == 1001
        with trio.fail_after(10):
            assert await example.process.wait() == 0
    lines = audit.read_text().splitlines()
    said = [line.split("> ", 1)[1] for line in lines if "> " in line]
    assert said == [
        "/help",
        said[1],  # the helper's answer
        "see https://example.org",
        "/report alice",
        "alice is muted here for a minute.",
    ]
    assert said[1].startswith("I am the helper bot.")
    assert "lemons" not in audit.read_text().lower()
    assert "#lobby * alice was muted for 60 s: reported by bob" in lines
    assert lines.index("#lobby * alice was muted for 60 s: reported by bob") < len(lines) - 1
