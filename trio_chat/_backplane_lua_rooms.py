"""The Lua scripts of the Redis backplane that act on whole rooms: a
room's topic (see :mod:`trio_chat._backplane_lua` for the channel messages
they publish, and :mod:`trio_chat._backplane_lua_base` for the functions
they share).

A room's topic is the key ``topic:<room>`` (absent: no topic), which lives
and expires with the room's other keys (``room_expiry``).  A change takes
the room's next membership version (``mver:<room>``), so that each process
orders it with the room's joins and leaves, and a process that finds a
version missing reads the members and the topic again.
"""

from __future__ import annotations

from ._backplane_lua_base import COMMON

__all__ = ["TOPIC"]

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
