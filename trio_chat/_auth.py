"""Who is connecting: anonymous names, JWT tokens, or an embedder's check.

An *authenticator* is any callable that takes a :class:`HandshakeRequest` and
returns an :class:`Identity`, or raises :class:`Rejection` carrying the HTTP
status to answer with (the socket is never upgraded).  trio_chat ships two:
:class:`AnonymousAuthenticator` (the default without a secret) and
:class:`TokenAuthenticator` (HS256 JWTs, with ``--secret``).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import parse_qs

import attrs
import jwt

from ._protocol import USER_PATTERN, is_valid_room, is_valid_user_id

__all__ = [
    "ANONYMOUS_NAME_HOLD",
    "KEY_PATTERN",
    "MAX_ANONYMOUS_NAMES",
    "AnonymousAuthenticator",
    "Authenticator",
    "HandshakeRequest",
    "Identity",
    "Rejection",
    "TokenAuthenticator",
    "make_token",
    "room_allowed",
]


@attrs.frozen
class HandshakeRequest:
    """What an authenticator sees of an upgrade request.

    ``headers`` maps lowercased header names to their (last) value.
    """

    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    peer: str

    @classmethod
    def from_target(cls, target: str, headers: Mapping[str, str], peer: str) -> HandshakeRequest:
        path, _, qs = target.partition("?")
        query = {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        return cls(path, query, headers, peer)

    def bearer_token(self, *, query: bool = True) -> str | None:
        """The token from ``?token=`` (unless *query* is false: the HTTP API
        takes credentials only from headers) or ``Authorization: Bearer``."""
        token = self.query.get("token") if query else None
        if token:
            return token
        auth = self.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None


@attrs.frozen
class Identity:
    """An authenticated user: its id and the rooms it may join.

    ``rooms`` None means every room; otherwise names or ``prefix*`` patterns
    (for an admin: the rooms the HTTP API may publish to and list).
    ``admin`` grants the HTTP publish API.  ``direct`` allows sending direct
    messages (and so learning, from a 404, who is not connected).
    """

    user_id: str
    rooms: tuple[str, ...] | None = None
    admin: bool = False
    direct: bool = True

    def may_join(self, room: str) -> bool:
        return room_allowed(room, self.rooms)

    def may_direct(self) -> bool:
        return self.direct


class Rejection(Exception):
    """Refuse a handshake (or an API call) with HTTP *status*.

    *reason* goes to the server log (browsers hide it from pages anyway).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


Authenticator = Callable[[HandshakeRequest], Identity]


def room_allowed(room: str, patterns: Sequence[str] | None) -> bool:
    """Whether *room* matches one of *patterns* (a name or ``prefix*``)."""
    if patterns is None:
        return True
    for pattern in patterns:
        if pattern.endswith("*"):
            if room.startswith(pattern[:-1]):
                return True
        elif room == pattern:
            return True
    return False


#: What a per-browser key may hold: 8 to 64 of these characters.
KEY_PATTERN = r"[A-Za-z0-9_-]{8,64}"
_KEY = re.compile(KEY_PATTERN)
#: Default bound on the anonymous names remembered (about 300 bytes each).
MAX_ANONYMOUS_NAMES = 10_000
#: Default time a name stays held after its holder's last handshake: 7 days.
ANONYMOUS_NAME_HOLD = 7 * 86400.0


class AnonymousAuthenticator:
    """``?user=NAME`` or a generated ``guest-<random>`` id; no rooms limit.

    A name belongs to one holder at a time, told apart by the per-browser
    (or per-client) ``?key=`` (8 to 64 characters from ``A-Z a-z 0-9 _ -``):
    a handshake with the key that holds a name gets the same user; any other
    is refused with 409 while the name is held.  A handshake without a key
    is a holder nobody can be again: it gets a name only if nobody holds it,
    and then holds it for no key, so that no later handshake (with or
    without a key, the same client's included) gets that name while it is
    held.  Generated guest ids are held the same way (for the key sent, or
    for none).  A name is held for *hold* seconds after its holder's last
    handshake; at most *max_names* names are remembered (at the bound the
    one unused for longest is forgotten first), each as its name, a 16-byte
    digest of the key (or none) and a time.  Anonymous mode is not
    authentication: the key keeps one person's name from being taken over
    by another browser by mistake, not from a determined impostor who can
    push it out of the table or wait out the hold.
    """

    def __init__(
        self,
        *,
        max_names: int = MAX_ANONYMOUS_NAMES,
        hold: float = ANONYMOUS_NAME_HOLD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_names < 1 or hold <= 0:
            raise ValueError("max_names and hold must be positive")
        self.max_names = max_names
        self.hold = hold
        self._clock = clock
        #: name -> (digest of its key, or None for no key; last handshake),
        #: least recently used first.
        self._names: dict[str, tuple[bytes | None, float]] = {}

    def __len__(self) -> int:
        return len(self._names)

    def __call__(self, request: HandshakeRequest) -> Identity:
        name = request.query.get("user")
        key = request.query.get("key")
        if key is not None and not _KEY.fullmatch(key):
            raise Rejection(400, f"key must match {KEY_PATTERN}")
        if not name:
            name = "guest-" + secrets.token_hex(4)
            while name in self._names:  # pragma: no cover - one in 400,000 at the bound
                name = "guest-" + secrets.token_hex(4)
        elif not is_valid_user_id(name):
            raise Rejection(400, f"user name must match {USER_PATTERN}")
        self.claim(name, key)
        return Identity(name)

    def claim(self, name: str, key: str | None) -> None:
        """Hold *name* for *key*, or :class:`Rejection` (409) when it is held
        for another key or for none.  *key* None holds a free name for no
        key: nobody, that handshake's client included, gets it again while
        it is held."""
        now = self._clock()
        owner = None if key is None else hashlib.blake2b(key.encode(), digest_size=16).digest()
        names = self._names
        held = names.get(name)
        if held is not None and (owner is None or held[0] != owner) and now - held[1] < self.hold:
            raise Rejection(409, f"the name {name!r} is taken: pick another one")
        names.pop(name, None)
        names[name] = (owner, now)  # last: the most recently used
        # Forget the expired and, past the bound, the least recently used.
        while names:
            oldest = next(iter(names))
            if len(names) <= self.max_names and now - names[oldest][1] < self.hold:
                break
            del names[oldest]


#: Default longest remaining lifetime of a token: 30 days.
MAX_TOKEN_LIFETIME = 30 * 86400.0


@attrs.frozen
class TokenAuthenticator:
    """HS256 JWTs signed with *secret*: ``sub`` and ``exp`` required.

    ``exp`` must be a number (seconds since the epoch, not a string) at most
    *max_lifetime* seconds from now: a token minted to live for years is
    refused, so a leaked one cannot be used for longer than that.  An
    optional ``rooms`` claim (list of names or ``prefix*`` patterns) limits
    the rooms the user may join; ``"admin": true`` grants the publish API.
    Direct messages follow the ``direct`` claim (true or false); without it
    they are allowed unless ``rooms`` is empty (``"rooms": []`` is a token
    for nothing, direct messages included).
    """

    secret: str = attrs.field(repr=False)
    max_lifetime: float = MAX_TOKEN_LIFETIME

    def __call__(self, request: HandshakeRequest) -> Identity:
        token = request.bearer_token()
        if token is None:
            raise Rejection(401, "missing token")
        return self.verify(token)

    def verify(self, token: str, *, now: float | None = None) -> Identity:
        """The identity in *token*, or :class:`Rejection` (401) saying why not."""
        now = time.time() if now is None else now
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                options={"require": ["sub", "exp"], "verify_exp": False},
            )
        except jwt.ExpiredSignatureError:
            raise Rejection(401, "token expired") from None
        except jwt.InvalidSignatureError:
            raise Rejection(401, "bad token signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Rejection(401, f"token lacks claim {exc.claim!r}") from None
        except jwt.InvalidTokenError as exc:
            raise Rejection(401, f"malformed token: {exc}") from None
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not math.isfinite(exp):
            raise Rejection(401, "token exp must be a number")
        if exp <= now:
            raise Rejection(401, "token expired")
        if exp - now > self.max_lifetime:
            raise Rejection(
                401, f"token lives too long: exp more than {self.max_lifetime:g} s from now"
            )
        user_id = claims["sub"]
        if not is_valid_user_id(user_id):
            raise Rejection(401, f"token sub must match {USER_PATTERN}")
        rooms = claims.get("rooms")
        if rooms is not None:
            if not isinstance(rooms, list) or not all(
                isinstance(r, str) and (is_valid_room(r.removesuffix("*")) or r == "*")
                for r in rooms
            ):
                raise Rejection(401, "token rooms must be a list of room names or patterns")
            rooms = tuple(rooms)
        direct = claims.get("direct")
        if direct is not None and not isinstance(direct, bool):
            raise Rejection(401, "token direct must be true or false")
        if direct is None:
            direct = rooms != ()
        return Identity(user_id, rooms, claims.get("admin") is True, direct)


def make_token(
    secret: str,
    user_id: str,
    *,
    ttl: float = 3600.0,
    rooms: Sequence[str] | None = None,
    admin: bool = False,
    direct: bool | None = None,
    now: float | None = None,
) -> str:
    """Sign an HS256 token for *user_id*, valid for *ttl* seconds.

    Servers refuse tokens that live longer than their ``max_token_lifetime``
    (30 days by default).
    """
    if not is_valid_user_id(user_id):
        raise ValueError(f"user id must match {USER_PATTERN}")
    issued = time.time() if now is None else now
    claims: dict[str, object] = {"sub": user_id, "iat": int(issued), "exp": int(issued + ttl)}
    if rooms is not None:
        claims["rooms"] = list(rooms)
    if admin:
        claims["admin"] = True
    if direct is not None:
        claims["direct"] = direct
    return jwt.encode(claims, secret, algorithm="HS256")
