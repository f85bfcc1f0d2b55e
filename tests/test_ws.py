"""The connection layer's frame engine (trio_chat._ws) and handshake, without I/O.

Rules: every test here is synchronous or uses no network; bytes from the
"client" are built by hand (``ws_frames``); the reference parser is
wsproto's frame layer (the engine trio_chat does *not* drive), fed the very
same bytes split at the very same points.  What the engine writes back
(pongs, close frames) is parsed with ``wire_support.parse_frames``.
"""

from __future__ import annotations

import itertools
import zlib
from typing import Any

import attrs
import pytest
from hypothesis import given, settings, strategies as st
from wire_support import OP_CLOSE, OP_PONG, parse_frames
from ws_frames import (
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OP_PONG as C_PONG,
    OP_TEXT,
    client_frame,
    close_payload,
    deflate_message,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from trio_chat._deflate import Compressor, DeflateParams, negotiate
from trio_chat._frames import Encoded
from trio_chat._handshake import Accepted, Refused, accept_key, check_upgrade, response_bytes
from trio_chat._ws import WebSocket

BIG = 1 << 20


def make(max_bytes: int = BIG, *, deflate: bool = False, max_pings: int = 1000) -> WebSocket:
    return WebSocket(
        max_message_bytes=max_bytes, deflate=deflate, max_pings=max_pings, now=lambda: 0.0
    )


def written(ws: WebSocket) -> tuple[list[Any], bool]:
    """The frames the engine wants written, and whether it asks for EOF."""
    writes = ws.data_to_send()
    eof = b"" in writes
    frames, rest = parse_frames(b"".join(writes))
    assert rest == b""
    return frames, eof


def sent_close(ws: WebSocket) -> int | None:
    written(ws)  # close frames are recorded as they are handed out to be written
    close = ws.close_sent()
    return None if close is None else close.code


# ------------------------------------------------------------------ messages


def test_whole_and_fragmented_messages_come_out_whole() -> None:
    ws = make()
    data = client_frame(OP_TEXT, b"hello") + client_frame(OP_BINARY, b"\x00\x01")
    data += client_frame(OP_TEXT, "h\u00e9".encode()[:2], fin=False)
    data += client_frame(OP_PING, b"p")
    data += client_frame(OP_CONT, "h\u00e9".encode()[2:] + b"!", fin=True)
    assert ws.receive(data) == ["hello", b"\x00\x01", "h\u00e9!"]
    frames, eof = written(ws)
    assert [(f.opcode, f.payload) for f in frames] == [(OP_PONG, b"p")]
    assert not eof and ws.open


def test_invalid_utf8_closes_1007_as_soon_as_a_fragment_shows_it() -> None:
    ws = make()
    assert ws.receive(client_frame(OP_TEXT, b"ok \xff", fin=False)) == []
    frames, eof = written(ws)
    assert frames[-1].opcode == OP_CLOSE and frames[-1].close_code == 1007 and eof
    assert ws.close_sent().code == 1007 and not ws.open


def test_300000_empty_fragments_hit_the_budget_on_the_wire() -> None:
    """Empty continuation frames add nothing to a message's text, but each
    costs 6 bytes on the wire: the budget counts those."""
    ws = make(65536)
    ws.receive(client_frame(OP_TEXT, b"x", fin=False))
    empty = client_frame(OP_CONT, b"", fin=False)
    fed = 0
    while ws.open and fed < 300_000:
        ws.receive(empty * 1000)
        fed += 1000
    assert not ws.open and fed < 12_000
    frames, eof = written(ws)
    assert frames[-1].close_code == 1009 and eof


def test_pings_inside_a_fragmented_message_count_against_its_budget() -> None:
    ws = make(1000)
    ws.receive(client_frame(OP_TEXT, b"x" * 500, fin=False))
    for _ in range(3):
        ws.receive(client_frame(OP_PING, b"y" * 120))  # 126 bytes each on the wire
    assert ws.open
    ws.receive(client_frame(OP_PING, b"y" * 120))
    assert not ws.open and sent_close(ws) == 1009


def test_a_ping_flood_is_closed_1008() -> None:
    ws = make(max_pings=50)
    ws.receive(client_frame(OP_PING, b"") * 50)
    assert ws.open
    ws.receive(client_frame(OP_PING, b""))
    assert not ws.open and sent_close(ws) == 1008


def test_a_close_between_fragments_is_answered_with_the_clients_code() -> None:
    ws = make()
    ws.receive(client_frame(OP_TEXT, b"frag", fin=False) + client_frame(0x8, close_payload(1000)))
    frames, eof = written(ws)
    assert [f.close_code for f in frames] == [1000] and eof
    first = ws.first_close
    assert first is not None and first.by_client and first.code == 1000


def test_close_codes_are_recorded_as_received_then_sent() -> None:
    ws = make()
    ws.receive(client_frame(0x8, close_payload(4001, "bye")))
    written(ws)
    assert [(c.code, c.by_client) for c in ws.closes] == [(4001, True), (4001, False)]


def test_a_protocol_error_writes_a_close_frame_1002() -> None:
    ws = make()
    ws.receive(client_frame(OP_TEXT, b"x", masked=False))
    frames, eof = written(ws)
    assert frames[-1].close_code == 1002 and eof
    first = ws.first_close
    assert first is not None and not first.by_client


def test_the_heartbeats_pong_is_recognised_by_its_payload() -> None:
    ws = make()
    ws.send_ping(b"\x00\x00\x00\x01")
    frames, _ = written(ws)
    assert frames[0].opcode == 0x9 and ws.pong_pending
    ws.receive(client_frame(C_PONG, b"other"))
    assert not ws.ponged
    ws.receive(client_frame(C_PONG, b"\x00\x00\x00\x01"))
    assert ws.ponged and not ws.pong_pending


# ------------------------------------------------------------------ deflate


def test_compressed_messages_are_inflated() -> None:
    ws = make(deflate=True)
    one = deflate_message(b"hello hello hello")
    two = deflate_message(b"y" * 5000)
    data = client_frame(OP_TEXT, one, rsv1=True)
    data += client_frame(OP_BINARY, two[:10], rsv1=True, fin=False)
    data += client_frame(OP_CONT, two[10:])
    data += client_frame(OP_TEXT, b"plain")  # uncompressed is allowed too
    assert ws.receive(data) == ["hello hello hello", b"y" * 5000, "plain"]


def test_a_deflate_bomb_stops_at_the_budget_in_decompressed_bytes() -> None:
    bomb = deflate_message(b"\x00" * 10_000_000)
    assert len(bomb) < 20_000
    ws = make(65536, deflate=True)
    ws.receive(client_frame(OP_BINARY, bomb, rsv1=True))
    assert not ws.open and sent_close(ws) == 1009


def test_rsv1_without_deflate_is_a_protocol_error() -> None:
    ws = make()
    ws.receive(client_frame(OP_TEXT, deflate_message(b"hi"), rsv1=True))
    assert sent_close(ws) == 1002


def test_the_shared_compressor_makes_messages_that_stand_alone() -> None:
    """Each compressed message decodes alone (a fresh inflater per message,
    what server_no_context_takeover promises) and also through one inflater
    kept across messages (a client that ignores the promise)."""
    compressor = Compressor(15)
    messages = [b"abc" * 50, b"abcabc hello " * 20, b"", b"\x00\xff" * 300, b"abc" * 50]
    kept = zlib.decompressobj(-15)
    for message in messages:
        data = compressor.compress(message)
        assert zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff") == message
        assert kept.decompress(data + b"\x00\x00\xff\xff") == message


def test_encoded_compresses_once_per_window() -> None:
    encoded = Encoded.text("z" * 1000)
    assert encoded.for_bits(0) is encoded.plain
    first = encoded.for_bits(15)
    assert encoded.for_bits(15) is first and first[0] == 0xC1 and len(first) < 100
    assert encoded.for_bits(10) is not first
    small = Encoded.text("hi")
    assert small.for_bits(15) is small.plain  # too short to be worth it


# ------------------------------------------------------------------ handshake

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def headers(**extra: str | list[str]) -> list[tuple[bytes, bytes]]:
    base: dict[str, str | list[str]] = {
        "host": "localhost",
        "upgrade": "websocket",
        "connection": "keep-alive, Upgrade",
        "sec-websocket-key": KEY,
        "sec-websocket-version": "13",
    }
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    out = []
    for name, value in base.items():
        for v in [value] if isinstance(value, str) else value:
            out.append((name.encode(), v.encode()))
    return out


def test_a_valid_upgrade_is_accepted_with_the_rfc_accept_key() -> None:
    accepted = check_upgrade(b"1.1", headers())
    assert isinstance(accepted, Accepted)
    assert accepted.accept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" == accept_key(KEY)
    head = response_bytes(accepted)
    assert head.startswith(b"HTTP/1.1 101 ") and head.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Protocol" not in head and b"Extensions" not in head


@pytest.mark.parametrize(
    ("version", "hdrs", "status"),
    [
        (b"1.0", headers(), 400),
        (b"1.1", headers(connection="keep-alive"), 400),
        (b"1.1", headers(sec_websocket_key="x"), 400),
        (b"1.1", headers(sec_websocket_key=[KEY, KEY]), 400),
        (b"1.1", headers(sec_websocket_key="AAAAAAAAAAAAAAAAAAAAAAAA"), 400),  # 18 bytes
        (b"1.1", headers(sec_websocket_key="not base64 at all!!!!!=="), 400),
        (b"1.1", headers(sec_websocket_version="8"), 426),
        (b"1.1", headers(sec_websocket_version=["13", "13"]), 426),
    ],
)
def test_invalid_upgrades_are_refused(
    version: bytes, hdrs: list[tuple[bytes, bytes]], status: int
) -> None:
    refused = check_upgrade(version, hdrs)
    assert isinstance(refused, Refused) and refused.status == status
    if status == 426:
        assert ("sec-websocket-version", "13") in refused.headers


def test_the_subprotocol_is_chosen_only_when_offered() -> None:
    offered = check_upgrade(b"1.1", headers(sec_websocket_protocol="x, trio-chat.v1"))
    assert isinstance(offered, Accepted) and offered.subprotocol == "trio-chat.v1"
    other = check_upgrade(b"1.1", headers(sec_websocket_protocol="x"))
    assert isinstance(other, Accepted) and other.subprotocol is None


def test_deflate_is_agreed_with_no_context_takeover_both_ways() -> None:
    chromium = "permessage-deflate; client_max_window_bits"
    accepted = check_upgrade(b"1.1", headers(sec_websocket_extensions=chromium))
    assert isinstance(accepted, Accepted)
    assert accepted.deflate == DeflateParams(
        15, "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    )
    assert b"Sec-WebSocket-Extensions: permessage-deflate; server_no" in response_bytes(accepted)
    off = check_upgrade(b"1.1", headers(sec_websocket_extensions=chromium), deflate=False)
    assert isinstance(off, Accepted) and off.deflate is None


@pytest.mark.parametrize(
    ("offer", "bits"),
    [
        ("permessage-deflate; server_max_window_bits=10", 10),
        ("permessage-deflate; server_max_window_bits=8", 0),  # zlib cannot: plain frames
        ('permessage-deflate; server_max_window_bits="12"', 12),
        ("permessage-deflate; server_max_window_bits=16", None),
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; client_max_window_bits=7", None),
        ("permessage-deflate; foo", None),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
        ("x-webkit-deflate-frame", None),
        ("permessage-deflate; foo, permessage-deflate", 15),  # the second offer
    ],
)
def test_deflate_offers(offer: str, bits: int | None) -> None:
    params = negotiate([offer])
    assert (None if params is None else params.server_bits) == bits


# ----------------------------------------------- property: against wsproto

MASK = b"\x37\xfa\x21\x3d"


def reference(
    chunks: list[bytes], *, deflate: bool
) -> tuple[list[Any], list[bytes], tuple[int, str] | None, int | None]:
    """wsproto's server-side frame layer on the same chunks: messages, ping
    payloads, the close received, the close code of a failure."""
    extensions = []
    if deflate:
        ext = PerMessageDeflate()
        ext.accept("permessage-deflate; client_no_context_takeover")
        extensions = [ext]
    proto = FrameProtocol(client=False, extensions=extensions)
    messages: list[Any] = []
    pings: list[bytes] = []
    parts: list[Any] = []
    try:
        for chunk in chunks:
            proto.receive_bytes(chunk)
            for frame in proto.received_frames():
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION):
                    parts.append(frame.payload)
                    if frame.message_finished:
                        joined = "".join(parts) if isinstance(parts[0], str) else b"".join(parts)
                        messages.append(joined)
                        parts = []
                elif frame.opcode is Opcode.PING:
                    pings.append(bytes(frame.payload))
                elif frame.opcode is Opcode.CLOSE:
                    code, reason = frame.payload
                    return messages, pings, (int(code), reason or ""), None
    except ParseFailed as exc:
        return messages, pings, None, int(exc.code)
    return messages, pings, None, None


def ours(
    chunks: list[bytes], *, deflate: bool
) -> tuple[list[Any], list[bytes], tuple[int, str] | None, int | None]:
    ws = make(deflate=deflate)
    messages: list[Any] = []
    pongs: list[bytes] = []
    for chunk in chunks:
        messages += ws.receive(chunk)
        frames, _ = written(ws)
        pongs += [f.payload for f in frames if f.opcode == OP_PONG]
        if not ws.open:
            break
    first = ws.first_close
    if first is None:
        return messages, pongs, None, None
    if first.by_client:
        return messages, pongs, (first.code, first.reason), None
    return messages, pongs, None, first.code


text_pieces = st.text(max_size=40).map(str.encode)
control = st.tuples(st.sampled_from([OP_PING, C_PONG]), st.binary(max_size=125))


@attrs.frozen
class Stream:
    """Client bytes, and what a correct server must make of them."""

    data: bytes
    messages: list[Any]
    pings: list[bytes]
    close: tuple[int, str] | None
    #: wsproto, the reference, mis-inflates a compressed message sent in
    #: fragments (it yields b"\x00\x00" for b"\x00" split 1 + 2 bytes):
    #: such streams are checked against ``messages`` only.
    reference_ok: bool


@st.composite
def valid_streams(draw: st.DrawFn, *, deflate: bool = False) -> Stream:
    """Messages, each whole or in fragments with control frames between,
    optionally compressed; then perhaps a close frame."""
    frames: list[bytes] = []
    messages: list[Any] = []
    pings: list[bytes] = []
    reference_ok = True
    for _ in range(draw(st.integers(0, 6))):
        binary = draw(st.booleans())
        payload = draw(st.binary(max_size=300)) if binary else draw(text_pieces)
        messages.append(payload if binary else payload.decode())
        compressed = deflate and draw(st.booleans())
        data = deflate_message(payload) if compressed else payload
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        reference_ok = reference_ok and not (compressed and len(pieces) > 1)
        for i, piece in enumerate(pieces):
            opcode = (OP_BINARY if binary else OP_TEXT) if i == 0 else OP_CONT
            frames.append(
                client_frame(
                    opcode, piece, fin=i == len(pieces) - 1, rsv1=compressed and i == 0, mask=MASK
                )
            )
            for op, body in draw(st.lists(control, max_size=2)):
                frames.append(client_frame(op, body, mask=MASK))
                if op == OP_PING:
                    pings.append(body)
    close = None
    if draw(st.booleans()):
        close = (1000, "done")
        frames.append(client_frame(0x8, close_payload(1000, "done"), mask=MASK))
    return Stream(b"".join(frames), messages, pings, close, reference_ok)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a] or [b""]


@settings(max_examples=200)
@given(stream=valid_streams(), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_valid_streams_split_anywhere_match_the_reference(stream: Stream, cuts: list[int]) -> None:
    chunks = split(stream.data, cuts)
    got = ours(chunks, deflate=False)
    assert got == (stream.messages, stream.pings, stream.close, None)
    assert got == reference(chunks, deflate=False)


@settings(max_examples=150)
@given(stream=valid_streams(deflate=True), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_compressed_streams_match_the_reference(stream: Stream, cuts: list[int]) -> None:
    """Compressed messages (each inflated alone: no context takeover) mixed
    with plain ones, fragmented, with control frames between."""
    chunks = split(stream.data, cuts)
    got = ours(chunks, deflate=True)
    assert got == (stream.messages, stream.pings, stream.close, None)
    if stream.reference_ok:
        assert got == reference(chunks, deflate=True)


any_frame = st.builds(
    lambda op, payload, fin, rsv, masked: client_frame(
        op, payload, fin=fin, rsv1=rsv, masked=masked, mask=MASK
    ),
    st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB]),
    st.one_of(
        text_pieces,
        st.binary(max_size=140),
        st.builds(close_payload, st.sampled_from([1000, 1001, 1005, 1006, 1012, 999, 3000, 5000])),
    ),
    st.booleans(),
    st.sampled_from([False] * 7 + [True]),
    st.sampled_from([True, True, True, False]),
)


@settings(max_examples=300)
@given(
    frames=st.lists(any_frame, min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_arbitrary_frames_fail_like_the_reference(frames: list[bytes], cuts: list[int]) -> None:
    """Any mix of valid and invalid frames: the same messages come out, the
    same pings are answered, and the stream fails, with the same close code,
    where the reference fails."""
    chunks = split(b"".join(frames), cuts)
    got, expected = ours(chunks, deflate=False), reference(chunks, deflate=False)
    assert got[:3] == expected[:3]
    assert (got[3] is None) == (expected[3] is None)
    if got[3] != expected[3]:
        # Known difference: the engine parses a whole read before text is
        # checked, so when one read holds bad UTF-8 (1007) and, later, a
        # protocol error (1002), the connection closes 1002.
        assert {got[3], expected[3]} == {1002, 1007}
