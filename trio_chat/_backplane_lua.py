"""The Lua scripts of the Redis backplane (see :mod:`trio_chat._backplane`).

Each script is one atomic step in Redis.  Room and user names cannot hold
spaces or quotes (the protocol's patterns), so they are joined into fields,
channel messages and frames as they are.  Channel messages are
``KIND NUMBER ORIGIN SUBJECT FRAME``: ``m`` a logged message (NUMBER its id),
``j``/``l`` a cluster-wide join/leave (NUMBER the room's membership
version; no FRAME: each process makes the ``system`` event), ``o`` a
room's new topic (NUMBER the room's next membership version, SUBJECT who
set it, FRAME the topic's text), ``c`` a room closed (NUMBER as for a
topic, ORIGIN the closing process, SUBJECT who closed it, FRAME the text),
``v`` a
message revised (NUMBER the room's revision, SUBJECT the message's id,
FRAME the event's frame, a newline, the message's new frame), ``t``
typing (on a room's channel, or on a user's: typing to them), ``p``
presence; except on ``ch:m``, where one message carries every chat message
of a script call, one a line (frames are JSON: never a raw newline), each
``ROOM ID ORIGIN FRAME``.
"""

from __future__ import annotations

import attrs

from ._backplane_lua_base import COMMON
from ._backplane_lua_logs import CHATS, DIRECT, FILL, LISTING, LOAD, PAGE, REVISE, REVISIONS
from ._backplane_lua_rooms import CLOSE, ROOMS, TOPIC

__all__ = ["DEREGISTER", "SCRIPTS", "Retention", "render_scripts"]


@attrs.frozen
class Retention:
    """What Redis keeps of room history (the ``history_*`` settings).

    * a room's log holds at most ``per_room`` bytes of frames (and the
      message count the backplane retains), the oldest trimmed first, and
      no message older than ``max_age`` seconds (0: no age limit);
    * so does each direct conversation's log, and each user's inbox (the
      log ``@user``, which carries direct messages to the user's processes;
      it also expires a day after its last message);
    * all logs together hold at most ``total`` bytes: past it the least
      recently written log loses its oldest messages first;
    * at most ``rooms`` logs (rooms, conversations and inboxes) are kept:
      past it the least recently written one goes;
    * a room's keys expire ``max_age`` after its last member left or its
      last message arrived with nobody in it (0: a week); a conversation's
      are kept while it is one of the ``conversations`` most recently
      written (the older ones are forgotten, ids too), and a user may be in
      ``per_user`` of them.

    Bytes are those of the frames; Redis's own overhead per stream entry
    comes on top.  Ids continue across trims (the ``seq`` key stays).
    """

    per_room: int = 1 << 20
    total: int = 128 << 20
    rooms: int = 10_000
    max_age: float = 604800.0
    conversations: int = 10_000
    per_user: int = 200

    @property
    def ttl(self) -> int:
        return int(self.max_age) if self.max_age >= 1 else 604800


#: ARGV: prefix, node, room, user, '1' (join) or '0' (leave).
_MEMBER = (
    COMMON
    + r"""
if ARGV[5] == '1' then member_add(ARGV[2], ARGV[3], ARGV[4])
else member_del(ARGV[2], ARGV[3], ARGV[4]) end
return 1
"""
)

#: ARGV: prefix, node, user, '1' (online: answers the inbox id) or '0'.
_ONLINE = (
    COMMON
    + r"""
if ARGV[4] == '1' then return online_add(ARGV[2], ARGV[3]) end
online_del(ARGV[2], ARGV[3])
return 0
"""
)


#: ARGV: prefix, room.  Answers its membership version, members and topic.
_MEMBERS = (
    COMMON
    + r"""
local version = tonumber(redis.call('GET', P .. 'mver:' .. ARGV[2]) or '0')
local topic = redis.call('GET', P .. 'topic:' .. ARGV[2]) or ''
return {version, redis.call('HKEYS', P .. 'members:' .. ARGV[2]), topic}
"""
)

#: ARGV: prefix, node, user, frame.
_PRESENCE = (
    COMMON
    + r"""
if redis.call('HEXISTS', P .. 'online', ARGV[3]) == 1 then
  redis.call('HSET', P .. 'presence', ARGV[3], ARGV[4])
end
redis.call('PUBLISH', P .. 'ch:p', 'p 0 ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
return 1
"""
)

#: ARGV: prefix, room, floor, the room's epoch.
_FLOOR = (
    COMMON
    + r"""
local key = P .. 'seq:' .. ARGV[2]
if tonumber(redis.call('GET', key) or '0') < tonumber(ARGV[3]) then
  redis.call('SET', key, ARGV[3])
end
room_epoch(ARGV[2], ARGV[4])
return 1
"""
)

#: ARGV: prefix, node, ttl ms, candidate epoch, n, n entries, inbox users...
_SYNC = (
    COMMON
    + r"""
local node = ARGV[2]
local epoch = redis.call('GET', P .. 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', P .. 'epoch', epoch)
end
redis.call('ZADD', P .. 'procs', now_ms() + tonumber(ARGV[3]), node)
local n = tonumber(ARGV[5])
local want = {}
for i = 6, 5 + n do want[ARGV[i]] = true end
for _, field in ipairs(redis.call('HKEYS', P .. 'proc:' .. node)) do
  if not want[field] then unregister(node, field) end
end
for i = 6, 5 + n do
  local kind, a, b = string.match(ARGV[i], '^(%a) (%S+) ?(%S*)$')
  if kind == 'm' then member_add(node, a, b) elseif kind == 'u' then online_add(node, a) end
end
local ids = {}
for i = 6 + n, #ARGV do
  ids[#ids + 1] = ARGV[i]
  ids[#ids + 1] = tonumber(redis.call('GET', P .. 'dmseq:' .. ARGV[i]) or '0')
end
return {epoch, ids}
"""
)

#: ARGV: prefix, node, ttl ms, epoch.  Also removes processes that expired,
#: and up to 1,000 rooms of the directory whose keys expired.
_HEARTBEAT = (
    COMMON
    + r"""
local node = ARGV[2]
local now = now_ms()
dir_expired(1000)
for _, other in ipairs(redis.call('ZRANGEBYSCORE', P .. 'procs', '-inf', now)) do
  if other ~= node then drop_node(other) end
end
if redis.call('GET', P .. 'epoch') ~= ARGV[4] or not redis.call('ZSCORE', P .. 'procs', node) then
  return 'lost'
end
redis.call('ZADD', P .. 'procs', now + tonumber(ARGV[3]), node)
return 'ok'
"""
)

#: ARGV: prefix, node.
_DEREGISTER = (
    COMMON
    + r"""
drop_node(ARGV[2])
return 1
"""
)

_TEMPLATES = {
    "deregister": _DEREGISTER,
    "chats": CHATS,
    "direct": DIRECT,
    "conversations": LISTING,
    "member": _MEMBER,
    "online": _ONLINE,
    "load": LOAD,
    "revise": REVISE,
    "page": PAGE,
    "revisions": REVISIONS,
    "fill": FILL,
    "members": _MEMBERS,
    "topic": TOPIC,
    "rooms": ROOMS,
    "close": CLOSE,
    "presence": _PRESENCE,
    "floor": _FLOOR,
    "sync": _SYNC,
    "heartbeat": _HEARTBEAT,
}


def render_scripts(retention: Retention | None = None) -> dict[str, str]:
    """Every script, with *retention*'s bounds written in."""
    retention = retention or Retention()
    values = {
        "@TTL@": str(retention.ttl),
        "@PER_ROOM@": str(retention.per_room),
        "@TOTAL@": str(retention.total),
        "@ROOMS@": str(retention.rooms),
        "@MAX_AGE_MS@": str(int(retention.max_age * 1000)),
        "@CONVS@": str(retention.conversations),
        "@PER_USER@": str(retention.per_user),
    }
    scripts = {}
    for name, template in _TEMPLATES.items():
        text = template
        for key, value in values.items():
            text = text.replace(key, value)
        scripts[name] = text
    return scripts


#: The scripts at the default retention.
SCRIPTS = render_scripts()
DEREGISTER = SCRIPTS.pop("deregister")
