"""trio-chat.js calls the embedder's commands, in a real headless Chromium.

The server runs in this test's trio thread (``open_test_server``, a real
socket on 127.0.0.1) so that the test registers the handlers; Chromium,
driven by playwright's sync API in a worker thread, loads the page from it
and calls them with ``client.command()``.
"""

from __future__ import annotations

import trio
from browser_support import ChatPage, chromium, require_chromium

from trio_chat import CommandCall, Config, ProtocolError
from trio_chat.testing import open_test_server

SCENARIO = """async () => {
  const { TrioChatClient, ChatError } = await import("/trio-chat.js");
  const client = new TrioChatClient("/ws", { user: "webby" });
  const offline = await client.command("add", [1, 1]).catch((e) => [e instanceof ChatError, e.code]);
  const online = new Promise((resolve) => client.addEventListener("state",
    (e) => e.detail.state === "online" && resolve()));
  client.connect();
  await online;
  const fail = (e) => ({ code: e.code, message: e.message, ref: typeof e.ref });
  const sum = await client.command("add", [2, 3]);
  const who = await client.command("whoami");
  const missing = await client.command("missing").catch(fail);
  const refused = await client.command("refuse", { why: "x" }).catch(fail);
  const together = await Promise.all([1, 2, 3].map((n) => client.command("add", [n, 10])));
  // The server closes the connection while "hold" runs: no result comes.
  const lost = await client.command("hold").catch(fail);
  client.close();
  return { offline, sum, who, missing, refused, together, lost };
}"""


async def test_the_js_client_calls_commands():
    require_chromium()
    running = trio.Event()

    async def add(call: CommandCall) -> object:
        a, b = call.args
        return a + b

    async def whoami(call: CommandCall) -> object:
        return call.sender.user_id

    async def refuse(call: CommandCall) -> object:
        raise ProtocolError(409, f"not now: {call.args['why']}")

    async def hold(call: CommandCall) -> object:
        running.set()
        await trio.sleep_forever()

    async with open_test_server(Config()) as server:
        for name, handler in (("add", add), ("whoami", whoami), ("refuse", refuse), ("hold", hold)):
            server.add_command(name, handler)
        base = f"http://127.0.0.1:{server.port}"

        async def cut_when_running() -> None:
            await running.wait()
            for conn in server.connections("webby"):
                server.close_connection(conn.session_id, 1012, "restarting")

        def scenario() -> dict:
            with chromium() as browser:
                page = ChatPage(browser, base, name="commands").page
                return page.evaluate(SCENARIO)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cut_when_running)
            with trio.fail_after(60):
                result = await trio.to_thread.run_sync(scenario, abandon_on_cancel=True)
    assert result["offline"] == [True, 0]
    assert result["sum"] == 5
    assert result["who"] == "webby"
    assert result["missing"] == {
        "code": 404,
        "message": "no command named 'missing'",
        "ref": "string",
    }
    assert result["refused"]["code"] == 409 and result["refused"]["message"] == "not now: x"
    assert result["together"] == [11, 12, 13]
    assert result["lost"]["code"] == 0
