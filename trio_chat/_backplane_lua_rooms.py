"""The Lua scripts of the Redis backplane that act on whole rooms: a
room's topic, the room directory and closing a room (see
:mod:`trio_chat._backplane_lua` for the channel messages they publish, and
:mod:`trio_chat._backplane_lua_base` for the functions they share).

A room's topic is the key ``topic:<room>`` (absent: no topic), which lives
and expires with the room's other keys (``room_expiry``).  A change takes
the room's next membership version (``mver:<room>``), so that each process
orders it with the room's joins and leaves, and a process that finds a
version missing reads the members and the topic again.

The directory is ``dir``, a sorted set of the rooms that exist by their
member users across the cluster, and ``dirx``, the rooms without members
by when their keys expire; the scripts that change a room's members or
expiry keep both (``room_expiry``), and expired rooms leave them a bounded
number at a time (``dir_expired``: each heartbeat, each listing).
"""

from __future__ import annotations

from ._backplane_lua_base import COMMON, RETAIN

__all__ = ["CLOSE", "ROOMS", "TOPIC"]

#: Set (or, with '', clear) a room's topic and publish it.  ARGV: prefix,
#: room, topic, who sets it, origin.  Answers ``{'ok', version}`` or
#: ``{'noroom'}`` (the room does not exist: no id was ever taken in it and
#: nobody is in it).
TOPIC = (
    COMMON
    + r"""
local room, topic = ARGV[2], ARGV[3]
if redis.call('EXISTS', P .. 'seq:' .. room) == 0 then return {'noroom'} end
local key = P .. 'topic:' .. room
if topic == '' then redis.call('DEL', key) else redis.call('SET', key, topic) end
local v = redis.call('INCR', P .. 'mver:' .. room)
room_expiry(room)
local notice = table.concat({'o', v, ARGV[5], ARGV[4], topic}, ' ')
redis.call('PUBLISH', P .. 'ch:r:' .. room, notice)
return {'ok', v}
"""
)

#: The directory's first rooms, as ``rooms`` lists them: most member users
#: first, then by name.  ARGV: prefix, how many to look at.  A room without
#: members is listed while it has a topic or retained messages (as the
#: other stores keep it); one whose keys expired is forgotten.  Answers
#: ``{more, {{room, members, topic or ''}, ...}}``, *more* 1 when the
#: directory has more rooms than were looked at.
ROOMS = (
    COMMON
    + r"""
local n = tonumber(ARGV[2])
dir_expired(n)
local raw = redis.call('ZRANGE', P .. 'dir', 0, n - 1, 'WITHSCORES')
local out = {}
for i = 1, #raw, 2 do
  local room, members = raw[i], -tonumber(raw[i + 1])
  local topic = redis.call('GET', P .. 'topic:' .. room)
  local listed = members > 0 or topic
  if not listed then
    if redis.call('EXISTS', P .. 'seq:' .. room) == 0 then
      redis.call('ZREM', P .. 'dir', room)
      redis.call('ZREM', P .. 'dirx', room)
    else
      local kept = redis.call('XLEN', P .. 'log:' .. room)
      listed = kept + redis.call('ZCARD', P .. 'rev:' .. room) > 0
    end
  end
  if listed then out[#out + 1] = {room, members, topic or ''} end
end
local more = 0
if redis.call('ZCARD', P .. 'dir') > n then more = 1 end
return {more, out}
"""
)

#: Close a room: remove its members' registrations on every live process
#: (so that no leave follows), drop its keys (its messages, ids, epoch,
#: revisions, topic, members: a later join starts it afresh) and its
#: directory entries, and publish the close with the room's next
#: membership version (which outlives the room: a process that loads the
#: room again afterwards knows the close for an old one).  ARGV: prefix,
#: room, who closes it, the closing process, the text.  Answers ``{'ok',
#: version, registrations removed on other processes}`` or ``{'noroom'}``.
CLOSE = (
    COMMON
    + RETAIN
    + r"""
local room, node = ARGV[2], ARGV[4]
if redis.call('EXISTS', P .. 'seq:' .. room) == 0 then return {'noroom'} end
local users = redis.call('HKEYS', P .. 'members:' .. room)
local elsewhere = 0
for _, other in ipairs(redis.call('ZRANGE', P .. 'procs', 0, -1)) do
  for _, user in ipairs(users) do
    local removed = redis.call('HDEL', P .. 'proc:' .. other, 'm ' .. room .. ' ' .. user)
    if other ~= node then elsewhere = elsewhere + removed end
  end
end
forget_log(room)
redis.call('DEL', P .. 'seq:' .. room, P .. 'members:' .. room, P .. 'repoch:' .. room,
  P .. 'rver:' .. room, P .. 'topic:' .. room)
redis.call('ZREM', P .. 'dir', room)
redis.call('ZREM', P .. 'dirx', room)
local v = redis.call('INCR', P .. 'mver:' .. room)
redis.call('EXPIRE', P .. 'mver:' .. room, ROOM_TTL)
local notice = table.concat({'c', v, node, ARGV[3], ARGV[5]}, ' ')
redis.call('PUBLISH', P .. 'ch:r:' .. room, notice)
return {'ok', v, elsewhere}
"""
)
