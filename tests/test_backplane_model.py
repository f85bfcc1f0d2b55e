"""The Redis store's state, beside a reference model, over a real Redis.

:class:`ClusterMachine` runs the :class:`ClusterState` of two processes
(``n1`` and ``n2``) against one real ``redis-server`` with random commands
-- connect, disconnect, join (with and without ``since``), leave, chat (with
fresh and repeated refs), typing, edits, deletes, reactions, history
pages and topics, from connections on either process -- and checks each command's
deliveries, to every connection on both processes, against a model like the
hub's (test_hub_state.py): ids gap-free per room whichever process
publishes, members and their joins and leaves across the cluster, each
retained message as it is now, each room's topic.

Each step runs as the backplane runs (test_backplane.py has the rules of
its tests): the ops a state queues go to Redis in one pipeline
(:class:`~trio_chat._backplane_commands.Commands`), their results come back
to it, and the pub/sub messages Redis sent are handed to both states, until
neither has anything left to do.  Pub/sub messages are read up to a barrier
message published after them (Redis sends a subscriber its messages in
order): nothing here waits for time to pass.  Trio runs the Redis client
in a thread of its own (:class:`RedisLink`), so that the machine stays
synchronous.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import trio
from hypothesis import event as label, settings, strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from redis_helpers import RedisServer
from test_hub_state import (
    EDIT_WINDOW,
    EDITS,
    EMOJI,
    REFS,
    Kept,
    RoomModel,
    deleted,
    edited,
    reacted,
)

from trio_chat._backplane_commands import MIN_RETAIN, Commands
from trio_chat._backplane_lua import render_scripts
from trio_chat._backplane_ops import Op
from trio_chat._backplane_state import ClusterState
from trio_chat._conversations import conversation_name
from trio_chat._mentions import find_mentions
from trio_chat._message_events import HistoryPage
from trio_chat._message_frames import Delete, Edit, React, ReadHistory
from trio_chat._message_ops import DEFAULT_REACTIONS
from trio_chat._protocol import (
    Chat,
    ChatAck,
    ChatMessage,
    Direct,
    DirectAck,
    DirectMessage,
    Join,
    Joined,
    Leave,
    Left,
    ProtocolError,
    ServerEvent,
    System,
    Typing,
    TypingNotice,
    format_time,
)
from trio_chat._room_core import Delivery
from trio_chat._room_frames import SetTopic

PREFIX = "model:"
NODES = ("n1", "n2")
USERS = ["ann", "bob", "cy"]
ROOMS = ["r1", "r2", "r3"]
#: Stands for "a room this connection is in", so that most frames succeed.
MINE = "<mine>"
room_choice = st.sampled_from([MINE, MINE, MINE, *ROOMS])
CONTENTS = ["hi", "hi @bob", "x" * 40]
#: Seconds a process stays registered without a heartbeat (the machine sends
#: none): longer than any example.
NODE_TTL = 3600.0

Expected = list[tuple[ServerEvent, list[int]]]


# --------------------------------------------------------------------------
# Redis, for a synchronous machine


class RedisLink:
    """A coredis client of one Redis, with the backplane's scripts loaded and
    a subscription to every channel of :data:`PREFIX`, served by trio in a
    thread of its own; each method is called from the machine's thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shas: dict[str, str] = {}
        self._client: Any = None
        self._pubsub: Any = None
        ready: queue.Queue[tuple[trio.lowlevel.TrioToken, Any] | BaseException] = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        started = ready.get(timeout=30)
        if isinstance(started, BaseException):
            raise started
        self._token, self._stop = started

    def _run(self, ready: queue.Queue[Any]) -> None:
        try:
            trio.run(self._serve, ready)
        except BaseException as exc:
            ready.put(exc)

    async def _serve(self, ready: queue.Queue[Any]) -> None:
        import coredis

        client = coredis.Redis.from_url(self.url, decode_responses=True)
        async with client:
            for name, lua in render_scripts().items():
                self.shas[name] = await client.script_load(lua)
            pubsub = client.pubsub(
                patterns=[PREFIX + "ch:*", PREFIX + "barrier"], ignore_subscribe_messages=True
            )
            async with pubsub:
                self._client, self._pubsub = client, pubsub
                stop = trio.Event()
                ready.put((trio.lowlevel.current_trio_token(), stop.set))
                await stop.wait()

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop, trio_token=self._token)
        self._thread.join(30)

    def _call(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def commands(self, node: str) -> Commands:
        """The ops of process *node* as Redis commands, as its backplane has them."""
        commands = Commands(PREFIX, node, NODE_TTL, 1000, MIN_RETAIN)
        commands.shas = self.shas
        return commands

    def execute(self, commands: Commands, ops: list[Op]) -> list[tuple[Op, Any]]:
        """Run *ops* in one pipeline; their results."""

        async def execute() -> list[tuple[Op, Any]]:
            with trio.fail_after(10):
                return await commands.execute(self._client, ops)

        return self._call(execute)  # type: ignore[no-any-return]

    def news(self) -> list[tuple[str, str]]:
        """Every pub/sub message Redis has sent since the last call, as
        (channel, data): those before a barrier published now."""

        async def news() -> list[tuple[str, str]]:
            with trio.fail_after(10):
                await self._client.publish(PREFIX + "barrier", "")
                items = []
                async for message in self._pubsub:
                    if message["channel"] == PREFIX + "barrier":
                        return items
                    items.append((message["channel"], message["data"]))
            raise AssertionError("the subscription ended")  # pragma: no cover

        return self._call(news)  # type: ignore[no-any-return]

    def flush(self) -> None:
        """Empty Redis (between examples), and read what that sent."""

        async def flush() -> None:
            await self._client.flushall()

        self._call(flush)
        self.news()


@contextmanager
def linked(server: RedisServer) -> Iterator[RedisLink]:
    """A :class:`RedisLink` to *server* for the block."""
    link = RedisLink(server.url)
    try:
        yield link
    finally:
        link.close()


# --------------------------------------------------------------------------
# The model


def norm(event: ServerEvent) -> str:
    """A comparable form of an event, encoded here or as Redis carried it:
    its JSON with sorted keys; member order is not part of the protocol."""
    frame = json.loads(event.to_json())
    if frame["type"] == "joined":
        frame["payload"]["members"].sort()
    return json.dumps(frame, sort_keys=True)


@attrs.define
class ClusterModel:
    #: Connection -> (its process, its user).
    conns: dict[int, tuple[str, str]] = attrs.Factory(dict)
    joined: dict[int, dict[str, None]] = attrs.Factory(dict)
    #: Rooms stay in Redis once used (here: for the whole example).
    rooms: dict[str, RoomModel] = attrs.Factory(dict)
    refs: dict[str, dict[str, ServerEvent]] = attrs.Factory(dict)
    #: Room -> its topic, while it has one.
    topics: dict[str, str] = attrs.Factory(dict)
    seq: int = 0
    #: A conversation's log name -> its last id.
    conversations: dict[str, int] = attrs.Factory(dict)

    def user(self, key: int) -> str:
        return self.conns[key][1]

    def room_conns(self, room: str) -> list[int]:
        return [k for k in self.conns if room in self.joined[k]]

    def room_users(self, room: str) -> set[str]:
        return {self.user(k) for k in self.room_conns(room)}

    def append(self, room: str, user: str, content: str, now: float) -> ChatMessage:
        log = self.rooms[room]
        log.last_id += 1
        message = ChatMessage(
            log.last_id, room, user, content, format_time(now), mentions=find_mentions(content)
        )
        self.seq += 1
        log.kept.append(Kept(message, self.seq, now))
        return message


# --------------------------------------------------------------------------
# The machine


class ClusterMachine(RuleBasedStateMachine):
    connections = Bundle("connections")

    def __init__(self, link: RedisLink) -> None:
        super().__init__()
        self.link = link
        link.flush()
        self.states = {
            node: ClusterState(node, prefix=PREFIX, edit_window=EDIT_WINDOW) for node in NODES
        }
        self.commands = {node: link.commands(node) for node in NODES}
        self.model = ClusterModel()
        # Redis trims by its own clock: messages are stamped near it.
        self.now = float(int(time.time()))
        self.next_key = 0
        self.last_chat: dict[str, Chat] = {}
        for state in self.states.values():
            state.on_connected()
        assert self.settle() == []

    # ------------------------------------------------------------ helpers

    def settle(self) -> list[Delivery]:
        """Run every op the states queued, hand them the results and the
        pub/sub messages, until neither has anything left to do; every
        delivery this caused."""
        deliveries: list[Delivery] = []
        while True:
            busy = False
            for node, state in self.states.items():
                ops = state.take_ops()
                if ops:
                    busy = True
                    for op, result in self.link.execute(self.commands[node], ops):
                        deliveries += self.mine(node, state.on_result(op, result))
            news = self.link.news()
            if news:
                busy = True
                for node, state in self.states.items():
                    deliveries += self.mine(node, state.on_messages(news))
            if not busy:
                return deliveries

    def mine(self, node: str, deliveries: list[Delivery]) -> list[Delivery]:
        """*deliveries* of process *node*: to its own connections only."""
        for d in deliveries:
            for key in d.to:
                assert self.model.conns[key][0] == node, f"{d.event} from {node} to {key}"
        return deliveries

    def handle(self, key: int, event: Any) -> list[Delivery] | ProtocolError:
        node = self.model.conns[key][0]
        self.now += 1.25
        try:
            deliveries = self.states[node].handle(key, event, self.now)
        except ProtocolError as err:
            assert self.settle() == []
            return err
        return self.mine(node, deliveries) + self.settle()

    def room(self, key: int, room: str) -> str:
        if room == MINE:
            mine = list(self.model.joined[key])
            return mine[-1] if mine else ROOMS[0]
        return room

    def refused(self, result: object, code: int, key: int, ref: str | None) -> None:
        """Refused at once, or answered so once Redis was asked."""
        if isinstance(result, ProtocolError):
            assert (result.code, result.ref) == (code, ref), result
            return
        assert isinstance(result, list), result
        frames = [json.loads(d.event.to_json()) for d in result]
        assert [d.to for d in result] == [(key,)], result
        assert [(f["type"], f["payload"]["code"], f.get("ref")) for f in frames] == [
            ("error", code, ref)
        ], result

    def check(self, deliveries: object, expected: Expected) -> None:
        assert isinstance(deliveries, list), f"unexpected refusal: {deliveries!r}"
        for d in deliveries:
            assert len(set(d.to)) == len(d.to), f"duplicate recipient in {d}"
        actual = Counter((k, norm(d.event)) for d in deliveries for k in d.to)
        wanted = Counter((k, norm(e)) for e, keys in expected for k in keys)
        assert actual == wanted, (
            f"\nmissing:    {sorted((wanted - actual).elements())}"
            f"\nunexpected: {sorted((actual - wanted).elements())}"
        )

    # ------------------------------------------------------------ rules

    @initialize(
        target=connections,
        users=st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(NODES)), max_size=4),
    )
    def start(self, users: list[tuple[str, str]]) -> object:
        """A few connections on either process already in a room, each with
        a message there (or none)."""
        keys = [self.connect(user, node) for user, node in users]
        for key in keys:
            self.join(key, ROOMS[0], None, None)
        for key in keys:
            self._chat(key, Chat(ROOMS[0], "hello", None))
        return multiple(*keys)

    @rule(target=connections, user=st.sampled_from(USERS), node=st.sampled_from(NODES))
    def connect(self, user: str, node: str) -> int:
        key = self.next_key
        self.next_key += 1
        self.model.conns[key] = (node, user)
        self.model.joined[key] = {}
        deliveries = self.states[node].connect(key, user)
        self.check(deliveries + self.settle(), [])
        return key

    @rule(key=consumes(connections))
    def disconnect(self, key: int) -> None:
        m = self.model
        node, user = m.conns[key]
        rooms = list(m.joined[key])
        del m.conns[key]
        del m.joined[key]
        expected: Expected = []
        for room in rooms:
            remaining = m.room_conns(room)
            if remaining and user not in m.room_users(room):
                label("disconnect: system leave")
                expected.append((System("leave", room, user), remaining))
        self.check(self.states[node].disconnect(key) + self.settle(), expected)

    @rule(
        key=connections,
        room=st.sampled_from(ROOMS),
        since=st.none() | st.integers(0, 9),
        ref=st.none() | st.sampled_from(REFS),
    )
    def join(self, key: int, room: str, since: int | None, ref: str | None) -> None:
        m = self.model
        user = m.user(key)
        result = self.handle(key, Join(room, since, ref))
        log = m.rooms.setdefault(room, RoomModel(""))
        if not log.epoch:
            # Redis names a room's numbering when it is first read.
            assert isinstance(result, list), result
            [epoch] = [d.event.epoch for d in result if isinstance(d.event, Joined)]
            assert epoch
            log.epoch = epoch
        expected: Expected = []
        if room not in m.joined[key]:
            others = m.room_conns(room)
            first = user not in m.room_users(room)
            m.joined[key][room] = None
            if first and others:
                expected.append((System("join", room, user), others))
            history, truncated = log.after(since)
        else:
            label("join: again")
            history, truncated = [], False
        members = sorted(m.room_users(room))
        topic = m.topics.get(room)
        joined = Joined(room, members, history, truncated, ref, log.epoch, topic=topic)
        expected.append((joined, [key]))
        self.check(result, expected)

    @rule(
        key=connections,
        room=room_choice,
        topic=st.sampled_from(["", "trio talk", "x"]),
        ref=st.none() | st.sampled_from(REFS),
    )
    def set_topic(self, key: int, room: str, topic: str, ref: str | None) -> None:
        m = self.model
        room = self.room(key, room)
        result = self.handle(key, SetTopic(room, topic, ref))
        if room not in m.joined[key]:
            return self.refused(result, 403, key, ref)
        user = m.user(key)
        if topic:
            m.topics[room] = topic
        else:
            m.topics.pop(room, None)
        others = [k for k in m.room_conns(room) if k != key]
        label(f"topic: cleared={not topic}")
        self.check(
            result,
            [
                (System("topic", room, user, topic), others),
                (System("topic", room, user, topic, ref), [key]),
            ],
        )

    @rule(key=connections, room=room_choice, ref=st.none() | st.sampled_from(REFS))
    def leave(self, key: int, room: str, ref: str | None) -> None:
        m = self.model
        room = self.room(key, room)
        user = m.user(key)
        expected: Expected = [(Left(room, ref), [key])]
        if room in m.joined[key]:
            del m.joined[key][room]
            remaining = m.room_conns(room)
            if remaining and user not in m.room_users(room):
                expected.append((System("leave", room, user), remaining))
        self.check(self.handle(key, Leave(room, ref)), expected)

    def _chat(self, key: int, event: Chat) -> None:
        m = self.model
        user = m.user(key)
        result = self.handle(key, event)
        if event.room not in m.joined[key]:
            return self.refused(result, 403, key, event.ref)
        if event.ref is not None and event.ref in m.refs.get(user, {}):
            # Redis remembers the ref, whichever process got it first.
            label("chat: repeated ref")
            return self.check(result, [(m.refs[user][event.ref], [key])])
        message = m.append(event.room, user, event.content, self.now)
        ack = ChatAck(message.id, event.room, message.time, event.ref)
        if event.ref is not None:
            m.refs.setdefault(user, {})[event.ref] = ack
        self.last_chat[user] = event
        others = [k for k in m.room_conns(event.room) if k != key]
        label(
            f"chat: others on the other process={any(m.conns[k][0] != m.conns[key][0] for k in others)}"
        )
        self.check(result, [(message, others), (ack, [key])])

    @rule(
        key=connections,
        room=room_choice,
        content=st.sampled_from(CONTENTS),
        ref=st.none() | st.sampled_from(REFS),
    )
    def chat(self, key: int, room: str, content: str, ref: str | None) -> None:
        self._chat(key, Chat(self.room(key, room), content, ref))

    @rule(key=connections)
    def resend_last_chat(self, key: int) -> None:
        """The same frame again, from any of the user's connections."""
        previous = self.last_chat.get(self.model.user(key))
        if previous is not None:
            self._chat(key, previous)

    @rule(
        key=connections,
        to=st.sampled_from([*USERS, "dee"]),
        ref=st.none() | st.sampled_from(REFS),
    )
    def direct(self, key: int, to: str, ref: str | None) -> None:
        m = self.model
        user = m.user(key)
        result = self.handle(key, Direct(to, "psst", ref))
        if ref is not None and ref in m.refs.get(user, {}):
            label("direct: repeated ref")
            return self.check(result, [(m.refs[user][ref], [key])])
        if to == user:
            label("direct: 400, to oneself")
            return self.refused(result, 400, key, ref)
        name = conversation_name(user, to)
        id_ = m.conversations[name] = m.conversations.get(name, 0) + 1
        time = format_time(self.now)
        ack = DirectAck(to, time, ref, id_)
        if ref is not None:
            m.refs.setdefault(user, {})[ref] = ack
        # Stored whether or not the addressee is connected; to every
        # connection of both users on every process but the sending one.
        audience = [k for k, (_, u) in m.conns.items() if u in (user, to) and k != key]
        label(
            f"direct: to a connection on the other process={any(m.conns[k][0] != m.conns[key][0] for k in audience)}"
        )
        event = DirectMessage(user, "psst", time, id_, to)
        self.check(result, [(event, audience), (ack, [key])])

    @rule(key=connections, room=room_choice)
    def typing(self, key: int, room: str) -> None:
        m = self.model
        room = self.room(key, room)
        result = self.handle(key, Typing(room))
        if room not in m.joined[key]:
            return self.refused(result, 403, key, None)
        others = [k for k in m.room_conns(room) if k != key]
        self.check(result, [(TypingNotice(room, m.user(key)), others)] if others else [])

    def _pick(self, key: int, room: str, mine: bool, back: int) -> tuple[str, int]:
        """A room and a message id in it: *back* before the newest (of the
        room, or with *mine* of the user's own)."""
        room = self.room(key, room)
        log = self.model.rooms.get(room)
        if log is None:
            return room, back
        own = [k.message.id for k in log.kept if k.message.user_id == self.model.user(key)]
        if mine and own:
            return room, own[-1 - min(back, len(own) - 1)]
        return room, max(0, log.last_id - back)

    def _change(self, key: int, event: Edit | Delete | React) -> None:
        m = self.model
        user = m.user(key)
        result = self.handle(key, event)
        assert event.room is not None
        if event.room not in m.joined[key]:
            label(f"{event.type}: 403, not in the room")
            return self.refused(result, 403, key, event.ref)
        if isinstance(event, React) and event.emoji not in DEFAULT_REACTIONS:
            return self.refused(result, 400, key, event.ref)
        kept = m.rooms[event.room].find(event.id)
        if kept is None:
            label(f"{event.type}: 404, not retained")
            return self.refused(result, 404, key, event.ref)
        if isinstance(event, Edit):
            outcome = edited(user, event, kept, self.now)
        elif isinstance(event, Delete):
            outcome = deleted(user, event, kept.message)
        else:
            outcome = reacted(user, event, kept.message)
        if isinstance(outcome, int):
            return self.refused(result, outcome, key, event.ref)
        changed, cause = outcome
        answer = (attrs.evolve(cause, ref=event.ref), [key])  # type: ignore[misc]
        if changed is None:
            return self.check(result, [answer])  # a delete again: to the sender alone
        label(f"{event.type}: changed")
        kept.message = changed
        others = [k for k in m.room_conns(event.room) if k != key]
        self.check(result, [(cause, others), answer])

    @rule(
        key=connections,
        room=room_choice,
        mine=st.booleans(),
        back=st.integers(0, 3),
        content=st.sampled_from(EDITS),
        ref=st.none() | st.sampled_from(REFS),
    )
    def edit(
        self, key: int, room: str, mine: bool, back: int, content: str, ref: str | None
    ) -> None:
        room, id_ = self._pick(key, room, mine, back)
        self._change(key, Edit(room, None, id_, content, ref))

    @rule(
        key=connections,
        room=room_choice,
        mine=st.booleans(),
        back=st.integers(0, 3),
        ref=st.none() | st.sampled_from(REFS),
    )
    def delete(self, key: int, room: str, mine: bool, back: int, ref: str | None) -> None:
        room, id_ = self._pick(key, room, mine, back)
        self._change(key, Delete(room, None, id_, ref))

    @rule(
        key=connections,
        room=room_choice,
        back=st.integers(0, 3),
        emoji=st.sampled_from(EMOJI),
        ref=st.none() | st.sampled_from(REFS),
    )
    def react(self, key: int, room: str, back: int, emoji: str, ref: str | None) -> None:
        room, id_ = self._pick(key, room, False, back)
        self._change(key, React(room, None, id_, emoji, ref))

    @rule(
        key=connections,
        room=room_choice,
        since=st.none() | st.integers(0, 9),
        before=st.none() | st.integers(0, 9),
        ref=st.none() | st.sampled_from(REFS),
    )
    def history(
        self, key: int, room: str, since: int | None, before: int | None, ref: str | None
    ) -> None:
        m = self.model
        room = self.room(key, room)
        result = self.handle(key, ReadHistory(room, None, since, before, ref))
        if room not in m.joined[key]:
            return self.refused(result, 403, key, ref)
        page, truncated = m.rooms[room].page(since, before)
        label(f"page: {'before' if before is not None else 'since'}, truncated={truncated}")
        messages = [message.payload() for message in page]
        self.check(result, [(HistoryPage(room, None, messages, truncated, ref), [key])])

    # ------------------------------------------------------------ invariants

    @invariant()
    def states_match_the_model(self) -> None:
        m = self.model
        for node, state in self.states.items():
            for room in ROOMS:
                here = [k for k in m.room_conns(room) if m.conns[k][0] == node]
                assert sorted(state.connections_in(room)) == here
                if here:
                    assert set(state.members(room)) == m.room_users(room)
            for key, (where, user) in m.conns.items():
                if where == node:
                    assert state.user_of(key) == user
                    assert set(state.rooms_of(key)) == set(m.joined[key])


def test_the_cluster_state_matches_the_model(redis_server: RedisServer) -> None:
    with linked(redis_server) as link:
        run_state_machine_as_test(
            lambda: ClusterMachine(link),
            settings=settings(max_examples=80, stateful_step_count=40, deadline=None),
        )
