"""Rate limits as pure objects: the caller passes the current time.

:class:`RateLimiter` guards one connection's chat, direct and presence frames
(fixed windows of ``seconds``); :class:`IpLimiter` guards the open
connections (every TCP connection, from its accept) and the WebSocket
handshakes of each client IP.
"""

from __future__ import annotations

import functools
import ipaddress
import math

import attrs

__all__ = ["IpLimiter", "IpRefusal", "RateLimiter", "client_key"]


@functools.lru_cache(maxsize=1024)
def client_key(ip: str) -> str:
    """The unit per-IP limits count: the address, or its /64 for IPv6.

    One IPv6 host commonly holds a whole /64, so counting single addresses
    would let it multiply its limits; IPv4-mapped addresses count as IPv4.
    Anything that is not an IP address (in-memory peers) is its own key.
    Cached: every connection asks up to three times, and most come from
    addresses seen before.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return ip


#: Handshake windows kept before the first sweep of stale ones.
_PRUNE_ABOVE = 4096


@attrs.define
class RateLimiter:
    """At most *messages* frames per window of *seconds*.

    :meth:`check` answers None when a frame may pass, else the milliseconds
    until the window reopens.  :attr:`strikes` counts refusals in the current
    window, so the caller can close a client that keeps flooding.
    """

    messages: int
    seconds: float
    _window_start: float = attrs.field(init=False, default=-math.inf)
    _count: int = attrs.field(init=False, default=0)
    strikes: int = attrs.field(init=False, default=0)

    def check(self, now: float) -> int | None:
        if now - self._window_start >= self.seconds:
            self._window_start = now
            self._count = 0
            self.strikes = 0
        if self._count < self.messages:
            self._count += 1
            return None
        self.strikes += 1
        return max(1, math.ceil((self._window_start + self.seconds - now) * 1000))


@attrs.frozen
class IpRefusal:
    """Why a handshake from an IP was refused, as an HTTP status and reason."""

    status: int
    reason: str


@attrs.define
class IpLimiter:
    """Per-IP caps on open connections and on handshakes per *window* seconds.

    A connection counts from its TCP accept to its close, whatever it
    carries (plain HTTP, keep-alive, a WebSocket): :meth:`connect` admits
    and counts it, :meth:`closed` releases it.

    Handshake windows of IPs gone quiet are forgotten in sweeps, once the
    table outgrows a threshold that doubles with what a sweep leaves (so
    many IPs active at once cost one sweep per doubling, not one per
    handshake).
    """

    max_connections: int
    max_handshakes: int
    window: float = 10.0
    _open: dict[str, int] = attrs.field(init=False, factory=dict)
    _handshakes: dict[str, tuple[float, int]] = attrs.field(init=False, factory=dict)
    _prune_above: int = attrs.field(init=False, default=_PRUNE_ABOVE)
    #: Sweeps of stale handshake windows so far.
    sweeps: int = attrs.field(init=False, default=0)

    def connect(self, ip: str) -> IpRefusal | None:
        """Admit and count a new connection from *ip*, or refuse it."""
        count = self._open.get(ip, 0)
        if count >= self.max_connections:
            return IpRefusal(429, f"{ip} already has {self.max_connections} connections")
        self._open[ip] = count + 1
        return None

    def handshake(self, ip: str, now: float) -> IpRefusal | None:
        """Count a handshake attempt from *ip*; refuse it if over the rate."""
        start, count = self._handshakes.get(ip, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        if count >= self.max_handshakes:
            return IpRefusal(
                429, f"more than {self.max_handshakes} handshakes from {ip} in {self.window:g} s"
            )
        self._handshakes[ip] = (start, count + 1)
        if len(self._handshakes) > self._prune_above:
            self._prune(now)
        return None

    def closed(self, ip: str) -> None:
        left = self._open.get(ip, 0) - 1
        if left > 0:
            self._open[ip] = left
        else:
            self._open.pop(ip, None)

    def open_connections(self, ip: str) -> int:
        return self._open.get(ip, 0)

    @property
    def tracked(self) -> int:
        """How many IPs' handshake windows are kept (what this limiter holds)."""
        return len(self._handshakes)

    @property
    def sweep_above(self) -> int:
        """The table size past which the next handshake sweeps stale windows."""
        return self._prune_above

    def _prune(self, now: float) -> None:
        self.sweeps += 1
        stale = [ip for ip, (start, _) in self._handshakes.items() if now - start >= self.window]
        for ip in stale:
            del self._handshakes[ip]
        self._prune_above = max(_PRUNE_ABOVE, 2 * len(self._handshakes))
