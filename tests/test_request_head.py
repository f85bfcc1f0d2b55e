"""The upgrade head's one cheap parse (trio_chat._request_head), against h11.

Rules: no I/O; h11 (the parser every other request goes through) is the
reference.  Whatever :func:`parse_upgrade_head` accepts, h11 must accept
from the same bytes with the same method, target, version, headers and
trailing bytes; whatever it declines goes to h11 unchanged, so it may
decline more than h11 refuses, never accept what h11 refuses.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import example, given, settings, strategies as st

from trio_chat._request_head import HEAD_END, parse_upgrade_head

GOOD = (
    b"GET /ws?user=ann&key=abcdefgh HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8000\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


def h11_request(data: bytes) -> tuple[h11.Request, bytes] | None:
    """h11's request and trailing bytes for *data*, or None if it refuses."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    return event, bytes(conn.trailing_data[0])


def fast(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes] | None:
    """What the HTTP front takes from *data* on the fast path: the target,
    the headers and the trailing bytes (None: h11 parses it)."""
    end = data.find(HEAD_END)
    if end < 0:
        return None
    head = parse_upgrade_head(data[: end + len(HEAD_END)])
    if head is None:
        return None
    return head.target, head.headers, data[end + len(HEAD_END) :]


def test_a_client_upgrade_takes_the_fast_path_with_h11s_reading() -> None:
    frames = b"\x81\x80\x00\x00\x00\x00"
    got = fast(GOOD + frames)
    assert got is not None
    target, headers, trailing = got
    assert target == b"/ws?user=ann&key=abcdefgh" and trailing == frames
    assert headers[0] == (b"host", b"127.0.0.1:8000")
    reference = h11_request(GOOD + frames)
    assert reference is not None
    request, rest = reference
    assert list(request.headers) == headers and rest == frames


def test_header_values_lose_their_surrounding_whitespace_as_in_h11() -> None:
    data = GOOD.replace(b"Upgrade: websocket", b"UPGRADE:\t  WebSocket  \t")
    got = fast(data)
    assert got is not None and (b"upgrade", b"WebSocket") in got[1]


def replace(old: bytes, new: bytes) -> bytes:
    assert old in GOOD
    return GOOD.replace(old, new)


@pytest.mark.parametrize(
    "data",
    [
        replace(b"HTTP/1.1", b"HTTP/1.0"),  # h11 parses it; the handshake refuses it
        replace(b"GET ", b"POST "),
        replace(b"GET ", b"get "),
        replace(b"GET /ws", b"GET  /ws"),
        replace(b"\r\nHost: 127.0.0.1:8000", b""),  # no Host
        replace(b"Host: 127.0.0.1:8000\r\n", b"Host: a\r\nHost: b\r\n"),  # two
        replace(b"Upgrade: websocket", b"Upgrade: h2c"),  # not an upgrade
        replace(b"Upgrade: websocket\r\n", b""),
        replace(b"Connection: Upgrade\r\n", b"Content-Length: 4\r\n"),  # a body
        replace(b"Connection: Upgrade\r\n", b"Transfer-Encoding: chunked\r\n"),
        replace(b"Connection: Upgrade\r\n", b"Connection: Upgrade\r\n  folded\r\n"),
        replace(b"Connection: Upgrade\r\n", b"Bad Name: x\r\n"),
        replace(b"Connection: Upgrade\r\n", b"Connection: Up\x00grade\r\n"),
        replace(b"Connection: Upgrade\r\n", b"Connection: Up\rgrade\r\n"),
        replace(b"Connection: Upgrade\r\n", b"Connection Upgrade\r\n"),
        replace(b"\r\n", b"\n"),  # bare LF line ends (h11 takes them)
        replace(b"Host: 127.0.0.1:8000\r\n", b"Host: 127.0.0.1:8000\n"),
        replace(b"GET /ws?user=ann", b"GET /ws?user=\xe9"),  # not visible ASCII
        b"\r\n" + GOOD,  # a blank line first
    ],
)
def test_anything_outside_the_strict_form_goes_to_h11(data: bytes) -> None:
    assert fast(data) is None


def test_a_head_split_before_its_blank_line_is_not_parsed() -> None:
    assert fast(GOOD[:-2]) is None


# Heads built from pieces that sit near every rule: each piece is usually
# the valid one, so that most heads differ from an accepted one in a few
# places; now and then a raw byte string.
def mostly(valid: bytes, *others: bytes | st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """*valid* nine times in ten, else one of *others*."""
    rest = st.one_of([o if isinstance(o, st.SearchStrategy) else st.just(o) for o in others])
    return st.integers(0, 9).flatmap(lambda n: st.just(valid) if n < 9 else rest)


_METHOD = mostly(b"GET", b"POST", b"get", b"G\xc3T", b"")
_SP = mostly(b" ", b"  ", b"\t", b"")
_TARGET = mostly(
    b"/ws?user=a&key=bbbbbbbb", b"/", b"*", b"/w s", b"/\x7f", b"/\x80", st.binary(max_size=8)
)
_VERSION = mostly(b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ", b"")
_NAME = st.one_of(
    st.sampled_from(
        [
            b"Origin",
            b"Connection",
            b"Sec-WebSocket-Key",
            b"X-Y",
            b"Host",
            b"upgrade",
            b"Content-Length",
            b"Transfer-Encoding",
            b"Bad Name",
            b"",
            b" X",
            b"X\x80",
        ]
    ),
    st.binary(max_size=6),
)
_VALUE = st.one_of(
    st.sampled_from(
        [b"websocket", b"WebSocket, h2c", b"x", b"", b" a b ", b"\ta\t", b"4", b"a\x80b", b"\x7f"]
    ),
    st.binary(max_size=10),
)
_SEP = mostly(b": ", b":", b":\t", b" :", b"")
_EOL = mostly(b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r")


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    out = draw(_METHOD) + draw(_SP) + draw(_TARGET) + draw(_SP) + draw(_VERSION) + draw(_EOL)
    lines = [b"Host" + draw(_SEP) + draw(mostly(b"h:1", b"", b"a b")) + draw(_EOL)]
    upgrade = draw(mostly(b"websocket", _VALUE))
    lines.append(draw(mostly(b"Upgrade", b"Upgrade ")) + draw(_SEP) + upgrade + draw(_EOL))
    for _ in range(draw(st.integers(0, 4))):
        lines.append(draw(_NAME) + draw(_SEP) + draw(_VALUE) + draw(_EOL))
    kept = [draw(mostly(b"1", b"")) for _ in lines]
    order = draw(st.permutations(range(len(lines))))
    out += b"".join(lines[i] for i in order if kept[i] or i == 0)
    return out + draw(_EOL) + draw(st.sampled_from([b"", b"\x81\x80abcd", b"\r\n\r\nmore"]))


@settings(max_examples=2000, deadline=None)
@given(st.one_of(heads(), heads(), heads(), st.binary(max_size=200)))
@example(GOOD)
@example(GOOD + b"\x81\x80abcd")
@example(GOOD.replace(b"Host", b"Content-length") + b"Host: x\r\n\r\n")
def test_the_fast_parse_never_fails_and_agrees_with_h11(data: bytes) -> None:
    got = fast(data)  # never raises
    if got is None:
        return
    target, headers, trailing = got
    reference = h11_request(data)
    assert reference is not None, "the fast parse accepted what h11 refuses"
    request, rest = reference
    assert request.method == b"GET" and request.http_version == b"1.1"
    assert request.target == target
    assert list(request.headers) == headers
    assert rest == trailing


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"X-A", b"Origin", b"Sec-WebSocket-Protocol", b"Cookie"]),
            st.text(
                st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20
            ).map(str.encode),
        ),
        max_size=5,
    )
)
def test_well_formed_upgrades_all_take_the_fast_path(extra: list[tuple[bytes, bytes]]) -> None:
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in extra)
    data = GOOD[:-2] + lines + b"\r\n"
    got = fast(data)
    assert got is not None
    reference = h11_request(data)
    assert reference is not None and list(reference[0].headers) == got[1]
