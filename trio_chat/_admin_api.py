"""The admin HTTP API's moderation routes (admin token), under /api/admin/.

Every route takes and answers JSON (``Content-Type: application/json``
for a body) and needs ``Authorization: Bearer <admin token>``, as the rest
of the HTTP API (the checks are done before this module is called):

| route | body | answer |
|---|---|---|
| ``POST /api/admin/kick`` | ``user_id``, optional ``reason`` | 200 ``{"closed": n}`` |
| ``POST /api/admin/ban`` | ``user_id`` or ``ip``, ``duration`` (s), ``reason`` | 201 the ban |
| ``POST /api/admin/unban`` | ``user_id`` or ``ip`` | 200 ``{"removed": bool}`` |
| ``GET /api/admin/bans`` | | 200 ``{"bans": [...]}`` |
| ``POST /api/admin/mute`` | ``user_id``, ``room``, ``duration`` (s), ``reason`` | 201 |
| ``POST /api/admin/unmute`` | ``user_id``, ``room`` | 200 ``{"removed": bool}`` |
| ``GET /api/admin/mutes`` | | 200 ``{"mutes": [...]}`` |
| ``POST /api/admin/delete`` | ``room``, ``id``, ``reason`` | 200 ``{"room", "id", "user_id"}`` |
| ``POST /api/admin/topic`` | ``room``, ``topic`` | 200 ``{"room", "topic"}`` |
| ``POST /api/admin/close`` | ``room``, optional ``reason`` | 200 ``{"closed": n}`` |

A bad body is 400 (415 without the JSON content type); a mute, delete,
topic or close in a room the admin token does not cover is 403; an unknown
room or message 404; a full table 507; with the Redis store, any of
them 503 while Redis cannot be reached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._http import HttpRequest, HttpResponse, json_content, json_object, json_response
from ._protocol import ProtocolError

if TYPE_CHECKING:
    from ._auth import Identity
    from ._moderator import ModerationApi

__all__ = ["admin_api"]

_POST = ("kick", "ban", "unban", "mute", "unmute", "delete", "topic", "close")
_GET = ("bans", "mutes")


async def admin_api(
    server: ModerationApi, request: HttpRequest, admin: Identity, peer: str
) -> HttpResponse:
    action = request.path.removeprefix("/api/admin/")
    if action in _GET:
        if request.method != "GET":
            return HttpResponse(405, b"method not allowed\n", headers=(("allow", "GET"),))
        if action == "bans":
            return json_response(200, {"bans": [b.to_json() for b in server.bans()]})
        mutes = [
            {"user_id": u, "room": r, "seconds_left": round(left, 3)}
            for u, r, left in server.mutes()
            if admin.may_join(r)
        ]
        return json_response(200, {"mutes": mutes})
    if action not in _POST:
        return json_response(404, {"error": "not found"})
    if request.method != "POST":
        return HttpResponse(405, b"method not allowed\n", headers=(("allow", "POST"),))
    refused = json_content(request)
    if refused is not None:
        return refused
    body = json_object(request)
    if isinstance(body, HttpResponse):
        return body
    by = f"{admin.user_id}@{peer}"
    try:
        return await _act(server, action, body, admin, by)
    except ProtocolError as err:
        return json_response(err.code, {"error": err.message})


def _seconds(body: dict[str, Any]) -> float:
    value = body.get("duration")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(400, "duration: required, a number of seconds")
    return float(value)


def _string(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise ProtocolError(400, f"{name}: required, a string")
    return value


async def _act(
    server: ModerationApi, action: str, body: dict[str, Any], admin: Identity, by: str
) -> HttpResponse:
    reason = _string(body, "reason", "")
    if action == "kick":
        closed = await server.kick(_string(body, "user_id"), reason, by=by)
        return json_response(200, {"closed": closed})
    if action in ("ban", "unban"):
        user_id, ip = body.get("user_id"), body.get("ip")
        if not isinstance(user_id, str | None) or not isinstance(ip, str | None):
            raise ProtocolError(400, "user_id, ip: strings")
        if action == "unban":
            return json_response(
                200, {"removed": await server.unban(user_id=user_id, ip=ip, by=by)}
            )
        ban = await server.ban(
            user_id=user_id, ip=ip, duration=_seconds(body), reason=reason, by=by
        )
        return json_response(201, ban.to_json())
    room = _string(body, "room")
    if not admin.may_join(room):
        return json_response(403, {"error": "this token may not moderate that room"})
    if action == "delete":
        id_ = body.get("id")
        if isinstance(id_, bool) or not isinstance(id_, int):
            raise ProtocolError(400, "id: required, an integer")
        message = await server.delete_message(room, id_, reason, by=by)
        return json_response(200, {"room": room, "id": id_, "user_id": message.user_id})
    if action == "topic":
        topic = _string(body, "topic")
        await server.set_topic(room, topic, by=by)
        return json_response(200, {"room": room, "topic": topic})
    if action == "close":
        return json_response(200, {"closed": await server.close_room(room, reason, by=by)})
    user_id = _string(body, "user_id")
    if action == "unmute":
        return json_response(200, {"removed": await server.unmute(user_id, room, by=by)})
    await server.mute(user_id, room, duration=_seconds(body), reason=reason, by=by)
    return json_response(201, {"user_id": user_id, "room": room, "duration": body["duration"]})
