"""The codec (PROTOCOL §2-§5): client frames in, server events out.

Pure and synchronous: no event loop.  Property tests use the public
strategies in :mod:`trio_chat.testing`, the ones we offer to others; unit
tests pin each rule with the exact frames the protocol document shows.
"""

from __future__ import annotations

import calendar
import json

import attrs
import pytest
from hypothesis import example, given, settings, strategies as st

from trio_chat import (
    HistoryPage,
    MessageDeleted,
    MessageEdited,
    ReactionChanged,
    ReadMarker,
    RoomList,
)
from trio_chat._frames import text_frame
from trio_chat._protocol import (
    MAX_PRESENCE_TEXT_CHARS,
    MAX_REF_CHARS,
    MAX_STATUS_CHARS,
    Chat,
    ChatAck,
    ChatMessage,
    ClientEvent,
    CommandResult,
    ConversationList,
    Direct,
    DirectAck,
    DirectMessage,
    ErrorEvent,
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
    Welcome,
    encode_client_event,
    format_time,
    is_valid_room,
    is_valid_user_id,
    parse_client_frame,
    parse_server_frame,
)
from trio_chat.testing import (
    CLIENT_TYPES,
    SERVER_EVENT_CLASSES,
    InvalidFrame,
    client_events,
    client_frames,
    invalid_frame_cases,
    invalid_frames,
    invalid_room_names,
    invalid_user_ids,
    json_values,
    room_names,
    server_events,
    user_ids,
)

CODES = {400, 413}


def refuse(text: str, **kw: int) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_frame(text, **kw)
    return info.value


def frame(kind: str, payload: object, **top: object) -> str:
    return json.dumps({"type": kind, "payload": payload, **top})


# --------------------------------------------------------------------------
# Properties


#: The exact payload keys of each server frame (§4); optional ones apart.
#: An event about a log has exactly one of ``room`` and ``with`` (ADDRESSED).
PAYLOAD_KEYS = {
    Welcome: ({"session_id", "user_id", "limits"}, set()),
    Joined: (
        {"room", "members", "history", "truncated"},
        {"epoch", "read", "unread", "mentions", "topic"},
    ),
    Left: ({"room"}, set()),
    System: ({"event", "room", "user_id"}, {"text"}),
    ChatMessage: (
        {"id", "room", "user_id", "content", "time"},
        {"edited", "deleted", "reactions", "mentions"},
    ),
    ChatAck: ({"id", "room", "time"}, set()),
    DirectAck: ({"to", "time"}, {"id"}),
    PresenceUpdate: ({"user_id", "status"}, {"text"}),
    DirectMessage: (
        {"from", "content", "time"},
        {"id", "to", "edited", "deleted", "reactions", "mentions"},
    ),
    TypingNotice: ({"room", "user_id"}, set()),
    TypingWith: ({"with", "user_id"}, set()),
    ConversationList: ({"conversations", "truncated"}, set()),
    ReadMarker: ({"id"}, set()),
    RoomList: ({"rooms", "truncated"}, set()),
    CommandResult: ({"name", "result"}, set()),
    MessageEdited: ({"id", "user_id", "content", "edited"}, {"mentions"}),
    MessageDeleted: ({"id", "user_id", "by"}, set()),
    ReactionChanged: ({"id", "emoji", "user_id", "on", "count"}, set()),
    HistoryPage: ({"messages", "truncated"}, set()),
    ErrorEvent: ({"code", "message"}, {"retry_after_ms"}),
}
ADDRESSED = {ReadMarker, MessageEdited, MessageDeleted, ReactionChanged, HistoryPage}
WITH_REF = {
    Joined,
    Left,
    System,
    ChatAck,
    DirectAck,
    ConversationList,
    RoomList,
    CommandResult,
    ErrorEvent,
} | ADDRESSED


@pytest.mark.parametrize("cls", SERVER_EVENT_CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_server_events_round_trip(cls: type[ServerEvent], data: st.DataObject) -> None:
    event = data.draw(server_events([cls]))
    assert type(event) is cls
    text = event.to_json()
    frame_bytes = text_frame(text)  # what the hub puts on the wire
    assert frame_bytes.endswith(text.encode("utf-8"))
    obj = json.loads(text)
    assert obj["type"] == event.type
    assert obj["payload"] == event.payload()
    required, optional = PAYLOAD_KEYS[type(event)]
    keys = set(obj["payload"])
    if type(event) in ADDRESSED:
        assert len(keys & {"room", "with"}) == 1
        keys -= {"room", "with"}
    assert required <= keys <= required | optional
    ref = getattr(event, "ref", None)
    if type(event) in WITH_REF and ref is not None:
        assert obj["ref"] == ref
    else:
        assert "ref" not in obj
    assert set(obj) <= {"type", "payload", "ref"}
    assert parse_server_frame(text) == event
    assert parse_server_frame(text.encode("utf-8")) == event


def test_every_server_event_class_is_covered() -> None:
    assert set(SERVER_EVENT_CLASSES) == set(PAYLOAD_KEYS)
    with pytest.raises(ValueError):
        server_events([int])  # type: ignore[list-item]


@given(client_frames())
def test_valid_client_frames_parse_to_their_event(case: tuple[str, ClientEvent]) -> None:
    text, expected = case
    assert parse_client_frame(text) == expected
    # and the canonical encoding of that event parses back to it
    assert parse_client_frame(encode_client_event(expected)) == expected


@pytest.mark.parametrize("kind", CLIENT_TYPES)
@settings(max_examples=25)
@given(data=st.data())
def test_every_client_type_parses_to_its_event(kind: str, data: st.DataObject) -> None:
    text, expected = data.draw(client_frames(types=[kind]))
    assert expected.type == kind
    assert parse_client_frame(text) == expected


@pytest.mark.parametrize("kind", CLIENT_TYPES)
@settings(max_examples=40)
@given(data=st.data())
def test_every_client_type_refused_names_the_field(kind: str, data: st.DataObject) -> None:
    case = data.draw(invalid_frame_cases(types=[kind]))
    err = refuse(case.text)
    assert err.code == case.code, case.reason
    if case.field is not None:
        assert err.message.startswith(case.field + ":"), (case.reason, err.message)
        assert err.ref == case.ref


@settings(max_examples=50)
@given(client_frames(types=["chat", "direct", "edit"], max_content_chars=10))
def test_content_limit_is_a_parameter(case: tuple[str, ClientEvent]) -> None:
    text, expected = case
    assert parse_client_frame(text, max_content_chars=10) == expected


def _assert_refused_cleanly(text: str, **kw: int) -> None:
    try:
        event = parse_client_frame(text, **kw)
    except ProtocolError as err:
        assert err.code in CODES
        assert err.message
        # The error itself must be sendable: valid UTF-8 JSON.
        text_frame(err.to_event().to_json())
    else:
        assert isinstance(event, ClientEvent)
        for value in attrs.astuple(event):
            if isinstance(value, str):
                value.encode("utf-8")  # no lone surrogate gets through


@given(st.text())
@example("")
@example("null")
@example("\ufeff{}")
@example('{"type":"chat","payload":{"room":"a","content":"\\ud800"}}')
def test_arbitrary_text_only_raises_protocol_error(text: str) -> None:
    _assert_refused_cleanly(text)


@given(json_values(max_leaves=20))
def test_arbitrary_json_only_raises_protocol_error(value: object) -> None:
    _assert_refused_cleanly(json.dumps(value))


# Frames shaped like the protocol's, with anything in their fields: this
# reaches every field check with every JSON type.
_FIELD_NAMES = [
    "room",
    "with",
    "content",
    "id",
    "since",
    "before",
    "emoji",
    "status",
    "text",
    "to",
    "name",
    "query",
    "topic",
    "x",
]
_shaped = st.fixed_dictionaries(
    {
        "type": st.sampled_from(CLIENT_TYPES) | json_values(),
        "payload": st.dictionaries(
            st.sampled_from(_FIELD_NAMES), json_values() | room_names() | user_ids(), max_size=6
        )
        | json_values(),
    },
    optional={"ref": json_values() | st.text()},
)


@given(_shaped, st.booleans())
def test_protocol_shaped_json_only_raises_protocol_error(value: dict, ascii_: bool) -> None:
    _assert_refused_cleanly(json.dumps(value, ensure_ascii=ascii_))


@given(invalid_frame_cases())
def test_invalid_frames_earn_their_code_and_name_the_field(case: InvalidFrame) -> None:
    err = refuse(case.text)
    assert err.code == case.code, case.reason
    if case.field is not None:
        assert err.message.startswith(case.field + ":"), (case.reason, err.message)
        assert err.ref == case.ref
    else:
        assert err.ref is None
    # Whatever was wrong, the error frame can be encoded and read back.
    event = err.to_event()
    text_frame(event.to_json())
    assert parse_server_frame(event.to_json()) == event


@given(invalid_frames())
def test_invalid_frames_pairs(case: tuple[str, int]) -> None:
    text, code = case
    assert refuse(text).code == code


@given(invalid_frames(types=["chat", "edit"], max_content_chars=5))
def test_invalid_frames_respect_the_content_limit(case: tuple[str, int]) -> None:
    text, code = case
    assert refuse(text, max_content_chars=5).code == code


@given(room_names())
def test_room_names_match(name: str) -> None:
    assert is_valid_room(name)
    assert parse_client_frame(frame("join", {"room": name})) == Join(name)


@given(invalid_room_names())
def test_invalid_room_names_refused(name: str) -> None:
    assert not is_valid_room(name)
    err = refuse(frame("join", {"room": name}))
    assert err.code == 400 and err.message.startswith("payload.room:")


@given(user_ids())
def test_user_ids_match(name: str) -> None:
    assert is_valid_user_id(name)
    assert parse_client_frame(frame("direct", {"to": name, "content": "hi"})) == Direct(name, "hi")


@given(invalid_user_ids())
def test_invalid_user_ids_refused(name: str) -> None:
    assert not is_valid_user_id(name)
    err = refuse(frame("direct", {"to": name, "content": "hi"}))
    assert err.code == 400 and err.message.startswith("payload.to:")


def test_strategy_types_argument() -> None:
    with pytest.raises(ValueError):
        client_events(["shout"]).example()
    with pytest.raises(ValueError):
        client_frames([]).example()


@settings(max_examples=20)
@given(client_frames(types=["presence"]))
def test_client_frames_types_filter(case: tuple[str, ClientEvent]) -> None:
    assert isinstance(case[1], Presence)


# --------------------------------------------------------------------------
# Unit tests: client frames, one rule each


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (frame("join", {"room": "lobby"}), Join("lobby")),
        (frame("join", {"room": "lobby", "since": 0}), Join("lobby", 0)),
        (frame("join", {"room": "lobby", "since": 41}, ref="r1"), Join("lobby", 41, "r1")),
        (frame("join", {"room": "lobby", "since": None}), Join("lobby")),
        (frame("join", {"room": "lobby", "since": -0}), Join("lobby", 0)),
        (frame("leave", {"room": "lobby"}), Leave("lobby")),
        (frame("chat", {"room": "lobby", "content": "hi"}), Chat("lobby", "hi")),
        (frame("chat", {"room": "lobby", "content": " "}), Chat("lobby", " ")),
        (frame("chat", {"room": "lobby", "content": "hi"}, ref=""), Chat("lobby", "hi", "")),
        (frame("chat", {"room": "lobby", "content": "hi"}, ref=None), Chat("lobby", "hi")),
        (frame("presence", {"status": "away"}), Presence("away")),
        (frame("presence", {"status": "at lunch, back at 2"}), Presence("at lunch, back at 2")),
        (frame("presence", {"status": "busy", "text": "call"}), Presence("busy", "call")),
        (frame("presence", {"status": "busy", "text": None}), Presence("busy")),
        (
            frame("direct", {"to": "bob@example.com", "content": "psst"}),
            Direct("bob@example.com", "psst"),
        ),
        (frame("typing", {"room": "a:b.c-d_e"}), Typing("a:b.c-d_e")),
        (frame("typing", {"with": "bob"}, ref="t"), TypingTo("bob", "t")),
        (frame("typing", {"with": "bob", "room": None}), TypingTo("bob")),
        (frame("conversations", {}, ref="c"), ListConversations("c")),
        # unknown extra fields are ignored, at both levels
        (frame("typing", {"room": "r", "extra": [1, {"x": None}]}, v=2, id=7), Typing("r")),
        # whitespace and escapes
        (' {\n "payload" : {"room":"\\u006cobby"}, "type":"leave"}\t', Leave("lobby")),
        # the content limit counts characters, not bytes
        (frame("chat", {"room": "r", "content": "é" * 4000}), Chat("r", "é" * 4000)),
        (frame("chat", {"room": "r", "content": "🙂" * 4000}), Chat("r", "🙂" * 4000)),
        (frame("chat", {"room": "r", "content": "\\ud83d\\ude42"}), Chat("r", "\\ud83d\\ude42")),
        ('{"type":"chat","payload":{"room":"r","content":"\\ud83d\\ude42"}}', Chat("r", "🙂")),
        # boundaries of every length rule
        (frame("join", {"room": "r" * 64}), Join("r" * 64)),
        (frame("direct", {"to": "u" * 64, "content": "x"}), Direct("u" * 64, "x")),
        (frame("leave", {"room": "r"}, ref="x" * MAX_REF_CHARS), Leave("r", "x" * MAX_REF_CHARS)),
        (frame("presence", {"status": "s" * MAX_STATUS_CHARS}), Presence("s" * MAX_STATUS_CHARS)),
        (
            frame("presence", {"status": "s", "text": "t" * MAX_PRESENCE_TEXT_CHARS}),
            Presence("s", "t" * MAX_PRESENCE_TEXT_CHARS),
        ),
        (frame("join", {"room": "r", "since": 10**30}), Join("r", 10**30)),
    ],
)
def test_valid_frame(text: str, expected: ClientEvent) -> None:
    assert parse_client_frame(text) == expected


BAD = [
    # (frame text, code, message prefix, echoed ref)
    ("", 400, "frame is not valid JSON", None),
    ("chat hello", 400, "frame is not valid JSON", None),
    ("{'type': 'chat'}", 400, "frame is not valid JSON", None),
    ('{"type":"typing","payload":{"room":"r"}}x', 400, "frame is not valid JSON", None),
    ('{"type":"typing","payload":{"room":"r"', 400, "frame is not valid JSON", None),
    ('{"type":"join","payload":{"room":"r","since":NaN}}', 400, "frame is not valid JSON", None),
    (
        '{"type":"join","payload":{"room":"r","since":Infinity}}',
        400,
        "frame is not valid JSON",
        None,
    ),
    (
        '{"type":"typing","payload":{"room":"r","x":-Infinity}}',
        400,
        "frame is not valid JSON",
        None,
    ),
    ('{"type":"typing","ref":' + "9" * 5000 + ',"payload":{"room":"r"}}', 400, "", None),
    ("[" * 100_000 + "]" * 100_000, 400, "frame is not valid JSON", None),
    (
        '{"type":"typing","payload":{"room":"r","x":' + "[" * 100_000 + "]" * 100_000 + "}}",
        400,
        "frame is not valid JSON",
        None,
    ),
    ("[]", 400, "frame must be a JSON object", None),
    ('"{\\"type\\":\\"typing\\"}"', 400, "frame must be a JSON object", None),
    ("42", 400, "frame must be a JSON object", None),
    ("null", 400, "frame must be a JSON object", None),
    ('{"payload":{"room":"r"},"ref":"q"}', 400, "type:", "q"),
    ('{"type":7,"payload":{"room":"r"},"ref":"q"}', 400, "type:", "q"),
    ('{"type":"shout","payload":{"room":"r"},"ref":"q"}', 400, "type:", "q"),
    ('{"type":"Chat","payload":{"room":"r","content":"x"}}', 400, "type:", None),
    ('{"type":"ack","payload":{}}', 400, "type:", None),
    ('{"type":"typing","ref":"q"}', 400, "payload:", "q"),
    ('{"type":"typing","payload":["r"],"ref":"q"}', 400, "payload:", "q"),
    ('{"type":"typing","payload":null}', 400, "payload:", None),
    ('{"type":"typing","payload":{"room":"r"},"ref":5}', 400, "ref:", None),
    ('{"type":"typing","payload":{"room":"r"},"ref":true}', 400, "ref:", None),
    ('{"type":"typing","payload":{"room":"r"},"ref":["a"]}', 400, "ref:", None),
    (frame("typing", {"room": "r"}, ref="x" * (MAX_REF_CHARS + 1)), 400, "ref:", None),
    ('{"type":"typing","payload":{"room":"r"},"ref":"\\udc00"}', 400, "ref:", None),
    (frame("join", {}, ref="q"), 400, "payload.room:", "q"),
    (frame("join", {"room": None}, ref="q"), 400, "payload.room:", "q"),
    (frame("join", {"room": 5}), 400, "payload.room:", None),
    (frame("join", {"room": ""}), 400, "payload.room:", None),
    (frame("join", {"room": "r" * 65}), 400, "payload.room:", None),
    (frame("join", {"room": "_r"}), 400, "payload.room:", None),
    (frame("join", {"room": "a b"}), 400, "payload.room:", None),
    (frame("join", {"room": "a@b"}), 400, "payload.room:", None),
    (frame("join", {"room": "lobby\n"}), 400, "payload.room:", None),
    (frame("join", {"room": "café"}), 400, "payload.room:", None),
    (frame("leave", {"room": "a/b"}), 400, "payload.room:", None),
    (frame("typing", {"room": ["r"]}), 400, "payload.room:", None),
    (frame("typing", {"room": "r", "with": "bob"}), 400, "payload: exactly one", None),
    (frame("typing", {}), 400, "payload: exactly one", None),
    (frame("typing", {"with": "bob smith"}), 400, "payload.with:", None),
    (frame("typing", {"with": 7}), 400, "payload.with:", None),
    (frame("chat", {"room": "r b", "content": "x"}), 400, "payload.room:", None),
    (frame("join", {"room": "r", "since": -1}, ref="q"), 400, "payload.since:", "q"),
    (frame("join", {"room": "r", "since": True}), 400, "payload.since:", None),
    (frame("join", {"room": "r", "since": False}), 400, "payload.since:", None),
    (frame("join", {"room": "r", "since": 1.0}), 400, "payload.since:", None),
    (frame("join", {"room": "r", "since": 1.5}), 400, "payload.since:", None),
    (frame("join", {"room": "r", "since": "3"}), 400, "payload.since:", None),
    (frame("join", {"room": "r", "since": [3]}), 400, "payload.since:", None),
    ('{"type":"join","payload":{"room":"r","since":1e400}}', 400, "payload.since:", None),
    ('{"type":"join","payload":{"room":"r","since":1E2}}', 400, "payload.since:", None),
    (frame("chat", {"room": "r"}, ref="q"), 400, "payload.content:", "q"),
    (frame("chat", {"room": "r", "content": None}), 400, "payload.content:", None),
    (frame("chat", {"room": "r", "content": 5}), 400, "payload.content:", None),
    (frame("chat", {"room": "r", "content": ["hi"]}), 400, "payload.content:", None),
    (frame("chat", {"room": "r", "content": ""}, ref="q"), 400, "payload.content:", "q"),
    (frame("chat", {"room": "r", "content": "x" * 4001}, ref="q"), 413, "payload.content:", "q"),
    (frame("chat", {"room": "r", "content": "é" * 4001}), 413, "payload.content:", None),
    ('{"type":"chat","payload":{"room":"r","content":"a\\ud800b"}}', 400, "payload.content:", None),
    (frame("direct", {"content": "x"}), 400, "payload.to:", None),
    (frame("direct", {"to": "a:b", "content": "x"}), 400, "payload.to:", None),
    (frame("direct", {"to": "u" * 65, "content": "x"}), 400, "payload.to:", None),
    (frame("direct", {"to": "bob", "content": ""}), 400, "payload.content:", None),
    (frame("direct", {"to": "bob", "content": "x" * 4001}), 413, "payload.content:", None),
    (frame("presence", {}), 400, "payload.status:", None),
    (frame("presence", {"status": ""}), 400, "payload.status:", None),
    (frame("presence", {"status": 1}), 400, "payload.status:", None),
    (frame("presence", {"status": "s" * (MAX_STATUS_CHARS + 1)}), 400, "payload.status:", None),
    (frame("presence", {"status": "s", "text": 5}), 400, "payload.text:", None),
    (
        frame("presence", {"status": "s", "text": "t" * (MAX_PRESENCE_TEXT_CHARS + 1)}),
        400,
        "payload.text:",
        None,
    ),
    ('{"type":"presence","payload":{"status":"s","text":"\\udfff"}}', 400, "payload.text:", None),
]


@pytest.mark.parametrize(("text", "code", "prefix", "ref"), BAD, ids=range(len(BAD)))
def test_invalid_frame(text: str, code: int, prefix: str, ref: str | None) -> None:
    err = refuse(text)
    assert (err.code, err.ref) == (code, ref)
    assert err.message.startswith(prefix)
    assert "Error" not in err.message  # words, not exception names


def test_unknown_type_message_lists_the_types() -> None:
    err = refuse(frame("shout", {}))
    assert "'shout'" in err.message
    listed = err.message.split("expected one of ")[1].split(", ")
    assert sorted(listed) == sorted(CLIENT_TYPES)


def test_room_pattern_message_shows_the_pattern() -> None:
    assert refuse(frame("join", {"room": "?"})).message == (
        "payload.room: must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
    )


def test_content_limit_is_configurable() -> None:
    ok = frame("chat", {"room": "r", "content": "x" * 10})
    assert parse_client_frame(ok, max_content_chars=10) == Chat("r", "x" * 10)
    err = refuse(frame("chat", {"room": "r", "content": "x" * 11}), max_content_chars=10)
    assert err.code == 413
    assert "10" in err.message


def test_protocol_error_to_event() -> None:
    err = ProtocolError(429, "slow down", "r1", retry_after_ms=250)
    assert str(err) == "429: slow down"
    assert err.to_event() == ErrorEvent(429, "slow down", "r1", 250)
    assert json.loads(err.to_event().to_json()) == {
        "type": "error",
        "payload": {"code": 429, "message": "slow down", "retry_after_ms": 250},
        "ref": "r1",
    }


# --------------------------------------------------------------------------
# Unit tests: server events, the exact JSON of §4

T = "2026-11-29T04:31:24.123Z"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            Welcome("s1", "alice", {"max_message_bytes": 65536}),
            {
                "type": "welcome",
                "payload": {
                    "session_id": "s1",
                    "user_id": "alice",
                    "limits": {"max_message_bytes": 65536},
                },
            },
        ),
        (
            Joined("lobby", ["alice"], [], False, "j1"),
            {
                "type": "joined",
                "payload": {
                    "room": "lobby",
                    "members": ["alice"],
                    "history": [],
                    "truncated": False,
                },
                "ref": "j1",
            },
        ),
        (Left("lobby"), {"type": "left", "payload": {"room": "lobby"}}),
        (
            System("join", "lobby", "bob"),
            {"type": "system", "payload": {"event": "join", "room": "lobby", "user_id": "bob"}},
        ),
        (
            ChatMessage(7, "lobby", "bob", "hi", T),
            {
                "type": "chat",
                "payload": {"id": 7, "room": "lobby", "user_id": "bob", "content": "hi", "time": T},
            },
        ),
        (
            ChatAck(7, "lobby", T, "c1"),
            {"type": "ack", "payload": {"id": 7, "room": "lobby", "time": T}, "ref": "c1"},
        ),
        (ChatAck(7, "lobby", T), {"type": "ack", "payload": {"id": 7, "room": "lobby", "time": T}}),
        (
            DirectAck("bob", T, "d1"),
            {"type": "ack", "payload": {"to": "bob", "time": T}, "ref": "d1"},
        ),
        (
            PresenceUpdate("bob", "away"),
            {"type": "presence", "payload": {"user_id": "bob", "status": "away"}},
        ),
        (
            PresenceUpdate("bob", "away", "lunch"),
            {"type": "presence", "payload": {"user_id": "bob", "status": "away", "text": "lunch"}},
        ),
        (
            DirectMessage("alice", "psst", T),
            {"type": "direct", "payload": {"from": "alice", "content": "psst", "time": T}},
        ),
        (
            TypingNotice("lobby", "bob"),
            {"type": "typing", "payload": {"room": "lobby", "user_id": "bob"}},
        ),
        (
            DirectAck("bob", T, "d1", 3),
            {"type": "ack", "payload": {"id": 3, "to": "bob", "time": T}, "ref": "d1"},
        ),
        (
            DirectMessage("alice", "psst", T, 3, "bob"),
            {
                "type": "direct",
                "payload": {"id": 3, "from": "alice", "to": "bob", "content": "psst", "time": T},
            },
        ),
        (
            DirectMessage("alice", "psst", T, 3, "bob", {"edited": T}),
            {
                "type": "direct",
                "payload": {
                    "id": 3,
                    "from": "alice",
                    "to": "bob",
                    "content": "psst",
                    "time": T,
                    "edited": T,
                },
            },
        ),
        (
            TypingWith("alice", "alice"),
            {"type": "typing", "payload": {"with": "alice", "user_id": "alice"}},
        ),
        (
            ConversationList([{"with": "bob", "last_id": 0, "last": None}], False, "c"),
            {
                "type": "conversations",
                "payload": {
                    "conversations": [{"with": "bob", "last_id": 0, "last": None}],
                    "truncated": False,
                },
                "ref": "c",
            },
        ),
        (ErrorEvent(400, "bad"), {"type": "error", "payload": {"code": 400, "message": "bad"}}),
        (
            ErrorEvent(404, "no such user", "d2"),
            {"type": "error", "payload": {"code": 404, "message": "no such user"}, "ref": "d2"},
        ),
    ],
)
def test_server_event_json(event: ServerEvent, expected: dict) -> None:
    text = event.to_json()
    assert json.loads(text) == expected
    assert parse_server_frame(text) == event


def test_server_json_is_compact_utf8() -> None:
    text = ChatMessage(1, "r", "u", "héllo 🙂", T).to_json()
    assert " " not in text.replace("héllo 🙂", "")
    assert "héllo 🙂" in text  # not \\u-escaped: fewer bytes per fan-out


def test_parse_server_frame_refuses_non_events() -> None:
    for text in [
        "[]",
        '{"type":"chat"}',
        '{"type":"nope","payload":{}}',
        '{"type":"chat","payload":{}}',
    ]:
        with pytest.raises(ValueError):
            parse_server_frame(text)


def test_format_time() -> None:
    moment = calendar.timegm((2026, 11, 29, 4, 31, 24)) + 0.123
    assert format_time(moment) == T
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(59.5) == "1970-01-01T00:00:59.500Z"
