"""trio-chat.js's requests for edits, reactions, history, conversations, read
markers, rooms and topics, in a real headless Chromium.

The test plays the server by hand through ``FakeSocket`` (browser_support):
these check the client's own logic (which answer settles which promise,
what it resumes after a reconnect, how read markers are throttled and
flushed); the
end-to-end tests against a real server are in test_browser_features.py.
"""

from __future__ import annotations

from browser_support import FAKE_SOCKET_JS, ChatPage, chromium
from test_browser import chat_server, in_browser, run_scenario

__all__ = ["chat_server"]  # the fixture, shared with test_browser.py

SCENARIO = """async () => {
  const { TrioChatClient, ChatError } = await import("/trio-chat.js");
  FakeSocket.sockets = [];
  const events = [];
  const client = new TrioChatClient("ws://chat.invalid/ws", {
    user: "alice", WebSocket: FakeSocket, watchNetwork: false, baseDelayMs: 5, maxDelayMs: 5 });
  for (const type of ["edit", "delete", "reaction", "read", "topic", "direct", "typing", "conversations", "joined"]) {
    client.addEventListener(type, (e) => events.push([type, e.detail]));
  }
  const fail = (e) => ({ code: e.code, message: e.message, chat: e instanceof ChatError });
  const check = {};
  check.offline = await client.edit("lobby", 1, "x").catch(fail);

  const joining = client.join("lobby");
  client.connect();
  await until(() => FakeSocket.sockets.length === 1, "socket 1");
  let s = FakeSocket.latest();
  s.welcome("alice", { reactions: ["👍", "🎉"] });
  const join = s.sentOf("join")[0];
  s.frame("joined", { room: "lobby", members: ["alice"], history: [], truncated: false,
                      read: 3, unread: 2, mentions: 1, topic: "plans" }, join.ref);
  check.joined = await joining;

  // A request is answered by the event it caused, with its ref.
  const editing = client.edit("lobby", 4, "fixed");
  const edit = s.sentOf("edit")[0];
  check.editFrame = edit.payload;
  s.frame("edit", { room: "lobby", id: 4, user_id: "alice", content: "fixed", edited: "2026-12-02T10:00:00.000Z" }, edit.ref);
  check.edit = await editing;
  const deleting = client.delete({ with: "bob" }, 2);
  const del = s.sentOf("delete")[0];
  check.deleteFrame = del.payload;
  s.frame("error", { code: 403, message: "you can delete only your own messages" }, del.ref);
  check.deleteRefused = await deleting.catch(fail);
  const reacting = client.react("lobby", 4, "🎉");
  const react = s.sentOf("react")[0];
  s.frame("reaction", { room: "lobby", id: 4, emoji: "🎉", user_id: "alice", on: true, count: 1 }, react.ref);
  check.reaction = await reacting;
  const topic = client.setTopic("lobby", "launch");
  const topicFrame = s.sentOf("topic")[0];
  s.frame("system", { event: "topic", room: "lobby", user_id: "alice", text: "launch" }, topicFrame.ref);
  check.topic = await topic;
  const rooms = client.findRooms("lau");
  check.roomsGetter = client.rooms;
  const roomsFrame = s.sentOf("rooms")[0];
  check.roomsFrame = roomsFrame.payload;
  s.frame("rooms", { rooms: [{ room: "lobby", members: 1, topic: "launch" }], truncated: false }, roomsFrame.ref);
  check.rooms = await rooms;
  check.emptyEdit = await client.edit("lobby", 4, "").catch(fail);

  // Conversations: the list, then one opened (its history delivered once).
  const listing = client.conversations();
  const convFrame = s.sentOf("conversations")[0];
  s.frame("conversations", { conversations: [{ with: "bob", last_id: 2, read: 1, unread: 1, mentions: 0,
    last: { id: 2, from: "bob", to: "alice", content: "two", time: "2026-12-02T10:00:02.000Z" } }], truncated: false }, convFrame.ref);
  check.conversations = await listing;
  check.peers = client.conversationPeers;
  const opening = client.openConversation("bob");
  const hist = s.sentOf("history")[0];
  check.historyFrame = hist.payload;
  s.frame("history", { with: "bob", truncated: false, messages: [
    { id: 1, from: "alice", to: "bob", content: "one", time: "2026-12-02T10:00:01.000Z" },
    { id: 2, from: "bob", to: "alice", content: "two", time: "2026-12-02T10:00:02.000Z" }] }, hist.ref);
  check.opened = await opening;
  s.frame("direct", { id: 2, from: "bob", to: "alice", content: "two", time: "2026-12-02T10:00:02.000Z" });  // a duplicate
  s.frame("direct", { id: 3, from: "bob", to: "alice", content: "three", time: "2026-12-02T10:00:03.000Z" });
  s.frame("direct", { id: 4, from: "alice", to: "bob", content: "from my other tab", time: "2026-12-02T10:00:04.000Z" });
  const dm = client.direct("bob", "five");
  s.frame("ack", { id: 5, to: "bob", time: "2026-12-02T10:00:05.000Z" }, s.sentOf("direct")[0].ref);
  check.dmAck = await dm;
  client.typingTo("bob");
  s.frame("typing", { with: "bob", user_id: "bob" });

  // Read markers: the first goes at once, later ones at most once a second
  // (the latest wins), and a marker never goes back.
  client.markRead("lobby", 5);
  client.markRead("lobby", 6);
  client.markRead("lobby", 7);
  client.markRead("lobby", 2);
  client.markRead({ with: "bob" }, 3);
  check.readsAtOnce = s.sentOf("read").map((f) => f.payload);
  check.readRefs = s.sentOf("read").every((f) => typeof f.ref === "string");
  await until(() => s.sentOf("read").length === 3, "the throttled marker", 3000);
  check.reads = s.sentOf("read").map((f) => f.payload);
  s.frame("read", { room: "lobby", id: 9 });
  client.markRead("lobby", 8);  // the server is further already
  await sleep(1100);
  check.readsAfterServer = s.sentOf("read").length;
  client.markRead("lobby", 10);  // a second later: at once
  client.markRead("lobby", 11);  // held for its second...
  const held = s.sentOf("read").length;
  client.flushReads();  // ...unless the page is going away
  check.flushed = [held, s.sentOf("read").slice(-2).map((f) => f.payload.id)];
  // A server without read markers (the Redis store: 501) is not asked again, and that is no error.
  const errors = [];
  client.addEventListener("error", (e) => errors.push(e.detail));
  client.markRead({ with: "bob" }, 4);
  await until(() => s.sentOf("read").length === 6, "the marker for bob", 3000);
  s.frame("error", { code: 501, message: "not available with the Redis store" }, s.sentOf("read")[5].ref);
  client.markRead({ with: "bob" }, 5);
  await sleep(1100);
  check.readsAfter501 = s.sentOf("read").length;
  check.errors = errors;

  // A reconnect resumes the opened conversation after the newest id seen.
  s.fail(1006);
  await until(() => FakeSocket.sockets.length === 2, "socket 2");
  s = FakeSocket.latest();
  s.welcome();
  check.resume = s.sentOf("history").map((f) => f.payload);
  s.frame("history", { with: "bob", truncated: false, messages: [
    { id: 5, from: "alice", to: "bob", content: "five", time: "2026-12-02T10:00:05.000Z" },
    { id: 6, from: "bob", to: "alice", content: "six, while you were away", time: "2026-12-02T10:00:06.000Z" }] },
    s.sentOf("history")[0].ref);
  await until(() => events.some(([type, d]) => type === "direct" && d.id === 6), "the resumed message");
  client.close();
  check.events = events.filter(([type]) => type !== "joined").map(([type, d]) =>
    type === "direct" ? [type, d.id, d.peer, d.own, d.replayed, d.content] : [type, d]);
  check.typingFrame = s === FakeSocket.latest() ? FakeSocket.sockets[0].sentOf("typing").map((f) => f.payload) : null;
  return check;
}"""


async def test_the_js_client_requests_and_resumes_conversations(chat_server):
    await in_browser(client_features, chat_server.base_url)


def client_features(server_url: str) -> None:
    with chromium() as browser:
        page = ChatPage(browser, server_url, name="features").page
        page.evaluate(FAKE_SOCKET_JS)
        check = run_scenario(page, SCENARIO)
    assert check["offline"] == {"code": 0, "message": "not connected", "chat": True}
    assert check["joined"] == {
        "room": "lobby",
        "members": ["alice"],
        "truncated": False,
        "read": 3,
        "unread": 2,
        "mentions": 1,
        "topic": "plans",
    }
    assert check["editFrame"] == {"room": "lobby", "id": 4, "content": "fixed"}
    assert check["edit"]["content"] == "fixed"
    assert check["deleteFrame"] == {"with": "bob", "id": 2}
    assert check["deleteRefused"]["code"] == 403
    assert check["reaction"] == {
        "room": "lobby",
        "id": 4,
        "emoji": "🎉",
        "user_id": "alice",
        "on": True,
        "count": 1,
    }
    assert check["topic"]["text"] == "launch"
    assert check["roomsFrame"] == {"query": "lau"}
    assert check["roomsGetter"] == ["lobby"]
    assert check["rooms"]["rooms"][0]["room"] == "lobby"
    assert check["emptyEdit"]["code"] == 400
    assert check["conversations"]["conversations"][0]["with"] == "bob"
    assert check["peers"] == ["bob"]
    assert check["historyFrame"] == {"with": "bob"}
    assert check["opened"] == {"with": "bob", "truncated": False}
    assert check["dmAck"]["id"] == 5
    assert check["readsAtOnce"] == [{"room": "lobby", "id": 5}, {"with": "bob", "id": 3}]
    assert check["reads"][2] == {"room": "lobby", "id": 7}
    assert check["readsAfterServer"] == 3
    assert check["readRefs"] is True
    assert check["flushed"] == [4, [10, 11]]
    assert check["readsAfter501"] == 6
    assert check["errors"] == []
    assert check["resume"] == [{"with": "bob", "since": 5}]
    directs = [event[1:] for event in check["events"] if event[0] == "direct"]
    assert directs == [
        [1, "bob", True, True, "one"],
        [2, "bob", False, True, "two"],
        [3, "bob", False, False, "three"],
        [4, "bob", True, False, "from my other tab"],
        [5, "bob", True, False, "five"],
        [6, "bob", False, True, "six, while you were away"],
    ]
    kinds = [event[0] for event in check["events"]]
    assert kinds.count("edit") == 1 and kinds.count("reaction") == 1
    assert ["topic", {"room": "lobby", "topic": "launch", "user_id": "alice"}] in check["events"]
    assert ["typing", {"with": "bob", "user_id": "bob"}] in check["events"]
    assert ["read", {"room": "lobby", "id": 9}] in check["events"]
    assert check["typingFrame"] == [{"with": "bob"}]
