"""The HTTP application on the server's port: what each request gets.

:class:`HttpApp` answers every request :func:`~trio_chat._http.serve_http`
reads: the chat page and its static files, ``/healthz``, ``/metrics``, the
admin HTTP API, and on ``/ws`` the decision to accept a WebSocket upgrade
(the handshake's headers, the per-IP handshake rate, the Origin rule, the
authenticator) or refuse it.  It holds no connection and no socket: the
server (:mod:`trio_chat._server`) owns those and hands requests to it.
"""

from __future__ import annotations

import importlib.resources
import ipaddress
import logging
import mimetypes
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import attrs
import trio

from ._accept import Front
from ._admin_api import admin_api
from ._auth import Authenticator, HandshakeRequest, Identity, Rejection, TokenAuthenticator
from ._config import Config
from ._handshake import Accepted, check_upgrade
from ._http import (
    PAGE_POLICY,
    STRICT_POLICY,
    HttpRequest,
    HttpResponse,
    Upgrade,
    json_content,
    json_object,
    json_response,
)
from ._hub import Hub
from ._hub_state import Delivery, HubState
from ._logging import SampledLog, clip
from ._metrics import CONTENT_TYPE, Metrics
from ._protocol import ProtocolError, is_valid_room, is_valid_user_id
from ._ratelimit import IpLimiter, client_key

if TYPE_CHECKING:
    from ._moderator import ModerationApi

__all__ = ["HttpApp", "ServerView", "check_message"]

log = logging.getLogger("trio_chat.server")

_API_ROOM = re.compile(r"^/api/rooms/([^/]+)/messages$")
_FALLBACK_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>trio-chat</title></head>
<body><h1>trio-chat</h1><p>A WebSocket chat server. Connect to <code>/ws</code>.</p></body></html>
"""
#: Paths that answer GET and HEAD only.
_READ_ONLY = ("/", "/healthz", "/metrics", "/trio-chat.js")


class ServerView(Protocol):
    """What the HTTP application reads of its server (a :class:`ChatServer`)."""

    @property
    def config(self) -> Config: ...
    @property
    def authenticator(self) -> Authenticator: ...
    @property
    def echo(self) -> bool: ...
    @property
    def hub(self) -> Hub: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def draining(self) -> bool: ...
    @property
    def started_at(self) -> float: ...
    @property
    def health_checks(self) -> list[Callable[[], tuple[bool, dict[str, Any]]]]: ...
    def ban_refusal(self, user_id: str, peer: str) -> str | None: ...


def check_message(config: Config, *, content: str, user_id: str, room: str | None = None) -> None:
    """Raise :class:`ProtocolError` unless a message from the server side
    (the embedding API, the HTTP API) is one a client could send."""
    if room is not None and not is_valid_room(room):
        raise ProtocolError(400, "room: not a valid room name")
    if not is_valid_user_id(user_id):
        raise ProtocolError(400, "user_id: not a valid user id")
    if not isinstance(content, str) or not content:
        raise ProtocolError(400, "content: must be a non-empty string")
    if len(content) > config.max_content_chars:
        raise ProtocolError(413, f"content: longer than {config.max_content_chars} characters")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """*text* as an IP address (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class HttpApp:
    """Routes the HTTP requests of one server.

    Args:
        server: the server whose state the answers report.
        front: its accept-time accounting (load shedding).
        ip_limits: its per-IP limits (the handshake rate is checked here).
        sampled: its sampled log (refusals are logged once per interval).
        connection_count: the number of open WebSocket connections.

    :meth:`answer` is the router :func:`~trio_chat._http.serve_http` calls:
    an :class:`HttpResponse`, or an :class:`Upgrade` whose context is the
    ``(Identity, Accepted)`` of an accepted WebSocket handshake.
    """

    def __init__(
        self,
        server: ServerView,
        *,
        front: Front,
        ip_limits: IpLimiter,
        sampled: SampledLog,
        connection_count: Callable[[], int],
    ) -> None:
        self.server = server
        self.front = front
        self.ip_limits = ip_limits
        self.sampled = sampled
        self.connection_count = connection_count

    @property
    def config(self) -> Config:
        return self.server.config

    async def answer(
        self, request: HttpRequest, peer: str, local: str | None = None
    ) -> HttpResponse | Upgrade:
        """The answer to *request* from *peer*, which reached address *local*
        (None for an in-memory stream)."""
        pressure = not request.is_upgrade and self.front.under_pressure()
        if pressure and request.path != "/metrics":
            # Out of descriptors a moment ago: plain HTTP waits, WebSockets
            # pass, and /metrics still answers (then closes) for operators.
            self.front.shed_request()
            return HttpResponse(
                503, b"server overloaded\n", headers=(("connection", "close"), ("retry-after", "1"))
            )
        answer = await self._route(request, peer, local)
        if (self.server.draining or pressure) and isinstance(answer, HttpResponse):
            # No keep-alive while draining (the listeners are about to
            # close) or short of descriptors.
            answer = attrs.evolve(answer, headers=(*answer.headers, ("connection", "close")))
        return answer

    async def _route(
        self, request: HttpRequest, peer: str, local: str | None = None
    ) -> HttpResponse | Upgrade:
        path = request.path
        if path == "/ws":
            if request.method != "GET":
                return HttpResponse(405, b"method not allowed\n", headers=(("allow", "GET"),))
            # A plain GET gets the refusal an upgrade with the same query would
            # get, else 426: a browser cannot read a refused handshake's answer.
            return self._check_upgrade(request, peer, local, probe=not request.is_upgrade)
        if request.method not in ("GET", "HEAD") and (
            path in _READ_ONLY or path.startswith("/static/")
        ):
            return HttpResponse(405, b"method not allowed\n", headers=(("allow", "GET, HEAD"),))
        if path == "/healthz":
            return self._healthz()
        if path == "/metrics":
            return HttpResponse(200, await self.server.metrics.scrape(), CONTENT_TYPE)
        if path == "/":
            return self._static("index.html") or HttpResponse(
                200, _FALLBACK_PAGE, "text/html; charset=utf-8", policy=PAGE_POLICY
            )
        if path == "/trio-chat.js":
            return self._static("trio-chat.js") or HttpResponse(404, b"not found\n")
        if path.startswith("/static/"):
            return self._static(path[len("/static/") :]) or HttpResponse(404, b"not found\n")
        if path.startswith("/api/"):
            return await self._api(request, peer)
        return HttpResponse(404, b"not found\n")

    # ------------------------------------------------------------ upgrades

    def _refuse(
        self,
        status: int,
        reason: str,
        peer: str,
        public: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> HttpResponse:
        """Refuse a handshake: counted, logged (in full once per status per
        interval, then counted), answered with *public* (default: *reason*,
        clipped), never the client's own header values in full."""
        self.server.metrics.handshake_refused(status)
        if self.sampled.hit(f"handshake refused {status}", trio.current_time()):
            log.info("handshake refused peer=%s status=%d reason=%s", peer, status, reason)
        body = clip(reason, 120) if public is None else public
        return HttpResponse(status, body.encode("utf-8", "replace") + b"\n", headers=headers)

    def _check_upgrade(
        self, request: HttpRequest, peer: str, local: str | None = None, *, probe: bool = False
    ) -> HttpResponse | Upgrade:
        headers = request.headers
        if self.server.draining:
            return self._refuse(503, "server shutting down", peer)
        accepted = check_upgrade(
            request.http_version,
            request.header_list,
            deflate=self.config.permessage_deflate == "on",
        )
        if not isinstance(accepted, Accepted) and not probe:
            return self._refuse(accepted.status, accepted.reason, peer, headers=accepted.headers)
        # The per-IP rate first: every later check costs more than counting.
        refusal = self.ip_limits.handshake(client_key(peer), trio.current_time())
        if refusal is not None:
            return self._refuse(refusal.status, refusal.reason, peer)
        if not self._origin_allowed(headers, local):
            origin = clip(headers.get("origin", ""), 100)
            host = clip(headers.get("host", ""), 100)
            return self._refuse(
                403, f"origin {origin!r} not allowed for host {host!r}", peer, "origin not allowed"
            )
        if self.server.echo:
            identity = Identity("echo")
        else:
            try:
                identity = self.server.authenticator(
                    HandshakeRequest.from_target(request.target, headers, peer)
                )
            except Rejection as rejection:
                return self._refuse(rejection.status, rejection.reason, peer)
            banned = self.server.ban_refusal(identity.user_id, peer)
            if banned is not None:
                return self._refuse(403, banned, peer)
        if probe or not isinstance(accepted, Accepted):
            return HttpResponse(
                426, b"this endpoint speaks WebSocket\n", headers=(("upgrade", "websocket"),)
            )
        return Upgrade((identity, accepted))

    def _origin_allowed(self, headers: dict[str, str], local: str | None = None) -> bool:
        """The Origin rule: no Origin (not a browser), an allowed origin, or
        by default the same host, which must also name this server (its
        listening address, ``localhost`` on loopback, or a public name), so
        that a rebound DNS name (``evil.example`` resolving to us) does not
        pass as "same host"."""
        origin = headers.get("origin")
        if origin is None:
            return True
        # Scheme and host compare without regard to case (RFC 6454).
        origin = origin.rstrip("/").lower()
        allowed = self.config.allowed_origins
        if allowed:
            return "*" in allowed or origin in {o.rstrip("/").lower() for o in allowed}
        scheme, _, host = origin.partition("://")
        if scheme not in ("http", "https") or host != headers.get("host", "").lower():
            return False
        return self._names_this_server(host, local)

    def _names_this_server(self, host: str, local: str | None) -> bool:
        """Whether the Host value *host* (lowercased) names this server."""
        if host.startswith("["):
            name = host[1:].partition("]")[0]
        else:
            name = host.rpartition(":")[0] if host.count(":") == 1 else host
        if name in {n.lower() for n in self.config.public_names}:
            return True
        address = _ip(name)
        if local is None:  # an in-memory stream: the configured address
            return name == "localhost" or (address is not None and address == _ip(self.config.host))
        here = _ip(local)
        if here is None:
            return False
        if name == "localhost":
            return here.is_loopback
        return address is not None and address == here

    # ------------------------------------------------------------ plain pages

    def _healthz(self) -> HttpResponse:
        server = self.server
        body: dict[str, Any] = {
            "status": "draining" if server.draining else "ok",
            "connections": self.connection_count(),
            "uptime_seconds": round(time.monotonic() - server.started_at, 3),
        }
        if self.config.healthz_version:
            from . import __version__

            body["version"] = __version__
        healthy = not server.draining
        for check in server.health_checks:
            ok, detail = check()
            body.update(detail)
            if not ok and healthy:
                body["status"] = "degraded"
        if not self.config.healthz_node:
            # The node id names the host and the process: not for anyone who asks.
            body.pop("node", None)
        return json_response(200 if healthy else 503, body)

    def _static(self, name: str) -> HttpResponse | None:
        if not name or "/" in name or name.startswith("."):
            return None
        resource = importlib.resources.files("trio_chat") / "static" / name
        try:
            data = resource.read_bytes()
        except (FileNotFoundError, IsADirectoryError, OSError):
            return None
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".js"):
            kind = "text/javascript"
        if kind.startswith("text/"):
            kind += "; charset=utf-8"
        policy = PAGE_POLICY if kind.startswith("text/html") else STRICT_POLICY
        return HttpResponse(200, data, kind, (("cache-control", "no-cache"),), policy)

    # ------------------------------------------------------------ HTTP API

    async def _api(self, request: HttpRequest, peer: str = "memory") -> HttpResponse:
        if request.path.startswith("/api/admin/"):
            admin = self._api_auth(request)
            if isinstance(admin, HttpResponse):
                return admin
            return await admin_api(cast("ModerationApi", self.server), request, admin, peer)
        match = _API_ROOM.match(request.path)
        if request.path == "/api/rooms":
            if request.method != "GET":
                return HttpResponse(405, b"method not allowed\n", headers=(("allow", "GET"),))
        elif match is None:
            return json_response(404, {"error": "not found"})
        elif request.method != "POST":
            return HttpResponse(405, b"method not allowed\n", headers=(("allow", "POST"),))
        admin = self._api_auth(request)
        if isinstance(admin, HttpResponse):
            return admin
        if match is None:
            return json_response(200, {"rooms": await self._rooms(admin)})
        return await self._api_publish(request, match.group(1), admin, peer)

    async def _rooms(self, admin: Identity) -> list[dict[str, Any]]:
        """The rooms *admin* may see, with their member counts and last ids,
        as the hub actor sees them."""

        def listing(state: HubState, now: float) -> tuple[list[dict[str, Any]], list[Delivery]]:
            rooms = [
                {"name": name, "members": len(state.members(name)), "last_id": state.last_id(name)}
                for name in state.room_names()
                if admin.may_join(name)
            ]
            return rooms, []

        rooms: list[dict[str, Any]] = await self.server.hub.call(listing)
        return rooms

    async def _api_publish(
        self, request: HttpRequest, room: str, admin: Identity, peer: str
    ) -> HttpResponse:
        refused = json_content(request)
        if refused is not None:
            return refused
        if not admin.may_join(room):
            return json_response(403, {"error": "this token may not publish to that room"})
        body = json_object(request)
        if isinstance(body, HttpResponse):
            return body
        content, user_id = body.get("content"), body.get("user_id", "server")
        if not isinstance(user_id, str) or not isinstance(content, str):
            return json_response(400, {"error": "content and user_id must be strings"})
        try:
            check_message(self.config, room=room, content=content, user_id=user_id)
            ack = await self.server.hub.publish(room, content, user_id=user_id, create=False)
        except ProtocolError as err:
            return json_response(err.code, {"error": err.message})
        log.info(
            "api publish room=%s id=%d user=%s by=%s peer=%s chars=%d",
            room,
            ack.id,
            user_id,
            admin.user_id,
            peer,
            len(content),
        )
        return json_response(201, {"id": ack.id, "time": ack.time})

    def _api_auth(self, request: HttpRequest) -> Identity | HttpResponse:
        """The admin identity of the request's ``Authorization: Bearer``
        token (never one from the query string), or the refusal."""
        config = self.config
        if not config.secret:
            return json_response(401, {"error": "the HTTP API needs the server to have a secret"})
        if not self._origin_allowed(request.headers):
            return json_response(403, {"error": "origin not allowed"})
        handshake = HandshakeRequest.from_target(request.target, request.headers, "")
        token = handshake.bearer_token(query=False)
        if token is None:
            return json_response(401, {"error": "missing Authorization: Bearer token"})
        try:
            identity = TokenAuthenticator(config.secret, config.max_token_lifetime).verify(token)
        except Rejection as rejection:
            return json_response(401, {"error": rejection.reason})
        if not identity.admin:
            return json_response(403, {"error": "token is not an admin token"})
        return identity
