"""The two sans-I/O WebSocket engines on trio_chat's inbound path.

    python benchmarks/engines.py [--frames N]

For each engine: the server-side frame layer alone (the opening handshake is
trio_chat's own), fed masked client text frames of a chat-sized message
(128 bytes), and what it costs per message to get the text out:

* ``wsproto``: ``wsproto.connection.Connection(ConnectionType.SERVER)``,
  ``receive_data`` then ``events()``, a ``TextMessage`` per frame;
* ``websockets``: ``websockets.protocol.Protocol(Side.SERVER, state=OPEN)``,
  ``receive_data`` then ``events_received()``, the text decoded as UTF-8
  (websockets leaves that to the caller; wsproto does it inside);

each "one frame per read" (the echo path: one message per socket read) and
"4 KB reads" (several frames per read, as under load), and with
permessage-deflate (each engine's own extension; no context takeover).
Times are µs per message, the best of 5 runs, on one core.

Measured here (Python 3.11, wsproto 1.3.2, websockets 17.4, 20,000 frames,
the shared 2-core machine at load average about 0.5; medians of 3 runs):

    path                         wsproto  websockets  ratio
    one frame per read             12.9       4.6      2.8x
    4 KB reads                     12.5       3.8      3.3x
    deflate, one frame per read    14.1       6.3      2.2x

So trio_chat drives websockets' engine (see ``trio_chat/_ws.py``); wsproto
stays the reference parser of the property tests (``tests/test_ws.py``).
"""

from __future__ import annotations

import argparse
import os
import time
import zlib
from collections.abc import Callable

from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

from trio_chat._deflate import InboundDeflate

PAYLOAD = '{"type":"chat","payload":{"room":"lobby","content":"' + "x" * 71 + '"}}'


def _masked(payload: bytes, *, rsv1: bool) -> bytes:
    """One final masked client text frame (payload under 126 bytes)."""
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x81 | (0x40 if rsv1 else 0), 0x80 | len(payload))) + mask + masked


def client_frames(n: int, *, deflate: bool) -> list[bytes]:
    if not deflate:
        proto = FrameProtocol(client=True, extensions=[])
        return [proto.send_data(PAYLOAD, True) for _ in range(n)]
    # A client without context takeover: each message compressed alone.
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    compressed = (z.compress(PAYLOAD.encode()) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]
    return [_masked(compressed, rsv1=True) for _ in range(n)]


def run_wsproto(chunks: list[bytes], n: int, deflate: bool) -> float:
    extensions = []
    if deflate:
        ext = PerMessageDeflate()
        ext.finalize("permessage-deflate; client_no_context_takeover")
        extensions = [ext]
    conn = Connection(ConnectionType.SERVER, extensions)
    got = 0
    start = time.perf_counter()
    for chunk in chunks:
        conn.receive_data(chunk)
        for event in conn.events():
            if type(event) is TextMessage and event.message_finished:
                got += 1
    elapsed = time.perf_counter() - start
    assert got == n, got
    return elapsed


def run_websockets(chunks: list[bytes], n: int, deflate: bool) -> float:
    proto = Protocol(Side.SERVER, state=State.OPEN, max_size=65536)
    if deflate:
        proto.extensions = [InboundDeflate()]
    got = 0
    start = time.perf_counter()
    for chunk in chunks:
        proto.receive_data(chunk)
        for frame in proto.events_received():
            if frame.opcode is Opcode.TEXT:  # type: ignore[union-attr]
                frame.data.decode("utf-8")  # type: ignore[union-attr]
                got += 1
    elapsed = time.perf_counter() - start
    assert got == n, got
    return elapsed


def best(fn: Callable[[list[bytes], int, bool], float], *args: object) -> float:
    return min(fn(*args) for _ in range(5))  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20_000)
    n = parser.parse_args().frames
    print(f"{'path':28} {'wsproto':>8} {'websockets':>11} {'ratio':>6}   (µs per message)")
    for name, deflate, batched in (
        ("one frame per read", False, False),
        ("4 KB reads", False, True),
        ("deflate, one frame per read", True, False),
    ):
        frames = client_frames(n, deflate=deflate)
        if batched:
            blob = b"".join(frames)
            chunks = [blob[i : i + 4096] for i in range(0, len(blob), 4096)]
        else:
            chunks = frames
        a = best(run_wsproto, chunks, n, deflate) / n * 1e6
        b = best(run_websockets, chunks, n, deflate) / n * 1e6
        print(f"{name:28} {a:8.1f} {b:11.1f} {a / b:5.1f}x")


if __name__ == "__main__":
    main()
