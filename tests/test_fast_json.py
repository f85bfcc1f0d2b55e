"""The hand-written serializers of the hot path match the generic one."""

import json

from hypothesis import given, strategies as st

from trio_chat import ChatAck, ChatMessage
from trio_chat._protocol import format_time
from trio_chat.testing import server_events

_text = st.text(st.characters(codec="utf-8"), max_size=50)


def _dumps(obj: object) -> str:
    """The generic serialization: compact, UTF-8 kept as it is."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@given(server_events(classes=[ChatMessage, ChatAck]))
def test_fast_to_json_is_the_generic_serialization(event):
    assert event.to_json() == _dumps(event.frame())


@given(st.integers(0, 2**53), _text, _text, _text, _text, st.none() | _text)
def test_fast_to_json_escapes_any_text(id_, room, user, content, time, ref):
    message = ChatMessage(id_, room, user, content, time)
    assert message.to_json() == _dumps(message.frame())
    assert json.loads(message.to_json())["payload"]["content"] == content
    ack = ChatAck(id_, room, time, ref)
    assert ack.to_json() == _dumps(ack.frame())


@given(st.floats(0, 4e9, allow_nan=False))
def test_format_time_is_rfc3339_with_milliseconds(seconds):
    import time

    millis = int(seconds * 1000)
    expected = (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + f".{millis % 1000:03d}Z"
    )
    assert format_time(seconds) == expected
