"""The hub actor: delivery paths, slow consumers, ephemeral drops, batching.

Rules of this module: outlets sit on real transports -- a socket pair (the
hub's direct, non-blocking write path) or a memory stream (no direct write,
so every frame takes the bounded-queue path) -- and the tests read what
actually arrived.  Synchronisation is by ``wait_all_tasks_blocked`` (the hub
has handled everything sent to it), never by sleeping; every wait on a socket
is under ``fail_after``.
"""

from __future__ import annotations

import logging
import socket

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

from trio_chat._frames import text_frame
from trio_chat._hub import SLOW_CONSUMER, Hub, Outlet
from trio_chat._hub_state import HubState
from trio_chat._metrics import count_tasks
from trio_chat._protocol import (
    Chat,
    ChatAck,
    ChatMessage,
    Direct,
    ErrorEvent,
    Join,
    Joined,
    Presence,
    PresenceUpdate,
    ProtocolError,
    ServerEvent,
    System,
    Typing,
    TypingNotice,
    parse_server_frame,
)
from trio_chat._stream import WireStream


def split_frames(data: bytes) -> tuple[list[str], bytes]:
    """Whole unmasked server text frames in *data*, and the incomplete rest."""
    texts = []
    i = 0
    while len(data) - i >= 2:
        assert data[i] == 0x81 and not data[i + 1] & 0x80, data[i : i + 2]
        n, head = data[i + 1] & 0x7F, 2
        if n == 126:
            n, head = int.from_bytes(data[i + 2 : i + 4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(data[i + 2 : i + 10], "big"), 10
        if len(data) - i < head + n:
            break
        texts.append(data[i + head : i + head + n].decode("utf-8"))
        i += head + n
    return texts, data[i:]


def parse_all(data: bytes) -> list[ServerEvent]:
    texts, rest = split_frames(data)
    assert rest == b""
    return [parse_server_frame(t) for t in texts]


class Peer:
    """One connection as the hub sees it (its outlet) and as its client does."""

    def __init__(self, hub: Hub, user: str, queue_size: int) -> None:
        self.hub = hub
        self.user = user
        self.kills = 0
        self.outlet = Outlet(self.make_stream(), queue_size, self._killed, hub.counters, user)

    def make_stream(self) -> WireStream:
        raise NotImplementedError

    def _killed(self) -> None:
        self.kills += 1

    async def connect(self, *rooms: str) -> None:
        await self.hub.connect(self.outlet, self.user)
        for room in rooms:
            await self.hub.submit(self.outlet, Join(room))

    async def send(self, event: object) -> None:
        """Send a client event and let the hub handle it."""
        await self.hub.submit(self.outlet, event)  # type: ignore[arg-type]
        await wait_all_tasks_blocked()

    async def take(self) -> tuple[bytes, int, int]:
        """Take what waits in the outlet's queue, as its writer task would.

        Returns the bytes, their frame count, and how many pushes they were.
        """
        queue = self.outlet.queue
        chunks = len(queue)
        if not chunks:
            return b"", 0, 0
        data, frames = await queue.take_all()
        queue.written(frames)
        return data, frames, chunks


class QueuePeer(Peer):
    """Over a memory stream: the hub cannot write directly, so it queues."""

    def make_stream(self) -> WireStream:
        self.client, server = trio.testing.memory_stream_pair()
        return WireStream(server)

    async def events(self) -> list[ServerEvent]:
        data, _, _ = await self.take()
        return parse_all(data)


class SocketPeer(Peer):
    """Over a socket pair: the hub writes straight to the socket."""

    def make_stream(self) -> WireStream:
        ours, self.client = socket.socketpair()
        self.client.setblocking(False)
        self.buffer = b""
        return WireStream(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))

    def raw(self) -> bytes:
        """Every byte the hub has written so far (it writes synchronously)."""
        data = b""
        while True:
            try:
                chunk = self.client.recv(1 << 20)
            except BlockingIOError:
                return data
            if not chunk:
                return data
            data += chunk

    async def events(self) -> list[ServerEvent]:
        return parse_all(self.raw())

    async def receive(self, count: int) -> list[ServerEvent]:
        """Wait for *count* more frames (for when a writer task is involved)."""
        texts: list[str] = []
        with trio.fail_after(10):
            while len(texts) < count:
                await trio.lowlevel.wait_readable(self.client)
                self.buffer += self.raw()
                more, self.buffer = split_frames(self.buffer)
                texts += more
        assert len(texts) == count
        return [parse_server_frame(t) for t in texts]


async def writer(peer: Peer) -> None:
    """The connection's writer task: drain the queue into the stream."""
    queue = peer.outlet.queue
    while True:
        try:
            data, frames = await queue.take_all()
        except trio.EndOfChannel:
            return
        await peer.outlet.stream.send_frames(data)
        queue.written(frames)


async def collector(peer: QueuePeer, into: list[ServerEvent]) -> None:
    """A fast consumer on the queue path: takes frames as soon as they come."""
    queue = peer.outlet.queue
    while True:
        try:
            data, frames = await queue.take_all()
        except trio.EndOfChannel:
            return
        queue.written(frames)
        into.extend(parse_all(data))


@pytest.fixture
async def hub(nursery: trio.Nursery) -> Hub:
    hub = Hub(HubState())
    await nursery.start(hub.run)
    return hub


def chats(events: list[ServerEvent]) -> list[int]:
    return [e.id for e in events if isinstance(e, ChatMessage)]


# --------------------------------------------------------------------------
# Delivery paths and encoding


async def test_direct_and_queued_paths_get_the_same_bytes(hub: Hub) -> None:
    sock, q1, q2, sender = (
        SocketPeer(hub, "ann", 16),
        QueuePeer(hub, "bob", 16),
        QueuePeer(hub, "cy", 16),
        QueuePeer(hub, "dee", 16),
    )
    for peer in (sock, q1, q2, sender):
        await peer.connect("lobby")
    await wait_all_tasks_blocked()
    for peer in (sock, q1, q2, sender):
        await peer.events()
    assert sock.outlet.queued == 0  # written directly

    await sender.send(Chat("lobby", "hello", "c1"))
    assert q1.outlet.queued == 1 and q2.outlet.queued == 1
    frame1, frames1, pushes1 = await q1.take()
    frame2, frames2, pushes2 = await q2.take()
    assert frames1 == frames2 == pushes1 == pushes2 == 1
    assert frame1 is frame2  # encoded once for the whole room
    assert sock.raw() == frame1  # the same bytes on the direct path
    (message,) = parse_all(frame1)
    assert message == ChatMessage(1, "lobby", "dee", "hello", message.time)
    assert await sender.events() == [ChatAck(1, "lobby", message.time, "c1")]
    assert sock.outlet.queued == 0 and not sock.outlet.closed


async def test_hub_drains_its_inbox_before_flushing(nursery: trio.Nursery) -> None:
    hub = Hub(HubState())
    a, b, s = QueuePeer(hub, "ann", 16), QueuePeer(hub, "bob", 16), SocketPeer(hub, "cy", 16)
    # Everything is waiting in the inbox before the hub first runs.
    for peer in (a, b, s):
        await peer.connect("r")
    for i in range(3):
        await hub.submit(a.outlet, Chat("r", f"m{i}"))
    await nursery.start(hub.run)
    await wait_all_tasks_blocked()

    # One joined write per recipient, holding every frame of that wake.
    data, frames, pushes = await b.take()
    events = parse_all(data)
    assert pushes == 1 and frames == len(events) == 5
    assert isinstance(events[0], Joined) and events[1] == System("join", "r", "cy")
    assert chats(events) == [1, 2, 3]
    data, frames, pushes = await a.take()
    assert pushes == 1 and frames == len(parse_all(data)) == 6  # joined, 2 system, 3 acks
    assert chats(await s.events()) == [1, 2, 3]


async def test_frames_stay_in_order_across_direct_and_queued_writes(
    hub: Hub, nursery: trio.Nursery
) -> None:
    # A tiny socket buffer: direct writes soon leave a tail, later frames
    # queue behind it, and the writer finishes them -- in order, whole.
    slowish = SocketPeer(hub, "ann", 1000)
    slowish.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slowish.outlet.stream.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    nursery.start_soon(writer, slowish)
    sender = QueuePeer(hub, "bob", 1000)
    await slowish.connect("r")
    await sender.connect("r")
    await wait_all_tasks_blocked()
    assert (await slowish.receive(2))[1] == System("join", "r", "bob")
    for i in range(200):
        await hub.submit(sender.outlet, Chat("r", f"{i}:" + "x" * 300))
        if i % 7 == 0:
            await wait_all_tasks_blocked()
    received = await slowish.receive(200)
    assert [e.content.split(":")[0] for e in received] == [str(i) for i in range(200)]
    assert chats(received) == list(range(1, 201))
    assert slowish.kills == 0


# --------------------------------------------------------------------------
# Slow consumers


async def test_slow_consumer_is_marked_1013_and_others_get_everything(
    hub: Hub, nursery: trio.Nursery
) -> None:
    slow = QueuePeer(hub, "slow", 8)  # nobody ever reads it
    fast = QueuePeer(hub, "fast", 8)
    fast_events: list[ServerEvent] = []
    nursery.start_soon(collector, fast, fast_events)
    sock = SocketPeer(hub, "sock", 8)
    sender = QueuePeer(hub, "sender", 8)
    sender_events: list[ServerEvent] = []
    nursery.start_soon(collector, sender, sender_events)
    for peer in (slow, fast, sock, sender):
        await peer.connect("r")
    await wait_all_tasks_blocked()

    for i in range(40):
        await sender.send(Chat("r", f"m{i}"))
        assert slow.outlet.queued <= 8

    # Marked for closing with 1013: its queue is dropped and ended, which
    # ends its writer, whose connection then closes with the outlet's code.
    assert slow.outlet.closed and slow.outlet.close_code == SLOW_CONSUMER == 1013
    assert slow.outlet.queue.closed and slow.outlet.queued == 0
    with pytest.raises(trio.EndOfChannel):
        await slow.outlet.queue.take_all()
    assert hub.counters.slow_consumers == 1
    assert chats(fast_events) == list(range(1, 41))
    assert chats(await sock.events()) == list(range(1, 41))
    assert [e.id for e in sender_events if isinstance(e, ChatAck)] == list(range(1, 41))
    for peer in (fast, sock, sender):
        assert peer.kills == 0 and not peer.outlet.closed

    # Once its owner closes it, the room learns it left.
    hub.depart(slow.outlet)
    await wait_all_tasks_blocked()
    assert System("leave", "r", "slow") in fast_events
    assert hub.state.members("r") == ["fast", "sock", "sender"]


async def test_a_full_queue_is_not_yet_overflowed(hub: Hub) -> None:
    lag, sender = QueuePeer(hub, "lag", 4), QueuePeer(hub, "sender", 64)
    await lag.connect("r")
    await sender.connect("r")
    await wait_all_tasks_blocked()
    await lag.events()
    for _ in range(4):
        await sender.send(Chat("r", "x"))
    assert lag.outlet.queued == 4 and lag.kills == 0
    await sender.send(Chat("r", "x"))
    assert lag.outlet.closed and lag.outlet.close_code == 1013


# --------------------------------------------------------------------------
# Ephemeral events


async def test_ephemeral_events_are_dropped_past_half_full_and_never_cause_1013(hub: Hub) -> None:
    lag = QueuePeer(hub, "lag", 8)  # half is 4
    bob = SocketPeer(hub, "bob", 8)  # direct writes: never queued
    cy = SocketPeer(hub, "cy", 64)
    for peer in (lag, bob, cy):
        await peer.connect("r")
    await wait_all_tasks_blocked()
    for peer in (lag, bob, cy):
        await peer.events()

    for i in range(4):
        await bob.send(Chat("r", f"m{i}"))
    assert lag.outlet.queued == 4  # exactly half: not *more* than half
    await cy.send(Typing("r"))
    assert lag.outlet.queued == 5 and hub.counters.ephemeral_dropped == 0
    await cy.send(Typing("r"))
    await cy.send(Presence("away"))
    assert lag.outlet.queued == 5
    assert hub.counters.ephemeral_dropped == 2
    assert [e for e in await bob.events() if not isinstance(e, ChatAck)] == [
        TypingNotice("r", "cy")
    ] * 2 + [PresenceUpdate("cy", "away")]

    for _ in range(100):
        await cy.send(Typing("r"))
        await cy.send(Presence("busy", "call"))
    assert lag.kills == 0 and not lag.outlet.closed
    assert lag.outlet.queued == 5
    assert hub.counters.ephemeral_dropped == 202

    events = await lag.events()
    assert chats(events) == [1, 2, 3, 4]
    assert events[4] == TypingNotice("r", "cy")
    assert len(events) == 5
    # Drained, it gets ephemeral events again.
    await cy.send(Typing("r"))
    assert await lag.events() == [TypingNotice("r", "cy")]


async def test_ephemeral_frames_in_a_batch_never_tip_it_into_1013(nursery: trio.Nursery) -> None:
    hub = Hub(HubState())
    lag, bob = QueuePeer(hub, "lag", 8), QueuePeer(hub, "bob", 64)
    for _ in range(2):  # the connection's own frames (say, error replies)
        assert lag.outlet.push(text_frame(ErrorEvent(400, "bad frame").to_json()))
    # One wake: joined + system (2 frames, at half), typing, then 4 chats:
    # 2 queued + 7 would overflow 8; without the typing notice it fits.
    await lag.connect("r")
    await bob.connect("r")
    await hub.submit(bob.outlet, Typing("r"))
    for i in range(4):
        await hub.submit(bob.outlet, Chat("r", f"m{i}"))
    await nursery.start(hub.run)
    await wait_all_tasks_blocked()
    assert lag.kills == 0 and lag.outlet.close_code is None
    assert hub.counters.ephemeral_dropped == 1
    events = await lag.events()
    assert len(events) == 2 + 6
    assert chats(events) == [1, 2, 3, 4]
    assert not any(isinstance(e, TypingNotice) for e in events)


# --------------------------------------------------------------------------
# Errors


async def test_fault_hook_error_gives_500_and_the_hub_carries_on(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    def fault(event: object) -> None:
        if isinstance(event, Chat) and event.content == "boom":
            raise RuntimeError("injected fault")

    hub.fault_hook = fault
    a, b = QueuePeer(hub, "ann", 16), SocketPeer(hub, "bob", 16)
    await a.connect("r")
    await b.connect("r")
    await wait_all_tasks_blocked()
    await a.events()
    await b.events()

    with caplog.at_level(logging.ERROR, logger="trio_chat.hub"):
        await a.send(Chat("r", "boom", "c1"))
    assert await a.events() == [ErrorEvent(500, "internal server error", "c1")]
    assert await b.events() == []
    assert hub.counters.errors == {500: 1}
    assert any(r.exc_info and "injected fault" in str(r.exc_info[1]) for r in caplog.records)

    await a.send(Chat("r", "fine", "c2"))
    assert chats(await b.events()) == [1]  # the fault used no id
    assert [type(e) for e in await a.events()] == [ChatAck]
    assert not a.outlet.closed and not b.outlet.closed


async def test_refusals_go_to_the_offender_only(hub: Hub) -> None:
    a, b = QueuePeer(hub, "ann", 16), QueuePeer(hub, "bob", 16)
    await a.connect("r")
    await b.connect("r")
    await wait_all_tasks_blocked()
    await a.events()
    await b.events()
    await a.send(Chat("elsewhere", "x", "c1"))
    await a.send(Direct("ann", "x", "d1"))  # to oneself
    assert [(e.code, e.ref) for e in await a.events()] == [(403, "c1"), (400, "d1")]
    assert await b.events() == []
    assert hub.counters.errors == {403: 1, 400: 1}


async def test_embedder_calls(hub: Hub) -> None:
    a = QueuePeer(hub, "ann", 16)
    await a.connect("r")
    await wait_all_tasks_blocked()
    await a.events()
    ack = await hub.publish("r", "from the server", user_id="server")
    assert ack.id == 1
    assert await a.events() == [ChatMessage(1, "r", "server", "from the server", ack.time)]
    with pytest.raises(ProtocolError) as info:
        await hub.direct("server", "x", user_id="server")
    assert info.value.code == 400
    with pytest.raises(ProtocolError) as info:
        await hub.publish("absent", "x", user_id="server", create=False)
    assert info.value.code == 404
    dack = await hub.direct("ann", "psst", user_id="server", ref="d")
    assert dack.ref == "d" and [e.type for e in await a.events()] == ["direct"]


async def test_departures_are_never_lost(nursery: trio.Nursery) -> None:
    hub = Hub(HubState(), inbox_size=1)
    await nursery.start(hub.run)
    a, b, c, d = (QueuePeer(hub, user, 16) for user in ("ann", "bob", "cy", "dee"))
    for peer in (a, b, c, d):
        await peer.connect("r")
    await wait_all_tasks_blocked()
    await d.events()
    hub.depart(a.outlet)  # handed straight to the waiting hub
    hub.depart(b.outlet)  # fills the one-slot inbox
    hub.depart(c.outlet)  # inbox full: kept aside, handled in the same wake
    await wait_all_tasks_blocked()
    assert await d.events() == [System("leave", "r", user) for user in ("ann", "bob", "cy")]
    assert hub.state.connections_in("r") == [d.outlet]
    # Commands from a departed connection are ignored.
    await a.send(Chat("r", "x"))
    assert hub.state.last_id("r") == 0 and await d.events() == []


async def test_a_broken_socket_is_killed_without_a_close_code(hub: Hub) -> None:
    a, b, c = SocketPeer(hub, "ann", 16), QueuePeer(hub, "bob", 16), QueuePeer(hub, "cy", 16)
    for peer in (a, b, c):
        await peer.connect("r")
    await wait_all_tasks_blocked()
    a.client.close()  # the client vanished
    await c.send(Chat("r", "x"))
    assert a.kills == 1 and a.outlet.closed and a.outlet.close_code is None
    assert chats(await b.events()) == [1]
    assert hub.counters.slow_consumers == 0


# --------------------------------------------------------------------------
# Structured concurrency


async def test_cancelling_the_hub_leaves_no_task_behind() -> None:
    before = count_tasks()
    async with trio.open_nursery() as nursery:
        hub = Hub(HubState())
        await nursery.start(hub.run)
        assert count_tasks() == before + 1
        a, b = QueuePeer(hub, "ann", 4), SocketPeer(hub, "bob", 4)
        await a.connect("r")
        await b.connect("r")
        for _ in range(10):  # overflow a, on the way
            await hub.submit(b.outlet, Chat("r", "x"))
        await wait_all_tasks_blocked()
        assert a.outlet.close_code == 1013
        nursery.cancel_scope.cancel()
    assert count_tasks() == before
    assert not nursery.child_tasks


async def test_embedder_text_that_cannot_be_sent_is_refused_before_it_is_stored(hub: Hub) -> None:
    a = QueuePeer(hub, "ann", 16)
    await a.connect("r")
    await wait_all_tasks_blocked()
    await a.events()
    with pytest.raises(ProtocolError) as info:
        await hub.publish("r", "half a pair: \ud83d", user_id="server")
    assert (info.value.code, info.value.message[:9]) == (400, "content: ")
    with pytest.raises(ProtocolError) as info:
        await hub.direct("ann", "\udc00", user_id="server")
    assert info.value.code == 400
    assert hub.state.last_id("r") == 0
    # The hub is unharmed and the room's history stays sendable.
    await hub.publish("r", "fine", user_id="server")
    b = QueuePeer(hub, "bob", 16)
    await b.connect("r")
    await wait_all_tasks_blocked()
    events = await b.events()
    assert [m["content"] for m in events[-1].history] == ["fine"]
