"""The pure hub state (PROTOCOL §2-§5), beside a reference model.

:class:`HubMachine` drives :class:`HubState` with random commands -- connect,
disconnect, join (with and without ``since``), leave, chat (with fresh and
repeated refs), presence, direct, typing, read markers, edits, deletes and
reactions (in rooms and conversations), history pages, server-side publish,
and a restart of the server -- from several connections per user, and checks
each command's deliveries against a small, obviously-correct model: every
delivery, to every connection, exactly.  The model keeps every retained
message as it is now (edited text, tombstone, reactions), so replays and
pages show it, and counts its bytes.  Room caps, history budgets (messages,
bytes per room, bytes in all, age) and the edit window are small so
eviction, trimming and the 403 limits happen often.  It runs twice: with the
memory store (a restart forgets everything) and with the SQLite store on a
temporary file (every step's log operations are committed; a restart
reopens the file and must bring back rooms, history, ids, refs and every
change to a message exactly).  The unit tests below it pin each rule with
a readable scenario.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter, OrderedDict
from typing import Any

import attrs
import pytest
from hypothesis import event as label, settings, strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from trio_chat._conversations import conversation_name
from trio_chat._hub_state import Delivery, HubState, HubStats, Reply, recipients
from trio_chat._log import MESSAGE_OVERHEAD
from trio_chat._mentions import find_mentions
from trio_chat._message_events import HistoryPage, MessageDeleted, MessageEdited, ReactionChanged
from trio_chat._message_frames import Delete, Edit, React, ReadHistory
from trio_chat._message_ops import DEFAULT_REACTIONS
from trio_chat._protocol import (
    Chat,
    ChatAck,
    ChatMessage,
    ConversationList,
    Direct,
    DirectAck,
    DirectMessage,
    Join,
    Joined,
    Leave,
    Left,
    ListConversations,
    Presence,
    PresenceUpdate,
    ProtocolError,
    ServerEvent,
    System,
    Typing,
    TypingNotice,
    TypingTo,
    TypingWith,
    format_time,
)
from trio_chat._room_frames import MarkRead, ReadMarker
from trio_chat._sqlite_store import SqliteStore

USERS = ["ann", "bob", "cy"]
#: Direct messages also go to a user who never connects.
ADDRESSEES = [*USERS, "dee"]
ROOMS = ["r1", "r2", "r3", "r4", "r5"]
#: Stands for "a room this connection is in", so that most chats succeed.
MINE = "<mine>"
room_choice = st.sampled_from([MINE, MINE, *ROOMS])
#: The log a message frame names: mostly a room the connection is in, else
#: another room or (``@user``) the direct conversation with a user.
log_choice = st.sampled_from([MINE, MINE, MINE, MINE, *ROOMS[:2], *(f"@{u}" for u in ADDRESSEES)])
REFS = ["a", "b", "c"]
#: Small history rings, so that ``truncated`` happens often.
HISTORY_SIZES = [1, 2, 3]
#: Byte budgets of about one to five short messages (each counts about 305).
ROOM_BYTES = [10_000, 2 * MESSAGE_OVERHEAD + 20]
TOTAL_BYTES = [10_000, 4 * MESSAGE_OVERHEAD + 40]
#: Seconds a message is kept (0: forever); each step takes 1.25 s.
MAX_AGES = [0.0, 0.0, 12.0]
MAX_ROOMS = 3
MAX_PER_CONN = 2
MAX_CREATED_PER_CONN = 1
MAX_CREATED_PER_CLIENT = 2
MAX_CONVERSATIONS = 2
MAX_CONVERSATIONS_PER_USER = 2
EPHEMERAL = (TypingNotice, TypingWith, PresenceUpdate)
T0 = 1_790_000_000.0
#: Seconds a message may be edited: about sixteen steps.
EDIT_WINDOW = 20.0
#: Two reactions the server offers and one it does not (400).
EMOJI = [*DEFAULT_REACTIONS[:2], "x"]
#: New texts: one that mentions a user, one that grows past a byte budget.
EDITS = ["edited", "hi @bob", "x" * 60]
#: The events an edit, a delete or a reaction causes.
CHANGES = (MessageEdited, MessageDeleted, ReactionChanged)

Expected = list[tuple[ServerEvent, list[int]]]


def norm(event: ServerEvent) -> str:
    """A comparable form of an event; member order is not part of §4."""
    if isinstance(event, Joined):
        event = attrs.evolve(event, members=sorted(event.members))
    return event.to_json()


def size_of(message: ChatMessage) -> int:
    """What a message counts against the byte budgets, spelled out: its
    text, its user id, each mention, each reaction (its user id and 32
    bytes) and 300 bytes."""
    mentions = sum(len(name) + 3 for name in message.mentions)
    reactions = sum(len(u) + 32 for users in (message.reactions or {}).values() for u in users)
    return (
        len(message.content.encode("utf-8", "surrogatepass"))
        + len(message.user_id)
        + 300
        + mentions
        + reactions
    )


@attrs.define
class Kept:
    message: ChatMessage
    seq: int
    at: float

    @property
    def size(self) -> int:
        return size_of(self.message)


@attrs.define
class RoomModel:
    epoch: str
    last_id: int = 0
    #: The retained messages, oldest first.
    kept: list[Kept] = attrs.Factory(list)
    #: The connection that created it and the client (here: its user).
    creator: int | None = None
    client: str | None = None

    def after(self, since: int | None) -> tuple[list[dict], bool]:
        # A since beyond the last id means the room was forgotten and
        # started again since the client saw it: send the whole history.
        if since is None or since > self.last_id:
            since = 0
        kept = {k.message.id for k in self.kept}
        history = [k.message.payload() for k in self.kept if k.message.id > since]
        missing = [i for i in range(since + 1, self.last_id + 1) if i not in kept]
        return history, bool(missing)

    def page(self, since: int | None, before: int | None) -> tuple[list[ChatMessage], bool]:
        """A ``history`` answer: with *before* the retained messages with
        ``id < before``, else those with ``id > since``; whether some of
        those ids are not retained."""
        low, high = (1, before) if before is not None else ((since or 0) + 1, self.last_id + 1)
        high = min(high, self.last_id + 1)
        kept = {k.message.id for k in self.kept}
        page = [k.message for k in self.kept if low <= k.message.id < high]
        return page, any(i not in kept for i in range(low, high))

    def find(self, id_: int) -> Kept | None:
        return next((k for k in self.kept if k.message.id == id_), None)


@attrs.define
class Budgets:
    size: int
    room_bytes: int
    total_bytes: int
    max_age: float


@attrs.define
class Model:
    budgets: Budgets
    conns: dict[int, str] = attrs.Factory(dict)
    joined: dict[int, dict[str, None]] = attrs.Factory(dict)
    #: Rooms, least recently used first (joins and messages use a room).
    rooms: OrderedDict[str, RoomModel] = attrs.Factory(OrderedDict)
    status: dict[str, tuple[str, str | None]] = attrs.Factory(dict)
    refs: dict[str, dict[str, ServerEvent]] = attrs.Factory(dict)
    published: int = 0
    seq: int = 0
    #: Every epoch a room name has had, to check that a new one is new.
    epochs: dict[str, set[str]] = attrs.Factory(dict)
    #: Direct conversations by log name, least recently used first.
    convs: OrderedDict[str, RoomModel] = attrs.Factory(OrderedDict)
    #: Read markers: (user, log name) -> (the log's epoch then, id).
    marks: dict[tuple[str, str], tuple[str, int]] = attrs.Factory(dict)

    def log(self, name: str) -> RoomModel:
        return (self.convs if " " in name else self.rooms)[name]

    def marker(self, user: str, name: str) -> int:
        """*user*'s marker in the log *name* (0 from an earlier epoch)."""
        epoch, id_ = self.marks.get((user, name), ("", 0))
        return id_ if epoch == self.log(name).epoch else 0

    def unread(self, user: str, name: str) -> tuple[int, int, int]:
        """The marker, and the messages of others after it, not deleted (and
        of those, the ones mentioning *user*)."""
        read = self.marker(user, name)
        after = [
            k.message
            for k in self.log(name).kept
            if k.message.id > read and k.message.user_id != user and not k.message.deleted
        ]
        return read, len(after), sum(user in m.mentions for m in after)

    def logs(self) -> list[RoomModel]:
        return [*self.rooms.values(), *self.convs.values()]

    def convs_of(self, user: str) -> list[tuple[str, RoomModel]]:
        """*user*'s conversations as (other user, log), most recent first."""
        found = []
        for name, log in reversed(self.convs.items()):
            a, b = name.split(" ")
            if user in (a, b):
                found.append((b if a == user else a, log))
        return found

    def users(self) -> set[str]:
        return set(self.conns.values())

    def conns_of(self, user: str) -> list[int]:
        return [k for k, u in self.conns.items() if u == user]

    def room_conns(self, room: str) -> list[int]:
        return [k for k in self.conns if room in self.joined[k]]

    def room_users(self, room: str) -> set[str]:
        return {self.conns[k] for k in self.room_conns(room)}

    def make_room(self, room: str, key: int | None = None) -> bool:
        """Create *room* if needed (by *key*), within the creation quotas,
        forgetting the LRU empty room; False if refused."""
        if room in self.rooms:
            return True
        client = None if key is None else self.conns[key]
        if key is not None:
            if sum(r.creator == key for r in self.rooms.values()) >= MAX_CREATED_PER_CONN:
                return False
            if sum(r.client == client for r in self.rooms.values()) >= MAX_CREATED_PER_CLIENT:
                return False
        if len(self.rooms) >= MAX_ROOMS:
            empty = [r for r in self.rooms if not self.room_conns(r)]
            if not empty:
                return False
            del self.rooms[empty[0]]
        # its epoch is read once created
        self.rooms[room] = RoomModel("?", creator=key, client=client)
        return True

    def emptied(self, room: str) -> None:
        """*room* lost its last member: forgotten without history, else used."""
        if not self.rooms[room].kept:
            del self.rooms[room]
        else:
            self.rooms.move_to_end(room)

    def named(self, room: str, epoch: str) -> None:
        """The new *room* was given *epoch*: it must be one never seen."""
        seen = self.epochs.setdefault(room, set())
        assert epoch not in seen, f"{room}: epoch {epoch} used again"
        seen.add(epoch)
        self.rooms[room].epoch = epoch

    def history_bytes(self) -> int:
        return sum(k.size for r in self.logs() for k in r.kept)

    def append(self, room: str, user: str, content: str, now: float) -> ChatMessage:
        """Publish into *room* (a room, or a conversation's log), then apply
        the budgets the obvious way."""
        b, log = self.budgets, self.log(room)
        log.last_id += 1
        message = ChatMessage(
            log.last_id, room, user, content, format_time(now), mentions=find_mentions(content)
        )
        self.marks[user, room] = (log.epoch, log.last_id)  # posting moves the marker
        self.seq += 1
        log.kept.append(Kept(message, self.seq, now))
        if " " not in room:
            self.published += 1  # counts messages published into rooms
        while len(log.kept) > 1 and (
            len(log.kept) > b.size or sum(k.size for k in log.kept) > b.room_bytes
        ):
            log.kept.pop(0)
        self.trim_total(log)
        self.expire(now)
        return message

    def trim_total(self, log: RoomModel | None) -> None:
        """The server's oldest messages go while over the total budget; the
        newest of *log* stays, however large."""
        while self.history_bytes() > self.budgets.total_bytes:
            oldest = min((r for r in self.logs() if r.kept), key=lambda r: r.kept[0].seq)
            if oldest is log and len(oldest.kept) == 1:
                break
            label("history: over the total byte budget")
            oldest.kept.pop(0)

    def replace(self, name: str, kept: Kept, message: ChatMessage) -> None:
        """*message* in the place of *kept*'s (an edit, a tombstone, a
        reaction); the budgets apply when it grew, the oldest going first
        (*message* too, but for the log's last), as after a restart."""
        b, log, before = self.budgets, self.log(name), kept.size
        kept.message = message
        if kept.size <= before:
            return
        while len(log.kept) > 1 and sum(k.size for k in log.kept) > b.room_bytes:
            label("change: grew the log past its byte budget")
            log.kept.pop(0)
        if self.history_bytes() > b.total_bytes:
            label("change: grew the history past its total")
        self.trim_total(None)

    def expire(self, now: float) -> None:
        if self.budgets.max_age:
            for r in self.logs():
                before = len(r.kept)
                r.kept = [k for k in r.kept if k.at >= now - self.budgets.max_age]
                if len(r.kept) < before:
                    label("history: expired")

    def restart(self, durable: bool) -> None:
        """The server stops and starts again; every connection comes back."""
        for key in self.joined:
            self.joined[key] = {}
        self.status.clear()
        self.published = 0
        if not durable:
            self.rooms.clear()
            self.convs.clear()
            self.refs.clear()
            self.marks.clear()
            return
        order = sorted(
            self.convs, key=lambda c: (max([0] + [k.seq for k in self.convs[c].kept]), c)
        )
        self.convs = OrderedDict((c, self.convs[c]) for c in order)
        # Rooms come back least recently written first; without history they
        # are forgotten (as a room left empty with no history is).
        for r in [r for r, log in self.rooms.items() if not log.kept]:
            del self.rooms[r]
        for log in self.rooms.values():
            log.creator = None
            log.client = None
        order = sorted(
            self.rooms, key=lambda r: (max([0] + [k.seq for k in self.rooms[r].kept]), r)
        )
        self.rooms = OrderedDict((r, self.rooms[r]) for r in order)


#: What a change to a message comes to: the message as it is then (None:
#: unchanged) and the event it causes, or the code of its refusal.
Outcome = tuple[ChatMessage | None, ServerEvent] | int


def edited(user: str, event: Edit, kept: Kept, now: float) -> Outcome:
    """An edit by *user* at *now*: its own message, not deleted, within the
    edit window."""
    message = kept.message
    if message.deleted:
        label("edit: 404, deleted")
        return 404
    if message.user_id != user:
        label("edit: 403, not one's own")
        return 403
    if now - kept.at > EDIT_WINDOW:
        label("edit: 403, past the edit window")
        return 403
    time = format_time(now)
    mentions = find_mentions(event.content)
    changed = attrs.evolve(message, content=event.content, edited=time, mentions=mentions)
    cause = MessageEdited(event.room, event.with_, event.id, user, event.content, time, mentions)
    return changed, cause


def deleted(user: str, event: Delete, message: ChatMessage) -> Outcome:
    """A delete by *user*: a tombstone (no text, no reactions, no mentions),
    or the same answer again for a deleted message."""
    if message.user_id != user:
        label("delete: 403, not one's own")
        return 403
    cause = MessageDeleted(event.room, event.with_, event.id, user, user)
    if message.deleted:
        return None, cause
    tombstone = ChatMessage(message.id, message.room, user, "", message.time, deleted=True)
    return tombstone, cause


def reacted(user: str, event: React, message: ChatMessage) -> Outcome:
    """*user*'s reaction toggled: users in the order they reacted, an emoji
    in the order it was turned on (again, after it went off)."""
    if message.deleted:
        label("react: 404, deleted")
        return 404
    reactions = dict(message.reactions or {})
    users = reactions.get(event.emoji, ())
    on = user not in users
    users = (*users, user) if on else tuple(u for u in users if u != user)
    if users:
        reactions[event.emoji] = users
    else:
        del reactions[event.emoji]
    changed = attrs.evolve(message, reactions=reactions or None)
    cause = ReactionChanged(event.room, event.with_, event.id, event.emoji, user, on, len(users))
    return changed, cause


class HubMachine(RuleBasedStateMachine):
    connections = Bundle("connections")
    #: The SQLite variant below sets it.
    durable = False

    def __init__(self) -> None:
        super().__init__()
        self.state = HubState()
        self.model = Model(Budgets(100, 1 << 20, 1 << 30, 0))
        self.next_key = 0
        self.now = T0
        #: Each user's last accepted chat, to resend it as after a reconnect.
        self.last_chat: dict[str, Chat] = {}
        self.store: SqliteStore | None = None
        self.tmp: str | None = None

    # ------------------------------------------------------------ helpers

    def new_state(self) -> HubState:
        b = self.model.budgets
        return HubState(
            history_size=b.size,
            max_rooms=MAX_ROOMS,
            max_rooms_per_connection=MAX_PER_CONN,
            max_rooms_created_per_connection=MAX_CREATED_PER_CONN,
            max_rooms_created_per_client=MAX_CREATED_PER_CLIENT,
            history_bytes_per_room=b.room_bytes,
            history_bytes_total=b.total_bytes,
            history_max_age=b.max_age,
            max_conversations=MAX_CONVERSATIONS,
            max_conversations_per_user=MAX_CONVERSATIONS_PER_USER,
            edit_window=EDIT_WINDOW,
            durable=self.durable,
        )

    def handle(self, key: int, event: object) -> list[Delivery] | ProtocolError:
        self.now += 1.25
        try:
            return self.state.handle(key, event, self.now)  # type: ignore[arg-type]
        except ProtocolError as err:
            return err

    def room(self, key: int, room: str) -> str:
        if room == MINE:
            mine = list(self.model.joined[key])
            return mine[-1] if mine else ROOMS[0]
        return room

    def refused(self, result: object, code: int, ref: str | None) -> None:
        assert isinstance(result, ProtocolError), f"expected {code}, got {result!r}"
        assert (result.code, result.ref) == (code, ref), result

    def check(self, deliveries: object, expected: Expected, gone: int | None = None) -> None:
        assert isinstance(deliveries, list), f"unexpected refusal: {deliveries!r}"
        m = self.model
        for d in deliveries:
            assert len(set(d.to)) == len(d.to), f"duplicate recipient in {d}"
            assert d.ephemeral == isinstance(d.event, EPHEMERAL), d
            for key in d.to:
                # Nothing goes to a connection that left or disconnected.
                assert key != gone and key in m.conns, f"{d.event} to dead connection {key}"
            if isinstance(d.event, (ChatMessage, TypingNotice, System, *CHANGES)):
                members = set(m.room_conns(d.event.room)) if d.event.room else set(m.conns)
                assert set(d.to) <= members, f"{d.event} to non-members {set(d.to) - members}"
        actual = Counter((k, norm(d.event)) for d in deliveries for k in d.to)
        wanted = Counter((k, norm(e)) for e, keys in expected for k in keys)
        assert actual == wanted, (
            f"\nmissing:    {sorted((wanted - actual).elements())}"
            f"\nunexpected: {sorted((actual - wanted).elements())}"
        )

    def created(self, room: str, rooms_before: set[str]) -> None:
        if room not in rooms_before:
            epoch = self.state.epoch(room)
            assert epoch is not None
            self.model.named(room, epoch)

    # ------------------------------------------------------------ rules

    @initialize(
        target=connections,
        history_size=st.sampled_from(HISTORY_SIZES),
        room_bytes=st.sampled_from(ROOM_BYTES),
        total_bytes=st.sampled_from(TOTAL_BYTES),
        max_age=st.sampled_from(MAX_AGES),
        users=st.lists(st.sampled_from(USERS), max_size=3),
    )
    def start(
        self,
        history_size: int,
        room_bytes: int,
        total_bytes: int,
        max_age: float,
        users: list[str],
    ) -> object:
        """Small caps, and a few connections already in a room, each with a
        message there (or none)."""
        self.model = Model(Budgets(history_size, room_bytes, total_bytes, max_age))
        self.state = self.new_state()
        if self.durable:
            self.tmp = tempfile.mkdtemp(prefix="trio-chat-machine-")
            self.store = SqliteStore(self.tmp)
        keys = [self.connect(user) for user in users]
        for key in keys:
            self.join(key, ROOMS[0], None, None)
        for key in keys:
            self._chat(key, Chat(ROOMS[0], "hello", None))
        return multiple(*keys)

    def teardown(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(target=connections, user=st.sampled_from(USERS))
    def connect(self, user: str) -> int:
        key = self.next_key
        self.next_key += 1
        assert self.state.connect(key, user, user) == []
        self.model.conns[key] = user
        self.model.joined[key] = {}
        return key

    @rule()
    def restart(self) -> None:
        """The server restarts and every client reconnects (without its
        rooms): with SQLite, rooms, history, ids, epochs and refs come back;
        in memory, nothing does."""
        m = self.model
        self.now += 1.25
        if self.store is not None:
            self.store.commit(self.state.take_ops())
            self.store.close()
            self.store = SqliteStore(self.tmp)  # type: ignore[arg-type]
        self.state = self.new_state()
        if self.store is not None:
            snapshot = self.store.load()
            self.state.restore(snapshot)
            label(f"restart: {len(snapshot.messages)} messages back")
        m.restart(self.durable)
        for key, user in m.conns.items():
            self.state.connect(key, user, user)

    @rule(key=consumes(connections))
    def disconnect(self, key: int) -> None:
        m = self.model
        user = m.conns[key]
        expected: Expected = []
        rooms = list(m.joined[key])
        del m.conns[key]
        del m.joined[key]
        for room in rooms:
            remaining = m.room_conns(room)
            if remaining and user not in m.room_users(room):
                label("disconnect: system leave")
                expected.append((System("leave", room, user), remaining))
            if not remaining:
                m.emptied(room)
        for entry in m.rooms.values():
            if entry.creator == key:
                entry.creator = None
        if user not in m.users():
            m.status.pop(user, None)
        self.check(self.state.disconnect(key), expected, gone=key)

    @rule(
        key=connections,
        room=st.sampled_from(ROOMS),
        since=st.none() | st.integers(0, 9),
        ref=st.none() | st.sampled_from(REFS),
    )
    def join(self, key: int, room: str, since: int | None, ref: str | None) -> None:
        m = self.model
        user = m.conns[key]
        result = self.handle(key, Join(room, since, ref))
        if room not in m.joined[key] and len(m.joined[key]) >= MAX_PER_CONN:
            # Refused before the room is looked at: nothing expires.
            label("join: 403, connection in too many rooms")
            return self.refused(result, 403, ref)
        m.expire(self.now)
        rooms_before = set(m.rooms)
        if not m.make_room(room, key):
            label("join: 403, a creation quota or every room in use")
            return self.refused(result, 403, ref)
        if rooms_before - set(m.rooms):
            label("join: forgot an empty room")
        self.created(room, rooms_before)
        m.rooms.move_to_end(room)
        expected: Expected = []
        if room not in m.joined[key]:
            others = m.room_conns(room)
            first = user not in m.room_users(room)
            m.joined[key][room] = None
            if first and others:
                expected.append((System("join", room, user), others))
            history, truncated = m.rooms[room].after(since)
        else:
            # Already in: it has been sent everything since its first joined.
            label("join: again")
            history, truncated = [], False
        label(f"join: since={'set' if since is not None else 'none'}, truncated={truncated}")
        members = sorted(m.room_users(room))
        epoch = m.rooms[room].epoch
        counts = m.unread(user, room)
        expected.append((Joined(room, members, history, truncated, ref, epoch, *counts), [key]))
        for other in members:
            if other != user and other in m.status:
                expected.append((PresenceUpdate(other, *m.status[other]), [key]))
        self.check(result, expected)

    @rule(key=connections, back=st.integers(0, 4))
    def catch_up(self, key: int, back: int) -> None:
        """Join a room (usually one it is in already) again with ``since`` a
        few messages back."""
        room = self.room(key, MINE)
        last = self.model.rooms[room].last_id if room in self.model.rooms else 0
        self.join(key, room, max(0, last - back), None)

    @rule(key=connections, room=room_choice, ref=st.none() | st.sampled_from(REFS))
    def leave(self, key: int, room: str, ref: str | None) -> None:
        m = self.model
        room = self.room(key, room)
        user = m.conns[key]
        expected: Expected = [(Left(room, ref), [key])]
        if room in m.joined[key]:
            del m.joined[key][room]
            remaining = m.room_conns(room)
            if remaining and user not in m.room_users(room):
                expected.append((System("leave", room, user), remaining))
            if not remaining:
                m.emptied(room)
        self.check(self.handle(key, Leave(room, ref)), expected)

    def _chat(self, key: int, event: Chat) -> None:
        m = self.model
        user = m.conns[key]
        result = self.handle(key, event)
        if event.room not in m.joined[key]:
            return self.refused(result, 403, event.ref)
        if event.ref is not None and event.ref in m.refs.get(user, {}):
            # Seen before: the original ack again, and nothing published.
            label("chat: repeated ref")
            return self.check(result, [(m.refs[user][event.ref], [key])])
        message = m.append(event.room, user, event.content, self.now)
        m.rooms.move_to_end(event.room)
        label(f"chat: published, others={len(m.room_conns(event.room)) - 1}")
        ack = ChatAck(message.id, event.room, message.time, event.ref)
        if event.ref is not None:
            m.refs.setdefault(user, {})[event.ref] = ack
        self.last_chat[user] = event
        others = [k for k in m.room_conns(event.room) if k != key]
        self.check(result, [(message, others), (ack, [key])])
        # Spelled out: the room's current connections but the sender's; the
        # ack to the sender alone.
        by_type = {type(d.event): d for d in result}  # type: ignore[union-attr]
        assert sorted(by_type[ChatMessage].to) == others
        assert by_type[ChatAck].to == (key,)

    @rule(
        key=connections,
        room=room_choice,
        content=st.sampled_from(["hi", "hello", "x" * 40]) | st.text(min_size=1, max_size=8),
        ref=st.none() | st.sampled_from(REFS),
    )
    def chat(self, key: int, room: str, content: str, ref: str | None) -> None:
        self._chat(key, Chat(self.room(key, room), content, ref))

    @rule(key=connections, ref=st.none() | st.sampled_from(REFS))
    def chat_in_my_room(self, key: int, ref: str | None) -> None:
        """Chats are most of the traffic: a second rule for them."""
        self._chat(key, Chat(self.room(key, MINE), "msg", ref))

    @rule(key=connections)
    def resend_last_chat(self, key: int) -> None:
        """The same frame again, from any of the user's connections."""
        previous = self.last_chat.get(self.model.conns[key])
        if previous is not None:
            self._chat(key, previous)

    @rule(
        key=connections,
        status=st.sampled_from(["online", "away", "busy", "s" * 32]),
        text=st.none() | st.sampled_from(["lunch", ""]),
    )
    def presence(self, key: int, status: str, text: str | None) -> None:
        m = self.model
        user = m.conns[key]
        m.status[user] = (status, text)
        audience = set(m.conns_of(user))
        for own in m.conns_of(user):
            for room in m.joined[own]:
                audience.update(m.room_conns(room))
        self.check(
            self.handle(key, Presence(status, text)),
            [(PresenceUpdate(user, status, text), sorted(audience))],
        )

    @rule(
        key=connections,
        to=st.sampled_from(ADDRESSEES),
        content=st.sampled_from(["psst", "x"]),
        ref=st.none() | st.sampled_from(REFS),
    )
    def direct(self, key: int, to: str, content: str, ref: str | None) -> None:
        m = self.model
        user = m.conns[key]
        result = self.handle(key, Direct(to, content, ref))
        if ref is not None and ref in m.refs.get(user, {}):
            label("direct: repeated ref")
            return self.check(result, [(m.refs[user][ref], [key])])
        if to == user:
            label("direct: 400, to oneself")
            return self.refused(result, 400, ref)
        name = conversation_name(user, to)
        if name not in m.convs:
            if MAX_CONVERSATIONS_PER_USER in (len(m.convs_of(user)), len(m.convs_of(to))):
                label("direct: 403, too many conversations")
                return self.refused(result, 403, ref)
            if len(m.convs) >= MAX_CONVERSATIONS:
                label("direct: forgot the least recently used conversation")
                m.convs.popitem(last=False)
            epoch = self.state.conversations.get(user, to).epoch  # type: ignore[union-attr]
            seen = m.epochs.setdefault(name, set())
            assert epoch not in seen
            seen.add(epoch)
            m.convs[name] = RoomModel(epoch)
        message = m.append(name, user, content, self.now)
        m.convs.move_to_end(name)
        label(f"direct: stored, addressee connected={to in m.users()}")
        ack = DirectAck(to, message.time, ref, message.id)
        if ref is not None:
            m.refs.setdefault(user, {})[ref] = ack
        event = DirectMessage(user, content, message.time, message.id, to)
        audience = [k for k in [*m.conns_of(to), *m.conns_of(user)] if k != key]
        self.check(result, [(event, audience), (ack, [key])])

    @rule(key=connections, to=st.sampled_from(ADDRESSEES))
    def typing_to(self, key: int, to: str) -> None:
        user = self.model.conns[key]
        others = [k for k in self.model.conns_of(to) if k != key]
        expected: Expected = [(TypingWith(user, user), others)] if others else []
        self.check(self.handle(key, TypingTo(to)), expected)

    @rule(key=connections, ref=st.none() | st.sampled_from(REFS))
    def list_conversations(self, key: int, ref: str | None) -> None:
        m = self.model
        user = m.conns[key]
        items = []
        for other, log in m.convs_of(user):
            last = log.kept[-1].message if log.kept else None
            item: dict[str, Any] = {"with": other, "last_id": log.last_id}
            read, unread, mentions = m.unread(user, conversation_name(user, other))
            item.update(read=read, unread=unread, mentions=mentions)
            to = other if last is not None and last.user_id == user else user
            item["last"] = None if last is None else DirectMessage.stored(last, to).payload()
            items.append(item)
        label(f"conversations: {len(items)}")
        expected = ConversationList(items, False, ref)
        self.check(self.handle(key, ListConversations(ref)), [(expected, [key])])

    def _read(self, key: int, event: MarkRead, name: str) -> None:
        m = self.model
        user = m.conns[key]
        result = self.handle(key, event)
        if event.room is not None and event.room not in m.joined[key]:
            label("read: 403, not in the room")
            return self.refused(result, 403, event.ref)
        if name not in m.convs and event.with_ is not None:
            label("read: 404, no such conversation")
            return self.refused(result, 404, event.ref)
        log = m.log(name)
        now = min(event.id, log.last_id)
        if now <= m.marker(user, name):
            label("read: did not move")
            marker = ReadMarker(event.room, event.with_, m.marker(user, name), event.ref)
            return self.check(result, [(marker, [key])])
        label("read: moved")
        m.marks[user, name] = (log.epoch, now)
        others = [k for k in m.conns_of(user) if k != key]
        expected: Expected = [(ReadMarker(event.room, event.with_, now, event.ref), [key])]
        if others:
            expected.append((ReadMarker(event.room, event.with_, now), others))
        self.check(result, expected)

    @rule(
        key=connections,
        room=room_choice,
        id_=st.integers(0, 12),
        ref=st.none() | st.sampled_from(REFS),
    )
    def read(self, key: int, room: str, id_: int, ref: str | None) -> None:
        room = self.room(key, room)
        self._read(key, MarkRead(room, None, id_, ref), room)

    @rule(
        key=connections,
        to=st.sampled_from(ADDRESSEES),
        id_=st.integers(0, 6),
        ref=st.none() | st.sampled_from(REFS),
    )
    def read_conversation(self, key: int, to: str, id_: int, ref: str | None) -> None:
        user = self.model.conns[key]
        if to == user:
            return
        self._read(key, MarkRead(None, to, id_, ref), conversation_name(user, to))

    def _log_of(self, key: int, event: Edit | Delete | React | ReadHistory) -> str | None:
        """The model's name of the log *event* names, or None when the
        frame is refused first (403 outside the room, 404 without the
        conversation): that refusal is checked here."""
        m = self.model
        if event.room is not None:
            if event.room not in m.joined[key]:
                label(f"{event.type}: 403, not in the room")
                return None
            return event.room
        assert event.with_ is not None
        name = conversation_name(m.conns[key], event.with_)
        if name not in m.convs:
            label(f"{event.type}: 404, no such conversation")
            return None
        return name

    def _pick(
        self, key: int, log: str, mine: bool, back: int
    ) -> tuple[str | None, str | None, int]:
        """The room and the user a message frame names for *log* (a room,
        or ``@user``: the conversation with that user), and a message id in
        it: *back* before the newest (of the log, or with *mine* of the
        user's own)."""
        m = self.model
        user = m.conns[key]
        other = log[1:] if log.startswith("@") else None
        if other is None or other == user:  # no conversation with oneself: a room
            name = self.room(key, MINE if other else log)
            where: tuple[str | None, str | None] = (name, None)
        else:
            name = conversation_name(user, other)
            where = (None, other)
        kept = m.rooms.get(name) or m.convs.get(name)
        if kept is None:
            return (*where, back)
        own = [k.message.id for k in kept.kept if k.message.user_id == user]
        if mine and own:
            return (*where, own[-1 - min(back, len(own) - 1)])
        return (*where, max(0, kept.last_id - back))

    def _change(self, key: int, event: Edit | Delete | React) -> None:
        """An edit, a delete or a reaction, beside the model's rules."""
        m = self.model
        user = m.conns[key]
        result = self.handle(key, event)
        name = self._log_of(key, event)
        if name is None:
            return self.refused(result, 403 if event.room is not None else 404, event.ref)
        if isinstance(event, React) and event.emoji not in DEFAULT_REACTIONS:
            label("react: 400, not an offered emoji")
            return self.refused(result, 400, event.ref)
        kept = m.log(name).find(event.id)
        if kept is None:
            label(f"{event.type}: 404, not retained")
            return self.refused(result, 404, event.ref)
        if isinstance(event, Edit):
            outcome = edited(user, event, kept, self.now)
        elif isinstance(event, Delete):
            outcome = deleted(user, event, kept.message)
        else:
            outcome = reacted(user, event, kept.message)
        if isinstance(outcome, int):
            return self.refused(result, outcome, event.ref)
        changed, cause = outcome
        answer = (attrs.evolve(cause, ref=event.ref), [key])
        if changed is None:
            label("delete: again")
            return self.check(result, [answer])  # to the sender alone
        label(f"{event.type}: {'room' if event.room else 'conversation'}")
        m.replace(name, kept, changed)
        if event.with_ is None:
            others = [k for k in m.room_conns(name) if k != key]
            return self.check(result, [(cause, others), answer])
        mine = [k for k in m.conns_of(user) if k != key]
        theirs = m.conns_of(event.with_)
        self.check(result, [(cause, mine), (attrs.evolve(cause, with_=user), theirs), answer])

    @rule(
        key=connections,
        log=log_choice,
        mine=st.booleans(),
        back=st.integers(0, 3),
        content=st.sampled_from(EDITS),
        ref=st.none() | st.sampled_from(REFS),
    )
    def edit(
        self,
        key: int,
        log: str,
        mine: bool,
        back: int,
        content: str,
        ref: str | None,
    ) -> None:
        room_, with_, id_ = self._pick(key, log, mine, back)
        self._change(key, Edit(room_, with_, id_, content, ref))

    @rule(key=connections, back=st.integers(0, 2), content=st.sampled_from(EDITS))
    def edit_mine(self, key: int, back: int, content: str) -> None:
        """Edits of one's own messages in one's room: a second rule for them."""
        self.edit(key, MINE, True, back, content, None)

    @rule(
        key=connections,
        log=log_choice,
        mine=st.booleans(),
        back=st.integers(0, 3),
        ref=st.none() | st.sampled_from(REFS),
    )
    def delete(self, key: int, log: str, mine: bool, back: int, ref: str | None) -> None:
        room_, with_, id_ = self._pick(key, log, mine, back)
        self._change(key, Delete(room_, with_, id_, ref))

    @rule(
        key=connections,
        log=log_choice,
        back=st.integers(0, 3),
        emoji=st.sampled_from(EMOJI),
        ref=st.none() | st.sampled_from(REFS),
    )
    def react(self, key: int, log: str, back: int, emoji: str, ref: str | None) -> None:
        room_, with_, id_ = self._pick(key, log, False, back)
        self._change(key, React(room_, with_, id_, emoji, ref))

    @rule(
        key=connections,
        log=log_choice,
        since=st.none() | st.integers(0, 9),
        before=st.none() | st.integers(0, 9),
        ref=st.none() | st.sampled_from(REFS),
    )
    def history(
        self,
        key: int,
        log: str,
        since: int | None,
        before: int | None,
        ref: str | None,
    ) -> None:
        m = self.model
        user = m.conns[key]
        room_, with_, _ = self._pick(key, log, False, 0)
        event = ReadHistory(room_, with_, since, before, ref)
        result = self.handle(key, event)
        name = self._log_of(key, event)
        if name is None:
            return self.refused(result, 403 if room_ is not None else 404, ref)
        page, truncated = m.log(name).page(since, before)
        label(f"page: {'before' if before is not None else 'since'}, truncated={truncated}")
        if with_ is None:
            messages = [message.payload() for message in page]
        else:
            messages = [
                DirectMessage.stored(message, with_ if message.user_id == user else user).payload()
                for message in page
            ]
        answer = HistoryPage(room_, with_, messages, truncated, ref)
        self.check(result, [(answer, [key])])

    @rule(key=connections, room=room_choice)
    def typing(self, key: int, room: str) -> None:
        m = self.model
        room = self.room(key, room)
        result = self.handle(key, Typing(room))
        if room not in m.joined[key]:
            return self.refused(result, 403, None)
        others = [k for k in m.room_conns(room) if k != key]
        expected: Expected = [(TypingNotice(room, m.conns[key]), others)] if others else []
        self.check(result, expected)

    @rule(room=st.sampled_from(ROOMS), create=st.booleans())
    def server_publish(self, room: str, create: bool) -> None:
        """An embedder's publish: no sender connection, may create the room."""
        m = self.model
        self.now += 1.25
        try:
            ack, deliveries = published(
                self.state, "system", room, "notice", self.now, create=create
            )
        except ProtocolError as err:
            result: object = err
        else:
            result = deliveries
        if room not in m.rooms and not create:
            return self.refused(result, 404, None)
        rooms_before = set(m.rooms)
        if not m.make_room(room):
            return self.refused(result, 403, None)
        self.created(room, rooms_before)
        message = m.append(room, "system", "notice", self.now)
        m.rooms.move_to_end(room)
        self.check(result, [(message, m.room_conns(room))])
        assert ack == ChatAck(message.id, room, message.time)

    # ------------------------------------------------------------ invariants

    @invariant()
    def state_matches_model(self) -> None:
        s, m = self.state, self.model
        # Rooms in least-recently-used order: which one is forgotten next.
        assert s.room_names() == list(m.rooms)
        assert s.conversations.names() == list(m.convs)
        for name, log in m.convs.items():
            a, b = name.split(" ")
            kept = s.conversations.get(a, b)
            assert kept is not None
            assert (kept.last_id, kept.epoch) == (log.last_id, log.epoch)
            assert [e[0] for e in kept.entries] == [k.message for k in log.kept]
        for room, log in m.rooms.items():
            room_log = s.room_log(room)
            assert room_log is not None
            # Edited texts, tombstones and reactions, each counted as it is now.
            assert [e[0] for e in room_log.entries] == [k.message for k in log.kept]
            assert [e[1] for e in room_log.entries] == [k.size for k in log.kept]
            assert s.last_id(room) == log.last_id  # ids 1..n, no gap
            assert s.epoch(room) == log.epoch
            assert set(s.members(room)) == m.room_users(room)
            assert sorted(s.connections_in(room)) == m.room_conns(room)
        for key, user in m.conns.items():
            assert s.user_of(key) == user
            assert set(s.rooms_of(key)) == set(m.joined[key])
            assert len(m.joined[key]) <= MAX_PER_CONN
        for user in USERS:
            assert s.is_connected(user) == (user in m.users())
            assert s.rooms_created_by(user) == sum(r.client == user for r in m.rooms.values())
        # Rooms without members: the next to be forgotten first.
        assert s.empty_rooms() == [r for r in m.rooms if not m.room_conns(r)]
        assert s.stats() == HubStats(
            connections=len(m.conns),
            users=len(m.users()),
            rooms=len(m.rooms),
            messages=m.published,
            history=sum(len(log.kept) for log in m.logs()),
            history_bytes=m.history_bytes(),
        )

    @invariant()
    def commit(self) -> None:
        """With SQLite, every step's operations are written, as the hub does
        after each wake."""
        if self.store is not None:
            self.store.commit(self.state.take_ops())
        else:
            assert self.state.take_ops() == []


HubMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestHubMachine = HubMachine.TestCase


class SqliteHubMachine(HubMachine):
    durable = True


SqliteHubMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None
)
TestSqliteHubMachine = SqliteHubMachine.TestCase


# --------------------------------------------------------------------------
# Scenarios, one rule each

NOW = T0


def published(state: HubState, *args: Any, **kw: Any) -> tuple[ServerEvent, list[Delivery]]:
    """An embedder's publish: its ack (to a :class:`Reply`) and deliveries."""
    reply = Reply()
    deliveries = state.publish(*args, reply_to=reply, **kw)
    return reply.value, deliveries


def hub(**kw: int) -> HubState:
    return HubState(**kw)


def deliveries_to(deliveries: list[Delivery], key: object) -> list[ServerEvent]:
    return [d.event for d in deliveries if key in d.to]


def test_chat_reaches_room_but_sender_and_acks_sender() -> None:
    s = hub()
    for key, user in [(1, "ann"), (2, "ann"), (3, "bob"), (4, "cy")]:
        s.connect(key, user)
    for key in (1, 2, 3):
        s.handle(key, Join("r"), NOW)
    out = s.handle(1, Chat("r", "hi", "c1"), NOW)
    message = ChatMessage(1, "r", "ann", "hi", format_time(NOW))
    # the sender's other connection gets it too (tabs stay in sync); cy is not in r
    assert out == [
        Delivery(message, (2, 3)),
        Delivery(ChatAck(1, "r", format_time(NOW), "c1"), (1,)),
    ]


def test_ids_start_at_one_and_are_per_room() -> None:
    s = hub()
    s.connect(1, "ann")
    s.handle(1, Join("a"), NOW)
    s.handle(1, Join("b"), NOW)
    ids = [s.handle(1, Chat(room, "x"), NOW)[1].event.id for room in "aabab"]
    assert ids == [1, 2, 1, 3, 2]


def test_chat_needs_membership() -> None:
    s = hub()
    s.connect(1, "ann")
    with pytest.raises(ProtocolError) as info:
        s.handle(1, Chat("r", "x", "c1"), NOW)
    assert (info.value.code, info.value.ref) == (403, "c1")
    s.handle(1, Join("r"), NOW)
    s.handle(1, Leave("r"), NOW)
    with pytest.raises(ProtocolError):
        s.handle(1, Chat("r", "x"), NOW)
    with pytest.raises(ProtocolError):
        s.handle(1, Typing("r"), NOW)
    assert s.last_id("r") is None  # left empty with no history: forgotten


def test_system_events_on_first_join_and_last_leave_only() -> None:
    s = hub()
    for key, user in [(1, "ann"), (2, "bob"), (3, "bob")]:
        s.connect(key, user)
    s.handle(1, Join("r"), NOW)
    assert deliveries_to(s.handle(2, Join("r"), NOW), 1) == [System("join", "r", "bob")]
    assert deliveries_to(s.handle(3, Join("r"), NOW), 1) == []  # bob's second tab
    assert deliveries_to(s.handle(2, Leave("r"), NOW), 1) == []  # bob still there
    assert deliveries_to(s.disconnect(3), 1) == [System("leave", "r", "bob")]
    # joining again is idempotent: a joined reply, no system event
    out = s.handle(1, Join("r", ref="j"), NOW)
    joined = Joined("r", ["ann"], [], False, "j", s.epoch("r"), read=0, unread=0, mentions=0)
    assert out == [Delivery(joined, (1,))]


def test_history_since_and_truncated() -> None:
    s = hub(history_size=3)
    s.connect(1, "ann")
    s.handle(1, Join("r"), NOW)
    for i in range(5):
        s.handle(1, Chat("r", f"m{i + 1}"), NOW)
    s.connect(2, "bob")

    def joined(since: int | None) -> tuple[list[int], bool]:
        s.handle(2, Leave("r"), NOW)
        event = s.handle(2, Join("r", since), NOW)[0].event
        return [m["id"] for m in event.history], event.truncated

    assert joined(None) == ([3, 4, 5], True)  # the most recent, older ones gone
    assert joined(0) == ([3, 4, 5], True)
    assert joined(1) == ([3, 4, 5], True)  # 2 is missing
    assert joined(2) == ([3, 4, 5], False)
    assert joined(4) == ([5], False)
    assert joined(5) == ([], False)
    assert joined(9) == ([3, 4, 5], True)  # room started again: send it all
    s.handle(2, Leave("r"), NOW)
    first = s.handle(2, Join("r", 4), NOW)[0].event.history[0]
    assert first == {
        "id": 5,
        "room": "r",
        "user_id": "ann",
        "content": "m5",
        "time": format_time(NOW),
    }


def test_history_default_size_is_100() -> None:
    s = hub()
    s.connect(1, "ann")
    s.handle(1, Join("r"), NOW)
    for _ in range(101):
        s.handle(1, Chat("r", "x"), NOW)
    s.connect(2, "bob")
    event = s.handle(2, Join("r"), NOW)[0].event
    assert [m["id"] for m in event.history] == list(range(2, 102))
    assert event.truncated


def test_repeated_ref_answers_original_ack_even_after_reconnect() -> None:
    s = hub()
    s.connect(1, "ann")
    s.connect(9, "bob")
    s.handle(1, Join("r"), NOW)
    s.handle(9, Join("r"), NOW)
    first = s.handle(1, Chat("r", "hi", "c1"), NOW)
    ack = first[-1].event
    s.disconnect(1)
    s.connect(2, "ann")
    s.handle(2, Join("r"), NOW)
    again = s.handle(2, Chat("r", "hi", "c1"), NOW + 5)
    assert again == [Delivery(ack, (2,))]
    assert s.last_id("r") == 1
    # another user may use the same ref
    assert s.handle(9, Chat("r", "yo", "c1"), NOW)[-1].event.id == 2
    # direct refs are de-duplicated too, before the addressee is looked up
    dack = s.handle(2, Direct("bob", "psst", "d1"), NOW)[-1].event
    s.disconnect(9)
    assert s.handle(2, Direct("bob", "psst", "d1"), NOW) == [Delivery(dack, (2,))]


def test_refused_frame_does_not_consume_its_ref() -> None:
    s = hub()
    s.connect(1, "ann")
    with pytest.raises(ProtocolError):
        s.handle(1, Chat("r", "hi", "c1"), NOW)
    s.handle(1, Join("r"), NOW)
    assert s.handle(1, Chat("r", "hi", "c1"), NOW)[-1].event == ChatAck(
        1, "r", format_time(NOW), "c1"
    )


def test_ref_memory_keeps_the_last_1000() -> None:
    s = hub()
    assert s.ref_memory == 1000
    s.connect(1, "ann")
    s.handle(1, Join("r"), NOW)
    for i in range(1001):
        s.handle(1, Chat("r", "x", f"ref{i}"), NOW)
    assert s.handle(1, Chat("r", "x", "ref1"), NOW) == [
        Delivery(ChatAck(2, "r", format_time(NOW), "ref1"), (1,))
    ]
    # ref0 fell out of the window: published again
    assert s.handle(1, Chat("r", "x", "ref0"), NOW)[-1].event.id == 1002


def test_refs_of_the_least_recently_active_users_are_forgotten_first() -> None:
    s = hub(remembered_users=2)
    for key, user in [(1, "ann"), (2, "bob")]:
        s.connect(key, user)
        s.handle(key, Join("r"), NOW)
    s.handle(1, Chat("r", "x", "a"), NOW)
    s.handle(2, Chat("r", "x", "b"), NOW)  # two users: both kept
    assert len(s.handle(1, Chat("r", "x", "a"), NOW)) == 1
    s.disconnect(1)
    s.connect(3, "cy")
    s.handle(3, Join("r"), NOW)
    s.handle(3, Chat("r", "x", "c"), NOW)  # bob is the least recently active
    s.connect(4, "ann")
    s.handle(4, Join("r"), NOW)
    assert len(s.handle(4, Chat("r", "x", "a"), NOW)) == 1  # ann's ref is kept
    assert s.handle(2, Chat("r", "x", "b"), NOW)[-1].event.id == 4  # bob's is not


def test_direct_reaches_the_addressee_and_the_senders_other_connections() -> None:
    s = hub()
    for key, user in [(1, "ann"), (2, "bob"), (3, "bob"), (4, "ann")]:
        s.connect(key, user)
    out = s.handle(1, Direct("bob", "psst", "d"), NOW)
    t = format_time(NOW)
    assert out == [
        Delivery(DirectMessage("ann", "psst", t, 1, "bob"), (2, 3, 4)),
        Delivery(DirectAck("bob", t, "d", 1), (1,)),
    ]
    out = s.handle(2, Direct("ann", "hi", None), NOW)
    assert out[0] == Delivery(DirectMessage("bob", "hi", t, 2, "ann"), (1, 4, 3))
    # Stored whether or not the addressee is connected: ids per conversation.
    out = s.handle(1, Direct("cy", "psst", "d2"), NOW)
    assert out == [
        Delivery(DirectMessage("ann", "psst", t, 1, "cy"), (4,)),
        Delivery(DirectAck("cy", t, "d2", 1), (1,)),
    ]
    with pytest.raises(ProtocolError) as info:
        s.handle(1, Direct("ann", "me", "d3"), NOW)
    assert (info.value.code, info.value.ref) == (400, "d3")


def test_conversation_bounds() -> None:
    s = hub(max_conversations=2, max_conversations_per_user=1)
    for key, user in [(1, "ann"), (2, "bob"), (3, "cy"), (4, "dee")]:
        s.connect(key, user)
    s.handle(1, Direct("bob", "1", None), NOW)
    # Past the sender's bound, and past the addressee's.
    for key, to, words in [(1, "cy", "at most 1 conversations"), (3, "ann", "'ann' cannot")]:
        with pytest.raises(ProtocolError) as info:
            s.handle(key, Direct(to, "2", None), NOW)
        assert info.value.code == 403 and words in info.value.message
    s.handle(3, Direct("dee", "3", None), NOW)
    s.handle(1, Direct("bob", "4", None), NOW)  # ann-bob is the most recent
    assert s.conversations.names() == ["cy dee", "ann bob"]
    s.connect(5, "eve")
    s.connect(6, "fay")
    s.handle(5, Direct("fay", "5", None), NOW)  # the least recently used goes
    assert s.conversations.names() == ["ann bob", "eve fay"]
    assert s.conversations.get("cy", "dee") is None
    assert s.stats().history == 3


def test_presence_goes_to_room_members_and_own_tabs() -> None:
    s = hub()
    for key, user in [(1, "ann"), (2, "ann"), (3, "bob"), (4, "cy"), (5, "dee")]:
        s.connect(key, user)
    s.handle(1, Join("a"), NOW)
    s.handle(3, Join("a"), NOW)
    s.handle(2, Join("b"), NOW)
    s.handle(4, Join("b"), NOW)
    (d,) = s.handle(1, Presence("away", "lunch"), NOW)
    assert d == Delivery(PresenceUpdate("ann", "away", "lunch"), d.to, ephemeral=True)
    assert sorted(d.to) == [1, 2, 3, 4]  # not dee, who shares no room
    # a later joiner learns current statuses with its joined reply
    out = s.handle(5, Join("a"), NOW)
    assert deliveries_to(out, 5)[1:] == [PresenceUpdate("ann", "away", "lunch")]
    assert all(d.ephemeral for d in out if isinstance(d.event, PresenceUpdate))


def test_typing_is_ephemeral_and_skips_the_typist() -> None:
    s = hub()
    for key, user in [(1, "ann"), (2, "ann"), (3, "bob")]:
        s.connect(key, user)
        s.handle(key, Join("r"), NOW)
    assert s.handle(1, Typing("r"), NOW) == [
        Delivery(TypingNotice("r", "ann"), (2, 3), ephemeral=True)
    ]
    s.disconnect(2)
    s.disconnect(3)
    assert s.handle(1, Typing("r"), NOW) == []
    assert s.stats().history == 0  # never stored


def test_disconnect_is_idempotent_and_leaves_every_room() -> None:
    s = hub()
    s.connect(1, "ann")
    s.connect(2, "bob")
    for room in ("a", "b"):
        s.handle(1, Join(room), NOW)
        s.handle(2, Join(room), NOW)
    out = s.disconnect(1)
    assert sorted(d.event.room for d in out) == ["a", "b"]
    assert recipients(out) == {2}
    assert s.disconnect(1) == []
    assert not s.is_connected("ann")
    with pytest.raises(ValueError):
        s.connect(2, "bob")


def test_room_caps() -> None:
    s = hub(max_rooms=2, max_rooms_per_connection=2)
    s.connect(1, "ann")
    s.connect(2, "bob")
    s.handle(1, Join("a"), NOW)
    s.handle(1, Chat("a", "x"), NOW)
    s.handle(1, Join("b"), NOW)
    with pytest.raises(ProtocolError) as info:
        s.handle(1, Join("c", ref="j"), NOW)  # per connection
    assert (info.value.code, info.value.ref) == (403, "j")
    with pytest.raises(ProtocolError) as info:
        s.handle(2, Join("c"), NOW)  # server-wide, every room in use
    assert info.value.code == 403
    assert s.room_names() == ["a", "b"]
    s.handle(1, Leave("a"), NOW)
    s.handle(2, Join("c"), NOW)  # forgets empty room a
    assert s.room_names() == ["b", "c"]
    s.handle(2, Leave("c"), NOW)
    s.handle(2, Join("a"), NOW)  # a starts again at id 0
    assert s.last_id("a") == 0


def test_joining_again_sends_no_history_again() -> None:
    s = hub()
    s.connect(1, "ann")
    s.handle(1, Join("r"), NOW)
    for i in range(5):
        s.handle(1, Chat("r", f"m{i}"), NOW)
    s.connect(2, "bob")
    first = s.handle(2, Join("r"), NOW)[0].event
    assert [m["id"] for m in first.history] == [1, 2, 3, 4, 5]
    # bob has been sent every message since: again, with or without since,
    # it gets the members and nothing it already has.
    for since in (None, 0, 3):
        again = s.handle(2, Join("r", since, "j"), NOW)
        joined = Joined("r", ["ann", "bob"], [], False, "j", s.epoch("r"), 0, 5, 0)
        assert again == [Delivery(joined, (2,))]


def test_joined_history_is_bounded_in_bytes() -> None:
    s = hub(joined_bytes=100_000)
    s.connect(1, "ann")
    s.handle(1, Join("r"), NOW)
    for _ in range(100):
        s.handle(1, Chat("r", "\u0001" * 4000), NOW)  # 24,000 bytes each in JSON
    s.connect(2, "bob")
    joined = s.handle(2, Join("r"), NOW)[0].event
    # The newest messages that fit, marked truncated.
    assert [m["id"] for m in joined.history] == [97, 98, 99, 100]
    assert joined.truncated
    assert len(joined.to_json().encode()) <= 100_000
    s.handle(2, Leave("r"), NOW)
    joined = s.handle(2, Join("r", 98), NOW)[0].event
    assert [m["id"] for m in joined.history] == [99, 100] and not joined.truncated


def test_room_creation_quotas_per_connection_and_client() -> None:
    s = hub(max_rooms=10, max_rooms_created_per_connection=2, max_rooms_created_per_client=3)
    s.connect(1, "ann", "ip:a")
    s.connect(2, "ann2", "ip:a")
    s.connect(3, "cy", "ip:c")
    for room in ("a1", "a2"):
        s.handle(1, Join(room), NOW)
    with pytest.raises(ProtocolError) as info:
        s.handle(1, Join("a3", ref="j"), NOW)  # this connection created 2
    assert (info.value.code, info.value.ref) == (403, "j")
    s.handle(2, Join("a3"), NOW)
    with pytest.raises(ProtocolError) as info:
        s.handle(2, Join("a4"), NOW)  # the client (its IP) created 3
    assert info.value.code == 403
    assert s.rooms_refused == {"connection": 1, "client": 1}
    # Joining rooms that exist is not creating; another client still creates.
    s.handle(2, Join("a1"), NOW)
    s.handle(3, Join("c1"), NOW)
    assert s.rooms_created_by("ip:a") == 3 and s.rooms_created_by("ip:c") == 1
    # A room forgotten gives its creator's quota back.
    s.handle(2, Leave("a3"), NOW)  # empty, no history: forgotten
    assert s.rooms_created_by("ip:a") == 2
    s.handle(2, Join("a4"), NOW)
    # A room outlives its creator's connection and still counts for the client.
    s.handle(1, Chat("a1", "x"), NOW)
    s.disconnect(1)
    s.disconnect(2)
    assert s.rooms_created_by("ip:a") == 1  # a1 kept for its history
    assert s.empty_rooms() == ["a1"]


def test_empty_rooms_are_reclaimed_least_recently_used_first() -> None:
    s = hub(max_rooms=3)
    s.connect(1, "ann")
    for room in ("a", "b", "c"):
        s.handle(1, Join(room), NOW)
        s.handle(1, Chat(room, "x"), NOW)
    s.handle(1, Leave("b"), NOW)
    s.handle(1, Leave("a"), NOW)  # emptied last: used last
    assert s.empty_rooms() == ["b", "a"]
    s.publish("server", "b", "news", NOW)  # a message uses it
    assert s.empty_rooms() == ["a", "b"]
    s.connect(2, "bob")
    s.handle(2, Join("d"), NOW)  # the table is full: a goes
    assert s.room_names() == ["c", "b", "d"]
    s.handle(2, Join("e"), NOW)  # then b
    assert s.room_names() == ["c", "d", "e"] and s.empty_rooms() == []
    with pytest.raises(ProtocolError):
        s.handle(2, Join("f"), NOW)  # every room has members
    assert s.rooms_refused == {"server": 1}


def test_refusals_change_nothing() -> None:
    s = hub(max_rooms=1)
    s.connect(1, "ann")
    s.handle(1, Join("a"), NOW)
    before = (s.stats(), s.room_names(), s.rooms_of(1))
    for event in [Join("b"), Chat("b", "x"), Typing("b"), Direct("ann", "x")]:
        with pytest.raises(ProtocolError):
            s.handle(1, event, NOW)
    assert (s.stats(), s.room_names(), s.rooms_of(1)) == before


def test_server_publish() -> None:
    s = hub()
    s.connect(1, "ann")
    with pytest.raises(ProtocolError) as info:
        s.publish("server", "news", "hello", NOW)
    assert info.value.code == 404
    ack, out = published(s, "server", "news", "hello", NOW, create=True)
    assert ack == ChatAck(1, "news", format_time(NOW))
    assert out == [Delivery(ChatMessage(1, "news", "server", "hello", format_time(NOW)), ())]
    s.handle(1, Join("news"), NOW)
    ack2, out = published(s, "server", "news", "again", NOW, ref="p")
    assert out[0].to == (1,) and isinstance(ack2, ChatAck) and ack2.id == 2
    assert published(s, "server", "news", "again", NOW, ref="p") == (ack2, [])


def test_ref_memory_is_bounded_in_all_and_forgets_the_least_active_first():
    state = HubState(ref_memory=5, remembered_users=3, max_refs=8)
    for n, user in enumerate(["u1", "u2", "u3", "u4"]):
        state.connect(n, user)
        state.handle(n, Join("r"), 0.0)
    state.handle(0, Chat("r", "m", "a1"), 0.0)
    for n in (1, 2, 3):
        for i in range(3):
            state.handle(n, Chat("r", "m", f"r{i}"), 0.0)
    # u1, the least recently active, is forgotten when a fourth user comes;
    # past 8 refs in all, u2 (now the least recently active) loses its oldest.
    assert len(state.refs) == 8
    assert list(state.refs.by_user()) == ["u2", "u3", "u4"]
    assert [len(refs) for refs in state.refs.by_user().values()] == [2, 3, 3]
    assert [d.event.type for d in state.handle(3, Chat("r", "m", "r0"), 0.0)] == ["ack"]
    assert [d.event.type for d in state.handle(1, Chat("r", "m", "r1"), 0.0)] == ["ack"]
    assert [d.event.type for d in state.handle(1, Chat("r", "m", "r0"), 0.0)] == ["chat", "ack"]
    assert [d.event.type for d in state.handle(0, Chat("r", "m", "a1"), 0.0)] == ["chat", "ack"]


# --------------------------------------------------------------------------
# History budgets: bytes per room, bytes in all, age


def sizes(state: HubState, room: str) -> list[int]:
    log = state.room_log(room)
    assert log is not None
    return [m.id for m in log.history]


def test_history_bytes_per_room_trims_the_rooms_oldest_first() -> None:
    per_message = 300 + 3 + 1000  # overhead, "ann", content
    s = hub(history_bytes_per_room=3 * per_message)
    s.connect(1, "ann")
    s.handle(1, Join("r"), NOW)
    for _ in range(5):
        s.handle(1, Chat("r", "x" * 1000), NOW)
    assert sizes(s, "r") == [3, 4, 5]
    assert s.stats().history_bytes == 3 * per_message
    s.connect(2, "bob")
    event = s.handle(2, Join("r", 1), NOW)[0].event
    assert [m["id"] for m in event.history] == [3, 4, 5] and event.truncated
    # non-ASCII content counts in UTF-8 bytes: 333 three-byte characters fit
    # in the place of 1000 ASCII ones, 334 do not
    s.handle(1, Chat("r", "€" * 333), NOW)
    assert sizes(s, "r") == [4, 5, 6]
    s.handle(1, Chat("r", "€" * 334), NOW)
    assert sizes(s, "r") == [6, 7]


def test_history_bytes_total_trims_the_servers_oldest_first() -> None:
    per_message = 300 + 3 + 1000
    s = hub(history_bytes_total=4 * per_message)
    s.connect(1, "ann")
    for room in ("a", "b"):
        s.handle(1, Join(room), NOW)
    for room in "aabab":
        s.handle(1, Chat(room, "x" * 1000), NOW)
    # a1 (the oldest) went; then nothing more: 4 messages fit
    assert (sizes(s, "a"), sizes(s, "b")) == ([2, 3], [1, 2])
    assert s.stats() == HubStats(1, 1, 2, 5, 4, 4 * per_message)
    s.handle(1, Chat("b", "x" * 1000), NOW)
    assert (sizes(s, "a"), sizes(s, "b")) == ([3], [1, 2, 3])
    # a single message larger than the whole budget stays until the next one
    s.handle(1, Chat("a", "x" * 6000), NOW)
    assert (sizes(s, "a"), sizes(s, "b")) == ([4], [])
    assert s.last_id("b") == 3  # ids go on


def test_history_max_age() -> None:
    s = hub(history_max_age=60)
    s.connect(1, "ann")
    s.handle(1, Join("r"), NOW)
    s.handle(1, Chat("r", "old"), NOW)
    s.handle(1, Chat("r", "newer"), NOW + 30)
    assert sizes(s, "r") == [1, 2]
    s.handle(1, Chat("r", "new"), NOW + 61)
    assert sizes(s, "r") == [2, 3]
    # a join looks at the clock too, with no message sent
    s.connect(2, "bob")
    event = s.handle(2, Join("r"), NOW + 200)[0].event
    assert event.history == [] and event.truncated
    assert s.stats().history == 0 and s.stats().history_bytes == 0
