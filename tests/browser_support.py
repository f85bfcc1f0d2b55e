"""Helpers for the real-browser tests: a chat server subprocess, a TCP proxy
that can cut connections, headless Chromium, and a driver for the chat page.

The browser is driven with playwright's sync API in a worker thread
(`trio.to_thread.run_sync`); the server process and the proxy live in the
test's trio nursery, and the browser thread reaches them through
`trio.from_thread`.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import trio

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 800}

SERVER_COMMAND = [sys.executable, "-m", "trio_chat", "serve", "--host", "127.0.0.1", "--port", "0"]
LISTENING = re.compile(rb"trio-chat listening on ws://([^:/\s]+):(\d+)/ws")


def require_chromium() -> None:
    """Fail (never skip) when the browser is missing: CI installs it."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the playwright package is missing: pip install playwright")


# ----------------------------------------------------------------- server


class ChatServer:
    """`python -m trio_chat serve` on an ephemeral port, with its log kept."""

    def __init__(self, log_path: Path, *extra_args: str):
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.process: trio.Process | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, nursery: trio.Nursery, *, timeout: float = 20) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self._log = open(self.log_path, "wb")  # noqa: ASYNC230, SIM115 - the server's log, open for its life
        self.process = await trio.lowlevel.open_process(
            SERVER_COMMAND + self.extra_args,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        seen = b""
        with trio.move_on_after(timeout):
            while (match := LISTENING.search(seen)) is None:
                chunk = await self.process.stdout.receive_some()
                if not chunk:
                    break
                seen += chunk
        if match is None:
            await self.stop()
            pytest.fail(f"the chat server did not start; output {seen!r}; log:\n{self.log()}")
        self.port = int(match.group(2))
        nursery.start_soon(self._drain_stdout)

    async def restart(self, nursery: trio.Nursery) -> None:
        """Stop gracefully (clients get close 1001), then serve again on the same port."""
        await self.stop()
        await self.start_again(nursery)

    async def start_again(self, nursery: trio.Nursery) -> None:
        """After `stop()`: serve again on the same port."""
        self.extra_args += ["--port", str(self.port)]
        self.log_path = self.log_path.with_name(self.log_path.stem + "-restarted.log")
        await self.start(nursery)

    async def _drain_stdout(self) -> None:
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            while await self.process.stdout.receive_some():
                pass

    async def stop(self) -> None:
        if self.process is None:
            return
        if self.process.returncode is None:
            self.process.terminate()
            with trio.move_on_after(10):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""


# ------------------------------------------------------------------ proxy


class TcpProxy:
    """A TCP relay between the browser and the server that can cut every
    connection it carries (with a reset or a plain close) and can refuse new
    ones for a while, to stand for a network outage."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.port: int | None = None
        self.blocked = False
        self.accepted = 0
        #: Connections reset because the proxy was blocked.
        self.refused = 0
        self._refused_changed = trio.Event()
        self._links: set[_Link] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._relay, listeners, handler_nursery=nursery)

    def drop(self, *, reset: bool = True) -> int:
        """Cut every open connection; returns how many were cut."""
        links = list(self._links)
        for link in links:
            link.cut(reset=reset)
        return len(links)

    def block(self) -> None:
        """Reset every new connection until `unblock()`."""
        self.blocked = True

    def unblock(self) -> None:
        self.blocked = False

    async def wait_refused(self, count: int) -> None:
        """Wait (30 s at most) until *count* connections in all were refused while blocked."""
        with trio.fail_after(30):
            while self.refused < count:
                await self._refused_changed.wait()

    async def _relay(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        if self.blocked:
            await _abort(client)
            self.refused += 1
            self._refused_changed.set()
            self._refused_changed = trio.Event()
            return
        try:
            upstream = await trio.open_tcp_stream(*self.upstream)
        except OSError:
            await _abort(client)
            return
        link = _Link(client, upstream)
        self._links.add(link)
        try:
            await link.run()
        finally:
            self._links.discard(link)


class _Link:
    def __init__(self, client: trio.SocketStream, upstream: trio.SocketStream):
        self.client = client
        self.upstream = upstream
        self.reset = False
        self.scope = trio.CancelScope()

    def cut(self, *, reset: bool) -> None:
        self.reset = reset
        self.scope.cancel()

    async def run(self) -> None:
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pipe, self.client, self.upstream, nursery.cancel_scope)
                nursery.start_soon(self._pipe, self.upstream, self.client, nursery.cancel_scope)
        for stream in (self.client, self.upstream):
            if self.reset:
                await _abort(stream)
            else:
                await trio.aclose_forcefully(stream)

    @staticmethod
    async def _pipe(source, sink, done: trio.CancelScope) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            async for data in source:
                await sink.send_all(data)
        done.cancel()


async def _abort(stream: trio.SocketStream) -> None:
    """Close with a TCP reset rather than a FIN."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.aclose_forcefully(stream)


# ---------------------------------------------------------------- browser


@contextlib.contextmanager
def chromium():
    """A headless Debian Chromium driven by playwright (sync API, this thread)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


class ChatPage:
    """Drives the chat page at GET / through the UI, as a person would."""

    def __init__(
        self,
        browser,
        base_url: str,
        *,
        viewport=LAPTOP,
        name: str = "page",
        timeout_ms: int = 15_000,
        init_script: str | None = None,
        color_scheme: str = "light",
        permissions: list[str] | None = None,
    ):
        self.name = name
        self.context = browser.new_context(
            viewport=viewport, color_scheme=color_scheme, permissions=permissions or []
        )
        if init_script is not None:
            self.context.add_init_script(init_script)
        self.context.set_default_timeout(timeout_ms)
        self.base_url = base_url
        self.problems: list[str] = []
        self.page = self._open_page()

    def _open_page(self):
        page = self.context.new_page()
        name = self.name
        page.on("pageerror", lambda error: self.problems.append(f"{name}: page error: {error}"))
        page.on(
            "console",
            lambda message: (
                message.type == "error" and self.problems.append(f"{name}: console: {message.text}")
            ),
        )
        page.goto(self.base_url + "/")
        return page

    def reopen(self) -> None:
        """Close this tab and open the page again in a new one (same browser, same storage)."""
        self.page.close()
        self.page = self._open_page()

    def new_tab(self, name: str) -> ChatPage:
        """Another tab of the same browser (same storage: signed in as the same user)."""
        tab = object.__new__(ChatPage)
        tab.name, tab.context, tab.base_url, tab.problems = name, self.context, self.base_url, []
        tab.page = tab._open_page()
        return tab

    @property
    def narrow(self) -> bool:
        return self.page.viewport_size["width"] <= 760

    def sign_in(self, user: str = "", room: str = "lobby", *, token: str | None = None) -> None:
        self.page.fill("#login-name", user)
        if token is not None:
            if not self.page.eval_on_selector("#login-token-box", "el => el.open"):
                self.page.click("#login-token-box summary")
            self.page.fill("#login-token", token)
        self.page.fill("#login-room", room)
        self.page.click("#login-submit")

    def join_room(self, room: str) -> None:
        if self.narrow:
            self.page.click("#open-sidebar")
        self.page.fill("#join-room", room)
        self.page.press("#join-room", "Enter")

    def rooms(self) -> list[str]:
        """The rooms listed in the sidebar."""
        return self.page.eval_on_selector_all(
            "#room-list li", "els => els.map(el => el.dataset.conv.slice(5))"
        )

    def wait_state(self, state: str, timeout_ms: int | None = None) -> None:
        self.page.wait_for_selector(
            f"body[data-connection='{state}']", state="attached", timeout=timeout_ms
        )

    def state(self) -> str:
        return self.page.get_attribute("body", "data-connection")

    def send(self, text: str) -> None:
        self.page.fill("#composer-input", text)
        self.page.press("#composer-input", "Enter")

    def set_status(self, status: str) -> None:
        if self.narrow:
            self.page.click("#open-sidebar")
        self.page.select_option("#me-status", status)
        if self.narrow:
            self.page.keyboard.press("Escape")

    def messages(self, room: str) -> list[dict]:
        """The confirmed messages of `room`, in page order: {id, author, text}."""
        return self.page.eval_on_selector_all(
            f".log[data-conv='room:{room}'] .stream .msg",
            """els => els.map(el => ({
                id: el.dataset.id === undefined ? null : Number(el.dataset.id),
                author: el.dataset.author,
                text: el.querySelector('.text').textContent,
            }))""",
        )

    def pending(self, room: str) -> list[str]:
        return self.page.eval_on_selector_all(
            f".log[data-conv='room:{room}'] .outbox .msg",
            "els => els.map(el => el.querySelector('.text').textContent)",
        )

    def notices(self, room: str) -> list[str]:
        return self.page.eval_on_selector_all(
            f".log[data-conv='room:{room}'] .notice .notice-text",
            "els => els.map(el => el.textContent)",
        )

    def wait_message(self, room: str, text: str, timeout_ms: int | None = None) -> None:
        self.page.wait_for_function(
            """([room, text]) => [...document.querySelectorAll(`.log[data-conv="room:${room}"] .stream .msg .text`)]
                   .some(el => el.textContent === text)""",
            arg=[room, text],
            timeout=timeout_ms,
        )

    def wait_notice(self, room: str, text: str) -> None:
        self.page.wait_for_function(
            """([room, text]) => [...document.querySelectorAll(`.log[data-conv="room:${room}"] .notice-text`)]
                   .some(el => el.textContent === text)""",
            arg=[room, text],
        )

    def members(self) -> dict[str, str]:
        """The member list of the open room: user id -> status."""
        return self.page.eval_on_selector_all(
            "#member-list li",
            "els => Object.fromEntries(els.map(el => [el.dataset.user, el.dataset.status]))",
        )

    def wait_member(self, user: str, status: str | None = None, *, present: bool = True) -> None:
        selector = f"#member-list li[data-user='{user}']" + (
            f"[data-status='{status}']" if status else ""
        )
        self.page.wait_for_selector(selector, state="attached" if present else "detached")

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        self.context.close()


# A spy on the page's desktop notifications: each one shown is recorded in
# `window.notes` ({title, body, tag}), before the real one is made.
NOTIFICATION_SPY_JS = """
(() => {
  window.notes = [];
  const Real = window.Notification;
  if (!Real) return;
  window.Notification = class Notification extends Real {
    constructor(title, options = {}) {
      window.notes.push({ title, body: options.body, tag: options.tag });
      super(title, options);
    }
  };
})();
"""

# A record of every frame the page's WebSockets receive, parsed, in
# `window.received`: for waiting until the server has answered something the
# page shows no sign of (a read marker it stored, say).
WIRE_SPY_JS = """
(() => {
  window.received = [];
  const Real = window.WebSocket;
  window.WebSocket = class WebSocket extends Real {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => window.received.push(JSON.parse(event.data)));
    }
  };
})();
"""

# Make the page believe its tab is hidden (or shown again), as when the user
# switched to another tab: `document.hidden` and a `visibilitychange` event.
SET_HIDDEN_JS = """(hidden) => {
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


# A scripted stand-in for the WebSocket class, for tests of the client's own
# logic: the test plays the server by hand. Installed as `globalThis.FakeSocket`.
FAKE_SOCKET_JS = """
globalThis.FakeSocket = class FakeSocket {
  static sockets = [];
  static latest() { return FakeSocket.sockets[FakeSocket.sockets.length - 1]; }
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.readyState = 0;
    FakeSocket.sockets.push(this);
    if (FakeSocket.onCreate) setTimeout(() => FakeSocket.onCreate(this), 0);
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason: "", wasClean: true }), 0);
  }
  /* --- the "server" side --- */
  open() { this.readyState = 1; this.onopen?.({}); }
  fail(code = 1006) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason: "", wasClean: false });
  }
  frame(type, payload, ref) {
    const frame = ref === undefined ? { type, payload } : { type, payload, ref };
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  welcome(user = "alice", limits = {}) {
    this.open();
    this.frame("welcome", {
      session_id: `s${FakeSocket.sockets.length}`,
      user_id: user,
      limits: {
        max_message_bytes: 65536, max_content_chars: 4000,
        rate: { messages: 1000, per_seconds: 1 }, ping_interval_seconds: 54, ...limits,
      },
    });
  }
  sentOf(type) { return this.sent.filter((frame) => frame.type === type); }
};
globalThis.sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
globalThis.until = async (predicate, what = "condition", timeoutMs = 5000) => {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
};
true;
"""


# Every visible piece of text on the page whose contrast against what is
# behind it is under WCAG's 4.5:1 (3:1 for large text), as a list of
# {text, ratio, color, background}. Backgrounds are blended up the tree until
# an opaque one; opacity counts. Decorative, aria-hidden parts are skipped.
CONTRAST_JS = """() => {
  const PLACEHOLDERS = false;
  const parse = (value) => {
    const m = value.match(/rgba?\\(([\\d.]+),? ([\\d.]+),? ([\\d.]+)(?:,? ?\\/? ?([\\d.]+))?\\)/);
    if (!m) throw new Error(`cannot read the colour ${value}`);
    return [Number(m[1]), Number(m[2]), Number(m[3]), m[4] === undefined ? 1 : Number(m[4])];
  };
  const over = (top, bottom) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  };
  const luminance = ([r, g, b]) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const color = parse(getComputedStyle(node).backgroundColor);
      if (color[3] > 0) layers.push(color);
      if (color[3] >= 1) break;
    }
    let result = matchMedia("(prefers-color-scheme: dark)").matches ? [0, 0, 0, 1] : [255, 255, 255, 1];
    for (const layer of layers.reverse()) result = over(layer, result);
    return result;
  };
  const opacity = (el) => {
    let value = 1;
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) value *= Number(getComputedStyle(node).opacity);
    return value;
  };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest("[aria-hidden='true'], svg, noscript, option")) continue;
    if (!el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility !== "visible") continue;
    let text, color;
    const field = ["INPUT", "TEXTAREA"].includes(el.tagName);
    if (PLACEHOLDERS) {
      if (!field || el.value || !el.placeholder) continue;
      text = el.placeholder;
      color = parse(getComputedStyle(el, "::placeholder").color);
    } else if (field || el.tagName === "SELECT") {
      text = el.tagName === "SELECT" ? el.selectedOptions[0]?.textContent : el.value;
      color = parse(style.color);
    } else {
      text = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join("").trim();
      color = parse(style.color);
    }
    if (!text) continue;
    const bg = background(el);
    const fg = over([color[0], color[1], color[2], color[3] * opacity(el)], bg);
    const [hi, lo] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      low.push({ text: text.slice(0, 40), ratio: Math.round(ratio * 100) / 100,
                 color: style.color, background: `rgb(${bg.slice(0, 3).map(Math.round).join(", ")})`,
                 element: `${el.tagName.toLowerCase()}.${[...el.classList].join(".")}` });
    }
  }
  return low;
}"""
